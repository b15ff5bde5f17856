//! REST handlers of the public contract: parse → service → envelope.

use super::extract::{BaseUrl, ChannelPath, JsonBody, JsonRequest, QueryRequest, StagePath, UserPath};
use super::AppState;
use crate::api::request::{
    path_param, ChannelCreateRequest, ChannelQuery, ChannelUpdateRequest, FromFields, HistoryQuery, MediaServerTokenRequest,
    PresenceRequest, PublisherTokenRequest, RejoinRequest, ReplicationRequest, StageCreateRequest, StageStatsQuery,
    StageUpdateRequest, ViewStatsQuery, ViewerTokenRequest,
};
use crate::domain::StageArn;
use crate::server::error::{AppError, AppResult};
use crate::server::service::views::{
    ChannelCreatedView, ChannelDeletedView, ChannelDetailView, ChannelListView, HealthView, HeartbeatView, HistoryView,
    MediaServerTokenView, PublisherStatsView, PublisherTokenView, ReplicationStartedView, ReplicationStatusView,
    ReplicationStoppedView, StageCreatedView, StageDeletedView, StageDetailView, StageListView, StageViewStatsView,
    StagesStatsView, StatsView, StreamKeyView, TotalViewersView, ViewerLeftView, ViewerListView, ViewerTokenView,
    WatchDurationView,
};
use crate::server::service::{JoinedBy, NewChannel};
use crate::server::store::DescriptionChange;
use crate::server::time::iso_now;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

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

pub async fn health(State(state): State<AppState>) -> AppResult<Data<HealthView>> {
    ok(state.service.health().await?)
}

// ---- tokens ----

pub async fn viewer_token(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    JsonRequest(req): JsonRequest<ViewerTokenRequest>,
) -> AppResult<Data<ViewerTokenView>> {
    ok(state
        .service
        .tokens()
        .issue_viewer_token(&req.channel, &req.user_id, req.stage_arn.as_ref(), &base, JoinedBy::Api)
        .await?)
}

pub async fn publisher_token(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    JsonRequest(req): JsonRequest<PublisherTokenRequest>,
) -> AppResult<Data<PublisherTokenView>> {
    ok(state.service.tokens().issue_publisher_token(&req.channel, &req.user_id, None, &base).await?)
}

pub async fn mediaserver_token(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> AppResult<Data<MediaServerTokenView>> {
    let secret = headers.get("x-internal-secret").and_then(|v| v.to_str().ok());
    state.service.tokens().check_internal_secret(secret)?;
    // The secret is checked before the body's fields.
    let req = MediaServerTokenRequest::from_fields(&body)?;
    ok(state.service.tokens().issue_mediaserver_token(secret, &req.server_id, &req.stage_arn, &base).await?)
}

// ---- viewers ----

pub async fn heartbeat(State(state): State<AppState>, JsonRequest(req): JsonRequest<PresenceRequest>) -> AppResult<Response> {
    state.service.presence().record_heartbeat(&req.user_id, &req.stage_arn, req.participant_id.as_ref()).await?;
    let data = HeartbeatView { user_id: req.user_id.as_str(), stage_arn: req.stage_arn.as_str(), heartbeat_updated: true };
    Ok(envelope(StatusCode::OK, data, Some("heartbeat updated")))
}

pub async fn leave(State(state): State<AppState>, JsonRequest(req): JsonRequest<PresenceRequest>) -> AppResult<Response> {
    state.service.presence().leave(&req.user_id, &req.stage_arn, req.participant_id.as_ref()).await?;
    Ok(envelope(
        StatusCode::OK,
        ViewerLeftView { user_id: req.user_id.to_string(), stage_arn: req.stage_arn.to_string(), viewer_left: true },
        Some("viewer left"),
    ))
}

pub async fn rejoin(State(state): State<AppState>, JsonRequest(req): JsonRequest<RejoinRequest>) -> AppResult<Response> {
    let view = state.service.presence().rejoin(&req.user_id, &req.stage_arn, &req.participant_id).await?;
    Ok(envelope(StatusCode::OK, view, Some("rejoined")))
}

pub async fn viewer_list(State(state): State<AppState>, StagePath(arn): StagePath) -> AppResult<Data<ViewerListView>> {
    ok(state.service.presence().list_viewers(&arn).await?)
}

pub async fn viewer_duration(
    State(state): State<AppState>,
    QueryRequest(req): QueryRequest<PresenceRequest>,
) -> AppResult<Data<WatchDurationView>> {
    ok(state.service.presence().watch_duration(&req.user_id, &req.stage_arn).await?)
}

pub async fn viewer_history(
    State(state): State<AppState>,
    UserPath(user): UserPath,
    QueryRequest(q): QueryRequest<HistoryQuery>,
) -> AppResult<Data<HistoryView>> {
    ok(state.service.presence().history(&user, q.limit).await?)
}

pub async fn viewer_stats(
    State(state): State<AppState>,
    StagePath(arn): StagePath,
    QueryRequest(q): QueryRequest<ViewStatsQuery>,
) -> AppResult<Data<StageViewStatsView>> {
    ok(state.service.presence().stage_view_stats(&arn, q.days).await?)
}

// ---- stats ----

pub async fn stats(State(state): State<AppState>, QueryRequest(q): QueryRequest<ChannelQuery>) -> AppResult<Data<StatsView>> {
    ok(state.service.stats().summary(&q.channel).await?)
}

pub async fn stats_viewers(
    State(state): State<AppState>,
    QueryRequest(q): QueryRequest<ChannelQuery>,
) -> AppResult<Data<TotalViewersView>> {
    ok(state.service.stats().total_viewers(&q.channel).await?)
}

pub async fn stats_stages(
    State(state): State<AppState>,
    QueryRequest(q): QueryRequest<StageStatsQuery>,
) -> AppResult<Data<StagesStatsView>> {
    ok(state.service.stats().stages(&q.channel, q.arn.as_ref().map(StageArn::as_str)).await?)
}

pub async fn stats_publisher(
    State(state): State<AppState>,
    QueryRequest(q): QueryRequest<ChannelQuery>,
) -> AppResult<Data<PublisherStatsView>> {
    ok(state.service.stats().publisher(&q.channel).await?)
}

// ---- stages ----

pub async fn stage_list(State(state): State<AppState>) -> AppResult<Data<StageListView>> {
    ok(state.service.stages().list_of(None).await?)
}

pub async fn stage_master(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    QueryRequest(q): QueryRequest<ChannelQuery>,
) -> AppResult<Data<StageDetailView>> {
    ok(state.service.stages().master_info(&q.channel, &base).await?)
}

pub async fn stage_create(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    JsonRequest(req): JsonRequest<StageCreateRequest>,
) -> AppResult<Response> {
    let stage = state.service.stages().create(&req.name, req.tags, None, &base).await?;
    Ok(envelope(StatusCode::CREATED, StageCreatedView { stage }, Some("stage created")))
}

pub async fn stage_get(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    StagePath(arn): StagePath,
) -> AppResult<Data<StageDetailView>> {
    ok(state.service.stages().get(&arn, &base).await?)
}

pub async fn stage_update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Path(arn): Path<String>,
    JsonBody(body): JsonBody,
) -> AppResult<Data<StageDetailView>> {
    // A malformed body is answered before a malformed path, and the path before the fields.
    let arn: StageArn = path_param("stageArn", &arn)?;
    let req = StageUpdateRequest::from_fields(&body)?;
    ok(state.service.stages().update(&arn, req.name.as_ref(), req.tags, &base).await?)
}

