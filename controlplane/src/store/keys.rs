//! Client API keys: reading them, creating, updating and deleting them,
//! with their limits. Only a key's hash and display prefix are stored,
//! never its secret.

use llmgw_core::limits::Scope;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::limits;
use super::row::{Broken, RowReader};
use super::{exists, int, now_ms, KeySpec, Result, Store, StoreError};

pub(super) const SCOPE: Scope = Scope::Key;

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub spec: KeySpec,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub broken: Vec<Broken>,
}

impl Store {
    pub async fn keys(&self, conn: &mut AnyConnection) -> Result<Vec<KeyRow>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
        let mut keys: Vec<KeyRow> = rows.iter().map(key_from_row).collect();
        limits::attach_all(conn, &mut keys).await?;
        Ok(keys)
    }

    pub async fn key(&self, conn: &mut AnyConnection, name: &str) -> Result<KeyRow> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("API key '{name}' not found")))?;
        let mut key = key_from_row(&row);
        limits::attach(conn, &mut key).await?;
        Ok(key)
    }

    pub async fn insert_key(&self, tx: &mut AnyConnection, spec: &KeySpec) -> Result<()> {
        spec.validate()?;
        if exists(tx, "api_keys", &spec.name).await? {
            return Err(StoreError::AlreadyExists(format!(
                "API key '{}' already exists",
                spec.name
            )));
        }
        let models =
            serde_json::to_string(&spec.models).map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query(
            "INSERT INTO api_keys (name, key_hash, prefix, models, expires_at, revoked, \
             log_bodies, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&spec.name)
        .bind(&spec.hash)
        .bind(&spec.prefix)
        .bind(models)
        .bind(spec.expires_at)
        .bind(int(spec.revoked))
        .bind(int(spec.log_bodies))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(same_secret)?;
        limits::write(tx, SCOPE.as_str(), &spec.name, spec.limits.as_ref()).await
    }

    /// Updates a key; its secret changes only through a new hash.
    pub async fn update_key(&self, tx: &mut AnyConnection, spec: &KeySpec) -> Result<()> {
        spec.validate()?;
        let models =
            serde_json::to_string(&spec.models).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE api_keys SET models = $1, expires_at = $2, revoked = $3, log_bodies = $4, \
             key_hash = $5, prefix = $6 WHERE name = $7",
        )
        .bind(models)
        .bind(spec.expires_at)
        .bind(int(spec.revoked))
        .bind(int(spec.log_bodies))
        .bind(&spec.hash)
        .bind(&spec.prefix)
        .bind(&spec.name)
        .execute(&mut *tx)
        .await
        .map_err(same_secret)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "API key '{}' not found",
                spec.name
            )));
        }
        limits::write(tx, SCOPE.as_str(), &spec.name, spec.limits.as_ref()).await
    }

    pub async fn delete_key(&self, tx: &mut AnyConnection, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("API key '{name}' not found")));
        }
        limits::write(tx, SCOPE.as_str(), name, None).await
    }
}

/// The unique index on the hash refuses a second key with the same secret.
fn same_secret(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::AlreadyExists("another API key has the same secret".into())
        }
        other => StoreError::Db(other),
    }
}

fn key_from_row(r: &AnyRow) -> KeyRow {
    let mut rd = RowReader::new(r);
    let models: String = rd.get("models", "models");
    let models = serde_json::from_str(&models).unwrap_or_else(|_| {
        rd.note("models", "the stored models are not a JSON list");
        Vec::new()
    });
    let spec = KeySpec {
        name: rd.get("name", "name"),
        hash: rd.get("key_hash", "hash"),
        prefix: rd.get("prefix", "prefix"),
        models,
        expires_at: rd.get("expires_at", "expires_at"),
        revoked: rd.flag("revoked"),
        log_bodies: rd.flag("log_bodies"),
        limits: None,
    };
    let created_at = rd.get("created_at", "created_at");
    let last_used_at = rd.get("last_used_at", "last_used_at");
    let broken = rd.broken_or(|| spec.problems().0);
    KeyRow {
        spec,
        created_at,
        last_used_at,
        broken,
    }
}
