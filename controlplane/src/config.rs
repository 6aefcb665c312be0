//! Command-line flags and environment variables of `llmgw-controlplane`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use secrecy::SecretString;

use crate::settings::GlobalSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// llmgw control plane: stores the configuration, pushes versioned
/// snapshots to data planes, and serves the admin API (gRPC and gRPC-web)
/// on one port.
#[derive(Debug, Parser)]
#[command(name = "llmgw-controlplane", version)]
pub struct Args {
    /// Address for gRPC, gRPC-web and the dashboard.
    #[arg(
        long,
        env = "LLMGW_CONTROLPLANE_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub listen: SocketAddr,

    /// Database URL: sqlite:PATH or postgres://... [default: SQLite file
    /// llmgw.db in the data folder]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Folder for the SQLite database and for generated secrets
    /// (master.key, admin-token, dataplane-token); created if missing.
    #[arg(long, env = "LLMGW_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Bearer token for the admin API. When unset, one is generated on first
    /// start and kept in DATA_DIR/admin-token (mode 0600).
    #[arg(long, env = "LLMGW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretString>,

    /// Bearer token data planes present. When unset, one is generated on
    /// first start and kept in DATA_DIR/dataplane-token (mode 0600).
    #[arg(long, env = "LLMGW_DATAPLANE_TOKEN", hide_env_values = true)]
    pub dataplane_token: Option<SecretString>,

    /// Master key that seals provider API keys at rest: 32 bytes as base64
    /// or 64 hex digits. When unset, one is generated on first start and kept
    /// in DATA_DIR/master.key (mode 0600): back that file up.
    #[arg(long, env = "LLMGW_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<SecretString>,

    /// Previous master keys, comma-separated, during a rotation: values
    /// sealed with them are re-sealed with the current key at start.
    #[arg(
        long,
        env = "LLMGW_MASTER_KEY_PREVIOUS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub master_key_previous: Vec<SecretString>,

    /// PEM certificate chain: serve TLS on the listen address.
    #[arg(long, env = "LLMGW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "LLMGW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Attempts per target before failing over (data planes' default).
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub retry_max_attempts: u32,

    /// Delay between attempts on one target, in milliseconds.
    #[arg(long, env = "RETRY_DELAY_MS", default_value_t = 1000)]
    pub retry_delay_ms: u32,

    /// Idle timeout between upstream bytes, e.g. 60, 60s or 2m.
    #[arg(long, env = "HTTP_TIMEOUT", default_value = "60s", value_parser = parse_seconds)]
    pub http_timeout: u32,

    /// Record request and response bodies in request logs.
    #[arg(long, env = "LLMGW_LOG_BODIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub log_bodies: bool,

    /// Cap on each recorded body, in bytes.
    #[arg(long, env = "LLMGW_LOG_BODY_MAX_BYTES", default_value_t = 65536)]
    pub log_body_max_bytes: u32,

    /// Largest request body data planes accept, in bytes.
    #[arg(long, env = "LLMGW_MAX_REQUEST_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_request_body_bytes: u64,

    /// Per attempt: time to connect to an upstream, in milliseconds.
    #[arg(long, env = "LLMGW_CONNECT_TIMEOUT_MS", default_value_t = 5000)]
    pub connect_timeout_ms: u32,

    /// Per attempt: time from sending a request to the upstream's response
    /// head, e.g. 60s [default: HTTP_TIMEOUT]
    #[arg(long, env = "LLMGW_FIRST_BYTE_TIMEOUT", value_parser = parse_seconds)]
    pub first_byte_timeout: Option<u32>,

    /// Deadline shared by all attempts of one request (retries and
    /// failover); it never cuts a response that has started, e.g. 300s.
    #[arg(long, env = "LLMGW_REQUEST_DEADLINE", default_value = "300s", value_parser = parse_seconds)]
    pub request_deadline: u32,

    /// Retry budget: retries (and failovers) may add this percentage of the
    /// client requests of the last 10 s, so a failing upstream does not get
    /// every request multiplied.
    #[arg(long, env = "LLMGW_RETRY_BUDGET_PERCENT", default_value_t = 20)]
    pub retry_budget_percent: u32,

    /// Retry budget: retries allowed per 10 s on top of the percentage, so
    /// that light traffic can still retry.
    #[arg(long, env = "LLMGW_RETRY_BUDGET_MIN_RETRIES", default_value_t = 10)]
    pub retry_budget_min_retries: u32,

    /// Quota slack: while a data plane waits for a larger share of a rate
    /// limit it may admit this percentage of the limit (divided among the
    /// data planes) beyond its grant. Fleet-wide, at most the limit plus
    /// this percentage is admitted per window (docs/architecture.md).
    #[arg(long, env = "LLMGW_QUOTA_SLACK_PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub quota_slack_percent: u32,

    /// Days to keep request logs; older ones are deleted at start and then
    /// every hour. 0 keeps them forever.
    #[arg(long, env = "LOG_RETENTION_DAYS", default_value_t = 30)]
    pub log_retention_days: u32,

