//! Spawns the real server on port 0 with a fresh database: a temp SQLite file, or a fresh
//! PostgreSQL database when `TEST_DATABASE_URL` is a postgres:// URL (dropped afterwards).

pub use livestage::domain::{ChannelId, LivePublisher};
use livestage::server::clock::Clock;
use livestage::server::config::Settings;
use livestage::server::http::AppState;
use livestage::server::publisher::PublisherSignal;
use livestage::server::service::Service;
use livestage::server::startup::Application;
use livestage::testing::clock::ManualClock;
use livestage::testing::process::ServerProcess;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const API_KEY: &str = "test-api-key-0123456789";

/// A database for one test; a PostgreSQL one is dropped when this is.
pub struct TestDb {
    pub url: String,
    pg: Option<(String, String)>, // (admin URL, database name)
}

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var("TEST_DATABASE_URL").ok().filter(|u| u.starts_with("postgres")) {
            Some(admin) => {
                use sqlx::Connection;
                let name = format!("livestage_test_{}", livestage::server::support::random_id(12).to_lowercase());
                let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to TEST_DATABASE_URL");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
                conn.close().await.ok();
                let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
                Self { url: format!("{base}/{name}"), pg: Some((admin, name)) }
            }
            None => Self { url: String::new(), pg: None },
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop runs outside async context: use a private runtime on a plain thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub service: Arc<Service>,
    pub clock: Arc<ManualClock>,
    /// The embedded media plane's publisher signal (`None` on the IVS backend).
    pub publisher: Option<PublisherSignal>,
    pub settings: Settings,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    pub dir: Arc<tempfile::TempDir>,
    pub db: Arc<TestDb>,
}

/// Three viewers crowd a stage of five: the next join triggers a new stage.
pub fn small_stages(s: &mut Settings) {
    s.stage.max_viewers_per_stage = 5;
    s.stage.scale_up_threshold = 4;
    s.stage.scale_down_threshold = 1;
    s.stage.scale_up_utilisation = 0.7; // 3 viewers on one stage pass it
    s.stage.max_stages = 3;
    s.stage.stage_warmup_secs = 300;
}

pub fn test_settings(dir: &std::path::Path, db: &TestDb) -> Settings {
    let mut s = Settings::defaults();
    s.server.site_addr = "127.0.0.1:0".parse().unwrap();
    s.server.data_dir = dir.to_path_buf();
    s.server.api_secret_key = Some(API_KEY.into());
    s.server.database_url = (!db.url.is_empty()).then(|| db.url.parse().expect("a test database URL"));
    s.stage.autoscale = false;
    s.rate_limit.max_requests = 100_000;
    livestage::testing::lift_client_limits(&mut s);
    s.presence.heartbeat_flush_ms = 50;
    s.media.udp_port = 0;
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db = Arc::new(TestDb::new().await);
    let mut settings = test_settings(dir.path(), &db);
    configure(&mut settings);
    let clock = ManualClock::new(chrono_now_ms());
    start(settings, clock, dir, db).await
}

/// Like [`spawn_app_with`], but returns as soon as the server answers, without waiting for its
/// stage backend to be set up.
pub async fn spawn_app_unready_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db = Arc::new(TestDb::new().await);
    let mut settings = test_settings(dir.path(), &db);
    configure(&mut settings);
    let clock = ManualClock::new(chrono_now_ms());
    start_unready(settings, clock, dir, db).await
}

/// Like [`spawn_app`], with `routes` served as well, behind the app's own middleware.
pub async fn spawn_app_with_routes(routes: axum::Router<AppState>) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db = Arc::new(TestDb::new().await);
    let settings = test_settings(dir.path(), &db);
    let clock = ManualClock::new(chrono_now_ms());
    let app = start_with(settings, clock, dir, db, Some(routes)).await;
    wait_until_set_up(&app).await;
    app
}

/// Two instances on one PostgreSQL database (separate data dirs, one clock); `None` on SQLite,
/// where one instance is the whole deployment.
pub async fn spawn_pair() -> Option<(TestApp, TestApp)> {
    spawn_pair_with(|_| {}).await
}

pub async fn spawn_pair_with(configure: impl Fn(&mut Settings)) -> Option<(TestApp, TestApp)> {
    spawn_pair_inner(configure, false).await
}

/// Like [`spawn_pair_with`], but both instances start at the same time.
pub async fn spawn_pair_together_with(configure: impl Fn(&mut Settings)) -> Option<(TestApp, TestApp)> {
    spawn_pair_inner(configure, true).await
}

