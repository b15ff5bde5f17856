//! Requests of the public contract, parsed into domain types. A parser checks every field
//! before answering, so one rejection names all the missing and all the invalid ones.

use crate::domain::{ChannelId, IdError, ParticipantId, StageArn, StageName, StageTags, UserId, FORMAT_CHARS};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// Why a request was rejected: the contract's `missingFields` and `invalidFields`, and a message
/// that says what was wrong with each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldErrors {
    /// Replaces the "Missing required fields" sentence when set.
    summary: Option<String>,
    missing: Vec<String>,
    invalid: Vec<String>,
    reasons: Vec<String>,
}

impl FieldErrors {
    /// One invalid field, with the reason (`"{field} {reason}"`).
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        let mut e = Self::default();
        e.add_invalid(field, reason);
        e
    }

    fn add_invalid(&mut self, field: &str, reason: impl std::fmt::Display) {
        self.invalid.push(field.to_string());
        self.reasons.push(format!("{field} {reason}"));
    }

    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.invalid.is_empty()
    }

    pub fn missing_fields(&self) -> &[String] {
        &self.missing
    }

    pub fn invalid_fields(&self) -> &[String] {
        &self.invalid
    }

    /// Every problem in one sentence: the missing fields first, then each invalid one.
    pub fn message(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.summary {
            parts.push(s.clone());
        } else if !self.missing.is_empty() {
            parts.push(format!("Missing required fields: {}", self.missing.join(", ")));
        }
        parts.extend(self.reasons.iter().cloned());
        if parts.is_empty() {
            parts.push("Invalid request".to_string());
        }
        parts.join("; ")
    }

    /// The envelope's `details`: `missingFields` and `invalidFields`, each only when not empty.
    pub fn details(&self) -> Value {
        let mut details = Map::new();
        if !self.missing.is_empty() {
            details.insert("missingFields".into(), json!(self.missing));
        }
        if !self.invalid.is_empty() {
            details.insert("invalidFields".into(), json!(self.invalid));
        }
        Value::Object(details)
    }
}

/// A value a field parses into from its (non-empty) text.
pub trait FieldValue: Sized {
    fn parse_field(raw: &str) -> Result<Self, IdError>;
    /// The JSON Schema of what [`FieldValue::parse_field`] accepts, for the OpenAPI document.
    fn schema() -> Value;
}

/// The C0/C1 control characters (what every text id refuses), as a character-class body.
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

/// Unicode's invisible formatting characters ([`FORMAT_CHARS`], what ids refuse) as a
/// character-class body: `\uXXXX` in the basic plane, the astral ones written as themselves.
fn format_class() -> String {
    let one = |c: char| if (c as u32) <= 0xFFFF { format!("\\u{:04x}", c as u32) } else { c.to_string() };
    FORMAT_CHARS
        .iter()
        .map(|&(first, last)| if first == last { one(first) } else { format!("{}-{}", one(first), one(last)) })
        .collect()
}

/// A text id: 1-`max` characters, not only whitespace, no control or invisible formatting
/// characters (composed to NFC).
fn text_id_schema(max: usize, what: &str) -> Value {
    let format = format_class();
    let pattern = format!("^[^{CONTROL}{format}]*[^\\s{CONTROL}{format}][^{CONTROL}{format}]*$");
    json!({ "type": "string", "minLength": 1, "maxLength": max, "pattern": pattern,
            "description": format!("{what}: 1-{max} characters, not only whitespace, without control or invisible formatting characters") })
}

