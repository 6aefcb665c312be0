#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! Replay and the playground (#17), with the real binaries: a logged
//! request that failed (its model's only target is made to fail by the
//! mock) replayed with `llmgw logs replay` against a working model
//! succeeds, as the original's key, and its log says origin "replay" and
//! links to the original (`llmgw logs --replay-of` lists the replays);
//! `--key` sends it as another key, a revoked key
//! gets the data plane's 401, an unknown key is NOT_FOUND; a log whose
//! body was not logged cannot be replayed and the error says why; the
//! playground streams an answer for each client protocol (OpenAI chat,
//! Responses, Anthropic, Gemini) and logs it with origin "playground"; a
//! bad path or header is INVALID_ARGUMENT; a playground client that
//! leaves mid-stream leaves a client's cancel in the log. No grant token shows in either
//! plane's output or in a log row. On SQLite and PostgreSQL.

use std::collections::HashMap;

use llmgw_e2e::*;
use llmgw_proto::v1::{
    admin_client::AdminClient, run_chunk::Part, PlaygroundRequest, RunChunk, RunEnd, RunHead,
};
use serde_json::{json, Value};
use tonic::Code;

/// The prefix of every grant token: it must show nowhere.
const GRANT_PREFIX: &str = "llmgw-grant-";
/// The planes' log filter: debug lines of our crates.
const DEBUG: &str = "info,llmgw_controlplane=debug,llmgw_dataplane=debug";

/// A control plane with the mock as provider; models `good` (answers) and
/// `broken` (its only target answers 400); keys `replayer`, `other`,
/// `gone` (revoked later) and `quiet` (bodies not logged). Returns the
/// secrets by key name.
async fn gateway(db: Db, mock: &llmgw_mock::MockServer) -> (ControlPlane, HashMap<String, String>) {
    // Our crates' debug lines too: no grant token may show in them.
    let cp = ControlPlane::start(db, &[("RUST_LOG", DEBUG)]).await;
    add_mock_provider(&cp, &mock.base_url()).await;
    cli_ok(&cp, &["model", "add", "good", "--target", "mock:good-up"]).await;
    cli_ok(
        &cp,
        &["model", "add", "broken", "--target", "mock:broken-up"],
    )
    .await;
    // A client error is not retried: one step per request.
    mock.set_script(
        "broken-up",
        vec![
            llmgw_mock::Step {
                status: Some(400),
                ..Default::default()
            };
            20
        ],
    );
    // A long stream, for a playground client that leaves.
    cli_ok(&cp, &["model", "add", "slow", "--target", "mock:slow-up"]).await;
    mock.set_script(
        "slow-up",
        vec![llmgw_mock::Step {
            chunks: Some(400),
            chunk_delay_ms: Some(40),
            ..Default::default()
        }],
    );
    let mut keys = HashMap::new();
    for (name, extra) in [
        ("replayer", None),
        ("other", None),
        ("gone", None),
        ("quiet", Some("--no-log-bodies")),
    ] {
        let mut args = vec!["key", "create", name];
        args.extend(extra);
        let secret = cli_json(&cp, &args).await["key"]
            .as_str()
            .unwrap()
            .to_string();
        keys.insert(name.to_string(), secret);
    }
    (cp, keys)
}

/// A non-streaming chat request through `dp`: its status and request id.
async fn chat(dp: &DataPlane, key: &str, model: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", dp.addr))
        .bearer_auth(key)
        .header("openai-beta", "replay-test")
        .json(&json!({"model": model,
            "messages": [{"role": "user", "content": "say something"}]}))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-llmgw-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    (resp.status().as_u16(), id)
}

async fn admin(cp: &ControlPlane) -> AdminClient<tonic::transport::Channel> {
    AdminClient::connect(cp.url()).await.unwrap()
}

fn authed<T>(cp: &ControlPlane, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", cp.admin_token).parse().unwrap(),
    );
    req
}

