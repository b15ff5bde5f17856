//! The live-stats hub: each channel's current snapshot, which that channel's `/ws` subscribers
//! read. Writers mark it dirty; a background task recomputes it at most every 100 ms and at
//! least every 5 s. Readers hold a `watch` receiver of their channel only, so a change wakes
//! that channel's subscribers and no others, and a slow client simply skips to the newest
//! snapshot.

use crate::api::{Directory, LiveStats};
use crate::domain::ChannelId;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

type Snapshot = watch::Sender<Arc<LiveStats>>;

pub struct StatsHub {
    /// Every channel the last refresh saw (the default one from the start).
    channels: Mutex<HashMap<ChannelId, Snapshot>>,
    /// The channel directory as the last refresh saw it.
    directory: watch::Sender<Arc<Directory>>,
    dirty: Notify,
    /// The pending change happened on this instance (so the others must hear of it).
    local: AtomicBool,
    subscribers: AtomicUsize,
    /// Held from reading the figures to publishing them, so two refreshes cannot cross: one
    /// that read the store earlier never publishes after one that read it later.
    refreshing: tokio::sync::Mutex<()>,
}

impl StatsHub {
    pub fn new() -> Self {
        let channels = HashMap::from([(ChannelId::default(), watch::channel(Arc::new(LiveStats::default())).0)]);
        Self {
            channels: Mutex::new(channels),
            directory: watch::channel(Arc::new(Directory::default())).0,
            dirty: Notify::new(),
            local: AtomicBool::new(false),
            subscribers: AtomicUsize::new(0),
            refreshing: Default::default(),
        }
    }

    /// Taken by a refresh for as long as it reads and publishes.
    pub async fn refreshing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.refreshing.lock().await
    }

    /// Something that the stats depend on changed.
    pub fn mark_dirty(&self) {
        self.local.store(true, Ordering::Relaxed);
        self.dirty.notify_one();
    }

    /// Another instance changed something.
    pub fn mark_remote_change(&self) {
        self.dirty.notify_one();
    }

    /// Whether a local change is pending; clears the flag.
    pub(crate) fn take_local_change(&self) -> bool {
        self.local.swap(false, Ordering::Relaxed)
    }

    pub(crate) async fn dirtied(&self) {
        self.dirty.notified().await
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Snapshot>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `channel`'s snapshots; `None` for a channel the last refresh did not see.
    pub fn subscribe(&self, channel: &ChannelId) -> Option<watch::Receiver<Arc<LiveStats>>> {
        self.channels().get(channel).map(watch::Sender::subscribe)
    }

    /// `channel`'s current snapshot (empty for a channel the last refresh did not see).
    pub fn current(&self, channel: &ChannelId) -> Arc<LiveStats> {
        self.channels().get(channel).map(|tx| tx.borrow().clone()).unwrap_or_default()
    }

    /// Every channel's current snapshot, by name.
    pub fn all(&self) -> Vec<(ChannelId, Arc<LiveStats>)> {
        let mut all: Vec<_> = self.channels().iter().map(|(c, tx)| (c.clone(), tx.borrow().clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Publishes a new snapshot of every channel (a channel missing is gone: its subscribers'
    /// receivers end); each channel's receivers are woken only if its snapshot differs
    /// (timestamp aside). Returns whether any did.
    pub(crate) fn publish(&self, mut stats: BTreeMap<ChannelId, LiveStats>) -> bool {
        let mut channels = self.channels();
        let before = channels.len();
        channels.retain(|channel, _| channel.is_default() || stats.contains_key(channel));
        let mut changed = channels.len() != before;
        for (channel, snapshot) in std::mem::take(&mut stats) {
            match channels.get(&channel) {
                Some(tx) => {
                    changed |= tx.send_if_modified(|cur| {
                        let differs = cur.total_viewers != snapshot.total_viewers
                            || cur.active_stages != snapshot.active_stages
                            || cur.is_publisher_live != snapshot.is_publisher_live
                            || cur.stages != snapshot.stages;
                        *cur = Arc::new(snapshot);
                        differs
                    })
                }
                None => {
                    channels.insert(channel, watch::channel(Arc::new(snapshot)).0);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Follows the channel directory.
    pub fn subscribe_directory(&self) -> watch::Receiver<Arc<Directory>> {
        self.directory.subscribe()
    }

    /// The channel directory as the last refresh saw it.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.borrow().clone()
    }

    /// Publishes the directory; its followers are woken only if the listing changed (the
    /// timestamp aside). Returns whether it did.
    pub(crate) fn publish_directory(&self, directory: Directory) -> bool {
        self.directory.send_if_modified(|cur| {
            let differs = !cur.same_listing(&directory);
            *cur = Arc::new(directory);
            differs
        })
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    pub fn subscriber_joined(&self) {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn subscriber_left(&self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for StatsHub {
    fn default() -> Self {
        Self::new()
    }
}
