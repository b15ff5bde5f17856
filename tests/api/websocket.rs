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

/// Nothing arrives for `span` and the connection stays open: a push, a close or an error fails.
pub(crate) async fn assert_silent(ws: &mut Ws, span: Duration) {
    let deadline = tokio::time::Instant::now() + span;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break, // quiet for the whole span
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => panic!("expected nothing, got {m:?}"),
            Ok(Some(Err(e))) => panic!("the connection failed: {e}"),
            Ok(None) => panic!("the server closed the connection"),
        }
    }
    pong(ws, false).await;
}

/// The connection is still open: a contract `ping` gets its `pong` (stats pushed meanwhile to
/// a subscribed client are skipped).
pub(crate) async fn assert_open(ws: &mut Ws) {
    pong(ws, true).await
}

async fn pong(ws: &mut Ws, skip_stats: bool) {
    send(ws, json!({ "action": "ping" })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no pong within 2 s"),
            Ok(Some(Ok(Message::Text(t)))) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap_or_else(|_| panic!("not JSON: {t}"));
                if skip_stats && m["type"] == "stats_update" {
                    continue;
                }
                assert_eq!(m["type"], "pong", "expected the pong, got {m}");
                assert_iso(&m["timestamp"]);
                return;
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("the connection is not open: {other:?}"),
        }
    }
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
    assert_silent(&mut ws, Duration::from_millis(700)).await;
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    next_json(&mut ws, Duration::from_secs(2)).await.expect("stats");
    send(&mut ws, json!({ "action": "unsubscribe", "channel": "stats" })).await;
    let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("unsubscribed");
    assert_eq!(m["type"], "unsubscribed");
    app.join("a").await.assert_ok();
    assert_silent(&mut ws, Duration::from_millis(1200)).await;
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
async fn ping_gets_pong() {
    let app = spawn_app().await;
    let mut ws = connect(&app).await;
    // The contract's keepalive message…
    send(&mut ws, json!({ "action": "ping" })).await;
    let m = next_json(&mut ws, Duration::from_secs(2)).await.expect("pong");
    assert_eq!(m["type"], "pong");
    assert_iso(&m["timestamp"]);
    // …and WebSocket ping frames, answered with their payload.
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Pong(payload)))) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            Err(_) => panic!("no pong frame within 2 s"),
            Ok(other) => panic!("expected a pong frame, got {other:?}"),
        }
    }
    assert_open(&mut ws).await;
}

/// A client whose socket receives into a few KiB in small segments (which also keeps the
/// server's send buffer for it small): once it stops reading, the server's writes to it stall
/// after a handful of messages.
async fn connect_with_small_receive_buffer(app: &TestApp) -> Ws {
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket2::SockRef::from(&socket).set_tcp_mss(536).unwrap();
    let stream = socket.connect(addr).await.expect("tcp connects");
    let url = format!("ws://{addr}/ws");
    tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.expect("ws connects").0
}

fn total_viewers(msg: &Message) -> Option<u64> {
    let Message::Text(t) = msg else { return None };
    let m: Value = serde_json::from_str(t.as_str()).ok()?;
    (m["type"] == "stats_update").then(|| m["data"]["totalViewers"].as_u64()).flatten()
}

#[tokio::test]
async fn a_stalled_client_skips_to_the_newest_figures_and_holds_up_no_one() {
    // 200 stages make every snapshot about 17 KB; 60 distinct ones are 1 MB in all, far more
    // than the stalled client's socket buffers can hold.
    const STAGES: u32 = 200;
    const SNAPSHOTS: u64 = 60;
    let app = spawn_app_with(|s| s.stage.max_stages = STAGES + 1).await;
    for i in 0..STAGES {
        let r = app.post("/api/stage", json!({ "name": format!("extra-{i}") })).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    app.go_live().await;

    // A client that subscribes and then never reads.
    let mut stalled = connect_with_small_receive_buffer(&app).await;
    send(&mut stalled, json!({ "action": "subscribe", "channel": "stats" })).await;
    // A client that reads everything, noting when each figure arrived.
    let mut ws = connect(&app).await;
    send(&mut ws, json!({ "action": "subscribe", "channel": "stats" })).await;
    next_json(&mut ws, Duration::from_secs(2)).await.expect("subscribed");
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, u64)>::new()));
    let log = arrivals.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            if let Some(n) = total_viewers(&msg) {
                log.lock().unwrap().push((Instant::now(), n));
            }
        }
    });

    // Publish distinct snapshots (1, 2, … viewers) one after another.
    let started = Instant::now();
    let mut published = Vec::new();
    for i in 1..=SNAPSHOTS {
        app.join(&format!("v{i}")).await.assert_ok();
        app.service.stats().refresh().await.unwrap();
        published.push((i, Instant::now()));
    }
    let stall = started.elapsed();
    // (a) The reading client got every figure, or a newer one, within a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let seen = arrivals.lock().unwrap();
        for (n, at) in &published {
            let got = seen.iter().find(|(_, m)| m >= n).map(|(when, _)| when.saturating_duration_since(*at));
            assert!(
                got.is_some_and(|late| late < Duration::from_secs(1)),
                "the reading client saw {n} viewers {got:?} after it was published ({} figures seen)",
                seen.len()
            );
        }
    }
    reader.abort();

    // (b) Now the stalled client reads: what its buffers held, then straight to the newest.
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stalled.next()).await {
            Err(_) => break, // quiet: caught up
            Ok(Some(Ok(msg))) => received.extend(total_viewers(&msg)),
            Ok(other) => {
                panic!("the stalled client lost its connection: {other:?} (stalled {stall:?})")
            }
        }
        assert!(received.len() <= SNAPSHOTS as usize + 10, "more updates than were published");
    }
    eprintln!("stalled client received {} of {SNAPSHOTS} snapshots after {stall:?}: {received:?}", received.len());
    assert_eq!(received.last(), Some(&SNAPSHOTS), "the last update is the newest: {received:?}");
    assert!(
        received.len() < SNAPSHOTS as usize / 4,
        "the stalled client was sent {} of {SNAPSHOTS} snapshots instead of skipping to the newest",
        received.len()
    );
    assert_open(&mut stalled).await;
}
