//! Persistence: one sqlx `Any` pool over SQLite (embedded default) or PostgreSQL (scale-out).
//!
//! All SQL here is written in the dialect both engines share (numbered `$n` parameters,
//! `ON CONFLICT`, `RETURNING`, integer epoch-millisecond timestamps), so one implementation
//! serves both; the schema differs only in how ids are generated (see `migrations/`).
//! Rows are private to this module: callers get the domain-facing records below.

use crate::domain::LivePublisher;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use std::collections::HashMap;
use std::time::Duration;

mod presence;
mod stages;

pub use presence::{JoinResult, PresenceRecord, SessionRecord, StageViewStats};
pub use stages::{ReplicationRecord, StageRecord};

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

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(e)
            }
            other => Self::Query(other),
        }
    }
}

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

    /// Reports the live publisher for the whole deployment until `expires_ms`.
    pub async fn share_publisher(&self, p: &LivePublisher, expires_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO publisher_live (singleton, user_id, participant_id, stage_arn, since_ms, expires_ms) \
             VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (singleton) DO UPDATE SET user_id = excluded.user_id, \
             participant_id = excluded.participant_id, stage_arn = excluded.stage_arn, since_ms = excluded.since_ms, \
             expires_ms = excluded.expires_ms",
        )
        .bind(&p.user_id)
        .bind(&p.participant_id)
        .bind(&p.stage_arn)
        .bind(p.since_ms)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Withdraws a publisher this instance reported.
    pub async fn unshare_publisher(&self, participant_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM publisher_live WHERE participant_id = $1").bind(participant_id).execute(&self.pool).await?;
        Ok(())
    }

    /// The publisher some instance reports live, unless its report expired.
    pub async fn shared_publisher(&self, now_ms: i64) -> Result<Option<LivePublisher>, StoreError> {
        let row = sqlx::query("SELECT user_id, participant_id, stage_arn, since_ms FROM publisher_live WHERE expires_ms > $1")
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(LivePublisher {
                user_id: r.try_get("user_id")?,
                participant_id: r.try_get("participant_id")?,
                stage_arn: r.try_get("stage_arn")?,
                since_ms: r.try_get("since_ms")?,
            })
        })
        .transpose()
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
            Some(lock) => Some(lock.lock().await),
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

    pub async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<String, _>("value")).transpose()?)
    }

    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut w = self.write_tx().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&mut *w.tx)
            .await?;
        Ok(w.tx.commit().await?)
    }

    /// The value of `key`, set to `candidate` first if it had none (the first writer wins).
    pub async fn setting_or_insert(&self, key: &str, candidate: &str) -> Result<String, StoreError> {
        let mut w = self.write_tx().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(candidate)
            .execute(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        Ok(self.get_setting(key).await?.unwrap_or_else(|| candidate.to_string()))
    }

    /// Records the viewer count of every stage at `now`.
    pub async fn insert_snapshots(&self, now: i64, counts: &[(String, u32)]) -> Result<(), StoreError> {
        let mut w = self.write_tx().await?;
        for (arn, count) in counts {
            sqlx::query("INSERT INTO viewer_snapshots (stage_arn, taken_at, viewer_count) VALUES ($1, $2, $3)")
                .bind(arn)
                .bind(now)
                .bind(i64::from(*count))
                .execute(&mut *w.tx)
                .await?;
        }
        Ok(w.tx.commit().await?)
    }

    /// Deletes snapshots taken before `before`; returns how many.
    pub async fn prune_snapshots(&self, before: i64) -> Result<u64, StoreError> {
        let mut w = self.write_tx().await?;
        let n = sqlx::query("DELETE FROM viewer_snapshots WHERE taken_at < $1").bind(before).execute(&mut *w.tx).await?;
        w.tx.commit().await?;
        Ok(n.rows_affected())
    }

    /// Snapshots since `since`, oldest first: (stage ARN, taken at, viewer count).
    pub async fn snapshots_since(&self, since: i64) -> Result<Vec<(String, i64, u32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT stage_arn, taken_at, viewer_count FROM viewer_snapshots WHERE taken_at >= $1 ORDER BY taken_at, stage_arn",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("stage_arn")?, r.try_get("taken_at")?, count(r, "viewer_count")?))).collect()
    }

    /// Viewer count of every stage that has viewers.
    pub async fn stage_counts(&self) -> Result<HashMap<String, u32>, StoreError> {
        let rows = sqlx::query("SELECT stage_arn, COUNT(*) AS n FROM presence GROUP BY stage_arn").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>("stage_arn")?, count(r, "n")?))).collect()
    }

    pub async fn stage_count(&self, arn: &str) -> Result<u32, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM presence WHERE stage_arn = $1").bind(arn).fetch_one(&self.pool).await?;
        count(&row, "n")
    }
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
