//! WebSocket fan-out: N `/ws` subscribers on one instance (the server binary, in its own
//! process). One change is made; the bench prints the time until the last subscriber has the
//! update, the median, and the server's memory per subscribed socket.
//!
//!   cargo bench --features ssr --bench fanout          # BENCH_SUBSCRIBERS (10000)

use futures_util::{SinkExt, StreamExt};
use livestage::testing::bench;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Barrier};
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let n: usize = bench::setting("BENCH_SUBSCRIBERS", 10_000, 300);
    let mut server = bench::server(env!("CARGO_BIN_EXE_livestage"), &[]);
    let client = reqwest::Client::new();
    server.wait_ready(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_mb();

    let ws_url = format!("{}/ws", server.base.replace("http://", "ws://"));
    let ready = Arc::new(Barrier::new(n + 1));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Instant>();
    let started = Instant::now();
    let connect_slots = Arc::new(tokio::sync::Semaphore::new(256));
    for _ in 0..n {
        let (url, ready, done, slots) = (ws_url.clone(), ready.clone(), done_tx.clone(), connect_slots.clone());
        tokio::spawn(async move {
            let permit = slots.acquire_owned().await.unwrap();
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connects");
            ws.send(Message::Text(r#"{"action":"subscribe","channel":"stats"}"#.into())).await.unwrap();
            // "subscribed", then the first stats_update
            let mut seen = 0;
            while seen < 2 {
                if let Some(Ok(Message::Text(_))) = ws.next().await {
                    seen += 1;
                }
            }
            drop(permit);
            ready.wait().await;
            // bounded: the change comes right after every subscriber is in
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
                if let Message::Text(t) = m {
                    if t.as_str().contains("\"activeStages\":2") {
                        let _ = done.send(Instant::now());
                        break;
                    }
                }
            }
            // keep the socket open until the bench ends
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
    }
    drop(done_tx);
    ready.wait().await;
    let connected_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_mb();

    // The change: a new stage, so activeStages goes 1 → 2 for everyone.
    let changed = Instant::now();
    let r = client
        .post(format!("{}/api/stage", server.base))
        .header("x-api-key", bench::API_KEY)
        .json(&serde_json::json!({ "name": "fanout-bench" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "stage created: {}", r.status());
    let mut lat: Vec<f64> = Vec::with_capacity(n);
    while let Some(at) = done_rx.recv().await {
        lat.push(at.duration_since(changed).as_secs_f64() * 1000.0);
        if lat.len() == n {
            break;
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!("WebSocket fan-out: {n} subscribers on one instance (connected in {:.1} s)", connected_in.as_secs_f64());
    println!("  updated: {} of {n}", lat.len());
    println!("  change → first subscriber: {:.1} ms", bench::percentile(&lat, 0.0));
    println!("  change → median subscriber: {:.1} ms", bench::percentile(&lat, 0.5));
    println!("  change → last subscriber: {:.1} ms (target <= 1000)", lat.last().copied().unwrap_or(f64::NAN));
    println!(
        "  server RSS: {rss_before:.1} MiB idle, {rss_after:.1} MiB with {n} sockets = {:.1} KiB per socket",
        (rss_after - rss_before) * 1024.0 / n as f64
    );
    bench::check(lat.len() == n, format!("every subscriber updated ({} of {n})", lat.len()));
    let last = lat.last().copied().unwrap_or(f64::INFINITY);
    bench::check(last <= 10_000.0, format!("last subscriber after {last:.1} ms, within 10x of the 1000 ms target"));
}
