#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! Requests in flight and admin cancel (#17), with the real binaries: a
//! slow stream from the mock shows in `llmgw requests` on the data plane
//! serving it with growing tokens; `llmgw requests cancel` ends it within
//! a second with an error event (never a clean finish), the mock sees its
//! connection closed and the log says cancelled by an admin; with two data
//! planes the cancel reaches the right one; a request still waiting for
//! its upstream's first byte is cancelled with a 499 in its protocol; an
//! ended or unknown request says so; a translated stream (an Anthropic
//! client on an OpenAI target) ends with Anthropic's error event;
//! `llmgw requests --follow` prints the start and the end; a killed data
//! plane's entries go at once, a silent one's within its lease. On SQLite
//! and PostgreSQL, and on PostgreSQL through a second control plane (the
//! cancel goes by NOTIFY to the one holding the stream).

use std::sync::Arc;
use std::time::{Duration, Instant};

use llmgw_e2e::*;
use llmgw_proto::v1::{admin_client::AdminClient, InFlightRequest, ListInFlightRequest};
use serde_json::{json, Value};

/// How long a cancel may take to end the client's response.
const CANCEL_BOUND: Duration = Duration::from_secs(1);

/// A control plane with the mock as provider, a model and a key.
async fn gateway(db: Db, mock: &llmgw_mock::MockServer) -> (ControlPlane, String) {
    let cp = ControlPlane::start(db, &[]).await;
    add_mock_provider(&cp, &mock.base_url()).await;
    cli_ok(&cp, &["model", "add", "slow", "--target", "mock:slow-up"]).await;
    let key = cli_json(&cp, &["key", "create", "live-key"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    (cp, key)
}

async fn in_flight(cp: &ControlPlane) -> Vec<InFlightRequest> {
    let mut client = AdminClient::connect(cp.url()).await.unwrap();
    let mut req = tonic::Request::new(ListInFlightRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", cp.admin_token).parse().unwrap(),
    );
    client
        .list_in_flight(req)
        .await
        .unwrap()
        .into_inner()
        .requests
}

/// Waits until request `id` is in flight and `check` holds for it.
async fn wait_entry(
    cp: &ControlPlane,
    id: &str,
    what: &str,
    check: impl Fn(&InFlightRequest) -> bool,
) -> InFlightRequest {
    poll(WAIT, what, || async {
        in_flight(cp)
            .await
            .into_iter()
            .find(|r| r.id == id && check(r))
    })
    .await
}

async fn wait_gone(cp: &ControlPlane, id: &str, bound: Duration) {
    poll(
        bound,
        &format!("request {id} to leave the live view"),
        || async { (!in_flight(cp).await.iter().any(|r| r.id == id)).then_some(()) },
    )
    .await;
}

/// A slow chat stream through `dp`: the response, its request id, and the
/// bytes read so far (up to the first content).
async fn slow_stream(
    dp: &DataPlane,
    key: &str,
    mock_headers: &[(&str, &str)],
) -> (reqwest::Response, String, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", dp.addr))
        .bearer_auth(key)
        .json(&json!({"model": "slow", "stream": true,
            "messages": [{"role": "user", "content": "go on"}]}));
    for (k, v) in mock_headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-llmgw-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut got = Vec::new();
    while !contains_bytes(&got, b"\"content\"") {
        let chunk = resp.chunk().await.unwrap().expect("the stream ended early");
        got.extend_from_slice(&chunk);
    }
    (resp, id, got)
}

/// Reads a response to its end (bounded): everything it sent, and whether
/// it ended with an error.
async fn read_to_end(resp: &mut reqwest::Response, bound: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let read = async {
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => got.extend_from_slice(&c),
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    };
    let failed = tokio::time::timeout(bound, read)
        .await
        .unwrap_or_else(|_| panic!("the response did not end within {bound:?}"));
    (got, failed)
}

/// `llmgw -o json requests --follow` against `cp`, running.
fn follow(cp: &ControlPlane) -> Proc {
    let mut cmd = cli_command(&cp.url());
    cmd.env("LLMGW_ADMIN_TOKEN", &cp.admin_token)
        .current_dir(std::env::temp_dir())
        .args(["-o", "json", "requests", "--follow"]);
    Proc::spawn("llmgw requests --follow", cmd, Arc::default())
}

/// Waits for a `--follow` event for which `find` holds.
async fn follow_event(p: &mut Proc, what: &str, find: impl Fn(&Value) -> bool) {
    p.wait_for_line(WAIT, |l| {
        let v: Value = serde_json::from_str(l).ok()?;
        find(&v).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
}

fn lists(v: &Value, field: &str, id: &str) -> bool {
    v[field].as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x.as_str() == Some(id) || x["id"].as_str() == Some(id))
    })
}

/// A slow Anthropic-protocol stream through `dp` (translated for an
/// OpenAI target): the response and its request id, read up to the
/// first text.
async fn anthropic_stream(dp: &DataPlane, key: &str) -> (reqwest::Response, String) {
    let mut resp = reqwest::Client::new()
        .post(format!("http://{}/v1/messages", dp.addr))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header(SLOW[0].0, SLOW[0].1)
        .header(SLOW[1].0, SLOW[1].1)
        .json(&json!({"model": "slow", "max_tokens": 1000, "stream": true,
            "messages": [{"role": "user", "content": "go on"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-llmgw-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut got = Vec::new();
    while !contains_bytes(&got, b"text_delta") {
        let chunk = resp.chunk().await.unwrap().expect("the stream ended early");
        got.extend_from_slice(&chunk);
    }
    (resp, id)
}

const SLOW: [(&str, &str); 2] = [("x-mock-chunks", "400"), ("x-mock-chunk-delay-ms", "40")];

async fn live_view_and_cancel(db: Db) {
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    let (cp, key) = gateway(db, &mock).await;
    let dp_a = DataPlane::start(&cp.url(), "dp-a", &cp.dataplane_token).await;
    let mut dp_b = DataPlane::start(&cp.url(), "dp-b", &cp.dataplane_token).await;
    wait_in_sync(&cp, "dp-a").await;
    wait_in_sync(&cp, "dp-b").await;
    let mut watching = follow(&cp);
    follow_event(&mut watching, "the first, full event", |v| {
        v["full"] == true
    })
    .await;

    // One slow stream on each data plane.
    let (mut on_a, id_a, _) = slow_stream(&dp_a, &key, &SLOW).await;
    let (mut on_b, id_b, _) = slow_stream(&dp_b, &key, &SLOW).await;
    let first = wait_entry(&cp, &id_a, "dp-a's stream with tokens", |r| r.tokens > 0).await;
    assert_eq!(first.node_id, "dp-a");
    assert_eq!(first.key, "live-key");
    assert_eq!(first.model, "slow");
    assert_eq!(first.provider, "mock");
    assert_eq!(first.upstream_model, "slow-up");
    assert_eq!(first.client_protocol, "openai-chat");
    assert_eq!(first.upstream_protocol, "openai");
    assert!(first.stream);
    assert_eq!(first.attempt, 1);
    let grown = wait_entry(&cp, &id_a, "dp-a's tokens to grow", |r| {
        r.tokens > first.tokens
    })
    .await;
    assert!(grown.tokens > first.tokens);
    let b = wait_entry(&cp, &id_b, "dp-b's stream", |_| true).await;
    assert_eq!(b.node_id, "dp-b");

    // The CLI: the table, JSON, and one data plane's.
    let table = cli_ok(&cp, &["requests"]).await;
    assert!(table.contains("TOKENS") && table.contains(&id_a), "{table}");
    assert!(
        table.contains("mock:slow-up") && table.contains("openai-chat→openai"),
        "{table}"
    );
    let only_b = cli_json(&cp, &["requests", "--node", "dp-b"]).await;
    let ids: Vec<&str> = only_b
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id_b.as_str()], "{only_b}");
    follow_event(&mut watching, "dp-a's request in --follow", |v| {
        lists(v, "upserts", &id_a)
    })
    .await;

    // Cancel dp-a's: it ends within the bound with an error event.
    let cancelled_before = mock.stats().cancelled;
    let started = Instant::now();
    let answer = cli_json(&cp, &["requests", "cancel", &id_a]).await;
    let (rest, _) = read_to_end(&mut on_a, CANCEL_BOUND).await;
    let took = started.elapsed();
    assert!(took <= CANCEL_BOUND, "the cancel took {took:?}");
    assert_eq!(answer["node_id"], "dp-a", "{answer}");
    assert_eq!(answer["confirmed"], true, "{answer}");
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains("[DONE]"),
        "a clean finish after a cancel: {rest}"
    );
    assert!(
        rest.contains("\"error\"") && rest.contains("cancelled by an admin"),
        "no error event: {rest}"
    );
    // The mock saw its client (the data plane) go away.
    poll(WAIT, "the mock to see the upstream closed", || async {
        (mock.stats().cancelled > cancelled_before).then_some(())
    })
    .await;
    // The log says who cancelled.
    let log = logged(&cp, &id_a).await;
    assert_eq!(log["status"], 499, "{log}");
    assert_eq!(log["outcome"], "cancelled_by_admin", "{log}");
    let error = log["error"].as_str().unwrap();
    assert!(
        error.contains("cancelled by an admin (admin token) through control plane"),
        "{error}"
    );
    assert!(log["output_tokens"].as_u64().unwrap() > 0, "charged: {log}");
    wait_gone(&cp, &id_a, WAIT).await;
    follow_event(&mut watching, "dp-a's request's end in --follow", |v| {
        lists(v, "ended", &id_a)
    })
    .await;
    // dp-b's stream goes on.
    let more = tokio::time::timeout(WAIT, on_b.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(more.is_some(), "dp-b's stream ended with dp-a's cancel");
    assert!(in_flight(&cp).await.iter().any(|r| r.id == id_b));

    // An ended request, and an unknown one, say so.
    let again = cli_err(&cp, &["requests", "cancel", &id_a]).await;
    assert!(again.contains("has already ended"), "{again}");
    let unknown = cli_err(&cp, &["requests", "cancel", "0190aaaa-no-such-request"]).await;
    assert!(unknown.contains("no request"), "{unknown}");

    // A translated stream ends with its client's protocol's error event.
    let (mut translated, id_t) = anthropic_stream(&dp_a, &key).await;
    let entry = wait_entry(&cp, &id_t, "the Anthropic client's stream", |_| true).await;
    assert_eq!(entry.client_protocol, "anthropic");
    assert_eq!(entry.upstream_protocol, "openai");
    cli_ok(&cp, &["requests", "cancel", &id_t]).await;
    let (rest, _) = read_to_end(&mut translated, CANCEL_BOUND).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("event: error") && rest.contains("cancelled by an admin"),
        "{rest}"
    );
    assert!(!rest.contains("message_stop"), "{rest}");
    let log = logged(&cp, &id_t).await;
    assert_eq!(log["outcome"], "cancelled_by_admin", "{log}");

    // Before the first byte: the client gets a 499 in its protocol.
    let waiting = {
        let key = key.clone();
        let addr = dp_a.addr;
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{addr}/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-mock-latency-ms", "30000")
                .json(&json!({"model": "slow",
                    "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
        })
    };
    let pending = poll(WAIT, "the waiting request", || async {
        in_flight(&cp)
            .await
            .into_iter()
            .find(|r| r.node_id == "dp-a" && !r.stream && r.attempt == 1)
    })
    .await;
    let started = Instant::now();
    cli_ok(&cp, &["requests", "cancel", &pending.id]).await;
    let resp = tokio::time::timeout(CANCEL_BOUND, waiting)
        .await
        .expect("the waiting request did not end within the bound")
        .unwrap();
    assert!(started.elapsed() <= CANCEL_BOUND);
    assert_eq!(resp.status(), 499);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cancelled_by_admin", "{body}");
    let log = logged(&cp, &pending.id).await;
    assert_eq!(log["outcome"], "cancelled_by_admin", "{log}");

    // A killed data plane's requests leave the view.
    dp_b.proc().kill();
    wait_gone(&cp, &id_b, Duration::from_secs(3)).await;
    drop(on_b);
}

#[tokio::test]
async fn live_view_and_cancel_on_sqlite() {
    live_view_and_cancel(Db::Sqlite).await;
}

#[tokio::test]
async fn live_view_and_cancel_on_postgres() {
    let pg = PgDatabase::create().await;
    live_view_and_cancel(Db::Postgres(pg.url.clone())).await;
}

/// Two control planes on one database: the data plane streams to one, the
/// other lists its request and cancels it (NOTIFY to the first).
#[tokio::test]
async fn another_control_plane_sees_and_cancels() {
    let pg = PgDatabase::create().await;
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    let (a, key) = gateway(Db::Postgres(pg.url.clone()), &mock).await;
    let master = a.master_key.clone().unwrap();
    let mut b = ControlPlane::start(
        a.opts.db.clone(),
        &[
            ("LLMGW_MASTER_KEY", master.as_str()),
            ("LLMGW_ADMIN_TOKEN", a.admin_token.as_str()),
            ("LLMGW_DATAPLANE_TOKEN", a.dataplane_token.as_str()),
        ],
    )
    .await;
    b.admin_token = a.admin_token.clone();
    let dp = DataPlane::start(&a.url(), "dp-on-a", &a.dataplane_token).await;
    wait_in_sync(&a, "dp-on-a").await;

    let (mut resp, id, _) = slow_stream(&dp, &key, &SLOW).await;
    let seen = wait_entry(
        &b,
        &id,
        "the request, through the other control plane",
        |r| r.tokens > 0,
    )
    .await;
    assert_eq!(seen.node_id, "dp-on-a");
    let started = Instant::now();
    let answer = cli_json(&b, &["requests", "cancel", &id]).await;
    let (rest, _) = read_to_end(&mut resp, CANCEL_BOUND).await;
    assert!(started.elapsed() <= CANCEL_BOUND, "{:?}", started.elapsed());
    assert_eq!(answer["node_id"], "dp-on-a", "{answer}");
    assert_eq!(answer["confirmed"], true, "{answer}");
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains("[DONE]") && rest.contains("cancelled by an admin"),
        "{rest}"
    );
    let log = logged(&b, &id).await;
    assert_eq!(log["outcome"], "cancelled_by_admin", "{log}");
    wait_gone(&b, &id, WAIT).await;
}

/// A data plane that goes silent (stopped, its connection still open)
/// leaves the view when its entries' lease (10 s) runs out.
#[tokio::test]
async fn a_silent_data_plane_leaves_the_view_within_its_lease() {
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    let (cp, key) = gateway(Db::Sqlite, &mock).await;
    let mut dp = DataPlane::start(&cp.url(), "dp-silent", &cp.dataplane_token).await;
    wait_in_sync(&cp, "dp-silent").await;
    let (resp, id, _) = slow_stream(&dp, &key, &SLOW).await;
    wait_entry(&cp, &id, "the stream", |_| true).await;
    dp.proc().signal("STOP");
    let stopped = Instant::now();
    // The lease, plus a report's renewal interval (a quarter lease) and
    // the last heartbeat's age.
    wait_gone(&cp, &id, Duration::from_secs(15)).await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(5),
        "gone before its lease ran out"
    );
    drop(resp);
}
