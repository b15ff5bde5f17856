//! The tokio side of the SFU: it binds the UDP sockets, and one task owns the [`Engine`], the
//! timer and the command channel. It stamps each datagram, timeout and command with the time,
//! feeds it to the engine, sends the datagrams the engine hands back and reports publisher
//! liveness on the [`PublisherSignal`].

use super::engine::{Engine, Event, Input, NewSession, Now, Output};
use super::{MediaError, MediaStats, Participant, Role};
use crate::server::backend::local::PublisherSignal;
use crate::server::config::MediaSettings;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use str0m::net::Transmit;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

pub(crate) enum Command {
    Open { session: Box<NewSession>, reply: oneshot::Sender<Result<(), MediaError>> },
    Close { role: Role, id: String, participant_id: String, reply: oneshot::Sender<Result<(), MediaError>> },
}

/// A bound UDP socket and the address peers reach it at.
pub(crate) struct Bound {
    pub socket: Arc<UdpSocket>,
    pub announced: SocketAddr,
}

struct Datagram {
    destination: SocketAddr,
    source: SocketAddr,
    data: Vec<u8>,
}

/// Runs the engine until `shutdown` or until every command sender is gone, then ends every
/// session.
pub(crate) async fn run(
    sockets: Vec<Bound>,
    admission: super::Admission,
    signal: PublisherSignal,
    stats: Arc<MediaStats>,
    connected: mpsc::UnboundedSender<Participant>,
    mut commands: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (dgram_tx, mut datagrams) = mpsc::channel::<Datagram>(8192);
    let known = Known::default();
    let readers: Vec<_> = sockets
        .iter()
        .map(|b| {
            let reader = Reader { socket: b.socket.clone(), announced: b.announced, known: known.clone(), stats: stats.clone() };
            tokio::spawn(reader.run(dgram_tx.clone()))
        })
        .collect();
    drop(dgram_tx);
    let mut engine = Engine::new(Instant::now(), stats, admission);
    // However this task ends (shutdown, or a panic the engine did not contain), no channel is
    // left reported live with nothing behind it.
    let _offline = OfflineOnExit(signal.clone());

    loop {
        let deadline = engine.poll_timeout();
        let out = &mut |o| output(o, &sockets, &signal, &connected, &known);
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            cmd = commands.recv() => match cmd {
                Some(Command::Open { session, reply }) => {
                    let _ = reply.send(contained(|| engine.handle(now(), Input::Open(session), out)));
                }
                Some(Command::Close { role, id, participant_id, reply }) => {
                    let _ = reply.send(contained(|| engine.handle(now(), Input::Close { role, id, participant_id }, out)));
                }
                None => break,
            },
            Some(d) = datagrams.recv() => {
                let input = Input::Receive { source: d.source, destination: d.destination, contents: &d.data };
                let _ = contained(|| engine.handle(now(), input, out));
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let _ = contained(|| engine.handle(now(), Input::Timeout, out));
            }
        }
    }

    let _ = engine.handle(now(), Input::Shutdown, &mut |o| output(o, &sockets, &signal, &connected, &known));
    for r in readers {
        r.abort();
    }
}

/// The engine contains a panic in one session's `Rtc` itself; one anywhere else in it is
/// caught here, so the media task goes on for every other session.
fn contained(f: impl FnOnce() -> Result<(), MediaError>) -> Result<(), MediaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("the media engine panicked handling an input; it goes on");
        Err(MediaError::Stopped)
    })
}

/// Marks every channel offline when dropped.
struct OfflineOnExit(PublisherSignal);

impl Drop for OfflineOnExit {
    fn drop(&mut self) {
        self.0.clear();
    }
}

fn now() -> Now {
    let unix_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
    Now { at: Instant::now(), unix: crate::domain::UnixMs::from_millis(unix_ms) }
}