impl FieldValue for String {
    fn parse_field(raw: &str) -> Result<Self, IdError> {
        Ok(raw.to_string())
    }
    fn schema() -> Value {
        json!({ "type": "string", "minLength": 1 })
    }
}
impl FieldValue for UserId {
    fn parse_field(raw: &str) -> Result<Self, IdError> {
        UserId::parse(raw)
    }
    fn schema() -> Value {
        text_id_schema(UserId::MAX_LEN, "a user id")
    }
}
impl FieldValue for ParticipantId {
    fn parse_field(raw: &str) -> Result<Self, IdError> {
        ParticipantId::parse(raw)
    }
    fn schema() -> Value {
        text_id_schema(ParticipantId::MAX_LEN, "a participant id")
    }
}
impl FieldValue for StageName {
    fn parse_field(raw: &str) -> Result<Self, IdError> {
        StageName::parse(raw)
    }
    fn schema() -> Value {
        json!({ "type": "string", "minLength": 1, "maxLength": StageName::MAX_LEN, "pattern": "^[A-Za-z0-9_-]+$" })
    }
}
impl FieldValue for StageArn {
    fn parse_field(raw: &str) -> Result<Self, IdError> {
        StageArn::parse(raw)
    }
    fn schema() -> Value {
        json!({ "type": "string", "maxLength": StageArn::MAX_LEN,
                "pattern": format!("^arn:[^:{CONTROL}]+:ivs:[^:{CONTROL}]*:[^:{CONTROL}]*:stage/[A-Za-z0-9_-]+$"),
                "examples": ["arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456"] })
    }
}

impl FieldValue for ChannelId {
    fn parse_field(raw: &str) -> Result<Self, IdError> {
        ChannelId::parse(raw)
    }
    fn schema() -> Value {
        json!({ "type": "string", "minLength": 1, "maxLength": ChannelId::MAX_LEN, "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$",
                "examples": [ChannelId::DEFAULT] })
    }
}

/// The ids as the response schemas show them: what their parsers accept.
#[cfg(feature = "ssr")]
mod json_schema {
    use super::FieldValue;
    use crate::domain::{ChannelId, ParticipantId, StageArn, UserId};
    use schemars::{JsonSchema, Schema, SchemaGenerator};
    use std::borrow::Cow;

    macro_rules! from_field_value {
        ($($t:ident),*) => {$(
            impl JsonSchema for $t {
                fn schema_name() -> Cow<'static, str> {
                    stringify!($t).into()
                }
                fn json_schema(_: &mut SchemaGenerator) -> Schema {
                    match <$t as FieldValue>::schema() {
                        serde_json::Value::Object(map) => Schema::from(map),
                        _ => Schema::default(),
                    }
                }
            }
        )*};
    }
    from_field_value!(ChannelId, ParticipantId, StageArn, UserId);
}

/// One field a request reads, as the OpenAPI document describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDoc {
    pub name: String,
    pub required: bool,
    /// What a given value must be (an optional field may also be absent).
    pub schema: Value,
}

/// The fields a request reads, recorded by running its reader over nothing: the document is
/// made by the same code that parses, so the two cannot drift apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestDoc {
    pub fields: Vec<FieldDoc>,
    /// At least one of these must be given.
    pub at_least_one_of: Vec<String>,
}

impl RequestDoc {
    /// The fields as the JSON Schema of a body object (where an optional field may be `null`).
    pub fn object_schema(&self) -> Value {
        let props: Map<String, Value> = self
            .fields
            .iter()
            .map(|f| (f.name.clone(), if f.required { f.schema.clone() } else { nullable(f.schema.clone()) }))
            .collect();
        let required: Vec<&str> = self.fields.iter().filter(|f| f.required).map(|f| f.name.as_str()).collect();
        let mut schema = json!({ "type": "object", "properties": props, "required": required });
        if !self.at_least_one_of.is_empty() {
            let given = json!({ "not": { "type": "null" } });
            let any: Vec<Value> =
                self.at_least_one_of.iter().map(|n| json!({ "required": [n], "properties": { n: given.clone() } })).collect();
            schema["anyOf"] = Value::Array(any);
        }
        schema
    }
}

/// An optional field's schema: the value, or `null` (read as absent).
fn nullable(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "null" }] })
}

