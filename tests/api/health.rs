use crate::helpers::*;
use reqwest::Method;

#[tokio::test]
async fn health_needs_no_key_and_reports_services() {
    let app = spawn_app().await;
    for path in ["/health", "/api/health"] {
        let r = app.request(Method::GET, path, None, None).await;
        let d = r.assert_ok();
        assert_eq!(d["status"], "healthy");
        assert_eq!(d["services"]["database"], "connected");
        assert_eq!(d["services"]["backend"]["kind"], "local");
        assert_eq!(d["services"]["backend"]["stageConfigured"], true);
        assert!(d["uptime"].as_f64().is_some());
        assert!(d["memory"]["rssMb"].as_f64().unwrap() > 0.0);
        assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    }
}

#[tokio::test]
async fn health_is_503_in_the_envelope_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.service.store().close().await;
    let r = app.request(Method::GET, "/health", None, None).await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
}

/// An idle keep-alive connection is closed when the header read timeout passes; every answer
/// says so, so a client's pool drops the connection before the server does instead of sending
/// a request into it as it closes.
#[tokio::test]
async fn answers_tell_clients_how_long_an_idle_connection_is_kept() {
    let app = spawn_app_with(|s| s.limits.header_read_timeout_ms = 4_000).await;
    for path in ["/health", "/api/stats", "/"] {
        let r = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.headers().get("keep-alive").and_then(|v| v.to_str().ok()), Some("timeout=4"), "{path}");
    }
}
