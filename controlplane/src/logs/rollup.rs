//! The log rollups (`log_rollups`, migration 0017): per-minute, hourly and
//! daily aggregates of the request logs, so that stats over months read a
//! few thousand rows instead of millions.
//!
//! - **Written at ingest**, in the batch's transaction and only for the
//!   records that transaction inserted (never for one stored before), so a
//!   record shipped twice, to one control plane or to two sharing a
//!   PostgreSQL database, is counted once: the second insert of an id
//!   waits for the first's transaction and then finds the row. A batch
//!   adds its sums with multi-row upserts that also return the rows'
//!   latency and TTFB sketches (`sketch.rs`) as they were, with the rows
//!   locked; those are merged here and written back. Rows are written in
//!   key order, so concurrent batches lock them in the same order.
//! - **Read by stats** (`stats.rs` picks the levels): [`select_statement`].
//! - **Retention** removes buckets that ended before the rollup cutoff:
//!   [`purge_older_than`].
//!
//! Rollups hold every record with `time_ms >= complete_from_ms`
//! (`log_rollup_state`): 0 on a new database; on one upgraded with logs,
//! the minute after the upgrade.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use llmgw_proto::v1 as pb;
use sha2::{Digest, Sha256};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};

use super::ingest::{insert_text, insert_texts, statement_sizes, STATEMENT_ROWS};
use super::sketch::Sketch;
use super::sql::{is_failure, Param, Statement};
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

/// Columns written by [`RollupBatch::write`], in bind order.
const COLUMNS: &[&str] = &[
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
const SUMMED: std::ops::Range<usize> = 10..21;

/// The row of one level, bucket and dimensions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    bucket_s: i64,
    start_ms: i64,
    dims: [u8; 16],
}

/// What a row is keyed by, besides its bucket.
#[derive(Debug, Clone)]
struct Dims {
    model: String,
    provider: String,
    upstream_model: String,
    key_name: String,
    end_user: String,
    outcome: &'static str,
    failed: bool,
}

impl Dims {
    fn of(r: &pb::RequestLog) -> Dims {
        Dims {
            model: r.model.clone(),
            provider: r.provider.clone(),
            upstream_model: r.upstream_model.clone(),
            key_name: r.key.clone(),
            end_user: r.user.clone(),
            outcome: r.outcome().name(),
            failed: is_failure(r),
        }
    }

