//! The log rollups (`log_rollups`, migrations 0017 and 0026): per-minute,
//! hourly and daily aggregates of the request logs, so that stats over
//! months read a few thousand rows instead of millions.
//!
//! - **Cubes** ([`CUBES`]): the same aggregates kept several times over,
//!   each by its own set of dimensions (a grouping set): `total` by none,
//!   `model` by model and target, `key` by key, `user` by end user, and
//!   `full` by all of them. Every cube also keeps the outcome and whether
//!   the request failed. A cube's rows grow with the combinations of its
//!   dimensions, not with the traffic, so the small ones answer stats over
//!   months in a few thousand rows where `full` (by key and user too)
//!   holds nearly a row per request at every level. `stats.rs` picks the
//!   smallest cube that keeps every dimension a request filters or groups
//!   by.
//! - **Written by compaction** (`deltas.rs`): ingest appends each batch's
//!   sums as minute deltas, in the batch's transaction and only for the
//!   records that transaction inserted (never for one stored before), so a
//!   record shipped twice, to one control plane or to two sharing a
//!   PostgreSQL database, is counted once. Compaction, the rollups' one
//!   writer, folds the deltas into every level of every cube (save minute
//!   rows behind the minutes' horizon, which nothing reads): it reads the
//!   sketches of the rows that exist, merges them and writes each row once
//!   ([`RollupBatch::write`]), in key order.
//! - **Read by stats** (`stats.rs` picks the levels): [`select_statement`].
//! - **Retention** removes buckets that ended before the rollup cutoff
//!   ([`purge_older_than`]), and minute rows earlier: they are kept from
//!   a horizon on ([`advance_minute_horizon`], `log_rollup_levels`,
//!   migration 0032). Stats read hours and days before it, and once it has
//!   settled, retention deletes the minute rows behind it and compaction
//!   writes none there.
//!
//! A cube holds every record with `time_ms >= complete_from_ms`
//! (`log_rollup_cubes`, [`Starts`]): 0 on a new database; on one upgraded
//! with logs, the minute after the migration that made it (0017 for
//! `full`, 0026 for the others). A cube without a row there is neither
//! written nor read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use llmgw_proto::v1 as pb;
use sha2::{Digest, Sha256};
use sqlx::any::AnyArguments;
use sqlx::any::AnyRow;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};

use super::sketch::Sketch;
use super::sql::{is_failure, Param, Statement};
use crate::store::multirow::{
    insert_text, insert_texts, statement_parts, values_sql, STATEMENT_ROWS,
};
use crate::store::{Backend, Store, StoreError};

/// A rollup level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Minute,
    Hour,
    Day,
}

impl Level {
    /// Coarsest first.
    pub const ALL: [Level; 3] = [Level::Day, Level::Hour, Level::Minute];

    /// The bucket width, as stored in `bucket_s`.
    pub fn seconds(self) -> i64 {
        match self {
            Level::Minute => 60,
            Level::Hour => 3600,
            Level::Day => 86_400,
        }
    }

    pub fn width_ms(self) -> i64 {
        self.seconds() * 1000
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Minute => "minute",
            Level::Hour => "hour",
            Level::Day => "day",
        }
    }
}

/// A dimension a cube may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Model,
    Provider,
    UpstreamModel,
    Key,
    User,
}

impl Dim {
    /// Every dimension, in the order they are hashed.
    pub const ALL: [Dim; 5] = [
        Dim::Model,
        Dim::Provider,
        Dim::UpstreamModel,
        Dim::Key,
        Dim::User,
    ];

    /// Its column in `log_rollups` (and `request_logs`).
    pub fn column(self) -> &'static str {
        match self {
            Dim::Model => "model",
            Dim::Provider => "provider",
            Dim::UpstreamModel => "upstream_model",
            Dim::Key => "key_name",
            Dim::User => "end_user",
        }
    }

    /// The dimension stored in `column`; `None` for a column every cube
    /// keeps (outcome, failed) or none does.
    pub fn of_column(column: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.column() == column)
    }
}

/// One grouping set of the rollups: the dimensions its rows are keyed by
/// (besides outcome and failure, which every cube keeps). A dimension it
/// does not keep is stored as ''.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cube {
    /// `log_rollups.cube`.
    pub id: i64,
    /// As in `log_rollup_cubes.name` and stats' `source`.
    pub name: &'static str,
    pub dims: &'static [Dim],
}

impl Cube {
    pub fn keeps(self, dim: Dim) -> bool {
        self.dims.contains(&dim)
    }
}

/// Every dimension: the cube of migration 0017, whose rows are all there
/// were before 0026.
pub const FULL: Cube = Cube {
    id: 0,
    name: "full",
    dims: &Dim::ALL,
};

/// The cubes kept at ingest, smallest first (the order in which stats try
/// them): the first that keeps every dimension a request needs answers.
/// Why these: the dashboard's overview asks for totals and series (`total`)
/// and the top models, providers, keys and users; each of those reads the
/// cube of its one dimension instead of `full`, whose rows multiply the
/// keys by the users, models and providers (docs/benchmarks.md measures
/// what each costs at ingest and saves in stats).
pub const CUBES: [Cube; 5] = [
    Cube {
        id: 1,
        name: "total",
        dims: &[],
    },
    Cube {
        id: 2,
        name: "model",
        dims: &[Dim::Model, Dim::Provider, Dim::UpstreamModel],
    },
    Cube {
        id: 3,
        name: "key",
        dims: &[Dim::Key],
    },
    Cube {
        id: 4,
        name: "user",
        dims: &[Dim::User],
    },
    FULL,
];

/// When each cube starts holding every record (`log_rollup_cubes`), by
/// cube id. A cube absent here is neither written nor read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Starts(BTreeMap<i64, i64>);

impl Starts {
    /// From when `cube` holds every record, if it is kept.
    pub fn of(&self, cube: Cube) -> Option<i64> {
        self.0.get(&cube.id).copied()
    }

    /// `cube` starting at `from_ms` (tests and benchmarks).
    pub fn with(mut self, cube: Cube, from_ms: i64) -> Starts {
        self.0.insert(cube.id, from_ms);
        self
    }
}

/// Columns written by [`RollupBatch::write`], in bind order.
pub(super) const COLUMNS: &[&str] = &[
    "cube",
    "bucket_s",
    "start_ms",
    "dims",
    "model",
    "provider",
    "upstream_model",
    "key_name",
    "end_user",
    "outcome",
    "failed",
    "requests",
    "errors_4xx",
    "errors_5xx",
    "cancels",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost",
    "cost_nanos",
    "latency_sketch",
    "ttfb_sketch",
];

