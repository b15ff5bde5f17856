use crate::helpers::*;
use livestage::domain::autoscale::ScaleDecision;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn scales_up_with_replication_then_down_after_warmup() {
    let app = spawn_app_with(small_stages).await;
    app.go_live().await;
    let master = app.master_arn().await;
    for u in ["a", "b"] {
        app.join(u).await.assert_ok();
    }
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::Hold);
    app.join("c").await.assert_ok();
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::ScaleUp);

    let list = app.get("/api/stage/list").await;
    let stages = list.assert_ok()["stages"].as_array().unwrap().clone();
    assert_eq!(stages.len(), 2);
    let auto = stages.iter().find(|s| s["autoScaled"] == true).expect("an auto-scaled stage");
    let auto_arn = auto["stageArn"].as_str().unwrap().to_string();
    assert_eq!(auto["tags"]["AutoScaled"], "true");
    // the publisher is replicated into the new stage
    let rep = app.get(&format!("/api/stage/replication/status/{}", enc(&auto_arn))).await;
    let rep = rep.assert_ok();
    assert_eq!(rep["hasReplication"], true);
    assert_eq!(rep["replicationInfo"]["sourceStageArn"], master.as_str());
    assert_eq!(rep["replicationInfo"]["participantId"], "pub123");

    // new viewers now go to the least-loaded stage
    let d = app.join("d").await;
    assert_eq!(d.assert_ok()["stageArn"], auto_arn.as_str());

    // the crowd leaves; the auto stage is removed only after its warm-up
    for u in ["a", "b", "c"] {
        app.post("/api/viewer/leave", json!({ "userId": u, "stageArn": master })).await.assert_ok();
    }
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::Hold);
    app.advance_secs(301);
    assert_eq!(
        app.service.autoscaler().step(&ChannelId::default()).await.unwrap(),
        ScaleDecision::ScaleDown(auto_arn.parse_arn())
    );
    let list = app.get("/api/stage/list").await;
    assert_eq!(list.assert_ok()["totalStages"], 1);
    // the evicted viewer's session was closed and its heartbeat now asks it to rejoin
    let h = app.get("/api/viewer/history/d").await;
    assert!(!h.assert_ok()["history"][0]["leftAt"].is_null());
    app.post("/api/viewer/heartbeat", json!({ "userId": "d", "stageArn": auto_arn })).await.assert_error(404, "NOT_FOUND");
    app.get(&format!("/api/stage/replication/status/{}", enc(&auto_arn))).await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn never_more_than_max_stages() {
    let app = spawn_app_with(|s| {
        small_stages(s);
        s.stage.max_stages = 2;
    })
    .await;
    app.go_live().await;
    for i in 0..8 {
        app.join(&format!("v{i}")).await.assert_ok();
        let _ = app.service.autoscaler().step(&ChannelId::default()).await.unwrap();
    }
    assert_eq!(app.get("/api/stage/list").await.assert_ok()["totalStages"], 2);
}

#[tokio::test]
async fn the_background_job_reacts_to_a_crowded_stage() {
    let app = spawn_app_with(|s| {
        small_stages(s);
        s.stage.autoscale = true;
        s.stage.autoscale_interval_secs = 3600;
    })
    .await;
    app.go_live().await;
    for u in ["a", "b", "c", "d"] {
        app.join(u).await.assert_ok();
    }
    let scaled =
        eventually(Duration::from_secs(3), || async { app.get("/api/stage/list").await.data()["totalStages"] == 2 }).await;
    assert!(scaled, "a stage crossing its threshold wakes the auto-scaler");
}

/// Which stages were auto-scaled, and when, is kept in the database: a restarted server
/// removes the stage its predecessor created once the warm-up is over.
#[tokio::test]
async fn an_auto_scaled_stage_is_scaled_down_after_a_restart() {
    let app = spawn_app_with(small_stages).await;
    app.go_live().await;
    let master = app.master_arn().await;
    for u in ["a", "b", "c"] {
        app.join(u).await.assert_ok();
    }
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::ScaleUp);
    let stages = app.get("/api/stage/list").await.assert_ok()["stages"].as_array().unwrap().clone();
    let auto_arn =
        stages.iter().find(|s| s["autoScaled"] == true).expect("an auto-scaled stage")["stageArn"].as_str().unwrap().to_string();
    for u in ["a", "b", "c"] {
        app.post("/api/viewer/leave", json!({ "userId": u, "stageArn": master })).await.assert_ok();
    }
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::Hold, "still warming up");

    let app = app.restart(100).await;
    let listed = app.get("/api/stage/list").await.assert_ok()["stages"].clone();
    let auto = listed.as_array().unwrap().iter().find(|s| s["stageArn"] == auto_arn.as_str()).expect("still listed");
    assert_eq!(auto["autoScaled"], true);
    assert_eq!(
        app.service.autoscaler().step(&ChannelId::default()).await.unwrap(),
        ScaleDecision::Hold,
        "100 s is within the warm-up"
    );
    app.advance_secs(201); // 301 s since it was created
    assert_eq!(
        app.service.autoscaler().step(&ChannelId::default()).await.unwrap(),
        ScaleDecision::ScaleDown(auto_arn.parse_arn())
    );
    assert_eq!(app.get("/api/stage/list").await.assert_ok()["totalStages"], 1);
    app.get(&format!("/api/stage/replication/status/{}", enc(&auto_arn))).await.assert_error(404, "NOT_FOUND");
}

trait ParseArn {
    fn parse_arn(&self) -> livestage::domain::StageArn;
}
impl ParseArn for String {
    fn parse_arn(&self) -> livestage::domain::StageArn {
        livestage::domain::StageArn::parse(self.clone()).unwrap()
    }
}
