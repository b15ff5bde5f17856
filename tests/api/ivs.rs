//! The IVS backend against a fake of the IVS Real-Time HTTP API: the exact operations and
//! parameters the server sends, self-signed tokens checked with an independent JWT library
//! against the key registered with IVS, and behaviour when IVS throttles, fails or hangs.

use crate::helpers::*;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use livestage::domain::autoscale::ScaleDecision;
use livestage::domain::StageArn;
use livestage::server::config::{BackendKind, Settings, TokenMode};
use livestage::testing::fake_ivs::{FakeIvs, Fault, EVENTS_URL, REGION, WHIP_URL};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ivs(fake: &FakeIvs) -> impl Fn(&mut Settings) + '_ {
    move |s: &mut Settings| {
        s.stage.backend = BackendKind::Ivs;
        s.stage.region = REGION.into();
        s.ivs.endpoint_url = Some(fake.url.parse().expect("the fake IVS API has an http URL"));
        s.ivs.static_credentials = Some(("AKIDFAKEIVS".into(), "fake-secret".into()));
        s.ivs.poll_interval_ms = 400;
        s.ivs.timeout_ms = 1_500;
        s.ivs.retry_base_ms = 10;
        s.ivs.max_attempts = 3;
        s.ivs.breaker_failures = 3;
        s.ivs.breaker_cooldown_secs = 1;
    }
}

/// IVS reports "host" publishing on the master stage and three viewers crowd it (with
/// [`small_stages`], enough for a scale-up). Returns the master ARN and the host's participant id.
async fn live_with_crowd(fake: &FakeIvs, app: &TestApp) -> (String, String) {
    let master = app.master_arn().await;
    let host = fake.connect_participant(&master, "host", true);
    assert!(eventually(Duration::from_secs(5), || is_live(app)).await);
    for u in ["a", "b", "c"] {
        app.join(u).await.assert_ok();
    }
    (master, host)
}

async fn spawn_ivs(fake: &FakeIvs, extra: impl FnOnce(&mut Settings)) -> TestApp {
    let base = ivs(fake);
    spawn_app_with(|s| {
        base(s);
        extra(s);
    })
    .await
}

/// Verifies `token` with `jsonwebtoken` against the public key the fake IVS holds under the
/// token's `kid`; returns the claims.
fn verify_with_registered_key(fake: &FakeIvs, token: &str) -> Value {
    let header = decode_header(token).expect("JWT header");
    assert_eq!(header.alg, Algorithm::ES384);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.expect("kid");
    let pem = {
        let s = fake.state();
        let key = s.keys.iter().find(|k| k["arn"] == kid.as_str()).unwrap_or_else(|| panic!("kid {kid} is not a registered key"));
        key["publicKeyMaterial"].as_str().unwrap().to_string()
    };
    let key = DecodingKey::from_ec_pem(pem.as_bytes()).expect("registered key is an EC public key");
    let mut v = Validation::new(Algorithm::ES384);
    v.validate_exp = false; // the server runs on a test clock
    v.required_spec_claims.clear();
    decode::<Value>(token, &key, &v).expect("signature verifies against the registered key").claims
}

async fn is_live(app: &TestApp) -> bool {
    app.get("/api/stats/publisher").await.assert_ok()["isPublisherLive"] == true
}

#[tokio::test]
async fn startup_registers_the_signing_key_and_creates_a_tagged_master_stage() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |_| {}).await;
    let ops = fake.ops();
    assert_eq!(ops, ["ListPublicKeys", "ImportPublicKey", "CreateStage"], "{ops:?}");
    let import = &fake.calls_to("ImportPublicKey")[0];
    assert!(import["name"].as_str().unwrap().starts_with("livestage-"));
    assert!(import["publicKeyMaterial"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(import["tags"]["ManagedBy"], "livestage");
    let create = &fake.calls_to("CreateStage")[0];
    assert_eq!(create["name"], "master");
    assert_eq!(create["tags"]["ManagedBy"], "livestage");
    assert_eq!(create["tags"]["Role"], "master");
    let deployment = app.service.stages().deployment_id().await.unwrap();
    assert_eq!(create["tags"]["LivestageDeployment"], deployment.as_str());

    let master = app.master_arn().await;
    assert!(fake.state().stages.contains_key(&master));
    let health = app.get("/health").await;
    let h = health.assert_ok();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["services"]["backend"]["kind"], "ivs");
    assert_eq!(h["services"]["backend"]["region"], REGION);

    // A restart reuses the key, its ARN and the master stage: nothing is created again.
    fake.clear_calls();
    let app = app.restart(0).await;
    assert_eq!(app.master_arn().await, master);
    assert!(fake.ops().is_empty(), "{:?}", fake.ops());
    assert_eq!(fake.state().keys.len(), 1);
}

#[tokio::test]
async fn a_configured_master_stage_is_adopted_not_created() {
    let fake = FakeIvs::start().await;
    // A stage made outside this server (console, CloudFormation).
    let existing = {
        let probe = spawn_ivs(&fake, |_| {}).await;
        probe.master_arn().await
    };
    fake.clear_calls();
    let app = spawn_ivs(&fake, |s| s.stage.master_stage_arn = Some(StageArn::parse(existing.clone()).unwrap())).await;
    assert_eq!(app.master_arn().await, existing);
    assert!(fake.calls_to("CreateStage").is_empty());
    assert_eq!(fake.calls_to("GetStage")[0]["arn"], existing.as_str());
    let p = app.post("/api/token/publisher", json!({ "userId": "host" })).await;
    assert_eq!(p.assert_ok()["whipEndpoint"], WHIP_URL);
}

