use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

async fn heartbeat(app: &TestApp, user: &str, stage: &str) -> Resp {
    app.post("/api/viewer/heartbeat", json!({ "userId": user, "stageArn": stage })).await
}

#[tokio::test]
async fn the_sweep_drops_silent_viewers_and_closes_at_the_last_heartbeat() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    app.join("quiet").await.assert_ok();
    app.join("chatty").await.assert_ok();
    app.advance_secs(30);
    heartbeat(&app, "quiet", &master).await.assert_ok();
    heartbeat(&app, "chatty", &master).await.assert_ok();
    app.advance_secs(30);
    heartbeat(&app, "chatty", &master).await.assert_ok();
    app.advance_secs(31); // quiet: 61 s since its last beat; chatty: 31 s
    assert_eq!(app.service.presence().sweep().await.unwrap(), 1);

    let stats = app.get("/api/stats").await;
    assert_eq!(stats.assert_ok()["totalViewers"], 1);
    let h = app.get("/api/viewer/history/quiet").await;
    let rec = &h.assert_ok()["history"][0];
    assert_eq!(rec["watchDurationSeconds"], 30, "closed at the last heartbeat, not at sweep time");
    heartbeat(&app, "quiet", &master).await.assert_error(404, "NOT_FOUND");
    heartbeat(&app, "chatty", &master).await.assert_ok();
}

#[tokio::test]
async fn a_viewer_at_exactly_the_timeout_is_kept() {
    let app = spawn_app().await;
    app.go_live().await;
    app.join("v").await.assert_ok();
    app.advance_secs(60);
    assert_eq!(app.service.presence().sweep().await.unwrap(), 0);
    app.advance_secs(1);
    assert_eq!(app.service.presence().sweep().await.unwrap(), 1);
}

#[tokio::test]
async fn restart_closes_sessions_of_viewers_gone_meanwhile_and_keeps_the_rest() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    app.join("gone").await.assert_ok();
    app.join("stays").await.assert_ok();
    app.advance_secs(10);
    heartbeat(&app, "gone", &master).await.assert_ok();
    app.advance_secs(40);
    heartbeat(&app, "stays", &master).await.assert_ok();
    // crash-free restart 30 s later: "gone" has been silent 70 s, "stays" 30 s
    let app = app.restart(30).await;
    let h = app.get("/api/viewer/history/gone").await;
    assert_eq!(h.assert_ok()["history"][0]["watchDurationSeconds"], 10);
    let h = app.get("/api/viewer/history/stays").await;
    assert!(h.assert_ok()["history"][0]["leftAt"].is_null());
    heartbeat(&app, "stays", &app.master_arn().await).await.assert_ok();
    assert_eq!(app.get("/api/stats/viewers").await.assert_ok()["totalViewers"], 1);
}

#[tokio::test]
async fn batched_heartbeats_reach_the_database_within_a_second() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    app.join("v").await.assert_ok();
    app.advance_secs(20);
    let expected = {
        use livestage::server::clock::Clock;
        app.clock.now_ms()
    };
    heartbeat(&app, "v", &master).await.assert_ok();
    let store = app.service.store().clone();
    let m = master.clone();
    let durable = eventually(Duration::from_secs(1), || {
        let store = store.clone();
        let m = m.clone();
        async move { store.presence().get(&m, "v").await.unwrap().is_some_and(|p| p.last_heartbeat.as_millis() == expected) }
    })
    .await;
    assert!(durable, "heartbeat not written within 1 s");
}

#[tokio::test]
async fn a_viewer_is_counted_once_per_stage() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    for _ in 0..5 {
        app.join("same").await.assert_ok();
    }
    let pid = app.join("same").await.assert_ok()["participantId"].as_str().unwrap().to_string();
    app.post("/api/viewer/rejoin", json!({ "userId": "same", "stageArn": master, "participantId": pid })).await.assert_ok();
    assert_eq!(app.get("/api/stats").await.assert_ok()["totalViewers"], 1);
    assert_eq!(app.get("/api/viewer/history/same").await.assert_ok()["totalRecords"], 1);
}

#[tokio::test]
async fn concurrent_joins_never_exceed_capacity() {
    let app = spawn_app_with(|s| {
        s.stage.max_viewers_per_stage = 10;
        s.stage.scale_up_threshold = 10;
    })
    .await;
    app.go_live().await;
    let app = &app;
    let joins = (0..25).map(|i| async move { app.join(&format!("v{i}")).await.status.as_u16() });
    let results = futures_util::future::join_all(joins).await;
    let ok = results.iter().filter(|s| **s == 200).count();
    let full = results.iter().filter(|s| **s == 503).count();
    assert_eq!((ok, full), (10, 15));
    assert_eq!(app.get("/api/stats").await.assert_ok()["totalViewers"], 10);
}
