//! The control plane's store: SQLite by default, PostgreSQL when the URL
//! says so, both through sqlx's Any driver and one set of SQL statements
//! (`$N` placeholders work on both). Times are Unix milliseconds and flags
//! are 0/1 integers so that both databases decode alike.
//!
//! Every configuration write runs in one transaction that first bumps the
//! configuration version. Taking that row lock first serialises writers on
//! both databases, and makes the version the snapshot version.

mod specs;

pub use specs::{
    normalise_rules as specs_normalise_rules, KeySpec, ModelSpec, Prices, Problems, ProviderSpec,
    TargetSpec,
};

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use llmgw_core::table::Translation;
use llmgw_core::{Protocol, Strategy};
use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::secrets::{Sealer, SecretError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InUse(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored secret: {0}")]
    Secret(#[from] SecretError),
}

impl From<llmgw_core::ValidationError> for StoreError {
    fn from(e: llmgw_core::ValidationError) -> Self {
        StoreError::Invalid(e.0)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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
}

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

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
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

/// One field of a stored row that cannot be decrypted or parsed, or that
/// breaks a rule of the data model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The field as the API names it ("api_key", "targets[1].weight").
    pub field: String,
    /// What is wrong, without the value.
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Reads the columns of one row, noting each column that cannot be decoded
/// (and reading it as its default) instead of failing the whole read: one
/// bad row must not stop the control plane.
struct RowReader<'r> {
    row: &'r AnyRow,
    /// Put before field names, e.g. "targets[2].".
    prefix: String,
    broken: Vec<Broken>,
}

impl<'r> RowReader<'r> {
    fn new(row: &'r AnyRow) -> Self {
        RowReader {
            row,
            prefix: String::new(),
            broken: Vec::new(),
        }
    }

    /// What could not be read; if everything could, what the spec's own
    /// check finds wrong with what was read.
    fn broken_or(self, problems: impl FnOnce() -> Vec<Broken>) -> Vec<Broken> {
        if self.broken.is_empty() {
            problems()
        } else {
            self.broken
        }
    }

    fn note(&mut self, field: &str, reason: impl Into<String>) {
        self.broken.push(Broken {
            field: format!("{}{field}", self.prefix),
            reason: reason.into(),
        });
    }

    fn get<T>(&mut self, col: &str, field: &str) -> T
    where
        T: for<'a> sqlx::Decode<'a, Any> + sqlx::Type<Any> + Default,
    {
        match self.row.try_get::<T, _>(col) {
            Ok(v) => v,
            Err(e) => {
                self.note(field, format!("cannot be read: {e}"));
                T::default()
            }
        }
    }

    fn flag(&mut self, col: &str) -> bool {
        self.get::<i64>(col, col) != 0
    }

    fn u32(&mut self, col: &str) -> u32 {
        let v: i64 = self.get(col, col);
        u32::try_from(v).unwrap_or_else(|_| {
            self.note(col, format!("the stored value {v} is out of range"));
            0
        })
    }

    /// A column parsed with `FromStr`; `fallback` when it does not parse.
    fn parse<T: FromStr<Err = llmgw_core::ValidationError>>(
        &mut self,
        col: &str,
        fallback: T,
    ) -> T {
        let text: String = self.get(col, col);
        T::from_str(&text).unwrap_or_else(|e| {
            self.note(col, e.0);
            fallback
        })
    }
}

/// A provider as stored, with its secrets opened. `broken` lists the
/// fields that could not be opened or parsed (their values in `spec` are
/// defaults); such a provider is left out of snapshots.
#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub spec: ProviderSpec,
    pub created_at: i64,
    pub updated_at: i64,
    pub broken: Vec<Broken>,
}

#[derive(Debug, Clone)]
pub struct ModelRow {
    pub spec: ModelSpec,
    pub created_at: i64,
    pub updated_at: i64,
    pub broken: Vec<Broken>,
}

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub spec: KeySpec,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub broken: Vec<Broken>,
}

