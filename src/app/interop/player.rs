//! The viewer's player: join through the server function, play over WHEP, heartbeat every 30 s,
//! refresh the token before it expires, reconnect with backoff, leave on `pagehide`.
//!
//! One player per page, held in a thread-local, so components only keep `Copy` signals. Every
//! function is a no-op during server rendering.

use crate::domain::ChannelId;
use leptos::prelude::*;

/// What the viewer sees.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub enum PlayerStatus {
    Starting,
    Joining,
    Connecting,
    Playing,
    Offline,
    Full,
    Reconnecting,
    Failed(String),
}

impl PlayerStatus {
    /// Stable name for styling and tests.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Joining => "joining",
            Self::Connecting => "connecting",
            Self::Playing => "playing",
            Self::Offline => "offline",
            Self::Full => "full",
            Self::Reconnecting => "reconnecting",
            Self::Failed(_) => "failed",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Starting | Self::Joining => "Joining the broadcast…".into(),
            Self::Connecting => "Connecting…".into(),
            Self::Playing => String::new(),
            Self::Offline => "The broadcast is offline. It will start here as soon as it goes live.".into(),
            Self::Full => "Every stage is full right now; retrying shortly.".into(),
            Self::Reconnecting => "Connection lost; reconnecting…".into(),
            Self::Failed(m) => m.clone(),
        }
    }
}

/// Starts the player of `channel` (`None`: the default one) into the `<video id=video_id>`;
/// `status` follows it. The viewer is the one the server's cookie names.
pub fn start(video_id: &str, channel: Option<ChannelId>, status: RwSignal<PlayerStatus>) {
    #[cfg(feature = "hydrate")]
    imp::start(video_id, channel, status);
    #[cfg(not(feature = "hydrate"))]
    let _ = (video_id, channel, status);
}

/// The broadcast went live or offline (from `/ws`).
pub fn set_live(live: bool) {
    #[cfg(feature = "hydrate")]
    imp::set_live(live);
    #[cfg(not(feature = "hydrate"))]
    let _ = live;
}

/// Stops playing and leaves (the page goes away).
pub fn stop() {
    #[cfg(feature = "hydrate")]
    imp::stop();
}

/// Mutes or unmutes; returns whether the player is now muted.
pub fn toggle_mute(video_id: &str) -> bool {
    #[cfg(feature = "hydrate")]
    {
        imp::toggle_mute(video_id)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = video_id;
        true
    }
}

#[cfg(feature = "hydrate")]
mod imp {
    use super::PlayerStatus;
    use crate::api::{ErrorCode, JoinOutcome, ViewerTicket};
    use crate::app::interop::ivs;
    use crate::app::interop::session::{Connection, PeerState};
    use crate::app::interop::webrtc;
    use crate::domain::ChannelId;
    use crate::rpc::{join_stream, send_heartbeat, LeaveStream};
    use futures_util::future::join as join_both;
    use leptos::prelude::*;
    use leptos::server_fn::ServerFn;
    use leptos::task::spawn_local;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;
    use wasm_bindgen::JsCast;
    use web_sys::HtmlVideoElement;

    const HEARTBEAT: Duration = Duration::from_secs(30);

    struct Player {
        /// The channel watched (`None`: the default one), as the server functions take it.
        channel: Option<String>,
        video: HtmlVideoElement,
        status: RwSignal<PlayerStatus>,
        live: Option<bool>,
        ticket: Option<ViewerTicket>,
        conn: Option<Connection>,
        attempt: u32,
        /// Bumped by every new join; async steps of an older one give up.
        generation: u64,
        heartbeat: Option<IntervalHandle>,
        refresh: Option<TimeoutHandle>,
        retry: Option<TimeoutHandle>,
        pagehide: Option<WindowListenerHandle>,
    }

    type Shared = Rc<RefCell<Player>>;

    thread_local! {
        static PLAYER: RefCell<Option<Shared>> = const { RefCell::new(None) };
    }

    fn current() -> Option<Shared> {
        PLAYER.with(|p| p.borrow().clone())
    }

    fn set(shared: &Shared, status: PlayerStatus) {
        let signal = shared.borrow().status;
        if signal.try_get_untracked().as_ref() != Some(&status) {
            let _ = signal.try_set(status);
        }
    }

    fn video(id: &str) -> Option<HtmlVideoElement> {
        web_sys::window()?.document()?.get_element_by_id(id)?.dyn_into().ok()
    }

    pub fn start(video_id: &str, channel: Option<ChannelId>, status: RwSignal<PlayerStatus>) {
        stop();
        let Some(video) = video(video_id) else { return };
        video.set_muted(true);
        let shared = Rc::new(RefCell::new(Player {
            channel: channel.map(String::from),
            video,
            status,
            live: None,
            ticket: None,
            conn: None,
            attempt: 0,
            generation: 0,
            heartbeat: None,
            refresh: None,
            retry: None,
            pagehide: None,
        }));
        let handle = window_event_listener(leptos::ev::pagehide, |_| stop());
        shared.borrow_mut().pagehide = Some(handle);
        PLAYER.with(|p| *p.borrow_mut() = Some(shared.clone()));
        spawn_local(join(shared));
    }

