//! SQLite's writer of a prepared log batch (`record.rs`), through
//! `sqlx::Any`: multi-row INSERTs in a few cached sizes
//! (`store/multirow.rs`). Records go in with plain inserts; only a batch
//! that holds a record stored before (a unique violation) is inserted again
//! with `ON CONFLICT DO NOTHING`, which skips it.

use std::collections::HashSet;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use llmgw_proto::v1 as pb;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Row};

use super::by_content::piece_rows;
use super::chunks::{self, Inserter};
use super::record::{
    i64_of, log_values, Batch, Blocks, Prepared, Rejected, Resent, Value, ATTEMPT_COLUMNS,
    DETAIL_COLUMNS, LOG_COLUMNS, MAX_ROWS_PER_INSERT, PIECE_COLUMNS, QUARANTINE_COLUMNS,
};
use crate::logs::account;
use crate::logs::deltas;
use crate::logs::pieces::Key;
use crate::logs::rollup;
use crate::logs::row::id_text;
use crate::store::multirow::{insert_text, insert_texts, statement_parts, values_sql, InsertParts};
use crate::store::{Backend, StoreError};

/// Bound parameters SQLite allows in one statement.
const SQLITE_MAX_PARAMS: usize = 32_766;

/// Rows of `columns` values per INSERT: as many as the parameter limit
/// allows, up to [`MAX_ROWS_PER_INSERT`].
fn rows_per_insert(columns: usize) -> usize {
    (SQLITE_MAX_PARAMS / columns).clamp(1, MAX_ROWS_PER_INSERT)
}

/// Records inserted together (a chunk, `chunks.rs`).
pub(super) fn records_per_insert() -> usize {
    rows_per_insert(LOG_COLUMNS.len())
}

/// Writes a prepared batch in one transaction: its records (those the
/// database refuses on their own to the quarantine with `rejected`), their
/// body pieces, rollup deltas, spend and keys' last use. Returns the ids
/// inserted now and the pieces their bodies refer to.
pub(super) async fn write(
    pool: &AnyPool,
    batch: &Batch<'_>,
    rejected: &mut Vec<Rejected>,
) -> Result<(HashSet<String>, Vec<Key>), StoreError> {
    let good = batch.good;
    let mut tx = pool.begin().await?;
    let inserted = chunks::insert_all(&mut tx, batch, rejected).await?;
    let (pieces, keys) = piece_rows(batch, &inserted);
    insert_pieces(&mut tx, &pieces).await?;
    quarantine(&mut tx, batch.node, rejected, batch.now).await?;
    let fresh = || {
        good.iter()
            .filter(|p| inserted.contains(&p.rec.id))
            .map(|p| &p.rec)
    };
    // The rollups' deltas: plain inserts (`deltas.rs`).
    if !inserted.is_empty() {
        let from = rollup::complete_from(&mut tx).await?;
        deltas::append(&mut tx, &rollup::RollupBatch::minutes(fresh(), from)?).await?;
    }
    // The rows other batches also write come last, so that their locks are
    // held for as short a time as possible, in one order for every batch
    // (no deadlocks): the spend, then the keys, each in name order.
    account::spend_of(fresh()).write(&mut tx).await?;
    account::touch_keys(&mut tx, fresh()).await?;
    tx.commit().await?;
    Ok((inserted, keys))
}

/// Stores body pieces (`pieces.rs`) that are not stored yet (another
/// control plane on the same file may have stored one).
async fn insert_pieces(
    conn: &mut AnyConnection,
    rows: &[(&Key, &[u8])],
) -> Result<(), sqlx::Error> {
    /// Pieces per statement: a few hundred kilobytes of data.
    const PER_STATEMENT: usize = 64;
    for part in rows.chunks(PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO request_log_pieces ({}) VALUES {} ON CONFLICT DO NOTHING",
            PIECE_COLUMNS.join(", "),
            values_sql(Backend::Sqlite, part.len(), PIECE_COLUMNS.len())
        );
        let mut q = sqlx::query(&sql);
        for ((day, hash), data) in part {
            q = q.bind(*day).bind(hash.as_slice()).bind(*data);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A chunk's records, attempts and details (`chunks.rs` puts each in a
/// savepoint).
impl Inserter for Any {
    const BACKEND: Backend = Backend::Sqlite;

    fn insert<'a>(
        conn: &'a mut AnyConnection,
        chunk: &'a [Prepared],
        blocks: &'a Blocks,
        resent: Resent,
    ) -> BoxFuture<'a, Result<Vec<String>, sqlx::Error>> {
        Box::pin(insert_records(conn, chunk, blocks, resent))
    }
}

