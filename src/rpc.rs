//! Server functions: the app's own pages call these (never the API key). They are thin
//! adapters over the same service layer as the REST handlers. The browser build has only their
//! client stubs; the bodies (and everything they name of `crate::server`) are server-only.

use crate::api::{JoinOutcome, LiveStats, RpcError};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

#[cfg(feature = "ssr")]
mod ssr {
    use crate::api::{ErrorCode, RpcError};
    use crate::domain::IdError;
    use crate::server::error::AppError;
    pub use crate::server::service::Service;
    pub use std::sync::Arc;

    pub fn service() -> Result<Arc<Service>, RpcError> {
        leptos::prelude::use_context::<Arc<Service>>().ok_or_else(unavailable)
    }

    /// The app state is missing from the server function's context.
    pub fn unavailable() -> RpcError {
        RpcError::new(ErrorCode::ServiceUnavailable, "service unavailable")
    }

    pub fn fail(e: AppError) -> RpcError {
        if matches!(e, AppError::Internal(_) | AppError::DatabaseUnavailable(_)) {
            tracing::error!(error = %e, "server function failed");
        }
        RpcError::new(e.code(), e.public_message())
    }

    /// The channel a page names (absent: the default one).
    pub fn channel(raw: Option<String>) -> Result<crate::domain::ChannelId, RpcError> {
        raw.map(crate::domain::ChannelId::parse).transpose().map_err(invalid("channel")).map(Option::unwrap_or_default)
    }

    /// An argument that did not parse, named as the contract names it.
    pub fn invalid(field: &str) -> impl FnOnce(IdError) -> RpcError + '_ {
        move |e| RpcError::new(ErrorCode::ValidationError, format!("{field} {e}"))
    }
}

/// Current live totals of `channel` (absent: the default one).
#[server(input = Json)]
pub async fn get_live_stats(channel: Option<String>) -> Result<LiveStats, RpcError> {
    let channel = ssr::channel(channel)?;
    ssr::service()?.stats().live(&channel).await.map_err(ssr::fail)
}

/// Joins `channel`'s broadcast (absent: the default one) as `user_id`: a viewer token and a
/// stage, or why not.
#[server(input = Json)]
pub async fn join_stream(user_id: String, channel: Option<String>) -> Result<JoinOutcome, RpcError> {
    use crate::api::ViewerTicket;
    use crate::domain::UserId;
    use crate::server::service::JoinError;
    let service = ssr::service()?;
    let user = UserId::parse(user_id).map_err(ssr::invalid("userId"))?;
    let channel = ssr::channel(channel)?;
    let headers: axum::http::HeaderMap = leptos_axum::extract().await?;
    let base = crate::server::http::extract::base_url_from(&headers, service.settings().server.public_url.as_deref());
    match service.tokens().issue_viewer_token(&channel, &user, None, &base).await {
        Ok(v) => Ok(JoinOutcome::Joined(ViewerTicket {
            token: v.token,
            participant_id: v.participant_id,
            user_id: v.user_id,
            stage_arn: v.stage_arn,
            expires_at: v.expires_at,
            expires_in: v.expires_in,
            whep_endpoint: v.whep_endpoint,
            sdk_url: service.tokens().web_sdk_url(),
            current_viewers: v.current_viewers,
            is_new_viewer: v.is_new_viewer,
        })),
        Err(JoinError::Offline) => Ok(JoinOutcome::Offline),
        Err(JoinError::Full(_)) => Ok(JoinOutcome::Full),
        Err(e) => Err(ssr::fail(e.into())),
    }
}

/// Records a heartbeat; `NOT_FOUND` when the server no longer counts this viewer (rejoin).
#[server(input = Json)]
pub async fn send_heartbeat(user_id: String, stage_arn: String) -> Result<(), RpcError> {
    use crate::domain::{StageArn, UserId};
    let service = ssr::service()?;
    let user = UserId::parse(user_id).map_err(ssr::invalid("userId"))?;
    let stage = StageArn::parse(stage_arn).map_err(ssr::invalid("stageArn"))?;
    service.presence().record_heartbeat(&user, &stage).await.map_err(ssr::fail)
}

