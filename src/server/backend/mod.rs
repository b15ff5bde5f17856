//! Stage backends: where stages live, who signs participant tokens, and whether the publisher
//! is live. Chosen once at startup (`startup.rs`); nothing outside this module sees which.

pub mod guard;
#[cfg(feature = "ivs")]
pub mod ivs;
pub mod jwt;
pub mod local;

pub use crate::domain::LivePublisher; // re-export for media
use crate::server::config::BackendKind;
use crate::server::support::{absolute, random_id};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// The tag on every stage (and key) this server creates; it manages no others.
pub const MANAGED_BY_TAG: (&str, &str) = ("ManagedBy", "livestage");

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("stage not found")]
    NotFound,
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("backend rejected the request: {0}")]
    Rejected(String),
    /// The request conflicts with the resource's state (IVS `ConflictException`).
    #[error("backend conflict: {0}")]
    Conflict(String),
    #[error("backend failure: {0}")]
    Failed(String),
}

/// What a participant may do on a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub publish: bool,
    pub subscribe: bool,
}

impl Capabilities {
    pub const PUBLISH: Self = Self { publish: true, subscribe: false };
    pub const SUBSCRIBE: Self = Self { publish: false, subscribe: true };
    pub const BOTH: Self = Self { publish: true, subscribe: true };

    /// As the contract lists them: `["PUBLISH", "SUBSCRIBE"]`.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.publish {
            v.push("PUBLISH");
        }
        if self.subscribe {
            v.push("SUBSCRIBE");
        }
        v
    }
}

/// A stage as created by the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedStage {
    pub arn: String,
    pub endpoints: BTreeMap<String, String>,
}

pub struct TokenRequest<'a> {
    pub stage_arn: &'a str,
    pub stage_endpoints: &'a BTreeMap<String, String>,
    pub user_id: &'a str,
    pub capabilities: Capabilities,
    pub duration_secs: i64,
    pub attributes: BTreeMap<String, String>,
    /// Public base URL of this server (`http://host:port`), for backends that serve media here.
    pub base_url: &'a str,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IssuedToken {
    pub token: String,
    pub participant_id: String,
    pub expires_at_ms: i64,
}

#[async_trait]
pub trait StageBackend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    fn region(&self) -> Option<String>;
    /// Whether the backend answers; a failing backend makes `/health` report "degraded".
    fn healthy(&self) -> bool {
        true
    }
    async fn create_stage(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<CreatedStage, BackendError>;
    /// Adopts an existing stage by ARN (a configured master stage); returns its endpoints.
    async fn adopt_stage(&self, arn: &str) -> Result<CreatedStage, BackendError>;
    async fn update_stage(&self, arn: &str, name: &str) -> Result<(), BackendError>;
    async fn delete_stage(&self, arn: &str) -> Result<(), BackendError>;
    async fn issue_token(&self, req: TokenRequest<'_>) -> Result<IssuedToken, BackendError>;
    async fn start_replication(&self, source_arn: &str, destination_arn: &str, participant_id: &str) -> Result<(), BackendError>;
    async fn stop_replication(&self, source_arn: &str, destination_arn: &str, participant_id: &str) -> Result<(), BackendError>;
    /// The live publisher, as the media plane reports it; changes are pushed to receivers.
    fn publisher(&self) -> watch::Receiver<Option<LivePublisher>>;
    /// Endpoint paths a viewer uses to play (`whep`), if this backend serves media itself.
    fn whep_path(&self) -> Option<&'static str> {
        None
    }
    /// How often [`StageBackend::poll_publisher`] should run, for backends that learn about
    /// the publisher by asking rather than being told.
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
    /// Asks who publishes on the master stage and updates [`StageBackend::publisher`].
    async fn poll_publisher(&self, _master_arn: &str) -> Result<(), BackendError> {
        Ok(())
    }
    /// Forgets the polled publisher (another instance polls now).
    fn clear_publisher(&self) {}
    /// The stages the backend holds, with their tags; `None` if it keeps no list of its own.
    async fn list_stages(&self) -> Result<Option<Vec<ListedStage>>, BackendError> {
        Ok(None)
    }
}

/// A stage as the backend lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedStage {
    pub arn: String,
    pub tags: BTreeMap<String, String>,
}

/// A participant token as IVS defines self-signed ones: an ES384 JWT whose `kid` names the
/// registered public key, with the stage, endpoints and capabilities as claims.
pub fn sign_participant_token(signer: &jwt::TokenSigner, req: &TokenRequest<'_>) -> Result<IssuedToken, BackendError> {
    let arn = crate::domain::StageArn::parse(req.stage_arn).map_err(|e| BackendError::Rejected(e.to_string()))?;
    let participant_id = random_id(12);
    let now_secs = req.now_ms.div_euclid(1000);
    let exp = now_secs + req.duration_secs;
    let endpoint =
        |name: &str, ws: bool| req.stage_endpoints.get(name).map(|p| absolute(req.base_url, p, ws)).unwrap_or_default();
    let claims = jwt::ParticipantClaims {
        topic: arn.stage_id().to_string(),
        resource: arn,
        jti: participant_id.clone(),
        events_url: endpoint("events", true),
        whip_url: endpoint("whip", false),
        capabilities: jwt::Capabilities { allow_publish: req.capabilities.publish, allow_subscribe: req.capabilities.subscribe },
        version: "1.0".into(),
        user_id: req.user_id.to_string(),
        attributes: req.attributes.clone(),
        iat: now_secs,
        exp,
    };
    Ok(IssuedToken { token: signer.sign(&claims), participant_id, expires_at_ms: exp * 1000 })
}
