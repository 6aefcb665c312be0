//! Storing one `LogBatch`: every record, its attempts and its details
//! (headers and bodies, compressed: `details.rs`) in one transaction,
//! idempotently by record id. Records go in with plain multi-row inserts;
//! only a batch that holds a record stored before (a unique violation) is
//! inserted again with `ON CONFLICT DO NOTHING`, which skips it.
//!
//! Records that fail validation, and records the database rejects on their
//! own (found by retrying a failed multi-row insert record by record, each
//! in a savepoint), go to `log_quarantine` with the reason and the record as
//! JSON, so that a batch is never refused forever. Infrastructure failures
//! (lost connection, a locked database, a deadlock) fail the whole batch
//! instead: nothing is stored, and the data plane sends it again.
//!
//! The same transaction adds the records' cost to the spend of their key,
//! model and provider (budgets, #15), and appends the records' sums to the
//! rollup deltas (`deltas.rs`, #18), for the records inserted now only.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock};

use llmgw_core::limits::Scope;
use llmgw_proto::v1 as pb;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Acquire, Any, AnyConnection, Row};

use super::blocks;
use super::deltas;
use super::details;
use super::rollup;
use super::row::{canonical_trace_id, format_time, id_text, inline_attempt, strip_details};
use crate::store::multirow::{insert_text, insert_texts, statement_parts, values_sql, InsertParts};
use crate::store::quota::{micros_of_nanos, nanos_of, SpendBatch};
use crate::store::{now_ms, Backend, Store, StoreError};

/// Columns of `request_logs`, in the order values are bound.
const LOG_COLUMNS: &[&str] = &[
    "id",
    "time_ms",
    "node_id",
    "sequence",
    "key_name",
    "client_ip",
    "user_agent",
    "protocol",
    "path",
    "model",
    "provider",
    "upstream_model",
    "status",
    "stream",
    "cancelled",
    "latency_ms",
    "ttfb_ms",
    "retries",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "usage_source",
    "cost",
    "error",
    "snapshot_version",
    "request_body_truncated",
    "response_body_truncated",
    "upstream_protocol",
    "translated",
    "upstream_request_body_truncated",
    "dropped_fields",
    "reasoning_tokens",
    "count_source",
    "outcome",
    "stop_reason",
    "end_user",
    "limited_by",
    "trace_id",
    "origin",
    "replay_of",
    "cost_nanos",
    "audio_milliseconds",
    "characters",
    "images",
    "image_size",
    "image_quality",
    "audio_source",
    "attempt_latency_ms",
    "attempt_offset_ms",
    "details_offset_ms",
];

const ATTEMPT_COLUMNS: &[&str] = &[
    "request_id",
    "request_time_ms",
    "attempt",
    "provider",
    "upstream_model",
    "status",
    "error",
    "latency_ms",
    "start_offset_ms",
];

/// Columns of `request_log_details` (`details.rs`), in bind order.
const DETAIL_COLUMNS: &[&str] = &["time_ms", "id", "data"];

const QUARANTINE_COLUMNS: &[&str] = &["id", "node_id", "reason", "record", "received_at"];

/// Bound parameters allowed in one statement.
const SQLITE_MAX_PARAMS: usize = 32_766;
const POSTGRES_MAX_PARAMS: usize = 65_535;
/// Rows per INSERT, whatever the parameter limit allows.
const MAX_ROWS_PER_INSERT: usize = 1000;

// Validation bounds: anything outside is quarantined.
/// 2000-01-01T00:00:00Z.
const MIN_TIME_MS: i64 = 946_684_800_000;
/// Clock skew tolerated for records from the future.
const FUTURE_SLACK_MS: i64 = 24 * 3600 * 1000;
/// 24 days: PostgreSQL keeps durations in 32-bit columns (2^31 ms is
/// 24.8 days; migrations/postgres/0030_compact_log_row.sql).
const MAX_DURATION_MS: u64 = 24 * 24 * 3600 * 1000;
/// Tokens, characters, audio milliseconds, retries and images: 32-bit
/// columns too, and billions of tokens in one request are a bug.
const MAX_COUNT: u64 = i32::MAX as u64;
const MAX_COST: f64 = 1e9;
/// [`MAX_COST`] in nano-dollars.
const MAX_COST_NANOS: i64 = 1_000_000_000_000_000_000;
const MAX_STATUS: u32 = 999;
const MAX_ATTEMPTS: usize = 1000;
/// Indexed names (model, provider, key...): PostgreSQL's B-tree entries
/// hold about 2.7 kB.
const MAX_NAME_BYTES: usize = 1024;
const MAX_TEXT_BYTES: usize = 8 * 1024;
const MAX_ERROR_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 1000;
const MAX_HEADERS_BYTES: usize = 1024 * 1024;
/// Dropped fields of one record, and the bytes of each one's path.
const MAX_DROPPED_FIELDS: usize = 1000;
const MAX_DROPPED_FIELD_BYTES: usize = 1024;
const MAX_REASON_CHARS: usize = 2000;

/// What happened to a batch.
#[derive(Debug, Default)]
pub struct Stored {
    /// Records inserted now (not those stored before), as lists show them.
    pub stored: Vec<pb::RequestLog>,
    /// Ids of the records sent to quarantine, as the data plane sent them.
    pub quarantined: Vec<String>,
}

