//! A fake of the Amazon IVS Real-Time HTTP API (restJson1: `POST /<Operation>` with a JSON
//! body), holding stages, public keys, participants and replications in memory and recording
//! every call it receives, so tests can assert the exact operations and parameters the server
//! sent. Faults can be switched on: throttling, a failing service, a service that never answers.
//!
//! `/_fake/*` routes let a test act as the media side of IVS (participants joining, publishing,
//! leaving) and read the fake's state; the end-to-end tests run it as `cargo run --example
//! fake-ivs` and drive it over HTTP.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub const REGION: &str = "eu-west-1";
pub const ACCOUNT: &str = "123456789012";
pub const WHIP_URL: &str = "https://f99084460c35.global-bm.whip.live-video.net";
pub const EVENTS_URL: &str = "wss://global.events.live-video.net";

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub op: String,
    pub body: Value,
    /// When the fake received it.
    pub at: std::time::Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Every call answers 503 InternalServerException.
    Failing,
    /// Every call waits far longer than any client timeout.
    Hanging,
}

#[derive(Default)]
pub struct IvsState {
    pub calls: Vec<Call>,
    pub stages: BTreeMap<String, Value>,
    pub keys: Vec<Value>,
    /// Participants per stage ARN (in the stage's active session).
    pub participants: BTreeMap<String, Vec<Value>>,
    /// Active replications: (source ARN, destination ARN, participant id, reconnect window).
    pub replications: Vec<(String, String, String, i64)>,
    /// The next this-many calls are throttled (429 ThrottlingException).
    pub throttle_next: u32,
    pub fault: Option<Fault>,
    next_id: u64,
}

impl IvsState {
    fn id(&mut self, len: usize) -> String {
        self.next_id += 1;
        format!("{:0>len$}", format!("fk{}", self.next_id), len = len)
    }
}

#[derive(Clone)]
pub struct FakeIvs {
    pub url: String,
    state: Arc<Mutex<IvsState>>,
}

impl FakeIvs {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        let state = Arc::new(Mutex::new(IvsState::default()));
        let app = Router::new()
            .route("/{op}", post(handle))
            .route("/_fake/connect", post(control_connect))
            .route("/_fake/disconnect", post(control_disconnect))
            .route("/_fake/state", get(control_state))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind fake IVS");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    pub fn state(&self) -> MutexGuard<'_, IvsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls to `op`, in order.
    pub fn calls_to(&self, op: &str) -> Vec<Value> {
        self.state().calls.iter().filter(|c| c.op == op).map(|c| c.body.clone()).collect()
    }

    /// The operation names called so far, in order, without the liveness polls.
    pub fn ops(&self) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter(|c| !matches!(c.op.as_str(), "GetStage" | "ListParticipants" | "ListStages"))
            .map(|c| c.op.clone())
            .collect()
    }

    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        self.state().fault = fault;
    }

    pub fn throttle_next(&self, n: u32) {
        self.state().throttle_next = n;
    }

    /// A participant connects to `stage_arn` (starting a session if none is active) and,
    /// if `published`, publishes. Returns its participant id.
    pub fn connect_participant(&self, stage_arn: &str, user_id: &str, published: bool) -> String {
        let mut s = self.state();
        let pid = s.id(12);
        connect(&mut s, stage_arn, user_id, published, &pid);
        pid
    }

    /// Like [`FakeIvs::connect_participant`] with a given participant id (a publisher that
    /// reconnects with the same token keeps its id).
    pub fn connect_participant_as(&self, stage_arn: &str, user_id: &str, participant_id: &str) {
        connect(&mut self.state(), stage_arn, user_id, true, participant_id);
    }

    /// The participant leaves; the session ends when nobody is left.
    pub fn disconnect_participant(&self, stage_arn: &str, participant_id: &str) {
        disconnect(&mut self.state(), stage_arn, participant_id)
    }
}

