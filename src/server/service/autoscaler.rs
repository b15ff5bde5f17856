//! The auto-scaler: one step evaluates the rule over the stages' loads and carries out its
//! decision (a new stage replicating the live publisher, or an idle auto-created stage
//! removed). It owns its state: the early wake-up, the lock that keeps one step (or a
//! replication sync, or a reconciliation) at a time on this instance, and the step count.

use super::publishers::PublisherRegistry;
use super::stages::Stages;
use crate::domain::assignment::Capacity;
use crate::domain::autoscale::{decide, ScaleDecision};
use crate::domain::{ChannelId, ParticipantId, StageArn};
use crate::server::clock::Clock;
use crate::server::error::AppResult;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard, Notify};

pub struct Autoscaler {
    stages: Arc<Stages>,
    publishers: Arc<PublisherRegistry>,
    capacity: Capacity,
    clock: Arc<dyn Clock>,
    /// Wakes the auto-scaling job early (a stage crossed its threshold, or a join found none free).
    kick: Notify,
    /// Serialises the steps that create, replicate into or remove stages.
    lock: Mutex<()>,
    /// Auto-scaling steps this instance has run.
    steps: AtomicU64,
}

impl Autoscaler {
    pub fn new(stages: Arc<Stages>, publishers: Arc<PublisherRegistry>, capacity: Capacity, clock: Arc<dyn Clock>) -> Self {
        Self { stages, publishers, capacity, clock, kick: Notify::new(), lock: Mutex::new(()), steps: AtomicU64::new(0) }
    }

    /// One auto-scaling step: evaluates the rule and carries out its decision.
    pub async fn step(&self) -> AppResult<ScaleDecision> {
        let _guard = self.exclusive().await;
        self.steps.fetch_add(1, Ordering::Relaxed);
        let loads = self.stages.loads().await?;
        let decision = decide(&loads, &self.capacity);
        match &decision {
            ScaleDecision::ScaleUp => {
                let parent = loads.iter().max_by_key(|l| l.viewers).map(|l| l.arn.to_string());
                let name = format!("auto-stage-{}", self.clock.now_ms());
                let stage = self.stages.create(&name, BTreeMap::new(), parent.as_deref(), "").await?;
                let publisher = self.publishers.live(&ChannelId::default());
                if let Some(p) = publisher {
                    let (src, dst, pid) = (
                        StageArn::parse(p.stage_arn.clone()),
                        StageArn::parse(stage.arn.clone()),
                        ParticipantId::parse(p.participant_id.clone()),
                    );
                    if let (Ok(src), Ok(dst), Ok(pid)) = (src, dst, pid) {
                        if let Err(e) = self.stages.start_replication(&src, &dst, &pid).await {
                            tracing::warn!(error = %e, stage = %dst, "replication into the new stage failed");
                        }
                    }
                }
            }
            ScaleDecision::ScaleDown(arn) => self.stages.delete(arn, true).await?,
            ScaleDecision::Hold => {}
        }
        Ok(decision)
    }

    /// Asks for a step now rather than at the next interval.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Resolves at the next [`Autoscaler::kick`].
    pub async fn kicked(&self) {
        self.kick.notified().await
    }

    /// Held while stages are created, replicated into or removed.
    pub async fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Auto-scaling steps this instance has run.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }
}
