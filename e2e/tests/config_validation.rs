#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! One validation rule everywhere, with the real binaries: hostile base
//! URLs are refused by the admin API (the CLI's path) and by `apply`
//! without echoing credentials; a weight of 0 drains a target end to end;
//! an oversized rule fails with a message naming the field; `apply` deletes
//! nothing without `--prune`, and emptying everything needs
//! `--allow-empty`.

use std::path::Path;

use llmgw_e2e::*;
use serde_json::{json, Value};

/// Writes `config` as JSON (which `apply` reads as YAML) and returns its path.
fn write_config(dir: &Path, name: &str, config: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, config.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Every refused form: (URL, what the message must say).
const BAD_URLS: &[(&str, &str)] = &[
    ("http://a.example/v1\r\nX-Injected: 1", "control character"),
    ("http://a.example/\nv1", "control character"),
    ("http://a.example/\tv1", "control character"),
    ("http://a.example/\u{1}v1", "control character"),
    ("http://a.example/v 1", "whitespace"),
    (" http://a.example/v1", "whitespace"),
    ("http://a.example/v1 ", "whitespace"),
    ("http:///v1", "empty host"),
    ("http://@a.example/v1", "empty user info"),
    ("ftp://user:SECRET@a.example/x", "http or https"),
    ("https://user:SECRET@a.example/x", "credentials"),
];

fn assert_refused(err: &str, url: &str, want: &str) {
    assert!(
        err.contains("base_url"),
        "{url:?}: the field is named: {err}"
    );
    assert!(err.contains(want), "{url:?}: want {want:?} in {err}");
    assert!(
        !err.contains("SECRET"),
        "{url:?}: credentials echoed: {err}"
    );
}

#[tokio::test]
async fn bad_base_urls_are_refused_by_the_api_and_apply() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    // Stored in its normalized form.
    cli_ok(
        &cp,
        &[
            "provider",
            "add",
            "good",
            "--protocol",
            "openai",
            "--base-url",
            "HTTPS://API.Example.COM:443/v1/",
        ],
    )
    .await;
    let p = cli_json(&cp, &["provider", "get", "good"]).await;
    assert_eq!(p["base_url"], "https://api.example.com/v1", "{p}");

    for (url, want) in BAD_URLS {
        // Through the admin API, as the CLI and the dashboard call it.
        let err = cli_err(
            &cp,
            &[
                "provider",
                "add",
                "bad",
                "--protocol",
                "openai",
                "--base-url",
                url,
            ],
        )
        .await;
        assert_refused(&err, url, want);
        let err = cli_err(&cp, &["provider", "update", "good", "--base-url", url]).await;
        assert_refused(&err, url, want);
        // Through apply.
        let config = json!({"providers": [
            {"name": "bad", "protocol": "openai", "base_url": url, "enabled": true}
        ]});
        let file = write_config(dir.path(), "bad.json", &config);
        let err = cli_err(&cp, &["apply", "-f", &file]).await;
        assert_refused(&err, url, want);
        assert!(err.contains("provider 'bad'"), "the object is named: {err}");
    }
    let list = cli_json(&cp, &["provider", "list"]).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good"], "nothing invalid was stored");
    let p = cli_json(&cp, &["provider", "get", "good"]).await;
    assert_eq!(p["base_url"], "https://api.example.com/v1", "{p}");
    assert!(
        !cp.log().contains("SECRET"),
        "the control plane logged a credential"
    );
}

