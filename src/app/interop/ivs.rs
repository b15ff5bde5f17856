//! Amazon IVS Real-Time stages through the IVS Web Broadcast SDK (`amazon-ivs-web-broadcast`),
//! as typed Rust.
//!
//! The SDK is a UMD bundle that defines `IVSBroadcastClient`; it is fetched from the URL the
//! server gives (`sdk_url` of a ticket) the first time a page plays or publishes on the IVS
//! backend, and never otherwise: not during server rendering, not on the local backend.
//!
//! A [`StageSession`] owns its `Stage` and every closure handed to it (the strategy and the
//! event handlers), so they live exactly as long as the session does.

use super::session::{failure, Connection, MediaFailure, PeerState, Session};
use js_sys::{Array, Object, Promise, Reflect};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{HtmlScriptElement, HtmlVideoElement, MediaStream, MediaStreamTrack};

#[wasm_bindgen]
extern "C" {
    /// `IVSBroadcastClient.Stage`.
    #[wasm_bindgen(js_namespace = IVSBroadcastClient)]
    type Stage;
    #[wasm_bindgen(constructor, js_namespace = IVSBroadcastClient, js_class = "Stage", catch)]
    fn new(token: &str, strategy: &Object) -> Result<Stage, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn join(this: &Stage) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method)]
    fn leave(this: &Stage);
    #[wasm_bindgen(method)]
    fn on(this: &Stage, event: &str, handler: &JsValue);
    #[wasm_bindgen(method, js_name = refreshStrategy)]
    fn refresh_strategy(this: &Stage);

    /// `IVSBroadcastClient.LocalStageStream`.
    #[wasm_bindgen(js_namespace = IVSBroadcastClient)]
    type LocalStageStream;
    #[wasm_bindgen(constructor, js_namespace = IVSBroadcastClient, js_class = "LocalStageStream", catch)]
    fn new(track: &MediaStreamTrack) -> Result<LocalStageStream, JsValue>;
}

const SCRIPT_ID: &str = "ivs-web-broadcast-sdk";
const GLOBAL: &str = "IVSBroadcastClient";

// `StageEvents` values.
const CONNECTION_STATE_CHANGED: &str = "stageConnectionStateChanged";
const STREAMS_ADDED: &str = "stageParticipantStreamsAdded";
const STREAMS_REMOVED: &str = "stageParticipantStreamsRemoved";
const PUBLISH_STATE_CHANGED: &str = "stageParticipantPublishStateChanged";
const STAGE_LEFT: &str = "stageLeft";

fn loaded() -> bool {
    web_sys::window().is_some_and(|w| Reflect::get(&w, &JsValue::from_str(GLOBAL)).is_ok_and(|v| v.is_object()))
}

/// Loads the SDK from `url` once per page (concurrent callers share the one `<script>`). A
/// `#integrity=<hash>` fragment on the URL is the script's Subresource Integrity hash: the
/// browser refuses a script that does not match it.
pub async fn load(url: &str) -> Result<(), MediaFailure> {
    let (url, integrity) = match url.split_once("#integrity=") {
        Some((url, hash)) => (url, Some(hash)),
        None => (url, None),
    };
    if loaded() {
        return Ok(());
    }
    let document = web_sys::window().and_then(|w| w.document()).ok_or_else(|| failure("IVS_SDK_UNAVAILABLE", "no document"))?;
    let script: HtmlScriptElement = match document.get_element_by_id(SCRIPT_ID) {
        Some(el) => el.dyn_into().map_err(|e| failure("IVS_SDK_UNAVAILABLE", e))?,
        None => {
            let el: HtmlScriptElement = document
                .create_element("script")
                .map_err(|e| failure("IVS_SDK_UNAVAILABLE", e))?
                .dyn_into()
                .map_err(|e| failure("IVS_SDK_UNAVAILABLE", e))?;
            el.set_id(SCRIPT_ID);
            if let Some(hash) = integrity {
                el.set_integrity(hash);
            }
            el.set_src(url);
            el.set_async(true);
            el.set_cross_origin(Some("anonymous"));
            let parent =
                document.head().map(|h| h.unchecked_into::<web_sys::Element>()).or_else(|| document.body().map(Into::into));
            let Some(parent) = parent else {
                return Err(failure("IVS_SDK_UNAVAILABLE", "no <head>"));
            };
            parent.append_child(&el).map_err(|e| failure("IVS_SDK_UNAVAILABLE", e))?;
            el
        }
    };
    // Settles on the script's load or error event; the listeners hold only the promise's own
    // resolve/reject functions, so nothing needs keeping alive here.
    let done = Promise::new(&mut |resolve, reject| {
        let _ = script.add_event_listener_with_callback("load", &resolve);
        let _ = script.add_event_listener_with_callback("error", &reject);
    });
    if !loaded() && JsFuture::from(done).await.is_err() {
        // A failed element never fires again: remove it so the next attempt loads afresh.
        script.remove();
        return Err(failure("IVS_SDK_UNAVAILABLE", format!("the IVS Web Broadcast SDK could not be loaded from {url}")));
    }
    if loaded() {
        Ok(())
    } else {
        Err(failure("IVS_SDK_UNAVAILABLE", format!("{url} did not define {GLOBAL}")))
    }
}

