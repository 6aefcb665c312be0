//! The data plane's settings: [`Cli`] is what flags and environment variables
//! say, [`Config`] is the checked result that [`crate::start`] runs with
//! (token read, URLs parsed, node id chosen).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use http::Uri;
use secrecy::SecretString;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What the data plane records of each request for the control plane's
/// request log (`--request-log`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum RequestLogMode {
    /// A record per request with redacted headers, and request and response
    /// bodies as the control plane's body settings allow (globally and per
    /// key).
    #[default]
    Full,
    /// A record per request with redacted headers but never any body,
    /// whatever the control plane's body settings say.
    Metadata,
    /// No records: nothing is spooled or shipped, and `llmgw logs` and
    /// `llmgw stats` see none of this data plane's requests. Metrics are
    /// still counted. Records left in the spool by an earlier run are
    /// still shipped.
    Off,
}

impl RequestLogMode {
    /// Whether records are produced at all.
    pub fn records(self) -> bool {
        self != RequestLogMode::Off
    }

    /// Whether bodies may be recorded (the control plane's settings decide
    /// the rest).
    pub fn bodies(self) -> bool {
        self == RequestLogMode::Full
    }
}

/// Command line of `llmgw-dataplane`. Every flag can also be set through the
/// environment variable named in `--help`.
#[derive(Parser)]
#[command(
    name = "llmgw-dataplane",
    version,
    about = "llmgw data plane: receives routing snapshots from the control plane and serves traffic",
    long_about = None
)]
pub struct Cli {
    /// Address for client traffic (the LLM APIs, plus /healthz and
    /// /readyz). Port 0 picks a free port; the address actually bound is
    /// logged at start.
    #[arg(
        long,
        env = "LLMGW_DATAPLANE_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8000"
    )]
    pub listen: SocketAddr,

    /// The base URL (http:// or https://) at which the control plane
    /// reaches this data plane's client listener, for replay and the
    /// playground (#17). Without it, the control plane uses the address
    /// this data plane connects from and the port it listens on.
    #[arg(long, env = "LLMGW_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,

    /// Control-plane discovery URL(s), comma-separated (http:// or
    /// https://). Each reconnect tries the next URL in turn.
    #[arg(
        long = "control-plane",
        env = "LLMGW_CONTROL_PLANE",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9090"
    )]
    pub control_plane: Vec<String>,

    /// Stable identity of this replica, reported to the control plane.
    /// Defaults to $HOSTNAME, else "dp-" and 8 random hex digits.
    #[arg(long, env = "LLMGW_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Token the control plane expects from data planes. Prefer the
    /// environment variable or --dataplane-token-file: command lines are
    /// visible to other local users.
    #[arg(
        long,
        env = "LLMGW_DATAPLANE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub dataplane_token: Option<String>,

    /// File holding the data-plane token, read when no token is given
    /// directly. The control plane writes it there on a zero-config start.
    #[arg(
        long,
        env = "LLMGW_DATAPLANE_TOKEN_FILE",
        value_name = "FILE",
        default_value = "./data/dataplane-token"
    )]
    pub dataplane_token_file: PathBuf,

    /// PEM file of the CA that signed an https:// control plane's
    /// certificate. Without it, the system trust roots are used.
    #[arg(long, env = "LLMGW_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Log line format. The level filter comes from RUST_LOG (default
    /// "info").
    #[arg(
        long,
        env = "LLMGW_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// Seconds to let open connections finish after SIGTERM or SIGINT
    /// before they are closed.
    #[arg(
        long,
        env = "LLMGW_SHUTDOWN_GRACE_S",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    pub shutdown_grace_s: u64,

    /// Folder of the request-log spool [default: ./data/spool/NODE_ID]
    #[arg(long, env = "LLMGW_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<std::path::PathBuf>,

    /// Largest size of the spool; past it the oldest records are dropped
    /// (with a warning and a metric).
    #[arg(long, env = "LLMGW_SPOOL_MAX_BYTES", value_name = "BYTES", default_value_t = crate::logs::DEFAULT_SPOOL_MAX_BYTES)]
    pub spool_max_bytes: u64,

    /// Free space the spool leaves on its filesystem: a write that would
    /// leave less first drops the oldest unshipped records, then refuses new
    /// ones (counted in `llmgw_log_records_lost_total{reason="disk_reserve"}`).
    /// 0 turns the reserve off.
    #[arg(long, env = "LLMGW_SPOOL_MIN_FREE_BYTES", value_name = "BYTES", default_value_t = crate::logs::DEFAULT_SPOOL_MIN_FREE_BYTES)]
    pub spool_min_free_bytes: u64,

    /// Longest time, in milliseconds, between writing a request log to the
    /// spool and `fdatasync`ing it: what a machine crash or power loss can
    /// lose (a killed process loses nothing). 0 syncs after every write.
    #[arg(
        long,
        env = "LLMGW_SPOOL_SYNC_MS",
        value_name = "MS",
        default_value_t = crate::logs::DEFAULT_SYNC_INTERVAL.as_millis() as u64
    )]
    pub spool_sync_ms: u64,

    /// Longest time, in milliseconds, that the end of a response (its last
    /// bytes) waits for the request's log record to reach the spool, so
    /// that a killed data plane keeps the record of every answer a client
    /// got whole. Usually well under a millisecond; a response stops
    /// waiting at this bound, and none waits while the spool's disk is
    /// stalled for longer. 0 turns the wait off: records of the last few
    /// milliseconds before a `kill -9` may then be lost.
    #[arg(
        long,
        env = "LLMGW_SPOOL_WAIT_MS",
        value_name = "MS",
        default_value_t = crate::logs::DEFAULT_SPOOL_WAIT.as_millis() as u64
    )]
    pub spool_wait_ms: u64,

    /// Longest time, in milliseconds, that request records too few to fill
    /// a batch (500 records or 1 MiB) wait for more before they are shipped
    /// to the control plane anyway. The control plane stores each batch in
    /// one transaction, so fuller batches cost it far less per record. 0
    /// ships every write of the spool as it comes.
    #[arg(
        long,
        env = "LLMGW_LOG_SHIP_LINGER_MS",
        value_name = "MS",
        default_value_t = crate::logs::DEFAULT_SHIP_LINGER.as_millis() as u64
    )]
    pub log_ship_linger_ms: u64,

    /// What is recorded of each request for the control plane's request log
    /// (`llmgw logs`, `llmgw stats`): everything, with bodies as the control
    /// plane's body settings allow; metadata and headers without bodies; or
    /// nothing (metrics are still counted).
    #[arg(
        long,
        env = "LLMGW_REQUEST_LOG",
        value_enum,
        value_name = "MODE",
        default_value_t = RequestLogMode::Full
    )]
    pub request_log: RequestLogMode,

    /// Request-log rows a client address may cause per minute (and at once)
    /// with requests refused before authentication (no, a wrong or an
    /// expired key). Every such request is counted in /metrics
    /// (`llmgw_unauthenticated_requests_total`); past this rate it is not
    /// written to the log (`llmgw_unauthenticated_log_rows_suppressed_total`).
    /// 0 logs none.
    #[arg(
        long,
        env = "LLMGW_UNAUTHENTICATED_LOG_PER_MINUTE",
        value_name = "ROWS",
        default_value_t = crate::proxy::UNAUTHENTICATED_LOG_PER_MINUTE
    )]
    pub unauthenticated_log_per_minute: u32,

    /// Largest multipart upload (`/v1/audio/transcriptions`,
    /// `/v1/audio/translations`, `/v1/images/edits`, `/v1/images/variations`),
    /// in bytes: 25 MiB by default, OpenAI's own limit for audio files. A
    /// larger one is answered 413 as soon as it passes the limit (at once
    /// when its `content-length` says so), without reading the rest. Uploads
    /// stream to the upstream; what does not fit in memory (256 KiB per
    /// upload) is kept in an unlinked temporary file (in `TMPDIR`) for
    /// failover. JSON bodies keep the control plane's
    /// `LLMGW_MAX_REQUEST_BODY_BYTES`.
    #[arg(
        long,
        env = "LLMGW_MAX_UPLOAD_BYTES",
        value_name = "BYTES",
        default_value_t = crate::proxy::DEFAULT_MAX_UPLOAD_BYTES
    )]
    pub max_upload_bytes: u64,

    /// The bytes all uploads in flight may keep in their temporary files
    /// (in `TMPDIR`) at once, 1 GiB by default. Each upload beyond its
    /// first 256 KiB (kept in memory) reserves its share: at once when its
    /// `content-length` says it, else as it arrives; its reservation is
    /// given back when the request ends. An upload that would pass the
    /// total gets 503 with `Retry-After: 1` (the gateway's capacity, not
    /// the client's fault: retry shortly), without the rest being read.
    #[arg(
        long,
        env = "LLMGW_MAX_UPLOAD_SPOOL_BYTES",
        value_name = "BYTES",
        default_value_t = crate::proxy::DEFAULT_MAX_UPLOAD_SPOOL_BYTES
    )]
    pub max_upload_spool_bytes: u64,
    // --- Connections: the ops listener, caps and timeouts ---
    /// Address for the ops listener: /healthz, /readyz and /metrics, on
    /// connections of their own so that they answer while the client port
    /// is saturated. /metrics (model and provider names) is served only
    /// here: keep this port private. Port 0 picks a free port; the address
    /// bound is logged at start.
    #[arg(
        long,
        env = "LLMGW_OPS_LISTEN",
        value_name = "ADDR",
        default_value = DEFAULT_OPS_LISTEN
    )]
    pub ops_listen: SocketAddr,

    #[command(flatten)]
    pub connections: llmgw_listener::LimitArgs,

    /// OpenTelemetry tracing (docs/tracing.md); off without an endpoint.
    #[command(flatten)]
    pub otel: llmgw_telemetry::TelemetryArgs,
}

