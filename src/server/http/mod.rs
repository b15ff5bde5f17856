//! HTTP surface: the public REST contract under `/api`, `/health`, `/ws`, and the app's pages.

pub mod client;
pub mod extract;
pub mod guard;
pub mod handlers;
pub mod media;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod session;
pub mod ws;

use crate::server::service::Service;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{delete, get, post};
use axum::Router;
use leptos::config::LeptosOptions;
use middleware::RateLimiter;
use std::sync::Arc;

/// What every handler and middleware is given. Cheap to clone (one reference count): axum
/// clones it for each request and each stateful middleware layer.
#[derive(Clone)]
pub struct AppState(Arc<AppStateParts>);

impl AppState {
    pub fn new(parts: AppStateParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateParts;
    fn deref(&self) -> &AppStateParts {
        &self.0
    }
}

pub struct AppStateParts {
    pub service: Arc<Service>,
    pub leptos_options: LeptosOptions,
    pub api_key: Arc<str>,
    /// Signs the session and viewer cookies.
    pub cookie_key: Arc<str>,
    pub limiter: Arc<RateLimiter>,
    /// What each anonymous client may take of the pages, media and sockets.
    pub guards: Arc<guard::Guards>,
    pub requests: Arc<metrics::RequestMetrics>,
    /// Turns true when the server shuts down; long-lived connections close on it.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// Routes of the public contract, relative to `/api`.
pub fn api_router(state: &AppState) -> Router<AppState> {
    use handlers as h;
    Router::new()
        .route("/health", get(h::health))
        .route("/openapi.json", get(openapi_json))
        .route("/token/viewer", post(h::viewer_token))
        .route("/token/publisher", post(h::publisher_token))
        .route("/token/mediaserver", post(h::mediaserver_token))
        .route("/viewer/heartbeat", post(h::heartbeat))
        .route("/viewer/leave", post(h::leave))
        .route("/viewer/rejoin", post(h::rejoin))
        .route("/viewer/list/{*stage_arn}", get(h::viewer_list))
        .route("/viewer/duration", get(h::viewer_duration))
        .route("/viewer/history/{user_id}", get(h::viewer_history))
        .route("/viewer/stats/{*stage_arn}", get(h::viewer_stats))
        .route("/stats", get(h::stats))
        .route("/stats/viewers", get(h::stats_viewers))
        .route("/stats/stages", get(h::stats_stages))
        .route("/stats/publisher", get(h::stats_publisher))
        .route("/channels", get(h::channel_list).post(h::channel_create))
        .route("/channels/{name}", get(h::channel_get).put(h::channel_update).delete(h::channel_delete))
        .route("/channels/{name}/stream-key", post(h::channel_rotate_key))
        .route("/stage", post(h::stage_create))
        .route("/stage/list", get(h::stage_list))
        .route("/stage/master/info", get(h::stage_master))
        .route("/stage/replication/start", post(h::replication_start))
        .route("/stage/replication/stop", delete(h::replication_stop))
        .route("/stage/replication/status/{*stage_arn}", get(h::replication_status))
        .route("/stage/{*stage_arn}", get(h::stage_get).put(h::stage_update).delete(h::stage_delete))
        .fallback(h::api_not_found)
        .method_not_allowed_fallback(h::api_method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::require_api_key))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::rate_limit))
        .layer(axum::middleware::from_fn(middleware::envelope_errors))
        .layer(DefaultBodyLimit::max(state.service.settings().server.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(state.requests.clone(), metrics::track))
}

async fn openapi_json() -> axum::Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOC.get_or_init(openapi::document).clone())
}

/// The contract's routes outside the app pages: `/api/*`, `/health`, `/ws`.
pub fn contract_router(state: &AppState) -> Router<AppState> {
    Router::new()
        .nest("/api", api_router(state))
        .route("/health", get(handlers::health).layer(axum::middleware::from_fn(middleware::envelope_errors)))
        .route("/ws", get(ws::ws_handler))
        .merge(media::media_router().layer(axum::middleware::from_fn_with_state(state.requests.clone(), metrics::track)))
        .route("/metrics", get(metrics::metrics))
        .route("/live", get(metrics::live))
        .route("/ready", get(metrics::ready).layer(axum::middleware::from_fn(middleware::envelope_errors)))
}
