//! Keeping this server and a remote stage backend (IVS) in agreement: who publishes, which
//! auto-created stages carry a replica of the publisher, and which backend stages are ours.
//! Only the cluster's leader syncs; a follower leaves the publisher to it.

use super::autoscaler::Autoscaler;
use super::cluster::Cluster;
use super::hub::StatsHub;
use super::publishers::PublisherRegistry;
use super::replication::ReplicationError;
use super::stages::{Stages, DEPLOYMENT_TAG};
use crate::domain::{ChannelId, ParticipantId, StageArn};
use crate::server::backend::{BackendError, StageBackend, MANAGED_BY_TAG};
use crate::server::clock::Clock;
use crate::server::error::AppResult;
use crate::server::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Backend polls between two stage reconciliations.
const RECONCILE_EVERY: u64 = 900;

pub struct BackendSync {
    store: Store,
    backend: Arc<dyn StageBackend>,
    clock: Arc<dyn Clock>,
    hub: Arc<StatsHub>,
    stages: Arc<Stages>,
    publishers: Arc<PublisherRegistry>,
    /// Its lock keeps a sync from running between a stage's creation and its replication.
    autoscaler: Arc<Autoscaler>,
    cluster: Arc<Cluster>,
    /// How long a publisher may be away before the backend has ended its replications.
    reconnect_window_ms: i64,
    /// Backend polls this instance has run.
    polls: AtomicU64,
}

/// What [`BackendSync`] works with.
pub struct BackendSyncParts {
    pub store: Store,
    pub backend: Arc<dyn StageBackend>,
    pub clock: Arc<dyn Clock>,
    pub hub: Arc<StatsHub>,
    pub stages: Arc<Stages>,
    pub publishers: Arc<PublisherRegistry>,
    pub autoscaler: Arc<Autoscaler>,
    pub cluster: Arc<Cluster>,
    pub reconnect_window_secs: i32,
}

impl BackendSync {
    pub fn new(parts: BackendSyncParts) -> Self {
        let BackendSyncParts { store, backend, clock, hub, stages, publishers, autoscaler, cluster, reconnect_window_secs } =
            parts;
        Self {
            store,
            backend,
            clock,
            hub,
            stages,
            publishers,
            autoscaler,
            cluster,
            reconnect_window_ms: i64::from(reconnect_window_secs) * 1000,
            polls: AtomicU64::new(0),
        }
    }

