//! Amazon IVS Real-Time stages through `aws-sdk-ivsrealtime`.
//!
//! - Stages are created, read, renamed and deleted through the IVS API; the service tags the
//!   ones it creates and touches no others.
//! - Participant tokens are ES384 JWTs signed here by default: the key pair lives in the data
//!   dir, its public half is registered once with `ImportPublicKey`, and its ARN is the `kid`.
//!   `token_mode = "api"` asks `CreateParticipantToken` instead.
//! - The publisher is live while a participant that has published is connected to the master
//!   stage's active session (`GetStage` + `ListParticipants`, polled).
//! - Every call is paced to its IVS quota class, retried with jittered backoff on throttling and
//!   server errors, bounded by a timeout, and guarded by a circuit breaker: while IVS fails,
//!   calls fail fast with [`BackendError::Unavailable`] and `/health` reports "degraded".
//!
//! No AWS type leaves this module.

use super::guard::{Breaker, BreakerState, Pacer};
use super::jwt::TokenSigner;
use super::{
    BackendCapabilities, BackendError, CreatedStage, IssuedToken, ListedStage, Playback, Replication, StageBackend, TokenRequest,
};
use crate::domain::{ChannelId, LivePublisher, LivePublishers, ParticipantId, StageArn};
use crate::server::config::{BackendKind, IvsSettings, TokenMode};
use async_trait::async_trait;
use aws_sdk_ivsrealtime::config::http::HttpResponse;
use aws_sdk_ivsrealtime::config::retry::RetryConfig;
use aws_sdk_ivsrealtime::config::timeout::TimeoutConfig;
use aws_sdk_ivsrealtime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ivsrealtime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ivsrealtime::types::{ParticipantState, ParticipantTokenCapability, ReplicationType, StageEndpoints};
use aws_sdk_ivsrealtime::Client;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const KEY_FILE: &str = "ivs-signing-key.pem";
pub const KEY_ARN_FILE: &str = "ivs-signing-key.arn";

/// Error codes IVS (and AWS generally) use for throttling.
const THROTTLING: &[&str] = &["ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"];

pub struct IvsBackend {
    client: Client,
    region: String,
    token_mode: TokenMode,
    /// The self-signed token signer, once its key is registered with IVS ([`StageBackend::prepare`]).
    signer: OnceLock<Arc<TokenSigner>>,
    /// Where the signing key and its ARN are kept.
    data_dir: PathBuf,
    reconnect_window_secs: i32,
    poll_interval: Duration,
    /// Who publishes on each channel's master stage, as the last polls found.
    publisher: watch::Sender<LivePublishers>,
    /// Each master stage's active session (by stage ARN), cached between polls.
    sessions: Mutex<BTreeMap<String, String>>,
    stage_calls: Pacer,
    /// The share of `stage_calls` that liveness polling may take (see [`POLL_SHARE`]).
    poll_calls: Pacer,
    token_calls: Pacer,
    key_calls: Pacer,
    breaker: Breaker,
}

/// The share of the stage-operation quota that publisher liveness polling may take, so that
/// stage creation, replication and reconciliation always find free slots. Polling takes one
/// call per channel (its master stage's participants; a `GetStage` first when the stage's
/// session is not known), so with `N` channels a change is seen within
/// `IVS_POLL_INTERVAL_MS + 2·N / (POLL_SHARE · stage_tps)` plus the calls' own latency: 12 s
/// for 20 channels at 5 TPS with the default 2-second interval.
pub const POLL_SHARE: f64 = 0.8;

/// Builds an IVS client for `region` from the standard AWS chain and the `[ivs]` settings.
pub async fn client(region: &str, ivs: &IvsSettings) -> Client {
    let retry = RetryConfig::standard()
        .with_max_attempts(ivs.max_attempts)
        .with_initial_backoff(Duration::from_millis(ivs.retry_base_ms))
        .with_max_backoff(Duration::from_millis(ivs.timeout_ms));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(ivs.timeout_ms.min(3_000)))
        .operation_attempt_timeout(Duration::from_millis(ivs.timeout_ms))
        .operation_timeout(Duration::from_millis(ivs.timeout_ms))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some((id, secret)) = &ivs.static_credentials {
        loader = loader.credentials_provider(Credentials::new(id, secret.expose(), None, None, "settings"));
    }
    if let Some(url) = &ivs.endpoint_url {
        loader = loader.endpoint_url(&**url);
    }
    Client::new(&loader.load().await)
}

