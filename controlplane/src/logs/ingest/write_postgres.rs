//! PostgreSQL's writer of a prepared log batch (`record.rs`), on the
//! PostgreSQL driver's own connections (`Store::pg_pool`), which can do
//! what `sqlx::Any` cannot: `COPY` and arrays. A multi-row INSERT had the
//! control plane convert and send each of a batch's 50,000 values as a
//! parameter of its own (docs/benchmarks.md, "Ingest through COPY").
//! - `request_logs` and the rollup deltas go in with `COPY ... FROM
//!   STDIN` (`logs/copy.rs`); only a chunk that holds a record stored
//!   before (a unique violation, `chunks.rs`) goes in again with
//!   `INSERT ... SELECT * FROM UNNEST(...) ON CONFLICT DO NOTHING`.
//! - The smaller tables (attempts, details, body pieces, the spend, the
//!   keys) take one statement of an array per column.

use std::collections::HashSet;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use sqlx::postgres::{PgArguments, PgConnection, PgPool};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use super::by_content::piece_rows;
use super::chunks::{self, Inserter};
use super::record::{
    i64_of, log_values, Batch, Blocks, Prepared, Rejected, Resent, Value, ATTEMPT_COLUMNS,
    DETAIL_COLUMNS, LOG_COLUMNS, PIECE_COLUMNS, QUARANTINE_COLUMNS,
};
use crate::logs::account;
use crate::logs::copy::CopyText;
use crate::logs::deltas;
use crate::logs::pieces::Key;
use crate::logs::rollup;
use crate::logs::row::id_text;
use crate::store::{Backend, StoreError};

/// Writes a prepared batch in one transaction: its records (those the
/// database refuses on their own to the quarantine with `rejected`), their
/// body pieces, rollup deltas, spend and keys' last use. Returns the ids
/// inserted now and the pieces their bodies refer to.
pub(super) async fn write(
    pool: &PgPool,
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
    // The rollups' deltas: a `COPY` (`deltas.rs`).
    if !inserted.is_empty() {
        let from = rollup::complete_from_pg(&mut tx).await?;
        deltas::append_pg(&mut tx, &rollup::RollupBatch::minutes(fresh(), from)?).await?;
    }
    // The rows other batches also write come last, so that their locks are
    // held for as short a time as possible, in one order for every batch
    // (no deadlocks): the spend, then the keys, each in name order.
    account::spend_of(fresh()).write_pg(&mut tx).await?;
    account::touch_keys_pg(&mut tx, fresh()).await?;
    tx.commit().await?;
    Ok((inserted, keys))
}

/// Stores body pieces (`pieces.rs`) that are not stored yet: another
/// batch, here or on another control plane, may have stored one, or be
/// storing it (the insert then waits for that batch's end). The rows come
/// in key order, so two batches wait for each other in one order only.
async fn insert_pieces(conn: &mut PgConnection, rows: &[(&Key, &[u8])]) -> Result<(), sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        unnest_sql(
            "request_log_pieces",
            PIECE_COLUMNS,
            " ON CONFLICT DO NOTHING",
        )
    });
    if rows.is_empty() {
        return Ok(());
    }
    let days: Vec<i64> = rows.iter().map(|((day, _), _)| *day).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|((_, h), _)| h.as_slice()).collect();
    let data: Vec<&[u8]> = rows.iter().map(|(_, d)| *d).collect();
    sqlx::query(SQL.as_str())
        .bind(days)
        .bind(hashes)
        .bind(data)
        .execute(conn)
        .await?;
    Ok(())
}

/// A chunk's records, attempts and details (`chunks.rs` puts each in a
/// savepoint).
impl Inserter for Postgres {
    const BACKEND: Backend = Backend::Postgres;

    fn insert<'a>(
        conn: &'a mut PgConnection,
        chunk: &'a [Prepared],
        blocks: &'a Blocks,
        resent: Resent,
    ) -> BoxFuture<'a, Result<Vec<String>, sqlx::Error>> {
        Box::pin(insert_records(conn, chunk, blocks, resent))
    }
}

/// `INSERT INTO table (columns) SELECT * FROM UNNEST($1, ...)` and what
/// follows: the arrays' types are the bound ones, and the insert casts
/// each to its column's (`INTEGER` and `SMALLINT` columns take `BIGINT`
/// arrays).
fn unnest_sql(table: &str, columns: &[&str], tail: &str) -> String {
    let arrays: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {table} ({}) SELECT * FROM UNNEST({}){tail}",
        columns.join(", "),
        arrays.join(", ")
    )
}