/// The INSERT text for `STATEMENT_ROWS[slot]` rows.
fn insert_sql(table: Table, resent: Resent, slot: usize) -> &'static str {
    const TABLES: [Table; 3] = [Table::Logs, Table::Attempts, Table::Details];
    static TEXTS: LazyLock<Vec<String>> = LazyLock::new(|| {
        let variants: Vec<InsertParts<'static>> = [Resent::Fail, Resent::Skip]
            .into_iter()
            .flat_map(|resent| TABLES.map(|t| t.insert_parts(resent)))
            .collect();
        insert_texts(&variants)
    });
    let variant = match resent {
        Resent::Fail => 0,
        Resent::Skip => TABLES.len(),
    } + table as usize;
    insert_text(&TEXTS, Backend::Sqlite, variant, slot)
}

#[derive(Clone, Copy)]
enum Table {
    Logs = 0,
    Attempts = 1,
    Details = 2,
}

impl Table {
    /// Name, columns and what follows the VALUES of its INSERT.
    fn insert_parts(self, resent: Resent) -> InsertParts<'static> {
        let skip = resent == Resent::Skip;
        match self {
            Table::Logs => (
                "request_logs",
                &LOG_COLUMNS,
                // A plain insert stores every row or fails: its ids are
                // the chunk's, and no row need come back (on SQLite each
                // would cross from sqlx's worker thread on its own).
                if skip {
                    " ON CONFLICT DO NOTHING RETURNING id"
                } else {
                    ""
                },
            ),
            Table::Attempts => (
                "request_attempts",
                ATTEMPT_COLUMNS,
                if skip { " ON CONFLICT DO NOTHING" } else { "" },
            ),
            // No key to conflict on: details are written only for the
            // records the summary insert stored now (`insert_records`).
            Table::Details => ("request_log_details", DETAIL_COLUMNS, ""),
        }
    }
}

