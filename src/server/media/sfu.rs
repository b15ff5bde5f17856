//! The SFU run loop. One task owns every `Rtc`; it is fed UDP datagrams, timeouts and commands,
//! and after each mutation drains that `Rtc` until it yields its next timeout (str0m's contract).

use super::{Bound, MediaError, Participant, Role, MAX_SESSIONS};
use crate::server::backend::local::PublisherSignal;
use crate::server::backend::LivePublisher;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot, watch};

/// A publisher that sends nothing for this long is offline.
const SILENCE: Duration = Duration::from_secs(3);
/// A session that has not connected by then is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound between two housekeeping passes.
const TICK: Duration = Duration::from_millis(200);
/// Keyframe requests to the publisher are coalesced to one per this interval.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(250);

/// Counters of the media plane, readable from anywhere.
#[derive(Debug, Default)]
pub struct MediaStats {
    pub publishers: AtomicUsize,
    pub viewers: AtomicUsize,
    pub frames_received: AtomicU64,
    pub frames_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub keyframe_requests: AtomicU64,
}

pub(crate) struct NewSession {
    pub id: String,
    pub role: Role,
    pub participant: Participant,
    pub rtc: Rtc,
}

pub(crate) enum Command {
    Open { session: Box<NewSession>, reply: oneshot::Sender<Result<(), MediaError>> },
    Close { role: Role, id: String, participant_id: String, reply: oneshot::Sender<Result<(), MediaError>> },
}

struct Datagram {
    destination: SocketAddr,
    source: SocketAddr,
    data: Vec<u8>,
}

struct Session {
    id: String,
    role: Role,
    participant: Participant,
    rtc: Rtc,
    created: Instant,
    connected: bool,
    timeout: Instant,
    /// The m-lines of this session and what they carry.
    mids: Vec<(Mid, MediaKind)>,
    /// Viewer: video is held back until the next keyframe, so decoding starts clean.
    needs_keyframe: bool,
    /// Publisher: when a keyframe was last requested.
    last_keyframe_request: Option<Instant>,
}

impl Session {
    fn mid_for(&self, kind: MediaKind) -> Option<Mid> {
        self.mids.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m)
    }
    fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.mids.iter().find(|(m, _)| *m == mid).map(|(_, k)| *k)
    }
}

pub(crate) struct Sfu {
    sockets: Vec<Bound>,
    sessions: HashMap<String, Session>,
    by_source: HashMap<SocketAddr, String>,
    /// The session of the current publisher.
    publisher: Option<String>,
    /// When publisher media last arrived (kept across a reconnect of the same user).
    last_publisher_media: Option<Instant>,
    /// What was last announced on `signal`.
    announced: Option<LivePublisher>,
    signal: PublisherSignal,
    /// Tokens whose session was ended with `DELETE`, until they expire.
    ended: HashMap<String, i64>,
    stats: Arc<MediaStats>,
    events: VecDeque<(String, Vec<Event>)>,
}

impl Sfu {
    pub(crate) fn new(sockets: Vec<Bound>, signal: PublisherSignal, stats: Arc<MediaStats>) -> Self {
        Self {
            sockets,
            sessions: HashMap::new(),
            by_source: HashMap::new(),
            publisher: None,
            last_publisher_media: None,
            announced: None,
            signal,
            ended: HashMap::new(),
            stats,
            events: VecDeque::new(),
        }
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut shutdown: watch::Receiver<bool>) {
        let (dgram_tx, mut datagrams) = mpsc::channel::<Datagram>(8192);
        let readers: Vec<_> =
            self.sockets.iter().map(|b| tokio::spawn(read_socket(b.socket.clone(), b.announced, dgram_tx.clone()))).collect();
        drop(dgram_tx);
        let mut last_tick = Instant::now();

        loop {
            let deadline = self.sessions.values().map(|s| s.timeout).min().unwrap_or(last_tick + TICK).min(last_tick + TICK);
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some(d) = datagrams.recv() => self.datagram(d),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            for s in self.sessions.values_mut() {
                if s.timeout <= now {
                    if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!(session = %s.id, error = %e, "media session failed");
                        s.rtc.disconnect();
                    }
                    let ev = drain(s, &self.sockets);
                    if !ev.is_empty() {
                        self.events.push_back((s.id.clone(), ev));
                    }
                }
            }
            self.process_events();
            if now >= last_tick + TICK {
                last_tick = now;
                self.housekeeping(now);
            }
            self.update_liveness(now);
        }

