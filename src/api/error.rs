//! The contract's error codes and the typed error of the server functions.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// Error codes of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    StageFull,
    StageLimitReached,
    TokenGenerationFailed,
    ServiceUnavailable,
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        Self::ValidationError,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::TooManyRequests,
        Self::StageFull,
        Self::StageLimitReached,
        Self::TokenGenerationFailed,
        Self::ServiceUnavailable,
        Self::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationError => "VALIDATION_ERROR",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Conflict => "CONFLICT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::TooManyRequests => "TOO_MANY_REQUESTS",
            Self::StageFull => "STAGE_FULL",
            Self::StageLimitReached => "STAGE_LIMIT_REACHED",
            Self::TokenGenerationFailed => "TOKEN_GENERATION_FAILED",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status of this code: the one place that maps codes to statuses.
    pub fn http_status(self) -> u16 {
        match self {
            Self::ValidationError => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyRequests => 429,
            Self::StageFull | Self::StageLimitReached | Self::ServiceUnavailable => 503,
            Self::TokenGenerationFailed | Self::InternalError => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a server function failed: the server answered with one of the contract's codes, or the
/// call itself did not get through (network, encoding). The pages branch on [`RpcError::code`].
/// On the wire it is the contract's error envelope, `{"success":false,"error":{"code","message"}}`,
/// so a server function's refusal reads like the REST API's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// The server function ran and refused, as the REST contract would with this code.
    Api { code: ErrorCode, message: String },
    /// The call failed around the server function: reaching it, or encoding its arguments or answer.
    Call(ServerFnErrorErr),
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Api { code, message: message.into() }
    }

    /// The contract's code: a call that did not get through is `SERVICE_UNAVAILABLE` when the
    /// server could not be reached, `INTERNAL_ERROR` otherwise.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Api { code, .. } => *code,
            Self::Call(ServerFnErrorErr::Request(_)) => ErrorCode::ServiceUnavailable,
            Self::Call(ServerFnErrorErr::Args(_) | ServerFnErrorErr::MissingArg(_)) => ErrorCode::ValidationError,
            Self::Call(ServerFnErrorErr::UnsupportedRequestMethod(_)) => ErrorCode::MethodNotAllowed,
            Self::Call(_) => ErrorCode::InternalError,
        }
    }
}

/// As the pages show it: `error running server function: CODE: message` for a refusal.
impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api { code, message } => write!(f, "error running server function: {code}: {message}"),
            Self::Call(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RpcError {}

#[derive(Serialize, Deserialize)]
struct Envelope {
    success: bool,
    error: EnvelopeError,
}

#[derive(Serialize, Deserialize)]
struct EnvelopeError {
    code: ErrorCode,
    message: String,
    /// How a call that did not get through failed (never sent by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call: Option<ServerFnErrorErr>,
}

impl Serialize for RpcError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let error = match self {
            Self::Api { code, message } => EnvelopeError { code: *code, message: message.clone(), call: None },
            Self::Call(e) => EnvelopeError { code: self.code(), message: e.to_string(), call: Some(e.clone()) },
        };
        Envelope { success: false, error }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RpcError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Envelope { error, .. } = Envelope::deserialize(d)?;
        Ok(match error.call {
            Some(call) => Self::Call(call),
            None => Self::Api { code: error.code, message: error.message },
        })
    }
}

impl From<ServerFnErrorErr> for RpcError {
    fn from(e: ServerFnErrorErr) -> Self {
        Self::Call(e)
    }
}

impl FromServerFnError for RpcError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(e: ServerFnErrorErr) -> Self {
        Self::Call(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rpc_error_keeps_its_code_across_the_wire() {
        let e = RpcError::new(ErrorCode::NotFound, "Stage not found");
        let back = RpcError::de(e.ser());
        assert_eq!(back, e);
        assert_eq!(back.code(), ErrorCode::NotFound);
        assert_eq!(back.to_string(), "error running server function: NOT_FOUND: Stage not found");
    }

    #[test]
    fn a_failed_call_has_a_code_too() {
        let e = RpcError::from_server_fn_error(ServerFnErrorErr::Request("offline".into()));
        assert_eq!(e.code(), ErrorCode::ServiceUnavailable);
        assert_eq!(e.to_string(), "error reaching server to call server function: offline");
        let e = RpcError::de("not json".into());
        assert_eq!(e.code(), ErrorCode::InternalError);
        let e = RpcError::from_server_fn_error(ServerFnErrorErr::Args("missing field".into()));
        assert_eq!(RpcError::de(e.ser()), e);
        assert_eq!(e.code(), ErrorCode::ValidationError);
    }

    #[test]
    fn an_rpc_error_is_the_contracts_envelope_on_the_wire() {
        let e = RpcError::new(ErrorCode::TooManyRequests, "slow down");
        let wire: serde_json::Value = serde_json::from_slice(&e.ser()).unwrap();
        assert_eq!(wire, serde_json::json!({"success": false, "error": {"code": "TOO_MANY_REQUESTS", "message": "slow down"}}));
        // as the server sends it, with the envelope's timestamp and details
        let sent =
            r#"{"success":false,"error":{"code":"STAGE_FULL","message":"full","details":{}},"timestamp":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(RpcError::de(sent.into()), RpcError::new(ErrorCode::StageFull, "full"));
    }
}