    /// Days to keep request logs' headers and bodies, which go before the
    /// rest of each record (a record then says its bodies expired, and
    /// cannot be replayed); 7 by default, or the logs' days when fewer.
    /// At most --log-retention-days; 0 keeps them as long as the logs.
    #[arg(long, env = "BODY_RETENTION_DAYS")]
    pub body_retention_days: Option<u32>,

    /// Days to keep the log rollups (the per-minute, hourly and daily
    /// aggregates stats read); at least a day longer than the request logs
    /// (a shorter value keeps them that long). 0 keeps them forever.
    #[arg(long, env = "LLMGW_ROLLUP_RETENTION_DAYS", default_value_t = 90)]
    pub rollup_retention_days: u32,

    /// Days to keep the log rollups' per-minute rows, most of the rollups'
    /// rows (from the start of the UTC day this many days ago); stats over
    /// earlier times read the hourly and daily rows, and the raw rows for
    /// a partial hour at a range's ends. 0 deletes no more of them (those
    /// already deleted stay gone).
    #[arg(long, env = "LLMGW_ROLLUP_MINUTE_RETENTION_DAYS", default_value_t = 7)]
    pub rollup_minute_retention_days: u32,

    /// Log format.
    #[arg(long, env = "LLMGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Folder of the built web dashboard, served at / on the listen address
    /// [default: dashboard/dist]
    #[arg(long, env = "LLMGW_DASHBOARD_DIR", value_name = "DIR")]
    pub dashboard_dir: Option<PathBuf>,

    /// Length of a concurrency lease in the quota protocol, in ms: the
    /// slots of a data plane that stops reporting return after it.
    #[arg(long, env = "LLMGW_QUOTA_LEASE_MS", default_value_t = crate::quota::DEFAULT_LEASE_MS,
          value_parser = clap::value_parser!(u32).range(100..=600_000))]
    pub quota_lease_ms: u32,

    /// Caps and timeouts of connections to the listen address (a valid
    /// admin or data-plane token makes a connection authenticated).
    #[command(flatten)]
    pub connections: llmgw_listener::LimitArgs,

    /// OpenTelemetry tracing (docs/tracing.md); off without an endpoint.
    #[command(flatten)]
    pub otel: llmgw_telemetry::TelemetryArgs,
}

/// Seconds from "60", "60s" or "2m".
fn parse_seconds(s: &str) -> Result<u32, String> {
    let d = match s.trim().parse::<u64>() {
        Ok(n) => std::time::Duration::from_secs(n),
        Err(_) => humantime::parse_duration(s.trim()).map_err(|e| e.to_string())?,
    };
    let secs = u32::try_from(d.as_secs()).map_err(|_| "too long".to_string())?;
    if secs == 0 {
        return Err("must be at least one second".into());
    }
    Ok(secs)
}

impl Args {
    /// The dashboard folder: --dashboard-dir, else `dashboard/dist`.
    pub fn dashboard_dir(&self) -> PathBuf {
        self.dashboard_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::dashboard::DEFAULT_DIR))
    }

    pub fn settings(&self) -> GlobalSettings {
        GlobalSettings {
            retry_max_attempts: self.retry_max_attempts,
            retry_delay_ms: self.retry_delay_ms,
            http_timeout_s: self.http_timeout,
            log_bodies: self.log_bodies,
            log_body_max_bytes: self.log_body_max_bytes,
            max_request_body_bytes: self.max_request_body_bytes,
            connect_timeout_ms: self.connect_timeout_ms,
            first_byte_timeout_s: self.first_byte_timeout.unwrap_or(self.http_timeout),
            deadline_s: self.request_deadline,
            retry_budget_percent: self.retry_budget_percent,
            retry_budget_min_retries: self.retry_budget_min_retries,
            quota_slack_percent: self.quota_slack_percent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("60"), Ok(60));
        assert_eq!(parse_seconds("60s"), Ok(60));
        assert_eq!(parse_seconds("2m"), Ok(120));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn defaults() {
        let a = Args::try_parse_from(["llmgw-controlplane"]).unwrap();
        let s = a.settings();
        assert_eq!(
            (s.retry_max_attempts, s.retry_delay_ms, s.http_timeout_s),
            (3, 1000, 60)
        );
        assert_eq!(a.connections.limits(), llmgw_listener::Limits::default());
        assert_eq!(s.quota_slack_percent, 10);
    }

    #[test]
    fn quota_slack_is_a_percentage() {
        let a = Args::try_parse_from(["llmgw-controlplane", "--quota-slack-percent", "0"]).unwrap();
        assert_eq!(a.settings().quota_slack_percent, 0);
        assert!(
            Args::try_parse_from(["llmgw-controlplane", "--quota-slack-percent", "101"]).is_err()
        );
    }

    #[test]
    fn connection_limits_are_flags() {
        let a = Args::try_parse_from([
            "llmgw-controlplane",
            "--max-connections",
            "20",
            "--max-unauthenticated-connections",
            "4",
            "--idle-timeout",
            "2s",
        ])
        .unwrap();
        let l = a.connections.limits();
        assert_eq!((l.max_connections, l.max_unauthenticated), (20, 4));
        assert_eq!(l.idle_timeout, std::time::Duration::from_secs(2));
    }
}