#[tokio::test]
async fn self_signed_tokens_verify_against_the_registered_key_with_the_ivs_claims() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |_| {}).await;
    let master = app.master_arn().await;
    let key_arn = fake.state().keys[0]["arn"].as_str().unwrap().to_string();

    let p = app.post("/api/token/publisher", json!({ "userId": "host" })).await;
    let d = p.assert_ok().clone();
    assert_eq!(d["stageArn"], master.as_str());
    assert_eq!(d["capabilities"], json!(["PUBLISH"]));
    assert_eq!(d["expiresIn"], 14400);
    // OBS gets the stage's real WHIP endpoint and the token as its bearer token.
    assert_eq!(d["whipEndpoint"], WHIP_URL);
    assert_eq!(d["instructions"]["obs"]["server"], WHIP_URL);
    assert_eq!(d["instructions"]["obs"]["bearerToken"], d["token"]);
    // Browsers publish and play through the IVS Web Broadcast SDK.
    assert_eq!(d["instructions"]["web"]["sdk"], "amazon-ivs-web-broadcast");
    assert_eq!(d["instructions"]["web"]["sdkUrl"], app.settings.ivs.web_sdk_url.as_str());
    assert!(app.settings.ivs.web_sdk_url.starts_with("https://web-broadcast.live-video.net/"));
    let token = d["token"].as_str().unwrap();
    assert_eq!(decode_header(token).unwrap().kid.as_deref(), Some(key_arn.as_str()));
    let claims = verify_with_registered_key(&fake, token);
    assert_eq!(claims["resource"], master.as_str());
    assert_eq!(claims["topic"], master.rsplit('/').next().unwrap());
    assert_eq!(claims["jti"], d["participantId"]);
    assert_eq!(claims["user_id"], "host");
    assert_eq!(claims["version"], "1.0");
    assert_eq!(claims["events_url"], EVENTS_URL);
    assert_eq!(claims["whip_url"], WHIP_URL);
    assert_eq!(claims["capabilities"], json!({ "allow_publish": true, "allow_subscribe": false }));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 14400);
    assert!(claims["attributes"].is_object());
    // Signing needs no IVS call.
    assert!(fake.calls_to("CreateParticipantToken").is_empty());

    // Viewer tokens likewise, once the publisher is live.
    let pid = fake.connect_participant(&master, "host", true);
    assert!(eventually(Duration::from_secs(5), || is_live(&app)).await);
    let v = app.join("viewer-1").await;
    let v = v.assert_ok().clone();
    assert_eq!(v["capabilities"], json!(["SUBSCRIBE"]));
    let claims = verify_with_registered_key(&fake, v["token"].as_str().unwrap());
    assert_eq!(claims["capabilities"], json!({ "allow_publish": false, "allow_subscribe": true }));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert_eq!(claims["user_id"], "viewer-1");
    assert_ne!(claims["jti"].as_str(), Some(pid.as_str()));
}

#[tokio::test]
async fn liveness_follows_the_published_participants_of_the_active_session() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |_| {}).await;
    let master = app.master_arn().await;
    // No session yet: GetStage finds none, so ListParticipants is not even asked.
    assert!(eventually(Duration::from_secs(3), || async { !fake.calls_to("GetStage").is_empty() }).await);
    assert!(!is_live(&app).await);
    app.join("early").await.assert_error(404, "NOT_FOUND");

    // Connected but not yet publishing: still offline.
    let host = fake.connect_participant(&master, "host", false);
    let session = fake.state().stages[&master]["activeSessionId"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(3), || async { !fake.calls_to("ListParticipants").is_empty() }).await);
    assert!(!is_live(&app).await);
    let list = &fake.calls_to("ListParticipants")[0];
    assert_eq!(list["stageArn"], master.as_str());
    assert_eq!(list["sessionId"], session.as_str());
    assert_eq!(list["filterByPublished"], true);

    // Publishing: live, with IVS's participant id.
    fake.disconnect_participant(&master, &host);
    let host = fake.connect_participant(&master, "host", true);
    assert!(eventually(Duration::from_secs(5), || is_live(&app)).await);
    let p = app.get("/api/stats/publisher").await;
    assert_eq!(p.assert_ok()["publisher"]["participantId"], host.as_str());
    app.join("viewer").await.assert_ok();

    // The publisher leaves: offline again.
    fake.disconnect_participant(&master, &host);
    assert!(eventually(Duration::from_secs(5), || async { !is_live(&app).await }).await);

    // Polls stay within the 5 TPS quota of the stage operations.
    let start = Instant::now();
    fake.clear_calls();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = fake.calls().len() as f64;
    let allowed = 5.0 * start.elapsed().as_secs_f64() + 1.0;
    assert!(calls > 0.0 && calls <= allowed, "{calls} calls in {:?}", start.elapsed());
}

