//! Replications between stages (IVS participant replication): started and stopped through the
//! backend, with the store's record of each kept in step.

use super::views::{ReplicationInfo, ReplicationStartedView, ReplicationStatusView, ReplicationStoppedView};
use crate::api::ErrorCode;
use crate::domain::{ParticipantId, StageArn, UnixMs};
use crate::server::backend::BackendError;
use crate::server::backend::StageBackend;
use crate::server::clock::Clock;
use crate::server::error::AppError;
use crate::server::store::{ReplicationRecord, Store};
use crate::server::time::{iso, iso_at};
use std::sync::Arc;

/// Why a replication operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("Stage not found{}", .0.as_ref().map(|a| format!(": {a}")).unwrap_or_default())]
    StageNotFound(Option<StageArn>),
    #[error("sourceStageArn and destinationStageArn must differ")]
    SameStage,
    #[error("No replication into that stage")]
    NoneInto,
    #[error("No such replication")]
    NoSuch,
    /// The stage backend refused or failed the call (a `Conflict`: already replicating).
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Failed(#[from] AppError),
}

impl From<ReplicationError> for AppError {
    fn from(e: ReplicationError) -> Self {
        let code = match e {
            ReplicationError::Failed(inner) => return inner,
            ReplicationError::Backend(inner) => return inner.into(),
            ReplicationError::SameStage => ErrorCode::ValidationError,
            ReplicationError::StageNotFound(_) | ReplicationError::NoneInto | ReplicationError::NoSuch => ErrorCode::NotFound,
        };
        AppError::new(code, e.to_string())
    }
}

type ReplicationResult<T> = Result<T, ReplicationError>;
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
    ) -> ReplicationResult<ReplicationStartedView> {
        for arn in [source, dest] {
            if self.store.stages().get(arn.as_str()).await?.is_none() {
                return Err(ReplicationError::StageNotFound(Some(arn.clone())));
            }
        }
        if source == dest {
            return Err(ReplicationError::SameStage);
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
    pub(crate) async fn stop_recorded(&self, r: &ReplicationRecord) -> ReplicationResult<()> {
        let participant =
            ParticipantId::parse(r.participant_id.as_str()).map_err(|e| ReplicationError::Failed(AppError::internal(e)))?;
        Ok(self.backend.stop_replication(&r.source_arn, &r.destination_arn, &participant).await?)
    }

    /// Records that `participant` is replicated from `source` into `dest`; returns when.
    pub(crate) async fn record(&self, source: &StageArn, dest: &StageArn, participant: &ParticipantId) -> ReplicationResult<i64> {
        let now = self.clock.now_ms();
        self.store
            .stages()
            .put_replication(&ReplicationRecord {
                destination_arn: dest.clone(),
                source_arn: source.clone(),
                participant_id: participant.to_string(),
                started_at: UnixMs::from_millis(now),
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
    ) -> ReplicationResult<ReplicationStoppedView> {
        let Some(rep) = self.store.stages().replication(dest.as_str()).await? else {
            return Err(ReplicationError::NoneInto);
        };
        if rep.source_arn != *source || rep.participant_id != participant.as_str() {
            return Err(ReplicationError::NoSuch);
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
    pub async fn status(&self, stage: &StageArn) -> ReplicationResult<ReplicationStatusView> {
        if self.store.stages().get(stage.as_str()).await?.is_none() {
            return Err(ReplicationError::StageNotFound(None));
        }
        let info = self.store.stages().replication(stage.as_str()).await?.map(|r| ReplicationInfo {
            source_stage_arn: r.source_arn.into(),
            dest_stage_arn: r.destination_arn.into(),
            participant_id: r.participant_id,
            started_at: iso_at(r.started_at),
        });
        Ok(ReplicationStatusView { stage_arn: stage.to_string(), has_replication: info.is_some(), replication_info: info })
    }
}
