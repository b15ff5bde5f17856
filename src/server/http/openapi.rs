//! The public contract as an OpenAPI 3.1 document, served at `/api/openapi.json`.
//!
//! [`OPERATIONS`] describes every route the REST router serves (a test checks the two agree,
//! route by route); the document is built from it.

use serde_json::{json, Map, Value};

/// A body, query or path field.
pub struct Field {
    pub name: &'static str,
    pub kind: &'static str,
    pub required: bool,
}

const fn f(name: &'static str, kind: &'static str) -> Field {
    Field { name, kind, required: true }
}

const fn opt(name: &'static str, kind: &'static str) -> Field {
    Field { name, kind, required: false }
}

pub struct Operation {
    pub method: &'static str,
    /// OpenAPI path template (`{stageArn}` is the whole rest of the path, slashes included).
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub path_params: &'static [Field],
    pub query: &'static [Field],
    pub body: &'static [Field],
    pub success: u16,
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

const ARN: &[Field] = &[f("stageArn", "string")];
const USER: &[Field] = &[f("userId", "string")];
const PRESENCE: &[Field] = &[f("userId", "string"), f("stageArn", "string")];
const BEAT: &[Field] = &[f("userId", "string"), f("stageArn", "string"), opt("participantId", "string")];
const REPLICATION: &[Field] = &[f("sourceStageArn", "string"), f("destinationStageArn", "string"), f("participantId", "string")];
const SESSION: &[Field] = &[f("id", "string")];
const CHANNEL: &[Field] = &[f("name", "string")];
const CHANNEL_SESSION: &[Field] = &[f("name", "string"), f("id", "string")];
const CHANNEL_QUERY: &[Field] = &[opt("channel", "string")];

macro_rules! op {
    ($m:literal $p:literal, $tag:literal, $sum:literal, $auth:ident, path $pp:expr, query $q:expr, body $b:expr, $ok:literal, [$($e:literal),*]) => {
        Operation { method: $m, path: $p, tag: $tag, summary: $sum, auth: Auth::$auth, path_params: $pp, query: $q, body: $b, success: $ok, errors: &[$($e),*] }
    };
}

pub const OPERATIONS: &[Operation] = &[
    op!("get" "/api/health", "health", "Service health", None, path &[], query &[], body &[], 200, [503]),
    op!("post" "/api/token/viewer", "tokens", "Viewer token and stage assignment", ApiKey, path &[], query &[],
        body &[f("userId", "string"), opt("stageArn", "string"), opt("channel", "string")], 200, [400, 401, 404, 429, 503]),
    op!("post" "/api/token/publisher", "tokens", "Publisher token on a channel's master stage", ApiKey, path &[], query &[],
        body &[f("userId", "string"), opt("channel", "string")], 200, [400, 401, 404, 429]),
    op!("post" "/api/token/mediaserver", "tokens", "Publish+subscribe token for an internal media server", Internal, path &[], query &[],
        body &[f("serverId", "string"), f("stageArn", "string")], 200, [400, 401, 403]),
    op!("post" "/api/viewer/heartbeat", "viewers", "Viewer heartbeat (every 30 s)", ApiKey, path &[], query &[], body BEAT, 200, [400, 401, 404]),
    op!("post" "/api/viewer/leave", "viewers", "Viewer leaves (idempotent)", ApiKey, path &[], query &[], body BEAT, 200, [400, 401]),
    op!("post" "/api/viewer/rejoin", "viewers", "Viewer rejoins after a reconnect", ApiKey, path &[], query &[],
        body &[f("userId", "string"), f("stageArn", "string"), f("participantId", "string")], 200, [400, 401, 404, 503]),
    op!("get" "/api/viewer/list/{stageArn}", "viewers", "Viewers present on a stage", ApiKey, path ARN, query &[], body &[], 200, [400, 401, 404]),
    op!("get" "/api/viewer/duration", "viewers", "Watch time of a viewer on a stage", ApiKey, path &[], query PRESENCE, body &[], 200, [400, 401, 404]),
    op!("get" "/api/viewer/history/{userId}", "viewers", "Watch history of a viewer", ApiKey, path USER,
        query &[opt("limit", "integer")], body &[], 200, [400, 401]),
    op!("get" "/api/viewer/stats/{stageArn}", "viewers", "Viewing statistics of a stage", ApiKey, path ARN,
        query &[opt("days", "integer")], body &[], 200, [400, 401, 404]),
    op!("get" "/api/stats", "stats", "A channel's live totals", ApiKey, path &[], query CHANNEL_QUERY, body &[], 200, [400, 401, 404]),
    op!("get" "/api/stats/viewers", "stats", "A channel's total viewers", ApiKey, path &[], query CHANNEL_QUERY, body &[], 200, [400, 401, 404]),
    op!("get" "/api/stats/stages", "stats", "Per-stage viewer counts of a channel", ApiKey, path &[],
        query &[opt("arn", "string"), opt("channel", "string")], body &[], 200, [400, 401, 404]),
    op!("get" "/api/stats/publisher", "stats", "Whether a channel's publisher is live", ApiKey, path &[], query CHANNEL_QUERY, body &[], 200, [400, 401, 404]),
    op!("get" "/api/channels", "channels", "Every channel, live ones first, with the totals", ApiKey, path &[], query &[], body &[], 200, [401]),
    op!("post" "/api/channels", "channels", "Create a channel: its master stage and stream key", ApiKey, path &[], query &[],
        body &[f("name", "string"), opt("title", "string"), opt("description", "string")], 201, [400, 401, 409, 503]),
    op!("get" "/api/channels/{name}", "channels", "A channel", ApiKey, path CHANNEL, query &[], body &[], 200, [400, 401, 404]),
    op!("put" "/api/channels/{name}", "channels", "Change a channel's title or description", ApiKey, path CHANNEL, query &[],
        body &[opt("title", "string"), opt("description", "string")], 200, [400, 401, 404]),
    op!("delete" "/api/channels/{name}", "channels", "Delete a channel and its stages", ApiKey, path CHANNEL, query &[], body &[], 200, [400, 401, 403, 404]),
    op!("post" "/api/channels/{name}/stream-key", "channels", "Replace a channel's stream key", ApiKey, path CHANNEL, query &[], body &[], 200, [400, 401, 404]),
    op!("post" "/api/stage", "stages", "Create a stage", ApiKey, path &[], query &[],
        body &[f("name", "string"), opt("tags", "object")], 201, [400, 401, 503]),
    op!("get" "/api/stage/list", "stages", "List stages", ApiKey, path &[], query &[], body &[], 200, [401]),
    op!("get" "/api/stage/master/info", "stages", "A channel's master stage", ApiKey, path &[], query CHANNEL_QUERY, body &[], 200, [400, 401, 404]),
    op!("get" "/api/stage/{stageArn}", "stages", "A stage", ApiKey, path ARN, query &[], body &[], 200, [400, 401, 404]),
    op!("put" "/api/stage/{stageArn}", "stages", "Rename or retag a stage", ApiKey, path ARN, query &[],
        body &[opt("name", "string"), opt("tags", "object")], 200, [400, 401, 404]),
    op!("delete" "/api/stage/{stageArn}", "stages", "Delete a stage", ApiKey, path ARN, query &[], body &[], 200, [400, 401, 403, 404]),
    op!("post" "/api/stage/replication/start", "stages", "Replicate a participant into another stage", ApiKey, path &[], query &[],
        body REPLICATION, 200, [400, 401, 404]),
    op!("delete" "/api/stage/replication/stop", "stages", "Stop a participant replication", ApiKey, path &[], query &[],
        body REPLICATION, 200, [400, 401, 404]),
    op!("get" "/api/stage/replication/status/{stageArn}", "stages", "Replications of a stage", ApiKey, path ARN, query &[], body &[], 200, [400, 401, 404]),
    op!("post" "/whip", "media", "WHIP: publish (SDP offer in, SDP answer out)", Bearer, path &[], query &[], body &[], 201, [400, 401, 403, 409, 413, 415, 503]),
    op!("delete" "/whip/{id}", "media", "WHIP: end the broadcast", Bearer, path SESSION, query &[], body &[], 200, [401, 403, 404]),
    op!("post" "/whip/c/{name}", "media", "WHIP with a channel's stream key as the bearer: publish on the channel", StreamKey,
        path CHANNEL, query &[], body &[], 201, [400, 401, 409, 413, 415, 503]),
    op!("delete" "/whip/c/{name}/{id}", "media", "WHIP: end a stream-key broadcast", StreamKey, path CHANNEL_SESSION, query &[],
        body &[], 200, [400, 401, 403, 404]),
    op!("post" "/whep", "media", "WHEP: play (SDP offer in, SDP answer out)", Bearer, path &[], query &[], body &[], 201, [400, 401, 403, 404, 413, 415, 503]),
    op!("delete" "/whep/{id}", "media", "WHEP: stop playing", Bearer, path SESSION, query &[], body &[], 200, [401, 403, 404]),
];

fn schema_of(fields: &[Field]) -> Value {
    let props: Map<String, Value> = fields.iter().map(|f| (f.name.to_string(), json!({ "type": f.kind }))).collect();
    let required: Vec<&str> = fields.iter().filter(|f| f.required).map(|f| f.name).collect();
    json!({ "type": "object", "properties": props, "required": required })
}

fn parameters(op: &Operation) -> Vec<Value> {
    let place = |fields: &[Field], at: &str| -> Vec<Value> {
        fields
            .iter()
            .map(|f| json!({ "name": f.name, "in": at, "required": f.required || at == "path", "schema": { "type": f.kind } }))
            .collect()
    };
    let mut all = place(op.path_params, "path");
    all.extend(place(op.query, "query"));
    if op.auth == Auth::Internal {
        all.push(json!({ "name": "x-internal-secret", "in": "header", "required": true, "schema": { "type": "string" } }));
    }
    all
}

fn operation(op: &Operation) -> Value {
    let sdp = matches!(op.auth, Auth::Bearer | Auth::StreamKey);
    let mut responses = Map::new();
    let ok = if sdp && op.method == "post" {
        json!({ "description": "SDP answer; the session resource is in Location",
                "headers": { "Location": { "schema": { "type": "string" } } },
                "content": { "application/sdp": { "schema": { "type": "string" } } } })
    } else {
        json!({ "description": "Success", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Success" } } } })
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
    if sdp && op.method == "post" {
        o["requestBody"] = json!({ "required": true, "content": { "application/sdp": { "schema": { "type": "string" } } } });
    } else if !op.body.is_empty() {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema_of(op.body) } } });
    }
    o
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in OPERATIONS {
        let entry = paths.entry(op.path.to_string()).or_insert_with(|| json!({}));
        entry[op.method] = operation(op);
    }
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
            "schemas": {
                "Success": { "type": "object", "required": ["success", "data", "timestamp"], "properties": {
                    "success": { "const": true }, "data": {}, "message": { "type": "string" },
                    "timestamp": { "type": "string", "format": "date-time" } } },
                "Error": { "type": "object", "required": ["success", "error", "timestamp"], "properties": {
                    "success": { "const": false },
                    "error": { "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string", "enum": crate::api::ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>() },
                        "message": { "type": "string" },
                        "missingFields": { "type": "array", "items": { "type": "string" } },
                        "invalidFields": { "type": "array", "items": { "type": "string" } } } },
                    "timestamp": { "type": "string", "format": "date-time" } } },
            },
        },
    })
}
