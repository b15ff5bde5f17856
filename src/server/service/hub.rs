//! The live-stats hub: one current snapshot that every `/ws` subscriber reads. Writers mark it
//! dirty; a background task recomputes it at most every 100 ms and at least every 5 s. Readers
//! hold a `watch` receiver, so a slow client simply skips to the newest snapshot.

use crate::api::LiveStats;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

pub struct StatsHub {
    tx: watch::Sender<Arc<LiveStats>>,
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
        let (tx, _) = watch::channel(Arc::new(LiveStats::default()));
        Self {
            tx,
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

    pub fn subscribe(&self) -> watch::Receiver<Arc<LiveStats>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<LiveStats> {
        self.tx.borrow().clone()
    }

    /// Publishes a new snapshot; receivers are woken only if it differs (timestamp aside).
    pub(crate) fn publish(&self, stats: LiveStats) -> bool {
        self.tx.send_if_modified(|cur| {
            let changed = cur.total_viewers != stats.total_viewers
                || cur.active_stages != stats.active_stages
                || cur.is_publisher_live != stats.is_publisher_live
                || cur.stages != stats.stages;
            *cur = Arc::new(stats);
            changed
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
