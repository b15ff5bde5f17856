//! Request parsing that answers in the contract's envelope: JSON bodies with a size limit,
//! field-by-field validation into domain types, query strings and the public base URL.

use crate::api::ErrorCode;
use crate::domain::{IdError, ParticipantId, StageArn, UserId};
use crate::server::error::AppError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
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

/// Collects every missing and invalid field before answering, so one 400 lists them all.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    missing: Vec<String>,
    invalid: Vec<String>,
    reasons: Vec<String>,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Self { obj, missing: Vec::new(), invalid: Vec::new(), reasons: Vec::new() }
    }

    fn raw_str(&mut self, name: &str, required: bool) -> Option<&'a str> {
        match self.obj.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.missing.push(name.to_string());
                }
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                if required {
                    self.missing.push(name.to_string());
                } else {
                    self.invalid.push(name.to_string());
                    self.reasons.push(format!("{name} must not be empty"));
                }
                None
            }
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.invalid.push(name.to_string());
                self.reasons.push(format!("{name} must be a string"));
                None
            }
        }
    }

    fn parse<T>(&mut self, name: &str, required: bool, parse: impl Fn(&str) -> Result<T, IdError>) -> Option<T> {
        let raw = self.raw_str(name, required)?;
        match parse(raw) {
            Ok(v) => Some(v),
            Err(e) => {
                self.invalid.push(name.to_string());
                self.reasons.push(format!("{name} {e}"));
                None
            }
        }
    }

    pub fn user_id(&mut self, name: &str) -> Option<UserId> {
        self.parse(name, true, |s| UserId::parse(s))
    }
    pub fn participant_id(&mut self, name: &str) -> Option<ParticipantId> {
        self.parse(name, true, |s| ParticipantId::parse(s))
    }
    pub fn stage_arn(&mut self, name: &str) -> Option<StageArn> {
        self.parse(name, true, |s| StageArn::parse(s))
    }
    pub fn optional_stage_arn(&mut self, name: &str) -> Option<StageArn> {
        self.parse(name, false, |s| StageArn::parse(s))
    }
    pub fn string(&mut self, name: &str, required: bool) -> Option<String> {
        self.raw_str(name, required).map(str::to_string)
    }

    /// An optional object of string values.
    pub fn tags(&mut self, name: &str) -> Option<BTreeMap<String, String>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        _ => {
                            self.invalid.push(name.to_string());
                            self.reasons.push(format!("{name} values must be strings"));
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Some(_) => {
                self.invalid.push(name.to_string());
                self.reasons.push(format!("{name} must be an object"));
                None
            }
        }
    }

    /// `Ok` when every field parsed; otherwise the 400 naming each bad field.
    pub fn finish(self) -> Result<(), AppError> {
        if self.missing.is_empty() && self.invalid.is_empty() {
            return Ok(());
        }
        let mut message = Vec::new();
        if !self.missing.is_empty() {
            message.push(format!("Missing required fields: {}", self.missing.join(", ")));
        }
        message.extend(self.reasons);
        let mut details = json!({});
        if !self.missing.is_empty() {
            details["missingFields"] = json!(self.missing);
        }
        if !self.invalid.is_empty() {
            details["invalidFields"] = json!(self.invalid);
        }
        Err(AppError::with_details(ErrorCode::ValidationError, message.join("; "), details))
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
    /// An optional positive integer within `range`, with a default.
    pub fn int(&self, name: &str, default: u32, range: std::ops::RangeInclusive<u32>) -> Result<u32, AppError> {
        match self.0.get(name) {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(AppError::with_details(
                    ErrorCode::ValidationError,
                    format!("{name} must be an integer from {} to {}", range.start(), range.end()),
                    json!({ "invalidFields": [name] }),
                )),
            },
        }
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
