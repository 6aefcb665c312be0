#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The model tools (#17) against a real control plane and the mock
//! upstream: `llmgw model test` sends each protocol's tiny request with the
//! provider's key and reports a failing target's status with no secret in
//! its error, and a hung one within its timeout; `llmgw model import`
//! creates models from the provider's listing with `--match` and
//! `--prefix`, changes nothing on a dry run and skips existing models;
//! `llmgw model retarget` shows its diff on a dry run and renames targets
//! in one version. Import and retarget run on SQLite and PostgreSQL. A
//! model test never touches a data plane's outlier state.

use std::time::{Duration, Instant};

use llmgw_e2e::*;
use serde_json::{json, Value};

const KEY: &str = "sk-upstream-secret-7f3a9c";

async fn provider(cp: &ControlPlane, name: &str, protocol: &str, base_url: &str, extra: &[&str]) {
    let mut args = vec![
        "provider",
        "add",
        name,
        "--protocol",
        protocol,
        "--base-url",
        base_url,
        "--api-key",
        KEY,
    ];
    args.extend_from_slice(extra);
    cli_ok(cp, &args).await;
}

/// `llmgw -o json model test ARGS`: whether it succeeded, and its JSON.
async fn model_test(cp: &ControlPlane, args: &[&str]) -> (bool, Value, String) {
    let mut all = vec!["-o", "json", "model", "test"];
    all.extend_from_slice(args);
    let out = cli(cp, &all).await;
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}\n{}", out.stdout, out.stderr));
    (out.ok(), v, out.stderr)
}

