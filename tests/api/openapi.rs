//! The OpenAPI document describes exactly the routes the server serves.

use crate::helpers::*;
use reqwest::Method;
use serde_json::Value;

const ARN: &str = "arn:aws:ivs:us-east-1:000000000000:stage%2FAbCdEf123456";

/// The operations of the contract (api-contract.md) and of WHIP/WHEP (README), each with a
/// concrete request path. A stage ARN arrives URL-encoded, so it is one path segment.
fn contract() -> Vec<(&'static str, &'static str, String)> {
    let arn = |prefix: &str| format!("{prefix}{ARN}");
    vec![
        ("GET", "/api/health", "/api/health".into()),
        ("POST", "/api/token/viewer", "/api/token/viewer".into()),
        ("POST", "/api/token/publisher", "/api/token/publisher".into()),
        ("POST", "/api/token/mediaserver", "/api/token/mediaserver".into()),
        ("POST", "/api/viewer/heartbeat", "/api/viewer/heartbeat".into()),
        ("POST", "/api/viewer/leave", "/api/viewer/leave".into()),
        ("POST", "/api/viewer/rejoin", "/api/viewer/rejoin".into()),
        ("GET", "/api/viewer/list/{stageArn}", arn("/api/viewer/list/")),
        ("GET", "/api/viewer/duration", "/api/viewer/duration?userId=u&stageArn=x".into()),
        ("GET", "/api/viewer/history/{userId}", "/api/viewer/history/u1?limit=10".into()),
        ("GET", "/api/viewer/stats/{stageArn}", arn("/api/viewer/stats/")),
        ("GET", "/api/stats", "/api/stats".into()),
        ("GET", "/api/stats/viewers", "/api/stats/viewers".into()),
        ("GET", "/api/stats/stages", "/api/stats/stages".into()),
        ("GET", "/api/stats/publisher", "/api/stats/publisher".into()),
        ("GET", "/api/channels", "/api/channels".into()),
        ("POST", "/api/channels", "/api/channels".into()),
        ("GET", "/api/channels/{name}", "/api/channels/news".into()),
        ("PUT", "/api/channels/{name}", "/api/channels/news".into()),
        ("DELETE", "/api/channels/{name}", "/api/channels/news".into()),
        ("POST", "/api/channels/{name}/stream-key", "/api/channels/news/stream-key".into()),
        ("GET", "/api/stage/list", "/api/stage/list".into()),
        ("GET", "/api/stage/master/info", "/api/stage/master/info".into()),
        ("POST", "/api/stage", "/api/stage".into()),
        ("GET", "/api/stage/{stageArn}", arn("/api/stage/")),
        ("PUT", "/api/stage/{stageArn}", arn("/api/stage/")),
        ("DELETE", "/api/stage/{stageArn}", arn("/api/stage/")),
        ("POST", "/api/stage/replication/start", "/api/stage/replication/start".into()),
        ("DELETE", "/api/stage/replication/stop", "/api/stage/replication/stop".into()),
        ("GET", "/api/stage/replication/status/{stageArn}", arn("/api/stage/replication/status/")),
        ("POST", "/whip", "/whip".into()),
        ("DELETE", "/whip/{id}", "/whip/no-such-session".into()),
        ("POST", "/whip/c/{name}", "/whip/c/news".into()),
        ("DELETE", "/whip/c/{name}/{id}", "/whip/c/news/no-such-session".into()),
        ("POST", "/whep", "/whep".into()),
        ("DELETE", "/whep/{id}", "/whep/no-such-session".into()),
    ]
}

