#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Limits (#15) through the `llmgw` binary against a real control plane:
//! the limit flags on create and update of keys, models and providers (an
//! update merges: a flag replaces, 0 removes, what is not given stays),
//! `key update`, `limits default`, how `get` and `list` show limits, the
//! errors of bad values (from the CLI and from the server),
//! export/apply carrying limits with per-field changes, and `llmgw
//! limits` and `reset-spend` against the control plane's quota runtime.

use llmgw_e2e::*;
use serde_json::{json, Value};

#[tokio::test]
async fn limit_flags_sqlite() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let p = cli_json(
        &cp,
        &[
            "provider",
            "create",
            "up",
            "--protocol",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--tpm",
            "100000",
            "--on-outage",
            "closed",
        ],
    )
    .await;
    assert_eq!(p["limits"]["tpm"], 100_000, "{p}");
    assert_eq!(p["limits"]["on_outage"], "closed", "{p}");
    let m = cli_json(
        &cp,
        &[
            "model",
            "create",
            "gpt",
            "--target",
            "up:gpt-4o",
            "--max-concurrency",
            "3",
        ],
    )
    .await;
    assert_eq!(m["limits"]["max_concurrency"], 3, "{m}");
    let k = cli_json(
        &cp,
        &[
            "key",
            "create",
            "team",
            "--rpm",
            "10",
            "--budget",
            "0.05",
            "--budget-period",
            "day",
            "--window-ms",
            "1000",
        ],
    )
    .await;
    let l = &k["limits"];
    assert_eq!(
        (
            l["rpm"].clone(),
            l["budget_micros"].clone(),
            l["budget_period"].clone()
        ),
        (json!(10), json!(50_000), json!("day")),
        "{k}"
    );
    assert_eq!(l["window_ms"], 1000, "{k}");

    // An update merges.
    let k = cli_json(
        &cp,
        &["key", "update", "team", "--rpm", "0", "--tpm", "500"],
    )
    .await;
    let l = &k["limits"];
    assert_eq!(
        (l["rpm"].clone(), l["tpm"].clone()),
        (Value::Null, json!(500)),
        "{k}"
    );
    assert_eq!(l["budget_micros"], 50_000, "the budget stays: {k}");
    let k = cli_json(
        &cp,
        &[
            "key",
            "update",
            "team",
            "--models",
            "gpt",
            "--log-bodies",
            "false",
        ],
    )
    .await;
    assert_eq!(k["models"], json!(["gpt"]), "{k}");
    assert_eq!(k["log_bodies"], false, "{k}");
    assert_eq!(k["limits"]["tpm"], 500, "limits stay: {k}");
    let k = cli_json(&cp, &["key", "update", "team", "--all-models"]).await;
    assert_eq!(k["models"], json!([]), "{k}");
    let m = cli_json(&cp, &["model", "update", "gpt", "--rpm", "60"]).await;
    assert_eq!(
        (
            m["limits"]["rpm"].clone(),
            m["limits"]["max_concurrency"].clone()
        ),
        (json!(60), json!(3)),
        "{m}"
    );
    let p = cli_json(
        &cp,
        &["provider", "update", "up", "--tpm", "0", "--budget", "25"],
    )
    .await;
    assert_eq!(p["limits"]["tpm"], Value::Null, "{p}");
    assert_eq!(p["limits"]["budget_micros"], 25_000_000, "{p}");

    // Tables show them on one line.
    let got = cli_ok(&cp, &["key", "get", "team"]).await;
    assert!(
        got.lines()
            .any(|l| l.starts_with("limits ")
                && l.ends_with("tpm=500 budget=0.05USD/day window=1000ms")),
        "{got}"
    );
    cli_ok(&cp, &["key", "create", "plain"]).await;
    let list = cli_ok(&cp, &["key", "list"]).await;
    assert!(list.lines().next().unwrap().contains(" LIMITS "), "{list}");
    let plain = list.lines().find(|l| l.starts_with("plain ")).unwrap();
    assert!(plain.contains(" default "), "a key without limits: {list}");
    let models = cli_ok(&cp, &["model", "list"]).await;
    assert!(models.contains("rpm=60 concurrency=3"), "{models}");
    let providers = cli_ok(&cp, &["provider", "list"]).await;
    assert!(
        providers.contains("budget=25USD/month on_outage=closed"),
        "{providers}"
    );

    // The default key limits.
    let out = cli_ok(
        &cp,
        &["limits", "default", "--rpm", "100", "--budget", "1.5"],
    )
    .await;
    assert_eq!(
        out.trim(),
        "default key limits: rpm=100 budget=1.5USD/month"
    );
    let d = cli_json(&cp, &["limits", "default", "--rpm", "0"]).await;
    assert_eq!(
        d,
        json!({"rpm": null, "tpm": null, "max_concurrency": null,
        "budget_micros": 1_500_000, "budget_period": "month", "window_ms": 0, "on_outage": ""})
    );

    // Bad values: the CLI refuses some before any request, the server the rest.
    for (args, needle) in [
        (&["key", "update", "team", "--budget", "-1"][..], "-1"),
        (
            &["key", "update", "team", "--budget", "0.0000001"],
            "more than six decimals",
        ),
        (
            &["key", "update", "team", "--budget-period", "year"],
            "year",
        ),
        (&["key", "update", "team"], "required"),
        (&["key", "update", "team", "--window-ms", "5"], "window_ms"),
        (
            &[
                "key",
                "update",
                "team",
                "--rpm",
                "0",
                "--tpm",
                "0",
                "--budget",
                "0",
                "--on-outage",
                "open",
            ],
            "on_outage",
        ),
        (
            &[
                "limits",
                "default",
                "--budget",
                "0",
                "--budget-period",
                "week",
            ],
            "budget_period needs a budget",
        ),
        (&["limits", "default"], "give at least one limit flag"),
        (&["key", "update", "nobody", "--rpm", "1"], "not found"),
    ] {
        let err = cli_err(&cp, args).await;
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    // Export and apply carry limits; the changes are listed per field.
    let exported = cli_ok(&cp, &["export"]).await;
    assert!(exported.contains("budget_micros: 50000"), "{exported}");
    assert!(exported.contains("default_key_limits:"), "{exported}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.yaml");
    std::fs::write(&file, &exported).unwrap();
    let out = cli_ok(&cp, &["apply", "-f", file.to_str().unwrap()]).await;
    assert_eq!(out.trim(), "no changes");
    let changed = exported.replacen("rpm: 60", "rpm: 120", 1);
    assert_ne!(changed, exported);
    std::fs::write(&file, &changed).unwrap();
    let out = cli_ok(&cp, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(out.contains("~ model gpt\n    rpm: 60 -> 120"), "{out}");
    assert_eq!(
        cli_json(&cp, &["model", "get", "gpt"]).await["limits"]["rpm"],
        120
    );

    // `llmgw limits`: every limit with its use (none yet).
    let all = cli_json(&cp, &["limits"]).await;
    let rows: Vec<(String, String, String, u64, bool)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["scope"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
                r["limit"].as_u64().unwrap(),
                r["default"].as_bool().unwrap(),
            )
        })
        .collect();
    for want in [
        ("key", "team", "tpm", 500, false),
        ("key", "team", "budget", 50_000, false),
        ("key", "plain", "budget", 1_500_000, true),
        ("model", "gpt", "rpm", 120, false),
        ("model", "gpt", "concurrency", 3, false),
        ("provider", "up", "budget", 25_000_000, false),
    ] {
        let want = (want.0.into(), want.1.into(), want.2.into(), want.3, want.4);
        assert!(rows.contains(&want), "{want:?} not in {all}");
    }
    assert!(
        all.as_array().unwrap().iter().all(|r| r["used"] == 0),
        "{all}"
    );
    let team = cli_json(&cp, &["limits", "--scope", "key", "--name", "team"]).await;
    let kinds: Vec<&str> = team
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{team}");
    assert!(
        kinds.contains(&"tpm") && kinds.contains(&"budget"),
        "{team}"
    );
    let table = cli_ok(&cp, &["limits", "--scope", "key"]).await;
    assert!(table.starts_with("SCOPE "), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("key ")
            && l.contains(" team ")
            && l.contains(" 0/0.05 USD ")
            && l.contains(" day ")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("plain (default)") && l.contains(" 0/1.5 USD ")),
        "{table}"
    );
    let out = cli_ok(&cp, &["key", "reset-spend", "team"]).await;
    assert_eq!(out.trim(), "reset the spend of key team: 0 USD forgotten");
    let err = cli_err(&cp, &["model", "reset-spend", "nobody"]).await;
    assert!(err.contains("model 'nobody' has no limits"), "{err}");
}
