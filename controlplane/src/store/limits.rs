//! Limits (#15) as stored: one row of `limits` per (scope, name) for the
//! keys, models and providers that have any, and one for the limits of
//! every key that sets none (scope "default", name ""). No row means no
//! limits. The entity files read and write a row together with its key,
//! model or provider, in the same transaction (so a change bumps the
//! configuration version like any other), and delete it with them.
//!
//! An update merges into what is stored ([`LimitsChange::merged`]): a field
//! it sets replaces that limit, 0 removes it, an absent field stays.

use std::collections::BTreeMap;

use llmgw_core::limits::{
    Budget, Limits, OnOutage, Period, Scope, DEFAULT_WINDOW_MS, MAX_WINDOW_MS, MIN_WINDOW_MS,
};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::row::{Broken, RowReader};
use super::{Result, Store, StoreError};

/// The scope of the limits of every key that sets none.
pub const DEFAULT_SCOPE: &str = "default";

/// The limits of one scope as read: `None` is no limits; `broken` lists
/// what of a stored row could not be read (its limits are then `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsRow {
    pub limits: Option<Limits>,
    pub broken: Vec<Broken>,
}

/// A change to limits. For each kind: `None` keeps what is stored, 0
/// removes the limit, any other value replaces it; for the settings that
/// go with them (budget period, window, outage mode) `None` keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsChange {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u32>,
    pub budget_micros: Option<u64>,
    pub budget_period: Option<Period>,
    pub window_ms: Option<u32>,
    pub on_outage: Option<OnOutage>,
}

/// A changed limit: `None` keeps `stored`, 0 removes it.
fn pick<T: Copy + PartialEq + Default>(change: Option<T>, stored: Option<T>) -> Option<T> {
    match change {
        None => stored,
        Some(v) if v == T::default() => None,
        Some(v) => Some(v),
    }
}

impl LimitsChange {
    /// `stored` with this change made; `None` when no limit is left. Onto
    /// `None` (a new object, or a declarative file) it gives exactly the
    /// limits the change sets.
    pub fn merged(&self, stored: Option<&Limits>) -> Result<Option<Limits>> {
        let budget = stored.and_then(|s| s.budget);
        let micros = pick(self.budget_micros, budget.map(|b| b.micros));
        let period = self
            .budget_period
            .or(budget.map(|b| b.period))
            .unwrap_or_default();
        let limits = Limits {
            rpm: pick(self.rpm, stored.and_then(|s| s.rpm)),
            tpm: pick(self.tpm, stored.and_then(|s| s.tpm)),
            max_concurrency: pick(self.max_concurrency, stored.and_then(|s| s.max_concurrency)),
            budget: micros.map(|micros| Budget { micros, period }),
            window_ms: self
                .window_ms
                .or(stored.map(|s| s.window_ms))
                .unwrap_or(DEFAULT_WINDOW_MS),
            on_outage: self
                .on_outage
                .or(stored.map(|s| s.on_outage))
                .unwrap_or_default(),
        };
        if self.budget_period.is_some() && limits.budget.is_none() {
            return Err(StoreError::Invalid(
                "limits: budget_period needs a budget (budget_micros) to apply to".into(),
            ));
        }
        if limits.is_empty() {
            if self.window_ms.is_some() || self.on_outage.is_some() {
                return Err(StoreError::Invalid(
                    "limits: window_ms and on_outage need a limit to apply to; \
                     set rpm, tpm, max_concurrency or budget_micros"
                        .into(),
                ));
            }
            return Ok(None);
        }
        check(&limits)?;
        Ok(Some(limits))
    }
}

/// What the database can hold: counts fit a signed 64-bit column, the
/// window is in range.
fn check(l: &Limits) -> Result<()> {
    for (field, v) in [
        ("rpm", l.rpm),
        ("tpm", l.tpm),
        ("budget_micros", l.budget.map(|b| b.micros)),
    ] {
        if let Some(v) = v {
            if i64::try_from(v).is_err() {
                return Err(StoreError::Invalid(format!(
                    "limits: {field} {v} is more than the largest value stored, {}",
                    i64::MAX
                )));
            }
        }
    }
    if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&l.window_ms) {
        return Err(StoreError::Invalid(format!(
            "limits: window_ms {} is outside {MIN_WINDOW_MS}..={MAX_WINDOW_MS}",
            l.window_ms
        )));
    }
    Ok(())
}

