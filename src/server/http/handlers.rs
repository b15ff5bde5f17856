//! REST handlers of the public contract: parse → service → envelope.

use super::extract::{BaseUrl, Fields, JsonBody, Query};
use super::AppState;
use crate::domain::UserId;
use crate::server::error::{AppError, AppResult};
use crate::server::service::{invalid_field, parse_stage_arn};
use crate::server::time::iso_now;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

/// The success envelope.
pub struct Data<T>(pub T, pub Option<&'static str>);

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        envelope(StatusCode::OK, self.0, self.1)
    }
}

/// The success envelope, serialized straight from `data` (no intermediate JSON tree).
#[derive(Serialize)]
struct Success<'a, T> {
    success: bool,
    data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    timestamp: String,
}

pub fn envelope<T: Serialize>(status: StatusCode, data: T, message: Option<&str>) -> Response {
    (status, Json(Success { success: true, data, message, timestamp: iso_now() })).into_response()
}

fn ok<T: Serialize>(data: T) -> AppResult<Data<T>> {
    Ok(Data(data, None))
}

// ---- health ----

pub async fn health(State(state): State<AppState>) -> AppResult<Data<Value>> {
    ok(state.service.health().await?)
}

// ---- tokens ----

pub async fn viewer_token(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    JsonBody(body): JsonBody,
) -> AppResult<Data<impl Serialize>> {
    let mut f = Fields::new(&body);
    let user = f.user_id("userId");
    let stage = f.optional_stage_arn("stageArn");
    f.finish()?;
    let user = user.expect("validated");
    ok(state.service.issue_viewer_token(&user, stage.as_ref(), &base).await?)
}

pub async fn publisher_token(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    JsonBody(body): JsonBody,
) -> AppResult<Data<impl Serialize>> {
    let mut f = Fields::new(&body);
    let user = f.user_id("userId");
    f.finish()?;
    ok(state.service.issue_publisher_token(&user.expect("validated"), &base).await?)
}

pub async fn mediaserver_token(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> AppResult<Data<impl Serialize>> {
    let secret = headers.get("x-internal-secret").and_then(|v| v.to_str().ok());
    state.service.check_internal_secret(secret)?;
    let mut f = Fields::new(&body);
    let server = f.user_id("serverId");
    let stage = f.stage_arn("stageArn");
    f.finish()?;
    let (server, stage) = (server.expect("validated"), stage.expect("validated"));
    ok(state.service.issue_mediaserver_token(secret, &server, &stage, &base).await?)
}

// ---- viewers ----

pub async fn heartbeat(State(state): State<AppState>, JsonBody(body): JsonBody) -> AppResult<Response> {
    let mut f = Fields::new(&body);
    let user = f.user_id("userId");
    let stage = f.stage_arn("stageArn");
    f.finish()?;
    let (user, stage) = (user.expect("validated"), stage.expect("validated"));
    state.service.presence().record_heartbeat(&user, &stage).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Beat<'a> {
        user_id: &'a str,
        stage_arn: &'a str,
        heartbeat_updated: bool,
    }
    let data = Beat { user_id: user.as_str(), stage_arn: stage.as_str(), heartbeat_updated: true };
    Ok(envelope(StatusCode::OK, data, Some("heartbeat updated")))
}

pub async fn leave(State(state): State<AppState>, JsonBody(body): JsonBody) -> AppResult<Response> {
    let mut f = Fields::new(&body);
    let user = f.user_id("userId");
    let stage = f.stage_arn("stageArn");
    f.finish()?;
    let (user, stage) = (user.expect("validated"), stage.expect("validated"));
    state.service.presence().leave(&user, &stage).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "userId": user.as_str(), "stageArn": stage.as_str(), "viewerLeft": true }),
        Some("viewer left"),
    ))
}

pub async fn rejoin(State(state): State<AppState>, JsonBody(body): JsonBody) -> AppResult<Response> {
    let mut f = Fields::new(&body);
    let user = f.user_id("userId");
    let stage = f.stage_arn("stageArn");
    let participant = f.participant_id("participantId");
    f.finish()?;
    let view = state
        .service
        .presence()
        .rejoin(&user.expect("validated"), &stage.expect("validated"), &participant.expect("validated"))
        .await?;
    Ok(envelope(StatusCode::OK, view, Some("rejoined")))
}

pub async fn viewer_list(State(state): State<AppState>, Path(arn): Path<String>) -> AppResult<Data<impl Serialize>> {
    let arn = parse_stage_arn("stageArn", &arn)?;
    ok(state.service.presence().list_viewers(&arn).await?)
}

pub async fn viewer_duration(State(state): State<AppState>, Query(q): Query) -> AppResult<Data<impl Serialize>> {
    let body: serde_json::Map<String, Value> = q.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let mut f = Fields::new(&body);
    let user = f.user_id("userId");
    let stage = f.stage_arn("stageArn");
    f.finish()?;
    ok(state.service.presence().watch_duration(&user.expect("validated"), &stage.expect("validated")).await?)
}