#[derive(Debug, Clone, Default)]
pub struct DataPlaneRow {
    pub node_id: String,
    pub peer_address: String,
    pub connected_since: i64,
    pub last_seen: i64,
    pub acked_version: u64,
    pub nacked_version: u64,
    pub last_nack_error: String,
    pub connected: bool,
}

/// Everything a snapshot is built from, read at one consistent point.
#[derive(Debug, Default)]
pub struct ConfigState {
    pub version: u64,
    pub providers: Vec<ProviderRow>,
    pub models: Vec<ModelRow>,
    pub keys: Vec<KeyRow>,
    pub settings: BTreeMap<String, String>,
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
        let pool = AnyPoolOptions::new()
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
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            sealer,
            url: Arc::new(secrecy::SecretString::from(url.to_string())),
            owner,
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

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub async fn close(&self) {
        self.pool.close().await;
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

    // ---------- settings and the master-key check ----------

    pub async fn settings(conn: &mut AnyConnection) -> Result<BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT name, value FROM settings")
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("value")?)))
            .collect()
    }

    /// Stores the given settings; bumps the version only if one changed.
    pub async fn sync_settings(&self, wanted: &BTreeMap<String, String>) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let current = Self::settings(&mut conn).await?;
        drop(conn);
        let changed: Vec<_> = wanted
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .collect();
        if changed.is_empty() {
            return Ok(false);
        }
        let mut tx = self.begin_write().await?;
        for (k, v) in changed {
            upsert_setting(&mut tx, k, v).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Checks that the configured master key opens what is stored, and
    /// re-seals values sealed with a previous key. Refuses to go on when a
    /// stored value cannot be opened.
    pub async fn check_master_key(&self) -> Result<()> {
        const CHECK: &str = "master_key_check";
        const CHECK_TEXT: &str = "llmgw master key check";
        let mut conn = self.pool.acquire().await?;
        let stored = Self::settings(&mut conn).await?.remove(CHECK);
        drop(conn);
        match stored {
            None => {
                let sealed = self.sealer.seal(CHECK_TEXT, CHECK)?;
                let mut tx = self.pool.begin().await?;
                upsert_setting(&mut tx, CHECK, &sealed).await?;
                tx.commit().await?;
            }
            Some(sealed) => {
                let plain = self.sealer.open(&sealed, CHECK).map_err(|e| {
                    StoreError::Invalid(format!(
                        "the master key (LLMGW_MASTER_KEY or the master.key file) does not match this database: {e}. \
                         Start with the key the data was sealed with; to rotate, put the old key in LLMGW_MASTER_KEY_PREVIOUS"
                    ))
                })?;
                if plain.expose_secret() != CHECK_TEXT {
                    return Err(StoreError::Invalid(
                        "master key check value is corrupt".into(),
                    ));
                }
            }
        }
        self.reseal_rotated().await
    }

    async fn reseal_rotated(&self) -> Result<()> {
        let current = self.sealer.current_key_id().to_string();
        let rows = sqlx::query("SELECT name, api_key_sealed, headers_sealed FROM providers")
            .fetch_all(&self.pool)
            .await?;
        let stale = |v: &Option<String>| {
            v.as_deref()
                .and_then(Sealer::key_id_of)
                .is_some_and(|k| k != current)
        };
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for r in &rows {
            let name: String = r.try_get("name")?;
            for col in ["api_key_sealed", "headers_sealed"] {
                let v: Option<String> = r.try_get(col)?;
                if stale(&v) {
                    let ctx = seal_context(&name, col);
                    let plain = match self.sealer.open(v.as_deref().unwrap_or_default(), &ctx) {
                        Ok(p) => p,
                        Err(e) => {
                            // Left as it is: the provider is listed as
                            // broken until it is fixed or deleted.
                            tracing::error!(
                                kind = "provider",
                                name = %name,
                                field = field_of_column(col),
                                error = %e,
                                "cannot re-seal a stored secret"
                            );
                            continue;
                        }
                    };
                    let resealed = self.sealer.seal(plain.expose_secret(), &ctx)?;
                    sqlx::query(&format!("UPDATE providers SET {col} = $1 WHERE name = $2"))
                        .bind(resealed)
                        .bind(&name)
                        .execute(&mut *tx)
                        .await?;
                    n += 1;
                }
            }
        }
        let check: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'master_key_check'")
                .fetch_optional(&mut *tx)
                .await?;
        if stale(&check) {
            let sealed = self
                .sealer
                .seal("llmgw master key check", "master_key_check")?;
            upsert_setting(&mut tx, "master_key_check", &sealed).await?;
        }
        tx.commit().await?;
        if n > 0 {
            tracing::info!(
                values = n,
                "re-sealed provider secrets with the current master key"
            );
        }
        Ok(())
    }

    // ---------- providers ----------

    fn provider_from_row(&self, r: &AnyRow) -> ProviderRow {
        let mut rd = RowReader::new(r);
        let name: String = rd.get("name", "name");
        let open = |rd: &mut RowReader<'_>, col: &str| -> Option<SecretString> {
            let sealed: Option<String> = rd.get(col, field_of_column(col));
            let sealed = sealed?;
            match self.sealer.open(&sealed, &seal_context(&name, col)) {
                Ok(plain) => Some(plain),
                Err(e) => {
                    rd.note(field_of_column(col), format!("cannot be decrypted: {e}"));
                    None
                }
            }
        };
        let api_key = open(&mut rd, "api_key_sealed");
        let headers = match open(&mut rd, "headers_sealed") {
            Some(plain) => serde_json::from_str(plain.expose_secret()).unwrap_or_else(|_| {
                rd.note("headers", "the stored headers are not a JSON object");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        let spec = ProviderSpec {
            protocol: rd.parse("protocol", Protocol::OpenAi),
            name,
            base_url: rd.get("base_url", "base_url"),
            api_key,
            headers,
            timeout_s: rd.u32("timeout_s"),
            stream_usage: rd.flag("stream_usage"),
            enabled: rd.flag("enabled"),
        };
        let created_at = rd.get("created_at", "created_at");
        let updated_at = rd.get("updated_at", "updated_at");
        let broken = rd.broken_or(|| spec.problems().0);
        ProviderRow {
            spec,
            created_at,
            updated_at,
            broken,
        }
    }

    pub async fn providers(&self, conn: &mut AnyConnection) -> Result<Vec<ProviderRow>> {
        let rows = sqlx::query("SELECT * FROM providers ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.iter().map(|r| self.provider_from_row(r)).collect())
    }

    pub async fn provider(&self, conn: &mut AnyConnection, name: &str) -> Result<ProviderRow> {
        let row = sqlx::query("SELECT * FROM providers WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("provider '{name}' not found")))?;
        Ok(self.provider_from_row(&row))
    }

    fn seal_provider(&self, spec: &ProviderSpec) -> Result<(Option<String>, Option<String>)> {
        let key = match &spec.api_key {
            Some(k) if !k.expose_secret().is_empty() => Some(self.sealer.seal(
                k.expose_secret(),
                &seal_context(&spec.name, "api_key_sealed"),
            )?),
            _ => None,
        };
        let headers = if spec.headers.is_empty() {
            None
        } else {
            let json = serde_json::to_string(&spec.headers)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            Some(
                self.sealer
                    .seal(&json, &seal_context(&spec.name, "headers_sealed"))?,
            )
        };
        Ok((key, headers))
    }

    pub async fn insert_provider(&self, tx: &mut AnyConnection, spec: &ProviderSpec) -> Result<()> {
        spec.validate()?;
        if exists(tx, "providers", &spec.name).await? {
            return Err(StoreError::AlreadyExists(format!(
                "provider '{}' already exists",
                spec.name
            )));
        }
        let (key, headers) = self.seal_provider(spec)?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO providers (name, protocol, base_url, api_key_sealed, headers_sealed, \
             timeout_s, stream_usage, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&spec.name)
        .bind(spec.protocol.as_str())
        .bind(&spec.base_url)
        .bind(key)
        .bind(headers)
        .bind(i64::from(spec.timeout_s))
        .bind(int(spec.stream_usage))
        .bind(int(spec.enabled))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    pub async fn update_provider(&self, tx: &mut AnyConnection, spec: &ProviderSpec) -> Result<()> {
        spec.validate()?;
        let (key, headers) = self.seal_provider(spec)?;
        let done = sqlx::query(
            "UPDATE providers SET protocol = $1, base_url = $2, api_key_sealed = $3, \
             headers_sealed = $4, timeout_s = $5, stream_usage = $6, enabled = $7, updated_at = $8 \
             WHERE name = $9",
        )
        .bind(spec.protocol.as_str())
        .bind(&spec.base_url)
        .bind(key)
        .bind(headers)
        .bind(i64::from(spec.timeout_s))
        .bind(int(spec.stream_usage))
        .bind(int(spec.enabled))
        .bind(now_ms())
        .bind(&spec.name)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "provider '{}' not found",
                spec.name
            )));
        }
        Ok(())
    }

    /// Deletes a provider unless a model still uses it.
    pub async fn delete_provider(&self, tx: &mut AnyConnection, name: &str) -> Result<()> {
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT m.name FROM models m \
             JOIN model_targets t ON t.model_id = m.id \
             JOIN providers p ON p.id = t.provider_id \
             WHERE p.name = $1 ORDER BY m.name",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !users.is_empty() {
            return Err(StoreError::InUse(format!(
                "provider '{name}' is used by model{} {}; remove it from {} first",
                if users.len() == 1 { "" } else { "s" },
                users
                    .iter()
                    .map(|u| format!("'{u}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if users.len() == 1 {
                    "that model"
                } else {
                    "those models"
                },
            )));
        }
        let done = sqlx::query("DELETE FROM providers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("provider '{name}' not found")));
        }
        Ok(())
    }

    // ---------- models ----------

    pub async fn models(&self, conn: &mut AnyConnection) -> Result<Vec<ModelRow>> {
        let rows = sqlx::query("SELECT * FROM models ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
        let targets = sqlx::query(
            "SELECT t.*, p.name AS provider_name FROM model_targets t \
             JOIN providers p ON p.id = t.provider_id ORDER BY t.model_id, t.position",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut by_model: BTreeMap<i64, Vec<&AnyRow>> = BTreeMap::new();
        for t in &targets {
            by_model.entry(t.try_get("model_id")?).or_default().push(t);
        }
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                Ok(model_from_row(
                    r,
                    by_model.remove(&id).as_deref().unwrap_or_default(),
                ))
            })
            .collect()
    }

    pub async fn model(&self, conn: &mut AnyConnection, name: &str) -> Result<ModelRow> {
        let row = sqlx::query("SELECT * FROM models WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("model '{name}' not found")))?;
        let id: i64 = row.try_get("id")?;
        let targets = sqlx::query(
            "SELECT t.*, p.name AS provider_name FROM model_targets t \
             JOIN providers p ON p.id = t.provider_id WHERE t.model_id = $1 ORDER BY t.position",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let targets: Vec<&AnyRow> = targets.iter().collect();
        Ok(model_from_row(&row, &targets))
    }

    pub async fn insert_model(&self, tx: &mut AnyConnection, spec: &ModelSpec) -> Result<()> {
        spec.validate()?;
        if exists(tx, "models", &spec.name).await? {
            return Err(StoreError::AlreadyExists(format!(
                "model '{}' already exists",
                spec.name
            )));
        }
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO models (name, strategy, max_attempts, retry_delay_ms, price_input, \
             price_output, price_cached_input, price_cache_write, enabled, default_max_tokens, \
             translation, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        )
        .bind(&spec.name)
        .bind(spec.strategy.as_str())
        .bind(i64::from(spec.max_attempts))
        .bind(spec.retry_delay_ms.map(i64::from))
        .bind(spec.prices.input)
        .bind(spec.prices.output)
        .bind(spec.prices.cached_input)
        .bind(spec.prices.cache_write)
        .bind(int(spec.enabled))
        .bind(spec.default_max_tokens.map(i64::from))
        .bind(spec.translation.as_str())
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        insert_targets(tx, id, &spec.targets).await
    }

    pub async fn update_model(&self, tx: &mut AnyConnection, spec: &ModelSpec) -> Result<()> {
        spec.validate()?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE models SET strategy = $1, max_attempts = $2, retry_delay_ms = $3, \
             price_input = $4, price_output = $5, price_cached_input = $6, \
             price_cache_write = $7, enabled = $8, default_max_tokens = $9, translation = $10, \
             updated_at = $11 WHERE name = $12 RETURNING id",
        )
        .bind(spec.strategy.as_str())
        .bind(i64::from(spec.max_attempts))
        .bind(spec.retry_delay_ms.map(i64::from))
        .bind(spec.prices.input)
        .bind(spec.prices.output)
        .bind(spec.prices.cached_input)
        .bind(spec.prices.cache_write)
        .bind(int(spec.enabled))
        .bind(spec.default_max_tokens.map(i64::from))
        .bind(spec.translation.as_str())
        .bind(now_ms())
        .bind(&spec.name)
        .fetch_optional(&mut *tx)
        .await?;
        let id =
            id.ok_or_else(|| StoreError::NotFound(format!("model '{}' not found", spec.name)))?;
        sqlx::query("DELETE FROM model_targets WHERE model_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_targets(tx, id, &spec.targets).await
    }

    pub async fn delete_model(&self, tx: &mut AnyConnection, name: &str) -> Result<()> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM models WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let id = id.ok_or_else(|| StoreError::NotFound(format!("model '{name}' not found")))?;
        // Explicit, so it does not depend on the connection's foreign-key mode.
        sqlx::query("DELETE FROM model_targets WHERE model_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM models WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    // ---------- client keys ----------

    pub async fn keys(&self, conn: &mut AnyConnection) -> Result<Vec<KeyRow>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    pub async fn key(&self, conn: &mut AnyConnection, name: &str) -> Result<KeyRow> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("API key '{name}' not found")))?;
        Ok(key_from_row(&row))
    }

    pub async fn insert_key(&self, tx: &mut AnyConnection, spec: &KeySpec) -> Result<()> {
        spec.validate()?;
        if exists(tx, "api_keys", &spec.name).await? {
            return Err(StoreError::AlreadyExists(format!(
                "API key '{}' already exists",
                spec.name
            )));
        }
        let models =
            serde_json::to_string(&spec.models).map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query(
            "INSERT INTO api_keys (name, key_hash, prefix, models, expires_at, revoked, \
             log_bodies, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&spec.name)
        .bind(&spec.hash)
        .bind(&spec.prefix)
        .bind(models)
        .bind(spec.expires_at)
        .bind(int(spec.revoked))
        .bind(int(spec.log_bodies))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::AlreadyExists("another API key has the same secret".into())
            }
            other => StoreError::Db(other),
        })?;
        Ok(())
    }

    /// Updates a key; its secret changes only through a new hash.
    pub async fn update_key(&self, tx: &mut AnyConnection, spec: &KeySpec) -> Result<()> {
        spec.validate()?;
        let models =
            serde_json::to_string(&spec.models).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE api_keys SET models = $1, expires_at = $2, revoked = $3, log_bodies = $4, \
             key_hash = $5, prefix = $6 WHERE name = $7",
        )
        .bind(models)
        .bind(spec.expires_at)
        .bind(int(spec.revoked))
        .bind(int(spec.log_bodies))
        .bind(&spec.hash)
        .bind(&spec.prefix)
        .bind(&spec.name)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::AlreadyExists("another API key has the same secret".into())
            }
            other => StoreError::Db(other),
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "API key '{}' not found",
                spec.name
            )));
        }
        Ok(())
    }

    pub async fn delete_key(&self, tx: &mut AnyConnection, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("API key '{name}' not found")));
        }
        Ok(())
    }

    // ---------- snapshot source ----------

    /// Reads the whole configuration at one consistent point.
    pub async fn config_state(&self) -> Result<ConfigState> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let state = ConfigState {
            version: Self::version_in(&mut tx).await?,
            providers: self.providers(&mut tx).await?,
            models: self.models(&mut tx).await?,
            keys: self.keys(&mut tx).await?,
            settings: Self::settings(&mut tx).await?,
        };
        tx.commit().await?;
        Ok(state)
    }

    // ---------- data planes ----------

    pub async fn data_plane_connected(
        &self,
        node_id: &str,
        peer: &str,
        version: u64,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO data_planes (node_id, peer_address, connected_since, last_seen, \
             acked_version, connected) VALUES ($1, $2, $3, $4, $5, 1) \
             ON CONFLICT (node_id) DO UPDATE SET peer_address = excluded.peer_address, \
             connected_since = excluded.connected_since, last_seen = excluded.last_seen, \
             acked_version = excluded.acked_version, connected = 1",
        )
        .bind(node_id)
        .bind(peer)
        .bind(now)
        .bind(now)
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn data_plane_acked(&self, node_id: &str, version: u64) -> Result<()> {
        sqlx::query("UPDATE data_planes SET acked_version = $1, last_seen = $2 WHERE node_id = $3")
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .bind(now_ms())
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn data_plane_nacked(&self, node_id: &str, version: u64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE data_planes SET nacked_version = $1, last_nack_error = $2, last_seen = $3 \
             WHERE node_id = $4",
        )
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .bind(error)
        .bind(now_ms())
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn data_plane_seen(&self, node_id: &str) -> Result<()> {
        sqlx::query("UPDATE data_planes SET last_seen = $1 WHERE node_id = $2")
            .bind(now_ms())
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a stream gone, unless a newer stream of the same node took over.
    pub async fn data_plane_disconnected(&self, node_id: &str, connected_since: i64) -> Result<()> {
        sqlx::query(
            "UPDATE data_planes SET connected = 0, last_seen = $1 \
             WHERE node_id = $2 AND connected_since <= $3",
        )
        .bind(now_ms())
        .bind(node_id)
        .bind(connected_since)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn data_plane_since(&self, node_id: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT connected_since FROM data_planes WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    pub async fn data_planes(&self) -> Result<Vec<DataPlaneRow>> {
        let rows = sqlx::query("SELECT * FROM data_planes ORDER BY node_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DataPlaneRow {
                    node_id: r.try_get("node_id")?,
                    peer_address: r.try_get("peer_address")?,
                    connected_since: r.try_get("connected_since")?,
                    last_seen: r.try_get("last_seen")?,
                    acked_version: r.try_get::<i64, _>("acked_version")?.unsigned_abs(),
                    nacked_version: r.try_get::<i64, _>("nacked_version")?.unsigned_abs(),
                    last_nack_error: r.try_get("last_nack_error")?,
                    connected: flag(r, "connected")?,
                })
            })
            .collect()
    }
}

