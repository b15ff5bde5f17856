use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn heartbeat_needs_a_live_session() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    app.post("/api/viewer/heartbeat", json!({ "userId": "ghost", "stageArn": master })).await.assert_error(404, "NOT_FOUND");
    app.join("v1").await.assert_ok();
    let r = app.post("/api/viewer/heartbeat", json!({ "userId": "v1", "stageArn": master })).await;
    let d = r.assert_ok();
    assert_eq!(d["heartbeatUpdated"], true);
    assert_eq!(d["userId"], "v1");
    assert_eq!(r.body["message"], "heartbeat updated");
}

#[tokio::test]
async fn leave_is_idempotent_and_closes_the_session_with_its_real_duration() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    app.join("v1").await.assert_ok();
    app.advance_secs(95);
    let body = json!({ "userId": "v1", "stageArn": master });
    let r = app.post("/api/viewer/leave", body.clone()).await;
    assert_eq!(r.assert_ok()["viewerLeft"], true);
    app.post("/api/viewer/leave", body.clone()).await.assert_ok();
    let h = app.get("/api/viewer/history/v1").await;
    let hist = &h.assert_ok()["history"];
    assert_eq!(hist.as_array().unwrap().len(), 1);
    assert_eq!(hist[0]["watchDurationSeconds"], 95);
    assert_iso(&hist[0]["leftAt"]);
    assert_eq!(app.get("/api/stats").await.assert_ok()["totalViewers"], 0);
    app.post("/api/viewer/heartbeat", body).await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn rejoin_reuses_an_open_session_and_opens_one_after_leave() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    let pid = app.join("v1").await.assert_ok()["participantId"].as_str().unwrap().to_string();
    let body = json!({ "userId": "v1", "stageArn": master, "participantId": pid });
    let r = app.post("/api/viewer/rejoin", body.clone()).await;
    let d = r.assert_ok();
    assert_eq!(d["isNewViewer"], false);
    assert_eq!(d["currentViewers"], 1);
    assert_eq!(d["participantId"], pid.as_str());
    assert_eq!(app.get("/api/viewer/history/v1").await.assert_ok()["totalRecords"], 1);

    app.post("/api/viewer/leave", json!({ "userId": "v1", "stageArn": master })).await.assert_ok();
    app.advance_secs(1);
    let r = app.post("/api/viewer/rejoin", body).await;
    assert_eq!(r.assert_ok()["isNewViewer"], true);
    let h = app.get("/api/viewer/history/v1").await;
    let d = h.assert_ok();
    assert_eq!(d["totalRecords"], 2);
    assert!(d["history"][0]["leftAt"].is_null(), "newest first, still open");
    assert!(!d["history"][1]["leftAt"].is_null());
}

#[tokio::test]
async fn viewer_list_shows_present_viewers() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    app.join("a").await.assert_ok();
    app.join("b").await.assert_ok();
    let r = app.get(&format!("/api/viewer/list/{}", enc(&master))).await;
    let d = r.assert_ok();
    assert_eq!(d["totalViewers"], 2);
    assert_eq!(d["activeViewers"], 2);
    let viewers = d["viewers"].as_array().unwrap();
    let ids: Vec<&str> = viewers.iter().map(|v| v["userId"].as_str().unwrap()).collect();
    assert!(ids.contains(&"a") && ids.contains(&"b"));
    for v in viewers {
        assert!(v["participantId"].as_str().is_some());
        assert_iso(&v["joinedAt"]);
        assert_iso(&v["lastHeartbeat"]);
    }
    // the raw (unencoded) ARN path works too
    assert_eq!(app.get(&format!("/api/viewer/list/{master}")).await.assert_ok()["totalViewers"], 2);
}

#[tokio::test]
async fn duration_and_stage_stats() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    app.join("a").await.assert_ok();
    app.join("b").await.assert_ok();
    app.advance_secs(125);
    let r = app.get(&format!("/api/viewer/duration?userId=a&stageArn={}", enc(&master))).await;
    let d = r.assert_ok();
    assert_eq!(d["watchDurationSeconds"], 125);
    assert_eq!(d["watchDurationFormatted"], "2m 5s");
    app.post("/api/viewer/leave", json!({ "userId": "a", "stageArn": master })).await.assert_ok();
    app.advance_secs(60);
    app.post("/api/viewer/leave", json!({ "userId": "b", "stageArn": master })).await.assert_ok();
    app.join("a").await.assert_ok();

    let r = app.get(&format!("/api/viewer/stats/{}?days=7", enc(&master))).await;
    let d = r.assert_ok();
    assert_eq!(d["days"], 7);
    let s = &d["stats"];
    assert_eq!(s["totalViews"], 3);
    assert_eq!(s["uniqueViewers"], 2);
    assert_eq!(s["maxWatchDuration"], 185);
    assert_eq!(s["totalWatchTime"], 125 + 185);
    assert_eq!(s["avgWatchDuration"], 155);
    // a user with no session on that stage
    let r = app.get(&format!("/api/viewer/duration?userId=zed&stageArn={}", enc(&master))).await;
    assert_eq!(r.assert_ok()["watchDurationFormatted"], "0m 0s");
}

