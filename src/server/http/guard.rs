//! What an anonymous client may take, counted per client ([`ClientKey`]): the pages' calls,
//! studio sign-in attempts, viewer identities and joins, media offers and WebSockets. REST
//! calls with the API key come from a trusted back end and keep only the `/api` rate limit.

use super::client::ClientKey;
use super::middleware::RateLimiter;
use crate::server::config::Settings;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every per-client limit of the public surface, shared by the routes and server functions.
pub struct Guards {
    /// Server-function calls from the pages.
    pub pages: RateLimiter,
    /// Joins from the pages, per minute.
    pub joins: RateLimiter,
    /// WHEP offers (viewers).
    pub play_offers: RateLimiter,
    /// WHIP offers (publishers), on a budget of their own: viewers' offers from the same
    /// address never keep its broadcaster from going live.
    pub publish_offers: RateLimiter,
    /// WHIP/WHEP `DELETE`s: each checks a token (a signature verification, also for an
    /// expired one), so they have a budget of their own, as large as the offers'.
    pub media_ends: RateLimiter,
    pub sign_in: SignInBudget,
    pub viewers: ViewerIdentities,
    pub websockets: Arc<SocketCounter>,
}

impl Guards {
    pub fn new(settings: &Settings) -> Self {
        let window = Duration::from_millis(settings.rate_limit.window_ms);
        let l = &settings.limits;
        Self {
            pages: RateLimiter::new(window, l.page_requests),
            joins: RateLimiter::new(Duration::from_secs(60), l.joins_per_minute),
            play_offers: RateLimiter::new(window, l.media_offers),
            publish_offers: RateLimiter::new(window, l.media_offers),
            media_ends: RateLimiter::new(window, l.media_offers),
            sign_in: SignInBudget::new(l.sign_in_failures),
            viewers: ViewerIdentities::new(
                l.viewers_per_client,
                Duration::from_secs(settings.presence.heartbeat_timeout_secs.max(1) as u64),
            ),
            websockets: Arc::new(SocketCounter::new(l.websockets_per_client)),
        }
    }
}

/// First wait after the allowed failures; it doubles with each further failure.
const SIGN_IN_BACKOFF: Duration = Duration::from_secs(30);
const SIGN_IN_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// A client's failures are forgotten after this long without one.
const SIGN_IN_MEMORY: Duration = Duration::from_secs(3600);
/// How often the clients with no recent failure are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Failed sign-ins per client: the first few are free, then each next attempt waits, twice as
/// long after every failure (a weak key cannot be guessed at speed). A success clears it.
pub struct SignInBudget {
    free: u32,
    clients: Mutex<Swept<HashMap<ClientKey, Failures>>>,
}

/// A map of clients and when it was last swept of the ones gone quiet: at most once per
/// period, so no call pays for a scan of every client.
#[derive(Default)]
struct Swept<T> {
    map: T,
    swept: Option<Instant>,
}

impl<T> Swept<T> {
    /// Whether a sweep is due at `now` (and counts it as done).
    fn due(&mut self, now: Instant, period: Duration) -> bool {
        let due = self.swept.is_none_or(|t| now.duration_since(t) >= period);
        if due {
            self.swept = Some(now);
        }
        due
    }
}

/// A client's recent failed sign-ins.
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl SignInBudget {
    fn new(free: u32) -> Self {
        Self { free, clients: Mutex::default() }
    }

    /// `Err(seconds to wait)` while the client must wait.
    pub fn check(&self, client: ClientKey) -> Result<(), u64> {
        let now = Instant::now();
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.map.get(&client).and_then(|f| f.blocked_until) {
            Some(until) if until > now => Err(until.duration_since(now).as_secs_f64().ceil().max(1.0) as u64),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, client: ClientKey) {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.due(now, SWEEP_EVERY) {
            clients.map.retain(|_, f| now.duration_since(f.last) < SIGN_IN_MEMORY);
        }
        let f = clients.map.entry(client).or_insert(Failures { count: 0, last: now, blocked_until: None });
        if now.duration_since(f.last) >= SIGN_IN_MEMORY {
            *f = Failures { count: 0, last: now, blocked_until: None };
        }
        f.count += 1;
        f.last = now;
        if f.count >= self.free {
            let doublings = (f.count - self.free).min(16);
            let wait = SIGN_IN_BACKOFF.saturating_mul(1 << doublings).min(SIGN_IN_BACKOFF_MAX);
            f.blocked_until = Some(now + wait);
        }
    }

    pub fn succeeded(&self, client: ClientKey) {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).map.remove(&client);
    }
}

