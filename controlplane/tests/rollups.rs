//! Log rollups (#18) against real databases: stats from the rollups equal
//! a full scan of the raw rows for random records, filters, ranges and
//! groupings (counts, tokens exact, costs exact to the nano-dollar, percentiles within the
//! sketch's stated error), resent batches count once (also shipped to two
//! control planes at once on PostgreSQL), and the rollups answer after
//! retention removed the raw rows. Every rollup cube is read, and the
//! planner's pick is checked against the smallest cube that keeps what a
//! request filters and groups by (a cube that cannot answer a filter
//! exactly fails the comparison with the scan, and is refused). Every
//! `both!` test runs against a fresh SQLite file and a fresh PostgreSQL
//! database (see `common`).
//!
//! The records come from a seeded RNG; `ROLLUP_SEED` picks another seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use common::*;
use llmgw_controlplane::logs::ingest::store_batch;
use llmgw_controlplane::logs::sketch::RELATIVE_ERROR;
use llmgw_controlplane::logs::sql::Filter;
use llmgw_controlplane::logs::stats::{self, Plan};
use llmgw_controlplane::logs::{deltas, retention, rollup};
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

/// The cube a request must be answered from: the smallest that keeps
/// every dimension it filters or groups by, worked out apart from the
/// planner (`rollup::CUBES`: total, model with its target, key, user,
/// full).
fn expected_cube(r: &pb::GetStatsRequest) -> &'static str {
    let f = r.filter.clone().unwrap_or_default();
    let mut dims = std::collections::BTreeSet::new();
    for (set, dim) in [
        (!f.model.is_empty(), "model"),
        (!f.provider.is_empty(), "provider"),
        (!f.key.is_empty(), "key"),
        (!f.user.is_empty(), "user"),
    ] {
        if set {
            dims.insert(dim);
        }
    }
    if matches!(r.group_by.as_str(), "model" | "provider" | "key" | "user") {
        dims.insert(r.group_by.as_str());
    }
    let dims: Vec<&str> = dims.into_iter().collect();
    match dims.as_slice() {
        [] => "total",
        ["model"] | ["provider"] | ["model", "provider"] => "model",
        ["key"] => "key",
        ["user"] => "user",
        _ => "full",
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
    fold(store).await;
    count(store, "SELECT COUNT(*) FROM log_rollups").await
}

