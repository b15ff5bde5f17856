//! WHIP publish and WHEP play through the embedded SFU, with real WebRTC peers (str0m) over
//! loopback UDP: media forwarding, keyframes for late joiners, liveness, and every bad input.

use crate::helpers::{eventually, spawn_app, TestApp};
use livestage::server::backend::jwt::TokenSigner;
use livestage::server::media::peer::{Peer, PeerEvent, PeerHandle, PeerRole, VideoCodec};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::media::MediaKind;

/// 3 s of 320x180 VP8 at 30 fps; frame 0 is the only keyframe.
const FIXTURE: &[u8] = include_bytes!("../fixtures/testsrc-320x180.ivf");
/// The same in H.264 constrained baseline, Annex B, one access unit per frame (each starts with
/// an access unit delimiter), SPS/PPS before the only IDR frame: what OBS sends over WHIP.
const FIXTURE_H264: &[u8] = include_bytes!("../fixtures/testsrc-320x180.h264");
/// A 20 ms Opus packet (CELT, fullband) that decodes to silence.
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

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
    task: tokio::task::JoinHandle<PeerHandle>,
}

impl Feed {
    fn start(mut peer: PeerHandle, frames: Arc<Vec<Vec<u8>>>) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
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
        Self { running, task }
    }

    fn pause(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    fn resume(&self) {
        self.running.store(true, Ordering::Relaxed);
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
    token: String,
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
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["success"], false, "{body}");
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

async fn connect(app: &TestApp, role: PeerRole, url: &str, token: &str) -> Session {
    connect_with(app, role, VideoCodec::Vp8, url, token).await
}

async fn connect_with(app: &TestApp, role: PeerRole, codec: VideoCodec, url: &str, token: &str) -> Session {
    let (peer, offer) = Peer::offer_with(role, codec).await.unwrap();
    let resp = post_offer(app, url, Some(token), "application/sdp", offer).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["content-type"], "application/sdp");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{url}/")), "{location}");
    let answer = resp.text().await.unwrap();
    assert!(answer.starts_with("v=0"), "{answer}");
    let mut peer = peer.connect(&answer).unwrap();
    assert!(peer.connected(Duration::from_secs(5)).await, "peer connected to the SFU");
    Session { peer, location, token: token.to_string() }
}

async fn go_live(app: &TestApp, user: &str, frames: &Arc<Vec<Vec<u8>>>) -> (Feed, String, String) {
    go_live_with(app, user, frames, VideoCodec::Vp8).await
}

async fn go_live_with(app: &TestApp, user: &str, frames: &Arc<Vec<Vec<u8>>>, codec: VideoCodec) -> (Feed, String, String) {
    let (token, whip) = publisher_token(app, user).await;
    let s = connect_with(app, PeerRole::Publish, codec, &whip, &token).await;
    let feed = Feed::start(s.peer, frames.clone());
    assert!(
        eventually(Duration::from_secs(5), || async { is_live(app).await }).await,
        "publisher live once media flows"
    );
    (feed, s.location, token)
}

async fn is_live(app: &TestApp) -> bool {
    app.get("/api/stats/publisher").await.assert_ok()["isPublisherLive"] == true
}