fn seal_context(provider: &str, column: &str) -> String {
    format!("provider/{provider}/{column}")
}

/// The API's name for a sealed column.
fn field_of_column(column: &str) -> &str {
    column.strip_suffix("_sealed").unwrap_or(column)
}

async fn upsert_setting(tx: &mut AnyConnection, name: &str, value: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(value)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn exists(conn: &mut AnyConnection, table: &str, name: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE name = $1"))
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

async fn insert_targets(
    tx: &mut AnyConnection,
    model_id: i64,
    targets: &[TargetSpec],
) -> Result<()> {
    for (i, t) in targets.iter().enumerate() {
        let provider_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM providers WHERE name = $1")
                .bind(&t.provider)
                .fetch_optional(&mut *tx)
                .await?;
        let provider_id = provider_id.ok_or_else(|| {
            StoreError::Invalid(format!(
                "target {} names provider '{}', which does not exist",
                i + 1,
                t.provider
            ))
        })?;
        // No NULL price is ever bound: sqlx's Any driver sends a NULL f64 to
        // PostgreSQL as float4, and the cached statement then rejects a later
        // float8 ("incorrect binary data format"). Left out, the columns are NULL.
        let sql = if t.prices.is_some() {
            "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, priority, \
             weight, rules, enabled, price_input, price_output, price_cached_input, \
             price_cache_write) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        } else {
            "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, priority, \
             weight, rules, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        };
        let mut insert = sqlx::query(sql)
            .bind(model_id)
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .bind(provider_id)
            .bind(&t.upstream_model)
            .bind(i64::from(t.priority))
            .bind(i64::from(t.weight))
            .bind(specs::normalise_rules(&t.rules)?)
            .bind(int(t.enabled));
        if let Some(p) = t.prices {
            insert = insert
                .bind(p.input)
                .bind(p.output)
                .bind(p.cached_input)
                .bind(p.cache_write);
        }
        insert.execute(&mut *tx).await?;
    }
    Ok(())
}

fn target_from_row(rd: &mut RowReader<'_>) -> TargetSpec {
    let input: Option<f64> = rd.get("price_input", "prices");
    let prices = input.map(|input| Prices {
        input,
        output: rd
            .get::<Option<f64>>("price_output", "prices")
            .unwrap_or(0.0),
        cached_input: rd
            .get::<Option<f64>>("price_cached_input", "prices")
            .unwrap_or(0.0),
        cache_write: rd
            .get::<Option<f64>>("price_cache_write", "prices")
            .unwrap_or(0.0),
    });
    let priority: i64 = rd.get("priority", "priority");
    TargetSpec {
        provider: rd.get("provider_name", "provider"),
        upstream_model: rd.get("upstream_model", "upstream_model"),
        priority: i32::try_from(priority).unwrap_or_else(|_| {
            rd.note(
                "priority",
                format!("the stored value {priority} is out of range"),
            );
            0
        }),
        weight: rd.u32("weight"),
        rules: rd.get("rules", "rules"),
        enabled: rd.flag("enabled"),
        prices,
    }
}

fn model_from_row(r: &AnyRow, target_rows: &[&AnyRow]) -> ModelRow {
    let mut broken = Vec::new();
    let targets = target_rows
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut rd = RowReader::new(t);
            rd.prefix = format!("targets[{i}].");
            let spec = target_from_row(&mut rd);
            broken.append(&mut rd.broken);
            spec
        })
        .collect();
    let mut rd = RowReader::new(r);
    let delay: Option<i64> = rd.get("retry_delay_ms", "retry_delay_ms");
    let default_max_tokens: Option<i64> = rd.get("default_max_tokens", "default_max_tokens");
    let spec = ModelSpec {
        name: rd.get("name", "name"),
        strategy: rd.parse("strategy", Strategy::default()),
        max_attempts: rd.u32("max_attempts"),
        retry_delay_ms: delay.map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
        prices: Prices {
            input: rd.get("price_input", "prices"),
            output: rd.get("price_output", "prices"),
            cached_input: rd.get("price_cached_input", "prices"),
            cache_write: rd.get("price_cache_write", "prices"),
        },
        enabled: rd.flag("enabled"),
        targets,
        default_max_tokens: default_max_tokens.and_then(|n| {
            u32::try_from(n)
                .map_err(|_| {
                    rd.note(
                        "default_max_tokens",
                        format!("the stored value {n} is out of range"),
                    )
                })
                .ok()
        }),
        translation: rd.parse("translation", Translation::default()),
    };
    let created_at = rd.get("created_at", "created_at");
    let updated_at = rd.get("updated_at", "updated_at");
    broken.append(&mut rd.broken);
    if broken.is_empty() {
        broken = spec.problems().0;
    }
    ModelRow {
        spec,
        created_at,
        updated_at,
        broken,
    }
}

fn key_from_row(r: &AnyRow) -> KeyRow {
    let mut rd = RowReader::new(r);
    let models: String = rd.get("models", "models");
    let models = serde_json::from_str(&models).unwrap_or_else(|_| {
        rd.note("models", "the stored models are not a JSON list");
        Vec::new()
    });
    let spec = KeySpec {
        name: rd.get("name", "name"),
        hash: rd.get("key_hash", "hash"),
        prefix: rd.get("prefix", "prefix"),
        models,
        expires_at: rd.get("expires_at", "expires_at"),
        revoked: rd.flag("revoked"),
        log_bodies: rd.flag("log_bodies"),
    };
    let created_at = rd.get("created_at", "created_at");
    let last_used_at = rd.get("last_used_at", "last_used_at");
    let broken = rd.broken_or(|| spec.problems().0);
    KeyRow {
        spec,
        created_at,
        last_used_at,
        broken,
    }
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
