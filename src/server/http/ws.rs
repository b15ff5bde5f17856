//! `/ws`: live stats for subscribed clients. Each connection reads the hub's `watch` channel of
//! the one broadcast channel it subscribed to (`stats` or `stats:NAME`; a new subscription
//! replaces the old) and, if it asked for it, the directory's (`channels`), so a slow client
//! only ever skips to the newest snapshot and never holds anyone up.

use super::client::Client;
use super::AppState;
use crate::api::ws::{WsAction, WsChannel, WsError, WsErrorCode, WsMessage, WsRequest};
use crate::api::{Directory, LiveStats};
use crate::server::error::AppError;
use crate::server::time::iso_now;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};

const PUSH_EVERY: Duration = Duration::from_secs(5);
const PING_EVERY: Duration = Duration::from_secs(20);
const IDLE_LIMIT: Duration = Duration::from_secs(60);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_MESSAGE: usize = 4096;

pub async fn ws_handler(State(state): State<AppState>, client: Client, upgrade: WebSocketUpgrade) -> Response {
    // A client holds a few sockets (a tab each), not the server's file descriptors.
    let Some(place) = state.guards.websockets.take(client.key) else {
        return AppError::RateLimited { retry_after_secs: 60 }.into_response();
    };
    // Messages are small both ways; small buffers keep tens of thousands of sockets cheap.
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            serve(state, socket).await;
            drop(place);
        })
}

fn message(m: &WsMessage<'_>) -> Message {
    Message::Text(Utf8Bytes::from(m.to_json()))
}

fn stats_message(stats: &LiveStats) -> Message {
    message(&WsMessage::StatsUpdate { data: Cow::Borrowed(stats) })
}

/// The `stats_update` of each channel's newest snapshot, encoded once for all its
/// subscribers (each holds the same `Arc` from the hub's watch channel).
fn shared_stats_message(snapshot: &Arc<LiveStats>) -> Message {
    type Encoded = std::sync::Mutex<std::collections::HashMap<String, (Arc<LiveStats>, Utf8Bytes)>>;
    static ENCODED: std::sync::OnceLock<Encoded> = std::sync::OnceLock::new();
    let encoded = ENCODED.get_or_init(Default::default);
    let mut encoded = encoded.lock().unwrap_or_else(|e| e.into_inner());
    let key = snapshot.channel.as_str();
    if let Some((arc, bytes)) = encoded.get(key) {
        if Arc::ptr_eq(arc, snapshot) {
            return Message::Text(bytes.clone());
        }
    }
    let bytes = Utf8Bytes::from(WsMessage::StatsUpdate { data: Cow::Borrowed(&**snapshot) }.to_json());
    if encoded.len() > 10_000 {
        encoded.clear();
    }
    encoded.insert(key.to_string(), (snapshot.clone(), bytes.clone()));
    Message::Text(bytes)
}

async fn serve(state: AppState, socket: WebSocket) {
    let hub = state.service.hub();
    // The subscribed channel's snapshots; `None` while not subscribed.
    let mut stats: Option<tokio::sync::watch::Receiver<Arc<LiveStats>>> = None;
    // The directory's; `None` while not subscribed to it.
    let mut directory: Option<tokio::sync::watch::Receiver<Arc<Directory>>> = None;
    let (mut tx, mut rx) = socket.split();
    let mut push = interval(PUSH_EVERY);
    push.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ping = interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut shutdown = state.shutdown.clone();

    loop {
        let outgoing: Option<Message> = tokio::select! {
            incoming = rx.next() => {
                let Some(Ok(msg)) = incoming else { break };
                last_seen = Instant::now();
                match msg {
                    Message::Text(text) => match WsRequest::parse(text.as_str()) {
                        Ok(WsRequest { action: WsAction::Subscribe, channel: WsChannel::Directory }) => {
                            let reply = message(&WsMessage::Subscribed { channel: WsChannel::Directory, timestamp: iso_now() });
                            if timeout(SEND_TIMEOUT, tx.send(reply)).await.map_or(true, |r| r.is_err()) {
                                break;
                            }
                            let mut rx = hub.subscribe_directory();
                            rx.mark_changed();
                            directory = Some(rx);
                            None
                        }
                        Ok(WsRequest { action: WsAction::Subscribe, channel: WsChannel::Stats(of) }) => match hub.subscribe(&of) {
                            Some(mut rx) => {
                                if stats.is_none() {
                                    hub.subscriber_joined();
                                }
                                let reply = message(&WsMessage::Subscribed { channel: WsChannel::Stats(of), timestamp: iso_now() });
                                if timeout(SEND_TIMEOUT, tx.send(reply)).await.map_or(true, |r| r.is_err()) {
                                    break;
                                }
                                rx.mark_changed();
                                stats = Some(rx);
                                None
                            }
                            None => Some(message(&WsMessage::Error {
                                error: WsError::new(WsErrorCode::UnknownChannel, format!("No channel named {:?}", of.as_str())),
                            })),
                        },
                        Ok(WsRequest { action: WsAction::Unsubscribe, channel: WsChannel::Directory }) => {
                            directory = None;
                            Some(message(&WsMessage::Unsubscribed { channel: WsChannel::Directory, timestamp: iso_now() }))
                        }
                        Ok(WsRequest { action: WsAction::Unsubscribe, channel }) => {
                            if stats.take().is_some() {
                                hub.subscriber_left();
                            }
                            Some(message(&WsMessage::Unsubscribed { channel, timestamp: iso_now() }))
                        }
                        Ok(WsRequest { action: WsAction::Ping, .. }) => Some(message(&WsMessage::Pong { timestamp: iso_now() })),
                        Err(error) => Some(message(&WsMessage::Error { error })),
                    },
                    Message::Binary(_) => Some(message(&WsMessage::Error {
                        error: WsError::new(WsErrorCode::InvalidMessage, "Binary messages are not supported"),
                    })),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => None,
                }
            }
            changed = async { stats.as_mut()?.changed().await.ok() }, if stats.is_some() => {
                let Some(()) = changed else {
                    // The channel was deleted: its figures end.
                    stats = None;
                    hub.subscriber_left();
                    continue;
                };
                push.reset();
                let snapshot: Arc<LiveStats> = stats.as_mut().map(|rx| rx.borrow_and_update().clone()).unwrap_or_default();
                Some(shared_stats_message(&snapshot))
            }
            changed = async { directory.as_mut()?.changed().await.ok() }, if directory.is_some() => {
                let Some(()) = changed else {
                    directory = None;
                    continue;
                };
                let listing: Arc<Directory> = directory.as_mut().map(|rx| rx.borrow_and_update().clone()).unwrap_or_default();
                Some(message(&WsMessage::ChannelsUpdate { data: Cow::Borrowed(&listing) }))
            }
            _ = push.tick(), if stats.is_some() => {
                let mut snapshot = stats.as_mut().map(|rx| (*rx.borrow_and_update().clone()).clone()).unwrap_or_default();
                snapshot.timestamp = iso_now();
                Some(stats_message(&snapshot))
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                let _ = timeout(Duration::from_secs(1), tx.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1001,
                    reason: Utf8Bytes::from_static("server shutting down"),
                })))).await;
                break;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > IDLE_LIMIT {
                    break;
                }
                Some(Message::Ping(Default::default()))
            }
        };
        if let Some(msg) = outgoing {
            if timeout(SEND_TIMEOUT, tx.send(msg)).await.map_or(true, |r| r.is_err()) {
                break;
            }
        }
    }
    if stats.is_some() {
        hub.subscriber_left();
    }
}