#[tokio::test]
async fn autoscaling_replicates_the_publisher_and_stops_replication_before_deleting() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |s| {
        small_stages(s);
        s.ivs.reconnect_window_secs = 45;
    })
    .await;
    let (master, host) = live_with_crowd(&fake, &app).await;
    fake.clear_calls();
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::ScaleUp);

    assert_eq!(fake.ops(), ["CreateStage", "StartParticipantReplication"]);
    let create = &fake.calls_to("CreateStage")[0];
    assert_eq!(create["tags"]["AutoScaled"], "true");
    assert_eq!(create["tags"]["ManagedBy"], "livestage");
    let auto = fake.state().stages.keys().find(|a| **a != master).cloned().expect("a new stage");
    let start = &fake.calls_to("StartParticipantReplication")[0];
    assert_eq!(
        *start,
        json!({
            "sourceStageArn": master,
            "destinationStageArn": auto,
            "participantId": host,
            "reconnectWindowSeconds": 45,
        })
    );
    assert_eq!(fake.state().replications.len(), 1);
    let rep = app.get(&format!("/api/stage/replication/status/{}", enc(&auto))).await;
    assert_eq!(rep.assert_ok()["replicationInfo"]["participantId"], host.as_str());
    // Viewers sent to the new stage get tokens for it.
    let d = app.join("d").await;
    assert_eq!(d.assert_ok()["stageArn"], auto.as_str());

    // The crowd leaves; after the warm-up the stage goes, replication first.
    for u in ["a", "b", "c"] {
        app.post("/api/viewer/leave", json!({ "userId": u, "stageArn": master })).await.assert_ok();
    }
    app.advance_secs(301);
    fake.clear_calls();
    assert!(matches!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::ScaleDown(_)));
    assert_eq!(fake.ops(), ["StopParticipantReplication", "DeleteStage"]);
    assert_eq!(
        fake.calls_to("StopParticipantReplication")[0],
        json!({ "sourceStageArn": master, "destinationStageArn": auto, "participantId": host })
    );
    assert_eq!(fake.calls_to("DeleteStage")[0], json!({ "arn": auto }));
    assert!(fake.state().replications.is_empty());
    assert!(!fake.state().stages.contains_key(&auto));
    assert_eq!(app.get("/api/stage/list").await.assert_ok()["totalStages"], 1);
}

#[tokio::test]
async fn a_publisher_who_reconnects_is_replicated_again_under_the_new_participant_id() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, small_stages).await;
    let (master, first) = live_with_crowd(&fake, &app).await;
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::ScaleUp);
    let auto = fake.state().replications[0].1.clone();

    // The broadcaster's connection drops and comes back: IVS gives it a new participant id.
    fake.disconnect_participant(&master, &first);
    let second = fake.connect_participant(&master, "host", true);
    // The server records the replication once IVS has answered: wait for its record, then check
    // what IVS was asked.
    let status = format!("/api/stage/replication/status/{}", enc(&auto));
    assert!(
        eventually(Duration::from_secs(8), || async {
            app.get(&status).await.assert_ok()["replicationInfo"]["participantId"] == second.as_str()
        })
        .await
    );
    assert_eq!(fake.state().replications, [(master.clone(), auto.clone(), second.clone(), 60)]);
    assert_eq!(
        fake.calls_to("StopParticipantReplication"),
        [json!({ "sourceStageArn": master, "destinationStageArn": auto, "participantId": first })]
    );
    let p = app.get("/api/stats/publisher").await;
    assert_eq!(p.assert_ok()["publisher"]["participantId"], second.as_str());
}

#[tokio::test]
async fn stage_crud_goes_through_the_ivs_api() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |_| {}).await;
    fake.clear_calls();
    let created = app.post("/api/stage", json!({ "name": "studio-b", "tags": { "team": "sports" } })).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let arn = created.data()["stage"]["arn"].as_str().unwrap().to_string();
    let create = &fake.calls_to("CreateStage")[0];
    assert_eq!(create["name"], "studio-b");
    assert_eq!(create["tags"]["team"], "sports");
    assert_eq!(create["tags"]["ManagedBy"], "livestage");
    assert!(create["tags"]["AutoScaled"].is_null());

    let got = app.get(&format!("/api/stage/{}", enc(&arn))).await;
    assert_eq!(got.assert_ok()["stage"]["name"], "studio-b");

    app.put(&format!("/api/stage/{}", enc(&arn)), json!({ "name": "studio-c" })).await.assert_ok();
    assert_eq!(fake.calls_to("UpdateStage")[0], json!({ "arn": arn, "name": "studio-c" }));
    assert_eq!(fake.state().stages[&arn]["name"], "studio-c");

    app.delete(&format!("/api/stage/{}", enc(&arn)), None).await.assert_ok();
    assert_eq!(fake.calls_to("DeleteStage")[0], json!({ "arn": arn }));
    assert!(!fake.state().stages.contains_key(&arn));
    app.get(&format!("/api/stage/{}", enc(&arn))).await.assert_error(404, "NOT_FOUND");

    // Bad input is refused before IVS is asked.
    fake.clear_calls();
    app.post("/api/stage", json!({ "name": "no spaces allowed" })).await.assert_error(400, "VALIDATION_ERROR");
    assert!(fake.ops().is_empty(), "{:?}", fake.ops());
}

