//! WHIP publish and WHEP play with the browser's `RTCPeerConnection`, as typed Rust.
//!
//! The [`Connection`] of a WHIP/WHEP session owns its peer connection and the JS closures it registered, so they live
//! exactly as long as it does; [`Connection::close`] ends the session on the server too.

use super::session::{failure, Connection, MediaFailure, PeerState, Session};
use js_sys::{Array, Reflect};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    HtmlVideoElement, MediaStream, MediaStreamTrack, RtcBundlePolicy, RtcConfiguration, RtcPeerConnection,
    RtcPeerConnectionState, RtcRtpSender, RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSdpType,
    RtcSessionDescriptionInit, RtcTrackEvent,
};

struct Peer {
    pc: RtcPeerConnection,
    resource: Option<String>,
    token: String,
    _on_state: Closure<dyn FnMut()>,
    _on_track: Option<Closure<dyn FnMut(RtcTrackEvent)>>,
}

impl Session for Peer {
    fn state(&self) -> PeerState {
        map_state(self.pc.connection_state())
    }

    /// Without renegotiating.
    fn replace_track<'a>(&'a self, track: &'a MediaStreamTrack) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
        Box::pin(async move {
            for sender in self.pc.get_senders().iter() {
                let Ok(sender) = sender.dyn_into::<RtcRtpSender>() else { continue };
                if sender.track().is_some_and(|t| t.kind() == track.kind()) {
                    let _ = JsFuture::from(sender.replace_track(Some(track))).await;
                }
            }
        })
    }

    /// Closes the peer connection and `DELETE`s the session resource (it survives page unload).
    fn close(self: Box<Self>) {
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_ontrack(None);
        self.pc.close();
        if let Some(url) = &self.resource {
            let _ = send(url, "DELETE", &self.token, None, true);
        }
    }
}

fn map_state(s: RtcPeerConnectionState) -> PeerState {
    match s {
        RtcPeerConnectionState::Connected => PeerState::Connected,
        RtcPeerConnectionState::Disconnected => PeerState::Disconnected,
        RtcPeerConnectionState::Failed => PeerState::Failed,
        RtcPeerConnectionState::Closed => PeerState::Closed,
        _ => PeerState::Connecting,
    }
}

fn new_peer_connection() -> Result<RtcPeerConnection, MediaFailure> {
    let config = RtcConfiguration::new();
    config.set_bundle_policy(RtcBundlePolicy::MaxBundle);
    RtcPeerConnection::new_with_configuration(&config).map_err(|e| failure("WEBRTC_UNAVAILABLE", e))
}

fn on_state_closure(pc: &RtcPeerConnection, on_state: Rc<dyn Fn(PeerState)>) -> Closure<dyn FnMut()> {
    let watched = pc.clone();
    let closure = Closure::<dyn FnMut()>::new(move || on_state(map_state(watched.connection_state())));
    pc.set_onconnectionstatechange(Some(closure.as_ref().unchecked_ref()));
    closure
}

/// A receive-only peer connection with its offer made, waiting for a WHEP endpoint and a token:
/// made while the viewer's ticket is on its way, so the offer is not on the critical path.
pub struct PreparedPlay {
    pc: RtcPeerConnection,
    stream: MediaStream,
    sdp: String,
    on_state: Closure<dyn FnMut()>,
    on_track: Closure<dyn FnMut(RtcTrackEvent)>,
}

impl PreparedPlay {
    /// A peer connection receiving one video and one audio track, with its local offer set.
    pub async fn new(on_state: Rc<dyn Fn(PeerState)>) -> Result<Self, MediaFailure> {
        let pc = new_peer_connection()?;
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(RtcRtpTransceiverDirection::Recvonly);
        // Each receiver has its track from the start; media flows into it once connected.
        let stream = MediaStream::new().map_err(|e| failure("WEBRTC_UNAVAILABLE", e))?;
        for kind in ["video", "audio"] {
            let transceiver = pc.add_transceiver_with_str_and_init(kind, &init);
            stream.add_track(&transceiver.receiver().track());
        }
        let target = stream.clone();
        let on_track = Closure::<dyn FnMut(RtcTrackEvent)>::new(move |ev: RtcTrackEvent| {
            let track = ev.track();
            if target.get_track_by_id(&track.id()).is_none() {
                target.add_track(&track);
            }
        });
        pc.set_ontrack(Some(on_track.as_ref().unchecked_ref()));
        let on_state = on_state_closure(&pc, on_state);
        match local_offer(&pc).await {
            Ok(sdp) => Ok(Self { pc, stream, sdp, on_state, on_track }),
            Err(e) => {
                pc.close();
                Err(e)
            }
        }
    }

    /// Plays the stage at `endpoint` (WHEP) into `video`.
    pub async fn play(self, endpoint: &str, token: &str, video: &HtmlVideoElement) -> Result<Connection, MediaFailure> {
        let Self { pc, stream, sdp, on_state, on_track } = self;
        video.set_src_object(Some(&stream));
        match exchange(&pc, endpoint, token, &sdp).await {
            Ok(resource) => {
                Ok(Connection::new(Peer { pc, resource, token: token.into(), _on_state: on_state, _on_track: Some(on_track) }))
            }
            Err(e) => {
                pc.close();
                Err(e)
            }
        }
    }

