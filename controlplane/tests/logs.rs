//! Request logs end to end, in process: the real control plane
//! (`llmgw_controlplane::start`) on 127.0.0.1:0, a tonic `LogsClient` with
//! the data-plane token shipping batches, and the admin RPCs reading them
//! back. Every test runs against a fresh SQLite file and a fresh PostgreSQL
//! database (see `common`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use llmgw_controlplane::logs::query::{list_statement, BLOCKS_AT, DETAILS_OF};
use llmgw_controlplane::logs::retention;
use llmgw_controlplane::logs::sketch::RELATIVE_ERROR;
use llmgw_controlplane::logs::sql::{Param, Statement};
use llmgw_controlplane::logs::stats::{stats_statement, stats_statement_pg};
use llmgw_controlplane::logs::stored_id;
use llmgw_controlplane::Running;
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::admin_client::AdminClient;
use llmgw_proto::v1::logs_client::LogsClient;
use sqlx::{Connection, Row};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::Code;

const ADMIN_TOKEN: &str = "admin-token-for-log-tests";
const DP_TOKEN: &str = "dataplane-token-for-log-tests";
const WAIT: Duration = Duration::from_secs(15);
/// Attempts stored: rows of `request_attempts` and attempts kept in their
/// record's row (`attempt_latency_ms`, migration 0028).
const STORED_ATTEMPTS: &str = "SELECT (SELECT COUNT(*) FROM request_attempts) + \
     (SELECT COUNT(*) FROM request_logs WHERE attempt_latency_ms IS NOT NULL)";

// ---------------------------------------------------------------------------
// harness
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    fn new(token: &str) -> Self {
        Bearer(format!("Bearer {token}").parse().unwrap())
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Logs = LogsClient<InterceptedService<Channel, Bearer>>;
type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// A running control plane on a test database.
struct Cp {
    running: Running,
    channel: Channel,
}

async fn start_cp(db: &Db, data_dir: &Path, retention_days: u32) -> Cp {
    let days = retention_days.to_string();
    start_cp_with(db, data_dir, &["--log-retention-days", &days]).await
}

/// A control plane that keeps logs for ever and bodies for `body_days`.
async fn start_cp_keeping_bodies(db: &Db, data_dir: &Path, body_days: u32) -> Cp {
    let days = body_days.to_string();
    let args = ["--log-retention-days", "0", "--body-retention-days", &days];
    start_cp_with(db, data_dir, &args).await
}

async fn start_cp_with(db: &Db, data_dir: &Path, args: &[&str]) -> Cp {
    let (running, channel) = start_control_plane(db, data_dir, ADMIN_TOKEN, DP_TOKEN, args).await;
    Cp { running, channel }
}

impl Cp {
    fn logs(&self) -> Logs {
        self.logs_with(DP_TOKEN)
    }

    fn logs_with(&self, token: &str) -> Logs {
        LogsClient::with_interceptor(self.channel.clone(), Bearer::new(token))
    }

    fn admin(&self) -> Admin {
        AdminClient::with_interceptor(self.channel.clone(), Bearer::new(ADMIN_TOKEN))
    }

    async fn shutdown(self) {
        tokio::time::timeout(WAIT, self.running.shutdown())
            .await
            .expect("shutdown hung")
            .unwrap();
    }
}

/// Ships batches on one stream and returns the acks, in order.
async fn ship(client: &mut Logs, batches: Vec<pb::LogBatch>) -> Vec<pb::LogAck> {
    let n = batches.len();
    let mut acks = client
        .ship(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(ack) = tokio::time::timeout(WAIT, acks.message())
        .await
        .expect("no ack")
        .unwrap()
    {
        out.push(ack);
    }
    assert_eq!(out.len(), n, "one ack per batch");
    out
}

fn batch(seq: u64, records: Vec<pb::RequestLog>) -> pb::LogBatch {
    pb::LogBatch {
        node_id: "node-1".into(),
        last_sequence: seq,
        records,
    }
}

fn id(n: u32) -> String {
    format!("0190a2b4-0000-7000-8000-{n:012x}")
}

fn now_ms() -> i64 {
    llmgw_controlplane::store::now_ms()
}

/// An hour ago, but within today (UTC), from one reading of the clock. The
/// old migrations made only today's day partition, and in the first hour
/// of a day an hour ago has none.
fn an_hour_ago_today() -> i64 {
    let now = now_ms();
    (now - 3_600_000).max(now / 86_400_000 * 86_400_000)
}

/// Record `n`, retried once: a first attempt on another provider failed
/// with a 503, so both attempts go to `request_attempts`.
fn retried(n: u32, t: i64) -> pb::RequestLog {
    let mut r = rec(n, t);
    r.retries = 1;
    r.attempts.insert(
        0,
        pb::Attempt {
            provider: "p-y".into(),
            upstream_model: "up-b".into(),
            status: 503,
            error: "overloaded".into(),
            latency_ms: 40,
            start_offset_ms: 1,
        },
    );
    r
}

/// A plausible record number `n` at time `t`.
fn rec(n: u32, t: i64) -> pb::RequestLog {
    pb::RequestLog {
        id: id(n),
        sequence: u64::from(n),
        time_ms: t,
        key: "k1".into(),
        client_ip: "10.0.0.1".into(),
        user_agent: "test/1".into(),
        protocol: "openai".into(),
        path: "/v1/chat/completions".into(),
        model: "m-a".into(),
        provider: "p-x".into(),
        upstream_model: "up-a".into(),
        status: 200,
        latency_ms: 100,
        ttfb_ms: 10,
        usage_source: "reported".into(),
        snapshot_version: 7,
        attempts: vec![pb::Attempt {
            provider: "p-x".into(),
            upstream_model: "up-a".into(),
            status: 200,
            error: String::new(),
            latency_ms: 90,
            start_offset_ms: 2,
        }],
        ..Default::default()
    }
}

/// The known data set: ten records, one second apart after `t0`.
///
/// | n | model | provider | key | status | latency | ttfb | in | out | cost | stream | failed by |
/// |---|-------|----------|-----|--------|---------|------|----|-----|------|--------|-----------|
/// | 1 | m-a | p-x | k1 | 200 | 100 | 10 | 10 | 20 | 0.01 | no | |
/// | 2 | m-a | p-y | k1 | 200 | 200 | 20 | 100 | 200 | 0.02 | yes | |
/// | 3 | m-b | p-x | k2 | 500 | 300 | 30 | 5 | 0 | 0 | no | status, error |
/// | 4 | m-b | p-y | k2 | 429 | 400 | 40 | 5 | 0 | 0 | no | status |
/// | 5 | m-a | p-x | k3 | 200 | 500 | 50 | 1000 | 1000 | 0.5 | yes | |
/// | 6 | m-c | p-z | k1 | 200 | 600 | 60 | 50 | 50 | 0.05 | yes | cancelled |
/// | 7 | m-a | p-x | k1 | 503 | 700 | 70 | 0 | 0 | 0 | no | status |
/// | 8 | m-b | p-x | k3 | 200 | 800 | 80 | 30 | 30 | 0.03 | no | |
/// | 9 | m-c | p-y | k2 | 200 | 900 | 90 | 3 | 4 | 0.001 | yes | error |
/// | 10 | m-a | p-x | k1 | 200 | 1000 | 100 | 40 | 40 | 0.04 | no | |
fn data_set(t0: i64) -> Vec<pb::RequestLog> {
    // model, provider, key, status, input, output, cost, stream, cancelled, error
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        u32,
        u64,
        u64,
        f64,
        bool,
        bool,
        &'static str,
    );
    #[rustfmt::skip]
    let rows: [Row; 10] = [
        ("m-a", "p-x", "k1", 200, 10, 20, 0.01, false, false, ""),
        ("m-a", "p-y", "k1", 200, 100, 200, 0.02, true, false, ""),
        ("m-b", "p-x", "k2", 500, 5, 0, 0.0, false, false, "upstream said 500"),
        ("m-b", "p-y", "k2", 429, 5, 0, 0.0, false, false, ""),
        ("m-a", "p-x", "k3", 200, 1000, 1000, 0.5, true, false, ""),
        ("m-c", "p-z", "k1", 200, 50, 50, 0.05, true, true, ""),
        ("m-a", "p-x", "k1", 503, 0, 0, 0.0, false, false, ""),
        ("m-b", "p-x", "k3", 200, 30, 30, 0.03, false, false, ""),
        ("m-c", "p-y", "k2", 200, 3, 4, 0.001, true, false, "stream broke"),
        ("m-a", "p-x", "k1", 200, 40, 40, 0.04, false, false, ""),
    ];
    rows.iter()
        .enumerate()
        .map(
            |(
                i,
                &(model, provider, key, status, input, output, cost, stream, cancelled, error),
            )| {
                let n = u32::try_from(i).unwrap() + 1;
                let mut r = rec(n, t0 + i64::from(n) * 1000);
                r.model = model.into();
                r.provider = provider.into();
                r.key = key.into();
                r.status = status;
                r.latency_ms = u64::from(n) * 100;
                r.ttfb_ms = u64::from(n) * 10;
                r.input_tokens = input;
                r.output_tokens = output;
                r.cost = cost;
                r.stream = stream;
                r.cancelled = cancelled;
                r.error = error.into();
                r.attempts = (0..(n % 3))
                    .map(|a| pb::Attempt {
                        provider: format!("attempt-{a}"),
                        upstream_model: "up".into(),
                        status: if a + 1 == n % 3 { status } else { 502 },
                        error: if a + 1 == n % 3 {
                            String::new()
                        } else {
                            "bad gateway".into()
                        },
                        latency_ms: u64::from(a) + 1,
                        start_offset_ms: u64::from(a) * 10,
                    })
                    .collect();
                r
            },
        )
        .collect()
}

/// A time well in the past, on a 10-second boundary.
fn t0() -> i64 {
    (now_ms() - 3_600_000) / 10_000 * 10_000
}

async fn list(admin: &mut Admin, req: pb::ListLogsRequest) -> pb::ListLogsResponse {
    admin.list_logs(req).await.unwrap().into_inner()
}

fn owned(groups: &[(&str, u64)]) -> Vec<(String, u64)> {
    groups.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

/// Requests per group of every stored record, grouped by `group_by`, in
/// the groups' order.
async fn requests_by(admin: &mut Admin, group_by: &str) -> Vec<(String, u64)> {
    let r = admin
        .get_stats(pb::GetStatsRequest {
            filter: Some(Default::default()),
            group_by: group_by.into(),
            bucket_s: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut g: Vec<_> = r
        .groups
        .iter()
        .map(|g| (g.group.clone(), g.requests))
        .collect();
    g.sort();
    g
}

/// The record numbers (from `id(n)`) of a list with this filter.
async fn numbers(admin: &mut Admin, filter: pb::LogFilter) -> Vec<u32> {
    let r = list(
        admin,
        pb::ListLogsRequest {
            filter: Some(filter),
            ..Default::default()
        },
    )
    .await;
    assert!(r.next_page_token.is_empty());
    r.records.iter().map(|x| number(&x.id)).collect()
}

fn number(id: &str) -> u32 {
    u32::from_str_radix(&id[24..], 16).unwrap()
}

async fn count(cp: &Cp, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(cp.running.store().pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// How many records are stored with details (`request_log_details`: the
/// records of each block, and a row of one record's own), checking that
/// none is stored twice.
async fn details_stored(cp: &Cp) -> i64 {
    let store = cp.running.store();
    let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as("SELECT id, data FROM request_log_details")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (id, data) in rows {
        match store
            .details()
            .block_ids(store.pool(), &data)
            .await
            .unwrap()
        {
            Some(block) => ids.extend(block),
            None => ids.push(id),
        }
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a record's details are stored twice");
    i64::try_from(n).unwrap()
}

// ---------------------------------------------------------------------------
// ingest
// ---------------------------------------------------------------------------

both! {
    async fn ship_is_idempotent_acks_and_quarantines(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let mut admin = cp.admin();
        admin
            .create_api_key(pb::CreateApiKeyRequest {
                name: "k1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let t0 = t0();
        let records = data_set(t0);
        let first = vec![batch(5, records[..5].to_vec()), batch(10, records[5..].to_vec())];
        let acks = ship(&mut cp.logs(), first.clone()).await;
        assert_eq!(acks.iter().map(|a| a.acked_sequence).collect::<Vec<_>>(), [5, 10]);
        assert!(acks.iter().all(|a| a.quarantined_ids.is_empty()));
        // Stored by the time the ack arrives.
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 10);
        let attempts = count(&cp, STORED_ATTEMPTS).await;
        let want_attempts: usize = records.iter().map(|r| r.attempts.len()).sum();
        assert_eq!(attempts, i64::try_from(want_attempts).unwrap());

        // The same batches again (a data plane resending after a lost ack),
        // on a new stream: acked again, nothing doubled.
        let acks = ship(&mut cp.logs(), first).await;
        assert_eq!(acks.iter().map(|a| a.acked_sequence).collect::<Vec<_>>(), [5, 10]);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 10);
        assert_eq!(count(&cp, STORED_ATTEMPTS).await, attempts);
        // No key stops a second details row: ingest writes none for a
        // record it stored before.
        assert_eq!(details_stored(&cp).await, 10);

        // A batch of stored and new records: its plain insert fails on the
        // stored ones, and the retry stores the new one, with both its
        // attempts (in `request_attempts`) and its rollup delta, and
        // doubles nothing. Rollups and deltas are read in one statement,
        // so compaction folding in between changes nothing.
        let counted = format!(
            "SELECT CAST((SELECT COALESCE(SUM(requests), 0) FROM log_rollups \
             WHERE cube = {total} AND bucket_s = 60) \
             + (SELECT COALESCE(SUM(requests), 0) FROM log_rollup_deltas WHERE cube = {total}) \
             AS BIGINT)",
            total = llmgw_controlplane::logs::rollup::CUBES[0].id
        );
        assert_eq!(count(&cp, &counted).await, 10);
        let mut fresh = retried(150, t0);
        fresh.response_body = "the new record's answer".into();
        let acks = ship(
            &mut cp.logs(),
            vec![batch(10, vec![records[9].clone(), fresh.clone(), records[0].clone()])],
        )
        .await;
        assert_eq!(acks[0].acked_sequence, 10);
        assert!(acks[0].quarantined_ids.is_empty());
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 11);
        let attempts = attempts + 2;
        assert_eq!(count(&cp, STORED_ATTEMPTS).await, attempts);
        assert_eq!(count(&cp, &counted).await, 11);
        assert_eq!(details_stored(&cp).await, 11);
        // Its block was compressed again for it alone, at the planned time.
        let got = cp.admin().get_log(pb::GetLogRequest { id: fresh.id.clone() }).await.unwrap().into_inner();
        assert_eq!(got.response_body, fresh.response_body);

        // A repeated id inside one batch is stored once; an empty batch acks.
        let mut twice = rec(100, t0);
        twice.attempts.clear();
        let acks = ship(
            &mut cp.logs(),
            vec![batch(11, vec![twice.clone(), twice]), batch(11, vec![])],
        )
        .await;
        assert_eq!(acks[0].acked_sequence, 11);
        assert_eq!(acks[1].acked_sequence, 11);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 12);
        assert_eq!(details_stored(&cp).await, 12);

        // Bad records are quarantined and the batch still acks.
        let good = rec(200, t0);
        let mut no_id = rec(0, t0);
        no_id.id = String::new();
        let mut not_uuid = rec(0, t0);
        not_uuid.id = "req-42".into();
        let mut absurd = rec(201, t0);
        absurd.cost = f64::INFINITY;
        let mut ancient = rec(202, 1_000);
        ancient.model = "m\0with-nul".into();
        // Its reason quotes the id, NUL and all, which PostgreSQL's text
        // cannot hold.
        let mut nul_id = rec(0, t0);
        nul_id.id = "bad\0id".into();
        let acks = ship(
            &mut cp.logs(),
            vec![batch(12, vec![no_id, good.clone(), not_uuid, absurd, ancient, nul_id])],
        )
        .await;
        assert_eq!(acks[0].acked_sequence, 12);
        let mut q = acks[0].quarantined_ids.clone();
        q.sort();
        let mut want =
            vec![String::new(), "req-42".to_string(), id(201), id(202), "bad\0id".to_string()];
        want.sort();
        assert_eq!(q, want);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 13);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM log_quarantine").await, 5);
        let rows = sqlx::query("SELECT id, node_id, reason, record FROM log_quarantine")
            .fetch_all(cp.running.store().pool())
            .await
            .unwrap();
        let by_id: HashMap<String, (String, String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("id"),
                    (r.get("node_id"), r.get("reason"), r.get("record")),
                )
            })
            .collect();
        let (node, reason, record) = &by_id["req-42"];
        assert_eq!(node, "node-1");
        assert!(reason.contains("UUID"), "{reason}");
        let json: serde_json::Value = serde_json::from_str(record).unwrap();
        assert_eq!(json["id"], "req-42");
        assert_eq!(json["model"], "m-a");
        assert!(by_id[&id(201)].1.contains("cost"), "{}", by_id[&id(201)].1);
        assert!(by_id[&id(202)].1.contains("time_ms"), "{}", by_id[&id(202)].1);
        // The NUL travels as JSON's \u0000 escape.
        assert!(by_id[&id(202)].2.contains("\\u0000"));
        // An id with a NUL, and the reason quoting it, are stored with
        // U+FFFD in its place.
        let (_, reason, _) = &by_id["bad\u{FFFD}id"];
        assert!(reason.contains("'bad\u{FFFD}id' is not a UUID"), "{reason}");

        // last_used_at of k1 is the newest k1 record (number 10).
        let k1 = admin
            .get_api_key(pb::GetApiKeyRequest { name: "k1".into() })
            .await
            .unwrap()
            .into_inner();
        let newest = records[9].time_ms.max(good.time_ms);
        assert_eq!(
            k1.last_used_at,
            llmgw_controlplane::store::rfc3339(Some(newest))
        );

        // One ack per batch on a live stream, sent as each batch commits.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut acks = cp
            .logs()
            .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for seq in [20u64, 21] {
            tx.send(batch(seq, vec![rec(u32::try_from(seq).unwrap() + 1000, t0)]))
                .await
                .unwrap();
            let ack = tokio::time::timeout(WAIT, acks.message()).await.unwrap().unwrap().unwrap();
            assert_eq!(ack.acked_sequence, seq);
        }
        drop(tx);
        assert!(tokio::time::timeout(WAIT, acks.message()).await.unwrap().unwrap().is_none());
        cp.shutdown().await;
    }
}

both! {
    async fn a_lone_attempt_that_repeats_its_record_is_kept_in_the_records_row(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        // 1: one attempt like the record (kept in its row); 2: one that
        // failed differently (its error); 3: a retry, two attempts; 4:
        // none; 5: one that went to another provider.
        let inline = rec(1, t0);
        let mut own_error = rec(2, t0);
        own_error.attempts[0].error = "connection reset".into();
        let mut retried = retried(3, t0);
        retried.attempts[1].start_offset_ms = 45;
        let mut none = rec(4, t0);
        none.attempts.clear();
        let mut elsewhere = rec(5, t0);
        elsewhere.attempts[0].provider = "p-z".into();
        let sent = vec![inline, own_error, retried, none, elsewhere];
        ship(&mut cp.logs(), vec![batch(5, sent.clone())]).await;
        // Ids are stored as their 16 bytes (`stored_id`).
        let in_table: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT request_id, COUNT(*) FROM request_attempts GROUP BY request_id ORDER BY request_id",
        )
        .fetch_all(cp.running.store().pool())
        .await
        .unwrap();
        assert_eq!(
            in_table,
            [(stored_id(&id(2)), 1), (stored_id(&id(3)), 2), (stored_id(&id(5)), 1)]
        );
        let in_row: Vec<(Vec<u8>, i64, i64)> = sqlx::query_as(
            "SELECT id, attempt_latency_ms, attempt_offset_ms FROM request_logs \
             WHERE attempt_latency_ms IS NOT NULL",
        )
        .fetch_all(cp.running.store().pool())
        .await
        .unwrap();
        assert_eq!(in_row, [(stored_id(&id(1)), 90, 2)]);
        // Each reads back as it was sent, in GetLog and in lists.
        let mut admin = cp.admin();
        let listed = list(&mut admin, pb::ListLogsRequest { limit: 10, ..Default::default() })
            .await
            .records;
        assert_eq!(listed.len(), 5);
        for want in &sent {
            let got = admin
                .get_log(pb::GetLogRequest { id: want.id.clone() })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got.attempts, want.attempts, "{}", want.id);
            let got = listed.iter().find(|r| r.id == want.id).unwrap();
            assert_eq!(got.attempts, want.attempts, "{} listed", want.id);
        }
        cp.shutdown().await;
    }
}

