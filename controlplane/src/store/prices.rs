//! Price history (#16): every change of a model's prices, with the time it
//! applies from, in `price_history` (migration 0020). The latest change
//! whose time has come is the model's prices: reads put it over the price
//! columns of `models` and `model_targets`, which hold the last immediate
//! change's token prices as `f64` for an older control plane (and are a
//! model's prices until its first recorded change). Changes later than
//! now are scheduled; reads list them for the snapshot, which carries them
//! so data planes switch at their time.
//!
//! A change is recorded by the model writes themselves (`models.rs`) when
//! the prices differ from those in effect, and by [`Store::schedule_prices`]
//! for a later time. Records already logged keep the cost they were given:
//! a data plane computes cost when a request ends, with the prices of the
//! time it arrived.

use std::collections::BTreeMap;

use llmgw_core::price::PriceSheet;
use sqlx::{AnyConnection, Row};

use super::{Broken, ModelRow, ModelSpec, Result, Store, StoreError};

/// A model's whole price set: its own sheet and its targets' own, by
/// target index (0 first, in the model's target order).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PriceSet {
    pub model: PriceSheet,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<u32, PriceSheet>,
}

impl PriceSet {
    /// The prices of a model as configured.
    pub fn of(spec: &ModelSpec) -> PriceSet {
        PriceSet {
            model: spec.prices.clone(),
            targets: spec
                .targets
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let own = t.prices.clone()?;
                    Some((u32::try_from(i).ok()?, own))
                })
                .collect(),
        }
    }

    /// Puts these prices into a model: its sheet, and each target's own
    /// (none for a target without an entry; entries past the last target
    /// are ignored).
    pub fn apply_to(&self, spec: &mut ModelSpec) {
        spec.prices = self.model.clone();
        for (i, t) in spec.targets.iter_mut().enumerate() {
            t.prices = u32::try_from(i)
                .ok()
                .and_then(|i| self.targets.get(&i))
                .cloned();
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceChange {
    /// Unix milliseconds from which it applies.
    pub from_ms: i64,
    /// Unix milliseconds when it was made.
    pub recorded_ms: i64,
    pub prices: PriceSet,
}

/// A stored change, whose prices may not be readable.
struct Stored {
    from_ms: i64,
    recorded_ms: i64,
    /// Why the JSON is not a valid price set, when it is not.
    prices: std::result::Result<PriceSet, String>,
}

impl Stored {
    fn into_change(self, model: &str) -> Result<PriceChange> {
        Ok(PriceChange {
            from_ms: self.from_ms,
            recorded_ms: self.recorded_ms,
            prices: self.prices.map_err(|e| {
                StoreError::Invalid(format!(
                    "the stored price history of model '{model}' cannot be read: {e}"
                ))
            })?,
        })
    }
}

/// A stored price set, each sheet checked as on write.
fn parse(text: &str) -> std::result::Result<PriceSet, String> {
    let set: PriceSet = serde_json::from_str(text).map_err(|e| e.to_string())?;
    for sheet in std::iter::once(&set.model).chain(set.targets.values()) {
        sheet.clone().check().map_err(|e| e.0)?;
    }
    Ok(set)
}

/// Every recorded change of `model` (of every model when `None`), oldest
/// first (by time, then by the order they were made).
async fn read(conn: &mut AnyConnection, model: Option<&str>) -> Result<Vec<(String, Stored)>> {
    let rows = match model {
        Some(m) => {
            sqlx::query(
                "SELECT model, effective_from, prices, recorded_at FROM price_history \
                 WHERE model = $1 ORDER BY effective_from, id",
            )
            .bind(m)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(
                "SELECT model, effective_from, prices, recorded_at FROM price_history \
                 ORDER BY model, effective_from, id",
            )
            .fetch_all(&mut *conn)
            .await?
        }
    };
    rows.iter()
        .map(|r| {
            let text: String = r.try_get("prices")?;
            Ok((
                r.try_get("model")?,
                Stored {
                    from_ms: r.try_get("effective_from")?,
                    recorded_ms: r.try_get("recorded_at")?,
                    prices: parse(&text),
                },
            ))
        })
        .collect()
}

/// Puts the prices in effect at `now` over a model read from its columns,
/// and keeps its later changes as scheduled. A change that matters (the
/// one in effect, or a scheduled one) that cannot be read, or prices that
/// break a rule, mark the model broken, so it is left out of snapshots
/// rather than refused by every data plane.
fn overlay(row: &mut ModelRow, changes: Vec<Stored>, now: i64) {
    let (mut due, later): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| c.from_ms <= now);
    let mut unreadable = None;
    if let Some(current) = due.pop() {
        match &current.prices {
            Ok(set) => set.apply_to(&mut row.spec),
            Err(e) => unreadable = Some(e.clone()),
        }
    }
    row.scheduled = Vec::new();
    for c in later {
        match c.prices {
            Ok(prices) => row.scheduled.push(PriceChange {
                from_ms: c.from_ms,
                recorded_ms: c.recorded_ms,
                prices,
            }),
            Err(e) => unreadable = unreadable.or(Some(e)),
        }
    }
    if let Some(e) = unreadable {
        row.broken.push(Broken {
            field: "prices".into(),
            reason: format!("the stored price history cannot be read: {e}"),
        });
    } else if row.broken.is_empty() {
        row.broken = row.spec.problems().0;
    }
}

/// [`overlay`] for every model, from one read of the history.
pub(super) async fn attach_all(conn: &mut AnyConnection, rows: &mut [ModelRow]) -> Result<()> {
    let mut by_model: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for (m, c) in read(conn, None).await? {
        by_model.entry(m).or_default().push(c);
    }
    let now = super::now_ms();
    for r in rows {
        let changes = by_model.remove(&r.spec.name).unwrap_or_default();
        overlay(r, changes, now);
    }
    Ok(())
}

/// [`overlay`] for one model.
pub(super) async fn attach(conn: &mut AnyConnection, row: &mut ModelRow) -> Result<()> {
    let changes = read(conn, Some(&row.spec.name))
        .await?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    overlay(row, changes, super::now_ms());
    Ok(())
}

/// Records a change of `model`'s prices from `from_ms` on.
pub(super) async fn record(
    tx: &mut AnyConnection,
    model: &str,
    from_ms: i64,
    prices: &PriceSet,
) -> Result<()> {
    let text = serde_json::to_string(prices)
        .map_err(|e| StoreError::Invalid(format!("prices cannot be stored: {e}")))?;
    sqlx::query(
        "INSERT INTO price_history (model, effective_from, prices, recorded_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(model)
    .bind(from_ms)
    .bind(text)
    .bind(super::now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Forgets a deleted model's history.
pub(super) async fn delete(tx: &mut AnyConnection, model: &str) -> Result<()> {
    sqlx::query("DELETE FROM price_history WHERE model = $1")
        .bind(model)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

impl Store {
    /// Every recorded change of a model's prices, oldest first.
    pub async fn price_history(
        &self,
        conn: &mut AnyConnection,
        model: &str,
    ) -> Result<Vec<PriceChange>> {
        read(conn, Some(model))
            .await?
            .into_iter()
            .map(|(_, c)| c.into_change(model))
            .collect()
    }

    /// Removes `model`'s price changes scheduled later than now; how many
    /// there were.
    pub async fn cancel_scheduled_prices(
        &self,
        tx: &mut AnyConnection,
        model: &str,
    ) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM price_history WHERE model = $1 AND effective_from > $2")
                .bind(model)
                .bind(super::now_ms())
                .execute(&mut *tx)
                .await?;
        Ok(done.rows_affected())
    }

    /// Schedules `prices` for `model` from `from_ms` (later than now) on;
    /// the prices in effect stay until then. Checked like a model write:
    /// each sheet, and that the model exists.
    pub async fn schedule_prices(
        &self,
        tx: &mut AnyConnection,
        model: &str,
        from_ms: i64,
        prices: &PriceSet,
    ) -> Result<()> {
        if from_ms <= super::now_ms() {
            return Err(StoreError::Invalid(format!(
                "prices_from {} is not in the future; give a later time, or none to change \
                 the prices now",
                super::rfc3339(Some(from_ms))
            )));
        }
        let row = self.model(tx, model).await?;
        let mut spec = row.spec;
        prices.apply_to(&mut spec);
        spec.validate()?;
        record(tx, model, from_ms, prices).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_core::price::TokenPrices;

    fn flat(input: &str) -> PriceSheet {
        PriceSheet::flat(TokenPrices {
            input: input.parse().unwrap(),
            ..Default::default()
        })
    }

    #[test]
    fn a_price_set_is_stored_as_exact_decimal_strings() {
        let set = PriceSet {
            model: flat("2.5"),
            targets: [(1, flat("0.000000001"))].into(),
        };
        let text = serde_json::to_string(&set).unwrap();
        assert!(text.contains(r#""input":"2.5""#), "{text}");
        assert!(text.contains(r#""1":{"#), "{text}");
        assert_eq!(serde_json::from_str::<PriceSet>(&text).unwrap(), set);
        let model_only = serde_json::to_string(&PriceSet {
            model: flat("1"),
            targets: BTreeMap::new(),
        })
        .unwrap();
        assert!(!model_only.contains("targets"), "{model_only}");
    }
}
