//! Builds the application: settings → store → backend → service → router. This is the only
//! place that picks implementations.

use crate::app::{shell, App};
use crate::server::backend::jwt::TokenSigner;
use crate::server::backend::local::LocalBackend;
use crate::server::backend::StageBackend;
use crate::server::clock::{Clock, SystemClock};
use crate::server::config::{BackendKind, Settings};
use crate::server::http::client::TrustedProxies;
use crate::server::http::metrics;
use crate::server::http::middleware::{self, RateLimiter};
use crate::server::http::session::{ApiKey, CookieKey};
use crate::server::http::{contract_router, AppState, AppStateParts};
use crate::server::media::{MediaServer, Participant};
use crate::server::publisher::PublisherSignal;
use crate::server::service::{count_connected_viewers, spawn_background_jobs, MediaPlane, Service};
use crate::server::store::{Store, StoreError};
use crate::server::support::{create_private_dir, make_private, random_id, write_private_file};
use axum::extract::DefaultBodyLimit;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("stage backend: {0}")]
    Backend(String),
    #[error("binding {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// The API key: configured, or read from the data dir, or generated there on first start (then
/// with the file it was saved to).
fn api_key(settings: &Settings) -> Result<(String, Option<std::path::PathBuf>), StartupError> {
    if let Some(key) = &settings.server.api_secret_key {
        return Ok((key.expose().to_string(), None));
    }
    let path = settings.server.data_dir.join("api-key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        let key = key.trim().to_string();
        if !key.is_empty() {
            return Ok((key, None));
        }
    }
    let key = format!("ls_{}", random_id(40));
    write_private_file(&path, key.as_bytes()).map_err(|e| StartupError::DataDir(path.display().to_string(), e))?;
    Ok((key, Some(path)))
}

/// Where the generated cookie key is kept (in the database: every instance shares it).
const COOKIE_KEY_SETTING: &str = "cookie_key";

/// What a first start tells its user: where the app is and what the generated key is for.
fn welcome(url: &str, key: &str, saved_to: &std::path::Path) -> String {
    format!(
        "\n  livestage is running at {url}\n\
         \n      watch       {url}/\
         \n      broadcast   {url}/broadcast\
         \n      dashboard   {url}/dashboard\n\
         \n  A new API key was generated and saved to {}:\n\
         \n      {key}\n\
         \n  Sign in to the studio ({url}/broadcast) with it to go live, and send it as the x-api-key\
         \n  header to the REST API ({url}/api/...). It is shown only on this first start; set\
         \n  API_SECRET_KEY to choose your own.\n",
        saved_to.display()
    )
}

