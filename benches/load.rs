//! Load tool: N simulated viewers (token, heartbeats on a compressed 30 s cycle, leave) against
//! one instance and then two instances sharing one PostgreSQL database, requests spread over
//! the instances as a load balancer would. Prints requests/s, p50/p99 per kind, database write
//! transactions/s (from each instance's /metrics) and each instance's memory.
//!
//!   cargo bench --features ssr --bench load
//!
//! Settings: BENCH_VIEWERS (2000), BENCH_BEAT_MS (500: the 30 s heartbeat, compressed),
//! BENCH_JOIN_MS (3000: joins arrive spread over this), BENCH_SECS (14),
//! BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/test; a scratch database is created
//! next to it and dropped after).

use livestage::testing::bench;
use livestage::testing::media;
use livestage::testing::peer::{open_session, PeerRole, VideoCodec};
use livestage::testing::process::ServerProcess;
use serde_json::{json, Value};
use sqlx::Connection;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

/// Makes an instance's publisher live: a WHIP session that keeps sending audio.
async fn go_live(client: &reqwest::Client, base: &str) -> tokio::task::JoinHandle<()> {
    let d = post(client, base, "/api/token/publisher", json!({ "userId": "load-publisher" })).await.expect("publisher token");
    let (whip, token) = (d["whipEndpoint"].as_str().unwrap(), d["token"].as_str().unwrap());
    let peer = open_session(client, whip, token, PeerRole::Publish, VideoCodec::Vp8, Duration::from_secs(10)).await.peer;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for n in 0u64.. {
            tick.tick().await;
            peer.send_audio(media::OPUS_SILENCE.to_vec(), n * 960);
        }
    })
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Result<Value, u16> {
    let r =
        client.post(format!("{base}{path}")).header("x-api-key", bench::API_KEY).json(&body).send().await.map_err(|_| 0u16)?;
    let status = r.status().as_u16();
    let v: Value = r.json().await.map_err(|_| status)?;
    if v["success"] == true {
        Ok(v["data"].clone())
    } else {
        Err(status)
    }
}

/// Write transactions begun by every instance, from their `/metrics`.
async fn db_writes(client: &reqwest::Client, bases: &[String]) -> u64 {
    let mut total = 0;
    for b in bases {
        let text = client.get(format!("{b}/metrics")).send().await.unwrap().text().await.unwrap();
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("livestage_db_write_transactions_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

struct Figures {
    requests: usize,
    errors: usize,
    secs: f64,
    lat: [Vec<f64>; 3],
    steady_heartbeats_per_sec: f64,
    steady_writes_per_sec: f64,
    rss: Vec<f64>,
}

async fn round(instances: usize, admin: &str, viewers: usize, beat: Duration, join_phase: Duration, secs: u64) -> Figures {
    // a scratch database per round
    let name = format!("livestage_load_{}", livestage::server::support::random_id(10).to_lowercase());
    let mut admin_conn = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin_conn).await.unwrap();
    let db = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);

    let mut servers: Vec<ServerProcess> =
        (0..instances).map(|_| bench::server(env!("CARGO_BIN_EXE_livestage"), &[("DATABASE_URL", db.as_str())])).collect();
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let mut publishers = Vec::new();
    for s in &mut servers {
        s.wait_ready(Duration::from_secs(30)).await;
        publishers.push(go_live(&client, &s.base).await);
    }
    // every instance sees its publisher live
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
    // latencies by kind: 0 join (token), 1 heartbeat, 2 leave
    let lat = Arc::new(Mutex::new([Vec::<f64>::new(), Vec::new(), Vec::new()]));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..viewers {
        let (client, bases, lat, errors) = (client.clone(), bases.clone(), lat.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("load-viewer-{i}");
            let mut n = i;
            let mut call = |kind: usize, path: &'static str, body: Value| {
                let (client, base) = (client.clone(), bases[n % bases.len()].clone());
                n += 1;
                let (lat, errors) = (lat.clone(), errors.clone());
                async move {
                    let t = Instant::now();
                    let r = post(&client, &base, path, body).await;
                    match &r {
                        Ok(_) => lat.lock().unwrap()[kind].push(t.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    r
                }
            };
            // joins arrive spread over the join phase
            tokio::time::sleep(join_phase.mul_f64(i as f64 / viewers as f64)).await;
            let Ok(ticket) = call(0, "/api/token/viewer", json!({ "userId": user })).await else {
                return;
            };
            let stage = ticket["stageArn"].as_str().unwrap_or_default().to_string();
            while Instant::now() + beat < stop_at {
                tokio::time::sleep(beat).await;
                let _ = call(1, "/api/viewer/heartbeat", json!({ "userId": user, "stageArn": stage })).await;
            }
            let _ = call(2, "/api/viewer/leave", json!({ "userId": user, "stageArn": stage })).await;
        }));
    }
    // The steady phase: every viewer joined, nobody left yet. Only heartbeats flow.
    let steady_from = started + join_phase + Duration::from_secs(2);
    let steady_to = stop_at - beat - Duration::from_millis(200);
    tokio::time::sleep_until(steady_from.into()).await;
    let (c0, h0) = (db_writes(&client, &bases).await, lat.lock().unwrap()[1].len());
    tokio::time::sleep_until(steady_to.into()).await;
    let (c1, h1) = (db_writes(&client, &bases).await, lat.lock().unwrap()[1].len());
    let steady = steady_to.duration_since(steady_from).as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = servers.iter().map(|s| s.rss_mb()).collect();
    for p in publishers {
        p.abort();
    }
    drop(servers);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin_conn).await;
    let mut lat = Arc::try_unwrap(lat).map(|m| m.into_inner().unwrap()).unwrap_or_default();
    for l in lat.iter_mut() {
        l.sort_by(|a, b| a.total_cmp(b));
    }
    Figures {
        requests: lat.iter().map(Vec::len).sum(),
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        secs: elapsed,
        lat,
        steady_heartbeats_per_sec: (h1 - h0) as f64 / steady,
        steady_writes_per_sec: (c1 - c0) as f64 / steady,
        rss,
    }
}

