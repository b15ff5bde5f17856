use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

const ARN: &str = "arn:aws:ivs:us-east-1:000000000000:stage%2FAbCdEf123456";

/// Every route of the contract under /api except /api/health.
pub(crate) fn routes() -> Vec<(Method, String)> {
    let m = |method: Method, p: &str| (method, p.to_string());
    vec![
        m(Method::POST, "/api/token/viewer"),
        m(Method::POST, "/api/token/publisher"),
        m(Method::POST, "/api/token/mediaserver"),
        m(Method::POST, "/api/viewer/heartbeat"),
        m(Method::POST, "/api/viewer/leave"),
        m(Method::POST, "/api/viewer/rejoin"),
        m(Method::GET, &format!("/api/viewer/list/{ARN}")),
        m(Method::GET, "/api/viewer/duration?userId=u&stageArn=x"),
        m(Method::GET, "/api/viewer/history/u1"),
        m(Method::GET, &format!("/api/viewer/stats/{ARN}")),
        m(Method::GET, "/api/stats"),
        m(Method::GET, "/api/stats/viewers"),
        m(Method::GET, "/api/stats/stages"),
        m(Method::GET, "/api/stats/publisher"),
        m(Method::GET, "/api/stage/list"),
        m(Method::GET, "/api/stage/master/info"),
        m(Method::POST, "/api/stage"),
        m(Method::GET, &format!("/api/stage/{ARN}")),
        m(Method::PUT, &format!("/api/stage/{ARN}")),
        m(Method::DELETE, &format!("/api/stage/{ARN}")),
        m(Method::POST, "/api/stage/replication/start"),
        m(Method::DELETE, "/api/stage/replication/stop"),
        m(Method::GET, &format!("/api/stage/replication/status/{ARN}")),
    ]
}

#[tokio::test]
async fn every_api_route_refuses_a_missing_or_wrong_key() {
    let app = spawn_app().await;
    for (method, path) in routes() {
        let body = (method != Method::GET).then(|| json!({}));
        let missing = app.request(method.clone(), &path, body.clone(), None).await;
        missing.assert_error(401, "UNAUTHORIZED");
        let wrong = app.request(method.clone(), &path, body.clone(), Some("not-the-key")).await;
        wrong.assert_error(401, "UNAUTHORIZED");
        let near = app.request(method.clone(), &path, body.clone(), Some(&API_KEY[..API_KEY.len() - 1])).await;
        near.assert_error(401, "UNAUTHORIZED");
        // With the key the route exists: anything but 401/404-route/405.
        let ok = app.request(method.clone(), &path, body, Some(API_KEY)).await;
        assert_ne!(ok.status.as_u16(), 401, "{method} {path}: {}", ok.body);
        assert_ne!(ok.status.as_u16(), 405, "{method} {path}: {}", ok.body);
        assert_ne!(ok.body["error"]["message"], "Route not found", "{method} {path}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    app.request(Method::GET, "/api/nope", None, None).await.assert_error(401, "UNAUTHORIZED");
    app.get("/api/nope").await.assert_error(404, "NOT_FOUND");
    app.request(Method::GET, "/api/token/viewer", None, Some(API_KEY)).await.assert_error(405, "METHOD_NOT_ALLOWED");
    app.request(Method::DELETE, "/api/stats", None, Some(API_KEY)).await.assert_error(405, "METHOD_NOT_ALLOWED");
    app.request(Method::POST, "/api/health", Some(json!({})), None).await.assert_error(405, "METHOD_NOT_ALLOWED");
}
