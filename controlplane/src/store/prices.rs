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

use super::{Broken, ModelRow, ModelSpec, Result, Store, StoreError, TargetSpec};

/// A target as the price history names it: its provider and upstream
/// model, and, when the model has more than one target with both the same,
/// which of those it is (0 first, in target order). Unlike a target's
/// position, it stays with the target when targets are added, removed or
/// reordered, so a scheduled change gives its prices to the targets it
/// named, whatever the target list is at its time.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TargetKey {
    pub provider: String,
    pub upstream_model: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub occurrence: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider, self.upstream_model)?;
        if self.occurrence > 0 {
            write!(f, " (#{})", self.occurrence + 1)?;
        }
        Ok(())
    }
}

/// The key of each of a model's targets, in target order.
pub fn target_keys(targets: &[TargetSpec]) -> Vec<TargetKey> {
    let mut seen: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    targets
        .iter()
        .map(|t| {
            let n = seen
                .entry((t.provider.as_str(), t.upstream_model.as_str()))
                .or_default();
            let key = TargetKey {
                provider: t.provider.clone(),
                upstream_model: t.upstream_model.clone(),
                occurrence: *n,
            };
            *n += 1;
            key
        })
        .collect()
}

/// A model's whole price set: its own sheet and its targets' own, by
/// target identity ([`TargetKey`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriceSet {
    pub model: PriceSheet,
    pub targets: BTreeMap<TargetKey, PriceSheet>,
}

impl PriceSet {
    /// The prices of a model as configured.
    pub fn of(spec: &ModelSpec) -> PriceSet {
        PriceSet {
            model: spec.prices.clone(),
            targets: target_keys(&spec.targets)
                .into_iter()
                .zip(&spec.targets)
                .filter_map(|(k, t)| Some((k, t.prices.clone()?)))
                .collect(),
        }
    }

    /// Puts these prices into a model: its sheet, and each target's own
    /// (none for a target without an entry; entries naming no target of
    /// the model are ignored).
    pub fn apply_to(&self, spec: &mut ModelSpec) {
        spec.prices = self.model.clone();
        let keys = target_keys(&spec.targets);
        for (k, t) in keys.iter().zip(spec.targets.iter_mut()) {
            t.prices = self.targets.get(k).cloned();
        }
    }

    /// The same prices with each target key renamed by `rename`.
    fn rekeyed(&self, rename: impl Fn(&TargetKey) -> TargetKey) -> PriceSet {
        PriceSet {
            model: self.model.clone(),
            targets: self
                .targets
                .iter()
                .map(|(k, p)| (rename(k), p.clone()))
                .collect(),
        }
    }
}

/// One target's own prices in a stored price set.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StoredTarget {
    provider: String,
    upstream_model: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    occurrence: u32,
    prices: PriceSheet,
}

/// A price set as `price_history.prices` holds it (JSON, amounts as
/// exact decimal strings): `{"model": {...}, "target_prices":
/// [{"provider", "upstream_model", "occurrence" (absent for 0), "prices"}]}`.
/// `targets` is the form of control planes before migration 0022, by
/// target index: an older control plane sharing the database may still
/// write it, and it is read against the model's targets as they are.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct StoredSet {
    model: PriceSheet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    target_prices: Vec<StoredTarget>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    targets: BTreeMap<u32, PriceSheet>,
}

impl StoredSet {
    fn of(set: &PriceSet) -> StoredSet {
        StoredSet {
            model: set.model.clone(),
            target_prices: set
                .targets
                .iter()
                .map(|(k, p)| StoredTarget {
                    provider: k.provider.clone(),
                    upstream_model: k.upstream_model.clone(),
                    occurrence: k.occurrence,
                    prices: p.clone(),
                })
                .collect(),
            targets: BTreeMap::new(),
        }
    }

    /// The price set, with the keys of the model's targets (in target
    /// order) for entries by index.
    fn resolve(self, keys: &[TargetKey]) -> PriceSet {
        let mut targets: BTreeMap<TargetKey, PriceSheet> = self
            .targets
            .into_iter()
            .filter_map(|(i, p)| Some((keys.get(usize::try_from(i).ok()?)?.clone(), p)))
            .collect();
        for t in self.target_prices {
            let key = TargetKey {
                provider: t.provider,
                upstream_model: t.upstream_model,
                occurrence: t.occurrence,
            };
            targets.insert(key, t.prices);
        }
        PriceSet {
            model: self.model,
            targets,
        }
    }