/// Reads the fields of one JSON object (a body, or a query string as strings), recording every
/// problem. Each reader returns `None` exactly when it recorded one, and [`Fields::finish`]
/// answers with all of them.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: FieldErrors,
    /// Set when the reader runs to describe itself, not to parse.
    doc: Option<&'a mut RequestDoc>,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Self { obj, errors: FieldErrors::default(), doc: None }
    }

    /// Records a field the reader reads (when describing).
    fn document(&mut self, name: &str, required: bool, schema: impl FnOnce() -> Value) {
        if let Some(doc) = self.doc.as_deref_mut() {
            doc.fields.push(FieldDoc { name: name.to_string(), required, schema: schema() });
        }
    }

    /// Requires one of `names` to be given; `none_given` says none was (each read cleanly).
    pub fn at_least_one(&mut self, names: &[&str], none_given: bool) {
        if let Some(doc) = self.doc.as_deref_mut() {
            doc.at_least_one_of = names.iter().map(|n| n.to_string()).collect();
            return;
        }
        if none_given && self.errors.is_empty() {
            self.errors.summary = Some(format!("Nothing to update: give {}", names.join(" or ")));
            self.errors.missing.push(names[0].to_string());
        }
    }

    /// The text of `name`: `Ok(None)` when absent or null; `Err` when recorded as bad. An empty
    /// string counts as missing when the field is required, as invalid when it is not.
    fn text(&mut self, name: &str, required: bool) -> Result<Option<&'a str>, ()> {
        match self.obj.get(name) {
            None | Some(Value::Null) => {
                if required {
                    self.errors.missing.push(name.to_string());
                    return Err(());
                }
                Ok(None)
            }
            Some(Value::String(s)) if s.is_empty() => {
                if required {
                    self.errors.missing.push(name.to_string());
                } else {
                    self.errors.add_invalid(name, "must not be empty");
                }
                Err(())
            }
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => {
                self.errors.add_invalid(name, "must be a string");
                Err(())
            }
        }
    }

    fn parse<T: FieldValue>(&mut self, name: &str, raw: &str) -> Option<T> {
        match T::parse_field(raw) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.add_invalid(name, e);
                None
            }
        }
    }

    /// A field that must be there.
    pub fn required<T: FieldValue>(&mut self, name: &str) -> Option<T> {
        self.document(name, true, T::schema);
        let raw = self.text(name, true).ok().flatten()?;
        self.parse(name, raw)
    }

    /// A field that may be absent (`Some(None)`); `None` when it is there but bad.
    pub fn optional<T: FieldValue>(&mut self, name: &str) -> Option<Option<T>> {
        self.document(name, false, T::schema);
        match self.text(name, false).ok()? {
            None => Some(None),
            Some(raw) => self.parse(name, raw).map(Some),
        }
    }

    /// Optional stage tags: an object of string values, within IVS's bounds.
    pub fn stage_tags(&mut self, name: &str) -> Option<Option<StageTags>> {
        self.document(name, false, || {
            json!({ "type": "object", "maxProperties": StageTags::MAX_TAGS,
                    "propertyNames": { "minLength": 1, "maxLength": StageTags::MAX_KEY_LEN, "not": { "pattern": "^aws:" } },
                    "additionalProperties": { "type": "string", "maxLength": StageTags::MAX_VALUE_LEN } })
        });
        match self.tags(name)? {
            None => Some(None),
            Some(tags) => match StageTags::parse(tags) {
                Ok(tags) => Some(Some(tags)),
                Err(e) => {
                    self.errors.add_invalid(name, e);
                    None
                }
            },
        }
    }

    /// An optional object of string values.
    fn tags(&mut self, name: &str) -> Option<Option<BTreeMap<String, String>>> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let Value::String(s) = v else {
                        self.errors.add_invalid(name, "values must be strings");
                        return None;
                    };
                    out.insert(k.clone(), s.clone());
                }
                Some(Some(out))
            }
            Some(_) => {
                self.errors.add_invalid(name, "must be an object");
                None
            }
        }
    }

    /// An optional whole number within `range` (text, as in a query string, or a JSON number),
    /// `default` when absent.
    pub fn int(&mut self, name: &str, default: u32, range: RangeInclusive<u32>) -> Option<u32> {
        self.document(
            name,
            false,
            || json!({ "type": "integer", "minimum": range.start(), "maximum": range.end(), "default": default }),
        );
        let n = match self.obj.get(name) {
            None | Some(Value::Null) => return Some(default),
            Some(Value::String(s)) => s.trim().parse::<u32>().ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Some(_) => None,
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.errors.add_invalid(name, format!("must be an integer from {} to {}", range.start(), range.end()));
                None
            }
        }
    }

    /// The request `build` makes of the fields read, or every problem recorded. `build` sees the
    /// readers' results and yields `None` only if one of them did (so a problem was recorded).
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, FieldErrors> {
        if !self.errors.is_empty() || self.doc.is_some() {
            return Err(self.errors);
        }
        build().ok_or(self.errors)
    }
}