/// The viewer identities each client holds on the pages: an identity counts while it joins or
/// beats within the heartbeat timeout; a new one past the cap is refused (a household or an
/// office fits; a script minting thousands does not).
pub struct ViewerIdentities {
    cap: usize,
    ttl: Duration,
    clients: Mutex<Swept<HashMap<ClientKey, HashMap<String, Instant>>>>,
}

impl ViewerIdentities {
    fn new(cap: usize, ttl: Duration) -> Self {
        Self { cap, ttl, clients: Mutex::default() }
    }

    /// Takes (or refreshes) `viewer`'s place among `client`'s identities; `false` when the
    /// client holds its cap of other identities.
    pub fn admit(&self, client: ClientKey, viewer: &str) -> bool {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.due(now, self.ttl) {
            let ttl = self.ttl;
            clients.map.retain(|_, ids| ids.values().any(|seen| now.duration_since(*seen) < ttl));
        }
        let ids = clients.map.entry(client).or_default();
        if let Some(seen) = ids.get_mut(viewer) {
            *seen = now;
            return true;
        }
        if ids.len() >= self.cap {
            // only at the cap are the identities gone quiet looked for
            ids.retain(|_, seen| now.duration_since(*seen) < self.ttl);
            if ids.len() >= self.cap {
                return false;
            }
        }
        ids.insert(viewer.to_string(), now);
        true
    }

    /// The viewer left: its place is free at once.
    pub fn release(&self, client: ClientKey, viewer: &str) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = clients.map.get_mut(&client) {
            ids.remove(viewer);
            if ids.is_empty() {
                clients.map.remove(&client);
            }
        }
    }
}

/// Open WebSockets per client, capped.
pub struct SocketCounter {
    cap: usize,
    open: Mutex<HashMap<ClientKey, usize>>,
}

/// One open socket; dropping it frees the place.
pub struct SocketPlace {
    counter: Arc<SocketCounter>,
    client: ClientKey,
}

impl SocketCounter {
    fn new(cap: usize) -> Self {
        Self { cap, open: Mutex::default() }
    }

    /// A place for one more socket of `client`, or `None` at its cap.
    pub fn take(self: &Arc<Self>, client: ClientKey) -> Option<SocketPlace> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(client).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(SocketPlace { counter: self.clone(), client })
    }
}

impl Drop for SocketPlace {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> ClientKey {
        ClientKey::of(std::net::IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn sign_in_waits_longer_after_each_failure_past_the_free_ones() {
        let budget = SignInBudget::new(3);
        for _ in 0..2 {
            assert!(budget.check(client(1)).is_ok());
            budget.failed(client(1));
        }
        assert!(budget.check(client(1)).is_ok(), "two failures are free");
        budget.failed(client(1));
        let first = budget.check(client(1)).expect_err("the third failure makes the next attempt wait");
        assert!((29..=30).contains(&first), "{first}");
        budget.failed(client(1));
        let second = budget.check(client(1)).expect_err("waits");
        assert!((59..=60).contains(&second), "doubled: {second}");
        assert!(budget.check(client(2)).is_ok(), "another client is not affected");
        budget.succeeded(client(1));
        assert!(budget.check(client(1)).is_ok());
    }

    #[test]
    fn a_client_holds_at_most_its_cap_of_viewer_identities() {
        let ids = ViewerIdentities::new(2, Duration::from_secs(60));
        assert!(ids.admit(client(1), "a"));
        assert!(ids.admit(client(1), "b"));
        assert!(ids.admit(client(1), "a"), "a known identity is refreshed");
        assert!(!ids.admit(client(1), "c"), "a third is refused");
        assert!(ids.admit(client(2), "c"), "another client has its own");
        ids.release(client(1), "a");
        assert!(ids.admit(client(1), "c"), "a place freed by leaving");
    }

    #[test]
    fn sockets_per_client_are_capped_and_freed_on_drop() {
        let counter = Arc::new(SocketCounter::new(2));
        let a = counter.take(client(1)).unwrap();
        let _b = counter.take(client(1)).unwrap();
        assert!(counter.take(client(1)).is_none());
        assert!(counter.take(client(2)).is_some());
        drop(a);
        assert!(counter.take(client(1)).is_some());
    }
}
