//! All business logic. REST handlers, `/ws` and server functions call this, never the store or
//! the backend directly.

/// `From` each listed error for a component's error, through its `Failed(AppError)`: what the
/// component does not tell apart reaches the envelope as it would have directly.
macro_rules! failed_from {
    ($($err:path: $($src:path),+;)*) => {$($(
        impl From<$src> for $err {
            fn from(e: $src) -> Self {
                Self::Failed(e.into())
            }
        }
    )+)*};
}

mod autoscaler;
mod backend_sync;
mod channels;
pub mod cluster;
mod dashboard;
mod hub;
mod jobs;
mod media;
mod presence;
mod publishers;
mod replication;
mod stages;
mod stats;
mod studio;
mod tokens;
pub mod views;

failed_from! {
    channels::ChannelError: stages::StageError, StoreError;
    presence::PresenceError: StoreError;
    replication::ReplicationError: StoreError;
    stages::StageError: StoreError, BackendError;
    tokens::JoinError: stages::StageError, StoreError, tokens::TokenError;
    tokens::TokenError: stages::StageError, StoreError;
}

pub use autoscaler::Autoscaler;
pub use backend_sync::{BackendSync, BackendSyncParts};
pub use channels::{ChannelError, Channels, NewChannel, StreamKey};
pub use hub::StatsHub;
pub use jobs::spawn_background_jobs;
pub use media::{count_connected_viewers, MediaGateway, MediaPlane, MediaRequest};
pub use presence::Presence;
pub use publishers::{PublisherChanges, PublisherRegistry};
pub use replication::Replications;
pub use stages::{Stages, DEPLOYMENT_TAG};
pub use stats::Stats;
pub use studio::StudioEpochs;
pub use tokens::{JoinError, JoinedBy, StudioSession, Tokens, TokensParts};

use crate::api::ErrorCode;
use crate::domain::{ChannelId, IdError, StageArn};
use crate::server::backend::{BackendError, StageBackend};
use crate::server::clock::Clock;
use crate::server::config::Settings;
use crate::server::error::{AppError, AppResult};
use crate::server::store::{Store, StoreError};
use crate::server::support::rss_mb;
use std::sync::Arc;
use std::time::Instant;
use views::{BackendHealthView, HealthServicesView, HealthView, MemoryView};

pub struct Service {
    settings: Arc<Settings>,
    store: Store,
    backend: Arc<dyn StageBackend>,
    clock: Arc<dyn Clock>,
    hub: Arc<StatsHub>,
    presence: Arc<Presence>,
    stages: Arc<Stages>,
    autoscaler: Arc<Autoscaler>,
    started: Instant,
    cluster: Arc<cluster::Cluster>,
    media: MediaGateway,
    publishers: Arc<PublisherRegistry>,
    backend_sync: BackendSync,
    tokens: Tokens,
    studios: Arc<studio::StudioEpochs>,
    stats: Stats,
    channels: Channels,
    /// Turns true once the stage backend is set up and the master stage exists.
    ready: tokio::sync::watch::Sender<bool>,
}