async fn run() {
    let viewers: usize = bench::setting("BENCH_VIEWERS", 2000, 100);
    let beat = Duration::from_millis(env("BENCH_BEAT_MS", 500));
    let secs: u64 = bench::setting("BENCH_SECS", 14, 7);
    let join_phase = Duration::from_millis(bench::setting("BENCH_JOIN_MS", 3000, 1000));
    let admin: String = env("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test".to_string());
    println!("load: {viewers} viewers, heartbeat every {} ms (30 s compressed), {secs} s, PostgreSQL", beat.as_millis());
    for instances in [1, 2] {
        let f = round(instances, &admin, viewers, beat, join_phase, secs).await;
        let rss: Vec<String> = f.rss.iter().map(|r| format!("{r:.0} MiB")).collect();
        println!(
            "{instances} instance(s): {:.0} requests/s overall, {} errors, RSS {}",
            f.requests as f64 / f.secs,
            f.errors,
            rss.join(", ")
        );
        for (kind, l) in ["join (token)", "heartbeat", "leave"].iter().zip(&f.lat) {
            println!(
                "    {kind:<13} {:>6} requests  p50 {:>7.2} ms  p99 {:>8.2} ms",
                l.len(),
                bench::percentile(l, 0.5),
                bench::percentile(l, 0.99)
            );
        }
        println!(
            "    steady phase: {:.0} heartbeats/s, {:.1} database write transactions/s",
            f.steady_heartbeats_per_sec, f.steady_writes_per_sec
        );
        bench::check(f.errors == 0, format!("{instances} instance(s): no failed requests ({})", f.errors));
        bench::check(
            f.lat.iter().all(|l| !l.is_empty()),
            format!("{instances} instance(s): joins, heartbeats and leaves all ran"),
        );
        // One write per flush (250 ms) per instance; one write per heartbeat would be far more.
        let flush_bound = 10.0 * instances as f64 * 1000.0 / 250.0;
        bench::check(
            f.steady_writes_per_sec <= flush_bound && f.steady_writes_per_sec < f.steady_heartbeats_per_sec,
            format!(
                "{instances} instance(s): {:.1} writes/s for {:.0} heartbeats/s, within 10x of one per flush",
                f.steady_writes_per_sec, f.steady_heartbeats_per_sec
            ),
        );
    }
    println!("heartbeats are written in batches: write transactions follow the flush interval, not the viewer count");
}
