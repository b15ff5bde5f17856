//! Parsed domain types and pure rules. No I/O; compiled for both the server and the browser.

mod ids;
pub mod autoscale;
pub mod assignment;

pub use ids::{IdError, ParticipantId, StageArn, UserId};