/// What a RunChunk stream said: the head, the body, the end.
async fn collect(mut stream: tonic::Streaming<RunChunk>) -> (RunHead, Vec<u8>, RunEnd, usize) {
    let (mut head, mut body, mut end, mut data_chunks) = (None, Vec::new(), None, 0);
    while let Some(c) = stream.message().await.unwrap() {
        match c.part.unwrap() {
            Part::Head(h) => {
                assert!(head.is_none() && body.is_empty(), "the head comes first");
                head = Some(h);
            }
            Part::Data(d) => {
                assert!(head.is_some(), "data before the head");
                data_chunks += 1;
                body.extend_from_slice(&d);
            }
            Part::End(e) => end = Some(e),
        }
    }
    (head.unwrap(), body, end.expect("no end"), data_chunks)
}

async fn playground(
    cp: &ControlPlane,
    key: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Result<tonic::Streaming<RunChunk>, tonic::Status> {
    let mut client = admin(cp).await;
    client
        .playground(authed(
            cp,
            PlaygroundRequest {
                key: key.into(),
                path: path.into(),
                body: body.to_string().into_bytes(),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
                node_id: String::new(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// A playground case: path, headers, body, the log's client protocol and
/// what the stream's last event carries.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Value,
    &'static str,
    &'static str,
);

async fn replay_and_playground(db: Db) {
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    let (cp, keys) = gateway(db, &mock).await;
    let dp = DataPlane::start_with(DpOptions {
        control_plane: cp.url(),
        node_id: "dp-replay".into(),
        token: Some(cp.dataplane_token.clone()),
        env: vec![("RUST_LOG".into(), DEBUG.into())],
        ..DpOptions::default()
    })
    .await;
    wait_in_sync(&cp, "dp-replay").await;

    // The original: a failure.
    let (status, original) = chat(&dp, &keys["replayer"], "broken").await;
    assert_eq!(status, 400);
    let log = logged(&cp, &original).await;
    assert_eq!(log["status"], 400);
    assert!(
        log["origin"].as_str().unwrap_or_default().is_empty(),
        "{log}"
    );

    // Replayed against a working model, as the original's key, with JSON.
    let v = cli_json(&cp, &["logs", "replay", &original, "--model", "good"]).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["replay_of"], original.as_str());
    assert_eq!(v["node_id"], "dp-replay");
    assert_eq!(v["key"], "replayer");
    assert_eq!(v["path"], "/v1/chat/completions");
    assert!(v["error"].as_str().unwrap().is_empty(), "{v}");
    assert!(
        v["body"].as_str().unwrap().contains("chat.completion"),
        "{v}"
    );
    assert!(v["headers"]["content-type"]
        .as_str()
        .unwrap()
        .starts_with("application/json"));
    let replay = v["request_id"].as_str().unwrap().to_string();
    assert!(!replay.is_empty() && replay != original);
    assert_eq!(v["headers"]["x-llmgw-request-id"], replay.as_str());
    let r = logged(&cp, &replay).await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["origin"], "replay");
    assert_eq!(r["replay_of"], original.as_str());
    assert_eq!(r["key"], "replayer");
    assert_eq!(r["model"], "good");
    // The body is the original's but for its model; the protocol headers
    // the original sent are sent again.
    let sent: Value = serde_json::from_str(r["request_body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["messages"][0]["content"], "say something");
    assert_eq!(r["request_headers"]["openai-beta"], "replay-test");

    // For people: the head, the body as it streams, the end and a hint;
    // as another key.
    let text = cli_ok(
        &cp,
        &[
            "logs", "replay", &original, "--model", "good", "--key", "other",
        ],
    )
    .await;
    let head = text.lines().next().unwrap();
    assert!(
        head.starts_with("HTTP 200 · request ")
            && head.contains("· data plane dp-replay · key other · POST /v1/chat/completions"),
        "{text}"
    );
    assert!(
        text.contains("chat.completion") && text.contains("ttfb "),
        "{text}"
    );
    let as_other = text
        .lines()
        .find_map(|l| l.strip_prefix("see the new request's log: llmgw logs show "))
        .unwrap_or_else(|| panic!("no hint in:\n{text}"))
        .to_string();
    let o = logged(&cp, &as_other).await;
    assert_eq!(
        (o["key"].as_str(), o["origin"].as_str()),
        (Some("other"), Some("replay"))
    );
    let shown = cli_ok(&cp, &["logs", "show", &as_other]).await;
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("origin") && l.ends_with("replay")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("replay of") && l.ends_with(original.as_str())),
        "{shown}"
    );

    // The original's replays, and only those.
    let listed = cli_json(&cp, &["logs", "--replay-of", &original]).await;
    let mut ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![replay.as_str(), as_other.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{listed}");

    // The original again as it was: it fails the same way, and the CLI
    // says so after printing.
    let out = cli(&cp, &["logs", "replay", &original]).await;
    assert!(!out.ok());
    assert!(out.stdout.starts_with("HTTP 400"), "{}", out.stdout);
    assert!(
        out.stderr.contains("answered with HTTP 400"),
        "{}",
        out.stderr
    );

    // A revoked key: the data plane refuses it as usual.
    cli_ok(&cp, &["key", "revoke", "gone"]).await;
    wait_in_sync(&cp, "dp-replay").await;
    let out = cli(
        &cp,
        &[
            "-o", "json", "logs", "replay", &original, "--model", "good", "--key", "gone",
        ],
    )
    .await;
    assert!(!out.ok());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["status"], 401, "{v}");
    assert!(
        v["body"].as_str().unwrap().contains("invalid API key"),
        "{v}"
    );
    // Refused, it is still the replay: logged (not as anonymous traffic)
    // and linked to its original, under the key it was sent as.
    let l = logged(&cp, v["request_id"].as_str().unwrap()).await;
    assert_eq!(l["status"], 401, "{l}");
    assert_eq!(l["origin"], "replay", "{l}");
    assert_eq!(l["replay_of"], original.as_str(), "{l}");
    assert_eq!(l["key"], "gone", "{l}");
    // An unknown key is the admin's mistake.
    let e = cli_err(&cp, &["logs", "replay", &original, "--key", "nobody"]).await;
    assert!(e.contains("no client key named 'nobody'"), "{e}");
    // An unknown log.
    let e = cli_err(
        &cp,
        &["logs", "replay", "01900000-0000-7000-8000-000000000000"],
    )
    .await;
    assert!(e.contains("not found"), "{e}");

    // A body that was not logged cannot be sent again; the error says why.
    let (status, quiet) = chat(&dp, &keys["quiet"], "good").await;
    assert_eq!(status, 200);
    logged(&cp, &quiet).await;
    let mut client = admin(&cp).await;
    let e = client
        .replay_log(authed(
            &cp,
            llmgw_proto::v1::ReplayLogRequest {
                id: quiet.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message()
            .contains("its body was not logged (body logging is off for key 'quiet'"),
        "{}",
        e.message()
    );
    let e = cli_err(&cp, &["logs", "replay", &quiet]).await;
    assert!(e.contains("body logging is off for key 'quiet'"), "{e}");

    // The playground: one streamed answer per client protocol.
    let messages = json!([{"role": "user", "content": "hello"}]);
    let cases: [Case; 4] = [
        (
            "/v1/chat/completions",
            &[],
            json!({"model": "good", "stream": true, "messages": messages}),
            "openai-chat",
            "[DONE]",
        ),
        (
            "/v1/responses",
            &[("openai-beta", "responses=v1")],
            json!({"model": "good", "stream": true, "input": "hello"}),
            "openai-responses",
            "response.completed",
        ),
        (
            "/v1/messages",
            &[("anthropic-version", "2023-06-01")],
            json!({"model": "good", "stream": true, "max_tokens": 100, "messages": messages}),
            "anthropic",
            "message_stop",
        ),
        (
            "/v1beta/models/good:streamGenerateContent?alt=sse",
            &[],
            json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}),
            "gemini",
            "finishReason",
        ),
    ];
    for (path, headers, body, protocol, last) in cases {
        let stream = playground(&cp, "replayer", path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
        let (head, body, end, chunks) = collect(stream).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(head.status, 200, "{path}: {text}");
        assert_eq!((head.path.as_str(), head.key.as_str()), (path, "replayer"));
        assert_eq!(head.node_id, "dp-replay");
        assert!(
            head.headers["content-type"].starts_with("text/event-stream"),
            "{path}: {:?}",
            head.headers
        );
        assert!(text.contains(last), "{path}: {text}");
        assert!(chunks >= 1 && end.error.is_empty(), "{path}: {end:?}");
        assert!(end.latency_ms >= end.ttfb_ms, "{end:?}");
        let l = logged(&cp, &head.request_id).await;
        assert_eq!(l["origin"], "playground", "{path}: {l}");
        assert!(l["replay_of"].as_str().unwrap_or_default().is_empty());
        assert_eq!(l["protocol"], protocol, "{path}");
        assert_eq!(l["stream"], true, "{path}");
        assert_eq!(l["key"], "replayer");
        for v in [&l["request_headers"], &l["response_headers"]] {
            assert!(!v.to_string().contains(GRANT_PREFIX), "{path}: {v}");
        }
        // Not even the grant's tail, as a client key's mask would show.
        assert_eq!(l["request_headers"]["authorization"], "****", "{path}: {l}");
    }
    // A path the data plane does not proxy, a header that is not a
    // protocol's, an unknown key.
    let e = playground(&cp, "replayer", "/v1/models", &[], json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("path '/v1/models'"), "{}", e.message());
    let e = playground(
        &cp,
        "replayer",
        "/v1/chat/completions",
        &[("x-api-key", "sk-x")],
        json!({"model": "good"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("header 'x-api-key'"),
        "{}",
        e.message()
    );
    let e = playground(&cp, "nobody", "/v1/messages", &[], json!({"model": "good"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // A client that leaves mid-stream: the request to the data plane is
    // dropped, which logs it as a client's cancel.
    let mut stream = playground(
        &cp,
        "replayer",
        "/v1/chat/completions",
        &[],
        json!({"model": "slow", "stream": true, "messages": messages}),
    )
    .await
    .unwrap();
    let Some(Part::Head(head)) = stream.message().await.unwrap().unwrap().part else {
        panic!("no head first");
    };
    assert_eq!(head.status, 200);
    let Some(Part::Data(_)) = stream.message().await.unwrap().unwrap().part else {
        panic!("no data after the head");
    };
    drop(stream);
    let left = poll(WAIT, "the left stream's log", || async {
        let out = cli(&cp, &["-o", "json", "logs", "get", &head.request_id]).await;
        out.ok()
            .then(|| serde_json::from_str::<Value>(&out.stdout).unwrap())
    })
    .await;
    assert_eq!(left["outcome"], "cancelled_by_client", "{left}");
    assert_eq!(left["origin"], "playground");

    // No grant token anywhere: either plane's output, or the log rows.
    for id in [&replay, &as_other] {
        let row = logged(&cp, id).await.to_string();
        assert!(!row.contains(GRANT_PREFIX), "{row}");
    }
    // (The output does speak of the grants, by id.)
    assert!(
        dp.log().contains("grant from the control plane"),
        "{}",
        dp.log()
    );
    assert!(!dp.log().contains(GRANT_PREFIX), "{}", dp.log());
    assert!(!cp.log().contains(GRANT_PREFIX), "{}", cp.log());
}

#[tokio::test]
async fn replay_and_playground_on_sqlite() {
    replay_and_playground(Db::Sqlite).await;
}

#[tokio::test]
async fn replay_and_playground_on_postgres() {
    let pg = PgDatabase::create().await;
    replay_and_playground(Db::Postgres(pg.url.clone())).await;
}