/// Leaves the broadcast (idempotent).
// Form-encoded: the page sends it with `navigator.sendBeacon` as it unloads.
#[server]
pub async fn leave_stream(user_id: String, stage_arn: String) -> Result<(), RpcError> {
    use crate::domain::{StageArn, UserId};
    let service = ssr::service()?;
    let user = UserId::parse(user_id).map_err(ssr::invalid("userId"))?;
    let stage = StageArn::parse(stage_arn).map_err(ssr::invalid("stageArn"))?;
    service.presence().leave(&user, &stage).await.map(|_| ()).map_err(ssr::fail)
}

#[cfg(feature = "ssr")]
mod session {
    use crate::api::RpcError;
    use crate::server::http::session::{self, ApiKey};
    use leptos::prelude::*;

    fn key() -> Result<ApiKey, RpcError> {
        use_context::<ApiKey>().ok_or_else(super::ssr::unavailable)
    }

    pub async fn headers() -> Result<axum::http::HeaderMap, RpcError> {
        Ok(leptos_axum::extract().await?)
    }

    pub async fn signed_in(now_secs: i64) -> Result<bool, RpcError> {
        let key = key()?;
        let headers = headers().await?;
        Ok(headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(session::from_cookie_header)
            .any(|v| session::verify(&key.0, v, now_secs)))
    }

    pub fn check_key(given: &str) -> Result<bool, RpcError> {
        Ok(crate::server::support::secrets_match(given.trim(), &key()?.0))
    }

    pub fn set_cookie(value: String) {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                resp.append_header(axum::http::header::SET_COOKIE, v);
            }
        }
    }

    pub fn issue(now_secs: i64) -> Result<String, RpcError> {
        Ok(session::issue(&key()?.0, now_secs))
    }
}

/// Whether this browser is signed in as the broadcaster.
#[server(input = Json)]
pub async fn broadcaster_signed_in() -> Result<bool, RpcError> {
    let now = ssr::service()?.now_ms().div_euclid(1000);
    session::signed_in(now).await
}

/// Signs the broadcaster in with the API key; `false` when the key is wrong.
#[server(input = Json)]
pub async fn broadcaster_sign_in(api_key: String) -> Result<bool, RpcError> {
    let service = ssr::service()?;
    if !session::check_key(&api_key)? {
        return Ok(false);
    }
    let headers = session::headers().await?;
    let secure = headers.get("x-forwarded-proto").is_some_and(|p| p == "https")
        || service.settings().server.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let value = session::issue(service.now_ms().div_euclid(1000))?;
    session::set_cookie(crate::server::http::session::set_cookie(&value, secure));
    Ok(true)
}

#[server(input = Json)]
pub async fn broadcaster_sign_out() -> Result<(), RpcError> {
    session::set_cookie(crate::server::http::session::clear_cookie());
    Ok(())
}

/// A publisher token on `channel` (absent: the default one) for the signed-in broadcaster.
#[server(input = Json)]
pub async fn publisher_ticket(channel: Option<String>) -> Result<crate::api::PublisherTicket, RpcError> {
    use crate::api::ErrorCode;
    use crate::domain::UserId;
    let service = ssr::service()?;
    let channel = ssr::channel(channel)?;
    if !session::signed_in(service.now_ms().div_euclid(1000)).await? {
        return Err(RpcError::new(ErrorCode::Unauthorized, "sign in as the broadcaster first"));
    }
    let headers = session::headers().await?;
    let base = crate::server::http::extract::base_url_from(&headers, service.settings().server.public_url.as_deref());
    let user = UserId::parse("broadcaster").map_err(|e| RpcError::new(ErrorCode::InternalError, e.to_string()))?;
    let t = service.tokens().issue_publisher_token(&channel, &user, &base).await.map_err(ssr::fail)?;
    Ok(crate::api::PublisherTicket {
        token: t.token,
        participant_id: t.participant_id,
        stage_arn: t.stage_arn,
        expires_at: t.expires_at,
        expires_in: t.expires_in,
        whip_endpoint: t.whip_endpoint,
        sdk_url: service.tokens().web_sdk_url(),
    })
}

/// Live totals, the stage table and the last 24 hours of snapshots.
#[server(input = Json)]
pub async fn dashboard_data() -> Result<crate::api::DashboardData, RpcError> {
    ssr::service()?.stats().dashboard().await.map_err(ssr::fail)
}
