//! The SFU as a state machine, after str0m's own shape: it owns every `Rtc` and every session,
//! is fed [`Input`]s stamped with the time they happen at, and hands the [`Output`]s they cause
//! (datagrams to send and [`Event`]s) to the caller's sink as they happen. It reads no clock and
//! touches no socket; the driver does both, and the tests drive it with simulated time.
//!
//! After every input each `Rtc` it touched is drained until it yields its next timeout
//! (str0m's contract), and what one session's `Rtc` says that concerns another (media to
//! forward, a keyframe wanted) is queued as [`Propagated`] and handled before `handle` returns.

use super::route::{RouteKey, Routes, SessionId};
use super::{Admission, MediaError, Participant, Role, MAX_SESSIONS};
use crate::domain::UnixMs;
use crate::server::backend::LivePublisher;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Event as RtcEvent, IceConnectionState, Input as RtcInput, Output as RtcOutput, Rtc};

/// A publisher that sends nothing for this long is offline.
const SILENCE: Duration = Duration::from_secs(3);
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
    /// Datagrams dropped as they were read: not STUN, and from an address no session has.
    pub datagrams_refused: AtomicU64,
}

/// The moment an input happens, on both clocks the engine needs: the monotonic one str0m runs
/// on, and the wall clock that tokens expire on and [`LivePublisher::since`] is stamped with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub at: Instant,
    pub unix: UnixMs,
}

/// A session whose offer was answered, to be started.
pub(crate) struct NewSession {
    pub id: String,
    pub role: Role,
    pub participant: Participant,
    /// Who offered it (its address or IPv6 /64), for the per-client cap.
    pub client: Option<std::net::IpAddr>,
    pub rtc: Rtc,
}

pub(crate) enum Input<'a> {
    /// A datagram arrived at `destination`, one of the server's addresses.
    Receive {
        source: SocketAddr,
        destination: SocketAddr,
        contents: &'a [u8],
    },
    /// Time passed; due when [`Engine::poll_timeout`] says.
    Timeout,
    Open(Box<NewSession>),
    /// A WHIP/WHEP `DELETE` by the token `participant_id`.
    Close {
        role: Role,
        id: String,
        participant_id: String,
    },
    /// Ends every session.
    Shutdown,
}

/// Where [`Engine::handle`] hands its outputs, as they happen: a frame's datagrams for the first
/// viewer leave while the next viewer's are encrypted. (Queued until the whole fan-out was done,
/// they added about 2 ms to the median latency at 50 to 100 viewers.)
pub(crate) type Out<'a> = &'a mut dyn FnMut(Output);

#[derive(Debug)]
pub(crate) enum Output {
    /// A datagram to send from `source`, one of the server's addresses.
    Transmit(Transmit),
    Event(Event),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Opened {
        session: SessionId,
        role: Role,
        user_id: String,
    },
    Closed {
        session: SessionId,
        role: Role,
        user_id: String,
    },
    /// A viewer's media session connected (ICE and DTLS done): the viewer now watches.
    ViewerConnected {
        session: SessionId,
        participant: Participant,
    },
    /// Datagrams from `source` now reach a session (its peer passed a STUN check from there).
    SourceLearned {
        source: SocketAddr,
    },
    /// No session takes datagrams from `source` any more.
    SourceForgotten {
        source: SocketAddr,
    },
    /// A group's publisher went live (or changed), or went offline (`None`).
    Liveness {
        group: RouteKey,
        publisher: Option<LivePublisher>,
    },
}

/// What one session's `Rtc` said that the engine acts on across sessions (str0m chat's
/// `Propagated`).
enum Propagated {
    /// A frame from a publisher, for its group's viewers (boxed: it is most of a kilobyte).
    Media { from: SessionId, data: Box<MediaData> },
    /// A viewer joined or asked: its group's publisher should send a keyframe.
    KeyframeWanted { group: RouteKey, kind: KeyframeRequestKind },
}

