//! Shared harness for the control plane's integration tests: every test body
//! runs twice, once against a fresh SQLite file and once against a fresh
//! PostgreSQL database, through the real `Store`.
//!
//! PostgreSQL comes from `LLMGW_TEST_POSTGRES_URL` (an admin URL whose role
//! may CREATE DATABASE); `scripts/test.sh` and `source scripts/pg.sh` set it.
//! Each PostgreSQL test creates `llmgw_st_<random>` and drops it afterwards,
//! also when the test body panics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use llmgw_controlplane::secrets::{generate_master_key, Sealer};
use llmgw_controlplane::store::{self, KeySpec, ModelSpec, ProviderSpec, Store, TargetSpec};
use llmgw_core::price::{Amount, PriceSheet, TokenPrices};
use llmgw_core::table::{ModelType, Translation};
use llmgw_core::{keys, Protocol, Strategy};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;

pub const PG_ENV: &str = "LLMGW_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One fresh database for one test body.
#[derive(Clone)]
pub struct Db {
    pub kind: Kind,
    pub url: String,
    /// The master key `open` seals with.
    pub master_key: SecretString,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("kind", &self.kind)
            .field("url", &store::redact_url(&self.url))
            .finish()
    }
}

impl Db {
    /// Opens the store (running the migrations) with this database's master key.
    pub async fn open(&self) -> Store {
        self.open_with(Sealer::new(&self.master_key, &[]).unwrap())
            .await
    }

    pub async fn open_with(&self, sealer: Sealer) -> Store {
        Store::open(&self.url, Arc::new(sealer))
            .await
            .unwrap_or_else(|e| panic!("cannot open {:?}: {e}", self))
    }
}

/// What has to be removed after the test.
enum Cleanup {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

/// The admin URL from the environment's value, or the reason there is none.
pub fn postgres_admin_url_from(value: Option<String>) -> Result<String, String> {
    match value {
        Some(u) if !u.trim().is_empty() => Ok(u.trim().to_string()),
        _ => Err(format!(
            "{PG_ENV} is not set, so the PostgreSQL variant of this test cannot run. \
             Run scripts/test.sh (it starts PostgreSQL and sets it), or run \
             `source scripts/pg.sh` in your shell before `cargo nextest run` / `cargo test`."
        )),
    }
}

fn postgres_admin_url() -> String {
    postgres_admin_url_from(std::env::var(PG_ENV).ok()).unwrap_or_else(|e| panic!("{e}"))
}

async fn create(kind: Kind) -> (Db, Cleanup) {
    let master_key = SecretString::from(generate_master_key());
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = store::sqlite_url(&dir.path().join("llmgw.db"));
            (
                Db {
                    kind,
                    url,
                    master_key,
                },
                Cleanup::Sqlite(dir),
            )
        }
        Kind::Postgres => {
            let admin_url = postgres_admin_url();
            let name = format!("llmgw_st_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::postgres::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot connect to {PG_ENV} ({}): {e}; is PostgreSQL running? \
                         Try `source scripts/pg.sh`",
                        store::redact_url(&admin_url)
                    )
                });
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
            let _ = admin.close().await;
            let mut url = url::Url::parse(&admin_url).unwrap();
            url.set_path(&format!("/{name}"));
            (
                Db {
                    kind,
                    url: url.to_string(),
                    master_key,
                },
                Cleanup::Postgres { admin_url, name },
            )
        }
    }
}

async fn cleanup(c: Cleanup) -> Result<(), String> {
    match c {
        Cleanup::Sqlite(dir) => dir.close().map_err(|e| e.to_string()),
        Cleanup::Postgres { admin_url, name } => {
            let mut admin = sqlx::postgres::PgConnection::connect(&admin_url)
                .await
                .map_err(|e| e.to_string())?;
            // FORCE cannot end a session of another role (an autovacuum
            // worker that has just connected to the new database): such a
            // session ends on its own, so try again for a few seconds.
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let mut tries = 0;
            let dropped = loop {
                tries += 1;
                match sqlx::query(&drop).execute(&mut admin).await {
                    Ok(_) => break Ok(()),
                    Err(_) if tries < 50 => {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => break Err(format!("cannot drop database {name}: {e}")),
                }
            };
            let _ = admin.close().await;
            dropped
        }
    }
}

/// Runs `body` against a fresh database of `kind`, then removes the
/// database; a panic in the body is passed on after the clean-up.
pub async fn run<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (db, guard) = create(kind).await;
    let outcome = tokio::spawn(body(db)).await;
    let cleaned = cleanup(guard).await;
    match outcome {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("test task failed: {e}"),
    }
    if let Err(e) = cleaned {
        panic!("clean-up failed: {e}");
    }
}

