//! The control plane's store: SQLite by default, PostgreSQL when the URL
//! says so, both through sqlx's Any driver and one set of SQL statements
//! (`$N` placeholders work on both). Times are Unix milliseconds and flags
//! are 0/1 integers so that both databases decode alike.
//!
//! Every configuration write runs in one transaction that first bumps the
//! configuration version. Taking that row lock first serialises writers on
//! both databases, and makes the version the snapshot version.
//!
//! This file holds the `Store` itself (the pool, migrations, the SQLite
//! owner lock, the write transaction) and the helpers its parts share; each
//! entity's reads and writes live in their own file: `providers`, `models`
//! (with their targets), `keys`, `limits` (of keys, models and providers,
//! written with them, and the default key limits), `settings` (with the
//! master-key check),
//! `data_planes`, `live` (the requests in flight) and `snapshot` (the consistent read a snapshot is built
//! from). `specs` holds the rules every write must pass, `row` the lenient
//! row reader, and `error` what can go wrong.

mod data_planes;
mod error;
mod keys;
mod limits;
mod live;
mod models;
pub(crate) mod multirow;
mod prices;
mod providers;
pub mod quota;
mod row;
mod settings;
mod snapshot;
mod specs;

pub use data_planes::DataPlaneRow;
pub use error::{bounded, Result, StoreError, MAX_ERROR_MESSAGE};
pub use keys::KeyRow;
pub use limits::{LimitsChange, LimitsRow, DEFAULT_SCOPE};
pub use live::{LiveOwner, LiveStream, LIVE_CHANNEL, LIVE_LEASE_MS};
pub use models::ModelRow;
pub use prices::{target_keys, PriceChange, PriceSet, TargetKey};
pub use providers::ProviderRow;
pub use row::Broken;
pub use snapshot::ConfigState;
pub use specs::{
    normalise_rules as specs_normalise_rules, KeySpec, ModelSpec, Problems, ProviderSpec,
    TargetSpec,
};

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::secrets::Sealer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database plus the sealer for stored credentials.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    sealer: Arc<Sealer>,
    /// The URL, for connections outside the pool (PostgreSQL LISTEN).
    url: Arc<secrecy::SecretString>,
    /// SQLite only: the lock that keeps a second control plane off the file.
    owner: Option<Arc<SqliteOwner>>,
    /// What storing the request logs' details needs: their zstd
    /// dictionaries and body retention (`logs/details.rs`).
    details: Arc<crate::logs::details::Details>,
    /// PostgreSQL only: connections of the PostgreSQL driver itself, for
    /// what `sqlx::Any` cannot do: `COPY` and arrays (log ingest,
    /// `logs/ingest/write_postgres.rs`). Opened as they are first needed.
    pg: Option<PgPool>,
}

/// `application_name` of the PostgreSQL connections that store request
/// logs (`Store::pg_pool`), unless the database URL sets one.
const INGEST_APPLICATION_NAME: &str = "llmgw log ingest";

/// The NOTIFY channel that tells every control plane on a PostgreSQL
/// database that the configuration changed.
pub const CONFIG_CHANNEL: &str = "llmgw_config";

