//! Stage backends: where stages live, who signs participant tokens, and whether the publisher
//! is live. Chosen once at startup (`startup.rs`); nothing outside this module sees which.

pub mod guard;
#[cfg(feature = "ivs")]
pub mod ivs;
pub mod jwt;
pub mod local;

pub use crate::domain::LivePublisher; // re-export for media
use crate::domain::{ChannelId, LivePublishers, ParticipantId, StageArn};
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
    /// The backend does not do this (see [`StageBackend::capabilities`]).
    #[error("the stage backend does not support {0}")]
    Unsupported(&'static str),
}

/// How viewers play a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playback {
    /// WHEP from this server, at `path`.
    Whep { path: &'static str },
    /// The IVS Web Broadcast SDK, with the stage's own endpoints.
    IvsSdk,
}

/// How the publisher reaches the stages the auto-scaler adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// The backend replicates the participant into each stage (IVS participant replication).
    Native,
    /// This server's media plane routes the publisher to every stage itself; replication
    /// calls only keep the records.
    Routed,
}

/// What a backend does, asked once instead of guessed from which methods answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendCapabilities {
    pub playback: Playback,
    pub replication: Replication,
    /// Whether [`StageBackend::list_stages`] lists the backend's own stages (to reconcile with).
    pub lists_stages: bool,
    /// How often [`StageBackend::poll_publisher`] has to run, for backends that learn about
    /// the publisher by asking; `None` when the media plane reports it.
    pub poll_interval: Option<Duration>,
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
    pub arn: StageArn,
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
    fn capabilities(&self) -> BackendCapabilities;
    /// Whether the backend answers; a failing backend makes `/health` report "degraded".
    fn healthy(&self) -> bool {
        true
    }
    /// Readies the backend for use before any stage is touched (IVS: registers the token
    /// signing key). Start-up retries it in the background until it succeeds, while the server
    /// already answers.
    async fn prepare(&self) -> Result<(), BackendError> {
        Ok(())
    }
    async fn create_stage(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<CreatedStage, BackendError>;
    /// Adopts an existing stage by ARN (a configured master stage); returns its endpoints.
    async fn adopt_stage(&self, arn: &StageArn) -> Result<CreatedStage, BackendError>;
    async fn update_stage(&self, arn: &StageArn, name: &str) -> Result<(), BackendError>;
    async fn delete_stage(&self, arn: &StageArn) -> Result<(), BackendError>;
    async fn issue_token(&self, req: TokenRequest<'_>) -> Result<IssuedToken, BackendError>;
    async fn start_replication(
        &self,
        source: &StageArn,
        destination: &StageArn,
        participant: &ParticipantId,
    ) -> Result<(), BackendError>;
    async fn stop_replication(
        &self,
        source: &StageArn,
        destination: &StageArn,
        participant: &ParticipantId,
    ) -> Result<(), BackendError>;
    /// The publisher live on each channel, as the media plane reports it; changes are pushed
    /// to receivers.
    fn publisher(&self) -> watch::Receiver<LivePublishers>;
    /// Asks who publishes on `channel`'s master stage and updates [`StageBackend::publisher`]
    /// (backends with a [`BackendCapabilities::poll_interval`]).
    async fn poll_publisher(&self, _channel: &ChannelId, _master: &StageArn) -> Result<(), BackendError> {
        Ok(())
    }
    /// Forgets every polled publisher (another instance polls now).
    fn clear_publisher(&self) {}
    /// The stages the backend holds, with their tags (backends that
    /// [`BackendCapabilities::lists_stages`]).
    async fn list_stages(&self) -> Result<Vec<ListedStage>, BackendError> {
        Err(BackendError::Unsupported("listing stages"))
    }
}

/// A stage as the backend lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedStage {
    pub arn: StageArn,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_backend_plays_over_whep_and_routes_the_publisher_itself() {
        let backend = local::LocalBackend::new("eu-west-1".into(), std::sync::Arc::new(jwt::TokenSigner::generate()));
        assert_eq!(
            backend.capabilities(),
            BackendCapabilities {
                playback: Playback::Whep { path: crate::domain::WHEP_PATH },
                replication: Replication::Routed,
                lists_stages: false,
                poll_interval: None,
            }
        );
    }

    #[tokio::test]
    async fn a_backend_that_lists_no_stages_says_so_instead_of_answering_none() {
        let backend = local::LocalBackend::new("eu-west-1".into(), std::sync::Arc::new(jwt::TokenSigner::generate()));
        assert!(matches!(backend.list_stages().await, Err(BackendError::Unsupported(_))));
    }

    #[cfg(feature = "ivs")]
    #[tokio::test]
    async fn the_ivs_backend_plays_with_the_sdk_replicates_natively_lists_stages_and_polls() {
        let mut ivs = crate::server::config::Settings::defaults().ivs;
        ivs.poll_interval_ms = 700;
        let dir = tempfile::tempdir().unwrap();
        let backend = ivs::IvsBackend::new("eu-west-1", &ivs, dir.path()).await;
        assert_eq!(
            backend.capabilities(),
            BackendCapabilities {
                playback: Playback::IvsSdk,
                replication: Replication::Native,
                lists_stages: true,
                poll_interval: Some(Duration::from_millis(700)),
            }
        );
        assert_eq!(backend.region().as_deref(), Some("eu-west-1"));
    }
}
