//! Failures of the server's own dependencies, answered in the envelope.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn an_internal_error_never_shows_its_cause() {
    let app = spawn_app().await;
    app.get("/api/viewer/history/u").await.assert_ok();
    // The schema loses a table behind the server's back: a database error that is not an outage.
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&app.settings.database_url()).await.unwrap();
    sqlx::query("DROP TABLE watch_sessions").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let resp = app.client.get(format!("{}/api/viewer/history/u", app.base)).header("x-api-key", API_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["error"].get("details").is_none(), "{text}");
    let lower = text.to_lowercase();
    for leak in ["watch_sessions", "table", "relation", "sqlx", "sqlite", "postgres", "select"] {
        assert!(!lower.contains(leak), "the reply shows {leak:?}: {text}");
    }
}

/// With the database gone, every endpoint that needs it answers 503 SERVICE_UNAVAILABLE.
/// (A heartbeat is answered from memory and written at the next flush; `/api/stats/publisher`
/// reads the media plane's signal. Neither reads the database.)
#[tokio::test]
async fn every_database_backed_endpoint_is_503_when_the_database_is_gone() {
    let app = spawn_app_with(|s| s.server.internal_secret = Some("s3cret".into())).await;
    app.go_live().await;
    let master = app.master_arn().await;
    let side = app.post("/api/stage", json!({ "name": "side" })).await.data()["stage"]["arn"].as_str().unwrap().to_string();
    let pid = app.join("v").await.assert_ok()["participantId"].as_str().unwrap().to_string();
    let (m, s) = (enc(&master), enc(&side));
    let presence = json!({ "userId": "v", "stageArn": master });
    let replication = json!({ "sourceStageArn": master, "destinationStageArn": side, "participantId": "pub123" });
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/api/token/viewer".into(), Some(json!({ "userId": "w" }))),
        (Method::POST, "/api/token/publisher".into(), Some(json!({ "userId": "host" }))),
        (Method::POST, "/api/token/mediaserver".into(), Some(json!({ "serverId": "m1", "stageArn": master }))),
        (Method::POST, "/api/viewer/leave".into(), Some(presence.clone())),
        (Method::POST, "/api/viewer/rejoin".into(), Some(json!({ "userId": "v", "stageArn": master, "participantId": pid }))),
        (Method::GET, format!("/api/viewer/list/{m}"), None),
        (Method::GET, format!("/api/viewer/duration?userId=v&stageArn={m}"), None),
        (Method::GET, "/api/viewer/history/v".into(), None),
        (Method::GET, format!("/api/viewer/stats/{m}"), None),
        (Method::GET, "/api/stats".into(), None),
        (Method::GET, "/api/stats/viewers".into(), None),
        (Method::GET, "/api/stats/stages".into(), None),
        (Method::GET, format!("/api/stats/stages?arn={m}"), None),
        (Method::GET, "/api/stage/list".into(), None),
        (Method::GET, "/api/stage/master/info".into(), None),
        (Method::POST, "/api/stage".into(), Some(json!({ "name": "third" }))),
        (Method::GET, format!("/api/stage/{s}"), None),
        (Method::PUT, format!("/api/stage/{s}"), Some(json!({ "name": "renamed" }))),
        (Method::DELETE, format!("/api/stage/{s}"), None),
        (Method::POST, "/api/stage/replication/start".into(), Some(replication.clone())),
        (Method::DELETE, "/api/stage/replication/stop".into(), Some(replication)),
        (Method::GET, format!("/api/stage/replication/status/{s}"), None),
    ];
    app.service.store().close().await;
    let mut wrong = Vec::new();
    for (method, path, body) in routes {
        let mut req = app.client.request(method.clone(), format!("{}{path}", app.base)).header("x-api-key", API_KEY);
        if path.ends_with("/mediaserver") {
            req = req.header("x-internal-secret", "s3cret");
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        if status != 503 || v["error"]["code"] != "SERVICE_UNAVAILABLE" || v["success"] != false {
            wrong.push(format!("{method} {path}: {status} {v}"));
        }
    }
    assert!(wrong.is_empty(), "not 503 SERVICE_UNAVAILABLE:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn every_response_carries_the_request_id_given_or_a_new_one() {
    let app = spawn_app().await;
    for path in ["/health", "/api/stats", "/api/no-such-route"] {
        let given = app.client.get(format!("{}{path}", app.base)).header("x-request-id", "req-7f3a").send().await.unwrap();
        assert_eq!(given.headers().get("x-request-id").map(|v| v.to_str().unwrap()), Some("req-7f3a"), "{path}");
        let made = app.client.get(format!("{}{path}", app.base)).header("x-api-key", API_KEY).send().await.unwrap();
        let id = made.headers().get("x-request-id").unwrap_or_else(|| panic!("{path}: no x-request-id")).to_str().unwrap();
        assert_eq!(id.len(), 36, "{path}: a UUID: {id:?}");
    }
    let a = app.client.get(format!("{}/health", app.base)).send().await.unwrap();
    let b = app.client.get(format!("{}/health", app.base)).send().await.unwrap();
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"], "one id per request");
}

#[tokio::test]
async fn a_panicking_handler_answers_the_envelope_500_without_its_text_and_the_server_serves_on() {
    async fn boom() -> &'static str {
        panic!("secret panic text: /srv/db password=hunter2")
    }
    let app = spawn_app_with_routes(axum::Router::new().route("/boom", axum::routing::get(boom))).await;
    for _ in 0..3 {
        let resp = app.client.get(format!("{}/boom", app.base)).header("x-request-id", "req-boom").send().await.unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()["x-request-id"], "req-boom");
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        assert_eq!(body["success"], false, "{text}");
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR", "{text}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{text}");
        assert_iso(&body["timestamp"]);
        for leak in ["secret", "hunter2", "panic", "/srv"] {
            assert!(!text.contains(leak), "the reply shows {leak:?}: {text}");
        }
        // The server goes on serving.
        assert_eq!(app.get("/health").await.assert_ok()["status"], "healthy");
    }
}
