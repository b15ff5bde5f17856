use crate::helpers::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(app: &TestApp) -> Ws {
    let url = format!("{}/ws", app.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url).await.expect("ws connects").0
}

/// The next JSON text message, within `limit`.
pub(crate) async fn next_json(ws: &mut Ws, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

#[tokio::test]
async fn subscribe_with_action_or_type_gets_stats() {
    let app = spawn_app().await;
    for verb in ["action", "type"] {
        let mut ws = connect(&app).await;
        send(&mut ws, json!({ verb: "subscribe", "channel": "stats" })).await;
        let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("reply");
        assert_eq!(m["type"], "subscribed");
        assert_eq!(m["channel"], "stats");
        assert_iso(&m["timestamp"]);
        let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("first stats");
        assert_eq!(m["type"], "stats_update");
        assert_eq!(m["data"]["totalViewers"], 0);
        assert_eq!(m["data"]["activeStages"], 1);
        assert_eq!(m["data"]["isPublisherLive"], false);
        assert_eq!(m["data"]["stages"][0]["viewerCount"], 0);
        assert_iso(&m["data"]["timestamp"]);
    }
}

#[tokio::test]
async fn updates_arrive_within_a_second_of_a_change() {
    let app = spawn_app().await;
    let mut ws = connect(&app).await;
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    next_json(&mut ws, Duration::from_secs(2)).await.expect("initial stats");

    app.go_live().await;
    let started = Instant::now();
    let m = next_json(&mut ws, Duration::from_secs(1)).await.expect("update within 1 s");
    assert_eq!(m["data"]["isPublisherLive"], true);

    app.join("a").await.assert_ok();
    let started2 = Instant::now();
    let mut seen = None;
    while started2.elapsed() < Duration::from_secs(1) {
        match next_json(&mut ws, Duration::from_secs(1)).await {
            Some(m) if m["data"]["totalViewers"] == 1 => {
                seen = Some(m);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let m = seen.expect("viewer count update within 1 s");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(m["data"]["stages"][0]["viewerCount"], 1);
}

#[tokio::test]
async fn updates_repeat_at_least_every_five_seconds() {
    let app = spawn_app().await;
    let mut ws = connect(&app).await;
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    next_json(&mut ws, Duration::from_secs(2)).await.expect("initial stats");
    let m = next_json(&mut ws, Duration::from_millis(5600)).await.expect("periodic update");
    assert_eq!(m["type"], "stats_update");
}

#[tokio::test]
async fn nothing_is_pushed_before_subscribe_or_after_unsubscribe() {
    let app = spawn_app().await;
    let mut ws = connect(&app).await;
    app.go_live().await;
    assert!(next_json(&mut ws, Duration::from_millis(700)).await.is_none());
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    next_json(&mut ws, Duration::from_secs(2)).await.expect("stats");
    send(&mut ws, json!({ "action": "unsubscribe", "channel": "stats" })).await;
    let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("unsubscribed");
    assert_eq!(m["type"], "unsubscribed");
    app.join("a").await.assert_ok();
    assert!(next_json(&mut ws, Duration::from_millis(1200)).await.is_none());
}

#[tokio::test]
async fn bad_messages_get_an_error_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let mut ws = connect(&app).await;
    for (msg, code) in [
        ("not json".to_string(), "INVALID_MESSAGE"),
        (json!({ "channel": "stats" }).to_string(), "INVALID_MESSAGE"),
        (json!({ "action": "fly" }).to_string(), "UNKNOWN_ACTION"),
        (json!({ "action": "subscribe", "channel": "chat" }).to_string(), "UNKNOWN_CHANNEL"),
    ] {
        ws.send(Message::Text(msg.into())).await.unwrap();
        let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("error reply");
        assert_eq!(m["type"], "error");
        assert_eq!(m["error"]["code"], code);
        assert!(m["error"]["message"].as_str().is_some());
    }
    send(&mut ws, json!({ "type": "subscribe", "channel": "stats" })).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(2)).await.unwrap()["type"], "subscribed");
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_up_others() {
    let app = spawn_app().await;
    // A client that subscribes and then never reads.
    let mut stalled = connect(&app).await;
    send(&mut stalled, json!({ "action": "subscribe", "channel": "stats" })).await;
    let mut ws = connect(&app).await;
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    next_json(&mut ws, Duration::from_secs(2)).await.expect("stats");
    app.go_live().await;
    for i in 0..20 {
        app.join(&format!("v{i}")).await.assert_ok();
    }
    let ok = eventually_json(&mut ws, |m| m["data"]["totalViewers"] == 20).await;
    assert!(ok, "the reading client saw the latest count");
    drop(stalled);
}

async fn eventually_json(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match next_json(ws, Duration::from_secs(1)).await {
            Some(m) if pred(&m) => return true,
            Some(_) => {}
            None => {}
        }
    }
    false
}
