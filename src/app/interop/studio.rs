//! The broadcaster's studio: camera/microphone preview, device and resolution choice, and going
//! live over WHIP. One studio per page, held in a thread-local; no-ops during server rendering.

use leptos::prelude::*;

/// The publish state the studio shows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub enum PublishState {
    Idle,
    Previewing,
    Connecting,
    Live,
    Failed(String),
}

impl PublishState {
    pub fn key(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Previewing => "preview",
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::Failed(_) => "failed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    pub cameras: Vec<(String, String)>,
    pub microphones: Vec<(String, String)>,
}

/// Opens the preview into `<video id=video_id>` at `height`p and lists the devices.
pub fn start(video_id: &str, state: RwSignal<PublishState>, devices: RwSignal<Devices>, height: u32) {
    #[cfg(feature = "hydrate")]
    imp::start(video_id, state, devices, height);
    #[cfg(not(feature = "hydrate"))]
    let _ = (video_id, state, devices, height);
}

/// Switches camera, microphone or resolution (also while live).
pub fn choose(camera: Option<String>, microphone: Option<String>, height: u32) {
    #[cfg(feature = "hydrate")]
    imp::choose(camera, microphone, height);
    #[cfg(not(feature = "hydrate"))]
    let _ = (camera, microphone, height);
}

/// Goes live with `token`: over WHIP to `whip_endpoint`, or through the IVS Web Broadcast SDK
/// at `sdk_url` when the server gives one (IVS backend).
pub fn go_live(whip_endpoint: String, token: String, sdk_url: Option<String>) {
    #[cfg(feature = "hydrate")]
    imp::go_live(whip_endpoint, token, sdk_url);
    #[cfg(not(feature = "hydrate"))]
    let _ = (whip_endpoint, token, sdk_url);
}

/// Ends the broadcast (the preview stays).
pub fn stop_broadcast() {
    #[cfg(feature = "hydrate")]
    imp::stop_broadcast();
}

/// Ends the broadcast and closes the camera (the page goes away).
pub fn shutdown() {
    #[cfg(feature = "hydrate")]
    imp::shutdown();
}

#[cfg(feature = "hydrate")]
mod imp {
    use super::{Devices, PublishState};
    use crate::app::interop::devices;
    use crate::app::interop::ivs;
    use crate::app::interop::session::{Connection, PeerState};
    use crate::app::interop::webrtc;
    use leptos::prelude::*;
    use leptos::task::spawn_local;
    use std::cell::RefCell;
    use std::rc::Rc;
    use wasm_bindgen::JsCast;
    use web_sys::{HtmlVideoElement, MediaStream};

    struct Studio {
        video: HtmlVideoElement,
        state: RwSignal<PublishState>,
        stream: Option<MediaStream>,
        conn: Option<Connection>,
        camera: Option<String>,
        microphone: Option<String>,
        height: u32,
        generation: u64,
        pagehide: Option<WindowListenerHandle>,
    }

    type Shared = Rc<RefCell<Studio>>;

    thread_local! {
        static STUDIO: RefCell<Option<Shared>> = const { RefCell::new(None) };
    }

    fn current() -> Option<Shared> {
        STUDIO.with(|s| s.borrow().clone())
    }

    fn set(shared: &Shared, state: PublishState) {
        let _ = shared.borrow().state.try_set(state);
    }

    pub fn start(video_id: &str, state: RwSignal<PublishState>, list: RwSignal<Devices>, height: u32) {
        shutdown();
        let Some(video) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id(video_id))
            .and_then(|e| e.dyn_into::<HtmlVideoElement>().ok())
        else {
            return;
        };
        video.set_muted(true);
        let shared = Rc::new(RefCell::new(Studio {
            video,
            state,
            stream: None,
            conn: None,
            camera: None,
            microphone: None,
            height,
            generation: 0,
            pagehide: None,
        }));
        shared.borrow_mut().pagehide = Some(window_event_listener(leptos::ev::pagehide, |_| shutdown()));
        STUDIO.with(|s| *s.borrow_mut() = Some(shared.clone()));
        spawn_local(async move {
            open_preview(&shared).await;
            if let Ok(found) = devices::list().await {
                let pick = |d: Vec<devices::Device>| d.into_iter().map(|d| (d.id, d.label)).collect();
                let _ = list.try_set(Devices { cameras: pick(found.cameras), microphones: pick(found.microphones) });
            }
        });
    }