/// The longest channel title and description, in characters.
pub const MAX_CHANNEL_TITLE: usize = 200;
pub const MAX_CHANNEL_DESCRIPTION: usize = 2_000;

impl Fields<'_> {
    /// An optional text of at most `max` characters.
    fn bounded(&mut self, name: &str, max: usize) -> Option<Option<String>> {
        self.document(name, false, || json!({ "type": "string", "minLength": 1, "maxLength": max }));
        let text: Option<String> = self.undocumented(|f| f.optional(name))?;
        match text {
            Some(t) if t.chars().count() > max => {
                self.errors.add_invalid(name, format!("must be at most {max} characters"));
                None
            }
            other => Some(other),
        }
    }

    /// An optional text of at most `max` characters that `null` or `""` clears: `Some(None)`
    /// when absent, `Some(Some(None))` to clear.
    fn clearable(&mut self, name: &str, max: usize) -> Option<Option<Option<String>>> {
        self.document(name, false, || json!({ "type": "string", "maxLength": max, "description": "empty or null clears it" }));
        match self.obj.get(name) {
            None => Some(None),
            Some(Value::Null) => Some(Some(None)),
            Some(Value::String(s)) if s.is_empty() => Some(Some(None)),
            Some(_) => self.undocumented(|f| f.bounded(name, max)).map(Some),
        }
    }

    /// Runs a reader whose fields the caller has already described.
    fn undocumented<T>(&mut self, read: impl FnOnce(&mut Self) -> T) -> T {
        let doc = self.doc.take();
        let out = read(self);
        self.doc = doc;
        out
    }
}

/// `POST /api/channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCreateRequest {
    pub name: ChannelId,
    pub title: Option<String>,
    pub description: Option<String>,
}

impl FromFields for ChannelCreateRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let name = f.required("name");
        let title = f.bounded("title", MAX_CHANNEL_TITLE);
        let description = f.clearable("description", MAX_CHANNEL_DESCRIPTION);
        f.finish(|| Some(Self { name: name?, title: title?, description: description?.flatten() }))
    }
}

/// `PUT /api/channels/{name}`: at least one of the two; a `null` or empty description clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelUpdateRequest {
    pub title: Option<String>,
    /// `None`: unchanged; `Some(None)`: cleared.
    pub description: Option<Option<String>>,
}

impl FromFields for ChannelUpdateRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let title = f.bounded("title", MAX_CHANNEL_TITLE);
        let description = f.clearable("description", MAX_CHANNEL_DESCRIPTION);
        f.at_least_one(&["title", "description"], title == Some(None) && description == Some(None));
        f.finish(|| Some(Self { title: title?, description: description? }))
    }
}