/// The additive columns in [`COLUMNS`], `requests` to `cost_nanos`,
/// summed by the upsert.
const SUMMED: std::ops::Range<usize> = 11..22;

/// The row of one cube, level, bucket and dimensions: the primary key, in
/// its order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct RowKey {
    pub(super) cube: i64,
    pub(super) bucket_s: i64,
    pub(super) start_ms: i64,
    pub(super) dims: [u8; 16],
}

/// What a row is keyed by, besides its bucket.
#[derive(Debug, Clone)]
pub(super) struct Dims {
    pub(super) model: String,
    pub(super) provider: String,
    pub(super) upstream_model: String,
    pub(super) key_name: String,
    pub(super) end_user: String,
    pub(super) outcome: &'static str,
    pub(super) failed: bool,
}

/// A record's dimensions as `cube` keeps them ('' for the ones it does
/// not), in [`Dim::ALL`]'s order.
fn names_in(r: &pb::RequestLog, cube: Cube) -> [&str; 5] {
    Dim::ALL.map(|d| {
        if !cube.keeps(d) {
            return "";
        }
        match d {
            Dim::Model => r.model.as_str(),
            Dim::Provider => &r.provider,
            Dim::UpstreamModel => &r.upstream_model,
            Dim::Key => &r.key,
            Dim::User => &r.user,
        }
    })
}

impl Dims {
    fn of(names: [&str; 5], outcome: &'static str, failed: bool) -> Dims {
        let [model, provider, upstream_model, key_name, end_user] = names.map(str::to_string);
        Dims {
            model,
            provider,
            upstream_model,
            key_name,
            end_user,
            outcome,
            failed,
        }
    }

    pub(super) fn hash(&self) -> [u8; 16] {
        hash_of(
            [
                &self.model,
                &self.provider,
                &self.upstream_model,
                &self.key_name,
                &self.end_user,
            ],
            self.outcome,
            self.failed,
        )
    }
}

