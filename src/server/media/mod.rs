//! The embedded media server: a WebRTC SFU on str0m (sans-IO) that takes one publisher over WHIP
//! and forwards its audio and video, without transcoding, to every WHEP viewer of every stage.
//!
//! All WebRTC traffic shares one UDP port. ICE-lite: the server only answers connectivity
//! checks, so it needs no STUN/TURN of its own; it announces one host candidate per bound address
//! (or `MEDIA_CANDIDATE_ADDR` behind NAT).

pub mod peer;
mod sfu;

pub use sfu::MediaStats;

use crate::server::backend::local::{random_id, PublisherSignal};
use crate::server::config::MediaSettings;
use sfu::{Command, NewSession, Sfu};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

/// Most concurrent media sessions one server holds.
pub const MAX_SESSIONS: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Viewer,
}

/// Who a media session belongs to, as its verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub user_id: String,
    /// The token's `jti`.
    pub participant_id: String,
    pub stage_arn: String,
    /// Token expiry, seconds since the epoch.
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("the SDP offer is malformed: {0}")]
    BadOffer(String),
    #[error("another publisher is live on this stage")]
    PublisherBusy,
    #[error("media session not found")]
    NotFound,
    #[error("this token does not own the media session")]
    NotOwner,
    #[error("this token's session was ended; request a new token")]
    TokenEnded,
    #[error("the media server is at its session limit")]
    Full,
    #[error("the media server is not running")]
    Stopped,
}

/// An accepted offer: the session resource and the SDP answer.
#[derive(Debug)]
pub struct Accepted {
    pub session_id: String,
    pub answer: String,
}

/// Handle to the running SFU. Cheap to clone.
#[derive(Clone)]
pub struct MediaServer {
    tx: mpsc::Sender<Command>,
    stats: Arc<MediaStats>,
    candidates: Arc<Vec<Candidate>>,
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
}

/// A bound UDP socket and the address peers reach it at.
pub(crate) struct Bound {
    pub socket: Arc<UdpSocket>,
    pub announced: SocketAddr,
}

impl MediaServer {
    /// Binds the media port and starts the SFU. Publisher liveness is reported on `signal`.
    pub async fn start(
        settings: &MediaSettings,
        signal: PublisherSignal,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let bound = bind(settings).await?;
        let candidates = bound
            .iter()
            .map(|b| Candidate::host(b.announced, "udp"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| std::io::Error::other(format!("media candidate: {e}")))?;
        for b in &bound {
            let local = b.socket.local_addr()?;
            tracing::info!(addr = %b.announced, %local, "media server listening (UDP)");
        }
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| std::io::Error::other("could not generate a DTLS certificate"))?;
        let stats = Arc::new(MediaStats::default());
        let (tx, rx) = mpsc::channel(1024);
        let sfu = Sfu::new(bound, signal, stats.clone());
        tokio::spawn(sfu.run(rx, shutdown));
        Ok(Self { tx, stats, candidates: Arc::new(candidates), crypto, cert })
    }

    /// Addresses peers send media to.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.candidates.iter().map(|c| c.addr()).collect()
    }

    pub fn stats(&self) -> &MediaStats {
        &self.stats
    }

    fn rtc_config(&self) -> RtcConfig {
        Rtc::builder()
            .set_ice_lite(true)
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
    }

    /// Accepts a WHIP (publisher) or WHEP (viewer) offer and starts the session.
    pub async fn open(&self, role: Role, participant: Participant, offer: &str) -> Result<Accepted, MediaError> {
        let media_lines = offer.lines().filter(|l| l.starts_with("m=audio") || l.starts_with("m=video")).count();
        if media_lines == 0 {
            return Err(MediaError::BadOffer("it has no audio or video m-line".into()));
        }
        let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| MediaError::BadOffer(e.to_string()))?;
        let mut rtc = self.rtc_config().build(Instant::now());
        for c in self.candidates.iter() {
            rtc.add_local_candidate(c.clone());
        }
        let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| MediaError::BadOffer(e.to_string()))?;
        let answer = answer.to_sdp_string();
        if !answer.lines().any(|l| (l.starts_with("m=audio") || l.starts_with("m=video")) && !l.contains(" 0 ")) {
            return Err(MediaError::BadOffer("none of its codecs is supported (H.264, VP8, Opus)".into()));
        }
        let session_id = random_id(24);
        let (reply, rx) = oneshot::channel();
        let session = NewSession { id: session_id.clone(), role, participant, rtc };
        self.tx.send(Command::Open { session: Box::new(session), reply }).await.map_err(|_| MediaError::Stopped)?;
        rx.await.map_err(|_| MediaError::Stopped)??;
        Ok(Accepted { session_id, answer })
    }

    /// Ends a session (WHIP/WHEP `DELETE`). Only the token that opened it may end it.
    pub async fn close(&self, role: Role, session_id: &str, participant_id: &str) -> Result<(), MediaError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Close { role, id: session_id.to_string(), participant_id: participant_id.to_string(), reply };
        self.tx.send(cmd).await.map_err(|_| MediaError::Stopped)?;
        rx.await.map_err(|_| MediaError::Stopped)?
    }
}

async fn bind(settings: &MediaSettings) -> std::io::Result<Vec<Bound>> {
    let port = settings.udp_port;
    if let Some(candidate) = settings.candidate_addr.as_deref() {
        // Behind NAT: listen everywhere, announce the configured address. A port in it is the
        // one the NAT forwards to this server's port; without one, the two are the same.
        let announced = parse_candidate(candidate)?;
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await.map_err(|e| bind_error(port, e))?;
        let bound_port = socket.local_addr()?.port();
        let announced = SocketAddr::new(announced.ip(), if announced.port() == 0 { bound_port } else { announced.port() });
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

/// `MEDIA_CANDIDATE_ADDR`: an IP address, or `IP:port` when the forwarded port differs
/// (port 0 in the result: the bound port).
fn parse_candidate(candidate: &str) -> std::io::Result<SocketAddr> {
    if let Ok(ip) = candidate.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    match candidate.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err(std::io::Error::other(format!("MEDIA_CANDIDATE_ADDR {candidate:?} is not an IP address or IP:port"))),
    }
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

#[cfg(test)]
mod tests {
    use super::parse_candidate;

    #[test]
    fn candidate_is_an_ip_or_an_ip_and_port() {
        assert_eq!(parse_candidate("203.0.113.7").unwrap().to_string(), "203.0.113.7:0");
        assert_eq!(parse_candidate("203.0.113.7:40000").unwrap().to_string(), "203.0.113.7:40000");
        assert_eq!(parse_candidate("[2001:db8::1]:40000").unwrap().to_string(), "[2001:db8::1]:40000");
        assert_eq!(parse_candidate("2001:db8::1").unwrap().to_string(), "[2001:db8::1]:0");
        for bad in ["live.example.com", "203.0.113.7:0", "203.0.113.7:70000", ""] {
            let e = parse_candidate(bad).unwrap_err().to_string();
            assert!(e.contains("MEDIA_CANDIDATE_ADDR"), "{bad}: {e}");
        }
    }
}
