//! A log batch's records checked and made ready to store, whatever the
//! database: validation and normalization, the stored columns and their
//! values ([`log_values`]), the details blocks (with long request bodies in
//! their stored form by content, `by_content.rs`), and how a failed insert is
//! told apart (a record stored before, a record the database refuses, or
//! the database itself). The writers (`write_sqlite.rs`,
//! `write_postgres.rs`) bind what this module prepares.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use llmgw_proto::v1 as pb;

use super::by_content;
use crate::logs::blocks;
use crate::logs::details;
use crate::logs::pieces::{self, Key};
use crate::logs::row::{canonical_trace_id, inline_attempt};
use crate::store::quota::nanos_of;
use crate::store::{Backend, StoreError};

/// How many columns [`LOG_COLUMNS`] names.
pub(super) const LOG_COLUMN_COUNT: usize = 51;

/// Columns of `request_logs`, in the order of [`log_values`].
pub(super) const LOG_COLUMNS: [&str; LOG_COLUMN_COUNT] = [
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

pub(super) const ATTEMPT_COLUMNS: &[&str] = &[
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
pub(super) const DETAIL_COLUMNS: &[&str] = &["time_ms", "id", "data"];

/// Columns of `request_log_pieces` (`pieces.rs`), in bind order.
pub(super) const PIECE_COLUMNS: &[&str] = &["day_ms", "hash", "data"];

pub(super) const QUARANTINE_COLUMNS: &[&str] =
    &["id", "node_id", "reason", "record", "received_at"];

/// Records inserted together (in one chunk), at most.
pub(super) const MAX_ROWS_PER_INSERT: usize = 1000;

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

/// A validated record, ready to bind. `rec` keeps its header maps and
/// dropped fields (for quarantine, should the database refuse it); the JSON
/// is what is stored.
pub(super) struct Prepared {
    pub(super) rec: pb::RequestLog,
    /// `dropped_fields` as a JSON array of strings.
    pub(super) dropped_fields: String,
    /// The id as the data plane sent it, where canonicalizing changed it:
    /// a quarantined record is reported by the id it came with.
    pub(super) sent_id: Option<String>,
    /// The record came with a trace id that is not one, stored as ''.
    pub(super) bad_trace_id: bool,
    /// The 16 bytes of the id, as every log table stores it
    /// (`row::stored_id`).
    pub(super) id_bytes: Vec<u8>,
    /// The headers and bodies uncompressed (`details::plain`): what its
    /// block holds, and a sample for the next dictionary. A long request
    /// body is there in its stored form by content (`pieces::stored_form`:
    /// its pieces' hashes, then its last piece).
    pub(super) plain: Vec<u8>,
    /// Which fields of `plain` are in that form (bit `f` for field `f`).
    pub(super) pieced: u8,
    /// The pieces of its bodies stored by content: the field, the piece's
    /// hash, and where it is in the field.
    pub(super) cuts: Vec<(usize, pieces::Hash, std::ops::Range<usize>)>,
    /// The record's details block (an index into [`Blocks`]) and how long
    /// after the block's time the record came
    /// (`request_logs.details_offset_ms`); `None` when the details are not
    /// stored, as when body retention would remove them at once.
    pub(super) block: Option<(usize, i64)>,
    /// The one attempt kept in the record's row (`row::inline_attempt`);
    /// `None` when its attempts go to `request_attempts`.
    pub(super) inline_attempt: Option<(i64, i64)>,
}

impl Prepared {
    /// The record for the quarantine, under the id it was sent with.
    pub(super) fn refused(&self, reason: String) -> Rejected {
        let mut record = self.rec.clone();
        if let Some(id) = &self.sent_id {
            record.id.clone_from(id);
        }
        Rejected { record, reason }
    }
}

pub(super) struct Rejected {
    pub(super) record: pb::RequestLog,
    pub(super) reason: String,
}

impl Rejected {
    /// The `log_quarantine` row's id, node, reason and record (as JSON),
    /// without NUL characters; `batch_node` when the record names no node.
    pub(super) fn quarantine_row(&self, batch_node: &str) -> [String; 4] {
        let node = if self.record.node_id.is_empty() {
            batch_node
        } else {
            self.record.node_id.as_str()
        };
        [
            clean(&self.record.id),
            clean(node),
            // The reason may quote the record (a bad id), NULs included.
            clean(
                &self
                    .reason
                    .chars()
                    .take(MAX_REASON_CHARS)
                    .collect::<String>(),
            ),
            // serde_json escapes control characters, NUL included.
            serde_json::to_string(&self.record)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
        ]
    }
}

/// A prepared batch as the writers take it.
#[derive(Clone, Copy)]
pub(super) struct Batch<'a> {
    /// The node the batch came from (a record may name its own).
    pub(super) node: &'a str,
    /// The records to store, validated.
    pub(super) good: &'a [Prepared],
    pub(super) blocks: &'a Blocks,
    /// The body pieces the batch's records need and this control plane
    /// has not stored, compressed (`pieces.rs`).
    pub(super) pieces: &'a BTreeMap<Key, Vec<u8>>,
    /// Records inserted together (their details blocks were planned within
    /// these chunks).
    pub(super) per_insert: usize,
    pub(super) now: i64,
}

/// Whether an error concerns the rows of the statement (bad data) rather
/// than the database as a whole.
pub(super) fn record_level(backend: Backend, e: &sqlx::Error) -> bool {
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

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whether an insert failed on a row stored before (a unique key).
pub(super) fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// What an insert does with a record whose id is stored already (one
/// sent again).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Resent {
    /// The statement fails (a unique violation): the fast path, for
    /// batches whose records are all new.
    Fail,
    /// The record is left out (`ON CONFLICT DO NOTHING`).
    Skip,
}

/// A value of a `request_logs` column, as both writers bind it: one
/// variant per column whatever the record.
pub(super) enum Value<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bytes(&'a [u8]),
    OptFloat(Option<f64>),
}

/// The values of `p`'s `request_logs` row, in [`LOG_COLUMNS`]' order.
/// With `sparse` (PostgreSQL, migration 0037), a default value is NULL: a
/// bit of the row's null bitmap where a zero takes 2 to 8 bytes. SQLite
/// stores a 0 or '' in its record header alone, so its columns stay NOT
/// NULL. `row::summary_from_row` reads a NULL as the default.
pub(super) fn log_values<'a>(p: &'a Prepared, sparse: bool) -> [Value<'a>; LOG_COLUMN_COUNT] {
    use Value::{Bytes, Int, OptFloat, OptInt, OptText, Text};
    let r = &p.rec;
    let int = |v: i64| OptInt((!sparse || v != 0).then_some(v));
    let text = |v: &'a str| OptText((!sparse || !v.is_empty()).then_some(v));
    [
        Bytes(p.id_bytes.as_slice()),
        Int(r.time_ms),
        Text(r.node_id.as_str()),
        Int(i64_of(r.sequence)),
        Text(r.key.as_str()),
        Text(r.client_ip.as_str()),
        Text(r.user_agent.as_str()),
        Text(r.protocol.as_str()),
        Text(r.path.as_str()),
        Text(r.model.as_str()),
        Text(r.provider.as_str()),
        Text(r.upstream_model.as_str()),
        Int(i64::from(r.status)),
        Int(i64::from(r.stream)),
        int(i64::from(r.cancelled)),
        Int(i64_of(r.latency_ms)),
        Int(i64_of(r.ttfb_ms)),
        int(i64::from(r.retries)),
        Int(i64_of(r.input_tokens)),
        Int(i64_of(r.output_tokens)),
        int(i64_of(r.cache_read_tokens)),
        int(i64_of(r.cache_creation_tokens)),
        Text(r.usage_source.as_str()),
        // The exact `cost_nanos` says the same (`normalize`).
        OptFloat((!sparse).then_some(r.cost)),
        text(r.error.as_str()),
        Int(i64_of(r.snapshot_version)),
        int(i64::from(r.request_body_truncated)),
        int(i64::from(r.response_body_truncated)),
        Text(r.upstream_protocol.as_str()),
        int(i64::from(r.translated)),
        int(i64::from(r.upstream_request_body_truncated)),
        OptText(if sparse && r.dropped_fields.is_empty() {
            None
        } else {
            Some(p.dropped_fields.as_str())
        }),
        int(i64_of(r.reasoning_tokens)),
        text(r.count_source.as_str()),
        Text(r.outcome().name()),
        text(r.stop_reason.as_str()),
        Text(r.user.as_str()),
        text(r.limited_by.as_str()),
        text(r.trace_id.as_str()),
        text(r.origin.as_str()),
        text(r.replay_of.as_str()),
        Int(r.cost_nanos),
        int(i64_of(r.audio_milliseconds)),
        int(i64_of(r.characters)),
        int(i64::from(r.images)),
        text(r.image_size.as_str()),
        text(r.image_quality.as_str()),
        text(r.audio_source.as_str()),
        OptInt(p.inline_attempt.map(|(latency, _)| latency)),
        OptInt(p.inline_attempt.map(|(_, offset)| offset)),
        OptInt(p.block.map(|(_, offset)| offset)),
    ]
}