struct Session {
    id: SessionId,
    role: Role,
    participant: Participant,
    client: Option<std::net::IpAddr>,
    group: RouteKey,
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
    /// The timeout its entry on the timer heap is for (older entries are stale).
    scheduled: Option<Instant>,
    /// Its `Rtc` panicked: the session is ended at the next housekeeping and nothing else
    /// touches it (one session's failure never stops the others).
    failed: bool,
}

impl Session {
    fn mid_for(&self, kind: MediaKind) -> Option<Mid> {
        self.mids.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m)
    }
    fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.mids.iter().find(|(m, _)| *m == mid).map(|(_, k)| *k)
    }
}

/// When each session's `Rtc` wants its next timeout, earliest first. Entries are never
/// removed in place: one whose time is no longer its session's is skipped when it comes up.
type Timers = BinaryHeap<Reverse<(Instant, SessionId)>>;

pub(crate) struct Engine {
    sessions: HashMap<SessionId, Session>,
    by_source: HashMap<SocketAddr, SessionId>,
    /// Sessions by the server's ICE ufrag: how a STUN check from an address not seen yet finds
    /// its session (any other datagram from an unknown address is dropped unread).
    by_ufrag: HashMap<String, SessionId>,
    timers: Timers,
    /// Test hook: the session whose next datagram panics inside its `Rtc`.
    #[cfg(test)]
    pub(crate) panic_in: Option<SessionId>,
    routes: Routes,
    /// Tokens whose session was ended with `DELETE`, until they expire (seconds since the epoch).
    ended: HashMap<String, i64>,
    last_tick: Instant,
    stats: Arc<MediaStats>,
    propagated: VecDeque<Propagated>,
    admission: Admission,
}

impl Engine {
    pub(crate) fn new(start: Instant, stats: Arc<MediaStats>, admission: Admission) -> Self {
        Self {
            admission,
            sessions: HashMap::new(),
            by_source: HashMap::new(),
            by_ufrag: HashMap::new(),
            timers: BinaryHeap::new(),
            #[cfg(test)]
            panic_in: None,
            routes: Routes::default(),
            ended: HashMap::new(),
            last_tick: start,
            stats,
            propagated: VecDeque::new(),
        }
    }

    /// Feeds one input; what it causes goes to `out` as it happens. Commands get their reply;
    /// datagrams and timeouts always succeed.
    pub(crate) fn handle(&mut self, now: Now, input: Input<'_>, out: Out<'_>) -> Result<(), MediaError> {
        let reply = match input {
            Input::Receive { source, destination, contents } => {
                self.receive(now.at, source, destination, contents, out);
                Ok(())
            }
            Input::Timeout => Ok(()),
            Input::Open(session) => self.open(now, *session, out),
            Input::Close { role, id, participant_id } => self.close(now.at, role, &id, &participant_id, out),
            Input::Shutdown => {
                let ids: Vec<SessionId> = self.sessions.keys().cloned().collect();
                for id in ids {
                    self.end(now.at, &id, out);
                }
                Ok(())
            }
        };
        self.timeouts(now.at, out);
        self.process_propagated(now.at, out);
        if now.at >= self.last_tick + TICK {
            self.last_tick = now.at;
            self.housekeeping(now, out);
        }
        self.update_liveness(now, out);
        reply
    }

