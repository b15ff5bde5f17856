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

    pub fn fail(e: impl Into<AppError>) -> RpcError {
        let e: AppError = e.into();
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

/// Current live totals of `channel` (absent: the default one), as the stats hub holds them.
#[server(input = Json)]
pub async fn get_live_stats(channel: Option<String>) -> Result<LiveStats, RpcError> {
    let channel = ssr::channel(channel)?;
    let service = ssr::service()?;
    if let Some(current) = service.hub().subscribe(&channel) {
        return Ok((**current.borrow()).clone());
    }
    service.stats().live(&channel).await.map_err(ssr::fail)
}

/// Joins `channel`'s broadcast (absent: the default one) as this browser's viewer: a viewer
/// token and a stage, or why not. The viewer is the one its cookie names, or a new one the
/// server mints (and sets the cookie for); a client gets a bounded number of viewers and joins.
#[server(input = Json)]
pub async fn join_stream(channel: Option<String>) -> Result<JoinOutcome, RpcError> {
    use crate::api::{ErrorCode, ViewerTicket};
    use crate::server::service::{JoinError, JoinedBy};
    let service = ssr::service()?;
    let channel = ssr::channel(channel)?;
    let caller = viewer::caller().await?;
    if let Err(retry) = caller.guards.joins.check(caller.client.key) {
        return Err(RpcError::new(ErrorCode::TooManyRequests, format!("Too many joins from this address; retry in {retry} s")));
    }
    let (user, minted) = viewer::identity(&caller)?;
    if !caller.guards.viewers.admit(caller.client.key, user.as_str()) {
        return Err(RpcError::new(ErrorCode::TooManyRequests, "This address is watching with as many viewers as it may"));
    }
    if minted {
        viewer::set_cookie(&caller, &user);
    }
    let base = crate::server::http::extract::base_url_from(&caller.headers, service.settings().server.public_url.as_deref());
    match service.tokens().issue_viewer_token(&channel, &user, None, &base, JoinedBy::Page).await {
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
        Err(e) => Err(ssr::fail(e)),
    }
}

/// Records this browser's viewer's heartbeat on the ticket `participant_id`; `NOT_FOUND` when
/// the server no longer counts it (rejoin).
#[server(input = Json)]
pub async fn send_heartbeat(stage_arn: String, participant_id: String) -> Result<(), RpcError> {
    use crate::domain::{ParticipantId, StageArn};
    let service = ssr::service()?;
    let stage = StageArn::parse(stage_arn).map_err(ssr::invalid("stageArn"))?;
    let participant = ParticipantId::parse(participant_id).map_err(ssr::invalid("participantId"))?;
    let caller = viewer::caller().await?;
    let user = viewer::known(&caller)?;
    service.presence().record_heartbeat(&user, &stage, Some(&participant)).await.map_err(ssr::fail)?;
    caller.guards.viewers.admit(caller.client.key, user.as_str());
    Ok(())
}

/// This browser's viewer leaves `stage_arn` (idempotent). The cookie names the viewer, so any
/// ticket it was given ends it: a page that unloads while a newer join's answer is still on its
/// way (the server counts the newest ticket) still leaves.
// Form-encoded: the page sends it with `navigator.sendBeacon` as it unloads.
#[server]
pub async fn leave_stream(stage_arn: String) -> Result<(), RpcError> {
    use crate::domain::StageArn;
    let service = ssr::service()?;
    let stage = StageArn::parse(stage_arn).map_err(ssr::invalid("stageArn"))?;
    let caller = viewer::caller().await?;
    let user = viewer::known(&caller)?;
    if service.presence().leave(&user, &stage, None).await.map_err(ssr::fail)? {
        caller.guards.viewers.release(caller.client.key, user.as_str());
    }
    Ok(())
}

/// Who calls a page's server function: the client, its limits, and the cookie key.
#[cfg(feature = "ssr")]
mod viewer {
    use crate::api::{ErrorCode, RpcError};
    use crate::domain::UserId;
    use crate::server::http::client::Client;
    use crate::server::http::guard::Guards;
    use crate::server::http::session::{self, CookieKey};
    use leptos::prelude::*;
    use std::sync::Arc;

    pub struct Caller {
        pub client: Client,
        pub headers: axum::http::HeaderMap,
        pub guards: Arc<Guards>,
        key: CookieKey,
    }

    pub async fn caller() -> Result<Caller, RpcError> {
        let (client, headers): (Client, axum::http::HeaderMap) = leptos_axum::extract().await?;
        let guards = use_context::<Arc<Guards>>().ok_or_else(super::ssr::unavailable)?;
        let key = use_context::<CookieKey>().ok_or_else(super::ssr::unavailable)?;
        Ok(Caller { client, headers, guards, key })
    }

    /// The viewer this browser's cookie names, if it carries a valid one.
    fn from_cookie(caller: &Caller) -> Option<UserId> {
        caller
            .headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|h| session::cookie_in(h, session::VIEWER_COOKIE))
            .find_map(|v| session::verify_viewer(&caller.key.0, v))
            .and_then(|id| UserId::parse(id).ok())
    }

    /// The cookie's viewer, or a new one (`true`: minted now, the cookie is to be set).
    pub fn identity(caller: &Caller) -> Result<(UserId, bool), RpcError> {
        if let Some(user) = from_cookie(caller) {
            return Ok((user, false));
        }
        let id = format!("viewer-{}", crate::server::support::random_id(20).to_ascii_lowercase());
        let user = UserId::parse(id).map_err(|e| RpcError::new(ErrorCode::InternalError, e.to_string()))?;
        Ok((user, true))
    }

    /// The cookie's viewer; without one the call names no viewer this server counts.
    pub fn known(caller: &Caller) -> Result<UserId, RpcError> {
        from_cookie(caller).ok_or_else(|| RpcError::new(ErrorCode::NotFound, "Viewer session not found"))
    }

    pub fn set_cookie(caller: &Caller, user: &UserId) {
        let value = session::issue_viewer(&caller.key.0, user.as_str());
        let service = super::ssr::service().ok();
        let secure = super::session::secure(&caller.headers, service.as_deref());
        super::session::set_cookie(session::set_viewer_cookie(&value, secure));
    }
}

