//! Parsed domain types and pure rules. No I/O; compiled for both the server and the browser.

pub mod assignment;
pub mod autoscale;
mod endpoint;
mod ids;
mod publisher;
mod stage;
mod time;

pub use endpoint::{stream_key_whip_path, WHEP_PATH, WHIP_PATH};
pub use ids::{ChannelId, IdError, ParticipantId, StageArn, UserId, FORMAT_CHARS};
pub use publisher::{LivePublisher, LivePublishers};
pub use stage::{StageName, StageTags};
pub use time::UnixMs;
