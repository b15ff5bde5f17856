//! Rows of `channels`: each broadcaster's name, title, stream key (as its hash) and master stage.

use super::{decode, Store, StoreError};
use crate::domain::UnixMs;
use crate::domain::{ChannelId, StageArn};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A channel as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRecord {
    pub name: ChannelId,
    pub title: String,
    pub description: Option<String>,
    /// SHA-256 (lowercase hex) of the stream key; `None` until one is issued.
    pub stream_key_hash: Option<String>,
    pub master_stage_arn: Option<StageArn>,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

/// A change to a channel's description: `PUT` may leave it, set it or clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptionChange<'a> {
    Keep,
    Set(&'a str),
    Clear,
}

const CHANNEL_COLUMNS: &str = "name, title, description, stream_key_hash, master_stage_arn, created_at, updated_at";

fn channel_from_row(r: &AnyRow) -> Result<ChannelRecord, StoreError> {
    let master: Option<String> = r.try_get("master_stage_arn")?;
    Ok(ChannelRecord {
        name: decode(ChannelId::parse(r.try_get::<String, _>("name")?))?,
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        stream_key_hash: r.try_get("stream_key_hash")?,
        master_stage_arn: master.map(|a| decode(StageArn::parse(a))).transpose()?,
        created_at: UnixMs::from_millis(r.try_get("created_at")?),
        updated_at: UnixMs::from_millis(r.try_get("updated_at")?),
    })
}

/// The `channels` table: `store.channels()`.
#[derive(Clone, Copy)]
pub struct ChannelRows<'a>(pub(super) &'a Store);

impl ChannelRows<'_> {
    /// Adds a channel; false when its name is taken (also when another instance took it first).
    pub async fn insert(&self, c: &ChannelRecord) -> Result<bool, StoreError> {
        let mut w = self.0.write_tx().await?;
        let n = sqlx::query(&format!(
            "INSERT INTO channels ({CHANNEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING"
        ))
        .bind(c.name.as_str())
        .bind(&c.title)
        .bind(&c.description)
        .bind(&c.stream_key_hash)
        .bind(c.master_stage_arn.as_ref().map(StageArn::as_str))
        .bind(c.created_at.as_millis())
        .bind(c.updated_at.as_millis())
        .execute(&mut *w.tx)
        .await?;
        w.tx.commit().await?;
        Ok(n.rows_affected() == 1)
    }

    pub async fn get(&self, name: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE name = $1"))
            .bind(name.as_str())
            .fetch_optional(&self.0.pool)
            .await?;
        row.as_ref().map(channel_from_row).transpose()
    }

    /// Every channel, oldest first.
    pub async fn list(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY created_at, name"))
            .fetch_all(&self.0.pool)
            .await?;
        rows.iter().map(channel_from_row).collect()
    }

    pub async fn count(&self) -> Result<u32, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM channels").fetch_one(&self.0.pool).await?;
        super::count(&row, "n")
    }

    /// Changes a channel's title and description; `None` when there is no such channel.
    pub async fn update(
        &self,
        name: &ChannelId,
        title: Option<&str>,
        description: DescriptionChange<'_>,
        now: i64,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let (set_description, description) = match description {
            DescriptionChange::Keep => (0i64, None),
            DescriptionChange::Set(d) => (1, Some(d)),
            DescriptionChange::Clear => (1, None),
        };
        let mut w = self.0.write_tx().await?;
        let n = sqlx::query(
            "UPDATE channels SET title = COALESCE($1, title),
               description = CASE WHEN $2 = 1 THEN $3 ELSE description END, updated_at = $4 WHERE name = $5",
        )
        .bind(title)
        .bind(set_description)
        .bind(description)
        .bind(now)
        .bind(name.as_str())
        .execute(&mut *w.tx)
        .await?;
        w.tx.commit().await?;
        if n.rows_affected() == 0 {
            return Ok(None);
        }
        self.get(name).await
    }

    /// Removes a channel's row; whether it existed.
    pub async fn delete(&self, name: &ChannelId) -> Result<bool, StoreError> {
        let mut w = self.0.write_tx().await?;
        let n = sqlx::query("DELETE FROM channels WHERE name = $1").bind(name.as_str()).execute(&mut *w.tx).await?;
        w.tx.commit().await?;
        Ok(n.rows_affected() == 1)
    }

    /// Replaces a channel's stream key hash (the old key stops working); whether it exists.
    pub async fn set_stream_key_hash(&self, name: &ChannelId, hash: &str, now: i64) -> Result<bool, StoreError> {
        let mut w = self.0.write_tx().await?;
        let n = sqlx::query("UPDATE channels SET stream_key_hash = $1, updated_at = $2 WHERE name = $3")
            .bind(hash)
            .bind(now)
            .bind(name.as_str())
            .execute(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        Ok(n.rows_affected() == 1)
    }

    /// The channel whose stream key has this hash.
    pub async fn by_stream_key_hash(&self, hash: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE stream_key_hash = $1"))
            .bind(hash)
            .fetch_optional(&self.0.pool)
            .await?;
        row.as_ref().map(channel_from_row).transpose()
    }

    /// The channel's master stage, set to `candidate` first if it had none (the first writer
    /// wins, across instances). `None` when there is no such channel.
    pub async fn master_or_insert(&self, name: &ChannelId, candidate: &StageArn) -> Result<Option<StageArn>, StoreError> {
        let mut w = self.0.write_tx().await?;
        sqlx::query("UPDATE channels SET master_stage_arn = $1 WHERE name = $2 AND master_stage_arn IS NULL")
            .bind(candidate.as_str())
            .bind(name.as_str())
            .execute(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        Ok(self.get(name).await?.and_then(|c| c.master_stage_arn))
    }

    /// Makes `arn` the channel's master stage (a configured one, or a replacement for one that
    /// is gone).
    pub async fn set_master(&self, name: &ChannelId, arn: &StageArn) -> Result<(), StoreError> {
        let mut w = self.0.write_tx().await?;
        sqlx::query("UPDATE channels SET master_stage_arn = $1 WHERE name = $2")
            .bind(arn.as_str())
            .bind(name.as_str())
            .execute(&mut *w.tx)
            .await?;
        Ok(w.tx.commit().await?)
    }
}
