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
        format!("livestage_viewers{{stage=\"{arn}\"}} 1"),
        "livestage_publisher_live 1".to_string(),
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
