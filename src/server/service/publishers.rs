//! Who is live where: the one owner of the publishers, keyed by channel.
//!
//! - **Local** publishers are the ones this instance's stage backend reports (the embedded
//!   media plane, or the IVS poll); the registry follows the backend's `watch` of each channel.
//! - **Remote** publishers are the ones other instances of the deployment report
//!   (`cluster.rs` reads them from the shared database and sets them here).
//! - The **live** publisher of a channel is the local one, else the remote one.
//! - **Absence:** since when a channel's local publisher has been away, as the backend sync
//!   (`BackendSync`) has seen it, to end its replications once the reconnect window has passed.

use crate::domain::{ChannelId, LivePublisher};
use futures_util::future::select_all;
use std::collections::BTreeMap;
use std::future::pending;
use std::sync::Mutex;
use tokio::sync::watch;

/// A local publisher as its source reports it.
pub type LocalSource = watch::Receiver<Option<LivePublisher>>;

pub struct PublisherRegistry {
    local: BTreeMap<ChannelId, LocalSource>,
    remote: watch::Sender<BTreeMap<ChannelId, LivePublisher>>,
    /// Since when each channel's local publisher has been away (absent: not known to be away).
    local_away_since: Mutex<BTreeMap<ChannelId, i64>>,
}

impl PublisherRegistry {
    /// A registry that follows no local source and knows no remote publisher.
    pub fn new() -> Self {
        Self { local: BTreeMap::new(), remote: watch::channel(BTreeMap::new()).0, local_away_since: Mutex::default() }
    }

    /// Follows `source` as the local publisher of `channel` (replacing any source it had).
    pub fn follow_local(mut self, channel: ChannelId, source: LocalSource) -> Self {
        self.local.insert(channel, source);
        self
    }

    /// The publisher live on `channel`: this instance's first, else the one another instance
    /// reports.
    pub fn live(&self, channel: &ChannelId) -> Option<LivePublisher> {
        self.local(channel).or_else(|| self.remote(channel))
    }

    /// The publisher this instance's backend reports live on `channel`.
    pub fn local(&self, channel: &ChannelId) -> Option<LivePublisher> {
        self.local.get(channel).and_then(|source| source.borrow().clone())
    }

    /// The publisher another instance reports live on `channel`.
    pub fn remote(&self, channel: &ChannelId) -> Option<LivePublisher> {
        self.remote.borrow().get(channel).cloned()
    }

    /// Records what the other instances report live on `channel` (`None`: nothing); returns
    /// whether that changed, in which case [`PublisherChanges`] fire.
    pub fn set_remote(&self, channel: &ChannelId, publisher: Option<LivePublisher>) -> bool {
        self.remote.send_if_modified(|remote| {
            if remote.get(channel) == publisher.as_ref() {
                return false;
            }
            match publisher {
                Some(p) => remote.insert(channel.clone(), p),
                None => remote.remove(channel),
            };
            true
        })
    }

    /// Follows every change of a publisher, local or remote, on any channel, from now on.
    pub fn changes(&self) -> PublisherChanges {
        PublisherChanges { local: self.local.values().map(subscribe).collect(), remote: Some(self.remote.subscribe()) }
    }

    /// Follows the local publisher of `channel` from now on (`None`: the registry follows no
    /// source for it). The receiver ends when the source does.
    pub fn watch_local(&self, channel: &ChannelId) -> Option<LocalSource> {
        self.local.get(channel).map(subscribe)
    }

    /// Notes that the local publisher of `channel` was seen live: its absence, if any, is over.
    pub fn mark_local_present(&self, channel: &ChannelId) {
        self.away().remove(channel);
    }

    /// Since when the local publisher of `channel` has been away: `now_ms` the first time this
    /// is asked after it was last [marked present](Self::mark_local_present).
    pub fn local_away_since(&self, channel: &ChannelId, now_ms: i64) -> i64 {
        *self.away().entry(channel.clone()).or_insert(now_ms)
    }