/// A validated record, ready to bind. `rec` keeps its header maps and
/// dropped fields (for quarantine, should the database refuse it); the JSON
/// is what is stored.
struct Prepared {
    rec: pb::RequestLog,
    /// `dropped_fields` as a JSON array of strings.
    dropped_fields: String,
    /// The id as the data plane sent it, where canonicalizing changed it:
    /// a quarantined record is reported by the id it came with.
    sent_id: Option<String>,
    /// The record came with a trace id that is not one, stored as ''.
    bad_trace_id: bool,
    /// The 16 bytes of the id, as every log table stores it
    /// (`row::stored_id`).
    id_bytes: Vec<u8>,
    /// The headers and bodies uncompressed (`details::plain`): what its
    /// block holds, and a sample for the next dictionary.
    plain: Vec<u8>,
    /// The record's details block (an index into [`Blocks`]) and how long
    /// after the block's time the record came
    /// (`request_logs.details_offset_ms`); `None` when the details are not
    /// stored, as when body retention would remove them at once.
    block: Option<(usize, i64)>,
    /// The one attempt kept in the record's row (`row::inline_attempt`);
    /// `None` when its attempts go to `request_attempts`.
    inline_attempt: Option<(i64, i64)>,
}

impl Prepared {
    /// The record for the quarantine, under the id it was sent with.
    fn refused(&self, reason: String) -> Rejected {
        let mut record = self.rec.clone();
        if let Some(id) = &self.sent_id {
            record.id.clone_from(id);
        }
        Rejected { record, reason }
    }
}

