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

/// The `THP_enabled` field of a process's status, if the kernel shows it.
fn thp_enabled(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
}

#[tokio::test]
async fn both_servers_run_without_transparent_huge_pages() {
    // The flag is inherited: only where this process shows 1 (a kernel
    // with huge pages, no ancestor that turned them off) does a server's 0
    // say that the server turned them off itself.
    let own = thp_enabled(std::process::id());
    if own.as_deref() != Some("1") {
        eprintln!("THP_enabled of the test itself is {own:?}: nothing to tell here");
        return;
    }
    let mut cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let mut dp = DataPlane::start(&cp.url(), "thp", &cp.dataplane_token).await;
    assert_eq!(
        thp_enabled(cp.proc().pid()).as_deref(),
        Some("0"),
        "control plane"
    );
    assert_eq!(
        thp_enabled(dp.proc().pid()).as_deref(),
        Some("0"),
        "data plane"
    );
}