/// Sends what the engine transmits and acts on its events.
fn output(
    output: Output,
    sockets: &[Bound],
    signal: &PublisherSignal,
    connected: &mpsc::UnboundedSender<Participant>,
    known: &Known,
) {
    match output {
        Output::Transmit(t) => send(sockets, &t),
        Output::Event(Event::SourceLearned { source }) => {
            known.0.write().unwrap_or_else(|e| e.into_inner()).insert(source);
        }
        Output::Event(Event::SourceForgotten { source }) => {
            known.0.write().unwrap_or_else(|e| e.into_inner()).remove(&source);
        }
        Output::Event(Event::ViewerConnected { participant, .. }) => {
            // The receiver ends only at shutdown; a viewer connecting then is not counted.
            let _ = connected.send(participant);
        }
        Output::Event(Event::Opened { session, role, user_id }) => {
            tracing::info!(%session, ?role, user = %user_id, "media session opened")
        }
        Output::Event(Event::Closed { session, role, user_id }) => {
            tracing::info!(%session, ?role, user = %user_id, "media session closed")
        }
        Output::Event(Event::Liveness { group, publisher }) => match publisher {
            Some(p) => {
                tracing::info!(channel = %group, user = %p.user_id, "publisher live");
                signal.set_live(group, p);
            }
            None => {
                tracing::info!(channel = %group, "publisher offline");
                signal.set_offline(&group);
            }
        },
    }
}

fn send(sockets: &[Bound], t: &Transmit) {
    let socket = sockets.iter().find(|b| b.announced == t.source).or_else(|| sockets.first());
    if let Some(b) = socket {
        // UDP: a full send buffer drops the packet, as the network would; NACK/RTX recover it.
        let _ = b.socket.try_send_to(&t.contents, t.destination);
    }
}

/// The addresses the engine takes datagrams from (its `SourceLearned`/`SourceForgotten`
/// events), shared with the socket readers.
#[derive(Clone, Default)]
struct Known(Arc<std::sync::RwLock<std::collections::HashSet<SocketAddr>>>);

impl Known {
    /// Whether a datagram is worth the engine's time: a STUN message (RFC 7983: first byte
    /// 0–3), which may be an ICE check from a new address, or anything from an address a
    /// session has. The rest (a flood from strangers) is dropped before it is copied or queued.
    fn admits(&self, source: &SocketAddr, first_byte: u8) -> bool {
        first_byte < 4 || self.0.read().unwrap_or_else(|e| e.into_inner()).contains(source)
    }
}

/// Reads one socket and queues what the engine may take.
struct Reader {
    socket: Arc<UdpSocket>,
    announced: SocketAddr,
    known: Known,
    stats: Arc<MediaStats>,
}

impl Reader {
    async fn run(self, tx: mpsc::Sender<Datagram>) {
        let mut buf = vec![0u8; 2048];
        loop {
            match self.socket.recv_from(&mut buf).await {
                Ok((0, _)) => {}
                Ok((n, source)) => {
                    if !self.known.admits(&source, buf[0]) {
                        self.stats.datagrams_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    let d = Datagram { destination: self.announced, source, data: buf[..n].to_vec() };
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
}

pub(crate) async fn bind(settings: &MediaSettings) -> std::io::Result<Vec<Bound>> {
    let port = settings.udp_port;
    if let Some(candidate) = settings.candidate_addr {
        // Behind NAT: listen everywhere, announce the configured address. A port in it is the
        // one the NAT forwards to this server's port; without one, the two are the same.
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await.map_err(|e| bind_error(port, e))?;
        let announced = candidate.announced(socket.local_addr()?.port());
        return Ok(vec![Bound { socket: Arc::new(socket), announced }]);
    }
    let first = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).await.map_err(|e| bind_error(port, e))?;
    let port = first.local_addr()?.port();
    let mut bound = vec![Bound { announced: first.local_addr()?, socket: Arc::new(first) }];
    if let Some(ip) = primary_address() {
        match UdpSocket::bind((ip, port)).await {
            Ok(s) => bound.push(Bound { announced: s.local_addr()?, socket: Arc::new(s) }),
            Err(e) => {
                tracing::warn!(%ip, port, error = %e, "media server not reachable on this address")
            }
        }
    }
    Ok(bound)
}

fn bind_error(port: u16, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("media UDP port {port} (MEDIA_UDP_PORT): {e}"))
}

/// The host's address on its default route, if it has one. No packet is sent.
fn primary_address() -> Option<IpAddr> {
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