both! {
    async fn texts_with_tabs_newlines_and_backslashes_are_stored_as_sent(db: Db) {
        // PostgreSQL stores records and rollup deltas with COPY's text
        // format, where these characters are escaped (`logs/copy.rs`).
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        let odd = ["\\N", "a\tb", "line\nnext\r\n", "back\\slash\\", "é ∑ 🙂", "\\x00", ""];
        let mut sent = Vec::new();
        for (i, text) in odd.iter().enumerate() {
            let n = u32::try_from(i).unwrap() + 1;
            let mut r = rec(n, t0 + i64::from(n));
            r.model = format!("m{text}");
            r.user_agent = (*text).to_string();
            r.error = format!("{text}!");
            r.status = 500;
            r.user = (*text).to_string();
            r.stop_reason = (*text).to_string();
            r.request_body = format!("{{\"x\":\"{}\"}}", text.escape_default());
            sent.push(r);
        }
        ship(&mut cp.logs(), vec![batch(1, sent.clone())]).await;
        let mut admin = cp.admin();
        for want in &sent {
            let got = admin
                .get_log(pb::GetLogRequest { id: want.id.clone() })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                (&got.model, &got.user_agent, &got.error, &got.user, &got.stop_reason),
                (&want.model, &want.user_agent, &want.error, &want.user, &want.stop_reason)
            );
            assert_eq!(got.request_body, want.request_body);
        }
        // The rollups group by the same names, once the deltas are read
        // back and folded in.
        llmgw_controlplane::logs::deltas::compact(cp.running.store()).await.unwrap();
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM log_rollup_deltas").await, 0);
        let mut want: Vec<(String, u64)> = sent.iter().map(|r| (r.model.clone(), 1)).collect();
        want.sort();
        assert_eq!(requests_by(&mut admin, "model").await, want);
        cp.shutdown().await;
    }
}

both! {
    async fn keys_last_use_moves_forward_for_many_keys_and_concurrent_batches(db: Db) {
        // 260 keys: statements of 256 and 4 (`account::touch_keys`).
        const KEYS: u32 = 260;
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let mut admin = cp.admin();
        let name = |k: u32| format!("key-{k:03}");
        for k in 0..KEYS {
            admin
                .create_api_key(pb::CreateApiKeyRequest { name: name(k), ..Default::default() })
                .await
                .unwrap();
        }
        let t0 = t0();
        let mut n = 0;
        let mut records = |node: &str, keys: &[u32], t: &dyn Fn(u32) -> i64| {
            let mut out: Vec<pb::RequestLog> = keys
                .iter()
                .map(|&k| {
                    n += 1;
                    let mut r = rec(n, t(k));
                    r.key = name(k);
                    r.node_id = node.into();
                    r
                })
                .collect();
            // Records in no particular order, and one of a key that does
            // not exist (deleted since, say).
            out.reverse();
            n += 1;
            let mut gone = rec(n, t0);
            gone.key = "no-such-key".into();
            gone.node_id = node.into();
            out.push(gone);
            out
        };
        let all: Vec<u32> = (0..KEYS).collect();
        let first = records("node-1", &all, &|k| t0 + i64::from(k));
        ship(&mut cp.logs(), vec![batch(1, first)]).await;
        let last_used = || async {
            let rows: Vec<(String, Option<i64>)> =
                sqlx::query_as("SELECT name, last_used_at FROM api_keys ORDER BY name")
                    .fetch_all(cp.running.store().pool())
                    .await
                    .unwrap();
            rows
        };
        let want: Vec<(String, Option<i64>)> =
            (0..KEYS).map(|k| (name(k), Some(t0 + i64::from(k)))).collect();
        assert_eq!(last_used().await, want);

        // Two data planes at once, over the same keys: older records (which
        // move nothing) and newer ones, in a few rounds. Every batch
        // commits: the rows are locked in one order.
        for round in 0..4u32 {
            let base = t0 + 10_000 * i64::from(round + 1);
            let even: Vec<u32> = all.iter().copied().filter(|k| k % 2 == 0).collect();
            let a = records("node-a", &all, &|k| {
                if k % 2 == 0 { t0 - 1 } else { base + i64::from(k) }
            });
            let b = records("node-b", &even, &|k| base + 5_000 + i64::from(k));
            let seq = u64::from(round) + 1;
            let (mut to_a, mut to_b) = (cp.logs(), cp.logs());
            let (acks_a, acks_b) = tokio::join!(
                ship(&mut to_a, vec![pb::LogBatch { node_id: "node-a".into(), last_sequence: seq, records: a }]),
                ship(&mut to_b, vec![pb::LogBatch { node_id: "node-b".into(), last_sequence: seq, records: b }])
            );
            assert_eq!((acks_a[0].acked_sequence, acks_b[0].acked_sequence), (seq, seq));
            let want: Vec<(String, Option<i64>)> = (0..KEYS)
                .map(|k| {
                    let t = if k % 2 == 0 { base + 5_000 } else { base };
                    (name(k), Some(t + i64::from(k)))
                })
                .collect();
            assert_eq!(last_used().await, want, "round {round}");
        }
        cp.shutdown().await;
    }
}

both! {
    async fn values_at_the_columns_bounds_are_stored_and_beyond_them_refused(db: Db) {
        // PostgreSQL keeps durations and counts in 32-bit columns and the
        // status and flags in 16 (migration 0030): the largest values
        // ingest accepts read back unchanged, one more is quarantined.
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        let day = 24 * 3600 * 1000;
        let count_max = u64::from(u32::MAX >> 1);
        let mut big = rec(1, t0);
        big.status = 999;
        big.latency_ms = 24 * day;
        big.ttfb_ms = 24 * day;
        big.input_tokens = count_max;
        big.output_tokens = count_max;
        big.cache_read_tokens = count_max;
        big.cache_creation_tokens = count_max;
        big.reasoning_tokens = count_max;
        big.audio_milliseconds = count_max;
        big.characters = count_max;
        big.retries = u32::MAX >> 1;
        big.images = u32::MAX >> 1;
        big.stream = true;
        big.cancelled = true;
        big.translated = true;
        big.request_body_truncated = true;
        big.response_body_truncated = true;
        big.upstream_request_body_truncated = true;
        // Like its record, so it is kept in the record's row, in its
        // 32-bit columns.
        big.attempts[0].status = 999;
        big.attempts[0].latency_ms = 24 * day;
        big.attempts[0].start_offset_ms = 24 * day;
        big.snapshot_version = i64::MAX as u64;
        big.sequence = i64::MAX as u64;
        let mut over = rec(2, t0);
        over.latency_ms = 24 * day + 1;
        let mut many = rec(3, t0);
        many.images = (u32::MAX >> 1) + 1;
        let acks = ship(&mut cp.logs(), vec![batch(3, vec![big.clone(), over, many])]).await;
        let mut quarantined = acks[0].quarantined_ids.clone();
        quarantined.sort();
        assert_eq!(quarantined, [id(2), id(3)]);
        let mut admin = cp.admin();
        let got = admin
            .get_log(pb::GetLogRequest { id: id(1) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (got.status, got.latency_ms, got.ttfb_ms, got.retries, got.images),
            (999, 24 * day, 24 * day, u32::MAX >> 1, u32::MAX >> 1)
        );
        assert_eq!(
            [
                got.input_tokens,
                got.output_tokens,
                got.cache_read_tokens,
                got.cache_creation_tokens,
                got.reasoning_tokens,
                got.audio_milliseconds,
                got.characters
            ],
            [count_max; 7]
        );
        assert!(
            got.stream
                && got.cancelled
                && got.translated
                && got.request_body_truncated
                && got.response_body_truncated
                && got.upstream_request_body_truncated
        );
        assert_eq!(got.attempts, big.attempts);
        assert_eq!((got.sequence, got.snapshot_version), (big.sequence, big.snapshot_version));
        // Lists read the same row.
        let listed = list(&mut admin, pb::ListLogsRequest { limit: 10, ..Default::default() })
            .await
            .records;
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].latency_ms, listed[0].characters), (24 * day, count_max));
        assert_eq!(listed[0].attempts, big.attempts);
        let kept_inline = count(
            &cp,
            "SELECT COUNT(*) FROM request_logs WHERE attempt_latency_ms IS NOT NULL",
        )
        .await;
        assert_eq!(kept_inline, 1);
        // Input plus output tokens go past 32 bits: ordered and filtered
        // by, they are summed in 64.
        let mut small = rec(4, t0 + 1);
        small.input_tokens = 5;
        ship(&mut cp.logs(), vec![batch(4, vec![small])]).await;
        let by_tokens = list(
            &mut admin,
            pb::ListLogsRequest {
                limit: 10,
                order_by: "tokens".into(),
                filter: Some(pb::LogFilter { min_tokens: 5, ..Default::default() }),
                ..Default::default()
            },
        )
        .await
        .records;
        let ids: Vec<&str> = by_tokens.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [id(1), id(4)]);
        cp.shutdown().await;
    }
}

both! {
    async fn default_values_are_stored_as_null_on_postgres_and_read_back(db: Db) {
        // PostgreSQL keeps a 0, '', [] and the floating-point cost as NULL
        // (migration 0037); SQLite stores them as they are. Either way
        // lists and `logs get` give back what was sent, and sorting by
        // cost pages through rows stored before exact costs too.
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        let plain = rec(1, t0);
        let mut full = rec(2, t0 + 1);
        full.cost = 0.25;
        full.cost_nanos = 250_000_000;
        full.cancelled = true;
        full.retries = 2;
        full.cache_read_tokens = 3;
        full.cache_creation_tokens = 4;
        full.reasoning_tokens = 5;
        full.audio_milliseconds = 6;
        full.characters = 7;
        full.images = 8;
        full.request_body_truncated = true;
        full.response_body_truncated = true;
        full.upstream_request_body_truncated = true;
        full.translated = true;
        full.upstream_protocol = "anthropic".into();
        full.error = "upstream timed out".into();
        full.dropped_fields = vec!["top_k".into()];
        full.count_source = "tiktoken".into();
        full.stop_reason = "length".into();
        full.limited_by = "rpm".into();
        full.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
        full.origin = "playground".into();
        full.replay_of = id(9);
        full.image_size = "1024x1024".into();
        full.image_quality = "hd".into();
        full.audio_source = "estimated".into();
        full.attempts[0].error = full.error.clone();
        let mut cheap = rec(3, t0 + 2);
        cheap.cost_nanos = 1_000;
        cheap.cost = 1e-6;
        let acks = ship(&mut cp.logs(), vec![batch(3, vec![plain.clone(), full.clone(), cheap])]).await;
        assert!(acks[0].quarantined_ids.is_empty(), "{:?}", acks[0].quarantined_ids);

        const SPARSE: &str = "cost, cancelled, retries, cache_read_tokens, \
            cache_creation_tokens, reasoning_tokens, audio_milliseconds, characters, images, \
            request_body_truncated, response_body_truncated, upstream_request_body_truncated, \
            translated, error, dropped_fields, count_source, stop_reason, limited_by, trace_id, \
            origin, replay_of, image_size, image_quality, audio_source";
        let nulls = |n: u32| {
            let sql = match db.kind {
                Kind::Postgres => format!("SELECT num_nulls({SPARSE}) FROM request_logs WHERE id = $1"),
                Kind::Sqlite => format!(
                    "SELECT {} FROM request_logs WHERE id = $1",
                    SPARSE
                        .split(',')
                        .map(|c| format!("({} IS NULL)", c.trim()))
                        .collect::<Vec<_>>()
                        .join(" + ")
                ),
            };
            let pool = cp.running.store().pool().clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql.as_str())
                    .bind(stored_id(&id(n)))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        let columns = i64::try_from(SPARSE.split(',').count()).unwrap();
        match db.kind {
            // The floating-point cost is never kept there.
            Kind::Postgres => assert_eq!((nulls(1).await, nulls(2).await), (columns, 1)),
            Kind::Sqlite => assert_eq!((nulls(1).await, nulls(2).await), (0, 0)),
        }

        let mut admin = cp.admin();
        for sent in [&plain, &full] {
            let got = admin
                .get_log(pb::GetLogRequest { id: sent.id.clone() })
                .await
                .unwrap()
                .into_inner();
            let mut want = sent.clone();
            want.node_id = "node-1".into();
            want.time = llmgw_controlplane::logs::format_time(want.time_ms);
            assert_eq!(got, want);
        }

        // A row from before exact costs: its floating-point cost alone.
        sqlx::query("UPDATE request_logs SET cost = 0.5, cost_nanos = NULL WHERE id = $1")
            .bind(stored_id(&id(1)))
            .execute(cp.running.store().pool())
            .await
            .unwrap();
        let mut order = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(
                &mut admin,
                pb::ListLogsRequest {
                    order_by: "cost".into(),
                    limit: 1,
                    page_token: token,
                    ..Default::default()
                },
            )
            .await;
            order.extend(page.records.iter().map(|r| (number(&r.id), r.cost_nanos)));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(order, [(1, 500_000_000), (2, 250_000_000), (3, 1_000)]);
    }
}

