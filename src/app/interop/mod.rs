//! Browser interop, kept in one place. Everything here is a no-op during server rendering.

use crate::api::{Directory, LiveStats};
use crate::domain::ChannelId;

/// Calls `on_update` with every `stats_update` from `/ws`. One socket per page, shared by
/// every subscriber, reconnecting with backoff. Returns an id for [`unsubscribe_stats`].
pub fn subscribe_stats(channel: Option<ChannelId>, on_update: impl Fn(LiveStats) + 'static) -> u64 {
    #[cfg(feature = "hydrate")]
    {
        ws::subscribe(channel.unwrap_or_default(), std::rc::Rc::new(on_update))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (channel, on_update);
        0
    }
}

/// Calls `on_update` with every `channels_update` (the channel directory) from `/ws`, over the
/// page's one socket. Returns an id for [`unsubscribe_stats`].
pub fn subscribe_directory(on_update: impl Fn(Directory) + 'static) -> u64 {
    #[cfg(feature = "hydrate")]
    {
        ws::subscribe_directory(std::rc::Rc::new(on_update))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = on_update;
        0
    }
}

/// Stops the calls of [`subscribe_stats`] or [`subscribe_directory`] that returned `id`.
pub fn unsubscribe_stats(id: u64) {
    #[cfg(feature = "hydrate")]
    ws::unsubscribe(id);
    #[cfg(not(feature = "hydrate"))]
    let _ = id;
}

/// Milliseconds since the epoch, by the browser's clock (0 on the server).
pub fn now_ms() -> i64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now() as i64
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0
    }
}

#[cfg(feature = "hydrate")]
mod ws {
    use super::{Directory, LiveStats};
    use crate::api::ws::{WsChannel, WsMessage, WsRequest};
    use crate::domain::ChannelId;
    use std::cell::RefCell;
    use std::rc::Rc;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{MessageEvent, WebSocket};

    type Callback = Rc<dyn Fn(LiveStats)>;
    type DirectoryCallback = Rc<dyn Fn(Directory)>;

    #[derive(Default)]
    struct Hub {
        next_id: u64,
        subscribers: Vec<(u64, Callback)>,
        /// Followers of the directory; the socket subscribes to it while there are any.
        directory_subscribers: Vec<(u64, DirectoryCallback)>,
        last_directory: Option<Directory>,
        /// Whether the socket is open (subscriptions can be sent).
        open: bool,
        socket: Option<WebSocket>,
        /// The channel whose figures the socket follows (a page watches one).
        channel: ChannelId,
        last: Option<LiveStats>,
    }

    thread_local! {
        static HUB: RefCell<Hub> = RefCell::new(Hub::default());
    }

    pub fn subscribe(channel: ChannelId, cb: Callback) -> u64 {
        let (id, open, last) = HUB.with(|h| {
            let mut h = h.borrow_mut();
            if h.channel != channel {
                // Another channel's page: its figures, not the last one's.
                h.channel = channel;
                h.last = None;
                if let Some(socket) = &h.socket {
                    let _ = socket.send_with_str(&WsRequest::subscribe(WsChannel::stats(h.channel.clone())).to_json());
                }
            }
            h.next_id += 1;
            let id = h.next_id;
            h.subscribers.push((id, cb.clone()));
            (id, h.socket.is_none(), h.last.clone())
        });
        if let Some(stats) = last {
            cb(stats);
        }
        if open {
            connect(0);
        }
        id
    }

    pub fn subscribe_directory(cb: DirectoryCallback) -> u64 {
        let (id, connect_now, last) = HUB.with(|h| {
            let mut h = h.borrow_mut();
            h.next_id += 1;
            let id = h.next_id;
            let first = h.directory_subscribers.is_empty();
            h.directory_subscribers.push((id, cb.clone()));
            if first && h.open {
                if let Some(socket) = &h.socket {
                    let _ = socket.send_with_str(&WsRequest::subscribe(WsChannel::Directory).to_json());
                }
            }
            (id, h.socket.is_none(), h.last_directory.clone())
        });
        if let Some(directory) = last {
            cb(directory);
        }
        if connect_now {
            connect(0);
        }
        id
    }

