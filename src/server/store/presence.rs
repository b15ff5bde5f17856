//! Rows of `presence` (who watches which stage now) and `watch_sessions` (history), which
//! joins, heartbeats, leaves and sweeps keep in step in one transaction each.

use super::{count, DbKind, Store, StoreError};
use crate::domain::UnixMs;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct PresenceRecord {
    pub stage_arn: String,
    pub user_id: String,
    pub participant_id: String,
    pub session_id: i64,
    pub joined_at: UnixMs,
    pub last_heartbeat: UnixMs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: i64,
    pub user_id: String,
    pub stage_arn: String,
    pub participant_id: String,
    pub joined_at: UnixMs,
    pub left_at: Option<UnixMs>,
    pub watch_duration_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageViewStats {
    pub total_views: i64,
    pub unique_viewers: i64,
    pub avg_watch_duration: i64,
    pub max_watch_duration: i64,
    pub total_watch_time: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JoinResult {
    Joined {
        is_new: bool,
        current_viewers: u32,
        session_id: i64,
    },
    /// The viewer holds a seat on the stage until `expires_at` and is counted once its media
    /// connects ([`PresenceRows::connect`]); `current_viewers` is the stage's count now.
    Held {
        current_viewers: u32,
    },
    /// The stage already holds `max` viewers and this user is not one of them.
    Full,
}

/// How a join counts its viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinMode {
    /// Counted now; with `max`, refused once the stage's viewers and held seats reach it.
    Count { max: Option<u32> },
    /// Counted now if the user is already counted on the stage (a new ticket); otherwise a
    /// seat is held until `until` and the viewer is counted when its media connects.
    Hold { max: u32, until: UnixMs },
}

fn presence_from_row(r: &AnyRow) -> Result<PresenceRecord, StoreError> {
    Ok(PresenceRecord {
        stage_arn: r.try_get("stage_arn")?,
        user_id: r.try_get("user_id")?,
        participant_id: r.try_get("participant_id")?,
        session_id: r.try_get("session_id")?,
        joined_at: UnixMs::from_millis(r.try_get("joined_at")?),
        last_heartbeat: UnixMs::from_millis(r.try_get("last_heartbeat")?),
    })
}

fn session_from_row(r: &AnyRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        stage_arn: r.try_get("stage_arn")?,
        participant_id: r.try_get("participant_id")?,
        joined_at: UnixMs::from_millis(r.try_get("joined_at")?),
        left_at: r.try_get::<Option<i64>, _>("left_at")?.map(UnixMs::from_millis),
        watch_duration_seconds: r.try_get("watch_duration_seconds")?,
    })
}

const PRESENCE_COLUMNS: &str = "stage_arn, user_id, participant_id, session_id, joined_at, last_heartbeat";
const SESSION_COLUMNS: &str = "id, user_id, stage_arn, participant_id, joined_at, left_at, watch_duration_seconds";

/// Closes a watch session at `left_at`.
async fn close_session(tx: &mut Transaction<'static, Any>, session_id: i64, left_at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE watch_sessions SET left_at = $1,
           watch_duration_seconds = CASE WHEN $1 > joined_at THEN ($1 - joined_at) / 1000 ELSE 0 END
         WHERE id = $2 AND left_at IS NULL",
    )
    .bind(left_at)
    .bind(session_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The `presence` table, with the watch sessions its joins and leaves open and close:
/// `store.presence()`.
#[derive(Clone, Copy)]
pub struct PresenceRows<'a>(pub(super) &'a Store);