#[tokio::test]
async fn reconciliation_deletes_only_this_deployments_lost_stages() {
    let fake = FakeIvs::start().await;
    // Reconciliation runs on the first poll; this test runs it by hand.
    let app = spawn_ivs(&fake, |s| s.ivs.poll_interval_ms = 60_000).await;
    let deployment = app.service.stages().deployment_id().await.unwrap();
    let stage = |id: &str, tags: Value| {
        let arn = format!("arn:aws:ivs:{REGION}:123456789012:stage/{id}");
        fake.state().stages.insert(arn.clone(), json!({ "arn": arn, "name": id, "activeSessionId": "", "tags": tags }));
        arn
    };
    let lost =
        stage("lostAutoStage", json!({ "ManagedBy": "livestage", "LivestageDeployment": deployment, "AutoScaled": "true" }));
    let other_deployment =
        stage("otherDeployment", json!({ "ManagedBy": "livestage", "LivestageDeployment": "someoneelse", "AutoScaled": "true" }));
    let foreign = stage("foreignStage", json!({ "team": "marketing" }));
    // A stage this server knows that IVS lost.
    let known = app.post("/api/stage", json!({ "name": "gone" })).await.data()["stage"]["arn"].as_str().unwrap().to_string();
    fake.state().stages.remove(&known);

    fake.clear_calls();
    assert_eq!(app.service.backend_sync().reconcile_stages().await.unwrap(), 2);
    assert_eq!(fake.calls_to("DeleteStage"), [json!({ "arn": lost })]);
    let stages = fake.state().stages.clone();
    assert!(stages.contains_key(&other_deployment) && stages.contains_key(&foreign));
    app.get(&format!("/api/stage/{}", enc(&known))).await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn api_token_mode_asks_create_participant_token_with_minutes() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |s| {
        s.ivs.token_mode = TokenMode::Api;
        s.tokens.publisher_token_duration = 90;
    })
    .await;
    assert!(fake.calls_to("ImportPublicKey").is_empty());
    let master = app.master_arn().await;
    let p = app.post("/api/token/publisher", json!({ "userId": "host" })).await;
    let p = p.assert_ok().clone();
    let call = &fake.calls_to("CreateParticipantToken")[0];
    assert_eq!(call["stageArn"], master.as_str());
    assert_eq!(call["userId"], "host");
    assert_eq!(call["capabilities"], json!(["PUBLISH"]));
    // 90 s rounds up to 2 minutes: a token never expires before it was asked to.
    assert_eq!(call["duration"], 2);
    assert!(call["attributes"].is_object());
    assert!(p["token"].as_str().unwrap().starts_with("ivs-token-"));
    assert_eq!(p["participantId"], p["token"].as_str().unwrap().trim_start_matches("ivs-token-"));

    fake.connect_participant(&master, "host", true);
    assert!(eventually(Duration::from_secs(5), || is_live(&app)).await);
    let v = app.join("viewer-1").await;
    assert_eq!(v.assert_ok()["expiresIn"], 3600);
    let call = fake.calls_to("CreateParticipantToken").pop().unwrap();
    assert_eq!(call["duration"], 60);
    assert_eq!(call["capabilities"], json!(["SUBSCRIBE"]));
    assert_eq!(call["userId"], "viewer-1");
}

#[tokio::test]
async fn throttled_calls_are_retried_with_backoff() {
    let fake = FakeIvs::start().await;
    // No liveness polls: every throttled answer goes to the call under test.
    let app = spawn_ivs(&fake, |s| s.ivs.poll_interval_ms = 60_000).await;
    fake.clear_calls();
    fake.throttle_next(2);
    let created = app.post("/api/stage", json!({ "name": "after-throttle" })).await;
    assert_eq!(created.status, 201, "{}", created.body);
    // Two throttled attempts, then the one that went through.
    assert_eq!(fake.calls_to("CreateStage").len(), 3);
    assert_eq!(fake.state().stages.len(), 2);
    assert_eq!(app.get("/health").await.assert_ok()["status"], "healthy");

    // Throttled on every attempt: a clear 503, nothing half-created.
    fake.clear_calls();
    fake.throttle_next(3);
    app.post("/api/stage", json!({ "name": "never" })).await.assert_error(503, "SERVICE_UNAVAILABLE");
    assert_eq!(fake.calls_to("CreateStage").len(), 3);
    assert_eq!(app.get("/api/stage/list").await.assert_ok()["totalStages"], 2);

    // Throttling is IVS being busy, not failing: it never opens the circuit.
    for _ in 0..3 {
        fake.throttle_next(3);
        app.post("/api/stage", json!({ "name": "busy" })).await.assert_error(503, "SERVICE_UNAVAILABLE");
    }
    assert_eq!(app.get("/health").await.assert_ok()["status"], "healthy");
    let created = app.post("/api/stage", json!({ "name": "after-busy" })).await;
    assert_eq!(created.status, 201, "{}", created.body);
}

#[tokio::test]
async fn an_outage_degrades_health_and_token_calls_fail_fast() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |s| {
        s.ivs.token_mode = TokenMode::Api;
        s.ivs.poll_interval_ms = 60_000; // keep the poller out of the call counts
    })
    .await;
    fake.set_fault(Some(Fault::Failing));
    // Each failing call is retried, then reported as a 503 in the contract's envelope.
    for _ in 0..3 {
        app.post("/api/token/publisher", json!({ "userId": "host" })).await.assert_error(503, "SERVICE_UNAVAILABLE");
    }
    let health = app.get("/health").await;
    assert_eq!(health.assert_ok()["status"], "degraded");
    assert_eq!(health.data()["services"]["backend"]["status"], "degraded");

    // The breaker is open: no call reaches IVS, the answer is immediate.
    let before = fake.calls().len();
    let started = Instant::now();
    app.post("/api/token/publisher", json!({ "userId": "host" })).await.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    assert_eq!(fake.calls().len(), before);

    // IVS recovers: after the cool-down a probe goes through and everything works again.
    fake.set_fault(None);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    app.post("/api/token/publisher", json!({ "userId": "host" })).await.assert_ok();
    assert_eq!(app.get("/health").await.assert_ok()["status"], "healthy");

    // A hanging IVS: the call is cut off at the configured timeout, not left waiting.
    fake.set_fault(Some(Fault::Hanging));
    let started = Instant::now();
    app.post("/api/token/publisher", json!({ "userId": "host" })).await.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test]
