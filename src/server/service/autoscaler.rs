//! The auto-scaler: one step evaluates the rule over the stages' loads and carries out its
//! decision (a new stage replicating the live publisher, or an idle auto-created stage
//! removed). It owns its state: the early wake-up, the lock that keeps one step (or a
//! replication sync, or a reconciliation) at a time on this instance, and the step count.

use super::publishers::PublisherRegistry;
use super::stages::Stages;
use crate::api::ErrorCode;
use crate::domain::assignment::{choose_stage, Capacity, StageLoad};
use crate::domain::autoscale::{decide, ScaleDecision};
use crate::domain::{ChannelId, ParticipantId, StageArn, StageName, StageTags};
use crate::server::clock::Clock;
use crate::server::error::{AppError, AppResult};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    /// Whether stages are created and removed automatically (`AUTOSCALE`).
    enabled: bool,
    /// Joins waiting in [`Autoscaler::make_room`]: the demand a scale-up for them must meet.
    waiting: AtomicU32,
}

/// Counts a join as waiting for room while it is alive.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Autoscaler {
    pub fn new(
        stages: Arc<Stages>,
        publishers: Arc<PublisherRegistry>,
        capacity: Capacity,
        clock: Arc<dyn Clock>,
        enabled: bool,
    ) -> Self {
        Self {
            stages,
            publishers,
            capacity,
            clock,
            kick: Notify::new(),
            lock: Mutex::new(()),
            steps: AtomicU64::new(0),
            enabled,
            waiting: AtomicU32::new(0),
        }
    }

    /// Called by a join that found every stage of `channel` full: while the channel's stage cap
    /// (and the global one) allow, adds stages at once, enough for the joins waiting here,
    /// rather than leaving them to the next interval. Returns whether the channel has room now
    /// (another join may have made it meanwhile); `false` when the caps are reached or
    /// auto-scaling is off.
    ///
    /// `seated` adds the seats given out but not yet taken to the stages' loads.
    pub async fn make_room(&self, channel: &ChannelId, seated: impl Fn(&mut [StageLoad])) -> AppResult<bool> {
        if !self.enabled {
            return Ok(false);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let _guard = self.exclusive().await;
        let mut loads = self.stages.loads_of(channel).await?;
        seated(&mut loads);
        if choose_stage(&loads, &self.capacity).is_some() {
            return Ok(true);
        }
        let room = self.capacity.max_stages.saturating_sub(loads.len() as u32);
        if room == 0 {
            return Ok(false);
        }
        let per_stage = self.capacity.max_viewers_per_stage.max(1);
        let wanted = self.waiting.load(Ordering::Relaxed).div_ceil(per_stage).clamp(1, room);
        let parent = loads.iter().max_by_key(|l| l.viewers).map(|l| l.arn.clone());
        let mut added = 0;
        for _ in 0..wanted {
            match self.add_stage(channel, parent.as_ref(), added).await {
                Ok(()) => added += 1,
                // The global cap is reached: what was added is all there is.
                Err(e) if e.code() == ErrorCode::StageLimitReached => break,
                Err(e) if added == 0 => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, %channel, "adding a stage for waiting viewers failed");
                    break;
                }
            }
        }
        if added > 0 {
            self.steps.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%channel, added, "stages added for viewers who found every stage full");
        }
        Ok(added > 0)
    }

    /// Creates a stage of `channel` (under `parent`) and replicates the channel's live publisher
    /// into it.
    async fn add_stage(&self, channel: &ChannelId, parent: Option<&StageArn>, nth: u32) -> AppResult<()> {
        let name = match nth {
            0 => format!("{}-auto-{}", channel, self.clock.now_ms()),
            n => format!("{}-auto-{}-{n}", channel, self.clock.now_ms()),
        };
        // A channel id, `-auto-`, a time and a count: always a valid stage name.
        let name = StageName::parse(name).map_err(AppError::internal)?;
        let stage = self.stages.create(&name, StageTags::default(), parent, "").await?;
        let publisher = self.publishers.live(channel);
        if let Some(p) = publisher {
            let (src, dst, pid) = (
                StageArn::parse(p.stage_arn.clone()),
                StageArn::parse(stage.arn.clone()),
                ParticipantId::parse(p.participant_id.clone()),
            );
            if let (Ok(src), Ok(dst), Ok(pid)) = (src, dst, pid) {
                if let Err(e) = self.stages.replications().start(&src, &dst, &pid).await {
                    tracing::warn!(error = %e, stage = %dst, "replication into the new stage failed");
                }
            }
        }
        Ok(())
    }

    /// One auto-scaling step for every channel that has stages; returns each channel's
    /// decision. A channel whose step fails holds up no other.
    pub async fn step_all(&self) -> Vec<(ChannelId, AppResult<ScaleDecision>)> {
        let channels = match self.stages.channels().await {
            Ok(channels) => channels,
            Err(e) => return vec![(ChannelId::default(), Err(e.into()))],
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
                let parent = loads.iter().max_by_key(|l| l.viewers).map(|l| l.arn.clone());
                self.add_stage(channel, parent.as_ref(), 0).await?;
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
