//! Time as an input: the server reads the clock through this trait so tests can move it.

use crate::domain::UnixMs;

pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> UnixMs;

    /// Milliseconds since the Unix epoch, for the store's columns and the wire.
    fn now_ms(&self) -> i64 {
        self.now().as_millis()
    }
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMs {
        UnixMs::from_millis(chrono::Utc::now().timestamp_millis())
    }
}
