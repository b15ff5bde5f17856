//! WHIP publish and WHEP play through the embedded SFU, with real WebRTC peers (str0m) over
//! loopback UDP: media forwarding, keyframes for late joiners, liveness, and every bad input.

use crate::helpers::{eventually, small_stages, spawn_app, spawn_app_with, ChannelId, TestApp, API_KEY};
use livestage::domain::autoscale::ScaleDecision;
use livestage::server::backend::jwt::TokenSigner;
use livestage::testing::media::{payload_type, rtp_header, OPUS_SILENCE};
use livestage::testing::peer::{open_session, Peer, PeerEvent, PeerHandle, PeerRole, VideoCodec};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use str0m::media::MediaKind;

/// 3 s of 320x180 VP8 at 30 fps; frame 0 is the only keyframe.
const FIXTURE: &[u8] = include_bytes!("../fixtures/testsrc-320x180.ivf");
/// The same in H.264 constrained baseline, Annex B, one access unit per frame (each starts with
/// an access unit delimiter), SPS/PPS before the only IDR frame: what OBS sends over WHIP.
const FIXTURE_H264: &[u8] = include_bytes!("../fixtures/testsrc-320x180.h264");

fn ivf_frames(ivf: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(&ivf[..4], b"DKIF");
    let header_len = u16::from_le_bytes([ivf[6], ivf[7]]) as usize;
    let mut frames = Vec::new();
    let mut at = header_len;
    while at + 12 <= ivf.len() {
        let len = u32::from_le_bytes(ivf[at..at + 4].try_into().unwrap()) as usize;
        frames.push(ivf[at + 12..at + 12 + len].to_vec());
        at += 12 + len;
    }
    frames
}

fn h264_access_units(stream: &[u8]) -> Vec<Vec<u8>> {
    const AUD: &[u8] = &[0, 0, 0, 1, 9];
    let starts: Vec<usize> = stream.windows(AUD.len()).enumerate().filter(|(_, w)| *w == AUD).map(|(i, _)| i).collect();
    starts.iter().enumerate().map(|(n, &s)| stream[s..*starts.get(n + 1).unwrap_or(&stream.len())].to_vec()).collect()
}

