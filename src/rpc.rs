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

    /// The session cookies' values among the request's cookies.
    fn cookie_values(headers: &axum::http::HeaderMap) -> Vec<String> {
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(session::from_cookie_header)
            .map(str::to_string)
            .collect()
    }

    /// Whether this browser's session allows `channel`'s studio.
    pub async fn signed_in(now_secs: i64, channel: &crate::domain::ChannelId) -> Result<bool, RpcError> {
        let key = key()?;
        let headers = headers().await?;
        let service = super::ssr::service()?;
        for value in cookie_values(&headers) {
            // A channel's session holds while the channel's stream key is the one it was opened with.
            let key_hash = match session::claimed_channel(&value) {
                Some(claimed) => service.channels().get(&claimed).await.ok().and_then(|c| c.stream_key_hash),
                None => None,
            };
            if session::verify(&key.0, &value, now_secs, key_hash.as_deref()).is_some_and(|scope| scope.allows(channel)) {
                return Ok(true);
            }
        }
        Ok(false)
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

    /// Whether this browser holds a session opened with the API key (every channel's, and the
    /// channels' administration).
    pub async fn is_admin(now_secs: i64) -> Result<bool, RpcError> {
        let key = key()?;
        let headers = headers().await?;
        Ok(cookie_values(&headers).iter().any(|v| session::verify(&key.0, v, now_secs, None) == Some(session::Scope::AnyChannel)))
    }

    /// A session for `channel`'s studio only, bound to its stream key's hash.
    pub fn issue_for_channel(channel: &crate::domain::ChannelId, key_hash: &str, now_secs: i64) -> Result<String, RpcError> {
        Ok(session::issue_for_channel(&key()?.0, channel, key_hash, now_secs))
    }
}

/// Whether this browser is signed in as the broadcaster of `channel` (absent: the default one).
#[server(input = Json)]
pub async fn broadcaster_signed_in(channel: Option<String>) -> Result<bool, RpcError> {
    let service = ssr::service()?;
    let channel = ssr::channel(channel)?;
    session::signed_in(service.now_ms().div_euclid(1000), &channel).await
}

/// Signs the broadcaster in with the API key (every channel's studio) or, on a channel's studio,
/// with that channel's stream key (its studio only); `false` when the key is neither.
#[server(input = Json)]
pub async fn broadcaster_sign_in(api_key: String, channel: Option<String>) -> Result<bool, RpcError> {
    let service = ssr::service()?;
    let channel = ssr::channel(channel)?;
    let now = service.now_ms().div_euclid(1000);
    let value = if session::check_key(&api_key)? {
        session::issue(now)?
    } else {
        match service.channels().authorize_stream_key(&channel, Some(api_key.trim())).await {
            Ok(record) => match record.stream_key_hash {
                Some(hash) => session::issue_for_channel(&channel, &hash, now)?,
                None => return Ok(false),
            },
            Err(crate::server::service::ChannelError::StreamKey(_)) => return Ok(false),
            Err(e) => return Err(ssr::fail(e.into())),
        }
    };
    let headers = session::headers().await?;
    let secure = headers.get("x-forwarded-proto").is_some_and(|p| p == "https")
        || service.settings().server.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
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
    if !session::signed_in(service.now_ms().div_euclid(1000), &channel).await? {
        return Err(RpcError::new(ErrorCode::Unauthorized, "sign in as this channel's broadcaster first"));
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
        stream_key_endpoint: service.channels().whip_endpoint(&channel, &base),
    })
}

/// Creates channel `name` (with `title`), or with `rotate` gives it a new stream key (the old
/// one stops working); for a browser signed in with the API key only. The new stream key is
/// shown this once.
#[server(input = Json)]
pub async fn manage_channel(name: String, title: Option<String>, rotate: bool) -> Result<crate::api::IssuedStreamKey, RpcError> {
    use crate::api::request::{ChannelCreateRequest, FromFields};
    use crate::api::ErrorCode;
    let service = ssr::service()?;
    if !session::is_admin(service.now_ms().div_euclid(1000)).await? {
        return Err(RpcError::new(ErrorCode::Unauthorized, "sign in with the API key first"));
    }
    if rotate {
        let channel = ssr::channel(Some(name.trim().to_string()))?;
        let key = service.channels().rotate_stream_key(&channel).await.map_err(|e| ssr::fail(e.into()))?;
        return Ok(crate::api::IssuedStreamKey { channel, stream_key: key.as_str().to_string() });
    }
    let mut fields = serde_json::Map::new();
    fields.insert("name".into(), name.trim().into());
    if let Some(title) = title.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        fields.insert("title".into(), title.into());
    }
    let req = ChannelCreateRequest::from_fields(&fields).map_err(|e| RpcError::new(ErrorCode::ValidationError, e.message()))?;
    let new = crate::server::service::NewChannel { name: req.name, title: req.title, description: req.description };
    let (record, key) = service.channels().create(new).await.map_err(|e| ssr::fail(e.into()))?;
    Ok(crate::api::IssuedStreamKey { channel: record.name, stream_key: key.as_str().to_string() })
}

/// Live totals, the stage table and the last 24 hours of snapshots.
#[server(input = Json)]
pub async fn dashboard_data() -> Result<crate::api::DashboardData, RpcError> {
    let service = ssr::service()?;
    let mut data = service.stats().dashboard().await.map_err(ssr::fail)?;
    data.can_manage = session::is_admin(service.now_ms().div_euclid(1000)).await?;
    Ok(data)
}
