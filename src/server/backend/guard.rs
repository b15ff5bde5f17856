//! Keeps calls to a remote control plane within its quotas and stops them from piling up when
//! it fails: a [`Pacer`] per quota class and a [`Breaker`] for the whole service.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Spaces calls evenly so they never exceed a rate. A call that would have to queue longer
/// than `max_wait` is refused instead of waiting.
pub struct Pacer {
    spacing: Duration,
    max_wait: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn per_second(rate: f64, max_wait: Duration) -> Self {
        Self { spacing: Duration::from_secs_f64(1.0 / rate.max(0.001)), max_wait, next: Mutex::new(None) }
    }

    /// Reserves the next free slot; returns how long to wait for it, or the queue length when
    /// that exceeds `max_wait` (nothing is reserved then).
    pub fn reserve(&self, now: Instant) -> Result<Duration, Duration> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let slot = next.map_or(now, |n| n.max(now));
        let wait = slot - now;
        if wait > self.max_wait {
            return Err(wait);
        }
        *next = Some(slot + self.spacing);
        Ok(wait)
    }

    /// Waits for a slot.
    pub async fn acquire(&self) -> Result<(), Duration> {
        let wait = self.reserve(Instant::now())?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Failing fast until the cooldown ends.
    Open,
    /// The cooldown is over: the next call (one at a time) decides.
    HalfOpen,
}

struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    probe_started: Option<Instant>,
}

/// A circuit breaker: after `threshold` failures in a row, calls fail fast for `cooldown`;
/// then a single trial call decides whether to close again.
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner { failures: 0, open_until: None, probe_started: None }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go ahead now.
    pub fn permit(&self, now: Instant) -> bool {
        let mut s = self.lock();
        match s.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => match s.probe_started {
                // A trial is running (or was abandoned less than a cooldown ago).
                Some(started) if now < started + self.cooldown => false,
                _ => {
                    s.probe_started = Some(now);
                    true
                }
            },
        }
    }

    /// The permitted call was not made after all: a trial slot is free again.
    pub fn abandon(&self) {
        self.lock().probe_started = None;
    }

    pub fn succeeded(&self) {
        let mut s = self.lock();
        if s.open_until.is_some() {
            tracing::info!("IVS answers again: circuit closed");
        }
        *s = Inner { failures: 0, open_until: None, probe_started: None };
    }

    pub fn failed(&self, now: Instant) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        if s.failures >= self.threshold {
            if s.open_until.is_none() {
                tracing::warn!(failures = s.failures, "IVS keeps failing: circuit open, calls fail fast");
            }
            s.open_until = Some(now + self.cooldown);
            s.probe_started = None;
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        let s = self.lock();
        match s.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_calls_and_refuses_long_queues() {
        let pacer = Pacer::per_second(5.0, Duration::from_millis(500));
        let t0 = Instant::now();
        let waits: Vec<_> = (0..3).map(|_| pacer.reserve(t0).unwrap()).collect();
        assert_eq!(waits, [Duration::ZERO, Duration::from_millis(200), Duration::from_millis(400)]);
        // The fourth would wait 600 ms > 500 ms.
        assert_eq!(pacer.reserve(t0), Err(Duration::from_millis(600)));
        // Later, the queue has drained.
        assert_eq!(pacer.reserve(t0 + Duration::from_secs(2)), Ok(Duration::ZERO));
    }

    #[test]
    fn breaker_opens_fails_fast_then_probes_once() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            b.failed(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.permit(t0));
        b.failed(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.permit(t0 + Duration::from_secs(5)));
        // After the cooldown exactly one trial goes through.
        let t1 = t0 + Duration::from_secs(11);
        assert!(b.permit(t1));
        assert!(!b.permit(t1));
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        // The trial fails: open again for a full cooldown.
        b.failed(t1);
        assert!(!b.permit(t1 + Duration::from_secs(9)));
        let t2 = t1 + Duration::from_secs(11);
        // Past the cooldown the breaker no longer reports an outage, even before a call.
        assert_eq!(b.state(t2), BreakerState::HalfOpen);
        assert!(b.permit(t2));
        // A permitted call that was not made frees the trial slot.
        b.abandon();
        assert!(b.permit(t2));
        b.succeeded();
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert!(b.permit(t2) && b.permit(t2));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        b.failed(t0);
        b.succeeded();
        b.failed(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }
}