/// Where the ops listener binds unless told otherwise.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9091";

impl Cli {
    /// Checks the flags and reads the files they name.
    pub fn into_config(self) -> Result<Config> {
        let control_planes = self
            .control_plane
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_control_plane(s))
            .collect::<Result<Vec<_>>>()?;
        if control_planes.is_empty() {
            bail!("--control-plane names no URL");
        }
        let token = match self.dataplane_token {
            Some(t) if !t.trim().is_empty() => SecretString::from(t.trim()),
            _ => read_token_file(&self.dataplane_token_file)?,
        };
        let tls_ca_pem = self.tls_ca.as_deref().map(read_ca).transpose()?;
        let node_id = match self.node_id {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => default_node_id(),
        };
        let mut config = Config::new(control_planes, token);
        config.listen = self.listen;
        config.advertise_url = self
            .advertise_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| {
                llmgw_core::validate::base_url(u.trim())
                    .map_err(|e| anyhow!("--advertise-url: {e}"))
            })
            .transpose()?;
        config.node_id = node_id;
        config.tls_ca_pem = tls_ca_pem;
        config.shutdown_grace = Duration::from_secs(self.shutdown_grace_s);
        config.spool_dir = self.spool_dir;
        config.spool_max_bytes = self.spool_max_bytes;
        config.spool_min_free_bytes = self.spool_min_free_bytes;
        config.spool_sync_interval = Duration::from_millis(self.spool_sync_ms);
        config.spool_wait = Duration::from_millis(self.spool_wait_ms);
        if config.spool_wait > crate::logs::MAX_SPOOL_WAIT {
            return Err(anyhow!(
                "--spool-wait-ms is at most {} ms",
                crate::logs::MAX_SPOOL_WAIT.as_millis()
            ));
        }
        config.log_ship_linger = Duration::from_millis(self.log_ship_linger_ms);
        if config.log_ship_linger > crate::logs::MAX_SHIP_LINGER {
            return Err(anyhow!(
                "--log-ship-linger-ms is at most {} ms",
                crate::logs::MAX_SHIP_LINGER.as_millis()
            ));
        }
        config.request_log = self.request_log;
        config.unauthenticated_log_per_minute = self.unauthenticated_log_per_minute;
        config.max_upload_bytes = self.max_upload_bytes;
        config.max_upload_spool_bytes = self.max_upload_spool_bytes;
        config.ops_listen = Some(self.ops_listen);
        config.limits = self.connections.limits();
        config.limits.check().map_err(|e| anyhow!(e))?;
        config.telemetry =
            llmgw_telemetry::Settings::from_env(&self.otel).map_err(|e| anyhow!(e))?;
        Ok(config)
    }
}

