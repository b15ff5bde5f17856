//! Response bodies of the public contract (the `data` of the envelope).

use crate::domain::ChannelId;
use crate::server::store::StageRecord;
use crate::server::time::iso_at;
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewerTokenView {
    pub token: String,
    pub participant_id: String,
    pub user_id: String,
    pub stage_arn: String,
    pub capabilities: Vec<&'static str>,
    pub expires_at: String,
    pub expires_in: i64,
    pub current_viewers: u32,
    pub is_new_viewer: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whep_endpoint: Option<String>,
    /// The channel the viewer watches.
    pub channel: ChannelId,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublisherTokenView {
    pub token: String,
    pub participant_id: String,
    pub user_id: String,
    pub stage_arn: String,
    pub capabilities: Vec<&'static str>,
    pub expires_at: String,
    pub expires_in: i64,
    pub whip_endpoint: String,
    pub instructions: PublishInstructions,
    /// The channel the token publishes on.
    pub channel: ChannelId,
}

/// How to go live with the token: from OBS (or any WHIP encoder) and from the browser.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PublishInstructions {
    pub obs: ObsInstructions,
    pub web: WebInstructions,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObsInstructions {
    pub service: &'static str,
    pub server: String,
    pub bearer_token: String,
    pub settings: ObsSettings,
}

/// Encoder settings recommended for sub-second latency.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObsSettings {
    pub resolution: &'static str,
    pub bitrate: &'static str,
    pub keyframe_interval: &'static str,
    pub cpu_preset: &'static str,
    pub tune: &'static str,
}

