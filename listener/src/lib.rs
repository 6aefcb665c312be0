//! What both planes put between a TCP listener and hyper so that hostile or
//! careless clients cannot hold the server's connections and file
//! descriptors:
//!
//! - [`Gate`]: caps on open connections and on connections that have not yet
//!   sent a valid key; beyond them new connections are refused at once
//!   ([`refuse_http`] answers a fast 503 first where the listener speaks
//!   plain HTTP). Each admitted connection gets a [`Conn`] handle that the
//!   authentication code marks.
//! - [`GuardedIo`]: closes a connection that has no request in flight and
//!   has sent nothing for the idle timeout.
//! - [`TimedBody`]: a request body that stalls, or arrives slower than a
//!   minimum rate, ends with a [`SlowBody`] error the server turns into an
//!   answer in the client's protocol (408 on the data plane).
//! - [`Unread`]: a request body its handler drops before the end comes
//!   back through its [`Leftover`], so the server can read the rest and
//!   keep the connection, or close it with notice.
//! - [`TrackedBody`]: keeps a connection busy until its response is sent.
//! - [`raise_fd_limit`]: the soft file-descriptor limit up to the hard one.
//!
//! hyper's own header-read timeout and HTTP/2 keep-alive pings still apply;
//! these cover what hyper does not (a connection that sends nothing, a body
//! that stalls, how many connections there are).

mod body;
mod gate;
mod io;

use std::time::Duration;

pub use body::{Leftover, SlowBody, TimedBody, TrackedBody, Unread};
pub use gate::{Conn, Gate, Refusal, RequestGuard};
#[cfg(feature = "tonic")]
pub use io::{conn_of, remote_addr, ConnInfo};
pub use io::{refuse_http, GuardedIo};

/// Error type of bodies wrapped here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections beyond which new ones are refused.
    pub max_connections: usize,
    /// Connections that have not yet sent a valid key beyond which new ones
    /// are refused (at most `max_connections`).
    pub max_unauthenticated: usize,
    /// A connection with no request in flight that sends nothing for this
    /// long is closed (the first request included).
    pub idle_timeout: Duration,
    /// Longest wait for the next bytes of a request body; also the grace
    /// period before `body_min_rate` applies.
    pub body_timeout: Duration,
    /// Slowest average upload rate, in bytes per second, once
    /// `body_timeout` has passed; 0 checks only the gap.
    pub body_min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
        }
    }
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 1_000;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BODY_MIN_RATE: u64 = 1024;

/// The flags (and environment variables) that set [`Limits`]; both planes
/// flatten this into their command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Open client connections beyond which new ones are refused at once
    /// (a 503 where the port speaks plain HTTP). Lowered at start to fit
    /// the file-descriptor limit.
    #[arg(long, env = "LLMGW_MAX_CONNECTIONS", value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Connections that have not yet sent a valid key (or token) beyond
    /// which new ones are refused; a connection counts until one of its
    /// requests passes authentication.
    #[arg(long, env = "LLMGW_MAX_UNAUTHENTICATED_CONNECTIONS", value_name = "N", default_value_t = DEFAULT_MAX_UNAUTHENTICATED)]
    pub max_unauthenticated_connections: usize,

    /// A connection with no request in flight that sends nothing for this
    /// long is closed, e.g. 60s, 500ms or 2m.
    #[arg(long, env = "LLMGW_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Longest wait for the next bytes of a request body (a stalled upload,
    /// a content-length that promises more than is sent); also the grace
    /// period before --body-min-rate applies.
    #[arg(long, env = "LLMGW_BODY_READ_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// Slowest average upload rate, in bytes per second, once the body read
    /// timeout has passed since the request started; 0 turns it off.
    #[arg(long, env = "LLMGW_BODY_MIN_RATE", value_name = "BYTES_PER_S", default_value_t = DEFAULT_BODY_MIN_RATE)]
    pub body_min_rate: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_unauthenticated: self.max_unauthenticated_connections,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_read_timeout,
            body_min_rate: self.body_min_rate,
        }
    }
}

/// The longest idle or body read timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The most connections a gate counts.
const MAX_CONNECTIONS: usize = 1 << 30;

impl Limits {
    /// Checks the limits: every cap and timeout must be positive.
    pub fn check(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_unauthenticated == 0 {
            return Err("--max-unauthenticated-connections must be at least 1".into());
        }
        if self.idle_timeout.is_zero() {
            return Err("--idle-timeout must be positive".into());
        }
        if self.body_timeout.is_zero() {
            return Err("--body-read-timeout must be positive".into());
        }
        // Deadlines are `Instant + timeout`: bounded, they cannot overflow.
        if self.idle_timeout > MAX_TIMEOUT {
            return Err("--idle-timeout must be at most 1 day".into());
        }
        if self.body_timeout > MAX_TIMEOUT {
            return Err("--body-read-timeout must be at most 1 day".into());
        }
        // The gate packs both counts into 32 bits each.
        if self.max_connections > MAX_CONNECTIONS {
            return Err(format!(
                "--max-connections must be at most {MAX_CONNECTIONS}"
            ));
        }
        Ok(())
    }

    /// These limits with the caps lowered to fit `fds` file descriptors:
    /// each client connection may hold a second one (an upstream or
    /// database connection), and `reserve` stay free for everything else.
    pub fn fit_fds(mut self, fds: u64, reserve: u64) -> Self {
        let room = usize::try_from(fds.saturating_sub(reserve) / 2)
            .unwrap_or(usize::MAX)
            .max(1);
        if self.max_connections > room {
            tracing::warn!(
                asked = self.max_connections,
                fd_limit = fds,
                cap = room,
                "--max-connections lowered to fit the file-descriptor limit"
            );
            self.max_connections = room;
        }
        self.max_unauthenticated = self.max_unauthenticated.min(self.max_connections);
        self
    }
}

/// A duration from "60" (seconds), "60s", "500ms" or "2m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 60s, 500ms, 2m)"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!(
            "'{s}' is not a duration (e.g. 60s, 500ms, 2m): unknown unit"
        )),
    }
}

/// The file-descriptor limits after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises this process's soft limit on open files to its hard limit, and
/// logs the result. A failure is logged and leaves the limit as it was.
pub fn raise_fd_limit() -> Option<FdLimit> {
    let (before, hard) = match rlimit::Resource::NOFILE.get() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file-descriptor limit");
            return None;
        }
    };
    let soft = match rlimit::increase_nofile_limit(hard) {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, soft = before, hard, "cannot raise the file-descriptor limit");
            before
        }
    };
    tracing::info!(before, soft, hard, "file-descriptor limit");
    Some(FdLimit { before, soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn caps_fit_the_fd_limit() {
        let l = Limits::default().fit_fds(1024, 256);
        assert_eq!(l.max_connections, 384);
        assert_eq!(l.max_unauthenticated, 384);
        let l = Limits::default().fit_fds(1 << 20, 256);
        assert_eq!(l, Limits::default());
    }

    #[test]
    fn zero_limits_are_refused() {
        let bad = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert!(bad.check().unwrap_err().contains("--max-connections"));
        assert!(Limits::default().check().is_ok());
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let l = raise_fd_limit().unwrap();
        assert_eq!(rlimit::Resource::NOFILE.get().unwrap().0, l.soft);
        assert!(l.soft >= l.before);
    }
}
