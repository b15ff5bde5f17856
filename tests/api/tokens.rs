use crate::helpers::*;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use livestage::server::clock::Clock;
use serde_json::{json, Value};

/// Verifies an ES384 participant token with an independent JWT library and the public key.
fn verify_token(app: &TestApp, token: &str) -> Value {
    let header = decode_header(token).expect("JWT header");
    assert_eq!(header.alg, Algorithm::ES384);
    assert!(header.kid.is_some());
    let pem = std::fs::read_to_string(app.dir.path().join("local-signing-key.pem")).unwrap();
    // Derive the public key from the private one with the server's own format (SPKI PEM).
    use p384::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p384::SecretKey::from_pkcs8_pem(&pem).unwrap();
    let public = secret.public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let key = DecodingKey::from_ec_pem(public.as_bytes()).expect("public key");
    let mut v = Validation::new(Algorithm::ES384);
    v.validate_exp = false; // the server's clock is a test clock
    v.required_spec_claims.clear();
    decode::<Value>(token, &key, &v).expect("signature verifies").claims
}

#[tokio::test]
async fn viewer_token_is_404_while_no_publisher_is_live() {
    let app = spawn_app().await;
    app.join("v1").await.assert_error(404, "NOT_FOUND");
    assert_eq!(app.get("/api/stats").await.assert_ok()["totalViewers"], 0);
}

#[tokio::test]
async fn viewer_token_carries_the_contract_fields_and_ivs_claims() {
    let app = spawn_app().await;
    app.go_live().await;
    let master = app.master_arn().await;
    let r = app.join("viewer-1").await;
    let d = r.assert_ok().clone();
    assert_eq!(d["userId"], "viewer-1");
    assert_eq!(d["stageArn"], master.as_str());
    assert_eq!(d["capabilities"], json!(["SUBSCRIBE"]));
    assert_eq!(d["expiresIn"], 3600);
    assert_eq!(d["currentViewers"], 1);
    assert_eq!(d["isNewViewer"], true);
    assert_iso(&d["expiresAt"]);
    assert_eq!(d["whepEndpoint"], format!("{}/whep", app.base));
    let claims = verify_token(&app, d["token"].as_str().unwrap());
    assert_eq!(claims["resource"], master.as_str());
    assert_eq!(claims["topic"], master.rsplit('/').next().unwrap());
    assert_eq!(claims["jti"], d["participantId"]);
    assert_eq!(claims["user_id"], "viewer-1");
    assert_eq!(claims["version"], "1.0");
    assert_eq!(claims["capabilities"], json!({ "allow_publish": false, "allow_subscribe": true }));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert!(claims["events_url"].as_str().unwrap().starts_with("ws://"));
    assert!(claims["whip_url"].as_str().unwrap().starts_with("http://"));

    // The same viewer again is not a new viewer and is not counted twice.
    let again = app.join("viewer-1").await;
    assert_eq!(again.assert_ok()["isNewViewer"], false);
    assert_eq!(again.data()["currentViewers"], 1);
}

