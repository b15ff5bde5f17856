//! SFU fan-out: one 720p / 2.5 Mbps publisher (WHIP) and N WHEP viewers over loopback, all real
//! WebRTC (ICE, DTLS, SRTP) through the embedded media server. For each N it prints the video
//! frame loss, the end-to-end latency (publisher write → viewer frame) and the added latency
//! against the single-viewer baseline measured in the same run.
//!
//!   cargo bench --features ssr --bench sfu
//!
//! Settings (environment): BENCH_VIEWERS ("1,25,50,75,100"), BENCH_SECS (5).
//! The viewers run in this process too, so the machine also pays for their decryption: the
//! figures are a lower bound for the server alone.

use livestage::server::clock::SystemClock;
use livestage::server::config::Settings;
use livestage::server::startup::Application;
use livestage::testing::bench;
use livestage::testing::media;
use livestage::testing::peer::{open_session, PeerEvent, PeerHandle, PeerRole, Session, VideoCodec};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use str0m::media::MediaKind;

const FPS: u64 = 30;
const BITRATE: u64 = 2_500_000;
const GOP: u64 = 60;

type SendLog = Arc<Mutex<HashMap<u64, Instant>>>;

/// Synthetic VP8 frames of a 2.5 Mbps 720p stream: a keyframe every 2 s, sized like a real
/// encoder's output (the SFU forwards bytes, it never decodes).
fn frame(n: u64) -> Vec<u8> {
    let per_gop = BITRATE / 8 * GOP / FPS;
    let key = n.is_multiple_of(GOP);
    let len = if key { per_gop / 4 } else { (per_gop - per_gop / 4) / (GOP - 1) } as usize;
    media::vp8_frame(len, n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, key.then_some((1280, 720)))
}

fn publish(peer: PeerHandle, log: SendLog, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut peer = peer;
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let (mut v, mut a) = (0u64, 0u64);
        let mut force_key = false;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            while let Ok(ev) = peer.events.try_recv() {
                force_key |= matches!(ev, PeerEvent::KeyframeRequested);
            }
            let ms = start.elapsed().as_millis() as u64;
            if ms >= v * 1000 / FPS {
                let n = if force_key { 0 } else { v };
                force_key = false;
                let ts = v * 90_000 / FPS;
                log.lock().unwrap().insert(ts, Instant::now());
                peer.send_video(frame(n), ts);
                v += 1;
            }
            if ms >= a * 20 {
                peer.send_audio(vec![0xfc; 160], a * 960);
                a += 1;
            }
        }
    })
}

/// Datagrams from an address no session knows, as a flood would send them: half garbage, half
/// STUN binding requests for ufrags no session has, `rate` a second until `stop`.
fn flood(
    target: std::net::SocketAddr,
    rate: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("a socket for the flood");
        let per_tick = (rate / 200).max(1); // every 5 ms
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..per_tick {
                n += 1;
                let datagram = if n.is_multiple_of(2) {
                    let mut d = vec![0x80u8; 120];
                    d[2..10].copy_from_slice(&n.to_be_bytes());
                    d
                } else {
                    stun_binding_request(n)
                };
                let _ = socket.send_to(&datagram, target).await;
            }
            sent.fetch_add(per_tick, Ordering::Relaxed);
        }
    })
}

