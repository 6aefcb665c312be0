//! The request-log pipeline. Handlers hand finished records to
//! [`LogSink::send`], which never waits: a full queue drops the record and
//! counts it. [`LogSink::send_spooled`] also returns a [`Spooled`], which
//! resolves once the record has been handed to the kernel (so a `kill -9`
//! of the process no longer loses it): the proxy holds a response's last
//! bytes on it, for a bounded time (see `proxy::hold`). [`spawn`] starts
//! the rest, which loses and duplicates nothing once a record is in the
//! queue:
//!
//! - the writer drains the queue into the on-disk [`spool::Spool`], which
//!   assigns each record its `sequence` and keeps it across restarts until
//!   the control plane has acknowledged it;
//! - the [`shipper`] streams the spool to the control plane's `Logs.Ship`
//!   and trims it behind the acknowledgements, reconnecting forever.
//!
//! [`LogsHandle::flush`] is the graceful end: stop accepting, write what is
//! queued, and wait (bounded) for the control plane to acknowledge it.
//!
//! A record given up anywhere on the way (queue full, spool bounds, disk
//! reserve, write errors, damaged frames) is counted once by reason in the
//! pipeline's [`Losses`], which `/metrics` exports and which reports them in
//! the process log at a bounded rate.

pub mod capture;
pub mod loss;
mod recent;
pub mod shipper;
pub mod spool;
mod wake;
pub mod wire;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http::Uri;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Certificate;
use tracing::{info, warn};

use crate::backoff::Backoff;
pub use loss::{LossReason, Losses};
use shipper::{ShipCounters, Shipper};
use spool::{Spool, SpoolOptions, SpoolStats};
pub use wire::{FieldWriter, LogRecord};

/// Where request handlers hand their finished records. It never waits.
#[derive(Debug)]
pub struct LogSink {
    tx: mpsc::Sender<Queued>,
    losses: Arc<Losses>,
    writing: Arc<WriteClock>,
}

/// The other end of a [`LogSink`], for [`spawn`]: the queue, and the loss
/// counters the whole pipeline shares.
#[derive(Debug)]
pub struct LogReceiver {
    rx: mpsc::Receiver<Queued>,
    losses: Arc<Losses>,
    writing: Arc<WriteClock>,
}

/// A record in the queue, with the sender of its [`Spooled`] when someone
/// waits for it. The writer drops the sender once the record's batch has
/// been written (or given up), which resolves the wait.
#[derive(Debug)]
pub(crate) struct Queued {
    pub record: LogRecord,
    pub spooled: Option<oneshot::Sender<()>>,
}

/// Resolves once a record given to [`LogSink::send_spooled`] is in the
/// spool, handed to the kernel (not yet synced to the disk: a killed
/// process keeps it, a machine crash may not), or once it was given up and
/// counted as lost. It never fails.
#[derive(Debug, Default)]
pub struct Spooled(Option<oneshot::Receiver<()>>);

impl Spooled {
    /// Resolved already: nothing to wait for.
    pub fn done() -> Spooled {
        Spooled(None)
    }

    /// A wait, and what to give [`LogSink::send_with`] for it.
    pub fn channel() -> (oneshot::Sender<()>, Spooled) {
        let (tx, rx) = oneshot::channel();
        (tx, Spooled(Some(rx)))
    }
}

