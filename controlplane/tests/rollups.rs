//! Log rollups (#18) against real databases: stats from the rollups equal
//! a full scan of the raw rows for random records, filters, ranges and
//! groupings (counts, tokens exact, costs exact to the nano-dollar, percentiles within the
//! sketch's stated error), resent batches count once (also shipped to two
//! control planes at once on PostgreSQL), and the rollups answer after
//! retention removed the raw rows. Every `both!` test runs against a fresh
//! SQLite file and a fresh PostgreSQL database (see `common`).
//!
//! The records come from a seeded RNG; `ROLLUP_SEED` picks another seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use common::*;
use llmgw_controlplane::logs::ingest::store_batch;
use llmgw_controlplane::logs::sketch::RELATIVE_ERROR;
use llmgw_controlplane::logs::stats::{self, Plan};
use llmgw_controlplane::logs::{retention, rollup};
use llmgw_controlplane::store::Store;
use llmgw_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn seed() -> u64 {
    std::env::var("ROLLUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(18)
}

fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[rng.gen_range(0..xs.len())]
}

const MODELS: &[&str] = &["gpt-4o", "claude", "embed"];
const PROVIDERS: &[&str] = &["p-openai", "p-anthropic"];
const KEYS: &[&str] = &["", "team-a", "team-b"];
const USERS: &[&str] = &["", "alice", "bob", "carol"];
const OUTCOMES: &[pb::Outcome] = &[
    pb::Outcome::Ok,
    pb::Outcome::Ok,
    pb::Outcome::UpstreamError,
    pb::Outcome::CancelledByClient,
    pb::Outcome::Timeout,
];

/// `n` random records between `t0` and `t0 + span_ms`.
fn records(rng: &mut StdRng, n: usize, t0: i64, span_ms: i64) -> Vec<pb::RequestLog> {
    (0..n)
        .map(|_| {
            // Durations from 1 ms to about 100 s, spread over the scales.
            let latency = 10f64.powf(rng.gen_range(0.0..5.0)) as u64;
            let mut r = pb::RequestLog {
                id: uuid::Uuid::now_v7().to_string(),
                time_ms: t0 + rng.gen_range(0..span_ms),
                node_id: "node-1".into(),
                model: pick(rng, MODELS).into(),
                provider: pick(rng, PROVIDERS).into(),
                upstream_model: pick(rng, &["up-1", "up-2"]).into(),
                key: pick(rng, KEYS).into(),
                user: pick(rng, USERS).into(),
                protocol: pick(rng, &["openai-chat", "anthropic"]).into(),
                status: [200, 200, 200, 201, 429, 500, 502][rng.gen_range(0..7)],
                cancelled: rng.gen_bool(0.1),
                error: if rng.gen_bool(0.1) {
                    "boom".into()
                } else {
                    String::new()
                },
                latency_ms: latency,
                ttfb_ms: rng.gen_range(0..=latency),
                input_tokens: rng.gen_range(0..5000),
                output_tokens: rng.gen_range(0..3000),
                cache_read_tokens: rng.gen_range(0..100),
                reasoning_tokens: rng.gen_range(0..10),
                stream: rng.gen_bool(0.5),
                ..Default::default()
            };
            r.set_outcome(OUTCOMES[rng.gen_range(0..OUTCOMES.len())]);
            // Exact costs from a data plane that sends them, and from one
            // older than exact prices (the float alone).
            let nanos: i64 = rng.gen_range(0..50_000_000);
            r.cost = nanos as f64 / 1e9;
            if rng.gen_bool(0.8) {
                r.cost_nanos = nanos;
            }
            r
        })
        .collect()
}

fn batch(records: Vec<pb::RequestLog>) -> pb::LogBatch {
    pb::LogBatch {
        node_id: "node-1".into(),
        last_sequence: 0,
        records,
    }
}

