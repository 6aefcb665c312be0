//! Models and their ordered targets: reading them, creating, updating
//! (targets are replaced whole) and deleting them, with their limits.

use std::collections::BTreeMap;

use llmgw_core::limits::Scope;
use llmgw_core::table::{ModelType, Translation};
use llmgw_core::Strategy;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::QueryScalar;
use sqlx::{Any, AnyConnection, Row};

use llmgw_core::price::{Amount, PriceSheet, TokenPrices};

use super::limits;
use super::prices::{self, PriceChange, PriceSet};
use super::row::{Broken, RowReader};
use super::{exists, int, now_ms, specs, ModelSpec, Result, Store, StoreError, TargetSpec};

pub(super) const SCOPE: Scope = Scope::Model;

#[derive(Debug, Clone)]
pub struct ModelRow {
    pub spec: ModelSpec,
    pub created_at: i64,
    pub updated_at: i64,
    pub broken: Vec<Broken>,
    /// Price changes scheduled later than the read, by time
    /// (`store/prices.rs`); `spec.prices` are those in effect.
    pub scheduled: Vec<PriceChange>,
}

impl Store {
    pub async fn models(&self, conn: &mut AnyConnection) -> Result<Vec<ModelRow>> {
        let rows = sqlx::query("SELECT * FROM models ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
        let targets = sqlx::query(
            "SELECT t.*, p.name AS provider_name FROM model_targets t \
             JOIN providers p ON p.id = t.provider_id ORDER BY t.model_id, t.position",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut by_model: BTreeMap<i64, Vec<&AnyRow>> = BTreeMap::new();
        for t in &targets {
            by_model.entry(t.try_get("model_id")?).or_default().push(t);
        }
        let mut models = rows
            .iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                Ok(model_from_row(
                    r,
                    by_model.remove(&id).as_deref().unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<ModelRow>>>()?;
        limits::attach_all(conn, &mut models).await?;
        prices::attach_all(conn, &mut models).await?;
        Ok(models)
    }

    pub async fn model(&self, conn: &mut AnyConnection, name: &str) -> Result<ModelRow> {
        let row = sqlx::query("SELECT * FROM models WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("model '{name}' not found")))?;
        let id: i64 = row.try_get("id")?;
        let targets = sqlx::query(
            "SELECT t.*, p.name AS provider_name FROM model_targets t \
             JOIN providers p ON p.id = t.provider_id WHERE t.model_id = $1 ORDER BY t.position",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let targets: Vec<&AnyRow> = targets.iter().collect();
        let mut model = model_from_row(&row, &targets);
        limits::attach(conn, &mut model).await?;
        prices::attach(conn, &mut model).await?;
        Ok(model)
    }

    pub async fn insert_model(&self, tx: &mut AnyConnection, spec: &ModelSpec) -> Result<()> {
        spec.validate()?;
        if exists(tx, "models", &spec.name).await? {
            return Err(StoreError::AlreadyExists(format!(
                "model '{}' already exists",
                spec.name
            )));
        }
        let now = now_ms();
        let insert = sqlx::query_scalar(
            "INSERT INTO models (name, strategy, max_attempts, retry_delay_ms, price_input, \
             price_output, price_cached_input, price_cache_write, enabled, default_max_tokens, \
             translation, model_type, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(&spec.name);
        let id: i64 = bind_settings(insert, spec)
            .bind(now)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        insert_targets(tx, id, &spec.targets).await?;
        prices::record(tx, &spec.name, now, &PriceSet::of(spec)).await?;
        limits::write(tx, SCOPE.as_str(), &spec.name, spec.limits.as_ref()).await
    }

    /// Replaces a model. When its prices (its own or a target's) differ
    /// from those in effect, the change is recorded in the price history
    /// from now on.
    pub async fn update_model(&self, tx: &mut AnyConnection, spec: &ModelSpec) -> Result<()> {
        spec.validate()?;
        let before = match self.model(tx, &spec.name).await {
            Ok(row) => Some(PriceSet::of(&row.spec)),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let update = sqlx::query_scalar(
            "UPDATE models SET strategy = $1, max_attempts = $2, retry_delay_ms = $3, \
             price_input = $4, price_output = $5, price_cached_input = $6, \
             price_cache_write = $7, enabled = $8, default_max_tokens = $9, translation = $10, \
             model_type = $11, updated_at = $12 WHERE name = $13 RETURNING id",
        );
        let id: Option<i64> = bind_settings(update, spec)
            .bind(now_ms())
            .bind(&spec.name)
            .fetch_optional(&mut *tx)
            .await?;
        let id =
            id.ok_or_else(|| StoreError::NotFound(format!("model '{}' not found", spec.name)))?;
        sqlx::query("DELETE FROM model_targets WHERE model_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_targets(tx, id, &spec.targets).await?;
        let after = PriceSet::of(spec);
        if before.as_ref() != Some(&after) {
            prices::record(tx, &spec.name, now_ms(), &after).await?;
        }
        limits::write(tx, SCOPE.as_str(), &spec.name, spec.limits.as_ref()).await
    }

    pub async fn delete_model(&self, tx: &mut AnyConnection, name: &str) -> Result<()> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM models WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let id = id.ok_or_else(|| StoreError::NotFound(format!("model '{name}' not found")))?;
        // Explicit, so it does not depend on the connection's foreign-key mode.
        sqlx::query("DELETE FROM model_targets WHERE model_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM models WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        prices::delete(tx, name).await?;
        limits::write(tx, SCOPE.as_str(), name, None).await
    }
}

/// A statement that returns the model's id.
type IdQuery<'q> = QueryScalar<'q, Any, i64, AnyArguments<'q>>;

/// Binds a model's settings (everything but its name, times and targets),
/// in the order both the INSERT and the UPDATE list their columns.
fn bind_settings<'q>(q: IdQuery<'q>, spec: &'q ModelSpec) -> IdQuery<'q> {
    q.bind(spec.strategy.as_str())
        .bind(i64::from(spec.max_attempts))
        .bind(spec.retry_delay_ms.map(i64::from))
        .bind(spec.prices.tokens.input.to_f64())
        .bind(spec.prices.tokens.output.to_f64())
        .bind(spec.prices.tokens.cached_input.to_f64())
        .bind(spec.prices.tokens.cache_write.to_f64())
        .bind(int(spec.enabled))
        .bind(spec.default_max_tokens.map(i64::from))
        .bind(spec.translation.as_str())
        .bind(spec.model_type.as_str())
}

async fn insert_targets(
    tx: &mut AnyConnection,
    model_id: i64,
    targets: &[TargetSpec],
) -> Result<()> {
    for (i, t) in targets.iter().enumerate() {
        let provider_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM providers WHERE name = $1")
                .bind(&t.provider)
                .fetch_optional(&mut *tx)
                .await?;
        let provider_id = provider_id.ok_or_else(|| {
            StoreError::Invalid(format!(
                "target {} names provider '{}', which does not exist",
                i + 1,
                t.provider
            ))
        })?;
        // No NULL price is ever bound: sqlx's Any driver sends a NULL f64 to
        // PostgreSQL as float4, and the cached statement then rejects a later
        // float8 ("incorrect binary data format"). Left out, the columns are NULL.
        let sql = if t.prices.is_some() {
            "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, priority, \
             weight, rules, enabled, default_params, price_input, price_output, \
             price_cached_input, price_cache_write) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        } else {
            "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, priority, \
             weight, rules, enabled, default_params) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        };
        let mut insert = sqlx::query(sql)
            .bind(model_id)
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .bind(provider_id)
            .bind(&t.upstream_model)
            .bind(i64::from(t.priority))
            .bind(i64::from(t.weight))
            .bind(specs::normalise_rules(&t.rules)?)
            .bind(int(t.enabled))
            .bind(specs::params_to_json(&t.default_params));
        // The f64 token prices, for an older control plane; the exact
        // prices are in the price history.
        if let Some(p) = &t.prices {
            insert = insert
                .bind(p.tokens.input.to_f64())
                .bind(p.tokens.output.to_f64())
                .bind(p.tokens.cached_input.to_f64())
                .bind(p.tokens.cache_write.to_f64());
        }
        insert.execute(&mut *tx).await?;
    }
    Ok(())
}

fn target_from_row(rd: &mut RowReader<'_>) -> TargetSpec {
    let input: Option<f64> = rd.get("price_input", "prices");
    let prices = input.map(|input| {
        let mut more = |col: &str| rd.get::<Option<f64>>(col, "prices").unwrap_or(0.0);
        let (output, cached, write) = (
            more("price_output"),
            more("price_cached_input"),
            more("price_cache_write"),
        );
        legacy_sheet(rd, input, output, cached, write)
    });
    let priority: i64 = rd.get("priority", "priority");
    TargetSpec {
        provider: rd.get("provider_name", "provider"),
        upstream_model: rd.get("upstream_model", "upstream_model"),
        priority: i32::try_from(priority).unwrap_or_else(|_| {
            rd.note(
                "priority",
                format!("the stored value {priority} is out of range"),
            );
            0
        }),
        weight: rd.u32("weight"),
        rules: rd.get("rules", "rules"),
        enabled: rd.flag("enabled"),
        prices,
        default_params: rd.default_params(),
    }
}

fn model_from_row(r: &AnyRow, target_rows: &[&AnyRow]) -> ModelRow {
    let mut broken = Vec::new();
    let targets = target_rows
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut rd = RowReader::new(t);
            rd.prefix = format!("targets[{i}].");
            let spec = target_from_row(&mut rd);
            broken.append(&mut rd.broken);
            spec
        })
        .collect();
    let mut rd = RowReader::new(r);
    let delay: Option<i64> = rd.get("retry_delay_ms", "retry_delay_ms");
    let default_max_tokens: Option<i64> = rd.get("default_max_tokens", "default_max_tokens");
    let spec = ModelSpec {
        name: rd.get("name", "name"),
        strategy: rd.parse("strategy", Strategy::default()),
        max_attempts: rd.u32("max_attempts"),
        retry_delay_ms: delay.map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
        prices: {
            let mut col = |c: &str| rd.get::<f64>(c, "prices");
            let (i, o, c, w) = (
                col("price_input"),
                col("price_output"),
                col("price_cached_input"),
                col("price_cache_write"),
            );
            legacy_sheet(&mut rd, i, o, c, w)
        },
        enabled: rd.flag("enabled"),
        targets,
        default_max_tokens: default_max_tokens.and_then(|n| {
            u32::try_from(n)
                .map_err(|_| {
                    rd.note(
                        "default_max_tokens",
                        format!("the stored value {n} is out of range"),
                    )
                })
                .ok()
        }),
        translation: rd.parse("translation", Translation::default()),
        model_type: rd.parse("model_type", ModelType::default()),
        limits: None,
    };
    let created_at = rd.get("created_at", "created_at");
    let updated_at = rd.get("updated_at", "updated_at");
    broken.append(&mut rd.broken);
    if broken.is_empty() {
        broken = spec.problems().0;
    }
    ModelRow {
        spec,
        created_at,
        updated_at,
        broken,
        scheduled: Vec::new(),
    }
}

/// A model's or target's prices from its `f64` columns (a model whose
/// prices have no recorded change yet), each rounded to the nearest
/// nano-dollar; a column that is no price is noted.
fn legacy_sheet(
    rd: &mut RowReader<'_>,
    input: f64,
    output: f64,
    cached_input: f64,
    cache_write: f64,
) -> PriceSheet {
    let mut amount = |v: f64| {
        Amount::from_f64(v).unwrap_or_else(|e| {
            rd.note("prices", e.0);
            Amount::ZERO
        })
    };
    PriceSheet::flat(TokenPrices {
        input: amount(input),
        output: amount(output),
        cached_input: amount(cached_input),
        cache_write: amount(cache_write),
    })
}