/// Collects frames until `video` video and `audio` audio frames arrived or `limit` passed.
async fn collect(peer: &mut PeerHandle, video: usize, audio: usize, limit: Duration) -> (Vec<(Instant, Arc<[u8]>, bool)>, Vec<Arc<[u8]>>) {
    let deadline = Instant::now() + limit;
    let (mut v, mut a) = (Vec::new(), Vec::new());
    while (v.len() < video || a.len() < audio) && Instant::now() < deadline {
        match peer.next_event(deadline.saturating_duration_since(Instant::now())).await {
            Some(PeerEvent::Frame { kind: MediaKind::Video, data, keyframe, at, .. }) => v.push((at, data, keyframe)),
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

#[tokio::test]
async fn a_viewer_receives_the_publishers_video_and_audio_intact() {
    let app = spawn_app().await;
    let frames = frames();
    assert_eq!(frames.iter().filter(|f| vp8_keyframe_size(f).is_some()).count(), 1, "fixture has one keyframe");
    let (_feed, _, _) = go_live(&app, "broadcaster", &frames).await;

    let (token, whep) = viewer_token(&app, "viewer-1").await;
    let mut viewer = connect(&app, PeerRole::Play, &whep, &token).await;
    let (video, audio) = collect(&mut viewer.peer, 30, 20, Duration::from_secs(8)).await;
    assert!(video.len() >= 30 && audio.len() >= 20, "got {} video and {} audio frames", video.len(), audio.len());

    // Decoding starts clean: the first frame is the keyframe, 320x180, byte for byte.
    let (_, first, keyframe) = &video[0];
    assert!(keyframe, "first forwarded video frame is a keyframe");
    assert_eq!(vp8_keyframe_size(first), Some((320, 180)));
    assert_eq!(&first[..], &frames[0][..]);
    // Every frame arrives exactly as it was encoded.
    let sent: HashSet<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    for (i, (_, f, _)) in video.iter().enumerate() {
        assert!(sent.contains(&f[..]), "video frame {i} ({} bytes) differs from every sent frame", f.len());
    }
    for f in &audio {
        assert_eq!(&f[..], &OPUS_SILENCE[..]);
        assert_eq!(f[0] >> 3, 31, "Opus TOC: CELT fullband 20 ms");
    }
    let stats = app.service.media().unwrap().server.stats();
    assert_eq!(stats.viewers.load(Ordering::Relaxed), 1);
    assert_eq!(stats.publishers.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn an_h264_publisher_like_obs_reaches_viewers_without_transcoding() {
    let app = spawn_app().await;
    let units = Arc::new(h264_access_units(FIXTURE_H264));
    assert_eq!(units.len(), 90);
    let (_feed, _, _) = go_live_with(&app, "obs", &units, VideoCodec::H264).await;
    let (token, whep) = viewer_token(&app, "viewer-h264").await;
    let mut viewer = connect(&app, PeerRole::Play, &whep, &token).await;
    let (video, audio) = collect(&mut viewer.peer, 20, 10, Duration::from_secs(8)).await;
    assert!(video.len() >= 20 && audio.len() >= 10, "got {} video and {} audio frames", video.len(), audio.len());

    let (_, first, keyframe) = &video[0];
    assert!(*keyframe, "first forwarded frame is the IDR");
    let types: Vec<u8> = nal_units(first).iter().map(|u| u[0] & 0x1f).collect();
    assert!(types.contains(&7) && types.contains(&8) && types.contains(&5), "SPS, PPS and IDR arrive together: {types:?}");
    let sent: Vec<Vec<Vec<u8>>> = units.iter().map(|u| nal_units(u)).collect();
    for (i, (_, f, _)) in video.iter().enumerate() {
        assert!(sent.contains(&nal_units(f)), "frame {i}: its NAL units differ from every sent frame's");
    }
}

#[tokio::test]
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
        let (at, first, keyframe) = video.first().expect("a video frame arrives");
        assert!(*keyframe && vp8_keyframe_size(first).is_some(), "first frame is a keyframe");
        let waited = at.duration_since(connected);
        assert!(waited < Duration::from_secs(1), "keyframe after {waited:?}");
    }
}

#[tokio::test]
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

    feed.pause();
    assert!(eventually(Duration::from_secs(6), || async { !is_live(&app).await }).await, "offline after silence");
    feed.resume();
    assert!(eventually(Duration::from_secs(5), || async { is_live(&app).await }).await, "live again");

    let resp = app.client.delete(&s.location).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(eventually(Duration::from_secs(2), || async { !is_live(&app).await }).await, "offline after DELETE");
    app.join("after").await.assert_error(404, "NOT_FOUND");
    let stats = app.service.media().unwrap().server.stats();
    assert_eq!(stats.publishers.load(Ordering::Relaxed), 0, "no session left behind");
    // the ended token cannot start again
    let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let (status, code) = error_of(post_offer(&app, &whip, Some(&token), "application/sdp", offer).await).await;
    assert_eq!((status.as_u16(), code.as_str()), (401, "UNAUTHORIZED"));
}

#[tokio::test]
async fn a_second_publisher_is_refused_but_the_same_user_may_reconnect() {
    let app = spawn_app().await;
    let (token, whip) = publisher_token(&app, "host").await;
    let first = connect(&app, PeerRole::Publish, &whip, &token).await;

    let (other, _) = publisher_token(&app, "intruder").await;
    let (_, offer) = Peer::offer(PeerRole::Publish).await.unwrap();
    let (status, code) = error_of(post_offer(&app, &whip, Some(&other), "application/sdp", offer).await).await;
    assert_eq!((status.as_u16(), code.as_str()), (409, "CONFLICT"));

    let (again, _) = publisher_token(&app, "host").await;
    let second = connect(&app, PeerRole::Publish, &whip, &again).await;
    assert_ne!(first.location, second.location);
    let stats = app.service.media().unwrap().server.stats();
    assert_eq!(stats.publishers.load(Ordering::Relaxed), 1, "the reconnect replaced the old session");
    // the replaced session is gone
    let resp = app.client.delete(&first.location).bearer_auth(&first.token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn viewers_end_their_session_and_leave_nothing_behind() {
    let app = spawn_app().await;
    let frames = frames();
    let (_feed, _, _) = go_live(&app, "broadcaster", &frames).await;
    let (token, whep) = viewer_token(&app, "v").await;
    let viewer = connect(&app, PeerRole::Play, &whep, &token).await;
    let stats = &app.service.media().unwrap().server.stats();
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

#[tokio::test]
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
        ("malformed SDP", Some(token.clone()), sdp, "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nbroken".into(), 400, "VALIDATION_ERROR"),
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
    let claims = TokenSigner::decode_claims_unverified(&token).unwrap();
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
    assert_eq!(app.service.media().unwrap().server.stats().publishers.load(Ordering::Relaxed), 0, "nothing leaked");
}

/// A UDP relay between a viewer and the SFU that drops every `nth` RTP packet towards the
/// viewer (STUN, DTLS and RTCP pass). Returns the relay's address and its drop counter.
async fn lossy_relay(sfu: std::net::SocketAddr, nth: usize) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let viewer = Arc::new(std::sync::Mutex::new(None::<std::net::SocketAddr>));
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = dropped.clone();
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
        let mut rtp = 0usize;
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let is_rtp = n > 12 && (128..192).contains(&buf[0]) && !(200..=206).contains(&buf[1]);
            if is_rtp {
                rtp += 1;
                if rtp.is_multiple_of(nth) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let to = *viewer.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    (addr, dropped)
}

#[tokio::test]
async fn lost_packets_are_recovered_by_nack_and_retransmission() {
    let app = spawn_app().await;
    let frames = frames();
    let (_feed, _, _) = go_live(&app, "broadcaster", &frames).await;
    let sfu = app.service.media().unwrap().server.addresses()[0];
    let (relay, dropped) = lossy_relay(sfu, 10).await; // 10 % of media packets lost on the way to the viewer

    let (token, whep) = viewer_token(&app, "lossy").await;
    let (peer, offer) = Peer::offer(PeerRole::Play).await.unwrap();
    let resp = post_offer(&app, &whep, Some(&token), "application/sdp", offer).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    // the viewer only knows the relay
    let mut seen = HashSet::new();
    let answer: String = resp
        .text()
        .await
        .unwrap()
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

    // 60 frames in a row, each whole: nothing skipped, nothing damaged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut video: Vec<(u64, Arc<[u8]>)> = Vec::new();
    while video.len() < 60 && Instant::now() < deadline {
        match viewer.next_event(deadline.saturating_duration_since(Instant::now())).await {
            Some(PeerEvent::Frame { kind: MediaKind::Video, data, rtp_time, .. }) => video.push((rtp_time, data)),
            Some(PeerEvent::Disconnected) | None => break,
            Some(_) => {}
        }
    }
    assert!(video.len() >= 60, "got {} video frames", video.len());
    assert!(dropped.load(Ordering::Relaxed) >= 5, "the relay really lost packets");
    let sent: HashSet<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    for (i, (_, f)) in video.iter().enumerate() {
        assert!(sent.contains(&f[..]), "frame {i} arrived damaged");
    }
    for pair in video.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 3000, "a frame is missing between two received ones");
    }
    let stats = app.service.media().unwrap().server.stats();
    assert!(stats.frames_forwarded.load(Ordering::Relaxed) >= 60);
}