/// A request read from a JSON object: a body, or a query string (every value a string).
pub trait FromFields: Sized {
    fn from_fields(obj: &Map<String, Value>) -> Result<Self, FieldErrors> {
        Self::read(Fields::new(obj))
    }

    /// Reads every field from `f` (recording each problem) and builds the request.
    fn read(f: Fields<'_>) -> Result<Self, FieldErrors>;

    /// The fields [`FromFields::read`] reads, with what each accepts: the reader run over
    /// nothing, recording instead of parsing.
    fn describe() -> RequestDoc {
        let empty = Map::new();
        let mut doc = RequestDoc::default();
        let _ = Self::read(Fields { obj: &empty, errors: FieldErrors::default(), doc: Some(&mut doc) });
        doc
    }
}

/// A parsed path segment, `name` being the field the contract calls it.
pub fn path_param<T: FieldValue>(name: &str, raw: &str) -> Result<T, FieldErrors> {
    T::parse_field(raw).map_err(|e| FieldErrors::invalid(name, e))
}

/// `POST /api/token/viewer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerTokenRequest {
    pub user_id: UserId,
    /// A stage of the viewer's choosing instead of the assigned one (one of the channel's).
    pub stage_arn: Option<StageArn>,
    /// The channel to watch (absent: the default one).
    pub channel: ChannelId,
}

impl FromFields for ViewerTokenRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let user_id = f.required("userId");
        let stage_arn = f.optional("stageArn");
        let channel = f.optional("channel");
        f.finish(|| Some(Self { user_id: user_id?, stage_arn: stage_arn?, channel: channel?.unwrap_or_default() }))
    }
}

/// `POST /api/token/publisher`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherTokenRequest {
    pub user_id: UserId,
    /// The channel to publish on (absent: the default one).
    pub channel: ChannelId,
}

impl FromFields for PublisherTokenRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let user_id = f.required("userId");
        let channel = f.optional("channel");
        f.finish(|| Some(Self { user_id: user_id?, channel: channel?.unwrap_or_default() }))
    }
}

/// `POST /api/token/mediaserver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaServerTokenRequest {
    pub server_id: UserId,
    pub stage_arn: StageArn,
}

impl FromFields for MediaServerTokenRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let server_id = f.required("serverId");
        let stage_arn = f.required("stageArn");
        f.finish(|| Some(Self { server_id: server_id?, stage_arn: stage_arn? }))
    }
}

/// A viewer on a stage: the heartbeat and leave bodies, the watch-duration query. A heartbeat
/// or leave that names the ticket's `participantId` counts only for that ticket's viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRequest {
    pub user_id: UserId,
    pub stage_arn: StageArn,
    pub participant_id: Option<ParticipantId>,
}

impl FromFields for PresenceRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let user_id = f.required("userId");
        let stage_arn = f.required("stageArn");
        let participant_id = f.optional("participantId");
        f.finish(|| Some(Self { user_id: user_id?, stage_arn: stage_arn?, participant_id: participant_id? }))
    }
}

/// `POST /api/viewer/rejoin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejoinRequest {
    pub user_id: UserId,
    pub stage_arn: StageArn,
    pub participant_id: ParticipantId,
}

impl FromFields for RejoinRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let user_id = f.required("userId");
        let stage_arn = f.required("stageArn");
        let participant_id = f.required("participantId");
        f.finish(|| Some(Self { user_id: user_id?, stage_arn: stage_arn?, participant_id: participant_id? }))
    }
}

/// The query of `GET /api/viewer/history/{userId}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// 1-1000, default 10.
    pub limit: u32,
}

impl FromFields for HistoryQuery {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let limit = f.int("limit", 10, 1..=1000);
        f.finish(|| Some(Self { limit: limit? }))
    }
}

/// The query of `GET /api/viewer/stats/{stageArn}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewStatsQuery {
    /// 1-3650, default 7.
    pub days: u32,
}

