//! Rows of `viewer_snapshots`: each stage's viewer count over time.

use super::{count, Store, StoreError};
use sqlx::Row;

/// The `viewer_snapshots` table (viewer counts over time): `store.snapshots()`.
#[derive(Clone, Copy)]
pub struct SnapshotRows<'a>(pub(super) &'a Store);

impl SnapshotRows<'_> {
    /// Records the viewer count of every stage at `now`.
    pub async fn insert(&self, now: i64, counts: &[(String, u32)]) -> Result<(), StoreError> {
        let mut w = self.0.write_tx().await?;
        for (arn, count) in counts {
            sqlx::query(
                "INSERT INTO viewer_snapshots (stage_arn, taken_at, viewer_count, channel) VALUES ($1, $2, $3, \
                 COALESCE((SELECT channel FROM stages WHERE arn = $1), 'default'))",
            )
            .bind(arn)
            .bind(now)
            .bind(i64::from(*count))
            .execute(&mut *w.tx)
            .await?;
        }
        Ok(w.tx.commit().await?)
    }

    /// Deletes snapshots taken before `before`; returns how many.
    pub async fn prune(&self, before: i64) -> Result<u64, StoreError> {
        let mut w = self.0.write_tx().await?;
        let n = sqlx::query("DELETE FROM viewer_snapshots WHERE taken_at < $1").bind(before).execute(&mut *w.tx).await?;
        w.tx.commit().await?;
        Ok(n.rows_affected())
    }

    /// Snapshots since `since`, oldest first: (stage ARN, taken at, viewer count).
    /// Each channel's total viewers per snapshot since `since`: `(channel, taken_at, viewers)`,
    /// oldest first.
    pub async fn channel_totals_since(&self, since: i64) -> Result<Vec<(String, i64, u32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel, taken_at, CAST(SUM(viewer_count) AS BIGINT) AS viewers FROM viewer_snapshots WHERE taken_at >= $1 \
             GROUP BY channel, taken_at ORDER BY taken_at, channel",
        )
        .bind(since)
        .fetch_all(&self.0.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("channel")?, r.try_get("taken_at")?, count(r, "viewers")?))).collect()
    }

    pub async fn since(&self, since: i64) -> Result<Vec<(String, i64, u32)>, StoreError> {
        let rows = sqlx::query(
            "SELECT stage_arn, taken_at, viewer_count FROM viewer_snapshots WHERE taken_at >= $1 ORDER BY taken_at, stage_arn",
        )
        .bind(since)
        .fetch_all(&self.0.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("stage_arn")?, r.try_get("taken_at")?, count(r, "viewer_count")?))).collect()
    }
}