#[tokio::test]
async fn model_test_sends_each_protocols_tiny_request() {
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let v1 = mock.base_url();
    let v1beta = format!("{}/v1beta", mock.url());
    provider(&cp, "oa", "openai", &v1, &[]).await;
    provider(&cp, "oc", "openai-chat", &v1, &["--header", "x-org: o-1"]).await;
    provider(&cp, "an", "anthropic", &v1, &[]).await;
    provider(&cp, "ge", "gemini", &v1beta, &[]).await;
    cli_ok(
        &cp,
        &[
            "model", "add", "all", "--target", "oa:m-oa", "--target", "oc:m-oc", "--target",
            "an:m-an", "--target", "ge:m-ge",
        ],
    )
    .await;
    let version = config_version(&cp).await;

    let (ok, v, stderr) = model_test(&cp, &["all"]).await;
    assert!(ok, "{v}\n{stderr}");
    assert_eq!(v["model"], "all");
    assert_eq!(v["type"], "chat");
    let targets = v["targets"].as_array().unwrap();
    let got: Vec<(&str, &str, u64, bool)> = targets
        .iter()
        .map(|t| {
            (
                t["provider"].as_str().unwrap(),
                t["protocol"].as_str().unwrap(),
                t["status"].as_u64().unwrap(),
                t["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("oa", "openai", 200, true),
            ("oc", "openai-chat", 200, true),
            ("an", "anthropic", 200, true),
            ("ge", "gemini", 200, true),
        ],
        "{v}"
    );
    for t in targets {
        assert_eq!(t["error"], "", "{t}");
        assert!(!t["excerpt"].as_str().unwrap().is_empty(), "{t}");
    }
    assert_eq!(
        targets[3]["request"],
        format!("POST {v1beta}/models/m-ge:generateContent")
    );

    // What the mock received: one request per target, in order, each in its
    // protocol, with the provider's key and extra headers.
    let requests = mock.requests();
    let seen: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.method.to_string(), r.uri.path().to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            ("POST".into(), "/v1/responses".into()),
            ("POST".into(), "/v1/chat/completions".into()),
            ("POST".into(), "/v1/messages".into()),
            ("POST".into(), "/v1beta/models/m-ge:generateContent".into()),
        ]
    );
    let body = |i: usize| -> Value { serde_json::from_slice(&requests[i].body).unwrap() };
    assert_eq!(body(0)["model"], "m-oa");
    assert_eq!(body(0)["max_output_tokens"], 16);
    assert_eq!(body(1)["max_tokens"], 1);
    assert_eq!(
        body(1)["messages"],
        json!([{"role": "user", "content": "ping"}])
    );
    assert_eq!(body(2)["max_tokens"], 1);
    assert_eq!(body(3)["generationConfig"]["maxOutputTokens"], 1);
    assert_eq!(
        requests[0].headers["authorization"],
        format!("Bearer {KEY}").as_str()
    );
    assert_eq!(requests[1].headers["x-org"], "o-1");
    assert_eq!(requests[2].headers["x-api-key"], KEY);
    assert_eq!(requests[2].headers["anthropic-version"], "2023-06-01");
    assert_eq!(requests[3].headers["x-goog-api-key"], KEY);
    // A test is no configuration change.
    assert_eq!(config_version(&cp).await, version);

    // An embedding model gets an embedding request.
    cli_ok(
        &cp,
        &[
            "model",
            "add",
            "emb",
            "--target",
            "oa:text-emb",
            "--type",
            "embedding",
        ],
    )
    .await;
    mock.clear();
    let (ok, v, _) = model_test(&cp, &["emb"]).await;
    assert!(ok, "{v}");
    assert_eq!(v["type"], "embedding");
    assert!(
        v["targets"][0]["excerpt"]
            .as_str()
            .unwrap()
            .starts_with("an embedding of "),
        "{v}"
    );
    assert_eq!(mock.requests()[0].uri.path(), "/v1/embeddings");

    // A failing target among healthy ones: each is reported, the command
    // fails, and no error carries the key.
    provider(
        &cp,
        "failing",
        "anthropic",
        &v1,
        &["--header", "x-mock-status: 503"],
    )
    .await;
    provider(
        &cp,
        "refused",
        "openai",
        &v1,
        &["--header", "x-mock-status: 401"],
    )
    .await;
    cli_ok(
        &cp,
        &[
            "model",
            "add",
            "mixed",
            "--target",
            "oc:m-ok",
            "--target",
            "failing:m-x",
            "--target",
            "refused:m-y",
        ],
    )
    .await;
    let (ok, v, stderr) = model_test(&cp, &["mixed"]).await;
    assert!(!ok, "{v}");
    assert!(
        stderr.contains("2 of 3 targets of model 'mixed' failed"),
        "{stderr}"
    );
    let t = &v["targets"];
    assert_eq!(
        (t[0]["ok"].clone(), t[0]["status"].clone()),
        (json!(true), json!(200))
    );
    assert_eq!(
        (t[1]["ok"].clone(), t[1]["status"].clone()),
        (json!(false), json!(503))
    );
    let e1 = t[1]["error"].as_str().unwrap();
    assert!(
        e1.contains("provider 'failing': the upstream answered HTTP 503")
            && e1.contains("POST ")
            && e1.contains("/v1/messages"),
        "{e1}"
    );
    assert_eq!(t[2]["status"], 401);
    let e2 = t[2]["error"].as_str().unwrap();
    assert!(e2.contains("refused the provider's API key"), "{e2}");
    assert!(!v.to_string().contains(KEY), "the key leaked: {v}");

    // The table, for people.
    let out = cli(&cp, &["model", "test", "mixed"]).await;
    assert!(!out.ok());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TARGET", "PROTOCOL", "STATUS", "LATENCY", "RESULT"],
        "{}",
        out.stdout
    );
    assert!(lines[1].starts_with("oc:m-ok "), "{}", out.stdout);
    assert!(
        lines[2].contains(" 503 ") && lines[2].contains("error: "),
        "{}",
        out.stdout
    );

    // A target that never answers is cut at the timeout.
    provider(
        &cp,
        "hung",
        "openai-chat",
        &v1,
        &["--header", "x-mock-hang: true"],
    )
    .await;
    cli_ok(&cp, &["model", "add", "slow", "--target", "hung:m-z"]).await;
    let started = Instant::now();
    let (ok, v, _) = model_test(&cp, &["slow", "--timeout", "300ms"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!ok);
    let t = &v["targets"][0];
    assert_eq!(t["status"], 0, "{t}");
    assert!(t["latency_ms"].as_u64().unwrap() >= 300, "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("no answer to POST")
            && t["error"].as_str().unwrap().contains("within 300 ms"),
        "{t}"
    );

    // An unknown model.
    let err = cli_err(&cp, &["model", "test", "nope"]).await;
    assert!(err.contains("model 'nope' not found"), "{err}");
    assert!(!cp.log().contains(KEY), "the key is in the log");
}

#[tokio::test]
async fn import_and_retarget_sqlite() {
    import_and_retarget(Db::Sqlite).await;
}

#[tokio::test]
async fn import_and_retarget_postgres() {
    let pg = PgDatabase::create().await;
    import_and_retarget(Db::Postgres(pg.url.clone())).await;
}

