//! Upstream providers: reading them (with their secrets opened), creating,
//! updating and deleting them. The API key, the headers and the proxy URL
//! (which may hold credentials) are sealed with
//! the master key, bound to the provider's name and column. A provider's
//! limits are read and written with it.

use std::collections::BTreeMap;

use llmgw_core::limits::Scope;
use llmgw_core::Protocol;
use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use super::limits;
use super::row::{Broken, RowReader};
use super::{exists, int, now_ms, specs, ProviderSpec, Result, Store, StoreError};

pub(super) const SCOPE: Scope = Scope::Provider;

/// A provider as stored, with its secrets opened. `broken` lists the
/// fields that could not be opened or parsed (their values in `spec` are
/// defaults); such a provider is left out of snapshots.
#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub spec: ProviderSpec,
    pub created_at: i64,
    pub updated_at: i64,
    pub broken: Vec<Broken>,
}

impl Store {
    fn provider_from_row(&self, r: &AnyRow) -> ProviderRow {
        let mut rd = RowReader::new(r);
        let name: String = rd.get("name", "name");
        let open = |rd: &mut RowReader<'_>, col: &str| -> Option<SecretString> {
            let sealed: Option<String> = rd.get(col, field_of_column(col));
            let sealed = sealed?;
            match self.sealer.open(&sealed, &seal_context(&name, col)) {
                Ok(plain) => Some(plain),
                Err(e) => {
                    rd.note(field_of_column(col), format!("cannot be decrypted: {e}"));
                    None
                }
            }
        };
        let api_key = open(&mut rd, "api_key_sealed");
        let headers = match open(&mut rd, "headers_sealed") {
            Some(plain) => serde_json::from_str(plain.expose_secret()).unwrap_or_else(|_| {
                rd.note("headers", "the stored headers are not a JSON object");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        let proxy = open(&mut rd, "proxy_sealed");
        let spec = ProviderSpec {
            protocol: rd.parse("protocol", Protocol::OpenAi),
            name,
            base_url: rd.get("base_url", "base_url"),
            api_key,
            headers,
            timeout_s: rd.u32("timeout_s"),
            stream_usage: rd.flag("stream_usage"),
            enabled: rd.flag("enabled"),
            limits: None,
            proxy,
            default_params: rd.default_params(),
        };
        let created_at = rd.get("created_at", "created_at");
        let updated_at = rd.get("updated_at", "updated_at");
        let broken = rd.broken_or(|| spec.problems().0);
        ProviderRow {
            spec,
            created_at,
            updated_at,
            broken,
        }
    }

    pub async fn providers(&self, conn: &mut AnyConnection) -> Result<Vec<ProviderRow>> {
        let rows = sqlx::query("SELECT * FROM providers ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
        let mut providers: Vec<ProviderRow> =
            rows.iter().map(|r| self.provider_from_row(r)).collect();
        limits::attach_all(conn, &mut providers).await?;
        Ok(providers)
    }

    pub async fn provider(&self, conn: &mut AnyConnection, name: &str) -> Result<ProviderRow> {
        let row = sqlx::query("SELECT * FROM providers WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("provider '{name}' not found")))?;
        let mut provider = self.provider_from_row(&row);
        limits::attach(conn, &mut provider).await?;
        Ok(provider)
    }

    fn seal_provider(&self, spec: &ProviderSpec) -> Result<Sealed> {
        let key = match &spec.api_key {
            Some(k) if !k.expose_secret().is_empty() => Some(self.sealer.seal(
                k.expose_secret(),
                &seal_context(&spec.name, "api_key_sealed"),
            )?),
            _ => None,
        };
        let headers = if spec.headers.is_empty() {
            None
        } else {
            let json = serde_json::to_string(&spec.headers)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            Some(
                self.sealer
                    .seal(&json, &seal_context(&spec.name, "headers_sealed"))?,
            )
        };
        let proxy = match &spec.proxy {
            Some(p) => Some(
                self.sealer
                    .seal(p.expose_secret(), &seal_context(&spec.name, "proxy_sealed"))?,
            ),
            None => None,
        };
        Ok(Sealed {
            key,
            headers,
            proxy,
        })
    }

    pub async fn insert_provider(&self, tx: &mut AnyConnection, spec: &ProviderSpec) -> Result<()> {
        spec.validate()?;
        if exists(tx, "providers", &spec.name).await? {
            return Err(StoreError::AlreadyExists(format!(
                "provider '{}' already exists",
                spec.name
            )));
        }
        let sealed = self.seal_provider(spec)?;
        let now = now_ms();
        let insert = sqlx::query(
            "INSERT INTO providers (name, protocol, base_url, api_key_sealed, headers_sealed, \
             timeout_s, stream_usage, enabled, proxy_sealed, default_params, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&spec.name);
        bind_settings(insert, spec, sealed)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        limits::write(tx, SCOPE.as_str(), &spec.name, spec.limits.as_ref()).await
    }

    pub async fn update_provider(&self, tx: &mut AnyConnection, spec: &ProviderSpec) -> Result<()> {
        spec.validate()?;
        let sealed = self.seal_provider(spec)?;
        let update = sqlx::query(
            "UPDATE providers SET protocol = $1, base_url = $2, api_key_sealed = $3, \
             headers_sealed = $4, timeout_s = $5, stream_usage = $6, enabled = $7, \
             proxy_sealed = $8, default_params = $9, updated_at = $10 WHERE name = $11",
        );
        let done = bind_settings(update, spec, sealed)
            .bind(now_ms())
            .bind(&spec.name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "provider '{}' not found",
                spec.name
            )));
        }
        limits::write(tx, SCOPE.as_str(), &spec.name, spec.limits.as_ref()).await
    }

    /// Deletes a provider unless a model still uses it.
    pub async fn delete_provider(&self, tx: &mut AnyConnection, name: &str) -> Result<()> {
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT m.name FROM models m \
             JOIN model_targets t ON t.model_id = m.id \
             JOIN providers p ON p.id = t.provider_id \
             WHERE p.name = $1 ORDER BY m.name",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !users.is_empty() {
            return Err(StoreError::InUse(format!(
                "provider '{name}' is used by model{} {}; remove it from {} first",
                if users.len() == 1 { "" } else { "s" },
                users
                    .iter()
                    .map(|u| format!("'{u}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if users.len() == 1 {
                    "that model"
                } else {
                    "those models"
                },
            )));
        }
        let done = sqlx::query("DELETE FROM providers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("provider '{name}' not found")));
        }
        limits::write(tx, SCOPE.as_str(), name, None).await
    }
}

/// Binds a provider's settings (everything but its name and times), in the
/// order both the INSERT and the UPDATE list their columns.
fn bind_settings<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    spec: &'q ProviderSpec,
    sealed: Sealed,
) -> Query<'q, Any, AnyArguments<'q>> {
    q.bind(spec.protocol.as_str())
        .bind(&spec.base_url)
        .bind(sealed.key)
        .bind(sealed.headers)
        .bind(i64::from(spec.timeout_s))
        .bind(int(spec.stream_usage))
        .bind(int(spec.enabled))
        .bind(sealed.proxy)
        .bind(specs::params_to_json(&spec.default_params))
}

/// A provider's sealed columns.
struct Sealed {
    key: Option<String>,
    headers: Option<String>,
    proxy: Option<String>,
}

pub(super) fn seal_context(provider: &str, column: &str) -> String {
    format!("provider/{provider}/{column}")
}

/// The API's name for a sealed column.
pub(super) fn field_of_column(column: &str) -> &str {
    column.strip_suffix("_sealed").unwrap_or(column)
}