fn connect(s: &mut IvsState, stage_arn: &str, user_id: &str, published: bool, pid: &str) {
    let active = s.stages.get(stage_arn).and_then(|st| st["activeSessionId"].as_str()).is_some_and(|a| !a.is_empty());
    if !active {
        let session = format!("st-{}", s.id(12));
        if let Some(st) = s.stages.get_mut(stage_arn) {
            st["activeSessionId"] = json!(session);
        }
    }
    // Later connections join later.
    s.next_id += 1;
    let n = s.next_id % 3600;
    s.participants.entry(stage_arn.to_string()).or_default().push(json!({
        "participantId": pid,
        "userId": user_id,
        "state": "CONNECTED",
        "firstJoinTime": format!("2026-11-24T10:{:02}:{:02}Z", n / 60, n % 60),
        "published": published,
        "replicationType": "NONE",
        "replicationState": "ACTIVE",
    }));
}

fn disconnect(s: &mut IvsState, stage_arn: &str, participant_id: &str) {
    let mut empty = false;
    if let Some(ps) = s.participants.get_mut(stage_arn) {
        for p in ps.iter_mut().filter(|p| p["participantId"] == participant_id) {
            p["state"] = json!("DISCONNECTED");
        }
        empty = ps.iter().all(|p| p["state"] == "DISCONNECTED");
    }
    if empty {
        s.participants.remove(stage_arn);
        if let Some(st) = s.stages.get_mut(stage_arn) {
            st["activeSessionId"] = json!("");
        }
    }
}

type Shared = State<Arc<Mutex<IvsState>>>;

fn lock(state: &Arc<Mutex<IvsState>>) -> MutexGuard<'_, IvsState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// `POST /_fake/connect {stageArn, userId, published}` → `{participantId}`.
async fn control_connect(State(state): Shared, Json(body): Json<Value>) -> Response {
    let (Some(arn), Some(user)) = (str_field(&body, "stageArn"), str_field(&body, "userId")) else {
        return validation("stageArn and userId are required");
    };
    let mut s = lock(&state);
    if !s.stages.contains_key(arn) {
        return not_found("stage");
    }
    let pid = s.id(12);
    connect(&mut s, arn, user, body["published"].as_bool().unwrap_or(true), &pid);
    Json(json!({ "participantId": pid })).into_response()
}

/// `POST /_fake/disconnect {stageArn, participantId}`; without a participant id, everyone leaves.
async fn control_disconnect(State(state): Shared, Json(body): Json<Value>) -> Response {
    let Some(arn) = str_field(&body, "stageArn") else { return validation("stageArn is required") };
    let mut s = lock(&state);
    let ids: Vec<String> = match str_field(&body, "participantId") {
        Some(pid) => vec![pid.to_string()],
        None => s
            .participants
            .get(arn)
            .map(|ps| ps.iter().filter_map(|p| p["participantId"].as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
    };
    for pid in ids {
        disconnect(&mut s, arn, &pid);
    }
    Json(json!({})).into_response()
}

/// `GET /_fake/state`: stages, keys, participants, replications and the operations called.
async fn control_state(State(state): Shared) -> Response {
    let s = lock(&state);
    Json(json!({
        "stages": s.stages.values().collect::<Vec<_>>(),
        "keys": s.keys,
        "participants": s.participants,
        "replications": s.replications,
        "ops": s.calls.iter().map(|c| c.op.as_str()).collect::<Vec<_>>(),
    }))
    .into_response()
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-errortype", kind.parse().expect("header"));
    (StatusCode::from_u16(status).expect("status"), headers, Json(json!({ "message": message, "exceptionMessage": message })))
        .into_response()
}

fn not_found(what: &str) -> Response {
    error(404, "ResourceNotFoundException", &format!("{what} not found"))
}

fn validation(message: &str) -> Response {
    error(400, "ValidationException", message)
}

async fn handle(State(state): State<Arc<Mutex<IvsState>>>, Path(op): Path<String>, body: Bytes) -> Response {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return validation("body is not JSON"),
        }
    };
    let fault = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.calls.push(Call { op: op.clone(), body: body.clone(), at: std::time::Instant::now() });
        if s.throttle_next > 0 {
            s.throttle_next -= 1;
            return error(429, "ThrottlingException", "Rate exceeded");
        }
        s.fault
    };
    match fault {
        Some(Fault::Failing) => return error(503, "InternalServerException", "service unavailable"),
        Some(Fault::Hanging) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return error(504, "InternalServerException", "too late");
        }
        None => {}
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    operation(&mut s, &op, &body)
}

