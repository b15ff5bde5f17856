//! Studio sign-in sessions end together: each studio (a channel's, or the one for every
//! channel) has an epoch, stored under a settings key of its own; a session and every
//! publisher token issued to it carry the epoch they were opened in, and signing out advances
//! it, which ends them all on every instance.

use crate::server::error::AppResult;
use crate::server::store::Store;

pub struct StudioEpochs {
    store: Store,
}

impl StudioEpochs {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The studio's current epoch (0 until its first sign-out).
    pub async fn current(&self, key: &str) -> AppResult<u64> {
        Ok(self.store.settings().counter(key).await?)
    }

    /// Ends every session of the studio, and the tokens issued to them.
    pub async fn advance(&self, key: &str) -> AppResult<u64> {
        let next = self.current(key).await? + 1;
        self.store.settings().put(key, &next.to_string()).await?;
        Ok(next)
    }

    /// Whether `epoch`, as a session or token carries it, is the studio's current one.
    pub async fn is_current(&self, key: &str, epoch: &str) -> AppResult<bool> {
        Ok(epoch.parse::<u64>().ok() == Some(self.current(key).await?))
    }
}
