//! Heartbeat throughput: `POST /api/viewer/heartbeat` on the real server versus a bare axum
//! handler, both over loopback with the same client load, measured in the same run; and what
//! the defences against a faked audience cost, also in the same run: the REST heartbeat with
//! its ticket's `participantId` checked, and the page's heartbeat (a server function: the
//! signed viewer cookie, the page budget and the ticket check).
//!
//!   cargo bench --features ssr --bench heartbeat
//!
//! Settings (environment): BENCH_VIEWERS (2000), BENCH_CONNECTIONS (64), BENCH_SECS (5),
//! BENCH_DATABASE_URL (default: a temp SQLite file; postgres://… to measure PostgreSQL),
//! BENCH_REST_ONLY (set: only the bare handler and the REST heartbeat, with no page viewers
//! joined, the workload of earlier builds' benchmark, to compare a build against them).

use axum::routing::post;
use axum::{Json, Router};
use leptos::server_fn::ServerFn;
use livestage::domain::{ChannelId, LivePublisher};
use livestage::server::clock::SystemClock;
use livestage::server::config::Settings;
use livestage::server::startup::Application;
use livestage::testing::bench;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Figures {
    requests: u64,
    errors: u64,
    secs: f64,
    /// Every request's latency (µs), sorted.
    latencies: Vec<u64>,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    fn pct(&self, p: f64) -> u64 {
        let all = &self.latencies;
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0)
    }

    fn add(&mut self, other: Figures) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.secs += other.secs;
        self.latencies.extend(other.latencies);
        self.latencies.sort_unstable();
    }
}

/// What one measured run posts: its URL, the API key it sends, its bodies.
type Run = (String, Option<String>, Arc<Vec<Beat>>);

/// Runs each of `runs` for `secs` seconds in all, in one-second turns
/// taken in rotation, so that drift over the run (the database growing, the machine's other
/// load) falls on every one of them alike.
async fn interleaved(runs: &[Run], connections: u64, secs: u64) -> Vec<Figures> {
    let mut figures: Vec<Figures> = runs.iter().map(|_| Figures::default()).collect();
    for _ in 0..secs {
        for (i, (url, key, bodies)) in runs.iter().enumerate() {
            figures[i].add(drive(url.clone(), key.clone(), connections, 1, bodies.clone()).await);
        }
    }
    figures
}

/// A request body, and the cookie sent with it.
type Beat = (Value, Option<String>);

