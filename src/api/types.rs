//! Live figures as both sides read them: the `/ws` push, the dashboard's data, and what a
//! page's join returns (a viewer ticket, offline or full).

use serde::{Deserialize, Serialize};

/// Viewer count of one stage, as pushed over `/ws`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageCount {
    pub stage_arn: String,
    pub viewer_count: u32,
}

/// Live totals: the `data` of a `stats_update` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LiveStats {
    /// The channel these totals are of.
    #[serde(default)]
    pub channel: crate::domain::ChannelId,
    pub total_viewers: u32,
    pub active_stages: u32,
    pub is_publisher_live: bool,
    pub stages: Vec<StageCount>,
    pub timestamp: String,
}

/// One channel as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryEntry {
    pub name: crate::domain::ChannelId,
    pub title: String,
    pub description: Option<String>,
    pub is_live: bool,
    pub viewer_count: u32,
}

/// The channel directory: every channel, live ones first (then oldest first), with the
/// totals; the `data` of a `channels_update` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    pub channels: Vec<DirectoryEntry>,
    pub total_channels: u32,
    pub total_viewers: u32,
    pub live_channels: u32,
    pub timestamp: String,
}

impl Directory {
    /// Orders `channels` (given oldest first) live first and adds the totals.
    pub fn new(mut channels: Vec<DirectoryEntry>, timestamp: String) -> Self {
        channels.sort_by_key(|c| !c.is_live); // stable: oldest first within each group
        Self {
            total_channels: channels.len() as u32,
            total_viewers: channels.iter().map(|c| c.viewer_count).sum(),
            live_channels: channels.iter().filter(|c| c.is_live).count() as u32,
            channels,
            timestamp,
        }
    }

    /// The same listing, whatever the time it was taken.
    pub fn same_listing(&self, other: &Self) -> bool {
        self.channels == other.channels
    }
}

/// What the server hands each page as it renders: a channel's live totals as the stats hub
/// holds them (`None`: no such channel), so the first render shows them without a round trip.
#[derive(Clone)]
pub struct CurrentStats(pub std::sync::Arc<StatsOf>);

/// What the server hands each page as it renders: the channel directory as the stats hub
/// holds it.
#[derive(Clone)]
pub struct CurrentDirectory(pub std::sync::Arc<dyn Fn() -> Directory + Send + Sync>);

/// A channel's live totals, `None` for no such channel.
pub type StatsOf = dyn Fn(&crate::domain::ChannelId) -> Option<LiveStats> + Send + Sync;

/// What a viewer page needs to start playing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewerTicket {
    pub token: String,
    pub participant_id: String,
    pub user_id: String,
    pub stage_arn: String,
    pub expires_at: String,
    pub expires_in: i64,
    pub whep_endpoint: Option<String>,
    /// The IVS Web Broadcast SDK to play with when there is no WHEP endpoint (IVS backend).
    pub sdk_url: Option<String>,
    pub current_viewers: u32,
    pub is_new_viewer: bool,
}

/// The outcome of joining the broadcast from the app's own viewer page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JoinOutcome {
    Joined(ViewerTicket),
    /// No publisher is live.
    Offline,
    /// Every stage is at capacity.
    Full,
}

/// What the broadcaster page needs to go live (and what OBS needs over WHIP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherTicket {
    pub token: String,
    pub participant_id: String,
    pub stage_arn: String,
    pub expires_at: String,
    pub expires_in: i64,
    pub whip_endpoint: String,
    /// The IVS Web Broadcast SDK to publish with from the browser (IVS backend); `None`
    /// means the browser publishes over WHIP itself.
    pub sdk_url: Option<String>,
    /// The channel's stream-key WHIP URL, for encoders (OBS) that keep one setting; `None` on
    /// backends without one (IVS).
    pub stream_key_endpoint: Option<String>,
}

/// A channel's new stream key, as the dashboard shows it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedStreamKey {
    pub channel: crate::domain::ChannelId,
    pub stream_key: String,
}

/// One point of the viewers-over-time chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub viewers: u32,
}

/// One row of the dashboard's stage table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRow {
    pub arn: String,
    pub name: String,
    pub is_master: bool,
    pub auto_scaled: bool,
}

/// The dashboard's server-rendered data; live figures then arrive over `/ws`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardData {
    pub stats: LiveStats,
    pub stages: Vec<StageRow>,
    /// Total viewers per snapshot over the last 24 hours, oldest first.
    pub series: Vec<SeriesPoint>,
    /// The same, per channel (a channel without snapshots is left out).
    pub channel_series: Vec<ChannelSeries>,
    pub now_ms: i64,
    /// Whether this browser may create channels and rotate their keys (an API-key session).
    pub can_manage: bool,
}

/// One channel's viewers over time, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSeries {
    pub channel: crate::domain::ChannelId,
    pub points: Vec<SeriesPoint>,
}
