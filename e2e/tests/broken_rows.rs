#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! A tampered ciphertext is contained: a provider row whose sealed API key
//! was altered in the database no longer stops the control plane. It
//! starts, lists the row as broken (kind, name, field) in the CLI and its
//! log, keeps serving the rest of the configuration to data planes, and the
//! row can be fixed through the API or deleted. On SQLite and PostgreSQL.

use llmgw_e2e::*;
use serde_json::{json, Value};

#[tokio::test]
async fn tampered_ciphertext_is_contained_sqlite() {
    tampered_ciphertext_is_contained(Db::Sqlite).await;
}

#[tokio::test]
async fn tampered_ciphertext_is_contained_postgres() {
    let pg = PgDatabase::create().await;
    tampered_ciphertext_is_contained(Db::Postgres(pg.url.clone())).await;
}

/// Changes one character of the sealed API key of `provider`, in the
/// database the control plane uses, as a corrupted disk or a hostile
/// database user would.
async fn tamper(cp: &ControlPlane, provider: &str) {
    sqlx::any::install_default_drivers();
    let url = match &cp.opts.db {
        Db::Sqlite => format!("sqlite://{}", cp.data_dir().join("llmgw.db").display()),
        Db::Postgres(url) => url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let sealed: String = sqlx::query_scalar("SELECT api_key_sealed FROM providers WHERE name = $1")
        .bind(provider)
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut chars: Vec<char> = sealed.chars().collect();
    let i = chars.len() - 3;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let altered: String = chars.into_iter().collect();
    sqlx::query("UPDATE providers SET api_key_sealed = $1 WHERE name = $2")
        .bind(altered)
        .bind(provider)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

async fn chat_status(dp: &DataPlane, key: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", dp.addr))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn provider_named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no provider {name} in {list}"))
}

async fn tampered_ciphertext_is_contained(db: Db) {
    let mock = llmgw_mock::start(llmgw_mock::Config::default())
        .await
        .unwrap();
    let mut cp = ControlPlane::start(db, &[]).await;
    for name in ["good", "bad"] {
        cli_ok(
            &cp,
            &[
                "provider",
                "add",
                name,
                "--protocol",
                "openai",
                "--base-url",
                &mock.base_url(),
                "--api-key",
                &format!("sk-{name}-upstream-0001"),
            ],
        )
        .await;
    }
    cli_ok(&cp, &["model", "add", "on-good", "--target", "good:gpt"]).await;
    cli_ok(&cp, &["model", "add", "on-bad", "--target", "bad:gpt"]).await;
    let key = cli_json(&cp, &["key", "create", "k"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();

    // Altered while the control plane is down; it starts anyway.
    cp.stop().await;
    tamper(&cp, "bad").await;
    cp.restart().await;

    // Named in the list (table and JSON) and the log.
    let table = cli_ok(&cp, &["provider", "list"]).await;
    let bad_line = table.lines().find(|l| l.starts_with("bad ")).unwrap();
    assert!(bad_line.contains("BROKEN (api_key)"), "{table}");
    let good_line = table.lines().find(|l| l.starts_with("good ")).unwrap();
    assert!(good_line.trim_end().ends_with("ok"), "{table}");
    let list = cli_json(&cp, &["provider", "list"]).await;
    let broken = &provider_named(&list, "bad")["broken"];
    assert_eq!(broken[0]["field"], "api_key", "{list}");
    assert!(
        broken[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be decrypted"),
        "{list}"
    );
    assert_eq!(provider_named(&list, "good")["broken"], json!([]), "{list}");
    let detail = cli_ok(&cp, &["provider", "get", "bad"]).await;
    assert!(
        detail.contains("broken") && detail.contains("api_key: cannot be decrypted"),
        "{detail}"
    );
    let logged = poll(WAIT, "the broken row in the log", || async {
        cp.log()
            .lines()
            .filter_map(|l| {
                log_event(
                    l,
                    "stored provider is broken and left out of the configuration; fix or delete it",
                )
            })
            .find(|f| f.get("name") == Some(&json!("bad")))
    })
    .await;
    assert_eq!(logged["kind"], "provider", "{logged:?}");
    assert_eq!(logged["field"], "api_key", "{logged:?}");
    assert!(!cp.log().contains("sk-bad-upstream-0001"));

    // The rest of the configuration keeps being served: a data plane gets
    // snapshots without the broken provider, and new changes reach it.
    let dp = DataPlane::start(&cp.url(), "dp-broken", &cp.dataplane_token).await;
    cli_ok(&cp, &["model", "add", "after", "--target", "good:gpt"]).await;
    wait_in_sync(&cp, "dp-broken").await;
    assert_eq!(chat_status(&dp, &key, "after").await, 200);
    assert_eq!(chat_status(&dp, &key, "on-good").await, 200);
    assert_ne!(
        chat_status(&dp, &key, "on-bad").await,
        200,
        "its provider is left out"
    );
    assert!(
        mock.requests()
            .iter()
            .all(|r| r.headers.get("authorization").is_some()),
        "no request went out without its key"
    );

    // An update that leaves the broken field alone is refused, naming it.
    let err = cli_err(&cp, &["provider", "update", "bad", "--timeout-s", "5"]).await;
    assert!(err.contains("provider 'bad' is broken"), "{err}");
    assert!(err.contains("must set api_key"), "{err}");
    // Fixed through the API.
    cli_ok(
        &cp,
        &[
            "provider",
            "update",
            "bad",
            "--api-key",
            "sk-bad-upstream-0002",
        ],
    )
    .await;
    let list = cli_json(&cp, &["provider", "list"]).await;
    assert_eq!(provider_named(&list, "bad")["broken"], json!([]), "{list}");
    wait_in_sync(&cp, "dp-broken").await;
    assert_eq!(chat_status(&dp, &key, "on-bad").await, 200);

    // Broken again, then deleted through the API.
    cp.stop().await;
    tamper(&cp, "bad").await;
    cp.restart().await;
    cli_ok(&cp, &["model", "delete", "on-bad"]).await;
    cli_ok(&cp, &["provider", "delete", "bad"]).await;
    let list = cli_json(&cp, &["provider", "list"]).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    wait_in_sync(&cp, "dp-broken").await;
    assert_eq!(chat_status(&dp, &key, "on-good").await, 200);
}