pub async fn viewer_history(
    State(state): State<AppState>,
    Path(user): Path<String>,
    q: Query,
) -> AppResult<Data<impl Serialize>> {
    let user = UserId::parse(user).map_err(|e| invalid_field("userId", &e))?;
    let limit = q.int("limit", 10, 1..=1000)?;
    ok(state.service.presence().history(&user, limit).await?)
}

pub async fn viewer_stats(State(state): State<AppState>, Path(arn): Path<String>, q: Query) -> AppResult<Data<impl Serialize>> {
    let arn = parse_stage_arn("stageArn", &arn)?;
    let days = q.int("days", 7, 1..=3650)?;
    ok(state.service.presence().stage_view_stats(&arn, days).await?)
}

// ---- stats ----

pub async fn stats(State(state): State<AppState>) -> AppResult<Data<impl Serialize>> {
    ok(state.service.stats().await?)
}

pub async fn stats_viewers(State(state): State<AppState>) -> AppResult<Data<impl Serialize>> {
    ok(state.service.stats_viewers().await?)
}

pub async fn stats_stages(State(state): State<AppState>, Query(q): Query) -> AppResult<Data<impl Serialize>> {
    ok(state.service.stats_stages(q.get("arn").map(String::as_str)).await?)
}

pub async fn stats_publisher(State(state): State<AppState>) -> AppResult<Data<impl Serialize>> {
    ok(state.service.publisher_stats())
}

// ---- stages ----

pub async fn stage_list(State(state): State<AppState>) -> AppResult<Data<impl Serialize>> {
    ok(state.service.stages().list().await?)
}

pub async fn stage_master(State(state): State<AppState>, BaseUrl(base): BaseUrl) -> AppResult<Data<impl Serialize>> {
    ok(state.service.stages().master_info(&base).await?)
}

pub async fn stage_create(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    JsonBody(body): JsonBody,
) -> AppResult<Response> {
    let mut f = Fields::new(&body);
    let name = f.string("name", true);
    let tags = f.tags("tags");
    f.finish()?;
    let stage = state.service.stages().create(&name.expect("validated"), tags.unwrap_or_default(), None, &base).await?;
    Ok(envelope(StatusCode::CREATED, json!({ "stage": stage }), Some("stage created")))
}

pub async fn stage_get(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Path(arn): Path<String>,
) -> AppResult<Data<impl Serialize>> {
    let arn = parse_stage_arn("stageArn", &arn)?;
    ok(state.service.stages().get(&arn, &base).await?)
}

pub async fn stage_update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Path(arn): Path<String>,
    JsonBody(body): JsonBody,
) -> AppResult<Data<impl Serialize>> {
    let arn = parse_stage_arn("stageArn", &arn)?;
    let mut f = Fields::new(&body);
    let name = f.string("name", false);
    let tags = f.tags("tags");
    f.finish()?;
    if name.is_none() && tags.is_none() {
        return Err(AppError::with_details(
            crate::api::ErrorCode::ValidationError,
            "Nothing to update: give name or tags",
            json!({ "missingFields": ["name"] }),
        ));
    }
    ok(state.service.stages().update(&arn, name.as_deref(), tags, &base).await?)
}

pub async fn stage_delete(State(state): State<AppState>, Path(arn): Path<String>) -> AppResult<Response> {
    let arn = parse_stage_arn("stageArn", &arn)?;
    state.service.stages().delete(&arn, false).await?;
    Ok(envelope(StatusCode::OK, json!({ "stageArn": arn.as_str(), "deleted": true }), Some("stage deleted")))
}

fn replication_fields(
    body: &serde_json::Map<String, Value>,
) -> AppResult<(crate::domain::StageArn, crate::domain::StageArn, crate::domain::ParticipantId)> {
    let mut f = Fields::new(body);
    let source = f.stage_arn("sourceStageArn");
    let dest = f.stage_arn("destinationStageArn");
    let participant = f.participant_id("participantId");
    f.finish()?;
    Ok((source.expect("validated"), dest.expect("validated"), participant.expect("validated")))
}

pub async fn replication_start(State(state): State<AppState>, JsonBody(body): JsonBody) -> AppResult<Data<impl Serialize>> {
    let (s, d, p) = replication_fields(&body)?;
    ok(state.service.stages().start_replication(&s, &d, &p).await?)
}

pub async fn replication_stop(State(state): State<AppState>, JsonBody(body): JsonBody) -> AppResult<Data<impl Serialize>> {
    let (s, d, p) = replication_fields(&body)?;
    ok(state.service.stages().stop_replication(&s, &d, &p).await?)
}

pub async fn replication_status(State(state): State<AppState>, Path(arn): Path<String>) -> AppResult<Data<impl Serialize>> {
    let arn = parse_stage_arn("stageArn", &arn)?;
    ok(state.service.stages().replication_status(&arn).await?)
}

// ---- fallbacks ----

pub async fn api_not_found() -> AppError {
    AppError::not_found("Route not found")
}

pub async fn api_method_not_allowed() -> AppError {
    AppError::new(crate::api::ErrorCode::MethodNotAllowed, "Method not allowed on this path")
}