impl FromFields for ViewStatsQuery {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let days = f.int("days", 7, 1..=3650);
        f.finish(|| Some(Self { days: days? }))
    }
}

/// The query of `GET /api/stats/stages`: one stage, or all of a channel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageStatsQuery {
    pub arn: Option<StageArn>,
    /// Whose stages (absent: the default channel's).
    pub channel: ChannelId,
}

impl FromFields for StageStatsQuery {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let arn = f.optional("arn");
        let channel = f.optional("channel");
        f.finish(|| Some(Self { arn: arn?, channel: channel?.unwrap_or_default() }))
    }
}

/// `?channel=NAME` of the stats and master-stage routes (absent: the default channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelQuery {
    pub channel: ChannelId,
}

impl FromFields for ChannelQuery {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let channel = f.optional("channel");
        f.finish(|| Some(Self { channel: channel?.unwrap_or_default() }))
    }
}

/// `POST /api/stage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageCreateRequest {
    pub name: StageName,
    pub tags: StageTags,
}

impl FromFields for StageCreateRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let name = f.required("name");
        let tags = f.stage_tags("tags");
        f.finish(|| Some(Self { name: name?, tags: tags?.unwrap_or_default() }))
    }
}

/// `PUT /api/stage/{stageArn}`: at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageUpdateRequest {
    pub name: Option<StageName>,
    pub tags: Option<StageTags>,
}

impl FromFields for StageUpdateRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let name = f.optional("name");
        let tags = f.stage_tags("tags");
        f.at_least_one(&["name", "tags"], name == Some(None) && tags == Some(None));
        f.finish(|| Some(Self { name: name?, tags: tags? }))
    }
}

/// `POST /api/stage/replication/start` and `DELETE …/stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationRequest {
    pub source_stage_arn: StageArn,
    pub destination_stage_arn: StageArn,
    pub participant_id: ParticipantId,
}

