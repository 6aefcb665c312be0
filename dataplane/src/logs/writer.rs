//! The spool writer: drains the [`super::LogSink`] queue into the spool.
//! Whatever is queued when it wakes, plus what arrives within a short
//! linger, is written as one batch (one `write`), so batches grow with load.
//! A batch holding a record that a response waits for ([`super::Spooled`])
//! skips the linger: the writer only lets the runtime finish the round of
//! tasks that are ready now (one `yield_now`), so that the records of every
//! response ending in that round go in the same write (a group commit), and
//! what queues while a write is under way goes in the next one. Once a
//! batch's `write` returned (or failed, counted), the waits of its records
//! are released, all by the writer task on the runtime (one cross-thread
//! wake-up per batch, not one per record).
//!
//! The file I/O runs on a thread of its own ([`SpoolIo`], `llmgw-spool`),
//! one job at a time: the async runtime never waits on the disk, and a
//! batch costs one hand-off there and back, without the blocking pool's
//! task allocation and shared queue. The hand-off is tokio's channel, whose
//! wake-up of a parked thread holds no lock while it wakes: with
//! `std::sync::mpsc`, whose sender wakes the receiver inside a lock, the
//! woken spool thread preempted the runtime's thread while it held that
//! lock and went straight back to sleep on it, doubling the context
//! switches per batch on a data plane with one core.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error};

use super::spool::Spool;
use super::{LogRecord, Queued, WriteClock};

/// The spool's I/O thread: appends and syncs, one job at a time, in the
/// order they are given. It ends when this handle is dropped, once the jobs
/// already queued are done.
pub(crate) struct SpoolIo {
    jobs: mpsc::UnboundedSender<Job>,
}

enum Job {
    Append(Vec<LogRecord>, oneshot::Sender<io::Result<Option<u64>>>),
    Sync(oneshot::Sender<io::Result<()>>),
}

impl SpoolIo {
    pub fn start(spool: Arc<Spool>) -> io::Result<SpoolIo> {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("llmgw-spool".into())
            .spawn(move || {
                // A reply nobody waits for any more (the writer was
                // aborted) is dropped: the job was done all the same.
                // Outside any runtime, so blocking here is allowed.
                while let Some(job) = rx.blocking_recv() {
                    match job {
                        Job::Append(records, done) => {
                            let _ = done.send(spool.append(records));
                        }
                        Job::Sync(done) => {
                            let _ = done.send(spool.sync());
                        }
                    }
                }
            })?;
        Ok(SpoolIo { jobs })
    }

    async fn append(&self, records: Vec<LogRecord>) -> io::Result<Option<u64>> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Append(records, tx))
            .map_err(|_| io::Error::other("the spool's I/O thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("the spool's I/O thread is gone"))?
    }

    async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Sync(tx))
            .map_err(|_| io::Error::other("the spool's I/O thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("the spool's I/O thread is gone"))?
    }
}

