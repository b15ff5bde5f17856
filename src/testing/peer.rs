//! A WHIP/WHEP client peer on str0m: it publishes encoded frames or plays them back, the way a
//! browser or OBS does. The load tools and the test-suite drive the media server with it.
//!
//! [`Peer::offer`] gives the SDP to `POST`, [`Peer::connect`] takes the answer and starts the
//! peer's own task; [`open_session`] does both over HTTP. [`client_offer`] and [`write_media`]
//! are the sans-IO halves, which the engine's simulated-network tests drive by hand.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Sends audio and video (WHIP).
    Publish,
    /// Receives audio and video (WHEP).
    Play,
}

/// The video codec a publishing peer sends (OBS sends H.264; browsers usually VP8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

#[derive(Debug, Clone)]
pub enum PeerEvent {
    Connected,
    /// A complete frame arrived.
    Frame {
        kind: MediaKind,
        data: Arc<[u8]>,
        keyframe: bool,
        rtp_time: u64,
        at: Instant,
    },
    /// The remote asked for a keyframe.
    KeyframeRequested,
    Disconnected,
}

enum PeerCommand {
    Write { kind: MediaKind, data: Vec<u8>, rtp_time: u64 },
    RequestKeyframe,
    Close,
}

/// A peer whose offer is out and whose answer is awaited.
pub struct Peer {
    rtc: Rtc,
    pending: SdpPendingOffer,
    socket: UdpSocket,
    local: SocketAddr,
    video: Mid,
    audio: Mid,
}

/// A client's `Rtc` with its offer out: one video m-line (`video` codecs) and one audio (Opus).
pub struct ClientOffer {
    pub rtc: Rtc,
    pub pending: SdpPendingOffer,
    pub video: Mid,
    pub audio: Mid,
    /// The SDP offer.
    pub sdp: String,
}

/// Builds a client `Rtc` at `now` with `local` as its host candidate (and `crypto`, when given)
/// and makes its offer, the way a browser or OBS does over WHIP/WHEP.
pub fn client_offer(
    role: PeerRole,
    video: &[VideoCodec],
    local: SocketAddr,
    now: Instant,
    crypto: Option<Arc<CryptoProvider>>,
) -> std::io::Result<ClientOffer> {
    let mut builder = Rtc::builder();
    if let Some(crypto) = crypto {
        builder = builder.set_crypto_provider(crypto);
    }
    let mut rtc = builder
        .clear_codecs()
        .enable_vp8(video.contains(&VideoCodec::Vp8))
        .enable_h264(video.contains(&VideoCodec::H264))
        .enable_opus(true, false)
        .build(now);
    let candidate = Candidate::host(local, "udp").map_err(|e| std::io::Error::other(e.to_string()))?;
    rtc.add_local_candidate(candidate);
    let dir = match role {
        PeerRole::Publish => Direction::SendOnly,
        PeerRole::Play => Direction::RecvOnly,
    };
    let mut api = rtc.sdp_api();
    let video = api.add_media(MediaKind::Video, dir, Some("live".into()), Some("video".into()), None);
    let audio = api.add_media(MediaKind::Audio, dir, Some("live".into()), Some("audio".into()), None);
    let (offer, pending) = api.apply().ok_or_else(|| std::io::Error::other("no offer"))?;
    Ok(ClientOffer { rtc, pending, video, audio, sdp: offer.to_sdp_string() })
}

/// Writes one frame on `mid`: video (VP8, or H.264 when that was negotiated) at 90 kHz, or
/// audio (Opus) at 48 kHz.
pub fn write_media(rtc: &mut Rtc, mid: Mid, kind: MediaKind, now: Instant, rtp_time: u64, data: Vec<u8>) -> Result<(), String> {
    let (wanted, freq) = match kind {
        MediaKind::Video => ([Codec::Vp8, Codec::H264], Frequency::NINETY_KHZ),
        MediaKind::Audio => ([Codec::Opus, Codec::Opus], Frequency::FORTY_EIGHT_KHZ),
    };
    let writer = rtc.writer(mid).ok_or("no writer")?;
    let pt = writer.payload_params().find(|p| wanted.contains(&p.spec().codec)).map(|p| p.pt()).ok_or("no payload type")?;
    writer.write(pt, now, MediaTime::new(rtp_time, freq), data).map_err(|e| e.to_string())
}

/// A WHIP or WHEP session a peer opened over HTTP.
pub struct Session {
    pub peer: PeerHandle,
    /// The session resource (`DELETE` ends it).
    pub location: String,
}

/// Offers to the WHIP or WHEP endpoint `url` with `token`, as a browser or OBS does (a publisher
/// sends `codec`), and waits at most `limit` for the peer to connect. Asserts that the answer
/// is a created session.
pub async fn open_session(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    role: PeerRole,
    codec: VideoCodec,
    limit: Duration,
) -> Session {
    let (peer, offer) = Peer::offer_with(role, codec).await.expect("an offer");
    let resp = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .expect("offer sent");
    assert_eq!(resp.status().as_u16(), 201, "offer to {url} refused: {:?}", resp.text().await);
    assert_eq!(resp.headers()["content-type"], "application/sdp");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{url}/")), "{location}");
    let answer = resp.text().await.expect("the answer");
    assert!(answer.starts_with("v=0"), "{answer}");
    let mut peer = peer.connect(&answer).expect("the answer applies");
    assert!(peer.connected(limit).await, "peer connected to the SFU at {url}");
    Session { peer, location }
}

