//! The spool writer: drains the [`super::LogSink`] queue into the spool.
//! Whatever is queued when it wakes, plus what arrives within a short
//! linger, is written as one batch (one `write`), so batches grow with load
//! and each costs one trip to the blocking pool, one write, and downstream
//! one spool read, one `LogBatch` and one acknowledgement. File I/O runs on
//! the blocking pool; the async runtime never waits on the disk, and request
//! handlers never wait at all.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error};

use super::spool::Spool;
use super::wire::LogRecord;

pub(crate) struct Writer {
    pub spool: Arc<Spool>,
    pub rx: mpsc::Receiver<LogRecord>,
    /// Filled into records that carry none.
    pub node_id: String,
    pub sync_interval: Duration,
    pub max_batch: usize,
    /// After the first record of a batch, how long to gather more before
    /// writing (zero: write what is queued at once).
    pub linger: Duration,
    /// Fires (or is dropped) to stop: the queue is closed, drained, written
    /// and synced, then the writer returns.
    pub stop: oneshot::Receiver<()>,
}

impl Writer {
    pub async fn run(mut self) {
        let max_batch = self.max_batch.max(1);
        let mut batch = Vec::with_capacity(max_batch);
        let mut last_sync = Instant::now();
        let mut dirty = false;
        let mut stopping = false;
        let mut failures = 0u64;
        // Kept across iterations and moved only when the sync time does,
        // so a batch does not register a fresh timer.
        let sync_timer = tokio::time::sleep_until(last_sync + self.sync_interval);
        tokio::pin!(sync_timer);
        loop {
            let sync_at = last_sync + self.sync_interval;
            if sync_timer.deadline() != sync_at {
                sync_timer.as_mut().reset(sync_at);
            }
            let n = tokio::select! {
                biased;
                _ = &mut self.stop, if !stopping => {
                    // Stop accepting; what is queued is still received.
                    self.rx.close();
                    stopping = true;
                    continue;
                }
                n = self.rx.recv_many(&mut batch, max_batch) => n,
                () = &mut sync_timer, if dirty => {
                    self.sync().await;
                    dirty = false;
                    last_sync = Instant::now();
                    continue;
                }
            };
            if n == 0 {
                // Closed and drained.
                break;
            }
            if !stopping && !self.linger.is_zero() && batch.len() < max_batch {
                // Under load, a batch per request would cost a blocking-pool
                // hand-off, a write, a spool read, a gRPC message and an
                // acknowledgement (a file rename) each: gather for a moment.
                // One timer for the whole linger: a timer registered anew
                // for each record that arrives makes tokio wake its driver
                // (an `eventfd` write) once per request.
                let linger = tokio::time::sleep(self.linger);
                tokio::pin!(linger);
                while batch.len() < max_batch {
                    let room = max_batch - batch.len();
                    tokio::select! {
                        biased;
                        n = self.rx.recv_many(&mut batch, room) => if n == 0 { break },
                        () = &mut linger => break,
                    }
                }
            }
            let n = batch.len();
            for r in &mut batch {
                if r.fields.node_id.is_empty() {
                    r.fields.node_id.clone_from(&self.node_id);
                }
            }
            let records = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
            let spool = Arc::clone(&self.spool);
            match tokio::task::spawn_blocking(move || spool.append(records)).await {
                Ok(Ok(last)) => {
                    debug!(records = n, last_sequence = last, "request logs spooled");
                    dirty = true;
                }
                Ok(Err(e)) => {
                    // The spool counted and logged the lost records; keep
                    // going, the next batch opens a fresh segment.
                    failures += 1;
                    if failures.is_power_of_two() {
                        error!(error = %e, failures, "request-log spool write failed");
                    }
                }
                Err(e) => error!(error = %e, "request-log spool write task failed"),
            }
            if dirty && last_sync.elapsed() >= self.sync_interval {
                self.sync().await;
                dirty = false;
                last_sync = Instant::now();
            }
        }
        if dirty {
            self.sync().await;
        }
        debug!("request-log writer stopped");
    }

    async fn sync(&self) {
        let spool = Arc::clone(&self.spool);
        match tokio::task::spawn_blocking(move || spool.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "cannot sync the request-log spool"),
            Err(e) => error!(error = %e, "request-log spool sync task failed"),
        }
    }
}