    async fn open_preview(shared: &Shared) {
        let (camera, microphone, height) = {
            let s = shared.borrow();
            (s.camera.clone(), s.microphone.clone(), s.height)
        };
        match devices::open(camera.as_deref(), microphone.as_deref(), height).await {
            Ok(stream) => {
                let old = {
                    let mut s = shared.borrow_mut();
                    s.video.set_src_object(Some(&stream));
                    let _ = s.video.play();
                    s.stream.replace(stream.clone())
                };
                let conn_live = shared.borrow().conn.is_some();
                if conn_live {
                    // Swap the outgoing tracks in place: viewers see the new camera, no renegotiation.
                    for kind in ["video", "audio"] {
                        if let Some(track) = devices::track(&stream, kind) {
                            let conn = shared.borrow_mut().conn.take();
                            if let Some(conn) = conn {
                                conn.replace_track(&track).await;
                                shared.borrow_mut().conn = Some(conn);
                            }
                        }
                    }
                } else {
                    set(shared, PublishState::Previewing);
                }
                if let Some(old) = old {
                    devices::stop(&old);
                }
            }
            Err(e) => set(shared, PublishState::Failed(e.message)),
        }
    }

    pub fn choose(camera: Option<String>, microphone: Option<String>, height: u32) {
        let Some(shared) = current() else { return };
        {
            let mut s = shared.borrow_mut();
            s.camera = camera;
            s.microphone = microphone;
            s.height = height;
        }
        spawn_local(async move { open_preview(&shared).await });
    }

    pub fn go_live(endpoint: String, token: String, sdk_url: Option<String>) {
        let Some(shared) = current() else { return };
        if shared.borrow().conn.is_some() {
            return;
        }
        let generation = {
            let mut s = shared.borrow_mut();
            s.generation += 1;
            s.generation
        };
        set(&shared, PublishState::Connecting);
        spawn_local(async move {
            if shared.borrow().stream.is_none() {
                open_preview(&shared).await;
            }
            let Some(stream) = shared.borrow().stream.clone() else { return };
            let weak = Rc::downgrade(&shared);
            let on_state = Rc::new(move |st: PeerState| {
                let Some(shared) = weak.upgrade() else { return };
                if shared.borrow().generation != generation {
                    return;
                }
                match st {
                    PeerState::Connected => set(&shared, PublishState::Live),
                    PeerState::Failed | PeerState::Disconnected => {
                        if let Some(conn) = shared.borrow_mut().conn.take() {
                            conn.close();
                        }
                        set(&shared, PublishState::Failed("The connection to the server was lost; go live again.".into()));
                    }
                    _ => {}
                }
            });
            let published = match &sdk_url {
                Some(sdk) => ivs::publish(sdk, &token, &stream, on_state).await,
                None => webrtc::publish(&endpoint, &token, &stream, on_state).await,
            };
            match published {
                Ok(conn) => {
                    if shared.borrow().generation != generation {
                        conn.close();
                        return;
                    }
                    let connected = conn.state() == PeerState::Connected;
                    shared.borrow_mut().conn = Some(conn);
                    if connected {
                        set(&shared, PublishState::Live);
                    }
                }
                Err(e) => set(&shared, PublishState::Failed(format!("Could not go live: {e}"))),
            }
        });
    }

    pub fn stop_broadcast() {
        let Some(shared) = current() else { return };
        let conn = {
            let mut s = shared.borrow_mut();
            s.generation += 1;
            s.conn.take()
        };
        if let Some(conn) = conn {
            conn.close();
        }
        let state = if shared.borrow().stream.is_some() { PublishState::Previewing } else { PublishState::Idle };
        set(&shared, state);
    }

    pub fn shutdown() {
        let Some(shared) = STUDIO.with(|s| s.borrow_mut().take()) else { return };
        let mut s = shared.borrow_mut();
        s.generation += 1;
        if let Some(conn) = s.conn.take() {
            conn.close();
        }
        if let Some(stream) = s.stream.take() {
            devices::stop(&stream);
        }
        if let Some(h) = s.pagehide.take() {
            h.remove();
        }
    }
}