async fn self_signed_tokens_keep_working_while_ivs_is_down() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |_| {}).await;
    let master = app.master_arn().await;
    fake.connect_participant(&master, "host", true);
    assert!(eventually(Duration::from_secs(5), || is_live(&app)).await);
    fake.set_fault(Some(Fault::Failing));
    assert!(eventually(Duration::from_secs(10), || async { app.get("/health").await.assert_ok()["status"] == "degraded" }).await);
    // Viewers already watching keep joining and heartbeating: tokens are signed here.
    let v = app.join("viewer-1").await;
    verify_with_registered_key(&fake, v.assert_ok()["token"].as_str().unwrap());
    app.post("/api/viewer/heartbeat", json!({ "userId": "viewer-1", "stageArn": master })).await.assert_ok();
    // What does need IVS fails cleanly.
    app.post("/api/stage", json!({ "name": "later" })).await.assert_error(503, "SERVICE_UNAVAILABLE");
}

#[tokio::test]
async fn key_rotation_registers_a_new_key_and_keeps_the_old_one_until_deleted() {
    let fake = FakeIvs::start().await;
    let mut app = spawn_ivs(&fake, |_| {}).await;
    let old = fake.state().keys[0]["arn"].as_str().unwrap().to_string();
    let old_token =
        app.post("/api/token/publisher", json!({ "userId": "host" })).await.assert_ok()["token"].as_str().unwrap().to_string();
    app.stop().await;

    let (new, previous) =
        livestage::server::backend::ivs::rotate_key(&app.settings.stage.region, &app.settings.ivs, &app.settings.server.data_dir)
            .await
            .unwrap();
    assert_eq!(previous.as_deref(), Some(old.as_str()));
    assert_ne!(new, old);
    assert_eq!(fake.state().keys.len(), 2);
    assert!(std::fs::read_dir(app.dir.path())
        .unwrap()
        .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with("ivs-signing-key.") }));

    let app = app.restart(0).await;
    let token =
        app.post("/api/token/publisher", json!({ "userId": "host" })).await.assert_ok()["token"].as_str().unwrap().to_string();
    assert_eq!(decode_header(&token).unwrap().kid.as_deref(), Some(new.as_str()));
    verify_with_registered_key(&fake, &token);
    // Tokens signed before the rotation still verify while the old key is registered.
    verify_with_registered_key(&fake, &old_token);

    livestage::server::backend::ivs::delete_key(
        &app.settings.stage.region,
        &app.settings.ivs,
        &app.settings.server.data_dir,
        &old,
    )
    .await
    .unwrap();
    assert_eq!(fake.calls_to("DeletePublicKey"), [json!({ "arn": old })]);
    assert_eq!(fake.state().keys.len(), 1);
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn instances_on_one_database_share_the_master_stage_and_the_publisher() {
    let fake = FakeIvs::start().await;
    let (a, b) = spawn_pair_with(ivs(&fake)).await.expect(NEEDS_POSTGRES);
    assert_eq!(fake.calls_to("CreateStage").len(), 1, "one master stage for the deployment");
    let master = a.master_arn().await;
    assert_eq!(b.master_arn().await, master);
    // Each instance signs with its own registered key; both verify.
    assert_eq!(fake.state().keys.len(), 2);
    fake.connect_participant(&master, "host", true);
    assert!(eventually(Duration::from_secs(8), || async { is_live(&a).await && is_live(&b).await }).await);
    for (app, user) in [(&a, "on-a"), (&b, "on-b")] {
        let v = app.join(user).await;
        verify_with_registered_key(&fake, v.assert_ok()["token"].as_str().unwrap());
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.get("/api/stats").await.assert_ok()["totalViewers"] == 2
                && b.get("/api/stats").await.assert_ok()["totalViewers"] == 2
        })
        .await
    );
}

#[tokio::test]
#[ignore = "PostgreSQL only"]
async fn instances_starting_together_keep_one_master_stage() {
    let fake = FakeIvs::start().await;
    let (a, b) = spawn_pair_together_with(ivs(&fake)).await.expect(NEEDS_POSTGRES);
    let master = a.master_arn().await;
    assert_eq!(b.master_arn().await, master);
    // However many were created in the race, only the recorded one is left in IVS.
    let stages: Vec<String> = fake.state().stages.keys().cloned().collect();
    assert_eq!(stages, std::slice::from_ref(&master));
    let created = fake.calls_to("CreateStage").len();
    assert_eq!(fake.calls_to("DeleteStage").len(), created - 1);
    assert_eq!(a.get("/api/stage/list").await.assert_ok()["totalStages"], 1);
}

#[tokio::test]
async fn a_recorded_master_stage_without_its_row_is_adopted() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |_| {}).await;
    let master = app.master_arn().await;
    // The row is lost (an instance died between recording the stage and writing its row).
    app.service.store().stages().delete(&master).await.unwrap();
    fake.clear_calls();
    let app = app.restart(0).await;
    assert_eq!(app.master_arn().await, master);
    assert!(fake.calls_to("CreateStage").is_empty());
    assert_eq!(fake.calls_to("GetStage").first(), Some(&json!({ "arn": master })));
    assert_eq!(fake.state().stages.len(), 1, "the recorded stage is used, no new one is kept");
}

