#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! Wrong or missing tokens are refused with clear messages.

use std::time::{Duration, Instant};

use llmgw_e2e::*;

#[tokio::test]
async fn wrong_admin_token_is_refused() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let mut cmd = cli_command(&cp.url());
    cmd.env("LLMGW_ADMIN_TOKEN", "not-the-admin-token")
        .current_dir(std::env::temp_dir())
        .args(["provider", "list"]);
    let out = run(cmd).await;
    assert!(!out.ok(), "{}", out.stdout);
    assert!(out.stderr.contains("invalid admin token"), "{}", out.stderr);

    // The data-plane token is not an admin token either.
    let mut cmd = cli_command(&cp.url());
    cmd.arg("--token")
        .arg(&cp.dataplane_token)
        .current_dir(std::env::temp_dir())
        .args(["provider", "list"]);
    let out = run(cmd).await;
    assert!(!out.ok(), "{}", out.stdout);
    assert!(out.stderr.contains("invalid admin token"), "{}", out.stderr);

    // The right one works.
    cli_ok(&cp, &["provider", "list"]).await;
}

#[tokio::test]
async fn missing_admin_token_is_a_clear_error() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = cli_command(&cp.url());
    cmd.current_dir(empty.path()).args(["provider", "list"]);
    let out = run(cmd).await;
    assert!(!out.ok(), "{}", out.stdout);
    assert!(out.stderr.contains("no admin token"), "{}", out.stderr);
    assert!(out.stderr.contains("LLMGW_ADMIN_TOKEN"), "{}", out.stderr);
    assert!(out.stderr.contains("admin-token"), "{}", out.stderr);
}

#[tokio::test]
async fn data_plane_with_wrong_token_never_becomes_ready() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let mut dp = DataPlane::start(&cp.url(), "dp-badtoken", "wrong-dataplane-token").await;
    // Bounded observation: it keeps trying, never becomes ready, never shows
    // up in the list, and does not exit.
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        let (status, body) = dp.readyz().await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["reason"], "no snapshot applied yet", "{body}");
        let planes = dataplanes(&cp).await;
        assert!(planes.is_empty(), "{planes:?}");
        assert!(
            dp.proc().is_running(),
            "the data plane exited:\n{}",
            dp.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dp.log()
            .contains("control plane refused the data-plane token"),
        "{}",
        dp.log()
    );
    assert!(!dp.log().contains("wrong-dataplane-token"));

    // The right token on another data plane works, for contrast.
    let good = DataPlane::start(&cp.url(), "dp-good", &cp.dataplane_token).await;
    let v = wait_in_sync(&cp, "dp-good").await;
    assert_eq!(good.ready_version().await, Some(v));
    let planes = dataplanes(&cp).await;
    assert_eq!(planes.len(), 1, "{planes:?}");
    assert_eq!(dp.readyz().await.0, 503);
}
