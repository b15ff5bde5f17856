//! WHIP (RFC 9725) and WHEP endpoints of the embedded media server.
//!
//! `POST /whip` and `POST /whep` take an `application/sdp` offer with the participant token as
//! `Authorization: Bearer` (`POST /whip/c/{name}`: the channel's stream key instead), answer `201 Created` with the SDP answer and the session resource in
//! `Location`; `DELETE` on that resource ends the session. Trickle ICE (`PATCH`) is not offered:
//! the server is ICE-lite and its answer carries every candidate, so `PATCH` answers 405.

use super::client::Client;
use super::extract::BaseUrl;
use super::{middleware, AppState};
use crate::api::request::path_param;
use crate::domain::{stream_key_whip_path, ChannelId, WHEP_PATH, WHIP_PATH};
use crate::server::error::{AppError, AppResult};
use crate::server::media::{Accepted, Role};
use crate::server::service::MediaRequest;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;

/// Largest SDP offer accepted.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

pub fn media_router() -> Router<AppState> {
    Router::new()
        .route(WHIP_PATH, post(whip_offer))
        .route(&format!("{WHIP_PATH}/{{id}}"), delete(whip_end))
        .route(&format!("{WHIP_PATH}/c/{{name}}"), post(stream_key_offer))
        .route(&format!("{WHIP_PATH}/c/{{name}}/{{id}}"), delete(stream_key_end))
        .route(WHEP_PATH, post(whep_offer))
        .route(&format!("{WHEP_PATH}/{{id}}"), delete(whep_end))
        .layer(axum::middleware::from_fn(middleware::envelope_errors))
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Offers count against the client's budget before anything else is looked at (a token check
/// costs a signature verification).
fn check_budget(state: &AppState, client: &Client, role: Role) -> AppResult<()> {
    let budget = match role {
        Role::Publisher => &state.guards.publish_offers,
        Role::Viewer => &state.guards.play_offers,
    };
    budget.check(client.key).map(|_| ()).map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })
}

async fn offer(
    state: AppState,
    client: Client,
    role: Role,
    base: String,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    check_budget(&state, &client, role)?;
    let req = MediaRequest {
        client: Some(client.key.ip()),
        bearer: bearer(&headers),
        content_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        body: &body,
    };
    let accepted = state.service.media().offer(role, req).await?;
    Ok(created(&base, path, accepted))
}

/// `201 Created` with the SDP answer and the session resource under `path`.
fn created(base: &str, path: &str, accepted: Accepted) -> Response {
    let location = format!("{base}{path}/{}", accepted.session_id);
    let mut resp = (StatusCode::CREATED, accepted.answer).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location"));
    resp
}

/// `POST /whip/c/{name}` with the channel's stream key as the bearer: what OBS keeps as its one
/// setting.
async fn stream_key_offer(
    State(state): State<AppState>,
    client: Client,
    BaseUrl(base): BaseUrl,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    check_budget(&state, &client, Role::Publisher)?;
    let name = channel_name(&name)?;
    let channel = state.service.channels().authorize_stream_key(&name, bearer(&headers)).await?;
    let req = MediaRequest {
        client: Some(client.key.ip()),
        bearer: None,
        content_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        body: &body,
    };
    let accepted = state.service.media().publish_with_stream_key(&channel, req).await?;
    Ok(created(&base, &stream_key_whip_path(&name), accepted))
}

async fn stream_key_end(
    State(state): State<AppState>,
    client: Client,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> AppResult<StatusCode> {
    check_end_budget(&state, &client)?;
    let name = channel_name(&name)?;
    let channel = state.service.channels().authorize_stream_key(&name, bearer(&headers)).await?;
    state.service.media().end_stream_key_session(&channel, &id).await?;
    Ok(StatusCode::OK)
}

fn channel_name(raw: &str) -> AppResult<ChannelId> {
    Ok(path_param("name", raw)?)
}

async fn whip_offer(
    State(state): State<AppState>,
    client: Client,
    BaseUrl(base): BaseUrl,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    offer(state, client, Role::Publisher, base, WHIP_PATH, headers, body).await
}

async fn whep_offer(
    State(state): State<AppState>,
    client: Client,
    BaseUrl(base): BaseUrl,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Response> {
    offer(state, client, Role::Viewer, base, WHEP_PATH, headers, body).await
}

/// A session's `DELETE` counts against the client's budget for ends before its token is read.
fn check_end_budget(state: &AppState, client: &Client) -> AppResult<()> {
    state.guards.media_ends.check(client.key).map(|_| ()).map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })
}

async fn end(state: AppState, client: Client, role: Role, id: &str, headers: &HeaderMap) -> AppResult<StatusCode> {
    check_end_budget(&state, &client)?;
    state.service.media().end(role, id, bearer(headers)).await?;
    Ok(StatusCode::OK)
}

async fn whip_end(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> AppResult<StatusCode> {
    end(state, client, Role::Publisher, &id, &headers).await
}

async fn whep_end(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> AppResult<StatusCode> {
    end(state, client, Role::Viewer, &id, &headers).await
}
