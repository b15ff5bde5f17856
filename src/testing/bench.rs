//! What the benches share: the smoke run and the server binary with bench settings.
//!
//! `BENCH_SMOKE=1`: a run of seconds at small sizes, as the test command makes it. It exits with
//! an error when a figure is an order of magnitude off its target (against a baseline measured in
//! the same run where there is one) or when the bench cannot finish; the full figures come from a
//! normal run.

use super::process::ServerProcess;
use std::fmt::Display;
use std::str::FromStr;

/// The API key of every server a bench starts.
pub const API_KEY: &str = "bench-key";

pub fn smoke() -> bool {
    std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1")
}

/// A setting: its environment variable when set, else the smoke size or the full default.
pub fn setting<T: FromStr>(name: &str, default: T, smoke_size: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(if smoke() { smoke_size } else { default })
}

/// In a smoke run, a figure that must hold; a miss ends the run with exit code 1.
pub fn check(ok: bool, what: impl Display) {
    if !smoke() {
        return;
    }
    if ok {
        println!("  smoke check ok: {what}");
    } else {
        eprintln!("  smoke check FAILED: {what}");
        std::process::exit(1);
    }
}

/// The value at `p` (0 to 1) of `sorted`; NaN when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The server `binary` (`env!("CARGO_BIN_EXE_livestage")`) on a free port with bench defaults
/// (no limit in the way of the load), then `env`. Returns once it reports its address.
pub fn server(binary: &str, env: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::start(binary, |cmd, _| {
        cmd.env("API_SECRET_KEY", API_KEY)
            .env("AUTOSCALE", "false")
            .env("RATE_LIMIT_MAX_REQUESTS", "100000000")
            .env("MAX_VIEWERS_PER_STAGE", "1000000")
            .env("SCALE_UP_THRESHOLD", "1000000")
            .env("RUST_LOG", "warn,livestage=info")
            .envs(super::LIFTED_CLIENT_LIMITS.iter().copied());
        for (k, v) in env {
            cmd.env(k, v);
        }
    })
}
