#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! Harness for llmgw's end-to-end tests: the real binaries from
//! `target/debug` run as separate processes and talk real gRPC to each other,
//! on real SQLite files and real PostgreSQL databases.
//!
//! - [`ControlPlane`] runs `llmgw-controlplane` on 127.0.0.1 port 0 in its own
//!   temporary folder, and reads the bound address from its JSON log.
//! - [`DataPlane`] runs `llmgw-dataplane` the same way; [`DataPlane::readyz`]
//!   asks its /readyz.
//! - [`cli`] and friends run the `llmgw` binary against a control plane.
//! - [`PgDatabase`] creates a fresh PostgreSQL database for one test from
//!   `LLMGW_TEST_POSTGRES_URL` and drops it afterwards.
//!
//! Every process is killed when its guard is dropped; everything it writes
//! (stdout and stderr) is kept for inspection and printed if the test fails.

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(20);
/// Bound for a process to come up (debug binaries, database migrations).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for things that should happen "soon" but have no stated limit.
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A random lower-case hex string of 16 characters.
pub fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A fresh master key: 32 random bytes as base64.
pub fn random_master_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Polls `f` every [`POLL`] until it returns `Some`, or panics after
/// `timeout` naming `what`.
pub async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Path of one of the workspace's binaries: next to the test executable
/// (`target/debug/deps/xxx` -> `target/debug/NAME`), else in `LLMGW_BIN_DIR`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut candidates: Vec<PathBuf> = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .into_iter()
        .collect();
    if let Some(dir) = std::env::var_os("LLMGW_BIN_DIR") {
        candidates.push(PathBuf::from(dir).join(name));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "binary `{name}` not found (looked at {candidates:?}): \
                 run `cargo build --workspace --bins` first (scripts/test.sh does)"
            )
        })
}

