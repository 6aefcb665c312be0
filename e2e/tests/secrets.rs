#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! No secret leaks into the SQLite files or into any process output, even
//! at RUST_LOG=trace.

use std::path::Path;

use llmgw_e2e::*;

/// The names of the secrets found in `bytes`.
fn leaked<'a>(bytes: &[u8], secrets: &[(&'a str, &str)]) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|(_, s)| contains_bytes(bytes, s.as_bytes()))
        .map(|(n, _)| *n)
        .collect()
}

fn check_db_files(data: &Path, secrets: &[(&str, &str)]) {
    let mut seen = 0;
    for name in ["llmgw.db", "llmgw.db-wal", "llmgw.db-shm"] {
        let path = data.join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        seen += 1;
        let found = leaked(&bytes, secrets);
        assert!(found.is_empty(), "{name} holds {found:?}");
    }
    assert!(seen > 0, "no SQLite file in {}", data.display());
}

#[tokio::test]
async fn secrets_do_not_leak() {
    let trace = [("RUST_LOG", "trace")];
    let mut cp = ControlPlane::start(Db::Sqlite, &trace).await;
    let upstream_key = format!("sk-upstream-SECRET-{}", random_hex());
    let header_value = format!("hdr-SECRET-{}", random_hex());
    cli_ok(
        &cp,
        &[
            "provider",
            "add",
            "openai",
            "--protocol",
            "openai",
            "--base-url",
            "https://api.openai.com/v1",
            "--api-key",
            &upstream_key,
            "--header",
            &format!("x-api-key: {header_value}"),
            "--header",
            "X-Team: research",
        ],
    )
    .await;
    cli_ok(&cp, &["model", "add", "gpt", "--target", "openai"]).await;
    let created = cli_json(&cp, &["key", "create", "ci"]).await;
    let client_key = created["key"].as_str().unwrap().to_string();
    assert!(client_key.starts_with("sk-llmgw-"));

    let dp = DataPlane::start_with(DpOptions {
        control_plane: cp.url(),
        node_id: "dp-secrets".to_string(),
        token: Some(cp.dataplane_token.clone()),
        env: vec![("RUST_LOG".to_string(), "trace".to_string())],
        ..DpOptions::default()
    })
    .await;
    let v = wait_in_sync(&cp, "dp-secrets").await;
    assert_eq!(dp.ready_version().await, Some(v));
    assert!(dp.log().contains("snapshot applied"));
    assert!(
        dp.log().contains("TRACE"),
        "the data plane logs at trace level"
    );
    assert!(
        cp.log().contains("TRACE"),
        "the control plane logs at trace level"
    );

    // Shown masked.
    let list = cli_ok(&cp, &["provider", "list"]).await;
    let tail = &upstream_key[upstream_key.len() - 4..];
    assert!(list.contains(&format!("****{tail}")), "{list}");
    let p = cli_json(&cp, &["provider", "get", "openai"]).await;
    assert_eq!(p["api_key"], format!("****{tail}"), "{p}");
    let shown = p["headers"]["x-api-key"].as_str().unwrap();
    assert!(shown.starts_with("****"), "{p}");
    assert_eq!(p["headers"]["X-Team"], "research", "{p}");
    let export = cli_ok(&cp, &["export"]).await;

    let master_key = cp.master_key.clone().unwrap();
    let (admin_token, dataplane_token) = (cp.admin_token.clone(), cp.dataplane_token.clone());
    let secrets = [
        ("provider api key", upstream_key.as_str()),
        ("header value", header_value.as_str()),
        ("client key", client_key.as_str()),
        ("admin token", admin_token.as_str()),
        ("data-plane token", dataplane_token.as_str()),
        ("master key", master_key.as_str()),
    ];
    for (what, text) in [
        ("provider list", &list),
        ("provider get", &p.to_string()),
        ("export", &export),
    ] {
        let found = leaked(text.as_bytes(), &secrets);
        assert!(found.is_empty(), "{what} shows {found:?}:\n{text}");
    }
    check_db_files(&cp.data_dir(), &secrets);
    println!(
        "checked {} bytes of control-plane and {} bytes of data-plane output",
        cp.log().len(),
        dp.log().len()
    );
    let found = leaked(dp.log().as_bytes(), &secrets);
    assert!(found.is_empty(), "the data plane's output holds {found:?}");
    let found = leaked(cp.log().as_bytes(), &secrets);
    assert!(
        found.is_empty(),
        "the control plane's output holds {found:?}"
    );

    // After a graceful stop (which checkpoints the WAL into the main file).
    assert!(cp.stop().await.success());
    check_db_files(&cp.data_dir(), &secrets);
    let found = leaked(cp.log().as_bytes(), &secrets);
    assert!(
        found.is_empty(),
        "the control plane's output holds {found:?}"
    );
}