    pub fn stop() {
        let Some(shared) = PLAYER.with(|p| p.borrow_mut().take()) else { return };
        let mut p = shared.borrow_mut();
        p.generation += 1;
        for h in [p.heartbeat.take()].into_iter().flatten() {
            h.clear();
        }
        for h in [p.refresh.take(), p.retry.take()].into_iter().flatten() {
            h.clear();
        }
        if let Some(h) = p.pagehide.take() {
            h.remove();
        }
        if let Some(conn) = p.conn.take() {
            conn.close();
        }
        if let Some(t) = p.ticket.take() {
            crate::app::interop::send_beacon(LeaveStream::PATH, &[("stage_arn", &t.stage_arn)]);
        }
    }

    pub fn toggle_mute(video_id: &str) -> bool {
        let Some(v) = video(video_id) else { return true };
        let muted = !v.muted();
        v.set_muted(muted);
        if !muted {
            let _ = v.play();
        }
        muted
    }

    pub fn set_live(live: bool) {
        let Some(shared) = current() else { return };
        let was = shared.borrow_mut().live.replace(live);
        if was == Some(live) {
            return;
        }
        let status = shared.borrow().status.get_untracked();
        if live {
            if matches!(status, PlayerStatus::Offline | PlayerStatus::Failed(_)) {
                shared.borrow_mut().attempt = 0;
                spawn_local(join(shared));
            }
        } else if was.is_some() {
            // The publisher stopped: drop the media connection, stay on the stage.
            if let Some(conn) = shared.borrow_mut().conn.take() {
                conn.close();
            }
            set(&shared, PlayerStatus::Offline);
        }
    }

    async fn join(shared: Shared) {
        let (channel, generation) = {
            let mut p = shared.borrow_mut();
            p.generation += 1;
            if let Some(h) = p.retry.take() {
                h.clear();
            }
            (p.channel.clone(), p.generation)
        };
        let idle = shared.borrow().conn.is_none();
        if idle {
            set(&shared, PlayerStatus::Joining);
        }
        // Nothing plays yet: make the WHEP offer while the ticket is on its way.
        let (outcome, prepared) = if idle {
            let (outcome, prepared) =
                join_both(join_stream(channel.clone()), webrtc::PreparedPlay::new(on_state_for(&shared, generation))).await;
            (outcome, prepared.ok())
        } else {
            (join_stream(channel).await, None)
        };
        if shared.borrow().generation != generation {
            if let Some(p) = prepared {
                p.discard();
            }
            return;
        }
        let prepared = match (&outcome, prepared) {
            (Ok(JoinOutcome::Joined(t)), Some(p)) if t.whep_endpoint.is_some() => Some(p),
            (_, other) => {
                if let Some(p) = other {
                    p.discard();
                }
                None
            }
        };
        match outcome {
            Ok(JoinOutcome::Joined(ticket)) => {
                let lifetime = ticket.expires_in;
                shared.borrow_mut().ticket = Some(ticket);
                schedule_refresh(&shared, lifetime);
                ensure_heartbeat(&shared);
                connect(shared, generation, prepared).await;
            }
            Ok(JoinOutcome::Offline) => {
                if let Some(conn) = shared.borrow_mut().conn.take() {
                    conn.close();
                }
                set(&shared, PlayerStatus::Offline);
            }
            Ok(JoinOutcome::Full) => {
                set(&shared, PlayerStatus::Full);
                retry_later(&shared);
            }
            Err(e) => {
                set(&shared, PlayerStatus::Failed(format!("Could not join: {e}")));
                retry_later(&shared);
            }
        }
    }

    /// What the peer connection of the join numbered `generation` reports goes to the player.
    fn on_state_for(shared: &Shared, generation: u64) -> Rc<dyn Fn(PeerState)> {
        let weak = Rc::downgrade(shared);
        Rc::new(move |s: PeerState| {
            if let Some(shared) = weak.upgrade() {
                peer_state(&shared, generation, s);
            }
        })
    }

    /// Plays the ticket's stage; over WHEP with `prepared` when there is one.
    async fn connect(shared: Shared, generation: u64, prepared: Option<webrtc::PreparedPlay>) {
        let (ticket, video) = {
            let mut p = shared.borrow_mut();
            if let Some(conn) = p.conn.take() {
                conn.close();
            }
            (p.ticket.clone(), p.video.clone())
        };
        let Some(ticket) = ticket else {
            if let Some(p) = prepared {
                p.discard();
            }
            return;
        };
        set(&shared, PlayerStatus::Connecting);
        let on_state = on_state_for(&shared, generation);
        let played = match (&ticket.whep_endpoint, &ticket.sdk_url, prepared) {
            (Some(endpoint), _, Some(p)) => p.play(endpoint, &ticket.token, &video).await,
            (Some(endpoint), _, None) => webrtc::play(endpoint, &ticket.token, &video, on_state).await,
            (None, Some(sdk), _) => ivs::play(sdk, &ticket.token, &video, on_state).await,
            (None, None, _) => {
                set(&shared, PlayerStatus::Failed("This server offers no way to play the broadcast.".into()));
                return;
            }
        };
        match played {
            Ok(conn) => {
                if shared.borrow().generation != generation {
                    conn.close();
                    return;
                }
                let connected = conn.state() == PeerState::Connected;
                shared.borrow_mut().conn = Some(conn);
                if connected {
                    playing(&shared);
                }
            }
            Err(f) if f.code == "NOT_FOUND" => {
                // Offline again, or the stage went away: ask the server what is true now.
                retry_later(&shared);
            }
            Err(f) => {
                set(&shared, PlayerStatus::Failed(format!("Could not play: {f}")));
                retry_later(&shared);
            }
        }
    }

