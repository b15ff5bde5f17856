use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn stage_crud() {
    let app = spawn_app().await;
    let r = app.post("/api/stage", json!({ "name": "overflow-1", "tags": { "team": "live" } })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let stage = r.data()["stage"].clone();
    let arn = stage["arn"].as_str().unwrap().to_string();
    assert_eq!(stage["name"], "overflow-1");
    assert_eq!(stage["tags"]["team"], "live");
    assert_eq!(stage["tags"]["ManagedBy"], "livestage");
    assert_eq!(stage["endpoints"]["whip"], format!("{}/whip", app.base));

    let list = app.get("/api/stage/list").await;
    let l = list.assert_ok();
    assert_eq!(l["totalStages"], 2);
    assert!(l["nextToken"].is_null());
    assert!(l["stages"].as_array().unwrap().iter().any(|s| s["stageArn"] == arn.as_str() && s["viewerCount"] == 0));

    let got = app.get(&format!("/api/stage/{}", enc(&arn))).await;
    assert_eq!(got.assert_ok()["stage"]["name"], "overflow-1");
    assert_eq!(got.data()["viewerCount"], 0);
    // unencoded slashes work too
    app.get(&format!("/api/stage/{arn}")).await.assert_ok();

    let put = app.put(&format!("/api/stage/{}", enc(&arn)), json!({ "name": "renamed", "tags": { "x": "y" } })).await;
    let s = &put.assert_ok()["stage"];
    assert_eq!(s["name"], "renamed");
    assert_eq!(s["tags"]["x"], "y");
    assert_eq!(s["tags"]["ManagedBy"], "livestage", "managed-by tag survives updates");

    let del = app.delete(&format!("/api/stage/{}", enc(&arn)), None).await;
    assert_eq!(del.assert_ok()["deleted"], true);
    assert_eq!(del.data()["stageArn"], arn.as_str());
    app.get(&format!("/api/stage/{}", enc(&arn))).await.assert_error(404, "NOT_FOUND");
    app.delete(&format!("/api/stage/{}", enc(&arn)), None).await.assert_error(404, "NOT_FOUND");
    app.put(&format!("/api/stage/{}", enc(&arn)), json!({ "name": "x" })).await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn master_stage_is_protected_and_described() {
    let app = spawn_app().await;
    let r = app.get("/api/stage/master/info").await;
    let d = r.assert_ok();
    assert_eq!(d["isMasterStage"], true);
    assert_eq!(d["viewerCount"], 0);
    let arn = d["stage"]["arn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:ivs:us-east-1:000000000000:stage/"));
    assert!(d["stage"]["endpoints"]["whip"].as_str().unwrap().ends_with("/whip"));
    app.delete(&format!("/api/stage/{}", enc(&arn)), None).await.assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn the_master_stage_is_remembered_across_restarts() {
    let app = spawn_app().await;
    let before = app.master_arn().await;
    let app = app.restart(0).await;
    assert_eq!(app.master_arn().await, before);
    assert_eq!(app.get("/api/stage/list").await.assert_ok()["totalStages"], 1);
}

#[tokio::test]
async fn a_configured_master_stage_arn_is_used() {
    let arn = "arn:aws:ivs:eu-west-1:123456789012:stage/Configured01";
    let app = spawn_app_with(|s| s.stage.master_stage_arn = Some(livestage::domain::StageArn::parse(arn).unwrap())).await;
    assert_eq!(app.master_arn().await, arn);
}

#[tokio::test]
async fn stages_with_viewers_cannot_be_deleted() {
    let app = spawn_app().await;
    app.go_live().await;
    let arn = app.post("/api/stage", json!({ "name": "side" })).await.data()["stage"]["arn"].as_str().unwrap().to_string();
    app.post("/api/token/viewer", json!({ "userId": "v", "stageArn": arn })).await.assert_ok();
    let r = app.delete(&format!("/api/stage/{}", enc(&arn)), None).await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"]["viewerCount"], 1);
}

#[tokio::test]
async fn the_stage_limit_is_enforced() {
    let app = spawn_app_with(|s| s.stage.max_stages = 2).await;
    assert_eq!(app.post("/api/stage", json!({ "name": "two" })).await.status, 201);
    app.post("/api/stage", json!({ "name": "three" })).await.assert_error(503, "STAGE_LIMIT_REACHED");
}

#[tokio::test]
async fn stage_input_is_validated() {
    let app = spawn_app().await;
    app.post("/api/stage", json!({})).await.assert_error(400, "VALIDATION_ERROR");
    let r = app.post("/api/stage", json!({ "name": "has spaces" })).await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"]["invalidFields"], json!(["name"]));
    let r = app.post("/api/stage", json!({ "name": "ok", "tags": { "n": 1 } })).await;
    assert_eq!(r.body["error"]["details"]["invalidFields"], json!(["tags"]));
    let r = app.post("/api/stage", json!({ "name": "ok", "tags": ["a"] })).await;
    assert_eq!(r.body["error"]["details"]["invalidFields"], json!(["tags"]));
    let master = app.master_arn().await;
    app.put(&format!("/api/stage/{}", enc(&master)), json!({})).await.assert_error(400, "VALIDATION_ERROR");
    app.get("/api/stage/not-an-arn").await.assert_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn replication_start_status_stop() {
    let app = spawn_app().await;
    let master = app.master_arn().await;
    let dest = app.post("/api/stage", json!({ "name": "dest" })).await.data()["stage"]["arn"].as_str().unwrap().to_string();
    let body = json!({ "sourceStageArn": master, "destinationStageArn": dest, "participantId": "pub123" });

    let none = app.get(&format!("/api/stage/replication/status/{}", enc(&dest))).await;
    assert_eq!(none.assert_ok()["hasReplication"], false);
    let started = app.post("/api/stage/replication/start", body.clone()).await;
    assert_eq!(started.assert_ok()["destinationStageArn"], dest.as_str());
    assert_iso(&started.data()["startedAt"]);
    let status = app.get(&format!("/api/stage/replication/status/{}", enc(&dest))).await;
    let s = status.assert_ok();
    assert_eq!(s["hasReplication"], true);
    assert_eq!(s["replicationInfo"]["sourceStageArn"], master.as_str());
    assert_eq!(s["replicationInfo"]["participantId"], "pub123");
    let stopped = app.delete("/api/stage/replication/stop", Some(body.clone())).await;
    assert_iso(&stopped.assert_ok()["stoppedAt"]);
    app.delete("/api/stage/replication/stop", Some(body)).await.assert_error(404, "NOT_FOUND");
    let r = app.post("/api/stage/replication/start", json!({ "sourceStageArn": master })).await;
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"]["missingFields"], json!(["destinationStageArn", "participantId"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_pass_the_stage_limit() {
    let app = spawn_app_with(|s| s.stage.max_stages = 4).await;
    let answers = futures_util::future::join_all((0..12).map(|n| {
        let app = &app;
        async move { app.post("/api/stage", json!({ "name": format!("race-{n}") })).await }
    }))
    .await;
    let created = answers.iter().filter(|r| r.status == 201).count();
    for r in answers.iter().filter(|r| r.status != 201) {
        r.assert_error(503, "STAGE_LIMIT_REACHED");
    }
    let listed = app.get("/api/stage/list").await.assert_ok()["totalStages"].as_u64().unwrap();
    assert_eq!(listed, 4, "the master and {created} created, no more than the limit");
    assert_eq!(created, 3);
}
