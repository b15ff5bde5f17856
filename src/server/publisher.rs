//! Where the media plane reports the live publishers. The embedded media server holds the
//! sending half; the local backend hands out receivers through `StageBackend::publisher`.

use crate::domain::{ChannelId, LivePublisher, LivePublishers};
use std::sync::Arc;
use tokio::sync::watch;

/// The publisher live on each channel, as one value: receivers see every channel's change.
#[derive(Clone)]
pub struct PublisherSignal(Arc<watch::Sender<LivePublishers>>);

impl PublisherSignal {
    /// A signal with no publisher live.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(LivePublishers::new());
        Self(Arc::new(tx))
    }

    /// `publisher` is live on `channel` (replacing whoever was).
    pub fn set_live(&self, channel: ChannelId, publisher: LivePublisher) {
        self.0.send_if_modified(|live| live.insert(channel, publisher.clone()).as_ref() != Some(&publisher));
    }

    /// Nobody is live on `channel`.
    pub fn set_offline(&self, channel: &ChannelId) {
        self.0.send_if_modified(|live| live.remove(channel).is_some());
    }

    /// Nobody is live anywhere.
    pub fn clear(&self) {
        self.0.send_if_modified(|live| {
            let had = !live.is_empty();
            live.clear();
            had
        });
    }

    pub fn current(&self, channel: &ChannelId) -> Option<LivePublisher> {
        self.0.borrow().get(channel).cloned()
    }

    pub fn subscribe(&self) -> watch::Receiver<LivePublishers> {
        self.0.subscribe()
    }
}

impl Default for PublisherSignal {
    fn default() -> Self {
        Self::new()
    }
}