#[tokio::test]
async fn the_key_commands_rotate_and_delete_keys_from_the_command_line() {
    let fake = FakeIvs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &'static [&'static str], extra: Option<String>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_livestage"));
        cmd.args(args)
            .args(extra)
            .env("APP_DATA_DIR", dir.path().join("nested"))
            .env("STAGE_BACKEND", "ivs")
            .env("AWS_REGION", REGION)
            .env("IVS_ENDPOINT_URL", &fake.url)
            .env("AWS_ACCESS_KEY_ID", "AKIDFAKEIVS")
            .env("AWS_SECRET_ACCESS_KEY", "fake-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1");
        // The fake answers on this runtime: wait for the process without blocking it.
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().expect("binary runs")).await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };

    let (code, out, err) = run(&["rotate-key"], None).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let first = fake.state().keys[0]["arn"].as_str().unwrap().to_string();
    assert!(out.contains(&first), "{out}");
    let saved = std::fs::read_to_string(dir.path().join("nested").join("ivs-signing-key.arn")).unwrap();
    assert_eq!(saved.split_whitespace().next(), Some(first.as_str()));

    let (code, out, _) = run(&["rotate-key"], None).await;
    assert_eq!(code, Some(0));
    assert_eq!(fake.state().keys.len(), 2);
    assert!(out.contains(&format!("livestage delete-key {first}")), "{out}");

    let (code, out, _) = run(&["delete-key"], Some(first.clone())).await;
    assert_eq!(code, Some(0));
    assert!(out.contains(&first));
    assert_eq!(fake.state().keys.len(), 1);
    assert_eq!(fake.calls_to("DeletePublicKey"), [json!({ "arn": first })]);

    let (code, _, err) = run(&["delete-key"], None).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("usage: livestage delete-key"), "{err}");

    // IVS refusing the import leaves no half-rotated key behind.
    fake.set_fault(Some(Fault::Failing));
    let before = std::fs::read_to_string(dir.path().join("nested").join("ivs-signing-key.pem")).unwrap();
    let (code, _, err) = run(&["rotate-key"], None).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("rotate-key"), "{err}");
    let after = std::fs::read_to_string(dir.path().join("nested").join("ivs-signing-key.pem")).unwrap();
    assert_eq!(before, after);
    assert!(!dir.path().join("nested").join("ivs-signing-key.pem.new").exists());
}

#[tokio::test]
async fn a_publisher_back_after_the_reconnect_window_is_replicated_again_under_its_old_id() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, small_stages).await;
    let (master, host) = live_with_crowd(&fake, &app).await;
    assert_eq!(app.service.autoscaler().step(&ChannelId::default()).await.unwrap(), ScaleDecision::ScaleUp);
    let auto = fake.state().replications[0].1.clone();

    // OBS drops out for longer than the reconnect window: IVS ends the replication.
    fake.disconnect_participant(&master, &host);
    assert!(eventually(Duration::from_secs(5), || async { !is_live(&app).await }).await);
    fake.state().replications.clear();
    app.advance_secs(61);
    let status = format!("/api/stage/replication/status/{}", enc(&auto));
    assert!(eventually(Duration::from_secs(5), || async { app.get(&status).await.assert_ok()["hasReplication"] == false }).await);

    // It comes back with the same token, so under the same participant id: replicated again.
    fake.clear_calls();
    fake.connect_participant_as(&master, "host", &host);
    // The server records the replication once IVS has answered: wait for its record, then check
    // what IVS was asked.
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get(&status).await.assert_ok()["replicationInfo"]["participantId"] == host.as_str()
        })
        .await
    );
    assert_eq!(fake.state().replications, [(master.clone(), auto.clone(), host.clone(), 60)]);
    assert_eq!(fake.calls_to("StartParticipantReplication").len(), 1);
}

#[tokio::test]
async fn the_newest_published_connection_is_live_across_pages_of_participants() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |_| {}).await;
    let master = app.master_arn().await;
    // Earlier connections of the broadcaster still listed as connected, over two pages.
    let ids: Vec<String> = (0..130).map(|_| fake.connect_participant(&master, "host", true)).collect();
    let newest = ids.last().unwrap().clone();
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get("/api/stats/publisher").await.assert_ok()["publisher"]["participantId"] == newest.as_str()
        })
        .await
    );
    let pages = fake.calls_to("ListParticipants");
    assert!(pages.iter().any(|b| b["nextToken"] == "100"), "the second page was asked for");
}

#[tokio::test]
async fn a_key_file_that_does_not_match_the_recorded_arn_is_registered_again() {
    let fake = FakeIvs::start().await;
    let mut app = spawn_ivs(&fake, |_| {}).await;
    let first = fake.state().keys[0]["arn"].as_str().unwrap().to_string();
    app.stop().await;
    // The key file is lost (a new volume); the ARN file survived.
    std::fs::remove_file(app.dir.path().join("ivs-signing-key.pem")).unwrap();
    let app = app.restart(0).await;
    assert_eq!(fake.state().keys.len(), 2, "the new key is registered");
    let token =
        app.post("/api/token/publisher", json!({ "userId": "host" })).await.assert_ok()["token"].as_str().unwrap().to_string();
    let kid = decode_header(&token).unwrap().kid.unwrap();
    assert_ne!(kid, first);
    verify_with_registered_key(&fake, &token);
}