    /// Not needed after all (the broadcast is offline, or played another way).
    pub fn discard(self) {
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_ontrack(None);
        self.pc.close();
    }
}

/// Plays the stage at `endpoint` (WHEP) into `video`.
pub async fn play(
    endpoint: &str,
    token: &str,
    video: &HtmlVideoElement,
    on_state: Rc<dyn Fn(PeerState)>,
) -> Result<Connection, MediaFailure> {
    PreparedPlay::new(on_state).await?.play(endpoint, token, video).await
}

/// Publishes `stream` (its first video and audio track) to `endpoint` (WHIP).
pub async fn publish(
    endpoint: &str,
    token: &str,
    stream: &MediaStream,
    on_state: Rc<dyn Fn(PeerState)>,
) -> Result<Connection, MediaFailure> {
    let pc = new_peer_connection()?;
    let streams = Array::of1(stream);
    for track in stream.get_tracks().iter() {
        let Ok(track) = track.dyn_into::<MediaStreamTrack>() else { continue };
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(RtcRtpTransceiverDirection::Sendonly);
        init.set_streams(&streams);
        pc.add_transceiver_with_media_stream_track_and_init(&track, &init);
    }
    let on_state = on_state_closure(&pc, on_state);
    match negotiate(&pc, endpoint, token).await {
        Ok(resource) => Ok(Connection::new(Peer { pc, resource, token: token.into(), _on_state: on_state, _on_track: None })),
        Err(e) => {
            pc.close();
            Err(e)
        }
    }
}

/// Offer → `POST` → answer. Returns the session resource (`Location`).
async fn negotiate(pc: &RtcPeerConnection, endpoint: &str, token: &str) -> Result<Option<String>, MediaFailure> {
    let sdp = local_offer(pc).await?;
    exchange(pc, endpoint, token, &sdp).await
}

/// Makes the offer and sets it as the local description; returns its SDP.
async fn local_offer(pc: &RtcPeerConnection) -> Result<String, MediaFailure> {
    let offer = JsFuture::from(pc.create_offer()).await.map_err(|e| failure("WEBRTC_FAILED", e))?;
    let sdp = Reflect::get(&offer, &"sdp".into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
    let local = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
    local.set_sdp(&sdp);
    JsFuture::from(pc.set_local_description(&local)).await.map_err(|e| failure("WEBRTC_FAILED", e))?;
    Ok(sdp)
}

/// `POST`s the offer `sdp`, sets the answer. Returns the session resource (`Location`).
async fn exchange(pc: &RtcPeerConnection, endpoint: &str, token: &str, sdp: &str) -> Result<Option<String>, MediaFailure> {
    let resp = send(endpoint, "POST", token, Some(sdp), false)?;
    let resp: web_sys::Response =
        JsFuture::from(resp).await.map_err(|e| failure("NETWORK", e))?.dyn_into().map_err(|e| failure("NETWORK", e))?;
    let text = JsFuture::from(resp.text().map_err(|e| failure("NETWORK", e))?)
        .await
        .ok()
        .and_then(|t| t.as_string())
        .unwrap_or_default();
    if resp.status() != 201 {
        return Err(envelope_error(resp.status(), &text));
    }
    let location = resp.headers().get("location").ok().flatten().map(|l| absolute(endpoint, &l));
    let remote = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
    remote.set_sdp(&text);
    JsFuture::from(pc.set_remote_description(&remote)).await.map_err(|e| failure("WEBRTC_FAILED", e))?;
    Ok(location)
}

fn envelope_error(status: u16, body: &str) -> MediaFailure {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Envelope>(body) {
        Ok(e) => MediaFailure { code: e.error.code, message: e.error.message },
        Err(_) => MediaFailure { code: "HTTP_ERROR".into(), message: format!("The media server answered {status}") },
    }
}

fn absolute(endpoint: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    web_sys::Url::new_with_base(location, endpoint).map(|u| u.href()).unwrap_or_else(|_| location.to_string())
}

fn send(url: &str, method: &str, token: &str, sdp: Option<&str>, keepalive: bool) -> Result<js_sys::Promise, MediaFailure> {
    let window = web_sys::window().ok_or_else(|| failure("NETWORK", "no window"))?;
    let headers = web_sys::Headers::new().map_err(|e| failure("NETWORK", e))?;
    let _ = headers.append("authorization", &format!("Bearer {token}"));
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    if let Some(sdp) = sdp {
        let _ = headers.append("content-type", "application/sdp");
        init.set_body(&JsValue::from_str(sdp));
    }
    init.set_headers(&headers);
    if keepalive {
        let _ = Reflect::set(&init, &"keepalive".into(), &JsValue::TRUE);
    }
    Ok(window.fetch_with_str_and_init(url, &init))
}
