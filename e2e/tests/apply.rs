#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! `llmgw export` / `llmgw apply`: applying what was exported changes
//! nothing, a dry run shows the diff without making it, and a real apply is
//! idempotent. On SQLite and on PostgreSQL.

use std::path::Path;

use llmgw_e2e::*;
use serde_json::json;
use serde_yaml_ng::Value;

#[tokio::test]
async fn apply_twice_sqlite() {
    apply_twice(Db::Sqlite).await;
}

#[tokio::test]
async fn apply_twice_postgres() {
    let pg = PgDatabase::create().await;
    apply_twice(Db::Postgres(pg.url.clone())).await;
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
}

/// The same configuration, whatever the key order.
fn same_config(a: &str, b: &str) -> bool {
    let a: serde_json::Value = serde_yaml_ng::from_str(a).unwrap();
    let b: serde_json::Value = serde_yaml_ng::from_str(b).unwrap();
    a == b
}

fn write(path: &Path, v: &Value) {
    std::fs::write(path, serde_yaml_ng::to_string(v).unwrap()).unwrap();
}

fn model<'a>(config: &'a mut Value, name: &str) -> &'a mut Value {
    config["models"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no model {name}"))
}

async fn apply_twice(db: Db) {
    let cp = ControlPlane::start(db, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // Build a configuration with the CLI.
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
            "--api-key",
            "sk-apply-0123456789wxyz",
            "--header",
            "X-Team: research",
        ],
    )
    .await;
    cli_ok(
        &cp,
        &[
            "provider",
            "add",
            "q",
            "--protocol",
            "anthropic",
            "--base-url",
            "http://q.example",
        ],
    )
    .await;
    cli_ok(
        &cp,
        &[
            "model",
            "add",
            "gpt",
            "--target",
            "p:gpt-4o",
            "--target",
            "q:claude",
            "--price-input",
            "1.5",
            "--price-output",
            "6",
        ],
    )
    .await;
    cli_ok(&cp, &["model", "add", "mini", "--target", "p:gpt-4o-mini"]).await;
    cli_ok(&cp, &["key", "create", "ci", "--models", "gpt"]).await;
    // `model add` has no flag for rules: give the first target one through apply.
    let mut config = yaml(&cli_ok(&cp, &["export"]).await);
    model(&mut config, "gpt")["targets"][0]["rules"] = yaml(
        r#"{"all": [{"field": "headers.x-team", "op": "eq", "value": "research"}, {"field": "input_tokens", "op": "gt", "value": 100}]}"#,
    );
    write(Path::new(&path("rules.yaml")), &config);
    let out = cli_ok(&cp, &["apply", "-f", &path("rules.yaml")]).await;
    assert!(out.contains("~ model gpt"), "{out}");
    let m = cli_json(&cp, &["model", "get", "gpt"]).await;
    assert_eq!(
        m["targets"][0]["rules"]["all"][0],
        json!({"field": "headers.x-team", "op": "eq", "value": "research"}),
        "{m}"
    );

    // Export, apply the export: nothing changes.
    let exported = cli_ok(&cp, &["export"]).await;
    assert!(
        exported.contains("****wxyz"),
        "the key is masked:\n{exported}"
    );
    assert!(!exported.contains("sk-apply-0123456789wxyz"));
    assert!(exported.contains("field: headers.x-team"), "{exported}");
    std::fs::write(path("f.yaml"), &exported).unwrap();
    let version = config_version(&cp).await;
    let out = cli_ok(&cp, &["apply", "-f", &path("f.yaml")]).await;
    assert_eq!(out.trim(), "no changes");
    assert_eq!(
        config_version(&cp).await,
        version,
        "a no-op apply keeps the version"
    );
    assert_eq!(cli_ok(&cp, &["export"]).await, exported);

    // Change a base URL and remove a model.
    let mut changed = yaml(&exported);
    changed["providers"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["name"].as_str() == Some("p"))
        .unwrap()["base_url"] = Value::from("http://b.example/v1");
    changed["models"]
        .as_sequence_mut()
        .unwrap()
        .retain(|m| m["name"].as_str() != Some("mini"));
    write(Path::new(&path("g.yaml")), &changed);
    let changed_text = std::fs::read_to_string(path("g.yaml")).unwrap();

    let out = cli_ok(
        &cp,
        &["apply", "--prune", "--dry-run", "-f", &path("g.yaml")],
    )
    .await;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(lines.contains(&"~ provider p"), "{out}");
    assert!(
        lines.contains(&"base_url: http://a.example/v1 -> http://b.example/v1"),
        "{out}"
    );
    assert!(lines.contains(&"- model mini"), "{out}");
    assert_eq!(lines.last(), Some(&"dry run: nothing was applied"), "{out}");
    assert!(
        !out.contains("gpt") && !out.contains("api_key"),
        "only the two changes: {out}"
    );
    assert_eq!(
        cli_ok(&cp, &["export"]).await,
        exported,
        "a dry run changes nothing"
    );
    assert_eq!(config_version(&cp).await, version);

    let out = cli_ok(&cp, &["apply", "--prune", "-f", &path("g.yaml")]).await;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(lines.contains(&"~ provider p"), "{out}");
    assert!(lines.contains(&"- model mini"), "{out}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("applied 2 changes; config version")),
        "{out}"
    );
    let now = cli_ok(&cp, &["export"]).await;
    assert_ne!(now, exported);
    assert!(
        same_config(&now, &changed_text),
        "export after apply:\n{now}\nfile:\n{changed_text}"
    );
    let applied = config_version(&cp).await;
    assert!(applied > version, "an apply publishes a new version");
    let p = cli_json(&cp, &["provider", "get", "p"]).await;
    assert_eq!(p["base_url"], "http://b.example/v1", "{p}");
    assert_eq!(
        p["api_key"], "****wxyz",
        "the masked key kept the stored one: {p}"
    );
    let err = cli_err(&cp, &["model", "get", "mini"]).await;
    assert!(err.contains("not found"), "{err}");

    // The same file again: no changes.
    let out = cli_ok(&cp, &["apply", "--prune", "-f", &path("g.yaml")]).await;
    assert_eq!(out.trim(), "no changes");
    assert_eq!(cli_ok(&cp, &["export"]).await, now);
    assert_eq!(config_version(&cp).await, applied);
}