/// The template of `templates` that an OpenAPI reader routes `path` to: every `{param}` takes
/// exactly one non-empty segment, and where several match, a literal segment beats a parameter
/// at the first place they differ (concrete paths before templated ones).
fn resolve<'a>(templates: &[&'a str], path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap_or_default();
    let actual: Vec<&str> = path.split('/').collect();
    let fits = |t: &str| {
        let segs: Vec<&str> = t.split('/').collect();
        segs.len() == actual.len()
            && segs.iter().zip(&actual).all(|(s, a)| if s.starts_with('{') { !a.is_empty() } else { s == a })
    };
    // literal segments as `true`: the lexicographically greatest key is the most specific
    let key = |t: &str| t.split('/').map(|s| !s.starts_with('{')).collect::<Vec<bool>>();
    templates.iter().copied().filter(|t| fits(t)).max_by_key(|t| key(t))
}

fn concrete(template: &str) -> String {
    template.replace("{stageArn}", ARN).replace("{userId}", "someone").replace("{id}", "no-such-session")
}

/// Whether the server serves `method path`: it answers in JSON (an HTML page is the app's
/// fallback, not a route), not 405, and not the API's "no such route" 404.
async fn served(app: &TestApp, method: &Method, path: &str) -> (bool, u16, String) {
    let mut req = app.client.request(method.clone(), format!("{}{path}", app.base)).header("x-api-key", API_KEY);
    if *method != Method::GET {
        req = req.json(&serde_json::json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let served = match serde_json::from_str::<Value>(&text) {
        Ok(body) => status != 405 && !(status == 404 && body["error"]["message"] == "Route not found"),
        Err(_) => false,
    };
    (served, status, text.chars().take(120).collect())
}

#[tokio::test]
async fn the_document_is_public_and_lists_every_route_the_server_serves() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200, "served without the API key");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let templates: Vec<&str> = paths.keys().map(String::as_str).collect();
    let mut ops: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();
    ops.sort();

    // The document holds exactly the contract's operations…
    let mut expected: Vec<(String, String)> = contract().iter().map(|(m, t, _)| (m.to_string(), t.to_string())).collect();
    expected.sort();
    assert_eq!(ops, expected, "documented operations differ from the contract's");
    // …and a reader of the document routes each concrete request to its operation.
    for (method, template, path) in contract() {
        assert_eq!(resolve(&templates, &path), Some(template), "{method} {path} resolves to the wrong path item");
    }

    // Every path, documented or in the contract, with every method: served exactly when documented.
    let mut probe: Vec<String> = templates.iter().map(|t| concrete(t)).collect();
    probe.extend(contract().into_iter().map(|(_, _, p)| p));
    probe.sort();
    probe.dedup();
    for path in &probe {
        let item = resolve(&templates, path).map(|t| (t, &doc["paths"][t]));
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let documented = item.and_then(|(_, i)| i.get(method.as_str().to_lowercase()));
            let (is_served, status, body) = served(&app, &method, path).await;
            match documented {
                Some(op) => {
                    assert!(is_served, "{method} {path} is documented but not served: {status} {body}");
                    assert!(
                        op["responses"].get(status.to_string()).is_some(),
                        "{method} {path} answered {status}, which is not documented"
                    );
                }
                None => assert!(!is_served, "{method} {path} is served ({status} {body}) but not documented"),
            }
        }
    }
}

#[test]
fn a_path_parameter_takes_one_segment_and_literal_paths_win() {
    let templates = ["/api/stage/{stageArn}", "/api/stage/list", "/api/stage/replication/status/{stageArn}"];
    assert_eq!(resolve(&templates, "/api/stage/list"), Some("/api/stage/list"));
    assert_eq!(resolve(&templates, &format!("/api/stage/{ARN}")), Some("/api/stage/{stageArn}"));
    assert_eq!(resolve(&templates, "/api/stage/master/info"), None);
    assert_eq!(resolve(&templates, "/api/stage/replication/stop"), None);
    assert_eq!(
        resolve(&templates, &format!("/api/stage/replication/status/{ARN}")),
        Some("/api/stage/replication/status/{stageArn}")
    );
    assert_eq!(resolve(&templates, "/api/stage/"), None);
}
