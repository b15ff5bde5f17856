//! The engine under simulated time, the way str0m tests itself (`tests/common.rs`): real str0m
//! peers, publishers and viewers, are wired to the [`Engine`] through an in-memory network, and
//! the test moves the clock by hand. No sockets, no sleeps, no tokio.

use super::engine::{Engine, Event, Input, NewSession, Now, Output};
use super::route::RouteKey;
use super::{answer, rtc_config, Admission, MediaError, MediaStats, Participant, Role};
use crate::domain::{ChannelId, UnixMs};
use crate::testing::media;
use crate::testing::peer::{client_offer, write_media, ClientOffer, PeerRole, VideoCodec};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event as RtcEvent, Input as RtcInput, Output as RtcOutput, Rtc};

const SERVER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 3478));
/// One way, each direction.
const LATENCY: Duration = Duration::from_millis(5);
/// 30 fps.
const FRAME: Duration = Duration::from_micros(33_333);
/// The wall clock when the simulation starts.
const UNIX_START_MS: i64 = 1_800_000_000_000;
/// Tokens are valid this long after the simulation starts.
const TOKEN_LIFETIME_S: i64 = 60;
/// The admission limits of the simulated server.
const ADMISSION: Admission =
    Admission { connect_timeout: Duration::from_secs(5), connecting_max: 200, connecting_per_client: 10 };
/// Frames an encoder takes to answer a keyframe request.
const KEYFRAME_DELAY: u64 = 3;
const STAGE: &str = "arn:aws:ivs:local:000000000000:stage/main";

