#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! Several control planes: two on one PostgreSQL database share versions
//! and pass changes to each other's data planes at once (LISTEN/NOTIFY);
//! a second control plane on one SQLite file is refused.

use std::time::{Duration, Instant};

use llmgw_e2e::*;

const BOUND: Duration = Duration::from_secs(1);

/// A second control plane on the database of `a`, with its secrets.
async fn peer(a: &ControlPlane) -> ControlPlane {
    let master = a.master_key.clone().expect("not zero-config");
    let mut b = ControlPlane::start(
        a.opts.db.clone(),
        &[
            ("LLMGW_MASTER_KEY", master.as_str()),
            ("LLMGW_ADMIN_TOKEN", a.admin_token.as_str()),
            ("LLMGW_DATAPLANE_TOKEN", a.dataplane_token.as_str()),
        ],
    )
    .await;
    b.admin_token = a.admin_token.clone();
    b.dataplane_token = a.dataplane_token.clone();
    b.master_key = a.master_key.clone();
    b
}

#[tokio::test]
async fn change_on_one_control_plane_reaches_data_planes_of_another_within_one_second() {
    let pg = PgDatabase::create().await;
    let a = ControlPlane::start(Db::Postgres(pg.url.clone()), &[]).await;
    let b = peer(&a).await;
    cli_ok(
        &a,
        &[
            "provider",
            "add",
            "up",
            "--protocol",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
    )
    .await;
    cli_ok(&a, &["model", "add", "gpt", "--target", "up"]).await;
    let dp = DataPlane::start(&b.url(), "dp-on-b", &b.dataplane_token).await;
    wait_in_sync(&b, "dp-on-b").await;

    for (i, change) in [
        &["model", "update", "gpt", "--max-attempts", "4"][..],
        &["key", "create", "ha-key"],
        &["provider", "update", "up", "--timeout-s", "30"],
    ]
    .into_iter()
    .enumerate()
    {
        // Alternate: made on A, then on B, then on A; the data plane is on B.
        let via = if i % 2 == 0 { &a } else { &b };
        cli_ok(via, change).await;
        let returned = Instant::now();
        let on_a = config_version(&a).await;
        let deadline = returned + BOUND;
        loop {
            let served = dp.ready_version().await;
            if served == Some(on_a) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`llmgw {}` on control plane {}: the data plane on B serves {served:?}, not {on_a}, \
                 {BOUND:?} later\nA:\n{}\nB:\n{}",
                change.join(" "),
                if i % 2 == 0 { "A" } else { "B" },
                a.log(),
                b.log()
            );
            tokio::time::sleep(POLL).await;
        }
        println!(
            "`llmgw {}` reached the data plane of the other control plane in {:?}",
            change.join(" "),
            returned.elapsed()
        );
        // Versions come from the database: both control planes agree.
        assert_eq!(config_version(&b).await, on_a);
    }
}

#[tokio::test]
async fn second_control_plane_on_one_sqlite_file_is_refused() {
    let a = ControlPlane::start(Db::Sqlite, &[]).await;
    let db = a.data_dir().join("llmgw.db");
    let other = tempfile::tempdir().unwrap();
    let mut cmd = clean_command(&bin("llmgw-controlplane"));
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(other.path())
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("LLMGW_MASTER_KEY", a.master_key.clone().unwrap())
        .env("LLMGW_ADMIN_TOKEN", &a.admin_token)
        .env("LLMGW_DATAPLANE_TOKEN", &a.dataplane_token)
        .env("RUST_LOG", "info");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "second control plane started:\n{text}"
    );
    assert!(
        text.contains("another control plane is using the SQLite database"),
        "no clear error:\n{text}"
    );
    // The first one is unharmed.
    cli_ok(&a, &["key", "create", "still-works"]).await;

    // Once the first has stopped, the file is free again.
    let mut a = a;
    a.stop().await;
    a.restart().await;
    cli_ok(&a, &["key", "create", "after-restart"]).await;
}
