//! `llmgw stats`

use anyhow::Result;
use llmgw_proto::v1::{GetStatsRequest, GetStatsResponse, StatsRow};

use crate::args::{GlobalOpts, StatsArgs};
use crate::client::Client;
use crate::commands::logs::{cost, filter};
use crate::output::{Out, Table};

const DAY_MS: i64 = 24 * 3600 * 1000;

pub async fn run(a: StatsArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let mut f = filter(&a.filter);
    if a.filter.since.is_none() {
        f.since_ms = now_ms() - DAY_MS;
    }
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .get_stats(GetStatsRequest {
            filter: Some(f),
            group_by: a.by.map(|b| b.as_str().to_string()).unwrap_or_default(),
            bucket_s: a.bucket.unwrap_or(0),
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r);
    }
    out.table(&rows_table(&r, a.by.map(|b| b.as_str())))?;
    if !r.series.is_empty() {
        out.line("")?;
        out.table(&series_table(&r))?;
    }
    if let Some(line) = source_line(&r) {
        out.line("")?;
        out.line(&line)?;
    }
    Ok(())
}

/// Where the control plane took the figures from; none from a control
/// plane that predates rollups.
fn source_line(r: &GetStatsResponse) -> Option<String> {
    match r.source.as_str() {
        "" => None,
        "raw" => Some("source: raw (request logs; exact percentiles)".into()),
        s => Some(format!(
            "source: {s} (percentiles from merged sketches: at most 1% above exact)"
        )),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(v: f64) -> String {
    format!("{v:.0}ms")
}

fn rate(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn row_cells(label: String, s: &StatsRow) -> Vec<String> {
    vec![
        label,
        s.requests.to_string(),
        s.errors.to_string(),
        rate(s.error_rate),
        ms(s.latency_p50_ms),
        ms(s.latency_p95_ms),
        ms(s.latency_p99_ms),
        ms(s.ttfb_p50_ms),
        ms(s.ttfb_p95_ms),
        ms(s.ttfb_p99_ms),
        s.input_tokens.to_string(),
        s.output_tokens.to_string(),
        cost(s.cost),
    ]
}

/// One row per group (when grouped), then the total.
fn rows_table(r: &GetStatsResponse, by: Option<&str>) -> Table {
    let first = by.map_or("", |b| b).to_ascii_uppercase();
    let mut t = Table::new(&[
        if first.is_empty() { "" } else { first.as_str() },
        "REQUESTS",
        "ERRORS",
        "ERROR RATE",
        "P50",
        "P95",
        "P99",
        "TTFB P50",
        "TTFB P95",
        "TTFB P99",
        "TOKENS IN",
        "TOKENS OUT",
        "COST",
    ]);
    for gr in &r.groups {
        let label = if gr.group.is_empty() {
            "(none)".to_string()
        } else {
            gr.group.clone()
        };
        t.row(row_cells(label, gr));
    }
    let total = r.total.clone().unwrap_or_default();
    t.row(row_cells("TOTAL".to_string(), &total));
    t
}

fn series_table(r: &GetStatsResponse) -> Table {
    let mut t = Table::new(&[
        "START",
        "REQUESTS",
        "ERRORS",
        "P50",
        "P95",
        "TTFB P50",
        "TOKENS IN",
        "TOKENS OUT",
        "COST",
    ]);
    for b in &r.series {
        let start = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(b.start_ms.max(0).unsigned_abs());
        t.row([
            humantime::format_rfc3339_seconds(start).to_string(),
            b.requests.to_string(),
            b.errors.to_string(),
            ms(b.latency_p50_ms),
            ms(b.latency_p95_ms),
            ms(b.ttfb_p50_ms),
            b.input_tokens.to_string(),
            b.output_tokens.to_string(),
            cost(b.cost),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::StatsBucket;

    #[test]
    fn tables() {
        let r = GetStatsResponse {
            total: Some(StatsRow {
                requests: 10,
                errors: 5,
                error_rate: 0.5,
                latency_p50_ms: 500.0,
                cost: 0.651,
                ..Default::default()
            }),
            groups: vec![StatsRow {
                group: "m-a".into(),
                requests: 10,
                errors: 5,
                error_rate: 0.5,
                ..Default::default()
            }],
            series: vec![StatsBucket {
                start_ms: 1_714_564_800_000,
                requests: 3,
                ..Default::default()
            }],
            source: "rollup:hour+minute+raw".into(),
        };
        let text = rows_table(&r, Some("model")).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("MODEL  REQUESTS  ERRORS  ERROR RATE"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("m-a    10        5       50.0%"),
            "{text}"
        );
        assert!(lines[2].starts_with("TOTAL  10"), "{text}");
        assert!(lines[2].ends_with("0.651"), "{text}");
        let text = series_table(&r).render();
        assert!(text.contains("2024-05-01T12:00:00Z  3"), "{text}");
        assert_eq!(
            source_line(&r).as_deref(),
            Some("source: rollup:hour+minute+raw (percentiles from merged sketches: at most 1% above exact)")
        );
        let raw = GetStatsResponse {
            source: "raw".into(),
            ..r.clone()
        };
        assert!(source_line(&raw).is_some_and(|l| l.starts_with("source: raw ")));
        assert_eq!(source_line(&GetStatsResponse::default()), None);
    }
}