/// A stored count: positive and within range, else noted as broken.
fn count(rd: &mut RowReader<'_>, col: &str) -> Option<u64> {
    let v: Option<i64> = rd.get(col, "limits");
    let v = v?;
    match u64::try_from(v) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            rd.note(
                "limits",
                format!("{col}: the stored value {v} is not positive"),
            );
            None
        }
    }
}

/// The name and limits of one stored row.
fn limits_from_row(r: &AnyRow) -> (String, LimitsRow) {
    let mut rd = RowReader::new(r);
    let name: String = rd.get("name", "limits");
    let rpm = count(&mut rd, "rpm");
    let tpm = count(&mut rd, "tpm");
    let max_concurrency = count(&mut rd, "max_concurrency").and_then(|n| {
        u32::try_from(n)
            .map_err(|_| rd.note("limits", format!("max_concurrency: {n} is out of range")))
            .ok()
    });
    let micros = count(&mut rd, "budget_micros");
    let period_text: String = rd.get("budget_period", "limits");
    let period = Period::parse(&period_text).unwrap_or_else(|| {
        rd.note(
            "limits",
            format!("budget_period {period_text:?} is unknown"),
        );
        Period::default()
    });
    let window: i64 = rd.get("window_ms", "limits");
    let window_ms = u32::try_from(window).unwrap_or(0);
    let outage_text: String = rd.get("on_outage", "limits");
    let on_outage = OnOutage::parse(&outage_text).unwrap_or_else(|| {
        rd.note("limits", format!("on_outage {outage_text:?} is unknown"));
        OnOutage::Closed
    });
    let limits = Limits {
        rpm,
        tpm,
        max_concurrency,
        budget: micros.map(|micros| Budget { micros, period }),
        window_ms,
        on_outage,
    };
    if let Err(StoreError::Invalid(m)) = check(&limits) {
        rd.note("limits", m.trim_start_matches("limits: "));
    }
    let broken = rd.broken_or(Vec::new);
    let limits = (broken.is_empty() && !limits.is_empty()).then_some(limits);
    (name, LimitsRow { limits, broken })
}

/// The limits of every name of a scope.
pub(super) async fn read_scope(
    conn: &mut AnyConnection,
    scope: &str,
) -> Result<BTreeMap<String, LimitsRow>> {
    let rows = sqlx::query("SELECT * FROM limits WHERE scope = $1")
        .bind(scope)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(limits_from_row).collect())
}

/// The limits of one name of a scope.
pub(super) async fn read_one(
    conn: &mut AnyConnection,
    scope: &str,
    name: &str,
) -> Result<LimitsRow> {
    let row = sqlx::query("SELECT * FROM limits WHERE scope = $1 AND name = $2")
        .bind(scope)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| limits_from_row(&r).1).unwrap_or_default())
}