impl IvsBackend {
    /// A backend on the IVS stages of `region`, keeping its signing key in `data_dir`; it calls
    /// IVS only once used: in self-signed mode [`StageBackend::prepare`] registers the key.
    pub async fn new(region: &str, ivs: &IvsSettings, data_dir: &Path) -> Self {
        let mut backend = Self::unregistered(region, ivs, data_dir).await;
        backend.token_mode = ivs.token_mode;
        backend
    }

    /// The data dir's signing key with its IVS public-key ARN as `kid`: registered on first
    /// use (or found again by name if an earlier run registered it but lost the ARN file).
    async fn registered_signer(&self, data_dir: &Path) -> Result<TokenSigner, BackendError> {
        let key_path = data_dir.join(KEY_FILE);
        let signer =
            TokenSigner::load_or_create(&key_path).map_err(|e| BackendError::Failed(format!("{}: {e}", key_path.display())))?;
        let arn_path = data_dir.join(KEY_ARN_FILE);
        let name = key_name(&signer);
        match read_arn_file(&arn_path) {
            // The ARN is only trusted for the key it was registered for.
            Some((arn, recorded)) if recorded.as_deref().is_none_or(|r| r == name) => return Ok(signer.with_kid(arn)),
            Some(_) => tracing::warn!("{} names another key; looking this one up", arn_path.display()),
            None => {}
        }
        let arn = self.import_key(&signer).await?;
        write_arn_file(&arn_path, &arn, &name)?;
        tracing::info!(key = %arn, "registered the token signing key with IVS");
        Ok(signer.with_kid(arn))
    }

    /// Registers `signer`'s public key (named after its fingerprint); returns the key's ARN.
    pub async fn import_key(&self, signer: &TokenSigner) -> Result<String, BackendError> {
        let name = key_name(signer);
        if let Some(arn) = self.find_key(&name).await? {
            return Ok(arn);
        }
        let out = self
            .call(&self.key_calls, "ImportPublicKey", || {
                self.client
                    .import_public_key()
                    .name(&name)
                    .public_key_material(signer.public_key_pem())
                    .tags(super::MANAGED_BY_TAG.0, super::MANAGED_BY_TAG.1)
                    .send()
            })
            .await?;
        out.public_key()
            .and_then(|k| k.arn())
            .map(str::to_string)
            .ok_or_else(|| BackendError::Failed("ImportPublicKey returned no ARN".into()))
    }

