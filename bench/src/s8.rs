//! `llmgw-bench s8`: scenario S8 of the benchmark, long-context bodies
//! (`bench/run.sh --scenarios S8` runs it; docs/benchmarks.md).
//!
//! It starts what `bench/harness.py` starts for S1-S7, the same way: the
//! in-repo mock (`--reply-bytes 1024 --no-record`) on the load core, a
//! control plane (SQLite in a temporary folder) on the load core at
//! `SCHED_IDLE`, a data plane with its defaults (full request logging,
//! bodies included, shipped to the control plane) and nginx (one worker,
//! `proxy_pass` with upstream keepalive, `proxy_buffering off`) on the
//! core of the system under test, configured through the `llmgw` CLI. This
//! process is the load generator; `bench/run.sh` pins it to the load core.
//!
//! For each body size (512 KiB and 2 MiB) and mode (non-stream, stream) it
//! keeps `--in-flight` requests (16) going against direct (the mock
//! itself), nginx and llmgw in turn, in an order that rotates every round,
//! and measures request-body bytes per second, the system under test's
//! CPU per request (for llmgw from an empty spool to an empty spool, so
//! the request log of the run is counted) and its peak RSS during the run
//! (`VmHWM` after resetting it through `/proc/PID/clear_refs`, else the
//! largest of samples 10 ms apart). A cell is the median over rounds with
//! the range; a ratio is taken within each round, then its median.
//!
//! nginx needs two settings the small-body scenarios do not: a body limit
//! above 2 MiB (`client_max_body_size`, 1 MiB by default) and, as for
//! responses, no buffering (`proxy_request_buffering off`: the body is
//! passed on as it arrives, the cheapest way nginx can forward it, and
//! never written to a temporary file).
//!
//! `--callgrind N` instead counts the data plane's instructions per
//! request under valgrind for each size and mode (N requests each, after a
//! warm-up, the log shipped before the dump), and leaves the dumps in the
//! results folder for `callgrind_annotate`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::longctx::{self, LoadArgs, LoadResult};

#[derive(clap::Parser, Clone, Debug)]
pub struct S8Args {
    /// Where the release binaries are (default: this binary's folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Another llmgw-dataplane binary to measure.
    #[arg(long)]
    dataplane_bin: Option<PathBuf>,
    /// Extra flags for the data plane, e.g. "--request-log off".
    #[arg(long, allow_hyphen_values = true)]
    dataplane_args: Option<String>,
    /// Rounds (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// One round of 2-second runs: a smoke test.
    #[arg(long)]
    quick: bool,
    /// Seconds of load per measurement (default 4; 2 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Body sizes in bytes, comma-separated.
    #[arg(long, default_value = "524288,2097152")]
    sizes: String,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Where results go (s8-<timestamp>.json and .md).
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Leave the temporary folder (logs, configuration, database).
    #[arg(long)]
    keep: bool,
    /// Only the memory measurement (each cell on a fresh data plane).
    #[arg(long)]
    memory_only: bool,
    /// Count the data plane's instructions per request over N requests
    /// of each size and mode with valgrind's callgrind, instead of timing.
    #[arg(long, value_name = "N")]
    callgrind: Option<u64>,
    /// The system under test's core.
    #[arg(long, default_value = "0")]
    sut_core: String,
    /// The mock's and the control plane's core (pin this process there too).
    #[arg(long, default_value = "1")]
    load_core: String,
}

