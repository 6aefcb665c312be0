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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::spool::SpoolOptions;
    use llmgw_proto::v1 as pb;

    fn record(id: &str, node_id: &str) -> LogRecord {
        pb::RequestLog {
            id: id.into(),
            node_id: node_id.into(),
            ..Default::default()
        }
        .into()
    }

    struct Running {
        spool: Arc<Spool>,
        tx: mpsc::Sender<LogRecord>,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    fn start(linger: Duration, max_batch: usize, sync_interval: Duration) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), SpoolOptions::default()).unwrap());
        let (tx, rx) = mpsc::channel(64);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(
            Writer {
                spool: Arc::clone(&spool),
                rx,
                node_id: "writer-node".into(),
                sync_interval,
                max_batch,
                linger,
                stop: stop_rx,
            }
            .run(),
        );
        Running {
            spool,
            tx,
            stop,
            task,
            _dir: dir,
        }
    }

    const LONG: Duration = Duration::from_secs(3600);
    const BOUND: Duration = Duration::from_secs(10);

    /// Until `rx` holds at least `n`, within [`BOUND`].
    async fn reaches(mut rx: tokio::sync::watch::Receiver<u64>, n: u64) {
        tokio::time::timeout(BOUND, rx.wait_for(|&v| v >= n))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn records_arriving_within_the_linger_are_written_as_one_batch() {
        // A linger of an hour: only a full batch can end it.
        let w = start(LONG, 3, LONG);
        let mut written = w.spool.subscribe_written();
        w.tx.send(record("a", "")).await.unwrap();
        // Let the writer take the first record and start lingering.
        tokio::task::yield_now().await;
        w.tx.send(record("b", "")).await.unwrap();
        w.tx.send(record("c", "")).await.unwrap();
        tokio::time::timeout(BOUND, written.changed())
            .await
            .unwrap()
            .unwrap();
        // The first write held all three: one batch, not one per record.
        assert_eq!(*written.borrow_and_update(), 3);
        w.task.abort();
    }

    #[tokio::test]
    async fn the_linger_ends_a_partial_batch() {
        let linger = Duration::from_millis(50);
        let w = start(linger, 100, LONG);
        let sent = Instant::now();
        w.tx.send(record("a", "")).await.unwrap();
        reaches(w.spool.subscribe_written(), 1).await;
        // Written when the linger ran out, not at once.
        assert!(sent.elapsed() >= linger, "{:?}", sent.elapsed());
        w.task.abort();
    }

    #[tokio::test]
    async fn stopping_writes_and_syncs_what_is_queued_and_fills_in_the_node() {
        let w = start(LONG, 100, LONG);
        for (id, node) in [("a", ""), ("b", "own-node"), ("c", "")] {
            w.tx.send(record(id, node)).await.unwrap();
        }
        w.stop.send(()).unwrap();
        tokio::time::timeout(BOUND, w.task).await.unwrap().unwrap();
        // Closed: nothing more is accepted.
        assert!(w.tx.send(record("d", "")).await.is_err());
        let batch = w.spool.read_from(1, 10, 1 << 20).unwrap();
        let got: Vec<(&str, &str, u64)> = batch
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.node_id.as_str(), r.sequence))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "writer-node", 1),
                ("b", "own-node", 2),
                ("c", "writer-node", 3)
            ]
        );
    }

    #[tokio::test]
    async fn a_write_is_synced_within_the_sync_interval() {
        let w = start(Duration::ZERO, 100, Duration::from_millis(20));
        let synced = w.spool.subscribe_synced();
        w.tx.send(record("a", "")).await.unwrap();
        reaches(w.spool.subscribe_written(), 1).await;
        // Nothing else arrives: the sync timer fires on its own.
        reaches(synced, 1).await;
        w.task.abort();
    }
}