    fn sheets(&self) -> impl Iterator<Item = &PriceSheet> {
        std::iter::once(&self.model)
            .chain(self.targets.values())
            .chain(self.target_prices.iter().map(|t| &t.prices))
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
    id: i64,
    from_ms: i64,
    recorded_ms: i64,
    /// Why the JSON is not a valid price set, when it is not.
    prices: std::result::Result<StoredSet, String>,
}

impl Stored {
    fn into_change(self, model: &str, keys: &[TargetKey]) -> Result<PriceChange> {
        Ok(PriceChange {
            from_ms: self.from_ms,
            recorded_ms: self.recorded_ms,
            prices: self
                .prices
                .map_err(|e| {
                    StoreError::Invalid(format!(
                        "the stored price history of model '{model}' cannot be read: {e}"
                    ))
                })?
                .resolve(keys),
        })
    }
}

/// A stored price set, each sheet checked as on write.
fn parse(text: &str) -> std::result::Result<StoredSet, String> {
    let set: StoredSet = serde_json::from_str(text).map_err(|e| e.to_string())?;
    for sheet in set.sheets() {
        sheet.clone().check().map_err(|e| e.0)?;
    }
    Ok(set)
}

fn to_json(prices: &PriceSet) -> Result<String> {
    serde_json::to_string(&StoredSet::of(prices))
        .map_err(|e| StoreError::Invalid(format!("prices cannot be stored: {e}")))
}

/// Every recorded change of `model` (of every model when `None`), oldest
/// first (by time, then by the order they were made).
async fn read(conn: &mut AnyConnection, model: Option<&str>) -> Result<Vec<(String, Stored)>> {
    let rows = match model {
        Some(m) => {
            sqlx::query(
                "SELECT id, model, effective_from, prices, recorded_at FROM price_history \
                 WHERE model = $1 ORDER BY effective_from, id",
            )
            .bind(m)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query(
                "SELECT id, model, effective_from, prices, recorded_at FROM price_history \
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
                    id: r.try_get("id")?,
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
    let keys = target_keys(&row.spec.targets);
    let mut unreadable = None;
    if let Some(current) = due.pop() {
        match current.prices {
            Ok(set) => set.resolve(&keys).apply_to(&mut row.spec),
            Err(e) => unreadable = Some(e),
        }
    }
    row.scheduled = Vec::new();
    for c in later {
        match c.prices {
            Ok(prices) => row.scheduled.push(PriceChange {
                from_ms: c.from_ms,
                recorded_ms: c.recorded_ms,
                prices: prices.resolve(&keys),
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
    let text = to_json(prices)?;
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
        let keys = match self.model(conn, model).await {
            Ok(row) => target_keys(&row.spec.targets),
            Err(StoreError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        read(conn, Some(model))
            .await?
            .into_iter()
            .map(|(_, c)| c.into_change(model, &keys))
            .collect()
    }

    /// After `model`'s targets were renamed in place (`model retarget`:
    /// the same positions, `before` and `after` them), gives its scheduled
    /// changes' target prices to the targets' new names, so they follow
    /// the targets. Rows that cannot be read are left as they are (they
    /// keep the model broken until new prices supersede them).
    pub(crate) async fn rename_scheduled_targets(
        &self,
        tx: &mut AnyConnection,
        model: &str,
        before: &[TargetSpec],
        after: &[TargetSpec],
    ) -> Result<()> {
        let (old, new) = (target_keys(before), target_keys(after));
        let renamed: BTreeMap<&TargetKey, &TargetKey> = old.iter().zip(&new).collect();
        let now = super::now_ms();
        for (_, c) in read(tx, Some(model)).await? {
            let Ok(set) = c.prices else { continue };
            if c.from_ms <= now {
                continue;
            }
            let moved = set
                .resolve(&old)
                .rekeyed(|k| (*renamed.get(k).unwrap_or(&k)).clone());
            sqlx::query("UPDATE price_history SET prices = $1 WHERE id = $2")
                .bind(to_json(&moved)?)
                .bind(c.id)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
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
        let keys = target_keys(&spec.targets);
        if let Some(k) = prices.targets.keys().find(|k| !keys.contains(k)) {
            return Err(StoreError::Invalid(format!(
                "model '{model}' has no target {k} to schedule prices for"
            )));
        }
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

    fn key(provider: &str, upstream_model: &str, occurrence: u32) -> TargetKey {
        TargetKey {
            provider: provider.into(),
            upstream_model: upstream_model.into(),
            occurrence,
        }
    }

    #[test]
    fn a_price_set_is_stored_as_exact_decimal_strings_by_target_identity() {
        let set = PriceSet {
            model: flat("2.5"),
            targets: [(key("p", "a:b", 1), flat("0.000000001"))].into(),
        };
        let text = to_json(&set).unwrap();
        assert!(text.contains(r#""input":"2.5""#), "{text}");
        assert!(
            text.contains(r#""target_prices":[{"provider":"p","upstream_model":"a:b","occurrence":1,"prices":{"#),
            "{text}"
        );
        let back = parse(&text).unwrap().resolve(&[]);
        assert_eq!(back, set);
        let model_only = to_json(&PriceSet {
            model: flat("1"),
            targets: BTreeMap::new(),
        })
        .unwrap();
        assert!(!model_only.contains("target"), "{model_only}");
    }

    #[test]
    fn duplicate_targets_are_told_apart_by_occurrence() {
        let t = |p: &str, m: &str| TargetSpec {
            provider: p.into(),
            upstream_model: m.into(),
            priority: 0,
            weight: 1,
            rules: String::new(),
            enabled: true,
            prices: None,
            default_params: BTreeMap::new(),
        };
        let keys = target_keys(&[t("p", "a"), t("q", "a"), t("p", "a"), t("p", "b")]);
        assert_eq!(
            keys,
            [
                key("p", "a", 0),
                key("q", "a", 0),
                key("p", "a", 1),
                key("p", "b", 0)
            ]
        );
        assert_eq!(keys[2].to_string(), "p:a (#2)");
    }

    #[test]
    fn an_older_control_planes_rows_by_index_are_read_against_the_targets() {
        let text =
            r#"{"model":{"tokens":{"input":"1"}},"targets":{"1":{"tokens":{"input":"2"}},"5":{}}}"#;
        let set = parse(text)
            .unwrap()
            .resolve(&[key("p", "a", 0), key("p", "b", 0)]);
        assert_eq!(set.model, flat("1"));
        assert_eq!(set.targets, [(key("p", "b", 0), flat("2"))].into());
    }
}