        for s in self.sessions.values_mut() {
            s.rtc.disconnect();
            drain(s, &self.sockets);
        }
        self.sessions.clear();
        if self.announced.take().is_some() {
            self.signal.set_offline();
        }
        for r in readers {
            r.abort();
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Open { session, reply } => {
                let result = self.open(*session);
                let _ = reply.send(result);
            }
            Command::Close { role, id, participant_id, reply } => {
                let result = match self.sessions.get(&id) {
                    Some(s) if s.role != role => Err(MediaError::NotFound),
                    Some(s) if s.participant.participant_id != participant_id => Err(MediaError::NotOwner),
                    Some(_) => {
                        if let Some(mut s) = self.remove(&id) {
                            self.ended.insert(s.participant.participant_id.clone(), s.participant.expires_at);
                            s.rtc.disconnect();
                            drain(&mut s, &self.sockets);
                        }
                        Ok(())
                    }
                    None => Err(MediaError::NotFound),
                };
                let _ = reply.send(result);
            }
        }
    }

    fn open(&mut self, new: NewSession) -> Result<(), MediaError> {
        if self.ended.contains_key(&new.participant.participant_id) {
            return Err(MediaError::TokenEnded);
        }
        // The same token connecting again replaces its earlier session (a reconnect).
        let previous: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.participant.participant_id == new.participant.participant_id && s.role == new.role)
            .map(|s| s.id.clone())
            .collect();
        if new.role == Role::Publisher {
            if let Some(current) = self.publisher.as_ref().and_then(|id| self.sessions.get(id)) {
                if current.rtc.is_alive() && current.participant.user_id != new.participant.user_id {
                    return Err(MediaError::PublisherBusy);
                }
            }
        }
        if self.sessions.len() - previous.len() >= MAX_SESSIONS {
            return Err(MediaError::Full);
        }
        for id in previous {
            if let Some(mut old) = self.remove(&id) {
                old.rtc.disconnect();
                drain(&mut old, &self.sockets);
            }
        }
        if new.role == Role::Publisher {
            if let Some(old_id) = self.publisher.take() {
                // The same user reconnecting: the old session goes, liveness carries over.
                if let Some(mut old) = self.remove(&old_id) {
                    old.rtc.disconnect();
                    drain(&mut old, &self.sockets);
                }
            }
            self.publisher = Some(new.id.clone());
        }
        let now = Instant::now();
        let mut session = Session {
            id: new.id.clone(),
            role: new.role,
            participant: new.participant,
            rtc: new.rtc,
            created: now,
            connected: false,
            timeout: now,
            mids: Vec::new(),
            needs_keyframe: true,
            last_keyframe_request: None,
        };
        let ev = drain(&mut session, &self.sockets);
        tracing::info!(session = %session.id, role = ?session.role, user = %session.participant.user_id, "media session opened");
        self.sessions.insert(new.id.clone(), session);
        if !ev.is_empty() {
            self.events.push_back((new.id, ev));
        }
        self.process_events();
        self.count();
        Ok(())
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let s = self.sessions.remove(id)?;
        self.by_source.retain(|_, v| v != id);
        if self.publisher.as_deref() == Some(id) {
            self.publisher = None;
        }
        tracing::info!(session = %id, role = ?s.role, user = %s.participant.user_id, "media session closed");
        self.count();
        Some(s)
    }

    fn count(&self) {
        let viewers = self.sessions.values().filter(|s| s.role == Role::Viewer).count();
        self.stats.viewers.store(viewers, Ordering::Relaxed);
        self.stats.publishers.store(self.sessions.len() - viewers, Ordering::Relaxed);
    }

    fn datagram(&mut self, d: Datagram) {
        let Ok(contents) = d.data.as_slice().try_into() else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive { proto: Protocol::Udp, source: d.source, destination: d.destination, contents },
        );
        let known = self.by_source.get(&d.source).filter(|id| self.sessions.get(*id).is_some_and(|s| s.rtc.accepts(&input)));
        let id = match known {
            Some(id) => id.clone(),
            None => match self.sessions.values().find(|s| s.rtc.accepts(&input)) {
                Some(s) => {
                    self.by_source.insert(d.source, s.id.clone());
                    s.id.clone()
                }
                None => return,
            },
        };
        let Some(s) = self.sessions.get_mut(&id) else { return };
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %id, error = %e, "media session failed");
            s.rtc.disconnect();
        }
        let ev = drain(s, &self.sockets);
        if !ev.is_empty() {
            self.events.push_back((id, ev));
        }
    }

    fn process_events(&mut self) {
        while let Some((id, events)) = self.events.pop_front() {
            for e in events {
                self.event(&id, e);
            }
        }
    }

    fn event(&mut self, id: &str, event: Event) {
        let Some(s) = self.sessions.get_mut(id) else { return };
        let role = s.role;
        match event {
            Event::Connected => {
                s.connected = true;
                tracing::info!(session = %id, role = ?role, "media connected");
                if role == Role::Viewer {
                    s.needs_keyframe = true;
                    self.request_keyframe(KeyframeRequestKind::Pli);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => s.rtc.disconnect(),
            Event::MediaAdded(m) => s.mids.push((m.mid, m.kind)),
            Event::MediaData(data) if role == Role::Publisher => {
                let kind = s.kind_of(data.mid);
                self.last_publisher_media = Some(Instant::now());
                self.stats.frames_received.fetch_add(1, Ordering::Relaxed);
                if !data.contiguous && kind == Some(MediaKind::Video) {
                    self.request_keyframe(KeyframeRequestKind::Fir);
                }
                if let Some(kind) = kind {
                    self.forward(kind, data);
                }
            }
            Event::KeyframeRequest(req) if role == Role::Viewer => self.request_keyframe(req.kind),
            _ => {}
        }
    }

    /// Writes one frame of the publisher to every connected viewer.
    fn forward(&mut self, kind: MediaKind, data: MediaData) {
        let keyframe = kind == MediaKind::Video && data.is_keyframe();
        let payload: Arc<[u8]> = data.data;
        let mut want_keyframe = false;
        let mut forwarded = 0u64;
        for v in self.sessions.values_mut() {
            if v.role != Role::Viewer || !v.connected || !v.rtc.is_alive() {
                continue;
            }
            let Some(mid) = v.mid_for(kind) else { continue };
            if kind == MediaKind::Video && v.needs_keyframe {
                if !keyframe {
                    want_keyframe = true;
                    continue;
                }
                v.needs_keyframe = false;
            }
            let Some(writer) = v.rtc.writer(mid) else { continue };
            let Some(pt) = writer.match_params(data.params) else { continue };
            if let Err(e) = writer.write(pt, data.network_time, data.time, payload.clone()) {
                tracing::debug!(session = %v.id, error = %e, "forwarding failed");
                v.rtc.disconnect();
            }
            forwarded += 1;
            let ev = drain(v, &self.sockets);
            if !ev.is_empty() {
                self.events.push_back((v.id.clone(), ev));
            }
        }
        self.stats.frames_forwarded.fetch_add(forwarded, Ordering::Relaxed);
        self.stats.bytes_forwarded.fetch_add(forwarded * payload.len() as u64, Ordering::Relaxed);
        if want_keyframe {
            self.request_keyframe(KeyframeRequestKind::Pli);
        }
    }

    /// Asks the publisher for a keyframe (a viewer joined, lost packets or asked itself).
    fn request_keyframe(&mut self, kind: KeyframeRequestKind) {
        let Some(p) = self.publisher.as_ref().and_then(|id| self.sessions.get_mut(id)) else { return };
        let now = Instant::now();
        if !p.connected || p.last_keyframe_request.is_some_and(|t| now.duration_since(t) < KEYFRAME_INTERVAL) {
            return;
        }
        let Some(mid) = p.mid_for(MediaKind::Video) else { return };
        let Some(mut writer) = p.rtc.writer(mid) else { return };
        if writer.is_request_keyframe_possible(kind) && writer.request_keyframe(None, kind).is_ok() {
            p.last_keyframe_request = Some(now);
            self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        }
        let ev = drain(p, &self.sockets);
        if !ev.is_empty() {
            self.events.push_back((p.id.clone(), ev));
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let dead: Vec<String> = self
            .sessions
            .values()
            .filter(|s| !s.rtc.is_alive() || (!s.connected && now.duration_since(s.created) > CONNECT_TIMEOUT))
            .map(|s| s.id.clone())
            .collect();
        for id in dead {
            if let Some(mut s) = self.remove(&id) {
                s.rtc.disconnect();
                drain(&mut s, &self.sockets);
            }
        }
        let now_secs = unix_ms() / 1000;
        self.ended.retain(|_, exp| *exp >= now_secs);
    }

    /// Live while a publisher session exists and its media arrived within [`SILENCE`].
    fn update_liveness(&mut self, now: Instant) {
        let live = self
            .publisher
            .as_ref()
            .and_then(|id| self.sessions.get(id))
            .filter(|_| self.last_publisher_media.is_some_and(|t| now.duration_since(t) < SILENCE));
        match (live, &self.announced) {
            (Some(s), announced) => {
                let p = &s.participant;
                let unchanged =
                    announced.as_ref().is_some_and(|a| a.participant_id == p.participant_id && a.user_id == p.user_id);
                if !unchanged {
                    let since_ms = match announced {
                        Some(a) if a.user_id == p.user_id => a.since_ms,
                        _ => unix_ms(),
                    };
                    let publisher = LivePublisher {
                        user_id: p.user_id.clone(),
                        participant_id: p.participant_id.clone(),
                        stage_arn: p.stage_arn.clone(),
                        since_ms,
                    };
                    tracing::info!(user = %publisher.user_id, "publisher live");
                    self.signal.set_live(publisher.clone());
                    self.announced = Some(publisher);
                }
            }
            (None, Some(_)) => {
                tracing::info!("publisher offline");
                self.announced = None;
                self.last_publisher_media = None;
                self.signal.set_offline();
            }
            (None, None) => {}
        }
    }
}

/// Polls an `Rtc` until its next timeout, sending what it transmits; returns its events.
fn drain(s: &mut Session, sockets: &[Bound]) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match s.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                s.timeout = t;
                break;
            }
            Ok(Output::Transmit(t)) => send(sockets, &t),
            Ok(Output::Event(e)) => events.push(e),
            Err(e) => {
                tracing::debug!(session = %s.id, error = %e, "media session failed");
                s.rtc.disconnect();
                s.timeout = Instant::now() + TICK;
                break;
            }
        }
    }
    events
}

fn send(sockets: &[Bound], t: &Transmit) {
    let socket = sockets.iter().find(|b| b.announced == t.source).or_else(|| sockets.first());
    if let Some(b) = socket {
        // UDP: a full send buffer drops the packet, as the network would; NACK/RTX recover it.
        let _ = b.socket.try_send_to(&t.contents, t.destination);
    }
}

async fn read_socket(socket: Arc<tokio::net::UdpSocket>, announced: SocketAddr, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, source)) => {
                let d = Datagram { destination: announced, source, data: buf[..n].to_vec() };
                match tx.try_send(d) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // ICMP errors from peers that went away surface here; keep reading, but never spin.
            Err(e) => {
                tracing::trace!(error = %e, "media socket read");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