#[tokio::test]
async fn stage_calls_stay_within_their_quota_when_polling_asks_for_more() {
    let fake = FakeIvs::start().await;
    // Polling every 200 ms through two pages of published participants asks for 15 stage
    // operations a second; their quota is 5.
    let app = spawn_ivs(&fake, |s| s.ivs.poll_interval_ms = 200).await;
    let master = app.master_arn().await;
    for i in 0..150 {
        fake.connect_participant(&master, &format!("host-{i}"), true);
    }
    assert!(eventually(Duration::from_secs(5), || is_live(&app)).await);
    fake.clear_calls();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let elapsed = start.elapsed().as_secs_f64();
    // Every stage operation shares the quota (token and key operations have their own).
    let stage_calls = fake.calls().iter().filter(|c| !c.op.contains("Token") && !c.op.contains("PublicKey")).count() as f64;
    assert!(stage_calls <= 5.0 * elapsed + 1.0, "{stage_calls} stage calls in {elapsed:.2} s: over 5 TPS");
    // The quota is what holds the rate back: polling keeps it busy.
    assert!(stage_calls >= 3.0 * elapsed, "{stage_calls} stage calls in {elapsed:.2} s: polling stalled");
}

/// The contract's **Fix**: the stage list holds the stages this server manages, not every
/// stage in the account.
#[tokio::test]
async fn the_stage_list_holds_only_the_stages_this_server_manages() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |s| s.ivs.poll_interval_ms = 60_000).await;
    let master = app.master_arn().await;
    let created = app.post("/api/stage", json!({ "name": "ours" })).await.data()["stage"]["arn"].as_str().unwrap().to_string();
    for (id, tags) in [
        ("foreignStage", json!({ "team": "marketing" })),
        ("otherDeployment", json!({ "ManagedBy": "livestage", "LivestageDeployment": "someoneelse" })),
    ] {
        let arn = format!("arn:aws:ivs:{REGION}:123456789012:stage/{id}");
        fake.state().stages.insert(arn.clone(), json!({ "arn": arn, "name": id, "activeSessionId": "", "tags": tags }));
    }
    assert_eq!(fake.state().stages.len(), 4, "the account holds four stages");
    let list = app.get("/api/stage/list").await;
    let l = list.assert_ok();
    let mut arns: Vec<&str> = l["stages"].as_array().unwrap().iter().map(|s| s["stageArn"].as_str().unwrap()).collect();
    arns.sort();
    let mut ours = vec![master.as_str(), created.as_str()];
    ours.sort();
    assert_eq!(arns, ours);
    assert_eq!(l["totalStages"], 2);
}

/// A token IVS refuses to issue (here: the stage was deleted in the account behind the
/// server's back) is `500 TOKEN_GENERATION_FAILED`, and nobody is recorded as present.
#[tokio::test]
async fn a_token_ivs_cannot_issue_is_token_generation_failed() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |s| s.ivs.token_mode = TokenMode::Api).await;
    let master = app.master_arn().await;
    fake.connect_participant(&master, "host", true);
    assert!(eventually(Duration::from_secs(5), || is_live(&app)).await);
    let side = app.post("/api/stage", json!({ "name": "side" })).await.data()["stage"]["arn"].as_str().unwrap().to_string();
    fake.state().stages.remove(&side);

    fake.clear_calls();
    let r = app.post("/api/token/viewer", json!({ "userId": "v", "stageArn": side })).await;
    r.assert_error(500, "TOKEN_GENERATION_FAILED");
    assert_eq!(fake.ops(), ["CreateParticipantToken"]);
    let message = r.body["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(!message.contains("resourcenotfound") && !message.contains("createparticipanttoken"), "{message}");
    assert_eq!(app.get("/api/stats").await.assert_ok()["totalViewers"], 0);
    assert_eq!(app.get("/api/viewer/history/v").await.assert_ok()["totalRecords"], 0);
    // the master stage still issues tokens
    app.join("v").await.assert_ok();
}

#[tokio::test]
async fn the_port_answers_degraded_while_ivs_hangs_or_fails_at_start_then_turns_healthy() {
    let fake = FakeIvs::start().await;
    fake.set_fault(Some(Fault::Hanging));
    let base = ivs(&fake);
    let app = spawn_app_unready_with(|s| base(s)).await;
    // IVS never answers: the port answers all the same.
    assert_degraded(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_degraded(&app).await;
    // IVS fails: still degraded, set-up keeps being retried.
    fake.set_fault(Some(Fault::Failing));
    let failing_from = fake.calls().len();
    assert_degraded(&app).await;
    assert!(eventually(Duration::from_secs(10), || async { fake.calls().len() > failing_from }).await, "set-up is retried");
    assert_degraded(&app).await;
    assert!(fake.calls_to("CreateStage").is_empty(), "no stage is created before the signing key is registered");

    // IVS answers: the key is registered, the master stage created, and the server is healthy.
    fake.set_fault(None);
    assert!(
        eventually(Duration::from_secs(20), || async { app.get("/health").await.assert_ok()["status"] == "healthy" }).await,
        "healthy once IVS answers"
    );
    let d = app.get("/health").await.assert_ok().clone();
    assert_eq!(d["services"]["backend"]["stageConfigured"], true, "{d}");
    let ready = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(fake.calls_to("CreateStage").len(), 1);
    assert_eq!(fake.state().keys.len(), 1, "the signing key is registered once");
    let token = app.post("/api/token/publisher", json!({ "userId": "host" })).await;
    verify_with_registered_key(&fake, token.assert_ok()["token"].as_str().unwrap());
}

/// `/health` answers at once and says degraded, `/ready` is 503, and what needs the master
/// stage is refused in the envelope.
async fn assert_degraded(app: &TestApp) {
    let started = Instant::now();
    let health = app.get("/health").await;
    assert!(started.elapsed() < Duration::from_secs(1), "/health took {:?}", started.elapsed());
    let d = health.assert_ok();
    assert_eq!(d["status"], "degraded", "{d}");
    assert_eq!(d["services"]["backend"]["kind"], "ivs");
    assert_eq!(d["services"]["backend"]["stageConfigured"], false, "{d}");
    let ready = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    app.post("/api/token/publisher", json!({ "userId": "host" })).await.assert_error(503, "SERVICE_UNAVAILABLE");
}

// ---- channels on IVS ----

#[tokio::test]
async fn a_channel_makes_and_removes_its_own_tagged_master_stage_on_ivs() {
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |_| {}).await;
    fake.clear_calls();
    let created = app.post("/api/channels", json!({ "name": "news", "title": "News" })).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.data()["channel"]["whipEndpoint"], Value::Null, "IVS takes participant tokens, not stream keys");
    let master = created.data()["channel"]["masterStageArn"].as_str().unwrap().to_string();
    assert_eq!(fake.ops(), ["CreateStage"], "one stage is made for the channel, nothing else");
    let create = &fake.calls_to("CreateStage")[0];
    assert_eq!(create["tags"]["LivestageChannel"], "news");
    assert_eq!(create["tags"]["ManagedBy"], "livestage");
    assert!(create["tags"]["AutoScaled"].is_null());
    assert_eq!(fake.state().stages[&master]["tags"]["LivestageChannel"], "news");

    // Its viewers and publisher get tokens for its own stage.
    let t = app.post("/api/token/publisher", json!({ "userId": "anchor", "channel": "news" })).await;
    assert_eq!(t.assert_ok()["stageArn"], master.as_str());

    fake.clear_calls();
    app.delete("/api/channels/news", None).await.assert_ok();
    assert_eq!(fake.calls_to("DeleteStage"), [json!({ "arn": master })]);
    assert_eq!(fake.ops(), ["DeleteStage"]);
    assert!(!fake.state().stages.contains_key(&master));
}

