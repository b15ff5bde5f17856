//! Rows of `stages` and `replications`.

use super::{decode, Store, StoreError};
use crate::domain::{ChannelId, StageArn, UnixMs};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::BTreeMap;

/// A stage this server manages.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRecord {
    /// The channel whose stage group this stage is in.
    pub channel: ChannelId,
    pub arn: StageArn,
    pub name: String,
    pub is_master: bool,
    pub auto_scaled: bool,
    pub parent_arn: Option<StageArn>,
    pub tags: BTreeMap<String, String>,
    /// Endpoint name → URL (`whip`, `whep`, `events`, ...).
    pub endpoints: BTreeMap<String, String>,
    pub active_session_id: Option<String>,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationRecord {
    pub destination_arn: StageArn,
    pub source_arn: StageArn,
    pub participant_id: String,
    pub started_at: UnixMs,
}

const STAGE_COLUMNS: &str =
    "arn, name, is_master, auto_scaled, parent_arn, tags, endpoints, active_session_id, created_at, updated_at, channel";

fn stage_from_row(r: &AnyRow) -> Result<StageRecord, StoreError> {
    let json_map = |col: &str| -> Result<BTreeMap<String, String>, sqlx::Error> {
        let text: String = r.try_get(col)?;
        decode(serde_json::from_str(&text))
    };
    let channel: String = r.try_get("channel")?;
    let parent_arn: Option<String> = r.try_get("parent_arn")?;
    Ok(StageRecord {
        channel: decode(ChannelId::parse(channel))?,
        arn: decode(StageArn::parse(r.try_get::<String, _>("arn")?))?,
        name: r.try_get("name")?,
        is_master: r.try_get::<i64, _>("is_master")? != 0,
        auto_scaled: r.try_get::<i64, _>("auto_scaled")? != 0,
        parent_arn: parent_arn.map(|a| decode(StageArn::parse(a))).transpose()?,
        tags: json_map("tags")?,
        endpoints: json_map("endpoints")?,
        active_session_id: r.try_get("active_session_id")?,
        created_at: UnixMs::from_millis(r.try_get("created_at")?),
        updated_at: UnixMs::from_millis(r.try_get("updated_at")?),
    })
}

fn to_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

/// The `stages` and `replications` tables: `store.stages()`.
#[derive(Clone, Copy)]
pub struct StageRows<'a>(pub(super) &'a Store);

