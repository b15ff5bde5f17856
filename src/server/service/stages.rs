//! Stages: the master stage and the auto-scaled ones (create, update, delete through the
//! backend with the store's record kept in step) and their loads.

use super::hub::StatsHub;
use super::presence::Presence;
use super::replication::Replications;
use super::views::{StageDetailView, StageListItem, StageListView, StageView};
use crate::api::ErrorCode;
use crate::domain::assignment::StageLoad;
use crate::domain::{ChannelId, StageArn, StageName, StageTags, UnixMs};
use crate::server::backend::{BackendError, StageBackend};
use crate::server::clock::Clock;
use crate::server::config::{Settings, StageSettings};
use crate::server::error::AppError;
use crate::server::store::{StageRecord, Store};
use crate::server::support::{absolute, random_id};
use crate::server::time::iso_at;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

const DEPLOYMENT_SETTING: &str = "deployment_id";
pub use crate::server::backend::MANAGED_BY_TAG;
/// Tag naming the deployment (all instances on one database) that created a stage.
pub const DEPLOYMENT_TAG: &str = "LivestageDeployment";
/// Tag naming the channel whose master stage a stage is.
pub const CHANNEL_TAG: &str = "LivestageChannel";

/// The record of the master stage `stage`.
fn master_record(
    channel: &ChannelId,
    stage: crate::server::backend::CreatedStage,
    tags: BTreeMap<String, String>,
    now: i64,
) -> StageRecord {
    StageRecord {
        channel: channel.clone(),
        arn: stage.arn,
        name: master_name(channel),
        is_master: true,
        auto_scaled: false,
        parent_arn: None,
        tags,
        endpoints: stage.endpoints,
        active_session_id: None,
        created_at: UnixMs::from_millis(now),
        updated_at: UnixMs::from_millis(now),
    }
}

/// The name of a channel's master stage.
fn master_name(channel: &ChannelId) -> String {
    if channel.is_default() {
        "master".into()
    } else {
        format!("{channel}-master")
    }
}

/// The tag that marks the master stage.
fn master_role() -> BTreeMap<String, String> {
    BTreeMap::from([("Role".into(), "master".into())])
}

/// Owns the stages: the master stage, CRUD, replication records, ownership tags and the
/// viewer-count snapshots.
pub struct Stages {
    store: Store,
    backend: Arc<dyn StageBackend>,
    clock: Arc<dyn Clock>,
    hub: Arc<StatsHub>,
    presence: Arc<Presence>,
    replications: Arc<Replications>,
    settings: StageSettings,
    /// This deployment's id (see [`Stages::deployment_id`]).
    deployment: OnceLock<String>,
    /// Held from the stage-limit check until the new stage is recorded, so concurrent creates
    /// on this instance cannot pass the limit together.
    creating: tokio::sync::Mutex<()>,
}

/// Why a stage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("Stage not found")]
    NotFound,
    /// A channel named by a request does not exist.
    #[error("Channel {0} not found")]
    ChannelNotFound(ChannelId),
    /// The channel whose master stage was asked for does not exist.
    #[error("Channel not found")]
    NoSuchChannel,
    /// The channel exists but its master stage is not there yet.
    #[error("No master stage is configured")]
    NoMaster,
    #[error("Stage limit reached ({0})")]
    StageLimit(u32),
    #[error("The master stage cannot be deleted")]
    MasterPermanent,
    #[error("The stage still has viewers")]
    HasViewers(u32),
    #[error(transparent)]
    Failed(#[from] AppError),
}

impl From<StageError> for AppError {
    fn from(e: StageError) -> Self {
        let code = match e {
            StageError::Failed(inner) => return inner,
            StageError::HasViewers(viewers) => {
                return AppError::with_details(ErrorCode::ValidationError, e.to_string(), json!({ "viewerCount": viewers }))
            }
            StageError::NotFound | StageError::ChannelNotFound(_) | StageError::NoSuchChannel => ErrorCode::NotFound,
            StageError::NoMaster => ErrorCode::ServiceUnavailable,
            StageError::StageLimit(_) => ErrorCode::StageLimitReached,
            StageError::MasterPermanent => ErrorCode::Forbidden,
        };
        AppError::new(code, e.to_string())
    }
}

type StageResult<T> = Result<T, StageError>;

