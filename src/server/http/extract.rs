//! Request parsing that answers in the contract's envelope: JSON bodies with a size limit,
//! bodies, queries and paths parsed into the requests of `api::request`, and the public base URL.

use crate::api::request::{path_param, FromFields};
use crate::api::ErrorCode;
use crate::domain::{ChannelId, StageArn, UserId};
use crate::server::error::AppError;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use super::AppState;

fn too_large(limit: usize) -> AppError {
    AppError::new(ErrorCode::PayloadTooLarge, format!("Request body exceeds the {limit}-byte limit"))
}

/// 413 before any of the body is read when its declared `Content-Length` is over `limit`.
pub fn declared_within(headers: &axum::http::HeaderMap, limit: usize) -> Result<(), AppError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(n) if n > limit => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// Most of a refused body read (and dropped) before the refusal is sent, and for how long.
const DISCARD_MAX_BYTES: usize = 1024 * 1024;
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads what is left of a body the server refuses, up to [`DISCARD_MAX_BYTES`] within
/// [`DISCARD_FOR`], and drops it. An answer sent while the client is still sending makes the
/// connection close with bytes unread, which resets it: the client then sees the reset, not
/// the 413. Past the bounds the connection is simply closed.
pub async fn discard(body: axum::body::Body) {
    use futures_util::StreamExt;
    let mut data = body.into_data_stream();
    let mut read = 0usize;
    let drain = async {
        while let Some(Ok(chunk)) = data.next().await {
            read += chunk.len();
            if read > DISCARD_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_FOR, drain).await;
}

/// A JSON object body. Over the size limit → 413; not JSON or not an object → 400.
pub struct JsonBody(pub Map<String, Value>);

impl FromRequest<AppState> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let limit = state.service.settings().server.body_limit_bytes;
        if let Err(e) = declared_within(req.headers(), limit) {
            discard(req.into_body()).await;
            return Err(e);
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| too_large(limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(AppError::validation("Request body must be a JSON object")),
            Err(e) => Err(AppError::with_details(
                ErrorCode::ValidationError,
                "Malformed JSON body",
                json!({ "line": e.line(), "column": e.column() }),
            )),
        }
    }
}

/// A JSON body parsed into a request of the contract; a 400 names every bad field.
pub struct JsonRequest<T>(pub T);

impl<T: FromFields> FromRequest<AppState> for JsonRequest<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let JsonBody(body) = JsonBody::from_request(req, state).await?;
        Ok(Self(T::from_fields(&body)?))
    }
}

/// The raw query string as key → value (last one wins); never rejects.
pub struct Query(pub BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let q = parts.uri.query().unwrap_or("");
        let map = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let decode =
                    |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
                (decode(k), decode(v))
            })
            .collect();
        Ok(Self(map))
    }
}

impl Query {
    /// The query as a JSON object of strings, for [`FromFields`].
    fn into_object(self) -> Map<String, Value> {
        self.0.into_iter().map(|(k, v)| (k, Value::String(v))).collect()
    }
}

/// A query string parsed into a request of the contract; a 400 names every bad field.
pub struct QueryRequest<T>(pub T);

impl<T: FromFields, S: Send + Sync> FromRequestParts<S> for QueryRequest<T> {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let query = Query::from_request_parts(parts, state).await?;
        Ok(Self(T::from_fields(&query.into_object())?))
    }
}

/// The stage ARN that ends a path (`…/{*stage_arn}`), as the contract's `stageArn`.
pub struct StagePath(pub StageArn);

impl<S: Send + Sync> FromRequestParts<S> for StagePath {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        path_param("stageArn", &raw).map(Self).map_err(|e| AppError::from(e).into_response())
    }
}

/// The channel name in a path (`/api/channels/{name}…`).
pub struct ChannelPath(pub ChannelId);

impl<S: Send + Sync> FromRequestParts<S> for ChannelPath {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        path_param("name", &raw).map(Self).map_err(|e| AppError::from(e).into_response())
    }
}

/// The user id in a path (`…/{user_id}`), as the contract's `userId`.
pub struct UserPath(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        path_param("userId", &raw).map(Self).map_err(|e| AppError::from(e).into_response())
    }
}

/// The public base URL of this server: `PUBLIC_URL`, else the request's own scheme and host.
pub struct BaseUrl(pub String);

pub fn base_url_from(headers: &HeaderMap, configured: Option<&str>) -> String {
    if let Some(url) = configured {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .unwrap_or("127.0.0.1:3000");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{proto}://{host}")
}

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(Self(base_url_from(&parts.headers, state.service.settings().server.public_url.as_deref())))
    }
}