async fn insert_records(
    conn: &mut PgConnection,
    chunk: &[Prepared],
    blocks: &Blocks,
    resent: Resent,
) -> Result<Vec<String>, sqlx::Error> {
    static ATTEMPTS: LazyLock<[String; 2]> = LazyLock::new(|| {
        [
            unnest_sql("request_attempts", ATTEMPT_COLUMNS, ""),
            unnest_sql(
                "request_attempts",
                ATTEMPT_COLUMNS,
                " ON CONFLICT DO NOTHING",
            ),
        ]
    });
    // No key to conflict on: details are written only for the records the
    // summary insert stored now.
    static DETAILS: LazyLock<String> =
        LazyLock::new(|| unnest_sql("request_log_details", DETAIL_COLUMNS, ""));
    let variant = match resent {
        Resent::Fail => 0,
        Resent::Skip => 1,
    };

    let ids: Vec<String> = match resent {
        Resent::Fail => {
            let stored = copy_logs(conn, chunk).await?;
            if stored != chunk.len() as u64 {
                return Err(sqlx::Error::Protocol(format!(
                    "a COPY of {} request logs stored {stored}",
                    chunk.len()
                )));
            }
            chunk.iter().map(|p| p.rec.id.clone()).collect()
        }
        Resent::Skip => insert_logs_skipping(conn, chunk).await?,
    };
    if ids.is_empty() {
        return Ok(ids);
    }
    // Attempts only for the records inserted now: a resent record keeps
    // the attempts stored with it the first time.
    let fresh: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut attempts = AttemptArrays::default();
    for p in chunk
        .iter()
        .filter(|p| fresh.contains(p.rec.id.as_str()) && p.inline_attempt.is_none())
    {
        for (i, a) in p.rec.attempts.iter().enumerate() {
            attempts.request_id.push(p.id_bytes.as_slice());
            attempts.request_time_ms.push(p.rec.time_ms);
            attempts.attempt.push(i64::try_from(i).unwrap_or(i64::MAX));
            attempts.provider.push(a.provider.as_str());
            attempts.upstream_model.push(a.upstream_model.as_str());
            attempts.status.push(i64::from(a.status));
            attempts.error.push(a.error.as_str());
            attempts.latency_ms.push(i64_of(a.latency_ms));
            attempts.start_offset_ms.push(i64_of(a.start_offset_ms));
        }
    }
    if !attempts.request_id.is_empty() {
        let a = attempts;
        sqlx::query(ATTEMPTS[variant].as_str())
            .bind(a.request_id)
            .bind(a.request_time_ms)
            .bind(a.attempt)
            .bind(a.provider)
            .bind(a.upstream_model)
            .bind(a.status)
            .bind(a.error)
            .bind(a.latency_ms)
            .bind(a.start_offset_ms)
            .execute(&mut *conn)
            .await?;
    }
    // Details likewise: the blocks of the records inserted now (those
    // body retention is about to remove have none, and read as expired).
    let rows = blocks.rows(chunk, &fresh).await?;
    if !rows.is_empty() {
        let (mut times, mut first_ids, mut data) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            times.push(row.time_ms);
            first_ids.push(row.id);
            data.push(row.data.as_ref());
        }
        sqlx::query(DETAILS.as_str())
            .bind(times)
            .bind(first_ids)
            .bind(data)
            .execute(&mut *conn)
            .await?;
    }
    Ok(ids)
}

/// Stores `chunk`'s `request_logs` rows with `COPY` (`logs/copy.rs`):
/// the server parses each value with its column's input function and
/// inserts the rows in bulk, where `INSERT ... SELECT FROM UNNEST` first
/// materializes the arrays' rows. The whole chunk is stored or none of it:
/// a record stored before fails it (a unique violation), and the chunk
/// goes in again skipping what is stored. Returns the rows stored.
async fn copy_logs(conn: &mut PgConnection, chunk: &[Prepared]) -> Result<u64, sqlx::Error> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("COPY request_logs ({}) FROM STDIN", LOG_COLUMNS.join(", ")));
    let mut copy = conn.copy_in_raw(&SQL).await?;
    copy.send(copy_rows(chunk)).await?;
    copy.finish().await
}