/// The NAL units of an Annex B access unit, without start codes, delimiters or trailing zeros.
fn nal_units(frame: &[u8]) -> Vec<Vec<u8>> {
    let mut units = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i + 3 <= frame.len() {
        if frame[i..i + 3] == [0, 0, 1] {
            if let Some(s) = start {
                units.push(frame[s..i].to_vec());
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        units.push(frame[s..].to_vec());
    }
    units
        .into_iter()
        .map(|mut u| {
            while u.last() == Some(&0) {
                u.pop();
            }
            u
        })
        .filter(|u| !u.is_empty() && u[0] & 0x1f != 9)
        .collect()
}

fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    // RFC 6386 §9.1: a key frame has bit 0 clear and the start code 9d 01 2a after 3 bytes.
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((w, h))
}

/// A publisher feeding the fixture at 30 fps and Opus every 20 ms. It restarts at the keyframe
/// only when asked (PLI/FIR), so keyframes reach viewers only through the SFU's relay.
struct Feed {
    running: Arc<AtomicBool>,
    /// Which fixture frame went out at each video RTP time.
    sent: Arc<Mutex<HashMap<u32, usize>>>,
    task: tokio::task::JoinHandle<PeerHandle>,
}

impl Feed {
    fn start(mut peer: PeerHandle, frames: Arc<Vec<Vec<u8>>>) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        let sent = Arc::new(Mutex::new(HashMap::new()));
        let log = sent.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let start = Instant::now();
            let (mut next_video, mut next_audio, mut index) = (0u64, 0u64, 0usize);
            // bounded: a test never runs a feed for more than a minute
            while start.elapsed() < Duration::from_secs(60) {
                tick.tick().await;
                while let Ok(ev) = peer.events.try_recv() {
                    if matches!(ev, PeerEvent::KeyframeRequested) {
                        index = 0;
                    }
                }
                if !flag.load(Ordering::Relaxed) {
                    continue;
                }
                let ms = start.elapsed().as_millis() as u64;
                if ms >= next_video * 33 {
                    log.lock().unwrap().insert((next_video * 3000) as u32, index);
                    peer.send_video(frames[index].clone(), next_video * 3000);
                    index = if index + 1 >= frames.len() { 1 } else { index + 1 };
                    next_video += 1;
                }
                if ms >= next_audio * 20 {
                    peer.send_audio(OPUS_SILENCE.to_vec(), next_audio * 960);
                    next_audio += 1;
                }
            }
            peer
        });
        Self { running, sent, task }
    }

    fn pause(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    fn resume(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    /// The fixture frame sent at `rtp_time`, if one was.
    fn sent_at(&self, rtp_time: u64) -> Option<usize> {
        self.sent.lock().unwrap().get(&(rtp_time as u32)).copied()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Session {
    peer: PeerHandle,
    location: String,
}

async fn publisher_token(app: &TestApp, user: &str) -> (String, String) {
    let d = app.post("/api/token/publisher", json!({ "userId": user })).await.assert_ok().clone();
    (d["token"].as_str().unwrap().to_string(), d["whipEndpoint"].as_str().unwrap().to_string())
}

async fn viewer_token(app: &TestApp, user: &str) -> (String, String) {
    let d = app.join(user).await.assert_ok().clone();
    (d["token"].as_str().unwrap().to_string(), d["whepEndpoint"].as_str().unwrap().to_string())
}

async fn post_offer(app: &TestApp, url: &str, token: Option<&str>, content_type: &str, body: String) -> reqwest::Response {
    let mut req = app.client.post(url).header("content-type", content_type).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request sent")
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let text = resp.text().await.expect("response body");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} is not an error envelope: {text:.60}"));
    assert_eq!(body["success"], false, "{body}");
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

async fn connect(app: &TestApp, role: PeerRole, url: &str, token: &str) -> Session {
    connect_with(app, role, VideoCodec::Vp8, url, token).await
}

async fn connect_with(app: &TestApp, role: PeerRole, codec: VideoCodec, url: &str, token: &str) -> Session {
    let s = open_session(&app.client, url, token, role, codec, Duration::from_secs(5)).await;
    Session { peer: s.peer, location: s.location }
}

async fn go_live(app: &TestApp, user: &str, frames: &Arc<Vec<Vec<u8>>>) -> (Feed, String, String) {
    go_live_with(app, user, frames, VideoCodec::Vp8).await
}

async fn go_live_with(app: &TestApp, user: &str, frames: &Arc<Vec<Vec<u8>>>, codec: VideoCodec) -> (Feed, String, String) {
    let (token, whip) = publisher_token(app, user).await;
    let s = connect_with(app, PeerRole::Publish, codec, &whip, &token).await;
    let feed = Feed::start(s.peer, frames.clone());
    assert!(eventually(Duration::from_secs(5), || async { is_live(app).await }).await, "publisher live once media flows");
    (feed, s.location, token)
}

async fn is_live(app: &TestApp) -> bool {
    app.get("/api/stats/publisher").await.assert_ok()["isPublisherLive"] == true
}

/// A video frame as a viewer received it.
struct Received {
    at: Instant,
    data: Arc<[u8]>,
    keyframe: bool,
    rtp_time: u64,
}

/// Collects frames until `video` video and `audio` audio frames arrived or `limit` passed.
async fn collect(peer: &mut PeerHandle, video: usize, audio: usize, limit: Duration) -> (Vec<Received>, Vec<Arc<[u8]>>) {
    let deadline = Instant::now() + limit;
    let (mut v, mut a) = (Vec::new(), Vec::new());
    while (v.len() < video || a.len() < audio) && Instant::now() < deadline {
        match peer.next_event(deadline.saturating_duration_since(Instant::now())).await {
            Some(PeerEvent::Frame { kind: MediaKind::Video, data, keyframe, at, rtp_time }) => {
                v.push(Received { at, data, keyframe, rtp_time })
            }
            Some(PeerEvent::Frame { kind: MediaKind::Audio, data, .. }) => a.push(data),
            Some(PeerEvent::Disconnected) | None => break,
            Some(_) => {}
        }
    }
    (v, a)
}

fn frames() -> Arc<Vec<Vec<u8>>> {
    Arc::new(ivf_frames(FIXTURE))
}

/// Asserts the viewer got the publisher's video as it was sent: one frame per 33 ms step of RTP
/// time (3000 at 90 kHz) in order, none missing, none twice, each byte for byte the frame the feed
/// sent at that time (`same` compares a received frame with a sent one).
#[track_caller]
fn assert_as_sent(video: &[Received], feed: &Feed, frames: &[Vec<u8>], same: impl Fn(&[u8], &[u8]) -> bool) {
    for pair in video.windows(2) {
        let step = pair[1].rtp_time as i64 - pair[0].rtp_time as i64;
        assert_eq!(step, 3000, "frames at RTP time {} then {}: not the next frame", pair[0].rtp_time, pair[1].rtp_time);
    }
    for (i, f) in video.iter().enumerate() {
        let index = feed.sent_at(f.rtp_time).unwrap_or_else(|| panic!("frame {i}: nothing was sent at {}", f.rtp_time));
        assert!(same(&f.data, &frames[index]), "frame {i} ({} bytes) differs from fixture frame {index}", f.data.len());
    }
}

fn identical(a: &[u8], b: &[u8]) -> bool {
    a == b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_receives_the_publishers_video_and_audio_intact() {
    let app = spawn_app().await;
    let frames = frames();
    assert_eq!(frames.iter().filter(|f| vp8_keyframe_size(f).is_some()).count(), 1, "fixture has one keyframe");
    let (feed, _, _) = go_live(&app, "broadcaster", &frames).await;

    let (token, whep) = viewer_token(&app, "viewer-1").await;
    let mut viewer = connect(&app, PeerRole::Play, &whep, &token).await;
    let (video, audio) = collect(&mut viewer.peer, 30, 20, Duration::from_secs(8)).await;
    assert!(video.len() >= 30 && audio.len() >= 20, "got {} video and {} audio frames", video.len(), audio.len());

    // Decoding starts clean: the first frame is the keyframe, 320x180, byte for byte.
    let first = &video[0];
    assert!(first.keyframe, "first forwarded video frame is a keyframe");
    assert_eq!(vp8_keyframe_size(&first.data), Some((320, 180)));
    assert_eq!(&first.data[..], &frames[0][..]);
    // Every frame arrives exactly as it was encoded, in order, none skipped or repeated.
    assert_as_sent(&video, &feed, &frames, identical);
    for f in &audio {
        assert_eq!(&f[..], &OPUS_SILENCE[..]);
        assert_eq!(f[0] >> 3, 31, "Opus TOC: CELT fullband 20 ms");
    }
    let stats = app.service.media().plane().unwrap().server.stats();
    assert_eq!(stats.viewers.load(Ordering::Relaxed), 1);
    assert_eq!(stats.publishers.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_publisher_like_obs_reaches_viewers_without_transcoding() {
    let app = spawn_app().await;
    let units = Arc::new(h264_access_units(FIXTURE_H264));
    assert_eq!(units.len(), 90);
    let (feed, _, _) = go_live_with(&app, "obs", &units, VideoCodec::H264).await;
    let (token, whep) = viewer_token(&app, "viewer-h264").await;
    let mut viewer = connect(&app, PeerRole::Play, &whep, &token).await;
    let (video, audio) = collect(&mut viewer.peer, 20, 10, Duration::from_secs(8)).await;
    assert!(video.len() >= 20 && audio.len() >= 10, "got {} video and {} audio frames", video.len(), audio.len());

    let first = &video[0];
    assert!(first.keyframe, "first forwarded frame is the IDR");
    let types: Vec<u8> = nal_units(&first.data).iter().map(|u| u[0] & 0x1f).collect();
    assert!(types.contains(&7) && types.contains(&8) && types.contains(&5), "SPS, PPS and IDR arrive together: {types:?}");
    // RTP carries NAL units, not start codes: each frame's NAL units are the sent ones, in order.
    assert_as_sent(&video, &feed, &units, |got, sent| nal_units(got) == nal_units(sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_a_keyframe_within_a_second() {
    let app = spawn_app().await;
    let frames = frames();
    let (_feed, _, _) = go_live(&app, "broadcaster", &frames).await;
    // The publisher's only unprompted keyframe is long gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for n in 0..2 {
        let (token, whep) = viewer_token(&app, &format!("late-{n}")).await;
        let mut viewer = connect(&app, PeerRole::Play, &whep, &token).await;
        let connected = Instant::now();
        let (video, _) = collect(&mut viewer.peer, 1, 0, Duration::from_secs(3)).await;
        let first = video.first().expect("a video frame arrives");
        assert!(first.keyframe && vp8_keyframe_size(&first.data).is_some(), "first frame is a keyframe");
        let waited = first.at.duration_since(connected);
        assert!(waited < Duration::from_secs(1), "keyframe after {waited:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_follows_the_publishers_media() {
    let app = spawn_app().await;
    let frames = frames();
    assert!(!is_live(&app).await);
    app.join("early").await.assert_error(404, "NOT_FOUND");

    // Connected but silent is not live.
    let (token, whip) = publisher_token(&app, "broadcaster").await;
    let s = connect(&app, PeerRole::Publish, &whip, &token).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!is_live(&app).await, "no media yet");

    let feed = Feed::start(s.peer, frames.clone());
    assert!(eventually(Duration::from_secs(5), || async { is_live(&app).await }).await, "live with media");
    app.join("viewer").await.assert_ok();

    // Offline within 3 s of silence, counted from the last media packet the publisher sent.
    feed.pause();
    let silent_since = Instant::now();
    let mut offline_after = None;
    // bounded: well past the 3 s the README promises
    while silent_since.elapsed() < Duration::from_secs(6) {
        if !is_live(&app).await {
            offline_after = Some(silent_since.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let offline_after = offline_after.expect("offline after silence");
    // 3 s of silence, then the SFU's loop (it wakes at least every 200 ms) and one poll.
    assert!(offline_after <= Duration::from_millis(3400), "offline only {offline_after:?} after the media stopped");
    feed.resume();
    assert!(eventually(Duration::from_secs(5), || async { is_live(&app).await }).await, "live again");

    let resp = app.client.delete(&s.location).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(eventually(Duration::from_secs(2), || async { !is_live(&app).await }).await, "offline after DELETE");
    app.join("after").await.assert_error(404, "NOT_FOUND");
    let stats = app.service.media().plane().unwrap().server.stats();
    assert_eq!(stats.publishers.load(Ordering::Relaxed), 0, "no session left behind");
    // the ended token cannot start again
    let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let (status, code) = error_of(post_offer(&app, &whip, Some(&token), "application/sdp", offer).await).await;
    assert_eq!((status.as_u16(), code.as_str()), (401, "UNAUTHORIZED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_publisher_is_never_taken_over_and_gives_way_once_it_falls_silent() {
    let app = spawn_app().await;
    let (feed, first_location, token) = go_live(&app, "host", &frames()).await;

    // While it sends, another user's token and another token of the same user are refused.
    for user in ["intruder", "host"] {
        let (other, whip) = publisher_token(&app, user).await;
        let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
        let (status, code) = error_of(post_offer(&app, &whip, Some(&other), "application/sdp", offer).await).await;
        assert_eq!((status.as_u16(), code.as_str()), (409, "CONFLICT"), "{user}'s new token");
    }
    let stats = app.service.media().plane().unwrap().server.stats();
    assert_eq!(stats.publishers.load(Ordering::Relaxed), 1);

    // Abandoned without DELETE: silent for longer than the liveness window, it gives way.
    feed.pause();
    assert!(eventually(Duration::from_secs(6), || async { !is_live(&app).await }).await, "offline once silent");
    let (again, whip) = publisher_token(&app, "host").await;
    let second = connect(&app, PeerRole::Publish, &whip, &again).await;
    assert_ne!(first_location, second.location);
    assert_eq!(stats.publishers.load(Ordering::Relaxed), 1, "the new session replaced the silent one");
    let resp = app.client.delete(&first_location).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "the replaced session is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_end_their_session_and_leave_nothing_behind() {
    let app = spawn_app().await;
    let frames = frames();
    let (_feed, _, _) = go_live(&app, "broadcaster", &frames).await;
    let (token, whep) = viewer_token(&app, "v").await;
    let viewer = connect(&app, PeerRole::Play, &whep, &token).await;
    let stats = &app.service.media().plane().unwrap().server.stats();
    assert_eq!(stats.viewers.load(Ordering::Relaxed), 1);

    // someone else's token cannot end it
    let (other, _) = viewer_token(&app, "w").await;
    let resp = app.client.delete(&viewer.location).bearer_auth(&other).send().await.unwrap();
    assert_eq!(error_of(resp).await, (StatusCode::FORBIDDEN, "FORBIDDEN".into()));
    let resp = app.client.delete(&viewer.location).send().await.unwrap();
    assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into()));

    let resp = app.client.delete(&viewer.location).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(stats.viewers.load(Ordering::Relaxed), 0);
    let resp = app.client.delete(&viewer.location).bearer_auth(&token).send().await.unwrap();
    assert_eq!(error_of(resp).await, (StatusCode::NOT_FOUND, "NOT_FOUND".into()));
    // a replayed token is refused
    let (_, offer) = Peer::offer(PeerRole::Play).await.unwrap();
    let (status, code) = error_of(post_offer(&app, &whep, Some(&token), "application/sdp", offer).await).await;
    assert_eq!((status.as_u16(), code.as_str()), (401, "UNAUTHORIZED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_and_tokens_get_clear_errors() {
    let app = spawn_app().await;
    let (token, whip) = publisher_token(&app, "host").await;
    let whep = format!("{}/whep", app.base);
    let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let sdp = "application/sdp";

    /// (case, bearer token, content type, body, status, error code)
    type Case<'a> = (&'a str, Option<String>, &'a str, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no token", None, sdp, offer.clone(), 401, "UNAUTHORIZED"),
        ("garbage token", Some("abc.def.ghi".into()), sdp, offer.clone(), 401, "UNAUTHORIZED"),
        ("wrong content type", Some(token.clone()), "application/json", offer.clone(), 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("no content type", Some(token.clone()), "", offer.clone(), 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("empty offer", Some(token.clone()), sdp, String::new(), 400, "VALIDATION_ERROR"),
        ("not SDP", Some(token.clone()), sdp, "hello".into(), 400, "VALIDATION_ERROR"),
        (
            "malformed SDP",
            Some(token.clone()),
            sdp,
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nbroken".into(),
            400,
            "VALIDATION_ERROR",
        ),
        ("oversized offer", Some(token.clone()), sdp, "a".repeat(100 * 1024), 413, "PAYLOAD_TOO_LARGE"),
    ];
    for (name, bearer, ct, body, status, code) in cases {
        let mut req = app.client.post(&whip).body(body);
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        if let Some(b) = &bearer {
            req = req.bearer_auth(b);
        }
        let (s, c) = error_of(req.send().await.unwrap()).await;
        assert_eq!((s.as_u16(), c.as_str()), (status, code), "{name}");
    }

    // A token signed by another key (another server) is foreign.
    let foreign = TokenSigner::generate();
    let claims = livestage::testing::claims_unverified(&token).unwrap();
    let forged = foreign.sign(&claims);
    let (s, c) = error_of(post_offer(&app, &whip, Some(&forged), sdp, offer.clone()).await).await;
    assert_eq!((s.as_u16(), c.as_str()), (401, "UNAUTHORIZED"));

    // A viewer token cannot publish; a publisher token plays nothing.
    app.go_live().await;
    let (viewer, _) = viewer_token(&app, "v").await;
    let (s, c) = error_of(post_offer(&app, &whip, Some(&viewer), sdp, offer.clone()).await).await;
    assert_eq!((s.as_u16(), c.as_str()), (403, "FORBIDDEN"));
    let (_, play_offer) = Peer::offer(PeerRole::Play).await.unwrap();
    let (s, c) = error_of(post_offer(&app, &whep, Some(&token), sdp, play_offer).await).await;
    assert_eq!((s.as_u16(), c.as_str()), (403, "FORBIDDEN"));

    // Expired tokens are refused.
    app.advance_secs(5 * 3600);
    let (s, c) = error_of(post_offer(&app, &whip, Some(&token), sdp, offer.clone()).await).await;
    assert_eq!((s.as_u16(), c.as_str()), (401, "UNAUTHORIZED"));

    // Unknown sessions, and trickle ICE which this ICE-lite server does not take.
    let resp = app.client.delete(format!("{whip}/nope")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(error_of(resp).await, (StatusCode::NOT_FOUND, "NOT_FOUND".into()));
    let resp = app.client.patch(format!("{whip}/nope")).bearer_auth(&token).body("a=candidate").send().await.unwrap();
    assert_eq!(error_of(resp).await, (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED".into()));
    assert_eq!(app.service.media().plane().unwrap().server.stats().publishers.load(Ordering::Relaxed), 0, "nothing leaked");
}

/// Three viewers crowd the master stage of five; the auto-scaler adds a stage. Returns the
/// master and the new stage.
async fn scale_up(app: &TestApp) -> (String, String) {
    let master = app.master_arn().await;
    for u in ["a", "b", "c"] {
        assert_eq!(app.join(u).await.assert_ok()["stageArn"], master.as_str());
    }
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::ScaleUp);
    let stages = app.get("/api/stage/list").await.assert_ok()["stages"].as_array().unwrap().clone();
    let auto = stages.iter().find(|s| s["autoScaled"] == true).expect("an auto-scaled stage");
    (master, auto["stageArn"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_an_auto_scaled_stage_get_the_same_media() {
    let app = spawn_app_with(small_stages).await;
    let frames = frames();
    let (feed, _, _) = go_live(&app, "broadcaster", &frames).await;
    let (master, auto) = scale_up(&app).await;

    // The next viewer is placed on the new stage and plays from it.
    let d = app.join("d").await.assert_ok().clone();
    assert_eq!(d["stageArn"], auto.as_str());
    assert_ne!(auto, master);
    let (token, whep) = (d["token"].as_str().unwrap(), d["whepEndpoint"].as_str().unwrap());
    let mut viewer = connect(&app, PeerRole::Play, whep, token).await;
    let (video, audio) = collect(&mut viewer.peer, 30, 20, Duration::from_secs(8)).await;
    assert!(video.len() >= 30 && audio.len() >= 20, "got {} video and {} audio frames", video.len(), audio.len());
    assert!(video[0].keyframe, "first forwarded video frame is a keyframe");
    assert_eq!(&video[0].data[..], &frames[0][..]);
    assert_as_sent(&video, &feed, &frames, identical);
    assert!(audio.iter().all(|f| f[..] == OPUS_SILENCE[..]));
}

/// A PUBLISH+SUBSCRIBE token of `stage` from the internal endpoint (secret "s3cret").
async fn media_server_token(app: &TestApp, stage: &str) -> String {
    let resp = app
        .client
        .post(format!("{}/api/token/mediaserver", app.base))
        .header("x-api-key", API_KEY)
        .header("x-internal-secret", "s3cret")
        .json(&json!({ "serverId": "m1", "stageArn": stage }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["capabilities"], json!(["PUBLISH", "SUBSCRIBE"]));
    body["data"]["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_tokens_must_be_for_a_stage_of_this_server() {
    let app = spawn_app_with(|s| {
        small_stages(s);
        s.server.internal_secret = Some("s3cret".into());
    })
    .await;
    app.go_live().await;
    let (master, auto) = scale_up(&app).await;
    let (whip, whep) = (format!("{}/whip", app.base), format!("{}/whep", app.base));
    let sdp = "application/sdp";
    // A PUBLISH token of the auto-scaled stage: well signed, unexpired, allowed to publish, but
    // publishing happens on the master stage only.
    let on_auto = media_server_token(&app, &auto).await;
    let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let (s, c) = error_of(post_offer(&app, &whip, Some(&on_auto), sdp, offer.clone()).await).await;
    assert_eq!((s.as_u16(), c.as_str()), (403, "FORBIDDEN"), "publishing on {auto}");

    // A viewer token (the next viewer is placed on the new stage), signed again with this
    // server's own key but for a stage the server does not have.
    let signer = &app.service.media().plane().unwrap().signer;
    let (viewer, _) = viewer_token(&app, "v").await;
    let mut claims = livestage::testing::claims_unverified(&viewer).unwrap();
    assert_eq!(claims["resource"], auto.as_str());
    claims["resource"] = json!("arn:aws:ivs:us-east-1:000000000000:stage/elsewhere");
    let (_, play_offer) = Peer::offer(PeerRole::Play).await.unwrap();
    let (s, c) = error_of(post_offer(&app, &whep, Some(&signer.sign(&claims)), sdp, play_offer).await).await;
    assert_eq!((s.as_u16(), c.as_str()), (404, "NOT_FOUND"), "playing an unknown stage");
    // Only the stage was wrong: the same claims for the viewer's own stage play.
    claims["resource"] = json!(auto);
    let (_, play_offer) = Peer::offer(PeerRole::Play).await.unwrap();
    let resp = post_offer(&app, &whep, Some(&signer.sign(&claims)), sdp, play_offer).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "playing the auto-scaled stage");

    // The same kind of token for the master stage publishes.
    let on_master = media_server_token(&app, &master).await;
    let resp = post_offer(&app, &whip, Some(&on_master), sdp, offer).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "publishing on the master stage");
}

/// What a [`lossy_relay`] did to the video packets towards the viewer.
#[derive(Default)]
struct RelayLog {
    /// (SSRC, sequence number) of every video packet that reached the relay.
    seen: HashSet<(u32, u16)>,
    /// RTP times of those packets.
    times: HashSet<u32>,
    /// (sequence number, RTP time) of each video packet the relay dropped.
    dropped: Vec<(u16, u32)>,
}

/// A UDP relay between a viewer and the SFU. Towards the viewer it drops the first transmission
/// of every `nth` packet of payload type `video`, at most `max_drops` of them, and never the
/// same packet twice; everything else passes (STUN, DTLS, RTCP, audio, and retransmissions,
/// which travel on their own payload type).
async fn lossy_relay(
    sfu: std::net::SocketAddr,
    video: u8,
    nth: usize,
    max_drops: usize,
) -> (std::net::SocketAddr, Arc<Mutex<RelayLog>>) {
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let viewer = Arc::new(Mutex::new(None::<std::net::SocketAddr>));
    let log = Arc::new(Mutex::new(RelayLog::default()));
    let record = log.clone();
    let (f, b, v) = (front.clone(), back.clone(), viewer.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *v.lock().unwrap() = Some(from);
            let _ = b.send_to(&buf[..n], sfu).await;
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut first_transmissions = 0usize;
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            if let Some(header) = rtp_header(&buf[..n], video) {
                let (seq, time, ssrc) = (header.seq, header.time, header.ssrc);
                let mut log = record.lock().unwrap();
                if log.seen.insert((ssrc, seq)) {
                    log.times.insert(time);
                    first_transmissions += 1;
                    if first_transmissions.is_multiple_of(nth) && log.dropped.len() < max_drops {
                        log.dropped.push((seq, time));
                        continue;
                    }
                }
            }
            let to = *viewer.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    (addr, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_recovered_by_nack_and_retransmission() {
    /// Video packets the relay loses on the way to the viewer: every 6th, about one frame in five.
    const DROPS: usize = 10;
    let app = spawn_app().await;
    let frames = frames();
    let (feed, _, _) = go_live(&app, "broadcaster", &frames).await;
    let sfu = app.service.media().plane().unwrap().server.addresses()[0];

    let (token, whep) = viewer_token(&app, "lossy").await;
    let (peer, offer) = Peer::offer(PeerRole::Play).await.unwrap();
    let resp = post_offer(&app, &whep, Some(&token), "application/sdp", offer).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let answer = resp.text().await.unwrap();
    let (relay, log) = lossy_relay(sfu, payload_type(&answer, "VP8"), 6, DROPS).await;
    // the viewer only knows the relay
    let mut seen = HashSet::new();
    let answer: String = answer
        .split("\r\n")
        .filter_map(|l| {
            if !l.starts_with("a=candidate:") {
                return Some(l.to_string());
            }
            let relayed = format!("a=candidate:1 1 udp 2130706431 {} {} typ host", relay.ip(), relay.port());
            seen.insert(relayed.clone()).then_some(relayed)
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut viewer = peer.connect(&answer).unwrap();
    assert!(viewer.connected(Duration::from_secs(5)).await, "connected through the relay");

    // At least 60 frames, and on until every frame the relay damaged was repaired.
    let recovered = |video: &[Received]| {
        let times: HashSet<u32> = video.iter().map(|f| f.rtp_time as u32).collect();
        let log = log.lock().unwrap();
        log.dropped.len() == DROPS && log.dropped.iter().all(|(_, t)| times.contains(t))
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut video = Vec::new();
    while !(video.len() >= 60 && recovered(&video)) && Instant::now() < deadline {
        match viewer.next_event(deadline.saturating_duration_since(Instant::now())).await {
            Some(PeerEvent::Frame { kind: MediaKind::Video, data, keyframe, at, rtp_time }) => {
                video.push(Received { at, data, keyframe, rtp_time })
            }
            Some(PeerEvent::Disconnected) | None => break,
            Some(_) => {}
        }
    }

    let log = log.lock().unwrap();
    assert_eq!(log.dropped.len(), DROPS, "the relay lost {} video packets", log.dropped.len());
    let received: HashSet<u32> = video.iter().map(|f| f.rtp_time as u32).collect();
    let lost: Vec<_> = log.dropped.iter().filter(|(_, t)| !received.contains(t)).collect();
    assert!(lost.is_empty(), "dropped (seq, RTP time) never repaired: {lost:?} of {:?}", log.dropped);
    // Where a frame is missing, say which leg lost it.
    for pair in video.windows(2) {
        if let Some(t) = (pair[0].rtp_time + 3000..pair[1].rtp_time).step_by(3000).next() {
            let relayed = log.times.contains(&(t as u32));
            let leg = if relayed { "viewer leg (not repaired)" } else { "way to the relay (the SFU never sent it)" };
            panic!("the frame at RTP time {t} is missing: lost on the {leg}");
        }
    }
    assert!(video.len() >= 60, "got {} video frames", video.len());
    assert_as_sent(&video, &feed, &frames, identical);
    let stats = app.service.media().plane().unwrap().server.stats();
    assert!(stats.frames_forwarded.load(Ordering::Relaxed) >= 60);
}

/// Creates channel `name`; returns its stream key and its stream-key WHIP URL.
async fn create_channel(app: &TestApp, name: &str) -> (String, String) {
    let created = app.post("/api/channels", json!({ "name": name })).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let d = created.data();
    (d["streamKey"].as_str().unwrap().to_string(), d["channel"]["whipEndpoint"].as_str().unwrap().to_string())
}

async fn channel_publisher(app: &TestApp, channel: &str) -> Value {
    app.get(&format!("/api/stats/publisher?channel={channel}")).await.assert_ok().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_live_at_once_each_reach_only_their_own_viewers() {
    let app = spawn_app().await;
    let (key, whip) = create_channel(&app, "news").await;
    assert_eq!(whip, format!("{}/whip/c/news", app.base));

    // The default channel goes live with a token (VP8), news with its stream key (H.264, as OBS).
    let vp8 = frames();
    let (feed_default, _, _) = go_live(&app, "broadcaster", &vp8).await;
    let h264 = Arc::new(h264_access_units(FIXTURE_H264));
    let obs = open_session(&app.client, &whip, &key, PeerRole::Publish, VideoCodec::H264, Duration::from_secs(5)).await;
    let feed_news = Feed::start(obs.peer, h264.clone());
    assert!(
        eventually(Duration::from_secs(5), || async { channel_publisher(&app, "news").await["isPublisherLive"] == true }).await,
        "news is live once its media flows"
    );
    assert_eq!(channel_publisher(&app, "news").await["publisher"]["userId"], "stream-key");
    assert_eq!(channel_publisher(&app, "default").await["publisher"]["userId"], "broadcaster", "each its own publisher");

    // Each channel's viewer gets exactly its channel's stream, as sent.
    let d = app.post("/api/token/viewer", json!({ "userId": "news-fan", "channel": "news" })).await.assert_ok().clone();
    assert_eq!(d["channel"], "news");
    let mut news_viewer = connect(&app, PeerRole::Play, d["whepEndpoint"].as_str().unwrap(), d["token"].as_str().unwrap()).await;
    let (token, whep) = viewer_token(&app, "default-fan").await;
    let mut default_viewer = connect(&app, PeerRole::Play, &whep, &token).await;
    let (video, _) = collect(&mut news_viewer.peer, 20, 0, Duration::from_secs(8)).await;
    assert!(video.len() >= 20, "news viewer got {} frames", video.len());
    assert_as_sent(&video, &feed_news, &h264, |got, sent| nal_units(got) == nal_units(sent));
    let (video, _) = collect(&mut default_viewer.peer, 20, 0, Duration::from_secs(8)).await;
    assert!(video.len() >= 20, "default viewer got {} frames", video.len());
    assert_as_sent(&video, &feed_default, &vp8, identical);

    // Another user cannot take news while it is live; the default channel's publisher does not
    // count against it.
    let other = app.post("/api/token/publisher", json!({ "userId": "intruder", "channel": "news" })).await.assert_ok().clone();
    assert_eq!(other["channel"], "news");
    let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let resp = post_offer(&app, other["whipEndpoint"].as_str().unwrap(), other["token"].as_str(), "application/sdp", offer).await;
    assert_eq!(error_of(resp).await, (StatusCode::CONFLICT, "CONFLICT".into()));

    // The stream key ends its session, and may go live again at once.
    let resp = app.client.delete(&obs.location).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(5), || async { channel_publisher(&app, "news").await["isPublisherLive"] == false }).await,
        "news goes offline when its encoder stops"
    );
    assert_eq!(channel_publisher(&app, "default").await["isPublisherLive"], true, "the default channel stays live");
    let again = open_session(&app.client, &whip, &key, PeerRole::Publish, VideoCodec::H264, Duration::from_secs(5)).await;
    assert!(again.location.starts_with(&format!("{whip}/")));
    drop(feed_default);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_key_is_its_own_channels_only_and_stops_working_once_rotated() {
    let app = spawn_app().await;
    let (key, whip) = create_channel(&app, "news").await;
    let (sports_key, _) = create_channel(&app, "sports").await;
    let offer = || async { Peer::offer(PeerRole::Publish).await.unwrap().1 };
    let refused = |resp| async { error_of(resp).await };
    let unauthorized = (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".to_string());
    assert_eq!(refused(post_offer(&app, &whip, None, "application/sdp", offer().await).await).await, unauthorized);
    assert_eq!(refused(post_offer(&app, &whip, Some(&sports_key), "application/sdp", offer().await).await).await, unauthorized);
    assert_eq!(refused(post_offer(&app, &whip, Some("lsk_short"), "application/sdp", offer().await).await).await, unauthorized);
    let (token, _) = publisher_token(&app, "host").await;
    assert_eq!(refused(post_offer(&app, &whip, Some(&token), "application/sdp", offer().await).await).await, unauthorized);
    let nowhere = format!("{}/whip/c/nowhere", app.base);
    assert_eq!(refused(post_offer(&app, &nowhere, Some(&key), "application/sdp", offer().await).await).await, unauthorized);
    let bad_name = format!("{}/whip/c/Not_A_Name", app.base);
    assert_eq!(
        refused(post_offer(&app, &bad_name, Some(&key), "application/sdp", offer().await).await).await,
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR".to_string())
    );
    assert_eq!(
        refused(post_offer(&app, &whip, Some(&key), "text/plain", offer().await).await).await,
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE".to_string())
    );

    let session = open_session(&app.client, &whip, &key, PeerRole::Publish, VideoCodec::Vp8, Duration::from_secs(5)).await;
    // Only the key that opened the session ends it.
    let resp = app.client.delete(&session.location).bearer_auth(&sports_key).send().await.unwrap();
    assert_eq!(error_of(resp).await, unauthorized);

    let rotated =
        app.post("/api/channels/news/stream-key", json!({})).await.assert_ok()["streamKey"].as_str().unwrap().to_string();
    assert_eq!(refused(post_offer(&app, &whip, Some(&key), "application/sdp", offer().await).await).await, unauthorized);
    open_session(&app.client, &whip, &rotated, PeerRole::Publish, VideoCodec::Vp8, Duration::from_secs(5)).await;
}