impl FromFields for ReplicationRequest {
    fn read(mut f: Fields<'_>) -> Result<Self, FieldErrors> {
        let source = f.required("sourceStageArn");
        let destination = f.required("destinationStageArn");
        let participant_id = f.required("participantId");
        f.finish(|| {
            Some(Self { source_stage_arn: source?, destination_stage_arn: destination?, participant_id: participant_id? })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    const ARN: &str = "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456";

    #[test]
    fn a_good_body_parses_into_domain_types() {
        let r = ViewerTokenRequest::from_fields(&obj(json!({ "userId": "v1", "stageArn": ARN }))).unwrap();
        assert_eq!(r.user_id.as_str(), "v1");
        assert_eq!(r.stage_arn.as_ref().map(StageArn::as_str), Some(ARN));
        let r = ViewerTokenRequest::from_fields(&obj(json!({ "userId": "v1", "stageArn": null }))).unwrap();
        assert_eq!(r.stage_arn, None);
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let e = RejoinRequest::from_fields(&obj(json!({ "userId": 1, "participantId": "" }))).unwrap_err();
        assert_eq!(e.missing_fields(), ["stageArn", "participantId"]);
        assert_eq!(e.invalid_fields(), ["userId"]);
        assert_eq!(e.message(), "Missing required fields: stageArn, participantId; userId must be a string");
        assert_eq!(e.details(), json!({ "missingFields": ["stageArn", "participantId"], "invalidFields": ["userId"] }));
    }

    #[test]
    fn ids_are_checked_by_their_parsers() {
        let e = PresenceRequest::from_fields(&obj(json!({ "userId": "a\nb", "stageArn": "stage/x" }))).unwrap_err();
        assert_eq!(e.invalid_fields(), ["userId", "stageArn"]);
        assert_eq!(e.message(), "userId must not contain control characters; stageArn is not a valid stage ARN");
        assert_eq!(e.details(), json!({ "invalidFields": ["userId", "stageArn"] }));
    }

    #[test]
    fn an_empty_optional_field_is_invalid_not_missing() {
        let e = StageUpdateRequest::from_fields(&obj(json!({ "name": "" }))).unwrap_err();
        assert_eq!(e.details(), json!({ "invalidFields": ["name"] }));
        assert_eq!(e.message(), "name must not be empty");
    }

    #[test]
    fn an_update_needs_something_to_change() {
        let e = StageUpdateRequest::from_fields(&obj(json!({}))).unwrap_err();
        assert_eq!(e.message(), "Nothing to update: give name or tags");
        assert_eq!(e.details(), json!({ "missingFields": ["name"] }));
        let r = StageUpdateRequest::from_fields(&obj(json!({ "tags": {} }))).unwrap();
        assert_eq!(r, StageUpdateRequest { name: None, tags: Some(StageTags::default()) });
    }

    #[test]
    fn tags_must_be_an_object_of_strings() {
        let e = StageCreateRequest::from_fields(&obj(json!({ "name": "n", "tags": { "a": 1 } }))).unwrap_err();
        assert_eq!(e.message(), "tags values must be strings");
        let e = StageCreateRequest::from_fields(&obj(json!({ "name": "n", "tags": ["a"] }))).unwrap_err();
        assert_eq!(e.message(), "tags must be an object");
        let r = StageCreateRequest::from_fields(&obj(json!({ "name": "n" }))).unwrap();
        assert_eq!(r.tags, StageTags::default());
    }

    #[test]
    fn a_stage_name_and_tags_out_of_bounds_are_both_named() {
        let e = StageCreateRequest::from_fields(&obj(json!({ "name": "not a name", "tags": { "aws:x": "v" } }))).unwrap_err();
        assert_eq!(e.details(), json!({ "invalidFields": ["name", "tags"] }));
        assert!(e.message().contains("name must be 1-128 characters of letters, digits, '-' and '_'"), "{}", e.message());
        let e = StageUpdateRequest::from_fields(&obj(json!({ "tags": { "": "v" } }))).unwrap_err();
        assert_eq!(e.details(), json!({ "invalidFields": ["tags"] }));
        assert_eq!(e.message(), "tags must be at most 50 string pairs (keys 1-128, values up to 256 characters)");
    }

    #[test]
    fn query_integers_default_and_stay_in_range() {
        assert_eq!(HistoryQuery::from_fields(&obj(json!({}))).unwrap().limit, 10);
        assert_eq!(HistoryQuery::from_fields(&obj(json!({ "limit": " 25 " }))).unwrap().limit, 25);
        assert_eq!(HistoryQuery::from_fields(&obj(json!({ "limit": 1000 }))).unwrap().limit, 1000);
        for bad in [json!("0"), json!("1001"), json!(""), json!("ten"), json!("-1"), json!(1.5), json!(true)] {
            let e = HistoryQuery::from_fields(&obj(json!({ "limit": bad }))).unwrap_err();
            assert_eq!(e.message(), "limit must be an integer from 1 to 1000", "for {bad}");
            assert_eq!(e.details(), json!({ "invalidFields": ["limit"] }));
        }
        assert_eq!(ViewStatsQuery::from_fields(&obj(json!({}))).unwrap().days, 7);
        assert!(ViewStatsQuery::from_fields(&obj(json!({ "days": "3651" }))).is_err());
    }

    #[test]
    fn a_channel_is_optional_and_defaults_to_the_default_one() {
        let r = ViewerTokenRequest::from_fields(&obj(json!({ "userId": "v1" }))).unwrap();
        assert!(r.channel.is_default());
        let r = PublisherTokenRequest::from_fields(&obj(json!({ "userId": "p", "channel": "news" }))).unwrap();
        assert_eq!(r.channel.as_str(), "news");
        assert!(ChannelQuery::from_fields(&obj(json!({}))).unwrap().channel.is_default());
        let e = ChannelQuery::from_fields(&obj(json!({ "channel": "Not A Slug" }))).unwrap_err();
        assert_eq!(e.details(), json!({ "invalidFields": ["channel"] }));
        let e = ViewerTokenRequest::from_fields(&obj(json!({ "userId": "v1", "channel": 7 }))).unwrap_err();
        assert_eq!(e.invalid_fields(), ["channel"]);
    }

    #[test]
    fn a_stage_filter_is_optional_but_must_be_an_arn() {
        assert_eq!(StageStatsQuery::from_fields(&obj(json!({}))).unwrap().arn, None);
        let r = StageStatsQuery::from_fields(&obj(json!({ "arn": ARN }))).unwrap();
        assert_eq!(r.arn.as_ref().map(StageArn::as_str), Some(ARN));
        let e = StageStatsQuery::from_fields(&obj(json!({ "arn": "" }))).unwrap_err();
        assert_eq!((e.message().as_str(), e.details()), ("arn must not be empty", json!({ "invalidFields": ["arn"] })));
        let e = StageStatsQuery::from_fields(&obj(json!({ "arn": "x" }))).unwrap_err();
        assert_eq!(e.message(), "arn is not a valid stage ARN");
    }

    #[test]
    fn a_path_segment_is_named_as_its_field() {
        let e = path_param::<StageArn>("stageArn", "nope").unwrap_err();
        assert_eq!(e.message(), "stageArn is not a valid stage ARN");
        assert_eq!(e.details(), json!({ "invalidFields": ["stageArn"] }));
        assert!(path_param::<UserId>("userId", "u1").is_ok());
    }

    #[test]
    fn finish_never_yields_a_half_built_request() {
        // A reader that failed without recording (a bug) still yields an error, not a panic.
        let body = Map::new();
        let f = Fields::new(&body);
        let e = f.finish(|| None::<()>).unwrap_err();
        assert_eq!(e.message(), "Invalid request");
    }

    #[test]
    fn a_channel_request_parses_its_name_and_bounds_its_texts() {
        let r = ChannelCreateRequest::from_fields(&obj(json!({ "name": "news", "title": "News" }))).unwrap();
        assert_eq!((r.name.as_str(), r.title.as_deref(), r.description), ("news", Some("News"), None));
        let e = ChannelCreateRequest::from_fields(&obj(json!({ "name": "News!", "title": "x".repeat(201) }))).unwrap_err();
        assert_eq!(e.details(), json!({ "invalidFields": ["name", "title"] }));
        let e = ChannelCreateRequest::from_fields(&obj(json!({ "title": "t" }))).unwrap_err();
        assert_eq!(e.details(), json!({ "missingFields": ["name"] }));
        let e = ChannelCreateRequest::from_fields(&obj(json!({ "name": "a", "description": 5 }))).unwrap_err();
        assert_eq!(e.details(), json!({ "invalidFields": ["description"] }));
    }

    #[test]
    fn a_channel_update_keeps_sets_or_clears_the_description() {
        let r = ChannelUpdateRequest::from_fields(&obj(json!({ "title": "T" }))).unwrap();
        assert_eq!((r.title.as_deref(), r.description), (Some("T"), None));
        let r = ChannelUpdateRequest::from_fields(&obj(json!({ "description": "D" }))).unwrap();
        assert_eq!(r.description, Some(Some("D".to_string())));
        for clear in [json!({ "description": null }), json!({ "description": "" })] {
            assert_eq!(ChannelUpdateRequest::from_fields(&obj(clear)).unwrap().description, Some(None));
        }
        let e = ChannelUpdateRequest::from_fields(&obj(json!({}))).unwrap_err();
        assert_eq!(e.message(), "Nothing to update: give title or description");
        let e = ChannelUpdateRequest::from_fields(&obj(json!({ "description": "x".repeat(2001) }))).unwrap_err();
        assert_eq!(e.details(), json!({ "invalidFields": ["description"] }));
    }
}
