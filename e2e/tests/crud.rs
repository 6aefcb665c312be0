#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! CRUD round trips through the `llmgw` binary against a real control plane,
//! on SQLite and on PostgreSQL: JSON shapes, validation messages from the
//! server, duplicates, missing names, and the data-plane list.

use llmgw_e2e::*;
use serde_json::{json, Value};

#[tokio::test]
async fn crud_sqlite() {
    crud(Db::Sqlite).await;
}

#[tokio::test]
async fn crud_postgres() {
    let pg = PgDatabase::create().await;
    crud(Db::Postgres(pg.url.clone())).await;
}

/// The header value of `name`, whatever its case.
fn header<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["headers"]
        .as_object()
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .unwrap_or_else(|| panic!("no header {name} in {p}"))
}

async fn crud(db: Db) {
    let cp = ControlPlane::start(db, &[]).await;

    // ---------- providers ----------
    let p = cli_json(
        &cp,
        &[
            "provider",
            "add",
            "openai",
            "--protocol",
            "openai",
            "--base-url",
            "https://api.openai.com/v1/",
            "--api-key",
            "sk-test-0123456789abcd",
            "--header",
            "X-Team: research",
            "--timeout-s",
            "30",
        ],
    )
    .await;
    assert_eq!(p["name"], "openai", "{p}");
    assert_eq!(p["protocol"], "openai", "{p}");
    assert_eq!(p["base_url"], "https://api.openai.com/v1", "{p}");
    assert_eq!(p["api_key"], "****abcd", "{p}");
    assert_eq!(header(&p, "x-team"), "research");
    assert_eq!(p["timeout_s"], 30, "{p}");
    assert_eq!(p["enabled"], true, "{p}");
    assert!(!p["created_at"].as_str().unwrap().is_empty(), "{p}");

    cli_ok(
        &cp,
        &[
            "provider",
            "add",
            "anthropic",
            "--protocol",
            "anthropic",
            "--base-url",
            "https://api.anthropic.com",
        ],
    )
    .await;
    let list = cli_json(&cp, &["provider", "list"]).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap_or_else(|| panic!("provider list is not an array: {list}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["anthropic", "openai"]);
    assert_eq!(list[0]["api_key"], "", "a provider without a key: {list}");

    let got = cli_json(&cp, &["provider", "get", "openai"]).await;
    assert_eq!(got, p, "get returns what add returned");

    let up = cli_json(
        &cp,
        &[
            "provider",
            "update",
            "openai",
            "--base-url",
            "https://proxy.example.com/v1",
            "--disable",
        ],
    )
    .await;
    assert_eq!(up["base_url"], "https://proxy.example.com/v1", "{up}");
    assert_eq!(up["enabled"], false, "{up}");
    assert_eq!(up["api_key"], "****abcd", "update keeps the key: {up}");
    assert_eq!(header(&up, "x-team"), "research", "update keeps headers");
    let got = cli_json(&cp, &["provider", "get", "openai"]).await;
    assert_eq!(got["base_url"], "https://proxy.example.com/v1", "{got}");
    assert_eq!(got["enabled"], false, "{got}");
    cli_ok(&cp, &["provider", "update", "openai", "--enable"]).await;

    // Every protocol by name; an unknown one is a usage error that lists
    // the choices.
    let gem = cli_json(
        &cp,
        &[
            "provider",
            "add",
            "gem",
            "--protocol",
            "gemini",
            "--base-url",
            "https://generativelanguage.googleapis.com/v1beta",
            "--api-key",
            "AIza-test-0123456789",
        ],
    )
    .await;
    assert_eq!(gem["protocol"], "gemini", "{gem}");
    let vllm = cli_json(
        &cp,
        &[
            "provider",
            "add",
            "vllm",
            "--protocol",
            "openai-chat",
            "--base-url",
            "http://127.0.0.1:8000/v1",
        ],
    )
    .await;
    assert_eq!(vllm["protocol"], "openai-chat", "{vllm}");
    let up = cli_json(&cp, &["provider", "update", "vllm", "--protocol", "openai"]).await;
    assert_eq!(up["protocol"], "openai", "{up}");
    let table = cli_ok(&cp, &["-o", "table", "provider", "list"]).await;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("gem ") && l.contains(" gemini ")),
        "{table}"
    );
    let err = cli_err(
        &cp,
        &[
            "provider",
            "add",
            "vx",
            "--protocol",
            "vertex",
            "--base-url",
            "https://x.example",
        ],
    )
    .await;
    assert!(
        err.contains("vertex") && err.contains("openai-chat") && err.contains("gemini"),
        "{err}"
    );
    for name in ["gem", "vllm"] {
        cli_ok(&cp, &["provider", "delete", name]).await;
    }

    // ---------- models ----------
    let m = cli_json(
        &cp,
        &[
            "model",
            "add",
            "gpt",
            "--target",
            "openai",
            "--target",
            "openai:gpt-4o-mini",
            "--strategy",
            "weighted",
            "--weights",
            "3,1",
            "--price-input",
            "2.5",
            "--price-output",
            "10",
            "--max-attempts",
            "2",
            "--retry-delay-ms",
            "250",
            "--price-cached-input",
            "1.25",
            "--price-cache-write",
            "3.125",
            "--default-max-tokens",
            "4096",
            "--translation",
            "lenient",
        ],
    )
    .await;
    assert_eq!(m["name"], "gpt", "{m}");
    assert_eq!(m["prices"]["cached_input_per_mtok"], 1.25, "{m}");
    assert_eq!(m["prices"]["cache_write_per_mtok"], 3.125, "{m}");
    assert_eq!(m["default_max_tokens"], 4096, "{m}");
    assert_eq!(m["translation"], "lenient", "{m}");
    assert_eq!(m["strategy"], "weighted", "{m}");
    assert_eq!(m["max_attempts"], 2, "{m}");
    assert_eq!(m["retry_delay_ms"], 250, "{m}");
    assert_eq!(m["prices"]["input_per_mtok"], 2.5, "{m}");
    assert_eq!(m["prices"]["output_per_mtok"], 10.0, "{m}");
    assert_eq!(m["enabled"], true, "{m}");
    let targets = m["targets"].as_array().expect("targets array");
    assert_eq!(targets.len(), 2, "{m}");
    let t: Vec<(&str, &str, i64, i64)> = targets
        .iter()
        .map(|t| {
            (
                t["provider"].as_str().unwrap(),
                t["upstream_model"].as_str().unwrap(),
                t["priority"].as_i64().unwrap(),
                t["weight"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        t,
        [("openai", "gpt", 0, 3), ("openai", "gpt-4o-mini", 1, 1)],
        "{m}"
    );
    assert_eq!(cli_json(&cp, &["model", "get", "gpt"]).await, m);

    let up = cli_json(
        &cp,
        &[
            "model",
            "update",
            "gpt",
            "--weights",
            "1,5",
            "--max-attempts",
            "4",
            "--clear-retry-delay",
        ],
    )
    .await;
    assert_eq!(up["max_attempts"], 4, "{up}");
    assert!(up["retry_delay_ms"].is_null(), "{up}");
    let w: Vec<i64> = up["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["weight"].as_i64().unwrap())
        .collect();
    assert_eq!(w, [1, 5], "{up}");
    assert_eq!(up["prices"], m["prices"], "untouched fields stay");
    assert_eq!(up["default_max_tokens"], 4096, "{up}");
    assert_eq!(up["translation"], "lenient", "{up}");
    let up = cli_json(
        &cp,
        &[
            "model",
            "update",
            "gpt",
            "--translation",
            "strict",
            "--clear-default-max-tokens",
        ],
    )
    .await;
    assert_eq!(up["translation"], "strict", "{up}");
    assert!(up["default_max_tokens"].is_null(), "{up}");
    let shown = cli_ok(&cp, &["-o", "table", "model", "get", "gpt"]).await;
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("translation") && l.ends_with("strict")),
        "{shown}"
    );
    // Prices on one line: input/output/cached/cache write, exact.
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("prices") && l.ends_with("2.5/10/1.25/3.125")),
        "{shown}"
    );
    let err = cli_err(&cp, &["model", "update", "gpt", "--translation", "loose"]).await;
    assert!(err.contains("strict") && err.contains("lenient"), "{err}");

    // Route explain says how each target would serve the client's API.
    let ex = cli_json(&cp, &["route", "explain", "gpt", "--api", "messages"]).await;
    let serving: Vec<&str> = ex["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("no candidates: {ex}"))
        .iter()
        .map(|c| c["serving"].as_str().unwrap())
        .collect();
    assert_eq!(
        serving, ["translated from anthropic to openai-responses"; 2],
        "{ex}"
    );
    let ex = cli_json(&cp, &["route", "explain", "gpt"]).await;
    assert_eq!(ex["candidates"][0]["serving"], "passes through", "{ex}");
    let table = cli_ok(
        &cp,
        &[
            "-o",
            "table",
            "route",
            "explain",
            "gpt",
            "--api",
            "responses",
        ],
    )
    .await;
    assert!(
        table.contains("SERVING") && table.contains("passes through"),
        "{table}"
    );
    let up = cli_json(
        &cp,
        &["model", "update", "gpt", "--target", "anthropic:claude"],
    )
    .await;
    assert_eq!(up["targets"].as_array().unwrap().len(), 1, "{up}");
    assert_eq!(up["targets"][0]["provider"], "anthropic", "{up}");
    assert_eq!(up["targets"][0]["upstream_model"], "claude", "{up}");
    cli_ok(
        &cp,
        &[
            "model",
            "update",
            "gpt",
            "--target",
            "openai",
            "--target",
            "openai:gpt-4o-mini",
        ],
    )
    .await;
    let list = cli_json(&cp, &["model", "list"]).await;
    assert!(list.is_array(), "model list is an array: {list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "gpt");

    // A provider in use cannot be deleted; the message names the model.
    let err = cli_err(&cp, &["provider", "delete", "openai"]).await;
    assert!(err.contains("'gpt'"), "{err}");
    cli_json(&cp, &["provider", "get", "openai"]).await;

    // ---------- keys ----------
    let k = cli_json(&cp, &["key", "create", "ci", "--models", "gpt"]).await;
    let secret = k["key"].as_str().expect("key in JSON");
    assert!(secret.starts_with("sk-llmgw-"), "{k}");
    assert!(secret.len() > "sk-llmgw-".len() + 16, "{k}");
    assert_eq!(k["name"], "ci", "{k}");
    assert_eq!(k["models"], json!(["gpt"]), "{k}");
    assert_eq!(k["revoked"], false, "{k}");
    let prefix = k["prefix"].as_str().unwrap();
    assert!(
        secret.starts_with(prefix) && prefix.len() < secret.len(),
        "{k}"
    );

    let list = cli_json(&cp, &["key", "list"]).await;
    assert!(list.is_array(), "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "ci");
    assert!(
        list[0].get("key").is_none(),
        "a list never shows the secret"
    );
    assert!(!list.to_string().contains(secret));

    let got = cli_json(&cp, &["key", "get", "ci"]).await;
    assert_eq!(got["prefix"], prefix, "{got}");
    assert!(!got.to_string().contains(secret));
    let revoked = cli_json(&cp, &["key", "revoke", "ci"]).await;
    assert_eq!(revoked["revoked"], true, "{revoked}");
    assert_eq!(cli_json(&cp, &["key", "get", "ci"]).await["revoked"], true);

    // ---------- validation: the server's messages ----------
    let err = cli_err(
        &cp,
        &[
            "provider",
            "add",
            "bad name",
            "--protocol",
            "openai",
            "--base-url",
            "https://x.example",
        ],
    )
    .await;
    assert!(err.contains("provider name 'bad name'"), "{err}");
    let err = cli_err(
        &cp,
        &[
            "provider",
            "add",
            "ftp",
            "--protocol",
            "openai",
            "--base-url",
            "ftp://files.example.com",
        ],
    )
    .await;
    assert!(err.contains("must use http or https"), "{err}");
    let err = cli_err(
        &cp,
        &[
            "provider",
            "add",
            "creds",
            "--protocol",
            "openai",
            "--base-url",
            "https://user:hunter2@x.example",
        ],
    )
    .await;
    assert!(err.contains("must not contain credentials"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password is not echoed: {err}"
    );
    // 0 drains a target (see e2e/tests/config_validation.rs); too large a
    // weight is refused by the server, naming the field.
    let err = cli_err(
        &cp,
        &[
            "model",
            "add",
            "m0",
            "--target",
            "openai",
            "--weights",
            "1000001",
        ],
    )
    .await;
    assert!(err.contains("target 1: weight is 1000001"), "{err}");
    let err = cli_err(&cp, &["model", "add", "m1"]).await;
    assert!(err.contains("--target"), "{err}");
    // The server refuses a model without targets too (through apply, since
    // the CLI does not let `model add` send one).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-target.yaml");
    let mut config =
        serde_json::from_str::<Value>(&cli_ok(&cp, &["-o", "json", "export"]).await).unwrap();
    config["models"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "empty", "targets": []}));
    std::fs::write(&file, config.to_string()).unwrap();
    let err = cli_err(&cp, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(
        err.contains("model 'empty' needs at least one target"),
        "{err}"
    );
    let err = cli_err(&cp, &["model", "add", "m2", "--target", "nosuch:gpt"]).await;
    assert!(err.contains("'nosuch'"), "{err}");
    let names: Vec<Value> = cli_json(&cp, &["provider", "list"])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("anthropic"), json!("openai")],
        "nothing invalid was stored"
    );
    assert_eq!(
        cli_json(&cp, &["model", "list"])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // ---------- duplicates and missing names ----------
    let err = cli_err(
        &cp,
        &[
            "provider",
            "add",
            "openai",
            "--protocol",
            "openai",
            "--base-url",
            "https://x.example",
        ],
    )
    .await;
    assert!(err.contains("already exists"), "{err}");
    let err = cli_err(&cp, &["model", "add", "gpt", "--target", "openai"]).await;
    assert!(err.contains("already exists"), "{err}");
    let err = cli_err(&cp, &["key", "create", "ci"]).await;
    assert!(err.contains("already exists"), "{err}");
    for args in [
        &["provider", "get", "nope"][..],
        &["provider", "update", "nope", "--timeout-s", "5"],
        &["provider", "delete", "nope"],
        &["model", "get", "nope"],
        &["model", "update", "nope", "--max-attempts", "1"],
        &["model", "delete", "nope"],
        &["key", "get", "nope"],
        &["key", "revoke", "nope"],
        &["key", "delete", "nope"],
    ] {
        let err = cli_err(&cp, args).await;
        assert!(
            err.contains("not found") && err.contains("nope"),
            "llmgw {}: {err}",
            args.join(" ")
        );
    }

    // ---------- data planes ----------
    let dp = DataPlane::start(&cp.url(), "dp-crud", &cp.dataplane_token).await;
    let version = wait_in_sync(&cp, "dp-crud").await;
    let planes = dataplanes(&cp).await;
    assert_eq!(planes.len(), 1, "{planes:?}");
    let d = &planes[0];
    assert_eq!(d["node_id"], "dp-crud", "{d}");
    assert_eq!(d["connected"], true, "{d}");
    assert_eq!(d["acked_version"], version, "{d}");
    assert!(
        d["peer_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{d}"
    );
    assert_eq!(dp.ready_version().await, Some(version));

    // ---------- deletes ----------
    assert_eq!(
        cli_json(&cp, &["key", "delete", "ci"]).await,
        json!({"deleted": "ci"})
    );
    assert_eq!(
        cli_json(&cp, &["model", "delete", "gpt"]).await,
        json!({"deleted": "gpt"})
    );
    assert_eq!(
        cli_json(&cp, &["provider", "delete", "openai"]).await,
        json!({"deleted": "openai"})
    );
    let out = cli_ok(&cp, &["provider", "delete", "anthropic"]).await;
    assert!(out.contains("deleted provider anthropic"), "{out}");
    for (kind, name) in [("provider", "openai"), ("model", "gpt"), ("key", "ci")] {
        let err = cli_err(&cp, &[kind, "get", name]).await;
        assert!(err.contains("not found"), "{kind} {name}: {err}");
    }
    for kind in ["provider", "model", "key"] {
        assert_eq!(
            cli_json(&cp, &[kind, "list"]).await,
            json!([]),
            "{kind} list"
        );
    }
}
