#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! A change made with the CLI reaches a connected data plane as a new
//! version within one second of the command returning.

use std::time::{Duration, Instant};

use llmgw_e2e::*;

const BOUND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn change_reaches_data_plane_within_one_second() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
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
        ],
    )
    .await;
    cli_ok(&cp, &["model", "add", "gpt", "--target", "openai"]).await;
    let dp = DataPlane::start(&cp.url(), "dp-prop", &cp.dataplane_token).await;
    let before = wait_in_sync(&cp, "dp-prop").await;
    assert_eq!(dp.ready_version().await, Some(before));

    let mut previous = before;
    for change in [
        &["model", "update", "gpt", "--max-attempts", "5"][..],
        &["provider", "update", "openai", "--timeout-s", "20"],
        &["key", "create", "k1"],
    ] {
        cli_ok(&cp, change).await;
        let returned = Instant::now();
        let deadline = returned + BOUND;
        let expected = config_version(&cp).await;
        assert!(expected > previous, "a write publishes a new version");
        previous = expected;
        // The data plane serves it...
        loop {
            let v = dp.ready_version().await;
            if v == Some(expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`llmgw {}`: data plane still serves {v:?}, not {expected}, {BOUND:?} after the command returned",
                change.join(" ")
            );
            tokio::time::sleep(POLL).await;
        }
        // ...and the control plane has its acknowledgement, within the same bound.
        loop {
            let d = dataplane(&cp, "dp-prop").await.expect("dp-prop listed");
            if d["acked_version"] == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`llmgw {}`: acked_version is {} not {expected}, {BOUND:?} after the command returned",
                change.join(" "),
                d["acked_version"]
            );
            tokio::time::sleep(POLL).await;
        }
        println!(
            "`llmgw {}` reached the data plane and was acknowledged in {:?}",
            change.join(" "),
            returned.elapsed()
        );
    }
}