    async fn find_key(&self, name: &str) -> Result<Option<String>, BackendError> {
        let mut next: Option<String> = None;
        for _ in 0..100 {
            let out = self
                .call(&self.key_calls, "ListPublicKeys", || {
                    self.client.list_public_keys().max_results(100).set_next_token(next.clone()).send()
                })
                .await?;
            if let Some(k) = out.public_keys().iter().find(|k| k.name() == Some(name)) {
                return Ok(k.arn().map(str::to_string));
            }
            next = next_page(out.next_token());
            if next.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// Unregisters a public key (after a rotation, once tokens signed with it have expired).
    pub async fn delete_key(&self, arn: &str) -> Result<(), BackendError> {
        match self.call(&self.key_calls, "DeletePublicKey", || self.client.delete_public_key().arn(arn).send()).await {
            Ok(_) | Err(BackendError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs one IVS call: circuit breaker, quota pacing, and error mapping.
    async fn call<T, E, F, Fut>(&self, pacer: &Pacer, op: &'static str, f: F) -> Result<T, BackendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if !self.breaker.permit(Instant::now()) {
            return Err(BackendError::Unavailable(format!("{op}: IVS is failing; calls are paused")));
        }
        if let Err(queue) = pacer.acquire().await {
            self.breaker.abandon();
            return Err(BackendError::Unavailable(format!("{op}: over the IVS request quota ({} ms queued)", queue.as_millis())));
        }
        match f().await {
            Ok(v) => {
                self.breaker.succeeded();
                Ok(v)
            }
            Err(e) => {
                let (error, outage) = classify(op, &e);
                if outage {
                    self.breaker.failed(Instant::now());
                } else {
                    self.breaker.succeeded();
                }
                tracing::warn!(op, error = %DisplayErrorContext(&e), "IVS call failed");
                Err(error)
            }
        }
    }

    async fn api_token(&self, req: &TokenRequest<'_>) -> Result<IssuedToken, BackendError> {
        // IVS counts token lifetimes in minutes (1 to 20160); round up so a token never
        // expires before the lifetime that was asked for.
        let minutes = ((req.duration_secs + 59) / 60).clamp(1, 20_160) as i32;
        let mut caps = Vec::new();
        if req.capabilities.publish {
            caps.push(ParticipantTokenCapability::Publish);
        }
        if req.capabilities.subscribe {
            caps.push(ParticipantTokenCapability::Subscribe);
        }
        let out = self
            .call(&self.token_calls, "CreateParticipantToken", || {
                self.client
                    .create_participant_token()
                    .stage_arn(req.stage_arn)
                    .duration(minutes)
                    .user_id(req.user_id)
                    .set_attributes(Some(req.attributes.clone().into_iter().collect()))
                    .set_capabilities(Some(caps))
                    .send()
            })
            .await?;
        let t = out.participant_token().ok_or_else(|| BackendError::Failed("no participantToken".into()))?;
        let token = t.token().ok_or_else(|| BackendError::Failed("no token".into()))?.to_string();
        let participant_id = t.participant_id().unwrap_or_default().to_string();
        // The token lives at least as long as asked (minutes rounded up); report that lifetime
        // on this server's clock, as the contract counts it.
        Ok(IssuedToken { token, participant_id, expires_at_ms: req.now_ms + req.duration_secs * 1000 })
    }

    fn cached_sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn active_session(&self, master_arn: &str) -> Result<Option<String>, BackendError> {
        if let Some(s) = self.cached_sessions().get(master_arn).cloned() {
            return Ok(Some(s));
        }
        self.poll_slot("GetStage").await?;
        let out = self.call(&self.stage_calls, "GetStage", || self.client.get_stage().arn(master_arn).send()).await?;
        let session = out.stage().and_then(|s| s.active_session_id()).filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(s) = &session {
            self.cached_sessions().insert(master_arn.to_string(), s.clone());
        }
        Ok(session)
    }

    /// Waits for polling's share of the stage quota.
    async fn poll_slot(&self, op: &'static str) -> Result<(), BackendError> {
        self.poll_calls.acquire().await.map_err(|queue| {
            BackendError::Unavailable(format!("{op}: over the polling share of the IVS quota ({} ms queued)", queue.as_millis()))
        })
    }

    fn set_publisher(&self, channel: &ChannelId, p: Option<LivePublisher>) {
        self.publisher.send_if_modified(|live| {
            let cur = live.get(channel);
            let changed =
                cur.map(|c| (&c.participant_id, &c.stage_arn)) != p.as_ref().map(|n| (&n.participant_id, &n.stage_arn));
            if changed {
                tracing::info!(%channel, live = p.is_some(), participant = ?p.as_ref().map(|p| &p.participant_id), "IVS publisher changed");
                match &p {
                    Some(p) => live.insert(channel.clone(), p.clone()),
                    None => live.remove(channel),
                };
            }
            changed
        });
    }

    /// Nobody publishes on `channel` as far as this instance knows; its master stage's session
    /// is looked up again at the next poll.
    fn forget_publisher(&self, channel: &ChannelId, master_arn: &str) {
        self.cached_sessions().remove(master_arn);
        self.set_publisher(channel, None);
    }

    /// The circuit breaker's state (for diagnostics and tests).
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state(Instant::now())
    }
}

/// A stage ARN as IVS returned it from `op`.
fn returned_arn(op: &str, arn: &str) -> Result<StageArn, BackendError> {
    StageArn::parse(arn).map_err(|e| BackendError::Failed(format!("{op} returned the stage ARN {arn:?}: {e}")))
}

/// The token of the next page of a listing, if there is one.
fn next_page(token: Option<&str>) -> Option<String> {
    token.filter(|t| !t.is_empty()).map(str::to_string)
}

/// `ivs-signing-key.arn` holds `<key ARN> <key name>`: which registered key signs, and for
/// which key file that registration was made.
fn read_arn_file(path: &Path) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let arn = parts.next()?.to_string();
    Some((arn, parts.next().map(str::to_string)))
}

fn write_arn_file(path: &Path, arn: &str, name: &str) -> Result<(), BackendError> {
    let tmp = path.with_extension("arn.new");
    std::fs::write(&tmp, format!("{arn} {name}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| BackendError::Failed(format!("{}: {e}", path.display())))
}

/// The name a signing key is registered under: stable for one key, unique across keys.
pub fn key_name(signer: &TokenSigner) -> String {
    format!("livestage-{}", signer.fingerprint())
}

/// Maps an SDK error to a backend error; the flag says whether it counts as an outage.
fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: &str,
    e: &SdkError<E, HttpResponse>,
) -> (BackendError, bool) {
    use BackendError::*;
    match e {
        SdkError::TimeoutError(_) => (Unavailable(format!("{op}: IVS did not answer in time")), true),
        SdkError::DispatchFailure(_) => (Unavailable(format!("{op}: IVS cannot be reached")), true),
        SdkError::ResponseError(_) => (Unavailable(format!("{op}: unreadable IVS response")), true),
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or("");
            let message = format!("{op}: {code} {}", s.err().message().unwrap_or_default()).trim().to_string();
            match code {
                "ResourceNotFoundException" => (NotFound, false),
                "ValidationException" => (Rejected(message), false),
                "ConflictException" => (Conflict(message), false),
                "AccessDeniedException" | "PendingVerification" | "ServiceQuotaExceededException" => {
                    (Unavailable(message), false)
                }
                // Throttling (retried with backoff already) means IVS is busy, not failing: it
                // does not open the circuit, which would stop the calls that are within quota.
                _ if status == 429 || THROTTLING.contains(&code) => (Unavailable(message), false),
                _ if status >= 500 => (Unavailable(message), true),
                _ => (Failed(message), false),
            }
        }
        _ => (Failed(format!("{op}: {}", DisplayErrorContext(e))), false),
    }
}

fn endpoints(e: Option<&StageEndpoints>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    if let Some(e) = e {
        for (k, v) in [("events", e.events()), ("whip", e.whip()), ("rtmp", e.rtmp()), ("rtmps", e.rtmps())] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                map.insert(k.to_string(), v.to_string());
            }
        }
    }
    map
}