pub async fn stage_delete(State(state): State<AppState>, StagePath(arn): StagePath) -> AppResult<Response> {
    state.service.stages().delete(&arn, false).await?;
    Ok(envelope(StatusCode::OK, StageDeletedView { stage_arn: arn.to_string(), deleted: true }, Some("stage deleted")))
}

pub async fn replication_start(
    State(state): State<AppState>,
    JsonRequest(req): JsonRequest<ReplicationRequest>,
) -> AppResult<Data<ReplicationStartedView>> {
    ok(state
        .service
        .stages()
        .replications()
        .start(&req.source_stage_arn, &req.destination_stage_arn, &req.participant_id)
        .await?)
}

pub async fn replication_stop(
    State(state): State<AppState>,
    JsonRequest(req): JsonRequest<ReplicationRequest>,
) -> AppResult<Data<ReplicationStoppedView>> {
    ok(state.service.stages().replications().stop(&req.source_stage_arn, &req.destination_stage_arn, &req.participant_id).await?)
}

pub async fn replication_status(
    State(state): State<AppState>,
    StagePath(arn): StagePath,
) -> AppResult<Data<ReplicationStatusView>> {
    ok(state.service.stages().replications().status(&arn).await?)
}

// ---- fallbacks ----

pub async fn api_not_found() -> AppError {
    AppError::not_found("Route not found")
}

pub async fn api_method_not_allowed() -> AppError {
    AppError::new(crate::api::ErrorCode::MethodNotAllowed, "Method not allowed on this path")
}

// ---- channels ----

pub async fn channel_create(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    JsonRequest(req): JsonRequest<ChannelCreateRequest>,
) -> AppResult<Response> {
    let channels = state.service.channels();
    let new = NewChannel { name: req.name, title: req.title, description: req.description };
    let (record, key) = channels.create(new).await?;
    let data = ChannelCreatedView { channel: channels.view(&record, &base).await?, stream_key: key.as_str().to_string() };
    Ok(envelope(StatusCode::CREATED, data, Some("channel created")))
}

pub async fn channel_list(State(state): State<AppState>, BaseUrl(base): BaseUrl) -> AppResult<Data<ChannelListView>> {
    ok(state.service.channels().list_view(&base).await?)
}

pub async fn channel_get(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    ChannelPath(name): ChannelPath,
) -> AppResult<Data<ChannelDetailView>> {
    let channels = state.service.channels();
    let record = channels.get(&name).await?;
    ok(ChannelDetailView { channel: channels.view(&record, &base).await? })
}

pub async fn channel_update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    ChannelPath(name): ChannelPath,
    JsonRequest(req): JsonRequest<ChannelUpdateRequest>,
) -> AppResult<Data<ChannelDetailView>> {
    let channels = state.service.channels();
    let description = match &req.description {
        None => DescriptionChange::Keep,
        Some(None) => DescriptionChange::Clear,
        Some(Some(d)) => DescriptionChange::Set(d),
    };
    let record = channels.update(&name, req.title.as_deref(), description).await?;
    Ok(Data(ChannelDetailView { channel: channels.view(&record, &base).await? }, Some("channel updated")))
}

pub async fn channel_delete(State(state): State<AppState>, ChannelPath(name): ChannelPath) -> AppResult<Response> {
    state.service.channels().delete(&name).await?;
    Ok(envelope(StatusCode::OK, ChannelDeletedView { name: name.to_string(), deleted: true }, Some("channel deleted")))
}

pub async fn channel_rotate_key(State(state): State<AppState>, ChannelPath(name): ChannelPath) -> AppResult<Data<StreamKeyView>> {
    let key = state.service.channels().rotate_stream_key(&name).await?;
    Ok(Data(StreamKeyView { channel: name.to_string(), stream_key: key.as_str().to_string() }, Some("stream key replaced")))
}
