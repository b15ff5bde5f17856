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

    /// One auto-scaling step for every channel that has stages; returns each channel's
    /// decision. A channel whose step fails holds up no other.
    pub async fn step_all(&self) -> Vec<(ChannelId, AppResult<ScaleDecision>)> {
        let channels = match self.stages.channels().await {
            Ok(channels) => channels,
            Err(e) => return vec![(ChannelId::default(), Err(e))],
        };
        let mut decisions = Vec::with_capacity(channels.len());
        for channel in channels {
            let decision = self.step(&channel).await;
            decisions.push((channel, decision));
        }
        decisions
    }

    /// One auto-scaling step of `channel`: evaluates the rule over its stages and carries out
    /// the decision (a new stage is the channel's, and replicates the channel's publisher).
    pub async fn step(&self, channel: &ChannelId) -> AppResult<ScaleDecision> {
        let _guard = self.exclusive().await;
        self.steps.fetch_add(1, Ordering::Relaxed);
        let loads = self.stages.loads_of(channel).await?;
        let decision = decide(&loads, &self.capacity);
        match &decision {
            ScaleDecision::ScaleUp => {
                let parent = loads.iter().max_by_key(|l| l.viewers).map(|l| l.arn.to_string());
                let name = format!("{}-auto-{}", channel, self.clock.now_ms());
                let stage = self.stages.create(&name, BTreeMap::new(), parent.as_deref(), "").await?;
                let publisher = self.publishers.live(channel);
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
