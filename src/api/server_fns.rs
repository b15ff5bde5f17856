//! Server functions: the app's own pages call these (never the API key). They are thin
//! adapters over the same service layer as the REST handlers.

use super::{JoinOutcome, LiveStats};
use leptos::prelude::*;

#[cfg(feature = "ssr")]
mod ssr {
    pub use crate::server::service::Service;
    pub use std::sync::Arc;

    pub fn service() -> Result<Arc<Service>, leptos::prelude::ServerFnError> {
        leptos::prelude::use_context::<Arc<Service>>()
            .ok_or_else(|| leptos::prelude::ServerFnError::new("service unavailable"))
    }

    pub fn fail(e: crate::server::error::AppError) -> leptos::prelude::ServerFnError {
        if matches!(e, crate::server::error::AppError::Internal(_) | crate::server::error::AppError::DatabaseUnavailable(_)) {
            tracing::error!(error = %e, "server function failed");
        }
        leptos::prelude::ServerFnError::new(format!("{}: {}", e.code(), e.public_message()))
    }
}

/// Current live totals.
#[server]
pub async fn get_live_stats() -> Result<LiveStats, ServerFnError> {
    ssr::service()?.compute_live_stats().await.map_err(ssr::fail)
}

/// Joins the broadcast as `user_id`: a viewer token and a stage, or why not.
#[server]
pub async fn join_stream(user_id: String) -> Result<JoinOutcome, ServerFnError> {
    use super::{ErrorCode, ViewerTicket};
    use crate::domain::UserId;
    let service = ssr::service()?;
    let user = UserId::parse(user_id).map_err(|e| ServerFnError::new(format!("VALIDATION_ERROR: userId {e}")))?;
    let headers: axum::http::HeaderMap = leptos_axum::extract().await?;
    let base = crate::server::http::extract::base_url_from(&headers, service.settings().server.public_url.as_deref());
    match service.issue_viewer_token(&user, None, &base).await {
        Ok(v) => Ok(JoinOutcome::Joined(ViewerTicket {
            token: v.token,
            participant_id: v.participant_id,
            user_id: v.user_id,
            stage_arn: v.stage_arn,
            expires_at: v.expires_at,
            expires_in: v.expires_in,
            whep_endpoint: v.whep_endpoint,
            current_viewers: v.current_viewers,
            is_new_viewer: v.is_new_viewer,
        })),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(JoinOutcome::Offline),
        Err(e) if e.code() == ErrorCode::StageFull => Ok(JoinOutcome::Full),
        Err(e) => Err(ssr::fail(e)),
    }
}

/// Records a heartbeat; `false` when the server no longer counts this viewer (rejoin).
#[server]
pub async fn send_heartbeat(user_id: String, stage_arn: String) -> Result<bool, ServerFnError> {
    use crate::domain::{StageArn, UserId};
    let service = ssr::service()?;
    let user = UserId::parse(user_id).map_err(|e| ServerFnError::new(format!("VALIDATION_ERROR: userId {e}")))?;
    let stage = StageArn::parse(stage_arn).map_err(|e| ServerFnError::new(format!("VALIDATION_ERROR: stageArn {e}")))?;
    match service.record_heartbeat(&user, &stage).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == super::ErrorCode::NotFound => Ok(false),
        Err(e) => Err(ssr::fail(e)),
    }
}

/// Leaves the broadcast (idempotent).
#[server]
pub async fn leave_stream(user_id: String, stage_arn: String) -> Result<(), ServerFnError> {
    use crate::domain::{StageArn, UserId};
    let service = ssr::service()?;
    let user = UserId::parse(user_id).map_err(|e| ServerFnError::new(format!("VALIDATION_ERROR: userId {e}")))?;
    let stage = StageArn::parse(stage_arn).map_err(|e| ServerFnError::new(format!("VALIDATION_ERROR: stageArn {e}")))?;
    service.leave(&user, &stage).await.map(|_| ()).map_err(ssr::fail)
}