impl Stages {
    pub fn new(
        store: Store,
        backend: Arc<dyn StageBackend>,
        clock: Arc<dyn Clock>,
        hub: Arc<StatsHub>,
        presence: Arc<Presence>,
        replications: Arc<Replications>,
        settings: &Settings,
    ) -> Self {
        Self {
            store,
            backend,
            clock,
            hub,
            presence,
            replications,
            settings: settings.stage.clone(),
            deployment: OnceLock::new(),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    /// Replications between stages (IVS participant replication), and their records.
    pub fn replications(&self) -> &Replications {
        &self.replications
    }

    /// This deployment's id, created once and shared through the database.
    pub async fn deployment_id(&self) -> StageResult<String> {
        if let Some(id) = self.deployment.get() {
            return Ok(id.clone());
        }
        let candidate = random_id(16);
        let id = self.store.settings().get_or_insert(DEPLOYMENT_SETTING, &candidate).await?;
        Ok(self.deployment.get_or_init(|| id).clone())
    }

    /// The tags every stage this server creates carries.
    pub(crate) async fn ownership_tags(&self) -> StageResult<[(String, String); 2]> {
        Ok([
            (MANAGED_BY_TAG.0.to_string(), MANAGED_BY_TAG.1.to_string()),
            (DEPLOYMENT_TAG.to_string(), self.deployment_id().await?),
        ])
    }

    /// The master stage of `channel`: 404 for a channel that does not exist, 503 while the
    /// channel's master stage is not there (the default one's, before start-up set it up).
    pub(crate) async fn master(&self, channel: &ChannelId) -> StageResult<StageRecord> {
        if let Some(master) = self.store.stages().master(channel).await? {
            return Ok(master);
        }
        if !channel.is_default() && self.store.channels().get(channel).await?.is_none() {
            return Err(StageError::NoSuchChannel);
        }
        Err(StageError::NoMaster)
    }

    fn view(&self, stage: &StageRecord, base_url: &str) -> StageView {
        let endpoints = stage.endpoints.iter().map(|(k, v)| (k.clone(), absolute(base_url, v, k == "events"))).collect();
        StageView::new(stage, endpoints)
    }

    /// Makes sure the channel's master stage exists: the configured one (default channel), the
    /// remembered one, or a new one.
    pub async fn ensure_master(&self, channel: &ChannelId) -> StageResult<StageRecord> {
        let channel = channel.clone();
        let now = self.clock.now_ms();
        if let Some(arn) = self.settings.master_stage_arn.clone().filter(|_| channel.is_default()) {
            if let Some(existing) = self.store.stages().get(arn.as_str()).await? {
                if existing.is_master {
                    return Ok(existing);
                }
            }
            let record = master_record(&channel, self.backend.adopt_stage(&arn).await?, master_role(), now);
            self.store.stages().insert(&record).await?;
            self.store.channels().set_master(&channel, &arn).await?;
            return Ok(record);
        }
        if let Some(master) = self.store.stages().master(&channel).await? {
            return Ok(master);
        }
        let Some(row) = self.store.channels().get(&channel).await? else {
            return Err(StageError::ChannelNotFound(channel.clone()));
        };
        if let Some(arn) = row.master_stage_arn {
            return self.await_master(&channel, &arn).await;
        }
        let mut tags = master_role();
        tags.extend(self.ownership_tags().await?);
        tags.insert(CHANNEL_TAG.into(), channel.to_string());
        let created = self.backend.create_stage(&master_name(&channel), &tags).await?;
        // Instances starting together on one database each create one: the first to record
        // its stage wins, the others delete theirs and use the winner's.
        let winner = self.store.channels().master_or_insert(&channel, &created.arn).await?;
        if winner.as_ref() != Some(&created.arn) {
            if let Err(e) = self.backend.delete_stage(&created.arn).await {
                tracing::warn!(error = %e, stage = %created.arn, "could not delete a surplus master stage");
            }
            let Some(winner) = winner else {
                return Err(StageError::ChannelNotFound(channel.clone()));
            };
            return self.await_master(&channel, &winner).await;
        }
        let record = master_record(&channel, created, tags, now);
        self.store.stages().insert(&record).await?;
        tracing::info!(stage = %record.arn, "created the master stage");
        Ok(record)
    }

    /// The master stage another instance recorded as `arn`, once its row is written (it is
    /// adopted from the backend if that instance died in between).
    async fn await_master(&self, channel: &ChannelId, arn: &StageArn) -> StageResult<StageRecord> {
        for _ in 0..20 {
            if let Some(master) = self.store.stages().master(channel).await? {
                return Ok(master);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let record = master_record(channel, self.backend.adopt_stage(arn).await?, master_role(), self.clock.now_ms());
        self.store.stages().insert(&record).await?;
        Ok(record)
    }

    /// The channels that have a stage, each once.
    pub(crate) async fn channels(&self) -> StageResult<Vec<ChannelId>> {
        let mut channels: Vec<ChannelId> = self.store.stages().list().await?.into_iter().map(|s| s.channel).collect();
        channels.sort();
        channels.dedup();
        Ok(channels)
    }

    /// Every stage's load.
    pub(crate) async fn loads(&self) -> StageResult<Vec<StageLoad>> {
        let stages = self.store.stages().list().await?;
        self.loads_from(stages).await
    }

    /// The loads of `channel`'s stages.
    pub(crate) async fn loads_of(&self, channel: &ChannelId) -> StageResult<Vec<StageLoad>> {
        let stages = self.store.stages().of_channel(channel).await?;
        self.loads_from(stages).await
    }

    async fn loads_from(&self, stages: Vec<StageRecord>) -> StageResult<Vec<StageLoad>> {
        let now = self.clock.now();
        let counts = self.store.presence().counts().await?;
        // A seat held for a viewer whose media is connecting is taken: placement and scaling
        // count it, the audience does not.
        let held = self.store.presence().held_counts(now).await?;
        Ok(stages
            .into_iter()
            .map(|s| StageLoad {
                viewers: counts.get(s.arn.as_str()).copied().unwrap_or(0) + held.get(s.arn.as_str()).copied().unwrap_or(0),
                arn: s.arn,
                is_master: s.is_master,
                auto_scaled: s.auto_scaled,
                age_secs: now.since(s.created_at).as_secs() as i64,
            })
            .collect())
    }

    /// The stages of `channel`, or every stage (`GET /api/stage/list`), each with its channel.
    pub async fn list_of(&self, channel: Option<&ChannelId>) -> StageResult<StageListView> {
        let stages = match channel {
            Some(channel) => self.store.stages().of_channel(channel).await?,
            None => self.store.stages().list().await?,
        };
        let counts = self.store.presence().counts().await?;
        let items: Vec<StageListItem> = stages
            .iter()
            .map(|s| StageListItem {
                stage_arn: s.arn.to_string(),
                name: s.name.clone(),
                viewer_count: counts.get(s.arn.as_str()).copied().unwrap_or(0),
                auto_scaled: s.auto_scaled,
                is_master: s.is_master,
                created_at: iso_at(s.created_at),
                tags: s.tags.clone(),
                channel: s.channel.clone(),
            })
            .collect();
        Ok(StageListView { total_stages: items.len(), stages: items, next_token: Some(None) })
    }

    pub async fn master_info(&self, channel: &ChannelId, base_url: &str) -> StageResult<StageDetailView> {
        let master = self.master(channel).await?;
        let viewer_count = self.store.presence().count(master.arn.as_str()).await?;
        Ok(StageDetailView { stage: self.view(&master, base_url), viewer_count: Some(viewer_count), is_master_stage: Some(true) })
    }

    /// Creates a stage (by hand, or by the auto-scaler with `parent`).
    pub async fn create(
        &self,
        name: &StageName,
        tags: StageTags,
        parent: Option<&StageArn>,
        base_url: &str,
    ) -> StageResult<StageView> {
        let max = self.settings.max_stages;
        let _creating = self.creating.lock().await;
        if self.store.stages().count().await? >= max {
            return Err(StageError::StageLimit(max));
        }
        let mut tags = tags.into_inner();
        tags.extend(self.ownership_tags().await?);
        if parent.is_some() {
            tags.insert("AutoScaled".into(), "true".into());
        }
        // An auto-scaled stage belongs to its parent's channel; any other to the default one.
        let channel = match parent {
            Some(parent) => self.store.stages().get(parent.as_str()).await?.map(|p| p.channel).unwrap_or_default(),
            None => ChannelId::default(),
        };
        let created = self.backend.create_stage(name.as_str(), &tags).await?;
        let now = self.clock.now_ms();
        let record = StageRecord {
            channel,
            arn: created.arn,
            name: name.to_string(),
            is_master: false,
            auto_scaled: parent.is_some(),
            parent_arn: parent.cloned(),
            tags,
            endpoints: created.endpoints,
            active_session_id: None,
            created_at: UnixMs::from_millis(now),
            updated_at: UnixMs::from_millis(now),
        };
        self.store.stages().insert(&record).await?;
        self.hub.mark_dirty();
        tracing::info!(stage = %record.arn, auto = record.auto_scaled, "stage created");
        Ok(self.view(&record, base_url))
    }

    pub async fn get(&self, arn: &StageArn, base_url: &str) -> StageResult<StageDetailView> {
        let stage = self.store.stages().get(arn.as_str()).await?.ok_or(StageError::NotFound)?;
        let viewer_count = self.store.presence().count(arn.as_str()).await?;
        Ok(StageDetailView { stage: self.view(&stage, base_url), viewer_count: Some(viewer_count), is_master_stage: None })
    }

    pub async fn update(
        &self,
        arn: &StageArn,
        name: Option<&StageName>,
        tags: Option<StageTags>,
        base_url: &str,
    ) -> StageResult<StageDetailView> {
        let existing = self.store.stages().get(arn.as_str()).await?.ok_or(StageError::NotFound)?;
        let tags = tags.map(|t| {
            let mut t = t.into_inner();
            // Tags this server relies on stay.
            for key in [MANAGED_BY_TAG.0, DEPLOYMENT_TAG, "AutoScaled", "Role"] {
                if let Some(v) = existing.tags.get(key) {
                    t.insert(key.to_string(), v.clone());
                }
            }
            t
        });
        if let Some(name) = name {
            self.backend.update_stage(arn, name.as_str()).await?;
        }
        let updated = self
            .store
            .stages()
            .update(arn.as_str(), name.map(StageName::as_str), tags.as_ref(), self.clock.now_ms())
            .await?
            .ok_or(StageError::NotFound)?;
        Ok(StageDetailView { stage: self.view(&updated, base_url), viewer_count: None, is_master_stage: None })
    }

    /// Deletes a stage. The master stage is refused (403); a stage with viewers is refused
    /// (400) unless the auto-scaler removes it (`evict`), which closes their sessions.
    pub async fn delete(&self, arn: &StageArn, evict: bool) -> StageResult<()> {
        let stage = self.store.stages().get(arn.as_str()).await?.ok_or(StageError::NotFound)?;
        if stage.is_master {
            return Err(StageError::MasterPermanent);
        }
        let viewers = self.store.presence().count(arn.as_str()).await?;
        if viewers > 0 && !evict {
            return Err(StageError::HasViewers(viewers));
        }
        if let Some(rep) = self.store.stages().replication(arn.as_str()).await? {
            // A replication that cannot be stopped does not keep the stage: deleting the stage
            // ends its replica too.
            if let Err(e) = self.replications.stop_recorded(&rep).await {
                tracing::warn!(error = %e, stage = %arn, "could not stop replication before deleting the stage");
            }
            self.store.stages().delete_replication(arn.as_str()).await?;
        }
        self.backend.delete_stage(arn).await?;
        let evicted = self.forget_record(arn.as_str()).await?;
        self.hub.mark_dirty();
        tracing::info!(stage = %arn, evicted, "stage deleted");
        Ok(())
    }

    /// Deletes every stage of a channel, its master too, evicting their viewers; returns how
    /// many. A stage the backend no longer has is only forgotten.
    pub async fn delete_channel_stages(&self, channel: &ChannelId) -> StageResult<usize> {
        let stages = self.store.stages().of_channel(channel).await?;
        for stage in &stages {
            let arn = stage.arn.clone();
            if let Some(rep) = self.store.stages().replication(arn.as_str()).await? {
                if let Err(e) = self.replications.stop_recorded(&rep).await {
                    tracing::warn!(error = %e, stage = %arn, "could not stop replication before deleting the stage");
                }
                self.store.stages().delete_replication(arn.as_str()).await?;
            }
            match self.backend.delete_stage(&arn).await {
                Ok(()) | Err(BackendError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            self.forget_record(arn.as_str()).await?;
        }
        self.hub.mark_dirty();
        tracing::info!(%channel, stages = stages.len(), "channel stages deleted");
        Ok(stages.len())
    }

    /// Drops the record of a stage the backend no longer has, closing its viewers' sessions;
    /// returns how many were closed.
    pub(crate) async fn forget_record(&self, arn: &str) -> StageResult<usize> {
        let evicted = self.store.presence().clear_stage(arn, self.clock.now()).await?;
        for p in &evicted {
            self.presence.forget(&p.stage_arn, &p.user_id);
        }
        self.store.stages().delete(arn).await?;
        Ok(evicted.len())
    }
}
