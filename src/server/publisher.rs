//! Where the media plane reports the live publisher. The embedded media server holds the
//! sending half; the local backend hands out receivers through `StageBackend::publisher`.

use crate::domain::LivePublisher;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct PublisherSignal(Arc<watch::Sender<Option<LivePublisher>>>);

impl PublisherSignal {
    /// A signal with no publisher live.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(None);
        Self(Arc::new(tx))
    }
    pub fn set_live(&self, publisher: LivePublisher) {
        self.0.send_replace(Some(publisher));
    }
    pub fn set_offline(&self) {
        self.0.send_replace(None);
    }
    pub fn current(&self) -> Option<LivePublisher> {
        self.0.borrow().clone()
    }
    pub fn subscribe(&self) -> watch::Receiver<Option<LivePublisher>> {
        self.0.subscribe()
    }
}

impl Default for PublisherSignal {
    fn default() -> Self {
        Self::new()
    }
}
