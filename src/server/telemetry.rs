//! Logging: `tracing` to stderr, as text or JSON lines (`LOG_FORMAT`), filtered by `RUST_LOG`.

use crate::server::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == LogFormat::Json { builder.json().try_init() } else { builder.try_init() };
}