#[tokio::test]
async fn publisher_token_targets_the_master_stage_with_obs_settings() {
    let app = spawn_app().await;
    let r = app.post("/api/token/publisher", json!({ "userId": "host" })).await;
    let d = r.assert_ok().clone();
    assert_eq!(d["userId"], "host");
    assert_eq!(d["stageArn"], app.master_arn().await.as_str());
    assert_eq!(d["capabilities"], json!(["PUBLISH"]));
    assert_eq!(d["expiresIn"], 14400);
    assert_eq!(d["whipEndpoint"], format!("{}/whip", app.base));
    assert_eq!(d["instructions"]["obs"]["service"], "WHIP");
    assert_eq!(d["instructions"]["obs"]["server"], d["whipEndpoint"]);
    assert_eq!(d["instructions"]["obs"]["bearerToken"], d["token"]);
    assert_eq!(d["instructions"]["obs"]["settings"]["resolution"], "1280x720");
    let claims = verify_token(&app, d["token"].as_str().unwrap());
    assert_eq!(claims["capabilities"], json!({ "allow_publish": true, "allow_subscribe": false }));
    // Issuing a publisher token does not make anyone live.
    assert_eq!(app.get("/api/stats/publisher").await.assert_ok()["isPublisherLive"], false);
    app.join("v").await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn token_lifetimes_follow_settings_in_seconds() {
    let app = spawn_app_with(|s| {
        s.tokens.viewer_token_duration = 120;
        s.tokens.publisher_token_duration = 600;
    })
    .await;
    app.go_live().await;
    let viewer = app.join("v").await.assert_ok().clone();
    let publisher = app.post("/api/token/publisher", json!({ "userId": "h" })).await.assert_ok().clone();
    for (d, lifetime) in [(viewer, 120), (publisher, 600)] {
        assert_eq!(d["expiresIn"], lifetime);
        // the token itself lives that long…
        let claims = verify_token(&app, d["token"].as_str().unwrap());
        let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
        assert_eq!(exp - iat, lifetime, "exp - iat");
        assert_eq!(iat, app.clock.now_ms() / 1000, "issued now");
        // …expiresAt is its expiry, and now + expiresIn reaches it (JWT times are whole seconds)
        let expires_at = expires_at_ms(&d["expiresAt"]);
        assert_eq!(expires_at, exp * 1000, "expiresAt {} is the JWT's exp", d["expiresAt"]);
        let slack = app.clock.now_ms() + lifetime * 1000 - expires_at;
        assert!((0..1000).contains(&slack), "now + expiresIn is {slack} ms past expiresAt {}", d["expiresAt"]);
    }
}

/// Milliseconds since the epoch of an ISO-8601 UTC timestamp.
fn expires_at_ms(v: &Value) -> i64 {
    assert_iso(v);
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().timestamp_millis()
}

#[tokio::test]
async fn mediaserver_token_fails_closed_without_a_secret() {
    let app = spawn_app().await;
    let master = app.master_arn().await;
    let r = app.post("/api/token/mediaserver", json!({ "serverId": "m1", "stageArn": master })).await;
    r.assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn mediaserver_token_checks_the_secret() {
    let app = spawn_app_with(|s| s.server.internal_secret = Some("s3cret".into())).await;
    let master = app.master_arn().await;
    let body = json!({ "serverId": "m1", "stageArn": master });
    let send = |secret: Option<&'static str>| {
        let mut req = app.client.post(format!("{}/api/token/mediaserver", app.base)).header("x-api-key", API_KEY).json(&body);
        if let Some(s) = secret {
            req = req.header("x-internal-secret", s);
        }
        req.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 403);
    assert_eq!(send(Some("wrong")).await.unwrap().status(), 403);
    let ok = send(Some("s3cret")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let v: Value = ok.json().await.unwrap();
    assert_eq!(v["data"]["capabilities"], json!(["PUBLISH", "SUBSCRIBE"]));
    assert_eq!(v["data"]["stageArn"], master.as_str());
}

#[tokio::test]
async fn a_full_stage_refuses_new_viewers_but_not_present_ones() {
    let app = spawn_app_with(|s| {
        s.stage.max_viewers_per_stage = 2;
        s.stage.scale_up_threshold = 2;
    })
    .await;
    app.go_live().await;
    app.join("a").await.assert_ok();
    app.join("b").await.assert_ok();
    app.join("c").await.assert_error(503, "STAGE_FULL");
    let master = app.master_arn().await;
    app.post("/api/token/viewer", json!({ "userId": "c", "stageArn": master })).await.assert_error(503, "STAGE_FULL");
    // a reload by a viewer already counted still works
    assert_eq!(app.join("a").await.assert_ok()["isNewViewer"], false);
    assert_eq!(app.get("/api/stats").await.assert_ok()["totalViewers"], 2);
}

#[tokio::test]
async fn an_unknown_stage_is_404() {
    let app = spawn_app().await;
    app.go_live().await;
    let r = app
        .post("/api/token/viewer", json!({ "userId": "a", "stageArn": "arn:aws:ivs:us-east-1:000000000000:stage/nope" }))
        .await;
    r.assert_error(404, "NOT_FOUND");
}
