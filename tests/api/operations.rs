//! Operations endpoints: Prometheus metrics, liveness and readiness.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

async fn metrics(app: &TestApp) -> String {
    let r = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_viewers_heartbeats_and_requests() {
    let app = spawn_app().await;
    app.go_live().await;
    let arn = app.master_arn().await;
    app.join("m1").await.assert_ok();
    app.post("/api/viewer/heartbeat", json!({ "userId": "m1", "stageArn": arn })).await.assert_ok();
    app.post("/api/viewer/heartbeat", json!({ "userId": "nobody", "stageArn": arn })).await.assert_error(404, "NOT_FOUND");

    assert!(
        eventually(Duration::from_secs(3), || async { metrics(&app).await.contains("livestage_viewers_total 1\n") }).await,
        "viewer gauge follows the stats"
    );
    let text = metrics(&app).await;
    for line in [
        format!("livestage_viewers{{stage=\"{arn}\",channel=\"default\"}} 1"),
        "livestage_publisher_live{channel=\"default\"} 1".to_string(),
        "livestage_leader 1".to_string(),
        "livestage_heartbeats_total 1".to_string(),
        "livestage_http_requests_total{method=\"POST\",route=\"/api/viewer/heartbeat\",status=\"200\"} 1".to_string(),
        "livestage_http_requests_total{method=\"POST\",route=\"/api/viewer/heartbeat\",status=\"404\"} 1".to_string(),
        "livestage_http_request_duration_seconds_count{method=\"POST\",route=\"/api/viewer/heartbeat\"} 2".to_string(),
        "livestage_media_sessions{role=\"viewer\"} 0".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // route patterns, never raw paths with ids in them
    app.get(&format!("/api/viewer/list/{arn}")).await.assert_ok();
    let text = metrics(&app).await;
    assert!(text.contains("route=\"/api/viewer/list/{*stage_arn}\""), "{text}");
    assert!(!text.contains(&format!("route=\"/api/viewer/list/{arn}\"")));
}

#[tokio::test]
async fn liveness_and_readiness() {
    let mut app = spawn_app().await;
    let live = app.client.get(format!("{}/live", app.base)).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // a closed database: alive but not ready
    app.service.store().close().await;
    let ready = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    let live = app.client.get(format!("{}/live", app.base)).send().await.unwrap();
    assert_eq!(live.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn sigterm_drains_writes_pending_heartbeats_closes_websockets_and_exits_cleanly() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let db = TestDb::new().await;
    // Heartbeats are written every 10 minutes: only the final flush can write the one below.
    let mut server = start_process(&db, &[("HEARTBEAT_FLUSH_MS", "600000")]).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let store = livestage::server::store::Store::connect(&test_settings(server.dir(), &db).database_url()).await.unwrap();

    let feed = publish_audio(&client, &server.base).await;
    let joined = join_when_live(&client, &server.base, "v").await;
    let stage = joined["stageArn"].as_str().unwrap().to_string();
    let at_join = store.presence().get(&stage, "v").await.unwrap().expect("joined").last_heartbeat.as_millis();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let beat = json!({ "userId": "v", "stageArn": stage });
    let r = client.post(format!("{}/api/viewer/heartbeat", server.base)).header("x-api-key", API_KEY).json(&beat).send().await;
    assert_eq!(r.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.presence().get(&stage, "v").await.unwrap().unwrap().last_heartbeat.as_millis(),
        at_join,
        "the beat is still pending"
    );

    let url = format!("{}/ws", server.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connects");

    server.terminate();
    // The WebSocket is closed with 1001 "going away".
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame after SIGTERM: {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    let status = server.exited_within(Duration::from_secs(15)).await.expect("the server exits within 15 s of SIGTERM");
    feed.abort();
    assert!(status.success(), "exit status {status:?}; log:\n{}", server.log());
    // It no longer accepts connections.
    assert!(client.get(format!("{}/live", server.base)).send().await.is_err());
    // The pending heartbeat was written on the way out.
    let last = store.presence().get(&stage, "v").await.unwrap().expect("still present").last_heartbeat.as_millis();
    assert!(last >= at_join + 1100, "last durable heartbeat {last}, joined at {at_join}: the pending beat was lost");
    store.close().await;
}

async fn write_transactions(app: &TestApp) -> u64 {
    let text = metrics(app).await;
    let line = text.lines().find_map(|l| l.strip_prefix("livestage_db_write_transactions_total ")).expect("write metric");
    line.parse().unwrap()
}

#[tokio::test]
async fn heartbeat_writes_grow_with_flushes_not_viewers() {
    let app = spawn_app_with(|s| {
        s.presence.heartbeat_flush_ms = 600_000; // the test flushes
        s.presence.sweep_interval_secs = 3600;
    })
    .await;
    app.go_live().await;
    let master = app.master_arn().await;
    const VIEWERS: usize = 20;
    for i in 0..VIEWERS {
        app.join(&format!("w{i}")).await.assert_ok();
    }
    for round in 1..=2 {
        app.advance_secs(30);
        let before = write_transactions(&app).await;
        for i in 0..VIEWERS {
            app.post("/api/viewer/heartbeat", json!({ "userId": format!("w{i}"), "stageArn": master })).await.assert_ok();
        }
        assert_eq!(write_transactions(&app).await, before, "round {round}: heartbeats alone write nothing");
        assert_eq!(app.service.presence().flush().await.unwrap(), VIEWERS);
        assert_eq!(write_transactions(&app).await, before + 1, "round {round}: {VIEWERS} heartbeats, one write");
    }
}