/// A datagram in flight.
struct Packet {
    at: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Frame {
    kind: MediaKind,
    keyframe: bool,
    rtp_time: u64,
    data: Vec<u8>,
}

/// A browser or OBS: a str0m peer with one video (VP8) and one audio (Opus) m-line.
struct TestPeer {
    addr: SocketAddr,
    rtc: Rtc,
    timeout: Instant,
    video: Mid,
    audio: Mid,
    participant: Participant,
    role: Role,
    /// The session the engine opened for it.
    session: String,
    /// The payload type of VP8 on this peer's session, from the answer.
    vp8_pt: u8,
    connected: bool,
    /// Publisher: frames written. Viewer: frames received.
    frames: Vec<Frame>,
    keyframe_requests: usize,
    keyframe_requests_seen: usize,
    /// Publisher: the frame that will be a keyframe, as asked.
    keyframe_due: Option<u64>,
}

/// What the network does to a datagram from the server to a peer: `true` loses it.
type Loss = Box<dyn FnMut(usize, &[u8]) -> bool>;

struct Sim {
    start: Instant,
    now: Instant,
    engine: Engine,
    stats: Arc<MediaStats>,
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    peers: Vec<TestPeer>,
    /// In flight, in arrival order (every datagram takes [`LATENCY`]).
    wire: VecDeque<Packet>,
    loss: Loss,
    /// What the engine reported, and when.
    events: Vec<(Instant, Event)>,
    sessions: usize,
}

fn participant(user: &str, token: &str, stage: &str) -> Participant {
    participant_on(&ChannelId::default(), user, token, stage)
}

/// A participant on a stage of `channel`.
fn participant_on(channel: &RouteKey, user: &str, token: &str, stage: &str) -> Participant {
    Participant {
        user_id: user.into(),
        participant_id: token.into(),
        stage_arn: stage.into(),
        channel: channel.clone(),
        expires_at: Some(UNIX_START_MS / 1000 + TOKEN_LIFETIME_S),
    }
}

/// A synthetic VP8 frame, ~3 RTP packets: what it carries names its publisher and number.
fn vp8_frame(publisher: usize, n: u64, keyframe: bool) -> Vec<u8> {
    let seed = (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ publisher as u64;
    let mut f = media::vp8_frame(2500, seed, keyframe.then_some((320, 180)));
    f[10..18].copy_from_slice(&n.to_be_bytes());
    f[18] = publisher as u8;
    f
}

/// (SSRC, sequence number) of an RTP packet of payload type `pt`.
fn rtp_header(datagram: &[u8], pt: u8) -> Option<(u32, u16)> {
    media::rtp_header(datagram, pt).map(|h| (h.ssrc, h.seq))
}

impl Sim {
    fn new() -> Self {
        Self::with_admission(ADMISSION)
    }

    fn with_admission(admission: Admission) -> Self {
        let start = Instant::now();
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto.dtls_provider.generate_certificate().expect("a DTLS certificate");
        let stats = Arc::new(MediaStats::default());
        Sim {
            start,
            now: start,
            engine: Engine::new(start, stats.clone(), admission),
            stats,
            crypto,
            cert,
            peers: Vec::new(),
            wire: VecDeque::new(),
            loss: Box::new(|_, _| false),
            events: Vec::new(),
            sessions: 0,
        }
    }

    fn clock(&self) -> Now {
        Now { at: self.now, unix: UnixMs::from_millis(UNIX_START_MS) + (self.now - self.start) }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Offers, as a browser or OBS would over WHIP/WHEP, and opens the session the answer is for.
    fn join(&mut self, role: Role, participant: Participant) -> Result<usize, MediaError> {
        self.join_from(role, participant, None)
    }

    /// Like [`Sim::join`], with the offer sent from `client` (default: the peer's own address).
    fn join_from(&mut self, role: Role, participant: Participant, client: Option<Ipv4Addr>) -> Result<usize, MediaError> {
        let index = self.peers.len();
        let addr = SocketAddr::from((Ipv4Addr::new(10, 0, 1, index as u8 + 1), 5000));
        let client = Some(client.map_or(addr.ip(), std::net::IpAddr::V4));
        let peer_role = if role == Role::Publisher { PeerRole::Publish } else { PeerRole::Play };
        let ClientOffer { mut rtc, pending, video, audio, sdp: offer } =
            client_offer(peer_role, &[VideoCodec::Vp8], addr, self.now, Some(self.crypto.clone())).unwrap();

        let config = rtc_config(&self.crypto, &self.cert);
        let candidates = [Candidate::host(SERVER, "udp").unwrap()];
        let (server_rtc, answer_sdp) = answer(config, &candidates, &offer, self.now)?;
        self.sessions += 1;
        let session = format!("session-{}", self.sessions);
        let new = NewSession { id: session.clone(), role, participant: participant.clone(), client, rtc: server_rtc };
        self.handle(Input::Open(Box::new(new)))?;

        rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer_sdp).unwrap()).unwrap();
        self.peers.push(TestPeer {
            addr,
            rtc,
            timeout: self.now,
            video,
            audio,
            participant,
            role,
            session,
            vp8_pt: media::payload_type(&answer_sdp, "VP8"),
            connected: false,
            frames: Vec::new(),
            keyframe_requests: 0,
            keyframe_requests_seen: 0,
            keyframe_due: None,
        });
        Ok(index)
    }

    /// Joins and runs until the peer is connected.
    fn connect(&mut self, role: Role, participant: Participant) -> usize {
        let peer = self.join(role, participant).expect("session opened");
        let deadline = self.now + Duration::from_secs(5);
        while !self.peers[peer].connected {
            assert!(self.now < deadline, "peer {peer} did not connect");
            self.run_for(Duration::from_millis(10));
        }
        peer
    }

    /// The peer ends its session (WHIP/WHEP `DELETE`) and stops.
    fn close(&mut self, peer: usize) -> Result<(), MediaError> {
        let p = &mut self.peers[peer];
        p.rtc.disconnect();
        let input = Input::Close { role: p.role, id: p.session.clone(), participant_id: p.participant.participant_id.clone() };
        self.handle(input)
    }

    fn handle(&mut self, input: Input<'_>) -> Result<(), MediaError> {
        let mut outputs = Vec::new();
        let reply = self.engine.handle(self.clock(), input, &mut |o| outputs.push(o));
        for output in outputs {
            match output {
                Output::Transmit(t) => {
                    let to = self.peers.iter().position(|p| p.addr == t.destination);
                    if to.is_some_and(|peer| (self.loss)(peer, &t.contents)) {
                        continue;
                    }
                    let (source, destination, contents) = (t.source, t.destination, t.contents.to_vec());
                    self.wire.push_back(Packet { at: self.now + LATENCY, source, destination, contents });
                }
                Output::Event(e) => self.events.push((self.now, e)),
            }
        }
        reply
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Delivers datagrams and fires timeouts in time order until `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.settle();
            let mut next = self.engine.poll_timeout();
            for p in self.peers.iter().filter(|p| p.rtc.is_alive()) {
                next = next.min(p.timeout);
            }
            if let Some(packet) = self.wire.front() {
                next = next.min(packet.at);
            }
            // An `Rtc` may ask to be woken now again; time still moves on.
            let next = if next <= self.now { self.now + Duration::from_millis(1) } else { next };
            if next > until {
                self.now = until.max(self.now);
                return;
            }
            self.now = next;
        }
    }

    /// Does everything due at `now`.
    fn settle(&mut self) {
        while self.wire.front().is_some_and(|p| p.at <= self.now) {
            let packet = self.wire.pop_front().unwrap();
            if packet.destination == SERVER {
                let input = Input::Receive { source: packet.source, destination: packet.destination, contents: &packet.contents };
                let _ = self.handle(input);
            } else if let Some(peer) = self.peers.iter_mut().find(|p| p.addr == packet.destination) {
                let receive = Receive {
                    proto: Protocol::Udp,
                    source: packet.source,
                    destination: packet.destination,
                    contents: packet.contents.as_slice().try_into().unwrap(),
                };
                if peer.rtc.handle_input(RtcInput::Receive(self.now, receive)).is_ok() {
                    drain_peer(peer, self.now, &mut self.wire);
                }
            }
        }
        if self.engine.poll_timeout() <= self.now {
            let _ = self.handle(Input::Timeout);
        }
        for peer in &mut self.peers {
            if peer.timeout <= self.now && peer.rtc.is_alive() && peer.rtc.handle_input(RtcInput::Timeout(self.now)).is_ok() {
                drain_peer(peer, self.now, &mut self.wire);
            }
        }
    }

    /// Each publisher writes `frames` at 30 fps, a video frame and an Opus packet each, the
    /// first one now; returns a frame interval after the last. A publisher sends a keyframe
    /// first, and [`KEYFRAME_DELAY`] frames after it was asked for one; otherwise never.
    fn stream(&mut self, publishers: &[usize], frames: Range<u64>) {
        for n in frames {
            for &p in publishers {
                let peer = &mut self.peers[p];
                if peer.keyframe_requests > peer.keyframe_requests_seen && peer.keyframe_due.is_none() {
                    peer.keyframe_due = Some(n + KEYFRAME_DELAY);
                }
                peer.keyframe_requests_seen = peer.keyframe_requests;
                let keyframe = peer.frames.is_empty() || peer.keyframe_due.is_some_and(|due| due <= n);
                if keyframe {
                    peer.keyframe_due = None;
                }
                let data = vp8_frame(p, n, keyframe);
                let rtp_time = n * 3000;
                write(peer, self.now, MediaKind::Video, rtp_time, data.clone());
                write(peer, self.now, MediaKind::Audio, n * 1600, media::OPUS_SILENCE.to_vec());
                peer.frames.push(Frame { kind: MediaKind::Video, keyframe, rtp_time, data });
                drain_peer(peer, self.now, &mut self.wire);
            }
            self.run_for(FRAME);
        }
    }

    fn video(&self, peer: usize) -> Vec<&Frame> {
        self.peers[peer].frames.iter().filter(|f| f.kind == MediaKind::Video).collect()
    }

    fn liveness(&self) -> Vec<(Duration, Option<String>)> {
        self.liveness_of(&ChannelId::default())
    }

    /// What was reported of `channel`'s publisher, and when.
    fn liveness_of(&self, channel: &RouteKey) -> Vec<(Duration, Option<String>)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Liveness { group, publisher } if group == channel => {
                    Some((*at - self.start, publisher.as_ref().map(|p| p.user_id.clone())))
                }
                _ => None,
            })
            .collect()
    }

    fn closed(&self, peer: usize) -> bool {
        let session = &self.peers[peer].session;
        self.events.iter().any(|(_, e)| matches!(e, Event::Closed { session: s, .. } if **s == **session))
    }
}

fn write(peer: &mut TestPeer, now: Instant, kind: MediaKind, rtp_time: u64, data: Vec<u8>) {
    let mid = if kind == MediaKind::Video { peer.video } else { peer.audio };
    write_media(&mut peer.rtc, mid, kind, now, rtp_time, data).expect("written");
}

fn drain_peer(peer: &mut TestPeer, now: Instant, wire: &mut VecDeque<Packet>) {
    loop {
        match peer.rtc.poll_output() {
            Ok(RtcOutput::Timeout(t)) => {
                peer.timeout = t;
                return;
            }
            Ok(RtcOutput::Transmit(t)) => wire.push_back(Packet {
                at: now + LATENCY,
                source: t.source,
                destination: t.destination,
                contents: t.contents.to_vec(),
            }),
            Ok(RtcOutput::Event(e)) => match e {
                RtcEvent::Connected => peer.connected = true,
                RtcEvent::MediaData(d) => peer.frames.push(Frame {
                    kind: if d.mid == peer.video { MediaKind::Video } else { MediaKind::Audio },
                    keyframe: d.is_keyframe(),
                    rtp_time: d.time.numer(),
                    data: d.data.to_vec(),
                }),
                RtcEvent::KeyframeRequest(_) => peer.keyframe_requests += 1,
                _ => {}
            },
            Err(e) => panic!("peer failed: {e}"),
        }
    }
}

#[test]
fn a_publisher_is_live_while_its_media_flows_and_offline_after_silence() {
    let mut sim = Sim::new();
    let publisher = sim.connect(Role::Publisher, participant("broadcaster", "token-1", STAGE));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.liveness().is_empty(), "connected but sending nothing is not live: {:?}", sim.liveness());

    let first = sim.elapsed();
    sim.stream(&[publisher], 0..30);
    let live = sim.liveness();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].1.as_deref(), Some("broadcaster"));
    assert!(live[0].0 > first && live[0].0 <= first + LATENCY * 2, "live at {:?}, media from {first:?}", live[0].0);
    let since = sim.events.iter().find_map(|(_, e)| match e {
        Event::Liveness { publisher: Some(p), .. } => Some(p.since.as_millis()),
        _ => None,
    });
    assert_eq!(since, Some(UNIX_START_MS + live[0].0.as_millis() as i64), "stamped on the wall clock passed in");

    // The last frame left a frame interval ago and arrived after LATENCY; the session stays,
    // silent.
    let last = sim.now - FRAME;
    sim.run_until(last + LATENCY + Duration::from_millis(2900));
    assert_eq!(sim.liveness().len(), 1, "still live 2.9 s into the silence: {:?}", sim.liveness());
    sim.run_until(last + LATENCY + Duration::from_millis(3300));
    let live = sim.liveness();
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(live[1].1, None, "offline after 3 s of silence");
    assert!(live[1].0 >= last - sim.start + Duration::from_secs(3), "offline at {:?}, last media {last:?}", live[1].0);
    assert!(!sim.closed(publisher), "the silent publisher's session stays");

    // Media again: live again. The session closing: offline at once.
    sim.stream(&[publisher], 30..40);
    assert_eq!(sim.liveness().len(), 3);
    sim.close(publisher).unwrap();
    let live = sim.liveness();
    assert_eq!(live.len(), 4, "{live:?}");
    assert_eq!(live[3], (sim.elapsed(), None));
}

#[test]
fn a_late_joiner_gets_nothing_until_the_keyframe_the_engine_asks_for() {
    let mut sim = Sim::new();
    let publisher = sim.connect(Role::Publisher, participant("broadcaster", "p", STAGE));
    let early = sim.connect(Role::Viewer, participant("early", "v1", STAGE));
    // The publisher's only keyframe is its first frame; it sends no other unless asked.
    sim.stream(&[publisher], 0..30);
    assert_eq!(sim.video(early).len(), 30);
    assert!(sim.video(early)[0].keyframe);
    let requests_before = sim.peers[publisher].keyframe_requests;

    // Two viewers join mid-stream, at the same moment.
    let late = sim.join(Role::Viewer, participant("late", "v2", STAGE)).unwrap();
    let later = sim.join(Role::Viewer, participant("later", "v3", STAGE)).unwrap();
    let joined = sim.peers[publisher].frames.len();
    // What reaches them on the wire: the RTP time of each video packet.
    let wire = Rc::new(RefCell::new(HashMap::<usize, Vec<u32>>::new()));
    let log = wire.clone();
    let pts: HashMap<usize, u8> = [late, later].map(|v| (v, sim.peers[v].vp8_pt)).into();
    sim.loss = Box::new(move |peer, datagram| {
        if pts.get(&peer).is_some_and(|&pt| rtp_header(datagram, pt).is_some()) {
            log.borrow_mut().entry(peer).or_default().push(u32::from_be_bytes(datagram[4..8].try_into().unwrap()));
        }
        false
    });
    sim.stream(&[publisher], 30..60);
    assert!(sim.peers[late].connected && sim.peers[later].connected);

    let sent = &sim.peers[publisher].frames;
    let keyframes: Vec<usize> = (joined..sent.len()).filter(|&i| sent[i].keyframe).collect();
    assert_eq!(keyframes.len(), 1, "the publisher sent one keyframe after the joins: {keyframes:?}");
    assert_eq!(
        sim.peers[publisher].keyframe_requests - requests_before,
        1,
        "both joiners' requests coalesced into one PLI (one per 250 ms)"
    );
    for viewer in [late, later] {
        let first_sent = wire.borrow().get(&viewer).and_then(|times| times.first().copied());
        assert_eq!(first_sent, Some(sent[keyframes[0]].rtp_time as u32), "nothing went to viewer {viewer} before the keyframe");
        let video = sim.video(viewer);
        assert!(!video.is_empty(), "viewer {viewer} got no video");
        assert!(video[0].keyframe, "the first frame a late joiner gets is a keyframe");
        assert_eq!(video[0].data, sent[keyframes[0]].data, "…the one sent on the engine's request");
        let expected: Vec<u64> = sent[keyframes[0]..].iter().map(|f| f.rtp_time).collect();
        assert_eq!(video.iter().map(|f| f.rtp_time).collect::<Vec<_>>(), expected, "and every frame after it");
    }
    assert_eq!(sim.video(early).len(), 60, "the early viewer missed nothing");
    assert!(sim.stats.keyframe_requests.load(Ordering::Relaxed) >= 1);
}

#[test]
fn video_lost_on_the_way_to_a_viewer_is_recovered_by_nack() {
    let mut sim = Sim::new();
    let publisher = sim.connect(Role::Publisher, participant("broadcaster", "p", STAGE));
    let viewer = sim.connect(Role::Viewer, participant("lossy", "v", STAGE));
    let pt = sim.peers[viewer].vp8_pt;

    // The first transmissions of these video packets (by arrival order at the network) are
    // lost: one in the keyframe, single ones, and a burst of three.
    let lose: HashSet<usize> = [1, 10, 47, 80, 81, 82, 150].into();
    let dropped = Rc::new(RefCell::new(Vec::<(u32, u16)>::new()));
    let log = dropped.clone();
    let mut seen = HashSet::new();
    sim.loss = Box::new(move |peer, datagram| {
        let Some(packet) = rtp_header(datagram, pt).filter(|_| peer == viewer) else { return false };
        if !seen.insert(packet) {
            return false; // a retransmission on the same SSRC passes
        }
        let drop = lose.contains(&(seen.len() - 1));
        if drop {
            log.borrow_mut().push(packet);
        }
        drop
    });
    sim.stream(&[publisher], 0..60);
    sim.run_for(Duration::from_secs(1));

    assert_eq!(dropped.borrow().len(), 7, "the network lost {:?}", dropped.borrow());
    let sent: Vec<(u64, &[u8])> = sim.video(publisher).iter().map(|f| (f.rtp_time, f.data.as_slice())).collect();
    let got: Vec<(u64, &[u8])> = sim.video(viewer).iter().map(|f| (f.rtp_time, f.data.as_slice())).collect();
    let missing: Vec<u64> = sent.iter().filter(|f| !got.contains(f)).map(|f| f.0).collect();
    assert!(missing.is_empty(), "frames never repaired (RTP time): {missing:?}");
    assert_eq!(got, sent, "the viewer has exactly the full sequence");
}

#[test]
fn viewers_receive_their_own_groups_publisher_and_no_other() {
    let stage = |id: &str| format!("arn:aws:ivs:local:000000000000:stage/{id}");
    let (a, b) = (ChannelId::parse("a").unwrap(), ChannelId::parse("b").unwrap());
    let mut sim = Sim::new();
    let alice = sim.connect(Role::Publisher, participant_on(&a, "alice", "pa", &stage("a1")));
    let on_a1 = sim.connect(Role::Viewer, participant_on(&a, "v1", "v1", &stage("a1")));
    let on_a2 = sim.connect(Role::Viewer, participant_on(&a, "v2", "v2", &stage("a2")));
    let on_b1 = sim.connect(Role::Viewer, participant_on(&b, "v3", "v3", &stage("b1")));

    sim.stream(&[alice], 0..30);
    let from =
        |sim: &Sim, viewer: usize, publisher: usize| sim.video(viewer).iter().filter(|f| f.data[18] == publisher as u8).count();
    assert_eq!(from(&sim, on_a1, alice), 30, "a viewer on the publisher's stage");
    assert_eq!(from(&sim, on_a2, alice), 30, "a viewer on another stage of the group");
    assert_eq!(sim.video(on_b1).len(), 0, "a viewer of another group gets nothing");

    // Group b gets its own publisher, while alice is live: each group sees only its own.
    // Another user publishing in group b is not refused: the busy slot is a's.
    let bob = sim.connect(Role::Publisher, participant_on(&b, "bob", "pb", &stage("b1")));
    sim.stream(&[alice, bob], 30..60);
    let live = |sim: &Sim, c: &RouteKey| sim.liveness_of(c).into_iter().map(|(_, p)| p).collect::<Vec<_>>();
    assert_eq!(live(&sim, &a), [Some("alice".to_string())], "each group's liveness is its own");
    assert_eq!(live(&sim, &b), [Some("bob".to_string())]);
    assert_eq!(from(&sim, on_b1, bob), 30);
    assert_eq!(from(&sim, on_b1, alice), 0);
    assert_eq!((from(&sim, on_a1, alice), from(&sim, on_a1, bob)), (60, 0));
    assert_eq!((from(&sim, on_a2, alice), from(&sim, on_a2, bob)), (60, 0));

    // A viewer that ends its session is no longer forwarded to.
    sim.close(on_a1).unwrap();
    let forwarded = sim.stats.frames_forwarded.load(Ordering::Relaxed);
    sim.stream(&[alice], 60..90);
    assert_eq!(from(&sim, on_a1, alice), 60, "nothing after the close");
    assert_eq!(from(&sim, on_a2, alice), 90);
    let per_viewer = 30 * 2; // video and audio
    assert_eq!(sim.stats.frames_forwarded.load(Ordering::Relaxed) - forwarded, per_viewer, "one viewer left in group a");
}

#[test]
fn sessions_follow_their_tokens() {
    let mut sim = Sim::new();
    let viewer = sim.connect(Role::Viewer, participant("viewer", "v", STAGE));

    // The same token again is a reconnect: it replaces the session.
    let again = sim.join(Role::Viewer, participant("viewer", "v", STAGE)).unwrap();
    assert!(sim.closed(viewer));
    assert_eq!(sim.stats.viewers.load(Ordering::Relaxed), 1);

    // Only the token that opened a session ends it, and only with its role.
    sim.peers[viewer].rtc.disconnect();
    let (id, token) = (sim.peers[again].session.clone(), sim.peers[again].participant.participant_id.clone());
    let wrong_owner = Input::Close { role: Role::Viewer, id: id.clone(), participant_id: "other".into() };
    assert_eq!(sim.handle(wrong_owner), Err(MediaError::NotOwner));
    let wrong_role = Input::Close { role: Role::Publisher, id, participant_id: token };
    assert_eq!(sim.handle(wrong_role), Err(MediaError::NotFound));
    sim.close(again).unwrap();
    assert_eq!(sim.close(again), Err(MediaError::NotFound));

    // An ended token is refused until it expires.
    assert_eq!(sim.join(Role::Viewer, participant("viewer", "v", STAGE)).err(), Some(MediaError::TokenEnded));
    let expiry = sim.start + Duration::from_secs(TOKEN_LIFETIME_S as u64);
    sim.run_until(expiry - Duration::from_secs(1));
    assert_eq!(sim.join(Role::Viewer, participant("viewer", "v", STAGE)).err(), Some(MediaError::TokenEnded));
    sim.run_until(expiry + Duration::from_secs(2));
    assert!(sim.join(Role::Viewer, participant("viewer", "v", STAGE)).is_ok(), "accepted once expired");

    // One publisher per group: while it is connected and sending, any other token is refused
    // (another user's, or an old or leaked one of the same user); the same token reconnecting
    // replaces it, and once it has fallen silent a new token takes over.
    let first = sim.connect(Role::Publisher, participant("broadcaster", "p1", STAGE));
    sim.stream(&[first], 0..10);
    assert_eq!(sim.join(Role::Publisher, participant("intruder", "p2", STAGE)).err(), Some(MediaError::PublisherBusy));
    assert_eq!(sim.join(Role::Publisher, participant("broadcaster", "p0", STAGE)).err(), Some(MediaError::PublisherBusy));
    let again = sim.connect(Role::Publisher, participant("broadcaster", "p1", STAGE));
    assert!(sim.closed(first), "the same token reconnecting replaces its session");
    sim.run_for(Duration::from_secs(4));
    sim.connect(Role::Publisher, participant("broadcaster", "p3", STAGE));
    assert!(sim.closed(again), "a silent publisher gives way");
    assert_eq!(sim.stats.publishers.load(Ordering::Relaxed), 1);
}

#[test]
fn a_viewer_is_reported_once_when_its_media_connects_and_never_when_it_does_not() {
    let mut sim = Sim::new();
    let connected = |sim: &Sim| -> Vec<String> {
        sim.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::ViewerConnected { participant, .. } => Some(participant.participant_id.clone()),
                _ => None,
            })
            .collect()
    };
    let silent = sim.join(Role::Viewer, participant("ghost", "g", STAGE)).unwrap();
    sim.peers[silent].rtc.disconnect();
    let viewer = sim.join(Role::Viewer, participant("viewer", "v", STAGE)).unwrap();
    assert!(connected(&sim).is_empty(), "an offer alone reports no viewer");
    let deadline = sim.now + Duration::from_secs(5);
    while !sim.peers[viewer].connected {
        assert!(sim.now < deadline, "the viewer connects");
        sim.run_for(Duration::from_millis(10));
    }
    sim.run_for(ADMISSION.connect_timeout + Duration::from_secs(1));
    assert_eq!(connected(&sim), vec!["v".to_string()], "the connected viewer, once; the silent one never");
    // A publisher is not a viewer.
    sim.connect(Role::Publisher, participant("publisher", "p", STAGE));
    assert_eq!(connected(&sim).len(), 1);
}

#[test]
fn the_addresses_sessions_take_datagrams_from_are_reported_as_they_come_and_go() {
    let mut sim = Sim::new();
    let learned = |sim: &Sim| -> Vec<SocketAddr> {
        sim.events
            .iter()
            .filter_map(|(_, e)| if let Event::SourceLearned { source } = e { Some(*source) } else { None })
            .collect()
    };
    let forgotten = |sim: &Sim| -> Vec<SocketAddr> {
        sim.events
            .iter()
            .filter_map(|(_, e)| if let Event::SourceForgotten { source } = e { Some(*source) } else { None })
            .collect()
    };
    let viewer = sim.connect(Role::Viewer, participant("viewer", "v", STAGE));
    let from = learned(&sim);
    assert_eq!(from.len(), 1, "the peer's address, once: {from:?}");
    assert!(forgotten(&sim).is_empty());
    sim.close(viewer).unwrap();
    sim.settle();
    assert_eq!(forgotten(&sim), from, "forgotten when its session ends");
}

#[test]
fn a_session_that_never_connects_is_dropped_after_the_connect_timeout() {
    let mut sim = Sim::new();
    let opened = sim.now;
    let peer = sim.join(Role::Viewer, participant("viewer", "v", STAGE)).unwrap();
    // The peer never gets the answer: nothing reaches the server.
    sim.peers[peer].rtc.disconnect();
    sim.wire.clear();
    sim.run_until(opened + ADMISSION.connect_timeout - Duration::from_millis(100));
    assert!(!sim.closed(peer), "still waiting just before the connect timeout");
    sim.run_until(opened + ADMISSION.connect_timeout + Duration::from_millis(500));
    assert!(sim.closed(peer), "dropped after the connect timeout");
    assert_eq!(sim.stats.viewers.load(Ordering::Relaxed), 0);
}

#[test]
fn sessions_still_connecting_are_capped_per_client_and_in_all_but_the_publisher_always_gets_in() {
    let admission = Admission { connect_timeout: Duration::from_secs(5), connecting_max: 4, connecting_per_client: 2 };
    let mut sim = Sim::with_admission(admission);
    let (x, y, z) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3));
    let mut never = Vec::new();
    let mut offer = |sim: &mut Sim, n: usize, client: Ipv4Addr| {
        let r = sim.join_from(Role::Viewer, participant(&format!("v{n}"), &format!("t{n}"), STAGE), Some(client));
        if let Ok(peer) = r {
            // it never gets its answer: nothing of it reaches the server
            sim.peers[peer].rtc.disconnect();
            never.push(peer);
        }
        r.err()
    };
    assert_eq!(offer(&mut sim, 1, x), None);
    assert_eq!(offer(&mut sim, 2, x), None);
    assert_eq!(offer(&mut sim, 3, x), Some(MediaError::ClientConnecting), "a client's third offer still connecting");
    assert_eq!(offer(&mut sim, 4, y), None);
    assert_eq!(offer(&mut sim, 5, y), None);
    assert_eq!(offer(&mut sim, 6, z), Some(MediaError::ConnectingFull), "four connecting in all");
    sim.wire.clear();

    // The publisher is admitted however many viewers are connecting.
    let publisher = sim.connect(Role::Publisher, participant("broadcaster", "p", STAGE));
    sim.stream(&[publisher], 0..5);
    assert!(!sim.closed(publisher));

    // Past the connect timeout the offers that never connected are gone, and a viewer gets in.
    sim.run_for(admission.connect_timeout + Duration::from_millis(500));
    assert!(never.iter().all(|p| sim.closed(*p)));
    let viewer = sim.connect(Role::Viewer, participant("viewer", "v", STAGE));
    sim.stream(&[publisher], 5..40);
    assert!(!sim.peers[viewer].frames.is_empty(), "the real viewer plays");
}

#[test]
fn a_panic_in_one_session_drops_that_session_and_no_other() {
    let mut sim = Sim::new();
    let publisher = sim.connect(Role::Publisher, participant("broadcaster", "p", STAGE));
    let a = sim.connect(Role::Viewer, participant("a", "ta", STAGE));
    let b = sim.connect(Role::Viewer, participant("b", "tb", STAGE));
    sim.stream(&[publisher], 0..10);
    // The next datagram from `a` makes its Rtc panic.
    sim.engine.panic_in = Some(sim.peers[a].session.as_str().into());
    sim.stream(&[publisher], 10..100);
    assert!(sim.closed(a), "the session that panicked is dropped");
    let before = sim.peers[b].frames.len();
    sim.stream(&[publisher], 100..130);
    assert!(sim.peers[b].frames.len() > before, "the other viewer goes on receiving");
    assert!(!sim.closed(publisher) && !sim.closed(b));
    assert_eq!(sim.stats.viewers.load(Ordering::Relaxed), 1);
}

#[test]
fn datagrams_from_unknown_addresses_reach_no_session_unless_they_are_its_stun_check() {
    let mut sim = Sim::new();
    let publisher = sim.connect(Role::Publisher, participant("broadcaster", "p", STAGE));
    let viewer = sim.connect(Role::Viewer, participant("v", "tv", STAGE));
    sim.stream(&[publisher], 0..10);
    // Garbage and a STUN check for no session, from an address no session has.
    let stranger = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 7), 40000));
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    for datagram in [vec![0x80; 200], vec![0x16; 100], stun] {
        let input = Input::Receive { source: stranger, destination: SERVER, contents: &datagram };
        assert_eq!(sim.handle(input), Ok(()));
    }
    assert!(sim.wire.iter().all(|d| d.destination != stranger), "nothing is sent back to a stranger");
    let before = sim.peers[viewer].frames.len();
    sim.stream(&[publisher], 10..40);
    assert!(sim.peers[viewer].frames.len() > before, "the sessions go on");
}
