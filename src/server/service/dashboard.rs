//! The dashboard's view: live totals, the stage table and viewers over time.

use super::stats::Stats;
use crate::api::{ChannelSeries, DashboardData, SeriesPoint, StageRow};
use crate::domain::ChannelId;
use crate::server::error::AppResult;
use std::collections::BTreeMap;

/// How long one read of the dashboard's data serves every render: a public page, so the store
/// is read at most once in this time however many render it (live figures follow over `/ws`).
const DASHBOARD_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Stats {
    /// The dashboard's data, read from the store at most once per [`DASHBOARD_FRESH`]; renders
    /// that arrive while it is read wait for that read.
    pub async fn dashboard(&self) -> AppResult<DashboardData> {
        let mut cached = self.dashboard.lock().await;
        if let Some((at, data)) = cached.as_ref().filter(|(at, _)| at.elapsed() < DASHBOARD_FRESH) {
            tracing::trace!(age_ms = at.elapsed().as_millis() as u64, "dashboard data from the last read");
            return Ok(data.clone());
        }
        let data = self.read_dashboard().await?;
        *cached = Some((std::time::Instant::now(), data.clone()));
        Ok(data)
    }

    async fn read_dashboard(&self) -> AppResult<DashboardData> {
        let now_ms = self.clock.now_ms();
        let stats = self.live(&ChannelId::default()).await?;
        let stages = self
            .store
            .stages()
            .list()
            .await?
            .into_iter()
            .map(|s| StageRow { arn: s.arn.into(), name: s.name, is_master: s.is_master, auto_scaled: s.auto_scaled })
            .collect();
        let mut totals: BTreeMap<i64, u32> = BTreeMap::new();
        for (_, at, viewers) in self.store.snapshots().since(now_ms - 24 * 3_600_000).await? {
            *totals.entry(at).or_default() += viewers;
        }
        let series = totals.into_iter().map(|(at_ms, viewers)| SeriesPoint { at_ms, viewers }).collect();
        let mut per_channel: BTreeMap<ChannelId, Vec<SeriesPoint>> = BTreeMap::new();
        for (channel, at_ms, viewers) in self.store.snapshots().channel_totals_since(now_ms - 24 * 3_600_000).await? {
            // A row of a channel name that no longer parses is not shown.
            if let Ok(channel) = ChannelId::parse(channel) {
                per_channel.entry(channel).or_default().push(SeriesPoint { at_ms, viewers });
            }
        }
        let channel_series = per_channel.into_iter().map(|(channel, points)| ChannelSeries { channel, points }).collect();
        Ok(DashboardData { stats, stages, series, channel_series, now_ms, can_manage: false })
    }
}
