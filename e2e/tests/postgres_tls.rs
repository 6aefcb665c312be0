#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! The control plane talks TLS to PostgreSQL when the URL asks for it
//! (`sslmode=require`), as managed databases demand.

use llmgw_e2e::*;
use sqlx::Connection;

#[tokio::test]
async fn control_plane_connects_to_postgres_over_tls() {
    let pg = PgDatabase::create().await;
    let sep = if pg.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}sslmode=require", pg.url);
    let cp = ControlPlane::start(Db::Postgres(url), &[]).await;
    cli_ok(&cp, &["key", "create", "over-tls"]).await;

    // The server's own view: every connection of the control plane to this
    // database is encrypted.
    let mut admin = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let db = url::Url::parse(&pg.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let (total, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind(&db)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(total > 0, "no connection of the control plane to {db}");
    assert_eq!(
        encrypted, total,
        "{total} connections, {encrypted} over TLS"
    );
    admin.close().await.unwrap();
}