    pub fn unsubscribe(id: u64) {
        HUB.with(|h| {
            let mut h = h.borrow_mut();
            h.subscribers.retain(|(i, _)| *i != id);
            h.directory_subscribers.retain(|(i, _)| *i != id);
        });
    }

    fn publish_directory(directory: Directory) {
        let subscribers: Vec<DirectoryCallback> = HUB.with(|h| {
            let mut h = h.borrow_mut();
            h.last_directory = Some(directory.clone());
            h.directory_subscribers.iter().map(|(_, c)| c.clone()).collect()
        });
        for cb in subscribers {
            cb(directory.clone());
        }
    }

    fn publish(stats: LiveStats) {
        let subscribers: Vec<Callback> = HUB.with(|h| {
            let mut h = h.borrow_mut();
            h.last = Some(stats.clone());
            h.subscribers.iter().map(|(_, c)| c.clone()).collect()
        });
        for cb in subscribers {
            cb(stats.clone());
        }
    }

    fn connect(attempt: u32) {
        let Some(window) = web_sys::window() else { return };
        let location = window.location();
        let proto = if location.protocol().ok().as_deref() == Some("https:") { "wss" } else { "ws" };
        let Ok(host) = location.host() else { return };
        let Ok(socket) = WebSocket::new(&format!("{proto}://{host}/ws")) else { return };
        HUB.with(|h| h.borrow_mut().socket = Some(socket.clone()));

        let s = socket.clone();
        let onopen = Closure::<dyn FnMut()>::new(move || {
            let (channel, directory) = HUB.with(|h| {
                let mut h = h.borrow_mut();
                h.open = true;
                (h.channel.clone(), !h.directory_subscribers.is_empty())
            });
            let _ = s.send_with_str(&WsRequest::subscribe(WsChannel::stats(channel)).to_json());
            if directory {
                let _ = s.send_with_str(&WsRequest::subscribe(WsChannel::Directory).to_json());
            }
        });
        socket.set_onopen(Some(onopen.as_ref().unchecked_ref()));
        onopen.forget();

        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(text) = ev.data().as_string() else { return };
            match WsMessage::parse(&text) {
                Some(WsMessage::StatsUpdate { data }) => publish(data.into_owned()),
                Some(WsMessage::ChannelsUpdate { data }) => publish_directory(data.into_owned()),
                _ => {}
            }
        });
        socket.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        onmessage.forget();

        let onclose = Closure::<dyn FnMut()>::new(move || {
            HUB.with(|h| h.borrow_mut().open = false);
            let delay = (1000 * 2u32.pow(attempt.min(5))).min(30_000);
            let retry = Closure::once_into_js(move || connect(attempt + 1));
            if let Some(w) = web_sys::window() {
                let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(retry.unchecked_ref(), delay as i32);
            }
        });
        socket.set_onclose(Some(onclose.as_ref().unchecked_ref()));
        onclose.forget();
    }
}

#[cfg(feature = "hydrate")]
pub mod devices;
#[cfg(feature = "hydrate")]
pub mod ivs;
pub mod player;
#[cfg(feature = "hydrate")]
pub mod session;
pub mod studio;
#[cfg(feature = "hydrate")]
pub mod webrtc;

/// Copies `text` to the clipboard (best effort).
pub fn copy_text(text: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().clipboard().write_text(text);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = text;
}

/// Puts the element with `id` in fullscreen (or leaves fullscreen).
pub fn toggle_fullscreen(id: &str) {
    #[cfg(feature = "hydrate")]
    {
        let Some(doc) = web_sys::window().and_then(|w| w.document()) else { return };
        if doc.fullscreen_element().is_some() {
            doc.exit_fullscreen();
        } else if let Some(el) = doc.get_element_by_id(id) {
            let _ = el.request_fullscreen();
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = id;
}

/// Posts `fields` as a form to `url` with `navigator.sendBeacon`, which survives page unload.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub fn send_beacon(url: &str, fields: &[(&str, &str)]) {
    #[cfg(feature = "hydrate")]
    {
        let Some(w) = web_sys::window() else { return };
        let Ok(params) = web_sys::UrlSearchParams::new() else { return };
        for (k, v) in fields {
            params.append(k, v);
        }
        let _ = w.navigator().send_beacon_with_opt_url_search_params(url, Some(&params));
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (url, fields);
}
