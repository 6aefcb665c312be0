//! `GetStats`: totals, per-group rows and a time series over the request
//! logs that match a filter, and the one place that picks where they come
//! from ([`plan`]).
//!
//! - **Rollups** (`rollup.rs`) answer whenever the filter is one they keep
//!   (model, provider, key, user, outcome, errors only) and the series'
//!   bucket is a whole number of minutes. The smallest rollup cube that
//!   keeps every dimension the filter and the grouping name answers
//!   ([`pick_cube`]; `full` before a newer cube's start). The range is cut
//!   into the coarsest whole buckets that fit (days, then hours at its
//!   ends, then minutes), each level only where it divides the series'
//!   bucket, and the partial minutes at its two ends are read from the raw
//!   rows. Minutes are read only from their horizon on
//!   ([`rollup::minute_horizon`], `cut_kept`): before it, days and hours,
//!   and the partial hours at the range's ends there from the raw rows.
//!   Percentiles come from merged sketches (`sketch.rs`: never below the
//!   exact nearest-rank value, at most 1% above it).
//! - **Raw rows** answer the rest, with exact nearest-rank percentiles:
//!   PostgreSQL aggregates in the database, in one scan for the total, the
//!   groups and the series (`GROUPING SETS`, `percentile_disc`); SQLite,
//!   which has no ordered-set aggregates, streams the matching rows' few
//!   needed columns back and aggregates here. Also a range before the
//!   rollups start (a database upgraded with logs) while raw rows of it
//!   are left.
//!
//! Each answer says which it used (`GetStatsResponse.source`).

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use llmgw_proto::v1 as pb;
use sqlx::Row;

use super::rollup::{self, Cube, Dim, Level, Span, Starts, CUBES, FULL};
use super::sketch::Sketch;
use super::sql::{Filter, Statement, COST_NANOS, FAILED};
use crate::store::{Backend, Store, StoreError};

/// More matching rows than this is refused: narrow the filter.
pub const MAX_STATS_ROWS: u64 = 5_000_000;
/// Most buckets a series may have.
pub const MAX_BUCKETS: usize = 10_000;

/// The column a `group_by` value names.
fn group_column(group_by: &str) -> Result<Option<&'static str>, StoreError> {
    match group_by.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "model" => Ok(Some("model")),
        "provider" => Ok(Some("provider")),
        "key" => Ok(Some("key_name")),
        "user" => Ok(Some("end_user")),
        "outcome" => Ok(Some("outcome")),
        other => Err(StoreError::Invalid(format!(
            "group_by '{other}' is not one of model, provider, key, user, outcome"
        ))),
    }
}

/// The SELECT behind `GetStats` on the raw rows: only the columns the
/// aggregates need.
pub fn stats_statement(r: &pb::GetStatsRequest) -> Result<Statement, StoreError> {
    let filter = Filter::parse(&r.filter.clone().unwrap_or_default())?;
    let group = group_column(&r.group_by)?;
    Ok(raw_statement(&filter, group, r.bucket_s > 0))
}

fn raw_statement(filter: &Filter, group: Option<&str>, bucketed: bool) -> Statement {
    let mut st = Statement::default();
    let wh = filter.where_sql(&mut st);
    let mut cols = vec![
        "latency_ms".to_string(),
        "ttfb_ms".to_string(),
        "input_tokens".to_string(),
        "output_tokens".to_string(),
        format!("{COST_NANOS} AS cost_nanos"),
        format!("CASE WHEN {FAILED} THEN 1 ELSE 0 END AS failed"),
    ];
    if bucketed {
        cols.push("time_ms".into());
    }
    if let Some(g) = group {
        cols.push(format!("{g} AS grp"));
    }
    st.sql = format!("SELECT {} FROM request_logs{wh}", cols.join(", "));
    st
}

/// One stats row from its parts: the three percentiles of latency and of
/// TTFB are p50, p95 and p99.
#[allow(clippy::too_many_arguments)]
fn stats_row(
    group: String,
    requests: u64,
    errors: u64,
    latency: [f64; 3],
    ttfb: [f64; 3],
    input_tokens: u64,
    output_tokens: u64,
    cost_nanos: i64,
) -> pb::StatsRow {
    pb::StatsRow {
        group,
        requests,
        errors,
        error_rate: if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        },
        latency_p50_ms: latency[0],
        latency_p95_ms: latency[1],
        latency_p99_ms: latency[2],
        ttfb_p50_ms: ttfb[0],
        ttfb_p95_ms: ttfb[1],
        ttfb_p99_ms: ttfb[2],
        input_tokens,
        output_tokens,
        cost: cost_nanos as f64 / 1e9,
        cost_nanos,
    }
}

/// A series bucket from the stats row of its requests.
fn bucket_of(start_ms: i64, s: pb::StatsRow) -> pb::StatsBucket {
    pb::StatsBucket {
        start_ms,
        requests: s.requests,
        errors: s.errors,
        latency_p50_ms: s.latency_p50_ms,
        latency_p95_ms: s.latency_p95_ms,
        ttfb_p50_ms: s.ttfb_p50_ms,
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        cost: s.cost,
        cost_nanos: s.cost_nanos,
    }
}

const PERCENTILES: [u32; 3] = [50, 95, 99];

#[derive(Debug, Default)]
struct Acc {
    requests: u64,
    errors: u64,
    // Durations are at most 24 days in milliseconds, which fits in u32.
    latency: Vec<u32>,
    ttfb: Vec<u32>,
    input_tokens: u64,
    output_tokens: u64,
    /// Exact: costs are summed as integers.
    cost_nanos: i64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    latency: u32,
    ttfb: u32,
    input_tokens: u64,
    output_tokens: u64,
    cost_nanos: i64,
    failed: bool,
}

