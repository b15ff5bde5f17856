//! Rows of `settings`: deployment-wide values such as the deployment id.

use super::{Store, StoreError};
use sqlx::Row;

/// The `settings` key/value table: `store.settings()`.
#[derive(Clone, Copy)]
pub struct SettingRows<'a>(pub(super) &'a Store);

impl SettingRows<'_> {
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.0.pool).await?;
        Ok(row.map(|r| r.try_get::<String, _>("value")).transpose()?)
    }

    /// A counter kept as a setting (a studio's session epoch): 0 while unset or unreadable.
    pub async fn counter(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.get(key).await?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut w = self.0.write_tx().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&mut *w.tx)
            .await?;
        Ok(w.tx.commit().await?)
    }

    /// The value of `key`, set to `candidate` first if it had none (the first writer wins).
    pub async fn get_or_insert(&self, key: &str, candidate: &str) -> Result<String, StoreError> {
        let mut w = self.0.write_tx().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(candidate)
            .execute(&mut *w.tx)
            .await?;
        w.tx.commit().await?;
        Ok(self.get(key).await?.unwrap_or_else(|| candidate.to_string()))
    }
}
