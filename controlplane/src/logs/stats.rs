//! `GetStats`: totals, per-group rows and a time series over the request
//! logs that match a filter.
//!
//! Percentiles are exact nearest-rank values on both databases:
//! - PostgreSQL aggregates in the database, in one scan for the total, the
//!   groups and the series (`GROUPING SETS`, `percentile_disc`), so stats
//!   over tens of millions of rows send back only the results.
//! - SQLite, which has no ordered-set aggregates, streams the matching
//!   rows' few needed columns back and aggregates here.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use llmgw_proto::v1 as pb;
use sqlx::Row;

use super::sql::{Filter, Statement, FAILED};
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

/// The SELECT behind `GetStats`: only the columns the aggregates need.
pub fn stats_statement(r: &pb::GetStatsRequest) -> Result<Statement, StoreError> {
    let filter = Filter::parse(&r.filter.clone().unwrap_or_default())?;
    let group = group_column(&r.group_by)?;
    let mut st = Statement::default();
    let wh = filter.where_sql(&mut st);
    let mut cols = vec![
        "latency_ms".to_string(),
        "ttfb_ms".to_string(),
        "input_tokens".to_string(),
        "output_tokens".to_string(),
        "cost".to_string(),
        format!("CASE WHEN {FAILED} THEN 1 ELSE 0 END AS failed"),
    ];
    if r.bucket_s > 0 {
        cols.push("time_ms".into());
    }
    if let Some(g) = group {
        cols.push(format!("{g} AS grp"));
    }
    st.sql = format!("SELECT {} FROM request_logs{wh}", cols.join(", "));
    Ok(st)
}

#[derive(Debug, Default)]
struct Acc {
    requests: u64,
    errors: u64,
    // Durations are at most 30 days in milliseconds, which fits in u32.
    latency: Vec<u32>,
    ttfb: Vec<u32>,
    input_tokens: u64,
    output_tokens: u64,
    cost: f64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    latency: u32,
    ttfb: u32,
    input_tokens: u64,
    output_tokens: u64,
    cost: f64,
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
        self.cost += s.cost;
    }

    fn finish(&mut self) {
        self.latency.sort_unstable();
        self.ttfb.sort_unstable();
    }

    fn row(mut self, group: String) -> pb::StatsRow {
        self.finish();
        pb::StatsRow {
            group,
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            latency_p50_ms: percentile(&self.latency, 50),
            latency_p95_ms: percentile(&self.latency, 95),
            latency_p99_ms: percentile(&self.latency, 99),
            ttfb_p50_ms: percentile(&self.ttfb, 50),
            ttfb_p95_ms: percentile(&self.ttfb, 95),
            ttfb_p99_ms: percentile(&self.ttfb, 99),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: self.cost,
        }
    }

    fn bucket(mut self, start_ms: i64) -> pb::StatsBucket {
        self.finish();
        pb::StatsBucket {
            start_ms,
            requests: self.requests,
            errors: self.errors,
            latency_p50_ms: percentile(&self.latency, 50),
            latency_p95_ms: percentile(&self.latency, 95),
            ttfb_p50_ms: percentile(&self.ttfb, 50),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: self.cost,
        }
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
         SUM(cost)::DOUBLE PRECISION AS cost \
         FROM (SELECT {g}::TEXT AS g, {b}::BIGINT AS b, latency_ms, ttfb_ms, input_tokens, \
               output_tokens, cost, CASE WHEN {FAILED} THEN 1 ELSE 0 END AS failed \
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
        let requests = count(row, "requests")?;
        let errors = count(row, "errors")?;
        let [l50, l95, l99] = pcts(row, "latency")?;
        let [t50, t95, t99] = pcts(row, "ttfb")?;
        let stats = pb::StatsRow {
            group: String::new(),
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            latency_p50_ms: l50,
            latency_p95_ms: l95,
            latency_p99_ms: l99,
            ttfb_p50_ms: t50,
            ttfb_p95_ms: t95,
            ttfb_p99_ms: t99,
            input_tokens: count(row, "input_tokens")?,
            output_tokens: count(row, "output_tokens")?,
            cost: row.try_get::<Option<f64>, _>("cost")?.unwrap_or(0.0),
        };
        let gg: i64 = row.try_get("gg")?;
        let gb: i64 = row.try_get("gb")?;
        match (gg, gb) {
            (1, 1) => total = Some(stats),
            (0, _) => groups.push(pb::StatsRow {
                group: row.try_get("g")?,
                ..stats
            }),
            _ => series.push(pb::StatsBucket {
                start_ms: row.try_get("b")?,
                requests: stats.requests,
                errors: stats.errors,
                latency_p50_ms: stats.latency_p50_ms,
                latency_p95_ms: stats.latency_p95_ms,
                ttfb_p50_ms: stats.ttfb_p50_ms,
                input_tokens: stats.input_tokens,
                output_tokens: stats.output_tokens,
                cost: stats.cost,
            }),
        }
    }
    if series.len() > MAX_BUCKETS {
        return Err(StoreError::Invalid(format!(
            "the series would have more than {MAX_BUCKETS} buckets; \
             use wider buckets or a shorter time range"
        )));
    }
    groups.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.group.cmp(&b.group))
    });
    series.sort_by_key(|s| s.start_ms);
    Ok(pb::GetStatsResponse {
        total: Some(total.unwrap_or_else(|| Acc::default().row(String::new()))),
        groups,
        series,
    })
}

