//! Operations endpoints: `/metrics` (Prometheus text format), `/live` (the process answers) and
//! `/ready` (it can serve: the stage backend is set up, the database answers and it is not
//! shutting down).

use super::AppState;
use crate::api::ErrorCode;
use crate::server::error::AppError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the request-duration histogram.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// One (route, method, status) series, updated without locks.
#[derive(Default)]
struct AtomicSeries {
    count: AtomicU64,
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl AtomicSeries {
    fn snapshot(&self) -> Series {
        Series {
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

type ByMethodStatus = RwLock<HashMap<(&'static str, u16), Arc<AtomicSeries>>>;

/// The method as a label from a fixed set: a client chooses the method it sends, so any other
/// is `OTHER` (each distinct label is a series kept for good).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Request counts and latencies by route, then method and status. Recording a request of a
/// kind seen before takes two shared read locks and a few atomic adds: it stays off the hot
/// path's critical section.
#[derive(Default)]
pub struct RequestMetrics {
    series: RwLock<HashMap<String, Arc<ByMethodStatus>>>,
}

impl RequestMetrics {
    fn record(&self, method: &'static str, route: &str, status: u16, took: Duration) {
        let by_route = {
            let known = self.series.read().unwrap_or_else(|e| e.into_inner()).get(route).cloned();
            match known {
                Some(b) => b,
                None => self.series.write().unwrap_or_else(|e| e.into_inner()).entry(route.to_string()).or_default().clone(),
            }
        };
        let key = (method, status);
        let series = {
            let known = by_route.read().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
            match known {
                Some(s) => s,
                None => by_route.write().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone(),
            }
        };
        let secs = took.as_secs_f64();
        series.count.fetch_add(1, Ordering::Relaxed);
        series.sum_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                series.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn render(&self, out: &mut String) {
        let mut rows: Vec<(String, String, u16, Series)> = Vec::new();
        for (route, by) in self.series.read().unwrap_or_else(|e| e.into_inner()).iter() {
            for ((m, st), s) in by.read().unwrap_or_else(|e| e.into_inner()).iter() {
                rows.push((m.to_string(), route.clone(), *st, s.snapshot()));
            }
        }
        rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        out.push_str("# HELP livestage_http_requests_total Requests answered, by method, route and status.\n");
        out.push_str("# TYPE livestage_http_requests_total counter\n");
        for (m, r, st, s) in &rows {
            let _ = writeln!(out, "livestage_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}} {}", s.count);
        }
        out.push_str("# HELP livestage_http_request_duration_seconds Time to answer, by method and route.\n");
        out.push_str("# TYPE livestage_http_request_duration_seconds histogram\n");
        let mut by_route: BTreeMap<(&str, &str), Series> = BTreeMap::new();
        let rows: Vec<(&str, &str, u16, &Series)> = rows.iter().map(|(m, r, st, s)| (m.as_str(), r.as_str(), *st, s)).collect();
        for (m, r, _, s) in &rows {
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
            let _ = writeln!(
                out,
                "livestage_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "livestage_http_request_duration_seconds_sum{{method=\"{m}\",route=\"{r}\"}} {}", s.sum);
            let _ = writeln!(out, "livestage_http_request_duration_seconds_count{{method=\"{m}\",route=\"{r}\"}} {}", s.count);
        }
    }
}

/// Records every request of the routes it wraps, labelled by the route pattern (not the raw
/// path, so ARNs and user ids do not explode the series).
pub async fn track(State(metrics): State<Arc<RequestMetrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics.record(method, route, resp.status().as_u16(), started.elapsed());
    resp
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.service.settings().server.metrics_token {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| crate::server::support::secrets_match(g.trim(), token.expose())) {
            return AppError::new(ErrorCode::Unauthorized, "Send the metrics token as Authorization: Bearer <token>")
                .into_response();
        }
    }
    let service = &state.service;
    let channels = service.hub().all();
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP livestage_viewers Viewers present, by stage.\n# TYPE livestage_viewers gauge\n");
    for (channel, stats) in &channels {
        for s in &stats.stages {
            let _ = writeln!(out, "livestage_viewers{{stage=\"{}\",channel=\"{channel}\"}} {}", s.stage_arn, s.viewer_count);
        }
    }
    let total: u32 = channels.iter().map(|(_, s)| s.total_viewers).sum();
    gauge(&mut out, "livestage_viewers_total", "Viewers present on every stage.", total);
    let stages: u32 = channels.iter().map(|(_, s)| s.active_stages).sum();
    gauge(&mut out, "livestage_stages", "Stages this deployment manages.", stages);
    gauge(&mut out, "livestage_channels", "Channels, the default one included.", channels.len());
    let live = channels.iter().filter(|(_, s)| s.is_publisher_live).count();
    gauge(&mut out, "livestage_channels_live", "Channels whose publisher is live.", live);
    out.push_str(
        "# HELP livestage_publisher_live 1 while the channel's publisher is live.\n# TYPE livestage_publisher_live gauge\n",
    );
    for (channel, stats) in &channels {
        let _ = writeln!(out, "livestage_publisher_live{{channel=\"{channel}\"}} {}", u8::from(stats.is_publisher_live));
    }
    gauge(
        &mut out,
        "livestage_ws_subscribers",
        "WebSocket clients connected to this instance.",
        service.hub().subscriber_count(),
    );
    gauge(&mut out, "livestage_leader", "1 on the instance that runs cluster-wide jobs.", u8::from(service.is_leader()));
    counter(&mut out, "livestage_autoscale_steps_total", "Auto-scaling steps this instance ran.", service.autoscaler().steps());
    counter(
        &mut out,
        "livestage_heartbeats_total",
        "Heartbeats accepted by this instance.",
        service.presence().heartbeats_total(),
    );
    counter(
        &mut out,
        "livestage_db_write_transactions_total",
        "Write transactions this instance began (heartbeats are batched into few).",
        service.store().write_transactions(),
    );
    if let Some(media) = service.media().plane() {
        let m = media.server.stats();
        let _ = writeln!(
            out,
            "# HELP livestage_media_sessions Media sessions on this instance, by role.\n# TYPE livestage_media_sessions gauge\n\
             livestage_media_sessions{{role=\"publisher\"}} {}\nlivestage_media_sessions{{role=\"viewer\"}} {}",
            m.publishers.load(Ordering::Relaxed),
            m.viewers.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "livestage_media_frames_received_total",
            "Frames received from publishers.",
            m.frames_received.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "livestage_media_frames_forwarded_total",
            "Frames written to viewers.",
            m.frames_forwarded.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "livestage_media_bytes_forwarded_total",
            "Media payload bytes written to viewers.",
            m.bytes_forwarded.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "livestage_media_datagrams_refused_total",
            "Datagrams dropped as they were read: not STUN, from an address no media session has.",
            m.datagrams_refused.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "livestage_media_keyframe_requests_total",
            "Keyframe requests sent to publishers.",
            m.keyframe_requests.load(Ordering::Relaxed),
        );
    }
    gauge(&mut out, "livestage_process_resident_memory_megabytes", "Resident set size.", crate::server::support::rss_mb());
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
    if !state.service.is_ready() {
        return Err(AppError::new(ErrorCode::ServiceUnavailable, "The stage backend is not set up yet"));
    }
    let db = tokio::time::timeout(Duration::from_secs(2), state.service.store().ping()).await;
    match db {
        Ok(Ok(())) => Ok(StatusCode::OK),
        _ => Err(AppError::new(ErrorCode::ServiceUnavailable, "The database is unavailable")),
    }
}
