//! SFU across channels: 10 channels of 20 WHEP viewers each against one channel of 200, in the
//! same run (the single channel is the baseline). Every channel has its own 720p / 2.5 Mbps
//! publisher over WHIP, all real WebRTC (ICE, DTLS, SRTP) over loopback through the embedded
//! media server. For each scenario it prints the video frame loss and the latency (publisher
//! write → viewer frame), then the difference of the many-channel run against the baseline.
//!
//!   cargo bench --features ssr --bench channels
//!
//! Settings (environment): BENCH_CHANNELS (10), BENCH_VIEWERS_PER_CHANNEL (20), BENCH_SECS (5);
//! the baseline puts BENCH_CHANNELS × BENCH_VIEWERS_PER_CHANNEL viewers on one channel.
//! Each channel's media is its own (a per-channel seed in the VP8 bytes, a per-channel tag in
//! the Opus packets): a viewer that receives a frame of any other channel, or one that no
//! publisher sent, fails the run (exit code 1), smoke run or not.
//! The viewers run in this process too, so the machine also pays for their decryption: the
//! figures are a lower bound for the server alone.

use livestage::server::clock::SystemClock;
use livestage::server::config::Settings;
use livestage::server::service::Service;
use livestage::server::startup::Application;
use livestage::testing::bench;
use livestage::testing::media;
use livestage::testing::peer::{open_session, PeerEvent, PeerHandle, PeerRole, Session, VideoCodec};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use str0m::media::MediaKind;

const FPS: u64 = 30;
const BITRATE: u64 = 2_500_000;
const GOP: u64 = 60;

/// One channel's video send times, by RTP timestamp.
type SendLog = Arc<Mutex<HashMap<u64, Instant>>>;
/// The channel (its number in the run) of every video frame sent, by [`fingerprint`].
type Origins = Arc<Mutex<HashMap<u64, usize>>>;

/// The seed of channel number `id` (unique across the run): it goes into every frame the
/// channel's publisher sends.
fn channel_seed(id: usize) -> u64 {
    (id as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03)
}

/// Synthetic VP8 frame `n` of a 2.5 Mbps 720p stream (a keyframe every 2 s, sized like a real
/// encoder's output), its bytes drawn from `n` and the channel's `seed`.
fn frame(n: u64, seed: u64) -> Vec<u8> {
    let per_gop = BITRATE / 8 * GOP / FPS;
    let key = n.is_multiple_of(GOP);
    let len = if key { per_gop / 4 } else { (per_gop - per_gop / 4) / (GOP - 1) } as usize;
    media::vp8_frame(len, (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed) | 1, key.then_some((1280, 720)))
}

/// Eight bytes of a video frame past a keyframe's header: drawn from the frame's seed, they tell
/// the frames of different channels apart.
fn fingerprint(data: &[u8]) -> Option<u64> {
    data.get(10..18).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

/// A 20 ms Opus packet that carries its channel's `seed` after the TOC byte.
fn audio_packet(seed: u64) -> Vec<u8> {
    let mut p = vec![0xfc; 160];
    p[1..9].copy_from_slice(&seed.to_le_bytes());
    p
}

fn audio_tag(data: &[u8]) -> Option<u64> {
    data.get(1..9).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

fn publish(peer: PeerHandle, id: usize, log: SendLog, origins: Origins, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut peer = peer;
        let seed = channel_seed(id);
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
                let data = frame(n, seed);
                if let Some(fp) = fingerprint(&data) {
                    origins.lock().unwrap().insert(fp, id);
                }
                log.lock().unwrap().insert(ts, Instant::now());
                peer.send_video(data, ts);
                v += 1;
            }
            if ms >= a * 20 {
                peer.send_audio(audio_packet(seed), a * 960);
                a += 1;
            }
        }
    })
}

struct Publisher {
    location: String,
    token: String,
    log: SendLog,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

struct Viewer {
    location: String,
    token: String,
    /// RTP time and arrival of every video frame of its own channel.
    received: Arc<Mutex<Vec<(u64, Instant)>>>,
    /// Frames (video or audio) of another channel of the run.
    foreign: Arc<AtomicUsize>,
    /// Frames (video or audio) that no publisher of the run sent.
    unknown: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// A channel of a scenario: its number in the run, its publisher and its viewers.
struct Channel {
    id: usize,
    name: String,
    publisher: Publisher,
    viewers: Vec<Viewer>,
}

/// What every scenario shares: the server, its HTTP client and where each frame came from.
struct Bench {
    client: reqwest::Client,
    base: String,
    service: Arc<Service>,
    origins: Origins,
    /// The channel number of every channel seed of the run.
    seeds: Arc<Mutex<HashMap<u64, usize>>>,
    /// The number the next channel gets.
    next_id: usize,
}

async fn api(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let r = client.post(format!("{base}{path}")).header("x-api-key", bench::API_KEY).json(&body).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], true, "{path}: {v}");
    v["data"].clone()
}