/// Everything [`crate::start`] needs. Build it with [`Config::new`] and
/// adjust the public fields, or from the command line with
/// [`Cli::into_config`].
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `--advertise-url`, checked and normalized: where the control plane
    /// sends replay and playground requests (#17).
    pub advertise_url: Option<String>,
    /// Tried in turn, one per (re)connect.
    pub control_planes: Vec<Uri>,
    pub node_id: String,
    pub token: SecretString,
    /// CA certificate(s) for https:// control planes; system roots if none.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// How long open connections may finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// Limit on opening a connection to the control plane.
    pub connect_timeout: Duration,
    /// HTTP/2 pings on the discovery connection, so a dead control plane
    /// is noticed even while nothing is sent.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// First reconnect delay ceiling; doubles per failed attempt.
    pub backoff_initial: Duration,
    /// Largest reconnect delay ceiling.
    pub backoff_max: Duration,
    /// Request-log spool folder; `None` means `./data/spool/<node_id>`.
    pub spool_dir: Option<std::path::PathBuf>,
    pub spool_max_bytes: u64,
    /// Free space the spool leaves on its filesystem (`--spool-min-free-bytes`).
    pub spool_min_free_bytes: u64,
    /// Longest time between a spool write and its `fdatasync`.
    pub spool_sync_interval: Duration,
    /// Longest wait of a response's end for its record (`--spool-wait-ms`).
    pub spool_wait: Duration,
    /// Longest wait of records too few to fill a batch
    /// (`--log-ship-linger-ms`).
    pub log_ship_linger: Duration,
    /// What is recorded of each request (`--request-log`).
    pub request_log: RequestLogMode,
    /// `--unauthenticated-log-per-minute`.
    pub unauthenticated_log_per_minute: u32,
    /// `--max-upload-bytes`.
    pub max_upload_bytes: u64,
    /// `--max-upload-spool-bytes`.
    pub max_upload_spool_bytes: u64,
    /// The ops listener (/healthz, /readyz, /metrics); `None` runs none
    /// (the library's default, for in-process tests).
    pub ops_listen: Option<SocketAddr>,
    /// Caps and timeouts of client connections.
    pub limits: llmgw_listener::Limits,
    /// OpenTelemetry export; `None`: requests are not traced.
    pub telemetry: Option<llmgw_telemetry::Settings>,
}

