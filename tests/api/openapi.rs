//! The OpenAPI document describes exactly the routes the server serves.

use crate::helpers::*;
use reqwest::Method;
use serde_json::Value;

/// Whether a concrete path matches an OpenAPI template; `{stageArn}` takes the rest of the path.
fn matches(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some("{stageArn}"), Some(_)) => return true,
            (Some(seg), Some(actual)) if seg.starts_with('{') => {
                if actual.is_empty() {
                    return false;
                }
            }
            (Some(seg), Some(actual)) if seg == actual => {}
            _ => return false,
        }
    }
}

fn concrete(template: &str) -> String {
    template
        .replace("{stageArn}", "arn:aws:ivs:us-east-1:000000000000:stage/AbCdEf123456")
        .replace("{userId}", "someone")
        .replace("{id}", "no-such-session")
}

#[tokio::test]
async fn the_document_is_public_and_lists_every_route_the_server_serves() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200, "served without the API key");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();

    // every authenticated route of the contract is documented…
    for (method, path) in crate::auth::routes() {
        assert!(
            ops.iter().any(|(m, t)| *m == method.as_str() && matches(t, &path.replace("%2F", "/"))),
            "{method} {path} is not in the document"
        );
    }
    // …and every documented operation is served (never "no such route" or 405).
    for (method, template) in &ops {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app
            .client
            .request(method.clone(), format!("{}{}", app.base, concrete(template)))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {template}");
        assert_ne!(body["error"]["message"], "Route not found", "{method} {template} is documented but not served");
        let documented = &doc["paths"][template][method.as_str().to_lowercase()]["responses"];
        assert!(documented.get(status.to_string()).is_some(), "{method} {template} answered {status}, which is not documented");
    }
}