fn leptos_options(site_addr: SocketAddr) -> LeptosOptions {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    LeptosOptions::builder()
        .output_name(env("LEPTOS_OUTPUT_NAME", "livestage"))
        .site_root(env("LEPTOS_SITE_ROOT", "target/site"))
        .site_pkg_dir(env("LEPTOS_SITE_PKG_DIR", "pkg"))
        .site_addr(site_addr)
        .build()
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    local: Option<PublisherSignal>,
    shutdown_tx: watch::Sender<bool>,
    /// Stops the background jobs: only once HTTP has drained, so the last heartbeats accepted
    /// are in the final flush.
    jobs_tx: watch::Sender<bool>,
    jobs: Vec<JoinHandle<()>>,
    /// Where the API key generated on this (first) start was saved.
    generated_key: Option<std::path::PathBuf>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Binds the listener first, then opens the store and builds the backend without calling
    /// it: setting the backend up (IVS: the signing key and the master stage) runs in the
    /// background and is retried until it succeeds, so the port answers `/health` (degraded)
    /// even while the stage backend is slow or failing.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let site_addr = settings.server.site_addr;
        let listener = TcpListener::bind(site_addr).await.map_err(|e| StartupError::Bind(site_addr.to_string(), e))?;
        let addr = listener.local_addr().map_err(|e| StartupError::Bind(site_addr.to_string(), e))?;

        let data_dir = settings.server.data_dir.clone();
        // The data dir holds the keys and the database: this user's only.
        create_private_dir(&data_dir).map_err(|e| StartupError::DataDir(data_dir.display().to_string(), e))?;
        let (api_key, generated_key) = api_key(&settings)?;
        let store = Store::connect(&settings.database_url()).await?;
        let db_files = ["app.db", "app.db-wal", "app.db-shm"].map(|f| data_dir.join(f));
        make_private(&db_files).map_err(|e| StartupError::DataDir(data_dir.display().to_string(), e))?;
        let cookie_key: Arc<str> = match &settings.server.cookie_secret {
            Some(secret) => secret.expose().into(),
            None => store.settings().get_or_insert(COOKIE_KEY_SETTING, &random_id(48)).await?.into(),
        };

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        type Local = (PublisherSignal, MediaPlane, mpsc::UnboundedReceiver<Participant>);
        let (backend, local): (Arc<dyn StageBackend>, Option<Local>) = match settings.stage.backend {
            BackendKind::Local => {
                let key_path = data_dir.join("local-signing-key.pem");
                let signer = TokenSigner::load_or_create(&key_path)
                    .map_err(|e| StartupError::DataDir(key_path.display().to_string(), e))?;
                let signer = Arc::new(signer);
                let backend = LocalBackend::new(settings.stage.region.clone(), signer.clone());
                let signal = backend.publisher_signal();
                let admission = crate::server::media::Admission::from_settings(&settings.limits);
                let (connected_tx, connected) = mpsc::unbounded_channel();
                let server = MediaServer::start(&settings.media, admission, signal.clone(), connected_tx, shutdown_rx.clone())
                    .await
                    .map_err(|e| StartupError::Backend(e.to_string()))?;
                (Arc::new(backend), Some((signal, MediaPlane { server, signer }, connected)))
            }
            #[cfg(feature = "ivs")]
            BackendKind::Ivs => {
                let backend = crate::server::backend::ivs::IvsBackend::new(&settings.stage.region, &settings.ivs, &data_dir);
                (Arc::new(backend.await), None)
            }
            #[cfg(not(feature = "ivs"))]
            BackendKind::Ivs => {
                return Err(StartupError::Backend(
                    "this build has no IVS backend: build it with `--features ivs`, or use STAGE_BACKEND=local".into(),
                ))
            }
        };

        let settings = Arc::new(settings);
        let service = Service::new(settings.clone(), store, backend, clock);
        let local = local.map(|(signal, plane, connected)| {
            service.media().attach(plane);
            tokio::spawn(count_connected_viewers(service.presence().clone(), connected));
            signal
        });
        // Viewers that went silent while the server was down: close their sessions at their
        // last heartbeat, exactly as the sweep would have.
        let recovered = service.presence().sweep().await.map_err(|e| StartupError::Other(e.to_string()))?;
        let orphans = service.store().sessions().close_orphans().await.map_err(|e| StartupError::Other(e.to_string()))?;
        if recovered + orphans as usize > 0 {
            tracing::info!(recovered, orphans, "closed watch sessions left open by a previous run");
        }
        service.stats().refresh().await.map_err(|e| StartupError::Other(e.to_string()))?;

        let state = AppState::new(AppStateParts {
            service: service.clone(),
            leptos_options: leptos_options(addr),
            api_key: api_key.into(),
            cookie_key,
            requests: Arc::default(),
            limiter: Arc::new(RateLimiter::new(
                Duration::from_millis(settings.rate_limit.window_ms),
                settings.rate_limit.max_requests,
            )),
            guards: Arc::new(crate::server::http::guard::Guards::new(&settings)),
            shutdown: shutdown_rx.clone(),
        });
        let router = Self::router(state.clone(), Router::new());
        let (jobs_tx, jobs_rx) = watch::channel(false);
        let mut jobs = vec![spawn_backend_setup(service.clone(), shutdown_rx)];
        jobs.extend(spawn_background_jobs(service, jobs_rx));
        Ok(Self { listener, router, state, local, shutdown_tx, jobs_tx, jobs, generated_key })
    }

    /// The app's routes and `extra`, behind the middleware every request goes through.
    fn router(state: AppState, extra: Router<AppState>) -> Router {
        let routes = generate_route_list(App);
        let ctx_service = state.service.clone();
        let ctx_key = ApiKey(state.api_key.clone());
        let ctx_cookie_key = CookieKey(state.cookie_key.clone());
        let options = state.leptos_options.clone();
        let ctx_guards = state.guards.clone();
        // The pages and the server functions they call: the functions are routes of their own
        // (`/api/<name><hash>`), so they get their own limits, body cap and metrics here.
        let pages = Router::new()
            .leptos_routes_with_context(
                &state,
                routes,
                move || {
                    // the hub's current figures, for the pages' first render
                    let hub = ctx_service.clone();
                    provide_context(crate::api::CurrentStats(Arc::new(move |channel| {
                        hub.hub().subscribe(channel).map(|rx| (**rx.borrow()).clone())
                    })));
                    let hub = ctx_service.clone();
                    provide_context(crate::api::CurrentDirectory(Arc::new(move || (*hub.hub().directory()).clone())));
                    provide_context(ctx_service.clone());
                    provide_context(ctx_key.clone());
                    provide_context(ctx_cookie_key.clone());
                    provide_context(ctx_guards.clone());
                },
                move || shell(options.clone()),
            )
            .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::server_fns))
            .layer(axum::middleware::from_fn(middleware::page_headers))
            .layer(DefaultBodyLimit::max(state.service.settings().server.body_limit_bytes))
            .layer(axum::middleware::from_fn_with_state(state.requests.clone(), metrics::track));
        let mut router = Router::new()
            .merge(contract_router(&state))
            .merge(extra)
            .merge(pages)
            .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell));
        let origins: Vec<axum::http::HeaderValue> =
            state.service.settings().server.cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
        if !origins.is_empty() {
            use tower_http::cors::{AllowHeaders, AllowMethods, CorsLayer};
            router = router.layer(
                CorsLayer::new()
                    .allow_origin(origins)
                    .allow_methods(AllowMethods::mirror_request())
                    .allow_headers(AllowHeaders::mirror_request()),
            );
        }
        // Outermost first: an `x-request-id` (the client's, or a new UUID) is set on the request
        // and echoed on the response; each request runs in a span carrying it, its method and
        // path, so whatever a handler logs names the request (failures are logged where they
        // happen, not again for their status); a handler that panics becomes the
        // envelope's 500 `INTERNAL_ERROR` (the panic message stays in the log) and the server
        // goes on serving.
        let proxies = TrustedProxies::new(&state.service.settings().limits.trusted_proxies);
        // An idle keep-alive connection is closed once the header read timeout passes (the
        // timer runs while the server waits for the next request). Saying so in `Keep-Alive`
        // lets a client's pool drop it first (Node's agent does, a second early) instead of
        // sending a request into a connection the server is closing.
        let idle = axum::http::HeaderValue::from_str(&format!(
            "timeout={}",
            (state.service.settings().limits.header_read_timeout_ms / 1000).max(1)
        ))
        .unwrap_or(axum::http::HeaderValue::from_static("timeout=1"));
        let keep_alive = tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            axum::http::HeaderName::from_static("keep-alive"),
            idle,
        );
        router.with_state(state).layer(
            ServiceBuilder::new()
                .layer(keep_alive)
                .layer(axum::Extension(proxies))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TraceLayer::new_for_http().make_span_with(request_span).on_failure(()))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
    }

    /// Serves `routes` as well, behind the same middleware and with the same state as the
    /// app's own routes (for embedders, and for tests that need a route of their own).
    pub fn merge_routes(mut self, routes: Router<AppState>) -> Self {
        self.router = Self::router(self.state.clone(), routes);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn service(&self) -> Arc<Service> {
        self.state.service.clone()
    }

    pub fn api_key(&self) -> &str {
        &self.state.api_key
    }

    /// On the first start with a generated API key: the note that says where the app is and
    /// what the key is for, given `url`, the address users reach the app at. `None` afterwards.
    pub fn first_start_note(&self, url: &str) -> Option<String> {
        self.generated_key.as_deref().map(|path| welcome(url.trim_end_matches('/'), &self.state.api_key, path))
    }

    /// The local backend's liveness signal, which the embedded media server drives.
    pub fn publisher_signal(&self) -> Option<PublisherSignal> {
        self.local.clone()
    }

    /// A handle that stops the server gracefully.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown_tx.clone()
    }

    /// Serves until Ctrl-C / SIGTERM (or the shutdown handle fires), then drains: open
    /// WebSockets are closed, requests under way finish (within the shutdown deadline), then
    /// background jobs stop and pending heartbeats are written.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self { listener, router, state, shutdown_tx, jobs_tx, jobs, .. } = self;
        let mut stop = shutdown_tx.subscribe();
        let tx = shutdown_tx.clone();
        let signal = async move {
            tokio::select! {
                _ = os_signal() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            tracing::info!("shutting down");
            tx.send_replace(true);
        };
        let limits = state.service.settings().limits.clone();
        let result = serve(listener, router, &limits, signal).await;
        shutdown_tx.send_replace(true);
        jobs_tx.send_replace(true);
        let all = futures_util::future::join_all(jobs);
        if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
            tracing::warn!("background jobs did not stop within 10 s");
        }
        state.service.store().close().await;
        result
    }
}

