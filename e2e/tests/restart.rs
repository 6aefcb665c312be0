#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! A data plane rides out a control-plane outage: it stays ready on its last
//! snapshot while the control plane is down (SIGTERM or SIGKILL), reconnects
//! by itself when the control plane comes back on the same port and data
//! folder, and takes the next change without being restarted.

use std::time::{Duration, Instant};

use llmgw_e2e::*;

#[tokio::test]
async fn data_plane_survives_control_plane_sigterm() {
    outage(false).await;
}

#[tokio::test]
async fn data_plane_survives_control_plane_sigkill() {
    outage(true).await;
}

async fn outage(sigkill: bool) {
    let mut cp = ControlPlane::start(Db::Sqlite, &[]).await;
    cli_ok(
        &cp,
        &[
            "provider",
            "add",
            "p",
            "--protocol",
            "openai",
            "--base-url",
            "http://127.0.0.1:9",
        ],
    )
    .await;
    cli_ok(&cp, &["model", "add", "m", "--target", "p"]).await;
    let mut dp = DataPlane::start(&cp.url(), "dp-outage", &cp.dataplane_token).await;
    let v1 = wait_in_sync(&cp, "dp-outage").await;
    let dp_pid = dp.proc().pid();
    let port = cp.addr.port();

    if sigkill {
        cp.kill();
    } else {
        let status = cp.stop().await;
        assert!(status.success(), "graceful stop exits 0, got {status}");
        assert!(cp.log().contains("shutting down"));
    }
    // The data plane notices and keeps serving its last table.
    poll(WAIT, "the data plane to notice the outage", || async {
        let log = dp.log();
        (log.contains("discovery stream failed")
            || log.contains("control plane ended the discovery stream"))
        .then_some(())
    })
    .await;
    let end = Instant::now() + Duration::from_millis(600);
    while Instant::now() < end {
        assert_eq!(
            dp.ready_version().await,
            Some(v1),
            "/readyz stays 200 on the last version while the control plane is down"
        );
        tokio::time::sleep(POLL).await;
    }
    let out = cli(&cp, &["provider", "list"]).await;
    assert!(!out.ok());
    assert!(
        out.stderr.contains("cannot reach control plane"),
        "{}",
        out.stderr
    );

    cp.restart().await;
    assert_eq!(cp.addr.port(), port);
    // Nothing was lost: the configuration is still there.
    let models = cli_json(&cp, &["model", "list"]).await;
    assert_eq!(models[0]["name"], "m", "{models}");
    assert_eq!(config_version(&cp).await, v1);

    cli_ok(&cp, &["model", "update", "m", "--max-attempts", "3"]).await;
    let v2 = config_version(&cp).await;
    assert!(v2 > v1);
    // Reconnecting may wait out a backoff of a few seconds.
    dp.wait_version(v2, Duration::from_secs(15)).await;
    wait_acked(&cp, "dp-outage", v2, WAIT).await;
    assert!(dp.proc().is_running());
    assert_eq!(dp.proc().pid(), dp_pid, "the same data plane process");
}