/// Drives `connections` concurrent request loops for `secs` seconds, cycling through `bodies`.
/// Bounded by time; returns latency percentiles and counts.
async fn drive(url: String, key: Option<String>, connections: u64, secs: u64, bodies: Arc<Vec<Beat>>) -> Figures {
    let client = reqwest::Client::builder().pool_max_idle_per_host(connections as usize).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, url, key, stop, bodies) = (client.clone(), url.clone(), key.clone(), stop.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(50_000);
            let mut errors = 0u64;
            let mut i = c as usize;
            while !stop.load(Ordering::Relaxed) {
                let (body, cookie) = &bodies[i % bodies.len()];
                i += connections as usize;
                let t = Instant::now();
                let mut req = client.post(&url).json(body);
                if let Some(k) = &key {
                    req = req.header("x-api-key", k);
                }
                if let Some(c) = cookie {
                    req = req.header("cookie", c);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Figures { requests: all.len() as u64, errors, secs: elapsed, latencies: all }
}

async fn bare_server() -> String {
    async fn handler(Json(body): Json<Value>) -> Json<Value> {
        Json(json!({
            "success": true,
            "data": { "userId": body["userId"], "stageArn": body["stageArn"], "heartbeatUpdated": true },
            "message": "heartbeat updated",
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/hb", post(handler))).await });
    url
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let viewers: u64 = bench::setting("BENCH_VIEWERS", 2000, 200);
    let connections: u64 = bench::setting("BENCH_CONNECTIONS", 64, 8);
    let secs: u64 = bench::setting("BENCH_SECS", 5, 1);
    let rest_only = std::env::var_os("BENCH_REST_ONLY").is_some();

    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults();
    settings.server.site_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.server.api_secret_key = Some(bench::API_KEY.into());
    settings.server.database_url = std::env::var("BENCH_DATABASE_URL").ok().map(|u| u.parse().expect("BENCH_DATABASE_URL"));
    settings.stage.autoscale = false;
    settings.media.udp_port = 0;
    livestage::testing::lift_client_limits(&mut settings);
    // the joins below come from one address; the limiter is not what is measured
    settings.rate_limit.max_requests = u32::MAX / 2;
    settings.stage.max_viewers_per_stage = u32::MAX / 2;
    settings.stage.scale_up_threshold = u32::MAX / 2;
    let db_label = settings.database_url().split(':').next().unwrap_or("?").to_string();

    let app = Application::build_with_clock(settings, Arc::new(SystemClock)).await.expect("app builds");
    app.service().readiness().wait_for(|ready| *ready).await.expect("the stage backend is set up");
    let base = format!("http://127.0.0.1:{}", app.port());
    let signal = app.publisher_signal().unwrap();
    let service = app.service();
    let master = service.store().stages().master(&ChannelId::default()).await.unwrap().unwrap().arn.to_string();
    signal.set_live(
        Default::default(),
        LivePublisher { user_id: "b".into(), participant_id: "p".into(), stage_arn: master.clone(), since: Default::default() },
    );
    tokio::spawn(app.run_until_stopped());

    eprintln!("joining {viewers} viewers…");
    let client = reqwest::Client::new();
    // Each viewer's beat, plain and naming its ticket.
    let (mut plain, mut checked) = (Vec::new(), Vec::new());
    for i in 0..viewers {
        let r = client
            .post(format!("{base}/api/token/viewer"))
            .header("x-api-key", bench::API_KEY)
            .json(&json!({ "userId": format!("viewer-{i}") }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "join failed: {}", r.status());
        let ticket: Value = r.json().await.unwrap();
        let participant = ticket["data"]["participantId"].as_str().unwrap().to_string();
        plain.push((json!({ "userId": format!("viewer-{i}"), "stageArn": master }), None));
        checked.push((json!({ "userId": format!("viewer-{i}"), "stageArn": master, "participantId": participant }), None));
    }
    let (bodies, checked): (Arc<Vec<Beat>>, Arc<Vec<Beat>>) = (Arc::new(plain), Arc::new(checked));
    // Page viewers: each joined through the page's function, with the cookie it was given.
    let page_viewers = if rest_only { 0 } else { viewers };
    eprintln!("joining {page_viewers} page viewers…");
    let mut pages = Vec::new();
    for _ in 0..page_viewers {
        let r = client
            .post(format!("{base}{}", livestage::rpc::JoinStream::PATH))
            .header("origin", &base)
            .json(&json!({ "channel": null }))
            .send()
            .await
            .unwrap();
        let cookie =
            r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).and_then(|c| c.split(';').next()).map(str::to_string);
        let ticket: Value = r.json().await.unwrap();
        // A page viewer is counted once its WHEP session connects; this stands in for the
        // media server's report of it (the bench measures beats, not WebRTC).
        let (stage, user, participant) =
            (ticket["stageArn"].as_str().unwrap(), ticket["userId"].as_str().unwrap(), ticket["participantId"].as_str().unwrap());
        assert!(service.presence().media_connected(stage, user, participant).await.unwrap(), "the page viewer is counted");
        let args = json!({ "stage_arn": ticket["stageArn"], "participant_id": ticket["participantId"] });
        pages.push((args, Some(cookie.expect("the page join sets the viewer cookie"))));
    }
    let pages = Arc::new(pages);
    let page_url = format!("{base}{}", livestage::rpc::SendHeartbeat::PATH);

    let bare_url = bare_server().await;
    // warm up each
    drive(bare_url.clone(), None, connections, 1, bodies.clone()).await;
    drive(format!("{base}/api/viewer/heartbeat"), Some(bench::API_KEY.into()), connections, 1, bodies.clone()).await;
    if !rest_only {
        drive(page_url.clone(), None, connections, 1, pages.clone()).await;
    }

    let rest = format!("{base}/api/viewer/heartbeat");
    let key = Some(bench::API_KEY.to_string());
    let mut runs = vec![(bare_url, None, bodies.clone()), (rest.clone(), key.clone(), bodies.clone())];
    if !rest_only {
        runs.extend([(rest, key, checked), (page_url, None, pages)]);
    }
    let mut figures = interleaved(&runs, connections, secs).await.into_iter();
    let (bare, hb) = (figures.next().unwrap(), figures.next().unwrap());
    let (hb_checked, page) = (figures.next().unwrap_or_default(), figures.next().unwrap_or_default());

    // durability: every viewer's last heartbeat reached the database within ~1 s
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rows = service.store().presence().list(&master).await.unwrap();
    let now = livestage::server::clock::Clock::now(&SystemClock);
    let stale = rows.iter().filter(|r| now.since(r.last_heartbeat) > Duration::from_secs(secs + 3)).count();

    println!(
        "heartbeat benchmark: {viewers} viewers, {connections} connections, {secs} s per run in 1 s turns, database {db_label}"
    );
    println!("{:<22} {:>12} {:>10} {:>10} {:>8}", "", "requests/s", "p50 (ms)", "p99 (ms)", "errors");
    let runs = [
        ("bare axum handler", &bare),
        ("POST heartbeat", &hb),
        ("+ participantId check", &hb_checked),
        ("page heartbeat (fn)", &page),
    ];
    for (name, f) in runs.into_iter().take(if rest_only { 2 } else { 4 }) {
        println!(
            "{:<22} {:>12.0} {:>10.2} {:>10.2} {:>8}",
            name,
            f.rps(),
            f.pct(0.50) as f64 / 1000.0,
            f.pct(0.99) as f64 / 1000.0,
            f.errors
        );
    }
    println!("ratio heartbeat/bare: {:.2} (target >= 0.5)", hb.rps() / bare.rps());
    if !rest_only {
        println!(
            "defence cost: the ticket check {:+.1} % of the REST heartbeat; the page's heartbeat (cookie, budget, ticket) {:+.1} %",
            (hb_checked.rps() / hb.rps() - 1.0) * 100.0,
            (page.rps() / hb.rps() - 1.0) * 100.0
        );
    }
    println!("viewers whose heartbeat is not in the database: {stale} of {}", rows.len());
    bench::check(
        hb.errors == 0 && bare.errors == 0 && hb_checked.errors == 0 && page.errors == 0,
        format!(
            "no failed requests ({} heartbeat, {} checked, {} page, {} bare)",
            hb.errors, hb_checked.errors, page.errors, bare.errors
        ),
    );
    bench::check(
        stale == 0 && rows.len() as u64 == viewers + page_viewers,
        format!("every viewer's heartbeat is stored ({stale} stale of {})", rows.len()),
    );
    let ratio = hb.rps() / bare.rps();
    bench::check(ratio >= 0.05, format!("heartbeat/bare {ratio:.2} within 10x of the 0.5 target"));
}