impl Config {
    /// Defaults for everything but where the control plane is and the token.
    pub fn new(control_planes: Vec<Uri>, token: SecretString) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            advertise_url: None,
            control_planes,
            node_id: default_node_id(),
            token,
            tls_ca_pem: None,
            shutdown_grace: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            spool_dir: None,
            spool_max_bytes: crate::logs::DEFAULT_SPOOL_MAX_BYTES,
            spool_min_free_bytes: crate::logs::DEFAULT_SPOOL_MIN_FREE_BYTES,
            spool_sync_interval: crate::logs::DEFAULT_SYNC_INTERVAL,
            spool_wait: crate::logs::DEFAULT_SPOOL_WAIT,
            log_ship_linger: crate::logs::DEFAULT_SHIP_LINGER,
            request_log: RequestLogMode::Full,
            unauthenticated_log_per_minute: crate::proxy::UNAUTHENTICATED_LOG_PER_MINUTE,
            max_upload_bytes: crate::proxy::DEFAULT_MAX_UPLOAD_BYTES,
            max_upload_spool_bytes: crate::proxy::DEFAULT_MAX_UPLOAD_SPOOL_BYTES,
            ops_listen: None,
            limits: llmgw_listener::Limits::default(),
            telemetry: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.control_planes.iter().map(Uri::to_string).collect();
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("advertise_url", &self.advertise_url)
            .field("control_planes", &urls)
            .field("node_id", &self.node_id)
            .field("token", &"<redacted>")
            .field("tls_ca", &self.tls_ca_pem.is_some())
            .field("shutdown_grace", &self.shutdown_grace)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("spool_dir", &self.spool_dir)
            .field("spool_min_free_bytes", &self.spool_min_free_bytes)
            .field("spool_sync_interval", &self.spool_sync_interval)
            .field("spool_wait", &self.spool_wait)
            .field("log_ship_linger", &self.log_ship_linger)
            .field("request_log", &self.request_log)
            .field("ops_listen", &self.ops_listen)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Parses one control-plane URL: http or https, with a host, no path.
pub fn parse_control_plane(s: &str) -> Result<Uri> {
    let s = s.trim();
    let uri: Uri = s
        .parse()
        .map_err(|e| anyhow!("control-plane URL '{s}' is not valid: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("control-plane URL '{s}' must start with http:// or https://"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("control-plane URL '{s}' has no host");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("control-plane URL '{s}' must not have a path or query");
    }
    Ok(uri)
}

fn read_token_file(path: &Path) -> Result<SecretString> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no data-plane token: set LLMGW_DATAPLANE_TOKEN, or point \
             --dataplane-token-file at the file the control plane wrote \
             ({} does not exist)",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read the data-plane token from {}", path.display())
            })
        }
    };
    let token = text.trim();
    if token.is_empty() {
        bail!("the data-plane token file {} is empty", path.display());
    }
    Ok(SecretString::from(token))
}