/// A random filter the rollups keep, over a random range in `[t0, t1)`:
/// unbounded, whole days or hours, or to the millisecond.
fn random_request(rng: &mut StdRng, t0: i64, t1: i64) -> pb::GetStatsRequest {
    let mut f = pb::LogFilter::default();
    if rng.gen_bool(0.3) {
        f.model = pick(rng, MODELS).into();
    }
    if rng.gen_bool(0.2) {
        f.provider = pick(rng, PROVIDERS).into();
    }
    if rng.gen_bool(0.2) {
        f.key = pick(rng, &KEYS[1..]).into();
    }
    if rng.gen_bool(0.2) {
        f.user = pick(rng, &USERS[1..]).into();
    }
    if rng.gen_bool(0.15) {
        f.outcome = OUTCOMES[rng.gen_range(0..OUTCOMES.len())] as i32;
    }
    f.errors_only = rng.gen_bool(0.15);
    let unit = [1, MINUTE, HOUR, DAY][rng.gen_range(0..4)];
    let at = |rng: &mut StdRng| {
        let t = rng.gen_range(t0..t1);
        t - t.rem_euclid(unit)
    };
    let (a, b) = (at(rng), at(rng));
    if a != b {
        if rng.gen_bool(0.8) {
            f.since_ms = a.min(b);
        }
        if rng.gen_bool(0.8) {
            f.until_ms = a.max(b);
        }
    }
    pb::GetStatsRequest {
        filter: Some(f),
        group_by: pick(rng, &["", "model", "provider", "key", "user", "outcome"]).into(),
        bucket_s: [0, 60, 300, 3600, 7200, 86_400][rng.gen_range(0..6)],
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Percentile from a sketch against the exact one: never below, at most
/// the stated error above.
fn within(sketch: f64, exact: f64) -> bool {
    sketch >= exact && sketch <= exact * (1.0 + RELATIVE_ERROR)
}

fn assert_row(what: &str, got: &pb::StatsRow, want: &pb::StatsRow) {
    assert_eq!(
        (
            &got.group,
            got.requests,
            got.errors,
            got.input_tokens,
            got.output_tokens
        ),
        (
            &want.group,
            want.requests,
            want.errors,
            want.input_tokens,
            want.output_tokens
        ),
        "{what}"
    );
    // Costs are summed as integers: exactly equal.
    assert_eq!(got.cost_nanos, want.cost_nanos, "{what}: cost");
    assert!(close(got.cost, want.cost), "{what}: cost as a float");
    for (name, g, w) in [
        ("latency p50", got.latency_p50_ms, want.latency_p50_ms),
        ("latency p95", got.latency_p95_ms, want.latency_p95_ms),
        ("latency p99", got.latency_p99_ms, want.latency_p99_ms),
        ("ttfb p50", got.ttfb_p50_ms, want.ttfb_p50_ms),
        ("ttfb p95", got.ttfb_p95_ms, want.ttfb_p95_ms),
        ("ttfb p99", got.ttfb_p99_ms, want.ttfb_p99_ms),
    ] {
        assert!(within(g, w), "{what}: {name} {g} vs exact {w}");
    }
}

/// The rollups' answer equals the scan's, within the sketch's error.
fn assert_same(what: &str, got: &pb::GetStatsResponse, want: &pb::GetStatsResponse) {
    assert_row(
        &format!("{what}: total"),
        got.total.as_ref().unwrap(),
        want.total.as_ref().unwrap(),
    );
    let names = |r: &pb::GetStatsResponse| -> Vec<(String, u64)> {
        r.groups
            .iter()
            .map(|g| (g.group.clone(), g.requests))
            .collect()
    };
    assert_eq!(names(got), names(want), "{what}: groups");
    for (g, w) in got.groups.iter().zip(&want.groups) {
        assert_row(&format!("{what}: group {}", w.group), g, w);
    }
    let starts = |r: &pb::GetStatsResponse| -> Vec<(i64, u64)> {
        r.series.iter().map(|b| (b.start_ms, b.requests)).collect()
    };
    assert_eq!(starts(got), starts(want), "{what}: series");
    for (g, w) in got.series.iter().zip(&want.series) {
        let at = format!("{what}: bucket {}", w.start_ms);
        assert_eq!(
            (g.errors, g.input_tokens, g.output_tokens),
            (w.errors, w.input_tokens, w.output_tokens),
            "{at}"
        );
        assert_eq!(g.cost_nanos, w.cost_nanos, "{at}: cost");
        assert!(
            within(g.latency_p50_ms, w.latency_p50_ms),
            "{at}: latency p50"
        );
        assert!(
            within(g.latency_p95_ms, w.latency_p95_ms),
            "{at}: latency p95"
        );
        assert!(within(g.ttfb_p50_ms, w.ttfb_p50_ms), "{at}: ttfb p50");
    }
}

/// The answer from the raw rows, as a full scan.
async fn scan(store: &Store, r: &pb::GetStatsRequest) -> pb::GetStatsResponse {
    stats::stats_from(store, r.clone(), &Plan::Raw)
        .await
        .unwrap()
}

async fn rollup_rows(store: &Store) -> i64 {
    count(store, "SELECT COUNT(*) FROM log_rollups").await
}

/// The start of the UTC day `days` before today.
fn day_start(days_ago: i64) -> i64 {
    let now = llmgw_controlplane::store::now_ms();
    now - now.rem_euclid(DAY) - days_ago * DAY
}

both! {
    async fn rollups_equal_a_scan_of_the_raw_rows(db: Db) {
        let store = db.open().await;
        let mut rng = StdRng::seed_from_u64(seed());
        // Three days up to the start of today.
        let (t0, t1) = (day_start(3), day_start(0));
        let recs = records(&mut rng, 1500, t0, t1 - t0);
        let mut shipped = 0;
        while shipped < recs.len() {
            let n = rng.gen_range(1..200).min(recs.len() - shipped);
            let part = recs[shipped..shipped + n].to_vec();
            let stored = store_batch(&store, batch(part.clone())).await.unwrap();
            assert_eq!(stored.stored.len(), n);
            // The data plane resends the batch (no ACK seen): nothing new.
            let again = store_batch(&store, batch(part)).await.unwrap();
            assert!(again.stored.is_empty());
            shipped += n;
        }
        // A batch of old and new records: only the new ones count.
        let mut mixed = recs[..50].to_vec();
        let extra = records(&mut rng, 30, t0, t1 - t0);
        mixed.extend(extra.iter().cloned());
        assert_eq!(store_batch(&store, batch(mixed)).await.unwrap().stored.len(), 30);
        let total = scan(&store, &pb::GetStatsRequest::default()).await;
        assert_eq!(total.total.as_ref().unwrap().requests, 1530);
        // The exact sum of what was sent, each cost counted once.
        let sent: i64 = recs
            .iter()
            .chain(&extra)
            .map(|r| match r.cost_nanos {
                0 => (r.cost * 1e9).round() as i64,
                n => n,
            })
            .sum();
        assert_eq!(total.total.as_ref().unwrap().cost_nanos, sent);
        let all = stats::stats(&store, pb::GetStatsRequest::default()).await.unwrap();
        assert!(all.source.starts_with("rollup:"), "{}", all.source);
        assert_eq!(all.total.as_ref().unwrap().cost_nanos, sent);

        let mut sources = std::collections::BTreeSet::new();
        for i in 0..60 {
            let req = random_request(&mut rng, t0 - HOUR, t1 + HOUR);
            let got = stats::stats(&store, req.clone()).await.unwrap();
            let want = scan(&store, &req).await;
            assert_eq!(want.source, "raw");
            if got.source == "raw" {
                // A bounded range without a whole minute.
                assert_eq!(got, want, "{i}: {req:?}");
            } else {
                assert!(got.source.starts_with("rollup:"), "{i}: {}", got.source);
                assert_same(&format!("query {i} ({req:?}, {})", got.source), &got, &want);
            }
            sources.insert(got.source);
        }
        // The random ranges reached every level and the raw ends.
        let all: String = sources.iter().cloned().collect::<Vec<_>>().join(" ");
        for level in ["day", "hour", "minute", "raw"] {
            assert!(all.contains(level), "no answer used {level}: {all}");
        }

        // Filters the rollups do not keep go to the raw rows.
        let by_status = pb::GetStatsRequest {
            filter: Some(pb::LogFilter { status_min: 500, ..Default::default() }),
            group_by: "model".into(),
            ..Default::default()
        };
        let got = stats::stats(&store, by_status.clone()).await.unwrap();
        assert_eq!(got.source, "raw");
        assert_eq!(got, scan(&store, &by_status).await);
        // So do series buckets that are not whole minutes.
        let odd = pb::GetStatsRequest { bucket_s: 90, ..Default::default() };
        assert_eq!(stats::stats(&store, odd).await.unwrap().source, "raw");
    }
}

both! {
    async fn a_batch_shipped_to_two_control_planes_at_once_counts_once(db: Db) {
        // Two control planes on one PostgreSQL database; one store twice on
        // SQLite (which admits one control plane).
        let first = db.open().await;
        let second = match db.kind {
            Kind::Postgres => db.open().await,
            Kind::Sqlite => first.clone(),
        };
        let mut rng = StdRng::seed_from_u64(seed() + 1);
        let (t0, t1) = (day_start(1), day_start(0));
        let recs = records(&mut rng, 600, t0, t1 - t0);
        for part in recs.chunks(40) {
            let (a, b) = tokio::join!(
                store_batch(&first, batch(part.to_vec())),
                store_batch(&second, batch(part.to_vec()))
            );
            // Between them, each record stored once.
            assert_eq!(a.unwrap().stored.len() + b.unwrap().stored.len(), part.len());
        }
        let req = pb::GetStatsRequest { group_by: "key".into(), bucket_s: 3600, ..Default::default() };
        let got = stats::stats(&first, req.clone()).await.unwrap();
        assert_eq!(got.source, "rollup:hour");
        assert_eq!(got.total.as_ref().unwrap().requests, 600);
        assert_same("two control planes", &got, &scan(&first, &req).await);
        let minutes = pb::GetStatsRequest { bucket_s: 60, ..req };
        let got = stats::stats(&second, minutes.clone()).await.unwrap();
        assert_same("two control planes, minutes", &got, &scan(&second, &minutes).await);
    }
}

both! {
    async fn rollups_answer_after_the_raw_rows_expired(db: Db) {
        let store = db.open().await;
        let mut rng = StdRng::seed_from_u64(seed() + 2);
        // Two days, 40 days ago: past 30 days of raw rows, within 90 of
        // rollups.
        let t0 = day_start(40);
        let recs = records(&mut rng, 400, t0, 2 * DAY);
        store_batch(&store, batch(recs)).await.unwrap();
        let req = pb::GetStatsRequest {
            filter: Some(pb::LogFilter {
                since_ms: t0 + HOUR,
                until_ms: t0 + 2 * DAY,
                ..Default::default()
            }),
            group_by: "model".into(),
            bucket_s: 86_400,
        };
        let before = stats::stats(&store, req.clone()).await.unwrap();
        assert_eq!(before.source, "rollup:day+hour");
        assert_same("before retention", &before, &scan(&store, &req).await);
        assert!(before.total.as_ref().unwrap().requests > 300);

        let raw_cutoff = day_start(0) - 30 * DAY;
        retention::purge_older_than(&store, raw_cutoff, 1000, None).await.unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM request_logs").await, 0);
        assert_eq!(scan(&store, &req).await.total.unwrap().requests, 0);
        let after = stats::stats(&store, req.clone()).await.unwrap();
        assert_eq!(after, before, "the rollups still answer");

        // Rollup retention removes whole buckets that ended by the cutoff:
        // 90 days keep them all; 39 the first day's; 38 the rest.
        let rows = rollup_rows(&store).await;
        assert!(rows > 0);
        assert_eq!(rollup::purge_older_than(&store, day_start(0) - 90 * DAY).await.unwrap(), 0);
        let first = rollup::purge_older_than(&store, day_start(39)).await.unwrap();
        assert!(first > 0 && first < u64::try_from(rows).unwrap());
        let left = stats::stats(&store, req.clone()).await.unwrap().total.unwrap().requests;
        assert!(left > 0 && left < before.total.as_ref().unwrap().requests);
        let rest = rollup::purge_older_than(&store, day_start(38)).await.unwrap();
        assert_eq!(first + rest, u64::try_from(rows).unwrap());
        assert_eq!(stats::stats(&store, req).await.unwrap().total.unwrap().requests, 0);
    }
}

both! {
    async fn a_range_before_the_rollups_start_reads_the_raw_rows(db: Db) {
        // A database upgraded with logs: the rollups start at `from`, and
        // records before it are in the raw rows only.
        let store = db.open().await;
        let mut rng = StdRng::seed_from_u64(seed() + 3);
        let t0 = day_start(2);
        let from = t0 + DAY + 17 * MINUTE;
        sqlx::query("UPDATE log_rollup_state SET complete_from_ms = $1")
            .bind(from)
            .execute(store.pool())
            .await
            .unwrap();
        let recs = records(&mut rng, 300, t0, 2 * DAY);
        let before = recs.iter().filter(|r| r.time_ms < from).count();
        assert!(before > 0 && before < recs.len());
        let last_before = recs.iter().map(|r| r.time_ms).filter(|&t| t < from).max().unwrap();
        store_batch(&store, batch(recs)).await.unwrap();
        let rolled: i64 = count(&store, "SELECT CAST(SUM(requests) AS BIGINT) FROM log_rollups WHERE bucket_s = 60").await;
        assert_eq!(usize::try_from(rolled).unwrap(), 300 - before);

        // The whole range, or one that holds raw rows before `from`: raw
        // rows.
        for since in [0, t0, last_before - last_before.rem_euclid(MINUTE)] {
            let req = pb::GetStatsRequest {
                filter: Some(pb::LogFilter { since_ms: since, ..Default::default() }),
                group_by: "model".into(),
                bucket_s: 3600,
            };
            let got = stats::stats(&store, req.clone()).await.unwrap();
            assert_eq!(got.source, "raw", "since {since}");
            assert_eq!(got, scan(&store, &req).await);
        }
        // From `from` on: the rollups, which hold every record since.
        let req = pb::GetStatsRequest {
            filter: Some(pb::LogFilter { since_ms: from, ..Default::default() }),
            group_by: "key".into(),
            bucket_s: 60,
        };
        let got = stats::stats(&store, req.clone()).await.unwrap();
        assert_eq!(got.source, "rollup:minute");
        assert_same("after the start", &got, &scan(&store, &req).await);
        // Once retention removed the older raw rows, the rollups answer
        // for any range (there is nothing before `from` left to count).
        sqlx::query("DELETE FROM request_logs WHERE time_ms < $1")
            .bind(from)
            .execute(store.pool())
            .await
            .unwrap();
        let all = pb::GetStatsRequest::default();
        let got = stats::stats(&store, all.clone()).await.unwrap();
        assert_eq!(got.source, "rollup:day");
        assert_same("after retention", &got, &scan(&store, &all).await);
    }
}

both! {
    async fn rows_from_before_exact_costs_are_read_and_added_to_exactly(db: Db) {
        let store = db.open().await;
        let mut rng = StdRng::seed_from_u64(seed());
        let (t0, t1) = (day_start(2), day_start(0));
        let first = records(&mut rng, 300, t0, t1 - t0);
        store_batch(&store, batch(first.clone())).await.unwrap();
        // As migration 0021 leaves the rows stored before it.
        sqlx::query("UPDATE request_logs SET cost_nanos = NULL")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE log_rollups SET cost_nanos = NULL")
            .execute(store.pool())
            .await
            .unwrap();
        let all = pb::GetStatsRequest { group_by: "model".into(), ..Default::default() };
        let check = |what: &'static str| {
            let store = &store;
            let all = all.clone();
            async move {
                let got = stats::stats(store, all.clone()).await.unwrap();
                assert!(got.source.starts_with("rollup:"), "{}", got.source);
                assert_same(what, &got, &scan(store, &all).await);
            }
        };
        check("old rows").await;
        // New records add to the same rows: their exact sums start from
        // the old rows' float sums to the nearest nano-dollar.
        store_batch(&store, batch(records(&mut rng, 300, t0, t1 - t0))).await.unwrap();
        check("old and new rows").await;
    }
}
