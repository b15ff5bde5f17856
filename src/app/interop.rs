//! Browser interop, kept in one place. Everything here is a no-op during server rendering.

use crate::api::LiveStats;

/// A stable anonymous viewer id for this browser, kept in localStorage.
pub fn viewer_id() -> String {
    #[cfg(feature = "hydrate")]
    {
        let storage = web_sys::window().and_then(|w| w.local_storage().ok().flatten());
        if let Some(id) = storage.as_ref().and_then(|s| s.get_item("livestage.viewerId").ok().flatten()) {
            return id;
        }
        let id = format!("viewer-{:012x}", (js_sys::Math::random() * 2f64.powi(48)) as u64);
        if let Some(s) = storage {
            let _ = s.set_item("livestage.viewerId", &id);
        }
        id
    }
    #[cfg(not(feature = "hydrate"))]
    {
        String::from("viewer-server")
    }
}

/// Subscribes to `stats_update` messages on `/ws`, reconnecting with backoff.
pub fn subscribe_stats(on_update: impl Fn(LiveStats) + 'static) {
    #[cfg(feature = "hydrate")]
    ws::connect(std::rc::Rc::new(on_update), 0);
    #[cfg(not(feature = "hydrate"))]
    let _ = on_update;
}

#[cfg(feature = "hydrate")]
mod ws {
    use super::LiveStats;
    use std::rc::Rc;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{MessageEvent, WebSocket};

    pub fn connect(on_update: Rc<dyn Fn(LiveStats)>, attempt: u32) {
        let Some(window) = web_sys::window() else { return };
        let location = window.location();
        let proto = if location.protocol().ok().as_deref() == Some("https:") { "wss" } else { "ws" };
        let Ok(host) = location.host() else { return };
        let Ok(socket) = WebSocket::new(&format!("{proto}://{host}/ws")) else { return };

        let s = socket.clone();
        let onopen = Closure::<dyn FnMut()>::new(move || {
            let _ = s.send_with_str(r#"{"action":"subscribe","channel":"stats"}"#);
        });
        socket.set_onopen(Some(onopen.as_ref().unchecked_ref()));
        onopen.forget();

        let handler = on_update.clone();
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(text) = ev.data().as_string() else { return };
            #[derive(serde::Deserialize)]
            struct Msg {
                r#type: String,
                data: Option<LiveStats>,
            }
            if let Ok(Msg { r#type, data: Some(stats) }) = serde_json::from_str::<Msg>(&text) {
                if r#type == "stats_update" {
                    handler(stats);
                }
            }
        });
        socket.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        onmessage.forget();

        let onclose = Closure::<dyn FnMut()>::new(move || {
            let delay = 1000 * 2u32.pow(attempt.min(5));
            let again = on_update.clone();
            let retry = Closure::once_into_js(move || connect(again, attempt + 1));
            if let Some(w) = web_sys::window() {
                let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(retry.unchecked_ref(), delay.min(30_000) as i32);
            }
        });
        socket.set_onclose(Some(onclose.as_ref().unchecked_ref()));
        onclose.forget();
    }
}