#[tokio::test]
async fn an_oversized_rule_names_the_field() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let model = |rules: Value| {
        json!({
            "providers": [{"name": "p", "protocol": "openai",
                           "base_url": "http://a.example/v1", "enabled": true}],
            "models": [{"name": "m", "enabled": true, "targets": [
                {"provider": "p", "upstream_model": "x", "enabled": true, "rules": rules}
            ]}]
        })
    };
    // 100 KB of regex: refused before parsing, naming the field and limit.
    let huge = json!({"field": "key", "op": "regex", "value": "a".repeat(100 * 1024)});
    let file = write_config(dir.path(), "huge.json", &model(huge));
    let err = cli_err(&cp, &["apply", "-f", &file]).await;
    assert!(err.contains("model 'm'"), "{err}");
    assert!(err.contains("target 1 rules is"), "{err}");
    assert!(err.contains("the limit is 16384"), "{err}");
    assert!(!err.contains("h2 protocol error"), "{err}");
    assert!(
        err.len() < 4096,
        "the message is short: {} bytes",
        err.len()
    );
    // An invalid regex under the limit: the error stays readable even
    // though the regex library's message quotes the pattern.
    let bad =
        json!({"field": "key", "op": "regex", "value": format!("({}", "b".repeat(12 * 1024))});
    let file = write_config(dir.path(), "bad.json", &model(bad));
    let err = cli_err(&cp, &["apply", "-f", &file]).await;
    assert!(err.contains("invalid regex"), "{err}");
    assert!(!err.contains("h2 protocol error"), "{err}");
    assert!(
        err.len() < 4096,
        "the message is bounded: {} bytes",
        err.len()
    );
    assert_eq!(
        cli_json(&cp, &["provider", "list"]).await,
        json!([]),
        "the failed apply changed nothing"
    );
}

#[tokio::test]
async fn apply_deletes_only_with_prune() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    cli_ok(
        &cp,
        &[
            "provider",
            "add",
            "p",
            "--protocol",
            "openai",
            "--base-url",
            "http://a.example/v1",
        ],
    )
    .await;
    cli_ok(&cp, &["model", "add", "m", "--target", "p:x"]).await;
    cli_ok(&cp, &["key", "create", "k"]).await;
    let exported = cli_ok(&cp, &["export"]).await;
    let version = config_version(&cp).await;

    // `{}` and `providers: []` without --prune delete nothing.
    for (name, config) in [
        ("empty.json", json!({})),
        ("none.json", json!({"providers": []})),
    ] {
        let file = write_config(dir.path(), name, &config);
        let out = cli_ok(&cp, &["apply", "-f", &file]).await;
        assert!(out.contains("no changes"), "{out}");
        assert!(
            out.contains(
                "kept (not in the file; --prune deletes them): provider p, model m, api_key k"
            ),
            "{out}"
        );
        assert_eq!(cli_ok(&cp, &["export"]).await, exported);
        assert_eq!(config_version(&cp).await, version);
    }
    let empty = write_config(dir.path(), "empty.json", &json!({}));

    // A prune of everything needs --allow-empty.
    let err = cli_err(&cp, &["apply", "--prune", "-f", &empty]).await;
    assert!(
        err.contains("would delete every provider, model and API key"),
        "{err}"
    );
    assert!(err.contains("--allow-empty"), "{err}");
    assert_eq!(cli_ok(&cp, &["export"]).await, exported);

    // --dry-run shows the deletions.
    let out = cli_ok(
        &cp,
        &[
            "apply",
            "--prune",
            "--allow-empty",
            "--dry-run",
            "-f",
            &empty,
        ],
    )
    .await;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    for want in [
        "- provider p",
        "- model m",
        "- api_key k",
        "dry run: nothing was applied",
    ] {
        assert!(lines.contains(&want), "want {want:?} in:\n{out}");
    }
    assert_eq!(cli_ok(&cp, &["export"]).await, exported);

    // A prune of part of it deletes what the file leaves out.
    let mut config: Value =
        serde_json::from_str(&cli_ok(&cp, &["-o", "json", "export"]).await).unwrap();
    config["api_keys"] = json!([]);
    let file = write_config(dir.path(), "nokeys.json", &config);
    let out = cli_ok(&cp, &["apply", "--prune", "-f", &file]).await;
    assert!(out.contains("- api_key k"), "{out}");
    assert_eq!(cli_json(&cp, &["key", "list"]).await, json!([]));
    assert_eq!(
        cli_json(&cp, &["model", "list"])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // And with --allow-empty, everything.
    let out = cli_ok(&cp, &["apply", "--prune", "--allow-empty", "-f", &empty]).await;
    assert!(
        out.contains("- provider p") && out.contains("- model m"),
        "{out}"
    );
    assert_eq!(cli_json(&cp, &["provider", "list"]).await, json!([]));
}

