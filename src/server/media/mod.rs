//! The embedded media server: a WebRTC SFU on str0m that takes a publisher over WHIP and
//! forwards its audio and video, without transcoding, to the WHEP viewers of its stage group
//! (the stages of one channel): one publisher per channel, any number of channels.
//!
//! All WebRTC traffic shares one UDP port. ICE-lite: the server only answers connectivity
//! checks, so it needs no STUN/TURN of its own; it announces one host candidate per bound address
//! (or `MEDIA_CANDIDATE_ADDR` behind NAT).
//!
//! [`MediaServer`] is the handle the rest of the server holds: it answers offers and sends
//! commands to the driver task (`driver`), which feeds the sans-IO `engine` with datagrams,
//! timeouts and commands; `route` is the engine's routing table.

mod driver;
mod engine;
mod route;
#[cfg(test)]
mod tests;

pub use engine::MediaStats;

use crate::domain::ChannelId;
use crate::server::backend::local::{random_id, PublisherSignal};
use crate::server::config::MediaSettings;
use driver::Command;
use engine::NewSession;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::sync::{mpsc, oneshot, watch};

/// Most concurrent viewer sessions one server holds (a channel's publisher is always admitted).
pub const MAX_SESSIONS: usize = 4000;

/// What the engine admits beyond its session cap: viewer sessions still connecting are capped
/// in all and per client, and any session that has not connected in time is dropped, so
/// offers that never connect cannot hold the places real viewers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub connect_timeout: std::time::Duration,
    pub connecting_max: usize,
    pub connecting_per_client: usize,
}

impl Admission {
    pub fn from_settings(limits: &crate::server::config::LimitSettings) -> Self {
        Self {
            connect_timeout: std::time::Duration::from_millis(limits.media_connect_timeout_ms),
            connecting_max: limits.media_connecting_max,
            connecting_per_client: limits.media_connecting_per_client,
        }
    }
}

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
    /// The channel of that stage: the group whose publisher a viewer receives, or whose
    /// publisher slot a publisher takes.
    pub channel: ChannelId,
    /// Token expiry, seconds since the epoch; `None` for a credential that does not expire (a
    /// stream key), which may open sessions again as soon as one ends.
    pub expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("the SDP offer is malformed: {0}")]
    BadOffer(String),
    #[error("another publisher is live on this channel")]
    PublisherBusy,
    #[error("media session not found")]
    NotFound,
    #[error("this token does not own the media session")]
    NotOwner,
    #[error("this token's session was ended; request a new token")]
    TokenEnded,
    #[error("the media server is at its session limit")]
    Full,
    #[error("too many media sessions are connecting right now; retry shortly")]
    ConnectingFull,
    #[error("this address has too many media sessions still connecting")]
    ClientConnecting,
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

impl MediaServer {
    /// Binds the media port and starts the SFU. Publisher liveness is reported on `signal`, and
    /// each viewer whose media session connects on `connected`.
    pub async fn start(
        settings: &MediaSettings,
        admission: Admission,
        signal: PublisherSignal,
        connected: mpsc::UnboundedSender<Participant>,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let bound = driver::bind(settings).await?;
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
        tokio::spawn(driver::run(bound, admission, signal, stats.clone(), connected, rx, shutdown));
        Ok(Self { tx, stats, candidates: Arc::new(candidates), crypto, cert })
    }

    /// Addresses peers send media to.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.candidates.iter().map(|c| c.addr()).collect()
    }

    pub fn stats(&self) -> &MediaStats {
        &self.stats
    }

    /// Accepts a WHIP (publisher) or WHEP (viewer) offer from `client` (its address, or its
    /// IPv6 /64) and starts the session.
    pub async fn open(
        &self,
        role: Role,
        participant: Participant,
        client: Option<std::net::IpAddr>,
        offer: &str,
    ) -> Result<Accepted, MediaError> {
        let (rtc, answer) = answer(rtc_config(&self.crypto, &self.cert), &self.candidates, offer, Instant::now())?;
        let session_id = random_id(24);
        let (reply, rx) = oneshot::channel();
        let session = NewSession { id: session_id.clone(), role, participant, client, rtc };
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

/// How the server's side of every session is configured.
fn rtc_config(crypto: &Arc<CryptoProvider>, cert: &DtlsCert) -> RtcConfig {
    Rtc::builder()
        .set_ice_lite(true)
        .set_crypto_provider(crypto.clone())
        .set_dtls_cert(cert.clone())
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
}

/// The server's side of a new session: an `Rtc` built at `now` that answered `offer`, and the
/// SDP answer.
fn answer(config: RtcConfig, candidates: &[Candidate], offer: &str, now: Instant) -> Result<(Rtc, String), MediaError> {
    let media_lines = offer.lines().filter(|l| l.starts_with("m=audio") || l.starts_with("m=video")).count();
    if media_lines == 0 {
        return Err(MediaError::BadOffer("it has no audio or video m-line".into()));
    }
    let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| MediaError::BadOffer(e.to_string()))?;
    let mut rtc = config.build(now);
    for c in candidates {
        rtc.add_local_candidate(c.clone());
    }
    let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| MediaError::BadOffer(e.to_string()))?;
    let answer = answer.to_sdp_string();
    if !answer.lines().any(|l| (l.starts_with("m=audio") || l.starts_with("m=video")) && !l.contains(" 0 ")) {
        return Err(MediaError::BadOffer("none of its codecs is supported (H.264, VP8, Opus)".into()));
    }
    Ok((rtc, answer))
}
