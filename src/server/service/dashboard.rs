//! The dashboard's view: live totals, the stage table and viewers over time.

use super::stats::Stats;
use crate::api::{ChannelSeries, DashboardData, SeriesPoint, StageRow};
use crate::domain::ChannelId;
use crate::server::error::AppResult;
use std::collections::BTreeMap;

impl Stats {
    pub async fn dashboard(&self) -> AppResult<DashboardData> {
        let now_ms = self.clock.now_ms();
        let stats = self.live(&ChannelId::default()).await?;
        let stages = self
            .store
            .stages()
            .list()
            .await?
            .into_iter()
            .map(|s| StageRow { arn: s.arn, name: s.name, is_master: s.is_master, auto_scaled: s.auto_scaled })
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
