//! Global settings, and the master-key check: the key the control plane
//! starts with must open what is stored, and values sealed with a previous
//! key are re-sealed with the current one.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use sqlx::{AnyConnection, Row};

use super::providers::{field_of_column, seal_context};
use super::{Result, Store, StoreError};
use crate::secrets::Sealer;

impl Store {
    pub async fn settings(conn: &mut AnyConnection) -> Result<BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT name, value FROM settings")
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("value")?)))
            .collect()
    }

    /// Stores the given settings; bumps the version only if one changed.
    pub async fn sync_settings(&self, wanted: &BTreeMap<String, String>) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let current = Self::settings(&mut conn).await?;
        drop(conn);
        let changed: Vec<_> = wanted
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .collect();
        if changed.is_empty() {
            return Ok(false);
        }
        let mut tx = self.begin_write().await?;
        for (k, v) in changed {
            upsert_setting(&mut tx, k, v).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Checks that the configured master key opens what is stored, and
    /// re-seals values sealed with a previous key. Refuses to go on when a
    /// stored value cannot be opened.
    pub async fn check_master_key(&self) -> Result<()> {
        const CHECK: &str = "master_key_check";
        const CHECK_TEXT: &str = "llmgw master key check";
        let mut conn = self.pool.acquire().await?;
        let stored = Self::settings(&mut conn).await?.remove(CHECK);
        drop(conn);
        match stored {
            None => {
                let sealed = self.sealer.seal(CHECK_TEXT, CHECK)?;
                let mut tx = self.pool.begin().await?;
                upsert_setting(&mut tx, CHECK, &sealed).await?;
                tx.commit().await?;
            }
            Some(sealed) => {
                let plain = self.sealer.open(&sealed, CHECK).map_err(|e| {
                    StoreError::Invalid(format!(
                        "the master key (LLMGW_MASTER_KEY or the master.key file) does not match this database: {e}. \
                         Start with the key the data was sealed with; to rotate, put the old key in LLMGW_MASTER_KEY_PREVIOUS"
                    ))
                })?;
                if plain.expose_secret() != CHECK_TEXT {
                    return Err(StoreError::Invalid(
                        "master key check value is corrupt".into(),
                    ));
                }
            }
        }
        self.reseal_rotated().await
    }

    async fn reseal_rotated(&self) -> Result<()> {
        let current = self.sealer.current_key_id().to_string();
        let rows =
            sqlx::query("SELECT name, api_key_sealed, headers_sealed, proxy_sealed FROM providers")
                .fetch_all(&self.pool)
                .await?;
        let stale = |v: &Option<String>| {
            v.as_deref()
                .and_then(Sealer::key_id_of)
                .is_some_and(|k| k != current)
        };
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for r in &rows {
            let name: String = r.try_get("name")?;
            for col in ["api_key_sealed", "headers_sealed", "proxy_sealed"] {
                let v: Option<String> = r.try_get(col)?;
                if stale(&v) {
                    let ctx = seal_context(&name, col);
                    let plain = match self.sealer.open(v.as_deref().unwrap_or_default(), &ctx) {
                        Ok(p) => p,
                        Err(e) => {
                            // Left as it is: the provider is listed as
                            // broken until it is fixed or deleted.
                            tracing::error!(
                                kind = "provider",
                                name = %name,
                                field = field_of_column(col),
                                error = %e,
                                "cannot re-seal a stored secret"
                            );
                            continue;
                        }
                    };
                    let resealed = self.sealer.seal(plain.expose_secret(), &ctx)?;
                    sqlx::query(&format!("UPDATE providers SET {col} = $1 WHERE name = $2"))
                        .bind(resealed)
                        .bind(&name)
                        .execute(&mut *tx)
                        .await?;
                    n += 1;
                }
            }
        }
        let check: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'master_key_check'")
                .fetch_optional(&mut *tx)
                .await?;
        if stale(&check) {
            let sealed = self
                .sealer
                .seal("llmgw master key check", "master_key_check")?;
            upsert_setting(&mut tx, "master_key_check", &sealed).await?;
        }
        tx.commit().await?;
        if n > 0 {
            tracing::info!(
                values = n,
                "re-sealed provider secrets with the current master key"
            );
        }
        Ok(())
    }
}

async fn upsert_setting(tx: &mut AnyConnection, name: &str, value: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(value)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