/// Stores those of `chunk`'s `request_logs` rows that are not stored yet
/// (a resent batch's), an array per column; returns the ids stored now.
async fn insert_logs_skipping(
    conn: &mut PgConnection,
    chunk: &[Prepared],
) -> Result<Vec<String>, sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        unnest_sql(
            "request_logs",
            &LOG_COLUMNS,
            " ON CONFLICT DO NOTHING RETURNING id",
        )
    });
    let Some(first) = chunk.first() else {
        return Ok(Vec::new());
    };
    // Defaults as NULL (`record::log_values`, migration 0037).
    let mut columns = log_values(first, true).map(|v| Column::like(&v, chunk.len()));
    for p in chunk {
        for (column, value) in columns.iter_mut().zip(log_values(p, true)) {
            column.push(value)?;
        }
    }
    let mut q = sqlx::query(SQL.as_str());
    for column in columns {
        q = column.bind(q);
    }
    q.fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get::<Vec<u8>, _>(0).map(|id| id_text(&id)))
        .collect()
}

/// `chunk`'s `request_logs` rows in `COPY`'s text format, in
/// [`LOG_COLUMNS`]' order.
fn copy_rows(chunk: &[Prepared]) -> Vec<u8> {
    let mut rows = CopyText::with_capacity(chunk.len() * 512);
    for p in chunk {
        // Defaults as NULL (`record::log_values`, migration 0037).
        for v in log_values(p, true) {
            match v {
                Value::Int(v) => rows.int(v),
                Value::OptInt(v) => rows.opt_int(v),
                Value::Text(v) => rows.text(v),
                Value::OptText(v) => rows.opt_text(v),
                Value::Bytes(v) => rows.bytes(v),
                Value::OptFloat(v) => rows.opt_float(v),
            }
        }
        rows.end_row();
    }
    rows.into_bytes()
}

/// `request_attempts`' columns ([`ATTEMPT_COLUMNS`]) as arrays.
#[derive(Default)]
struct AttemptArrays<'a> {
    request_id: Vec<&'a [u8]>,
    request_time_ms: Vec<i64>,
    attempt: Vec<i64>,
    provider: Vec<&'a str>,
    upstream_model: Vec<&'a str>,
    status: Vec<i64>,
    error: Vec<&'a str>,
    latency_ms: Vec<i64>,
    start_offset_ms: Vec<i64>,
}