both! {
    async fn a_record_the_database_rejects_is_quarantined_alone(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        // Make the database itself refuse one record that passes validation.
        let pool = cp.running.store().pool();
        match db.kind {
            Kind::Sqlite => {
                sqlx::query(
                    "CREATE TRIGGER poison BEFORE INSERT ON request_logs \
                     WHEN NEW.model = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
                )
                .execute(pool)
                .await
                .unwrap();
            }
            Kind::Postgres => {
                sqlx::query(
                    "ALTER TABLE request_logs ADD CONSTRAINT poison CHECK (model <> 'poison')",
                )
                .execute(pool)
                .await
                .unwrap();
            }
        }
        let t0 = t0();
        let with_body = |n: u32| {
            let mut r = rec(n, t0 + i64::from(n));
            r.request_body = format!("{{\"n\":{n}}}");
            r
        };
        let mut poison = with_body(2);
        poison.model = "poison".into();
        let acks = ship(
            &mut cp.logs(),
            vec![batch(3, vec![with_body(1), poison, with_body(3)])],
        )
        .await;
        assert_eq!(acks[0].acked_sequence, 3);
        assert_eq!(acks[0].quarantined_ids, [id(2)]);
        let mut admin = cp.admin();
        assert_eq!(numbers(&mut admin, Default::default()).await, [3, 1]);
        // The others' attempts are stored, the rejected one's are not.
        assert_eq!(count(&cp, STORED_ATTEMPTS).await, 2);
        let reason: String = sqlx::query_scalar("SELECT reason FROM log_quarantine")
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(reason.contains("database rejected"), "{reason}");
        // Stored one by one after the refusal: each in a block of its own
        // at the planned block's time, and none for the rejected one.
        assert_eq!(details_stored(&cp).await, 2);
        for n in [1, 3] {
            let got = admin.get_log(pb::GetLogRequest { id: id(n) }).await.unwrap().into_inner();
            assert_eq!(got.request_body, with_body(n).request_body);
        }
        cp.shutdown().await;
    }
}