async fn spawn_pair_inner(configure: impl Fn(&mut Settings), together: bool) -> Option<(TestApp, TestApp)> {
    let db = Arc::new(TestDb::new().await);
    db.pg.as_ref()?;
    let clock = ManualClock::new(chrono_now_ms());
    let instance = || {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut settings = test_settings(dir.path(), &db);
        configure(&mut settings);
        start(settings, clock.clone(), dir, db.clone())
    };
    if together {
        Some(tokio::join!(instance(), instance()))
    } else {
        let a = instance().await;
        Some((a, instance().await))
    }
}

/// Why a test is `#[ignore]`d on SQLite; the PostgreSQL pass runs it with `--include-ignored`.
pub const NEEDS_POSTGRES: &str = "this test needs PostgreSQL: run it with TEST_DATABASE_URL=postgres://… --include-ignored";

/// A fresh PostgreSQL database for several instances; panics on SQLite.
pub async fn postgres_db() -> Arc<TestDb> {
    let db = Arc::new(TestDb::new().await);
    assert!(db.pg.is_some(), "{NEEDS_POSTGRES}");
    db
}

/// One in-process instance on `db` (its own data dir), reading `clock`.
pub async fn spawn_on(db: &Arc<TestDb>, clock: Arc<ManualClock>, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut settings = test_settings(dir.path(), db);
    configure(&mut settings);
    start(settings, clock, dir, db.clone()).await
}

/// One in-process instance on `db` with the data dir `dir` (which may hold a database already).
pub async fn spawn_on_dir(db: &Arc<TestDb>, dir: tempfile::TempDir) -> TestApp {
    let settings = test_settings(dir.path(), db);
    start(settings, manual_clock(), Arc::new(dir), db.clone()).await
}

pub fn manual_clock() -> Arc<ManualClock> {
    ManualClock::new(chrono_now_ms())
}

/// The server binary in a process of its own, so a test can SIGKILL it or send it SIGTERM, with
/// the test settings (database: `db`), then `env`; returns once it is ready. It runs on the
/// system clock.
pub async fn start_process(db: &TestDb, env: &[(&str, &str)]) -> ServerProcess {
    let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_livestage"), |cmd, dir| {
        cmd.env("DATABASE_URL", test_settings(dir, db).database_url())
            .env("API_SECRET_KEY", API_KEY)
            .env("AUTOSCALE", "false")
            .env("RATE_LIMIT_MAX_REQUESTS", "100000")
            .envs(livestage::testing::LIFTED_CLIENT_LIMITS.iter().copied())
            .env("HEARTBEAT_FLUSH_MS", "50")
            .env("RUST_LOG", "warn,livestage=info");
        for (k, v) in env {
            cmd.env(k, v);
        }
    });
    server.wait_ready(Duration::from_secs(30)).await;
    server
}

