//! Replications between stages (IVS participant replication): started and stopped through the
//! backend, with the store's record of each kept in step.

use super::views::{ReplicationInfo, ReplicationStartedView, ReplicationStatusView, ReplicationStoppedView};
use crate::domain::{ParticipantId, StageArn};
use crate::server::backend::StageBackend;
use crate::server::clock::Clock;
use crate::server::error::{AppError, AppResult};
use crate::server::store::{ReplicationRecord, Store};
use crate::server::time::iso;
use std::sync::Arc;

/// Owns the replications between stages and their records.
pub struct Replications {
    store: Store,
    backend: Arc<dyn StageBackend>,
    clock: Arc<dyn Clock>,
}

impl Replications {
    pub fn new(store: Store, backend: Arc<dyn StageBackend>, clock: Arc<dyn Clock>) -> Self {
        Self { store, backend, clock }
    }

    /// Starts replicating `participant` from `source` into `dest`, and records it.
    pub async fn start(
        &self,
        source: &StageArn,
        dest: &StageArn,
        participant: &ParticipantId,
    ) -> AppResult<ReplicationStartedView> {
        for arn in [source, dest] {
            if self.store.stages().get(arn.as_str()).await?.is_none() {
                return Err(AppError::not_found(format!("Stage not found: {arn}")));
            }
        }
        if source == dest {
            return Err(AppError::validation("sourceStageArn and destinationStageArn must differ"));
        }
        self.backend.start_replication(source, dest, participant).await?;
        let now = self.record(source, dest, participant).await?;
        Ok(ReplicationStartedView {
            message: "Participant replication started",
            source_stage_arn: source.to_string(),
            destination_stage_arn: dest.to_string(),
            participant_id: participant.to_string(),
            started_at: iso(now),
        })
    }

    /// Stops the replication `r` records.
    pub(crate) async fn stop_recorded(&self, r: &ReplicationRecord) -> AppResult<()> {
        let participant = ParticipantId::parse(r.participant_id.as_str()).map_err(AppError::internal)?;
        Ok(self.backend.stop_replication(&r.source_arn, &r.destination_arn, &participant).await?)
    }

    /// Records that `participant` is replicated from `source` into `dest`; returns when.
    pub(crate) async fn record(&self, source: &StageArn, dest: &StageArn, participant: &ParticipantId) -> AppResult<i64> {
        let now = self.clock.now_ms();
        self.store
            .stages()
            .put_replication(&ReplicationRecord {
                destination_arn: dest.clone(),
                source_arn: source.clone(),
                participant_id: participant.to_string(),
                started_at: now,
            })
            .await?;
        Ok(now)
    }

    /// Stops the replication of `participant` from `source` into `dest`, and forgets it.
    pub async fn stop(
        &self,
        source: &StageArn,
        dest: &StageArn,
        participant: &ParticipantId,
    ) -> AppResult<ReplicationStoppedView> {
        let Some(rep) = self.store.stages().replication(dest.as_str()).await? else {
            return Err(AppError::not_found("No replication into that stage"));
        };
        if rep.source_arn != *source || rep.participant_id != participant.as_str() {
            return Err(AppError::not_found("No such replication"));
        }
        self.backend.stop_replication(source, dest, participant).await?;
        self.store.stages().delete_replication(dest.as_str()).await?;
        Ok(ReplicationStoppedView {
            message: "Participant replication stopped",
            source_stage_arn: source.to_string(),
            destination_stage_arn: dest.to_string(),
            participant_id: participant.to_string(),
            stopped_at: iso(self.clock.now_ms()),
        })
    }

    /// Whether `stage` receives a replication, and which.
    pub async fn status(&self, stage: &StageArn) -> AppResult<ReplicationStatusView> {
        if self.store.stages().get(stage.as_str()).await?.is_none() {
            return Err(AppError::not_found("Stage not found"));
        }
        let info = self.store.stages().replication(stage.as_str()).await?.map(|r| ReplicationInfo {
            source_stage_arn: r.source_arn.into(),
            dest_stage_arn: r.destination_arn.into(),
            participant_id: r.participant_id,
            started_at: iso(r.started_at),
        });
        Ok(ReplicationStatusView { stage_arn: stage.to_string(), has_replication: info.is_some(), replication_info: info })
    }
}
