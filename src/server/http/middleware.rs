//! API key check, per-IP rate limit, and the envelope for framework-generated errors.

use super::client::{Client, ClientKey};
use super::AppState;
use crate::api::ErrorCode;
use crate::server::error::{error_response, AppError};
use crate::server::support::secrets_match;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
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

/// Most clients a limiter tracks at once; past it, new clients are refused until the next
/// sweep (it fails closed rather than grow).
const MAX_CLIENTS: usize = 200_000;

/// Fixed-window request counter per client. Windows that ended are swept once per window, so
/// no request pays for a scan of the whole map.
pub struct RateLimiter {
    window: Duration,
    max: u32,
    windows: Mutex<Windows>,
}

struct Windows {
    counts: HashMap<ClientKey, (Instant, u32)>,
    swept: Instant,
}

impl RateLimiter {
    pub fn new(window: Duration, max: u32) -> Self {
        Self { window, max, windows: Mutex::new(Windows { counts: HashMap::new(), swept: Instant::now() }) }
    }

    /// `Ok(requests left)` when allowed; `Err(seconds until the window resets)` when over the limit.
    pub fn check(&self, client: ClientKey) -> Result<u32, u64> {
        let now = Instant::now();
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(w.swept) >= self.window {
            let window = self.window;
            w.counts.retain(|_, (start, _)| now.duration_since(*start) < window);
            w.swept = now;
        }
        if w.counts.len() >= MAX_CLIENTS && !w.counts.contains_key(&client) {
            return Err(self.window.saturating_sub(now.duration_since(w.swept)).as_secs_f64().ceil() as u64);
        }
        let entry = w.counts.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        entry.1 += 1;
        Ok(self.max - entry.1)
    }
}

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_unlimited(req.uri().path()) {
        return next.run(req).await;
    }
    let client = Client::of_request(&req);
    match state.limiter.check(client.key) {
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
    envelope(next.run(req).await)
}

fn envelope(resp: Response) -> Response {
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

/// The prefix of the server functions' routes (`/api/<name><hash>`): they are routes of their
/// own, outside the contract's `/api` router and its layers.
const SERVER_FN_PREFIX: &str = "/api/";

/// The server functions' routes: the pages' own per-client budget, calls from this site only
/// (`Origin`, `Sec-Fetch-Site`) with a body a browser's fetch or beacon sends (JSON or a form;
/// never `text/plain`, which a cross-site form can post without asking), and errors in the
/// contract's envelope with its status.
pub async fn server_fns(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(SERVER_FN_PREFIX) {
        return next.run(req).await;
    }
    let client = Client::of_request(&req);
    if let Err(retry_after_secs) = state.guards.pages.check(client.key) {
        return AppError::RateLimited { retry_after_secs }.into_response();
    }
    if let Err(e) = from_this_site(&req, &state) {
        return e.into_response();
    }
    if let Err(e) = super::extract::declared_within(req.headers(), state.service.settings().server.body_limit_bytes) {
        super::extract::discard(req.into_body()).await;
        return e.into_response();
    }
    let resp = next.run(req).await;
    server_fn_error(resp).await
}

fn from_this_site(req: &Request, state: &AppState) -> Result<(), AppError> {
    let headers = req.headers();
    let forbidden = || AppError::new(ErrorCode::Forbidden, "Server functions answer calls from this site's pages only");
    if headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site") {
        return Err(forbidden());
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
        let settings = state.service.settings();
        let public =
            settings.server.public_url.as_deref().and_then(|u| u.split_once("://")).map(|(_, h)| h.trim_end_matches('/'));
        let allowed = (!host.is_empty() && origin_host.eq_ignore_ascii_case(host))
            || public.is_some_and(|p| origin_host.eq_ignore_ascii_case(p))
            || settings.server.cors_origins.iter().any(|o| o == &origin);
        if !allowed {
            return Err(forbidden());
        }
    }
    if req.method() == axum::http::Method::POST {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if !(mime.eq_ignore_ascii_case("application/json") || mime.eq_ignore_ascii_case("application/x-www-form-urlencoded")) {
            return Err(AppError::new(
                ErrorCode::UnsupportedMediaType,
                "Send the arguments as application/json (or a form for the ones that take one)",
            ));
        }
    }
    Ok(())
}

/// A server function's error with its code's status (server_fn answers every error with 500)
/// and in the full envelope; framework errors (an oversized body, an unknown function) too.
async fn server_fn_error(resp: Response) -> Response {
    if resp.headers().contains_key(server_fn_error_header()) {
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
        let e: crate::api::RpcError = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| crate::api::RpcError::new(ErrorCode::InternalError, "Internal server error"));
        use crate::api::RpcError;
        let (code, message) = match &e {
            RpcError::Api { code, message } => (*code, message.as_str()),
            // A body past the limit (sent without a length) fails while it is read.
            RpcError::Call(c) if c.to_string().contains("length limit exceeded") => {
                (ErrorCode::PayloadTooLarge, "Request body is too large")
            }
            // On the server, a body that does not deserialize is the caller's arguments.
            RpcError::Call(leptos::server_fn::error::ServerFnErrorErr::Deserialization(_)) => {
                (ErrorCode::ValidationError, "The arguments are not valid")
            }
            RpcError::Call(_) if e.code() == ErrorCode::ValidationError => {
                (ErrorCode::ValidationError, "The arguments are not valid")
            }
            RpcError::Call(_) => (e.code(), "Internal server error"),
        };
        let mut out = error_response(code, message, None);
        if let Some(v) = parts.headers.get(server_fn_error_header()) {
            out.headers_mut().insert(server_fn_error_header(), v.clone());
        }
        return out;
    }
    let status = resp.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
        return envelope(resp);
    }
    resp
}

fn server_fn_error_header() -> header::HeaderName {
    header::HeaderName::from_static(leptos::server_fn::error::SERVER_FN_ERROR_HEADER)
}

/// Headers of the app's pages: none may be framed by another site (clickjacking), nor its
/// type guessed, and the studio and dashboard (whose HTML carries a publisher token or the
/// channels' administration) are never cached.
pub async fn page_headers(req: Request, next: Next) -> Response {
    let private = {
        let path = req.uri().path();
        path == "/broadcast" || path == "/dashboard" || (path.starts_with("/c/") && path.ends_with("/broadcast"))
    };
    let mut resp = next.run(req).await;
    let html = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
    let h = resp.headers_mut();
    if html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static("frame-ancestors 'none'; base-uri 'self'; object-src 'none'; form-action 'self'"),
        );
        h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    if private {
        h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    }
    resp
}
