#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! The control plane talks TLS to PostgreSQL when the URL asks for it
//! (`sslmode=require`), as managed databases demand: on every connection,
//! the log ingest pool's among them.

use llmgw_e2e::*;
use sqlx::Connection;

#[tokio::test]
async fn control_plane_connects_to_postgres_over_tls() {
    let pg = PgDatabase::create().await;
    let sep = if pg.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}sslmode=require", pg.url);
    let cp = ControlPlane::start(Db::Postgres(url), &[]).await;
    // A request through a data plane, so that its log is stored: log
    // ingest writes on a pool of its own (`Store::pg_pool`), which must
    // take the URL's TLS as well.
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    add_mock_provider(&cp, &mock.base_url()).await;
    cli_ok(&cp, &["model", "add", "good", "--target", "mock:good-up"]).await;
    let secret = cli_json(&cp, &["key", "create", "over-tls"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let dp = DataPlane::start(&cp.url(), "dp-tls", &cp.dataplane_token).await;
    wait_in_sync(&cp, "dp-tls").await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", dp.addr))
        .bearer_auth(&secret)
        .json(&serde_json::json!({"model": "good",
            "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-llmgw-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(logged(&cp, &id).await["status"], 200);

    // The server's own view: every connection of the control plane to this
    // database is encrypted.
    let mut admin = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let db = url::Url::parse(&pg.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let (total, encrypted, ingest): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl), \
         COUNT(*) FILTER (WHERE a.application_name = $2) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind(&db)
    // `INGEST_APPLICATION_NAME` in controlplane/src/store/mod.rs.
    .bind("llmgw log ingest")
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(total > 0, "no connection of the control plane to {db}");
    assert!(ingest > 0, "no log ingest connection among {total}");
    assert_eq!(
        encrypted, total,
        "{total} connections, {encrypted} over TLS"
    );
    admin.close().await.unwrap();
}
