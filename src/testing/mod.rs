//! Test support shared by the unit tests, `tests/`, `benches/` and `examples/`: a WHIP/WHEP
//! client peer, synthetic media, the server binary as a child process, the benches' smoke run
//! and the fake IVS API. Built only with the `testing` feature (the crate's dev-dependency on
//! itself turns it on for every test, bench and example) and for the crate's own unit tests;
//! never part of the served binary. Nothing else in `src/` may name it.

pub mod bench;
pub mod clock;
pub mod fake_ivs;
pub mod media;
pub mod peer;
pub mod process;

use crate::server::config::Settings;

/// Lifts the per-client limits (see `LimitSettings`): tests and benches open many pages and
/// media sessions from one address. The abuse tests keep the defaults.
pub fn lift_client_limits(s: &mut Settings) {
    let l = &mut s.limits;
    l.page_requests = 1_000_000;
    l.joins_per_minute = 1_000_000;
    l.viewers_per_client = 1_000_000;
    l.media_offers = 1_000_000;
    l.media_connecting_per_client = 10_000;
    l.media_connecting_max = 10_000;
    l.websockets_per_client = 1_000_000;
    l.max_connections = 100_000;
}

/// [`lift_client_limits`], as the environment of a server process.
pub const LIFTED_CLIENT_LIMITS: &[(&str, &str)] = &[
    ("PAGE_RATE_LIMIT", "1000000"),
    ("JOINS_PER_MINUTE", "1000000"),
    ("VIEWERS_PER_CLIENT", "1000000"),
    ("MEDIA_OFFERS", "1000000"),
    ("MEDIA_CONNECTING_PER_CLIENT", "10000"),
    ("MEDIA_CONNECTING_MAX", "10000"),
    ("WEBSOCKETS_PER_CLIENT", "1000000"),
    ("MAX_CONNECTIONS", "100000"),
];

/// The claims of a participant token as signed, unverified (to look inside or tamper with).
pub fn claims_unverified(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}