impl std::future::Future for Spooled {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let Some(rx) = self.0.as_mut() else {
            return std::task::Poll::Ready(());
        };
        // The writer only drops its sender: `Err` is the signal.
        match std::pin::Pin::new(rx).poll(cx) {
            std::task::Poll::Ready(_) => {
                self.0 = None;
                std::task::Poll::Ready(())
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// Since when the writer has been inside one spool write: one that lasts
/// longer than a wait's bound means a stalled disk, and responses then stop
/// waiting for their records until it returns.
#[derive(Debug, Default)]
pub struct WriteClock {
    /// Milliseconds since [`WriteClock::epoch`] at which the current write
    /// began, plus one; 0 while no write is under way.
    since: std::sync::atomic::AtomicU64,
}

impl WriteClock {
    fn epoch() -> std::time::Instant {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(std::time::Instant::now)
    }

    fn now_ms() -> u64 {
        Self::epoch().elapsed().as_millis() as u64
    }

    pub(crate) fn begin(&self) {
        self.since.store(Self::now_ms() + 1, Ordering::Release);
    }

    pub(crate) fn end(&self) {
        self.since.store(0, Ordering::Release);
    }

    /// How long the write under way has lasted; zero when there is none.
    pub fn stalled_for(&self) -> Duration {
        match self.since.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            since => Duration::from_millis((Self::now_ms() + 1).saturating_sub(since)),
        }
    }
}

impl LogSink {
    pub fn new(capacity: usize) -> (LogSink, LogReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        let losses = Arc::new(Losses::default());
        let writing = Arc::new(WriteClock::default());
        (
            LogSink {
                tx,
                losses: Arc::clone(&losses),
                writing: Arc::clone(&writing),
            },
            LogReceiver {
                rx,
                losses,
                writing,
            },
        )
    }

    pub fn send(&self, record: impl Into<LogRecord>) {
        self.send_with(record, None);
    }

    /// Like [`LogSink::send`], and what resolves once the record is in the
    /// spool (or was given up). A record with someone waiting is written
    /// without the writer's linger.
    pub fn send_spooled(&self, record: impl Into<LogRecord>) -> Spooled {
        let (tx, spooled) = Spooled::channel();
        self.send_with(record, Some(tx));
        spooled
    }

    /// [`LogSink::send`], releasing the wait of `spooled` (from
    /// [`Spooled::channel`]) once the record is in the spool or given up.
    pub fn send_with(&self, record: impl Into<LogRecord>, spooled: Option<oneshot::Sender<()>>) {
        let item = Queued {
            record: record.into(),
            spooled,
        };
        // Refused, the sender is dropped with the item: released at once.
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.losses.add(LossReason::QueueFull, 1),
            Err(TrySendError::Closed(_)) => self.losses.add(LossReason::Shutdown, 1),
        }
    }

    /// How long the writer has been inside its current spool write.
    pub fn writing(&self) -> &WriteClock {
        &self.writing
    }

    /// Records dropped here: the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.losses.count(LossReason::QueueFull) + self.losses.count(LossReason::Shutdown)
    }

    /// The loss counters of the whole pipeline.
    pub fn losses(&self) -> &Arc<Losses> {
        &self.losses
    }

    /// Completes once the pipeline stopped accepting records (after
    /// [`LogsHandle::flush`] began, or when it is gone).
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// Default bound of the spool's size on disk (`--spool-max-bytes`).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 << 20;
/// Default free space the spool leaves on its filesystem
/// (`--spool-min-free-bytes`).
pub const DEFAULT_SPOOL_MIN_FREE_BYTES: u64 = 64 << 20;
/// Default segment size: the unit in which the spool is trimmed.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;
/// Default time the writer gathers records before writing a batch.
pub const DEFAULT_WRITE_LINGER: Duration = Duration::from_millis(5);
/// Default time records too few to fill a batch wait for more before the
/// shipper sends them anyway (`--log-ship-linger-ms`).
pub const DEFAULT_SHIP_LINGER: Duration = Duration::from_millis(20);
/// Largest `--log-ship-linger-ms`: records held longer than this would
/// only make the control plane's view of the traffic late.
pub const MAX_SHIP_LINGER: Duration = Duration::from_secs(10);
/// Default longest wait of a response's end for its record to reach the
/// spool (`--spool-wait-ms`).
pub const DEFAULT_SPOOL_WAIT: Duration = Duration::from_millis(500);
/// Largest `--spool-wait-ms`.
pub const MAX_SPOOL_WAIT: Duration = Duration::from_secs(60);
/// Default longest wait between a write and its `fdatasync`.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(50);

/// The default spool folder, `./data/spool/<node_id>` (`--spool-dir`).
/// Characters other than ASCII letters, digits, `-`, `_` and `.` in the
/// node id become `_`, so the id cannot leave the folder.
pub fn default_spool_dir(node_id: &str) -> PathBuf {
    let mut name: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        name = format!("_{name}");
    }
    Path::new("./data/spool").join(name)
}

