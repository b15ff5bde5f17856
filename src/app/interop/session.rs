//! What every media session shares, however it carries media: the [`Connection`] the pages
//! hold, the [`PeerState`]s they show and the [`MediaFailure`]s they report. The ways of
//! connecting (`webrtc`: WHIP/WHEP with this server; `ivs`: an IVS stage) implement [`Session`].

use std::future::Future;
use std::pin::Pin;
use web_sys::MediaStreamTrack;

/// Connection states the pages show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// A failed WHIP/WHEP exchange: the contract's error code (or `NETWORK`) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFailure {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for MediaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub(super) fn failure(code: &str, e: impl std::fmt::Debug) -> MediaFailure {
    MediaFailure { code: code.into(), message: format!("{e:?}") }
}

/// One way of carrying a live media session.
pub(super) trait Session {
    fn state(&self) -> PeerState;
    /// Swaps the outgoing track of the same kind (a new camera or microphone) in place.
    fn replace_track<'a>(&'a self, track: &'a MediaStreamTrack) -> Pin<Box<dyn Future<Output = ()> + 'a>>;
    /// Ends the session, on the server too.
    fn close(self: Box<Self>);
}

/// A live media session: a WHIP/WHEP peer connection with this server, or an IVS stage.
pub struct Connection(Box<dyn Session>);

impl Connection {
    pub(super) fn new(session: impl Session + 'static) -> Self {
        Self(Box::new(session))
    }

    pub fn state(&self) -> PeerState {
        self.0.state()
    }

    /// Swaps the outgoing track of the same kind (a new camera or microphone) in place.
    pub async fn replace_track(&self, track: &MediaStreamTrack) {
        self.0.replace_track(track).await
    }

    /// Ends the session, on the server too.
    pub fn close(self) {
        self.0.close()
    }
}