impl ObsSettings {
    pub const RECOMMENDED: Self = Self {
        resolution: "1280x720",
        bitrate: "2500 kbps",
        keyframe_interval: "1s",
        cpu_preset: "ultrafast",
        tune: "zerolatency",
    };
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebInstructions {
    pub sdk: &'static str,
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaServerTokenView {
    pub token: String,
    pub participant_id: String,
    pub stage_arn: String,
    pub capabilities: Vec<&'static str>,
    pub expires_at: String,
    pub expires_in: i64,
}

/// A stage as returned under `stage` (shaped like IVS's Stage object, plus our own fields).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageView {
    pub arn: String,
    pub name: String,
    pub active_session_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub endpoints: BTreeMap<String, String>,
    pub is_master: bool,
    pub auto_scaled: bool,
    pub created_at: String,
}

impl StageView {
    pub fn new(s: &StageRecord, endpoints: BTreeMap<String, String>) -> Self {
        Self {
            arn: s.arn.to_string(),
            name: s.name.clone(),
            active_session_id: s.active_session_id.clone(),
            tags: s.tags.clone(),
            endpoints,
            is_master: s.is_master,
            auto_scaled: s.auto_scaled,
            created_at: iso_at(s.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageListItem {
    pub stage_arn: String,
    pub name: String,
    pub viewer_count: u32,
    pub auto_scaled: bool,
    pub is_master: bool,
    pub created_at: String,
    pub tags: BTreeMap<String, String>,
    /// The channel whose stage group the stage is in.
    pub channel: ChannelId,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsStageItem {
    pub stage_arn: String,
    pub stage_name: String,
    pub viewer_count: u32,
    pub auto_scaled: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    pub total_viewers: u32,
    pub active_stages: u32,
    pub is_publisher_live: bool,
    pub stages: Vec<StatsStageItem>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublisherView {
    pub user_id: String,
    pub participant_id: String,
    pub stage_arn: String,
    pub since: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewerEntry {
    pub user_id: String,
    pub participant_id: String,
    pub joined_at: String,
    pub last_heartbeat: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub id: i64,
    pub user_id: String,
    pub stage_arn: String,
    pub participant_id: String,
    pub joined_at: String,
    pub left_at: Option<String>,
    pub watch_duration_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejoinView {
    pub user_id: String,
    pub stage_arn: String,
    pub participant_id: String,
    pub current_viewers: u32,
    pub is_new_viewer: bool,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewerListView {
    pub stage_arn: String,
    pub total_viewers: usize,
    pub active_viewers: usize,
    pub viewers: Vec<ViewerEntry>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchDurationView {
    pub user_id: String,
    pub stage_arn: String,
    pub watch_duration_seconds: i64,
    pub watch_duration_formatted: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    pub user_id: String,
    pub total_records: usize,
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageViewStatsView {
    pub stage_arn: String,
    pub days: u32,
    pub stats: ViewFigures,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewFigures {
    pub total_views: i64,
    pub unique_viewers: i64,
    pub avg_watch_duration: i64,
    pub max_watch_duration: i64,
    pub total_watch_time: i64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TotalViewersView {
    pub total_viewers: u32,
    pub calculated_from: &'static str,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageListView {
    pub total_stages: usize,
    pub stages: Vec<StageListItem>,
    /// Only on `GET /api/stages` (always null: one page holds every stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<Option<String>>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatsView {
    pub stage_arn: String,
    pub viewer_count: u32,
    pub stage_info: StageInfo,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageInfo {
    pub name: String,
    pub is_master: bool,
    pub auto_scaled: bool,
    pub parent_stage_arn: Option<String>,
    pub created_at: String,
    pub tags: BTreeMap<String, String>,
}

/// `GET /api/stats/stages`: one stage with `arn`, else every stage.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StagesStatsView {
    One(StageStatsView),
    All(StageListView),
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublisherStatsView {
    pub is_publisher_live: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherView>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageDetailView {
    pub stage: StageView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_master_stage: Option<bool>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStartedView {
    pub message: &'static str,
    pub source_stage_arn: String,
    pub destination_stage_arn: String,
    pub participant_id: String,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStoppedView {
    pub message: &'static str,
    pub source_stage_arn: String,
    pub destination_stage_arn: String,
    pub participant_id: String,
    pub stopped_at: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatusView {
    pub stage_arn: String,
    pub has_replication: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_info: Option<ReplicationInfo>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationInfo {
    pub source_stage_arn: String,
    pub dest_stage_arn: String,
    pub participant_id: String,
    pub started_at: String,
}

/// "<m>m <s>s"
pub fn format_duration(secs: i64) -> String {
    let secs = secs.max(0);
    format!("{}m {}s", secs / 60, secs % 60)
}

/// `/health`. The fields are in alphabetical order, the order the JSON tree this replaces wrote
/// them in, so the body is unchanged byte for byte.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HealthView {
    pub memory: MemoryView,
    pub services: HealthServicesView,
    /// `healthy`, or `degraded` while the stage backend is unhealthy or not set up yet.
    pub status: &'static str,
    /// Seconds since this instance started, to the millisecond.
    pub uptime: f64,
    pub version: &'static str,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HealthServicesView {
    pub backend: BackendHealthView,
    /// Always `connected`: with the database gone, `/health` is a 503 instead.
    pub database: &'static str,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendHealthView {
    /// `local` or `ivs`.
    pub kind: &'static str,
    /// `null` when the backend has no region.
    pub region: Option<String>,
    pub stage_configured: bool,
    /// `connected` or `degraded`.
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryView {
    pub rss_mb: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_as_minutes_and_seconds() {
        assert_eq!(format_duration(0), "0m 0s");
        assert_eq!(format_duration(1845), "30m 45s");
        assert_eq!(format_duration(-3), "0m 0s");
    }

    #[test]
    fn health_serializes_as_the_contract_writes_it() {
        let view = HealthView {
            memory: MemoryView { rss_mb: 42.5 },
            services: HealthServicesView {
                backend: BackendHealthView { kind: "ivs", region: None, stage_configured: true, status: "degraded" },
                database: "connected",
            },
            status: "degraded",
            uptime: 1.25,
            version: "1.2.3",
        };
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"memory":{"rssMb":42.5},"services":{"backend":{"kind":"ivs","region":null,"stageConfigured":true,"status":"degraded"},"database":"connected"},"status":"degraded","uptime":1.25,"version":"1.2.3"}"#
        );
    }
}

/// A channel as the channel routes show it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub name: String,
    pub title: String,
    pub description: Option<String>,
    pub is_live: bool,
    pub viewer_count: u32,
    pub active_stages: u32,
    pub master_stage_arn: Option<String>,
    /// The channel's stream-key WHIP URL (`null` on backends without the embedded media
    /// server).
    pub whip_endpoint: Option<String>,
    pub created_at: String,
}

/// `POST /api/channels`: the channel and its stream key (shown only here and on rotation).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelCreatedView {
    pub channel: ChannelView,
    pub stream_key: String,
}

/// `GET /api/channels`: live channels first.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelListView {
    pub channels: Vec<ChannelView>,
    pub total_channels: u32,
    pub total_viewers: u32,
}

/// `POST /api/channels/{name}/stream-key`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamKeyView {
    pub channel: String,
    pub stream_key: String,
}

/// `POST /api/viewer/leave`.
/// `POST /api/viewer/heartbeat`: the request's own ids, borrowed (the busiest reply there is).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatView<'a> {
    pub user_id: &'a str,
    pub stage_arn: &'a str,
    pub heartbeat_updated: bool,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewerLeftView {
    pub user_id: String,
    pub stage_arn: String,
    pub viewer_left: bool,
}

/// `POST /api/stage`: the created stage.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StageCreatedView {
    pub stage: StageView,
}

/// `DELETE /api/stage/{stageArn}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageDeletedView {
    pub stage_arn: String,
    pub deleted: bool,
}

/// `GET` and `PUT /api/channels/{name}`: the channel.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChannelDetailView {
    pub channel: ChannelView,
}

/// `DELETE /api/channels/{name}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChannelDeletedView {
    pub name: String,
    pub deleted: bool,
}
