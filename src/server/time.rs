//! ISO-8601 timestamps as the contract writes them: UTC with milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An instant as the contract writes it.
pub fn iso_at(at: crate::domain::UnixMs) -> String {
    iso(at.as_millis())
}

pub fn iso_now() -> String {
    iso(Utc::now().timestamp_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(super::iso(1_761_042_600_000), "2025-10-21T10:30:00.000Z");
        assert_eq!(super::iso(1_761_042_600_123), "2025-10-21T10:30:00.123Z");
    }
}