pub async fn stats(
    store: &Store,
    r: pb::GetStatsRequest,
) -> Result<pb::GetStatsResponse, StoreError> {
    if store.backend() == Backend::Postgres {
        return stats_pg(store, r).await;
    }
    let st = stats_statement(&r)?;
    let grouped = group_column(&r.group_by)?.is_some();
    let width_ms = i64::from(r.bucket_s) * 1000;

    let mut total = Acc::default();
    let mut groups: HashMap<String, Acc> = HashMap::new();
    let mut buckets: BTreeMap<i64, Acc> = BTreeMap::new();

    let mut conn = store.pool().acquire().await?;
    let mut rows = st.query().fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        if total.requests >= MAX_STATS_ROWS {
            return Err(StoreError::TooLarge(format!(
                "more than {MAX_STATS_ROWS} requests match; narrow the time range or the filter"
            )));
        }
        let s = Sample {
            latency: u32_col(&row, "latency_ms")?,
            ttfb: u32_col(&row, "ttfb_ms")?,
            input_tokens: u64_col(&row, "input_tokens")?,
            output_tokens: u64_col(&row, "output_tokens")?,
            cost: row.try_get::<f64, _>("cost")?,
            failed: row.try_get::<i64, _>("failed")? != 0,
        };
        total.add(s);
        if grouped {
            let g: String = row.try_get("grp")?;
            groups.entry(g).or_default().add(s);
        }
        if width_ms > 0 {
            let t: i64 = row.try_get("time_ms")?;
            let start = t.div_euclid(width_ms) * width_ms;
            if !buckets.contains_key(&start) && buckets.len() >= MAX_BUCKETS {
                return Err(StoreError::Invalid(format!(
                    "the series would have more than {MAX_BUCKETS} buckets; \
                     use wider buckets or a shorter time range"
                )));
            }
            buckets.entry(start).or_default().add(s);
        }
    }
    drop(rows);

    let mut group_rows: Vec<pb::StatsRow> = groups.into_iter().map(|(g, a)| a.row(g)).collect();
    group_rows.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.group.cmp(&b.group))
    });
    Ok(pb::GetStatsResponse {
        total: Some(total.row(String::new())),
        groups: group_rows,
        series: buckets
            .into_iter()
            .map(|(start, a)| a.bucket(start))
            .collect(),
    })
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
