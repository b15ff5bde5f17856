//! Parsed domain types and pure rules. No I/O; compiled for both the server and the browser.

pub mod assignment;
pub mod autoscale;
mod ids;

pub use ids::{IdError, ParticipantId, StageArn, UserId};
