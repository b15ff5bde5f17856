//! The one error type of the server, mapped to the contract's envelope.

use crate::api::ErrorCode;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Api { code: ErrorCode, message: String, details: Option<Value> },
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    /// The database is out of reach; the cause is logged, never returned.
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Api { code, message: message.into(), details: None }
    }
    pub fn with_details(code: ErrorCode, message: impl Into<String>, details: Value) -> Self {
        Self::Api { code, message: message.into(), details: Some(details) }
    }
    /// A `VALIDATION_ERROR` naming the request's fields that are not valid.
    pub fn invalid_fields(message: impl Into<String>, fields: &[&str]) -> Self {
        Self::with_details(ErrorCode::ValidationError, message, serde_json::json!({ "invalidFields": fields }))
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Api { code, .. } => *code,
            Self::RateLimited { .. } => ErrorCode::TooManyRequests,
            Self::DatabaseUnavailable(_) => ErrorCode::ServiceUnavailable,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The message a client may see: internal causes are logged, never returned.
    pub fn public_message(&self) -> String {
        match self {
            Self::Api { message, .. } => message.clone(),
            Self::RateLimited { .. } => "Too many requests, retry later".into(),
            Self::DatabaseUnavailable(_) => "The database is unavailable".into(),
            Self::Internal(_) => "Internal server error".into(),
        }
    }
}

impl From<crate::api::request::FieldErrors> for AppError {
    fn from(e: crate::api::request::FieldErrors) -> Self {
        Self::with_details(ErrorCode::ValidationError, e.message(), e.details())
    }
}

/// The failure envelope.
pub fn error_body(code: ErrorCode, message: &str, details: Option<&Value>) -> Value {
    let mut error = json!({ "code": code.as_str(), "message": message });
    if let Some(d) = details {
        error["details"] = d.clone();
    }
    json!({ "success": false, "error": error, "timestamp": super::time::iso_now() })
}

pub fn error_response(code: ErrorCode, message: &str, details: Option<&Value>) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(error_body(code, message, details))).into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let cause: Option<&(dyn std::error::Error + 'static)> = match &self {
            Self::Internal(c) => Some(c.as_ref()),
            Self::DatabaseUnavailable(e) => Some(e.as_ref()),
            _ => None,
        };
        if let Some(cause) = cause {
            let mut chain = cause.to_string();
            let mut source = cause.source();
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            tracing::error!(error = %chain, code = %self.code(), "request failed");
        }
        let details = match &self {
            Self::Api { details, .. } => details.as_ref(),
            _ => None,
        };
        let mut resp = error_response(self.code(), &self.public_message(), details);
        let retry_after = match self {
            Self::RateLimited { retry_after_secs } => Some(retry_after_secs.max(1)),
            // busy, locked or shutting down: worth another try in a moment
            Self::DatabaseUnavailable(_) => Some(1),
            _ => None,
        };
        if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
