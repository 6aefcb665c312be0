//! Request logs lost on their way to the control plane, counted by reason
//! ([`LossReason`]) for `/metrics` (`llmgw_log_records_lost_total{reason}`)
//! and reported in the process log at a bounded rate: at most one line per
//! reason per [`LOSS_LOG_INTERVAL`], each with the records lost since the
//! previous line of that reason and the total. The first loss after a quiet
//! interval is reported at once; what accumulates in between is reported by
//! [`Losses::report_pending`], which the pipeline calls once per interval.
//!
//! Every place that gives up on a record counts it here exactly once, so
//! the sum over the reasons is every record lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{error, warn};

/// Shortest time between two log lines of the same reason.
pub const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a request log was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// The queue between the request handlers and the spool writer was
    /// full (the disk cannot keep up).
    QueueFull,
    /// The pipeline had stopped accepting records (shutdown under way).
    Shutdown,
    /// `--spool-max-bytes` dropped the oldest segment before it shipped.
    SpoolFull,
    /// `--spool-min-free-bytes`: the disk's free space reached the reserve;
    /// the oldest segment was dropped, or new records were refused.
    DiskReserve,
    /// Writing to the spool failed (disk full, I/O error).
    WriteError,
    /// A record larger than the spool's frame limit.
    Oversized,
    /// A damaged frame found in the spool: skipped on read or cut off at
    /// recovery.
    Corrupt,
}

impl LossReason {
    /// Every reason, in the order of [`Losses::snapshot`].
    pub const ALL: [LossReason; 7] = [
        LossReason::QueueFull,
        LossReason::Shutdown,
        LossReason::SpoolFull,
        LossReason::DiskReserve,
        LossReason::WriteError,
        LossReason::Oversized,
        LossReason::Corrupt,
    ];

    /// The `reason` label in `/metrics` and in the log lines.
    pub fn label(self) -> &'static str {
        match self {
            LossReason::QueueFull => "queue_full",
            LossReason::Shutdown => "shutdown",
            LossReason::SpoolFull => "spool_full",
            LossReason::DiskReserve => "disk_reserve",
            LossReason::WriteError => "write_error",
            LossReason::Oversized => "oversized",
            LossReason::Corrupt => "corrupt",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn message(self) -> &'static str {
        match self {
            LossReason::QueueFull => "request-log queue full: records dropped",
            LossReason::Shutdown => "request-log pipeline stopped: records dropped",
            LossReason::SpoolFull => {
                "request-log spool at --spool-max-bytes: oldest records dropped unshipped"
            }
            LossReason::DiskReserve => {
                "disk free space at --spool-min-free-bytes: request logs dropped"
            }
            LossReason::WriteError => "cannot write request logs to the spool: records lost",
            LossReason::Oversized => "request log too large for the spool: dropped",
            LossReason::Corrupt => "damaged request logs in the spool: skipped",
        }
    }
}

const REASONS: usize = LossReason::ALL.len();

/// Lost records by reason. Shared by the sink, the spool and `/metrics`;
/// counting is a few atomic operations and never blocks.
#[derive(Debug)]
pub struct Losses {
    counts: [AtomicU64; REASONS],
    /// `counts` as of the last log line of each reason.
    reported: [AtomicU64; REASONS],
    /// Milliseconds after `epoch`, plus one, of the last log line of each
    /// reason; 0 before the first.
    last_line: [AtomicU64; REASONS],
    epoch: Instant,
    interval: Duration,
}

impl Default for Losses {
    fn default() -> Self {
        Losses::new(LOSS_LOG_INTERVAL)
    }
}

impl Losses {
    /// Counters at zero, logging at most once per `interval` per reason.
    pub fn new(interval: Duration) -> Self {
        Losses {
            counts: Default::default(),
            reported: Default::default(),
            last_line: Default::default(),
            epoch: Instant::now(),
            interval,
        }
    }

    /// Counts `n` records lost for `reason`, and reports them now unless a
    /// line of that reason was written less than an interval ago.
    pub fn add(&self, reason: LossReason, n: u64) {
        if n == 0 {
            return;
        }
        self.counts[reason.index()].fetch_add(n, Ordering::Relaxed);
        self.report(reason, false);
    }