fn sdk_failure(e: JsValue) -> MediaFailure {
    let message = Reflect::get(&e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "the stage refused the connection".into());
    MediaFailure { code: "IVS_STAGE".into(), message }
}

type Handler2 = Closure<dyn FnMut(JsValue, JsValue)>;
type Callback = Closure<dyn FnMut(JsValue) -> JsValue>;

pub struct StageSession {
    stage: Stage,
    state: Rc<Cell<PeerState>>,
    /// What the strategy publishes (the broadcaster's camera and microphone).
    published: Rc<RefCell<Array>>,
    _strategy: Vec<Callback>,
    _handlers: Vec<Handler2>,
}

impl Session for StageSession {
    fn state(&self) -> PeerState {
        self.state.get()
    }

    /// Publishes `track` in place of the one of the same kind.
    fn replace_track<'a>(&'a self, track: &'a MediaStreamTrack) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
        Box::pin(async move {
            let Ok(replacement) = LocalStageStream::new(track) else { return };
            {
                let published = self.published.borrow();
                for (i, s) in published.iter().enumerate() {
                    if track_of(&s).is_some_and(|t| t.kind() == track.kind()) {
                        published.set(i as u32, replacement.clone());
                    }
                }
            }
            self.stage.refresh_strategy();
        })
    }

    fn close(self: Box<Self>) {
        self.state.set(PeerState::Closed);
        self.stage.leave();
    }
}

/// A strategy object: `stageStreamsToPublish`, `shouldPublishParticipant` and
/// `shouldSubscribeToParticipant`, answered from Rust.
fn strategy(published: Rc<RefCell<Array>>, publish: bool, subscribe: &'static str) -> (Object, Vec<Callback>) {
    let obj = Object::new();
    // A fresh array each time, so the SDK sees a changed list as changed.
    let streams = Callback::new(move |_| published.borrow().slice(0, u32::MAX).into());
    let should_publish = Callback::new(move |_| JsValue::from_bool(publish));
    let should_subscribe = Callback::new(move |_| JsValue::from_str(subscribe));
    for (name, f) in [
        ("stageStreamsToPublish", &streams),
        ("shouldPublishParticipant", &should_publish),
        ("shouldSubscribeToParticipant", &should_subscribe),
    ] {
        let _ = Reflect::set(&obj, &JsValue::from_str(name), f.as_ref());
    }
    (obj, vec![streams, should_publish, should_subscribe])
}