/// Stores the limits of a scope's name; `None` (or limits that set none)
/// deletes them.
pub(super) async fn write(
    tx: &mut AnyConnection,
    scope: &str,
    name: &str,
    limits: Option<&Limits>,
) -> Result<()> {
    let Some(l) = limits.filter(|l| !l.is_empty()) else {
        sqlx::query("DELETE FROM limits WHERE scope = $1 AND name = $2")
            .bind(scope)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        return Ok(());
    };
    check(l)?;
    let signed = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
    sqlx::query(
        "INSERT INTO limits (scope, name, rpm, tpm, max_concurrency, budget_micros, \
         budget_period, window_ms, on_outage) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (scope, name) DO UPDATE SET rpm = excluded.rpm, tpm = excluded.tpm, \
         max_concurrency = excluded.max_concurrency, budget_micros = excluded.budget_micros, \
         budget_period = excluded.budget_period, window_ms = excluded.window_ms, \
         on_outage = excluded.on_outage",
    )
    .bind(scope)
    .bind(name)
    .bind(signed(l.rpm))
    .bind(signed(l.tpm))
    .bind(l.max_concurrency.map(i64::from))
    .bind(signed(l.budget.map(|b| b.micros)))
    .bind(l.budget.map_or("", |b| b.period.as_str()))
    .bind(i64::from(l.window_ms))
    .bind(l.on_outage.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A stored object that has limits: a key, a model or a provider.
pub(super) trait HasLimits {
    const SCOPE: Scope;
    fn name(&self) -> &str;
    /// Where its limits go, and the list of its broken fields.
    fn limits_mut(&mut self) -> (&mut Option<Limits>, &mut Vec<Broken>);

    fn put(&mut self, l: LimitsRow) {
        let (limits, broken) = self.limits_mut();
        *limits = l.limits;
        broken.extend(l.broken);
    }
}

/// Keys, models and providers: `spec.name`, `spec.limits` and `broken`.
macro_rules! has_limits {
    ($($row:ty => $scope:expr),* $(,)?) => {$(
        impl HasLimits for $row {
            const SCOPE: Scope = $scope;
            fn name(&self) -> &str {
                &self.spec.name
            }
            fn limits_mut(&mut self) -> (&mut Option<Limits>, &mut Vec<Broken>) {
                (&mut self.spec.limits, &mut self.broken)
            }
        }
    )*};
}

has_limits!(
    super::KeyRow => super::keys::SCOPE,
    super::ModelRow => super::models::SCOPE,
    super::ProviderRow => super::providers::SCOPE,
);

/// Reads the limits of every row.
pub(super) async fn attach_all<R: HasLimits>(
    conn: &mut AnyConnection,
    rows: &mut [R],
) -> Result<()> {
    let mut stored = read_scope(conn, R::SCOPE.as_str()).await?;
    for r in rows {
        let l = stored.remove(r.name()).unwrap_or_default();
        r.put(l);
    }
    Ok(())
}

/// Reads the limits of one row.
pub(super) async fn attach<R: HasLimits>(conn: &mut AnyConnection, row: &mut R) -> Result<()> {
    let l = read_one(conn, R::SCOPE.as_str(), row.name()).await?;
    row.put(l);
    Ok(())
}

impl Store {
    /// The limits of every key that sets none.
    pub async fn default_key_limits(&self, conn: &mut AnyConnection) -> Result<LimitsRow> {
        read_one(conn, DEFAULT_SCOPE, "").await
    }

    /// Replaces the limits of every key that sets none; `None` removes them.
    pub async fn set_default_key_limits(
        &self,
        tx: &mut AnyConnection,
        limits: Option<&Limits>,
    ) -> Result<()> {
        write(tx, DEFAULT_SCOPE, "", limits).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpm(n: u64) -> LimitsChange {
        LimitsChange {
            rpm: Some(n),
            ..LimitsChange::default()
        }
    }

    #[test]
    fn a_change_sets_replaces_removes_and_keeps() {
        let created = LimitsChange {
            rpm: Some(10),
            budget_micros: Some(50_000),
            budget_period: Some(Period::Day),
            window_ms: Some(1_000),
            ..LimitsChange::default()
        }
        .merged(None)
        .unwrap()
        .unwrap();
        assert_eq!(created.rpm, Some(10));
        assert_eq!(created.window_ms, 1_000);
        assert_eq!(created.on_outage, OnOutage::Open);

        let updated = LimitsChange {
            rpm: Some(20),
            tpm: Some(5_000),
            ..LimitsChange::default()
        }
        .merged(Some(&created))
        .unwrap()
        .unwrap();
        assert_eq!((updated.rpm, updated.tpm), (Some(20), Some(5_000)));
        // Absent fields stay.
        assert_eq!(updated.budget, created.budget);
        assert_eq!(updated.window_ms, 1_000);

        let removed = LimitsChange {
            budget_micros: Some(0),
            ..rpm(0)
        }
        .merged(Some(&updated))
        .unwrap()
        .unwrap();
        assert_eq!((removed.rpm, removed.budget), (None, None));
        assert_eq!(removed.tpm, Some(5_000));

        // Removing the last limit leaves none.
        let tpm_off = LimitsChange {
            tpm: Some(0),
            ..LimitsChange::default()
        };
        assert_eq!(tpm_off.merged(Some(&removed)).unwrap(), None);
        // A period alone changes the stored budget's period.
        let weekly = LimitsChange {
            budget_period: Some(Period::Week),
            ..LimitsChange::default()
        }
        .merged(Some(&created))
        .unwrap()
        .unwrap();
        assert_eq!(
            weekly.budget,
            Some(Budget {
                micros: 50_000,
                period: Period::Week
            })
        );
        assert_eq!(LimitsChange::default().merged(None).unwrap(), None);
    }

    #[test]
    fn settings_without_a_limit_and_huge_values_are_refused() {
        let window_only = LimitsChange {
            window_ms: Some(1_000),
            ..LimitsChange::default()
        };
        let e = window_only.merged(None).unwrap_err().to_string();
        assert!(e.contains("window_ms"), "{e}");
        let period_only = LimitsChange {
            budget_period: Some(Period::Day),
            ..rpm(5)
        };
        let e = period_only.merged(None).unwrap_err().to_string();
        assert!(e.contains("budget_period needs a budget"), "{e}");
        let e = rpm(u64::MAX).merged(None).unwrap_err().to_string();
        assert!(e.contains("limits: rpm 18446744073709551615"), "{e}");
    }
}
