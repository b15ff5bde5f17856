//! Who is live where: the one owner of the publishers, keyed by channel.
//!
//! - **Local** publishers are the ones this instance's stage backend reports (the embedded
//!   media plane, or the IVS poll), every channel in one `watch` the registry follows.
//! - **Remote** publishers are the ones other instances of the deployment report
//!   (`cluster.rs` reads them from the shared database and sets them here).
//! - The **live** publisher of a channel is the local one, else the remote one.
//! - **Absence:** since when a channel's local publisher has been away, as the backend sync
//!   (`BackendSync`) has seen it, to end its replications once the reconnect window has passed.

use crate::domain::{ChannelId, LivePublisher, LivePublishers};
use std::collections::BTreeMap;
use std::future::pending;
use std::sync::Mutex;
use tokio::sync::watch;

/// The local publishers, every channel's, as their source reports them.
pub type LocalSource = watch::Receiver<LivePublishers>;

pub struct PublisherRegistry {
    local: Option<LocalSource>,
    remote: watch::Sender<LivePublishers>,
    /// Since when each channel's local publisher has been away (absent: not known to be away).
    local_away_since: Mutex<BTreeMap<ChannelId, i64>>,
}

impl PublisherRegistry {
    /// A registry that follows no local source and knows no remote publisher.
    pub fn new() -> Self {
        Self { local: None, remote: watch::channel(LivePublishers::new()).0, local_away_since: Mutex::default() }
    }

    /// Follows `source` as this instance's publishers (replacing any source it had).
    pub fn follow_local(mut self, source: LocalSource) -> Self {
        self.local = Some(source);
        self
    }

    /// The publisher live on `channel`: this instance's first, else the one another instance
    /// reports.
    pub fn live(&self, channel: &ChannelId) -> Option<LivePublisher> {
        self.local(channel).or_else(|| self.remote(channel))
    }

    /// Every channel that has a live publisher, with it (local ones first, as in [`Self::live`]).
    pub fn all_live(&self) -> LivePublishers {
        let mut all = self.remote.borrow().clone();
        all.extend(self.all_local());
        all
    }

    /// The publisher this instance's backend reports live on `channel`.
    pub fn local(&self, channel: &ChannelId) -> Option<LivePublisher> {
        self.local.as_ref().and_then(|source| source.borrow().get(channel).cloned())
    }

    /// Every publisher this instance's backend reports live.
    pub fn all_local(&self) -> LivePublishers {
        self.local.as_ref().map(|source| source.borrow().clone()).unwrap_or_default()
    }

    /// The publisher another instance reports live on `channel`.
    pub fn remote(&self, channel: &ChannelId) -> Option<LivePublisher> {
        self.remote.borrow().get(channel).cloned()
    }

    /// Records what the other instances report live, every channel's at once (a channel
    /// missing: nothing); returns whether that changed, in which case [`PublisherChanges`] fire.
    pub fn set_remote(&self, publishers: LivePublishers) -> bool {
        self.remote.send_if_modified(|remote| {
            if *remote == publishers {
                return false;
            }
            *remote = publishers;
            true
        })
    }

    /// Follows every change of a publisher, local or remote, on any channel, from now on.
    pub fn changes(&self) -> PublisherChanges {
        PublisherChanges { local: self.local.as_ref().map(subscribe), remote: Some(self.remote.subscribe()) }
    }

