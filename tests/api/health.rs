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