    /// One poll of the backend (leader only): each channel's publisher and its replicas, and
    /// now and then the list of stages.
    pub async fn poll(&self) {
        if !self.cluster.is_leader() {
            self.backend.clear_publisher();
            return;
        }
        let stages = match self.store.stages().list().await {
            Ok(stages) => stages,
            Err(e) => return tracing::warn!(error = %e, "backend poll: the stages could not be read"),
        };
        for master in stages.iter().filter(|s| s.is_master) {
            if let Err(e) = self.backend.poll_publisher(&master.channel, &master.arn).await {
                tracing::warn!(error = %e, channel = %master.channel, "publisher liveness check failed");
            }
            if let Err(e) = self.sync_replications(&master.channel).await {
                tracing::warn!(error = %e, channel = %master.channel, "replication sync failed");
            }
        }
        if self.polls.fetch_add(1, Ordering::Relaxed).is_multiple_of(RECONCILE_EVERY) {
            match self.reconcile_stages().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "reconciled stages with the backend"),
                Err(e) => tracing::warn!(error = %e, "stage reconciliation failed"),
            }
        }
    }

    /// Makes every auto-created stage of `channel` replicate its current publisher: a new
    /// publisher (or one that came back under a new participant id) replaces the old
    /// replication. A publisher away for longer than the reconnect window has had its
    /// replications ended by the backend: their records go, so its return starts them again.
    /// One stage failing holds up no other.
    pub async fn sync_replications(&self, channel: &ChannelId) -> AppResult<usize> {
        let Some(p) = self.publishers.local(channel) else {
            self.forget_ended_replications(channel).await?;
            return Ok(0);
        };
        self.publishers.mark_local_present(channel);
        let (Ok(source), Ok(pid)) = (StageArn::parse(p.stage_arn.clone()), ParticipantId::parse(p.participant_id.clone())) else {
            return Ok(0);
        };
        // Not while the auto-scaler is between creating a stage and replicating into it.
        let _guard = self.autoscaler.exclusive().await;
        let mut started = 0;
        for stage in self.store.stages().of_channel(channel).await?.into_iter().filter(|s| s.auto_scaled) {
            let Ok(dest) = StageArn::parse(stage.arn.clone()) else { continue };
            match self.replicate_into(&source, &dest, &pid).await {
                Ok(true) => started += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, stage = %dest, "replication into the stage failed; retried next poll"),
            }
        }
        Ok(started)
    }

    /// Replicates `pid` from `source` into `dest` unless it already is; returns whether it
    /// started a replication.
    async fn replicate_into(&self, source: &StageArn, dest: &StageArn, pid: &ParticipantId) -> AppResult<bool> {
        if let Some(r) = self.store.stages().replication(dest.as_str()).await? {
            if r.participant_id == pid.as_str() && r.source_arn == *source {
                return Ok(false);
            }
            self.stages.replications().stop_recorded(&r).await?;
            self.store.stages().delete_replication(dest.as_str()).await?;
        }
        match self.stages.replications().start(source, dest, pid).await {
            Ok(_) => Ok(true),
            Err(ReplicationError::Backend(BackendError::Conflict(_))) => {
                // Already replicating (a retried call that had gone through): record it.
                self.stages.replications().record(source, dest, pid).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the replication records of a publisher gone for longer than the reconnect window.
    async fn forget_ended_replications(&self, channel: &ChannelId) -> AppResult<()> {
        let now = self.clock.now_ms();
        let since = self.publishers.local_away_since(channel, now);
        if now - since <= self.reconnect_window_ms {
            return Ok(());
        }
        let _guard = self.autoscaler.exclusive().await;
        for stage in self.store.stages().of_channel(channel).await?.into_iter().filter(|s| s.auto_scaled) {
            if let Some(r) = self.store.stages().replication(stage.arn.as_str()).await? {
                if let Err(e) = self.stages.replications().stop_recorded(&r).await {
                    tracing::debug!(error = %e, stage = %stage.arn, "replication already ended");
                }
                self.store.stages().delete_replication(stage.arn.as_str()).await?;
            }
        }
        Ok(())
    }

    /// Compares this deployment's stages with the backend's: an auto-created stage the backend
    /// holds but the database does not (left by a crash between the two writes) is deleted; a
    /// stage the backend no longer has is dropped from the database. Returns how many went.
    pub async fn reconcile_stages(&self) -> AppResult<usize> {
        let _guard = self.autoscaler.exclusive().await;
        // Read before listing: a stage created meanwhile is not taken for one IVS lost.
        if !self.backend.capabilities().lists_stages {
            return Ok(0);
        }
        let known_before = self.store.stages().list().await?;
        let listed = self.backend.list_stages().await?;
        let deployment = self.stages.deployment_id().await?;
        // Read after listing: a stage IVS lists that is not here yet is not taken for a leftover.
        let known = self.store.stages().list().await?;
        let mut removed = 0;
        for stage in &listed {
            let ours = stage.tags.get(MANAGED_BY_TAG.0).map(String::as_str) == Some(MANAGED_BY_TAG.1)
                && stage.tags.get(DEPLOYMENT_TAG) == Some(&deployment)
                && stage.tags.get("AutoScaled").map(String::as_str) == Some("true");
            if ours && !known.iter().any(|k| k.arn == stage.arn) {
                self.backend.delete_stage(&stage.arn).await?;
                tracing::info!(stage = %stage.arn, "deleted a stage this deployment had lost track of");
                removed += 1;
            }
        }
        for stage in known_before.iter().filter(|k| !k.is_master) {
            // Missing from the list, and IVS confirms it is gone.
            let arn = &stage.arn;
            if !listed.iter().any(|l| l.arn == *arn) && matches!(self.backend.adopt_stage(arn).await, Err(BackendError::NotFound))
            {
                let evicted = self.stages.forget_record(arn.as_str()).await?;
                tracing::warn!(stage = %stage.arn, evicted, "stage is gone from the backend");
                removed += 1;
            }
        }
        if removed > 0 {
            self.hub.mark_dirty();
        }
        Ok(removed)
    }
}