/// Folds every rollup delta into the rollups, as the control plane's
/// compaction does every second.
async fn fold(store: &Store) {
    deltas::compact(store).await.unwrap();
    assert_eq!(
        count(store, "SELECT COUNT(*) FROM log_rollup_deltas").await,
        0
    );
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
            // Half the records folded into the rollups, the rest left as
            // deltas: stats read both.
            if shipped >= recs.len() / 2 && count(&store, "SELECT COUNT(*) FROM log_rollups").await == 0 {
                fold(&store).await;
            }
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
        for i in 0..100 {
            let req = random_request(&mut rng, t0 - HOUR, t1 + HOUR);
            let got = stats::stats(&store, req.clone()).await.unwrap();
            let want = scan(&store, &req).await;
            assert_eq!(want.source, "raw");
            if got.source == "raw" {
                // A bounded range without a whole minute.
                assert_eq!(got, want, "{i}: {req:?}");
            } else {
                assert!(got.source.starts_with("rollup:"), "{i}: {}", got.source);
                // The smallest cube that can answer, and only it.
                let cube = expected_cube(&req);
                assert!(got.source.ends_with(&format!("@{cube}")), "{i}: {} for {req:?}", got.source);
                assert_same(&format!("query {i} ({req:?}, {})", got.source), &got, &want);
            }
            sources.insert(got.source);
        }
        // Folding the rest in changes no answer.
        assert!(count(&store, "SELECT COUNT(*) FROM log_rollup_deltas").await > 0);
        let before: Vec<_> = [pb::GetStatsRequest::default(), random_request(&mut rng, t0, t1)]
            .into_iter()
            .collect();
        let mut answers = Vec::new();
        for req in &before {
            answers.push(stats::stats(&store, req.clone()).await.unwrap());
        }
        fold(&store).await;
        for (req, answer) in before.iter().zip(&answers) {
            assert_eq!(&stats::stats(&store, req.clone()).await.unwrap(), answer, "{req:?}");
        }
        // The random ranges reached every level, the raw ends and every
        // cube.
        let all: String = sources.iter().cloned().collect::<Vec<_>>().join(" ");
        for level in ["day", "hour", "minute", "raw"] {
            assert!(all.contains(level), "no answer used {level}: {all}");
        }
        // The planner picks each cube for what it keeps.
        let one = |f: pb::LogFilter, group: &str| pb::GetStatsRequest {
            filter: Some(pb::LogFilter { since_ms: t0 + HOUR, ..f }),
            group_by: group.into(),
            bucket_s: 0,
        };
        let f = pb::LogFilter::default;
        for (req, cube) in [
            (one(pb::LogFilter { errors_only: true, ..f() }, "outcome"), "total"),
            (one(pb::LogFilter { provider: "p-openai".into(), ..f() }, "model"), "model"),
            (one(f(), "provider"), "model"),
            (one(pb::LogFilter { key: "team-a".into(), ..f() }, ""), "key"),
            (one(f(), "key"), "key"),
            (one(f(), "user"), "user"),
            (one(pb::LogFilter { user: "alice".into(), ..f() }, "key"), "full"),
            (one(pb::LogFilter { key: "team-b".into(), ..f() }, "model"), "full"),
        ] {
            assert_eq!(expected_cube(&req), cube);
            let got = stats::stats(&store, req.clone()).await.unwrap();
            assert_eq!(got.source, format!("rollup:day+hour@{cube}"), "{req:?}");
            assert_same(&format!("{req:?}"), &got, &scan(&store, &req).await);
        }
        // Each cube on its own: a plan that reads one cube for a request
        // it does not keep the dimensions of is refused, and every cube
        // that keeps them answers alike.
        let by_key_of_model = pb::GetStatsRequest {
            filter: Some(pb::LogFilter { model: "claude".into(), ..Default::default() }),
            group_by: "key".into(),
            bucket_s: 3600,
        };
        let want = scan(&store, &by_key_of_model).await;
        for cube in rollup::CUBES {
            let (spans, raw) = stats::cut(None, None, &[rollup::Level::Hour], cube);
            let plan = Plan::Rollups { spans, raw };
            let got = stats::stats_from(&store, by_key_of_model.clone(), &plan).await;
            if cube == rollup::FULL {
                assert_same("full cube", &got.unwrap(), &want);
            } else {
                let e = got.expect_err(cube.name).to_string();
                assert!(e.contains("does not keep"), "{}: {e}", cube.name);
            }
        }
        let totals = pb::GetStatsRequest { bucket_s: 86_400, ..Default::default() };
        let want = scan(&store, &totals).await;
        for cube in rollup::CUBES {
            let (spans, raw) = stats::cut(None, None, &[rollup::Level::Day], cube);
            let got = stats::stats_from(&store, totals.clone(), &Plan::Rollups { spans, raw })
                .await
                .unwrap();
            assert_same(&format!("totals from {}", cube.name), &got, &want);
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
        assert_eq!(got.source, "rollup:hour@key");
        assert_eq!(got.total.as_ref().unwrap().requests, 600);
        assert_same("two control planes", &got, &scan(&first, &req).await);
        let minutes = pb::GetStatsRequest { bucket_s: 60, ..req.clone() };
        let got = stats::stats(&second, minutes.clone()).await.unwrap();
        assert_same("two control planes, minutes", &got, &scan(&second, &minutes).await);
        // Both fold the deltas in at once: each delta once.
        let (a, b) = tokio::join!(deltas::compact(&first), deltas::compact(&second));
        assert!(a.unwrap() + b.unwrap() > 0);
        assert_eq!(count(&first, "SELECT COUNT(*) FROM log_rollup_deltas").await, 0);
        for req in [req, minutes] {
            let got = stats::stats(&first, req.clone()).await.unwrap();
            assert_eq!(got.total.as_ref().unwrap().requests, 600);
            assert_same("two control planes, folded", &got, &scan(&first, &req).await);
        }
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
        assert_eq!(before.source, "rollup:day+hour@model");
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
        sqlx::query("UPDATE log_rollup_cubes SET complete_from_ms = $1")
            .bind(from)
            .execute(store.pool())
            .await
            .unwrap();
        let recs = records(&mut rng, 300, t0, 2 * DAY);
        let before = recs.iter().filter(|r| r.time_ms < from).count();
        assert!(before > 0 && before < recs.len());
        let last_before = recs.iter().map(|r| r.time_ms).filter(|&t| t < from).max().unwrap();
        store_batch(&store, batch(recs)).await.unwrap();
        fold(&store).await;
        let rolled: i64 = count(&store, "SELECT CAST(SUM(requests) AS BIGINT) FROM log_rollups WHERE cube = 0 AND bucket_s = 60").await;
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
        assert_eq!(got.source, "rollup:minute@key");
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
        assert_eq!(got.source, "rollup:day@total");
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
        // As migration 0021 leaves the rows stored before it: the
        // floating-point cost alone (which PostgreSQL no longer keeps
        // beside the exact one since 0037).
        sqlx::query(
            "UPDATE request_logs SET cost = CAST(cost_nanos AS DOUBLE PRECISION) / 1e9, \
             cost_nanos = NULL",
        )
            .execute(store.pool())
            .await
            .unwrap();
        fold(&store).await;
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

both! {
    async fn cubes_that_started_after_full_leave_the_earlier_range_to_it(db: Db) {
        // As migration 0026 leaves a database that had rollups: `full`
        // holds everything, the other cubes only records from their start.
        let store = db.open().await;
        let mut rng = StdRng::seed_from_u64(seed() + 4);
        let (t0, t1) = (day_start(3), day_start(0));
        let start = t0 + DAY + 5 * HOUR + 17 * MINUTE;
        sqlx::query("UPDATE log_rollup_cubes SET complete_from_ms = $1 WHERE cube <> 0")
            .bind(start)
            .execute(store.pool())
            .await
            .unwrap();
        let recs = records(&mut rng, 900, t0, t1 - t0);
        for part in recs.chunks(150) {
            store_batch(&store, batch(part.to_vec())).await.unwrap();
        }
        // The new cubes hold only the records from their start.
        fold(&store).await;
        let after = recs.iter().filter(|r| r.time_ms >= start).count();
        for cube in rollup::CUBES {
            let held = count(
                &store,
                &format!("SELECT CAST(SUM(requests) AS BIGINT) FROM log_rollups WHERE cube = {} AND bucket_s = 86400", cube.id),
            )
            .await;
            let want = if cube == rollup::FULL { recs.len() } else { after };
            assert_eq!(usize::try_from(held).unwrap(), want, "{}", cube.name);
        }
        let mut split = 0;
        for i in 0..40 {
            let req = random_request(&mut rng, t0, t1);
            let got = stats::stats(&store, req.clone()).await.unwrap();
            let want = scan(&store, &req).await;
            if got.source == "raw" {
                assert_eq!(got, want, "{i}: {req:?}");
                continue;
            }
            let cube = expected_cube(&req);
            let f = req.filter.clone().unwrap_or_default();
            let reaches_before = f.since_ms == 0 || f.since_ms < start;
            let reaches_after = f.until_ms == 0 || f.until_ms > start;
            let both = format!("{cube}+full");
            // (A side with no whole minute reads raw rows only.)
            let allowed: Vec<&str> = match (cube, reaches_before, reaches_after) {
                ("full", _, _) | (_, true, false) => vec!["full"],
                (c, true, true) => vec![&both, c, "full"],
                (c, false, _) => vec![c],
            };
            let cubes = got.source.split('@').nth(1).unwrap_or_default();
            assert!(allowed.contains(&cubes), "{i}: {} for {req:?}", got.source);
            if cubes == both {
                split += 1;
            }
            assert_same(&format!("query {i} ({req:?}, {})", got.source), &got, &want);
        }
        assert!(split > 0, "no range read two cubes");
    }
}

both! {
    async fn an_upgraded_database_keeps_its_rollups_in_the_full_cube(db: Db) {
        // The schema before migration 0026, with a rollup row of it.
        let old = migrate_up_to(&db, 26).await;
        let day = day_start(2);
        let names = ["gpt-4o", "p-openai", "up-1", "team-a", "", "ok"];
        // Migration 0017's key: the SHA-256 of the length-prefixed names
        // and the failure flag, first 16 bytes.
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        for n in names {
            sha2::Digest::update(&mut h, (n.len() as u64).to_le_bytes());
            sha2::Digest::update(&mut h, n.as_bytes());
        }
        sha2::Digest::update(&mut h, [0u8]);
        let dims = sha2::Digest::finalize(h)[..16].to_vec();
        let mut sketch = llmgw_controlplane::logs::sketch::Sketch::new().unwrap();
        for v in [100, 200, 300, 400, 500] {
            sketch.record(v);
        }
        let sketch = sketch.to_bytes().unwrap();
        sqlx::query(
            "INSERT INTO log_rollups (bucket_s, start_ms, dims, model, provider, upstream_model, \
             key_name, end_user, outcome, failed, requests, errors_4xx, errors_5xx, cancels, \
             input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens, \
             cost, cost_nanos, latency_sketch, ttfb_sketch) \
             VALUES (86400, $1, $2, $3, $4, $5, $6, $7, $8, 0, 5, 0, 0, 0, 50, 20, 0, 0, 0, 0.5, 500000000, $9, $9)",
        )
        .bind(day)
        .bind(dims)
        .bind(names[0])
        .bind(names[1])
        .bind(names[2])
        .bind(names[3])
        .bind(names[4])
        .bind(names[5])
        .bind(sketch)
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let before = llmgw_controlplane::store::now_ms();
        let store = db.open().await;
        assert_eq!(count(&store, "SELECT COUNT(*) FROM log_rollups WHERE cube = 0").await, 1);
        // `full` keeps its start (0: no logs when 0017 ran); the new cubes
        // start at the next minute, since there were rollups.
        let starts = sqlx::query_as::<_, (i64, String, i64)>(
            "SELECT cube, name, complete_from_ms FROM log_rollup_cubes ORDER BY cube",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(starts.len(), rollup::CUBES.len());
        for (id, name, from) in &starts {
            let cube = rollup::CUBES.iter().find(|c| c.id == *id).unwrap();
            assert_eq!(&cube.name, name);
            if cube == &rollup::FULL {
                assert_eq!(*from, 0);
            } else {
                assert_eq!(from % MINUTE, 0);
                assert!(*from > before - MINUTE && *from <= before + 2 * MINUTE, "{name}: {from}");
            }
        }
        // A record of the same dimensions and day adds to the old row.
        let mut rec = records(&mut StdRng::seed_from_u64(seed()), 1, day + HOUR, 1).remove(0);
        rec.model = names[0].into();
        rec.provider = names[1].into();
        rec.upstream_model = names[2].into();
        rec.key = names[3].into();
        rec.user = String::new();
        rec.set_outcome(pb::Outcome::Ok);
        rec.status = 200;
        rec.cancelled = false;
        rec.error = String::new();
        store_batch(&store, batch(vec![rec])).await.unwrap();
        fold(&store).await;
        assert_eq!(count(&store, "SELECT COUNT(*) FROM log_rollups WHERE bucket_s = 86400").await, 1);
        assert_eq!(
            count(&store, "SELECT CAST(SUM(requests) AS BIGINT) FROM log_rollups WHERE bucket_s = 86400").await,
            6
        );
        // Stats by key over those days: from `full`, since the key cube
        // started after them.
        let req = pb::GetStatsRequest {
            filter: Some(pb::LogFilter { since_ms: day, until_ms: day_start(0), ..Default::default() }),
            group_by: "key".into(),
            bucket_s: 0,
        };
        let got = stats::stats(&store, req).await.unwrap();
        assert_eq!(got.source, "rollup:day@full");
        assert_eq!(got.groups.len(), 1);
        assert_eq!((got.groups[0].group.as_str(), got.groups[0].requests), ("team-a", 6));
    }
}

both! {
    async fn rollup_retention_keeps_the_deltas_of_the_days_it_keeps(db: Db) {
        let store = db.open().await;
        let mut rng = StdRng::seed_from_u64(seed() + 5);
        // Two days, 40 days ago; nothing folded yet (compaction failing,
        // or records arriving late).
        let t0 = day_start(40);
        store_batch(&store, batch(records(&mut rng, 300, t0, 2 * DAY))).await.unwrap();
        let second = pb::GetStatsRequest {
            filter: Some(pb::LogFilter { since_ms: t0 + DAY, until_ms: t0 + 2 * DAY, ..Default::default() }),
            group_by: "model".into(),
            bucket_s: 86_400,
        };
        let want = scan(&store, &second).await;
        assert!(want.total.as_ref().unwrap().requests > 0);
        // A cutoff in the second day: the first day's rollups go, and so
        // do its deltas; the second day's are kept, to be folded into it.
        rollup::purge_older_than(&store, t0 + DAY + 12 * HOUR).await.unwrap();
        let first_day = format!("SELECT COUNT(*) FROM log_rollup_deltas WHERE start_ms < {}", t0 + DAY);
        assert_eq!(count(&store, &first_day).await, 0);
        assert!(count(&store, "SELECT COUNT(*) FROM log_rollup_deltas").await > 0);
        fold(&store).await;
        let got = stats::stats(&store, second).await.unwrap();
        assert!(got.source.starts_with("rollup:day"), "{}", got.source);
        assert_same("the second day, folded after retention", &got, &want);
    }
}

both! {
    async fn minute_rows_go_behind_their_horizon_and_stats_still_equal_a_scan(db: Db) {
        let store = db.open().await;
        let mut rng = StdRng::seed_from_u64(seed() + 7);
        let now = llmgw_controlplane::store::now_ms();
        let settled = rollup::MINUTE_HORIZON_SETTLE_MS;
        // Three days up to the start of today (days counted from t0, so
        // that the test does not depend on crossing midnight).
        let (t0, t1) = (day_start(3), day_start(0));
        let day_start = |days_ago: i64| t0 + (3 - days_ago) * DAY;
        let recs = records(&mut rng, 900, t0, t1 - t0);
        for part in recs.chunks(150) {
            store_batch(&store, batch(part.to_vec())).await.unwrap();
        }
        fold(&store).await;
        let minutes = |from: i64, to: i64| {
            format!(
                "SELECT COUNT(*) FROM log_rollups WHERE bucket_s = 60 \
                 AND start_ms >= {from} AND start_ms < {to}"
            )
        };
        let coarser = "SELECT COUNT(*) FROM log_rollups WHERE bucket_s <> 60";
        let hours_and_days = count(&store, coarser).await;
        let before_yesterday = count(&store, &minutes(t0, day_start(1))).await;
        assert!(before_yesterday > 0);
        let horizon = |store: &Store| {
            let store = store.clone();
            async move {
                let mut conn = store.pool().acquire().await.unwrap();
                rollup::minute_horizon(&mut conn).await.unwrap()
            }
        };
        assert_eq!(horizon(&store).await.kept_from_ms, 0);
        let request = |since_ms, until_ms, group_by: &str, bucket_s| pb::GetStatsRequest {
            filter: Some(pb::LogFilter { since_ms, until_ms, ..Default::default() }),
            group_by: group_by.into(),
            bucket_s,
        };
        let across = request(t0 + 90 * MINUTE + 17, t1 - 3 * MINUTE, "model", 0);
        // A plan made before the horizon moves reads minutes from t0 on.
        let early_plan = stats::plan(
            &store,
            &Filter::parse(across.filter.as_ref().unwrap()).unwrap(),
            Some("model"),
            0,
        )
        .await
        .unwrap();
        assert_eq!(early_plan.source(), "rollup:day+hour+minute+raw@model");

        // Minutes kept from the start of yesterday: while the new horizon
        // settles, the rows behind it stay, and the plan made before still
        // finds every row it reads.
        let deleted = rollup::advance_minute_horizon(&store, day_start(1) + 5 * HOUR, now)
            .await
            .unwrap();
        assert_eq!(deleted, 0);
        assert_eq!(horizon(&store).await.kept_from_ms, day_start(1));
        assert_eq!(horizon(&store).await.unread_before(now), 0);
        assert_eq!(horizon(&store).await.unread_before(now + settled), day_start(1));
        assert_eq!(count(&store, &minutes(t0, day_start(1))).await, before_yesterday);
        let want = scan(&store, &across).await;
        assert_same(
            "a plan made before the horizon moved",
            &stats::stats_from(&store, across.clone(), &early_plan).await.unwrap(),
            &want,
        );
        // Once it has settled (the next pass, an hour on), the minute rows
        // behind it go, to the millisecond; hours and days stay. The
        // horizon never moves back: deleted minutes cannot be read again.
        let deleted = rollup::advance_minute_horizon(&store, t0, now + settled)
            .await
            .unwrap();
        assert_eq!(deleted, before_yesterday as u64);
        assert_eq!(count(&store, &minutes(i64::MIN, day_start(1))).await, 0);
        assert!(count(&store, &minutes(day_start(1), day_start(0))).await > 0);
        assert_eq!(count(&store, coarser).await, hours_and_days);
        assert_eq!(horizon(&store).await.kept_from_ms, day_start(1));
        // A move forward settles in turn: nothing more goes until it has.
        let later = now + settled + 1;
        let kept = count(&store, &minutes(day_start(1), day_start(0))).await;
        assert_eq!(rollup::advance_minute_horizon(&store, day_start(0), later).await.unwrap(), 0);
        let moved = horizon(&store).await;
        assert_eq!(moved.kept_from_ms, day_start(0));
        assert_eq!(moved.unread_before(later), day_start(1));
        assert_eq!(moved.unread_before(later + settled), day_start(0));
        assert_eq!(count(&store, &minutes(day_start(1), day_start(0))).await, kept);
        // Moved again before it settled: the horizon from before the
        // first move is kept, for plans made before either.
        assert_eq!(
            rollup::advance_minute_horizon(&store, day_start(0) + DAY, later + 1).await.unwrap(),
            0
        );
        assert_eq!(horizon(&store).await.unread_before(later + 1), day_start(1));
        // Back to yesterday's horizon for the rest of the test (as if
        // those moves had not happened).
        sqlx::query(
            "UPDATE log_rollup_levels SET kept_from_ms = $1, earlier_from_ms = 0, moved_at_ms = $2",
        )
        .bind(day_start(1))
        .bind(now)
        .execute(store.pool())
        .await
        .unwrap();

        // Late records (a spool shipped after an outage) from before the
        // horizon add to their hours and days, and write no minute row
        // behind it once it has settled; from after it, minute rows too.
        let settled_horizon = |store: &Store| {
            let store = store.clone();
            async move {
                // As the horizon would be an hour after it moved.
                sqlx::query("UPDATE log_rollup_levels SET moved_at_ms = moved_at_ms - $1")
                    .bind(settled)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
        };
        settled_horizon(&store).await;
        let late: Vec<_> = records(&mut rng, 40, t0, DAY)
            .into_iter()
            .chain(records(&mut rng, 20, day_start(1), HOUR))
            .collect();
        assert_eq!(store_batch(&store, batch(late)).await.unwrap().stored.len(), 60);
        let recent_minutes = count(&store, &minutes(day_start(1), day_start(0))).await;
        fold(&store).await;
        assert_eq!(count(&store, &minutes(i64::MIN, day_start(1))).await, 0);
        assert!(count(&store, &minutes(day_start(1), day_start(0))).await > recent_minutes);

        // Stats still equal a scan of the raw rows for random filters,
        // ranges, groupings and series.
        let mut sources = std::collections::BTreeSet::new();
        for i in 0..80 {
            let req = random_request(&mut rng, t0 - HOUR, t1 + HOUR);
            let got = stats::stats(&store, req.clone()).await.unwrap();
            let want = scan(&store, &req).await;
            if got.source == "raw" {
                assert_eq!(got, want, "{i}: {req:?}");
            } else {
                assert_same(&format!("query {i} ({req:?}, {})", got.source), &got, &want);
            }
            sources.insert(got.source);
        }
        assert!(sources.iter().any(|s| s.starts_with("rollup:")), "{sources:?}");
        // A range that starts before the horizon, off the hour: that
        // hour's part from the raw rows, then hours, days, and minutes at
        // the other end.
        let got = stats::stats(&store, across.clone()).await.unwrap();
        assert_eq!(got.source, "rollup:day+hour+minute+raw@model");
        let Plan::Rollups { raw, .. } = stats::plan(
            &store,
            &Filter::parse(across.filter.as_ref().unwrap()).unwrap(),
            Some("model"),
            0,
        )
        .await
        .unwrap() else {
            panic!("not from the rollups")
        };
        assert_eq!(raw[0], (t0 + 90 * MINUTE + 17, t0 + 2 * HOUR));
        assert_same("across the horizon", &got, &scan(&store, &across).await);
        // A series of minutes before the horizon: the raw rows; after it,
        // the minute rows.
        let early = request(t0 + HOUR, t0 + 2 * HOUR, "", 60);
        let got = stats::stats(&store, early.clone()).await.unwrap();
        assert_eq!(got.source, "raw");
        assert_eq!(got, scan(&store, &early).await);
        let recent = request(day_start(1) + HOUR, day_start(1) + 2 * HOUR, "", 60);
        let got = stats::stats(&store, recent.clone()).await.unwrap();
        assert_eq!(got.source, "rollup:minute@total");
        assert_same("minutes after the horizon", &got, &scan(&store, &recent).await);
    }
}