/// Declares one async test body and runs it as two tests,
/// `<name>::sqlite` and `<name>::postgres`.
macro_rules! both {
    ($(#[$meta:meta])* async fn $name:ident($db:ident: Db) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($db: $crate::common::Db) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::common::run($crate::common::Kind::Sqlite, body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::common::run($crate::common::Kind::Postgres, body).await;
            }
        }
    };
}

/// Asserts that a store result is the given `StoreError` variant and that
/// its message contains `needle`; evaluates to the message.
macro_rules! assert_err {
    ($e:expr, $variant:ident) => {
        assert_err!($e, $variant, "")
    };
    ($e:expr, $variant:ident, $needle:expr) => {
        match $e {
            Err(llmgw_controlplane::store::StoreError::$variant(m)) => {
                assert!(
                    m.contains($needle),
                    "expected StoreError::{} containing {:?}, got {:?}",
                    stringify!($variant),
                    $needle,
                    m
                );
                m
            }
            other => panic!(
                "expected StoreError::{} containing {:?}, got {:?}",
                stringify!($variant),
                $needle,
                other
            ),
        }
    };
}

// ---------- fixtures ----------

pub fn provider(name: &str) -> ProviderSpec {
    ProviderSpec {
        name: name.to_string(),
        protocol: Protocol::OpenAi,
        base_url: format!("https://{name}.example.com/v1"),
        api_key: Some(SecretString::from(format!("sk-{name}-0123456789abcdef"))),
        headers: BTreeMap::from([
            ("x-team".to_string(), "research".to_string()),
            ("x-api-key".to_string(), format!("hdr-secret-{name}-42")),
        ]),
        timeout_s: 30,
        stream_usage: true,
        enabled: true,
        limits: None,
        proxy: None,
        default_params: Default::default(),
    }
}

pub fn target(provider: &str, upstream: &str) -> TargetSpec {
    TargetSpec {
        provider: provider.to_string(),
        upstream_model: upstream.to_string(),
        priority: 0,
        weight: 1,
        rules: String::new(),
        enabled: true,
        prices: None,
        default_params: Default::default(),
    }
}

/// Flat token prices (US dollars per 1M tokens: input, output, cached
/// input, cache write), exact to the nano-dollar.
pub fn prices(input: f64, output: f64, cached: f64, write: f64) -> PriceSheet {
    let a = |v: f64| Amount::from_f64(v).unwrap();
    PriceSheet::flat(TokenPrices {
        input: a(input),
        output: a(output),
        cached_input: a(cached),
        cache_write: a(write),
    })
}

pub fn model(name: &str, targets: Vec<TargetSpec>) -> ModelSpec {
    ModelSpec {
        name: name.to_string(),
        strategy: Strategy::Priority,
        max_attempts: 0,
        retry_delay_ms: None,
        prices: prices(1.0, 2.0, 0.5, 0.0),
        enabled: true,
        targets,
        default_max_tokens: None,
        translation: Translation::Strict,
        model_type: ModelType::Chat,
        limits: None,
    }
}

/// A key spec for a secret (the store only sees its hash).
pub fn key(name: &str, secret: &str) -> KeySpec {
    KeySpec {
        name: name.to_string(),
        hash: keys::hash_hex(secret),
        prefix: keys::display_prefix(secret),
        models: vec![],
        expires_at: None,
        revoked: false,
        log_bodies: true,
        limits: None,
    }
}

// ---------- a running control plane ----------

/// Starts the real control plane (`llmgw_controlplane::start`) on
/// 127.0.0.1:0 over `db`, with these tokens and `extra` flags, and connects
/// a channel to it.
pub async fn start_control_plane(
    db: &Db,
    data_dir: &std::path::Path,
    admin_token: &str,
    dataplane_token: &str,
    extra: &[&str],
) -> (llmgw_controlplane::Running, tonic::transport::Channel) {
    let mut args = vec![
        "llmgw-controlplane",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--database-url",
        db.url.as_str(),
        "--admin-token",
        admin_token,
        "--dataplane-token",
        dataplane_token,
        "--master-key",
        db.master_key.expose_secret(),
    ];
    args.extend_from_slice(extra);
    let args = <llmgw_controlplane::config::Args as clap::Parser>::try_parse_from(args).unwrap();
    let running = llmgw_controlplane::start(args).await.unwrap();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", running.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    (running, channel)
}