fn str_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body[name].as_str().filter(|v| !v.is_empty())
}

fn operation(s: &mut IvsState, op: &str, body: &Value) -> Response {
    match op {
        "CreateStage" => {
            let name = body["name"].as_str().unwrap_or_default();
            if name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return validation("invalid stage name");
            }
            let id = s.id(12);
            let arn = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:stage/{id}");
            let stage = json!({
                "arn": arn,
                "name": name,
                "activeSessionId": "",
                "tags": body.get("tags").cloned().unwrap_or(json!({})),
                "endpoints": { "events": EVENTS_URL, "whip": WHIP_URL, "rtmp": "rtmp://f99084460c35.global-contribute-staging.live-video.net/app/", "rtmps": "rtmps://f99084460c35.global-contribute-staging.live-video.net:443/app/" },
            });
            s.stages.insert(arn, stage.clone());
            Json(json!({ "stage": stage, "participantTokens": [] })).into_response()
        }
        "GetStage" => match str_field(body, "arn").and_then(|a| s.stages.get(a)) {
            Some(stage) => Json(json!({ "stage": stage })).into_response(),
            None => not_found("stage"),
        },
        "UpdateStage" => {
            let name = body["name"].as_str().map(str::to_string);
            match str_field(body, "arn").and_then(|a| s.stages.get_mut(a)) {
                Some(stage) => {
                    if let Some(n) = name {
                        stage["name"] = json!(n);
                    }
                    Json(json!({ "stage": stage.clone() })).into_response()
                }
                None => not_found("stage"),
            }
        }
        "DeleteStage" => {
            let Some(arn) = str_field(body, "arn").map(str::to_string) else { return validation("arn is required") };
            if s.replications.iter().any(|r| r.1 == arn) {
                return error(409, "ConflictException", "stage has an active participant replication");
            }
            match s.stages.remove(&arn) {
                Some(_) => {
                    s.participants.remove(&arn);
                    Json(json!({})).into_response()
                }
                None => not_found("stage"),
            }
        }
        "ListStages" => {
            let max = body["maxResults"].as_u64().unwrap_or(50) as usize;
            let start: usize = body["nextToken"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
            let all: Vec<Value> = s
                .stages
                .values()
                .map(|st| json!({ "arn": st["arn"], "name": st["name"], "activeSessionId": st["activeSessionId"], "tags": st["tags"] }))
                .collect();
            let page: Vec<Value> = all.iter().skip(start).take(max).cloned().collect();
            let mut out = json!({ "stages": page });
            if start + max < all.len() {
                out["nextToken"] = json!((start + max).to_string());
            }
            Json(out).into_response()
        }
        "CreateParticipantToken" => {
            let Some(arn) = str_field(body, "stageArn") else { return validation("stageArn is required") };
            if !s.stages.contains_key(arn) {
                return not_found("stage");
            }
            let duration = body["duration"].as_i64().unwrap_or(720);
            if !(1..=20_160).contains(&duration) {
                return validation("duration must be 1 to 20160 minutes");
            }
            let pid = s.id(12);
            let expires = chrono_like(duration * 60);
            Json(json!({ "participantToken": {
                "participantId": pid,
                "token": format!("ivs-token-{pid}"),
                "userId": body["userId"],
                "attributes": body.get("attributes").cloned().unwrap_or(json!({})),
                "duration": duration,
                "capabilities": body.get("capabilities").cloned().unwrap_or(json!(["PUBLISH", "SUBSCRIBE"])),
                "expirationTime": expires,
            }}))
            .into_response()
        }
        "ListParticipants" => {
            let Some(arn) = str_field(body, "stageArn") else { return validation("stageArn is required") };
            let Some(stage) = s.stages.get(arn) else { return not_found("stage") };
            let active = stage["activeSessionId"].as_str().unwrap_or_default();
            if active.is_empty() || body["sessionId"].as_str() != Some(active) {
                return not_found("session");
            }
            let published_only = body["filterByPublished"].as_bool().unwrap_or(false);
            let all: Vec<Value> = s
                .participants
                .get(arn)
                .map(|ps| ps.iter().filter(|p| !published_only || p["published"] == true).cloned().collect())
                .unwrap_or_default();
            let max = body["maxResults"].as_u64().unwrap_or(50).clamp(1, 100) as usize;
            let start: usize = body["nextToken"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
            let mut out = json!({ "participants": all.iter().skip(start).take(max).collect::<Vec<_>>() });
            if start + max < all.len() {
                out["nextToken"] = json!((start + max).to_string());
            }
            Json(out).into_response()
        }
        "StartParticipantReplication" => {
            let (Some(src), Some(dst), Some(pid)) =
                (str_field(body, "sourceStageArn"), str_field(body, "destinationStageArn"), str_field(body, "participantId"))
            else {
                return validation("sourceStageArn, destinationStageArn and participantId are required");
            };
            if !s.stages.contains_key(src) || !s.stages.contains_key(dst) {
                return not_found("stage");
            }
            let window = body["reconnectWindowSeconds"].as_i64().unwrap_or(0);
            if !(0..=60).contains(&window) {
                return validation("reconnectWindowSeconds must be 0 to 60");
            }
            if s.replications.iter().any(|r| r.1 == dst && r.2 == pid) {
                return error(409, "ConflictException", "already replicating");
            }
            s.replications.push((src.into(), dst.into(), pid.into(), window));
            Json(json!({})).into_response()
        }
        "StopParticipantReplication" => {
            let (src, dst, pid) =
                (str_field(body, "sourceStageArn"), str_field(body, "destinationStageArn"), str_field(body, "participantId"));
            let before = s.replications.len();
            s.replications.retain(|r| !(Some(r.0.as_str()) == src && Some(r.1.as_str()) == dst && Some(r.2.as_str()) == pid));
            if s.replications.len() == before {
                return not_found("replication");
            }
            Json(json!({})).into_response()
        }
        "ImportPublicKey" => {
            let material = body["publicKeyMaterial"].as_str().unwrap_or_default();
            if !material.contains("BEGIN PUBLIC KEY") {
                return validation("publicKeyMaterial must be a PEM public key");
            }
            let id = s.id(12);
            let key = json!({
                "arn": format!("arn:aws:ivs:{REGION}:{ACCOUNT}:public-key/{id}"),
                "name": body["name"],
                "publicKeyMaterial": material,
                "fingerprint": id,
                "tags": body.get("tags").cloned().unwrap_or(json!({})),
            });
            s.keys.push(key.clone());
            Json(json!({ "publicKey": key })).into_response()
        }
        "ListPublicKeys" => {
            let list: Vec<Value> =
                s.keys.iter().map(|k| json!({ "arn": k["arn"], "name": k["name"], "tags": k["tags"] })).collect();
            Json(json!({ "publicKeys": list })).into_response()
        }
        "DeletePublicKey" => {
            let arn = body["arn"].as_str().unwrap_or_default().to_string();
            let before = s.keys.len();
            s.keys.retain(|k| k["arn"] != arn.as_str());
            if s.keys.len() == before {
                return not_found("public key");
            }
            Json(json!({})).into_response()
        }
        other => error(400, "UnknownOperationException", &format!("unknown operation {other}")),
    }
}

/// Now plus `secs`, as IVS writes timestamps (ISO 8601, UTC).
fn chrono_like(secs: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    crate::server::time::iso((now + secs) * 1000)
}