both! {
    async fn wrong_token_is_unauthenticated(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        for token in ["wrong", ADMIN_TOKEN] {
            let err = cp
                .logs_with(token)
                .ship(tokio_stream::iter(vec![batch(1, vec![rec(1, t0())])]))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        }
        let mut no_token = LogsClient::new(cp.channel.clone());
        let err = no_token
            .ship(tokio_stream::iter(vec![batch(1, vec![rec(1, t0())])]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 0);
        cp.shutdown().await;
    }
}

/// A request translated from Anthropic Messages to an OpenAI-compatible
/// upstream, with every field of protocol translation set.
fn translated_rec(n: u32, t: i64) -> pb::RequestLog {
    let mut r = rec(n, t);
    r.protocol = "anthropic".into();
    r.path = "/v1/messages".into();
    r.upstream_protocol = "openai-chat".into();
    r.translated = true;
    r.request_body =
        r#"{"model":"m-a","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#.into();
    r.request_body_truncated = false;
    r.upstream_request_body = format!(
        r#"{{"model":"up-a","max_tokens":64,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "hi ".repeat(3000)
    );
    r.upstream_request_body_truncated = true;
    r.response_body = r#"{"type":"message","content":[]}"#.into();
    r.dropped_fields = vec![
        "metadata.user_id".into(),
        "messages[0].content[1].cache_control".into(),
        "top_k".into(),
    ];
    r.input_tokens = 120;
    r.cache_read_tokens = 1000;
    r.cache_creation_tokens = 300;
    r.output_tokens = 80;
    r.reasoning_tokens = 50;
    r.usage_source = "reported".into();
    r.cost = 0.0042;
    // As the openai-chat upstream said it.
    r.stop_reason = "tool_calls".into();
    r
}

both! {
    async fn translation_fields_are_stored_and_read_back(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let mut admin = cp.admin();
        let mut followed = admin
            .follow_logs(pb::FollowLogsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let t0 = t0();
        let translated = translated_rec(1, t0);
        // Passed through: nothing of translation set.
        let mut passed = rec(2, t0 + 1);
        passed.protocol = "openai-chat".into();
        passed.upstream_protocol = "openai".into();
        passed.request_body = r#"{"model":"m-a","messages":[]}"#.into();
        passed.stop_reason = "length".into();
        // A count_tokens request answered by the data plane itself.
        let mut counted = rec(3, t0 + 2);
        counted.protocol = "gemini".into();
        counted.path = "/v1beta/models/m-a:countTokens".into();
        counted.count_source = "local".into();
        counted.usage_source = "estimated".into();
        counted.input_tokens = 17;
        counted.provider = "llmgw".into();
        counted.attempts.clear();
        // A NUL in a dropped field is stored as U+FFFD, like other text.
        let mut nul = translated_rec(4, t0 + 3);
        nul.dropped_fields = vec!["a\0b".into()];
        // Implausible values are quarantined, not stored.
        let mut many_dropped = translated_rec(5, t0 + 4);
        many_dropped.dropped_fields = (0..1001).map(|i| format!("f{i}")).collect();
        let mut absurd_reasoning = translated_rec(6, t0 + 5);
        absurd_reasoning.reasoning_tokens = u64::MAX;
        let mut long_protocol = translated_rec(7, t0 + 6);
        long_protocol.upstream_protocol = "p".repeat(2000);
        let mut long_stop = translated_rec(8, t0 + 7);
        long_stop.stop_reason = "s".repeat(2000);

        let acks = ship(
            &mut cp.logs(),
            vec![batch(
                7,
                vec![
                    translated.clone(),
                    passed.clone(),
                    counted.clone(),
                    nul,
                    many_dropped,
                    absurd_reasoning,
                    long_protocol,
                    long_stop,
                ],
            )],
        )
        .await;
        let mut quarantined = acks[0].quarantined_ids.clone();
        quarantined.sort();
        assert_eq!(quarantined, [id(5), id(6), id(7), id(8)]);
        let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM log_quarantine ORDER BY id")
            .fetch_all(cp.running.store().pool())
            .await
            .unwrap();
        assert!(reasons[0].contains("dropped_fields"), "{reasons:?}");
        assert!(reasons[1].contains("reasoning_tokens"), "{reasons:?}");
        assert!(reasons[2].contains("upstream_protocol"), "{reasons:?}");
        assert!(reasons[3].contains("stop_reason"), "{reasons:?}");

        // GetLog gives back every field as sent.
        for sent in [&translated, &passed, &counted] {
            let got = admin
                .get_log(pb::GetLogRequest { id: sent.id.clone() })
                .await
                .unwrap()
                .into_inner();
            let mut want = sent.clone();
            want.node_id = "node-1".into();
            want.time = llmgw_controlplane::logs::format_time(want.time_ms);
            // Sent with `cost` alone (as an older data plane does): kept
            // with its exact cost too, to the nearest nano-dollar.
            want.cost_nanos = (want.cost * 1e9).round() as i64;
            assert_eq!(got, want);
        }
        let got = admin
            .get_log(pb::GetLogRequest { id: id(4) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.dropped_fields, ["a\u{FFFD}b"]);

        // Stored as columns: the dropped fields a JSON array, flags 0/1.
        let row = sqlx::query(
            "SELECT upstream_protocol, translated, upstream_request_body_truncated, \
             dropped_fields, reasoning_tokens, cache_creation_tokens, \
             COALESCE(count_source, '') AS count_source, stop_reason \
             FROM request_logs WHERE id = $1",
        )
        .bind(stored_id(&id(1)))
        .fetch_one(cp.running.store().pool())
        .await
        .unwrap();
        assert_eq!(row.get::<String, _>("upstream_protocol"), "openai-chat");
        assert_eq!(row.get::<i64, _>("translated"), 1);
        assert_eq!(row.get::<i64, _>("upstream_request_body_truncated"), 1);
        assert_eq!(
            row.get::<String, _>("dropped_fields"),
            r#"["metadata.user_id","messages[0].content[1].cache_control","top_k"]"#
        );
        assert_eq!(row.get::<i64, _>("reasoning_tokens"), 50);
        assert_eq!(row.get::<i64, _>("cache_creation_tokens"), 300);
        assert_eq!(row.get::<String, _>("count_source"), "");
        assert_eq!(row.get::<String, _>("stop_reason"), "tool_calls");
        // PostgreSQL keeps none as NULL (migration 0037), SQLite as [].
        let passed_dropped: String =
            sqlx::query_scalar("SELECT COALESCE(dropped_fields, '[]') FROM request_logs WHERE id = $1")
                .bind(stored_id(&id(2)))
                .fetch_one(cp.running.store().pool())
                .await
                .unwrap();
        assert_eq!(passed_dropped, "[]");

        // Lists carry the new fields but no bodies, the upstream's included.
        let all = list(&mut admin, pb::ListLogsRequest::default()).await;
        assert_eq!(
            all.records.iter().map(|r| number(&r.id)).collect::<Vec<_>>(),
            [4, 3, 2, 1]
        );
        let listed = &all.records[3];
        let mut want = llmgw_controlplane::logs::strip_details(translated.clone());
        want.node_id = "node-1".into();
        want.time = llmgw_controlplane::logs::format_time(want.time_ms);
        want.cost_nanos = (want.cost * 1e9).round() as i64;
        assert_eq!(listed, &want);
        assert!(listed.upstream_request_body.is_empty());
        assert!(listed.upstream_request_body_truncated);
        assert_eq!(listed.dropped_fields.len(), 3);
        assert_eq!(all.records[1].count_source, "local");
        assert_eq!(all.records[2].upstream_protocol, "openai");
        assert_eq!(all.records[2].stop_reason, "length");
        let by_stop = list(
            &mut admin,
            pb::ListLogsRequest {
                filter: Some(pb::LogFilter {
                    stop_reason: "length".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            by_stop.records.iter().map(|r| number(&r.id)).collect::<Vec<_>>(),
            [2]
        );
        assert!(!all.records[2].translated);

        // So does FollowLogs.
        let first = tokio::time::timeout(WAIT, followed.message())
            .await
            .expect("no record followed")
            .unwrap()
            .unwrap();
        assert_eq!(first, want);
        cp.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// queries
// ---------------------------------------------------------------------------

both! {
    async fn list_filters_orders_and_pages(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        let mut records = data_set(t0);
        records[0].request_headers =
            std::collections::BTreeMap::from([("content-type".to_string(), "application/json".to_string())]);
        records[0].response_headers =
            std::collections::BTreeMap::from([("x-request-id".to_string(), "abc".to_string())]);
        records[0].request_body = r#"{"model":"m-a","messages":[]}"#.into();
        records[0].response_body = r#"{"choices":[]}"#.into();
        records[0].request_body_truncated = true;
        ship(&mut cp.logs(), vec![batch(10, records.clone())]).await;
        let mut admin = cp.admin();
        let f = pb::LogFilter::default;

        // Newest first by default, without headers and bodies.
        let all = list(&mut admin, pb::ListLogsRequest::default()).await;
        assert_eq!(
            all.records.iter().map(|r| number(&r.id)).collect::<Vec<_>>(),
            [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
        );
        let first = all.records.last().unwrap();
        assert!(first.request_headers.is_empty() && first.response_headers.is_empty());
        assert!(first.request_body.is_empty() && first.response_body.is_empty());
        assert!(first.request_body_truncated);
        assert_eq!(first.time, llmgw_controlplane::logs::format_time(t0 + 1000));
        assert!(first.time.ends_with(".000Z"), "{}", first.time);
        assert_eq!(first.node_id, "node-1");
        assert_eq!(first.snapshot_version, 7);
        assert_eq!(first.usage_source, "reported");
        // Attempts come in order.
        let two = &all.records[8];
        assert_eq!(number(&two.id), 2);
        assert_eq!(two.attempts, records[1].attempts);
        assert_eq!(two.attempts.len(), 2);
        assert_eq!(two.attempts[0].error, "bad gateway");

        // Each filter field.
        assert_eq!(numbers(&mut admin, pb::LogFilter { model: "m-a".into(), ..f() }).await, [10, 7, 5, 2, 1]);
        assert_eq!(numbers(&mut admin, pb::LogFilter { provider: "p-y".into(), ..f() }).await, [9, 4, 2]);
        assert_eq!(numbers(&mut admin, pb::LogFilter { key: "k2".into(), ..f() }).await, [9, 4, 3]);
        assert_eq!(numbers(&mut admin, pb::LogFilter { status_min: 500, status_max: 599, ..f() }).await, [7, 3]);
        assert_eq!(numbers(&mut admin, pb::LogFilter { status_min: 400, ..f() }).await, [7, 4, 3]);
        assert_eq!(numbers(&mut admin, pb::LogFilter { status_max: 299, ..f() }).await, [10, 9, 8, 6, 5, 2, 1]);
        assert_eq!(
            numbers(&mut admin, pb::LogFilter { since_ms: t0 + 3000, until_ms: t0 + 6000, ..f() }).await,
            [5, 4, 3]
        );
        assert_eq!(numbers(&mut admin, pb::LogFilter { since_ms: t0 + 9000, ..f() }).await, [10, 9]);
        assert_eq!(numbers(&mut admin, pb::LogFilter { until_ms: t0 + 2001, ..f() }).await, [2, 1]);
        assert_eq!(
            numbers(&mut admin, pb::LogFilter { min_latency_ms: 500, max_latency_ms: 800, ..f() }).await,
            [8, 7, 6, 5]
        );
        assert_eq!(numbers(&mut admin, pb::LogFilter { min_tokens: 100, ..f() }).await, [6, 5, 2]);
        assert_eq!(numbers(&mut admin, pb::LogFilter { max_tokens: 60, ..f() }).await, [9, 8, 7, 4, 3, 1]);
        assert_eq!(numbers(&mut admin, pb::LogFilter { stream: Some(true), ..f() }).await, [9, 6, 5, 2]);
        assert_eq!(
            numbers(&mut admin, pb::LogFilter { stream: Some(false), ..f() }).await,
            [10, 8, 7, 4, 3, 1]
        );
        assert_eq!(numbers(&mut admin, pb::LogFilter { errors_only: true, ..f() }).await, [9, 7, 6, 4, 3]);
        assert_eq!(
            numbers(&mut admin, pb::LogFilter { model: "m-a".into(), errors_only: true, ..f() }).await,
            [7]
        );
        assert!(numbers(&mut admin, pb::LogFilter { model: "nope".into(), ..f() }).await.is_empty());
        // Values are bound, never spliced into SQL.
        assert!(numbers(&mut admin, pb::LogFilter { model: "x' OR '1'='1".into(), ..f() }).await.is_empty());

        // Every order, both directions.
        let order = |by: &str, ascending: bool| pb::ListLogsRequest {
            order_by: by.into(),
            ascending,
            ..Default::default()
        };
        for (by, asc, want) in [
            ("time", true, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            ("latency", true, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            ("ttfb", false, vec![10, 9, 8, 7, 6, 5, 4, 3, 2, 1]),
            ("tokens", false, vec![5, 2, 6, 10, 8, 1, 9, 4, 3, 7]),
            ("cost", true, vec![3, 4, 7, 9, 1, 2, 8, 10, 6, 5]),
            ("status", false, vec![7, 3, 4, 10, 9, 8, 6, 5, 2, 1]),
        ] {
            let r = list(&mut admin, order(by, asc)).await;
            assert_eq!(r.records.iter().map(|x| number(&x.id)).collect::<Vec<_>>(), want, "{by}");
        }

        // Keyset pages: limit 3 by time, and limit 2 by cost (ties on a
        // page boundary), each page exactly the expected ids.
        for (req, want) in [
            (
                pb::ListLogsRequest { limit: 3, ..Default::default() },
                vec![vec![10, 9, 8], vec![7, 6, 5], vec![4, 3, 2], vec![1]],
            ),
            (
                pb::ListLogsRequest { limit: 2, order_by: "cost".into(), ascending: true, ..Default::default() },
                vec![vec![3, 4], vec![7, 9], vec![1, 2], vec![8, 10], vec![6, 5]],
            ),
            (
                pb::ListLogsRequest {
                    limit: 2,
                    order_by: "tokens".into(),
                    filter: Some(pb::LogFilter { max_tokens: 60, ..f() }),
                    ..Default::default()
                },
                vec![vec![8, 1], vec![9, 4], vec![3, 7]],
            ),
        ] {
            let mut pages = Vec::new();
            let mut req = req;
            loop {
                let r = list(&mut admin, req.clone()).await;
                pages.push(r.records.iter().map(|x| number(&x.id)).collect::<Vec<_>>());
                if r.next_page_token.is_empty() {
                    break;
                }
                assert!(pages.len() < 20, "pagination does not end");
                req.page_token = r.next_page_token;
            }
            assert_eq!(pages, want, "{req:?}");
        }
        // Limits: 0 means 50, at most 1000; a foreign token is refused.
        assert_eq!(list(&mut admin, pb::ListLogsRequest { limit: 5000, ..Default::default() }).await.records.len(), 10);
        let page = list(&mut admin, pb::ListLogsRequest { limit: 1, ..Default::default() }).await;
        let err = admin
            .list_logs(pb::ListLogsRequest { order_by: "cost".into(), page_token: page.next_page_token, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = admin
            .list_logs(pb::ListLogsRequest { page_token: "garbage!".into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = admin
            .list_logs(pb::ListLogsRequest { filter: Some(pb::LogFilter { since_ms: 10, until_ms: 5, ..f() }), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        // GetLog: everything, headers and bodies included.
        let one = admin
            .get_log(pb::GetLogRequest { id: id(1).to_uppercase() })
            .await
            .unwrap()
            .into_inner();
        let mut want = records[0].clone();
        // The record named no node: the batch's is filled in.
        want.node_id = "node-1".into();
        want.time = llmgw_controlplane::logs::format_time(want.time_ms);
        want.cost_nanos = (want.cost * 1e9).round() as i64;
        assert_eq!(one, want);
        let err = admin.get_log(pb::GetLogRequest { id: id(999) }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = admin.get_log(pb::GetLogRequest { id: "nope".into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        cp.shutdown().await;
    }
}

both! {
    async fn follow_streams_new_matching_records(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        let mut admin = cp.admin();
        let mut followed = admin
            .follow_logs(pb::FollowLogsRequest {
                filter: Some(pb::LogFilter {
                    model: "m-follow".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let mut everything = admin
            .follow_logs(pb::FollowLogsRequest::default())
            .await
            .unwrap()
            .into_inner();

        let other = rec(1, t0);
        let mut wanted = rec(2, t0 + 1);
        wanted.model = "m-follow".into();
        wanted.request_body = "secret body".into();
        ship(&mut cp.logs(), vec![batch(2, vec![other, wanted.clone()])]).await;
        // A resent record is not stored again, so not followed again.
        ship(&mut cp.logs(), vec![batch(2, vec![wanted.clone()])]).await;

        let got = tokio::time::timeout(WAIT, followed.message())
            .await
            .expect("no record followed")
            .unwrap()
            .unwrap();
        assert_eq!(got.id, id(2));
        assert_eq!(got.model, "m-follow");
        assert_eq!(got.attempts, wanted.attempts);
        assert!(got.request_body.is_empty(), "follow shows no bodies");
        assert!(!got.time.is_empty());
        let a = tokio::time::timeout(WAIT, everything.message()).await.unwrap().unwrap().unwrap();
        let b = tokio::time::timeout(WAIT, everything.message()).await.unwrap().unwrap().unwrap();
        assert_eq!((number(&a.id), number(&b.id)), (1, 2));
        // Nothing else arrives.
        assert!(tokio::time::timeout(Duration::from_millis(300), followed.message()).await.is_err());
        assert!(tokio::time::timeout(Duration::from_millis(300), everything.message()).await.is_err());

        let err = admin
            .follow_logs(pb::FollowLogsRequest {
                filter: Some(pb::LogFilter { status_min: 500, status_max: 400, ..Default::default() }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        // The server's shutdown ends open follow streams instead of waiting
        // for them.
        cp.shutdown().await;
        let end = tokio::time::timeout(WAIT, followed.message()).await.unwrap();
        assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    }
}

/// Records of several client and upstream protocols, `(client, upstream)`
/// for `rec(n)` with `n` from 1; an empty upstream is a request no
/// upstream answered.
const PROTOCOL_PAIRS: [(&str, &str); 6] = [
    ("anthropic", "openai-chat"),
    ("openai-chat", "openai"),
    ("gemini", "anthropic"),
    ("anthropic", "anthropic"),
    ("anthropic", ""),
    ("openai-chat", "anthropic"),
];

both! {
    async fn list_follow_and_stats_filter_by_protocol(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        let mut admin = cp.admin();
        let mut followed = admin
            .follow_logs(pb::FollowLogsRequest {
                filter: Some(pb::LogFilter {
                    upstream_protocol: "anthropic".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let records: Vec<pb::RequestLog> = PROTOCOL_PAIRS
            .iter()
            .zip(1u32..)
            .map(|(&(client, upstream), n)| {
                let mut r = rec(n, t0 + i64::from(n) * 1000);
                r.protocol = client.into();
                r.upstream_protocol = upstream.into();
                r
            })
            .collect();
        ship(&mut cp.logs(), vec![batch(6, records)]).await;

        let by = |protocol: &str, upstream_protocol: &str| pb::LogFilter {
            protocol: protocol.into(),
            upstream_protocol: upstream_protocol.into(),
            ..Default::default()
        };
        for (protocol, upstream, want) in [
            ("anthropic", "", vec![5, 4, 1]),
            (" anthropic ", "", vec![5, 4, 1]),
            ("openai-chat", "", vec![6, 2]),
            ("gemini", "", vec![3]),
            ("", "anthropic", vec![6, 4, 3]),
            ("", "openai-chat", vec![1]),
            ("", "openai", vec![2]),
            ("anthropic", "anthropic", vec![4]),
            ("anthropic", "openai-chat", vec![1]),
            ("gemini", "openai", vec![]),
            // Equality, not a prefix: "openai" is its own protocol.
            ("openai", "", vec![]),
            ("openai-responses", "", vec![]),
            // Values are bound, never spliced into SQL.
            ("x' OR '1'='1", "", vec![]),
        ] {
            assert_eq!(
                numbers(&mut admin, by(protocol, upstream)).await,
                want,
                "protocol {protocol:?}, upstream {upstream:?}"
            );
        }
        // Combined with another filter and an order.
        let r = list(
            &mut admin,
            pb::ListLogsRequest {
                filter: Some(pb::LogFilter { since_ms: t0 + 4000, ..by("anthropic", "") }),
                order_by: "latency".into(),
                ascending: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(r.records.iter().map(|x| number(&x.id)).collect::<Vec<_>>(), [4, 5]);

        // Stats count what the filter keeps.
        let total = |filter: pb::LogFilter| {
            let mut admin = admin.clone();
            async move {
                admin
                    .get_stats(pb::GetStatsRequest { filter: Some(filter), ..Default::default() })
                    .await
                    .unwrap()
                    .into_inner()
                    .total
                    .unwrap()
                    .requests
            }
        };
        assert_eq!(total(by("anthropic", "")).await, 3);
        assert_eq!(total(by("", "anthropic")).await, 3);
        assert_eq!(total(by("openai-chat", "anthropic")).await, 1);
        assert_eq!(total(by("openai", "")).await, 0);

        // FollowLogs applies the same filter to new records.
        for want in [3, 4, 6] {
            let got = tokio::time::timeout(WAIT, followed.message())
                .await
                .expect("no record followed")
                .unwrap()
                .unwrap();
            assert_eq!(number(&got.id), want);
            assert_eq!(got.upstream_protocol, "anthropic");
        }
        assert!(tokio::time::timeout(Duration::from_millis(300), followed.message()).await.is_err());
        cp.shutdown().await;
    }
}

/// Stats from the rollups give each percentile as the top of the sketch
/// bucket holding the exact value, at most 1% above it: snapped back to the
/// data set's latencies (100, 200, ... 1000 ms) and TTFBs (10, ... 100 ms),
/// so the exact expectations hold for either source. A value that is not
/// within the sketch's error of one of them fails the test.
fn snapped(mut r: pb::GetStatsResponse) -> pb::GetStatsResponse {
    if r.source == "raw" {
        return r;
    }
    let fix = |v: &mut f64| {
        if *v == 0.0 {
            return;
        }
        let exact = (1..=10)
            .flat_map(|i| [f64::from(i) * 10.0, f64::from(i) * 100.0])
            .filter(|&e| e <= *v && *v <= e * (1.0 + RELATIVE_ERROR))
            .reduce(f64::max);
        *v = exact.unwrap_or_else(|| panic!("{v} is not within the sketch's error of a value"));
    };
    let rows = r.total.iter_mut().chain(r.groups.iter_mut());
    for row in rows {
        for v in [
            &mut row.latency_p50_ms,
            &mut row.latency_p95_ms,
            &mut row.latency_p99_ms,
            &mut row.ttfb_p50_ms,
            &mut row.ttfb_p95_ms,
            &mut row.ttfb_p99_ms,
        ] {
            fix(v);
        }
    }
    for b in &mut r.series {
        for v in [
            &mut b.latency_p50_ms,
            &mut b.latency_p95_ms,
            &mut b.ttfb_p50_ms,
        ] {
            fix(v);
        }
    }
    r
}

both! {
    async fn stats_percentiles_errors_groups_and_series(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        ship(&mut cp.logs(), vec![batch(10, data_set(t0))]).await;
        let mut admin = cp.admin();
        let stats = |group_by: &str, bucket_s: u32, filter: pb::LogFilter| pb::GetStatsRequest {
            filter: Some(filter),
            group_by: group_by.into(),
            bucket_s,
        };

        let r = admin.get_stats(stats("", 0, Default::default())).await.unwrap().into_inner();
        assert_eq!(r.source, "rollup:day@total");
        let r = snapped(r);
        let total = r.total.unwrap();
        assert_eq!((total.group.as_str(), total.requests, total.errors), ("", 10, 5));
        assert!((total.error_rate - 0.5).abs() < 1e-9);
        // Nearest rank over 100, 200, ..., 1000 ms.
        assert_eq!((total.latency_p50_ms, total.latency_p95_ms, total.latency_p99_ms), (500.0, 1000.0, 1000.0));
        assert_eq!((total.ttfb_p50_ms, total.ttfb_p95_ms, total.ttfb_p99_ms), (50.0, 100.0, 100.0));
        assert_eq!((total.input_tokens, total.output_tokens), (1243, 1344));
        assert!((total.cost - 0.651).abs() < 1e-9, "{}", total.cost);
        assert!(r.groups.is_empty() && r.series.is_empty());

        let r = admin.get_stats(stats("model", 0, Default::default())).await.unwrap().into_inner();
        let r = snapped(r);
        let g: Vec<_> = r
            .groups
            .iter()
            .map(|g| (g.group.as_str(), g.requests, g.errors, g.latency_p50_ms, g.latency_p95_ms, g.ttfb_p99_ms))
            .collect();
        assert_eq!(
            g,
            [
                ("m-a", 5, 1, 500.0, 1000.0, 100.0),
                ("m-b", 3, 2, 400.0, 800.0, 80.0),
                ("m-c", 2, 2, 600.0, 900.0, 90.0),
            ]
        );
        assert!((r.groups[2].error_rate - 1.0).abs() < 1e-9);
        assert!((r.groups[0].error_rate - 0.2).abs() < 1e-9);
        assert_eq!(r.groups[0].input_tokens, 10 + 100 + 1000 + 40);
        assert_eq!(r.total.unwrap().requests, 10);

        let r = admin.get_stats(stats("provider", 0, Default::default())).await.unwrap().into_inner();
        let r = snapped(r);
        let g: Vec<_> = r.groups.iter().map(|g| (g.group.as_str(), g.requests, g.errors)).collect();
        assert_eq!(g, [("p-x", 6, 2), ("p-y", 3, 2), ("p-z", 1, 1)]);

        let r = admin.get_stats(stats("key", 0, Default::default())).await.unwrap().into_inner();
        let r = snapped(r);
        let g: Vec<_> = r.groups.iter().map(|g| (g.group.as_str(), g.requests, g.errors)).collect();
        assert_eq!(g, [("k1", 5, 2), ("k2", 3, 3), ("k3", 2, 0)]);

        // Five-second buckets: t0+1..4 s, t0+5..9 s, t0+10 s.
        let r = admin.get_stats(stats("", 5, Default::default())).await.unwrap().into_inner();
        // Not whole minutes: from the raw rows, exact.
        assert_eq!(r.source, "raw");
        let r = snapped(r);
        let s: Vec<_> = r.series.iter().map(|b| (b.start_ms - t0, b.requests, b.errors, b.latency_p50_ms)).collect();
        assert_eq!(s, [(0, 4, 2, 200.0), (5000, 5, 3, 700.0), (10_000, 1, 0, 1000.0)]);
        assert_eq!(r.series[1].input_tokens, 1000 + 50 + 30 + 3);

        // Filters apply to stats as well.
        let r = admin
            .get_stats(stats("model", 0, pb::LogFilter { model: "m-b".into(), ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        let r = snapped(r);
        let total = r.total.unwrap();
        assert_eq!((total.requests, total.errors, total.latency_p50_ms), (3, 2, 400.0));
        assert_eq!(r.groups.len(), 1);
        let r = admin
            .get_stats(stats("", 0, pb::LogFilter { since_ms: t0 + 100_000, ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        let r = snapped(r);
        let total = r.total.unwrap();
        assert_eq!((total.requests, total.error_rate, total.latency_p50_ms), (0, 0.0, 0.0));

        let err = admin.get_stats(stats("colour", 0, Default::default())).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        cp.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// retention
// ---------------------------------------------------------------------------

both! {
    async fn retention_deletes_old_rows(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        const DAY: i64 = 24 * 3600 * 1000;
        let now = now_ms();
        // Retention off: old records are kept.
        let cp = start_cp(&db, dir.path(), 0).await;
        let mut old: Vec<pb::RequestLog> = (1..=5).map(|n| rec(n, now - 40 * DAY)).collect();
        old.extend((6..=7).map(|n| rec(n, now - 10 * DAY)));
        old.push(rec(8, now - 1000));
        ship(&mut cp.logs(), vec![batch(8, old)]).await;
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 8);
        assert_eq!(count(&cp, STORED_ATTEMPTS).await, 8);

        // Directly, in batches of two (1-5 share one time, so batches end
        // on ties broken by id): 30 days keeps 6, 7 and 8.
        // (On PostgreSQL a pass skips the days while another holds the
        // retention lock: here the control plane's own first pass over the
        // bodies, which may still be running. Passes add up.)
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut n = 0;
        while n < 5 {
            assert!(tokio::time::Instant::now() < deadline, "retention deleted {n} of 5");
            n += retention::purge_older_than(cp.running.store(), now - 30 * DAY, 2, None).await.unwrap();
        }
        assert_eq!(n, 5);
        let mut admin = cp.admin();
        assert_eq!(numbers(&mut admin, Default::default()).await, [8, 7, 6]);
        assert_eq!(count(&cp, STORED_ATTEMPTS).await, 3);
        cp.shutdown().await;

        // The job runs once at start: a restart with 7 days of retention
        // deletes 6 and 7 without waiting for the hourly run.
        let cp = start_cp(&db, dir.path(), 7).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while count(&cp, "SELECT COUNT(*) FROM request_logs").await != 1 {
            assert!(tokio::time::Instant::now() < deadline, "retention did not run at start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut admin = cp.admin();
        assert_eq!(numbers(&mut admin, Default::default()).await, [8]);
        assert_eq!(count(&cp, STORED_ATTEMPTS).await, 1);
        // The rollups outlive the raw rows (90 days by default): stats
        // still count all eight.
        let r = admin.get_stats(pb::GetStatsRequest::default()).await.unwrap().into_inner();
        assert_eq!((r.source.as_str(), r.total.unwrap().requests), ("rollup:day@total", 8));
        cp.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// query plans
// ---------------------------------------------------------------------------

/// The list and stats statements the RPCs run for each indexed filter,
/// built by the same functions.
/// With the index SQLite must pick for each.
fn planned_statements(t: i64, kind: Kind) -> Vec<(&'static str, Statement, &'static str)> {
    // PostgreSQL aggregates stats in the database, with its own statement.
    let stats_statement = |r: &pb::GetStatsRequest| match kind {
        Kind::Sqlite => stats_statement(r),
        Kind::Postgres => stats_statement_pg(r),
    };
    let f = pb::LogFilter::default;
    let list = |filter: pb::LogFilter| {
        list_statement(&pb::ListLogsRequest {
            filter: Some(filter),
            ..Default::default()
        })
        .unwrap()
    };
    let range = || pb::LogFilter {
        since_ms: t - 3_600_000,
        until_ms: t,
        ..f()
    };
    vec![
        ("time range", list(range()), "request_logs_time"),
        ("newest first", list(f()), "request_logs_time"),
        (
            "model",
            list(pb::LogFilter {
                model: "m-a".into(),
                ..range()
            }),
            "request_logs_model_time",
        ),
        (
            "provider",
            list(pb::LogFilter {
                provider: "p-x".into(),
                ..range()
            }),
            "request_logs_provider_time",
        ),
        (
            "key",
            list(pb::LogFilter {
                key: "k1".into(),
                ..range()
            }),
            "request_logs_key_time",
        ),
        (
            "model only",
            list(pb::LogFilter {
                model: "m-a".into(),
                ..f()
            }),
            "request_logs_model_time",
        ),
        (
            "provider only",
            list(pb::LogFilter {
                provider: "p-x".into(),
                ..f()
            }),
            "request_logs_provider_time",
        ),
        (
            "key only",
            list(pb::LogFilter {
                key: "k1".into(),
                ..f()
            }),
            "request_logs_key_time",
        ),
        (
            "status",
            list(pb::LogFilter {
                status_min: 500,
                status_max: 599,
                ..f()
            }),
            "request_logs_failed_time",
        ),
        (
            "errors only",
            list(pb::LogFilter {
                errors_only: true,
                ..f()
            }),
            "request_logs_failed_time",
        ),
        (
            "failed outcome",
            list(pb::LogFilter {
                outcome: pb::Outcome::Timeout as i32,
                ..f()
            }),
            "request_logs_not_ok_outcome_time",
        ),
        (
            "slowest",
            list_statement(&pb::ListLogsRequest {
                order_by: "latency".into(),
                ..Default::default()
            })
            .unwrap(),
            "request_logs_latency",
        ),
        (
            "stats by model",
            stats_statement(&pb::GetStatsRequest {
                filter: Some(pb::LogFilter {
                    model: "m-a".into(),
                    ..range()
                }),
                group_by: "provider".into(),
                bucket_s: 60,
            })
            .unwrap(),
            "request_logs_model_time",
        ),
        (
            "stats time range",
            stats_statement(&pb::GetStatsRequest {
                filter: Some(range()),
                ..Default::default()
            })
            .unwrap(),
            "request_logs_time",
        ),
    ]
}

fn uses_index_pg(plan: &serde_json::Value, bad: &mut Vec<String>) -> bool {
    let mut found = false;
    match plan {
        serde_json::Value::Object(m) => {
            let node = m.get("Node Type").and_then(|v| v.as_str()).unwrap_or("");
            let rel = m
                .get("Relation Name")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let index = m.get("Index Name").and_then(|v| v.as_str()).unwrap_or("");
            // The table itself, or (PostgreSQL) one of its day partitions.
            let logs = rel == "request_logs" || rel.starts_with("request_logs_p");
            match node {
                "Index Scan" | "Index Only Scan" if logs => found = true,
                "Bitmap Index Scan" if index.starts_with("request_logs") => found = true,
                "Seq Scan" if logs => bad.push(format!("{node} on {rel}")),
                _ => {}
            }
            for v in m.values() {
                found |= uses_index_pg(v, bad);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                found |= uses_index_pg(v, bad);
            }
        }
        _ => {}
    }
    found
}

both! {
    async fn queries_use_indexes(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        // Some rows, so the plans are not those of an empty table.
        let t = t0();
        let mut many = Vec::new();
        // 2500 records in one batch: several multi-row INSERTs in one
        // transaction.
        for round in 0..250u32 {
            for (i, mut r) in data_set(t - i64::from(round) * 60_000).into_iter().enumerate() {
                r.id = id(round * 100 + u32::try_from(i).unwrap() + 1);
                many.push(r);
            }
        }
        let want_attempts: usize = many.iter().map(|r| r.attempts.len()).sum();
        let acks = ship(&mut cp.logs(), vec![batch(1, many)]).await;
        // (SQLite resolves `$N` parameters by a linear search: with them,
        // such a batch took longer than the ack timeout of `ship`.)
        assert!(acks[0].quarantined_ids.is_empty());
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 2500);
        assert_eq!(
            count(&cp, STORED_ATTEMPTS).await,
            i64::try_from(want_attempts).unwrap()
        );
        let statements = planned_statements(t, db.kind);
        match db.kind {
            Kind::Sqlite => {
                let mut conn = cp.running.store().pool().acquire().await.unwrap();
                for (what, st, index) in &statements {
                    let rows = st
                        .with_prefix("EXPLAIN QUERY PLAN ")
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                    let details: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
                    let plan = details.join(" | ");
                    assert!(
                        details.iter().any(|d| d.contains("USING INDEX") || d.contains("USING COVERING INDEX")),
                        "{what}: no index in {plan}\n{}",
                        st.sql
                    );
                    assert!(
                        details.iter().any(|d| d.contains(&format!("INDEX {index}"))),
                        "{what}: {index} not used in {plan}"
                    );
                    assert!(
                        !details.iter().any(|d| d.trim() == "SCAN request_logs"),
                        "{what}: full scan in {plan}\n{}",
                        st.sql
                    );
                }
            }
            Kind::Postgres => {
                let mut conn = sqlx::postgres::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("ANALYZE request_logs").execute(&mut conn).await.unwrap();
                sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.unwrap();
                for (what, st, _) in &statements {
                    let sql = format!("EXPLAIN (FORMAT JSON) {}", st.sql);
                    let mut q = sqlx::query(&sql);
                    for p in &st.params {
                        q = match p {
                            Param::Int(v) => q.bind(*v),
                            Param::Real(v) => q.bind(*v),
                            Param::Text(v) => q.bind(v.as_str()),
                            Param::Bytes(v) => q.bind(v.as_slice()),
                        };
                    }
                    let row = q.fetch_one(&mut conn).await.unwrap();
                    // The json column, read as its text.
                    let text: String = row.try_get_unchecked(0).unwrap();
                    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let mut bad = Vec::new();
                    assert!(uses_index_pg(&plan, &mut bad), "{what}: no index scan in {plan}\n{}", st.sql);
                    assert!(bad.is_empty(), "{what}: sequential scan in {plan}");
                }
                conn.close().await.unwrap();
            }
        }
        // `logs get` finds a record's details block by its time, or a row
        // of one record by its time and id, through the index on the time
        // (the table has no primary key).
        let some_id = stored_id(&id(1));
        for (lookup, sql) in [("details row", DETAILS_OF), ("details block", BLOCKS_AT)] {
            let with_id = sql.contains("$2");
            let plan = match db.kind {
                Kind::Sqlite => {
                    let sql = format!("EXPLAIN QUERY PLAN {sql}");
                    let mut q = sqlx::query(&sql).bind(t);
                    if with_id {
                        q = q.bind(some_id.as_slice());
                    }
                    let rows = q.fetch_all(cp.running.store().pool()).await.unwrap();
                    rows.iter().map(|r| r.get::<String, _>("detail")).collect::<Vec<_>>().join(" | ")
                }
                Kind::Postgres => {
                    let mut conn = sqlx::postgres::PgConnection::connect(&db.url).await.unwrap();
                    sqlx::query("ANALYZE request_log_details").execute(&mut conn).await.unwrap();
                    sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.unwrap();
                    let sql = format!("EXPLAIN {sql}");
                    let mut q = sqlx::query(&sql).bind(t);
                    if with_id {
                        q = q.bind(some_id.as_slice());
                    }
                    let rows = q.fetch_all(&mut conn).await.unwrap();
                    conn.close().await.unwrap();
                    rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>().join(" | ")
                }
            };
            match db.kind {
                Kind::Sqlite => assert!(
                    plan.contains("USING INDEX request_log_details_time (time_ms=?)"),
                    "{lookup}: {plan}"
                ),
                // The day partition's copy of the index, named after its
                // column (an index or bitmap scan: with seqscan off, a
                // table without the index would still show a Seq Scan).
                Kind::Postgres => assert!(
                    plan.contains("on request_log_details_p")
                        && plan.contains("_time_ms_idx")
                        && !plan.contains("Seq Scan"),
                    "{lookup}: {plan}"
                ),
            }
        }
        cp.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL day partitions
// ---------------------------------------------------------------------------

const DAY: i64 = 24 * 3600 * 1000;

/// The day partitions of `table`, by name.
async fn partitions(store: &llmgw_controlplane::store::Store, table: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT c.relname::TEXT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 ORDER BY 1",
    )
    .bind(table)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

fn day_name(t: i64) -> String {
    let secs = u64::try_from(t / 1000).unwrap();
    let s = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string();
    s[..10].replace('-', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logs_land_in_day_partitions_and_retention_drops_days() {
    common::run(Kind::Postgres, |db| async move {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 0).await;
        let store = cp.running.store();
        let now = now_ms();
        let days = [now - 40 * DAY, now - 39 * DAY, now - 2 * DAY, now];
        let records: Vec<_> = days
            .iter()
            .enumerate()
            .flat_map(|(d, t)| {
                (0..3u32).map(move |i| rec(u32::try_from(d).unwrap() * 10 + i + 1, *t))
            })
            .collect();
        ship(&mut cp.logs(), vec![batch(1, records.clone())]).await;
        // Sent again (a lost ack): nothing new, across partitions too.
        let again = ship(&mut cp.logs(), vec![batch(1, records)]).await;
        assert!(again[0].quarantined_ids.is_empty());
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 12);
        assert_eq!(count(&cp, STORED_ATTEMPTS).await, 12);

        let logs = partitions(store, "request_logs").await;
        let attempts = partitions(store, "request_attempts").await;
        for t in days {
            let name = format!("request_logs_p{}", day_name(t));
            assert!(logs.contains(&name), "{name} missing from {logs:?}");
            let name = format!("request_attempts_p{}", day_name(t));
            assert!(attempts.contains(&name), "{name} missing from {attempts:?}");

            // Each day's rows are in its own partition.
            assert_eq!(
                count(
                    &cp,
                    &format!("SELECT COUNT(*) FROM request_logs_p{}", day_name(t))
                )
                .await,
                3
            );
        }
        // A record with its attempts reads back through the partitions.
        let mut admin = cp.admin();
        let got = admin
            .get_log(pb::GetLogRequest { id: id(1) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.attempts.len(), 1);

        // 30 days: the two days 39 and 40 days back go as whole tables.
        let n = retention::purge_older_than(store, now - 30 * DAY, 2, None)
            .await
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 6);
        assert_eq!(count(&cp, STORED_ATTEMPTS).await, 6);
        let left = partitions(store, "request_logs").await;
        for t in &days[..2] {
            assert!(
                !left.contains(&format!("request_logs_p{}", day_name(*t))),
                "{left:?}"
            );
        }
        let left = partitions(store, "request_attempts").await;
        assert!(
            !left.contains(&format!("request_attempts_p{}", day_name(days[0]))),
            "{left:?}"
        );
        // No record had a body long enough for pieces: no day of them.
        assert_eq!(
            partitions(store, "request_log_pieces").await,
            Vec::<String>::new()
        );
        // Nothing more to do: a second pass deletes nothing.
        assert_eq!(
            retention::purge_older_than(store, now - 30 * DAY, 2, None)
                .await
                .unwrap(),
            0
        );
        cp.shutdown().await;
    })
    .await;
}

/// The valid indexes of a table, by name, with their OIDs.
async fn index_oids(store: &llmgw_controlplane::store::Store, table: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT c.relname::TEXT, c.oid::INT8 FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
         WHERE x.indrelid = to_regclass($1) AND x.indisvalid ORDER BY 1",
    )
    .bind(table)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

async fn comment(store: &llmgw_controlplane::store::Store, table: &str) -> String {
    sqlx::query_scalar("SELECT COALESCE(obj_description(to_regclass($1), 'pg_class'), '')")
        .bind(table)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_finished_days_get_their_indexes_rebuilt_once() {
    use llmgw_controlplane::logs::reindex::{rebuild_finished_days, MARK};
    common::run(Kind::Postgres, |db| async move {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 0).await;
        let store = cp.running.store();
        let now = now_ms();
        let (older, old) = (now - 4 * DAY, now - 3 * DAY);
        // All four under one key.
        ship(
            &mut cp.logs(),
            vec![batch(
                4,
                vec![
                    rec(1, older),
                    rec(2, old),
                    rec(3, old + 1),
                    rec(4, now - 1000),
                ],
            )],
        )
        .await;
        let (older, old, today) = (day_name(older), day_name(old), day_name(now));
        // A rebuild that stopped halfway leaves invalid `_ccnew` indexes,
        // on the partition and on its TOAST table: one cancelled while it
        // waits for an older snapshot to end.
        let mut holder = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("SELECT COUNT(*) FROM log_quarantine")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut cancelled = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        sqlx::query("SET statement_timeout = '1s'")
            .execute(&mut cancelled)
            .await
            .unwrap();
        let err = sqlx::query(&format!("REINDEX TABLE CONCURRENTLY \"request_log_details_p{old}\""))
            .execute(&mut cancelled)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("statement timeout"), "{err}");
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
        let invalid = format!(
            "SELECT COUNT(*) FROM pg_index WHERE NOT indisvalid AND indrelid IN \
             ('request_log_details_p{old}'::regclass, \
              (SELECT reltoastrelid FROM pg_class WHERE oid = 'request_log_details_p{old}'::regclass))"
        );
        assert_eq!(count(&cp, &invalid).await, 2, "the primary key's and the TOAST index's");
        let before_old = index_oids(store, &format!("request_logs_p{old}")).await;
        let before_today = index_oids(store, &format!("request_logs_p{today}")).await;
        assert_eq!(before_old.len(), 11, "{before_old:?}");

        // Another control plane is rebuilding: this one leaves it.
        let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock(hashtext('llmgw_log_reindex'))")
            .execute(&mut other)
            .await
            .unwrap();
        assert_eq!(rebuild_finished_days(store, now_ms(), 5, retention::Days::FOREVER, WAIT).await.unwrap(), None);
        other.close().await.unwrap();

        // One day per call here: the newest finished one, its three
        // tables, its leftover dropped first.
        assert_eq!(rebuild_finished_days(store, now_ms(), 1, retention::Days::FOREVER, WAIT).await.unwrap(), Some(3));
        for table in ["request_logs", "request_attempts", "request_log_details"] {
            let c = comment(store, &format!("{table}_p{old}")).await;
            assert!(c.starts_with(MARK), "{table}: {c}");
            assert_eq!(comment(store, &format!("{table}_p{older}")).await, "");
        }
        // The TOAST table's is left unless this role is a superuser.
        let superuser = count(
            &cp,
            "SELECT COUNT(*) FROM pg_roles WHERE rolname = current_user AND rolsuper",
        )
        .await;
        assert_eq!(count(&cp, &invalid).await, 1 - superuser);

        // Then the older day; today is not over and keeps its indexes. A
        // partition it cannot lock in time is left for the next pass, and
        // the others go on.
        let before_older = index_oids(store, &format!("request_logs_p{older}")).await;
        let mut locker = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        for sql in [
            "BEGIN".to_string(),
            format!("LOCK TABLE \"request_attempts_p{older}\" IN SHARE UPDATE EXCLUSIVE MODE"),
        ] {
            sqlx::query(&sql).execute(&mut locker).await.unwrap();
        }
        let short = Duration::from_millis(200);
        assert_eq!(rebuild_finished_days(store, now_ms(), 5, retention::Days::FOREVER, short).await.unwrap(), Some(2));
        assert_eq!(comment(store, &format!("request_attempts_p{older}")).await, "");
        sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
        assert_eq!(rebuild_finished_days(store, now_ms(), 5, retention::Days::FOREVER, WAIT).await.unwrap(), Some(1));
        let c = comment(store, &format!("request_attempts_p{older}")).await;
        assert!(c.starts_with(MARK), "{c}");
        let after_older = index_oids(store, &format!("request_logs_p{older}")).await;
        assert_eq!(after_older.len(), before_older.len());
        assert!(after_older
            .iter()
            .zip(&before_older)
            .all(|(a, b)| a.1 != b.1));
        let c = comment(store, &format!("request_log_details_p{older}")).await;
        assert!(c.starts_with(MARK), "{c}");
        let after_old = index_oids(store, &format!("request_logs_p{old}")).await;
        let names = |v: &[(String, i64)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&after_old), names(&before_old));
        assert!(
            after_old.iter().zip(&before_old).all(|(a, b)| a.1 != b.1),
            "every index is new: {after_old:?} {before_old:?}"
        );
        assert_eq!(
            index_oids(store, &format!("request_logs_p{today}")).await,
            before_today
        );
        assert_eq!(comment(store, &format!("request_logs_p{today}")).await, "");
        // Once only.
        assert_eq!(rebuild_finished_days(store, now_ms(), 5, retention::Days::FOREVER, WAIT).await.unwrap(), Some(0));

        // The records read back through the rebuilt indexes.
        let mut admin = cp.admin();
        let got = admin
            .get_log(pb::GetLogRequest { id: id(2) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.attempts.len(), 1);
        let listed = list(
            &mut admin,
            pb::ListLogsRequest {
                limit: 10,
                filter: Some(pb::LogFilter {
                    key: "k1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .records;
        assert_eq!(listed.len(), 4);
        cp.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retention_from_several_control_planes_deletes_once() {
    common::run(Kind::Postgres, |db| async move {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 0).await;
        let now = now_ms();
        let records: Vec<_> = (0..10u32)
            .flat_map(|d| {
                (0..5u32).map(move |i| rec(d * 10 + i + 1, now - i64::from(40 + d) * DAY))
            })
            .collect();
        ship(&mut cp.logs(), vec![batch(1, records)]).await;
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 50);
        // Three stores (three control planes) purge at once, while ingest
        // goes on.
        let stores = [db.open().await, db.open().await, db.open().await];
        let cutoff = now - 30 * DAY;
        let purges = stores
            .iter()
            .map(|s| retention::purge_older_than(s, cutoff, 1000, None));
        let mut logs = cp.logs();
        let ingest = ship(
            &mut logs,
            vec![batch(2, (0..20u32).map(|i| rec(1000 + i, now)).collect())],
        );
        let (results, acks) = tokio::join!(futures::future::join_all(purges), ingest);
        assert!(acks[0].quarantined_ids.is_empty());
        let mut total = 0;
        for r in results {
            total += r.unwrap();
        }
        // Every day is dropped by one of them; a skipped pass is retried
        // an hour later by that control plane's own job.
        assert!(total <= 50, "deleted {total} of 50");
        let rest = retention::purge_older_than(&stores[0], cutoff, 1000, None)
            .await
            .unwrap();
        assert_eq!(total + rest, 50);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 20);
        for s in &stores {
            s.close().await;
        }
        cp.shutdown().await;
    })
    .await;
}

/// Two control planes store overlapping batches at once (a data plane
/// that resent to another after a lost ack, with newer records): one
/// insert waits for the other's uncommitted summary rows, then finds them
/// stored, skips them and stores the rest. With no key on
/// `request_log_details`, only that skip keeps each record to one details
/// row (writing details for every record of the batch fails here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_overlapping_batches_from_two_control_planes_are_stored_once() {
    common::run(Kind::Postgres, |db| async move {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let a = start_cp(&db, dirs[0].path(), 0).await;
        let b = start_cp(&db, dirs[1].path(), 0).await;
        let now = now_ms();
        let mut stored = 0i64;
        let mut pieces = std::collections::HashSet::new();
        for round in 0..5u32 {
            // Overlapping halves: whichever waits stores the other half's
            // records and must write details for those only. One record in
            // ten has a long body, stored by content: both store the same
            // pieces at once.
            let records = |from: u32, to: u32| -> Vec<_> {
                (from..to)
                    .map(|i| {
                        let mut r = rec(round * 1000 + i + 1, now - i64::from(i));
                        if i % 10 == 0 {
                            r.request_body = agent_request(i % 3, round + i / 100);
                        }
                        r
                    })
                    .collect()
            };
            stored += 450;
            let seq = u64::from(round) + 1;
            let (mut to_a, mut to_b) = (a.logs(), b.logs());
            let (acks_a, acks_b) = tokio::join!(
                ship(&mut to_a, vec![batch(seq, records(0, 300))]),
                ship(&mut to_b, vec![batch(seq, records(150, 450))])
            );
            assert!(acks_a[0].quarantined_ids.is_empty() && acks_b[0].quarantined_ids.is_empty());
            assert_eq!(count(&a, "SELECT COUNT(*) FROM request_logs").await, stored);
            assert_eq!(details_stored(&a).await, stored);
            // Each finds its details: in the block its summary points at,
            // compressed again for the records stored now when the other
            // control plane had stored some of it.
            let mut admin = a.admin();
            for r in records(0, 450) {
                let got = admin
                    .get_log(pb::GetLogRequest { id: r.id.clone() })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(!got.bodies_expired, "{}", r.id);
                assert_eq!(got.request_body, r.request_body);
                let stored =
                    llmgw_controlplane::logs::pieces::stored_form(r.request_body.as_bytes());
                for (h, _) in stored.map(|s| s.1).unwrap_or_default() {
                    pieces.insert((llmgw_controlplane::logs::pieces::day_of(r.time_ms), h));
                }
            }
        }
        // Each piece the bodies hold, stored (once: the table's key).
        assert_eq!(
            count(&a, "SELECT COUNT(*) FROM request_log_pieces").await,
            pieces.len() as i64
        );
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

/// A day partition's columns (type, NOT NULL, default, storage,
/// compression), constraints and indexes, with its day taken out of the
/// names.
async fn partition_shape(store: &llmgw_controlplane::store::Store, table: &str) -> Vec<String> {
    let day = table
        .rsplit_once("_p")
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT 'column ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
                || ' ' || a.attnotnull::TEXT || ' ' || a.attstorage::TEXT \
                || ' ' || a.attcompression::TEXT \
                || ' ' || COALESCE(pg_get_expr(d.adbin, d.adrelid), '') \
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
         UNION ALL \
         SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) \
         FROM pg_constraint WHERE conrelid = $1::regclass \
         UNION ALL \
         SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::regclass \
         ORDER BY 1",
    )
    .bind(table)
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter().map(|r| r.replace(&day, "DAY")).collect()
}

/// One call of `llmgw_ensure_log_day`, without `retention::ensure_day`'s
/// retries: a lock timeout is an error.
async fn create_day_once(
    store: &llmgw_controlplane::store::Store,
    t_ms: i64,
) -> Result<(), sqlx::Error> {
    tokio::time::timeout(
        WAIT,
        sqlx::query("SELECT llmgw_ensure_log_day($1)")
            .bind(t_ms)
            .execute(store.pool()),
    )
    .await
    .expect("the creation hung")
    .map(|_| ())
}

/// A day's partitions are attached under SHARE UPDATE EXCLUSIVE locks
/// (migration 0036), which neither a reader nor ingest's open batch
/// conflicts with: with a transaction reading `request_attempts` and
/// `request_logs` and another holding all three parents as ingest does,
/// the day is created on the first try, and the next batch stores a row in
/// it. (Under 0033's ACCESS EXCLUSIVE locks each try timed out behind the
/// batch, and behind autovacuum on any day.) A parent held ACCESS
/// EXCLUSIVE, as retention's drop of a day holds it, makes the creation
/// wait and try again until it is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_creating_a_day_waits_for_no_reader_or_batch() {
    common::run(Kind::Postgres, |db| async move {
        let store = db.open().await;
        let watcher = db.open().await;
        let today = now_ms();
        retention::ensure_day(&store, today).await.unwrap();
        let day = today + 40 * DAY;
        let mut reader = store.pool().begin().await.unwrap();
        for table in ["request_attempts", "request_logs"] {
            sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mut *reader)
                .await
                .unwrap();
        }
        let mut batch = store.pool().begin().await.unwrap();
        let insert = |t: i64, n: u32| {
            sqlx::query(
                "INSERT INTO request_logs (id, time_ms, node_id, sequence, status) \
                 VALUES ($1, $2, 'n', 1, 200)",
            )
            .bind(stored_id(&id(n)))
            .bind(t)
        };
        insert(today, 1).execute(&mut *batch).await.unwrap();
        sqlx::query(
            "INSERT INTO request_attempts (request_id, request_time_ms, attempt, provider, \
             upstream_model, status, latency_ms) VALUES ($1, $2, 0, 'p', 'u', 200, 5)",
        )
        .bind(stored_id(&id(1)))
        .bind(today)
        .execute(&mut *batch)
        .await
        .unwrap();
        sqlx::query("INSERT INTO request_log_details (time_ms, id, data) VALUES ($1, $2, $3)")
            .bind(today)
            .bind(stored_id(&id(1)))
            .bind(b"{}".as_slice())
            .execute(&mut *batch)
            .await
            .unwrap();
        // One call, no retry: a lock timeout would be an error here.
        create_day_once(&store, day)
            .await
            .unwrap_or_else(|e| panic!("the creation waited for the reader or the batch: {e}"));
        // A transaction that holds a parent may not see a partition
        // attached since; the next batch (ingest creates its days before
        // it begins) stores into the day.
        batch.commit().await.unwrap();
        reader.commit().await.unwrap();
        insert(day, 2).execute(store.pool()).await.unwrap();
        let suffix = |t: i64| {
            let watcher = &watcher;
            async move {
                sqlx::query_scalar::<_, String>(
                    "SELECT to_char(to_timestamp($1 / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD')",
                )
                .bind(t)
                .fetch_one(watcher.pool())
                .await
                .unwrap()
            }
        };
        let stored_in: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM request_logs_p{}",
            suffix(day).await
        ))
        .fetch_one(watcher.pool())
        .await
        .unwrap();
        assert_eq!(stored_in, 1);
        // The attached tables are what PARTITION OF made of today's (at
        // migration time): columns, defaults, storage, indexes and keys.
        let (made_then, made_now) = (suffix(today).await, suffix(day).await);
        for parent in ["request_logs", "request_attempts", "request_log_details"] {
            let then = partition_shape(&watcher, &format!("{parent}_p{made_then}")).await;
            let now = partition_shape(&watcher, &format!("{parent}_p{made_now}")).await;
            assert!(then.len() > 3, "{then:?}");
            assert_eq!(then, now, "{parent}");
        }

        // The parents' lock statement takes the parents alone (0033's
        // `LOCK TABLE ONLY a, b, c` took every day of the last two, and
        // timed out behind autovacuum on any of them): with a day held as
        // autovacuum holds it, one call, with no retry, succeeds at once.
        let mut holder = store.pool().begin().await.unwrap();
        sqlx::query(&format!(
            "LOCK TABLE request_attempts_p{made_then}, request_log_details_p{made_then}, \
             request_logs_p{made_then} IN SHARE UPDATE EXCLUSIVE MODE"
        ))
        .execute(&mut *holder)
        .await
        .unwrap();
        create_day_once(&store, day + 10 * DAY)
            .await
            .unwrap_or_else(|e| panic!("the creation waited for a day being vacuumed: {e}"));
        holder.commit().await.unwrap();

        // Retention dropping a day holds a parent ACCESS EXCLUSIVE: the
        // creation waits, tries again, and finishes once it is let go.
        let later = day + DAY;
        let mut holder = store.pool().begin().await.unwrap();
        sqlx::query("LOCK TABLE ONLY request_log_details IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *holder)
            .await
            .unwrap();
        let creating = tokio::spawn({
            let store = db.open().await;
            async move {
                let r = retention::ensure_day(&store, later).await;
                store.close().await;
                r
            }
        });
        let waiting = "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND c.relname = 'request_log_details' AND NOT l.granted";
        tokio::time::timeout(WAIT, async {
            while sqlx::query_scalar::<_, i64>(waiting)
                .fetch_one(watcher.pool())
                .await
                .unwrap()
                == 0
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("the creation never waited for the dropping retention");
        holder.commit().await.unwrap();
        tokio::time::timeout(WAIT, creating)
            .await
            .expect("the creation did not finish")
            .unwrap()
            .unwrap_or_else(|e| panic!("the creation failed: {e}"));
        let later_suffix = suffix(later).await;
        for parent in ["request_logs", "request_attempts", "request_log_details"] {
            let made: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::TEXT")
                .bind(format!("{parent}_p{later_suffix}"))
                .fetch_one(watcher.pool())
                .await
                .unwrap();
            assert!(made.is_some(), "{parent} has no partition for the day");
        }

        // The function's own lock timeout does not stay in its caller's
        // transaction.
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("SET LOCAL lock_timeout = '7s'")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("SELECT llmgw_ensure_log_day($1)")
            .bind(later + DAY)
            .execute(&mut *tx)
            .await
            .unwrap();
        let kept: String = sqlx::query_scalar("SELECT current_setting('lock_timeout')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(kept, "7s");
        tx.commit().await.unwrap();
        store.close().await;
        watcher.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_moves_existing_logs_into_partitions() {
    common::run(Kind::Postgres, |db| async move {
        // The schema as it was before partitioning (migrations 0001-0002).
        let old = tempfile::tempdir().unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/postgres");
        for f in ["0001_init.sql", "0002_log_indexes.sql"] {
            std::fs::copy(src.join(f), old.path().join(f)).unwrap();
        }
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
        let now = now_ms();
        // Record 4 has no attempt: refused before it was sent.
        sqlx::query(
            "INSERT INTO request_logs (id, time_ms, node_id, sequence, status) VALUES ($1, $2, 'n', 4, 429)",
        )
        .bind(id(4))
        .bind(now - 3 * DAY)
        .execute(&pool)
        .await
        .unwrap();
        for (n, t) in [(1, now - 3 * DAY), (2, now - 3 * DAY), (3, now)] {
            sqlx::query(
                "INSERT INTO request_logs (id, time_ms, node_id, sequence, status) VALUES ($1, $2, 'n', $3, 200)",
            )
            .bind(id(n))
            .bind(t)
            .bind(i64::from(n))
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO request_attempts (request_id, attempt, provider, upstream_model, status, latency_ms) \
                 VALUES ($1, 0, 'p', 'u', 200, 5)",
            )
            .bind(id(n))
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 0).await;
        let store = cp.running.store();
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_logs").await, 4);
        assert_eq!(
            count(&cp, &format!("SELECT COUNT(*) FROM request_logs_p{}", day_name(now - 3 * DAY))).await,
            3
        );
        assert!(partitions(store, "request_attempts").await.contains(&format!("request_attempts_p{}", day_name(now))));
        let mut admin = cp.admin();
        let got = admin.get_log(pb::GetLogRequest { id: id(2) }).await.unwrap().into_inner();
        assert_eq!(got.attempts.len(), 1);
        assert_eq!(got.attempts[0].latency_ms, 5);
        let none = admin.get_log(pb::GetLogRequest { id: id(4) }).await.unwrap().into_inner();
        assert_eq!((none.status, none.attempts.len()), (429, 0));
        let offsets = count(&cp, "SELECT COUNT(*) FROM request_logs WHERE attempt_offset_ms IS NOT NULL").await;
        assert_eq!(offsets, 0, "no attempt was kept in a row before 0028");
        // 0030 built the finished days' indexes from sorted rows and marks
        // them, so the rebuild of finished days leaves them; not today's.
        let mark = llmgw_controlplane::logs::reindex::MARK;
        let c = comment(store, &format!("request_logs_p{}", day_name(now - 3 * DAY))).await;
        assert!(c.starts_with(mark), "{c}");
        assert_eq!(comment(store, &format!("request_logs_p{}", day_name(now))).await, "");
        // Partitions made before 0005 have its columns, with their defaults.
        assert_eq!(got.upstream_protocol, "");
        assert!(!got.translated);
        assert!(got.dropped_fields.is_empty());
        assert_eq!((got.reasoning_tokens, got.count_source.as_str()), (0, ""));
        // And 0008's and 0009's.
        assert_eq!(got.stop_reason, "");
        assert_eq!(got.user, "");
        // 0030 rebuilt the table with narrower integers, keeping its
        // indexes' names (the partial ones are matched by name in plans).
        let types: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
             WHERE table_name = 'request_logs' \
             AND column_name IN ('status', 'latency_ms', 'sequence') ORDER BY column_name",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let types: Vec<(&str, &str)> = types.iter().map(|(c, t)| (c.as_str(), t.as_str())).collect();
        assert_eq!(types, [("latency_ms", "integer"), ("sequence", "bigint"), ("status", "smallint")]);
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexrelid::regclass::TEXT FROM pg_index \
             WHERE indrelid = 'request_logs'::regclass ORDER BY 1",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(indexes.len(), 11, "{indexes:?}");
        assert!(indexes.contains(&"request_logs_pkey".to_string()), "{indexes:?}");
        assert!(indexes.contains(&"request_logs_failed_time".to_string()), "{indexes:?}");
        cp.shutdown().await;
    })
    .await;
}

both! {
    async fn outcomes_are_stored_filtered_and_grouped(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        let with = |n: u32, outcome: pb::Outcome, status: u32| {
            let mut r = rec(n, t0 + i64::from(n));
            r.set_outcome(outcome);
            r.status = status;
            r
        };
        let records = vec![
            with(1, pb::Outcome::Ok, 200),
            with(2, pb::Outcome::Interrupted, 529),
            with(3, pb::Outcome::CancelledByClient, 499),
            with(4, pb::Outcome::Interrupted, 502),
            // A record from before outcomes: none.
            with(5, pb::Outcome::Unspecified, 200),
            with(6, pb::Outcome::Refused, 401),
        ];
        ship(&mut cp.logs(), vec![batch(6, records)]).await;
        let mut admin = cp.admin();
        let by = |outcome: pb::Outcome| pb::LogFilter {
            outcome: outcome as i32,
            ..Default::default()
        };
        let mut got = numbers(&mut admin, by(pb::Outcome::Interrupted)).await;
        got.sort_unstable();
        assert_eq!(got, [2, 4]);
        assert_eq!(numbers(&mut admin, by(pb::Outcome::CancelledByClient)).await, [3]);
        assert_eq!(numbers(&mut admin, by(pb::Outcome::Timeout)).await, Vec::<u32>::new());
        assert_eq!(numbers(&mut admin, by(pb::Outcome::Unspecified)).await.len(), 6);
        let stored: Vec<String> = sqlx::query_scalar("SELECT outcome FROM request_logs ORDER BY time_ms")
            .fetch_all(cp.running.store().pool())
            .await
            .unwrap();
        assert_eq!(stored, ["ok", "interrupted", "cancelled_by_client", "interrupted", "", "refused"]);
        for (n, want) in [(2, pb::Outcome::Interrupted), (5, pb::Outcome::Unspecified)] {
            let r = admin.get_log(pb::GetLogRequest { id: id(n) }).await.unwrap().into_inner();
            assert_eq!(r.outcome(), want);
        }
        assert_eq!(
            requests_by(&mut admin, "outcome").await,
            owned(&[("", 1), ("cancelled_by_client", 1), ("interrupted", 2), ("ok", 1), ("refused", 1)])
        );
        cp.shutdown().await;
    }
}

both! {
    async fn end_users_are_stored_filtered_and_grouped(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t0 = t0();
        let with = |n: u32, user: &str| {
            let mut r = rec(n, t0 + i64::from(n));
            r.user = user.into();
            r
        };
        let mut long = with(5, "");
        long.user = "u".repeat(2000);
        let records = vec![with(1, "alice"), with(2, "bob"), with(3, "alice"), with(4, ""), long];
        let acks = ship(&mut cp.logs(), vec![batch(5, records)]).await;
        // An implausibly long name is quarantined, not stored.
        assert_eq!(acks[0].quarantined_ids, [id(5)]);
        let mut admin = cp.admin();
        let by = |user: &str| pb::LogFilter {
            user: user.into(),
            ..Default::default()
        };
        let mut got = numbers(&mut admin, by(" alice ")).await;
        got.sort_unstable();
        assert_eq!(got, [1, 3]);
        assert_eq!(numbers(&mut admin, by("bob")).await, [2]);
        assert_eq!(numbers(&mut admin, by("carol")).await, Vec::<u32>::new());
        assert_eq!(numbers(&mut admin, by("")).await.len(), 4);
        let stored: Vec<String> = sqlx::query_scalar("SELECT end_user FROM request_logs ORDER BY time_ms")
            .fetch_all(cp.running.store().pool())
            .await
            .unwrap();
        assert_eq!(stored, ["alice", "bob", "alice", ""]);
        let r = admin.get_log(pb::GetLogRequest { id: id(2) }).await.unwrap().into_inner();
        assert_eq!(r.user, "bob");
        assert_eq!(
            requests_by(&mut admin, "user").await,
            owned(&[("", 1), ("alice", 2), ("bob", 1)])
        );
        cp.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// details: headers and bodies apart, compressed, expiring first (#18)
// ---------------------------------------------------------------------------

both! {
    async fn blocks_that_start_in_the_same_millisecond_are_told_apart(db: Db) {
        // Each batch's details go in a block at its earliest record's time
        // (`details.rs`, "Blocks"); two batches starting in the same
        // millisecond make two blocks there, and each record finds its
        // own bodies by its id.
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t = t0();
        let with_body = |n: u32, t: i64| {
            let mut r = rec(n, t);
            r.request_body = format!("{{\"ticket\":{n}}}");
            r.response_body = format!("answer {n}");
            r
        };
        let first = vec![with_body(1, t), with_body(2, t + 5)];
        let second = vec![with_body(3, t + 7), with_body(4, t)];
        ship(&mut cp.logs(), vec![batch(2, first.clone()), batch(4, second.clone())]).await;
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_log_details").await, 2);
        let at_t = count(&cp, &format!("SELECT COUNT(*) FROM request_log_details WHERE time_ms = {t}")).await;
        assert_eq!(at_t, 2);
        let mut admin = cp.admin();
        for r in first.iter().chain(&second) {
            let got = admin.get_log(pb::GetLogRequest { id: r.id.clone() }).await.unwrap().into_inner();
            assert_eq!((got.request_body.as_str(), got.response_body.as_str()), (r.request_body.as_str(), r.response_body.as_str()));
        }
        assert_eq!(details_stored(&cp).await, 4);
        cp.shutdown().await;
    }
}

both! {
    async fn a_block_of_details_goes_with_its_earliest_record(db: Db) {
        // Body retention removes whole blocks: SQLite deletes a block once
        // its time (its earliest record's) is before the cutoff, taking
        // its later records' bodies up to an hour early; PostgreSQL drops
        // days that end before the cutoff, and keeps this one.
        const DAY: i64 = 24 * 3600 * 1000;
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t = (now_ms() / DAY - 3) * DAY + DAY / 2;
        let with_body = |n: u32, t: i64| {
            let mut r = rec(n, t);
            r.request_body = format!("{{\"n\":{n}}}");
            r
        };
        let records = vec![with_body(1, t), with_body(2, t + 2_000)];
        ship(&mut cp.logs(), vec![batch(2, records)]).await;
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_log_details").await, 1);
        let store = cp.running.store();
        retention::purge_details_older_than(store, t + 1_000, retention::DETAILS_BATCH, None)
            .await
            .unwrap();
        let mut admin = cp.admin();
        for n in [1, 2] {
            let got = admin.get_log(pb::GetLogRequest { id: id(n) }).await.unwrap().into_inner();
            let kept = db.kind == Kind::Postgres;
            assert_eq!(got.bodies_expired, !kept, "record {n}");
            assert_eq!(got.request_body.is_empty(), !kept, "record {n}");
        }
        cp.shutdown().await;
    }
}

both! {
    async fn bodies_expire_before_their_records(db: Db) {
        const DAY: i64 = 24 * 3600 * 1000;
        let dir = tempfile::tempdir().unwrap();
        // Logs forever, bodies for 30 days; purged below as 7 days would.
        let cp = start_cp_keeping_bodies(&db, dir.path(), 30).await;
        let now = now_ms();
        let with_bodies = |n: u32, t: i64| {
            let mut r = rec(n, t);
            r.request_headers = std::collections::BTreeMap::from([
                ("content-type".to_string(), "application/json".to_string()),
                ("x-é".to_string(), "\u{1F600} \"quoted\"".to_string()),
            ]);
            r.response_headers =
                std::collections::BTreeMap::from([("x-request-id".to_string(), format!("req-{n}"))]);
            // Bytes that a JSON round trip would change: spacing, key
            // order, escapes, a long repeated part.
            r.request_body = format!(
                "{{ \"model\" : \"m-a\",\"messages\":[{{\"role\":\"user\",\"content\":\"n{n} \\u00e9 {}\"}}] }}",
                "ab".repeat(5000)
            );
            r.upstream_request_body = "data: not json\n\n".into();
            r.response_body = format!("{{\"id\":\"r{n}\",\"z\":1,\"a\":[1.50, 2e3]}}");
            r
        };
        let records = vec![with_bodies(1, now - 10 * DAY), with_bodies(2, now - 1000)];
        ship(&mut cp.logs(), vec![batch(2, records.clone())]).await;
        let mut admin = cp.admin();
        for want in &records {
            let got = admin.get_log(pb::GetLogRequest { id: want.id.clone() }).await.unwrap().into_inner();
            assert!(!got.bodies_expired);
            assert_eq!(got.request_headers, want.request_headers);
            assert_eq!(got.response_headers, want.response_headers);
            assert_eq!(got.request_body, want.request_body);
            assert_eq!(got.upstream_request_body, want.upstream_request_body);
            assert_eq!(got.response_body, want.response_body);
        }
        // Compressed: the 10 kB body takes far less.
        let stored = count(&cp, "SELECT CAST(MAX(LENGTH(data)) AS BIGINT) FROM request_log_details").await;
        assert!(stored < 1000, "{stored} bytes");

        let store = cp.running.store();
        let n = retention::purge_details_older_than(store, now - 7 * DAY, 1, None).await.unwrap();
        assert_eq!(n, 1);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_log_details").await, 1);
        let old = admin.get_log(pb::GetLogRequest { id: id(1) }).await.unwrap().into_inner();
        assert!(old.bodies_expired);
        assert!(old.request_body.is_empty() && old.response_body.is_empty());
        assert!(old.request_headers.is_empty());
        // The summary is whole.
        assert_eq!(old.model, records[0].model);
        assert_eq!(old.attempts, records[0].attempts);
        let new = admin.get_log(pb::GetLogRequest { id: id(2) }).await.unwrap().into_inner();
        assert!(!new.bodies_expired);
        assert_eq!(new.request_body, records[1].request_body);
        // Lists and stats are unchanged.
        assert_eq!(numbers(&mut admin, Default::default()).await, [2, 1]);
        let r = admin.get_stats(pb::GetStatsRequest::default()).await.unwrap().into_inner();
        assert_eq!(r.total.unwrap().requests, 2);
        // Replaying it says why not.
        let Err(e) = admin
            .replay_log(pb::ReplayLogRequest { id: id(1), ..Default::default() })
            .await
        else {
            panic!("an expired body cannot be replayed");
        };
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("body has expired"), "{}", e.message());
        // Log retention takes the rest of a record, details included.
        retention::purge_older_than(store, now - 5 * DAY, 10, None).await.unwrap();
        assert_eq!(numbers(&mut admin, Default::default()).await, [2]);
        retention::purge_older_than(store, now + DAY, 10, None).await.unwrap();
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_log_details").await, 0);
        cp.shutdown().await;

        // With bodies kept 7 days (the default), a record that arrives
        // older than that is stored without them, and says so.
        let cp = start_cp(&db, dir.path(), 0).await;
        ship(&mut cp.logs(), vec![batch(4, vec![with_bodies(3, now - 10 * DAY), with_bodies(4, now)])]).await;
        let mut admin = cp.admin();
        let late = admin.get_log(pb::GetLogRequest { id: id(3) }).await.unwrap().into_inner();
        assert!(late.bodies_expired && late.request_body.is_empty());
        let fresh = admin.get_log(pb::GetLogRequest { id: id(4) }).await.unwrap().into_inner();
        assert!(!fresh.bodies_expired);
        assert_eq!(fresh.request_body, with_bodies(4, now).request_body);
        cp.shutdown().await;
    }
}

/// An agent's request on turn `turn` of conversation `conv`: one system
/// prompt and tool list for all, then the conversation's turns so far.
fn agent_request(conv: u32, turn: u32) -> String {
    let tools: Vec<String> = (0..30)
        .map(|i| {
            format!(
                "{{\"name\":\"tool_{i}\",\"description\":\"Reads what is under a path (tool {i}) \
                 and says what it found, line by line.\",\"input_schema\":{{\"type\":\"object\"}}}}"
            )
        })
        .collect();
    let turns: Vec<String> = (0..=turn)
        .map(|t| {
            format!(
                "{{\"role\":\"user\",\"content\":\"conversation {conv}, turn {t}: {} \\u00e9 \\n\"}}",
                "please read the next file and fix what is wrong in it. ".repeat(30 + (t as usize) % 5)
            )
        })
        .collect();
    format!(
        "{{\"model\":\"m-a\",\"system\":\"{}\",\"tools\":[{}],\"messages\":[{}]}}",
        agent_prompt(),
        tools.join(","),
        turns.join(",")
    )
}

/// A system prompt of 30 kB of words in no order, so that it compresses
/// no better than prose does.
fn agent_prompt() -> String {
    const WORDS: [&str; 16] = [
        "read", "file", "before", "write", "test", "careful", "agent", "change", "diff", "run",
        "check", "small", "error", "path", "ask", "plan",
    ];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut prompt = String::new();
    while prompt.len() < 30_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        prompt.push_str(WORDS[(x % 16) as usize]);
        prompt.push(if x.is_multiple_of(11) { '.' } else { ' ' });
    }
    prompt
}

both! {
    async fn long_request_bodies_are_stored_once_by_content(db: Db) {
        use llmgw_controlplane::logs::pieces;
        const DAY: i64 = 24 * 3600 * 1000;
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp_keeping_bodies(&db, dir.path(), 30).await;
        let now = now_ms();
        // Two conversations of eight turns today, one of two turns ten days
        // ago; the upstream body of a translation (the same prompt in
        // another protocol's JSON).
        let agent = |n: u32, conv: u32, turn: u32, t: i64| {
            let mut r = rec(n, t);
            r.request_body = agent_request(conv, turn);
            r.upstream_request_body = format!(
                "{{\"systemInstruction\":{{\"parts\":[{{\"text\":\"{}\"}}]}},\"turn\":{turn}}}",
                agent_prompt()
            );
            r.response_body = format!("{{\"id\":\"r{n}\",\"choices\":[]}}");
            r
        };
        let mut records = Vec::new();
        for turn in 0..8 {
            records.push(agent(10 + turn, 1, turn, now - 60_000 + i64::from(turn)));
            records.push(agent(20 + turn, 2, turn, now - 50_000 + i64::from(turn)));
        }
        records.push(agent(30, 3, 0, now - 10 * DAY));
        records.push(agent(31, 3, 1, now - 10 * DAY + 5));
        // And one of the day after that.
        records.push(agent(32, 4, 0, now - 9 * DAY));
        // A short body stays in its block.
        let mut short = rec(40, now - 1000);
        short.request_body = "{\"model\":\"m-a\"}".into();
        records.push(short);
        // A batch a record: every batch's block would hold the prompt.
        let batches: Vec<pb::LogBatch> = records
            .chunks(1)
            .enumerate()
            .map(|(i, c)| batch(i as u64 + 1, c.to_vec()))
            .collect();
        ship(&mut cp.logs(), batches.clone()).await;

        // Each piece of each day once: what the bodies cut into, less what
        // they share.
        let mut unique = std::collections::HashSet::new();
        let mut body_bytes = 0usize;
        for r in &records {
            for body in [&r.request_body, &r.upstream_request_body] {
                body_bytes += body.len();
                for (h, _) in pieces::stored_form(body.as_bytes()).map(|s| s.1).unwrap_or_default() {
                    unique.insert((pieces::day_of(r.time_ms), h));
                }
            }
        }
        const PIECES: &str = "SELECT COUNT(*) FROM request_log_pieces";
        assert_eq!(count(&cp, PIECES).await, unique.len() as i64);
        let bytes = count(
            &cp,
            "SELECT CAST((SELECT COALESCE(SUM(LENGTH(data)), 0) FROM request_log_pieces) + \
             (SELECT SUM(LENGTH(data)) FROM request_log_details) AS BIGINT)",
        )
        .await;
        // The prompt is in every body, and each batch's block would hold
        // it at least once (compressed), 19 times in all; by content it
        // is stored once for each of the three days, beside what is new in
        // each body (its last pieces).
        let prompt = zstd::bulk::compress(agent_prompt().as_bytes(), 3).unwrap().len() as i64;
        assert!(
            bytes < 10 * prompt,
            "{bytes} bytes stored for {body_bytes} bytes of bodies ({prompt}: the prompt once)"
        );

        let check = |cp: &Cp| {
            let mut admin = cp.admin();
            let records = records.clone();
            async move {
                for want in &records {
                    let got = admin
                        .get_log(pb::GetLogRequest { id: want.id.clone() })
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(!got.bodies_expired, "{}", want.id);
                    assert_eq!(got.request_body, want.request_body, "{}", want.id);
                    assert_eq!(got.upstream_request_body, want.upstream_request_body);
                    assert_eq!(got.response_body, want.response_body);
                }
            }
        };
        check(&cp).await;
        // Sent again (a data plane that missed the acks): nothing new.
        ship(&mut cp.logs(), batches.clone()).await;
        assert_eq!(count(&cp, PIECES).await, unique.len() as i64);
        assert_eq!(details_stored(&cp).await, records.len() as i64);
        cp.shutdown().await;

        // A control plane that remembers no piece (a restart, another one
        // on the same database) stores new records beside them, once.
        let cp = start_cp_keeping_bodies(&db, dir.path(), 30).await;
        // With a record stored before in the batch: the block is packed
        // again for the two new ones, their bodies in stored form.
        ship(
            &mut cp.logs(),
            vec![batch(
                50,
                vec![
                    agent(50, 1, 8, now - 40_000),
                    records[0].clone(),
                    agent(51, 2, 8, now - 40_000),
                ],
            )],
        )
        .await;
        assert_eq!(details_stored(&cp).await, records.len() as i64 + 2);
        let mut more = unique.clone();
        for r in [agent(50, 1, 8, 0), agent(51, 2, 8, 0)] {
            for body in [&r.request_body, &r.upstream_request_body] {
                for (h, _) in pieces::stored_form(body.as_bytes()).map(|s| s.1).unwrap_or_default() {
                    more.insert((pieces::day_of(now - 40_000), h));
                }
            }
        }
        assert_eq!(count(&cp, PIECES).await, more.len() as i64);
        let got = cp
            .admin()
            .get_log(pb::GetLogRequest { id: id(51) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.request_body, agent(51, 2, 8, 0).request_body);
        assert_eq!(got.upstream_request_body, agent(51, 2, 8, 0).upstream_request_body);
        check(&cp).await;

        // Body retention takes a day's pieces with its blocks (on
        // PostgreSQL its partition, made when its first piece came), once
        // the whole day is before the cutoff: a cutoff at the start of the
        // next day takes it, and not that next day's.
        let store = cp.running.store();
        let old_day = pieces::day_of(now - 10 * DAY);
        let next_day = old_day + DAY;
        let (old_name, next_name) = (
            format!("request_log_pieces_p{}", day_name(old_day)),
            format!("request_log_pieces_p{}", day_name(next_day)),
        );
        let postgres = store.backend() == llmgw_controlplane::store::Backend::Postgres;
        if postgres {
            let days = partitions(store, "request_log_pieces").await;
            assert!(days.contains(&old_name) && days.contains(&next_name), "{days:?}");
            assert!(days.contains(&format!("request_log_pieces_p{}", day_name(now - 40_000))));
        }
        let left = |gone: &[i64]| more.iter().filter(|(d, _)| !gone.contains(d)).count() as i64;
        retention::purge_details_older_than(store, next_day, 1000, None)
            .await
            .unwrap();
        assert_eq!(count(&cp, PIECES).await, left(&[old_day]));
        if postgres {
            let days = partitions(store, "request_log_pieces").await;
            assert!(!days.contains(&old_name) && days.contains(&next_name), "{days:?}");
        }
        let mut admin = cp.admin();
        let old = admin.get_log(pb::GetLogRequest { id: id(30) }).await.unwrap().into_inner();
        assert!(old.bodies_expired && old.request_body.is_empty());
        let next = admin.get_log(pb::GetLogRequest { id: id(32) }).await.unwrap().into_inner();
        assert_eq!(next.request_body, records[records.len() - 2].request_body);
        let kept = admin.get_log(pb::GetLogRequest { id: id(13) }).await.unwrap().into_inner();
        assert_eq!(kept.request_body, records[6].request_body);
        assert_eq!(kept.id, id(13));
        // A control plane from before pieces drops a day's details alone;
        // the next pass drops the pieces it left.
        if postgres {
            sqlx::query(&format!(
                "DROP TABLE \"request_log_details_p{}\"",
                day_name(next_day)
            ))
            .execute(store.pool())
            .await
            .unwrap();
        }
        retention::purge_details_older_than(store, next_day + DAY, 1000, None)
            .await
            .unwrap();
        assert_eq!(count(&cp, PIECES).await, left(&[old_day, next_day]));
        if postgres {
            assert!(!partitions(store, "request_log_pieces").await.contains(&next_name));
        }
        // Log retention takes everything.
        retention::purge_older_than(store, now + DAY, 1000, None).await.unwrap();
        assert_eq!(count(&cp, PIECES).await, 0);
        cp.shutdown().await;
    }
}

both! {
    async fn migration_0024_moves_headers_and_bodies_into_details(db: Db) {
        let old = migrate_up_to(&db, 24).await;
        let t = an_hour_ago_today();
        let body = "{ \"model\": \"m\", \"messages\": [\"\u{e9}\\n\"] }";
        sqlx::query(
            "INSERT INTO request_logs (id, time_ms, node_id, sequence, status, request_headers, \
             response_headers, request_body, response_body, upstream_request_body) \
             VALUES ($1, $2, 'n', 1, 200, $3, '{}', $4, $5, '')",
        )
        .bind(id(1))
        .bind(t)
        .bind(r#"{"content-type":"application/json"}"#)
        .bind(body)
        .bind("data: [DONE]\n\n")
        .execute(&old)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO request_attempts (request_id, request_time_ms, attempt, provider, \
             upstream_model, status, latency_ms) VALUES ($1, $2, 0, 'p', 'u', 200, 5)",
        )
        .bind(id(1))
        .bind(t)
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let mut admin = cp.admin();
        let got = admin.get_log(pb::GetLogRequest { id: id(1) }).await.unwrap().into_inner();
        assert!(!got.bodies_expired);
        assert_eq!(got.request_body, body);
        assert_eq!(got.response_body, "data: [DONE]\n\n");
        assert_eq!(got.upstream_request_body, "");
        assert_eq!(got.request_headers.get("content-type").map(String::as_str), Some("application/json"));
        assert!(got.response_headers.is_empty());
        assert_eq!(got.attempts.len(), 1);
        // New records land beside it, compressed.
        let mut r = rec(2, t + 1);
        r.request_body = "{\"model\":\"m\"}".into();
        ship(&mut cp.logs(), vec![batch(2, vec![r.clone()])]).await;
        let got = admin.get_log(pb::GetLogRequest { id: id(2) }).await.unwrap().into_inner();
        assert_eq!(got.request_body, r.request_body);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM request_log_details").await, 2);
        cp.shutdown().await;
    }
}

both! {
    async fn ids_stored_as_text_become_sixteen_bytes(db: Db) {
        // The migration before which ids were text: PostgreSQL 0035,
        // SQLite 0034.
        let before = match db.kind {
            Kind::Sqlite => 34,
            Kind::Postgres => 35,
        };
        let old = migrate_up_to(&db, before).await;
        let t = an_hour_ago_today();
        // A canonical id, one in capitals, and one that is not a UUID at
        // all (ingest never stored one; the migration must not fail on it).
        let upper = id(2).to_uppercase();
        for (n, sent) in [(1, id(1)), (2, upper.clone()), (3, "legacy-7".to_string())] {
            sqlx::query(
                "INSERT INTO request_logs (id, time_ms, node_id, sequence, status) \
                 VALUES ($1, $2, 'n', $3, 200)",
            )
            .bind(sent.as_str())
            .bind(t + n)
            .bind(n)
            .execute(&old)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO request_attempts (request_id, request_time_ms, attempt, provider, \
                 upstream_model, status, latency_ms) VALUES ($1, $2, 0, 'p', 'u', 200, $3)",
            )
            .bind(sent.as_str())
            .bind(t + n)
            .bind(n * 10)
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;

        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        assert_eq!(
            count(&cp, "SELECT COUNT(*) FROM request_logs WHERE length(id) = 16").await,
            2
        );
        assert_eq!(
            count(&cp, "SELECT COUNT(*) FROM request_attempts WHERE length(request_id) = 16").await,
            2
        );
        let mut admin = cp.admin();
        // Each reads back with its attempt, the UUIDs in canonical form.
        let listed = list(&mut admin, pb::ListLogsRequest { ascending: true, ..Default::default() })
            .await
            .records;
        let got: Vec<(String, u64)> = listed
            .iter()
            .map(|r| (r.id.clone(), r.attempts.first().map_or(0, |a| a.latency_ms)))
            .collect();
        assert_eq!(got, [(id(1), 10), (id(2), 20), ("legacy-7".to_string(), 30)]);
        for asked in [id(1), upper] {
            let one = admin.get_log(pb::GetLogRequest { id: asked }).await.unwrap().into_inner();
            assert_eq!(one.attempts.len(), 1);
        }
        // New records are stored in the same form beside them.
        ship(&mut cp.logs(), vec![batch(1, vec![rec(4, t + 4)])]).await;
        assert_eq!(
            count(&cp, "SELECT COUNT(*) FROM request_logs WHERE length(id) = 16").await,
            3
        );
        let page = list(&mut admin, pb::ListLogsRequest { limit: 2, ..Default::default() }).await;
        let ids = |p: &pb::ListLogsResponse| p.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&page), [id(4), "legacy-7".to_string()]);
        // The next page goes on from the last id, bound in its stored form.
        let next = list(
            &mut admin,
            pb::ListLogsRequest { limit: 2, page_token: page.next_page_token.clone(), ..Default::default() },
        )
        .await;
        assert_eq!(ids(&next), [id(2), id(1)]);
        cp.shutdown().await;
    }
}

both! {
    async fn details_are_compressed_with_a_dictionary_trained_on_the_traffic(db: Db) {
        use llmgw_controlplane::logs::details::{purge_dictionaries, TRAIN_SAMPLES};
        let dir = tempfile::tempdir().unwrap();
        let cp = start_cp(&db, dir.path(), 30).await;
        let t = now_ms() - 600_000;
        let with_body = |n: u32| {
            let mut r = rec(n, t + i64::from(n));
            r.request_body = format!(
                "{{\"model\":\"m-a\",\"messages\":[{{\"role\":\"user\",\"content\":\"ticket {n}: the printer is on fire\"}}]}}"
            );
            r.response_body = format!("{{\"id\":\"chatcmpl-{n}\",\"choices\":[]}}");
            r
        };
        let n = u32::try_from(TRAIN_SAMPLES).unwrap();
        let first: Vec<pb::LogBatch> = (0..n / 500)
            .map(|b| batch(u64::from(b + 1) * 500, (b * 500 + 1..=(b + 1) * 500).map(with_body).collect()))
            .collect();
        ship(&mut cp.logs(), first).await;
        // Until ingest compresses with it (stored first, then taken into
        // use: the row alone is not enough).
        let deadline = tokio::time::Instant::now() + WAIT;
        let store = cp.running.store();
        while store.details().current(store.pool()).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no dictionary was trained");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM log_dictionaries").await, 1);
        let later = vec![with_body(n + 1), with_body(n + 2)];
        ship(&mut cp.logs(), vec![batch(u64::from(n) + 2, later.clone())]).await;
        let first_byte: Vec<u8> = sqlx::query_scalar(
            "SELECT data FROM request_log_details ORDER BY time_ms DESC LIMIT 1",
        )
        .fetch_one(cp.running.store().pool())
        .await
        .unwrap();
        // A block (`details.rs`), and a dictionary's id after it.
        assert_eq!(first_byte[0], 3);
        assert_ne!(first_byte[1], 0, "compressed with the dictionary");
        // Batches that were under way while it trained start no other.
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM log_dictionaries").await, 1);
        let mut admin = cp.admin();
        let got = admin.get_log(pb::GetLogRequest { id: later[1].id.clone() }).await.unwrap().into_inner();
        assert_eq!(got.request_body, later[1].request_body);
        assert_eq!(got.response_body, later[1].response_body);
        // The newest dictionary stays, whatever the cutoff.
        let store = cp.running.store();
        assert_eq!(purge_dictionaries(store, now_ms() + 100 * 24 * 3_600_000).await.unwrap(), 0);
        cp.shutdown().await;

        // Another control plane reads the dictionary from the database.
        let cp = start_cp(&db, dir.path(), 30).await;
        let mut admin = cp.admin();
        for r in [&later[0], &with_body(7)] {
            let got = admin.get_log(pb::GetLogRequest { id: r.id.clone() }).await.unwrap().into_inner();
            assert_eq!(got.request_body, r.request_body);
        }
        // A newer dictionary in use for long enough retires the older one.
        let store = cp.running.store();
        sqlx::query("INSERT INTO log_dictionaries (created_ms, dict) VALUES ($1, $2)")
            .bind(now_ms())
            .bind(vec![0u8; 8])
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(purge_dictionaries(store, now_ms()).await.unwrap(), 0);
        // Not while details stored before it remain (another control plane
        // on the database may keep bodies longer than this one's cutoff).
        assert_eq!(purge_dictionaries(store, now_ms() + 3 * 24 * 3_600_000).await.unwrap(), 0);
        // A details row that cannot be read (here: an unknown format) leaves
        // the summary readable, with its bodies reported gone.
        sqlx::query("UPDATE request_log_details SET data = $1")
            .bind(vec![0x7fu8])
            .execute(store.pool())
            .await
            .unwrap();
        let got = admin.get_log(pb::GetLogRequest { id: later[0].id.clone() }).await.unwrap().into_inner();
        assert!(got.bodies_expired);
        assert_eq!(got.request_body, "");
        assert_eq!(got.id, later[0].id);
        sqlx::query("DELETE FROM request_log_details").execute(store.pool()).await.unwrap();
        assert_eq!(purge_dictionaries(store, now_ms() + 3 * 24 * 3_600_000).await.unwrap(), 1);
        assert_eq!(count(&cp, "SELECT COUNT(*) FROM log_dictionaries").await, 1);
        cp.shutdown().await;
    }
}
