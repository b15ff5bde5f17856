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
    pub total_viewers: u32,
    pub active_stages: u32,
    pub is_publisher_live: bool,
    pub stages: Vec<StageCount>,
    pub timestamp: String,
}

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
