//! Channels: each broadcaster's name, title, stream key and stage group (a master stage plus
//! the stages auto-scaling adds). The channel `default` always exists and cannot be deleted.

use super::hub::StatsHub;
use super::publishers::PublisherRegistry;
use super::stages::Stages;
use super::views::{ChannelListView, ChannelView};
use crate::api::ErrorCode;
use crate::domain::{stream_key_whip_path, ChannelId, UnixMs};
use crate::server::clock::Clock;
use crate::server::error::AppError;
use crate::server::store::{ChannelRecord, DescriptionChange, StageRecord, Store};
use crate::server::support::{absolute, random_id};
use crate::server::time::iso_at;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("Channel {0} already exists")]
    Taken(ChannelId),
    #[error("Channel {0} not found")]
    NotFound(ChannelId),
    #[error("The default channel cannot be deleted")]
    Permanent,
    #[error("Channel {0} is live; stop the broadcast first")]
    Live(ChannelId),
    #[error("Stage limit reached ({0}): no stage can be created for a new channel")]
    StageLimit(u32),
    /// No stream key sent, or not this channel's.
    #[error("{0}")]
    StreamKey(&'static str),
    #[error(transparent)]
    Failed(#[from] AppError),
}

impl From<ChannelError> for AppError {
    fn from(e: ChannelError) -> Self {
        let code = match e {
            ChannelError::Failed(inner) => return inner,
            ChannelError::Taken(_) => ErrorCode::Conflict,
            ChannelError::NotFound(_) => ErrorCode::NotFound,
            ChannelError::StreamKey(_) => ErrorCode::Unauthorized,
            ChannelError::Permanent => ErrorCode::Forbidden,
            ChannelError::Live(_) => ErrorCode::ValidationError,
            ChannelError::StageLimit(_) => ErrorCode::StageLimitReached,
        };
        AppError::new(code, e.to_string())
    }
}

/// A channel's stream key: shown once, when it is issued; only its hash is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(String);

impl StreamKey {
    const PREFIX: &'static str = "lsk_";

    fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_id(40)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> String {
        hash_key(&self.0)
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(…)")
    }
}

/// SHA-256 of a stream key, lowercase hex: what the store keeps and looks keys up by.
fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a new channel is made of.
#[derive(Debug, Clone)]
pub struct NewChannel {
    pub name: ChannelId,
    pub title: Option<String>,
    pub description: Option<String>,
}

/// Owns the channels: their rows, stream keys and the lifetime of their stage groups.
pub struct Channels {
    store: Store,
    clock: Arc<dyn Clock>,
    stages: Arc<Stages>,
    publishers: Arc<PublisherRegistry>,
    /// Told of every change, so that the directory follows.
    hub: Arc<StatsHub>,
    max_stages: u32,
    /// Whether channels go live with their stream key at `/whip/c/NAME` (the embedded media
    /// server; IVS takes participant tokens only).
    stream_key_whip: bool,
}

impl Channels {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        stages: Arc<Stages>,
        publishers: Arc<PublisherRegistry>,
        hub: Arc<StatsHub>,
        max_stages: u32,
        stream_key_whip: bool,
    ) -> Self {
        Self { store, clock, stages, publishers, hub, max_stages, stream_key_whip }
    }

    /// Creates a channel with its master stage and a stream key. If no stage can be created
    /// for it, the channel is not kept.
    pub async fn create(&self, new: NewChannel) -> Result<(ChannelRecord, StreamKey), ChannelError> {
        if self.store.stages().count().await? >= self.max_stages {
            return Err(ChannelError::StageLimit(self.max_stages));
        }
        let now = self.clock.now_ms();
        let key = StreamKey::generate();
        let record = ChannelRecord {
            title: new.title.unwrap_or_else(|| new.name.to_string()),
            name: new.name,
            description: new.description,
            stream_key_hash: Some(key.hash()),
            master_stage_arn: None,
            created_at: UnixMs::from_millis(now),
            updated_at: UnixMs::from_millis(now),
        };
        if !self.store.channels().insert(&record).await? {
            return Err(ChannelError::Taken(record.name));
        }
        if let Err(e) = self.stages.ensure_master(&record.name).await {
            // Leave nothing half made: whatever stage was made goes with the row.
            if let Err(cleanup) = self.stages.delete_channel_stages(&record.name).await {
                tracing::warn!(error = %cleanup, channel = %record.name, "could not remove a failed channel's stages");
            }
            self.store.channels().delete(&record.name).await?;
            return Err(e.into());
        }
        let record = self.get(&record.name).await?;
        self.hub.mark_dirty();
        tracing::info!(channel = %record.name, "channel created");
        Ok((record, key))
    }

    pub async fn get(&self, name: &ChannelId) -> Result<ChannelRecord, ChannelError> {
        self.store.channels().get(name).await?.ok_or_else(|| ChannelError::NotFound(name.clone()))
    }

    /// Every channel, oldest first.
    pub async fn list(&self) -> Result<Vec<ChannelRecord>, ChannelError> {
        Ok(self.store.channels().list().await?)
    }

    pub async fn update(
        &self,
        name: &ChannelId,
        title: Option<&str>,
        description: DescriptionChange<'_>,
    ) -> Result<ChannelRecord, ChannelError> {
        let now = self.clock.now_ms();
        let updated = self
            .store
            .channels()
            .update(name, title, description, now)
            .await?
            .ok_or_else(|| ChannelError::NotFound(name.clone()))?;
        self.hub.mark_dirty();
        Ok(updated)
    }

    /// Deletes a channel and its stages. The default channel stays; a live one is refused.
    pub async fn delete(&self, name: &ChannelId) -> Result<(), ChannelError> {
        if name.is_default() {
            return Err(ChannelError::Permanent);
        }
        self.get(name).await?;
        if self.publishers.live(name).is_some() {
            return Err(ChannelError::Live(name.clone()));
        }
        self.stages.delete_channel_stages(name).await?;
        self.store.channels().delete(name).await?;
        self.hub.mark_dirty();
        tracing::info!(channel = %name, "channel deleted");
        Ok(())
    }

    /// Issues a new stream key; the old one stops working at once.
    pub async fn rotate_stream_key(&self, name: &ChannelId) -> Result<StreamKey, ChannelError> {
        let key = StreamKey::generate();
        if !self.store.channels().set_stream_key_hash(name, &key.hash(), self.clock.now_ms()).await? {
            return Err(ChannelError::NotFound(name.clone()));
        }
        tracing::info!(channel = %name, "stream key rotated");
        Ok(key)
    }

    /// The channel a stream key belongs to. Anything not shaped like a key is refused before
    /// the store is asked.
    pub async fn by_stream_key(&self, key: &str) -> Result<Option<ChannelRecord>, ChannelError> {
        if !key.starts_with(StreamKey::PREFIX) || key.len() != StreamKey::PREFIX.len() + 40 {
            return Ok(None);
        }
        Ok(self.store.channels().by_stream_key_hash(&hash_key(key)).await?)
    }

    /// The channel `name`, if `key` is its stream key. A missing key, a wrong one, another
    /// channel's and a channel that does not exist are refused alike (401), so the answer tells
    /// nothing of other channels' keys.
    pub async fn authorize_stream_key(&self, name: &ChannelId, key: Option<&str>) -> Result<ChannelRecord, ChannelError> {
        let key = key.ok_or(ChannelError::StreamKey("Send the channel's stream key as Authorization: Bearer <streamKey>"))?;
        match self.by_stream_key(key).await? {
            Some(channel) if channel.name == *name => Ok(channel),
            _ => Err(ChannelError::StreamKey("The stream key is not valid for this channel")),
        }
    }

    /// Channel `name`'s stream-key WHIP URL under `base_url`; `None` on backends without one.
    pub fn whip_endpoint(&self, name: &ChannelId, base_url: &str) -> Option<String> {
        self.stream_key_whip.then(|| absolute(base_url, &stream_key_whip_path(name), false))
    }

    /// How a channel looks now: live or not, its viewers and stages; its WHIP URL under
    /// `base_url`.
    pub async fn view(&self, record: &ChannelRecord, base_url: &str) -> Result<ChannelView, ChannelError> {
        let counts = self.store.presence().counts().await?;
        let stages = self.store.stages().of_channel(&record.name).await?;
        Ok(self.view_with(record, &stages, &counts, base_url))
    }

    /// Every channel as it looks now, live ones first (then oldest first), with the totals.
    pub async fn list_view(&self, base_url: &str) -> Result<ChannelListView, ChannelError> {
        let counts = self.store.presence().counts().await?;
        // One read of every stage, not one per channel.
        let stages = self.store.stages().list().await?;
        let mut channels: Vec<ChannelView> = Vec::new();
        for record in self.list().await? {
            let own: Vec<StageRecord> = stages.iter().filter(|s| s.channel == record.name).cloned().collect();
            channels.push(self.view_with(&record, &own, &counts, base_url));
        }
        channels.sort_by_key(|c| !c.is_live); // stable: oldest first within each group
        Ok(ChannelListView {
            total_channels: channels.len() as u32,
            total_viewers: channels.iter().map(|c| c.viewer_count).sum(),
            channels,
        })
    }

    fn view_with(
        &self,
        record: &ChannelRecord,
        stages: &[StageRecord],
        counts: &HashMap<String, u32>,
        base_url: &str,
    ) -> ChannelView {
        ChannelView {
            name: record.name.to_string(),
            title: record.title.clone(),
            description: record.description.clone(),
            is_live: self.publishers.live(&record.name).is_some(),
            viewer_count: stages.iter().map(|s| counts.get(s.arn.as_str()).copied().unwrap_or(0)).sum(),
            active_stages: stages.len() as u32,
            master_stage_arn: record.master_stage_arn.as_ref().map(|a| a.to_string()),
            whip_endpoint: self.whip_endpoint(&record.name, base_url),
            created_at: iso_at(record.created_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_are_long_random_and_hashed() {
        let (a, b) = (StreamKey::generate(), StreamKey::generate());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 44);
        assert!(a.as_str().starts_with("lsk_"));
        assert_eq!(a.hash().len(), 64);
        assert_eq!(a.hash(), hash_key(a.as_str()));
        assert_ne!(a.hash(), b.hash());
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(!format!("{a:?}").contains(&a.as_str()[4..]), "a key never reaches the logs");
    }
}
