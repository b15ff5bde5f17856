//! Time with its unit in its type: an instant is [`UnixMs`] (milliseconds since the Unix
//! epoch, as the store keeps it), a span is a [`std::time::Duration`].

use serde::{Deserialize, Serialize};
use std::ops::{Add, Sub};
use std::time::Duration;

/// An instant: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMs(i64);

impl UnixMs {
    pub const EPOCH: Self = Self(0);

    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The time from `earlier` to this instant; zero when `earlier` is later.
    pub fn since(self, earlier: UnixMs) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for UnixMs {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(millis(d)))
    }
}

impl Sub<Duration> for UnixMs {
    type Output = Self;
    fn sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(millis(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_move_by_spans_and_measure_them() {
        let t = UnixMs::from_millis(10_000);
        assert_eq!((t + Duration::from_secs(2)).as_millis(), 12_000);
        assert_eq!((t - Duration::from_millis(500)).as_millis(), 9_500);
        assert_eq!(t.since(UnixMs::from_millis(7_500)), Duration::from_millis(2_500));
        assert_eq!(UnixMs::from_millis(1).since(t), Duration::ZERO, "a later start is no time, not a negative one");
        assert_eq!(UnixMs::from_millis(i64::MAX - 1) + Duration::MAX, UnixMs::from_millis(i64::MAX), "saturates");
        assert_eq!(serde_json::to_string(&t).unwrap(), "10000");
    }
}
