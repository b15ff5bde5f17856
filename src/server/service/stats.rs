//! The audience as the stats routes, `/ws` and the dashboard read it.

use super::hub::StatsHub;
use super::publishers::PublisherRegistry;
use super::stages::Stages;
use super::views::{
    PublisherStatsView, PublisherView, StageInfo, StageListView, StageStatsView, StagesStatsView, StatsStageItem, StatsView,
    TotalViewersView,
};
use crate::api::{LiveStats, StageCount};
use crate::domain::ChannelId;
use crate::server::clock::Clock;
use crate::server::error::{AppError, AppResult};
use crate::server::store::Store;
use crate::server::time::{iso, iso_now};
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
        Self { store, clock, hub, stages, publishers, snapshot_retention_days }
    }

    pub fn is_publisher_live(&self) -> bool {
        self.publishers.live(&ChannelId::default()).is_some()
    }

    /// Recomputes the live totals from the store.
    pub async fn live(&self) -> AppResult<LiveStats> {
        let stages = self.store.stages().list().await?;
        let counts = self.store.presence().counts().await?;
        let stages: Vec<StageCount> = stages
            .iter()
            .map(|s| StageCount { stage_arn: s.arn.clone(), viewer_count: counts.get(&s.arn).copied().unwrap_or(0) })
            .collect();
        Ok(LiveStats {
            total_viewers: stages.iter().map(|s| s.viewer_count).sum(),
            active_stages: stages.len() as u32,
            is_publisher_live: self.is_publisher_live(),
            stages,
            timestamp: iso_now(),
        })
    }

    /// Recomputes and publishes the live totals; true when they changed.
    pub async fn refresh(&self) -> AppResult<bool> {
        let _turn = self.hub.refreshing().await;
        let stats = self.live().await?;
        Ok(self.hub.publish(stats))
    }

    /// `GET /api/stats`.
    pub async fn summary(&self) -> AppResult<StatsView> {
        let stages = self.store.stages().list().await?;
        let counts = self.store.presence().counts().await?;
        let items: Vec<StatsStageItem> = stages
            .iter()
            .map(|s| StatsStageItem {
                stage_arn: s.arn.clone(),
                stage_name: s.name.clone(),
                viewer_count: counts.get(&s.arn).copied().unwrap_or(0),
                auto_scaled: s.auto_scaled,
                created_at: iso(s.created_at),
            })
            .collect();
        Ok(StatsView {
            total_viewers: items.iter().map(|s| s.viewer_count).sum(),
            active_stages: items.len() as u32,
            is_publisher_live: self.is_publisher_live(),
            stages: items,
        })
    }

    pub async fn total_viewers(&self) -> AppResult<TotalViewersView> {
        let total: u32 = self.store.presence().counts().await?.values().sum();
        Ok(TotalViewersView { total_viewers: total, calculated_from: "real-time sum" })
    }

    pub async fn stages(&self, arn: Option<&str>) -> AppResult<StagesStatsView> {
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
                        parent_stage_arn: stage.parent_arn,
                        created_at: iso(stage.created_at),
                        tags: stage.tags,
                    },
                }))
            }
            // The same list as `GET /api/stages`, without its `nextToken`.
            None => Ok(StagesStatsView::All(StageListView { next_token: None, ..self.stages.list().await? })),
        }
    }

    pub fn publisher(&self) -> PublisherStatsView {
        let publisher = self.publishers.live(&ChannelId::default()).map(|p| PublisherView {
            user_id: p.user_id,
            participant_id: p.participant_id,
            stage_arn: p.stage_arn,
            since: iso(p.since_ms),
        });
        PublisherStatsView { is_publisher_live: publisher.is_some(), publisher }
    }

    /// Records every stage's viewer count and prunes snapshots past retention.
    pub async fn take_snapshot(&self) -> AppResult<usize> {
        let now = self.clock.now_ms();
        let loads = self.stages.loads().await?;
        let counts: Vec<(String, u32)> = loads.iter().map(|l| (l.arn.to_string(), l.viewers)).collect();
        self.store.snapshots().insert(now, &counts).await?;
        let retention_ms = self.snapshot_retention_days * 86_400_000;
        self.store.snapshots().prune(now - retention_ms).await?;
        Ok(counts.len())
    }

    /// Snapshots of the last `hours` hours: (stage ARN, ISO time, viewers).
    pub async fn snapshots(&self, hours: u32) -> AppResult<Vec<(String, String, u32)>> {
        let since = self.clock.now_ms() - i64::from(hours) * 3_600_000;
        Ok(self.store.snapshots().since(since).await?.into_iter().map(|(a, t, n)| (a, iso(t), n)).collect())
    }
}
