//! Storing one `LogBatch`: every record, its attempts and its details
//! (headers and bodies, compressed: `details.rs`) in one transaction,
//! idempotently by record id. The phases, a module each:
//! - **prepare** (`ingest/record.rs`, on the blocking pool): validate and
//!   normalize each record, cut its long request bodies into pieces
//!   (`pieces.rs`), plan and compress its details blocks, compress the
//!   pieces not stored before;
//! - **write**, by engine, chunk by chunk (`ingest/chunks.rs`):
//!   PostgreSQL takes `COPY` for the records and the rollup deltas and
//!   arrays (`UNNEST`) for the rest (`ingest/write_postgres.rs`), SQLite
//!   multi-row INSERTs (`ingest/write_sqlite.rs`).
//!
//! Records that fail validation, and records the database rejects on their
//! own (found by retrying a failed insert record by record, each in a
//! savepoint), go to `log_quarantine` with the reason and the record as
//! JSON, so that a batch is never refused forever. Infrastructure failures
//! (lost connection, a locked database, a deadlock) fail the whole batch
//! instead: nothing is stored, and the data plane sends it again.
//!
//! The same transaction appends the records' sums to the rollup deltas
//! (`deltas.rs`, #18), and charges their cost to the spend and moves their
//! keys' last use (`account.rs`), for the records inserted now only.

mod by_content;
mod chunks;
mod record;
mod write_postgres;
mod write_sqlite;

use llmgw_proto::v1 as pb;

use super::row::{format_time, strip_details};
use crate::store::{now_ms, Backend, Store, StoreError};
use record::{prepare_all, Batch, Blocks, PreparedBatch, MAX_ROWS_PER_INSERT};

/// What happened to a batch.
#[derive(Debug, Default)]
pub struct Stored {
    /// Records inserted now (not those stored before), as lists show them.
    pub stored: Vec<pb::RequestLog>,
    /// Ids of the records sent to quarantine, as the data plane sent them.
    pub quarantined: Vec<String>,
}

/// Stores a batch in one transaction; see the module documentation.
pub async fn store_batch(store: &Store, batch: pb::LogBatch) -> Result<Stored, StoreError> {
    let now = now_ms();
    let pb::LogBatch {
        node_id: batch_node,
        records,
        ..
    } = batch;
    let dicts = store.details();
    let dict = dicts.current(store.pool()).await?;
    let backend = store.backend();
    // Records inserted together: on SQLite as many as its parameters
    // allow; PostgreSQL binds a column as one array.
    let per_insert = match backend {
        Backend::Sqlite => write_sqlite::records_per_insert(),
        Backend::Postgres => MAX_ROWS_PER_INSERT,
    };
    // Checking and compressing a batch is CPU work (milliseconds for a
    // thousand records): off the runtime, which also serves the admin API,
    // the snapshot streams and the other batches.
    let node = batch_node.clone();
    let body_days = dicts.body_days();
    let packing = dict.clone();
    let known = dicts.known_pieces();
    let PreparedBatch {
        mut good,
        mut rejected,
        blocks,
        pieces,
    } = tokio::task::spawn_blocking(move || {
        prepare_all(
            records,
            &node,
            now,
            packing.as_deref(),
            body_days,
            per_insert,
            &known,
        )
    })
    .await
    .map_err(|e| StoreError::Invalid(format!("preparing a log batch stopped: {e}")))??;
    let blocks = Blocks { list: blocks, dict };
    if good.is_empty() && rejected.is_empty() {
        return Ok(Stored::default());
    }
    let bad_trace_ids = good.iter().filter(|p| p.bad_trace_id).count();
    if bad_trace_ids > 0 {
        // Not worth a record: the trace id is dropped, the record kept.
        tracing::warn!(
            node_id = batch_node,
            records = bad_trace_ids,
            "request logs with a trace_id that is not 32 hex digits; stored without it"
        );
    }

    if backend == Backend::Postgres {
        ensure_days(store, good.iter().map(|p| p.rec.time_ms)).await?;
        // The days of the body pieces to store (a known piece's day has
        // its partition).
        let piece_days: std::collections::BTreeSet<i64> = pieces.keys().map(|(d, _)| *d).collect();
        for day in piece_days {
            super::retention::ensure_pieces_day(store, day).await?;
        }
    }
    let batch = Batch {
        node: &batch_node,
        good: &good,
        blocks: &blocks,
        pieces: &pieces,
        per_insert,
        now,
    };
    let (inserted, stored_pieces) = match store.pg_pool() {
        Some(pg) => write_postgres::write(pg, &batch, &mut rejected).await?,
        None => write_sqlite::write(store.pool(), &batch, &mut rejected).await?,
    };
    // Committed: these pieces are stored, and need not be sent again.
    dicts.known_pieces().add(stored_pieces);

    for r in &rejected {
        tracing::warn!(
            node_id = batch_node,
            id = r.record.id,
            reason = r.reason,
            "request log quarantined"
        );
    }
    if dicts.wants_samples() {
        // Not a record whose plain form holds pieces' hashes: a dictionary
        // learns nothing from them (and such bodies are long anyway, past
        // what a sample may be).
        let samples = good
            .iter_mut()
            .filter(|p| p.pieced == 0 && inserted.contains(&p.rec.id))
            .map(|p| std::mem::take(&mut p.plain))
            .collect();
        dicts.add_samples(store, samples);
    }
    Ok(Stored {
        stored: good
            .into_iter()
            .filter(|p| inserted.contains(&p.rec.id))
            .map(|p| {
                let mut r = strip_details(p.rec);
                r.time = format_time(r.time_ms);
                r
            })
            .collect(),
        quarantined: rejected.into_iter().map(|r| r.record.id.clone()).collect(),
    })
}

/// PostgreSQL: creates the day partitions the records fall in, each in a
/// short transaction of its own before the batch's: a transaction that
/// already holds a parent may not see a partition attached after that
/// (PostgreSQL builds a parent's list of partitions once it locks it).
/// Nearly always the days exist and this is one cheap call per day.
async fn ensure_days(store: &Store, times: impl Iterator<Item = i64>) -> Result<(), StoreError> {
    let days: std::collections::BTreeSet<i64> =
        times.map(|t| t.div_euclid(DAY_MS) * DAY_MS).collect();
    for day in days {
        super::retention::ensure_day(store, day).await?;
    }
    Ok(())
}

const DAY_MS: i64 = 24 * 3600 * 1000;
