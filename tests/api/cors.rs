//! `CORS_ORIGINS`: the listed origins may call the REST API from a browser; by default only
//! the same origin may.

use crate::helpers::*;
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use reqwest::Method;

const ALLOWED: &str = "https://studio.example";
const OTHER: &str = "https://elsewhere.example";

/// The `Access-Control-Allow-Origin` of a request and of a preflight from `origin`.
async fn allowed_origin(app: &TestApp, origin: &str) -> (Option<String>, Option<String>) {
    let get = app
        .client
        .get(format!("{}/api/stats", app.base))
        .header("x-api-key", API_KEY)
        .header(ORIGIN, origin)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let preflight = app
        .client
        .request(Method::OPTIONS, format!("{}/api/token/viewer", app.base))
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(ACCESS_CONTROL_REQUEST_HEADERS, "content-type,x-api-key")
        .send()
        .await
        .unwrap();
    let header = |r: &reqwest::Response| r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| v.to_str().unwrap().to_string());
    (header(&get), header(&preflight))
}

#[tokio::test]
async fn only_the_configured_origins_are_allowed() {
    let app = spawn_app_with(|s| {
        s.server.cors_origins = vec![ALLOWED.parse().unwrap(), "https://other-studio.example".parse().unwrap()]
    })
    .await;
    let (get, preflight) = allowed_origin(&app, ALLOWED).await;
    assert_eq!(get.as_deref(), Some(ALLOWED));
    assert_eq!(preflight.as_deref(), Some(ALLOWED));
    assert_eq!(allowed_origin(&app, OTHER).await, (None, None), "an origin not listed");
}

#[tokio::test]
async fn by_default_no_other_origin_is_allowed() {
    let app = spawn_app().await;
    assert_eq!(allowed_origin(&app, ALLOWED).await, (None, None));
    assert_eq!(allowed_origin(&app, OTHER).await, (None, None));
}
