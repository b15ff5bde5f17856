//! The auto-scaler's own state: the early wake-up, the lock that keeps one step (or a
//! replication sync, or a reconciliation) at a time on this instance, and the step count.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, MutexGuard, Notify};

#[derive(Default)]
pub struct Autoscaler {
    /// Wakes the auto-scaling job early (a stage crossed its threshold, or a join found none free).
    kick: Notify,
    /// Serialises the steps that create, replicate into or remove stages.
    lock: Mutex<()>,
    /// Auto-scaling steps this instance has run.
    steps: AtomicU64,
}

impl Autoscaler {
    /// Asks for a step now rather than at the next interval.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Resolves at the next [`Autoscaler::kick`].
    pub async fn kicked(&self) {
        self.kick.notified().await
    }

    /// Held while stages are created, replicated into or removed.
    pub async fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Counts one auto-scaling step.
    pub fn count_step(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
    }

    /// Auto-scaling steps this instance has run.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }
}
