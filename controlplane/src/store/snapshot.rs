//! The source of a snapshot: the whole configuration read at one
//! consistent point.

use std::collections::BTreeMap;

use super::{Backend, KeyRow, LimitsRow, ModelRow, ProviderRow, Result, Store};

/// Everything a snapshot is built from, read at one consistent point.
#[derive(Debug, Default)]
pub struct ConfigState {
    pub version: u64,
    pub providers: Vec<ProviderRow>,
    pub models: Vec<ModelRow>,
    pub keys: Vec<KeyRow>,
    pub settings: BTreeMap<String, String>,
    /// The limits of every key that sets none.
    pub default_key_limits: LimitsRow,
}

impl Store {
    /// Reads the whole configuration at one consistent point.
    pub async fn config_state(&self) -> Result<ConfigState> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let state = ConfigState {
            version: Self::version_in(&mut tx).await?,
            providers: self.providers(&mut tx).await?,
            models: self.models(&mut tx).await?,
            keys: self.keys(&mut tx).await?,
            settings: Self::settings(&mut tx).await?,
            default_key_limits: self.default_key_limits(&mut tx).await?,
        };
        tx.commit().await?;
        Ok(state)
    }
}