pub(crate) struct Writer {
    pub io: SpoolIo,
    pub rx: mpsc::Receiver<Queued>,
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
    /// When the write under way began, for those deciding whether to wait.
    pub writing: Arc<WriteClock>,
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
            let waited_for = batch.iter().any(|q| q.spooled.is_some());
            if waited_for && !stopping && batch.len() < max_batch {
                // A response waits: write in a moment, once the runtime has
                // run the tasks that are ready now (tokio wakes a yielded
                // task after them and its I/O driver), so that the records
                // of every response they end share this write. Idle, that
                // is at once; busy, it turns one write per response into
                // one per round of the run queue.
                tokio::task::yield_now().await;
                while batch.len() < max_batch {
                    match self.rx.try_recv() {
                        Ok(q) => batch.push(q),
                        Err(_) => break,
                    }
                }
            } else if !stopping && !waited_for && !self.linger.is_zero() && batch.len() < max_batch
            {
                // Under load, a batch per request would cost an I/O-thread
                // hand-off, a write, a spool read, a gRPC message and an
                // acknowledgement (a file rename) each: gather for a moment.
                // One timer for the whole linger: a timer registered anew
                // for each record that arrives makes tokio wake its driver
                // (an `eventfd` write) once per request.
                let linger = tokio::time::sleep(self.linger);
                tokio::pin!(linger);
                while batch.len() < max_batch {
                    let room = max_batch - batch.len();
                    let before = batch.len();
                    tokio::select! {
                        biased;
                        n = self.rx.recv_many(&mut batch, room) => if n == 0 { break },
                        () = &mut linger => break,
                    }
                    // Someone waits for a record that just came: write now.
                    if batch[before..].iter().any(|q| q.spooled.is_some()) {
                        break;
                    }
                }
            }
            let n = batch.len();
            let mut records = Vec::with_capacity(n);
            let mut waiting = Vec::new();
            for Queued {
                mut record,
                spooled,
            } in batch.drain(..)
            {
                if record.fields.node_id.is_empty() {
                    record.fields.node_id.clone_from(&self.node_id);
                }
                records.push(record);
                waiting.extend(spooled);
            }
            self.writing.begin();
            let written = self.io.append(records).await;
            self.writing.end();
            // Written, or given up and counted: either way nobody waits on.
            drop(waiting);
            match written {
                Ok(last) => {
                    debug!(records = n, last_sequence = last, "request logs spooled");
                    dirty = true;
                }
                Err(e) => {
                    // The spool counted and logged the lost records; keep
                    // going, the next batch opens a fresh segment.
                    failures += 1;
                    if failures.is_power_of_two() {
                        error!(error = %e, failures, "request-log spool write failed");
                    }
                }
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
        // A sync holds up the next write: a stalled one is a stall too.
        self.writing.begin();
        let synced = self.io.sync().await;
        self.writing.end();
        if let Err(e) = synced {
            error!(error = %e, "cannot sync the request-log spool");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::spool::SpoolOptions;
    use llmgw_proto::v1 as pb;

    fn record(id: &str, node_id: &str) -> Queued {
        Queued {
            record: pb::RequestLog {
                id: id.into(),
                node_id: node_id.into(),
                ..Default::default()
            }
            .into(),
            spooled: None,
        }
    }

    /// A record someone waits for, and its wait.
    fn waited(id: &str) -> (Queued, super::super::Spooled) {
        let (tx, rx) = oneshot::channel();
        let mut q = record(id, "");
        q.spooled = Some(tx);
        (q, super::super::Spooled(Some(rx)))
    }

    struct Running {
        spool: Arc<Spool>,
        tx: mpsc::Sender<Queued>,
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
                io: SpoolIo::start(Arc::clone(&spool)).unwrap(),
                rx,
                node_id: "writer-node".into(),
                sync_interval,
                max_batch,
                linger,
                stop: stop_rx,
                writing: Arc::default(),
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
    async fn a_waited_for_record_is_written_without_the_linger_and_its_wait_ends_after_the_write() {
        // A linger of an hour: only a waiter can cut it short.
        let w = start(LONG, 100, LONG);
        let written = w.spool.subscribe_written();
        w.tx.send(record("a", "")).await.unwrap();
        tokio::task::yield_now().await;
        let (q, spooled) = waited("b");
        w.tx.send(q).await.unwrap();
        tokio::time::timeout(BOUND, spooled).await.unwrap();
        // Resolved only once both records were in the spool, in order.
        assert_eq!(*written.borrow(), 2);
        let batch = w.spool.read_from(1, 10, 1 << 20).unwrap();
        let ids: Vec<&str> = batch.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        w.task.abort();
    }

    #[tokio::test]
    async fn waits_ending_in_the_same_round_share_one_write() {
        let w = start(LONG, 100, LONG);
        let written = w.spool.subscribe_written();
        // One response's record wakes the writer; 31 more responses end in
        // the round of tasks that runs before the writer does again.
        let (q, first) = waited("r0");
        w.tx.send(q).await.unwrap();
        let others: Vec<_> = (1..32)
            .map(|i| {
                let tx = w.tx.clone();
                tokio::spawn(async move {
                    let (q, spooled) = waited(&format!("r{i}"));
                    tx.send(q).await.unwrap();
                    spooled.await;
                })
            })
            .collect();
        tokio::time::timeout(BOUND, first).await.unwrap();
        // Released only after a write that held all 32: with only the
        // last write kept in memory, it starts at the first sequence.
        assert_eq!(*written.borrow(), 32);
        w.spool.keep_newest_writes(1);
        let last_write = w.spool.read_raw_in_memory(1, 100, 1 << 20).unwrap();
        assert_eq!(last_write.records.len(), 32);
        for t in others {
            tokio::time::timeout(BOUND, t).await.unwrap().unwrap();
        }
        w.task.abort();
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_pipeline_is_gone() {
        let w = start(LONG, 100, LONG);
        let (q, spooled) = waited("a");
        // The writer stops: what is queued is still written, then released.
        w.tx.send(q).await.unwrap();
        w.stop.send(()).unwrap();
        tokio::time::timeout(BOUND, spooled).await.unwrap();
        assert_eq!(*w.spool.subscribe_written().borrow(), 1);
        // A wait for a record the queue refused ends at once.
        let (q, spooled) = waited("b");
        drop(q);
        tokio::time::timeout(BOUND, spooled).await.unwrap();
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
    async fn the_io_thread_does_the_queued_jobs_and_ends_with_its_handle() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), SpoolOptions::default()).unwrap());
        let io = SpoolIo::start(Arc::clone(&spool)).unwrap();
        let written = io.append(vec![record("a", "n").record]).await.unwrap();
        assert_eq!(written, Some(1));
        io.sync().await.unwrap();
        assert_eq!(*spool.subscribe_synced().borrow(), 1);
        // A job queued just before the handle goes is still done.
        let (done, reply) = oneshot::channel();
        io.jobs
            .send(Job::Append(vec![record("b", "n").record], done))
            .unwrap();
        drop(io);
        let written = tokio::time::timeout(BOUND, reply).await.unwrap().unwrap();
        assert_eq!(written.unwrap(), Some(2));
        // The thread lets go of its spool when it ends.
        tokio::time::timeout(BOUND, async {
            while Arc::strong_count(&spool) > 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
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