/// A real publisher on the server at `base`: a WHIP session sending audio until the task ends.
pub async fn publish_audio(client: &reqwest::Client, base: &str) -> JoinHandle<()> {
    use livestage::testing::peer::{open_session, PeerRole, VideoCodec};
    let p: Value = client
        .post(format!("{base}/api/token/publisher"))
        .header("x-api-key", API_KEY)
        .json(&serde_json::json!({ "userId": "host" }))
        .send()
        .await
        .expect("publisher token request")
        .json()
        .await
        .expect("publisher token JSON");
    let whip = p["data"]["whipEndpoint"].as_str().expect("whipEndpoint");
    let token = p["data"]["token"].as_str().expect("token");
    let peer = open_session(client, whip, token, PeerRole::Publish, VideoCodec::Vp8, Duration::from_secs(5)).await.peer;
    tokio::spawn(async move {
        for n in 0u64..3000 {
            peer.send_audio(livestage::testing::media::OPUS_SILENCE.to_vec(), n * 960);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Joins `user` through the server at `base` once its publisher is live (bounded).
pub async fn join_when_live(client: &reqwest::Client, base: &str, user: &str) -> Value {
    for _ in 0..50 {
        let r = client
            .post(format!("{base}/api/token/viewer"))
            .header("x-api-key", API_KEY)
            .json(&serde_json::json!({ "userId": user }))
            .send()
            .await
            .expect("viewer token request");
        if r.status() == 200 {
            return r.json::<Value>().await.expect("viewer token JSON")["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user} could not join through {base} within 5 s");
}

/// Whether `check` holds on every poll (every 50 ms) for all of `span`.
pub async fn holds_for<F, Fut>(span: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < deadline {
        if !check().await {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Milliseconds since the epoch of a contract timestamp.
pub fn iso_ms(v: &Value) -> i64 {
    assert_iso(v);
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).expect("RFC 3339 timestamp").timestamp_millis()
}

/// A contract timestamp for `ms` since the epoch.
pub fn ms_iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("valid time").format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Starts an instance and waits (bounded) until its stage backend is set up.
async fn start(settings: Settings, clock: Arc<ManualClock>, dir: Arc<tempfile::TempDir>, db: Arc<TestDb>) -> TestApp {
    let app = start_unready(settings, clock, dir, db).await;
    wait_until_set_up(&app).await;
    app
}

async fn wait_until_set_up(app: &TestApp) {
    let mut ready = app.service.readiness();
    let set_up = tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r)).await;
    assert!(matches!(set_up, Ok(Ok(_))), "the stage backend of {} was not set up within 30 s", app.base);
}

async fn start_unready(settings: Settings, clock: Arc<ManualClock>, dir: Arc<tempfile::TempDir>, db: Arc<TestDb>) -> TestApp {
    start_with(settings, clock, dir, db, None).await
}

async fn start_with(
    settings: Settings,
    clock: Arc<ManualClock>,
    dir: Arc<tempfile::TempDir>,
    db: Arc<TestDb>,
    routes: Option<axum::Router<AppState>>,
) -> TestApp {
    let mut app = Application::build_with_clock(settings.clone(), clock.clone() as Arc<dyn Clock>).await.expect("app builds");
    if let Some(routes) = routes {
        app = app.merge_routes(routes);
    }
    let base = format!("http://127.0.0.1:{}", app.port());
    let service = app.service();
    let publisher = app.publisher_signal();
    let shutdown = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        service,
        clock,
        publisher,
        settings,
        shutdown,
        server: Some(server),
        dir,
        db,
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    /// Asserts the failure envelope with `status` and `code`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["success"], false, "body: {}", self.body);
        assert_eq!(self.error_code(), code, "body: {}", self.body);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", self.body);
        assert_iso(&self.body["timestamp"]);
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        assert_eq!(self.body["success"], true, "body: {}", self.body);
        assert_iso(&self.body["timestamp"]);
        &self.body["data"]
    }
}

#[track_caller]
pub fn assert_iso(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string timestamp: {v}"));
    assert_eq!(s.len(), 24, "{s}");
    assert!(s.ends_with('Z') && &s[10..11] == "T" && &s[19..20] == ".", "{s}");
}

impl TestApp {
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>, key: Option<&str>) -> Resp {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} response is not JSON: {text:?}"));
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None, Some(API_KEY)).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(body), Some(API_KEY)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.request(Method::PUT, path, Some(body), Some(API_KEY)).await
    }
    pub async fn delete(&self, path: &str, body: Option<Value>) -> Resp {
        self.request(Method::DELETE, path, body, Some(API_KEY)).await
    }
    pub async fn raw(&self, method: Method, path: &str, body: &'static str, content_type: &str) -> Resp {
        let resp = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .header("x-api-key", API_KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} response is not JSON: {text:?}"));
        Resp { status, headers, body }
    }

    pub async fn master_arn(&self) -> String {
        self.get("/api/stage/master/info").await.assert_ok()["stage"]["arn"].as_str().unwrap().to_string()
    }

    /// Makes the publisher live on the master stage (as the media plane reports it).
    pub async fn go_live(&self) {
        let arn = self.master_arn().await;
        self.signal().set_live(
            ChannelId::default(),
            LivePublisher {
                user_id: "broadcaster".into(),
                participant_id: "pub123".into(),
                stage_arn: arn,
                since: self.clock.now(),
            },
        );
    }

    /// The embedded media plane's publisher signal.
    pub fn signal(&self) -> &PublisherSignal {
        self.publisher.as_ref().expect("local backend")
    }

    pub async fn join(&self, user: &str) -> Resp {
        self.post("/api/token/viewer", serde_json::json!({ "userId": user })).await
    }

    pub fn advance_secs(&self, secs: i64) {
        self.clock.advance_ms(secs * 1000);
    }

    /// Stops the server gracefully (pending heartbeats are written). A shutdown that hangs or
    /// fails fails the test.
    pub async fn stop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(15), server).await {
                Err(_) => panic!("the server at {} did not shut down within 15 s", self.base),
                Ok(Err(e)) => panic!("the server at {} crashed while shutting down: {e}", self.base),
                Ok(Ok(Err(e))) => {
                    panic!("the server at {} shut down with an error: {e}", self.base)
                }
                Ok(Ok(Ok(()))) => {}
            }
        }
    }

    /// Stops this instance and starts a new one on the same data dir and database. The new
    /// one starts only once the old one has finished shutting down.
    pub async fn restart(mut self, advance_secs: i64) -> TestApp {
        self.stop().await;
        self.clock.advance_ms(advance_secs * 1000);
        let settings = self.settings.clone();
        start(settings, self.clock.clone(), self.dir.clone(), self.db.clone()).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Polls `check` every 50 ms for at most `limit`; returns whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn enc(arn: &str) -> String {
    arn.replace('/', "%2F")
}