#[tokio::test]
async fn history_is_newest_first_and_limited() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    for _ in 0..3 {
        app.join("v").await.assert_ok();
        app.advance_secs(10);
        app.post("/api/viewer/leave", json!({ "userId": "v", "stageArn": master })).await.assert_ok();
        app.advance_secs(10);
    }
    let d = app.get("/api/viewer/history/v?limit=2").await.assert_ok().clone();
    assert_eq!(d["totalRecords"], 2);
    let h = d["history"].as_array().unwrap();
    assert!(h[0]["joinedAt"].as_str() > h[1]["joinedAt"].as_str());
    assert_eq!(h[0]["userId"], "v");
    assert_eq!(h[0]["stageArn"], master.as_str());
    assert_eq!(app.get("/api/viewer/history/v").await.assert_ok()["totalRecords"], 3);
    app.get("/api/viewer/history/v?limit=0").await.assert_error(400, "VALIDATION_ERROR");
    app.get("/api/viewer/history/v?limit=abc").await.assert_error(400, "VALIDATION_ERROR");
    app.get("/api/viewer/history/nobody").await.assert_ok();
}

/// `days` defaults to 7, and only sessions of the last `days` days count.
#[tokio::test]
async fn stage_stats_cover_the_last_seven_days_by_default() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    let watch = |user: &'static str, secs: i64| {
        let app = &app;
        let master = master.clone();
        async move {
            app.join(user).await.assert_ok();
            app.advance_secs(secs);
            app.post("/api/viewer/leave", json!({ "userId": user, "stageArn": master })).await.assert_ok();
        }
    };
    watch("old", 30).await; // 8 days before the query
    app.advance_secs(86_400);
    watch("week", 20).await; // 7 days before the query, less 50 s
    app.advance_secs(7 * 86_400 - 60);
    watch("new", 10).await;

    let stats = |query: &'static str| {
        let app = &app;
        let path = format!("/api/viewer/stats/{}{query}", enc(&master));
        async move { app.get(&path).await.assert_ok().clone() }
    };
    let d = stats("").await;
    assert_eq!(d["days"], 7);
    assert_eq!(d["stats"]["totalViews"], 2, "{d}");
    assert_eq!(d["stats"]["uniqueViewers"], 2);
    assert_eq!(d["stats"]["maxWatchDuration"], 20);
    assert_eq!(d["stats"]["totalWatchTime"], 30);
    let d = stats("?days=1").await;
    assert_eq!(d["days"], 1);
    assert_eq!((d["stats"]["totalViews"].clone(), d["stats"]["totalWatchTime"].clone()), (json!(1), json!(10)));
    let d = stats("?days=9").await;
    assert_eq!((d["stats"]["totalViews"].clone(), d["stats"]["totalWatchTime"].clone()), (json!(3), json!(60)));
}

/// `limit` defaults to 10: the ten newest of twelve sessions.
#[tokio::test]
async fn history_returns_ten_records_by_default() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    let mut joined = Vec::new();
    for _ in 0..12 {
        joined.push(app.join("v").await.assert_ok()["participantId"].as_str().unwrap().to_string());
        app.advance_secs(5);
        app.post("/api/viewer/leave", json!({ "userId": "v", "stageArn": master })).await.assert_ok();
        app.advance_secs(5);
    }
    let d = app.get("/api/viewer/history/v").await.assert_ok().clone();
    assert_eq!(d["totalRecords"], 10);
    let got: Vec<&str> = d["history"].as_array().unwrap().iter().map(|h| h["participantId"].as_str().unwrap()).collect();
    let newest: Vec<&str> = joined.iter().rev().take(10).map(String::as_str).collect();
    assert_eq!(got, newest);
    assert_eq!(app.get("/api/viewer/history/v?limit=12").await.assert_ok()["totalRecords"], 12);
}