impl Service {
    pub fn new(settings: Arc<Settings>, store: Store, backend: Arc<dyn StageBackend>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let hub = Arc::new(StatsHub::new());
        let studios = Arc::new(studio::StudioEpochs::new(store.clone()));
        let media = MediaGateway::new(store.clone(), clock.clone(), studios.clone());
        let presence = Arc::new(Presence::new(
            store.clone(),
            clock.clone(),
            hub.clone(),
            std::time::Duration::from_secs(settings.presence.heartbeat_timeout_secs.unsigned_abs()),
        ));
        let publishers = Arc::new(PublisherRegistry::new().follow_local(backend.publisher()));
        let replications = Arc::new(Replications::new(store.clone(), backend.clone(), clock.clone()));
        let stages = Arc::new(Stages::new(
            store.clone(),
            backend.clone(),
            clock.clone(),
            hub.clone(),
            presence.clone(),
            replications,
            &settings,
        ));
        let autoscaler = Arc::new(Autoscaler::new(
            stages.clone(),
            publishers.clone(),
            settings.stage.capacity(),
            clock.clone(),
            settings.stage.autoscale,
        ));
        let cluster = Arc::new(cluster::Cluster::new(
            store.clone(),
            clock.clone(),
            hub.clone(),
            publishers.clone(),
            settings.database_url(),
        ));
        let backend_sync = BackendSync::new(BackendSyncParts {
            store: store.clone(),
            backend: backend.clone(),
            clock: clock.clone(),
            hub: hub.clone(),
            stages: stages.clone(),
            publishers: publishers.clone(),
            autoscaler: autoscaler.clone(),
            cluster: cluster.clone(),
            reconnect_window_secs: settings.ivs.reconnect_window_secs,
        });
        let tokens = Tokens::new(TokensParts {
            settings: settings.clone(),
            store: store.clone(),
            backend: backend.clone(),
            clock: clock.clone(),
            hub: hub.clone(),
            presence: presence.clone(),
            stages: stages.clone(),
            autoscaler: autoscaler.clone(),
            publishers: publishers.clone(),
        });
        let stats = Stats::new(
            store.clone(),
            clock.clone(),
            hub.clone(),
            stages.clone(),
            publishers.clone(),
            settings.presence.snapshot_retention_days,
        );
        let stream_key_whip = matches!(backend.capabilities().playback, crate::server::backend::Playback::Whep { .. });
        let channels = Channels::new(
            store.clone(),
            clock.clone(),
            stages.clone(),
            publishers.clone(),
            hub.clone(),
            settings.stage.max_stages,
            stream_key_whip,
        );
        Arc::new(Self {
            settings,
            tokens,
            studios,
            channels,
            stats,
            store,
            backend,
            clock,
            hub,
            presence,
            stages,
            autoscaler,
            started: Instant::now(),
            media,
            publishers,
            backend_sync,
            cluster,
            ready: tokio::sync::watch::channel(false).0,
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Studio sign-in sessions' epochs.
    pub fn studios(&self) -> &studio::StudioEpochs {
        &self.studios
    }

    pub fn cluster(&self) -> &Arc<cluster::Cluster> {
        &self.cluster
    }

    /// Whether this instance runs the cluster-wide jobs.
    pub fn is_leader(&self) -> bool {
        self.cluster.is_leader()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn hub(&self) -> &StatsHub {
        &self.hub
    }

    pub fn backend(&self) -> &Arc<dyn StageBackend> {
        &self.backend
    }

    /// Channels: their rows, stream keys and stage groups.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// WHIP/WHEP admission to the embedded media server.
    pub fn media(&self) -> &MediaGateway {
        &self.media
    }

    /// The auto-scaler: its step, its early wake-up and the lock stage changes take.
    pub fn autoscaler(&self) -> &Autoscaler {
        &self.autoscaler
    }

    /// Keeping a remote stage backend (IVS) and this server in agreement: the leader's poll,
    /// the replications into auto-created stages, the reconciliation of stages.
    pub fn backend_sync(&self) -> &BackendSync {
        &self.backend_sync
    }

    /// The stages: master, CRUD, replication records, snapshots.
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    /// Who is live where: this instance's publishers and the ones the others report.
    pub fn publishers(&self) -> &PublisherRegistry {
        &self.publishers
    }

    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// Viewer, publisher and media-server tokens; viewers' placement on stages.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Live totals and the stats and dashboard views.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sets the stage backend up and makes sure the master stage exists; until this succeeds
    /// the server answers but is not ready (`/health` reports "degraded", `/ready` is 503).
    pub async fn set_up_backend(&self) -> AppResult<()> {
        self.backend.prepare().await?;
        let master = self.stages.ensure_master(&ChannelId::default()).await?;
        // The live totals count the master stage before anyone is told the server is ready.
        self.stats.refresh().await?;
        if !self.ready.send_replace(true) {
            tracing::info!(stage = %master.arn, "stage backend ready");
        }
        Ok(())
    }

    /// Whether [`Service::set_up_backend`] has succeeded.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Follows [`Service::is_ready`].
    pub fn readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// `/health`: `Err` (503) when the database does not answer.
    pub async fn health(&self) -> Result<HealthView, AppError> {
        let db_ok =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.store.ping()).await.map(|r| r.is_ok()).unwrap_or(false);
        if !db_ok {
            return Err(AppError::new(crate::api::ErrorCode::ServiceUnavailable, "The database is unavailable"));
        }
        // Not set up yet (IVS slow or failing at start) counts as degraded too.
        let backend_ok = self.backend.healthy() && self.is_ready();
        let master = self.store.stages().master(&ChannelId::default()).await.ok().flatten();
        Ok(HealthView {
            status: if backend_ok { "healthy" } else { "degraded" },
            uptime: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            version: env!("CARGO_PKG_VERSION"),
            services: HealthServicesView {
                database: "connected",
                backend: BackendHealthView {
                    kind: self.backend.kind().as_str(),
                    region: self.backend.region(),
                    stage_configured: master.is_some(),
                    status: if backend_ok { "connected" } else { "degraded" },
                },
            },
            memory: MemoryView { rss_mb: rss_mb() },
        })
    }
}

/// Parses a stage ARN given in a path or query, as a 400 when malformed.
pub fn parse_stage_arn(field: &str, raw: &str) -> Result<StageArn, AppError> {
    StageArn::parse(raw).map_err(|e| invalid_field(field, &e))
}

pub fn invalid_field(field: &str, e: &IdError) -> AppError {
    AppError::invalid_fields(format!("{field} {e}"), &[field])
}

/// A database out of reach is 503 `SERVICE_UNAVAILABLE`; any other store failure is an
/// internal error. Either way the cause is logged and never returned.
impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            AppError::DatabaseUnavailable(Box::new(e))
        } else {
            AppError::internal(e)
        }
    }
}

impl From<BackendError> for AppError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound => AppError::not_found("Stage not found"),
            BackendError::Unavailable(m) => {
                tracing::warn!(error = %m, "stage backend unavailable");
                AppError::new(ErrorCode::ServiceUnavailable, "The stage backend is unavailable")
            }
            BackendError::Rejected(m) => AppError::validation(m),
            BackendError::Conflict(m) => AppError::new(ErrorCode::Conflict, m),
            BackendError::Failed(m) => AppError::Internal(m.into()),
            e @ BackendError::Unsupported(_) => AppError::internal(e),
        }
    }
}