/// 16 bytes of the SHA-256 of the dimensions, each length-prefixed so that
/// no two lists of names hash the same input (the same hash as migration
/// 0017's rows, which are `full`'s; the cube is a column of the key).
fn hash_of(names: [&str; 5], outcome: &str, failed: bool) -> [u8; 16] {
    let mut h = Sha256::new();
    for s in names.into_iter().chain([outcome]) {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.update([u8::from(failed)]);
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// One row's sums.
#[derive(Debug)]
pub(super) struct Agg {
    pub(super) dims: Dims,
    /// requests, errors_4xx, errors_5xx, cancels, then the five token
    /// kinds: the [`SUMMED`] columns but the costs.
    pub(super) counts: [i64; 9],
    pub(super) cost: f64,
    /// The exact sum.
    pub(super) cost_nanos: i64,
    pub(super) latency: Sketch,
    pub(super) ttfb: Sketch,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Agg {
    pub(super) fn new(dims: Dims) -> Result<Agg, StoreError> {
        Ok(Agg {
            dims,
            counts: [0; 9],
            cost: 0.0,
            cost_nanos: 0,
            latency: Sketch::new()?,
            ttfb: Sketch::new()?,
        })
    }

    fn add(&mut self, r: &pb::RequestLog) {
        let add = [
            1,
            i64::from((400..500).contains(&r.status)),
            i64::from(r.status >= 500),
            i64::from(r.cancelled),
            i64_of(r.input_tokens),
            i64_of(r.output_tokens),
            i64_of(r.cache_read_tokens),
            i64_of(r.cache_creation_tokens),
            i64_of(r.reasoning_tokens),
        ];
        for (c, a) in self.counts.iter_mut().zip(add) {
            *c = c.saturating_add(a);
        }
        self.cost += r.cost;
        self.cost_nanos = self.cost_nanos.saturating_add(r.cost_nanos);
        self.latency.record(r.latency_ms);
        self.ttfb.record(r.ttfb_ms);
    }

    /// Adds another row's sums and sketches (of the same dimensions).
    fn merge(&mut self, other: &Agg) -> Result<(), StoreError> {
        for (c, a) in self.counts.iter_mut().zip(other.counts) {
            *c = c.saturating_add(a);
        }
        self.cost += other.cost;
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
        self.latency.merge(&other.latency)?;
        self.ttfb.merge(&other.ttfb)
    }
}

/// The rollup rows a batch adds to, in every cube and at every level.
#[derive(Debug, Default)]
pub struct RollupBatch(pub(super) BTreeMap<RowKey, Agg>);

impl RollupBatch {
    /// The sums of `records` (the ones inserted now), in each cube from
    /// its start on, at every level.
    pub fn of<'a>(
        records: impl Iterator<Item = &'a pb::RequestLog>,
        starts: Starts,
    ) -> Result<RollupBatch, StoreError> {
        Self::of_levels(records, starts, &Level::ALL)
    }

    /// The same at the minute level only: what ingest appends as deltas
    /// (`deltas.rs`).
    pub fn minutes<'a>(
        records: impl Iterator<Item = &'a pb::RequestLog>,
        starts: Starts,
    ) -> Result<RollupBatch, StoreError> {
        Self::of_levels(records, starts, &[Level::Minute])
    }

    fn of_levels<'a>(
        records: impl Iterator<Item = &'a pb::RequestLog>,
        starts: Starts,
        levels: &[Level],
    ) -> Result<RollupBatch, StoreError> {
        let cubes: Vec<(Cube, i64)> = CUBES
            .into_iter()
            .filter_map(|c| Some((c, starts.of(c)?)))
            .collect();
        let mut rows: BTreeMap<RowKey, Agg> = BTreeMap::new();
        for r in records {
            let outcome = r.outcome().name();
            let failed = is_failure(r);
            for &(cube, from_ms) in &cubes {
                if r.time_ms < from_ms {
                    continue;
                }
                let names = names_in(r, cube);
                let hash = hash_of(names, outcome, failed);
                for &level in levels {
                    let width = level.width_ms();
                    let key = RowKey {
                        cube: cube.id,
                        bucket_s: level.seconds(),
                        start_ms: r.time_ms.div_euclid(width) * width,
                        dims: hash,
                    };
                    let agg = match rows.entry(key) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(Agg::new(Dims::of(names, outcome, failed))?)
                        }
                    };
                    agg.add(r);
                }
            }
        }
        Ok(RollupBatch(rows))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Leaves out the minute rows that start before `from_ms`
    /// ([`MinuteHorizon::unread_before`]: no stats read them).
    pub(super) fn drop_minutes_before(&mut self, from_ms: i64) {
        let minute = Level::Minute.seconds();
        self.0
            .retain(|k, _| k.bucket_s != minute || k.start_ms >= from_ms);
    }

    /// Adds a minute row of `cube` (a delta) to its minute, hour and day.
    pub(super) fn add_minute(
        &mut self,
        cube: i64,
        start_ms: i64,
        agg: &Agg,
    ) -> Result<(), StoreError> {
        let dims = agg.dims.hash();
        for level in Level::ALL {
            let width = level.width_ms();
            let key = RowKey {
                cube,
                bucket_s: level.seconds(),
                start_ms: start_ms.div_euclid(width) * width,
                dims,
            };
            match self.0.entry(key) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut().merge(agg)?,
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(Agg::new(agg.dims.clone())?).merge(agg)?
                }
            }
        }
        Ok(())
    }

    /// Adds the sums to their rows on `conn` (compaction's transaction),
    /// `full`'s rows first and then the smaller cubes': each group whole
    /// before the next, keys in order (`full` has the lowest cube id).
    pub async fn write(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
    ) -> Result<(), StoreError> {
        let (full, shared): (Vec<_>, Vec<_>) = self.0.iter().partition(|(k, _)| k.cube == FULL.id);
        self.write_rows(conn, backend, &full).await?;
        self.write_rows(conn, backend, &shared).await
    }

    /// Adds `rows` to their rollup rows, each row written once:
    /// 1. the sketches of the rows that exist are read ([`existing_sql`]);
    ///    the control plane merges them;
    /// 2. those rows get the sums added and the merged sketches;
    /// 3. the others are inserted, unless another writer inserted one
    ///    meanwhile ([`add_and_merge`](Self::add_and_merge) takes those).
    ///
    /// Compaction is the rollups' one writer (`deltas.rs` holds a lock
    /// while it writes), so no row changes between 1 and 2. Statements
    /// come in the few sizes ingest uses (`STATEMENT_ROWS`), so their texts
    /// stay prepared. (Adding the sums and then writing the merged sketches
    /// wrote every row that was there twice: two row versions where one
    /// does.)
    async fn write_rows(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        rows: &[(&RowKey, &Agg)],
    ) -> Result<(), StoreError> {
        let mut merged: HashMap<&RowKey, (Vec<u8>, Vec<u8>)> = HashMap::new();
        for (slot, part) in statement_parts(rows) {
            let mut q = sqlx::query(existing_sql(backend, slot));
            for (key, _) in part {
                q = q
                    .bind(key.cube)
                    .bind(key.bucket_s)
                    .bind(key.start_ms)
                    .bind(key.dims.to_vec());
            }
            for row in q.fetch_all(&mut *conn).await? {
                let (key, agg) = self.given(&row)?;
                let stored = (
                    Sketch::from_bytes(&row.try_get::<Vec<u8>, _>(4)?),
                    Sketch::from_bytes(&row.try_get::<Vec<u8>, _>(5)?),
                );
                let (mut latency, mut ttfb) = match stored {
                    (Ok(l), Ok(t)) => (l, t),
                    // Not worth stopping every later compaction for: the
                    // row's percentiles start again from these requests;
                    // its sums stay exact.
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(
                            error = %e,
                            cube = key.cube,
                            bucket_s = key.bucket_s,
                            start_ms = key.start_ms,
                            "a rollup row's sketch cannot be read; replaced by the new requests'"
                        );
                        (Sketch::new()?, Sketch::new()?)
                    }
                };
                latency.merge(&agg.latency)?;
                ttfb.merge(&agg.ttfb)?;
                merged.insert(key, (latency.to_bytes()?, ttfb.to_bytes()?));
            }
        }
        let (there, new): (Vec<_>, Vec<_>) = rows.iter().partition(|(k, _)| merged.contains_key(k));
        for (slot, part) in statement_parts(&there) {
            let mut q = sqlx::query(statement_sql(backend, Write::Replace, slot));
            for (key, agg) in part {
                let (latency, ttfb) = merged.remove(key).ok_or_else(|| {
                    StoreError::Invalid("a rollup row read before lost its sketches".into())
                })?;
                q = bind_row(q, key, agg, latency, ttfb, true);
            }
            q.execute(&mut *conn).await?;
        }
        let mut raced: Vec<(&RowKey, &Agg)> = Vec::new();
        for (slot, part) in statement_parts(&new) {
            // SQLite: nearly always no one else inserted any of them, so
            // a plain insert, which returns no rows (each would cross from
            // sqlx's worker thread on its own). Should one be there after
            // all, the savepoint undoes the statement and the part goes
            // the way that returns the keys inserted. Not on PostgreSQL,
            // where returned rows cost little and a compaction of many
            // parts would open more subtransactions than a backend
            // caches (64), slowing every session's visibility checks.
            if backend == Backend::Sqlite && insert_fresh(conn, backend, slot, part).await? {
                continue;
            }
            let mut q = sqlx::query(statement_sql(backend, Write::Insert, slot));
            for (key, agg) in part {
                q = bind_own(q, key, agg)?;
            }
            let mut inserted = HashSet::new();
            for row in q.fetch_all(&mut *conn).await? {
                inserted.insert(self.given(&row)?.0);
            }
            raced.extend(part.iter().filter(|(k, _)| !inserted.contains(k)));
        }
        if raced.is_empty() {
            Ok(())
        } else {
            self.add_and_merge(conn, backend, &raced).await
        }
    }

    /// The row of this batch that a statement returned (its key in the
    /// first four columns).
    fn given(&self, row: &AnyRow) -> Result<(&RowKey, &Agg), StoreError> {
        let key = RowKey {
            cube: row.try_get(0)?,
            bucket_s: row.try_get(1)?,
            start_ms: row.try_get(2)?,
            dims: row
                .try_get::<Vec<u8>, _>(3)?
                .try_into()
                .map_err(|_| StoreError::Invalid("a rollup key is not 16 bytes".into()))?,
        };
        self.0.get_key_value(&key).ok_or_else(|| {
            StoreError::Invalid("the database returned a rollup row it was not given".into())
        })
    }

    /// For rows another writer may be adding to at the same time: multi-row
    /// upserts that add the sums and return each row's sketches as they
    /// were, with the row locked, then, for the rows that were there,
    /// multi-row upserts of the merged sketches.
    async fn add_and_merge(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        rows: &[(&RowKey, &Agg)],
    ) -> Result<(), StoreError> {
        let mut merged: Vec<(&RowKey, &Agg, Vec<u8>, Vec<u8>)> = Vec::new();
        for (slot, part) in statement_parts(rows) {
            let mut q = sqlx::query(statement_sql(backend, Write::Sums, slot));
            for (key, agg) in part {
                q = bind_own(q, key, agg)?;
            }
            for row in q.fetch_all(&mut *conn).await? {
                let (key, agg) = self.given(&row)?;
                // A new row holds exactly this batch's requests (every
                // stored row has at least one); a row that was there has
                // more, and its sketches come back as they were.
                if row.try_get::<i64, _>(4)? == agg.counts[0] {
                    continue;
                }
                let mut latency = Sketch::from_bytes(&row.try_get::<Vec<u8>, _>(5)?)?;
                let mut ttfb = Sketch::from_bytes(&row.try_get::<Vec<u8>, _>(6)?)?;
                latency.merge(&agg.latency)?;
                ttfb.merge(&agg.ttfb)?;
                merged.push((key, agg, latency.to_bytes()?, ttfb.to_bytes()?));
            }
        }
        // In key order again, as the rows were locked.
        merged.sort_by(|a, b| a.0.cmp(b.0));
        for (slot, part) in statement_parts(&merged) {
            let mut q = sqlx::query(statement_sql(backend, Write::Sketches, slot));
            for (key, agg, latency, ttfb) in part {
                q = bind_row(q, key, agg, latency.clone(), ttfb.clone(), false);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// The SELECT of the sketches of the rows of `STATEMENT_ROWS[slot]` keys
/// that exist: a primary-key probe per key. On PostgreSQL a LATERAL
/// subquery with a LIMIT (which the planner cannot flatten into a join)
/// keeps it so: `IN (VALUES ...)` was planned as a hash join over the
/// whole table once it grew past its statistics, 6 ms a statement at
/// 800,000 rows instead of a fraction of one.
fn existing_sql(backend: Backend, slot: usize) -> &'static str {
    static TEXTS: LazyLock<Vec<String>> = LazyLock::new(|| {
        let mut texts = Vec::new();
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for rows in STATEMENT_ROWS {
                let values = values_sql(backend, rows, 4);
                texts.push(match backend {
                    Backend::Sqlite => format!(
                        "SELECT cube, bucket_s, start_ms, dims, latency_sketch, ttfb_sketch \
                         FROM log_rollups WHERE (cube, bucket_s, start_ms, dims) IN (VALUES {values})"
                    ),
                    Backend::Postgres => format!(
                        "SELECT r.cube, r.bucket_s, r.start_ms, r.dims, r.latency_sketch, \
                         r.ttfb_sketch FROM (VALUES {values}) AS k (cube, bucket_s, start_ms, dims) \
                         CROSS JOIN LATERAL (SELECT * FROM log_rollups l WHERE l.cube = k.cube \
                         AND l.bucket_s = k.bucket_s AND l.start_ms = k.start_ms AND l.dims = k.dims \
                         LIMIT 1) AS r"
                    ),
                });
            }
        }
        texts
    });
    let b = usize::from(backend == Backend::Postgres);
    &TEXTS[b * STATEMENT_ROWS.len() + slot]
}

/// Inserts `part` (rows none of which is stored, as far as the writer
/// read) in a savepoint; `false`, with the transaction as it was, when
/// one of them was stored after all (a unique violation).
async fn insert_fresh(
    conn: &mut AnyConnection,
    backend: Backend,
    slot: usize,
    part: &[(&RowKey, &Agg)],
) -> Result<bool, StoreError> {
    let mut q = sqlx::query(statement_sql(backend, Write::Fresh, slot));
    for (key, agg) in part {
        q = bind_own(q, key, agg)?;
    }
    let mut sp = sqlx::Acquire::begin(&mut *conn).await?;
    match q.execute(&mut *sp).await {
        Ok(_) => {
            sp.commit().await?;
            Ok(true)
        }
        Err(e) => {
            sp.rollback().await?;
            match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => Ok(false),
                e => Err(e.into()),
            }
        }
    }
}

