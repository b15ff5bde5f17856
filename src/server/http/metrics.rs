//! Operations endpoints: `/metrics` (Prometheus text format), `/live` (the process answers) and
//! `/ready` (it can serve: the database answers and it is not shutting down).

use super::AppState;
use crate::server::error::AppError;
use crate::api::ErrorCode;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the request-duration histogram.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Request counts and latencies by method, route and status.
#[derive(Default)]
pub struct RequestMetrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
}

impl RequestMetrics {
    fn record(&self, method: &str, route: &str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.entry((method.to_string(), route.to_string(), status)).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
    }

    fn render(&self, out: &mut String) {
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP livestage_http_requests_total Requests answered, by method, route and status.\n");
        out.push_str("# TYPE livestage_http_requests_total counter\n");
        for ((m, r, st), s) in map.iter() {
            let _ = writeln!(out, "livestage_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}} {}", s.count);
        }
        out.push_str("# HELP livestage_http_request_duration_seconds Time to answer, by method and route.\n");
        out.push_str("# TYPE livestage_http_request_duration_seconds histogram\n");
        let mut by_route: BTreeMap<(&str, &str), Series> = BTreeMap::new();
        for ((m, r, _), s) in map.iter() {
            let agg = by_route.entry((m, r)).or_default();
            agg.count += s.count;
            agg.sum += s.sum;
            for i in 0..BUCKETS.len() {
                agg.buckets[i] += s.buckets[i];
            }
        }
        for ((m, r), s) in by_route {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "livestage_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"{bound}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(out, "livestage_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "livestage_http_request_duration_seconds_sum{{method=\"{m}\",route=\"{r}\"}} {}", s.sum);
            let _ = writeln!(out, "livestage_http_request_duration_seconds_count{{method=\"{m}\",route=\"{r}\"}} {}", s.count);
        }
    }
}

/// Records every request of the routes it wraps, labelled by the route pattern (not the raw
/// path, so ARNs and user ids do not explode the series).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    state.requests.record(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let service = &state.service;
    let stats = service.hub().current();
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP livestage_viewers Viewers present, by stage.\n# TYPE livestage_viewers gauge\n");
    for s in &stats.stages {
        let _ = writeln!(out, "livestage_viewers{{stage=\"{}\"}} {}", s.stage_arn, s.viewer_count);
    }
    gauge(&mut out, "livestage_viewers_total", "Viewers present on every stage.", stats.total_viewers);
    gauge(&mut out, "livestage_stages", "Stages this deployment manages.", stats.active_stages);
    gauge(&mut out, "livestage_publisher_live", "1 while the publisher is live.", u8::from(stats.is_publisher_live));
    gauge(&mut out, "livestage_ws_subscribers", "WebSocket clients connected to this instance.", service.hub().subscriber_count());
    gauge(&mut out, "livestage_leader", "1 on the instance that runs cluster-wide jobs.", u8::from(service.is_leader()));
    counter(&mut out, "livestage_autoscale_steps_total", "Auto-scaling steps this instance ran.", service.autoscale_steps());
    counter(&mut out, "livestage_heartbeats_total", "Heartbeats accepted by this instance.", service.heartbeats_total());
    counter(
        &mut out,
        "livestage_db_write_transactions_total",
        "Write transactions this instance began (heartbeats are batched into few).",
        service.store().write_transactions(),
    );
    if let Some(media) = service.media() {
        let m = media.server.stats();
        let _ = writeln!(
            out,
            "# HELP livestage_media_sessions Media sessions on this instance, by role.\n# TYPE livestage_media_sessions gauge\n\
             livestage_media_sessions{{role=\"publisher\"}} {}\nlivestage_media_sessions{{role=\"viewer\"}} {}",
            m.publishers.load(Ordering::Relaxed),
            m.viewers.load(Ordering::Relaxed)
        );
        counter(&mut out, "livestage_media_frames_received_total", "Frames received from publishers.", m.frames_received.load(Ordering::Relaxed));
        counter(&mut out, "livestage_media_frames_forwarded_total", "Frames written to viewers.", m.frames_forwarded.load(Ordering::Relaxed));
        counter(&mut out, "livestage_media_bytes_forwarded_total", "Media payload bytes written to viewers.", m.bytes_forwarded.load(Ordering::Relaxed));
        counter(&mut out, "livestage_media_keyframe_requests_total", "Keyframe requests sent to publishers.", m.keyframe_requests.load(Ordering::Relaxed));
    }
    gauge(&mut out, "livestage_process_resident_memory_megabytes", "Resident set size.", crate::server::service::rss_mb());
    state.requests.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

pub async fn live() -> StatusCode {
    StatusCode::OK
}

pub async fn ready(State(state): State<AppState>) -> Result<StatusCode, AppError> {
    if *state.shutdown.borrow() {
        return Err(AppError::new(ErrorCode::ServiceUnavailable, "Shutting down"));
    }
    let db = tokio::time::timeout(Duration::from_secs(2), state.service.store().ping()).await;
    match db {
        Ok(Ok(())) => Ok(StatusCode::OK),
        _ => Err(AppError::new(ErrorCode::ServiceUnavailable, "The database is unavailable")),
    }
}
