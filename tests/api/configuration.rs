//! Configuration through the server binary: the README's default `DATABASE_URL` spelled out
//! starts on an empty directory, and a value that does not parse stops the start with a message
//! naming the variable and what was expected.

use crate::helpers::*;
use std::process::{Command, Stdio};

#[tokio::test]
async fn the_readme_default_database_url_starts_when_its_file_does_not_exist_yet() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    assert!(!file.exists());
    let url = format!("sqlite://{}", file.display());
    let server = start_process(&db, &[("DATABASE_URL", url.as_str())]).await;
    let health = reqwest::get(format!("{}/health", server.base)).await.unwrap();
    assert_eq!(health.status(), 200, "{}", server.log());
    assert!(file.exists(), "the database file is created");
}

#[test]
fn a_value_that_does_not_parse_names_the_variable_and_what_was_expected() {
    for (var, value, expected) in [
        ("DATABASE_URL", "mysql://db/live", "expected sqlite://"),
        ("LEPTOS_SITE_ADDR", "localhost:3000", "expected an IP address and port"),
        ("CORS_ORIGINS", "https://studio.example/", "not an origin"),
        ("LOG_FORMAT", "yaml", "expected text or json"),
        ("MASTER_STAGE_ARN", "stage/AbC", "expected arn:aws:ivs:"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_livestage"))
            .env("APP_DATA_DIR", dir.path())
            .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
            .env("MEDIA_UDP_PORT", "0")
            .env(var, value)
            .stdin(Stdio::null())
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(&format!("configuration error: {var}=")), "{var}={value}: {stderr}");
        assert!(stderr.contains(expected), "{var}={value}: {stderr}");
    }
}