/// A batch's planned details blocks (`blocks.rs`), compressed for all
/// their records, and the dictionary they were compressed with.
pub(super) struct Blocks {
    pub(super) list: Vec<Block>,
    pub(super) dict: Option<Arc<details::Current>>,
}

/// Records' 16-byte ids and uncompressed details, owned (to compress
/// them on the blocking pool).
type OwnedRecords = Vec<(Vec<u8>, Vec<u8>, u8)>;

/// A `request_log_details` row of a block: its time, the id of its
/// first record (informative: `logs get` finds a record by the ids inside)
/// and the stored block.
pub(super) struct BlockRow<'a> {
    pub(super) time_ms: i64,
    pub(super) id: &'a [u8],
    pub(super) data: Cow<'a, [u8]>,
}

pub(super) struct Block {
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
    pub(super) async fn rows<'a>(
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
                        .map(|p| (p.id_bytes.clone(), p.plain.clone(), p.pieced))
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
                    let each = records
                        .iter()
                        .map(|(id, p, m)| (id.as_slice(), p.as_slice(), *m));
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

/// The text without NUL characters, which PostgreSQL cannot store.
pub(super) fn clean(s: &str) -> String {
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
/// inserted together) and compressed with one compression context, and
/// the body pieces they need that are not `known` compressed; a repeated
/// id within the batch is the same record, kept once.
pub(super) fn prepare_all(
    records: Vec<pb::RequestLog>,
    batch_node: &str,
    now: i64,
    dict: Option<&details::Current>,
    body_days: u32,
    per_insert: usize,
    known: &pieces::Known,
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
            let each = plan.members.iter().map(|&at| {
                let p = &chunk[at];
                (p.id_bytes.as_slice(), p.plain.as_slice(), p.pieced)
            });
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
    let pieces = by_content::new_pieces(&good, known, body_days, now)?;
    Ok(PreparedBatch {
        good,
        rejected,
        blocks: list,
        pieces,
    })
}

/// A batch checked: the records to store, those refused, the planned
/// details blocks of the first, and the body pieces to store with them.
pub(super) struct PreparedBatch {
    pub(super) good: Vec<Prepared>,
    pub(super) rejected: Vec<Rejected>,
    pub(super) blocks: Vec<Block>,
    pub(super) pieces: BTreeMap<Key, Vec<u8>>,
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
            let mut cuts = Vec::new();
            let mut pieced = 0u8;
            let mut fields: [Cow<'_, [u8]>; 5] = [
                c.request_headers.as_bytes().into(),
                c.response_headers.as_bytes().into(),
                rec.request_body.as_bytes().into(),
                rec.response_body.as_bytes().into(),
                rec.upstream_request_body.as_bytes().into(),
            ];
            for f in pieces::PIECED {
                let Some((stored, split)) = pieces::stored_form(&fields[f]) else {
                    continue;
                };
                pieced |= 1 << f;
                fields[f] = stored.into();
                cuts.extend(split.into_iter().map(|(h, r)| (f, h, r)));
            }
            let plain = details::plain_bytes(fields.each_ref().map(|f| &**f));
            Ok(Prepared {
                id_bytes: c.id.as_bytes().to_vec(),
                plain,
                pieced,
                cuts,
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
pub(super) mod tests {
    use super::*;
    use sqlx::AnyConnection;

    /// A valid record, for tests.
    pub(in crate::logs::ingest) fn good() -> pb::RequestLog {
        pb::RequestLog {
            id: "0190A2B4-0000-7000-8000-000000000001".into(),
            time_ms: 1_714_564_800_000,
            status: 200,
            ..Default::default()
        }
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