/// Settings of the shipping pipeline. [`LogsConfig::from_config`] takes the
/// connection settings and the free-space reserve from the data plane's
/// [`crate::Config`]; adjust `spool_dir` and `max_bytes` from `--spool-dir`
/// / `--spool-max-bytes`.
#[derive(Clone)]
pub struct LogsConfig {
    /// Folder of this node's spool; created if missing.
    pub spool_dir: PathBuf,
    /// Bound of the spool's size; past it the oldest segment is dropped.
    pub max_bytes: u64,
    /// Free space the spool leaves on its filesystem; past it the oldest
    /// segment is dropped, then new records are refused. 0: no reserve.
    pub min_free_bytes: u64,
    /// Segment size (clamped to at most a quarter of `max_bytes`).
    pub segment_bytes: u64,
    /// Longest time between writing a record and `fdatasync`ing it. Every
    /// write reaches the kernel at once, so a killed process never loses
    /// a record; this interval is what a machine crash or power loss can
    /// lose. Zero syncs after every batch (safest, at the disk's flush
    /// latency per batch); 50 ms bounds the loss at a fraction of a
    /// second while keeping syncs to at most 20 per second under any load.
    pub sync_interval: Duration,
    pub node_id: String,
    /// Tried in turn, one per (re)connect.
    pub control_planes: Vec<Uri>,
    pub token: SecretString,
    /// CA certificate(s) for https:// control planes; system roots if none.
    pub tls_ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Most records in one `LogBatch`.
    pub batch_max_records: usize,
    /// Most bytes of records in one `LogBatch` (a single larger record
    /// still goes alone).
    pub batch_max_bytes: usize,
    /// Most batches sent and not yet acknowledged.
    pub window: usize,
    /// How long records too few to fill a batch wait for more before they
    /// go anyway (0: each write of the spool goes as it comes).
    pub ship_linger: Duration,
    /// A stream with batches in flight and no acknowledgement for this
    /// long is dropped and re-opened.
    pub ack_timeout: Duration,
    /// Most records the writer takes from the queue per write.
    pub write_max_records: usize,
    /// How long the writer gathers records after the first of a batch, so
    /// that a busy data plane writes, reads, ships and acknowledges records
    /// in batches rather than one by one. The writer skips it for a record
    /// someone waits for ([`LogSink::send_spooled`]): such a batch waits
    /// only for the runtime's round of ready tasks (a group commit), and
    /// the shipper gathers writes into larger batches (`ship_linger`).
    pub write_linger: Duration,
}

impl LogsConfig {
    /// Defaults for everything but the node, the control planes and the
    /// token; the spool goes to [`default_spool_dir`].
    pub fn new(node_id: impl Into<String>, control_planes: Vec<Uri>, token: SecretString) -> Self {
        let node_id = node_id.into();
        LogsConfig {
            spool_dir: default_spool_dir(&node_id),
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            min_free_bytes: DEFAULT_SPOOL_MIN_FREE_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            node_id,
            control_planes,
            token,
            tls_ca_pem: None,
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            batch_max_records: 500,
            batch_max_bytes: 1 << 20,
            window: 8,
            ship_linger: DEFAULT_SHIP_LINGER,
            ack_timeout: Duration::from_secs(60),
            write_max_records: 4096,
            write_linger: DEFAULT_WRITE_LINGER,
        }
    }

    /// Node, control planes, token, TLS, timeouts and backoff as discovery
    /// uses them, and the free-space reserve; other spool settings at their
    /// defaults.
    pub fn from_config(config: &crate::Config) -> Self {
        let mut c = LogsConfig::new(
            config.node_id.clone(),
            config.control_planes.clone(),
            config.token.clone(),
        );
        c.tls_ca_pem.clone_from(&config.tls_ca_pem);
        c.connect_timeout = config.connect_timeout;
        c.keepalive_interval = config.keepalive_interval;
        c.keepalive_timeout = config.keepalive_timeout;
        c.backoff_initial = config.backoff_initial;
        c.backoff_max = config.backoff_max;
        c.min_free_bytes = config.spool_min_free_bytes;
        c
    }
}