async fn insert_records(
    conn: &mut AnyConnection,
    chunk: &[Prepared],
    blocks: &Blocks,
    resent: Resent,
) -> Result<Vec<String>, sqlx::Error> {
    let mut ids: Vec<String> = Vec::with_capacity(chunk.len());
    for (slot, part) in statement_parts(chunk) {
        let mut q = sqlx::query(insert_sql(Table::Logs, resent, slot));
        for p in part {
            q = bind_record(q, p);
        }
        match resent {
            Resent::Fail => {
                let stored = q.execute(&mut *conn).await?.rows_affected();
                if stored != part.len() as u64 {
                    return Err(sqlx::Error::Protocol(format!(
                        "a plain insert of {} request logs stored {stored}",
                        part.len()
                    )));
                }
                ids.extend(part.iter().map(|p| p.rec.id.clone()));
            }
            Resent::Skip => {
                for row in q.fetch_all(&mut *conn).await? {
                    ids.push(id_text(&row.try_get::<Vec<u8>, _>(0)?));
                }
            }
        }
    }
    if ids.is_empty() {
        return Ok(ids);
    }
    // Attempts only for the records inserted now: a resent record keeps
    // the attempts stored with it the first time.
    let fresh: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let attempts: Vec<(&Prepared, usize, &pb::Attempt)> = chunk
        .iter()
        .filter(|p| fresh.contains(p.rec.id.as_str()) && p.inline_attempt.is_none())
        .flat_map(|p| {
            p.rec
                .attempts
                .iter()
                .enumerate()
                .map(move |(i, a)| (p, i, a))
        })
        .collect();
    for (slot, part) in statement_parts(&attempts) {
        let mut q = sqlx::query(insert_sql(Table::Attempts, resent, slot));
        for (p, i, a) in part {
            q = q
                .bind(p.id_bytes.as_slice())
                .bind(p.rec.time_ms)
                .bind(i64::try_from(*i).unwrap_or(i64::MAX))
                .bind(a.provider.as_str())
                .bind(a.upstream_model.as_str())
                .bind(i64::from(a.status))
                .bind(a.error.as_str())
                .bind(i64_of(a.latency_ms))
                .bind(i64_of(a.start_offset_ms));
        }
        q.execute(&mut *conn).await?;
    }
    // Details likewise: the blocks of the records inserted now (those
    // body retention is about to remove have none, and read as expired).
    let rows = blocks.rows(chunk, &fresh).await?;
    for (slot, part) in statement_parts(&rows) {
        let mut q = sqlx::query(insert_sql(Table::Details, resent, slot));
        for row in part {
            q = q.bind(row.time_ms).bind(row.id).bind(row.data.as_ref());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(ids)
}

fn bind_record<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    p: &'q Prepared,
) -> Query<'q, Any, AnyArguments<'q>> {
    // SQLite keeps default values (`record::log_values`).
    for v in log_values(p, false) {
        q = match v {
            Value::Int(v) => q.bind(v),
            Value::OptInt(v) => q.bind(v),
            Value::Text(v) => q.bind(v),
            Value::OptText(v) => q.bind(v),
            Value::Bytes(v) => q.bind(v),
            Value::OptFloat(v) => q.bind(v),
        };
    }
    q
}

/// Stores the refused records in `log_quarantine`.
async fn quarantine(
    conn: &mut AnyConnection,
    batch_node: &str,
    rejected: &[Rejected],
    now: i64,
) -> Result<(), StoreError> {
    if rejected.is_empty() {
        return Ok(());
    }
    let rows: Vec<[String; 4]> = rejected
        .iter()
        .map(|r| r.quarantine_row(batch_node))
        .collect();
    for part in rows.chunks(rows_per_insert(QUARANTINE_COLUMNS.len())) {
        let sql = format!(
            "INSERT INTO log_quarantine ({}) VALUES {}",
            QUARANTINE_COLUMNS.join(", "),
            values_sql(Backend::Sqlite, part.len(), QUARANTINE_COLUMNS.len())
        );
        // Row counts vary: not worth a cached prepared statement each.
        let mut q = sqlx::query(&sql).persistent(false);
        for [id, node, reason, record] in part {
            q = q
                .bind(id.as_str())
                .bind(node.as_str())
                .bind(reason.as_str())
                .bind(record.as_str())
                .bind(now);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::multirow::STATEMENT_ROWS;

    #[test]
    fn rows_per_insert_stay_under_the_parameter_limit() {
        assert_eq!(rows_per_insert(32), 1000);
        assert_eq!(rows_per_insert(40), 819);
        assert!(records_per_insert() * LOG_COLUMNS.len() <= SQLITE_MAX_PARAMS);
    }

    #[test]
    fn statements_come_in_a_few_cached_sizes() {
        let widest = LOG_COLUMNS.len().max(ATTEMPT_COLUMNS.len());
        assert!(STATEMENT_ROWS[0] * widest <= SQLITE_MAX_PARAMS);
        {
            for (slot, rows) in STATEMENT_ROWS.into_iter().enumerate() {
                for resent in [Resent::Fail, Resent::Skip] {
                    let skip = if resent == Resent::Skip {
                        " ON CONFLICT DO NOTHING"
                    } else {
                        ""
                    };
                    let logs = insert_sql(Table::Logs, resent, slot);
                    assert!(logs.starts_with("INSERT INTO request_logs ("));
                    // Only a resent batch's insert needs to be told
                    // which rows it stored.
                    let returning = if resent == Resent::Skip {
                        " RETURNING id"
                    } else {
                        ""
                    };
                    assert!(logs.ends_with(&format!("){skip}{returning}")), "{logs}");
                    assert_eq!(logs.matches('(').count(), rows + 1);
                    let attempts = insert_sql(Table::Attempts, resent, slot);
                    assert!(attempts.starts_with("INSERT INTO request_attempts ("));
                    assert!(attempts.ends_with(&format!("){skip}")), "{attempts}");
                    assert_eq!(attempts.matches('(').count(), rows + 1);
                    let details = insert_sql(Table::Details, resent, slot);
                    assert!(details.starts_with("INSERT INTO request_log_details ("));
                    // No key to conflict on (`Table::insert_parts`).
                    assert!(details.ends_with(')'), "{details}");
                }
            }
        }
        // The two-row statement (slot 7) binds both rows.
        let two = insert_sql(Table::Logs, Resent::Fail, 7);
        assert_eq!(two.matches('?').count(), 2 * LOG_COLUMNS.len());
    }
}
