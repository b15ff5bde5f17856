use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn missing_null_empty_and_mistyped_fields_are_named() {
    let app = spawn_app().await;
    app.go_live().await;
    let cases = [
        (json!({}), json!({ "missingFields": ["userId"] })),
        (json!({ "userId": null }), json!({ "missingFields": ["userId"] })),
        (json!({ "userId": "" }), json!({ "missingFields": ["userId"] })),
        (json!({ "userId": 42 }), json!({ "invalidFields": ["userId"] })),
        (json!({ "userId": ["a"] }), json!({ "invalidFields": ["userId"] })),
        (json!({ "userId": "a\u{0007}b" }), json!({ "invalidFields": ["userId"] })),
        (json!({ "userId": "x".repeat(129) }), json!({ "invalidFields": ["userId"] })),
        (json!({ "userId": "ok", "stageArn": "not-an-arn" }), json!({ "invalidFields": ["stageArn"] })),
        (json!({ "userId": "ok", "stageArn": 7 }), json!({ "invalidFields": ["stageArn"] })),
    ];
    for (body, details) in cases {
        let r = app.post("/api/token/viewer", body.clone()).await;
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["details"], details, "for {body}");
    }
    let r = app.post("/api/viewer/heartbeat", json!({ "userId": 1 })).await;
    assert_eq!(r.body["error"]["details"], json!({ "missingFields": ["stageArn"], "invalidFields": ["userId"] }));
    assert_eq!(app.get("/api/stats").await.assert_ok()["totalViewers"], 0, "nothing was recorded");
}

#[tokio::test]
async fn malformed_and_non_object_bodies_are_400() {
    let app = spawn_app().await;
    for body in ["{\"userId\": ", "not json", "[1,2]", "\"str\"", "{\"userId\":\"a\"}}"] {
        let r = app.raw(Method::POST, "/api/token/publisher", body, "application/json").await;
        r.assert_error(400, "VALIDATION_ERROR");
    }
    let r = app.raw(Method::POST, "/api/token/publisher", "", "application/json").await;
    assert_eq!(r.body["error"]["details"]["missingFields"], json!(["userId"]));
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = spawn_app().await;
    let big = json!({ "userId": "a", "padding": "x".repeat(70 * 1024) });
    app.post("/api/token/publisher", big.clone()).await.assert_error(413, "PAYLOAD_TOO_LARGE");
    // also without a Content-Length (chunked)
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]))));
    let resp = app
        .client
        .post(format!("{}/api/token/publisher", app.base))
        .header("x-api-key", API_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_but_never_limits_heartbeats() {
    let app = spawn_app_with(|s| s.rate_limit.max_requests = 5).await;
    app.go_live().await;
    // go_live looked up the master stage: 1 request
    let master = app.master_arn().await; // 2
    app.join("v").await.assert_ok(); // 3
    for _ in 0..2 {
        app.get("/api/stats").await.assert_ok();
    }
    let r = app.get("/api/stats").await;
    r.assert_error(429, "TOO_MANY_REQUESTS");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    for _ in 0..20 {
        app.post("/api/viewer/heartbeat", json!({ "userId": "v", "stageArn": master })).await.assert_ok();
    }
    app.request(Method::GET, "/api/health", None, None).await.assert_ok();
}

/// A JSON body of exactly `len` bytes for `POST /api/token/publisher`.
fn body_of(len: usize) -> String {
    let head = r#"{"userId":"a","padding":""#;
    let tail = r#""}"#;
    let body = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_accepted_and_one_byte_more_is_413() {
    let app = spawn_app().await;
    let send = |body: String| {
        app.client
            .post(format!("{}/api/token/publisher", app.base))
            .header("x-api-key", API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let at_limit = send(body_of(64 * 1024)).await.unwrap();
    assert_eq!(at_limit.status(), 200, "{}", at_limit.text().await.unwrap());
    let over = send(body_of(64 * 1024 + 1)).await.unwrap();
    assert_eq!(over.status(), 413);
    let v: serde_json::Value = over.json().await.unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn leaves_are_never_rate_limited() {
    let app = spawn_app_with(|s| s.rate_limit.max_requests = 3).await;
    app.go_live().await; // 1 request
    let master = app.master_arn().await; // 2
    app.join("v").await.assert_ok(); // 3
    app.get("/api/stats").await.assert_error(429, "TOO_MANY_REQUESTS");
    for i in 0..20 {
        let r = app.post("/api/viewer/leave", json!({ "userId": format!("u{i}"), "stageArn": master })).await;
        assert_eq!(r.assert_ok()["viewerLeft"], true);
    }
    app.post("/api/viewer/leave", json!({ "userId": "v", "stageArn": master })).await.assert_ok();
    app.get("/api/stats").await.assert_error(429, "TOO_MANY_REQUESTS");
    // outside /api nothing is limited
    for path in ["/health", "/live", "/api/health"] {
        let r = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn the_rate_limit_counts_each_client_ip_apart() {
    let app = spawn_app_with(|s| {
        s.rate_limit.max_requests = 2;
        s.rate_limit.window_ms = 60_000;
    })
    .await;
    for _ in 0..2 {
        app.get("/api/stats").await.assert_ok();
    }
    let limited = app.get("/api/stats").await;
    limited.assert_error(429, "TOO_MANY_REQUESTS");
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    // another address on the loopback network is another client
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let get = || other.get(format!("{}/api/stats", app.base)).header("x-api-key", API_KEY).send();
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 429);
    app.get("/api/stats").await.assert_error(429, "TOO_MANY_REQUESTS");
}
