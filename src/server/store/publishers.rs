//! Rows of `publisher_live`: each channel's publisher as some instance reports it, until the
//! report expires.

use super::{Store, StoreError};
use crate::domain::{ChannelId, LivePublisher, LivePublishers};
use sqlx::Row;

/// The `publisher_live` table: which publisher some instance reports live, so every instance
/// answers alike: `store.publishers()`.
#[derive(Clone, Copy)]
pub struct PublisherRows<'a>(pub(super) &'a Store);

impl PublisherRows<'_> {
    /// Reports the channel's live publisher until `expires_ms`.
    pub async fn share(&self, channel: &ChannelId, p: &LivePublisher, expires_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO publisher_live (channel, user_id, participant_id, stage_arn, since_ms, expires_ms) \
             VALUES ($6, $1, $2, $3, $4, $5) ON CONFLICT (channel) DO UPDATE SET user_id = excluded.user_id, \
             participant_id = excluded.participant_id, stage_arn = excluded.stage_arn, since_ms = excluded.since_ms, \
             expires_ms = excluded.expires_ms",
        )
        .bind(&p.user_id)
        .bind(&p.participant_id)
        .bind(&p.stage_arn)
        .bind(p.since.as_millis())
        .bind(expires_ms)
        .bind(channel.as_str())
        .execute(&self.0.pool)
        .await?;
        Ok(())
    }

    /// Withdraws a publisher this instance reported.
    pub async fn unshare(&self, channel: &ChannelId, participant_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM publisher_live WHERE channel = $1 AND participant_id = $2")
            .bind(channel.as_str())
            .bind(participant_id)
            .execute(&self.0.pool)
            .await?;
        Ok(())
    }

    /// The channel's publisher some instance reports live, unless its report expired.
    pub async fn shared(&self, channel: &ChannelId, now_ms: i64) -> Result<Option<LivePublisher>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, participant_id, stage_arn, since_ms FROM publisher_live WHERE channel = $1 AND expires_ms > $2",
        )
        .bind(channel.as_str())
        .bind(now_ms)
        .fetch_optional(&self.0.pool)
        .await?;
        Ok(row.map(|r| publisher(&r)).transpose()?)
    }

    /// Every channel's publisher some instance reports live, unless its report expired.
    pub async fn shared_all(&self, now_ms: i64) -> Result<LivePublishers, StoreError> {
        let rows =
            sqlx::query("SELECT channel, user_id, participant_id, stage_arn, since_ms FROM publisher_live WHERE expires_ms > $1")
                .bind(now_ms)
                .fetch_all(&self.0.pool)
                .await?;
        let mut live = LivePublishers::new();
        for r in rows {
            let channel: String = r.try_get("channel")?;
            // A row of a channel name this version cannot read is no publisher of its channels.
            let Ok(channel) = ChannelId::parse(channel) else { continue };
            live.insert(channel, publisher(&r)?);
        }
        Ok(live)
    }
}

fn publisher(r: &sqlx::any::AnyRow) -> Result<LivePublisher, sqlx::Error> {
    Ok(LivePublisher {
        user_id: r.try_get("user_id")?,
        participant_id: r.try_get("participant_id")?,
        stage_arn: r.try_get("stage_arn")?,
        since: crate::domain::UnixMs::from_millis(r.try_get("since_ms")?),
    })
}