/// The most stage calls in any `window` of `calls` (those of the stage quota only).
fn busiest(calls: &[livestage::testing::fake_ivs::Call], window: Duration) -> usize {
    let stage: Vec<Instant> =
        calls.iter().filter(|c| !c.op.contains("Token") && !c.op.contains("PublicKey")).map(|c| c.at).collect();
    stage.iter().map(|&from| stage.iter().filter(|&&t| t >= from && t < from + window).count()).max().unwrap_or(0)
}

#[tokio::test]
async fn twenty_channels_flip_live_and_offline_within_the_stated_time_inside_the_stage_quota() {
    use livestage::server::backend::ivs::POLL_SHARE;
    let fake = FakeIvs::start().await;
    let app = spawn_ivs(&fake, |s| s.stage.max_stages = 64).await;
    let names: Vec<String> = (1..=20).map(|i| format!("ch-{i:02}")).collect();
    let mut masters = Vec::new();
    for name in &names {
        let created = app.post("/api/channels", json!({ "name": name })).await;
        assert_eq!(created.status, 201, "{}", created.body);
        masters.push(created.data()["channel"]["masterStageArn"].as_str().unwrap().to_string());
    }
    // The stated worst case: the poll interval, then two calls per master stage (the default
    // channel's too) at polling's share of the 5 TPS quota.
    let stages = (names.len() + 1) as f64;
    let bound = Duration::from_secs_f64(0.4 + 2.0 * stages / (POLL_SHARE * 5.0));
    // Plus the calls' own latency and the store work between them (under a busy test
    // machine), seen through the API, which is read every 100 ms.
    let limit = bound + Duration::from_secs(2);

    /// When each channel was first seen with `live` as its state, from `start`.
    async fn flips(app: &TestApp, names: &[String], live: bool, start: Instant, limit: Duration) -> Vec<Duration> {
        let mut seen: Vec<Option<Duration>> = vec![None; names.len()];
        while seen.iter().any(Option::is_none) && start.elapsed() < limit + Duration::from_secs(5) {
            let list = app.get("/api/channels").await;
            for c in list.assert_ok()["channels"].as_array().unwrap() {
                if let Some(i) = names.iter().position(|n| c["name"] == n.as_str()) {
                    if c["isLive"] == live && seen[i].is_none() {
                        seen[i] = Some(start.elapsed());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let missing: Vec<&String> = names.iter().zip(&seen).filter(|(_, s)| s.is_none()).map(|(n, _)| n).collect();
        assert!(missing.is_empty(), "never seen live={live}: {missing:?}");
        seen.into_iter().flatten().collect()
    }

    fake.clear_calls();
    let start = Instant::now();
    let hosts: Vec<String> = masters.iter().map(|m| fake.connect_participant(m, "host", true)).collect();
    let went_live = flips(&app, &names, true, start, limit).await;
    let slowest = went_live.iter().max().unwrap();
    println!("20 channels live within {slowest:?} (stated bound {bound:?})");
    assert!(*slowest <= limit, "a channel went live after {slowest:?}, over the stated {bound:?}");

    let start = Instant::now();
    for (master, host) in masters.iter().zip(&hosts) {
        fake.disconnect_participant(master, host);
    }
    let went_offline = flips(&app, &names, false, start, limit).await;
    let slowest = went_offline.iter().max().unwrap();
    println!("20 channels offline within {slowest:?}");
    assert!(*slowest <= limit, "a channel went offline after {slowest:?}, over the stated {bound:?}");

    // Every stage call of the run stayed within the quota, over any two seconds.
    let calls = fake.calls();
    let most = busiest(&calls, Duration::from_secs(2));
    assert!(most <= 11, "{most} stage calls within two seconds: over 5 TPS");
    assert!(calls.iter().any(|c| c.op == "ListParticipants"), "liveness came from polling");
}
