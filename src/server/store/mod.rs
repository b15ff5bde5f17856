//! Persistence: one sqlx `Any` pool over SQLite (embedded default) or PostgreSQL (scale-out).
//!
//! All SQL here is written in the dialect both engines share (numbered `$n` parameters,
//! `ON CONFLICT`, `RETURNING`, integer epoch-millisecond timestamps), so one implementation
//! serves both; the schema differs only in how ids are generated (see `migrations/`).
//! Rows are private to this module: callers get the domain-facing records below, through one
//! handle per table group (`store.channels()`, `store.stages()`, `store.presence()`, `store.sessions()`,
//! `store.snapshots()`, `store.settings()`, `store.publishers()`).

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use std::time::Duration;

mod channels;
mod presence;
mod publishers;
mod settings;
mod snapshots;
mod stages;

pub use channels::{ChannelRecord, ChannelRows, DescriptionChange};
pub use presence::{JoinMode, JoinResult, PresenceRecord, PresenceRows, SessionRecord, SessionRows, StageViewStats};
pub use publishers::PublisherRows;
pub use settings::SettingRows;
pub use snapshots::SnapshotRows;
pub use stages::{ReplicationRecord, StageRecord, StageRows};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// Why a store call failed. Callers learn whether the database is out of reach; the driver's
/// error stays inside as the source, for logs (its text is the error's own).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// The database cannot be reached: the pool timed out or is closed, or I/O or TLS failed.
    #[error(transparent)]
    Unavailable(sqlx::Error),
    /// Anything else the database reported, or a row that did not map.
    #[error(transparent)]
    Query(sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the database is out of reach (rather than the call being wrong).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Database errors that pass: SQLite busy or locked (every extended code of both) or out of
/// disk; PostgreSQL shutting down, not accepting connections yet, out of connections, out of
/// disk or memory, or a transaction that lost a serialization race.
fn is_retryable(db: &dyn sqlx::error::DatabaseError) -> bool {
    let code = db.code();
    let code = code.as_deref().unwrap_or_default();
    if let Ok(n) = code.parse::<u32>() {
        // SQLite result codes: the primary code is the low byte of an extended one.
        return matches!(n & 0xff, 5 | 6 | 13);
    }
    matches!(code, "57P01" | "57P02" | "57P03" | "53000" | "53100" | "53200" | "53300" | "40001" | "40P01")
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(e)
            }
            sqlx::Error::Database(ref db) if is_retryable(db.as_ref()) => Self::Unavailable(e),
            other => Self::Query(other),
        }
    }
}

/// The longest a write waits for SQLite's one writer before the database counts as busy.
const WRITE_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DbKind,
    /// SQLite allows one writer at a time; taking this lock before a write transaction turns
    /// would-be `SQLITE_BUSY` upgrades into an orderly queue. PostgreSQL needs no such lock.
    write_lock: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// Write transactions begun by this instance.
    writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) struct WriteTx<'a> {
    pub tx: Transaction<'static, Any>,
    _guard: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Store {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbKind::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(5));
        let pool = match kind {
            DbKind::Sqlite => {
                opts.max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            DbKind::Postgres => opts.max_connections(16).connect(url).await?,
        };
        if kind == DbKind::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL;").await?;
        }
        let store = Self {
            pool,
            kind,
            write_lock: (kind == DbKind::Sqlite).then(|| std::sync::Arc::new(tokio::sync::Mutex::new(()))),
            writes: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.kind {
            DbKind::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            DbKind::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// Channels: names, titles, stream keys and master stages.
    pub fn channels(&self) -> ChannelRows<'_> {
        ChannelRows(self)
    }

    /// Stages and their replications.
    pub fn stages(&self) -> StageRows<'_> {
        StageRows(self)
    }

    /// Who is watching which stage now.
    pub fn presence(&self) -> PresenceRows<'_> {
        PresenceRows(self)
    }

    /// Watch history.
    pub fn sessions(&self) -> SessionRows<'_> {
        SessionRows(self)
    }

    /// Viewer counts over time.
    pub fn snapshots(&self) -> SnapshotRows<'_> {
        SnapshotRows(self)
    }

    /// Deployment-wide settings.
    pub fn settings(&self) -> SettingRows<'_> {
        SettingRows(self)
    }

    /// Publishers reported live, shared between instances.
    pub fn publishers(&self) -> PublisherRows<'_> {
        PublisherRows(self)
    }

    /// `NOTIFY channel` (PostgreSQL).
    pub async fn notify(&self, channel: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')").bind(channel).execute(&self.pool).await?;
        Ok(())
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn write_tx(&self) -> Result<WriteTx<'_>, StoreError> {
        let guard = match &self.write_lock {
            Some(lock) => Some(
                tokio::time::timeout(WRITE_WAIT, lock.lock())
                    .await
                    .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolTimedOut))?,
            ),
            None => None,
        };
        let tx = self.pool.begin().await?;
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(WriteTx { tx, _guard: guard })
    }

    /// Write transactions begun by this instance since it started.
    pub fn write_transactions(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A column value that did not parse into its type, as the driver's decode error.
fn decode<T, E: std::error::Error + Send + Sync + 'static>(r: Result<T, E>) -> Result<T, sqlx::Error> {
    r.map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn count(row: &AnyRow, col: &str) -> Result<u32, StoreError> {
    let n: i64 = row.try_get(col)?;
    Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn an_unreachable_database_is_unavailable() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for e in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed, sqlx::Error::Io(io()), sqlx::Error::Tls(io().into())] {
            assert!(StoreError::from(e).is_unavailable());
        }
    }

    #[test]
    fn any_other_failure_is_a_query_error_with_the_driver_text() {
        let e = StoreError::from(sqlx::Error::RowNotFound);
        assert!(matches!(e, StoreError::Query(_)));
        assert!(!e.is_unavailable());
        assert_eq!(e.to_string(), sqlx::Error::RowNotFound.to_string());
    }
}