/// The statements of a write.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// Insert, or add the sums; return the row's sketches as they were.
    Sums = 0,
    /// Replace the sketches (of rows that exist, locked by `Sums`).
    Sketches = 1,
    /// Add the sums and replace the sketches (of rows that exist, read by
    /// [`existing_sql`]).
    Replace = 2,
    /// Insert rows that are new; return the keys of those inserted.
    Insert = 3,
    /// Insert rows that are new, failing on one that is not.
    Fresh = 4,
}

/// The text of `kind` for `STATEMENT_ROWS[slot]` rows.
fn statement_sql(backend: Backend, kind: Write, slot: usize) -> &'static str {
    static TEXTS: LazyLock<Vec<String>> = LazyLock::new(|| {
        let sums: Vec<String> = COLUMNS[SUMMED]
            .iter()
            .map(|&c| match c {
                // NULL on a row from before migration 0021: its float sum
                // to the nearest nano-dollar, as readers take it.
                "cost_nanos" => format!(
                    "cost_nanos = {} + excluded.cost_nanos",
                    stored_cost_nanos("log_rollups.")
                ),
                c => format!("{c} = log_rollups.{c} + excluded.{c}"),
            })
            .collect();
        let on_conflict = " ON CONFLICT (cube, bucket_s, start_ms, dims) DO UPDATE SET";
        let sketches = format!(
            "{on_conflict} latency_sketch = excluded.latency_sketch, \
             ttfb_sketch = excluded.ttfb_sketch"
        );
        let replace = format!(
            "{on_conflict} {}, latency_sketch = excluded.latency_sketch, \
             ttfb_sketch = excluded.ttfb_sketch",
            sums.join(", ")
        );
        let sums = format!(
            "{on_conflict} {} RETURNING cube, bucket_s, start_ms, dims, requests, \
             latency_sketch, ttfb_sketch",
            sums.join(", ")
        );
        insert_texts(&[
            ("log_rollups", COLUMNS, &sums),
            ("log_rollups", COLUMNS, &sketches),
            ("log_rollups", COLUMNS, &replace),
            (
                "log_rollups",
                COLUMNS,
                " ON CONFLICT DO NOTHING RETURNING cube, bucket_s, start_ms, dims",
            ),
            ("log_rollups", COLUMNS, ""),
        ])
    });
    insert_text(&TEXTS, backend, kind as usize, slot)
}