/// A STUN binding request (RFC 8489) naming `unknown{n}:x` as its USERNAME.
fn stun_binding_request(n: u64) -> Vec<u8> {
    let user = format!("unknown{n}:x");
    let padded = user.len().div_ceil(4) * 4;
    let mut d = Vec::with_capacity(20 + 4 + padded);
    d.extend_from_slice(&0x0001u16.to_be_bytes());
    d.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
    d.extend_from_slice(&0x2112_a442u32.to_be_bytes());
    d.extend_from_slice(&n.to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    d.extend_from_slice(&0x0006u16.to_be_bytes());
    d.extend_from_slice(&(user.len() as u16).to_be_bytes());
    d.extend_from_slice(user.as_bytes());
    d.resize(20 + 4 + padded, 0);
    d
}

struct Viewer {
    location: String,
    token: String,
    received: Arc<Mutex<Vec<(u64, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn api(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let r = client.post(format!("{base}{path}")).header("x-api-key", bench::API_KEY).json(&body).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], true, "{v}");
    v["data"].clone()
}

async fn add_viewer(client: &reqwest::Client, base: &str, i: usize) -> Viewer {
    let d = api(client, base, "/api/token/viewer", json!({ "userId": format!("bench-viewer-{i}") })).await;
    let token = d["token"].as_str().unwrap().to_string();
    let whep = d["whepEndpoint"].as_str().unwrap();
    let Session { mut peer, location } =
        open_session(client, whep, &token, PeerRole::Play, VideoCodec::Vp8, Duration::from_secs(10)).await;
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let task = tokio::spawn(async move {
        while let Some(ev) = peer.events.recv().await {
            if let PeerEvent::Frame { kind: MediaKind::Video, rtp_time, at, .. } = ev {
                sink.lock().unwrap().push((rtp_time, at));
            }
        }
    });
    Viewer { location, token, received, task }
}

struct Round {
    viewers: usize,
    loss_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(viewers: &[Viewer], log: &SendLog, secs: u64) -> Round {
    for v in viewers {
        v.received.lock().unwrap().clear();
    }
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let window_end = Instant::now();
    // let the last frames of the window arrive
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent: HashMap<u64, Instant> =
        log.lock().unwrap().iter().filter(|(_, t)| **t >= window_start && **t < window_end).map(|(k, v)| (*k, *v)).collect();
    let mut latencies = Vec::new();
    let mut got = 0usize;
    for v in viewers {
        for (ts, at) in v.received.lock().unwrap().iter() {
            if let Some(t) = sent.get(ts) {
                got += 1;
                latencies.push(at.duration_since(*t).as_secs_f64() * 1000.0);
            }
        }
    }
    let expected = sent.len() * viewers.len();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    };
    Round {
        viewers: viewers.len(),
        loss_pct: if expected == 0 { 100.0 } else { 100.0 * (1.0 - got as f64 / expected as f64) },
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let counts: Vec<usize> = bench::setting("BENCH_VIEWERS", "1,25,50,75,100".to_string(), "1,10".to_string())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let secs: u64 = bench::setting("BENCH_SECS", 5, 2);

    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults();
    settings.server.site_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.server.api_secret_key = Some(bench::API_KEY.into());
    settings.stage.autoscale = false;
    settings.stage.max_viewers_per_stage = 100_000;
    settings.stage.scale_up_threshold = 100_000;
    settings.rate_limit.max_requests = 1_000_000;
    settings.media.udp_port = 0;
    livestage::testing::lift_client_limits(&mut settings);
    let app = Application::build_with_clock(settings, Arc::new(SystemClock)).await.expect("app builds");
    app.service().readiness().wait_for(|ready| *ready).await.expect("the stage backend is set up");
    let base = format!("http://127.0.0.1:{}", app.port());
    let service = app.service();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();

    let d = api(&client, &base, "/api/token/publisher", json!({ "userId": "bench-publisher" })).await;
    let (whip, token) = (d["whipEndpoint"].as_str().unwrap(), d["token"].as_str().unwrap());
    let peer = open_session(&client, whip, token, PeerRole::Publish, VideoCodec::Vp8, Duration::from_secs(10)).await.peer;
    let log: SendLog = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = publish(peer, log.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    println!("SFU fan-out: one publisher, VP8 720p {} kbps @ {FPS} fps + Opus, {secs} s per round", BITRATE / 1000);
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>14} {:>12}",
        "viewers", "loss (%)", "p50 (ms)", "p99 (ms)", "added p50 (ms)", "egress Mbps"
    );
    let mut viewers: Vec<Viewer> = Vec::new();
    let mut baseline: Option<f64> = None;
    let mut best_ok = 0;
    for &n in &counts {
        while viewers.len() < n {
            viewers.push(add_viewer(&client, &base, viewers.len()).await);
        }
        while viewers.len() > n {
            let v = viewers.pop().unwrap();
            let _ = client.delete(&v.location).bearer_auth(&v.token).send().await;
            v.task.abort();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await; // every viewer past its first keyframe
        let bytes_before = service.media().plane().unwrap().server.stats().bytes_forwarded.load(Ordering::Relaxed);
        let r = measure(&viewers, &log, secs).await;
        let bytes = service.media().plane().unwrap().server.stats().bytes_forwarded.load(Ordering::Relaxed) - bytes_before;
        let base_p50 = *baseline.get_or_insert(r.p50_ms);
        println!(
            "{:>8} {:>12.3} {:>10.2} {:>10.2} {:>14.2} {:>12.1}",
            r.viewers,
            r.loss_pct,
            r.p50_ms,
            r.p99_ms,
            r.p50_ms - base_p50,
            bytes as f64 * 8.0 / (secs as f64 + 0.5) / 1e6
        );
        if r.loss_pct < 1.0 {
            best_ok = best_ok.max(r.viewers);
        }
        bench::check(r.loss_pct < 10.0, format!("{n} viewer(s): {:.3} % frame loss, within 10x of the 1 % target", r.loss_pct));
        bench::check(
            r.p50_ms - base_p50 <= 50.0,
            format!("{n} viewer(s): p50 {:.2} ms, {:.2} ms over one viewer's (bound 50 ms)", r.p50_ms, r.p50_ms - base_p50),
        );
    }
    println!("largest audience with < 1% loss: {best_ok} viewers (target >= 50)");

    // What defending costs: the same audience in alternating turns, without and with a flood of
    // datagrams from unknown addresses (each reaches a session only as a STUN check for its
    // ufrag: a map lookup, then dropped).
    let rate: u64 = bench::setting("BENCH_FLOOD_PPS", 20_000, 5_000);
    let target = service.media().plane().unwrap().server.addresses()[0];
    let turns: usize = bench::setting("BENCH_TURNS", 3, 1);
    let (mut clean, mut flooded) = (Vec::new(), Vec::new());
    let flood_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..turns {
        clean.push(measure(&viewers, &log, secs).await);
        let stop_flood = Arc::new(AtomicBool::new(false));
        let attacker = flood(target, rate, stop_flood.clone(), flood_sent.clone());
        flooded.push(measure(&viewers, &log, secs).await);
        stop_flood.store(true, Ordering::Relaxed);
        let _ = attacker.await;
    }
    let mean = |rs: &[Round], f: fn(&Round) -> f64| rs.iter().map(f).sum::<f64>() / rs.len() as f64;
    let (clean_loss, flood_loss) = (mean(&clean, |r| r.loss_pct), mean(&flooded, |r| r.loss_pct));
    let (clean_p50, flood_p50) = (mean(&clean, |r| r.p50_ms), mean(&flooded, |r| r.p50_ms));
    let delivered = |loss: f64| 100.0 - loss;
    println!(
        "defence cost at {} viewers, {turns} turns of {secs} s each way, flood {rate} datagrams/s ({} sent):",
        viewers.len(),
        flood_sent.load(Ordering::Relaxed)
    );
    println!("{:>22} {:>12} {:>10}", "", "loss (%)", "p50 (ms)");
    println!("{:>22} {:>12.3} {:>10.2}", "clean", clean_loss, clean_p50);
    println!("{:>22} {:>12.3} {:>10.2}", "under a stranger flood", flood_loss, flood_p50);
    let change = (delivered(flood_loss) / delivered(clean_loss) - 1.0) * 100.0;
    println!("frames delivered under the flood: {change:+.2} % against the clean turns");
    bench::check(change >= -5.0, format!("the flood costs the viewers {change:+.2} % of their frames (bound -5 %)"));
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.await;
}