/// POSTs a chat completion for `model` to the data plane; the status and
/// the answer's `model` (the upstream model that served it).
async fn chat(http: &reqwest::Client, dp: &DataPlane, key: &str, model: &str) -> (u16, String) {
    let r = http
        .post(format!("http://{}/v1/chat/completions", dp.addr))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["model"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn weight_zero_drains_a_target() {
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    // A port nothing listens on: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);

    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let provider = |name: &str, url: &str| json!({"name": name, "protocol": "openai", "base_url": url, "enabled": true});
    let target = |provider: &str, upstream: &str, weight: u32| {
        json!({"provider": provider, "upstream_model": upstream, "priority": 0,
               "weight": weight, "enabled": true})
    };
    let config = json!({
        "providers": [provider("live", &mock.base_url()), provider("dead", &dead_url)],
        "models": [
            // Traffic goes only to the weighted target of the priority.
            {"name": "m", "enabled": true, "max_attempts": 1, "targets": [
                target("live", "up-drained", 0), target("live", "up-live", 1)]},
            // The drained target serves when it is the only healthy one.
            {"name": "failover", "enabled": true, "max_attempts": 1, "targets": [
                target("dead", "up-dead", 1), target("live", "up-spare", 0)]},
        ]
    });
    let file = write_config(dir.path(), "drain.json", &config);
    cli_ok(&cp, &["apply", "-f", &file]).await;
    // `weight: 0` in the file is stored as 0, not read as "unset".
    let m = cli_json(&cp, &["model", "get", "m"]).await;
    assert_eq!(m["targets"][0]["weight"], 0, "{m}");
    assert!(cli_ok(&cp, &["export"]).await.contains("weight: 0"));
    let shown = cli_ok(&cp, &["model", "get", "m"]).await;
    assert!(shown.contains("0 (drained)"), "{shown}");
    // The route dry run says so.
    let explained = cli_json(&cp, &["route", "explain", "m"]).await;
    let drained = &explained["candidates"][0];
    assert_eq!(drained["upstream_model"], "up-drained", "{explained}");
    assert_eq!(
        drained["order"], 1,
        "tried after the weighted one: {explained}"
    );
    assert!(
        drained["reason"]
            .as_str()
            .unwrap()
            .contains("drained (weight 0)"),
        "{explained}"
    );
    // The CLI takes --weights 0 too.
    cli_ok(&cp, &["model", "update", "failover", "--weights", "1,0"]).await;
    let f = cli_json(&cp, &["model", "get", "failover"]).await;
    assert_eq!(f["targets"][1]["weight"], 0, "{f}");

    let key = cli_json(&cp, &["key", "create", "k"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let dp = DataPlane::start(&cp.url(), "dp-drain", &cp.dataplane_token).await;
    wait_in_sync(&cp, "dp-drain").await;

    let http = reqwest::Client::new();
    for _ in 0..12 {
        assert_eq!(
            chat(&http, &dp, &key, "m").await,
            (200, "up-live".to_string())
        );
    }
    assert!(
        mock.requests_for("up-drained").is_empty(),
        "the drained target got traffic"
    );
    assert_eq!(mock.requests_for("up-live").len(), 12);

    for _ in 0..3 {
        assert_eq!(
            chat(&http, &dp, &key, "failover").await,
            (200, "up-spare".to_string())
        );
    }
    assert_eq!(mock.requests_for("up-spare").len(), 3);
}
