//! The public contract as an OpenAPI 3.1 document, served at `/api/openapi.json`.
//!
//! [`OPERATIONS`] names, for every route the REST router serves (a test checks the two agree,
//! route by route), the request types it parses and the view it answers with; the document is
//! generated from those types: each request's fields from its own parser, run to describe
//! itself ([`FromFields::describe`]), and each view's schema derived from its definition.

use serde_json::{json, Map, Value};

use crate::api::request::{
    ChannelCreateRequest, ChannelQuery, ChannelUpdateRequest, FieldValue, FromFields, HistoryQuery, MediaServerTokenRequest,
    PresenceRequest, PublisherTokenRequest, RejoinRequest, ReplicationRequest, RequestDoc, StageCreateRequest, StageStatsQuery,
    StageUpdateRequest, ViewStatsQuery, ViewerTokenRequest,
};
use crate::domain::{ChannelId, StageArn, UserId};
use crate::server::service::views::*;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// The fields a request reads ([`FromFields::describe`]).
type Fields = fn() -> RequestDoc;
/// A path segment: its name and what its parser accepts.
type PathParam = (&'static str, fn() -> Value);
/// The schema of a success's `data`.
type DataSchema = fn(&mut SchemaGenerator) -> Schema;

fn data<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

pub struct Operation {
    pub method: &'static str,
    /// OpenAPI path template (`{stageArn}` is the whole rest of the path, slashes included).
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// Each path segment's name and what its parser accepts.
    pub path_params: &'static [PathParam],
    pub query: Option<Fields>,
    pub body: Option<Fields>,
    pub success: u16,
    /// `None`: an SDP answer (WHIP/WHEP `POST`) or an empty body.
    pub data: Option<DataSchema>,
    pub errors: &'static [u16],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    ApiKey,
    /// The API key and `x-internal-secret`.
    Internal,
    /// A participant token as `Authorization: Bearer` (WHIP/WHEP).
    Bearer,
    /// A channel's stream key as `Authorization: Bearer`.
    StreamKey,
}

fn session_id() -> Value {
    json!({ "type": "string", "minLength": 1 })
}

const ARN: &[PathParam] = &[("stageArn", <StageArn as FieldValue>::schema)];
const USER: &[PathParam] = &[("userId", <UserId as FieldValue>::schema)];
const SESSION: &[PathParam] = &[("id", session_id)];
const CHANNEL: &[PathParam] = &[("name", <ChannelId as FieldValue>::schema)];
const CHANNEL_SESSION: &[PathParam] = &[("name", <ChannelId as FieldValue>::schema), ("id", session_id)];

macro_rules! fields {
    () => {
        None
    };
    ($t:ty) => {
        Some(<$t as FromFields>::describe as Fields)
    };
}
macro_rules! data {
    () => {
        None
    };
    ($t:ty) => {
        Some(data::<$t> as DataSchema)
    };
}
macro_rules! op {
    ($m:literal $p:literal, $tag:literal, $sum:literal, $auth:ident, path $pp:expr, query ($($q:ty)?), body ($($b:ty)?),
     $ok:literal ($($d:ty)?), [$($e:literal),*]) => {
        Operation { method: $m, path: $p, tag: $tag, summary: $sum, auth: Auth::$auth, path_params: $pp, query: fields!($($q)?),
                    body: fields!($($b)?), success: $ok, data: data!($($d)?), errors: &[$($e),*] }
    };
}

pub const OPERATIONS: &[Operation] = &[
    op!("get" "/api/health", "health", "Service health", None, path &[], query (), body (), 200 (HealthView), [503]),
    op!("post" "/api/token/viewer", "tokens", "Viewer token and stage assignment", ApiKey, path &[], query (),
        body (ViewerTokenRequest), 200 (ViewerTokenView), [400, 401, 404, 429, 503]),
    op!("post" "/api/token/publisher", "tokens", "Publisher token on a channel's master stage", ApiKey, path &[], query (),
        body (PublisherTokenRequest), 200 (PublisherTokenView), [400, 401, 404, 429]),
    op!("post" "/api/token/mediaserver", "tokens", "Publish+subscribe token for an internal media server", Internal, path &[], query (),
        body (MediaServerTokenRequest), 200 (MediaServerTokenView), [400, 401, 403]),
    op!("post" "/api/viewer/heartbeat", "viewers", "Viewer heartbeat (every 30 s)", ApiKey, path &[], query (),
        body (PresenceRequest), 200 (HeartbeatView<'static>), [400, 401, 404]),
    op!("post" "/api/viewer/leave", "viewers", "Viewer leaves (idempotent)", ApiKey, path &[], query (),
        body (PresenceRequest), 200 (ViewerLeftView), [400, 401]),
    op!("post" "/api/viewer/rejoin", "viewers", "Viewer rejoins after a reconnect", ApiKey, path &[], query (),
        body (RejoinRequest), 200 (RejoinView), [400, 401, 404, 503]),
    op!("get" "/api/viewer/list/{stageArn}", "viewers", "Viewers present on a stage", ApiKey, path ARN, query (), body (),
        200 (ViewerListView), [400, 401, 404]),
    op!("get" "/api/viewer/duration", "viewers", "Watch time of a viewer on a stage", ApiKey, path &[], query (PresenceRequest),
        body (), 200 (WatchDurationView), [400, 401, 404]),
    op!("get" "/api/viewer/history/{userId}", "viewers", "Watch history of a viewer", ApiKey, path USER, query (HistoryQuery),
        body (), 200 (HistoryView), [400, 401]),
    op!("get" "/api/viewer/stats/{stageArn}", "viewers", "Viewing statistics of a stage", ApiKey, path ARN, query (ViewStatsQuery),
        body (), 200 (StageViewStatsView), [400, 401, 404]),
    op!("get" "/api/stats", "stats", "A channel's live totals", ApiKey, path &[], query (ChannelQuery), body (), 200 (StatsView),
        [400, 401, 404]),
    op!("get" "/api/stats/viewers", "stats", "A channel's total viewers", ApiKey, path &[], query (ChannelQuery), body (),
        200 (TotalViewersView), [400, 401, 404]),
    op!("get" "/api/stats/stages", "stats", "Per-stage viewer counts of a channel", ApiKey, path &[], query (StageStatsQuery),
        body (), 200 (StagesStatsView), [400, 401, 404]),
    op!("get" "/api/stats/publisher", "stats", "Whether a channel's publisher is live", ApiKey, path &[], query (ChannelQuery),
        body (), 200 (PublisherStatsView), [400, 401, 404]),
    op!("get" "/api/channels", "channels", "Every channel, live ones first, with the totals", ApiKey, path &[], query (), body (),
        200 (ChannelListView), [401]),
    op!("post" "/api/channels", "channels", "Create a channel: its master stage and stream key", ApiKey, path &[], query (),
        body (ChannelCreateRequest), 201 (ChannelCreatedView), [400, 401, 409, 503]),
    op!("get" "/api/channels/{name}", "channels", "A channel", ApiKey, path CHANNEL, query (), body (), 200 (ChannelDetailView),
        [400, 401, 404]),
    op!("put" "/api/channels/{name}", "channels", "Change a channel's title or description", ApiKey, path CHANNEL, query (),
        body (ChannelUpdateRequest), 200 (ChannelDetailView), [400, 401, 404]),
    op!("delete" "/api/channels/{name}", "channels", "Delete a channel and its stages", ApiKey, path CHANNEL, query (), body (),
        200 (ChannelDeletedView), [400, 401, 403, 404]),
    op!("post" "/api/channels/{name}/stream-key", "channels", "Replace a channel's stream key", ApiKey, path CHANNEL, query (),
        body (), 200 (StreamKeyView), [400, 401, 404]),
    op!("post" "/api/stage", "stages", "Create a stage", ApiKey, path &[], query (), body (StageCreateRequest),
        201 (StageCreatedView), [400, 401, 503]),
    op!("get" "/api/stage/list", "stages", "List stages", ApiKey, path &[], query (), body (), 200 (StageListView), [401]),
    op!("get" "/api/stage/master/info", "stages", "A channel's master stage", ApiKey, path &[], query (ChannelQuery), body (),
        200 (StageDetailView), [400, 401, 404]),
    op!("get" "/api/stage/{stageArn}", "stages", "A stage", ApiKey, path ARN, query (), body (), 200 (StageDetailView),
        [400, 401, 404]),
    op!("put" "/api/stage/{stageArn}", "stages", "Rename or retag a stage", ApiKey, path ARN, query (), body (StageUpdateRequest),
        200 (StageDetailView), [400, 401, 404]),
    op!("delete" "/api/stage/{stageArn}", "stages", "Delete a stage", ApiKey, path ARN, query (), body (), 200 (StageDeletedView),
        [400, 401, 403, 404]),
    op!("post" "/api/stage/replication/start", "stages", "Replicate a participant into another stage", ApiKey, path &[], query (),
        body (ReplicationRequest), 200 (ReplicationStartedView), [400, 401, 404]),
    op!("delete" "/api/stage/replication/stop", "stages", "Stop a participant replication", ApiKey, path &[], query (),
        body (ReplicationRequest), 200 (ReplicationStoppedView), [400, 401, 404]),
    op!("get" "/api/stage/replication/status/{stageArn}", "stages", "Replications of a stage", ApiKey, path ARN, query (), body (),
        200 (ReplicationStatusView), [400, 401, 404]),
    op!("post" "/whip", "media", "WHIP: publish (SDP offer in, SDP answer out)", Bearer, path &[], query (), body (), 201 (),
        [400, 401, 403, 409, 413, 415, 503]),
    op!("delete" "/whip/{id}", "media", "WHIP: end the broadcast", Bearer, path SESSION, query (), body (), 200 (), [401, 403, 404]),
    op!("post" "/whip/c/{name}", "media", "WHIP with a channel's stream key as the bearer: publish on the channel", StreamKey,
        path CHANNEL, query (), body (), 201 (), [400, 401, 409, 413, 415, 503]),
    op!("delete" "/whip/c/{name}/{id}", "media", "WHIP: end a stream-key broadcast", StreamKey, path CHANNEL_SESSION, query (),
        body (), 200 (), [400, 401, 403, 404]),
    op!("post" "/whep", "media", "WHEP: play (SDP offer in, SDP answer out)", Bearer, path &[], query (), body (), 201 (),
        [400, 401, 403, 404, 413, 415, 503]),
    op!("delete" "/whep/{id}", "media", "WHEP: stop playing", Bearer, path SESSION, query (), body (), 200 (), [401, 403, 404]),
];

fn parameters(op: &Operation) -> Vec<Value> {
    let mut all: Vec<Value> = op
        .path_params
        .iter()
        .map(|(name, schema)| json!({ "name": name, "in": "path", "required": true, "schema": schema() }))
        .collect();
    if let Some(query) = op.query {
        all.extend(
            query()
                .fields
                .into_iter()
                .map(|f| json!({ "name": f.name, "in": "query", "required": f.required, "schema": f.schema })),
        );
    }
    if op.auth == Auth::Internal {
        all.push(json!({ "name": "x-internal-secret", "in": "header", "required": true, "schema": { "type": "string" } }));
    }
    all
}

/// The success envelope around `data`.
fn success(data: Schema) -> Value {
    json!({ "type": "object", "required": ["success", "data", "timestamp"], "properties": {
        "success": { "const": true }, "data": data, "message": { "type": "string" },
        "timestamp": { "type": "string", "format": "date-time" } } })
}

fn operation(op: &Operation, g: &mut SchemaGenerator) -> Value {
    let sdp = matches!(op.auth, Auth::Bearer | Auth::StreamKey) && op.method == "post";
    let mut responses = Map::new();
    let ok = match op.data {
        Some(data) => json!({ "description": "Success", "content": { "application/json": { "schema": success(data(g)) } } }),
        None if sdp => json!({ "description": "SDP answer; the session resource is in Location",
                "headers": { "Location": { "schema": { "type": "string" } } },
                "content": { "application/sdp": { "schema": { "type": "string" } } } }),
        None => json!({ "description": "Done" }),
    };
    responses.insert(op.success.to_string(), ok);
    for code in op.errors {
        responses.insert(
            code.to_string(),
            json!({ "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    let mut o = json!({
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}'], "_")),
        "parameters": parameters(op),
        "responses": responses,
        "security": match op.auth {
            Auth::None => json!([]),
            Auth::ApiKey | Auth::Internal => json!([{ "apiKey": [] }]),
            Auth::Bearer => json!([{ "participantToken": [] }]),
            Auth::StreamKey => json!([{ "streamKey": [] }]),
        },
    });
    if sdp {
        o["requestBody"] = json!({ "required": true, "content": { "application/sdp": { "schema": { "type": "string" } } } });
    } else if let Some(body) = op.body {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": body().object_schema() } } });
    }
    o
}

/// The OpenAPI document.
pub fn document() -> Value {
    // The views' schemas go under `components/schemas`, each once, referenced from the operations.
    let mut g = SchemaSettings::draft2020_12()
        .for_serialize()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for op in OPERATIONS {
        let entry = paths.entry(op.path.to_string()).or_insert_with(|| json!({}));
        entry[op.method] = operation(op, &mut g);
    }
    let mut schemas = g.take_definitions(true);
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "livestage",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Real-time streaming on Amazon IVS stages: tokens, presence, stats, stages, WHIP/WHEP. \
                            Live stats are pushed on the WebSocket /ws ({\"action\":\"subscribe\"} → stats_update).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": { "type": "apiKey", "in": "header", "name": "x-api-key" },
                "participantToken": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT (ES384)" },
                "streamKey": { "type": "http", "scheme": "bearer", "bearerFormat": "lsk_ + 40 characters" },
            },
            "schemas": schemas,
        },
    })
}

/// The error envelope.
fn error_schema() -> Value {
    json!({ "type": "object", "required": ["success", "error", "timestamp"], "properties": {
        "success": { "const": false },
        "error": { "type": "object", "required": ["code", "message"], "properties": {
            "code": { "type": "string", "enum": crate::api::ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>() },
            "message": { "type": "string" },
            "missingFields": { "type": "array", "items": { "type": "string" } },
            "invalidFields": { "type": "array", "items": { "type": "string" } } } },
        "timestamp": { "type": "string", "format": "date-time" } } })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value each documented field accepts: its example, its default, or the simplest of
    /// its type.
    fn valid(f: &crate::api::request::FieldDoc) -> Value {
        let s = &f.schema;
        match (s["examples"].get(0), s.get("default"), s["type"].as_str()) {
            (Some(example), _, _) => example.clone(),
            (None, Some(default), _) => default.clone(),
            (None, None, Some("object")) => json!({}),
            _ => json!("a"),
        }
    }

    /// What the document says of a request's fields is what its parser does: each required
    /// field left out is reported missing, and each text one character past its documented
    /// `maxLength` is refused while one at it is taken.
    fn document_matches_parser<T: FromFields>() {
        let doc = T::describe();
        assert!(!doc.fields.is_empty(), "{} reads no fields", std::any::type_name::<T>());
        let base: Map<String, Value> = doc.fields.iter().map(|f| (f.name.clone(), valid(f))).collect();
        T::from_fields(&base)
            .unwrap_or_else(|e| panic!("{}: the documented examples are refused: {}", std::any::type_name::<T>(), e.message()));
        for f in &doc.fields {
            let mut without = base.clone();
            without.remove(&f.name);
            let parsed = T::from_fields(&without);
            if f.required {
                let e = parsed.err().unwrap_or_else(|| panic!("{} is documented as required but may be left out", f.name));
                assert_eq!(e.missing_fields(), std::slice::from_ref(&f.name), "{}", e.message());
            } else if doc.at_least_one_of.is_empty() {
                assert!(parsed.is_ok(), "{} is documented as optional but is required", f.name);
            }
            let Some(max) = f.schema["maxLength"].as_u64().filter(|_| f.schema.get("examples").is_none()) else { continue };
            let mut at = base.clone();
            at.insert(f.name.clone(), json!("a".repeat(max as usize)));
            assert!(T::from_fields(&at).is_ok(), "{} of {max} characters is refused", f.name);
            at.insert(f.name.clone(), json!("a".repeat(max as usize + 1)));
            let e = T::from_fields(&at).err().unwrap_or_else(|| panic!("{} over {max} characters is taken", f.name));
            assert_eq!(e.invalid_fields(), std::slice::from_ref(&f.name));
        }
    }

    #[test]
    fn each_request_is_documented_as_its_parser_reads_it() {
        document_matches_parser::<ViewerTokenRequest>();
        document_matches_parser::<PublisherTokenRequest>();
        document_matches_parser::<MediaServerTokenRequest>();
        document_matches_parser::<PresenceRequest>();
        document_matches_parser::<RejoinRequest>();
        document_matches_parser::<HistoryQuery>();
        document_matches_parser::<ViewStatsQuery>();
        document_matches_parser::<StageStatsQuery>();
        document_matches_parser::<ChannelQuery>();
        document_matches_parser::<ChannelCreateRequest>();
        document_matches_parser::<ChannelUpdateRequest>();
        document_matches_parser::<StageCreateRequest>();
        document_matches_parser::<StageUpdateRequest>();
        document_matches_parser::<ReplicationRequest>();
    }

    #[test]
    fn a_body_is_documented_with_its_fields_constraints_and_a_reply_with_its_view() {
        let doc = document();
        let body = &doc["paths"]["/api/channels"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(body["required"], json!(["name"]));
        assert_eq!(body["properties"]["name"]["maxLength"], ChannelId::MAX_LEN);
        assert_eq!(body["properties"]["name"]["pattern"], "^[a-z0-9]+(-[a-z0-9]+)*$");
        assert_eq!(body["properties"]["title"]["anyOf"][0]["maxLength"], crate::api::request::MAX_CHANNEL_TITLE);
        let update = &doc["paths"]["/api/stage/{stageArn}"]["put"]["requestBody"]["content"]["application/json"]["schema"];
        let given = json!({ "not": { "type": "null" } });
        assert_eq!(
            update["anyOf"],
            json!([{ "required": ["name"], "properties": { "name": given } }, { "required": ["tags"], "properties": { "tags": given } }])
        );
        let limit = doc["paths"]["/api/viewer/history/{userId}"]["get"]["parameters"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(limit["schema"], json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 10 }));
        let ok = &doc["paths"]["/api/token/viewer"]["post"]["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(ok["properties"]["data"]["$ref"], "#/components/schemas/ViewerTokenView");
        let view = &doc["components"]["schemas"]["ViewerTokenView"];
        assert!(view["required"].as_array().is_some_and(|r| r.contains(&json!("participantId"))), "{view}");
        assert!(!view["required"].as_array().is_some_and(|r| r.contains(&json!("whepEndpoint"))), "skipped when absent: {view}");
        // every reference resolves
        let text = doc.to_string();
        for name in text.split("#/components/schemas/").skip(1).map(|s| s.split('"').next().unwrap_or_default()) {
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name} is referenced but not defined");
        }
    }
}
