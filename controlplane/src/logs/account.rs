//! What a batch's records charge outside the log tables, in the batch's
//! transaction (`ingest.rs`) and for the records inserted now only: their
//! cost to the spend of their key, model and provider ([`spend_of`],
//! budgets), and the newest use of each key (`api_keys.last_used_at`,
//! [`touch_keys`]).
//!
//! These are the rows that every batch writes: concurrent batches from
//! several data planes wait on each other's locks on them until they
//! commit. So each is written with a few statements (one of arrays on
//! PostgreSQL), last in the batch (the spend, then the keys), and locked in
//! name order (no deadlocks).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use llmgw_core::limits::Scope;
use llmgw_proto::v1 as pb;
use sqlx::postgres::PgConnection;
use sqlx::AnyConnection;

use crate::store::multirow::{statement_parts, values_sql, STATEMENT_ROWS};
use crate::store::quota::{micros_of_nanos, SpendBatch};
use crate::store::{Backend, StoreError};

/// The spend of the records stored now (never of one stored before, so a
/// batch shipped twice is counted once): each record's cost charged to its
/// key, its model and its provider, summed per UTC day.
pub(super) fn spend_of<'a>(records: impl Iterator<Item = &'a pb::RequestLog>) -> SpendBatch {
    let mut spend = SpendBatch::default();
    for r in records {
        let micros = micros_of_nanos(r.cost_nanos);
        for (scope, name) in [
            (Scope::Key, &r.key),
            (Scope::Model, &r.model),
            (Scope::Provider, &r.provider),
        ] {
            spend.add(scope, name, r.time_ms, micros);
        }
    }
    spend
}

/// Each key's newest record: names in order, and their times.
fn newest_use<'a>(records: impl Iterator<Item = &'a pb::RequestLog>) -> Vec<(&'a str, i64)> {
    let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
    for r in records.filter(|r| !r.key.is_empty()) {
        let t = newest.entry(r.key.as_str()).or_insert(r.time_ms);
        *t = (*t).max(r.time_ms);
    }
    newest.into_iter().collect()
}

/// Moves `api_keys.last_used_at` forward to the newest record of each key,
/// never back, on SQLite: a statement per [`statement_parts`] of the
/// batch's keys (a statement per key kept the transaction waiting on
/// hundreds of round trips). SQLite has one writer at a time and no row
/// locks. Returns how many keys moved.
pub(super) async fn touch_keys<'a>(
    conn: &mut AnyConnection,
    records: impl Iterator<Item = &'a pb::RequestLog>,
) -> Result<u64, StoreError> {
    static TEXTS: LazyLock<Vec<String>> = LazyLock::new(|| {
        STATEMENT_ROWS
            .iter()
            .map(|&rows| {
                format!(
                    "UPDATE api_keys SET last_used_at = v.column2 \
                     FROM (VALUES {}) AS v \
                     WHERE api_keys.name = v.column1 \
                     AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.column2)",
                    values_sql(Backend::Sqlite, rows, 2)
                )
            })
            .collect()
    });
    let keys = newest_use(records);
    let mut moved = 0;
    for (slot, part) in statement_parts(&keys) {
        let mut q = sqlx::query(TEXTS[slot].as_str());
        for (key, t) in part {
            q = q.bind(*key).bind(*t);
        }
        moved += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(moved)
}

/// [`touch_keys`] on PostgreSQL, in one statement of two arrays. It locks
/// the rows it moves in name order first (`ORDER BY` under `FOR NO KEY
/// UPDATE`, the lock the UPDATE takes anyway, locks rows as the sort
/// returns them; `MATERIALIZED` keeps the locking from being folded into
/// the join), so concurrent batches never deadlock.
/// A row that another batch moved meanwhile is checked again once locked,
/// and left alone if it is newer.
pub(super) async fn touch_keys_pg<'a>(
    conn: &mut PgConnection,
    records: impl Iterator<Item = &'a pb::RequestLog>,
) -> Result<u64, StoreError> {
    let (names, times): (Vec<&str>, Vec<i64>) = newest_use(records).into_iter().unzip();
    if names.is_empty() {
        return Ok(0);
    }
    let moved = sqlx::query(
        "WITH v AS (SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS v (name, t)), \
         k AS MATERIALIZED (\
           SELECT a.name, v.t FROM api_keys a JOIN v ON v.name = a.name \
           WHERE a.last_used_at IS NULL OR a.last_used_at < v.t \
           ORDER BY a.name FOR NO KEY UPDATE OF a) \
         UPDATE api_keys SET last_used_at = k.t FROM k WHERE api_keys.name = k.name",
    )
    .bind(names)
    .bind(times)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_once_at_its_newest_record() {
        let rec = |key: &str, time_ms| pb::RequestLog {
            key: key.into(),
            time_ms,
            ..Default::default()
        };
        let records = [
            rec("b", 5),
            rec("a", 7),
            rec("", 9),
            rec("b", 3),
            rec("a", 8),
        ];
        assert_eq!(newest_use(records.iter()), [("a", 8), ("b", 5)]);
    }
}