/// One `request_logs` column's values, as the array bound for it: the
/// variant of the column's [`Value`]s.
enum Column<'a> {
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
    Text(Vec<&'a str>),
    OptText(Vec<Option<&'a str>>),
    Bytes(Vec<&'a [u8]>),
    OptFloat(Vec<Option<f64>>),
}

impl<'a> Column<'a> {
    /// An empty column for values like `v`, with room for `n`.
    fn like(v: &Value<'_>, n: usize) -> Column<'a> {
        match v {
            Value::Int(_) => Column::Int(Vec::with_capacity(n)),
            Value::OptInt(_) => Column::OptInt(Vec::with_capacity(n)),
            Value::Text(_) => Column::Text(Vec::with_capacity(n)),
            Value::OptText(_) => Column::OptText(Vec::with_capacity(n)),
            Value::Bytes(_) => Column::Bytes(Vec::with_capacity(n)),
            Value::OptFloat(_) => Column::OptFloat(Vec::with_capacity(n)),
        }
    }

    fn push(&mut self, v: Value<'a>) -> Result<(), sqlx::Error> {
        match (self, v) {
            (Column::Int(c), Value::Int(v)) => c.push(v),
            (Column::OptInt(c), Value::OptInt(v)) => c.push(v),
            (Column::Text(c), Value::Text(v)) => c.push(v),
            (Column::OptText(c), Value::OptText(v)) => c.push(v),
            (Column::Bytes(c), Value::Bytes(v)) => c.push(v),
            (Column::OptFloat(c), Value::OptFloat(v)) => c.push(v),
            _ => {
                // `log_values` gives each column one variant.
                return Err(sqlx::Error::Protocol(
                    "a request_logs column's values differ in kind".into(),
                ));
            }
        }
        Ok(())
    }

    fn bind<'q>(self, q: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments>
    where
        'a: 'q,
    {
        match self {
            Column::Int(c) => q.bind(c),
            Column::OptInt(c) => q.bind(c),
            Column::Text(c) => q.bind(c),
            Column::OptText(c) => q.bind(c),
            Column::Bytes(c) => q.bind(c),
            Column::OptFloat(c) => q.bind(c),
        }
    }
}

/// Stores the refused records in `log_quarantine`.
async fn quarantine(
    conn: &mut PgConnection,
    batch_node: &str,
    rejected: &[Rejected],
    now: i64,
) -> Result<(), StoreError> {
    if rejected.is_empty() {
        return Ok(());
    }
    let mut columns: [Vec<String>; 4] = Default::default();
    for r in rejected {
        for (column, v) in columns.iter_mut().zip(r.quarantine_row(batch_node)) {
            column.push(v);
        }
    }
    let [ids, nodes, reasons, records] = columns;
    // `received_at` is the batch's time, one value for every row.
    let sql = format!(
        "INSERT INTO log_quarantine ({}) SELECT u.*, $5 FROM UNNEST($1::TEXT[], $2::TEXT[], \
         $3::TEXT[], $4::TEXT[]) AS u",
        QUARANTINE_COLUMNS.join(", ")
    );
    sqlx::query(&sql)
        .bind(ids)
        .bind(nodes)
        .bind(reasons)
        .bind(records)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::record::{prepare_all, LOG_COLUMN_COUNT};
    use super::*;
    use llmgw_proto::v1 as pb;

    #[test]
    fn a_copy_row_holds_each_column_in_its_place() {
        let now = 1_714_564_900_000;
        let sparse = pb::RequestLog {
            id: "0190a2b4-0000-7000-8000-000000000001".into(),
            time_ms: now - 5,
            status: 200,
            model: "m\tx".into(),
            cost_nanos: 1234,
            ..Default::default()
        };
        let full = pb::RequestLog {
            id: "0190a2b4-0000-7000-8000-000000000002".into(),
            cancelled: true,
            retries: 2,
            error: "boom".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            ..sparse.clone()
        };
        let known = crate::logs::pieces::Known::default();
        let batch = prepare_all(vec![sparse, full], "node-a", now, None, 7, 1000, &known).unwrap();
        assert_eq!(batch.good.len(), 2);
        let text = String::from_utf8(copy_rows(&batch.good)).unwrap();
        let rows: Vec<Vec<&str>> = text
            .strip_suffix('\n')
            .unwrap()
            .split('\n')
            .map(|line| line.split('\t').collect())
            .collect();
        let at = |row: usize, column: &str| {
            let i = LOG_COLUMNS.iter().position(|c| *c == column).unwrap();
            rows[row][i]
        };
        for row in &rows {
            assert_eq!(row.len(), LOG_COLUMN_COUNT);
        }
        assert_eq!(at(0, "id"), "\\\\x0190a2b4000070008000000000000001");
        assert_eq!(at(0, "time_ms"), (now - 5).to_string());
        assert_eq!(at(0, "node_id"), "node-a");
        assert_eq!(at(0, "model"), "m\\tx");
        assert_eq!(at(0, "status"), "200");
        assert_eq!(at(0, "cost_nanos"), "1234");
        // Defaults are NULL on PostgreSQL (migration 0037), the float cost
        // always.
        for column in ["cancelled", "retries", "error", "trace_id", "cost"] {
            assert_eq!(at(0, column), "\\N", "{column}");
        }
        assert_eq!(
            [
                at(1, "cancelled"),
                at(1, "retries"),
                at(1, "error"),
                at(1, "cost")
            ],
            ["1", "2", "boom", "\\N"]
        );
        assert_eq!(at(1, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
        // Its details block is planned: an offset, 0 for the first record.
        assert_eq!(at(0, "details_offset_ms"), "0");
    }

    #[test]
    fn an_array_per_column() {
        let sql = unnest_sql("request_logs", &LOG_COLUMNS, " ON CONFLICT DO NOTHING");
        assert!(sql.starts_with("INSERT INTO request_logs (id, time_ms, node_id, "));
        assert!(sql.contains(&format!("${LOG_COLUMN_COUNT})")), "{sql}");
        assert!(
            !sql.contains(&format!("${}", LOG_COLUMN_COUNT + 1)),
            "{sql}"
        );
        assert!(sql.ends_with(") ON CONFLICT DO NOTHING"), "{sql}");
    }
}