#[async_trait]
impl StageBackend for IvsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ivs
    }

    fn region(&self) -> Option<String> {
        Some(self.region.clone())
    }

    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            playback: Playback::IvsSdk,
            replication: Replication::Native,
            lists_stages: true,
            poll_interval: Some(self.poll_interval),
        }
    }

    fn healthy(&self) -> bool {
        self.breaker.state(Instant::now()) != BreakerState::Open
    }

    async fn create_stage(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<CreatedStage, BackendError> {
        let out = self
            .call(&self.stage_calls, "CreateStage", || {
                self.client.create_stage().name(name).set_tags(Some(tags.clone().into_iter().collect())).send()
            })
            .await?;
        let stage = out.stage().ok_or_else(|| BackendError::Failed("CreateStage returned no stage".into()))?;
        Ok(CreatedStage { arn: returned_arn("CreateStage", stage.arn())?, endpoints: endpoints(stage.endpoints()) })
    }

    async fn adopt_stage(&self, arn: &StageArn) -> Result<CreatedStage, BackendError> {
        let out = self.call(&self.stage_calls, "GetStage", || self.client.get_stage().arn(arn.as_str()).send()).await?;
        let stage = out.stage().ok_or(BackendError::NotFound)?;
        Ok(CreatedStage { arn: returned_arn("GetStage", stage.arn())?, endpoints: endpoints(stage.endpoints()) })
    }

    async fn update_stage(&self, arn: &StageArn, name: &str) -> Result<(), BackendError> {
        self.call(&self.stage_calls, "UpdateStage", || self.client.update_stage().arn(arn.as_str()).name(name).send()).await?;
        Ok(())
    }

    async fn delete_stage(&self, arn: &StageArn) -> Result<(), BackendError> {
        match self.call(&self.stage_calls, "DeleteStage", || self.client.delete_stage().arn(arn.as_str()).send()).await {
            Ok(_) | Err(BackendError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn prepare(&self) -> Result<(), BackendError> {
        if self.token_mode == TokenMode::SelfSigned && self.signer.get().is_none() {
            let signer = self.registered_signer(&self.data_dir).await?;
            let _ = self.signer.set(Arc::new(signer));
        }
        Ok(())
    }

    async fn issue_token(&self, req: TokenRequest<'_>) -> Result<IssuedToken, BackendError> {
        match self.token_mode {
            TokenMode::SelfSigned => match self.signer.get() {
                Some(signer) => super::sign_participant_token(signer, &req),
                None => Err(BackendError::Unavailable("the token signing key is not registered with IVS yet".into())),
            },
            TokenMode::Api => self.api_token(&req).await,
        }
    }

    async fn start_replication(
        &self,
        source: &StageArn,
        destination: &StageArn,
        participant: &ParticipantId,
    ) -> Result<(), BackendError> {
        self.call(&self.stage_calls, "StartParticipantReplication", || {
            self.client
                .start_participant_replication()
                .source_stage_arn(source.as_str())
                .destination_stage_arn(destination.as_str())
                .participant_id(participant.as_str())
                .reconnect_window_seconds(self.reconnect_window_secs)
                .send()
        })
        .await?;
        Ok(())
    }

    async fn stop_replication(
        &self,
        source: &StageArn,
        destination: &StageArn,
        participant: &ParticipantId,
    ) -> Result<(), BackendError> {
        let result = self
            .call(&self.stage_calls, "StopParticipantReplication", || {
                self.client
                    .stop_participant_replication()
                    .source_stage_arn(source.as_str())
                    .destination_stage_arn(destination.as_str())
                    .participant_id(participant.as_str())
                    .send()
            })
            .await;
        match result {
            // Already over (the publisher left and its reconnect window passed).
            Ok(_) | Err(BackendError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn publisher(&self) -> watch::Receiver<LivePublishers> {
        self.publisher.subscribe()
    }

    async fn poll_publisher(&self, channel: &ChannelId, master: &StageArn) -> Result<(), BackendError> {
        let master_arn = master.as_str();
        let Some(session) = self.active_session(master_arn).await? else {
            self.set_publisher(channel, None);
            return Ok(());
        };
        // Every published participant of the session (viewers' tokens never publish, but each
        // publisher connection adds a row): pages are followed, within a bound.
        let mut published = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..10 {
            self.poll_slot("ListParticipants").await?;
            let listed = self
                .call(&self.stage_calls, "ListParticipants", || {
                    self.client
                        .list_participants()
                        .stage_arn(master_arn)
                        .session_id(&session)
                        .filter_by_published(true)
                        .max_results(100)
                        .set_next_token(next.clone())
                        .send()
                })
                .await;
            let out = match listed {
                Ok(out) => out,
                Err(BackendError::NotFound | BackendError::Rejected(_)) => {
                    // The session is gone: the next poll looks for a new one.
                    self.forget_publisher(channel, master_arn);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            published.extend(out.participants().iter().cloned());
            next = next_page(out.next_token());
            if next.is_none() {
                break;
            }
        }
        // The newest connection of whoever publishes is the live one.
        let live = published
            .iter()
            .filter(|p| {
                p.published()
                    && p.state() == Some(&ParticipantState::Connected)
                    && p.replication_type() != Some(&ReplicationType::Replica)
            })
            .max_by_key(|p| p.first_join_time().and_then(|t| t.to_millis().ok()).unwrap_or(0));
        match live {
            Some(p) => self.set_publisher(
                channel,
                Some(LivePublisher {
                    user_id: p.user_id().unwrap_or_default().to_string(),
                    participant_id: p.participant_id().unwrap_or_default().to_string(),
                    stage_arn: master_arn.to_string(),
                    since: crate::domain::UnixMs::from_millis(
                        p.first_join_time().and_then(|t| t.to_millis().ok()).unwrap_or_default(),
                    ),
                }),
            ),
            // Nobody publishes in this session: it may be over, so look it up again.
            None => self.forget_publisher(channel, master_arn),
        }
        Ok(())
    }

    fn clear_publisher(&self) {
        self.cached_sessions().clear();
        self.publisher.send_if_modified(|live| {
            let had = !live.is_empty();
            live.clear();
            had
        });
    }

    async fn list_stages(&self) -> Result<Vec<ListedStage>, BackendError> {
        let mut stages = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..100 {
            let out = self
                .call(&self.stage_calls, "ListStages", || {
                    self.client.list_stages().max_results(100).set_next_token(next.clone()).send()
                })
                .await?;
            // A stage whose ARN does not parse is none this server made.
            stages.extend(out.stages().iter().filter_map(|s| {
                Some(ListedStage {
                    arn: StageArn::parse(s.arn()).ok()?,
                    tags: s.tags().map(|t| t.clone().into_iter().collect()).unwrap_or_default(),
                })
            }));
            next = next_page(out.next_token());
            if next.is_none() {
                break;
            }
        }
        Ok(stages)
    }
}

/// `livestage rotate-key`: registers a new signing key and makes it the one tokens are signed
/// with. The previous key stays registered (tokens signed with it keep working) and its file is
/// kept as `ivs-signing-key.<time>.pem`; `livestage delete-key <arn>` removes it from IVS once
/// those tokens have expired. Returns (new ARN, previous ARN).
pub async fn rotate_key(region: &str, ivs: &IvsSettings, data_dir: &Path) -> Result<(String, Option<String>), BackendError> {
    let dir = &data_dir.to_path_buf();
    let io = |p: &PathBuf, e: std::io::Error| BackendError::Failed(format!("{}: {e}", p.display()));
    // The new key is on disk before IVS hears of it: no key is registered that is not kept.
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let fresh = TokenSigner::generate();
    let tmp = dir.join(format!("{KEY_FILE}.new"));
    let _ = std::fs::remove_file(&tmp);
    fresh.write_pem(&tmp).map_err(|e| io(&tmp, e))?;
    let backend = IvsBackend::unregistered(region, ivs, dir).await;
    let arn = match backend.import_key(&fresh).await {
        Ok(arn) => arn,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let key_path = dir.join(KEY_FILE);
    let arn_path = dir.join(KEY_ARN_FILE);
    let previous = read_arn_file(&arn_path).map(|(arn, _)| arn);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if key_path.exists() {
        let kept = dir.join(format!("ivs-signing-key.{stamp}.pem"));
        std::fs::rename(&key_path, &kept).map_err(|e| io(&kept, e))?;
    }
    std::fs::rename(&tmp, &key_path).map_err(|e| io(&key_path, e))?;
    // A crash before this line leaves the old ARN recorded for the old key's name: the next
    // start notices and finds the new key's registration by its name.
    write_arn_file(&arn_path, &arn, &key_name(&fresh))?;
    Ok((arn, previous))
}

/// `livestage delete-key <arn>`.
pub async fn delete_key(region: &str, ivs: &IvsSettings, data_dir: &Path, arn: &str) -> Result<(), BackendError> {
    IvsBackend::unregistered(region, ivs, data_dir).await.delete_key(arn).await
}

impl IvsBackend {
    /// A client without a registered signing key (tokens from CreateParticipantToken).
    async fn unregistered(region: &str, ivs: &IvsSettings, data_dir: &Path) -> Self {
        let (tx, _rx) = watch::channel(LivePublishers::new());
        let max_wait = Duration::from_millis(ivs.timeout_ms);
        Self {
            client: client(region, ivs).await,
            region: region.to_string(),
            token_mode: TokenMode::Api,
            signer: OnceLock::new(),
            data_dir: data_dir.to_path_buf(),
            reconnect_window_secs: ivs.reconnect_window_secs,
            poll_interval: Duration::from_millis(ivs.poll_interval_ms),
            publisher: tx,
            sessions: Mutex::default(),
            stage_calls: Pacer::per_second(ivs.stage_tps, max_wait),
            poll_calls: Pacer::per_second(ivs.stage_tps * POLL_SHARE, max_wait),
            token_calls: Pacer::per_second(ivs.token_tps, max_wait),
            key_calls: Pacer::per_second(3.0, max_wait),
            breaker: Breaker::new(ivs.breaker_failures, Duration::from_secs(ivs.breaker_cooldown_secs)),
        }
    }
}