    /// When [`Input::Timeout`] is next due.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let tick = self.last_tick + TICK;
        self.timers.peek().map_or(tick, |Reverse((t, _))| (*t).min(tick))
    }

    fn open(&mut self, now: Now, new: NewSession, out: Out<'_>) -> Result<(), MediaError> {
        if self.ended.contains_key(&new.participant.participant_id) {
            return Err(MediaError::TokenEnded);
        }
        let group = new.participant.channel.clone();
        // The same token connecting again replaces its earlier session (a reconnect).
        let previous: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.participant.participant_id == new.participant.participant_id && s.role == new.role)
            .map(|s| s.id.clone())
            .collect();
        if new.role == Role::Publisher {
            // One live publisher per group: while it is connected and sending, another token
            // (an old one, a leaked one) cannot take over; the same token reconnecting may. A
            // publisher that went silent (abandoned without DELETE) gives way.
            if let Some(current) = self.routes.publisher(&group).and_then(|id| self.sessions.get(id)) {
                let sending =
                    self.routes.get(&group).and_then(|r| r.last_media).is_some_and(|t| now.at.duration_since(t) < SILENCE);
                if current.rtc.is_alive()
                    && current.connected
                    && sending
                    && current.participant.participant_id != new.participant.participant_id
                {
                    return Err(MediaError::PublisherBusy);
                }
            }
        } else {
            // A group's publisher is always admitted; viewers within the caps.
            let viewers = self.sessions.values().filter(|s| s.role == Role::Viewer).count();
            if viewers - previous.len() >= MAX_SESSIONS {
                return Err(MediaError::Full);
            }
            let (mut connecting, mut from_client) = (0, 0);
            for s in self.sessions.values().filter(|s| s.role == Role::Viewer && !s.connected && !previous.contains(&s.id)) {
                connecting += 1;
                from_client += usize::from(new.client.is_some() && s.client == new.client);
            }
            if connecting >= self.admission.connecting_max {
                return Err(MediaError::ConnectingFull);
            }
            if from_client >= self.admission.connecting_per_client {
                return Err(MediaError::ClientConnecting);
            }
        }
        for id in previous {
            self.end(now.at, &id, out);
        }
        let id: SessionId = new.id.into();
        let mut rtc = new.rtc;
        self.by_ufrag.insert(rtc.direct_api().local_ice_credentials().ufrag, id.clone());
        if new.role == Role::Publisher {
            // The same user reconnecting: the old session goes, liveness carries over.
            if let Some(old) = self.routes.set_publisher(&group, id.clone()) {
                self.end(now.at, &old, out);
            }
        } else {
            self.routes.add_viewer(&group, id.clone());
        }
        let mut session = Session {
            id: id.clone(),
            role: new.role,
            participant: new.participant,
            client: new.client,
            group,
            rtc,
            created: now.at,
            connected: false,
            timeout: now.at,
            mids: Vec::new(),
            needs_keyframe: true,
            last_keyframe_request: None,
            scheduled: None,
            failed: false,
        };
        guarded(&mut session, |s| drain(s, now.at, out, &mut self.propagated, &mut self.timers));
        let opened = Event::Opened { session: id.clone(), role: session.role, user_id: session.participant.user_id.clone() };
        out(Output::Event(opened));
        self.sessions.insert(id, session);
        self.count();
        Ok(())
    }

    fn close(&mut self, now: Instant, role: Role, id: &str, participant_id: &str, out: Out<'_>) -> Result<(), MediaError> {
        match self.sessions.get(id) {
            Some(s) if s.role != role => return Err(MediaError::NotFound),
            Some(s) if s.participant.participant_id != participant_id => return Err(MediaError::NotOwner),
            Some(_) => {}
            None => return Err(MediaError::NotFound),
        }
        if let Some(s) = self.end(now, id, out) {
            // A credential that does not expire (a stream key) may go live again at once.
            if let Some(expires_at) = s.participant.expires_at {
                self.ended.insert(s.participant.participant_id, expires_at);
            }
        }
        Ok(())
    }

    /// Removes a session, tells its peer it is over, and returns what is left of it.
    fn end(&mut self, now: Instant, id: &str, out: Out<'_>) -> Option<Session> {
        let mut s = self.sessions.remove(id)?;
        let sources: Vec<SocketAddr> = self.by_source.iter().filter(|(_, v)| &***v == id).map(|(a, _)| *a).collect();
        for source in sources {
            self.by_source.remove(&source);
            out(Output::Event(Event::SourceForgotten { source }));
        }
        self.by_ufrag.retain(|_, v| &**v != id);
        self.routes.remove(&s.group, id);
        self.count();
        let closed = Event::Closed { session: s.id.clone(), role: s.role, user_id: s.participant.user_id.clone() };
        out(Output::Event(closed));
        // What it says now concerns no one else.
        let (mut ignored, mut no_timers) = (VecDeque::new(), BinaryHeap::new());
        if !s.failed {
            guarded(&mut s, |s| {
                s.rtc.disconnect();
                drain(s, now, out, &mut ignored, &mut no_timers)
            });
        }
        Some(s)
    }

    fn count(&self) {
        let viewers = self.sessions.values().filter(|s| s.role == Role::Viewer).count();
        self.stats.viewers.store(viewers, Ordering::Relaxed);
        self.stats.publishers.store(self.sessions.len() - viewers, Ordering::Relaxed);
    }

    fn receive(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, contents: &[u8], out: Out<'_>) {
        let raw = contents;
        let Ok(contents) = raw.try_into() else {
            return;
        };
        let input = RtcInput::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        let known = self.by_source.get(&source).filter(|id| self.sessions.get(*id).is_some_and(|s| s.rtc.accepts(&input)));
        let id = match known {
            Some(id) => id.clone(),
            // An address not seen yet (a new peer, or one whose address changed): only a STUN
            // binding request for one of the sessions' ufrags, which that session's `Rtc`
            // then authenticates. Garbage costs a parse and a map lookup, never a scan.
            None => match self.ufrag_session(raw) {
                Some(id) if self.sessions.get(&id).is_some_and(|s| !s.failed && s.rtc.accepts(&input)) => {
                    self.by_source.insert(source, id.clone());
                    out(Output::Event(Event::SourceLearned { source }));
                    id
                }
                _ => return,
            },
        };
        let Some(s) = self.sessions.get_mut(&id) else { return };
        if s.failed {
            return;
        }
        #[cfg(test)]
        let panics = self.panic_in.as_ref() == Some(&id);
        let (propagated, timers) = (&mut self.propagated, &mut self.timers);
        guarded(s, |s| {
            #[cfg(test)]
            assert!(!panics, "a datagram this session's Rtc cannot take");
            if let Err(e) = s.rtc.handle_input(input) {
                tracing::debug!(session = %s.id, error = %e, "media session failed");
                s.rtc.disconnect();
            }
            drain(s, now, out, propagated, timers)
        });
    }

    /// The session a STUN binding request is addressed to, by the server's ufrag in its
    /// USERNAME (`server:peer`).
    fn ufrag_session(&self, contents: &[u8]) -> Option<SessionId> {
        // STUN: the first two bits are zero, the magic cookie follows the length.
        if contents.len() < 20 || contents[0] & 0xC0 != 0 || contents[4..8] != [0x21, 0x12, 0xA4, 0x42] {
            return None;
        }
        let msg = str0m::ice::StunMessage::parse(contents).ok()?;
        if !msg.is_binding_request() {
            return None;
        }
        let (local, _) = msg.split_username()?;
        self.by_ufrag.get(local).cloned()
    }

    /// Feeds the timeout to every session whose `Rtc` is due, from the timer heap: the cost
    /// follows the sessions due, not all of them.
    fn timeouts(&mut self, now: Instant, out: Out<'_>) {
        while let Some(Reverse((at, id))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.sessions.get_mut(&id) else { continue };
            if s.scheduled != Some(at) || s.failed {
                continue; // superseded by a later entry
            }
            s.scheduled = None;
            let (propagated, timers) = (&mut self.propagated, &mut self.timers);
            guarded(s, |s| {
                if let Err(e) = s.rtc.handle_input(RtcInput::Timeout(now)) {
                    tracing::debug!(session = %s.id, error = %e, "media session failed");
                    s.rtc.disconnect();
                }
                drain(s, now, out, propagated, timers)
            });
        }
    }

    fn process_propagated(&mut self, now: Instant, out: Out<'_>) {
        while let Some(p) = self.propagated.pop_front() {
            match p {
                Propagated::Media { from, data } => self.media(now, &from, *data, out),
                Propagated::KeyframeWanted { group, kind } => self.request_keyframe(now, &group, kind, out),
            }
        }
    }

    /// A frame from a publisher: it is alive, and its group's viewers get the frame.
    fn media(&mut self, now: Instant, from: &str, data: MediaData, out: Out<'_>) {
        let Some(s) = self.sessions.get(from) else { return };
        if self.routes.publisher(&s.group).map(|p| &**p) != Some(from) {
            return;
        }
        let (group, kind) = (s.group.clone(), s.kind_of(data.mid));
        if let Some(route) = self.routes.get_mut(&group) {
            route.last_media = Some(now);
        }
        self.stats.frames_received.fetch_add(1, Ordering::Relaxed);
        if !data.contiguous && kind == Some(MediaKind::Video) {
            self.request_keyframe(now, &group, KeyframeRequestKind::Fir, out);
        }
        if let Some(kind) = kind {
            self.forward(now, &group, kind, data, out);
        }
    }

    /// Writes one frame of a group's publisher to every connected viewer of the group.
    fn forward(&mut self, now: Instant, group: &RouteKey, kind: MediaKind, data: MediaData, out: Out<'_>) {
        let Some(route) = self.routes.get(group) else { return };
        let keyframe = kind == MediaKind::Video && data.is_keyframe();
        let payload: Arc<[u8]> = data.data;
        let mut want_keyframe = false;
        let mut forwarded = 0u64;
        for id in &route.viewers {
            let Some(v) = self.sessions.get_mut(id) else { continue };
            if !v.connected || v.failed || !v.rtc.is_alive() {
                continue;
            }
            let Some(mid) = v.mid_for(kind) else { continue };
            if kind == MediaKind::Video && v.needs_keyframe {
                if !keyframe {
                    want_keyframe = true;
                    continue;
                }
                v.needs_keyframe = false;
                tracing::debug!(session = %v.id, "first keyframe forwarded");
            }
            let (propagated, timers) = (&mut self.propagated, &mut self.timers);
            let written = guarded(v, |v| {
                let Some(writer) = v.rtc.writer(mid) else { return false };
                let Some(pt) = writer.match_params(data.params) else { return false };
                if let Err(e) = writer.write(pt, data.network_time, data.time, payload.clone()) {
                    tracing::debug!(session = %v.id, error = %e, "forwarding failed");
                    v.rtc.disconnect();
                }
                drain(v, now, out, propagated, timers);
                true
            });
            forwarded += u64::from(written == Some(true));
        }
        self.stats.frames_forwarded.fetch_add(forwarded, Ordering::Relaxed);
        self.stats.bytes_forwarded.fetch_add(forwarded * payload.len() as u64, Ordering::Relaxed);
        if want_keyframe {
            self.request_keyframe(now, group, KeyframeRequestKind::Pli, out);
        }
    }

    /// Asks a group's publisher for a keyframe (a viewer joined, lost packets or asked itself).
    fn request_keyframe(&mut self, now: Instant, group: &RouteKey, kind: KeyframeRequestKind, out: Out<'_>) {
        let Some(p) = self.routes.publisher(group).and_then(|id| self.sessions.get_mut(id)) else { return };
        if !p.connected || p.failed || p.last_keyframe_request.is_some_and(|t| now.duration_since(t) < KEYFRAME_INTERVAL) {
            return;
        }
        let Some(mid) = p.mid_for(MediaKind::Video) else { return };
        let (propagated, timers, stats) = (&mut self.propagated, &mut self.timers, &self.stats);
        guarded(p, |p| {
            let Some(mut writer) = p.rtc.writer(mid) else { return };
            if writer.is_request_keyframe_possible(kind) && writer.request_keyframe(None, kind).is_ok() {
                tracing::debug!(publisher = %p.id, ?kind, "keyframe requested");
                p.last_keyframe_request = Some(now);
                stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            }
            drain(p, now, out, propagated, timers);
        });
    }

    fn housekeeping(&mut self, now: Now, out: Out<'_>) {
        let dead: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| {
                s.failed
                    || !s.rtc.is_alive()
                    || (!s.connected && now.at.duration_since(s.created) > self.admission.connect_timeout)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in dead {
            self.end(now.at, &id, out);
        }
        let now_secs = now.unix.as_millis().div_euclid(1000);
        self.ended.retain(|_, exp| *exp >= now_secs);
    }

    /// A group is live while its publisher session exists and its media arrived within
    /// [`SILENCE`].
    fn update_liveness(&mut self, now: Now, out: Out<'_>) {
        for (group, route) in self.routes.iter_mut() {
            let live = route
                .publisher
                .as_ref()
                .and_then(|id| self.sessions.get(id))
                .filter(|_| route.last_media.is_some_and(|t| now.at.duration_since(t) < SILENCE));
            match (live, &route.announced) {
                (Some(s), announced) => {
                    let p = &s.participant;
                    let unchanged =
                        announced.as_ref().is_some_and(|a| a.participant_id == p.participant_id && a.user_id == p.user_id);
                    if !unchanged {
                        let since = match announced {
                            Some(a) if a.user_id == p.user_id => a.since,
                            _ => now.unix,
                        };
                        let publisher = LivePublisher {
                            user_id: p.user_id.clone(),
                            participant_id: p.participant_id.clone(),
                            stage_arn: p.stage_arn.clone(),
                            since,
                        };
                        route.announced = Some(publisher.clone());
                        let event = Event::Liveness { group: group.clone(), publisher: Some(publisher) };
                        out(Output::Event(event));
                    }
                }
                (None, Some(_)) => {
                    route.announced = None;
                    route.last_media = None;
                    out(Output::Event(Event::Liveness { group: group.clone(), publisher: None }));
                }
                (None, None) => {}
            }
        }
        self.routes.prune();
    }
}