    fn away(&self) -> std::sync::MutexGuard<'_, BTreeMap<ChannelId, i64>> {
        self.local_away_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for PublisherRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// A receiver of `source` that has seen its current value.
fn subscribe(source: &LocalSource) -> LocalSource {
    let mut rx = source.clone();
    rx.borrow_and_update();
    rx
}

/// A subscription to [`PublisherRegistry::changes`].
pub struct PublisherChanges {
    local: Vec<LocalSource>,
    remote: Option<watch::Receiver<BTreeMap<ChannelId, LivePublisher>>>,
}

impl PublisherChanges {
    /// Resolves once a publisher may have changed since the last call: a local one changed, or
    /// its source stopped (it is followed no more), or a remote one changed. Never resolves once
    /// every source has stopped. Cancel safe.
    pub async fn changed(&mut self) {
        enum Woke {
            Local(usize, bool),
            Remote(bool),
        }
        loop {
            let woke = {
                let Self { local, remote } = &mut *self;
                let local_changed = async {
                    if local.is_empty() {
                        return pending().await;
                    }
                    let (r, i, _) = select_all(local.iter_mut().map(|rx| Box::pin(rx.changed()))).await;
                    (i, r.is_ok())
                };
                let remote_changed = async {
                    match remote {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => pending().await,
                    }
                };
                tokio::select! {
                    (i, open) = local_changed => Woke::Local(i, open),
                    open = remote_changed => Woke::Remote(open),
                }
            };
            match woke {
                Woke::Local(i, open) => {
                    if !open {
                        self.local.swap_remove(i);
                    }
                    return;
                }
                Woke::Remote(true) => return,
                // The registry is gone and reported nothing: keep waiting on the rest.
                Woke::Remote(false) => self.remote = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn publisher(pid: &str) -> LivePublisher {
        LivePublisher {
            user_id: "broadcaster".into(),
            participant_id: pid.into(),
            stage_arn: "arn:aws:ivs:eu-west-1:000000000000:stage/master".into(),
            since_ms: 1_000,
        }
    }

    fn channel(name: &str) -> ChannelId {
        ChannelId::parse(name).unwrap()
    }

    /// A registry following one local source for the default channel, and that source.
    fn registry() -> (PublisherRegistry, watch::Sender<Option<LivePublisher>>) {
        let (tx, rx) = watch::channel(None);
        (PublisherRegistry::new().follow_local(ChannelId::default(), rx), tx)
    }

    async fn fires(changes: &mut PublisherChanges) -> bool {
        tokio::time::timeout(Duration::from_millis(50), changes.changed()).await.is_ok()
    }

    #[test]
    fn nothing_is_live_at_first() {
        let (reg, _tx) = registry();
        let main = ChannelId::default();
        assert_eq!(reg.live(&main), None);
        assert_eq!(reg.local(&main), None);
        assert_eq!(reg.remote(&main), None);
    }

    #[test]
    fn the_local_publisher_wins_over_the_remote_one() {
        let (reg, tx) = registry();
        let main = ChannelId::default();
        assert!(reg.set_remote(&main, Some(publisher("remote"))));
        assert_eq!(reg.live(&main), Some(publisher("remote")));
        tx.send_replace(Some(publisher("local")));
        assert_eq!(reg.live(&main), Some(publisher("local")));
        assert_eq!(reg.local(&main), Some(publisher("local")));
        assert_eq!(reg.remote(&main), Some(publisher("remote")));
        tx.send_replace(None);
        assert_eq!(reg.live(&main), Some(publisher("remote")), "the remote one again once the local one leaves");
    }

    #[test]
    fn a_cleared_remote_publisher_is_no_longer_live() {
        let (reg, _tx) = registry();
        let main = ChannelId::default();
        assert!(reg.set_remote(&main, Some(publisher("remote"))));
        assert!(!reg.set_remote(&main, Some(publisher("remote"))), "the same report is no change");
        assert!(reg.set_remote(&main, None));
        assert!(!reg.set_remote(&main, None));
        assert_eq!(reg.remote(&main), None);
        assert_eq!(reg.live(&main), None);
    }

    #[test]
    fn channels_are_independent() {
        let (reg, tx) = registry();
        let (main, other) = (ChannelId::default(), channel("other"));
        tx.send_replace(Some(publisher("local")));
        assert!(reg.set_remote(&other, Some(publisher("remote"))));
        assert_eq!(reg.live(&main), Some(publisher("local")));
        assert_eq!(reg.remote(&main), None);
        assert_eq!(reg.live(&other), Some(publisher("remote")));
        assert_eq!(reg.local(&other), None, "no local source follows that channel");
        assert!(reg.watch_local(&other).is_none());
        assert!(reg.set_remote(&other, None));
        assert_eq!(reg.live(&main), Some(publisher("local")));

        assert_eq!(reg.local_away_since(&main, 10), 10);
        assert_eq!(reg.local_away_since(&other, 20), 20);
        reg.mark_local_present(&other);
        assert_eq!(reg.local_away_since(&main, 30), 10);
    }

    #[test]
    fn absence_counts_from_the_first_time_it_is_seen_until_the_publisher_is_back() {
        let (reg, _tx) = registry();
        let main = ChannelId::default();
        assert_eq!(reg.local_away_since(&main, 100), 100);
        assert_eq!(reg.local_away_since(&main, 200), 100);
        reg.mark_local_present(&main);
        assert_eq!(reg.local_away_since(&main, 300), 300);
    }

    #[tokio::test]
    async fn changes_fire_on_local_and_remote_changes_only() {
        let (reg, tx) = registry();
        let main = ChannelId::default();
        tx.send_replace(Some(publisher("before")));
        let mut changes = reg.changes();
        assert!(!fires(&mut changes).await, "what happened before subscribing is no change");

        tx.send_replace(Some(publisher("local")));
        assert!(fires(&mut changes).await);
        assert!(!fires(&mut changes).await, "one change fires once");

        reg.set_remote(&channel("other"), Some(publisher("remote")));
        assert!(fires(&mut changes).await);
        reg.set_remote(&channel("other"), Some(publisher("remote")));
        assert!(!fires(&mut changes).await, "the same remote report is no change");
        reg.set_remote(&main, None);
        assert!(!fires(&mut changes).await);
    }

    #[tokio::test]
    async fn a_stopped_source_fires_once_and_is_followed_no_more() {
        let (reg, tx) = registry();
        let mut changes = reg.changes();
        let mut local = reg.watch_local(&ChannelId::default()).unwrap();
        drop(tx);
        assert!(fires(&mut changes).await);
        assert!(!fires(&mut changes).await);
        assert!(local.changed().await.is_err(), "the local watch ends with its source");
        reg.set_remote(&ChannelId::default(), Some(publisher("remote")));
        assert!(fires(&mut changes).await, "remote changes still fire");
    }

    #[tokio::test]
    async fn the_local_watch_sees_local_changes_from_now_on() {
        let (reg, tx) = registry();
        tx.send_replace(Some(publisher("before")));
        let mut local = reg.watch_local(&ChannelId::default()).unwrap();
        assert!(!local.has_changed().unwrap());
        reg.set_remote(&ChannelId::default(), Some(publisher("remote")));
        assert!(!local.has_changed().unwrap(), "remote reports are not local changes");
        tx.send_replace(None);
        assert!(local.has_changed().unwrap());
        assert_eq!(*local.borrow_and_update(), None);
    }
}