fn read_ca(path: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        bail!("the CA file {} holds no PEM certificate", path.display());
    }
    Ok(pem)
}

/// $HOSTNAME (a pod's name on Kubernetes), else a random id.
fn default_node_id() -> String {
    match std::env::var("HOSTNAME") {
        Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
        _ => format!("dp-{:08x}", rand::random::<u32>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(args: &[&str]) -> Result<Config> {
        let mut argv = vec!["llmgw-dataplane"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)?.into_config()
    }

    #[test]
    fn the_advertise_url_is_checked() {
        let c = parse(&[
            "--dataplane-token",
            "t",
            "--advertise-url",
            "HTTP://DP.example:8000/",
        ])
        .unwrap();
        assert_eq!(c.advertise_url.as_deref(), Some("http://dp.example:8000"));
        let e = parse(&["--dataplane-token", "t", "--advertise-url", "ftp://x"]).unwrap_err();
        assert!(e.to_string().contains("--advertise-url"), "{e}");
        let e = parse(&["--dataplane-token", "t", "--advertise-url", "http://h/?q=1"]).unwrap_err();
        assert!(e.to_string().contains("--advertise-url"), "{e}");
        assert_eq!(
            parse(&["--dataplane-token", "t"]).unwrap().advertise_url,
            None
        );
    }

    #[test]
    fn the_log_ship_linger_has_a_default_and_a_bound() {
        let c = parse(&["--dataplane-token", "t"]).unwrap();
        assert_eq!(c.log_ship_linger, crate::logs::DEFAULT_SHIP_LINGER);
        let c = parse(&["--dataplane-token", "t", "--log-ship-linger-ms", "0"]).unwrap();
        assert_eq!(c.log_ship_linger, Duration::ZERO);
        let e = parse(&["--dataplane-token", "t", "--log-ship-linger-ms", "10001"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--log-ship-linger-ms is at most 10000 ms"),
            "{e}"
        );
    }

    #[test]
    fn token_comes_from_the_file_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let c = parse(&["--dataplane-token-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.token.expose_secret(), "s3cret");
        assert_eq!(c.control_planes.len(), 1);
        assert_eq!(c.control_planes[0].to_string(), "http://127.0.0.1:9090/");
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn flag_token_wins_over_the_file() {
        let c = parse(&[
            "--dataplane-token",
            "direct",
            "--dataplane-token-file",
            "/nonexistent/token",
        ])
        .unwrap();
        assert_eq!(c.token.expose_secret(), "direct");
    }

    #[test]
    fn missing_token_is_a_clear_error() {
        let e = parse(&["--dataplane-token-file", "/nonexistent/token"]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("LLMGW_DATAPLANE_TOKEN"), "{msg}");
        assert!(msg.contains("/nonexistent/token"), "{msg}");
    }

    #[test]
    fn empty_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " \n").unwrap();
        let e = parse(&["--dataplane-token-file", path.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn control_planes_are_a_comma_separated_list() {
        let c = parse(&[
            "--dataplane-token",
            "t",
            "--control-plane",
            "http://a:1, https://b.example:2",
            "--node-id",
            "dp-x",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let urls: Vec<_> = c.control_planes.iter().map(Uri::to_string).collect();
        assert_eq!(urls, ["http://a:1/", "https://b.example:2/"]);
        assert_eq!(c.node_id, "dp-x");
        assert_eq!(c.listen.port(), 0);
    }

    #[test]
    fn bad_control_plane_urls_are_refused() {
        for (url, want) in [
            ("ftp://a:1", "http:// or https://"),
            ("a:1", "http:// or https://"),
            ("http://a:1/v1", "path"),
            ("http://", "not valid"),
        ] {
            let e = parse_control_plane(url).unwrap_err();
            assert!(e.to_string().contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn request_log_mode_is_full_unless_asked() {
        let c = parse(&["--dataplane-token", "t"]).unwrap();
        assert_eq!(c.request_log, RequestLogMode::Full);
        for (arg, want) in [
            ("off", RequestLogMode::Off),
            ("metadata", RequestLogMode::Metadata),
            ("full", RequestLogMode::Full),
        ] {
            let c = parse(&["--dataplane-token", "t", "--request-log", arg]).unwrap();
            assert_eq!(c.request_log, want, "{arg}");
        }
        assert!(parse(&["--dataplane-token", "t", "--request-log", "bodies"]).is_err());
        assert!(!RequestLogMode::Off.records() && !RequestLogMode::Off.bodies());
        assert!(RequestLogMode::Metadata.records() && !RequestLogMode::Metadata.bodies());
        assert!(RequestLogMode::Full.records() && RequestLogMode::Full.bodies());
    }

    #[test]
    fn spool_min_free_bytes_defaults_to_64_mib() {
        let c = parse(&["--dataplane-token", "t"]).unwrap();
        assert_eq!(c.spool_min_free_bytes, 64 << 20);
        let c = parse(&["--dataplane-token", "t", "--spool-min-free-bytes", "0"]).unwrap();
        assert_eq!(c.spool_min_free_bytes, 0);
        assert!(parse(&["--dataplane-token", "t", "--spool-min-free-bytes", "-1"]).is_err());
    }

    #[test]
    fn spool_sync_interval_defaults_to_50_ms() {
        let c = parse(&["--dataplane-token", "t"]).unwrap();
        assert_eq!(c.spool_sync_interval, Duration::from_millis(50));
        let c = parse(&["--dataplane-token", "t", "--spool-sync-ms", "0"]).unwrap();
        assert_eq!(c.spool_sync_interval, Duration::ZERO);
        assert!(parse(&["--dataplane-token", "t", "--spool-sync-ms", "-1"]).is_err());
    }

    #[test]
    fn connection_limits_and_ops_listener_have_defaults_and_flags() {
        let c = parse(&["--dataplane-token", "t"]).unwrap();
        assert_eq!(c.ops_listen, Some("127.0.0.1:9091".parse().unwrap()));
        assert_eq!(c.limits, llmgw_listener::Limits::default());
        let c = parse(&[
            "--dataplane-token",
            "t",
            "--ops-listen",
            "127.0.0.1:0",
            "--max-connections",
            "50",
            "--max-unauthenticated-connections",
            "5",
            "--idle-timeout",
            "1500ms",
            "--body-read-timeout",
            "2s",
            "--body-min-rate",
            "0",
        ])
        .unwrap();
        assert_eq!(c.ops_listen.unwrap().port(), 0);
        assert_eq!(
            c.limits,
            llmgw_listener::Limits {
                max_connections: 50,
                max_unauthenticated: 5,
                idle_timeout: Duration::from_millis(1500),
                body_timeout: Duration::from_secs(2),
                body_min_rate: 0,
            }
        );
        let e = parse(&["--dataplane-token", "t", "--max-connections", "0"]).unwrap_err();
        assert!(e.to_string().contains("--max-connections"), "{e}");
        assert!(parse(&["--dataplane-token", "t", "--idle-timeout", "soon"]).is_err());
    }

    #[test]
    fn default_node_id_is_hostname_or_random() {
        let id = default_node_id();
        match std::env::var("HOSTNAME") {
            Ok(h) if !h.trim().is_empty() => assert_eq!(id, h.trim()),
            _ => {
                assert!(id.starts_with("dp-") && id.len() == 11, "{id}");
                assert!(id[3..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
            }
        }
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "nope").unwrap();
        let e = parse(&["--dataplane-token", "t", "--tls-ca", path.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