/// Serves HTTP/1.1 on `listener` until `stop` completes: at most `max_connections` at once
/// (past it, new ones wait to be accepted), each with `header_read_timeout_ms` to send a
/// request's headers (a connection that trickles them, or sends none, is closed), WebSocket
/// upgrades included. On `stop` the listener closes, idle connections close, and those in a
/// request get `shutdown_deadline_ms` to finish before they are dropped.
async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &crate::server::config::LimitSettings,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let (closing_tx, closing) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
            _ = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a moment rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req
        });
        let mut closing = closing.clone();
        connections.spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { drop(closing.wait_for(|c| *c).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    closing_tx.send_replace(true);
    let deadline = Duration::from_millis(limits.shutdown_deadline_ms);
    let drained = tokio::time::timeout(deadline, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = connections.len(), "connections still open at the shutdown deadline are closed");
        connections.abort_all();
    }
    Ok(())
}

/// The span a request runs in.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
}

/// A handler panicked: the envelope's opaque 500.
fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    crate::server::error::error_response(crate::api::ErrorCode::InternalError, "Internal server error", None)
}

/// The longest wait between two attempts to set the stage backend up.
const SETUP_RETRY_MAX: Duration = Duration::from_secs(15);

/// Sets the stage backend up ([`Service::set_up_backend`]), retrying with exponential backoff
/// until it succeeds or the server stops.
fn spawn_backend_setup(service: Arc<Service>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(250);
        loop {
            tokio::select! {
                result = service.set_up_backend() => match result {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = ?e, retry_in_ms = delay.as_millis() as u64, "stage backend not set up; retrying"),
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            delay = (delay * 2).min(SETUP_RETRY_MAX);
        }
    })
}

async fn os_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