impl StageRows<'_> {
    pub async fn insert(&self, s: &StageRecord) -> Result<(), StoreError> {
        let mut w = self.0.write_tx().await?;
        if s.is_master {
            sqlx::query("UPDATE stages SET is_master = 0 WHERE is_master = 1 AND channel = $1")
                .bind(s.channel.as_str())
                .execute(&mut *w.tx)
                .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO stages ({STAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (arn) DO UPDATE SET name = excluded.name, is_master = excluded.is_master,
               tags = excluded.tags, endpoints = excluded.endpoints, updated_at = excluded.updated_at"
        ))
        .bind(s.arn.as_str())
        .bind(&s.name)
        .bind(i64::from(s.is_master))
        .bind(i64::from(s.auto_scaled))
        .bind(s.parent_arn.as_ref().map(StageArn::as_str))
        .bind(to_json(&s.tags))
        .bind(to_json(&s.endpoints))
        .bind(&s.active_session_id)
        .bind(s.created_at.as_millis())
        .bind(s.updated_at.as_millis())
        .bind(s.channel.as_str())
        .execute(&mut *w.tx)
        .await?;
        Ok(w.tx.commit().await?)
    }

    pub async fn get(&self, arn: &str) -> Result<Option<StageRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {STAGE_COLUMNS} FROM stages WHERE arn = $1"))
            .bind(arn)
            .fetch_optional(&self.0.pool)
            .await?;
        row.as_ref().map(stage_from_row).transpose()
    }

    /// The channel's master stage.
    pub async fn master(&self, channel: &ChannelId) -> Result<Option<StageRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {STAGE_COLUMNS} FROM stages WHERE is_master = 1 AND channel = $1"))
            .bind(channel.as_str())
            .fetch_optional(&self.0.pool)
            .await?;
        row.as_ref().map(stage_from_row).transpose()
    }

    /// The stages of one channel, master first, then oldest first.
    pub async fn of_channel(&self, channel: &ChannelId) -> Result<Vec<StageRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STAGE_COLUMNS} FROM stages WHERE channel = $1 ORDER BY is_master DESC, created_at, arn"
        ))
        .bind(channel.as_str())
        .fetch_all(&self.0.pool)
        .await?;
        rows.iter().map(stage_from_row).collect()
    }

    /// Every managed stage, master first, then oldest first.
    pub async fn list(&self) -> Result<Vec<StageRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {STAGE_COLUMNS} FROM stages ORDER BY is_master DESC, created_at, arn"))
            .fetch_all(&self.0.pool)
            .await?;
        rows.iter().map(stage_from_row).collect()
    }

    pub async fn count(&self) -> Result<u32, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM stages").fetch_one(&self.0.pool).await?;
        super::count(&row, "n")
    }

    pub async fn update(
        &self,
        arn: &str,
        name: Option<&str>,
        tags: Option<&BTreeMap<String, String>>,
        now: i64,
    ) -> Result<Option<StageRecord>, StoreError> {
        let mut w = self.0.write_tx().await?;
        let n =
            sqlx::query("UPDATE stages SET name = COALESCE($1, name), tags = COALESCE($2, tags), updated_at = $3 WHERE arn = $4")
                .bind(name)
                .bind(tags.map(to_json))
                .bind(now)
                .bind(arn)
                .execute(&mut *w.tx)
                .await?;
        w.tx.commit().await?;
        if n.rows_affected() == 0 {
            return Ok(None);
        }
        self.get(arn).await
    }

    /// Deletes a stage record and its replication state; returns whether it existed.
    pub async fn delete(&self, arn: &str) -> Result<bool, StoreError> {
        let mut w = self.0.write_tx().await?;
        sqlx::query("DELETE FROM replications WHERE destination_arn = $1").bind(arn).execute(&mut *w.tx).await?;
        let n = sqlx::query("DELETE FROM stages WHERE arn = $1").bind(arn).execute(&mut *w.tx).await?;
        w.tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    pub async fn put_replication(&self, r: &ReplicationRecord) -> Result<(), StoreError> {
        let mut w = self.0.write_tx().await?;
        sqlx::query(
            "INSERT INTO replications (destination_arn, source_arn, participant_id, started_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (destination_arn) DO UPDATE SET source_arn = excluded.source_arn,
               participant_id = excluded.participant_id, started_at = excluded.started_at",
        )
        .bind(r.destination_arn.as_str())
        .bind(r.source_arn.as_str())
        .bind(&r.participant_id)
        .bind(r.started_at.as_millis())
        .execute(&mut *w.tx)
        .await?;
        Ok(w.tx.commit().await?)
    }

    pub async fn replication(&self, destination_arn: &str) -> Result<Option<ReplicationRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT destination_arn, source_arn, participant_id, started_at FROM replications WHERE destination_arn = $1",
        )
        .bind(destination_arn)
        .fetch_optional(&self.0.pool)
        .await?;
        row.map(|r| {
            Ok(ReplicationRecord {
                destination_arn: decode(StageArn::parse(r.try_get::<String, _>("destination_arn")?))?,
                source_arn: decode(StageArn::parse(r.try_get::<String, _>("source_arn")?))?,
                participant_id: r.try_get("participant_id")?,
                started_at: UnixMs::from_millis(r.try_get("started_at")?),
            })
        })
        .transpose()
    }

    pub async fn delete_replication(&self, destination_arn: &str) -> Result<bool, StoreError> {
        let mut w = self.0.write_tx().await?;
        let n =
            sqlx::query("DELETE FROM replications WHERE destination_arn = $1").bind(destination_arn).execute(&mut *w.tx).await?;
        w.tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }
}