/// Binds one row's values with its own sums and sketches.
fn bind_own<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    key: &RowKey,
    agg: &'q Agg,
) -> Result<Query<'q, Any, AnyArguments<'q>>, StoreError> {
    Ok(bind_row(
        q,
        key,
        agg,
        agg.latency.to_bytes()?,
        agg.ttfb.to_bytes()?,
        true,
    ))
}

/// Binds one row's values in [`COLUMNS`]' order; `sums` false binds
/// zeros for the sums (a sketch write, which updates only the sketches).
fn bind_row<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    key: &RowKey,
    agg: &'q Agg,
    latency: Vec<u8>,
    ttfb: Vec<u8>,
    sums: bool,
) -> Query<'q, Any, AnyArguments<'q>> {
    let q = q
        .bind(key.cube)
        .bind(key.bucket_s)
        .bind(key.start_ms)
        .bind(key.dims.to_vec());
    bind_values(q, agg, latency, ttfb, sums)
}

/// Binds a row's dimensions, sums and sketches, in [`COLUMNS`]' order from
/// `model` on (the rollups' and the deltas' common columns); `sums` false
/// binds zeros for the sums.
pub(super) fn bind_values<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    agg: &'q Agg,
    latency: Vec<u8>,
    ttfb: Vec<u8>,
    sums: bool,
) -> Query<'q, Any, AnyArguments<'q>> {
    let d = &agg.dims;
    let mut q = q
        .bind(d.model.as_str())
        .bind(d.provider.as_str())
        .bind(d.upstream_model.as_str())
        .bind(d.key_name.as_str())
        .bind(d.end_user.as_str())
        .bind(d.outcome)
        .bind(i64::from(d.failed));
    for c in agg.counts {
        q = q.bind(if sums { c } else { 0 });
    }
    q.bind(if sums { agg.cost } else { 0.0 })
        .bind(if sums { agg.cost_nanos } else { 0 })
        .bind(latency)
        .bind(ttfb)
}

/// A rollup row's exact cost: `cost_nanos`, or on a row from before
/// migration 0021 (NULL there: the migration rewrites no row) its float
/// sum to the nearest nano-dollar. `table` qualifies the columns.
fn stored_cost_nanos(table: &str) -> String {
    format!("COALESCE({table}cost_nanos, CAST(ROUND({table}cost * 1000000000) AS BIGINT))")
}

/// The minute rows' horizon (`log_rollup_levels`, migration 0032): stats
/// read minute rows only from [`MinuteHorizon::kept_from_ms`] on, and
/// hours and days before it. Retention moves it forward
/// ([`advance_minute_horizon`]), never back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteHorizon {
    /// A UTC day's start; 0 while every minute since the cubes started is
    /// kept.
    pub kept_from_ms: i64,
    /// The horizon before it last moved.
    earlier_from_ms: i64,
    /// When it last moved.
    moved_at_ms: i64,
}

/// How long a horizon that moved keeps the minute rows behind it: a plan
/// made just before it moved (on any control plane sharing the database)
/// has read its rows long before this.
pub const MINUTE_HORIZON_SETTLE_MS: i64 = 3600 * 1000;

impl MinuteHorizon {
    /// Minute rows that start before this are read by no plan, at `now_ms`:
    /// the horizon, once it has been in force for
    /// [`MINUTE_HORIZON_SETTLE_MS`], and the one before it until then.
    /// Retention deletes them, and compaction writes none of them.
    pub fn unread_before(&self, now_ms: i64) -> i64 {
        if now_ms.saturating_sub(self.moved_at_ms) >= MINUTE_HORIZON_SETTLE_MS {
            self.kept_from_ms
        } else {
            self.earlier_from_ms
        }
    }
}

/// The minute rows' horizon as stored; the default (0: every minute kept)
/// without a row.
pub async fn minute_horizon(conn: &mut AnyConnection) -> Result<MinuteHorizon, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {HORIZON_COLUMNS} FROM log_rollup_levels WHERE bucket_s = $1"
    ))
    .bind(Level::Minute.seconds())
    .fetch_optional(&mut *conn)
    .await?;
    row.map_or(Ok(MinuteHorizon::default()), |r| horizon_of(&r))
}

/// The columns [`horizon_of`] reads, in its order.
const HORIZON_COLUMNS: &str = "kept_from_ms, earlier_from_ms, moved_at_ms";

fn horizon_of(r: &AnyRow) -> Result<MinuteHorizon, StoreError> {
    Ok(MinuteHorizon {
        kept_from_ms: r.try_get(0)?,
        earlier_from_ms: r.try_get(1)?,
        moved_at_ms: r.try_get(2)?,
    })
}

/// Moves the minute rows' horizon forward to the start of the UTC day
/// holding `horizon_ms` (never back: deleted minutes cannot be read
/// again), then deletes the minute rows of every cube that no plan reads
/// at `now_ms` ([`MinuteHorizon::unread_before`]), an hour of one cube at
/// a time. Control planes sharing a database may run it at once.
/// Returns the rows deleted.
pub async fn advance_minute_horizon(
    store: &Store,
    horizon_ms: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let day = Level::Day.width_ms();
    let horizon = horizon_ms.div_euclid(day) * day;
    // Every SET sees the row as it was: the three move together. A move
    // while the last one settles keeps the horizon from before that one,
    // which plans made before either may still read from.
    let row = sqlx::query(&format!(
        "INSERT INTO log_rollup_levels (bucket_s, kept_from_ms, earlier_from_ms, moved_at_ms) \
         VALUES ($1, $2, 0, $3) ON CONFLICT (bucket_s) DO UPDATE SET \
         earlier_from_ms = CASE WHEN excluded.kept_from_ms > log_rollup_levels.kept_from_ms \
           AND excluded.moved_at_ms - log_rollup_levels.moved_at_ms >= $4 \
           THEN log_rollup_levels.kept_from_ms ELSE log_rollup_levels.earlier_from_ms END, \
         moved_at_ms = CASE WHEN excluded.kept_from_ms > log_rollup_levels.kept_from_ms \
           THEN excluded.moved_at_ms ELSE log_rollup_levels.moved_at_ms END, \
         kept_from_ms = CASE WHEN excluded.kept_from_ms > log_rollup_levels.kept_from_ms \
           THEN excluded.kept_from_ms ELSE log_rollup_levels.kept_from_ms END \
         RETURNING {HORIZON_COLUMNS}",
    ))
    .bind(Level::Minute.seconds())
    .bind(horizon)
    .bind(now_ms)
    .bind(MINUTE_HORIZON_SETTLE_MS)
    .fetch_one(store.pool())
    .await?;
    let unread_before = horizon_of(&row)?.unread_before(now_ms);
    let mut deleted = 0;
    for cube in CUBES {
        deleted += delete_minutes_before(store, cube, unread_before).await?;
    }
    Ok(deleted)
}

