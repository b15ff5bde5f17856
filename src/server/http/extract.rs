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

/// A JSON object body. Over the size limit → 413; not JSON or not an object → 400.
pub struct JsonBody(pub Map<String, Value>);

impl FromRequest<AppState> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let limit = state.service.settings().server.body_limit_bytes;
        let too_large = || AppError::new(ErrorCode::PayloadTooLarge, format!("Request body exceeds the {limit}-byte limit"));
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| too_large())?;
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