    fn playing(shared: &Shared) {
        shared.borrow_mut().attempt = 0;
        set(shared, PlayerStatus::Playing);
        let v = shared.borrow().video.clone();
        if let Ok(p) = v.play() {
            // Autoplay with sound can be refused; muted playback never is.
            spawn_local(async move {
                if wasm_bindgen_futures::JsFuture::from(p).await.is_err() {
                    v.set_muted(true);
                    let _ = v.play();
                }
            });
        }
    }

    fn peer_state(shared: &Shared, generation: u64, state: PeerState) {
        if shared.borrow().generation != generation {
            return;
        }
        match state {
            PeerState::Connected => {
                if let Some(h) = shared.borrow_mut().retry.take() {
                    h.clear();
                }
                playing(shared);
            }
            PeerState::Failed => reconnect(shared),
            // A blip often recovers by itself: give it a moment before starting over.
            PeerState::Disconnected => {
                set(shared, PlayerStatus::Reconnecting);
                let weak = Rc::downgrade(shared);
                let check = move || {
                    let Some(shared) = weak.upgrade() else { return };
                    let still_down = shared.borrow().conn.as_ref().is_none_or(|c| c.state() != PeerState::Connected);
                    if still_down && shared.borrow().generation == generation {
                        reconnect(&shared);
                    }
                };
                if let Ok(h) = set_timeout_with_handle(check, Duration::from_secs(3)) {
                    if let Some(old) = shared.borrow_mut().retry.replace(h) {
                        old.clear();
                    }
                }
            }
            PeerState::Connecting | PeerState::Closed => {}
        }
    }

    fn reconnect(shared: &Shared) {
        if let Some(conn) = shared.borrow_mut().conn.take() {
            conn.close();
        }
        set(shared, PlayerStatus::Reconnecting);
        retry_later(shared);
    }

    fn retry_later(shared: &Shared) {
        let attempt = {
            let mut p = shared.borrow_mut();
            p.attempt += 1;
            p.attempt
        };
        let delay = Duration::from_millis((500u64 << attempt.min(5)).min(15_000));
        let again = shared.clone();
        if let Ok(h) = set_timeout_with_handle(move || spawn_local(join(again)), delay) {
            if let Some(old) = shared.borrow_mut().retry.replace(h) {
                old.clear();
            }
        }
    }

    fn ensure_heartbeat(shared: &Shared) {
        if shared.borrow().heartbeat.is_some() {
            return;
        }
        let weak = Rc::downgrade(shared);
        let beat = move || {
            let Some(shared) = weak.upgrade() else { return };
            let Some(t) = shared.borrow().ticket.clone() else { return };
            spawn_local(async move {
                // The server no longer counts this viewer (swept after a long sleep): join again.
                if matches!(send_heartbeat(t.stage_arn, t.participant_id).await, Err(e) if e.code() == ErrorCode::NotFound) {
                    join(shared).await;
                }
            });
        };
        if let Ok(h) = set_interval_with_handle(beat, HEARTBEAT) {
            shared.borrow_mut().heartbeat = Some(h);
        }
    }

    /// Gets a fresh token at 80% of the old one's lifetime; the media connection stays up.
    fn schedule_refresh(shared: &Shared, lifetime_secs: i64) {
        let delay = Duration::from_secs((lifetime_secs.max(60) as u64) * 4 / 5);
        let weak = Rc::downgrade(shared);
        let refresh = move || {
            let Some(shared) = weak.upgrade() else { return };
            spawn_local(async move {
                let channel = shared.borrow().channel.clone();
                match join_stream(channel).await {
                    Ok(JoinOutcome::Joined(ticket)) => {
                        let moved = shared.borrow().ticket.as_ref().is_some_and(|t| t.stage_arn != ticket.stage_arn);
                        let lifetime = ticket.expires_in;
                        shared.borrow_mut().ticket = Some(ticket);
                        schedule_refresh(&shared, lifetime);
                        if moved {
                            let generation = shared.borrow().generation;
                            connect(shared, generation, None).await;
                        }
                    }
                    _ => schedule_refresh(&shared, 120),
                }
            });
        };
        if let Ok(h) = set_timeout_with_handle(refresh, delay) {
            if let Some(old) = shared.borrow_mut().refresh.replace(h) {
                old.clear();
            }
        }
    }
}
