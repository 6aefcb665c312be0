#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! Zero-config start: the control plane generates its tokens and master key
//! into ./data (mode 0600); the CLI and a data plane started in the same
//! folder find them without being told. A different master key later is
//! refused with a clear error.

use std::os::unix::fs::PermissionsExt;

use llmgw_e2e::*;

#[tokio::test]
async fn zero_config_start() {
    let mut cp = ControlPlane::start_with(CpOptions {
        db: Db::Sqlite,
        env: Vec::new(),
        args: Vec::new(),
        zero_config: true,
    })
    .await;
    let data = cp.data_dir();
    for name in ["admin-token", "dataplane-token", "master.key"] {
        let path = data.join(name);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{} was not created: {e}", path.display()));
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{} has mode {:o}",
            name,
            meta.permissions().mode() & 0o777
        );
        assert!(meta.len() > 16, "{name} holds a real secret");
    }
    assert!(cp.data_dir().join("llmgw.db").is_file());
    assert_ne!(cp.admin_token, cp.dataplane_token);
    assert!(
        cp.log().contains("GENERATED A NEW MASTER KEY"),
        "{}",
        cp.log()
    );

    // The CLI, run where ./data/admin-token is, needs no token.
    let mut cmd = cli_command(&cp.url());
    cmd.current_dir(cp.dir.path()).args([
        "provider",
        "add",
        "p",
        "--protocol",
        "openai",
        "--base-url",
        "https://api.openai.com/v1",
    ]);
    let out = run(cmd).await;
    assert!(out.ok(), "{}", out.stderr);
    // Nor elsewhere with --token-file.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = cli_command(&cp.url());
    cmd.current_dir(elsewhere.path())
        .arg("--token-file")
        .arg(data.join("admin-token"))
        .args(["-o", "json", "provider", "list"]);
    let out = run(cmd).await;
    assert!(out.ok(), "{}", out.stderr);
    assert!(out.stdout.contains("\"name\": \"p\""), "{}", out.stdout);

    // A data plane started in the same folder reads ./data/dataplane-token.
    let dp = DataPlane::start_with(DpOptions {
        control_plane: cp.url(),
        node_id: "dp-zero".to_string(),
        token: None,
        cwd: Some(cp.dir.path().to_path_buf()),
        ..DpOptions::default()
    })
    .await;
    let v = wait_in_sync(&cp, "dp-zero").await;
    dp.wait_version(v, WAIT).await;

    // A restart with a different master key is refused, clearly.
    assert!(cp.stop().await.success());
    cp.opts
        .env
        .push(("LLMGW_MASTER_KEY".to_string(), random_master_key()));
    let err = cp
        .try_restart()
        .await
        .expect_err("a different master key must not start");
    let status = cp.proc().exit_status().expect("exited");
    assert!(!status.success(), "{status}");
    let line = err
        .lines()
        .find(|l| l.contains("cannot start"))
        .unwrap_or_else(|| panic!("no `cannot start` line in:\n{err}"));
    println!("refused: {line}");
    assert!(
        line.contains("master key") && line.contains("does not match"),
        "{line}"
    );

    // Back on the generated key, everything is as it was.
    let admin_token = cp.admin_token.clone();
    cp.opts.env.clear();
    cp.restart().await;
    assert_eq!(
        std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim(),
        admin_token,
        "the generated token is kept"
    );
    assert_eq!(
        cp.log().matches("GENERATED A NEW MASTER KEY").count(),
        1,
        "the master key is generated once and then read from its file"
    );
    let list = cli_json(&cp, &["provider", "list"]).await;
    assert_eq!(list[0]["name"], "p", "{list}");
    wait_in_sync(&cp, "dp-zero").await;
}