/// Runs `f` on one session; a panic in it (str0m meeting input it cannot take, or a bug) marks
/// that session failed, to be ended, and the engine goes on with every other session.
fn guarded<R>(s: &mut Session, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *s))) {
        Ok(r) => Some(r),
        Err(_) => {
            tracing::error!(session = %s.id, role = ?s.role, "media session panicked; it is dropped");
            s.failed = true;
            None
        }
    }
}

/// Polls an `Rtc` until its next timeout: its datagrams go to `out`, what concerns other
/// sessions to `propagated`, what concerns only this session is applied to it, and its next
/// timeout goes on `timers`.
fn drain(s: &mut Session, now: Instant, out: Out<'_>, propagated: &mut VecDeque<Propagated>, timers: &mut Timers) {
    drain_outputs(s, now, out, propagated);
    if s.scheduled != Some(s.timeout) {
        s.scheduled = Some(s.timeout);
        timers.push(Reverse((s.timeout, s.id.clone())));
    }
}

fn drain_outputs(s: &mut Session, now: Instant, out: Out<'_>, propagated: &mut VecDeque<Propagated>) {
    let mut ice_disconnected = false;
    loop {
        match s.rtc.poll_output() {
            Ok(RtcOutput::Timeout(t)) => {
                s.timeout = t;
                break;
            }
            Ok(RtcOutput::Transmit(t)) => out(Output::Transmit(t)),
            Ok(RtcOutput::Event(e)) => match e {
                RtcEvent::Connected => {
                    s.connected = true;
                    tracing::info!(session = %s.id, role = ?s.role, "media connected");
                    if s.role == Role::Viewer {
                        out(Output::Event(Event::ViewerConnected { session: s.id.clone(), participant: s.participant.clone() }));
                        s.needs_keyframe = true;
                        propagated
                            .push_back(Propagated::KeyframeWanted { group: s.group.clone(), kind: KeyframeRequestKind::Pli });
                    }
                }
                RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => ice_disconnected = true,
                RtcEvent::MediaAdded(m) => s.mids.push((m.mid, m.kind)),
                RtcEvent::MediaData(data) if s.role == Role::Publisher => {
                    propagated.push_back(Propagated::Media { from: s.id.clone(), data: Box::new(data) })
                }
                RtcEvent::KeyframeRequest(req) if s.role == Role::Viewer => {
                    propagated.push_back(Propagated::KeyframeWanted { group: s.group.clone(), kind: req.kind })
                }
                _ => {}
            },
            Err(e) => {
                tracing::debug!(session = %s.id, error = %e, "media session failed");
                s.rtc.disconnect();
                s.timeout = now + TICK;
                break;
            }
        }
    }
    if ice_disconnected {
        s.rtc.disconnect();
    }
}