    /// Follows the local publishers from now on (`None`: the registry follows no source).
    /// The receiver ends when the source does.
    pub fn watch_local(&self) -> Option<LocalSource> {
        self.local.as_ref().map(subscribe)
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
fn subscribe<T>(source: &watch::Receiver<T>) -> watch::Receiver<T> {
    let mut rx = source.clone();
    rx.borrow_and_update();
    rx
}

/// A subscription to [`PublisherRegistry::changes`].
pub struct PublisherChanges {
    local: Option<LocalSource>,
    remote: Option<watch::Receiver<LivePublishers>>,
}

impl PublisherChanges {
    /// Resolves once a publisher may have changed since the last call: a local one changed, or
    /// the local source stopped (it is followed no more), or a remote one changed. Never
    /// resolves once every source has stopped. Cancel safe.
    pub async fn changed(&mut self) {
        async fn next(rx: &mut Option<watch::Receiver<LivePublishers>>) -> bool {
            match rx {
                Some(rx) => rx.changed().await.is_ok(),
                None => pending().await,
            }
        }
        loop {
            let Self { local, remote } = &mut *self;
            tokio::select! {
                open = next(local) => {
                    if !open {
                        self.local = None;
                    }
                    return;
                }
                open = next(remote) => {
                    if open {
                        return;
                    }
                    // The registry is gone and reported nothing: keep waiting on the rest.
                    self.remote = None;
                }
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
            since: crate::domain::UnixMs::from_millis(1_000),
        }
    }

    fn channel(name: &str) -> ChannelId {
        ChannelId::parse(name).unwrap()
    }

    fn only(channel: &ChannelId, p: LivePublisher) -> LivePublishers {
        LivePublishers::from([(channel.clone(), p)])
    }

    /// A registry following one local source, and that source.
    fn registry() -> (PublisherRegistry, watch::Sender<LivePublishers>) {
        let (tx, rx) = watch::channel(LivePublishers::new());
        (PublisherRegistry::new().follow_local(rx), tx)
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
        assert!(reg.all_live().is_empty());
    }

    #[test]
    fn the_local_publisher_wins_over_the_remote_one() {
        let (reg, tx) = registry();
        let main = ChannelId::default();
        assert!(reg.set_remote(only(&main, publisher("remote"))));
        assert_eq!(reg.live(&main), Some(publisher("remote")));
        tx.send_replace(only(&main, publisher("local")));
        assert_eq!(reg.live(&main), Some(publisher("local")));
        assert_eq!(reg.all_live(), only(&main, publisher("local")));
        assert_eq!(reg.local(&main), Some(publisher("local")));
        assert_eq!(reg.remote(&main), Some(publisher("remote")));
        tx.send_replace(LivePublishers::new());
        assert_eq!(reg.live(&main), Some(publisher("remote")), "the remote one again once the local one leaves");
    }

    #[test]
    fn a_cleared_remote_publisher_is_no_longer_live() {
        let (reg, _tx) = registry();
        let main = ChannelId::default();
        assert!(reg.set_remote(only(&main, publisher("remote"))));
        assert!(!reg.set_remote(only(&main, publisher("remote"))), "the same report is no change");
        assert!(reg.set_remote(LivePublishers::new()));
        assert!(!reg.set_remote(LivePublishers::new()));
        assert_eq!(reg.remote(&main), None);
        assert_eq!(reg.live(&main), None);
    }

    #[test]
    fn channels_are_independent() {
        let (reg, tx) = registry();
        let (main, other, third) = (ChannelId::default(), channel("other"), channel("third"));
        tx.send_replace(LivePublishers::from([(main.clone(), publisher("local")), (third.clone(), publisher("local-3"))]));
        assert!(reg.set_remote(only(&other, publisher("remote"))));
        assert_eq!(reg.live(&main), Some(publisher("local")));
        assert_eq!(reg.live(&third), Some(publisher("local-3")));
        assert_eq!(reg.remote(&main), None);
        assert_eq!(reg.live(&other), Some(publisher("remote")));
        assert_eq!(reg.local(&other), None, "the local source reports nobody there");
        assert_eq!(reg.all_live().len(), 3);
        assert!(reg.set_remote(LivePublishers::new()));
        assert_eq!(reg.live(&main), Some(publisher("local")));
        assert_eq!(reg.live(&other), None);

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
        tx.send_replace(only(&main, publisher("before")));
        let mut changes = reg.changes();
        assert!(!fires(&mut changes).await, "what happened before subscribing is no change");

        tx.send_replace(only(&main, publisher("local")));
        assert!(fires(&mut changes).await);
        assert!(!fires(&mut changes).await, "one change fires once");

        reg.set_remote(only(&channel("other"), publisher("remote")));
        assert!(fires(&mut changes).await);
        reg.set_remote(only(&channel("other"), publisher("remote")));
        assert!(!fires(&mut changes).await, "the same remote report is no change");
    }

    #[tokio::test]
    async fn a_stopped_source_fires_once_and_is_followed_no_more() {
        let (reg, tx) = registry();
        let mut changes = reg.changes();
        let mut local = reg.watch_local().unwrap();
        drop(tx);
        assert!(fires(&mut changes).await);
        assert!(!fires(&mut changes).await);
        assert!(local.changed().await.is_err(), "the local watch ends with its source");
        reg.set_remote(only(&ChannelId::default(), publisher("remote")));
        assert!(fires(&mut changes).await, "remote changes still fire");
    }

    #[tokio::test]
    async fn the_local_watch_sees_local_changes_from_now_on() {
        let (reg, tx) = registry();
        let main = ChannelId::default();
        tx.send_replace(only(&main, publisher("before")));
        let mut local = reg.watch_local().unwrap();
        assert!(!local.has_changed().unwrap());
        reg.set_remote(only(&main, publisher("remote")));
        assert!(!local.has_changed().unwrap(), "remote reports are not local changes");
        tx.send_replace(LivePublishers::new());
        assert!(local.has_changed().unwrap());
        assert!(local.borrow_and_update().is_empty());
    }
}
