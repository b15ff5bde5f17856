//! `BENCH_SMOKE=1`: a run of seconds at small sizes, as the test command makes it. It exits with
//! an error when a figure is an order of magnitude off its target (against a baseline measured in
//! the same run where there is one) or when the bench cannot finish; the full figures come from a
//! normal run.

use std::fmt::Display;
use std::str::FromStr;

pub fn enabled() -> bool {
    std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1")
}

/// A setting: its environment variable when set, else the smoke size or the full default.
pub fn setting<T: FromStr>(name: &str, default: T, smoke: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(if enabled() { smoke } else { default })
}

/// In a smoke run, a figure that must hold; a miss ends the run with exit code 1.
pub fn check(ok: bool, what: impl Display) {
    if !enabled() {
        return;
    }
    if ok {
        println!("  smoke check ok: {what}");
    } else {
        eprintln!("  smoke check FAILED: {what}");
        std::process::exit(1);
    }
}
