//! The first start of the server binary on an empty data dir says where the app is and what the
//! generated API key is for, once; later starts keep the key and do not show it again.

use livestage::testing::process::ServerProcess;

/// Runs the binary until it serves a request, then stops it; returns its port and its stderr.
async fn run_once(data_dir: &std::path::Path) -> (u16, String) {
    let mut server = ServerProcess::start_in(env!("CARGO_BIN_EXE_livestage"), data_dir, |cmd, _| {
        cmd.env_remove("API_SECRET_KEY").env_remove("DATABASE_URL").env_remove("PUBLIC_URL").env("STAGE_BACKEND", "local");
    });
    // Serving: whatever the start prints has been printed.
    let health = reqwest::get(format!("{}/api/health", server.base)).await.expect("health answers");
    assert_eq!(health.status(), 200);
    server.kill();
    (server.port(), server.log())
}

#[tokio::test]
async fn the_first_start_says_where_the_app_is_and_what_the_key_is_for_once() {
    let dir = tempfile::tempdir().unwrap();
    let (port, first) = run_once(dir.path()).await;
    let key = std::fs::read_to_string(dir.path().join("api-key")).expect("key saved in the data dir");
    let key = key.trim();
    assert!(key.len() >= 32, "a long random key: {key:?}");
    let url = format!("http://127.0.0.1:{port}");
    assert!(first.contains(&format!("livestage is running at {url}")), "{first}");
    assert!(first.contains(&format!("{url}/broadcast")), "{first}");
    assert!(first.contains(key), "the key is shown: {first}");
    assert!(first.contains("x-api-key"), "{first}");
    assert!(first.contains("studio"), "{first}");

    let (_, second) = run_once(dir.path()).await;
    assert_eq!(std::fs::read_to_string(dir.path().join("api-key")).unwrap().trim(), key, "the key is kept");
    assert!(!second.contains(key), "the key is not shown again: {second}");
    assert!(!second.contains("livestage is running at"), "{second}");
}
