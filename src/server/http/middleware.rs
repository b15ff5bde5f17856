//! API key check, per-IP rate limit, and the envelope for framework-generated errors.

use super::AppState;
use crate::api::ErrorCode;
use crate::server::error::{error_response, AppError};
use crate::server::support::secrets_match;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// These middlewares run inside the router nested at `/api`, so they see paths without it.

/// Paths under `/api` that need no API key.
fn is_public(path: &str) -> bool {
    path == "/health" || path == "/openapi.json"
}

/// Paths exempt from the per-IP limit: health checks, and the calls that keep a viewer
/// present (a rate-limited heartbeat would drop a viewer who is still watching).
fn is_unlimited(path: &str) -> bool {
    matches!(path, "/health" | "/viewer/heartbeat" | "/viewer/leave")
}

pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    match given {
        Some(key) if secrets_match(key, &state.api_key) => next.run(req).await,
        Some(_) => AppError::new(ErrorCode::Unauthorized, "Invalid API key").into_response(),
        None => AppError::new(ErrorCode::Unauthorized, "Missing API key (x-api-key header)").into_response(),
    }
}

/// Fixed-window request counter per client IP.
pub struct RateLimiter {
    window: Duration,
    max: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(window: Duration, max: u32) -> Self {
        Self { window, max, windows: Mutex::new(HashMap::new()) }
    }

    /// `Ok` when allowed; `Err(seconds until the window resets)` when over the limit.
    pub fn check(&self, ip: IpAddr) -> Result<u32, u64> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs_f64().ceil() as u64);
        }
        entry.1 += 1;
        Ok(self.max - entry.1)
    }
}

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_unlimited(req.uri().path()) {
        return next.run(req).await;
    }
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match state.limiter.check(ip) {
        Ok(remaining) => {
            let mut resp = next.run(req).await;
            resp.headers_mut().insert("ratelimit-remaining", remaining.into());
            resp
        }
        Err(retry_after_secs) => AppError::RateLimited { retry_after_secs }.into_response(),
    }
}

/// Replaces bodies of errors produced outside our handlers (unmatched method, oversized body,
/// undecodable path) with the envelope.
pub async fn envelope_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json =
        resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (ErrorCode::MethodNotAllowed, "Method not allowed on this path"),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "Request body is too large"),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "Route not found"),
        StatusCode::UNAUTHORIZED => (ErrorCode::Unauthorized, "Unauthorized"),
        StatusCode::TOO_MANY_REQUESTS => (ErrorCode::TooManyRequests, "Too many requests"),
        s if s.is_client_error() => (ErrorCode::ValidationError, "Bad request"),
        _ => (ErrorCode::InternalError, "Internal server error"),
    };
    let mut out = error_response(code, message, None);
    if let Some(allow) = resp.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}