/// An exclusive OS lock on `<database>.lock`, held while the store is open:
/// one SQLite file serves one control plane (the database's own locks
/// would let two in, and their migrators and hubs would race).
#[derive(Debug)]
struct SqliteOwner {
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl SqliteOwner {
    fn take(db: &Path) -> Result<Self> {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = std::path::PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                StoreError::Invalid(format!("cannot open the lock file {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(SqliteOwner {
                file: std::sync::Mutex::new(Some(file)),
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Invalid(format!(
                "another control plane is using the SQLite database {} (it holds {}). \
                 SQLite supports one control plane; run several on PostgreSQL \
                 (DATABASE_URL=postgres://...)",
                db.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Invalid(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }

    fn release(&self) {
        if let Ok(mut f) = self.file.lock() {
            // Dropping the file releases the lock.
            f.take();
        }
    }
}

/// The file a SQLite URL names; `None` for in-memory databases.
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || rest.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Which backend a database URL names.
pub fn backend_of(url: &str) -> Result<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else {
        Err(StoreError::Invalid(
            "DATABASE_URL must start with sqlite: or postgres://".into(),
        ))
    }
}

/// A SQLite URL for a file, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 in UTC, or "" for none.
pub fn rfc3339(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms > 0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()),
        )
        .to_string(),
        _ => String::new(),
    }
}

pub fn parse_rfc3339(s: &str) -> Result<Option<i64>> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let t = humantime::parse_rfc3339_weak(s.trim())
        .map_err(|e| StoreError::Invalid(format!("'{s}' is not an RFC 3339 time: {e}")))?;
    // Whole seconds, as `rfc3339` writes them, so an exported time applies
    // back unchanged.
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| StoreError::Invalid(format!("'{s}' is before 1970")))?
        .as_secs();
    Ok(Some(
        i64::try_from(secs).map_or(i64::MAX, |s| s.saturating_mul(1000)),
    ))
}

fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

fn int(b: bool) -> i64 {
    i64::from(b)
}
type Tx<'a> = Transaction<'a, Any>;

impl Store {
    /// Connects, prepares SQLite (WAL, foreign keys) and applies the
    /// embedded migrations.
    pub async fn open(url: &str, sealer: Arc<Sealer>) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        // Before anything touches the file, so two starts never race.
        let owner = match backend {
            Backend::Sqlite => sqlite_path(url)
                .map(|p| SqliteOwner::take(&p))
                .transpose()?
                .map(Arc::new),
            Backend::Postgres => None,
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool_options = || {
            AnyPoolOptions::new()
                .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
        };
        let migrating = pool_options().connect_with(options.clone()).await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&migrating)
                .await?;
        }
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&migrating).await?;
        // The store serves from connections opened after the migrations: a
        // SQLite connection that read the schema before a migration changed
        // a table would prepare `SELECT *` against its stale copy, and sqlx
        // would keep that statement's old column list when SQLite
        // re-prepares it with the new one (a row with more values than
        // columns panics in sqlx-sqlite).
        migrating.close().await;
        let pool = pool_options().connect_with(options).await?;
        let pg = match backend {
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)?;
                // Told apart in `pg_stat_activity`, unless the URL names
                // the application itself.
                let options = match options.get_application_name() {
                    Some(_) => options,
                    None => options.application_name(INGEST_APPLICATION_NAME),
                };
                Some(
                    PgPoolOptions::new()
                        .max_connections(10)
                        .acquire_timeout(Duration::from_secs(10))
                        .connect_lazy_with(options),
                )
            }
            Backend::Sqlite => None,
        };
        Ok(Store {
            pool,
            backend,
            sealer,
            url: Arc::new(secrecy::SecretString::from(url.to_string())),
            owner,
            details: Arc::default(),
            pg,
        })
    }

    /// The database URL (with its password).
    pub fn url(&self) -> &secrecy::SecretString {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The PostgreSQL driver's own pool on the same database; `None` on
    /// SQLite.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        self.pg.as_ref()
    }

    /// The request logs' details: their dictionaries and body retention.
    pub fn details(&self) -> &crate::logs::details::Details {
        &self.details
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(pg) = &self.pg {
            pg.close().await;
        }
        if let Some(owner) = &self.owner {
            owner.release();
        }
    }

    /// Starts a configuration write: the version is bumped first so the
    /// transaction holds the writer lock from its first statement.
    pub async fn begin_write(&self) -> Result<Tx<'static>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE config_state SET version = version + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        if self.backend == Backend::Postgres {
            // Delivered to every listening control plane when (and only if)
            // the transaction commits.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CONFIG_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    pub async fn config_version(&self) -> Result<u64> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unsigned_abs())
    }

    pub async fn version_in(tx: &mut AnyConnection) -> Result<u64> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        Ok(v.unsigned_abs())
    }
}

async fn exists(conn: &mut AnyConnection, table: &str, name: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE name = $1"))
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// Redacts the password of a database URL for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