const NGINX_CONF: &str = "\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_max_body_size 64m;
    upstream mock {
        server {upstream};
        keepalive 1024;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:{port} backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
";

fn log(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[bench s8] {msg}");
}

// ---------------------------------------------------------------------------
// processes
// ---------------------------------------------------------------------------

/// A child pinned to a core with taskset, stopped (SIGTERM, then SIGKILL
/// after 10 s) when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(
        name: &str,
        core: &str,
        idle: bool,
        argv: &[String],
        env: &[(&str, &str)],
        log_dir: &Path,
        piped_stdout: bool,
    ) -> Result<Proc> {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(core);
        if idle {
            // SCHED_IDLE: only the core's idle time.
            cmd.args(["chrt", "--idle", "0"]);
        }
        cmd.args(argv);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let logfile = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
        cmd.stderr(logfile.try_clone()?);
        cmd.stdout(if piped_stdout {
            Stdio::piped()
        } else {
            Stdio::from(logfile)
        });
        cmd.stdin(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        log(&format!(
            "{} did not stop on SIGTERM; killing it",
            self.name
        ));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET path` over HTTP/1.0: the status and the body.
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status line from {addr}{path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// utime + stime of a whole process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))
    };
    Ok(field(11)? + field(12)?)
}

/// A `VmRSS:`-style line of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&s, key)
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Samples a process's RSS every 10 ms until dropped; the largest seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (Arc::clone(&stop), Arc::clone(&max));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(v) = status_kib(pid, "VmRSS") {
                    m.fetch_max(v, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------
// the stack
// ---------------------------------------------------------------------------

struct Stack {
    a: S8Args,
    bin: PathBuf,
    tmp: PathBuf,
    logs: PathBuf,
    admin_token: String,
    cp_port: u16,
    dp_port: u16,
    ops_port: u16,
    nginx_port: u16,
    mock_addr: String,
    key: String,
    dp_argv: Vec<String>,
    dp_token: String,
    // Stopped in reverse order of starting (fields drop in order).
    nginx: Option<Proc>,
    dp: Option<Proc>,
    cp: Option<Proc>,
    mock: Option<Proc>,
}

impl Stack {
    fn new(a: &S8Args) -> Result<Stack> {
        let bin = match &a.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| anyhow!("no folder for the binaries"))?,
        };
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_nanos();
        let tmp =
            std::env::temp_dir().join(format!("llmgw-bench-s8-{}-{nanos}", std::process::id()));
        let logs = tmp.join("logs");
        std::fs::create_dir_all(&logs)?;
        Ok(Stack {
            a: a.clone(),
            bin,
            tmp,
            logs,
            admin_token: random_hex(16)?,
            cp_port: free_port()?,
            dp_port: free_port()?,
            ops_port: free_port()?,
            nginx_port: free_port()?,
            mock_addr: String::new(),
            key: String::new(),
            dp_argv: Vec::new(),
            dp_token: String::new(),
            nginx: None,
            dp: None,
            cp: None,
            mock: None,
        })
    }

    fn exe(&self, name: &str) -> String {
        self.bin.join(name).to_string_lossy().into_owned()
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.exe("llmgw"))
            .args(args)
            .env("LLMGW_SERVER", format!("http://127.0.0.1:{}", self.cp_port))
            .env("LLMGW_ADMIN_TOKEN", &self.admin_token)
            .output()
            .context("running the llmgw CLI")?;
        if !out.status.success() {
            bail!(
                "llmgw {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start(&mut self, callgrind_out: Option<&Path>) -> Result<()> {
        let load = self.a.load_core.clone();
        let sut = self.a.sut_core.clone();
        let mut mock = Proc::spawn(
            "mock",
            &load,
            false,
            &[
                self.exe("llmgw-mock"),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--reply-bytes".into(),
                "1024".into(),
                "--no-record".into(),
            ],
            &[],
            &self.logs,
            true,
        )?;
        let stdout = mock
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout from the mock"))?;
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        lines.read_line(&mut first)?;
        self.mock_addr = first
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("the mock did not say where it listens: {first:?}"))?
            .to_string();
        // Keep draining its stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        self.mock = Some(mock);
        log(&format!("mock on {}", self.mock_addr));

        let dp_token = random_hex(16)?;
        let master_key = random_hex(32)?;
        let data_dir = self.tmp.join("cp").to_string_lossy().into_owned();
        let no_dashboard = self.tmp.join("no-dashboard").to_string_lossy().into_owned();
        self.cp = Some(Proc::spawn(
            "controlplane",
            &load,
            true,
            &[
                self.exe("llmgw-controlplane"),
                "--listen".into(),
                format!("127.0.0.1:{}", self.cp_port),
                "--data-dir".into(),
                data_dir,
                "--admin-token".into(),
                self.admin_token.clone(),
                "--dataplane-token".into(),
                dp_token.clone(),
                "--master-key".into(),
                master_key,
                "--dashboard-dir".into(),
                no_dashboard,
            ],
            &[("RUST_LOG", "warn")],
            &self.logs,
            false,
        )?);
        wait_until("the control plane", Duration::from_secs(60), || {
            self.cli(&["provider", "list"]).ok()
        })?;
        log(&format!("control plane on 127.0.0.1:{}", self.cp_port));
        let base = format!("http://{}/v1", self.mock_addr);
        self.cli(&[
            "provider",
            "add",
            "mock",
            "--protocol",
            "openai",
            "--base-url",
            &base,
            "--api-key",
            "sk-upstream-bench-0000",
        ])?;
        self.cli(&["model", "add", "bench", "--target", "mock:bench"])?;
        let created: Value =
            serde_json::from_str(&self.cli(&["-o", "json", "key", "create", "bench-full"])?)?;
        self.key = created["key"]
            .as_str()
            .ok_or_else(|| anyhow!("no key in the CLI's answer"))?
            .to_string();

        let mut argv = Vec::new();
        if let Some(out) = callgrind_out {
            argv.extend([
                "valgrind".to_string(),
                "--tool=callgrind".into(),
                "--dump-instr=no".into(),
                format!("--callgrind-out-file={}", out.display()),
            ]);
        }
        argv.push(match &self.a.dataplane_bin {
            Some(b) => b.to_string_lossy().into_owned(),
            None => self.exe("llmgw-dataplane"),
        });
        argv.extend([
            "--listen".into(),
            format!("127.0.0.1:{}", self.dp_port),
            "--ops-listen".into(),
            format!("127.0.0.1:{}", self.ops_port),
            "--control-plane".into(),
            format!("http://127.0.0.1:{}", self.cp_port),
            "--node-id".into(),
            "bench-s8".into(),
            "--spool-dir".into(),
            self.tmp.join("spool").to_string_lossy().into_owned(),
            "--spool-max-bytes".into(),
            (16u64 << 30).to_string(),
        ]);
        argv.extend(
            self.a
                .dataplane_args
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string),
        );
        self.dp_argv = argv;
        self.dp_token = dp_token;
        self.start_dataplane("dataplane")?;
        let dp_addr = format!("127.0.0.1:{}", self.dp_port);
        log(&format!("data plane on {dp_addr}"));
        if callgrind_out.is_some() {
            return Ok(());
        }

        let dir = self.tmp.join("nginx");
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            NGINX_CONF
                .replace("{dir}", &dir.to_string_lossy())
                .replace("{port}", &self.nginx_port.to_string())
                .replace("{upstream}", &self.mock_addr),
        )?;
        self.nginx = Some(Proc::spawn(
            "nginx",
            &sut,
            false,
            &[
                "nginx".into(),
                "-p".into(),
                format!("{}/", dir.display()),
                "-e".into(),
                dir.join("error.log").to_string_lossy().into_owned(),
                "-c".into(),
                conf.to_string_lossy().into_owned(),
            ],
            &[],
            &self.logs,
            false,
        )?);
        let worker = wait_until("nginx's worker", Duration::from_secs(15), || {
            self.nginx_worker()
        })?;
        log(&format!(
            "nginx on 127.0.0.1:{} (worker pid {worker})",
            self.nginx_port
        ));
        Ok(())
    }

    /// A data plane on the system under test's core, ready; the one
    /// running before is stopped first.
    fn start_dataplane(&mut self, name: &str) -> Result<()> {
        self.dp = None;
        self.dp = Some(Proc::spawn(
            name,
            &self.a.sut_core,
            false,
            &self.dp_argv,
            &[
                ("LLMGW_DATAPLANE_TOKEN", &self.dp_token),
                ("RUST_LOG", "warn"),
            ],
            &self.logs,
            false,
        )?);
        let dp_addr = format!("127.0.0.1:{}", self.dp_port);
        wait_until("the data plane's /readyz", Duration::from_secs(180), || {
            matches!(http_get(&dp_addr, "/readyz"), Ok((200, _))).then_some(())
        })
    }

    fn nginx_worker(&self) -> Option<u32> {
        let pid = self.nginx.as_ref()?.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    fn spool_depth(&self) -> Option<f64> {
        let (_, body) = http_get(&format!("127.0.0.1:{}", self.ops_port), "/metrics").ok()?;
        body.lines()
            .find(|l| {
                l.starts_with("llmgw_log_spool_depth ") || l.starts_with("llmgw_log_spool_depth{")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Until every request record is stored and acknowledged.
    fn wait_logs_shipped(&self) -> Result<()> {
        wait_until(
            "the request logs to be shipped",
            Duration::from_secs(600),
            || (self.spool_depth() == Some(0.0)).then_some(()),
        )
    }

    fn target(&self, name: &str) -> Result<Target> {
        Ok(match name {
            "direct" => Target {
                name: "direct",
                addr: self.mock_addr.clone(),
                key: String::new(),
                pid: None,
            },
            "nginx" => Target {
                name: "nginx",
                addr: format!("127.0.0.1:{}", self.nginx_port),
                key: String::new(),
                pid: Some(
                    self.nginx_worker()
                        .ok_or_else(|| anyhow!("no nginx worker"))?,
                ),
            },
            _ => Target {
                name: "llmgw",
                addr: format!("127.0.0.1:{}", self.dp_port),
                key: self.key.clone(),
                pid: self.dp.as_ref().map(Proc::pid),
            },
        })
    }

    fn cleanup(&mut self) {
        self.nginx = None;
        self.dp = None;
        self.cp = None;
        self.mock = None;
        if self.a.keep {
            log(&format!("kept {}", self.tmp.display()));
        } else {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.cleanup();
    }
}

struct Target {
    name: &'static str,
    addr: String,
    key: String,
    pid: Option<u32>,
}

const TARGETS: [&str; 3] = ["direct", "nginx", "llmgw"];

fn rotated<T: Clone>(v: &[T], r: usize) -> Vec<T> {
    let k = r % v.len().max(1);
    v[k..].iter().chain(&v[..k]).cloned().collect()
}

fn parse_sizes(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().with_context(|| format!("--sizes: {x:?}")))
        .collect()
}

/// "512 KiB", "2 MiB", or bytes.
fn size_label(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn cell_name(size: usize, stream: bool) -> String {
    format!(
        "{} {}",
        size_label(size),
        if stream { "stream" } else { "non-stream" }
    )
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// UTC `YYYYMMDDTHHMMSSZ` of a time.
fn stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Year, month and day of a day number since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

// ---------------------------------------------------------------------------
// figures
// ---------------------------------------------------------------------------

/// Median, min and max of the values present.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MedRange {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn med_range(values: &[Option<f64>]) -> Option<MedRange> {
    let mut v: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(MedRange {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// Each round's `a / b`, where both are present and `b` is not zero.
pub fn ratios(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<Option<f64>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) if *y != 0.0 => Some(x / y),
            _ => None,
        })
        .collect()
}

fn mr(x: Option<MedRange>, digits: usize) -> String {
    match x {
        None => "—".into(),
        Some(m) => format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            m.median, m.min, m.max
        ),
    }
}

fn mr_json(x: Option<MedRange>) -> Value {
    x.map_or(
        Value::Null,
        |m| json!({"median": m.median, "min": m.min, "max": m.max}),
    )
}

/// One measurement of one target.
#[derive(Debug, Clone, Default)]
struct Run {
    load: LoadResult,
    /// The system under test's CPU seconds during the load, and until its
    /// request log was shipped (llmgw).
    cpu_run_s: Option<f64>,
    cpu_total_s: Option<f64>,
    rss_before_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
}

impl Run {
    fn mib_per_s(&self) -> Option<f64> {
        let s = self.load.elapsed.as_secs_f64();
        (s > 0.0).then(|| self.load.body_bytes as f64 / s / f64::from(1 << 20))
    }

    fn cpu_ms_per_req(&self) -> Option<f64> {
        let ok = self.load.ok;
        self.cpu_total_s
            .filter(|_| ok > 0)
            .map(|c| c * 1000.0 / ok as f64)
    }

    fn busy(&self) -> Option<f64> {
        let s = self.load.elapsed.as_secs_f64();
        self.cpu_run_s.filter(|_| s > 0.0).map(|c| c / s)
    }

    fn to_json(&self) -> Value {
        json!({
            "load": self.load.to_json(),
            "mib_per_s": self.mib_per_s(),
            "cpu_run_s": self.cpu_run_s,
            "cpu_total_s": self.cpu_total_s,
            "cpu_ms_per_req": self.cpu_ms_per_req(),
            "sut_busy": self.busy(),
            "rss_before_kib": self.rss_before_kib,
            "rss_peak_kib": self.rss_peak_kib,
        })
    }
}

/// Memory above the process's RSS before the run, per request in flight,
/// as a multiple of the body size.
pub fn bodies_per_request(before_kib: u64, peak_kib: u64, in_flight: usize, body: usize) -> f64 {
    let above = peak_kib.saturating_sub(before_kib) as f64 * 1024.0;
    above / in_flight.max(1) as f64 / body.max(1) as f64
}

// ---------------------------------------------------------------------------
// the scenario
// ---------------------------------------------------------------------------

struct Measure {
    rt: tokio::runtime::Runtime,
    in_flight: usize,
    tck: f64,
}

impl Measure {
    fn load(
        &self,
        t: &Target,
        size: usize,
        stream: bool,
        seconds: f64,
        n: Option<u64>,
    ) -> Result<LoadResult> {
        let a = LoadArgs {
            addr: t.addr.clone(),
            key: t.key.clone(),
            model: "bench".into(),
            bytes: size,
            stream,
            in_flight: self.in_flight,
            seconds,
            requests: n,
        };
        self.rt.block_on(longctx::load(&a))
    }

    fn run(
        &self,
        stack: &Stack,
        t: &Target,
        size: usize,
        stream: bool,
        seconds: f64,
    ) -> Result<Run> {
        let is_llmgw = t.name == "llmgw";
        if is_llmgw {
            // Records of earlier runs are not this one's.
            stack.wait_logs_shipped()?;
        }
        let mut run = Run::default();
        let (sampler, hwm_reset, c0) = match t.pid {
            Some(pid) => {
                // Resets VmHWM to the current RSS (Linux 4.0 and later).
                let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
                run.rss_before_kib = status_kib(pid, "VmRSS");
                (Some(RssSampler::start(pid)), reset, Some(cpu_ticks(pid)?))
            }
            None => (None, false, None),
        };
        run.load = self.load(t, size, stream, seconds, None)?;
        if let (Some(pid), Some(c0)) = (t.pid, c0) {
            run.cpu_run_s = Some((cpu_ticks(pid)? - c0) as f64 / self.tck);
            let sampled = sampler.map(RssSampler::finish);
            let hwm = hwm_reset.then(|| status_kib(pid, "VmHWM")).flatten();
            run.rss_peak_kib = hwm.max(sampled);
            if is_llmgw {
                stack.wait_logs_shipped()?;
            }
            run.cpu_total_s = Some((cpu_ticks(pid)? - c0) as f64 / self.tck);
        }
        Ok(run)
    }
}

pub fn run(a: &S8Args) -> Result<()> {
    let started = SystemTime::now();
    let load0 = load_average();
    log(&format!("load average at start: {load0:?}"));
    if load0.first().is_some_and(|l| *l >= 0.5) {
        log("WARNING: the machine is busy (load average >= 0.5); figures will be noisy");
    }
    let sizes = parse_sizes(&a.sizes)?;
    std::fs::create_dir_all(&a.results)?;
    let stamp = stamp(started);
    if let Some(n) = a.callgrind {
        return callgrind(a, &sizes, n, &stamp, load0);
    }
    let rounds = a.rounds.unwrap_or(if a.quick { 1 } else { 3 });
    let seconds = a.seconds.unwrap_or(if a.quick { 2.0 } else { 4.0 });
    let mut stack = Stack::new(a)?;
    stack.start(None)?;
    let m = Measure {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        in_flight: a.in_flight,
        tck: clk_tck(),
    };
    let targets: Vec<Target> = TARGETS
        .iter()
        .map(|t| stack.target(t))
        .collect::<Result<_>>()?;
    let cells: Vec<(usize, bool)> = sizes
        .iter()
        .flat_map(|s| [(*s, false), (*s, true)])
        .collect();
    let fresh_rss = targets
        .iter()
        .filter_map(|t| Some((t.name, status_kib(t.pid?, "VmRSS")?)))
        .collect::<Vec<_>>();
    let rounds = if a.memory_only { 0 } else { rounds };
    // Warm-up: connections, pools, the allocator's first large blocks.
    for t in targets.iter().filter(|_| rounds > 0) {
        for &(size, stream) in &cells {
            m.load(t, size, stream, 0.0, Some(2 * a.in_flight as u64))?;
        }
    }
    stack.wait_logs_shipped()?;
    // raw[cell][target] = a run per round
    let mut raw: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); targets.len()]; cells.len()];
    let mut failures = Vec::new();
    for r in 0..rounds {
        log(&format!("--- round {} of {rounds} ---", r + 1));
        for (ci, &(size, stream)) in cells.iter().enumerate() {
            for ti in rotated(&[0, 1, 2], r) {
                let t = &targets[ti];
                let run = match m.run(&stack, t, size, stream, seconds) {
                    Ok(run) => run,
                    Err(e) => {
                        failures.push(format!(
                            "{} {} round {}: {e:#}",
                            cell_name(size, stream),
                            t.name,
                            r + 1
                        ));
                        Run::default()
                    }
                };
                log(&format!(
                    "S8 {} {}: {:.1} MiB/s, {:.1} req/s, cpu {} ms/req, peak RSS {} MiB, errors {}{}",
                    cell_name(size, stream),
                    t.name,
                    run.mib_per_s().unwrap_or(0.0),
                    longctx::per_second(run.load.ok as f64, run.load.elapsed.as_secs_f64()),
                    run.cpu_ms_per_req().map_or("-".into(), |c| format!("{c:.2}")),
                    run.rss_peak_kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                    run.load.errors,
                    run.load.first_error.as_deref().map_or(String::new(), |e| format!(" (first: {e})")),
                ));
                raw[ci][ti].push(run);
            }
        }
    }
    // Memory: each cell once more, on a data plane started for it, so
    // that its peak is over a fresh process's RSS and nothing earlier
    // runs left in the allocator counts.
    let mut memory = Vec::new();
    for (n, &(size, stream)) in cells.iter().enumerate() {
        match memory_cell(&mut stack, &m, n, size, stream, seconds) {
            Ok(mem) => {
                log(&format!(
                    "S8 memory {}: fresh {:.1} MiB, peak {:.1} MiB, {:.2} bodies per request in flight",
                    cell_name(size, stream),
                    mem.fresh_kib as f64 / 1024.0,
                    mem.peak_kib as f64 / 1024.0,
                    mem.bodies_per_request(a.in_flight)
                ));
                memory.push(mem);
            }
            Err(e) => failures.push(format!("{} memory: {e:#}", cell_name(size, stream))),
        }
    }
    let load1 = load_average();
    drop(m);
    stack.cleanup();

    let (mut md, summary) = if rounds > 0 {
        report(&cells, &raw, &fresh_rss)
    } else {
        (String::new(), Value::Null)
    };
    md.push_str(&memory_table(&memory, a.in_flight));
    let head = format!(
        "S8 run {stamp}: {rounds} round(s) of {seconds} s per measurement, {} in flight, \
         load average {:.2} at start ({:.2} at the end, the run's own load included). \
         Cells: median over rounds (min–max).",
        a.in_flight,
        load0.first().copied().unwrap_or(0.0),
        load1.first().copied().unwrap_or(0.0),
    );
    let mut text = format!("{head}\n\n{md}");
    if !failures.is_empty() {
        text.push_str(&format!("\nFailures: {}\n", failures.join("; ")));
    }
    let result = json!({
        "started": stamp,
        "seconds_per_measurement": seconds,
        "rounds": rounds,
        "in_flight": a.in_flight,
        "load_average": {"start": load0, "end": load1},
        "fresh_rss_kib": fresh_rss.iter().map(|(n, k)| (n.to_string(), json!(k))).collect::<serde_json::Map<_, _>>(),
        "summary": summary,
        "memory": memory.iter().map(|m| m.to_json(a.in_flight)).collect::<Vec<_>>(),
        "failures": failures,
        "raw": cells.iter().enumerate().map(|(ci, &(size, stream))| json!({
            "cell": cell_name(size, stream),
            "bytes": size,
            "stream": stream,
            "targets": TARGETS.iter().enumerate().map(|(ti, t)| (t.to_string(),
                Value::Array(raw[ci][ti].iter().map(Run::to_json).collect()))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    });
    let path = a.results.join(format!("s8-{stamp}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
    std::fs::write(a.results.join(format!("s8-{stamp}.md")), &text)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    writeln!(out, "results: {}", path.display())?;
    Ok(())
}

/// The markdown table and the bar, and the summary as JSON.
fn report(
    cells: &[(usize, bool)],
    raw: &[Vec<Vec<Run>>],
    fresh_rss: &[(&str, u64)],
) -> (String, Value) {
    let mut md = String::from(
        "| scenario | metric | direct | nginx | llmgw |\n| --- | --- | --- | --- | --- |\n",
    );
    let mut bar = String::from("| target | this run | met? |\n| --- | --- | --- |\n");
    let mut summary = serde_json::Map::new();
    let col = |ci: usize, f: &dyn Fn(&Run) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
        (0..TARGETS.len())
            .map(|ti| raw[ci][ti].iter().map(f).collect())
            .collect()
    };
    for (ci, &(size, stream)) in cells.iter().enumerate() {
        let name = cell_name(size, stream);
        let tput = col(ci, &Run::mib_per_s);
        let cpu = col(ci, &Run::cpu_ms_per_req);
        let busy = col(ci, &Run::busy);
        let p50 = col(ci, &|r: &Run| latency(r, 0.5));
        let p99 = col(ci, &|r: &Run| latency(r, 0.99));
        let peak = col(ci, &|r: &Run| r.rss_peak_kib.map(|k| k as f64 / 1024.0));
        let before = col(ci, &|r: &Run| r.rss_before_kib.map(|k| k as f64 / 1024.0));
        let errors: Vec<u64> = (0..TARGETS.len())
            .map(|ti| raw[ci][ti].iter().map(|r| r.load.errors).sum())
            .collect();
        let requests: Vec<u64> = (0..TARGETS.len())
            .map(|ti| raw[ci][ti].iter().map(|r| r.load.ok).sum())
            .collect();
        let ratio = med_range(&ratios(&tput[2], &tput[1]));
        let cpu_ratio = med_range(&ratios(&cpu[2], &cpu[1]));
        let row = |metric: &str, cells: [String; 3]| {
            format!(
                "| S8 {name} | {metric} | {} | {} | {} |\n",
                cells[0], cells[1], cells[2]
            )
        };
        let each = |v: &[Vec<Option<f64>>], d: usize| -> [String; 3] {
            [0, 1, 2].map(|ti| mr(med_range(&v[ti]), d))
        };
        md.push_str(&row("request body MiB/s", each(&tput, 1)));
        md.push_str(&row(
            "throughput ratio to nginx",
            ["—".into(), "1.00".into(), mr(ratio, 2)],
        ));
        md.push_str(&row(
            "latency p50 / p99 ms",
            [0, 1, 2].map(|ti| {
                format!(
                    "{} / {}",
                    mr(med_range(&p50[ti]), 1),
                    mr(med_range(&p99[ti]), 1)
                )
            }),
        ));
        let mut cpu_cells = each(&cpu, 2);
        cpu_cells[0] = "—".into();
        md.push_str(&row("SUT CPU ms/request", cpu_cells));
        md.push_str(&row(
            "CPU ratio to nginx",
            ["—".into(), "1.00".into(), mr(cpu_ratio, 2)],
        ));
        let mut busy_cells = each(&busy, 2);
        busy_cells[0] = "—".into();
        md.push_str(&row("SUT core busy", busy_cells));
        let mut rss_cells = [0, 1, 2].map(|ti| {
            format!(
                "{} (before {})",
                mr(med_range(&peak[ti]), 1),
                mr(med_range(&before[ti]), 1)
            )
        });
        rss_cells[0] = "—".into();
        md.push_str(&row("SUT peak RSS MiB (at the run's start)", rss_cells));
        md.push_str(&row(
            "requests / errors",
            [0, 1, 2].map(|ti| format!("{} / {}", requests[ti], errors[ti])),
        ));
        let met = ratio.map(|r| r.median >= 0.7);
        bar.push_str(&format!(
            "| S8 {name}: throughput ≥ 0.7× nginx | {} (CPU {}×) | {} |\n",
            mr(ratio, 2),
            mr(cpu_ratio, 2),
            match met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "—",
            }
        ));
        summary.insert(
            name,
            json!({
                "mib_per_s": TARGETS.iter().enumerate().map(|(ti, t)| (t.to_string(), mr_json(med_range(&tput[ti])))).collect::<serde_json::Map<_, _>>(),
                "cpu_ms_per_req": TARGETS.iter().enumerate().map(|(ti, t)| (t.to_string(), mr_json(med_range(&cpu[ti])))).collect::<serde_json::Map<_, _>>(),
                "peak_rss_mib": TARGETS.iter().enumerate().map(|(ti, t)| (t.to_string(), mr_json(med_range(&peak[ti])))).collect::<serde_json::Map<_, _>>(),
                "ratio_to_nginx": mr_json(ratio),
                "cpu_ratio_to_nginx": mr_json(cpu_ratio),
                "errors": errors,
                "met": met,
            }),
        );
    }
    let fresh = fresh_rss
        .iter()
        .map(|(n, k)| format!("{n} {:.1} MiB", *k as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ");
    (
        format!("{md}\nFresh RSS before any S8 traffic: {fresh}.\n\n{bar}"),
        Value::Object(summary),
    )
}

/// One cell's memory on a fresh data plane.
#[derive(Debug, Clone, Default)]
struct Memory {
    size: usize,
    stream: bool,
    fresh_kib: u64,
    peak_kib: u64,
    /// Once the run's records were shipped.
    after_kib: u64,
    ok: u64,
    errors: u64,
}

impl Memory {
    fn bodies_per_request(&self, in_flight: usize) -> f64 {
        bodies_per_request(self.fresh_kib, self.peak_kib, in_flight, self.size)
    }

    fn to_json(&self, in_flight: usize) -> Value {
        json!({
            "cell": cell_name(self.size, self.stream),
            "fresh_kib": self.fresh_kib,
            "peak_kib": self.peak_kib,
            "after_kib": self.after_kib,
            "ok": self.ok,
            "errors": self.errors,
            "bodies_per_request_in_flight": self.bodies_per_request(in_flight),
        })
    }
}

/// Until a process's RSS has not changed for 1.5 s (at most 30 s).
fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (0, Instant::now());
    while Instant::now() < deadline {
        let now = status_kib(pid, "VmRSS").unwrap_or(0);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(1500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

fn memory_cell(
    stack: &mut Stack,
    m: &Measure,
    n: usize,
    size: usize,
    stream: bool,
    seconds: f64,
) -> Result<Memory> {
    stack.wait_logs_shipped()?;
    stack.start_dataplane(&format!("dataplane-memory-{n}"))?;
    let t = stack.target("llmgw")?;
    let pid = t.pid.ok_or_else(|| anyhow!("no data plane"))?;
    let fresh_kib = settled_rss(pid);
    let sampler = RssSampler::start(pid);
    let load = m.load(&t, size, stream, seconds, None)?;
    let sampled = sampler.finish();
    // A fresh process: VmHWM is the peak of its whole life.
    let peak_kib = status_kib(pid, "VmHWM")
        .max(Some(sampled))
        .unwrap_or(sampled);
    stack.wait_logs_shipped()?;
    Ok(Memory {
        size,
        stream,
        fresh_kib,
        peak_kib,
        after_kib: status_kib(pid, "VmRSS").unwrap_or(0),
        ok: load.ok,
        errors: load.errors,
    })
}

fn memory_table(memory: &[Memory], in_flight: usize) -> String {
    let mut md = format!(
        "\nMemory, each cell on a data plane started for it ({in_flight} in flight):\n\n\
         | cell | fresh RSS MiB | peak RSS MiB | peak above fresh, MiB per request in flight | in bodies | RSS after the run MiB | requests / errors |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- |\n"
    );
    for m in memory {
        let above = m.peak_kib.saturating_sub(m.fresh_kib) as f64 / 1024.0;
        md.push_str(&format!(
            "| S8 {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {} / {} |\n",
            cell_name(m.size, m.stream),
            m.fresh_kib as f64 / 1024.0,
            m.peak_kib as f64 / 1024.0,
            above / in_flight.max(1) as f64,
            m.bodies_per_request(in_flight),
            m.after_kib as f64 / 1024.0,
            m.ok,
            m.errors
        ));
    }
    md
}

fn latency(r: &Run, q: f64) -> Option<f64> {
    let mut v = r.load.latencies_ms.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[((v.len() - 1) as f64 * q).round() as usize])
}

// ---------------------------------------------------------------------------
// instructions per request
// ---------------------------------------------------------------------------

fn dumps_of(out: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (
        out.parent(),
        out.file_name().map(|s| s.to_string_lossy().into_owned()),
    ) else {
        return Vec::new();
    };
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .and_then(|n| n.strip_prefix(&format!("{stem}.")).map(str::to_string))
                        .is_some_and(|rest| {
                            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                        })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The total of a callgrind dump (`summary:` or `totals:` line).
fn dump_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The data plane's /metrics handler, which `wait_logs_shipped` polls
/// while a count runs (bench/harness.py's `SCRAPE_HANDLER`).
const SCRAPE_HANDLER: &str = "llmgw_dataplane::server::metrics";

/// Instructions a callgrind dump spent inside `handler`, inclusive: the sum
/// of the costs its callers' `calls=` lines give it (harness.py's
/// `scrape_instructions`). Names are compressed (`(id) name` the first
/// time, `(id)` after); the line after `calls=` holds the call's positions
/// (`positions:`, `line` by default) and then its inclusive cost per event
/// (`events:`), of which `Ir` is taken. A call of the handler from itself is
/// not counted again.
fn handler_instructions(text: &str, handler: &str) -> u64 {
    let mut names: std::collections::HashMap<&str, &str> = Default::default();
    let (mut caller, mut callee, mut pending, mut total) = (None, None, false, 0);
    let (mut positions, mut ir) = (1, 0);
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("positions:") {
            positions = p.split_whitespace().count();
            continue;
        }
        if let Some(e) = line.strip_prefix("events:") {
            ir = e.split_whitespace().position(|e| e == "Ir").unwrap_or(0);
            continue;
        }
        let named = line
            .strip_prefix("fn=(")
            .map(|r| (true, r))
            .or_else(|| line.strip_prefix("cfn=(").map(|r| (false, r)));
        if let Some((is_fn, rest)) = named {
            let Some((id, name)) = rest.split_once(')') else {
                continue;
            };
            let name = name.trim();
            if !name.is_empty() {
                names.insert(id, name);
            }
            let name = names.get(id).copied();
            if is_fn {
                caller = name;
            } else {
                callee = name;
            }
            continue;
        }
        if line.starts_with("calls=") {
            pending = true;
            continue;
        }
        if std::mem::take(&mut pending) && callee == Some(handler) && caller != Some(handler) {
            let cost = line
                .split_whitespace()
                .nth(positions + ir)
                .and_then(|c| c.parse::<u64>().ok());
            total += cost.unwrap_or(0);
        }
    }
    total
}

fn callgrind(a: &S8Args, sizes: &[usize], n: u64, stamp: &str, load0: Vec<f64>) -> Result<()> {
    let out = std::fs::canonicalize(&a.results)?.join(format!("s8-callgrind-{stamp}.out"));
    let mut stack = Stack::new(a)?;
    stack.start(Some(&out))?;
    let m = Measure {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        in_flight: a.in_flight,
        tck: clk_tck(),
    };
    let t = stack.target("llmgw")?;
    let pid = t.pid.ok_or_else(|| anyhow!("no data plane"))?;
    let mut rows = Vec::new();
    for &size in sizes {
        for stream in [false, true] {
            let warm = m.load(&t, size, stream, 0.0, Some(a.in_flight as u64))?;
            stack.wait_logs_shipped()?;
            // Until start-up and warm-up work has settled.
            wait_until("the data plane to idle", Duration::from_secs(120), || {
                let c0 = cpu_ticks(pid).ok()?;
                std::thread::sleep(Duration::from_secs(2));
                (cpu_ticks(pid).ok()? - c0 < 10).then_some(())
            })?;
            let zero = Command::new("callgrind_control")
                .args(["-z", &pid.to_string()])
                .output()?;
            if !zero.status.success() {
                bail!("callgrind_control -z failed");
            }
            let res = m.load(&t, size, stream, 0.0, Some(n))?;
            stack.wait_logs_shipped()?;
            let before = dumps_of(&out);
            let dump = Command::new("callgrind_control")
                .args(["-d", &pid.to_string()])
                .output()?;
            if !dump.status.success() {
                bail!("callgrind_control -d failed");
            }
            let file = wait_until("the callgrind dump", Duration::from_secs(60), || {
                dumps_of(&out).into_iter().find(|d| {
                    !before.contains(d) && std::fs::metadata(d).is_ok_and(|md| md.len() > 0)
                })
            })?;
            std::thread::sleep(Duration::from_secs(1));
            let text = std::fs::read_to_string(&file)?;
            let counted = dump_total(&text);
            // The wait's polls of /metrics are the harness's, not the requests'.
            let scrapes = handler_instructions(&text, SCRAPE_HANDLER);
            if scrapes == 0 {
                // The wait polled /metrics, so the handler must be in the
                // dump: renamed, inlined or moved, it would count as the
                // requests' work.
                log(&format!(
                    "WARNING: no calls of {SCRAPE_HANDLER} in {}: the count includes the \
                     harness's own polls of /metrics",
                    file.display()
                ));
            }
            let total = counted.map(|c| c.saturating_sub(scrapes));
            let per_req = total.map(|t| t as f64 / n as f64);
            let name = cell_name(size, stream);
            log(&format!(
                "callgrind S8 {name}: {} instructions per request ({} ok, {} errors{}; \
                 the harness's polls of /metrics, {} per request, not counted), {}",
                per_req.map_or("-".into(), |p| format!("{p:.0}")),
                res.ok,
                res.errors + warm.errors,
                res.first_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(", first: {e}")),
                scrapes / n.max(1),
                file.display()
            ));
            rows.push(json!({
                "cell": name, "bytes": size, "stream": stream, "requests": n,
                "ok": res.ok, "errors": res.errors, "instructions": total,
                "counted": counted, "scrapes": scrapes,
                "instructions_per_request": per_req,
                "instructions_per_body_byte": per_req.map(|p| p / size as f64),
                "dump": file.to_string_lossy(),
            }));
        }
    }
    drop(m);
    stack.cleanup();
    let result = json!({"started": stamp, "in_flight": a.in_flight, "requests": n,
        "load_average": {"start": load0, "end": load_average()}, "cells": rows});
    std::fs::write(
        a.results.join(format!("s8-callgrind-{stamp}.json")),
        serde_json::to_string_pretty(&result)?,
    )?;
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "| S8 cell | instructions per request | per body byte |\n| --- | ---: | ---: |"
    )?;
    for r in &rows {
        writeln!(
            o,
            "| {} | {:.0} | {:.2} |",
            r["cell"].as_str().unwrap_or_default(),
            r["instructions_per_request"].as_f64().unwrap_or(0.0),
            r["instructions_per_body_byte"].as_f64().unwrap_or(0.0)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges_skip_missing_values() {
        let m = med_range(&[Some(3.0), None, Some(1.0), Some(2.0)]).unwrap();
        assert_eq!((m.median, m.min, m.max), (2.0, 1.0, 3.0));
        let even = med_range(&[Some(4.0), Some(1.0)]).unwrap();
        assert_eq!(even.median, 2.5);
        assert!(med_range(&[None, Some(f64::NAN)]).is_none());
    }

    #[test]
    fn ratios_are_per_round_and_need_both_figures() {
        let r = ratios(
            &[Some(7.0), Some(9.0), None],
            &[Some(10.0), Some(0.0), Some(1.0)],
        );
        assert_eq!(r, vec![Some(0.7), None, None]);
        assert_eq!(med_range(&r).unwrap().median, 0.7);
    }

    #[test]
    fn memory_per_request_is_in_bodies() {
        // 16 requests of 2 MiB, 96 MiB above the start: 3 bodies each.
        assert_eq!(bodies_per_request(10 * 1024, 106 * 1024, 16, 2 << 20), 3.0);
        assert_eq!(bodies_per_request(10, 5, 16, 1), 0.0);
    }

    #[test]
    fn run_figures() {
        let run = Run {
            load: LoadResult {
                ok: 100,
                body_bytes: 200 << 20,
                elapsed: Duration::from_secs(4),
                ..LoadResult::default()
            },
            cpu_run_s: Some(2.0),
            cpu_total_s: Some(3.0),
            ..Run::default()
        };
        assert_eq!(run.mib_per_s(), Some(50.0));
        assert_eq!(run.cpu_ms_per_req(), Some(30.0));
        assert_eq!(run.busy(), Some(0.5));
        assert_eq!(Run::default().mib_per_s(), None);
        assert_eq!(Run::default().cpu_ms_per_req(), None);
    }

    #[test]
    fn labels_and_rotation() {
        assert_eq!(size_label(512 * 1024), "512 KiB");
        assert_eq!(size_label(2 << 20), "2 MiB");
        assert_eq!(size_label(1000), "1000 B");
        assert_eq!(cell_name(2 << 20, true), "2 MiB stream");
        assert_eq!(rotated(&[0, 1, 2], 1), vec![1, 2, 0]);
        assert_eq!(rotated(&[0, 1, 2], 5), vec![2, 0, 1]);
        assert_eq!(parse_sizes("1, 2,").unwrap(), vec![1, 2]);
        assert!(parse_sizes("x").is_err());
    }

    #[test]
    fn timestamps_are_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_754_800 + 3723);
        assert_eq!(stamp(t), "20251203T104203Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn status_and_dump_lines_are_read() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(dump_total("events: Ir\nsummary: 12345\n"), Some(12345));
        assert_eq!(dump_total("totals: 77\n"), Some(77));
        assert_eq!(dump_total("nothing"), None);
    }

    #[test]
    fn the_scrape_handler_s_inclusive_cost_is_counted_from_its_callers_lines() {
        // The dump's lines say what each case is; harness.py's test reads
        // the same file.
        let dump = include_str!("../testdata/scrape-dump.txt");
        assert_eq!(handler_instructions(dump, SCRAPE_HANDLER), 3500);
        assert_eq!(handler_instructions(dump, "no::such::handler"), 0);
        // Two positions and two events: the cost is the third column.
        let wide = "positions: instr line\nevents: Dr Ir\nfn=(1) a\ncfn=(2) h\ncalls=1 0\n0x20 7 300 1000\n";
        assert_eq!(handler_instructions(wide, "h"), 1000);
    }

    #[test]
    fn memory_rows_are_per_request_in_flight() {
        let m = Memory {
            size: 2 << 20,
            stream: true,
            fresh_kib: 14 * 1024,
            peak_kib: 78 * 1024,
            after_kib: 30 * 1024,
            ok: 10,
            errors: 0,
        };
        assert_eq!(m.bodies_per_request(16), 2.0);
        let t = memory_table(&[m], 16);
        assert!(
            t.contains("| S8 2 MiB stream | 14.0 | 78.0 | 4.00 | 2.00 | 30.0 | 10 / 0 |"),
            "{t}"
        );
    }

    #[test]
    fn nginx_forwards_big_bodies_unbuffered() {
        assert!(NGINX_CONF.contains("client_max_body_size 64m;"));
        assert!(NGINX_CONF.contains("proxy_request_buffering off;"));
        assert!(NGINX_CONF.contains("proxy_buffering off;"));
    }
}