struct Rejected {
    record: pb::RequestLog,
    reason: String,
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
    let per_insert = rows_per_insert(backend, LOG_COLUMNS.len());
    // Checking and compressing a batch is CPU work (milliseconds for a
    // thousand records): off the runtime, which also serves the admin API,
    // the snapshot streams and the other batches.
    let node = batch_node.clone();
    let body_days = dicts.body_days();
    let packing = dict.clone();
    let PreparedBatch {
        mut good,
        mut rejected,
        blocks,
    } = tokio::task::spawn_blocking(move || {
        prepare_all(
            records,
            &node,
            now,
            packing.as_deref(),
            body_days,
            per_insert,
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
    }
    let mut tx = store.pool().begin().await?;
    let mut inserted: HashSet<String> = HashSet::new();
    // Nearly always every record is new: plain inserts, which on
    // PostgreSQL check each row's id once, where `ON CONFLICT DO NOTHING`
    // looks it up before inserting too. A record stored before (a batch
    // sent again after a lost ack) fails its chunk, which is then inserted
    // again skipping what is stored, and so are the batch's later chunks
    // (a resent batch is most likely resent whole).
    let mut resent = Resent::Fail;
    for chunk in good.chunks(per_insert) {
        let outcome = match insert_in_savepoint(&mut tx, backend, chunk, &blocks, resent).await {
            Err(e) if resent == Resent::Fail && is_duplicate(&e) => {
                resent = Resent::Skip;
                insert_in_savepoint(&mut tx, backend, chunk, &blocks, Resent::Skip).await
            }
            other => other,
        };
        match outcome {
            Ok(ids) => inserted.extend(ids),
            Err(e) if record_level(backend, &e) => {
                tracing::warn!(error = %e, "a multi-row log insert failed; retrying record by record");
                for p in chunk {
                    let one = std::slice::from_ref(p);
                    match insert_in_savepoint(&mut tx, backend, one, &blocks, Resent::Skip).await {
                        Ok(ids) => inserted.extend(ids),
                        Err(e) if record_level(backend, &e) => rejected
                            .push(p.refused(format!("the database rejected the record: {e}"))),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    quarantine(&mut tx, backend, &batch_node, &rejected, now).await?;
    let fresh = || {
        good.iter()
            .filter(|p| inserted.contains(&p.rec.id))
            .map(|p| &p.rec)
    };
    // The rollups' deltas: plain inserts (`deltas.rs`).
    if !inserted.is_empty() {
        let from = rollup::complete_from(&mut tx).await?;
        deltas::append(
            &mut tx,
            backend,
            &rollup::RollupBatch::minutes(fresh(), from)?,
        )
        .await?;
    }
    // The rows other batches also write come last, so that their locks are
    // held for as short a time as possible, in one order for every batch
    // (no deadlocks): the spend, then the keys, each in name order.
    spend_of(fresh()).write(&mut tx, backend).await?;
    touch_keys(&mut tx, fresh()).await?;
    tx.commit().await?;

    for r in &rejected {
        tracing::warn!(
            node_id = batch_node,
            id = r.record.id,
            reason = r.reason,
            "request log quarantined"
        );
    }
    if dicts.wants_samples() {
        let samples = good
            .iter_mut()
            .filter(|p| inserted.contains(&p.rec.id))
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

fn rows_per_insert(backend: Backend, columns: usize) -> usize {
    let max = match backend {
        Backend::Sqlite => SQLITE_MAX_PARAMS,
        Backend::Postgres => POSTGRES_MAX_PARAMS,
    };
    (max / columns).clamp(1, MAX_ROWS_PER_INSERT)
}

/// Whether an error concerns the rows of the statement (bad data) rather
/// than the database as a whole.
fn record_level(backend: Backend, e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(d) = e else {
        return false;
    };
    let Some(code) = d.code() else {
        return false;
    };
    match backend {
        // Data exceptions, integrity violations, program limits (index row
        // too big).
        Backend::Postgres => ["22", "23", "54"].iter().any(|c| code.starts_with(c)),
        // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE
        // (extended codes keep the primary code in the low byte).
        Backend::Sqlite => code
            .parse::<i64>()
            .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25)),
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whether an insert failed on a row stored before (a unique key).
fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// What an insert does with a record whose id is stored already (one
/// sent again).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resent {
    /// The statement fails (a unique violation): the fast path, for
    /// batches whose records are all new.
    Fail,
    /// The record is left out (`ON CONFLICT DO NOTHING`).
    Skip,
}

/// Inserts records and their attempts inside a savepoint, so a failure
/// leaves the transaction as it was. Returns the ids actually inserted.
async fn insert_in_savepoint(
    tx: &mut sqlx::Transaction<'static, Any>,
    backend: Backend,
    chunk: &[Prepared],
    blocks: &Blocks,
    resent: Resent,
) -> Result<Vec<String>, sqlx::Error> {
    let mut sp = Acquire::begin(&mut *tx).await?;
    match insert_records(&mut sp, backend, chunk, blocks, resent).await {
        Ok(ids) => {
            sp.commit().await?;
            Ok(ids)
        }
        Err(e) => {
            sp.rollback().await?;
            Err(e)
        }
    }
}

/// The INSERT text for `STATEMENT_ROWS[slot]` rows.
fn insert_sql(backend: Backend, table: Table, resent: Resent, slot: usize) -> &'static str {
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
    insert_text(&TEXTS, backend, variant, slot)
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
                LOG_COLUMNS,
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
    backend: Backend,
    chunk: &[Prepared],
    blocks: &Blocks,
    resent: Resent,
) -> Result<Vec<String>, sqlx::Error> {
    let mut ids: Vec<String> = Vec::with_capacity(chunk.len());
    for (slot, part) in statement_parts(chunk) {
        let mut q = sqlx::query(insert_sql(backend, Table::Logs, resent, slot));
        for p in part {
            q = bind_record(q, p, sparse(backend));
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
        let mut q = sqlx::query(insert_sql(backend, Table::Attempts, resent, slot));
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
        let mut q = sqlx::query(insert_sql(backend, Table::Details, resent, slot));
        for row in part {
            q = q.bind(row.time_ms).bind(row.id).bind(row.data.as_ref());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(ids)
}

/// A batch's planned details blocks (`blocks.rs`), compressed for all
/// their records, and the dictionary they were compressed with.
struct Blocks {
    list: Vec<Block>,
    dict: Option<Arc<details::Current>>,
}

/// Records' 16-byte ids and uncompressed details, owned (to compress
/// them on the blocking pool).
type OwnedRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// A `request_log_details` row of a block: its time, the id of its
/// first record (informative: `logs get` finds a record by the ids inside)
/// and the stored block.
struct BlockRow<'a> {
    time_ms: i64,
    id: &'a [u8],
    data: Cow<'a, [u8]>,
}

struct Block {
    time_ms: i64,
    /// How many records it was planned and compressed for.
    records: usize,
    data: Vec<u8>,
}

impl Blocks {
    /// The `request_log_details` rows of the records of `chunk` inserted
    /// now (`fresh`): each planned block as compressed, or, when only some
    /// of its records are new (a batch sent again in part, or inserted
    /// record by record after a refusal), compressed again for those. The
    /// block keeps its planned time, which their summary rows point at.
    async fn rows<'a>(
        &'a self,
        chunk: &'a [Prepared],
        fresh: &HashSet<&str>,
    ) -> Result<Vec<BlockRow<'a>>, sqlx::Error> {
        let mut members: BTreeMap<usize, Vec<&Prepared>> = BTreeMap::new();
        for p in chunk {
            if let Some((block, _)) = p.block {
                if fresh.contains(p.rec.id.as_str()) {
                    members.entry(block).or_default().push(p);
                }
            }
        }
        let mut rows = Vec::with_capacity(members.len());
        // The blocks to compress again: a row's place, its records.
        let mut again: Vec<(usize, OwnedRecords)> = Vec::new();
        for (at, records) in members {
            let (Some(block), Some(first)) = (self.list.get(at), records.first()) else {
                return Err(sqlx::Error::Protocol(format!(
                    "log details block {at} was not planned"
                )));
            };
            let data = if records.len() == block.records {
                Cow::Borrowed(block.data.as_slice())
            } else {
                again.push((
                    rows.len(),
                    records
                        .iter()
                        .map(|p| (p.id_bytes.clone(), p.plain.clone()))
                        .collect(),
                ));
                Cow::Owned(Vec::new())
            };
            rows.push(BlockRow {
                time_ms: block.time_ms,
                id: first.id_bytes.as_slice(),
                data,
            });
        }
        if again.is_empty() {
            return Ok(rows);
        }
        // CPU work, off the runtime as the batch's preparation is.
        let dict = self.dict.clone();
        let packed = tokio::task::spawn_blocking(move || {
            let mut packer = details::Packer::new(dict.as_deref())?;
            again
                .into_iter()
                .map(|(row, records)| {
                    let each = records.iter().map(|(id, p)| (id.as_slice(), p.as_slice()));
                    Ok((row, packer.pack_block(each)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("compressing log details stopped: {e}")))?
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        for (row, data) in packed {
            if let Some(r) = rows.get_mut(row) {
                r.data = Cow::Owned(data);
            }
        }
        Ok(rows)
    }
}

/// Whether `request_logs` keeps a column's default value as NULL: on
/// PostgreSQL (migration 0037), where a NULL is a bit of the row's null
/// bitmap and a zero 2 to 8 bytes. SQLite stores a 0 or '' in its record
/// header alone, so its columns stay NOT NULL. `row::summary_from_row`
/// reads a NULL as the default.
fn sparse(backend: Backend) -> bool {
    backend == Backend::Postgres
}

fn bind_record<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    p: &'q Prepared,
    sparse: bool,
) -> Query<'q, Any, AnyArguments<'q>> {
    let r = &p.rec;
    let int = |v: i64| (!sparse || v != 0).then_some(v);
    let text = |v: &'q str| (!sparse || !v.is_empty()).then_some(v);
    q.bind(p.id_bytes.as_slice())
        .bind(r.time_ms)
        .bind(r.node_id.as_str())
        .bind(i64_of(r.sequence))
        .bind(r.key.as_str())
        .bind(r.client_ip.as_str())
        .bind(r.user_agent.as_str())
        .bind(r.protocol.as_str())
        .bind(r.path.as_str())
        .bind(r.model.as_str())
        .bind(r.provider.as_str())
        .bind(r.upstream_model.as_str())
        .bind(i64::from(r.status))
        .bind(i64::from(r.stream))
        .bind(int(i64::from(r.cancelled)))
        .bind(i64_of(r.latency_ms))
        .bind(i64_of(r.ttfb_ms))
        .bind(int(i64::from(r.retries)))
        .bind(i64_of(r.input_tokens))
        .bind(i64_of(r.output_tokens))
        .bind(int(i64_of(r.cache_read_tokens)))
        .bind(int(i64_of(r.cache_creation_tokens)))
        .bind(r.usage_source.as_str())
        // The exact `cost_nanos` says the same (`normalize`).
        .bind((!sparse).then_some(r.cost))
        .bind(text(r.error.as_str()))
        .bind(i64_of(r.snapshot_version))
        .bind(int(i64::from(r.request_body_truncated)))
        .bind(int(i64::from(r.response_body_truncated)))
        .bind(r.upstream_protocol.as_str())
        .bind(int(i64::from(r.translated)))
        .bind(int(i64::from(r.upstream_request_body_truncated)))
        .bind(if sparse && r.dropped_fields.is_empty() {
            None
        } else {
            Some(p.dropped_fields.as_str())
        })
        .bind(int(i64_of(r.reasoning_tokens)))
        .bind(text(r.count_source.as_str()))
        .bind(r.outcome().name())
        .bind(text(r.stop_reason.as_str()))
        .bind(r.user.as_str())
        .bind(text(r.limited_by.as_str()))
        .bind(text(r.trace_id.as_str()))
        .bind(text(r.origin.as_str()))
        .bind(text(r.replay_of.as_str()))
        .bind(r.cost_nanos)
        .bind(int(i64_of(r.audio_milliseconds)))
        .bind(int(i64_of(r.characters)))
        .bind(int(i64::from(r.images)))
        .bind(text(r.image_size.as_str()))
        .bind(text(r.image_quality.as_str()))
        .bind(text(r.audio_source.as_str()))
        .bind(p.inline_attempt.map(|(latency, _)| latency))
        .bind(p.inline_attempt.map(|(_, offset)| offset))
        .bind(p.block.map(|(_, offset)| offset))
}

async fn quarantine(
    conn: &mut AnyConnection,
    backend: Backend,
    batch_node: &str,
    rejected: &[Rejected],
    now: i64,
) -> Result<(), StoreError> {
    if rejected.is_empty() {
        return Ok(());
    }
    let rows: Vec<[String; 4]> = rejected
        .iter()
        .map(|r| {
            let node = if r.record.node_id.is_empty() {
                batch_node
            } else {
                r.record.node_id.as_str()
            };
            [
                clean(&r.record.id),
                clean(node),
                r.reason.chars().take(MAX_REASON_CHARS).collect(),
                // serde_json escapes control characters, NUL included.
                serde_json::to_string(&r.record)
                    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
            ]
        })
        .collect();
    for part in rows.chunks(rows_per_insert(backend, QUARANTINE_COLUMNS.len())) {
        let sql = format!(
            "INSERT INTO log_quarantine ({}) VALUES {}",
            QUARANTINE_COLUMNS.join(", "),
            values_sql(backend, part.len(), QUARANTINE_COLUMNS.len())
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

/// Moves `api_keys.last_used_at` forward to the newest record of each key.
/// Keys are updated in name order, so that concurrent batches lock them in
/// the same order.
async fn touch_keys<'a>(
    conn: &mut AnyConnection,
    records: impl Iterator<Item = &'a pb::RequestLog>,
) -> Result<(), StoreError> {
    let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
    for r in records.filter(|r| !r.key.is_empty()) {
        let t = newest.entry(r.key.as_str()).or_insert(r.time_ms);
        *t = (*t).max(r.time_ms);
    }
    for (key, t) in newest {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE name = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(t)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The spend of the records stored now (never of one stored before, so a
/// batch shipped twice is counted once): each record's cost charged to its
/// key, its model and its provider, summed per UTC day.
fn spend_of<'a>(records: impl Iterator<Item = &'a pb::RequestLog>) -> SpendBatch {
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

/// The text without NUL characters, which PostgreSQL cannot store.
fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_string()
    }
}

fn clean_in_place(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        Err(format!("{what} is {} bytes long (at most {max})", s.len()))
    } else {
        Ok(())
    }
}

fn headers_json(
    what: &str,
    h: &std::collections::BTreeMap<String, String>,
) -> Result<String, String> {
    if h.len() > MAX_HEADERS {
        return Err(format!(
            "{what} has {} entries (at most {MAX_HEADERS})",
            h.len()
        ));
    }
    let size: usize = h.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_HEADERS_BYTES {
        return Err(format!(
            "{what} is {size} bytes (at most {MAX_HEADERS_BYTES})"
        ));
    }
    // A BTreeMap is in key order already; only NULs need new strings.
    if h.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        let cleaned: BTreeMap<String, String> =
            h.iter().map(|(k, v)| (clean(k), clean(v))).collect();
        serde_json::to_string(&cleaned)
    } else {
        serde_json::to_string(h)
    }
    .map_err(|e| format!("{what}: {e}"))
}

/// `dropped_fields` as stored: a JSON array of strings, in order.
fn dropped_json(fields: &[String]) -> String {
    serde_json::Value::Array(fields.iter().map(|f| f.as_str().into()).collect()).to_string()
}

fn check_dropped(fields: &[String]) -> Result<(), String> {
    if fields.len() > MAX_DROPPED_FIELDS {
        return Err(format!(
            "dropped_fields has {} entries (at most {MAX_DROPPED_FIELDS})",
            fields.len()
        ));
    }
    fields
        .iter()
        .try_for_each(|f| check_len("a dropped field", f, MAX_DROPPED_FIELD_BYTES))
}

/// What [`check`] found: the record's id and its headers as JSON.
struct Checked {
    id: uuid::Uuid,
    request_headers: String,
    response_headers: String,
}

/// Every record of a batch checked, and its details blocks planned
/// (`blocks.rs`, within each chunk of `per_insert` records that is
/// inserted together) and compressed with one compression context; a
/// repeated id within the batch is the same record, kept once.
fn prepare_all(
    records: Vec<pb::RequestLog>,
    batch_node: &str,
    now: i64,
    dict: Option<&details::Current>,
    body_days: u32,
    per_insert: usize,
) -> Result<PreparedBatch, StoreError> {
    let mut good: Vec<Prepared> = Vec::with_capacity(records.len());
    let mut rejected: Vec<Rejected> = Vec::new();
    let mut seen = HashSet::new();
    for r in records {
        match prepare(r, batch_node, now) {
            Ok(p) => {
                if seen.insert(p.rec.id.clone()) {
                    good.push(p);
                }
            }
            Err(r) => rejected.push(*r),
        }
    }
    let mut packer = details::Packer::new(dict)?;
    let mut list = Vec::new();
    for chunk in good.chunks_mut(per_insert.max(1)) {
        let planned: Vec<Option<(i64, usize)>> = chunk
            .iter()
            .map(|p| {
                details::keeps(body_days, p.rec.time_ms, now)
                    .then_some((p.rec.time_ms, p.plain.len()))
            })
            .collect();
        for plan in blocks::plan(&planned) {
            let each = plan
                .members
                .iter()
                .map(|&at| (chunk[at].id_bytes.as_slice(), chunk[at].plain.as_slice()));
            let data = packer.pack_block(each)?;
            for &at in &plan.members {
                chunk[at].block = Some((list.len(), chunk[at].rec.time_ms - plan.time_ms));
            }
            list.push(Block {
                time_ms: plan.time_ms,
                records: plan.members.len(),
                data,
            });
        }
    }
    Ok(PreparedBatch {
        good,
        rejected,
        blocks: list,
    })
}

/// A batch checked: the records to store, those refused, and the planned
/// details blocks of the first.
struct PreparedBatch {
    good: Vec<Prepared>,
    rejected: Vec<Rejected>,
    blocks: Vec<Block>,
}

/// Checks a record and returns it ready to store: a canonical id, the
/// batch's node when it names none, no NUL characters. A record refused
/// comes back as it was, with the reason.
fn prepare(r: pb::RequestLog, batch_node: &str, now: i64) -> Result<Prepared, Box<Rejected>> {
    match check(&r, batch_node, now) {
        Ok(c) => {
            let canonical = c.id.hyphenated().to_string();
            let sent_id = (r.id != canonical).then(|| r.id.clone());
            let bad_trace_id = !r.trace_id.is_empty() && canonical_trace_id(&r.trace_id).is_none();
            let rec = normalize(r, canonical, batch_node);
            let dropped_fields = dropped_json(&rec.dropped_fields);
            let plain = details::plain([
                &c.request_headers,
                &c.response_headers,
                &rec.request_body,
                &rec.response_body,
                &rec.upstream_request_body,
            ]);
            Ok(Prepared {
                id_bytes: c.id.as_bytes().to_vec(),
                plain,
                block: None,
                inline_attempt: inline_attempt(&rec),
                rec,
                dropped_fields,
                sent_id,
                bad_trace_id,
            })
        }
        Err(reason) => Err(Box::new(Rejected { record: r, reason })),
    }
}

/// Validates a record; returns its id and its JSON columns.
fn check(r: &pb::RequestLog, batch_node: &str, now: i64) -> Result<Checked, String> {
    let id = uuid::Uuid::parse_str(r.id.trim()).map_err(|_| {
        format!(
            "id '{}' is not a UUID",
            r.id.chars().take(80).collect::<String>()
        )
    })?;
    if id.is_nil() {
        return Err("id is the nil UUID".into());
    }
    if r.time_ms < MIN_TIME_MS || r.time_ms > now.saturating_add(FUTURE_SLACK_MS) {
        return Err(format!(
            "time_ms {} is not a plausible time (2000-01-01 up to a day from now)",
            r.time_ms
        ));
    }
    if r.status > MAX_STATUS {
        return Err(format!("status {} is not an HTTP status", r.status));
    }
    for (what, v) in [("latency_ms", r.latency_ms), ("ttfb_ms", r.ttfb_ms)] {
        if v > MAX_DURATION_MS {
            return Err(format!("{what} {v} is more than 24 days"));
        }
    }
    for (what, v) in [
        ("input_tokens", r.input_tokens),
        ("output_tokens", r.output_tokens),
        ("cache_read_tokens", r.cache_read_tokens),
        ("cache_creation_tokens", r.cache_creation_tokens),
        ("reasoning_tokens", r.reasoning_tokens),
        ("audio_milliseconds", r.audio_milliseconds),
        ("characters", r.characters),
        ("retries", u64::from(r.retries)),
        ("images", u64::from(r.images)),
    ] {
        if v > MAX_COUNT {
            return Err(format!("{what} {v} is implausibly large"));
        }
    }
    if !r.cost.is_finite() || r.cost < 0.0 || r.cost > MAX_COST {
        return Err(format!("cost {} is not a plausible amount", r.cost));
    }
    if !(0..=MAX_COST_NANOS).contains(&r.cost_nanos) {
        return Err(format!(
            "cost_nanos {} is not a plausible amount",
            r.cost_nanos
        ));
    }
    if r.sequence > i64::MAX as u64 || r.snapshot_version > i64::MAX as u64 {
        return Err("sequence or snapshot_version is out of range".into());
    }
    if r.attempts.len() > MAX_ATTEMPTS {
        return Err(format!(
            "{} attempts (at most {MAX_ATTEMPTS})",
            r.attempts.len()
        ));
    }
    for (i, a) in r.attempts.iter().enumerate() {
        if a.status > MAX_STATUS
            || a.latency_ms > MAX_DURATION_MS
            || a.start_offset_ms > MAX_DURATION_MS
        {
            return Err(format!(
                "attempt {} has an implausible status or latency",
                i + 1
            ));
        }
        check_len("an attempt's provider", &a.provider, MAX_NAME_BYTES)?;
        check_len(
            "an attempt's upstream_model",
            &a.upstream_model,
            MAX_NAME_BYTES,
        )?;
        check_len("an attempt's error", &a.error, MAX_ERROR_BYTES)?;
    }
    let node = node_of(&r.node_id, batch_node);
    for (what, v, max) in [
        ("node_id", node, MAX_NAME_BYTES),
        ("key", r.key.as_str(), MAX_NAME_BYTES),
        ("model", r.model.as_str(), MAX_NAME_BYTES),
        ("provider", r.provider.as_str(), MAX_NAME_BYTES),
        ("upstream_model", r.upstream_model.as_str(), MAX_NAME_BYTES),
        ("protocol", r.protocol.as_str(), MAX_NAME_BYTES),
        ("usage_source", r.usage_source.as_str(), MAX_NAME_BYTES),
        (
            "upstream_protocol",
            r.upstream_protocol.as_str(),
            MAX_NAME_BYTES,
        ),
        ("count_source", r.count_source.as_str(), MAX_NAME_BYTES),
        ("stop_reason", r.stop_reason.as_str(), MAX_NAME_BYTES),
        ("user", r.user.as_str(), MAX_NAME_BYTES),
        ("limited_by", r.limited_by.as_str(), MAX_NAME_BYTES),
        ("origin", r.origin.as_str(), MAX_NAME_BYTES),
        ("replay_of", r.replay_of.as_str(), MAX_NAME_BYTES),
        ("image_size", r.image_size.as_str(), MAX_NAME_BYTES),
        ("image_quality", r.image_quality.as_str(), MAX_NAME_BYTES),
        ("audio_source", r.audio_source.as_str(), MAX_NAME_BYTES),
        ("client_ip", r.client_ip.as_str(), MAX_TEXT_BYTES),
        ("user_agent", r.user_agent.as_str(), MAX_TEXT_BYTES),
        ("path", r.path.as_str(), MAX_TEXT_BYTES),
        ("error", r.error.as_str(), MAX_ERROR_BYTES),
    ] {
        check_len(what, v, max)?;
    }
    check_dropped(&r.dropped_fields)?;
    Ok(Checked {
        id,
        request_headers: headers_json("request_headers", &r.request_headers)?,
        response_headers: headers_json("response_headers", &r.response_headers)?,
    })
}

/// The node a record is stored under: its own, or the batch's when it
/// names none (checked untrimmed, stored trimmed).
fn node_of<'a>(own: &'a str, batch_node: &'a str) -> &'a str {
    if own.trim().is_empty() {
        batch_node
    } else {
        own
    }
}

/// The checked record as stored: canonical id, a node, no NULs.
fn normalize(mut rec: pb::RequestLog, id: String, batch_node: &str) -> pb::RequestLog {
    rec.id = id;
    let node = node_of(&rec.node_id, batch_node).trim();
    if node != rec.node_id {
        rec.node_id = node.to_string();
    }
    rec.time = String::new();
    // The exact cost is the one kept: a data plane older than exact prices
    // sends only the floating-point cost, taken to the nearest nano-dollar;
    // a newer one sends both, and `cost` is made to say the same.
    if rec.cost_nanos == 0 {
        rec.cost_nanos = nanos_of(rec.cost);
    }
    rec.cost = rec.cost_nanos as f64 / 1e9;
    if rec.usage_source.is_empty() {
        rec.usage_source = "none".into();
    }
    // A trace id is 32 lowercase hex digits or nothing: the filter and the
    // index rely on one spelling.
    rec.trace_id = canonical_trace_id(&rec.trace_id).unwrap_or_default();
    for s in [
        &mut rec.node_id,
        &mut rec.key,
        &mut rec.client_ip,
        &mut rec.user_agent,
        &mut rec.protocol,
        &mut rec.path,
        &mut rec.model,
        &mut rec.provider,
        &mut rec.upstream_model,
        &mut rec.usage_source,
        &mut rec.error,
        &mut rec.request_body,
        &mut rec.response_body,
        &mut rec.upstream_protocol,
        &mut rec.upstream_request_body,
        &mut rec.count_source,
        &mut rec.stop_reason,
        &mut rec.user,
        &mut rec.limited_by,
        &mut rec.origin,
        &mut rec.replay_of,
        &mut rec.image_size,
        &mut rec.image_quality,
        &mut rec.audio_source,
    ] {
        clean_in_place(s);
    }
    for f in &mut rec.dropped_fields {
        clean_in_place(f);
    }
    for a in &mut rec.attempts {
        clean_in_place(&mut a.provider);
        clean_in_place(&mut a.upstream_model);
        clean_in_place(&mut a.error);
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::multirow::STATEMENT_ROWS;

    fn good() -> pb::RequestLog {
        pb::RequestLog {
            id: "0190A2B4-0000-7000-8000-000000000001".into(),
            time_ms: 1_714_564_800_000,
            status: 200,
            ..Default::default()
        }
    }

    #[test]
    fn rows_per_insert_stay_under_the_parameter_limits() {
        assert_eq!(rows_per_insert(Backend::Sqlite, 32), 1000);
        assert_eq!(rows_per_insert(Backend::Postgres, 32), 1000);
        assert_eq!(rows_per_insert(Backend::Sqlite, 40), 819);
        assert!(rows_per_insert(Backend::Sqlite, 32) * 32 <= SQLITE_MAX_PARAMS);
    }

    #[test]
    fn statements_come_in_a_few_cached_sizes() {
        let widest = LOG_COLUMNS.len().max(ATTEMPT_COLUMNS.len());
        assert!(STATEMENT_ROWS[0] * widest <= SQLITE_MAX_PARAMS.min(POSTGRES_MAX_PARAMS));
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for (slot, rows) in STATEMENT_ROWS.into_iter().enumerate() {
                for resent in [Resent::Fail, Resent::Skip] {
                    let skip = if resent == Resent::Skip {
                        " ON CONFLICT DO NOTHING"
                    } else {
                        ""
                    };
                    let logs = insert_sql(backend, Table::Logs, resent, slot);
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
                    let attempts = insert_sql(backend, Table::Attempts, resent, slot);
                    assert!(attempts.starts_with("INSERT INTO request_attempts ("));
                    assert!(attempts.ends_with(&format!("){skip}")), "{attempts}");
                    assert_eq!(attempts.matches('(').count(), rows + 1);
                    let details = insert_sql(backend, Table::Details, resent, slot);
                    assert!(details.starts_with("INSERT INTO request_log_details ("));
                    // No key to conflict on (`Table::insert_parts`).
                    assert!(details.ends_with(')'), "{details}");
                }
            }
        }
        // The two-row statement (slot 7) numbers its parameters on.
        let last = format!("${}", 2 * LOG_COLUMNS.len());
        assert!(insert_sql(Backend::Postgres, Table::Logs, Resent::Fail, 7).contains(&last));
    }

    #[tokio::test]
    async fn a_row_stored_before_is_told_from_other_rejections() {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect("sqlite::memory:").await.unwrap();
        for sql in [
            "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL CHECK (n > 0))",
            "INSERT INTO t VALUES ('a', 1)",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        let dup = sqlx::query("INSERT INTO t VALUES ('a', 2)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(is_duplicate(&dup), "{dup}");
        assert!(record_level(Backend::Sqlite, &dup));
        let bad = sqlx::query("INSERT INTO t VALUES ('b', 0)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(!is_duplicate(&bad), "{bad}");
        assert!(record_level(Backend::Sqlite, &bad));
    }

    #[test]
    fn validation() {
        let now = 1_714_564_900_000;
        let Ok(p) = prepare(good(), "node-a", now) else {
            panic!("a good record was refused");
        };
        assert_eq!(p.rec.id, "0190a2b4-0000-7000-8000-000000000001");
        // Refused by the database later, it is reported by the id it came with.
        let refused = p.refused("r".into());
        assert_eq!(refused.record.id, good().id);
        assert_ne!(refused.record.id, p.rec.id);
        assert_eq!(p.rec.node_id, "node-a");
        assert_eq!(p.rec.usage_source, "none");
        assert_eq!(
            details::decode(&details::encode(&p.plain, None).unwrap()).unwrap()[0],
            "{}"
        );

        type Change = Box<dyn Fn(&mut pb::RequestLog)>;
        let bad: Vec<(&str, Change)> = vec![
            ("UUID", Box::new(|r| r.id = String::new())),
            ("UUID", Box::new(|r| r.id = "not-a-uuid".into())),
            ("nil", Box::new(|r| r.id = uuid::Uuid::nil().to_string())),
            ("time_ms", Box::new(|r| r.time_ms = 0)),
            (
                "time_ms",
                Box::new(move |r| r.time_ms = now + 2 * FUTURE_SLACK_MS),
            ),
            ("status", Box::new(|r| r.status = 1000)),
            ("latency_ms", Box::new(|r| r.latency_ms = u64::MAX)),
            ("ttfb_ms", Box::new(|r| r.ttfb_ms = MAX_DURATION_MS + 1)),
            ("characters", Box::new(|r| r.characters = MAX_COUNT + 1)),
            ("retries", Box::new(|r| r.retries = u32::MAX)),
            ("images", Box::new(|r| r.images = 1 << 31)),
            ("input_tokens", Box::new(|r| r.input_tokens = u64::MAX)),
            (
                "reasoning_tokens",
                Box::new(|r| r.reasoning_tokens = u64::MAX),
            ),
            (
                "dropped_fields",
                Box::new(|r| r.dropped_fields = vec![String::new(); 1001]),
            ),
            (
                "a dropped field",
                Box::new(|r| r.dropped_fields = vec!["f".repeat(2000)]),
            ),
            (
                "count_source",
                Box::new(|r| r.count_source = "c".repeat(5000)),
            ),
            (
                "stop_reason",
                Box::new(|r| r.stop_reason = "s".repeat(5000)),
            ),
            ("user", Box::new(|r| r.user = "u".repeat(5000))),
            ("cost", Box::new(|r| r.cost = f64::NAN)),
            ("cost", Box::new(|r| r.cost = -1.0)),
            ("sequence", Box::new(|r| r.sequence = u64::MAX)),
            ("model", Box::new(|r| r.model = "m".repeat(5000))),
            (
                "attempt 1",
                Box::new(|r| {
                    r.attempts.push(pb::Attempt {
                        status: 70_000,
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (needle, change) in bad {
            let mut r = good();
            change(&mut r);
            let e = prepare(r.clone(), "n", now).err().map(|e| *e);
            let Some(Rejected { record, reason }) = e else {
                panic!("{needle}: accepted");
            };
            assert!(reason.contains(needle), "{needle}: {reason}");
            // Refused records come back as they came, for the quarantine.
            // (By encoding: a NaN cost is not equal to itself.)
            assert_eq!(
                prost::Message::encode_to_vec(&record),
                prost::Message::encode_to_vec(&r)
            );
        }

        let mut r = good();
        r.request_body = "a\0b".into();
        r.request_headers.insert("x\0".into(), "v".into());
        let Ok(p) = prepare(r, "n", now) else {
            panic!("a record with NULs was refused");
        };
        assert_eq!(p.rec.request_body, "a\u{FFFD}b");
        let [request_headers, _, request_body, ..] =
            details::decode(&details::encode(&p.plain, None).unwrap()).unwrap();
        assert_eq!(request_headers, "{\"x\u{FFFD}\":\"v\"}");
        assert_eq!(request_body, "a\u{FFFD}b");

        // Dropped fields are stored as a JSON array, in order, without NULs.
        assert_eq!(p.dropped_fields, "[]");
        let mut r = good();
        r.dropped_fields = vec!["top_k".into(), "a\0\"b".into()];
        r.upstream_request_body = "u\0".into();
        let Ok(p) = prepare(r, "n", now) else {
            panic!("a record with dropped fields was refused");
        };
        assert_eq!(p.dropped_fields, "[\"top_k\",\"a\u{FFFD}\\\"b\"]");
        assert_eq!(p.rec.upstream_request_body, "u\u{FFFD}");
        // Trace ids are stored lowercase; one that is not a trace id is
        // dropped, and the record kept.
        for (sent, stored, bad) in [
            ("", "", false),
            (
                "4BF92F3577B34DA6A3CE929D0E0E4736",
                "4bf92f3577b34da6a3ce929d0e0e4736",
                false,
            ),
            ("not-a-trace", "", true),
            ("00000000000000000000000000000000", "", true),
        ] {
            let mut r = good();
            r.trace_id = sent.into();
            let Ok(p) = prepare(r, "n", now) else {
                panic!("a record with trace id {sent:?} was refused");
            };
            assert_eq!((p.rec.trace_id.as_str(), p.bad_trace_id), (stored, bad));
        }
    }
}