/// A command with a clean environment: only PATH and a few debugging
/// variables come through, so no LLMGW_* setting of the developer's shell
/// changes what a test sees.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for var in ["PATH", "RUST_BACKTRACE", "LLVM_PROFILE_FILE"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A child process whose stdout and stderr are collected into `log`; it is
/// killed (SIGKILL) when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
    /// Where this process's output starts in `log` (shared across restarts).
    start: usize,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd`, appending everything it writes to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: Arc<Mutex<String>>) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = log.lock().unwrap().len();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for pipe in [out, err] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            log,
            start,
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process (and earlier processes sharing the buffer)
    /// wrote so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...) with kill(1).
    pub fn signal(&mut self, sig: &str) {
        if !self.is_running() {
            return;
        }
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exit_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// What this process wrote so far.
    pub fn own_log(&self) -> String {
        let log = self.log.lock().unwrap();
        log.get(self.start..).unwrap_or_default().to_string()
    }

    /// Polls this process's output until `find` matches a line; fails if the
    /// process exits first or `timeout` passes.
    pub async fn wait_for_line<T>(
        &mut self,
        timeout: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.own_log().lines().find_map(&find) {
                return Ok(v);
            }
            if let Some(status) = self.exit_status() {
                // Give the reader threads a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(v) = self.own_log().lines().find_map(&find) {
                    return Ok(v);
                }
                return Err(format!(
                    "{} exited ({status}) before logging what was awaited; output:\n{}",
                    self.name,
                    self.own_log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not log what was awaited within {timeout:?}; output:\n{}",
                    self.name,
                    self.own_log()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- output of {} (pid {}) -----\n{}----- end of {} -----",
                self.name,
                self.child.id(),
                self.own_log(),
                self.name
            );
        }
    }
}

/// The `fields` of a JSON log line whose message is `message`.
pub fn log_event(line: &str, message: &str) -> Option<serde_json::Map<String, Value>> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let fields = v.get("fields")?.as_object()?;
    (fields.get("message")?.as_str()? == message).then(|| fields.clone())
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// A PostgreSQL database of its own for one test, dropped with the guard.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Creates `llmgw_e2e_<unix seconds>_<random>` with the role of
    /// `LLMGW_TEST_POSTGRES_URL`; panics (the test fails) when it is unset.
    /// Databases of this kind older than an hour, left behind by test
    /// processes that were killed, are dropped on the way.
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let admin_url = std::env::var("LLMGW_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "LLMGW_TEST_POSTGRES_URL is not set, so this PostgreSQL test cannot run: \
                     `source scripts/pg.sh` first (scripts/test.sh does it)"
                )
            });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let name = format!("llmgw_e2e_{now}_{:08x}", rand::random::<u32>());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to LLMGW_TEST_POSTGRES_URL: {e}"));
        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'llmgw\\_e2e\\_%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        for old in existing {
            let created = old
                .strip_prefix("llmgw_e2e_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse::<u64>().ok());
            if created.is_some_and(|c| c + 3600 < now) {
                let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin_url).expect("LLMGW_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        PgDatabase {
            url: url.to_string(),
            admin_url,
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a runtime of our own on a
        // thread of our own.
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("panicked".to_string()));
        if let Err(e) = dropped {
            eprintln!("warning: could not drop database {}: {e}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------
// Control plane
// ---------------------------------------------------------------------------

/// Where the control plane keeps its configuration.
#[derive(Debug, Clone)]
pub enum Db {
    /// `llmgw.db` in the data folder (the default without DATABASE_URL).
    Sqlite,
    /// A PostgreSQL URL, e.g. [`PgDatabase::url`].
    Postgres(String),
}

/// How to start a control plane; [`ControlPlane::start`] covers the usual case.
#[derive(Debug, Clone)]
pub struct CpOptions {
    pub db: Db,
    /// Extra environment; a later entry wins over an earlier one.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// No admin token, data-plane token or master key in the environment:
    /// the control plane generates them into its data folder.
    pub zero_config: bool,
}

/// A running `llmgw-controlplane` in a temporary folder of its own: the
/// process runs there, and its data folder is `<dir>/data`.
pub struct ControlPlane {
    // First, so the process is killed before its folder is removed.
    proc: Option<Proc>,
    pub dir: tempfile::TempDir,
    pub opts: CpOptions,
    pub admin_token: String,
    pub dataplane_token: String,
    /// None in zero-config mode (then it is in `data/master.key`).
    pub master_key: Option<String>,
    pub addr: SocketAddr,
    /// Whether it serves TLS (then [`ControlPlane::url`] says https://localhost).
    pub tls: bool,
    /// CA file the CLI should trust, for a TLS control plane.
    pub tls_ca: Option<PathBuf>,
    log: Arc<Mutex<String>>,
}

impl ControlPlane {
    /// Starts a control plane with fixed random tokens and master key passed
    /// through the environment, plus `extra_env`.
    pub async fn start(db: Db, extra_env: &[(&str, &str)]) -> ControlPlane {
        ControlPlane::start_with(CpOptions {
            db,
            env: extra_env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            args: Vec::new(),
            zero_config: false,
        })
        .await
    }

    pub async fn start_with(opts: CpOptions) -> ControlPlane {
        let mut env = Vec::new();
        let mut master_key = None;
        let (mut admin_token, mut dataplane_token) = (String::new(), String::new());
        if !opts.zero_config {
            admin_token = format!("admin-tok-{}", random_hex());
            dataplane_token = format!("dp-tok-{}", random_hex());
            let key = random_master_key();
            env.push(("LLMGW_ADMIN_TOKEN".to_string(), admin_token.clone()));
            env.push(("LLMGW_DATAPLANE_TOKEN".to_string(), dataplane_token.clone()));
            env.push(("LLMGW_MASTER_KEY".to_string(), key.clone()));
            master_key = Some(key);
        }
        env.extend(opts.env.iter().cloned());
        let mut cp = ControlPlane {
            proc: None,
            dir: tempfile::Builder::new()
                .prefix("llmgw-e2e-cp-")
                .tempdir()
                .expect("tempdir"),
            opts: CpOptions { env, ..opts },
            admin_token,
            dataplane_token,
            master_key,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            tls_ca: None,
            log: Arc::default(),
        };
        cp.spawn_and_wait().await.unwrap_or_else(|e| panic!("{e}"));
        if cp.opts.zero_config {
            cp.admin_token = read_trimmed(&cp.data_dir().join("admin-token"));
            cp.dataplane_token = read_trimmed(&cp.data_dir().join("dataplane-token"));
        }
        cp
    }

    /// Spawns the process (on the remembered port once one is known) and
    /// waits until it logs where it listens.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut cmd = clean_command(&bin("llmgw-controlplane"));
        cmd.current_dir(self.dir.path())
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--log-format", "json"])
            .args(&self.opts.args)
            .env("RUST_LOG", "info");
        if let Db::Postgres(url) = &self.opts.db {
            cmd.env("DATABASE_URL", url);
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("llmgw-controlplane", cmd, Arc::clone(&self.log));
        let found = proc
            .wait_for_line(START_TIMEOUT, |l| {
                let f = log_event(l, "control plane listening (gRPC and gRPC-web)")?;
                let addr: SocketAddr = f.get("address")?.as_str()?.parse().ok()?;
                Some((addr, f.get("tls").and_then(Value::as_bool).unwrap_or(false)))
            })
            .await;
        self.proc = Some(proc);
        let (addr, tls) = found?;
        if self.addr.port() != 0 && addr != self.addr {
            return Err(format!(
                "control plane restarted on {addr}, not {}",
                self.addr
            ));
        }
        self.addr = addr;
        self.tls = tls;
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL data planes and the CLI use.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Everything every process of this control plane wrote so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("control plane was started")
    }

    /// SIGTERM, then waits for a graceful exit (bounded) and returns its status.
    pub async fn stop(&mut self) -> ExitStatus {
        let proc = self.proc();
        proc.signal("TERM");
        match proc.wait_exit(WAIT).await {
            Some(s) => s,
            None => panic!("control plane did not exit within {WAIT:?} of SIGTERM"),
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.proc().kill();
    }

    /// Starts the control plane again on the same port and data folder
    /// (stopping it first if it still runs); the error carries its output.
    pub async fn try_restart(&mut self) -> Result<(), String> {
        if let Some(p) = self.proc.as_mut() {
            if p.is_running() {
                p.signal("TERM");
                if p.wait_exit(WAIT).await.is_none() {
                    return Err("control plane did not exit on SIGTERM".into());
                }
            }
        }
        self.spawn_and_wait().await
    }

    pub async fn restart(&mut self) {
        self.try_restart().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------
// Data plane
// ---------------------------------------------------------------------------

/// How to start a data plane; [`DataPlane::start`] covers the usual case.
#[derive(Debug, Clone, Default)]
pub struct DpOptions {
    pub control_plane: String,
    pub node_id: String,
    /// Passed as LLMGW_DATAPLANE_TOKEN; None leaves the default token file.
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    /// Working folder; a fresh empty one when None.
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

/// A running `llmgw-dataplane` listening on 127.0.0.1 port 0.
pub struct DataPlane {
    pub addr: SocketAddr,
    pub node_id: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl DataPlane {
    pub async fn start(control_plane: &str, node_id: &str, token: &str) -> DataPlane {
        DataPlane::start_with(DpOptions {
            control_plane: control_plane.to_string(),
            node_id: node_id.to_string(),
            token: Some(token.to_string()),
            ..DpOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: DpOptions) -> DataPlane {
        let dir = tempfile::Builder::new()
            .prefix("llmgw-e2e-dp-")
            .tempdir()
            .expect("tempdir");
        let mut cmd = clean_command(&bin("llmgw-dataplane"));
        cmd.current_dir(opts.cwd.as_deref().unwrap_or(dir.path()))
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--ops-listen", "127.0.0.1:0"])
            .args(["--shutdown-grace-s", "1"])
            .arg("--control-plane")
            .arg(&opts.control_plane)
            .arg("--node-id")
            .arg(&opts.node_id)
            .env("RUST_LOG", "info");
        if let Some(ca) = &opts.tls_ca {
            cmd.arg("--tls-ca").arg(ca);
        }
        if let Some(t) = &opts.token {
            cmd.env("LLMGW_DATAPLANE_TOKEN", t);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn(
            &format!("llmgw-dataplane {}", opts.node_id),
            cmd,
            Arc::default(),
        );
        let addr = proc
            .wait_for_line(START_TIMEOUT, |l| {
                log_event(l, "HTTP server listening")?
                    .get("listen")?
                    .as_str()?
                    .parse::<SocketAddr>()
                    .ok()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        DataPlane {
            addr,
            node_id: opts.node_id,
            proc,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// GET /readyz: the status code and the JSON body.
    pub async fn readyz(&self) -> (u16, Value) {
        let (status, body) = http_get(self.addr, "/readyz")
            .await
            .unwrap_or_else(|e| panic!("GET /readyz on {}: {e}", self.addr));
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/readyz body is not JSON ({e}): {body}"));
        (status, json)
    }

    /// Whether /readyz answers 200.
    pub async fn ready(&self) -> bool {
        self.readyz().await.0 == 200
    }

    /// The applied snapshot version when /readyz says ready.
    pub async fn ready_version(&self) -> Option<u64> {
        match self.readyz().await {
            (200, body) => {
                assert_eq!(body["ready"], true, "{body}");
                Some(body["version"].as_u64().expect("version in /readyz"))
            }
            (503, body) => {
                assert_eq!(body["ready"], false, "{body}");
                None
            }
            (status, body) => panic!("unexpected /readyz answer {status}: {body}"),
        }
    }

    /// Waits until /readyz reports exactly `version`.
    pub async fn wait_version(&self, version: u64, timeout: Duration) {
        poll(
            timeout,
            &format!("data plane {} to serve version {version}", self.node_id),
            || async { (self.ready_version().await == Some(version)).then_some(()) },
        )
        .await;
    }
}

/// A minimal HTTP/1.1 GET: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5s".to_string())??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed HTTP answer: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// A `llmgw` command with a clean environment and `--server`; add the token,
/// working folder and arguments, then [`run`] it.
pub fn cli_command(server: &str) -> Command {
    let mut cmd = clean_command(&bin("llmgw"));
    cmd.arg("--server").arg(server);
    cmd
}

/// Runs a CLI command to completion (bounded).
pub async fn run(cmd: Command) -> CliOutput {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within 60s"))
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `llmgw --server <cp> ARGS` with the control plane's admin token in
/// LLMGW_ADMIN_TOKEN (and `--tls-ca` when the control plane has one).
pub async fn cli(cp: &ControlPlane, args: &[&str]) -> CliOutput {
    let mut cmd = cli_command(&cp.url());
    cmd.env("LLMGW_ADMIN_TOKEN", &cp.admin_token)
        .current_dir(std::env::temp_dir())
        .args(args);
    if let Some(ca) = &cp.tls_ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    run(cmd).await
}

/// [`cli`] that must succeed; returns stdout.
pub async fn cli_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cli(cp, args).await;
    assert!(
        out.ok(),
        "`llmgw {}` failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// [`cli`] with `-o json` that must succeed; returns the parsed output.
/// Request `id`'s log record (`llmgw -o json logs get`), once it is stored.
pub async fn logged(cp: &ControlPlane, id: &str) -> Value {
    poll(WAIT, &format!("the log of {id}"), || async {
        let out = cli(cp, &["-o", "json", "logs", "get", id]).await;
        out.ok()
            .then(|| serde_json::from_str::<Value>(&out.stdout).ok())
            .flatten()
    })
    .await
}

/// Adds provider `mock` (OpenAI protocol, key `sk-up`) at `base_url`.
pub async fn add_mock_provider(cp: &ControlPlane, base_url: &str) {
    cli_ok(
        cp,
        &[
            "provider",
            "add",
            "mock",
            "--protocol",
            "openai",
            "--base-url",
            base_url,
            "--api-key",
            "sk-up",
        ],
    )
    .await;
}

pub async fn cli_json(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let text = cli_ok(cp, &all).await;
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("`llmgw {}` printed no JSON ({e}): {text}", all.join(" ")))
}

/// [`cli`] that must fail; returns stderr.
pub async fn cli_err(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cli(cp, args).await;
    assert!(
        !out.ok(),
        "`llmgw {}` should have failed but succeeded:\nstdout: {}",
        args.join(" "),
        out.stdout
    );
    out.stderr
}

/// `llmgw -o json dataplanes`.
pub async fn dataplanes(cp: &ControlPlane) -> Vec<Value> {
    let v = cli_json(cp, &["dataplanes"]).await;
    v.as_array()
        .unwrap_or_else(|| panic!("dataplanes -o json is not an array: {v}"))
        .clone()
}

/// One data plane's entry in `llmgw -o json dataplanes`.
pub async fn dataplane(cp: &ControlPlane, node_id: &str) -> Option<Value> {
    dataplanes(cp)
        .await
        .into_iter()
        .find(|d| d["node_id"] == node_id)
}

/// The configuration version the control plane serves (the first line of
/// `llmgw dataplanes`: `config version: N`).
pub async fn config_version(cp: &ControlPlane) -> u64 {
    let text = cli_ok(cp, &["dataplanes"]).await;
    text.lines()
        .find_map(|l| l.strip_prefix("config version: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `config version: N` line in:\n{text}"))
}

/// Waits until `node_id` is connected and has acknowledged `version`.
pub async fn wait_acked(
    cp: &ControlPlane,
    node_id: &str,
    version: u64,
    timeout: Duration,
) -> Value {
    poll(
        timeout,
        &format!("data plane {node_id} to acknowledge version {version}"),
        || async {
            dataplane(cp, node_id)
                .await
                .filter(|d| d["connected"] == true && d["acked_version"] == version)
        },
    )
    .await
}

/// Waits until `node_id` has acknowledged the version the control plane
/// serves now; returns that version.
pub async fn wait_in_sync(cp: &ControlPlane, node_id: &str) -> u64 {
    let v = config_version(cp).await;
    wait_acked(cp, node_id, v, WAIT).await;
    v
}
