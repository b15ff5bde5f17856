//! The audience as the stats routes, `/ws` and the dashboard read it.

use super::hub::StatsHub;
use super::publishers::PublisherRegistry;
use super::stages::Stages;
use super::views::{
    PublisherStatsView, PublisherView, StageInfo, StageListView, StageStatsView, StagesStatsView, StatsStageItem, StatsView,
    TotalViewersView,
};
use crate::api::{Directory, DirectoryEntry, LiveStats, StageCount};
use crate::domain::ChannelId;
use crate::server::clock::Clock;
use crate::server::error::{AppError, AppResult};
use crate::server::store::{StageRecord, Store};
use crate::server::time::{iso, iso_at, iso_now};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Reads the audience: live totals (and their publication to the hub), the stats routes'
/// views and the dashboard's.
pub struct Stats {
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    hub: Arc<StatsHub>,
    stages: Arc<Stages>,
    publishers: Arc<PublisherRegistry>,
    snapshot_retention_days: i64,
    /// The dashboard's data as last read, and when (see [`Stats::dashboard`]).
    pub(super) dashboard: tokio::sync::Mutex<Option<(std::time::Instant, crate::api::DashboardData)>>,
}

impl Stats {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        hub: Arc<StatsHub>,
        stages: Arc<Stages>,
        publishers: Arc<PublisherRegistry>,
        snapshot_retention_days: i64,
    ) -> Self {
        Self { store, clock, hub, stages, publishers, snapshot_retention_days, dashboard: Default::default() }
    }

    pub fn is_publisher_live(&self, channel: &ChannelId) -> bool {
        self.publishers.live(channel).is_some()
    }

    /// 404 unless `channel` exists.
    pub(super) async fn check_channel(&self, channel: &ChannelId) -> AppResult<()> {
        if channel.is_default() || self.store.channels().get(channel).await?.is_some() {
            Ok(())
        } else {
            Err(AppError::not_found("Channel not found"))
        }
    }

    /// Recomputes the live totals of `channel` from the store.
    pub async fn live(&self, channel: &ChannelId) -> AppResult<LiveStats> {
        self.check_channel(channel).await?;
        let stages = self.store.stages().of_channel(channel).await?;
        let counts = self.store.presence().counts().await?;
        Ok(self.live_of(channel, &stages, &counts))
    }

    /// Recomputes every channel's live totals from the store (two queries whatever the number
    /// of channels).
    pub async fn live_all(&self) -> AppResult<BTreeMap<ChannelId, LiveStats>> {
        let stages = self.store.stages().list().await?;
        let counts = self.store.presence().counts().await?;
        let mut by_channel: BTreeMap<ChannelId, Vec<StageRecord>> = BTreeMap::new();
        by_channel.entry(ChannelId::default()).or_default();
        for stage in stages {
            by_channel.entry(stage.channel.clone()).or_default().push(stage);
        }
        Ok(by_channel
            .into_iter()
            .map(|(channel, stages)| {
                let live = self.live_of(&channel, &stages, &counts);
                (channel, live)
            })
            .collect())
    }

    fn live_of(&self, channel: &ChannelId, stages: &[StageRecord], counts: &HashMap<String, u32>) -> LiveStats {
        let stages: Vec<StageCount> = stages
            .iter()
            .map(|s| StageCount { stage_arn: s.arn.to_string(), viewer_count: counts.get(s.arn.as_str()).copied().unwrap_or(0) })
            .collect();
        LiveStats {
            channel: channel.clone(),
            total_viewers: stages.iter().map(|s| s.viewer_count).sum(),
            active_stages: stages.len() as u32,
            is_publisher_live: self.is_publisher_live(channel),
            stages,
            timestamp: iso_now(),
        }
    }

    /// Recomputes and publishes every channel's live totals and the directory; true when any
    /// changed.
    pub async fn refresh(&self) -> AppResult<bool> {
        let _turn = self.hub.refreshing().await;
        let stats = self.live_all().await?;
        let records = self.store.channels().list().await?;
        let entries = records
            .into_iter()
            .map(|r| {
                let live = stats.get(&r.name);
                DirectoryEntry {
                    is_live: self.is_publisher_live(&r.name),
                    viewer_count: live.map_or(0, |l| l.total_viewers),
                    name: r.name,
                    title: r.title,
                    description: r.description,
                }
            })
            .collect();
        let directory_changed = self.hub.publish_directory(Directory::new(entries, iso_now()));
        Ok(self.hub.publish(stats) | directory_changed)
    }

    /// `GET /api/stats`.
    pub async fn summary(&self, channel: &ChannelId) -> AppResult<StatsView> {
        self.check_channel(channel).await?;
        let stages = self.store.stages().of_channel(channel).await?;
        let counts = self.store.presence().counts().await?;
        let items: Vec<StatsStageItem> = stages
            .iter()
            .map(|s| StatsStageItem {
                stage_arn: s.arn.to_string(),
                stage_name: s.name.clone(),
                viewer_count: counts.get(s.arn.as_str()).copied().unwrap_or(0),
                auto_scaled: s.auto_scaled,
                created_at: iso_at(s.created_at),
            })
            .collect();
        Ok(StatsView {
            total_viewers: items.iter().map(|s| s.viewer_count).sum(),
            active_stages: items.len() as u32,
            is_publisher_live: self.is_publisher_live(channel),
            stages: items,
        })
    }

    /// `GET /api/stats/viewers`: the channel's viewers, summed over its stages.
    pub async fn total_viewers(&self, channel: &ChannelId) -> AppResult<TotalViewersView> {
        let live = self.live(channel).await?;
        Ok(TotalViewersView { total_viewers: live.total_viewers, calculated_from: "real-time sum" })
    }

    /// `GET /api/stats/stages`: one stage, or every stage of `channel`.
    pub async fn stages(&self, channel: &ChannelId, arn: Option<&str>) -> AppResult<StagesStatsView> {
        self.check_channel(channel).await?;
        match arn {
            Some(raw) => {
                let arn = super::parse_stage_arn("arn", raw)?;
                let stage = self.store.stages().get(arn.as_str()).await?.ok_or_else(|| AppError::not_found("Stage not found"))?;
                let viewer_count = self.store.presence().count(arn.as_str()).await?;
                Ok(StagesStatsView::One(StageStatsView {
                    stage_arn: arn.to_string(),
                    viewer_count,
                    stage_info: StageInfo {
                        name: stage.name,
                        is_master: stage.is_master,
                        auto_scaled: stage.auto_scaled,
                        parent_stage_arn: stage.parent_arn.map(String::from),
                        created_at: iso_at(stage.created_at),
                        tags: stage.tags,
                    },
                }))
            }
            // The same list as `GET /api/stages` (the channel's stages), without its `nextToken`.
            None => Ok(StagesStatsView::All(StageListView { next_token: None, ..self.stages.list_of(Some(channel)).await? })),
        }
    }

    /// `GET /api/stats/publisher`.
    pub async fn publisher(&self, channel: &ChannelId) -> AppResult<PublisherStatsView> {
        self.check_channel(channel).await?;
        let publisher = self.publishers.live(channel).map(|p| PublisherView {
            user_id: p.user_id,
            participant_id: p.participant_id,
            stage_arn: p.stage_arn,
            since: iso_at(p.since),
        });
        Ok(PublisherStatsView { is_publisher_live: publisher.is_some(), publisher })
    }

    /// Records every stage's viewer count, and prunes snapshots and ended watch sessions past
    /// the retention (so a join/leave loop cannot grow the history without bound).
    pub async fn take_snapshot(&self) -> AppResult<usize> {
        let now = self.clock.now_ms();
        let loads = self.stages.loads().await?;
        let counts: Vec<(String, u32)> = loads.iter().map(|l| (l.arn.to_string(), l.viewers)).collect();
        self.store.snapshots().insert(now, &counts).await?;
        let retention_ms = self.snapshot_retention_days * 86_400_000;
        self.store.snapshots().prune(now - retention_ms).await?;
        let pruned = self.store.sessions().prune(crate::domain::UnixMs::from_millis(now - retention_ms)).await?;
        if pruned > 0 {
            tracing::info!(pruned, "watch sessions past the retention removed");
        }
        Ok(counts.len())
    }

    /// Snapshots of the last `hours` hours: (stage ARN, ISO time, viewers).
    pub async fn snapshots(&self, hours: u32) -> AppResult<Vec<(String, String, u32)>> {
        let since = self.clock.now_ms() - i64::from(hours) * 3_600_000;
        Ok(self.store.snapshots().since(since).await?.into_iter().map(|(a, t, n)| (a, iso(t), n)).collect())
    }
}
