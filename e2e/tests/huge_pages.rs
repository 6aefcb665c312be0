#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! Both servers turn transparent huge pages off for themselves at start
//! (`prctl(PR_SET_THP_DISABLE)`): mimalloc asks for them on its arenas,
//! and with them the data plane's memory per stream and the control
//! plane's ingest cost more (docs/architecture.md, the `mimalloc` row).
//! The kernel shows the flag as `THP_enabled` in `/proc/<pid>/status`.

use llmgw_e2e::*;

/// The `THP_enabled` field of a process's status.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled in /proc/{pid}/status:\n{status}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn both_servers_run_without_transparent_huge_pages() {
    let mut cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let mut dp = DataPlane::start(&cp.url(), "thp", &cp.dataplane_token).await;
    assert_eq!(thp_enabled(cp.proc().pid()), "0", "control plane");
    assert_eq!(thp_enabled(dp.proc().pid()), "0", "data plane");
    // This test process did not turn them off: the field says what the
    // flag does, not what every process shows.
    assert_eq!(thp_enabled(std::process::id()), "1", "the test itself");
}