impl fmt::Debug for LogsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.control_planes.iter().map(Uri::to_string).collect();
        f.debug_struct("LogsConfig")
            .field("spool_dir", &self.spool_dir)
            .field("max_bytes", &self.max_bytes)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("segment_bytes", &self.segment_bytes)
            .field("sync_interval", &self.sync_interval)
            .field("node_id", &self.node_id)
            .field("control_planes", &urls)
            .field("token", &"<redacted>")
            .field("tls_ca", &self.tls_ca_pem.is_some())
            .field("batch_max_records", &self.batch_max_records)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("window", &self.window)
            .field("ship_linger", &self.ship_linger)
            .field("ack_timeout", &self.ack_timeout)
            .finish_non_exhaustive()
    }
}

/// Opens the spool (recovering what a previous run left), then starts the
/// writer, which consumes `rx`, and the shipper. Fails only on local
/// problems: no control-plane URL, a token unfit for a header, a spool
/// folder that cannot be created or read. An unreachable control plane is
/// retried in the background forever.
pub async fn spawn(config: LogsConfig, rx: LogReceiver) -> Result<LogsHandle> {
    if config.control_planes.is_empty() {
        bail!("no control-plane URL configured for log shipping");
    }
    let mut auth = AsciiMetadataValue::try_from(format!("Bearer {}", config.token.expose_secret()))
        .map_err(|_| anyhow!("the data-plane token contains characters not allowed in a header"))?;
    auth.set_sensitive(true);

    let dir = config.spool_dir.clone();
    let opts = SpoolOptions {
        max_bytes: config.max_bytes,
        segment_bytes: config.segment_bytes,
        min_free_bytes: config.min_free_bytes,
    };
    let LogReceiver {
        rx,
        losses,
        writing,
    } = rx;
    let spool = open_spool(dir, opts, Arc::clone(&losses))
        .await
        .with_context(|| {
            format!(
                "cannot open the request-log spool in {}",
                config.spool_dir.display()
            )
        })?;
    let spool = Arc::new(spool);
    let counters = Arc::new(ShipCounters::default());

    let io = writer::SpoolIo::start(Arc::clone(&spool))
        .context("cannot start the request-log spool's I/O thread")?;
    let (stop, stop_rx) = oneshot::channel();
    let (draining, draining_rx) = watch::channel(false);
    let writer = tokio::spawn(
        writer::Writer {
            io,
            rx,
            node_id: config.node_id.clone(),
            sync_interval: config.sync_interval,
            max_batch: config.write_max_records,
            linger: config.write_linger,
            stop: stop_rx,
            writing,
        }
        .run(),
    );
    let shipper = tokio::spawn(
        Shipper {
            endpoints: config.control_planes,
            node_id: config.node_id,
            auth,
            tls_ca: config.tls_ca_pem.map(Certificate::from_pem),
            connect_timeout: config.connect_timeout,
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
            backoff: Backoff::new(config.backoff_initial, config.backoff_max),
            spool: Arc::clone(&spool),
            counters: Arc::clone(&counters),
            batch_max_records: config.batch_max_records.max(1),
            batch_max_bytes: config.batch_max_bytes.max(1),
            window: config.window.max(1),
            linger: config.ship_linger,
            draining: draining_rx,
            ack_timeout: config.ack_timeout,
            ack_failures: 0,
        }
        .run(),
    );
    let reporter = tokio::spawn(report_losses(Arc::clone(&losses)));
    Ok(LogsHandle {
        spool,
        counters,
        losses,
        stop: Some(stop),
        draining,
        writer: Some(writer),
        shipper: Some(shipper),
        reporter: Some(reporter),
    })
}

/// How long [`spawn`] waits for a spool folder whose lock is held. A
/// pipeline of this process that was just dropped releases the lock only
/// once its tasks are gone, which takes a moment; another data plane on the
/// same folder keeps it, and start fails after this wait.
const SPOOL_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Writes the loss lines held back by the rate limit, once per interval.
async fn report_losses(losses: Arc<Losses>) {
    let mut tick = tokio::time::interval(loss::LOSS_LOG_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        losses.report_pending();
    }
}