/// A connected peer's handle: send frames, read events.
pub struct PeerHandle {
    commands: mpsc::UnboundedSender<PeerCommand>,
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
}

impl Peer {
    /// Creates a peer on a loopback UDP port with one video (VP8) and one audio (Opus) m-line.
    /// Returns the SDP offer.
    pub async fn offer(role: PeerRole) -> std::io::Result<(Self, String)> {
        Self::offer_with(role, VideoCodec::Vp8).await
    }

    /// Like [`Peer::offer`]; a publisher offers only `codec` for video, a player offers both.
    pub async fn offer_with(role: PeerRole, codec: VideoCodec) -> std::io::Result<(Self, String)> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let local = socket.local_addr()?;
        let video = match role {
            PeerRole::Publish => vec![codec],
            PeerRole::Play => vec![VideoCodec::Vp8, VideoCodec::H264],
        };
        let o = client_offer(role, &video, local, Instant::now(), None)?;
        Ok((Self { rtc: o.rtc, pending: o.pending, socket, local, video: o.video, audio: o.audio }, o.sdp))
    }

    /// Applies the server's SDP answer and starts the peer.
    pub fn connect(mut self, answer: &str) -> Result<PeerHandle, String> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| e.to_string())?;
        self.rtc.sdp_api().accept_answer(self.pending, answer).map_err(|e| e.to_string())?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = PeerTask {
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            video: self.video,
            audio: self.audio,
            events: events_tx,
        };
        tokio::spawn(task.run(rx));
        Ok(PeerHandle { commands, events })
    }
}

impl PeerHandle {
    /// Sends one encoded video frame (VP8, or H.264 when that was negotiated); 90 kHz time.
    pub fn send_video(&self, data: Vec<u8>, rtp_time: u64) {
        let _ = self.commands.send(PeerCommand::Write { kind: MediaKind::Video, data, rtp_time });
    }

    /// Sends one Opus packet; 48 kHz time.
    pub fn send_audio(&self, data: Vec<u8>, rtp_time: u64) {
        let _ = self.commands.send(PeerCommand::Write { kind: MediaKind::Audio, data, rtp_time });
    }

    /// Sends a PLI to the remote sender.
    pub fn request_keyframe(&self) {
        let _ = self.commands.send(PeerCommand::RequestKeyframe);
    }

    pub fn close(&self) {
        let _ = self.commands.send(PeerCommand::Close);
    }

    /// Waits for the next event, or `None` after `timeout` (or when the peer is gone).
    pub async fn next_event(&mut self, timeout: Duration) -> Option<PeerEvent> {
        tokio::time::timeout(timeout, self.events.recv()).await.ok().flatten()
    }

    /// Waits until connected; false after `timeout` or a disconnect.
    pub async fn connected(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(PeerEvent::Connected)) => return true,
                Ok(Some(PeerEvent::Disconnected)) | Ok(None) | Err(_) => return false,
                Ok(Some(_)) => {}
            }
        }
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(PeerCommand::Close);
    }
}

struct PeerTask {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    video: Mid,
    audio: Mid,
    events: mpsc::UnboundedSender<PeerEvent>,
}

impl PeerTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<PeerCommand>) {
        let mut buf = vec![0u8; 2048];
        while let Some(timeout) = self.drain() {
            let sleep = tokio::time::sleep_until(timeout.into());
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(PeerCommand::Write { kind, data, rtp_time }) => self.write(kind, data, rtp_time),
                    Some(PeerCommand::RequestKeyframe) => {
                        if let Some(mut w) = self.rtc.writer(self.video) {
                            let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
                        }
                    }
                    Some(PeerCommand::Close) | None => {
                        self.rtc.disconnect();
                        let _ = self.drain();
                        break;
                    }
                },
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else { continue };
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: self.local, contents });
                    if self.rtc.handle_input(input).is_err() {
                        break;
                    }
                }
                _ = sleep => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = self.events.send(PeerEvent::Disconnected);
    }

    fn write(&mut self, kind: MediaKind, data: Vec<u8>, rtp_time: u64) {
        let mid = if kind == MediaKind::Video { self.video } else { self.audio };
        let _ = write_media(&mut self.rtc, mid, kind, Instant::now(), rtp_time, data);
    }

    /// Drains output; `None` once the connection is over.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            if !self.rtc.is_alive() {
                return None;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        let _ = self.events.send(PeerEvent::Connected);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => return None,
                    Event::MediaData(d) => {
                        let kind = if d.mid == self.video { MediaKind::Video } else { MediaKind::Audio };
                        let _ = self.events.send(PeerEvent::Frame {
                            kind,
                            keyframe: d.is_keyframe(),
                            rtp_time: d.time.numer(),
                            data: d.data,
                            at: Instant::now(),
                        });
                    }
                    Event::KeyframeRequest(_) => {
                        let _ = self.events.send(PeerEvent::KeyframeRequested);
                    }
                    _ => {}
                },
                Err(_) => return None,
            }
        }
    }
}