impl Acc {
    fn add(&mut self, s: Sample) {
        self.requests += 1;
        self.errors += u64::from(s.failed);
        self.latency.push(s.latency);
        self.ttfb.push(s.ttfb);
        self.input_tokens = self.input_tokens.saturating_add(s.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(s.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(s.cost_nanos);
    }

    fn finish(&mut self) {
        self.latency.sort_unstable();
        self.ttfb.sort_unstable();
    }

    fn row(mut self, group: String) -> pb::StatsRow {
        self.finish();
        let pcts = |v: &[u32]| PERCENTILES.map(|p| percentile(v, p));
        stats_row(
            group,
            self.requests,
            self.errors,
            pcts(&self.latency),
            pcts(&self.ttfb),
            self.input_tokens,
            self.output_tokens,
            self.cost_nanos,
        )
    }
}

/// The sums of rollup rows and raw samples, with sketches for percentiles.
#[derive(Debug)]
struct SketchAcc {
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_nanos: i64,
    latency: Sketch,
    ttfb: Sketch,
}

/// One rollup row as stats read it, its sketches as stored (merged
/// without being built: `Sketch::merge_encoded`).
struct RollupRow {
    requests: u64,
    failed: bool,
    input_tokens: u64,
    output_tokens: u64,
    cost_nanos: i64,
    latency: Vec<u8>,
    ttfb: Vec<u8>,
}

impl SketchAcc {
    fn new() -> Result<SketchAcc, StoreError> {
        Ok(SketchAcc {
            requests: 0,
            errors: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_nanos: 0,
            latency: Sketch::new()?,
            ttfb: Sketch::new()?,
        })
    }

    fn add_row(&mut self, r: &RollupRow) -> Result<(), StoreError> {
        self.requests = self.requests.saturating_add(r.requests);
        if r.failed {
            self.errors = self.errors.saturating_add(r.requests);
        }
        self.input_tokens = self.input_tokens.saturating_add(r.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(r.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(r.cost_nanos);
        self.latency.merge_encoded(&r.latency)?;
        self.ttfb.merge_encoded(&r.ttfb)
    }

    fn add_sample(&mut self, s: Sample) {
        self.requests += 1;
        self.errors += u64::from(s.failed);
        self.input_tokens = self.input_tokens.saturating_add(s.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(s.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(s.cost_nanos);
        self.latency.record(u64::from(s.latency));
        self.ttfb.record(u64::from(s.ttfb));
    }

    fn row(self, group: String) -> pb::StatsRow {
        stats_row(
            group,
            self.requests,
            self.errors,
            PERCENTILES.map(|p| self.latency.percentile(p)),
            PERCENTILES.map(|p| self.ttfb.percentile(p)),
            self.input_tokens,
            self.output_tokens,
            self.cost_nanos,
        )
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p` percent of the values at or below it; 0 for no values.
pub fn percentile(sorted: &[u32], p: u32) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p) * n).div_ceil(100).clamp(1, n);
    let i = usize::try_from(rank - 1).unwrap_or(0);
    f64::from(sorted[i])
}

fn u64_col(row: &sqlx::any::AnyRow, col: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(row.try_get::<i64, _>(col)?).unwrap_or(0))
}

fn u32_col(row: &sqlx::any::AnyRow, col: &str) -> Result<u32, sqlx::Error> {
    Ok(u32::try_from(row.try_get::<i64, _>(col)?).unwrap_or(u32::MAX))
}

/// PostgreSQL: the aggregates of `GetStats` in one statement. Rows carry
/// `gg`/`gb` (1 where the group or bucket column is rolled up): the total
/// has both, a group row only `gb`, a bucket row only `gg`.
pub fn stats_statement_pg(r: &pb::GetStatsRequest) -> Result<Statement, StoreError> {
    let filter = Filter::parse(&r.filter.clone().unwrap_or_default())?;
    let group = group_column(&r.group_by)?;
    let mut st = Statement::default();
    let wh = filter.where_sql(&mut st);
    let g = group.unwrap_or("''");
    let b = if r.bucket_s > 0 {
        let width = st.bind(super::sql::Param::Int(i64::from(r.bucket_s) * 1000));
        format!("(time_ms / {width}) * {width}")
    } else {
        "0".to_string()
    };
    // Every grouping set sorts the rows once per ordered-set aggregate, so
    // only the sets asked for, and one aggregate per column that returns
    // all three percentiles (as text: the Any driver reads no arrays).
    let mut sets = vec!["()"];
    let gg = if group.is_some() {
        sets.push("(g)");
        "GROUPING(g)::BIGINT"
    } else {
        "1::BIGINT"
    };
    let gb = if r.bucket_s > 0 {
        sets.push("(b)");
        "GROUPING(b)::BIGINT"
    } else {
        "1::BIGINT"
    };
    let pct = |col: &str| {
        format!("(percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {col}))::TEXT")
    };
    st.sql = format!(
        "SELECT {gg} AS gg, {gb} AS gb, {} AS g, {} AS b, \
         COUNT(*) AS requests, SUM(failed)::BIGINT AS errors, \
         {} AS latency, {} AS ttfb, \
         SUM(input_tokens)::BIGINT AS input_tokens, SUM(output_tokens)::BIGINT AS output_tokens, \
         SUM(cost_nanos)::BIGINT AS cost_nanos \
         FROM (SELECT {g}::TEXT AS g, {b}::BIGINT AS b, latency_ms, ttfb_ms, input_tokens, \
               output_tokens, {COST_NANOS} AS cost_nanos, \
               CASE WHEN {FAILED} THEN 1 ELSE 0 END AS failed \
               FROM request_logs{wh}) AS m \
         GROUP BY GROUPING SETS ({})",
        if group.is_some() { "g" } else { "''::TEXT" },
        if r.bucket_s > 0 { "b" } else { "0::BIGINT" },
        pct("latency_ms"),
        pct("ttfb_ms"),
        sets.join(", ")
    );
    Ok(st)
}

async fn stats_pg(
    store: &Store,
    r: pb::GetStatsRequest,
) -> Result<pb::GetStatsResponse, StoreError> {
    let st = stats_statement_pg(&r)?;
    let rows = st.query().fetch_all(store.pool()).await?;
    // "{50,95,99}"; NULL (no rows) reads as zeros, as the in-process
    // percentile gives.
    let pcts = |row: &sqlx::any::AnyRow, col: &str| -> Result<[f64; 3], StoreError> {
        let text: Option<String> = row.try_get(col)?;
        let mut out = [0.0; 3];
        if let Some(t) = text {
            for (slot, v) in out
                .iter_mut()
                .zip(t.trim_matches(|c| c == '{' || c == '}').split(','))
            {
                *slot = v.trim().parse().unwrap_or(0.0);
            }
        }
        Ok(out)
    };
    let count = |row: &sqlx::any::AnyRow, col: &str| -> Result<u64, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(col)?
            .map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    };
    let mut total = None;
    let mut groups = Vec::new();
    let mut series = Vec::new();
    for row in &rows {
        let stats = stats_row(
            String::new(),
            count(row, "requests")?,
            count(row, "errors")?,
            pcts(row, "latency")?,
            pcts(row, "ttfb")?,
            count(row, "input_tokens")?,
            count(row, "output_tokens")?,
            row.try_get::<Option<i64>, _>("cost_nanos")?.unwrap_or(0),
        );
        let gg: i64 = row.try_get("gg")?;
        let gb: i64 = row.try_get("gb")?;
        match (gg, gb) {
            (1, 1) => total = Some(stats),
            (0, _) => groups.push(pb::StatsRow {
                group: row.try_get("g")?,
                ..stats
            }),
            _ => series.push(bucket_of(row.try_get("b")?, stats)),
        }
    }
    if series.len() > MAX_BUCKETS {
        return Err(too_many_buckets());
    }
    sort_groups(&mut groups);
    series.sort_by_key(|s| s.start_ms);
    Ok(pb::GetStatsResponse {
        total: Some(total.unwrap_or_else(|| Acc::default().row(String::new()))),
        groups,
        series,
        source: RAW.into(),
    })
}

/// `source` of an answer from the raw rows.
pub const RAW: &str = "raw";

fn too_many_buckets() -> StoreError {
    StoreError::Invalid(format!(
        "the series would have more than {MAX_BUCKETS} buckets; \
         use wider buckets or a shorter time range"
    ))
}

/// Most requests first, then by name.
fn sort_groups(groups: &mut [pb::StatsRow]) {
    groups.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.group.cmp(&b.group))
    });
}

/// What the total, each group and each bucket accumulate.
trait Accumulate: Sized {
    fn fresh() -> Result<Self, StoreError>;
    fn add_sample(&mut self, s: Sample);
    /// Adds everything `other` holds.
    fn merge_from(&mut self, other: &Self) -> Result<(), StoreError>;
    fn row(self, group: String) -> pb::StatsRow;
}

impl Accumulate for Acc {
    fn fresh() -> Result<Self, StoreError> {
        Ok(Acc::default())
    }
    fn add_sample(&mut self, s: Sample) {
        self.add(s);
    }
    fn merge_from(&mut self, other: &Self) -> Result<(), StoreError> {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.extend_from_slice(&other.latency);
        self.ttfb.extend_from_slice(&other.ttfb);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
        Ok(())
    }
    fn row(self, group: String) -> pb::StatsRow {
        Acc::row(self, group)
    }
}

impl Accumulate for SketchAcc {
    fn fresh() -> Result<Self, StoreError> {
        SketchAcc::new()
    }
    fn add_sample(&mut self, s: Sample) {
        SketchAcc::add_sample(self, s);
    }
    fn merge_from(&mut self, other: &Self) -> Result<(), StoreError> {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
        self.latency.merge(&other.latency)?;
        self.ttfb.merge(&other.ttfb)
    }
    fn row(self, group: String) -> pb::StatsRow {
        SketchAcc::row(self, group)
    }
}

/// The total, the groups and the series of one answer. When there are
/// groups or buckets, every row adds to one of each, and the total is
/// theirs merged at the end (one merge per group or bucket instead of one
/// per row: merging sketches is most of a rollup answer's time).
struct Tally<A> {
    /// Added to per row only when there are neither groups nor buckets.
    total: A,
    grouped: bool,
    groups: HashMap<String, A>,
    width_ms: i64,
    buckets: BTreeMap<i64, A>,
    /// Raw rows read so far.
    scanned: u64,
}

impl<A: Accumulate> Tally<A> {
    fn new(grouped: bool, bucket_s: u32) -> Result<Tally<A>, StoreError> {
        Ok(Tally {
            total: A::fresh()?,
            grouped,
            groups: HashMap::new(),
            width_ms: i64::from(bucket_s) * 1000,
            buckets: BTreeMap::new(),
            scanned: 0,
        })
    }

    /// The accumulators of a row of group `g` at `t_ms`: its group's (when
    /// grouped) and its bucket's (when there is a series).
    fn slots(&mut self, g: String, t_ms: i64) -> Result<[Option<&mut A>; 2], StoreError> {
        let group = if self.grouped {
            Some(match self.groups.entry(g) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(A::fresh()?),
            })
        } else {
            None
        };
        let bucket = if self.width_ms > 0 {
            let start = t_ms.div_euclid(self.width_ms) * self.width_ms;
            if !self.buckets.contains_key(&start) && self.buckets.len() >= MAX_BUCKETS {
                return Err(too_many_buckets());
            }
            Some(match self.buckets.entry(start) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(A::fresh()?),
            })
        } else {
            None
        };
        Ok([group, bucket])
    }

    /// Adds the raw rows `st` selects (see [`raw_statement`]).
    async fn scan_raw(&mut self, store: &Store, st: &Statement) -> Result<(), StoreError> {
        let mut conn = store.pool().acquire().await?;
        let mut rows = st.query().fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            if self.scanned >= MAX_STATS_ROWS {
                return Err(StoreError::TooLarge(format!(
                    "more than {MAX_STATS_ROWS} requests match; narrow the time range or the filter"
                )));
            }
            self.scanned += 1;
            let s = Sample {
                latency: u32_col(&row, "latency_ms")?,
                ttfb: u32_col(&row, "ttfb_ms")?,
                input_tokens: u64_col(&row, "input_tokens")?,
                output_tokens: u64_col(&row, "output_tokens")?,
                cost_nanos: row.try_get::<i64, _>("cost_nanos")?,
                failed: row.try_get::<i64, _>("failed")? != 0,
            };
            if !self.derived_total() {
                self.total.add_sample(s);
            }
            let g = if self.grouped {
                row.try_get("grp")?
            } else {
                String::new()
            };
            let t = if self.width_ms > 0 {
                row.try_get("time_ms")?
            } else {
                0
            };
            for a in self.slots(g, t)?.into_iter().flatten() {
                a.add_sample(s);
            }
        }
        Ok(())
    }

    /// Whether the total is merged from the groups or the buckets.
    fn derived_total(&self) -> bool {
        self.grouped || self.width_ms > 0
    }

    fn finish(mut self, source: String) -> Result<pb::GetStatsResponse, StoreError> {
        if self.grouped {
            for a in self.groups.values() {
                self.total.merge_from(a)?;
            }
        } else if self.width_ms > 0 {
            for a in self.buckets.values() {
                self.total.merge_from(a)?;
            }
        }
        let mut groups: Vec<pb::StatsRow> =
            self.groups.into_iter().map(|(g, a)| a.row(g)).collect();
        sort_groups(&mut groups);
        Ok(pb::GetStatsResponse {
            total: Some(self.total.row(String::new())),
            groups,
            series: self
                .buckets
                .into_iter()
                .map(|(start, a)| bucket_of(start, a.row(String::new())))
                .collect(),
            source,
        })
    }
}

impl Tally<SketchAcc> {
    /// Adds the rollup rows `st` selects (see [`rollup::select_statement`]).
    ///
    /// On PostgreSQL in a transaction of its own without JIT compilation
    /// and parallel workers: the planner overestimates the rows of one
    /// cube (its statistics mix the cubes), so a select of a few thousand
    /// rows passed the JIT threshold and spent 50–65 ms compiling and
    /// another 15 starting workers, against 20 ms of reading
    /// (docs/benchmarks.md).
    async fn scan_rollups(&mut self, store: &Store, st: &Statement) -> Result<(), StoreError> {
        let mut tx = store.pool().begin().await?;
        if store.backend() == Backend::Postgres {
            sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
            sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
                .execute(&mut *tx)
                .await?;
        }
        self.read_rollups(&mut tx, st).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn read_rollups(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        st: &Statement,
    ) -> Result<(), StoreError> {
        let mut rows = st.query().fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            let r = RollupRow {
                requests: u64_col(&row, "requests")?,
                failed: row.try_get::<i64, _>("failed")? != 0,
                input_tokens: u64_col(&row, "input_tokens")?,
                output_tokens: u64_col(&row, "output_tokens")?,
                cost_nanos: row.try_get::<i64, _>("cost_nanos")?,
                latency: row.try_get("latency_sketch")?,
                ttfb: row.try_get("ttfb_sketch")?,
            };
            if !self.derived_total() {
                self.total.add_row(&r)?;
            }
            let g: String = row.try_get("grp")?;
            let t: i64 = row.try_get("start_ms")?;
            for a in self.slots(g, t)?.into_iter().flatten() {
                a.add_row(&r)?;
            }
        }
        Ok(())
    }
}

/// Where an answer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The raw rows.
    Raw,
    /// Rollup rows, and the raw rows of the partial minutes at the ends.
    Rollups {
        spans: Vec<Span>,
        raw: Vec<(i64, i64)>,
    },
}

impl Plan {
    /// The answer's `source`: `raw`, or `rollup:` and the levels read,
    /// coarsest first (and `raw` when the partial minutes at the ends were
    /// read from the raw rows), then `@` and the cubes read, smallest
    /// first: `rollup:day+hour+minute+raw@model`, or `@key+full` on a
    /// database upgraded while the range reaches before the `key` cube.
    pub fn source(&self) -> String {
        match self {
            Plan::Raw => RAW.into(),
            Plan::Rollups { spans, raw } => {
                let mut levels: Vec<Level> = spans.iter().map(|s| s.level).collect();
                levels.sort_unstable_by(|a, b| b.cmp(a));
                levels.dedup();
                let mut parts: Vec<&str> = levels.iter().map(|l| l.name()).collect();
                if !raw.is_empty() {
                    parts.push(RAW);
                }
                let cubes: Vec<&str> = CUBES
                    .into_iter()
                    .filter(|c| spans.iter().any(|s| s.cube == *c))
                    .map(|c| c.name)
                    .collect();
                format!("rollup:{}@{}", parts.join("+"), cubes.join("+"))
            }
        }
    }
}

/// Whether `cube` keeps what `column` (a rollup column a filter tests or a
/// grouping names) needs: its dimension, or outcome and failure, which
/// every cube keeps.
fn keeps_column(cube: Cube, column: &str) -> bool {
    match Dim::of_column(column) {
        Some(d) => cube.keeps(d),
        None => matches!(column, "outcome" | "failed"),
    }
}

/// The smallest kept cube (in [`CUBES`]' order) that keeps every one of
/// `columns`: the rollup columns the filter tests and the group column.
pub fn pick_cube(columns: &[&str], starts: &Starts) -> Option<Cube> {
    CUBES
        .into_iter()
        .find(|&c| starts.of(c).is_some() && columns.iter().all(|col| keeps_column(c, col)))
}

/// The rollup part of [`plan`]: the spans of the cube [`pick_cube`] gives
/// over `[since, until)` (before its start, if it started after `full`'s,
/// `full`'s), for a series of `bucket_s`, reading minutes only from
/// `minutes_from` on ([`rollup::minute_horizon`]; 0: every minute is kept);
/// [`Plan::Raw`] when no cube keeps `columns`, no level divides the
/// buckets, the range has no whole minute, or a part of it before the
/// minutes' horizon has no coarser level the buckets allow.
pub fn plan_rollups(
    starts: &Starts,
    columns: &[&str],
    bucket_s: u32,
    (since, until): (Option<i64>, Option<i64>),
    minutes_from: i64,
) -> Plan {
    let levels: Vec<Level> = Level::ALL
        .into_iter()
        .filter(|l| bucket_s == 0 || i64::from(bucket_s) % l.seconds() == 0)
        .collect();
    let Some(cube) = pick_cube(columns, starts) else {
        return Plan::Raw;
    };
    let cube_from = starts.of(cube).unwrap_or(0);
    let full_from = starts.of(FULL).unwrap_or(0);
    // The parts of the range and the cube that holds each.
    let mut parts = Vec::with_capacity(2);
    let split = hand_over(cube_from, full_from, &levels, minutes_from);
    if cube != FULL && cube_from > full_from && since.is_none_or(|s| s < split) {
        // A database upgraded with rollups: before the cube started, the
        // full cube has the records.
        let upto = until.map_or(split, |u| u.min(split));
        parts.push((since, Some(upto), FULL));
        if until.is_none_or(|u| u > split) {
            parts.push((Some(split), until, cube));
        }
    } else {
        parts.push((since, until, cube));
    }
    let mut spans = Vec::new();
    let mut raw = Vec::new();
    for (since, until, cube) in parts {
        if !cut_kept(
            since,
            until,
            &levels,
            cube,
            minutes_from,
            &mut spans,
            &mut raw,
        ) {
            return Plan::Raw;
        }
    }
    if spans.is_empty() {
        return Plan::Raw;
    }
    Plan::Rollups { spans, raw }
}

/// Where a range passes from `full` to a cube that started later, at
/// `cube_from`: that start, moved up to the next boundary of the finest
/// level read there (hours before the minutes' horizon) when `full` holds
/// the whole bucket it falls in, so that no raw rows are read in the
/// middle of a range (they may be gone while the rollups are kept).
fn hand_over(cube_from: i64, full_from: i64, levels: &[Level], minutes_from: i64) -> i64 {
    let minutes = minutes_from <= 0 || cube_from >= minutes_from;
    let Some(finest) = levels
        .iter()
        .rev()
        .copied()
        .find(|&l| l != Level::Minute || minutes)
    else {
        return cube_from;
    };
    let w = finest.width_ms();
    let up = ceil_to(cube_from, w);
    if full_from <= up - w {
        up
    } else {
        cube_from
    }
}

/// `t` rounded up to a multiple of `w`.
fn ceil_to(t: i64, w: i64) -> i64 {
    t.div_euclid(w) * w + if t.rem_euclid(w) == 0 { 0 } else { w }
}

/// [`cut_into`] with minutes only from `minutes_from` (a day's start) on:
/// the part of the range before it is cut into the coarser levels, its
/// ends finer than an hour read from the raw rows. `false` when that part
/// is not empty and `levels` has no coarser level.
fn cut_kept(
    since: Option<i64>,
    until: Option<i64>,
    levels: &[Level],
    cube: Cube,
    minutes_from: i64,
    spans: &mut Vec<Span>,
    raw: &mut Vec<(i64, i64)>,
) -> bool {
    let before = until.map_or(minutes_from, |u| u.min(minutes_from));
    if minutes_from <= 0 || since.is_some_and(|s| s >= before) {
        cut_into(since, until, levels, cube, spans, raw);
        return true;
    }
    let coarser: Vec<Level> = levels
        .iter()
        .copied()
        .filter(|&l| l != Level::Minute)
        .collect();
    if coarser.is_empty() {
        return false;
    }
    cut_into(since, Some(before), &coarser, cube, spans, raw);
    if until.is_none_or(|u| u > minutes_from) {
        cut_into(Some(minutes_from), until, levels, cube, spans, raw);
    }
    true
}

/// Cuts `[since, until)` (absent bounds: none) into whole buckets of
/// `cube` at the coarsest of `levels` (coarsest first) that fit, the finer
/// levels at the ends, and what no level covers (sub-minute ends) as raw
/// ranges.
pub fn cut(
    since: Option<i64>,
    until: Option<i64>,
    levels: &[Level],
    cube: Cube,
) -> (Vec<Span>, Vec<(i64, i64)>) {
    let mut spans = Vec::new();
    let mut raw = Vec::new();
    cut_into(since, until, levels, cube, &mut spans, &mut raw);
    (spans, raw)
}

fn cut_into(
    since: Option<i64>,
    until: Option<i64>,
    levels: &[Level],
    cube: Cube,
    spans: &mut Vec<Span>,
    raw: &mut Vec<(i64, i64)>,
) {
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return;
        }
    }
    let Some((&level, finer)) = levels.split_first() else {
        // Only bounded ends get here: the finest level has no absent bound
        // left to cover.
        if let (Some(s), Some(u)) = (since, until) {
            raw.push((s, u));
        }
        return;
    };
    let w = level.width_ms();
    let from = since.map(|s| ceil_to(s, w));
    let to = until.map(|u| u.div_euclid(w) * w);
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return cut_into(since, until, finer, cube, spans, raw);
        }
    }
    if let (Some(s), Some(f)) = (since, from) {
        cut_into(Some(s), Some(f), finer, cube, spans, raw);
    }
    spans.push(Span {
        cube,
        level,
        from,
        to,
    });
    if let (Some(t), Some(u)) = (to, until) {
        cut_into(Some(t), Some(u), finer, cube, spans, raw);
    }
}

/// The one place that picks where stats come from: rollups when the
/// filter is one they keep, the series' buckets are whole minutes (each
/// level used only where it divides them) and the range has a whole
/// minute, from the smallest cube that keeps the dimensions the filter and
/// the group column (`group`) name ([`plan_rollups`]); raw rows otherwise,
/// and for a range before the rollups start while raw rows of it are left.
pub async fn plan(
    store: &Store,
    filter: &Filter,
    group: Option<&str>,
    bucket_s: u32,
) -> Result<Plan, StoreError> {
    let Some(conditions) = filter.rollup_conditions(&mut Statement::default()) else {
        return Ok(Plan::Raw);
    };
    let columns: Vec<&str> = conditions.iter().map(|(c, _)| *c).chain(group).collect();
    let (since, until) = filter.range();
    let mut conn = store.pool().acquire().await?;
    let starts = rollup::complete_from(&mut conn).await?;
    let Some(from) = starts.of(FULL) else {
        return Ok(Plan::Raw);
    };
    let horizon = rollup::minute_horizon(&mut conn).await?;
    let plan = plan_rollups(
        &starts,
        &columns,
        bucket_s,
        (since, until),
        horizon.kept_from_ms,
    );
    if plan == Plan::Raw {
        return Ok(plan);
    }
    if from > 0 && since.is_none_or(|s| s < from) {
        // Raw rows older than the rollups, in the range?
        let older: Option<i64> = sqlx::query_scalar(
            "SELECT time_ms FROM request_logs WHERE time_ms < $1 AND time_ms >= $2 LIMIT 1",
        )
        .bind(until.map_or(from, |u| u.min(from)))
        .bind(since.unwrap_or(i64::MIN))
        .fetch_optional(&mut *conn)
        .await?;
        if older.is_some() {
            return Ok(Plan::Raw);
        }
    }
    Ok(plan)
}

pub async fn stats(
    store: &Store,
    r: pb::GetStatsRequest,
) -> Result<pb::GetStatsResponse, StoreError> {
    let filter = Filter::parse(&r.filter.clone().unwrap_or_default())?;
    let plan = plan(store, &filter, group_column(&r.group_by)?, r.bucket_s).await?;
    stats_from(store, r, &plan).await
}

/// The answer of `plan`, which must suit the request (see [`plan`]): a
/// plan that reads a cube without a dimension the filter or the grouping
/// needs is refused.
pub async fn stats_from(
    store: &Store,
    r: pb::GetStatsRequest,
    plan: &Plan,
) -> Result<pb::GetStatsResponse, StoreError> {
    let filter = Filter::parse(&r.filter.clone().unwrap_or_default())?;
    let group = group_column(&r.group_by)?;
    match plan {
        Plan::Raw if store.backend() == Backend::Postgres => stats_pg(store, r).await,
        Plan::Raw => {
            let mut tally: Tally<Acc> = Tally::new(group.is_some(), r.bucket_s)?;
            let st = raw_statement(&filter, group, r.bucket_s > 0);
            tally.scan_raw(store, &st).await?;
            tally.finish(plan.source())
        }
        Plan::Rollups { spans, raw } => {
            let mut tally: Tally<SketchAcc> = Tally::new(group.is_some(), r.bucket_s)?;
            let mut st = Statement::default();
            let conditions = filter.rollup_conditions(&mut st).ok_or_else(|| {
                StoreError::Invalid("this filter needs the raw request logs".into())
            })?;
            let needs: Vec<&str> = conditions.iter().map(|(c, _)| *c).chain(group).collect();
            if let Some(s) = spans
                .iter()
                .find(|s| !needs.iter().all(|col| keeps_column(s.cube, col)))
            {
                return Err(StoreError::Invalid(format!(
                    "the rollup cube {} does not keep every one of {}",
                    s.cube.name,
                    needs.join(", ")
                )));
            }
            let conditions = conditions.into_iter().map(|(_, c)| c).collect();
            let st = rollup::select_statement(st, spans, conditions, group);
            tally.scan_rollups(store, &st).await?;
            for &(since, until) in raw {
                let edge = filter.with_range(Some(since), Some(until));
                let st = raw_statement(&edge, group, r.bucket_s > 0);
                tally.scan_raw(store, &st).await?;
            }
            tally.finish(plan.source())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50.0);
        assert_eq!(percentile(&v, 95), 95.0);
        assert_eq!(percentile(&v, 99), 99.0);
        let v: Vec<u32> = (1..=20).map(|i| i * 10).collect();
        assert_eq!(percentile(&v, 50), 100.0);
        assert_eq!(percentile(&v, 95), 190.0);
        assert_eq!(percentile(&v, 99), 200.0);
        assert_eq!(percentile(&[7], 50), 7.0);
        assert_eq!(percentile(&[7], 1), 7.0);
        assert_eq!(percentile(&[], 50), 0.0);
        assert_eq!(percentile(&[1, 2], 50), 1.0);
    }

    #[test]
    fn a_range_is_cut_into_the_coarsest_whole_buckets() {
        const M: i64 = 60_000;
        const H: i64 = 60 * M;
        const D: i64 = 24 * H;
        let d = 20_000 * D;
        let span = |level, from, to| Span {
            cube: FULL,
            level,
            from,
            to,
        };
        let (spans, raw) = cut(
            Some(d + 90_005),
            Some(d + 2 * D + 3 * H + 2 * M + 7),
            &Level::ALL,
            FULL,
        );
        assert_eq!(
            spans,
            [
                span(Level::Minute, Some(d + 2 * M), Some(d + H)),
                span(Level::Hour, Some(d + H), Some(d + D)),
                span(Level::Day, Some(d + D), Some(d + 2 * D)),
                span(Level::Hour, Some(d + 2 * D), Some(d + 2 * D + 3 * H)),
                span(
                    Level::Minute,
                    Some(d + 2 * D + 3 * H),
                    Some(d + 2 * D + 3 * H + 2 * M)
                ),
            ]
        );
        assert_eq!(
            raw,
            [
                (d + 90_005, d + 2 * M),
                (d + 2 * D + 3 * H + 2 * M, d + 2 * D + 3 * H + 2 * M + 7)
            ]
        );
        let plan = Plan::Rollups { spans, raw };
        assert_eq!(plan.source(), "rollup:day+hour+minute+raw@full");
        // No bounds: every day; aligned bounds: no raw rows.
        assert_eq!(
            cut(None, None, &Level::ALL, FULL),
            (vec![span(Level::Day, None, None)], vec![])
        );
        let (spans, raw) = cut(Some(d + H), None, &Level::ALL, FULL);
        assert_eq!(
            spans,
            [
                span(Level::Hour, Some(d + H), Some(d + D)),
                span(Level::Day, Some(d + D), None)
            ]
        );
        assert!(raw.is_empty());
        // A range inside one minute: raw only.
        assert_eq!(
            cut(Some(d + 5), Some(d + 10), &Level::ALL, FULL),
            (vec![], vec![(d + 5, d + 10)])
        );
        // Two-minute buckets: minutes only.
        let (spans, _) = cut(Some(d), Some(d + 2 * D), &[Level::Minute], FULL);
        assert_eq!(spans, [span(Level::Minute, Some(d), Some(d + 2 * D))]);
        assert_eq!(Plan::Raw.source(), "raw");
    }

    fn cube(name: &str) -> Cube {
        CUBES.into_iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn the_smallest_cube_that_keeps_every_dimension_answers() {
        let all = CUBES
            .into_iter()
            .fold(Starts::default(), |s, c| s.with(c, 0));
        let pick = |cols: &[&str]| pick_cube(cols, &all).map(|c| c.name);
        assert_eq!(pick(&[]), Some("total"));
        assert_eq!(pick(&["outcome", "failed"]), Some("total"));
        assert_eq!(pick(&["model"]), Some("model"));
        assert_eq!(pick(&["provider", "model", "outcome"]), Some("model"));
        assert_eq!(pick(&["key_name"]), Some("key"));
        assert_eq!(pick(&["key_name", "failed"]), Some("key"));
        assert_eq!(pick(&["end_user"]), Some("user"));
        assert_eq!(pick(&["key_name", "model"]), Some("full"));
        assert_eq!(pick(&["end_user", "key_name"]), Some("full"));
        // A column no cube keeps: none.
        assert_eq!(pick(&["status"]), None);
        // Cubes not kept are skipped.
        let full_only = Starts::default().with(FULL, 0);
        assert_eq!(pick_cube(&["model"], &full_only), Some(FULL));
        assert_eq!(pick_cube(&[], &Starts::default()), None);
        // Each cube keeps what it is picked for, and no cube but `full`
        // keeps both a key and a user.
        for c in CUBES {
            for d in c.dims {
                assert!(keeps_column(c, d.column()));
            }
            assert_eq!(
                c.keeps(Dim::Key) && c.keeps(Dim::User),
                c == FULL,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn a_cube_that_started_late_leaves_the_earlier_range_to_full() {
        const H: i64 = 3_600_000;
        const D: i64 = 24 * H;
        let d = 20_000 * D;
        // `key` started at d + 2 days + 1 h + 5 min.
        let start = d + 2 * D + H + 300_000;
        let starts = CUBES
            .into_iter()
            .fold(Starts::default(), |s, c| s.with(c, 0))
            .with(cube("key"), start);
        let plan = plan_rollups(&starts, &["key_name"], 0, (Some(d), Some(d + 4 * D)), 0);
        let Plan::Rollups { spans, raw } = &plan else {
            panic!("{plan:?}")
        };
        assert!(raw.is_empty());
        for s in spans {
            let before = s.to.is_some_and(|t| t <= start);
            let after = s.from.is_some_and(|f| f >= start);
            assert!(before || after, "{s:?} straddles the start");
            assert_eq!(s.cube, if before { FULL } else { cube("key") });
        }
        assert_eq!(plan.source(), "rollup:day+hour+minute@key+full");
        // A range from the start on reads the key cube only; one before it
        // `full` only; the total cube started at 0.
        let later = plan_rollups(&starts, &["key_name"], 3600, (Some(start), None), 0);
        assert_eq!(later.source(), "rollup:hour+minute@key");
        let earlier = plan_rollups(&starts, &["key_name"], 0, (None, Some(d)), 0);
        assert_eq!(earlier.source(), "rollup:day@full");
        let totals = plan_rollups(&starts, &[], 0, (Some(d), None), 0);
        assert_eq!(totals.source(), "rollup:day@total");
        // Filters no cube keeps, buckets no level divides, and ranges
        // without a whole minute: raw rows.
        assert_eq!(
            plan_rollups(&starts, &["status"], 0, (None, None), 0),
            Plan::Raw
        );
        assert_eq!(plan_rollups(&starts, &[], 90, (None, None), 0), Plan::Raw);
        assert_eq!(
            plan_rollups(&starts, &[], 0, (Some(d + 1), Some(d + 2)), 0),
            Plan::Raw
        );
    }

    #[test]
    fn minutes_are_read_only_from_their_horizon() {
        const M: i64 = 60_000;
        const H: i64 = 60 * M;
        const D: i64 = 24 * H;
        let d = 20_000 * D;
        let total = cube("total");
        let span = |level, from, to| Span {
            cube: total,
            level,
            from,
            to,
        };
        let starts = CUBES
            .into_iter()
            .fold(Starts::default(), |s, c| s.with(c, 0));
        // Minutes kept from d on: before it the range is read in hours and
        // days, and its end finer than an hour from the raw rows.
        let (since, until) = (d - 2 * D + 30 * M + 10, d + D + 5 * M + 7);
        let plan = plan_rollups(&starts, &[], 0, (Some(since), Some(until)), d);
        assert_eq!(
            plan,
            Plan::Rollups {
                spans: vec![
                    span(Level::Hour, Some(d - 2 * D + H), Some(d - D)),
                    span(Level::Day, Some(d - D), Some(d)),
                    span(Level::Day, Some(d), Some(d + D)),
                    span(Level::Minute, Some(d + D), Some(d + D + 5 * M)),
                ],
                raw: vec![(since, d - 2 * D + H), (d + D + 5 * M, until)],
            }
        );
        // Without a horizon the start is read in minutes.
        let Plan::Rollups { raw, .. } =
            plan_rollups(&starts, &[], 0, (Some(since), Some(until)), 0)
        else {
            panic!("raw")
        };
        assert_eq!(raw[0], (since, d - 2 * D + 31 * M));
        // A range that starts at or after the horizon is cut as before.
        let after = (Some(d + 90_005), Some(d + 2 * D + 7));
        assert_eq!(
            plan_rollups(&starts, &[], 0, after, d),
            plan_rollups(&starts, &[], 0, after, 0)
        );
        // One that ends before it has no minute spans, and reads the
        // partial hours at both ends from the raw rows; an unbounded one
        // reads hours up to it, and from it on (series of hours).
        let before = plan_rollups(&starts, &[], 0, (Some(d - D + 7 * M), Some(d - 3 * M)), d);
        assert_eq!(before.source(), "rollup:hour+raw@total");
        assert_eq!(
            plan_rollups(&starts, &[], 3600, (None, None), d),
            Plan::Rollups {
                spans: vec![
                    span(Level::Hour, None, Some(d)),
                    span(Level::Hour, Some(d), None)
                ],
                raw: vec![],
            }
        );
        // Series of minutes (or of five) reaching before the horizon have
        // no coarser level: raw rows; after it, minutes.
        assert_eq!(
            plan_rollups(&starts, &[], 300, (Some(d - H), Some(d + H)), d),
            Plan::Raw
        );
        assert_eq!(
            plan_rollups(&starts, &[], 60, (Some(d), Some(d + H)), d).source(),
            "rollup:minute@total"
        );
        // A cube that started off the hour before the horizon (migration
        // 0026 starts it at the next minute): `full` answers up to the
        // next hour, so no raw rows are read in the middle of the range.
        let key = cube("key");
        let late = starts.clone().with(key, d - 2 * D + 5 * H + 7 * M);
        let plan = plan_rollups(&late, &["key_name"], 0, (Some(d - 3 * D + 10 * M), None), d);
        let Plan::Rollups { spans, raw } = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(raw, &[(d - 3 * D + 10 * M, d - 3 * D + H)]);
        for s in spans {
            let handed = d - 2 * D + 6 * H;
            assert_eq!(
                s.cube,
                if s.to.is_some_and(|t| t <= handed) {
                    FULL
                } else {
                    key
                },
                "{s:?}"
            );
        }
        // After the horizon the cube's own minutes take over at its start.
        let after = starts.clone().with(key, d + 5 * H + 7 * M);
        let Plan::Rollups { spans, raw } =
            plan_rollups(&after, &["key_name"], 0, (Some(d + H), Some(d + D)), d)
        else {
            panic!("raw")
        };
        assert!(raw.is_empty());
        assert!(spans.contains(&Span {
            cube: key,
            level: Level::Minute,
            from: Some(d + 5 * H + 7 * M),
            to: Some(d + 6 * H),
        }));
        // With a cube that started late, both parts keep the horizon.
        let late = starts.with(key, d + D + H);
        let plan = plan_rollups(&late, &["key_name"], 0, (Some(d - D + 10 * M), None), d);
        let Plan::Rollups { spans, raw } = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(raw, &[(d - D + 10 * M, d - D + H)]);
        for s in spans {
            assert!(s.level != Level::Minute || s.from >= Some(d), "{s:?}");
            assert_eq!(
                s.cube,
                if s.to.is_some_and(|t| t <= d + D + H) {
                    FULL
                } else {
                    key
                }
            );
        }
    }

    #[test]
    fn statement_selects_only_what_is_needed() {
        let st = stats_statement(&pb::GetStatsRequest {
            group_by: "key".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(st.sql.contains("key_name AS grp"), "{}", st.sql);
        assert!(!st.sql.contains("time_ms"), "{}", st.sql);
        assert!(!st.sql.contains("body"), "{}", st.sql);
        assert!(stats_statement(&pb::GetStatsRequest {
            group_by: "day".into(),
            ..Default::default()
        })
        .is_err());
    }
}