    /// Records lost for `reason` since start.
    pub fn count(&self, reason: LossReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// Records lost for any reason since start.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Every reason with its count, in the order of [`LossReason::ALL`].
    pub fn snapshot(&self) -> [(LossReason, u64); REASONS] {
        LossReason::ALL.map(|r| (r, self.count(r)))
    }

    /// Writes the line of every reason whose losses have not been reported
    /// yet and whose interval has passed.
    pub fn report_pending(&self) {
        self.report_unreported(false);
    }

    /// Writes the line of every reason whose losses have not been reported
    /// yet, interval or not (at shutdown).
    pub fn report_now(&self) {
        self.report_unreported(true);
    }

    fn report_unreported(&self, force: bool) {
        for reason in LossReason::ALL {
            let i = reason.index();
            if self.counts[i].load(Ordering::Relaxed) > self.reported[i].load(Ordering::Relaxed) {
                self.report(reason, force);
            }
        }
    }

    fn report(&self, reason: LossReason, force: bool) {
        let i = reason.index();
        let now = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = self.last_line[i].load(Ordering::Relaxed);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if !force && last != 0 && now.saturating_sub(last) < interval {
            return;
        }
        // One thread writes the line; the others' records are in the count.
        if self.last_line[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let total = self.counts[i].load(Ordering::Relaxed);
        let since = total.saturating_sub(self.reported[i].swap(total, Ordering::Relaxed));
        if since == 0 {
            return;
        }
        let label = reason.label();
        match reason {
            LossReason::WriteError | LossReason::Corrupt => {
                error!(
                    reason = label,
                    records = since,
                    total,
                    "{}",
                    reason.message()
                )
            }
            _ => warn!(
                reason = label,
                records = since,
                total,
                "{}",
                reason.message()
            ),
        }
    }

    /// Records counted but not yet reported in a log line, for `reason`.
    #[cfg(test)]
    fn unreported(&self, reason: LossReason) -> u64 {
        let i = reason.index();
        self.counts[i].load(Ordering::Relaxed) - self.reported[i].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_counted_apart_and_summed() {
        let l = Losses::default();
        l.add(LossReason::DiskReserve, 3);
        l.add(LossReason::WriteError, 2);
        l.add(LossReason::DiskReserve, 0);
        assert_eq!(l.count(LossReason::DiskReserve), 3);
        assert_eq!(l.count(LossReason::WriteError), 2);
        assert_eq!(l.count(LossReason::QueueFull), 0);
        assert_eq!(l.total(), 5);
        let labels: Vec<&str> = l.snapshot().iter().map(|(r, _)| r.label()).collect();
        assert_eq!(
            labels,
            [
                "queue_full",
                "shutdown",
                "spool_full",
                "disk_reserve",
                "write_error",
                "oversized",
                "corrupt"
            ]
        );
    }

    /// The process log while `f` runs on this thread.
    fn log_of(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_log_lines_name_the_reason_and_count_since_the_last_line() {
        let l = Losses::new(Duration::from_secs(3600));
        let first = log_of(|| {
            l.add(LossReason::DiskReserve, 3);
            l.add(LossReason::DiskReserve, 4);
            l.add(LossReason::DiskReserve, 5);
        });
        // One line for three losses: the first, at once.
        assert_eq!(first.lines().count(), 1, "{first}");
        assert!(first.contains("WARN"), "{first}");
        assert!(first.contains("--spool-min-free-bytes"), "{first}");
        assert!(
            first.contains("reason=\"disk_reserve\" records=3 total=3"),
            "{first}"
        );
        // Held back within the interval; at shutdown, the 9 since.
        assert!(log_of(|| l.report_pending()).is_empty());
        let last = log_of(|| l.report_now());
        assert!(
            last.contains("reason=\"disk_reserve\" records=9 total=12"),
            "{last}"
        );
        let lost = log_of(|| l.add(LossReason::WriteError, 1));
        assert!(
            lost.contains("ERROR") && lost.contains("write_error"),
            "{lost}"
        );
    }

    #[test]
    fn one_line_per_interval_per_reason_with_the_count_since_the_last() {
        let l = Losses::new(Duration::from_millis(200));
        // The first loss is reported at once.
        l.add(LossReason::SpoolFull, 4);
        assert_eq!(l.unreported(LossReason::SpoolFull), 0);
        // Within the interval: counted, not reported.
        l.add(LossReason::SpoolFull, 5);
        l.add(LossReason::SpoolFull, 6);
        l.report_pending();
        assert_eq!(l.unreported(LossReason::SpoolFull), 11);
        // Another reason has its own interval.
        l.add(LossReason::Corrupt, 1);
        assert_eq!(l.unreported(LossReason::Corrupt), 0);
        // Once the interval has passed, the next report covers the 11.
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.unreported(LossReason::SpoolFull) > 0 {
            assert!(Instant::now() < deadline, "never reported");
            std::thread::sleep(Duration::from_millis(20));
            l.report_pending();
        }
        assert_eq!(l.count(LossReason::SpoolFull), 15);
        // At shutdown, whatever is held back is written at once.
        l.add(LossReason::SpoolFull, 2);
        assert_eq!(l.unreported(LossReason::SpoolFull), 2);
        l.report_now();
        assert_eq!(l.unreported(LossReason::SpoolFull), 0);
    }
}