impl Bench {
    /// Creates channel `name` and puts its publisher live on it.
    async fn add_channel(&mut self, name: &str) -> Channel {
        let id = self.next_id;
        self.next_id += 1;
        self.seeds.lock().unwrap().insert(channel_seed(id), id);
        let d = api(&self.client, &self.base, "/api/channels", json!({ "name": name })).await;
        assert_eq!(d["channel"]["name"], name, "{d}");
        let body = json!({ "userId": format!("bench-publisher-{name}"), "channel": name });
        let d = api(&self.client, &self.base, "/api/token/publisher", body).await;
        let (whip, token) = (d["whipEndpoint"].as_str().unwrap(), d["token"].as_str().unwrap().to_string());
        let Session { peer, location } =
            open_session(&self.client, whip, &token, PeerRole::Publish, VideoCodec::Vp8, Duration::from_secs(10)).await;
        let log: SendLog = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = publish(peer, id, log.clone(), self.origins.clone(), stop.clone());
        Channel { id, name: name.to_string(), publisher: Publisher { location, token, log, stop, task }, viewers: Vec::new() }
    }

    /// Plays channel `name` (number `id`) as viewer `i` of it.
    async fn add_viewer(&self, name: &str, id: usize, i: usize) -> Viewer {
        let body = json!({ "userId": format!("bench-viewer-{name}-{i}"), "channel": name });
        let d = api(&self.client, &self.base, "/api/token/viewer", body).await;
        let token = d["token"].as_str().unwrap().to_string();
        let whep = d["whepEndpoint"].as_str().unwrap();
        let Session { mut peer, location } =
            open_session(&self.client, whep, &token, PeerRole::Play, VideoCodec::Vp8, Duration::from_secs(10)).await;
        let received = Arc::new(Mutex::new(Vec::new()));
        let (foreign, unknown) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (sink, other, stray) = (received.clone(), foreign.clone(), unknown.clone());
        let (origins, seeds) = (self.origins.clone(), self.seeds.clone());
        let task = tokio::spawn(async move {
            while let Some(ev) = peer.events.recv().await {
                let PeerEvent::Frame { kind, data, rtp_time, at, .. } = ev else { continue };
                let from = match kind {
                    MediaKind::Video => fingerprint(&data).and_then(|fp| origins.lock().unwrap().get(&fp).copied()),
                    MediaKind::Audio => audio_tag(&data).and_then(|t| seeds.lock().unwrap().get(&t).copied()),
                };
                match from {
                    Some(c) if c == id => {
                        if kind == MediaKind::Video {
                            sink.lock().unwrap().push((rtp_time, at));
                        }
                    }
                    Some(_) => {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        stray.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Viewer { location, token, received, foreign, unknown, task }
    }

    /// Runs `channels` channels (`{label}-1`, …) of `per_channel` viewers each for `secs`.
    async fn scenario(&mut self, label: &str, channels: usize, per_channel: usize, secs: u64) -> Round {
        let mut live = Vec::new();
        for c in 1..=channels {
            live.push(self.add_channel(&format!("{label}-{c}")).await);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for ch in live.iter_mut() {
            for i in 0..per_channel {
                let viewer = self.add_viewer(&ch.name, ch.id, i).await;
                ch.viewers.push(viewer);
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await; // every viewer past its first keyframe
        let stats = self.service.media().plane().unwrap().server.stats();
        let bytes_before = stats.bytes_forwarded.load(Ordering::Relaxed);
        let mut r = measure(&live, secs).await;
        let bytes = stats.bytes_forwarded.load(Ordering::Relaxed) - bytes_before;
        r.egress_mbps = bytes as f64 * 8.0 / (secs as f64 + 0.5) / 1e6;
        r.channels = channels;

        for ch in live {
            for v in ch.viewers {
                r.foreign += v.foreign.load(Ordering::Relaxed);
                r.unknown += v.unknown.load(Ordering::Relaxed);
                let _ = self.client.delete(&v.location).bearer_auth(&v.token).send().await;
                v.task.abort();
            }
            let p = ch.publisher;
            p.stop.store(true, Ordering::Relaxed);
            let _ = p.task.await;
            let _ = self.client.delete(&p.location).bearer_auth(&p.token).send().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        r
    }
}

#[derive(Default)]
struct Round {
    channels: usize,
    viewers: usize,
    loss_pct: f64,
    p50_ms: f64,
    p95_ms: f64,
    egress_mbps: f64,
    /// Viewers that got no frame of the window.
    starved: usize,
    foreign: usize,
    unknown: usize,
}

/// Frame loss and latency of every viewer of `channels` over `secs`, each against its own
/// channel's publisher.
async fn measure(channels: &[Channel], secs: u64) -> Round {
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let window_end = Instant::now();
    // let the last frames of the window arrive
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    let (mut got, mut expected, mut viewers, mut starved) = (0usize, 0usize, 0usize, 0usize);
    for ch in channels {
        let sent: HashMap<u64, Instant> = ch
            .publisher
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t)| **t >= window_start && **t < window_end)
            .map(|(k, v)| (*k, *v))
            .collect();
        for v in &ch.viewers {
            let mut mine = 0;
            for (ts, at) in v.received.lock().unwrap().iter() {
                if let Some(t) = sent.get(ts) {
                    mine += 1;
                    latencies.push(at.duration_since(*t).as_secs_f64() * 1000.0);
                }
            }
            got += mine;
            starved += usize::from(mine == 0);
            expected += sent.len();
            viewers += 1;
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Round {
        viewers,
        loss_pct: if expected == 0 { 100.0 } else { 100.0 * (1.0 - got as f64 / expected as f64) },
        p50_ms: bench::percentile(&latencies, 0.5),
        p95_ms: bench::percentile(&latencies, 0.95),
        starved,
        ..Round::default()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let channels: usize = bench::setting("BENCH_CHANNELS", 10, 3);
    let per_channel: usize = bench::setting("BENCH_VIEWERS_PER_CHANNEL", 20, 2);
    let secs: u64 = bench::setting("BENCH_SECS", 5, 2);
    assert!(channels >= 1 && per_channel >= 1, "BENCH_CHANNELS and BENCH_VIEWERS_PER_CHANNEL must be at least 1");

    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults();
    settings.server.site_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.server.api_secret_key = Some(bench::API_KEY.into());
    settings.stage.autoscale = false;
    settings.stage.max_viewers_per_stage = 100_000;
    settings.stage.scale_up_threshold = 100_000;
    // a master stage per channel, the baseline's included
    settings.stage.max_stages = 64.max(channels as u32 + 8);
    settings.stage.max_stages_per_channel = settings.stage.max_stages;
    settings.rate_limit.max_requests = 1_000_000;
    settings.media.udp_port = 0;
    livestage::testing::lift_client_limits(&mut settings);
    let app = Application::build_with_clock(settings, Arc::new(SystemClock)).await.expect("app builds");
    app.service().readiness().wait_for(|ready| *ready).await.expect("the stage backend is set up");
    let base = format!("http://127.0.0.1:{}", app.port());
    let service = app.service();
    tokio::spawn(app.run_until_stopped());
    let mut b =
        Bench { client: reqwest::Client::new(), base, service, origins: Arc::default(), seeds: Arc::default(), next_id: 0 };

    let total = channels * per_channel;
    println!(
        "SFU across channels: one publisher per channel, VP8 720p {} kbps @ {FPS} fps + Opus, {secs} s per scenario",
        BITRATE / 1000
    );
    println!(
        "{:>16} {:>9} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "scenario", "channels", "viewers", "loss (%)", "p50 (ms)", "p95 (ms)", "egress Mbps"
    );
    let row = |name: &str, r: &Round| {
        println!(
            "{:>16} {:>9} {:>8} {:>10.3} {:>10.2} {:>10.2} {:>12.1}",
            name, r.channels, r.viewers, r.loss_pct, r.p50_ms, r.p95_ms, r.egress_mbps
        );
    };
    let base_name = format!("1 x {total}");
    let many_name = format!("{channels} x {per_channel}");
    let single = b.scenario("solo", 1, total, secs).await;
    row(&base_name, &single);
    let many = b.scenario("multi", channels, per_channel, secs).await;
    row(&many_name, &many);
    let diff = |x: f64, base: f64| 100.0 * (x - base) / base;
    println!(
        "{many_name} against {base_name}: loss {:+.3} points, p50 {:+.1} %, p95 {:+.1} %",
        many.loss_pct - single.loss_pct,
        diff(many.p50_ms, single.p50_ms),
        diff(many.p95_ms, single.p95_ms)
    );
    println!(
        "frames of another channel: {} ({base_name}), {} ({many_name}); frames of no channel: {}, {}",
        single.foreign, many.foreign, single.unknown, many.unknown
    );

    for (name, r) in [(&base_name, &single), (&many_name, &many)] {
        let ok = r.foreign == 0 && r.unknown == 0;
        let what = format!(
            "{name}: every viewer got only its own channel's frames ({} of another channel, {} of none)",
            r.foreign, r.unknown
        );
        bench::check(ok, &what);
        if !ok {
            eprintln!("FAILED: {what}");
            std::process::exit(1);
        }
    }
    for (name, r) in [(&base_name, &single), (&many_name, &many)] {
        bench::check(r.loss_pct < 20.0, format!("{name}: {:.3} % frame loss (bound 20 %)", r.loss_pct));
        bench::check(r.starved == 0, format!("{name}: {} of {} viewers got no frame", r.starved, r.viewers));
    }
    bench::check(
        many.p50_ms - single.p50_ms <= 50.0,
        format!("{many_name}: p50 {:.2} ms, {:.2} ms over {base_name} (bound 50 ms)", many.p50_ms, many.p50_ms - single.p50_ms),
    );
}
