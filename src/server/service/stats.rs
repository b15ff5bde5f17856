use super::views::{
    BackendHealthView, HealthServicesView, HealthView, MemoryView, PublisherStatsView, PublisherView, StageInfo, StageListView,
    StageStatsView, StagesStatsView, StatsStageItem, StatsView, TotalViewersView,
};
use super::Service;
use crate::api::{LiveStats, StageCount};
use crate::domain::ChannelId;
use crate::server::error::{AppError, AppResult};
use crate::server::support::rss_mb;
use crate::server::time::{iso, iso_now};

impl Service {
    pub fn is_publisher_live(&self) -> bool {
        self.publishers().live(&ChannelId::default()).is_some()
    }

    /// Recomputes the live totals from the store.
    pub async fn compute_live_stats(&self) -> AppResult<LiveStats> {
        let stages = self.store.list_stages().await?;
        let counts = self.store.stage_counts().await?;
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
    pub async fn refresh_live_stats(&self) -> AppResult<bool> {
        let _turn = self.hub.refreshing().await;
        let stats = self.compute_live_stats().await?;
        Ok(self.hub.publish(stats))
    }

    pub async fn stats(&self) -> AppResult<StatsView> {
        let stages = self.store.list_stages().await?;
        let counts = self.store.stage_counts().await?;
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

    pub async fn stats_viewers(&self) -> AppResult<TotalViewersView> {
        let total: u32 = self.store.stage_counts().await?.values().sum();
        Ok(TotalViewersView { total_viewers: total, calculated_from: "real-time sum" })
    }

    pub async fn stats_stages(&self, arn: Option<&str>) -> AppResult<StagesStatsView> {
        match arn {
            Some(raw) => {
                let arn = super::parse_stage_arn("arn", raw)?;
                let stage = self.store.get_stage(arn.as_str()).await?.ok_or_else(|| AppError::not_found("Stage not found"))?;
                let viewer_count = self.store.stage_count(arn.as_str()).await?;
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

    pub fn publisher_stats(&self) -> PublisherStatsView {
        let publisher = self.publishers().live(&ChannelId::default()).map(|p| PublisherView {
            user_id: p.user_id,
            participant_id: p.participant_id,
            stage_arn: p.stage_arn,
            since: iso(p.since_ms),
        });
        PublisherStatsView { is_publisher_live: publisher.is_some(), publisher }
    }

    /// `/health`: `Err` (503) when the database does not answer.
    pub async fn health(&self) -> Result<HealthView, AppError> {
        let db_ok =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.store.ping()).await.map(|r| r.is_ok()).unwrap_or(false);
        if !db_ok {
            return Err(AppError::new(crate::api::ErrorCode::ServiceUnavailable, "The database is unavailable"));
        }
        // Not set up yet (IVS slow or failing at start) counts as degraded too.
        let backend_ok = self.backend.healthy() && self.is_ready();
        let master = self.store.master_stage().await.ok().flatten();
        Ok(HealthView {
            status: if backend_ok { "healthy" } else { "degraded" },
            uptime: (self.uptime_secs() * 1000.0).round() / 1000.0,
            version: env!("CARGO_PKG_VERSION"),
            services: HealthServicesView {
                database: "connected",
                backend: BackendHealthView {
                    kind: self.backend.kind().as_str(),
                    region: self.backend.region(),
                    stage_configured: master.is_some(),
                    status: if backend_ok { "connected" } else { "degraded" },
                },
            },
            memory: MemoryView { rss_mb: rss_mb() },
        })
    }
}