    /// 16 bytes of the SHA-256 of the dimensions, each length-prefixed so
    /// that no two lists of names hash the same input.
    fn hash(&self) -> [u8; 16] {
        let mut h = Sha256::new();
        for s in [
            self.model.as_str(),
            &self.provider,
            &self.upstream_model,
            &self.key_name,
            &self.end_user,
            self.outcome,
        ] {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        h.update([u8::from(self.failed)]);
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }
}

/// One row's sums.
#[derive(Debug)]
struct Agg {
    dims: Dims,
    /// requests, errors_4xx, errors_5xx, cancels, then the five token
    /// kinds: the [`SUMMED`] columns but the costs.
    counts: [i64; 9],
    cost: f64,
    /// The exact sum.
    cost_nanos: i64,
    latency: Sketch,
    ttfb: Sketch,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Agg {
    fn new(dims: Dims) -> Result<Agg, StoreError> {
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
}

/// The rollup rows a batch adds to, at every level.
#[derive(Debug, Default)]
pub struct RollupBatch(BTreeMap<RowKey, Agg>);

impl RollupBatch {
    /// The sums of `records` (the ones inserted now) from `from_ms` on.
    pub fn of<'a>(
        records: impl Iterator<Item = &'a pb::RequestLog>,
        from_ms: i64,
    ) -> Result<RollupBatch, StoreError> {
        let mut rows: BTreeMap<RowKey, Agg> = BTreeMap::new();
        for r in records.filter(|r| r.time_ms >= from_ms) {
            let dims = Dims::of(r);
            let hash = dims.hash();
            for level in Level::ALL {
                let width = level.width_ms();
                let key = RowKey {
                    bucket_s: level.seconds(),
                    start_ms: r.time_ms.div_euclid(width) * width,
                    dims: hash,
                };
                let agg = match rows.entry(key) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(Agg::new(dims.clone())?)
                    }
                };
                agg.add(r);
            }
        }
        Ok(RollupBatch(rows))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the sums to their rows on `conn` (the ingest's transaction):
    /// multi-row upserts that add the sums and return each row's sketches
    /// as they were, then, for the rows that were there, multi-row upserts
    /// of the merged sketches. Statements come in the few sizes ingest uses
    /// (`STATEMENT_ROWS`), so their texts stay prepared.
    pub async fn write(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
    ) -> Result<(), StoreError> {
        let rows: Vec<(&RowKey, &Agg)> = self.0.iter().collect();
        let mut merged: Vec<(&RowKey, &Agg, Vec<u8>, Vec<u8>)> = Vec::new();
        let mut rest = &rows[..];
        for slot in statement_sizes(rows.len()) {
            let (part, next) = rest.split_at(STATEMENT_ROWS[slot]);
            rest = next;
            let mut q = sqlx::query(statement_sql(backend, Write::Sums, slot));
            for (key, agg) in part {
                q = bind_row(
                    q,
                    key,
                    agg,
                    agg.latency.to_bytes()?,
                    agg.ttfb.to_bytes()?,
                    true,
                );
            }
            for row in q.fetch_all(&mut *conn).await? {
                let key = RowKey {
                    bucket_s: row.try_get(0)?,
                    start_ms: row.try_get(1)?,
                    dims: row
                        .try_get::<Vec<u8>, _>(2)?
                        .try_into()
                        .map_err(|_| StoreError::Invalid("a rollup key is not 16 bytes".into()))?,
                };
                let Some((key, agg)) = self.0.get_key_value(&key) else {
                    return Err(StoreError::Invalid(
                        "an upsert returned a rollup row it was not given".into(),
                    ));
                };
                // A new row holds exactly this batch's requests (every
                // stored row has at least one); a row that was there has
                // more, and its sketches come back as they were.
                if row.try_get::<i64, _>(3)? == agg.counts[0] {
                    continue;
                }
                let mut latency = Sketch::from_bytes(&row.try_get::<Vec<u8>, _>(4)?)?;
                let mut ttfb = Sketch::from_bytes(&row.try_get::<Vec<u8>, _>(5)?)?;
                latency.merge(&agg.latency)?;
                ttfb.merge(&agg.ttfb)?;
                merged.push((key, agg, latency.to_bytes()?, ttfb.to_bytes()?));
            }
        }
        // In key order again, as the rows were locked.
        merged.sort_by(|a, b| a.0.cmp(b.0));
        let mut rest = &merged[..];
        for slot in statement_sizes(merged.len()) {
            let (part, next) = rest.split_at(STATEMENT_ROWS[slot]);
            rest = next;
            let mut q = sqlx::query(statement_sql(backend, Write::Sketches, slot));
            for (key, agg, latency, ttfb) in part {
                q = bind_row(q, key, agg, latency.clone(), ttfb.clone(), false);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// The two statements of a write.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// Insert, or add the sums; return the row's sketches as they were.
    Sums = 0,
    /// Replace the sketches (of rows that exist, locked by `Sums`).
    Sketches = 1,
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
        let on_conflict = " ON CONFLICT (bucket_s, start_ms, dims) DO UPDATE SET";
        let sums = format!(
            "{on_conflict} {} RETURNING bucket_s, start_ms, dims, requests, \
             latency_sketch, ttfb_sketch",
            sums.join(", ")
        );
        let sketches = format!(
            "{on_conflict} latency_sketch = excluded.latency_sketch, \
             ttfb_sketch = excluded.ttfb_sketch"
        );
        insert_texts(&[
            ("log_rollups", COLUMNS, &sums),
            ("log_rollups", COLUMNS, &sketches),
        ])
    });
    insert_text(&TEXTS, backend, kind as usize, slot)
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
    let d = &agg.dims;
    let mut q = q
        .bind(key.bucket_s)
        .bind(key.start_ms)
        .bind(key.dims.to_vec())
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

/// The time from which rollups hold every record (`log_rollup_state`).
pub async fn complete_from(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let from: Option<i64> =
        sqlx::query_scalar("SELECT complete_from_ms FROM log_rollup_state WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(from.unwrap_or(0))
}

/// A time range at one level: buckets starting in `[from, to)`, each bound
/// absent for "no bound". Both bounds are multiples of the level's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub level: Level,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// The rollup rows of `spans` that pass `conditions` (bound in `st`,
/// over the rollup columns), with the group column `group` as `grp`.
pub fn select_statement(
    mut st: Statement,
    spans: &[Span],
    conditions: Vec<String>,
    group: Option<&str>,
) -> Statement {
    let mut ors = Vec::new();
    for s in spans {
        let mut c = vec![format!(
            "bucket_s = {}",
            st.bind(Param::Int(s.level.seconds()))
        )];
        if let Some(from) = s.from {
            c.push(format!("start_ms >= {}", st.bind(Param::Int(from))));
        }
        if let Some(to) = s.to {
            c.push(format!("start_ms < {}", st.bind(Param::Int(to))));
        }
        ors.push(format!("({})", c.join(" AND ")));
    }
    let mut wh = vec![format!("({})", ors.join(" OR "))];
    wh.extend(conditions);
    st.sql = format!(
        "SELECT start_ms, {} AS grp, failed, requests, input_tokens, output_tokens, \
         {} AS cost_nanos, latency_sketch, ttfb_sketch FROM log_rollups WHERE {}",
        group.unwrap_or("''"),
        stored_cost_nanos(""),
        wh.join(" AND ")
    );
    st
}

/// Rows deleted per statement by [`purge_older_than`].
const PURGE_BATCH: i64 = 5000;

/// Deletes the rollup buckets that ended at or before `cutoff_ms`, a few
/// thousand rows per statement; returns how many.
pub async fn purge_older_than(store: &Store, cutoff_ms: i64) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for level in Level::ALL {
        let before = cutoff_ms.saturating_sub(level.width_ms());
        loop {
            let done = sqlx::query(
                "DELETE FROM log_rollups WHERE (bucket_s, start_ms, dims) IN \
                 (SELECT bucket_s, start_ms, dims FROM log_rollups \
                  WHERE bucket_s = $1 AND start_ms <= $2 LIMIT $3)",
            )
            .bind(level.seconds())
            .bind(before)
            .bind(PURGE_BATCH)
            .execute(store.pool())
            .await?;
            deleted += done.rows_affected();
            if done.rows_affected() < PURGE_BATCH as u64 {
                break;
            }
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
        let b = RollupBatch::of(recs.iter(), day).unwrap();
        let at = |s: i64| b.0.iter().filter(|(k, _)| k.bucket_s == s).count();
        // Minutes: (0, a), (1, a), (1, b); hour and day: a, b.
        assert_eq!((at(60), at(3600), at(86_400)), (3, 2, 2));
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
        let mut x = Dims::of(&rec(0, "ab", 0));
        let mut y = x.clone();
        x.provider = "c".into();
        y.model = "a".into();
        y.provider = "bc".into();
        assert_ne!(x.hash(), y.hash());
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
        assert!(sums.contains("$23)"), "{sums}");
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
                    level: Level::Day,
                    from: Some(0),
                    to: None,
                },
                Span {
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
                "(bucket_s = $1 AND start_ms >= $2) OR (bucket_s = $3 AND start_ms < $4)"
            ),
            "{}",
            st.sql
        );
        assert!(st.sql.ends_with("AND model = 'x'"), "{}", st.sql);
        assert_eq!(st.params.len(), 4);
    }
}
