//! The embedded backend: stages live in this server's store, participant tokens are ES384 JWTs
//! signed with a key in the data dir (same claims as IVS), and media flows through this server
//! (WHIP publish on `/whip`, WHEP play on `/whep`).

use super::jwt::TokenSigner;
use super::{
    BackendCapabilities, BackendError, CreatedStage, IssuedToken, LivePublisher, Playback, Replication, StageBackend,
    TokenRequest,
};
use crate::domain::{ParticipantId, StageArn};
use crate::server::config::BackendKind;
use async_trait::async_trait;
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

pub const LOCAL_ACCOUNT: &str = "000000000000";
pub const WHIP_PATH: &str = "/whip";
pub const WHEP_PATH: &str = "/whep";

pub fn random_id(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Where the media plane reports the live publisher. The embedded media server holds the
/// sending half; everything else reads through [`StageBackend::publisher`].
#[derive(Clone)]
pub struct PublisherSignal(Arc<watch::Sender<Option<LivePublisher>>>);

impl PublisherSignal {
    pub fn set_live(&self, publisher: LivePublisher) {
        self.0.send_replace(Some(publisher));
    }
    pub fn set_offline(&self) {
        self.0.send_replace(None);
    }
    pub fn current(&self) -> Option<LivePublisher> {
        self.0.borrow().clone()
    }
}

pub struct LocalBackend {
    region: String,
    signer: Arc<TokenSigner>,
    publisher: PublisherSignal,
}

impl LocalBackend {
    pub fn new(region: String, signer: Arc<TokenSigner>) -> Self {
        let (tx, _rx) = watch::channel(None);
        Self { region, signer, publisher: PublisherSignal(Arc::new(tx)) }
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

/// Resolves an endpoint path against the server's public base URL.
pub fn absolute(base_url: &str, path: &str, websocket: bool) -> String {
    if path.contains("://") {
        return path.to_string();
    }
    let base = base_url.trim_end_matches('/');
    let base = if websocket { base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1) } else { base.to_string() };
    format!("{base}{path}")
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

    fn publisher(&self) -> watch::Receiver<Option<LivePublisher>> {
        self.publisher.0.subscribe()
    }
}