// ---------- one-write helpers ----------

pub async fn create_provider(store: &Store, spec: &ProviderSpec) {
    let mut tx = store.begin_write().await.unwrap();
    store.insert_provider(&mut tx, spec).await.unwrap();
    tx.commit().await.unwrap();
}

pub async fn create_model(store: &Store, spec: &ModelSpec) {
    let mut tx = store.begin_write().await.unwrap();
    store.insert_model(&mut tx, spec).await.unwrap();
    tx.commit().await.unwrap();
}

pub async fn create_key(store: &Store, spec: &KeySpec) {
    let mut tx = store.begin_write().await.unwrap();
    store.insert_key(&mut tx, spec).await.unwrap();
    tx.commit().await.unwrap();
}

pub async fn get_provider(store: &Store, name: &str) -> store::Result<store::ProviderRow> {
    let mut c = store.pool().acquire().await.unwrap();
    store.provider(&mut c, name).await
}

pub async fn get_model(store: &Store, name: &str) -> store::Result<store::ModelRow> {
    let mut c = store.pool().acquire().await.unwrap();
    store.model(&mut c, name).await
}

pub async fn get_key(store: &Store, name: &str) -> store::Result<store::KeyRow> {
    let mut c = store.pool().acquire().await.unwrap();
    store.key(&mut c, name).await
}

/// `SELECT COUNT(*) ...` (or any single BIGINT) on the store's pool.
pub async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A raw, still sealed column of a provider row.
pub async fn raw_provider_column(store: &Store, name: &str, column: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>(&format!(
        "SELECT {column} FROM providers WHERE name = $1"
    ))
    .bind(name)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

pub fn secret(s: &Option<SecretString>) -> Option<String> {
    s.as_ref().map(|k| k.expose_secret().to_string())
}

/// Field-by-field equality of provider specs (secrets compared opened).
pub fn assert_provider_eq(got: &ProviderSpec, want: &ProviderSpec) {
    assert_eq!(got.name, want.name);
    assert_eq!(got.protocol, want.protocol, "protocol of {}", want.name);
    assert_eq!(got.base_url, want.base_url, "base_url of {}", want.name);
    assert_eq!(
        secret(&got.api_key),
        secret(&want.api_key),
        "api_key of {}",
        want.name
    );
    assert_eq!(got.headers, want.headers, "headers of {}", want.name);
    assert_eq!(got.timeout_s, want.timeout_s, "timeout_s of {}", want.name);
    assert_eq!(got.stream_usage, want.stream_usage);
    assert_eq!(got.enabled, want.enabled, "enabled of {}", want.name);
    assert_eq!(
        secret(&got.proxy),
        secret(&want.proxy),
        "proxy of {}",
        want.name
    );
}

/// Applies only the migrations numbered below `before` to a fresh
/// database, as a gateway of that release would have left it.
pub async fn migrate_up_to(db: &Db, before: i64) -> sqlx::AnyPool {
    let dir = match db.kind {
        Kind::Sqlite => "sqlite",
        Kind::Postgres => "postgres",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(dir);
    let mut old = sqlx::migrate::Migrator::new(path).await.unwrap();
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version < before)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    sqlx::any::install_default_drivers();
    let sqlite = db.kind == Kind::Sqlite;
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect(&db.url)
        .await
        .unwrap();
    old.run(&pool).await.unwrap();
    pool
}

/// Provider 'p' (openai) and model 'm' in a database of an older schema
/// (`migrate_up_to`), with only the columns every schema has; their ids.
pub async fn old_provider_and_model(old: &sqlx::AnyPool) -> (i64, i64) {
    let provider_id: i64 = sqlx::query_scalar(
        "INSERT INTO providers (name, protocol, base_url, created_at, updated_at) \
         VALUES ('p', 'openai', 'https://p.example.com/v1', 1, 1) RETURNING id",
    )
    .fetch_one(old)
    .await
    .unwrap();
    let model_id: i64 = sqlx::query_scalar(
        "INSERT INTO models (name, strategy, created_at, updated_at) \
         VALUES ('m', 'priority', 1, 1) RETURNING id",
    )
    .fetch_one(old)
    .await
    .unwrap();
    (provider_id, model_id)
}
