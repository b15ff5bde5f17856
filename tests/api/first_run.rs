//! The first start of the server binary on an empty data dir says where the app is and what the
//! generated API key is for, once; later starts keep the key and do not show it again.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary until it serves a request, then stops it; returns its port and its stderr.
async fn run_once(data_dir: &std::path::Path) -> (u16, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_livestage"))
        .env_remove("API_SECRET_KEY")
        .env_remove("DATABASE_URL")
        .env_remove("PUBLIC_URL")
        .env("APP_DATA_DIR", data_dir)
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("MEDIA_UDP_PORT", "0")
        .env("STAGE_BACKEND", "local")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server binary starts");
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        assert!(Instant::now() < deadline, "no address in {}", String::from_utf8_lossy(&out));
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            out.extend(chunk);
        }
        let text = String::from_utf8_lossy(&out);
        if let Some(at) = text.find("listening on http://127.0.0.1:") {
            let digits: String =
                text[at + "listening on http://127.0.0.1:".len()..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(port) = digits.parse::<u16>() {
                break port;
            }
        }
    };
    // Serving: whatever the start prints has been printed.
    let health = reqwest::get(format!("http://127.0.0.1:{port}/api/health")).await.expect("health answers");
    assert_eq!(health.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    out.extend(rx.try_iter().flatten());
    (port, String::from_utf8_lossy(&out).into_owned())
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
