//! Rows of `publisher_live`: the publisher some instance reports live, until its report expires.

use super::{Store, StoreError};
use crate::domain::LivePublisher;
use sqlx::Row;

/// The `publisher_live` table: which publisher some instance reports live, so every instance
/// answers alike: `store.publishers()`.
#[derive(Clone, Copy)]
pub struct PublisherRows<'a>(pub(super) &'a Store);

impl PublisherRows<'_> {
    /// Reports the live publisher for the whole deployment until `expires_ms`.
    pub async fn share(&self, p: &LivePublisher, expires_ms: i64) -> Result<(), StoreError> {
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
        .execute(&self.0.pool)
        .await?;
        Ok(())
    }

    /// Withdraws a publisher this instance reported.
    pub async fn unshare(&self, participant_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM publisher_live WHERE participant_id = $1").bind(participant_id).execute(&self.0.pool).await?;
        Ok(())
    }

    /// The publisher some instance reports live, unless its report expired.
    pub async fn shared(&self, now_ms: i64) -> Result<Option<LivePublisher>, StoreError> {
        let row = sqlx::query("SELECT user_id, participant_id, stage_arn, since_ms FROM publisher_live WHERE expires_ms > $1")
            .bind(now_ms)
            .fetch_optional(&self.0.pool)
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
}