impl PresenceRows<'_> {
    /// Registers a viewer on a stage (de-duplicated by user id) and opens a watch session for a
    /// new viewer, or holds its seat ([`JoinMode`]). A new viewer is refused once the stage's
    /// viewers and the seats held for others reach the mode's `max`.
    pub async fn join(
        &self,
        stage_arn: &str,
        user_id: &str,
        participant_id: &str,
        now: UnixMs,
        mode: JoinMode,
    ) -> Result<JoinResult, StoreError> {
        let now = now.as_millis();
        let mut w = self.0.write_tx().await?;
        if self.0.kind == DbKind::Postgres {
            // Serialises joins per stage across instances so the capacity check holds.
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS l")
                .bind(stage_arn)
                .fetch_one(&mut *w.tx)
                .await?;
        }
        let existing = sqlx::query("SELECT session_id FROM presence WHERE stage_arn = $1 AND user_id = $2")
            .bind(stage_arn)
            .bind(user_id)
            .fetch_optional(&mut *w.tx)
            .await?;
        // One count per join, under the stage's lock: the figure before this join.
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM presence WHERE stage_arn = $1").bind(stage_arn).fetch_one(&mut *w.tx).await?;
        let present = count(&row, "n")?;
        let (is_new, session_id) = match existing {
            Some(row) => {
                let session_id: i64 = row.try_get("session_id")?;
                sqlx::query("UPDATE presence SET participant_id = $1, last_heartbeat = $2 WHERE stage_arn = $3 AND user_id = $4")
                    .bind(participant_id)
                    .bind(now)
                    .bind(stage_arn)
                    .bind(user_id)
                    .execute(&mut *w.tx)
                    .await?;
                sqlx::query("UPDATE watch_sessions SET participant_id = $1 WHERE id = $2")
                    .bind(participant_id)
                    .bind(session_id)
                    .execute(&mut *w.tx)
                    .await?;
                (false, session_id)
            }
            None => {
                let held = sqlx::query(
                    "SELECT COUNT(*) AS n FROM pending_viewers WHERE stage_arn = $1 AND user_id <> $2 AND expires_at > $3",
                )
                .bind(stage_arn)
                .bind(user_id)
                .bind(now)
                .fetch_one(&mut *w.tx)
                .await?;
                let taken = present + count(&held, "n")?;
                let max = match mode {
                    JoinMode::Count { max } => max,
                    JoinMode::Hold { max, .. } => Some(max),
                };
                if max.is_some_and(|max| taken >= max) {
                    return Ok(JoinResult::Full);
                }
                if let JoinMode::Hold { until, .. } = mode {
                    sqlx::query(
                        "INSERT INTO pending_viewers (stage_arn, user_id, participant_id, expires_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (stage_arn, user_id) DO UPDATE
                         SET participant_id = excluded.participant_id, expires_at = excluded.expires_at",
                    )
                    .bind(stage_arn)
                    .bind(user_id)
                    .bind(participant_id)
                    .bind(until.as_millis())
                    .execute(&mut *w.tx)
                    .await?;
                    w.tx.commit().await?;
                    return Ok(JoinResult::Held { current_viewers: present });
                }
                let row = sqlx::query(
                    "INSERT INTO watch_sessions (user_id, stage_arn, participant_id, joined_at, channel) VALUES ($1, $2, $3, $4, \
                     COALESCE((SELECT channel FROM stages WHERE arn = $2), 'default')) RETURNING id",
                )
                .bind(user_id)
                .bind(stage_arn)
                .bind(participant_id)
                .bind(now)
                .fetch_one(&mut *w.tx)
                .await?;
                let session_id: i64 = row.try_get("id")?;
                sqlx::query(&format!("INSERT INTO presence ({PRESENCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $5)"))
                    .bind(stage_arn)
                    .bind(user_id)
                    .bind(participant_id)
                    .bind(session_id)
                    .bind(now)
                    .execute(&mut *w.tx)
                    .await?;
                (true, session_id)
            }
        };
        let current_viewers = present + u32::from(is_new);
        w.tx.commit().await?;
        Ok(JoinResult::Joined { is_new, current_viewers, session_id })
    }

    /// The viewer holding a seat on `stage_arn` with the ticket `participant_id` connected its
    /// media: it is counted now (its seat becomes its place). `None` when no such seat is held
    /// (the viewer was counted at join, or left).
    pub async fn connect(
        &self,
        stage_arn: &str,
        user_id: &str,
        participant_id: &str,
        now: UnixMs,
    ) -> Result<Option<JoinResult>, StoreError> {
        let now = now.as_millis();
        let held = {
            // The write (and SQLite's writer turn) ends before the join takes its own.
            let mut w = self.0.write_tx().await?;
            let held = sqlx::query(
                "DELETE FROM pending_viewers WHERE stage_arn = $1 AND user_id = $2 AND participant_id = $3 RETURNING expires_at",
            )
            .bind(stage_arn)
            .bind(user_id)
            .bind(participant_id)
            .fetch_optional(&mut *w.tx)
            .await?;
            w.tx.commit().await?;
            held
        };
        if held.is_none() {
            return Ok(None);
        }
        // Its seat was counted against the stage's capacity when it was given.
        Ok(Some(self.join(stage_arn, user_id, participant_id, UnixMs::from_millis(now), JoinMode::Count { max: None }).await?))
    }

    /// Gives back the seat `user_id` holds on `stage_arn` (with `participant_id`, only that
    /// ticket's). Reads first, so that a viewer holding none costs no write. Returns whether a
    /// seat was held.
    pub async fn release_seat(&self, stage_arn: &str, user_id: &str, participant_id: Option<&str>) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT participant_id FROM pending_viewers WHERE stage_arn = $1 AND user_id = $2")
            .bind(stage_arn)
            .bind(user_id)
            .fetch_optional(&self.0.pool)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let held: String = row.try_get("participant_id")?;
        if participant_id.is_some_and(|p| p != held) {
            return Ok(false);
        }
        let mut w = self.0.write_tx().await?;
        let n = sqlx::query("DELETE FROM pending_viewers WHERE stage_arn = $1 AND user_id = $2 AND participant_id = $3")
            .bind(stage_arn)
            .bind(user_id)
            .bind(&held)
            .execute(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    /// Whether the ticket `participant_id` holds an unexpired seat on `stage_arn` for `user_id`.
    pub async fn holds_seat(
        &self,
        stage_arn: &str,
        user_id: &str,
        participant_id: &str,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let now = now.as_millis();
        let row = sqlx::query(
            "SELECT 1 AS held FROM pending_viewers
             WHERE stage_arn = $1 AND user_id = $2 AND participant_id = $3 AND expires_at > $4",
        )
        .bind(stage_arn)
        .bind(user_id)
        .bind(participant_id)
        .bind(now)
        .fetch_optional(&self.0.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Seats held (unexpired) on every stage that has some.
    pub async fn held_counts(&self, now: UnixMs) -> Result<HashMap<String, u32>, StoreError> {
        let now = now.as_millis();
        let rows = sqlx::query("SELECT stage_arn, COUNT(*) AS n FROM pending_viewers WHERE expires_at > $1 GROUP BY stage_arn")
            .bind(now)
            .fetch_all(&self.0.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>("stage_arn")?, count(r, "n")?))).collect()
    }

    /// The stages `user_id` is counted on, first joined first, then those it holds a seat on.
    pub async fn stages_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT stage_arn FROM (SELECT stage_arn, joined_at AS t FROM presence WHERE user_id = $1
             UNION ALL SELECT stage_arn, expires_at AS t FROM pending_viewers WHERE user_id = $1) AS s ORDER BY t",
        )
        .bind(user_id)
        .fetch_all(&self.0.pool)
        .await?;
        Ok(rows.iter().map(|r| r.try_get::<String, _>("stage_arn")).collect::<Result<_, _>>()?)
    }

    pub async fn get(&self, stage_arn: &str, user_id: &str) -> Result<Option<PresenceRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {PRESENCE_COLUMNS} FROM presence WHERE stage_arn = $1 AND user_id = $2"))
            .bind(stage_arn)
            .bind(user_id)
            .fetch_optional(&self.0.pool)
            .await?;
        row.as_ref().map(presence_from_row).transpose()
    }

    /// Writes a batch of heartbeats in one transaction. Returns the (stage, user) pairs that
    /// were no longer present.
    pub async fn record_heartbeats(&self, beats: &[(String, String, UnixMs)]) -> Result<Vec<(String, String)>, StoreError> {
        if beats.is_empty() {
            return Ok(Vec::new());
        }
        let mut gone = Vec::new();
        let mut w = self.0.write_tx().await?;
        for (stage, user, at) in beats {
            let n = sqlx::query(
                "UPDATE presence SET last_heartbeat = CASE WHEN last_heartbeat > $1 THEN last_heartbeat ELSE $1 END
                 WHERE stage_arn = $2 AND user_id = $3",
            )
            .bind(at.as_millis())
            .bind(stage)
            .bind(user)
            .execute(&mut *w.tx)
            .await?;
            if n.rows_affected() == 0 {
                gone.push((stage.clone(), user.clone()));
            }
        }
        w.tx.commit().await?;
        Ok(gone)
    }

    /// Removes a viewer (and any seat it holds) and closes its watch session at `now`. Returns
    /// whether it was present.
    pub async fn leave(&self, stage_arn: &str, user_id: &str, now: UnixMs) -> Result<bool, StoreError> {
        let now = now.as_millis();
        let mut w = self.0.write_tx().await?;
        sqlx::query("DELETE FROM pending_viewers WHERE stage_arn = $1 AND user_id = $2")
            .bind(stage_arn)
            .bind(user_id)
            .execute(&mut *w.tx)
            .await?;
        let row = sqlx::query("DELETE FROM presence WHERE stage_arn = $1 AND user_id = $2 RETURNING session_id")
            .bind(stage_arn)
            .bind(user_id)
            .fetch_optional(&mut *w.tx)
            .await?;
        let present = match row {
            Some(r) => {
                close_session(&mut w.tx, r.try_get("session_id")?, now).await?;
                true
            }
            None => false,
        };
        w.tx.commit().await?;
        Ok(present)
    }

    /// Drops every viewer silent since before `cutoff`, closing each watch session at the
    /// viewer's last heartbeat, and every seat held past its time. Returns the removed viewers.
    pub async fn sweep(&self, cutoff: UnixMs, now: UnixMs) -> Result<Vec<PresenceRecord>, StoreError> {
        let cutoff = cutoff.as_millis();
        let now = now.as_millis();
        let mut w = self.0.write_tx().await?;
        sqlx::query("DELETE FROM pending_viewers WHERE expires_at <= $1").bind(now).execute(&mut *w.tx).await?;
        let rows = sqlx::query(&format!("DELETE FROM presence WHERE last_heartbeat < $1 RETURNING {PRESENCE_COLUMNS}"))
            .bind(cutoff)
            .fetch_all(&mut *w.tx)
            .await?;
        let removed = rows.iter().map(presence_from_row).collect::<Result<Vec<_>, _>>()?;
        for p in &removed {
            close_session(&mut w.tx, p.session_id, p.last_heartbeat.as_millis()).await?;
        }
        w.tx.commit().await?;
        Ok(removed)
    }

    /// Removes every viewer of a stage, closing their sessions at `now`.
    pub async fn clear_stage(&self, stage_arn: &str, now: UnixMs) -> Result<Vec<PresenceRecord>, StoreError> {
        let now = now.as_millis();
        let mut w = self.0.write_tx().await?;
        sqlx::query("DELETE FROM pending_viewers WHERE stage_arn = $1").bind(stage_arn).execute(&mut *w.tx).await?;
        let rows = sqlx::query(&format!("DELETE FROM presence WHERE stage_arn = $1 RETURNING {PRESENCE_COLUMNS}"))
            .bind(stage_arn)
            .fetch_all(&mut *w.tx)
            .await?;
        let removed = rows.iter().map(presence_from_row).collect::<Result<Vec<_>, _>>()?;
        for p in &removed {
            close_session(&mut w.tx, p.session_id, now).await?;
        }
        w.tx.commit().await?;
        Ok(removed)
    }

    pub async fn list(&self, stage_arn: &str) -> Result<Vec<PresenceRecord>, StoreError> {
        let rows =
            sqlx::query(&format!("SELECT {PRESENCE_COLUMNS} FROM presence WHERE stage_arn = $1 ORDER BY joined_at, user_id"))
                .bind(stage_arn)
                .fetch_all(&self.0.pool)
                .await?;
        rows.iter().map(presence_from_row).collect()
    }

    /// Viewer count of every stage that has viewers.
    pub async fn counts(&self) -> Result<HashMap<String, u32>, StoreError> {
        let rows =
            sqlx::query("SELECT stage_arn, COUNT(*) AS n FROM presence GROUP BY stage_arn").fetch_all(&self.0.pool).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>("stage_arn")?, count(r, "n")?))).collect()
    }

    /// Viewer count of one stage.
    pub async fn count(&self, arn: &str) -> Result<u32, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM presence WHERE stage_arn = $1").bind(arn).fetch_one(&self.0.pool).await?;
        count(&row, "n")
    }
}