/// Deletes the minute rows of `cube` that start before `before_ms`, an
/// hour of them at a time from the oldest on (empty hours skipped): a
/// statement that started over at the oldest row each time would walk, on
/// PostgreSQL, the index entries every earlier one left dead until vacuum,
/// which within an hour are few.
async fn delete_minutes_before(
    store: &Store,
    cube: Cube,
    before_ms: i64,
) -> Result<u64, StoreError> {
    let hour = Level::Hour.width_ms();
    let mut deleted = 0;
    let mut from = i64::MIN;
    loop {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(start_ms) FROM log_rollups \
             WHERE cube = $1 AND bucket_s = $2 AND start_ms >= $3",
        )
        .bind(cube.id)
        .bind(Level::Minute.seconds())
        .bind(from)
        .fetch_one(store.pool())
        .await?;
        let Some(start) = oldest.filter(|&t| t < before_ms) else {
            return Ok(deleted);
        };
        let to = (start.div_euclid(hour) * hour)
            .saturating_add(hour)
            .min(before_ms);
        deleted += delete_level_between(store, cube, Level::Minute, start, to).await?;
        from = to;
    }
}

/// Deletes the rows of `cube` at `level` that start in `[from_ms,
/// before_ms)`, [`PURGE_BATCH`] per statement; returns how many. On SQLite
/// it pauses after each statement that deleted rows, to let other writers
/// in.
async fn delete_level_between(
    store: &Store,
    cube: Cube,
    level: Level,
    from_ms: i64,
    before_ms: i64,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM log_rollups WHERE (cube, bucket_s, start_ms, dims) IN \
             (SELECT cube, bucket_s, start_ms, dims FROM log_rollups \
              WHERE cube = $1 AND bucket_s = $2 AND start_ms >= $3 AND start_ms < $4 \
              LIMIT $5)",
        )
        .bind(cube.id)
        .bind(level.seconds())
        .bind(from_ms)
        .bind(before_ms)
        .bind(PURGE_BATCH)
        .execute(store.pool())
        .await?
        .rows_affected();
        deleted += done;
        if store.backend() == Backend::Sqlite && done > 0 {
            tokio::time::sleep(super::retention::PAUSE).await;
        }
        if done < PURGE_BATCH.unsigned_abs() {
            return Ok(deleted);
        }
    }
}

/// The times from which the cubes hold every record (`log_rollup_cubes`).
pub async fn complete_from(conn: &mut AnyConnection) -> Result<Starts, StoreError> {
    let rows = sqlx::query("SELECT cube, complete_from_ms FROM log_rollup_cubes")
        .fetch_all(&mut *conn)
        .await?;
    let mut starts = BTreeMap::new();
    for row in rows {
        starts.insert(row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?);
    }
    Ok(Starts(starts))
}

/// [`complete_from`] on the PostgreSQL driver's own connection (log
/// ingest's, `logs/ingest/write_postgres.rs`).
pub async fn complete_from_pg(
    conn: &mut sqlx::postgres::PgConnection,
) -> Result<Starts, StoreError> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT cube, complete_from_ms FROM log_rollup_cubes")
            .fetch_all(&mut *conn)
            .await?;
    Ok(Starts(rows.into_iter().collect()))
}

/// A time range of one cube at one level: buckets starting in
/// `[from, to)`, each bound absent for "no bound". Both bounds are
/// multiples of the level's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub cube: Cube,
    pub level: Level,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// The rollup rows of `spans` that pass `conditions` (bound in `st`,
/// over the rollup columns), with the group column `group` as `grp`, and
/// the deltas not yet folded into them (`deltas.rs`): minute rows, each
/// read with the span its minute falls in. One statement reads both, so
/// that it sees a delta either before compaction folded it in or after,
/// never both or neither.
pub fn select_statement(
    mut st: Statement,
    spans: &[Span],
    conditions: Vec<String>,
    group: Option<&str>,
) -> Statement {
    let mut rollups = Vec::new();
    let mut deltas = Vec::new();
    for s in spans {
        let cube = format!("cube = {}", st.bind(Param::Int(s.cube.id)));
        let mut c = vec![
            cube.clone(),
            format!("bucket_s = {}", st.bind(Param::Int(s.level.seconds()))),
        ];
        let mut d = vec![cube];
        if let Some(from) = s.from {
            let from = format!("start_ms >= {}", st.bind(Param::Int(from)));
            c.push(from.clone());
            d.push(from);
        }
        if let Some(to) = s.to {
            let to = format!("start_ms < {}", st.bind(Param::Int(to)));
            c.push(to.clone());
            d.push(to);
        }
        rollups.push(format!("({})", c.join(" AND ")));
        deltas.push(format!("({})", d.join(" AND ")));
    }
    let select = |table: &str, cost: &str, spans: Vec<String>| {
        let mut wh = vec![format!("({})", spans.join(" OR "))];
        wh.extend(conditions.iter().cloned());
        format!(
            "SELECT start_ms, {} AS grp, failed, requests, input_tokens, output_tokens, \
             {cost} AS cost_nanos, latency_sketch, ttfb_sketch FROM {table} WHERE {}",
            group.unwrap_or("''"),
            wh.join(" AND ")
        )
    };
    st.sql = format!(
        "{} UNION ALL {}",
        select("log_rollups", &stored_cost_nanos(""), rollups),
        select("log_rollup_deltas", "cost_nanos", deltas)
    );
    st
}

/// Rows deleted per statement by [`purge_older_than`] and
/// [`advance_minute_horizon`].
const PURGE_BATCH: i64 = 5000;