/// Each model's targets as `provider:upstream`, in priority order.
async fn targets(cp: &ControlPlane) -> Vec<(String, Vec<String>)> {
    let models = cli_json(cp, &["model", "list"]).await;
    models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut ts: Vec<&Value> = m["targets"].as_array().unwrap().iter().collect();
            ts.sort_by_key(|t| t["priority"].as_i64());
            (
                m["name"].as_str().unwrap().to_string(),
                ts.iter()
                    .map(|t| {
                        format!(
                            "{}:{}",
                            t["provider"].as_str().unwrap(),
                            t["upstream_model"].as_str().unwrap()
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

fn named(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    pairs
        .iter()
        .map(|(n, ts)| (n.to_string(), ts.iter().map(|t| t.to_string()).collect()))
        .collect()
}

async fn import_and_retarget(db: Db) {
    let mock = llmgw_mock::start(llmgw_mock::Config {
        models: ["m-b", "m-a", "m-c", "other", "org/m-d"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let cp = ControlPlane::start(db, &[]).await;
    provider(&cp, "up", "openai", &mock.base_url(), &[]).await;
    provider(&cp, "alt", "openai-chat", &mock.base_url(), &[]).await;
    cli_ok(&cp, &["model", "add", "x-m-b", "--target", "alt:kept"]).await;
    let before = targets(&cp).await;
    let version = config_version(&cp).await;

    // A dry run shows the plan and changes nothing.
    let plan = cli_json(
        &cp,
        &[
            "model",
            "import",
            "up",
            "--match",
            "*m-*",
            "--prefix",
            "x-",
            "--dry-run",
        ],
    )
    .await;
    let actions: Vec<(&str, &str, &str)> = plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["upstream_model"].as_str().unwrap(),
                m["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("x-m-a", "m-a", "create"),
            ("x-m-b", "m-b", "exists"),
            ("x-m-c", "m-c", "create"),
            ("x-org/m-d", "org/m-d", "invalid"),
        ],
        "{plan}"
    );
    assert_eq!(plan["config_version"], version);
    assert_eq!(targets(&cp).await, before);
    assert_eq!(config_version(&cp).await, version);
    let text = cli_ok(
        &cp,
        &[
            "model",
            "import",
            "up",
            "--match",
            "*m-*",
            "--prefix",
            "x-",
            "--dry-run",
        ],
    )
    .await;
    assert!(
        text.ends_with("dry run: would create 2 models; nothing changed\n"),
        "{text}"
    );

    // For real: one version for the whole import; the existing model stays.
    let text = cli_ok(
        &cp,
        &["model", "import", "up", "--match", "*m-*", "--prefix", "x-"],
    )
    .await;
    assert!(
        text.ends_with(&format!(
            "created 2 models (configuration version {})\n",
            version + 1
        )),
        "{text}"
    );
    assert_eq!(config_version(&cp).await, version + 1);
    assert_eq!(
        targets(&cp).await,
        named(&[
            ("x-m-a", &["up:m-a"]),
            ("x-m-b", &["alt:kept"]),
            ("x-m-c", &["up:m-c"]),
        ])
    );
    let m = cli_json(&cp, &["model", "get", "x-m-a"]).await;
    assert_eq!(m["type"], "chat");
    assert_eq!(m["enabled"], true);
    // Again: everything exists, nothing changes.
    let again = cli_ok(
        &cp,
        &["model", "import", "up", "--match", "*m-*", "--prefix", "x-"],
    )
    .await;
    assert!(
        again.ends_with("no model to create; nothing changed\n"),
        "{again}"
    );
    assert_eq!(config_version(&cp).await, version + 1);
    // No prefix: the upstream ids are the names.
    let again = cli_ok(&cp, &["model", "import", "up", "--match", "m-?"]).await;
    assert!(again.contains("create  m-a"), "{again}");
    assert_eq!(config_version(&cp).await, version + 2);
    let again = cli_ok(
        &cp,
        &["model", "import", "up", "--match", "m-[", "--prefix", "x-"],
    )
    .await;
    assert_eq!(
        again,
        "no upstream model of provider 'up' matches 'm-['; nothing changed\n"
    );
    let v2 = config_version(&cp).await;
    let err = cli_err(&cp, &["model", "import", "nope"]).await;
    assert!(err.contains("provider 'nope' not found"), "{err}");

    // Retarget: a model using the target twice over two models.
    cli_ok(
        &cp,
        &[
            "model", "add", "two", "--target", "alt:x", "--target", "up:m-a",
        ],
    )
    .await;
    let v3 = config_version(&cp).await;
    assert_eq!(v3, v2 + 1);
    let before = targets(&cp).await;
    let diff = cli_json(
        &cp,
        &[
            "model",
            "retarget",
            "--from",
            "up:m-a",
            "--to",
            "alt:new-a",
            "--dry-run",
        ],
    )
    .await;
    let want = json!([
        {"model": "m-a", "priority": 0, "from_provider": "up", "from_upstream_model": "m-a",
         "to_provider": "alt", "to_upstream_model": "new-a"},
        {"model": "two", "priority": 1, "from_provider": "up", "from_upstream_model": "m-a",
         "to_provider": "alt", "to_upstream_model": "new-a"},
        {"model": "x-m-a", "priority": 0, "from_provider": "up", "from_upstream_model": "m-a",
         "to_provider": "alt", "to_upstream_model": "new-a"},
    ]);
    assert_eq!(diff["changes"], want, "{diff}");
    assert_eq!(targets(&cp).await, before);
    assert_eq!(config_version(&cp).await, v3);
    let text = cli_ok(
        &cp,
        &[
            "model",
            "retarget",
            "--from",
            "up:m-a",
            "--to",
            "alt:new-a",
            "--dry-run",
        ],
    )
    .await;
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["two", "1", "up:m-a", "->", "alt:new-a"]),
        "{text}"
    );
    assert!(
        text.ends_with("dry run: would change 3 targets in 3 models; nothing changed\n"),
        "{text}"
    );

    let text = cli_ok(
        &cp,
        &["model", "retarget", "--from", "up:m-a", "--to", "alt:new-a"],
    )
    .await;
    assert!(
        text.ends_with(&format!(
            "changed 3 targets in 3 models (configuration version {})\n",
            v3 + 1
        )),
        "{text}"
    );
    assert_eq!(config_version(&cp).await, v3 + 1);
    let after = targets(&cp).await;
    let of = |name: &str| after.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(of("two"), ["alt:x", "alt:new-a"]);
    assert_eq!(of("x-m-a"), ["alt:new-a"]);
    assert_eq!(of("x-m-c"), ["up:m-c"]);

    // A no-op says so, and unknown providers are refused.
    let text = cli_ok(
        &cp,
        &["model", "retarget", "--from", "up:m-a", "--to", "alt:new-a"],
    )
    .await;
    assert_eq!(text, "no model uses target up:m-a; nothing changed\n");
    let err = cli_err(
        &cp,
        &["model", "retarget", "--from", "up:m-c", "--to", "nope:m"],
    )
    .await;
    assert!(err.contains("--to: provider 'nope' not found"), "{err}");
    let err = cli_err(
        &cp,
        &["model", "retarget", "--from", "gone:m", "--to", "up:m"],
    )
    .await;
    assert!(err.contains("--from: provider 'gone' not found"), "{err}");
    let err = cli_err(&cp, &["model", "retarget", "--from", "up", "--to", "up:m"]).await;
    assert!(err.contains("give PROVIDER:UPSTREAM_MODEL"), "{err}");
    assert_eq!(config_version(&cp).await, v3 + 1);
}

/// A model test runs in the control plane, which keeps no outlier state,
/// and no data plane sees it: after more failed tests of a target than
/// would eject it in a data plane, the data plane still tries it first.
#[tokio::test]
async fn a_model_test_leaves_the_data_planes_outlier_state_alone() {
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    provider(&cp, "up", "openai-chat", &mock.base_url(), &[]).await;
    cli_ok(
        &cp,
        &[
            "model",
            "add",
            "pair",
            "--target",
            "up:m-first",
            "--target",
            "up:m-second",
        ],
    )
    .await;
    let key = cli_json(&cp, &["key", "create", "k"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let dp = DataPlane::start(&cp.url(), "dp-1", &cp.dataplane_token).await;
    wait_in_sync(&cp, "dp-1").await;

    // Ten failed tests of the first target (a data plane ejects a target
    // after five attempts, half of them failed).
    let failures = 10;
    mock.set_script(
        "m-first",
        vec![
            llmgw_mock::Step {
                status: Some(503),
                ..Default::default()
            };
            failures
        ],
    );
    for _ in 0..failures {
        let (ok, v, _) = model_test(&cp, &["pair"]).await;
        assert!(!ok);
        assert_eq!(v["targets"][0]["status"], 503, "{v}");
        assert_eq!(v["targets"][1]["status"], 200, "{v}");
    }
    assert_eq!(mock.requests_for("m-first").len(), failures);

    // The data plane never saw them: its first request goes to the first
    // target, which answers.
    mock.clear();
    let status = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", dp.addr))
        .bearer_auth(&key)
        .json(&json!({"model": "pair", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let seen: Vec<Option<String>> = mock.requests().iter().map(|r| r.model.clone()).collect();
    assert_eq!(seen, [Some("m-first".to_string())]);
}