/// Opens the spool on a blocking thread, waiting up to [`SPOOL_LOCK_WAIT`]
/// while its folder is locked.
async fn open_spool(dir: PathBuf, opts: SpoolOptions, losses: Arc<Losses>) -> Result<Spool> {
    let give_up = tokio::time::Instant::now() + SPOOL_LOCK_WAIT;
    loop {
        let d = dir.clone();
        let l = Arc::clone(&losses);
        let opened = tokio::task::spawn_blocking(move || Spool::open_with_losses(d, opts, l))
            .await
            .context("spool recovery task")?;
        match opened {
            Err(e)
                if e.kind() == std::io::ErrorKind::ResourceBusy
                    && tokio::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// The running pipeline. Read its counters any time; end it with
/// [`LogsHandle::flush`]. Dropping it stops both tasks at once, leaving
/// whatever is unacknowledged in the spool for the next start (as a crash
/// would, minus the queue's contents).
#[derive(Debug)]
pub struct LogsHandle {
    spool: Arc<Spool>,
    counters: Arc<ShipCounters>,
    losses: Arc<Losses>,
    stop: Option<oneshot::Sender<()>>,
    /// Tells the shipper that a graceful shutdown has begun.
    draining: watch::Sender<bool>,
    writer: Option<JoinHandle<()>>,
    shipper: Option<JoinHandle<()>>,
    reporter: Option<JoinHandle<()>>,
}

/// A cheap, cloneable view of the pipeline's counters, for `/metrics`.
#[derive(Debug, Clone)]
pub struct LogsStatsReader {
    spool: Arc<Spool>,
    counters: Arc<ShipCounters>,
    losses: Arc<Losses>,
}

impl LogsStatsReader {
    pub fn spool_depth(&self) -> u64 {
        self.spool.depth()
    }

    /// Records lost after the queue, for any reason (spool bounds, disk
    /// reserve, write errors, oversized, damaged); with
    /// [`LogSink::dropped`], every record lost. (The name is that of its
    /// first use, the spool's size bound.)
    pub fn dropped_full(&self) -> u64 {
        lost_after_queue(&self.losses)
    }

    /// Every loss counter, by reason.
    pub fn losses(&self) -> &Arc<Losses> {
        &self.losses
    }

    pub fn quarantined(&self) -> u64 {
        self.counters.quarantined.load(Ordering::Relaxed)
    }

    /// Records acknowledged by the control plane since start.
    pub fn shipped(&self) -> u64 {
        self.counters.shipped.load(Ordering::Relaxed)
    }

    /// Batches acknowledged by the control plane since start.
    pub fn batches(&self) -> u64 {
        self.counters.batches.load(Ordering::Relaxed)
    }
}

/// A snapshot of every counter, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsStats {
    pub spool: SpoolStats,
    /// Records acknowledged by the control plane since start.
    pub shipped: u64,
    /// Batches acknowledged since start.
    pub batches: u64,
    /// Records the control plane quarantined since start.
    pub quarantined: u64,
    /// Log streams opened since start.
    pub connects: u64,
    /// Whether a log stream is open now.
    pub connected: bool,
}

/// What [`LogsHandle::flush`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Sequence of the last record written to the spool.
    pub written: u64,
    /// Highest sequence the control plane acknowledged.
    pub acked: u64,
    /// Records left in the spool for the next start.
    pub unacked: u64,
    /// True if the timeout ran out first.
    pub timed_out: bool,
}

/// Losses of every reason but the queue's own.
fn lost_after_queue(losses: &Losses) -> u64 {
    // Summed reason by reason: a total minus counts read later could go
    // below zero while the queue is dropping.
    LossReason::ALL
        .iter()
        .filter(|r| !matches!(r, LossReason::QueueFull | LossReason::Shutdown))
        .map(|&r| losses.count(r))
        .sum()
}

impl LogsHandle {
    pub fn stats_reader(&self) -> LogsStatsReader {
        LogsStatsReader {
            spool: Arc::clone(&self.spool),
            counters: Arc::clone(&self.counters),
            losses: Arc::clone(&self.losses),
        }
    }

    /// Every loss counter, by reason (shared with the [`LogSink`]).
    pub fn losses(&self) -> Arc<Losses> {
        Arc::clone(&self.losses)
    }

    /// Records in the spool not yet acknowledged.
    pub fn spool_depth(&self) -> u64 {
        self.spool.depth()
    }

    /// Records lost because the spool hit its size bound.
    pub fn dropped_full(&self) -> u64 {
        self.losses.count(LossReason::SpoolFull)
    }

    /// Records the control plane quarantined.
    pub fn quarantined(&self) -> u64 {
        self.counters.quarantined.load(Ordering::Relaxed)
    }

    /// Records acknowledged by the control plane.
    pub fn shipped(&self) -> u64 {
        self.counters.shipped.load(Ordering::Relaxed)
    }

    /// Sequence of the last record written; 0 before any.
    pub fn last_written(&self) -> u64 {
        self.spool.last_written()
    }

    /// Highest sequence acknowledged.
    pub fn acked(&self) -> u64 {
        self.spool.acked()
    }

    /// Changes whenever records are written; holds the last sequence.
    pub fn subscribe_written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.spool.subscribe_written()
    }

    /// Changes whenever an acknowledgement advances; holds its sequence.
    pub fn subscribe_acked(&self) -> tokio::sync::watch::Receiver<u64> {
        self.spool.subscribe_acked()
    }

    pub fn stats(&self) -> LogsStats {
        let c = &self.counters;
        LogsStats {
            spool: self.spool.stats(),
            shipped: c.shipped.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            quarantined: c.quarantined.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            connected: c.connected.load(Ordering::Relaxed),
        }
    }

    /// Graceful end: closes the queue ([`LogSink::send`] drops and counts
    /// from now on), writes and syncs what was queued, then waits until
    /// the control plane has acknowledged everything written or `timeout`
    /// (counted from the call) runs out. Then the shipper stops; whatever
    /// is unacknowledged stays in the spool for the next start.
    pub async fn flush(mut self, timeout: Duration) -> FlushReport {
        let deadline = tokio::time::Instant::now() + timeout;
        // From now on the shipper sends what it has without waiting for
        // more: the last records must not sit out a linger.
        self.draining.send_replace(true);
        if let Some(stop) = self.stop.take() {
            // An error only means the writer has already stopped.
            let _ = stop.send(());
        }
        let mut timed_out = false;
        if let Some(writer) = self.writer.take() {
            match tokio::time::timeout_at(deadline, writer).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "request-log writer task failed"),
                Err(_) => timed_out = true,
            }
        }
        let written = self.spool.last_written();
        if !timed_out {
            let mut acked = self.spool.subscribe_acked();
            timed_out = tokio::time::timeout_at(deadline, acked.wait_for(|a| *a >= written))
                .await
                .is_err();
        }
        if let Some(shipper) = self.shipper.take() {
            shipper.abort();
            let _ = shipper.await;
        }
        if let Some(reporter) = self.reporter.take() {
            reporter.abort();
        }
        // The acknowledgement file may lag by up to a second: bring it up
        // to date, so a restart resends nothing that was acknowledged.
        let spool = Arc::clone(&self.spool);
        match tokio::task::spawn_blocking(move || spool.persist_ack(true)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot record the last log acknowledgement on disk"),
            Err(e) => warn!(error = %e, "log acknowledgement task failed"),
        }
        let report = FlushReport {
            written,
            acked: self.spool.acked(),
            unacked: self.spool.depth(),
            timed_out,
        };
        if report.unacked > 0 {
            warn!(
                unacked = report.unacked,
                acked_sequence = report.acked,
                written_sequence = report.written,
                "request logs not acknowledged at shutdown stay in the spool for the next start"
            );
        } else {
            info!(
                acked_sequence = report.acked,
                "request logs flushed to the control plane"
            );
        }
        // What the rate limit held back, now.
        self.losses.report_now();
        report
    }
}

impl Drop for LogsHandle {
    fn drop(&mut self) {
        for task in [
            self.writer.take(),
            self.shipper.take(),
            self.reporter.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
    }
}