#[cfg(feature = "ssr")]
mod session {
    use crate::api::RpcError;
    use crate::server::http::session::{self, ApiKey, CookieKey, Scope};
    use crate::server::service::Service;
    use leptos::prelude::*;

    fn key() -> Result<CookieKey, RpcError> {
        use_context::<CookieKey>().ok_or_else(super::ssr::unavailable)
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

    /// A studio's current session epoch (signing out advances it).
    pub async fn epoch(service: &Service, scope: &Scope) -> Result<u64, RpcError> {
        service.studios().current(&session::epoch_setting(scope)).await.map_err(super::ssr::fail)
    }

    /// Ends every session of `scope`'s studio.
    pub async fn advance_epoch(service: &Service, scope: &Scope) -> Result<(), RpcError> {
        service.studios().advance(&session::epoch_setting(scope)).await.map(drop).map_err(super::ssr::fail)
    }

    /// The valid sessions among this browser's cookies.
    pub async fn scopes(now_secs: i64) -> Result<Vec<Scope>, RpcError> {
        let key = key()?;
        let headers = headers().await?;
        let service = super::ssr::service()?;
        let mut scopes = Vec::new();
        for value in cookie_values(&headers) {
            // A channel's session holds while the channel's stream key is the one it was opened with.
            let (scope, key_hash) = match session::claimed_channel(&value) {
                Some(claimed) => {
                    let hash = service.channels().get(&claimed).await.ok().and_then(|c| c.stream_key_hash);
                    (Scope::Channel(claimed), hash)
                }
                None => (Scope::AnyChannel, None),
            };
            let epoch = epoch(&service, &scope).await?;
            if let Some(valid) = session::verify(&key.0, &value, now_secs, key_hash.as_deref(), epoch) {
                scopes.push(valid);
            }
        }
        Ok(scopes)
    }

    /// Whether this browser's session allows `channel`'s studio.
    pub async fn signed_in(now_secs: i64, channel: &crate::domain::ChannelId) -> Result<bool, RpcError> {
        Ok(scopes(now_secs).await?.iter().any(|s| s.allows(channel)))
    }

    /// The session of this browser's that opens `channel`'s studio, as its publisher tokens
    /// carry it (a channel's own session first).
    pub async fn studio_session(
        now_secs: i64,
        channel: &crate::domain::ChannelId,
    ) -> Result<Option<crate::server::service::StudioSession>, RpcError> {
        let mut allowed: Vec<Scope> = scopes(now_secs).await?.into_iter().filter(|s| s.allows(channel)).collect();
        allowed.sort_by_key(|s| *s == Scope::AnyChannel);
        let Some(scope) = allowed.into_iter().next() else { return Ok(None) };
        let service = super::ssr::service()?;
        let epoch = epoch(&service, &scope).await?;
        Ok(Some(crate::server::service::StudioSession { epoch_key: session::epoch_setting(&scope), epoch }))
    }

    pub fn check_key(given: &str) -> Result<bool, RpcError> {
        let key = use_context::<ApiKey>().ok_or_else(super::ssr::unavailable)?;
        Ok(crate::server::support::secrets_match(given.trim(), &key.0))
    }

    pub fn set_cookie(value: String) {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                resp.append_header(axum::http::header::SET_COOKIE, v);
            }
        }
    }

    /// Whether cookies set now are `Secure`: whenever the app is reached over https (its public
    /// URL says so, or a trusted proxy does).
    pub fn secure(headers: &axum::http::HeaderMap, service: Option<&Service>) -> bool {
        headers.get("x-forwarded-proto").is_some_and(|p| p == "https")
            || service.and_then(|s| s.settings().server.public_url.as_deref()).is_some_and(|u| u.starts_with("https://"))
    }

    pub async fn issue(service: &Service, now_secs: i64) -> Result<String, RpcError> {
        Ok(session::issue(&key()?.0, now_secs, epoch(service, &Scope::AnyChannel).await?))
    }

    /// Whether this browser holds a session opened with the API key (every channel's, and the
    /// channels' administration).
    pub async fn is_admin(now_secs: i64) -> Result<bool, RpcError> {
        Ok(scopes(now_secs).await?.contains(&Scope::AnyChannel))
    }

    /// A session for `channel`'s studio only, bound to its stream key's hash.
    pub async fn issue_for_channel(
        service: &Service,
        channel: &crate::domain::ChannelId,
        key_hash: &str,
        now_secs: i64,
    ) -> Result<String, RpcError> {
        let epoch = epoch(service, &Scope::Channel(channel.clone())).await?;
        Ok(session::issue_for_channel(&key()?.0, channel, key_hash, now_secs, epoch))
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
/// with that channel's stream key (its studio only); `false` when the key is neither. After a
/// few failures from one client each next attempt waits, twice as long every time.
#[server(input = Json)]
pub async fn broadcaster_sign_in(api_key: String, channel: Option<String>) -> Result<bool, RpcError> {
    use crate::api::ErrorCode;
    let service = ssr::service()?;
    let channel = ssr::channel(channel)?;
    let caller = viewer::caller().await?;
    if let Err(retry) = caller.guards.sign_in.check(caller.client.key) {
        return Err(RpcError::new(ErrorCode::TooManyRequests, format!("Too many failed sign-ins; try again in {retry} s")));
    }
    let now = service.now_ms().div_euclid(1000);
    let value = if session::check_key(&api_key)? {
        session::issue(&service, now).await?
    } else {
        match service.channels().authorize_stream_key(&channel, Some(api_key.trim())).await {
            Ok(record) => match record.stream_key_hash {
                Some(hash) => session::issue_for_channel(&service, &channel, &hash, now).await?,
                None => {
                    caller.guards.sign_in.failed(caller.client.key);
                    return Ok(false);
                }
            },
            Err(crate::server::service::ChannelError::StreamKey(_)) => {
                caller.guards.sign_in.failed(caller.client.key);
                return Ok(false);
            }
            Err(e) => return Err(ssr::fail(e)),
        }
    };
    caller.guards.sign_in.succeeded(caller.client.key);
    let secure = session::secure(&caller.headers, Some(&service));
    session::set_cookie(crate::server::http::session::set_cookie(&value, secure));
    Ok(true)
}

/// Signs out: this browser's cookie is cleared and every session of its studio ends (a copy of
/// the cookie elsewhere stops working too).
#[server(input = Json)]
pub async fn broadcaster_sign_out() -> Result<(), RpcError> {
    let service = ssr::service()?;
    for scope in session::scopes(service.now_ms().div_euclid(1000)).await? {
        session::advance_epoch(&service, &scope).await?;
    }
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
    let Some(studio) = session::studio_session(service.now_ms().div_euclid(1000), &channel).await? else {
        return Err(RpcError::new(ErrorCode::Unauthorized, "sign in as this channel's broadcaster first"));
    };
    let headers = session::headers().await?;
    let base = crate::server::http::extract::base_url_from(&headers, service.settings().server.public_url.as_deref());
    let user = UserId::parse("broadcaster").map_err(|e| RpcError::new(ErrorCode::InternalError, e.to_string()))?;
    let t = service.tokens().issue_publisher_token(&channel, &user, Some(&studio), &base).await.map_err(ssr::fail)?;
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
        let key = service.channels().rotate_stream_key(&channel).await.map_err(ssr::fail)?;
        return Ok(crate::api::IssuedStreamKey { channel, stream_key: key.as_str().to_string() });
    }
    let mut fields = serde_json::Map::new();
    fields.insert("name".into(), name.trim().into());
    if let Some(title) = title.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        fields.insert("title".into(), title.into());
    }
    let req = ChannelCreateRequest::from_fields(&fields).map_err(|e| RpcError::new(ErrorCode::ValidationError, e.message()))?;
    let new = crate::server::service::NewChannel { name: req.name, title: req.title, description: req.description };
    let (record, key) = service.channels().create(new).await.map_err(ssr::fail)?;
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
