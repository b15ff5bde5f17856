//! The embedded backend: stages live in this server's store, participant tokens are ES384 JWTs
//! signed with a key in the data dir (same claims as IVS), and media flows through this server
//! (WHIP publish on `/whip`, WHEP play on `/whep`).

use super::jwt::TokenSigner;
use super::{BackendCapabilities, BackendError, CreatedStage, IssuedToken, Playback, Replication, StageBackend, TokenRequest};
use crate::domain::{LivePublishers, ParticipantId, StageArn, WHEP_PATH, WHIP_PATH};
use crate::server::config::BackendKind;
pub use crate::server::publisher::PublisherSignal; // re-export for media
pub use crate::server::support::random_id; // re-export for media
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

pub const LOCAL_ACCOUNT: &str = "000000000000";

pub struct LocalBackend {
    region: String,
    signer: Arc<TokenSigner>,
    publisher: PublisherSignal,
}

impl LocalBackend {
    pub fn new(region: String, signer: Arc<TokenSigner>) -> Self {
        Self { region, signer, publisher: PublisherSignal::new() }
    }

    pub fn signer(&self) -> Arc<TokenSigner> {
        self.signer.clone()
    }

    pub fn publisher_signal(&self) -> PublisherSignal {
        self.publisher.clone()
    }

    fn endpoints() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("whip".to_string(), WHIP_PATH.to_string()),
            ("whep".to_string(), WHEP_PATH.to_string()),
            ("events".to_string(), "/ws".to_string()),
        ])
    }
}

#[async_trait]
impl StageBackend for LocalBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn region(&self) -> Option<String> {
        Some(self.region.clone())
    }

    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            playback: Playback::Whep { path: WHEP_PATH },
            replication: Replication::Routed,
            lists_stages: false,
            poll_interval: None,
        }
    }

    async fn create_stage(&self, _name: &str, _tags: &BTreeMap<String, String>) -> Result<CreatedStage, BackendError> {
        let arn =
            StageArn::from_parts(&self.region, LOCAL_ACCOUNT, &random_id(12)).map_err(|e| BackendError::Failed(e.to_string()))?;
        Ok(CreatedStage { arn, endpoints: Self::endpoints() })
    }

    async fn adopt_stage(&self, arn: &StageArn) -> Result<CreatedStage, BackendError> {
        Ok(CreatedStage { arn: arn.clone(), endpoints: Self::endpoints() })
    }

    async fn update_stage(&self, _arn: &StageArn, _name: &str) -> Result<(), BackendError> {
        Ok(())
    }

    async fn delete_stage(&self, _arn: &StageArn) -> Result<(), BackendError> {
        Ok(())
    }

    async fn issue_token(&self, req: TokenRequest<'_>) -> Result<IssuedToken, BackendError> {
        super::sign_participant_token(&self.signer, &req)
    }

    async fn start_replication(&self, _s: &StageArn, _d: &StageArn, _p: &ParticipantId) -> Result<(), BackendError> {
        // Replication::Routed: the embedded media server forwards the publisher to every stage.
        Ok(())
    }

    async fn stop_replication(&self, _s: &StageArn, _d: &StageArn, _p: &ParticipantId) -> Result<(), BackendError> {
        Ok(())
    }

    fn publisher(&self) -> watch::Receiver<LivePublishers> {
        self.publisher.subscribe()
    }
}