/// Deletes the rollup buckets that ended at or before `cutoff_ms`, in
/// every cube, a few thousand rows per statement; returns how many.
pub async fn purge_older_than(store: &Store, cutoff_ms: i64) -> Result<u64, StoreError> {
    // Deltas not folded in yet (compaction failing, or a record older than
    // the cutoff arriving late) whose day ended by the cutoff: every rollup
    // row they would add to goes below. A delta whose day is still kept
    // stays, to be folded into its day (and hour, where kept).
    let day = Level::Day.width_ms();
    let mut deleted = sqlx::query("DELETE FROM log_rollup_deltas WHERE start_ms < $1")
        .bind(cutoff_ms.div_euclid(day).saturating_mul(day))
        .execute(store.pool())
        .await?
        .rows_affected();
    for cube in CUBES {
        for level in Level::ALL {
            // Buckets that end at or before the cutoff.
            let starts_before = cutoff_ms.saturating_sub(level.width_ms()).saturating_add(1);
            deleted += delete_level_between(store, cube, level, i64::MIN, starts_before).await?;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: i64, model: &str, latency: u64) -> pb::RequestLog {
        pb::RequestLog {
            time_ms: t,
            model: model.into(),
            status: 200,
            latency_ms: latency,
            input_tokens: 3,
            cost: 0.5,
            cost_nanos: 500_000_001,
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_sums_per_level_bucket_and_dimensions() {
        let day = 86_400_000 * 20_000;
        let recs = [
            rec(day + 1000, "a", 10),
            rec(day + 2000, "a", 20),
            rec(day + 61_000, "a", 30),
            rec(day + 61_000, "b", 40),
            // Before the rollups start: left out.
            rec(day - 1, "a", 50),
        ];
        let b = RollupBatch::of(recs.iter(), Starts::default().with(FULL, day)).unwrap();
        let at = |s: i64| b.0.iter().filter(|(k, _)| k.bucket_s == s).count();
        // Minutes: (0, a), (1, a), (1, b); hour and day: a, b.
        assert_eq!((at(60), at(3600), at(86_400)), (3, 2, 2));
        assert!(b.0.keys().all(|k| k.cube == FULL.id));
        let (_, a_day) =
            b.0.iter()
                .find(|(k, v)| k.bucket_s == 86_400 && v.dims.model == "a")
                .unwrap();
        assert_eq!(a_day.counts[0], 3);
        assert_eq!(a_day.counts[4], 9);
        assert_eq!(a_day.cost, 1.5);
        assert_eq!(a_day.cost_nanos, 1_500_000_003);
        assert_eq!(a_day.latency.percentile(100), 30.0);
        // Dimensions that concatenate alike hash apart.
        let mut x = Dims::of(names_in(&rec(0, "ab", 0), FULL), "ok", false);
        let mut y = x.clone();
        x.provider = "c".into();
        y.model = "a".into();
        y.provider = "bc".into();
        assert_ne!(x.hash(), y.hash());
    }

    /// A fresh SQLite database with every migration applied.
    async fn migrated() -> AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect("sqlite::memory:").await.unwrap();
        crate::store::SQLITE_MIGRATIONS
            .run(&mut conn)
            .await
            .unwrap();
        conn
    }

    /// Every rollup row, key and values, sketches as stored.
    async fn stored(conn: &mut AnyConnection) -> Vec<(Vec<i64>, f64, Vec<Vec<u8>>)> {
        let sql = format!(
            "SELECT cube, bucket_s, start_ms, {}, cost, dims, latency_sketch, ttfb_sketch \
             FROM log_rollups ORDER BY cube, bucket_s, start_ms, dims",
            COLUMNS[SUMMED]
                .iter()
                .filter(|c| **c != "cost")
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
        let n = 3 + COLUMNS[SUMMED].len() - 1;
        sqlx::query(&sql)
            .fetch_all(conn)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let ints = (0..n)
                    .map(|i| r.try_get::<Option<i64>, _>(i).unwrap().unwrap_or(-1))
                    .collect();
                let blobs = (n + 1..n + 4)
                    .map(|i| r.try_get::<Vec<u8>, _>(i).unwrap())
                    .collect();
                (ints, r.try_get(n).unwrap(), blobs)
            })
            .collect()
    }

    /// `add_and_merge` takes the rows another writer inserted between
    /// compaction's read and its insert (two control planes folding at
    /// once): it must leave each row as one `write` of both batches
    /// would, sums added and sketches merged, and insert the rest.
    #[tokio::test]
    async fn add_and_merge_leaves_the_rows_write_would() {
        let t = 86_400_000 * 20_000;
        let starts = Starts::default().with(FULL, 0).with(CUBES[1], 0);
        let first = [rec(t + 1000, "a", 10), rec(t + 2000, "b", 20)];
        // "a" adds to rows that exist; "c" is new.
        let mut c = rec(t + 3000, "c", 40);
        c.status = 503;
        c.output_tokens = 7;
        let second = [rec(t + 1500, "a", 30), c];
        let first = RollupBatch::of(first.iter(), starts.clone()).unwrap();
        let second = RollupBatch::of(second.iter(), starts).unwrap();

        let mut written = migrated().await;
        first.write(&mut written, Backend::Sqlite).await.unwrap();
        second.write(&mut written, Backend::Sqlite).await.unwrap();

        let mut raced = migrated().await;
        first.write(&mut raced, Backend::Sqlite).await.unwrap();
        let rows: Vec<(&RowKey, &Agg)> = second.0.iter().collect();
        second
            .add_and_merge(&mut raced, Backend::Sqlite, &rows)
            .await
            .unwrap();

        let want = stored(&mut written).await;
        let got = stored(&mut raced).await;
        // Both cubes, three levels, models a, b and c.
        assert_eq!(want.len(), 2 * 3 * 3);
        assert_eq!(got, want);
        // And the merged rows hold both batches: model a's day row.
        let a_day = got
            .iter()
            .find(|(k, _, _)| k[0] == FULL.id && k[1] == 86_400 && k[3] == 2)
            .unwrap();
        assert_eq!(a_day.1, 1.0);
        let latency = Sketch::from_bytes(&a_day.2[1]).unwrap();
        assert_eq!(latency.percentile(100), 30.0);
        assert_eq!(latency.percentile(1), 10.0);
    }

    /// `write`'s plain insert of the rows it did not find: a part that
    /// meets a stored row is undone whole (and then goes the way that
    /// returns what it inserted), and the transaction goes on.
    #[tokio::test]
    async fn a_fresh_insert_that_meets_a_stored_row_is_undone() {
        let t = 86_400_000 * 20_000;
        let starts = Starts::default().with(FULL, 0);
        let first = RollupBatch::of([rec(t + 1000, "a", 10)].iter(), starts.clone()).unwrap();
        let second = RollupBatch::of(
            [rec(t + 1500, "a", 30), rec(t + 3000, "c", 40)].iter(),
            starts,
        )
        .unwrap();
        let mut conn = migrated().await;
        first.write(&mut conn, Backend::Sqlite).await.unwrap();
        let before = stored(&mut conn).await;
        let mut tx = sqlx::Acquire::begin(&mut conn).await.unwrap();
        let all: Vec<(&RowKey, &Agg)> = second.0.iter().collect();
        for (slot, part) in statement_parts(&all) {
            assert!(!insert_fresh(&mut tx, Backend::Sqlite, slot, part)
                .await
                .unwrap());
        }
        assert_eq!(stored(&mut tx).await, before);
        let new: Vec<(&RowKey, &Agg)> = second
            .0
            .iter()
            .filter(|(k, _)| !first.0.contains_key(k))
            .collect();
        assert_eq!(new.len(), 3);
        for (slot, part) in statement_parts(&new) {
            assert!(insert_fresh(&mut tx, Backend::Sqlite, slot, part)
                .await
                .unwrap());
        }
        tx.commit().await.unwrap();
        assert_eq!(stored(&mut conn).await.len(), before.len() + 3);
    }

    #[test]
    fn the_upserts_sum_the_counts_and_replace_the_sketches() {
        assert_eq!(COLUMNS[SUMMED][0], "requests");
        assert_eq!(COLUMNS[SUMMED].last(), Some(&"cost_nanos"));
        assert_eq!(COLUMNS[SUMMED].len(), 9 + 2);
        let last = STATEMENT_ROWS.len() - 1;
        let sums = statement_sql(Backend::Postgres, Write::Sums, last);
        assert!(
            sums.contains("cost = log_rollups.cost + excluded.cost"),
            "{sums}"
        );
        assert!(!sums.contains("dims = log_rollups"), "{sums}");
        assert!(!sums.contains("latency_sketch = "), "{sums}");
        assert!(
            sums.contains("cost_nanos = COALESCE(log_rollups.cost_nanos, "),
            "{sums}"
        );
        assert!(sums.contains("$24)"), "{sums}");
        assert!(
            sums.contains("ON CONFLICT (cube, bucket_s, start_ms, dims)"),
            "{sums}"
        );
        assert!(sums.ends_with("ttfb_sketch"), "{sums}");
        let sketches = statement_sql(Backend::Sqlite, Write::Sketches, 0);
        assert!(
            sketches.ends_with("ttfb_sketch = excluded.ttfb_sketch"),
            "{sketches}"
        );
        assert!(!sketches.contains("requests = "), "{sketches}");
        assert_eq!(sketches.matches('(').count(), STATEMENT_ROWS[0] + 2);
        // Rows of 22 values stay under both databases' parameter limits.
        assert!(STATEMENT_ROWS[0] * COLUMNS.len() < 32_766);
    }

    #[test]
    fn the_select_binds_every_span() {
        let st = select_statement(
            Statement::default(),
            &[
                Span {
                    cube: CUBES[1],
                    level: Level::Day,
                    from: Some(0),
                    to: None,
                },
                Span {
                    cube: FULL,
                    level: Level::Minute,
                    from: None,
                    to: Some(60_000),
                },
            ],
            vec!["model = 'x'".into()],
            Some("model"),
        );
        assert!(
            st.sql.contains(
                "FROM log_rollups WHERE ((cube = $1 AND bucket_s = $2 AND start_ms >= $3) \
                 OR (cube = $4 AND bucket_s = $5 AND start_ms < $6)) AND model = 'x' UNION ALL"
            ),
            "{}",
            st.sql
        );
        // The deltas of the same spans, at any level.
        assert!(
            st.sql.contains(
                "FROM log_rollup_deltas WHERE ((cube = $1 AND start_ms >= $3) \
                 OR (cube = $4 AND start_ms < $6)) AND model = 'x'"
            ),
            "{}",
            st.sql
        );
        assert!(st.sql.ends_with("AND model = 'x'"), "{}", st.sql);
        assert_eq!(st.params.len(), 6);
        assert_eq!(st.params[0], Param::Int(CUBES[1].id));
        assert_eq!(st.params[3], Param::Int(0));
    }

    #[test]
    fn each_cube_keeps_its_own_dimensions_from_its_own_start() {
        let day = 86_400_000 * 20_000;
        let mut a = rec(day + 1000, "m1", 10);
        a.key = "k1".into();
        a.user = "u1".into();
        a.provider = "p1".into();
        let mut b = rec(day + 2000, "m2", 20);
        b.key = "k1".into();
        b.user = "u2".into();
        b.provider = "p1".into();
        // The user cube starts after both: left out of it.
        let starts = CUBES
            .into_iter()
            .fold(Starts::default(), |s, c| s.with(c, day))
            .with(CUBES[3], day + 5000);
        let batch = RollupBatch::of([a.clone(), b].iter(), starts).unwrap();
        let days = |cube: Cube| -> Vec<&Agg> {
            batch
                .0
                .iter()
                .filter(|(k, _)| k.cube == cube.id && k.bucket_s == 86_400)
                .map(|(_, v)| v)
                .collect()
        };
        let find = |name: &str| CUBES.into_iter().find(|c| c.name == name).unwrap();
        // total: one row of both, no names.
        let total = days(find("total"));
        assert_eq!(total.len(), 1);
        assert_eq!(total[0].counts[0], 2);
        assert_eq!(
            (
                total[0].dims.model.as_str(),
                total[0].dims.key_name.as_str()
            ),
            ("", "")
        );
        // model: a row per model, with its provider, without the key.
        let model = days(find("model"));
        assert_eq!(model.len(), 2);
        assert!(model
            .iter()
            .all(|a| a.dims.provider == "p1" && a.dims.key_name.is_empty()));
        // key: both in one row; user: none (not started); full: two rows.
        let key = days(find("key"));
        assert_eq!((key.len(), key[0].counts[0]), (1, 2));
        assert_eq!(key[0].dims.key_name, "k1");
        assert!(key[0].dims.model.is_empty());
        assert!(days(find("user")).is_empty());
        assert_eq!(days(FULL).len(), 2);
        // `full` hashes as migration 0017's rows did.
        let full = days(FULL)
            .into_iter()
            .find(|a| a.dims.end_user == "u1")
            .unwrap();
        assert_eq!(full.dims.model, "m1");
        assert_eq!(
            hash_of(names_in(&a, FULL), a.outcome().name(), false),
            full.dims.hash()
        );
        // A cube that is not kept (no start) is not written.
        let only_full = RollupBatch::of([a].iter(), Starts::default().with(FULL, 0)).unwrap();
        assert!(only_full.0.keys().all(|k| k.cube == FULL.id));
        // Ids are distinct, `full` last, and every dimension is a column.
        let mut ids: Vec<i64> = CUBES.iter().map(|c| c.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), CUBES.len());
        assert_eq!(CUBES.last(), Some(&FULL));
        for d in Dim::ALL {
            assert_eq!(Dim::of_column(d.column()), Some(d));
        }
        assert_eq!(Dim::of_column("outcome"), None);
    }
}