/// The `watch_sessions` table (history): `store.sessions()`.
#[derive(Clone, Copy)]
pub struct SessionRows<'a>(pub(super) &'a Store);

impl SessionRows<'_> {
    /// Deletes watch sessions that ended before `before` (the history's retention); returns
    /// how many.
    pub async fn prune(&self, before: UnixMs) -> Result<u64, StoreError> {
        let before = before.as_millis();
        let mut w = self.0.write_tx().await?;
        let n = sqlx::query("DELETE FROM watch_sessions WHERE left_at IS NOT NULL AND left_at < $1")
            .bind(before)
            .execute(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        Ok(n.rows_affected())
    }

    /// Closes sessions left open without a presence row (e.g. written before a crash by an
    /// older process): each is closed at its start, since no heartbeat of it survives.
    pub async fn close_orphans(&self) -> Result<u64, StoreError> {
        let mut w = self.0.write_tx().await?;
        let n = sqlx::query(
            "UPDATE watch_sessions SET left_at = joined_at, watch_duration_seconds = 0
             WHERE left_at IS NULL AND id NOT IN (SELECT session_id FROM presence)",
        )
        .execute(&mut *w.tx)
        .await?;
        w.tx.commit().await?;
        Ok(n.rows_affected())
    }

    /// The viewer's most recent watch session on a stage.
    pub async fn latest(&self, user_id: &str, stage_arn: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM watch_sessions WHERE user_id = $1 AND stage_arn = $2 ORDER BY joined_at DESC, id DESC LIMIT 1"
        ))
        .bind(user_id)
        .bind(stage_arn)
        .fetch_optional(&self.0.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// A user's watch sessions, newest first.
    pub async fn history(&self, user_id: &str, limit: u32) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM watch_sessions WHERE user_id = $1 ORDER BY joined_at DESC, id DESC LIMIT $2"
        ))
        .bind(user_id)
        .bind(i64::from(limit))
        .fetch_all(&self.0.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Aggregates over the closed and open sessions of a stage that started at or after `since`.
    pub async fn stage_stats(&self, stage_arn: &str, since: UnixMs) -> Result<StageViewStats, StoreError> {
        let since = since.as_millis();
        let row = sqlx::query(
            "SELECT COUNT(*) AS total_views,
                    COUNT(DISTINCT user_id) AS unique_viewers,
                    CAST(COALESCE(ROUND(AVG(watch_duration_seconds)), 0) AS BIGINT) AS avg_watch,
                    CAST(COALESCE(MAX(watch_duration_seconds), 0) AS BIGINT) AS max_watch,
                    CAST(COALESCE(SUM(watch_duration_seconds), 0) AS BIGINT) AS total_watch
             FROM watch_sessions WHERE stage_arn = $1 AND joined_at >= $2",
        )
        .bind(stage_arn)
        .bind(since)
        .fetch_one(&self.0.pool)
        .await?;
        Ok(StageViewStats {
            total_views: row.try_get("total_views")?,
            unique_viewers: row.try_get("unique_viewers")?,
            avg_watch_duration: row.try_get("avg_watch")?,
            max_watch_duration: row.try_get("max_watch")?,
            total_watch_time: row.try_get("total_watch")?,
        })
    }
}