fn field(v: &JsValue, name: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// The track a stage stream (local or remote) carries.
fn track_of(stream: &JsValue) -> Option<MediaStreamTrack> {
    field(stream, "mediaStreamTrack").dyn_into().ok()
}

fn report(state: &Rc<Cell<PeerState>>, on_state: &Rc<dyn Fn(PeerState)>, next: PeerState) {
    if state.get() != next && state.get() != PeerState::Closed {
        state.set(next);
        on_state(next);
    }
}

/// Watches the stage's connection. The SDK rides out network drops itself ("disconnected",
/// then "connecting" again); the session ends when it gives up ("errored") or the stage is left
/// for any reason but our own.
fn connection_handlers(stage: &Stage, state: &Rc<Cell<PeerState>>, on_state: &Rc<dyn Fn(PeerState)>) -> Vec<Handler2> {
    let (st, cb) = (state.clone(), on_state.clone());
    let on_connection = Handler2::new(move |s: JsValue, _| {
        if s.as_string().as_deref() == Some("errored") {
            report(&st, &cb, PeerState::Failed);
        }
    });
    let (st, cb) = (state.clone(), on_state.clone());
    let on_left = Handler2::new(move |reason: JsValue, _| {
        if reason.as_string().as_deref() != Some("user-initiated") {
            report(&st, &cb, PeerState::Failed);
        }
    });
    stage.on(CONNECTION_STATE_CHANGED, on_connection.as_ref());
    stage.on(STAGE_LEFT, on_left.as_ref());
    vec![on_connection, on_left]
}

/// Joins; a stage that failed to join is left, so the SDK calls none of the closures that are
/// dropped with it.
async fn join(stage: &Stage) -> Result<(), MediaFailure> {
    let joined = match stage.join() {
        Ok(promise) => JsFuture::from(promise).await.map(|_| ()),
        Err(e) => Err(e),
    };
    joined.map_err(|e| {
        stage.leave();
        sdk_failure(e)
    })
}

/// Joins the stage with a SUBSCRIBE `token` and plays what its publisher sends into `video`.
pub async fn play(
    sdk_url: &str,
    token: &str,
    video: &HtmlVideoElement,
    on_state: Rc<dyn Fn(PeerState)>,
) -> Result<Connection, MediaFailure> {
    load(sdk_url).await?;
    let published = Rc::new(RefCell::new(Array::new()));
    let (strategy, strategy_closures) = strategy(published.clone(), false, "audio_video");
    let stage = Stage::new(token, &strategy).map_err(sdk_failure)?;
    let state = Rc::new(Cell::new(PeerState::Connecting));
    let media = MediaStream::new().map_err(|e| failure("WEBRTC_UNAVAILABLE", e))?;
    // Attached once it has tracks: an element that loaded an empty stream may not pick them up.
    video.set_src_object(None);

    let mut handlers = connection_handlers(&stage, &state, &on_state);
    let (target, element, st, cb) = (media.clone(), video.clone(), state.clone(), on_state.clone());
    let on_added = Handler2::new(move |participant: JsValue, streams: JsValue| {
        if field(&participant, "isLocal").as_bool() == Some(true) {
            return;
        }
        for track in Array::from(&streams).iter().filter_map(|s| track_of(&s)) {
            if target.get_track_by_id(&track.id()).is_none() {
                target.add_track(&track);
            }
        }
        if element.src_object().is_none() {
            element.set_src_object(Some(&target));
        }
        report(&st, &cb, PeerState::Connected);
    });
    let (target, element, st, cb) = (media.clone(), video.clone(), state.clone(), on_state.clone());
    let on_removed = Handler2::new(move |_participant: JsValue, streams: JsValue| {
        for track in Array::from(&streams).iter().filter_map(|s| track_of(&s)) {
            target.remove_track(&track);
        }
        if target.get_tracks().length() == 0 {
            element.set_src_object(None);
            // The publisher stopped: the server's live state decides what the page shows.
            report(&st, &cb, PeerState::Disconnected);
        }
    });
    stage.on(STREAMS_ADDED, on_added.as_ref());
    stage.on(STREAMS_REMOVED, on_removed.as_ref());
    handlers.extend([on_added, on_removed]);

    join(&stage).await?;
    Ok(Connection::new(StageSession { stage, state, published, _strategy: strategy_closures, _handlers: handlers }))
}

/// Joins the stage with a PUBLISH `token` and publishes `stream`'s camera and microphone.
pub async fn publish(
    sdk_url: &str,
    token: &str,
    stream: &MediaStream,
    on_state: Rc<dyn Fn(PeerState)>,
) -> Result<Connection, MediaFailure> {
    load(sdk_url).await?;
    let local = Array::new();
    for track in stream.get_tracks().iter() {
        let Ok(track) = track.dyn_into::<MediaStreamTrack>() else { continue };
        local.push(&LocalStageStream::new(&track).map_err(sdk_failure)?.into());
    }
    let published = Rc::new(RefCell::new(local));
    let (strategy, strategy_closures) = strategy(published.clone(), true, "none");
    let stage = Stage::new(token, &strategy).map_err(sdk_failure)?;
    let state = Rc::new(Cell::new(PeerState::Connecting));

    let mut handlers = connection_handlers(&stage, &state, &on_state);
    let (st, cb) = (state.clone(), on_state.clone());
    let on_publish = Handler2::new(move |participant: JsValue, publish_state: JsValue| {
        if field(&participant, "isLocal").as_bool() != Some(true) {
            return;
        }
        match publish_state.as_string().as_deref() {
            Some("published") => report(&st, &cb, PeerState::Connected),
            Some("errored") => report(&st, &cb, PeerState::Failed),
            _ => {}
        }
    });
    stage.on(PUBLISH_STATE_CHANGED, on_publish.as_ref());
    handlers.push(on_publish);

    join(&stage).await?;
    Ok(Connection::new(StageSession { stage, state, published, _strategy: strategy_closures, _handlers: handlers }))
}
