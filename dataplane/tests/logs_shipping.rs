//! Runs the request-log pipeline (sink → spool → shipper) against a
//! scripted mock control plane: a tonic `Logs` server that records every
//! batch and acknowledges it, unless told to hold its acks, quarantine
//! some ids, or drop its streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmgw_dataplane::logs::{self as pipeline, LogSink, LogsConfig, LogsHandle, LossReason};
use llmgw_proto::v1::logs_server::{Logs, LogsServer};
use llmgw_proto::v1::{LogAck, LogBatch, RequestLog};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(15);
const TOKEN: &str = "dp-token-right";

#[derive(Debug)]
enum Event {
    Opened,
    Batch { records: usize, last_sequence: u64 },
    Closed,
}

struct MockState {
    /// Every record received, in arrival order, streams after each other.
    received: Mutex<Vec<RequestLog>>,
    /// Ids to report as quarantined.
    quarantine: Mutex<HashSet<String>>,
    events: mpsc::UnboundedSender<Event>,
    acking: watch::Sender<bool>,
    /// Bumped to make every open stream fail.
    kick: watch::Sender<u64>,
}

#[derive(Clone)]
struct MockService(Arc<MockState>);

#[tonic::async_trait]
impl Logs for MockService {
    type ShipStream = UnboundedReceiverStream<Result<LogAck, Status>>;

    async fn ship(
        &self,
        request: Request<Streaming<LogBatch>>,
    ) -> Result<Response<Self::ShipStream>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if auth != format!("Bearer {TOKEN}") {
            return Err(Status::unauthenticated("bad data-plane token"));
        }
        let state = Arc::clone(&self.0);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut acking = state.acking.subscribe();
        let mut kick = state.kick.subscribe();
        kick.mark_unchanged();
        let _ = state.events.send(Event::Opened);
        tokio::spawn(async move {
            // Held back while not acking: (highest sequence, quarantined ids).
            let mut pending: Option<(u64, Vec<String>)> = None;
            loop {
                tokio::select! {
                    biased;
                    _ = kick.changed() => {
                        let _ = tx.send(Err(Status::unavailable("dropped by the test")));
                        break;
                    }
                    _ = acking.changed() => {
                        if *acking.borrow_and_update() {
                            if let Some((seq, ids)) = pending.take() {
                                let _ = tx.send(Ok(LogAck { acked_sequence: seq, quarantined_ids: ids }));
                            }
                        }
                    }
                    m = inbound.message() => {
                        let Ok(Some(batch)) = m else { break };
                        let quarantined: Vec<String> = {
                            let q = state.quarantine.lock().unwrap();
                            batch.records.iter().filter(|r| q.contains(&r.id)).map(|r| r.id.clone()).collect()
                        };
                        state.received.lock().unwrap().extend(batch.records.iter().cloned());
                        if *acking.borrow_and_update() {
                            let _ = tx.send(Ok(LogAck {
                                acked_sequence: batch.last_sequence,
                                quarantined_ids: quarantined,
                            }));
                        } else {
                            let p = pending.get_or_insert((0, Vec::new()));
                            p.0 = batch.last_sequence;
                            p.1.extend(quarantined);
                        }
                        let _ = state.events.send(Event::Batch {
                            records: batch.records.len(),
                            last_sequence: batch.last_sequence,
                        });
                    }
                }
            }
            let _ = state.events.send(Event::Closed);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct Mock {
    addr: SocketAddr,
    state: Arc<MockState>,
    events: mpsc::UnboundedReceiver<Event>,
    server: JoinHandle<()>,
}

impl Mock {
    async fn start() -> Mock {
        Mock::serve(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// The mock on a port kept by [`reserved_port`].
    fn start_on(socket: tokio::net::TcpSocket) -> Mock {
        Mock::serve(socket.listen(1024).unwrap())
    }

    fn serve(listener: TcpListener) -> Mock {
        let addr = listener.local_addr().unwrap();
        let (events_tx, events) = mpsc::unbounded_channel();
        let state = Arc::new(MockState {
            received: Mutex::default(),
            quarantine: Mutex::default(),
            events: events_tx,
            acking: watch::Sender::new(true),
            kick: watch::Sender::new(0),
        });
        let service = MockService(Arc::clone(&state));
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(LogsServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Mock {
            addr,
            state,
            events,
            server,
        }
    }

    fn set_acking(&self, on: bool) {
        self.state.acking.send_replace(on);
    }

    fn quarantine(&self, ids: &[&str]) {
        let mut q = self.state.quarantine.lock().unwrap();
        q.extend(ids.iter().map(|s| s.to_string()));
    }

    /// Fails every open stream.
    fn drop_streams(&self) {
        self.state.kick.send_modify(|k| *k += 1);
    }

    fn received(&self) -> Vec<RequestLog> {
        self.state.received.lock().unwrap().clone()
    }

    fn received_ids(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.id).collect()
    }

    async fn next_event(&mut self) -> Event {
        timeout(WAIT, self.events.recv())
            .await
            .expect("no event from the mock in time")
            .unwrap()
    }

    /// Waits until at least `n` records have been received in total.
    async fn wait_received(&mut self, n: usize) {
        while self.state.received.lock().unwrap().len() < n {
            self.next_event().await;
        }
    }

    /// The next batch received: (records, last sequence).
    async fn next_batch(&mut self) -> (usize, u64) {
        loop {
            if let Event::Batch {
                records,
                last_sequence,
            } = self.next_event().await
            {
                return (records, last_sequence);
            }
        }
    }

    async fn wait_closed(&mut self) {
        while !matches!(self.next_event().await, Event::Closed) {}
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A port nothing listens on (until a mock is started on it).
/// A port for a control plane that is down now and comes up later: bound
/// but not listening, so connections to it are refused and no other test
/// can take it meanwhile ([`Mock::start_on`] listens on it).
fn reserved_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

fn config(dir: &Path, port: u16) -> LogsConfig {
    let url = format!("http://127.0.0.1:{port}").parse().unwrap();
    let mut c = LogsConfig::new("dp-test", vec![url], SecretString::from(TOKEN));
    c.spool_dir = dir.to_path_buf();
    c.segment_bytes = 4096;
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(2);
    c
}

fn rec(i: u64) -> RequestLog {
    RequestLog {
        id: format!("req-{i:05}"),
        time_ms: 1_700_000_000_000 + i as i64,
        model: "gpt".into(),
        status: 200,
        request_body: "x".repeat(64),
        ..Default::default()
    }
}

fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|i| rec(i).id).collect()
}

async fn start(cfg: LogsConfig) -> (LogSink, LogsHandle) {
    let (sink, rx) = LogSink::new(4096);
    let handle = pipeline::spawn(cfg, rx).await.unwrap();
    (sink, handle)
}

async fn wait_acked(handle: &LogsHandle, seq: u64) {
    let mut acked = handle.subscribe_acked();
    timeout(WAIT, acked.wait_for(|a| *a >= seq))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "sequence {seq} not acknowledged in time: {:?}",
                handle.stats()
            )
        })
        .unwrap();
}

async fn wait_written(handle: &LogsHandle, seq: u64) {
    let mut written = handle.subscribe_written();
    timeout(WAIT, written.wait_for(|w| *w >= seq))
        .await
        .unwrap_or_else(|_| panic!("sequence {seq} not written in time: {:?}", handle.stats()))
        .unwrap();
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Named so that `cargo test logs` selects them.
mod logs {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_arrive_once_in_order_and_acked_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;

        for i in 1..=1200 {
            sink.send(rec(i));
        }
        assert_eq!(sink.dropped(), 0);
        wait_acked(&handle, 1200).await;

        let got = mock.received();
        assert_eq!(
            got.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            ids(1..=1200)
        );
        let seqs: Vec<u64> = got.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, (1..=1200).collect::<Vec<_>>());
        assert!(got.iter().all(|r| r.node_id == "dp-test"));

        // Batches respect the record limit.
        let mut batches = 0;
        let mut last = 0;
        while let Ok(e) = mock.events.try_recv() {
            if let Event::Batch {
                records,
                last_sequence,
            } = e
            {
                assert!((1..=500).contains(&records), "{records}");
                assert_eq!(last_sequence, last + records as u64);
                last = last_sequence;
                batches += 1;
            }
        }
        assert!(batches >= 3, "{batches}");

        assert_eq!(handle.shipped(), 1200);
        assert_eq!(handle.spool_depth(), 0);
        assert_eq!(handle.dropped_full(), 0);
        assert!(
            segment_files(dir.path()).is_empty(),
            "{:?}",
            segment_files(dir.path())
        );
        let report = handle.flush(WAIT).await;
        assert_eq!(report.unacked, 0);
        assert!(!report.timed_out);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn light_load_ships_each_record_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;
        for i in 1..=5 {
            sink.send(rec(i));
            // No waiting for more records than come: each one goes within
            // the linger.
            mock.wait_received(i as usize).await;
            wait_acked(&handle, i).await;
        }
        assert_eq!(mock.received_ids(), ids(1..=5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_too_few_for_a_batch_wait_and_a_full_batch_goes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let mut cfg = config(dir.path(), mock.addr.port());
        cfg.batch_max_records = 10;
        // Far longer than the test: only a full batch can go.
        cfg.ship_linger = Duration::from_secs(3600);
        let (sink, handle) = start(cfg).await;

        // Written one by one: held, not sent a write at a time.
        for i in 1..=9 {
            sink.send(rec(i));
            wait_written(&handle, i).await;
        }
        sink.send(rec(10));
        assert_eq!(mock.next_batch().await, (10, 10));
        wait_acked(&handle, 10).await;
        assert_eq!(mock.received_ids(), ids(1..=10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_that_fill_a_batch_by_bytes_go_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let mut cfg = config(dir.path(), mock.addr.port());
        cfg.segment_bytes = 1 << 20;
        cfg.ship_linger = Duration::from_secs(3600);
        // A frame: its 8-byte header and the record, as the spool holds it
        // (with its sequence). Three fit in the bound, four do not.
        let frame = {
            let mut r = rec(1);
            r.sequence = 1;
            8 + prost::Message::encoded_len(&r)
        };
        cfg.batch_max_bytes = 3 * frame + frame / 2;
        let (sink, handle) = start(cfg).await;

        for i in 1..=3 {
            sink.send(rec(i));
            wait_written(&handle, i).await;
        }
        sink.send(rec(4));
        // Four fill the bound: a batch goes at once, of the three that fit.
        assert_eq!(mock.next_batch().await, (3, 3));
        wait_acked(&handle, 3).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_too_few_for_a_batch_go_after_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;

        mock.set_acking(false);
        for i in 1..=5 {
            sink.send(rec(i));
        }
        // Never a full batch, and never acknowledged: sent all the same.
        mock.wait_received(5).await;
        assert_eq!(mock.received_ids(), ids(1..=5));
        assert_eq!(handle.acked(), 0);
        mock.set_acking(true);
        wait_acked(&handle, 5).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_trickle_does_not_put_the_linger_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let mut cfg = config(dir.path(), mock.addr.port());
        cfg.segment_bytes = 1 << 20;
        cfg.batch_max_records = 100_000;
        cfg.ship_linger = Duration::from_millis(300);
        let (sink, _handle) = start(cfg).await;

        // A record every 20 ms, far more often than the linger: were it
        // restarted by each record, nothing would go until the last one.
        let mut sent = 0u64;
        loop {
            sent += 1;
            assert!(
                sent <= 500,
                "no batch after {sent} records 20 ms apart: the linger never ended"
            );
            sink.send(rec(sent));
            match timeout(Duration::from_millis(20), mock.events.recv()).await {
                // The first batch: the linger ended while records came.
                Ok(Some(Event::Batch { .. })) => break,
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => panic!("the mock ended"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_sends_held_records_without_sitting_out_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let mock = Mock::start().await;
        let mut cfg = config(dir.path(), mock.addr.port());
        // Longer than the flush's bound: only the shutdown's signal sends them.
        cfg.ship_linger = Duration::from_secs(3600);
        let (sink, handle) = start(cfg).await;
        for i in 1..=3 {
            sink.send(rec(i));
        }
        wait_written(&handle, 3).await;
        let report = handle.flush(WAIT).await;
        assert!(!report.timed_out, "{report:?}");
        assert_eq!((report.written, report.acked, report.unacked), (3, 3, 0));
        assert_eq!(mock.received_ids(), ids(1..=3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_linger_each_write_goes_as_it_comes() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let mut cfg = config(dir.path(), mock.addr.port());
        cfg.ship_linger = Duration::ZERO;
        let (sink, handle) = start(cfg).await;

        for i in 1..=3 {
            sink.send(rec(i));
            assert_eq!(mock.next_batch().await, (1, i));
        }
        wait_acked(&handle, 3).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_wait_in_the_spool_while_the_control_plane_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let (reserved, port) = reserved_port();
        let (sink, handle) = start(config(dir.path(), port)).await;

        for i in 1..=300 {
            sink.send(rec(i));
        }
        wait_written(&handle, 300).await;
        assert_eq!(handle.spool_depth(), 300);
        assert_eq!(handle.shipped(), 0);
        assert!(!segment_files(dir.path()).is_empty());

        let mock = Mock::start_on(reserved);
        wait_acked(&handle, 300).await;
        assert_eq!(mock.received_ids(), ids(1..=300));
        assert_eq!(handle.spool_depth(), 0);
        assert!(segment_files(dir.path()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_stream_resends_only_what_was_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;

        for i in 1..=10 {
            sink.send(rec(i));
        }
        wait_acked(&handle, 10).await;

        mock.set_acking(false);
        for i in 11..=20 {
            sink.send(rec(i));
        }
        mock.wait_received(20).await;
        assert_eq!(handle.acked(), 10);

        mock.drop_streams();
        mock.wait_closed().await;
        mock.set_acking(true);
        wait_acked(&handle, 20).await;

        let got = mock.received_ids();
        assert_eq!(got[..20], ids(1..=20)[..]);
        // After the reconnect: exactly the unacknowledged ones, in order.
        assert_eq!(got[20..], ids(11..=20)[..]);
        assert_eq!(handle.shipped(), 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_stream_drops_under_load_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        let mut cfg = config(dir.path(), mock.addr.port());
        cfg.batch_max_records = 50;
        cfg.window = 4;
        let (sink, handle) = start(cfg).await;

        let mut sent = 0u64;
        for round in 0..5 {
            for _ in 0..400 {
                sent += 1;
                sink.send(rec(sent));
            }
            // Let some batches through, then cut the stream mid-flight.
            mock.wait_received(200 * (round + 1)).await;
            mock.drop_streams();
        }
        wait_acked(&handle, sent).await;

        let got = mock.received();
        // At least once, in order within each stream...
        let distinct: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(distinct.len() as u64, sent);
        // ...and every resend starts after an acknowledged prefix: sequences
        // never go back by more than what was unacknowledged, and each record
        // keeps its sequence.
        assert!(got.iter().all(|r| r.id == rec(r.sequence).id));
        assert_eq!(handle.spool_depth(), 0);
        assert_eq!(sink.dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_resends_every_unacknowledged_record_and_no_acknowledged_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;

        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;
        for i in 1..=10 {
            sink.send(rec(i));
        }
        wait_acked(&handle, 10).await;
        mock.set_acking(false);
        for i in 11..=25 {
            sink.send(rec(i));
        }
        mock.wait_received(25).await;
        // A crash: no flush, tasks gone.
        drop(handle);
        drop(sink);
        mock.wait_closed().await;
        mock.set_acking(true);

        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;
        assert_eq!(handle.acked(), 10);
        assert_eq!(handle.last_written(), 25);
        wait_acked(&handle, 25).await;
        let got = mock.received_ids();
        assert_eq!(got[25..], ids(11..=25)[..]);

        // New records continue the sequence.
        sink.send(rec(26));
        wait_acked(&handle, 26).await;
        let last = mock.received().pop().unwrap();
        assert_eq!((last.id.as_str(), last.sequence), ("req-00026", 26));
        assert_eq!(mock.received().len(), 25 + 15 + 1);
        let report = handle.flush(WAIT).await;
        assert_eq!(report.unacked, 0);
        assert!(segment_files(dir.path()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_final_frame_is_skipped_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let (reserved, port) = reserved_port();

        let (sink, handle) = start(config(dir.path(), port)).await;
        for i in 1..=5 {
            sink.send(rec(i));
        }
        wait_written(&handle, 5).await;
        drop(handle);
        drop(sink);

        // The crash tore the last frame.
        let last = segment_files(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&last).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(len - 3)
            .unwrap();

        let mock = Mock::start_on(reserved);
        let (sink, handle) = start(config(dir.path(), port)).await;
        assert_eq!(handle.last_written(), 4);
        assert_eq!(handle.stats().spool.corrupt, 1);
        wait_acked(&handle, 4).await;
        assert_eq!(mock.received_ids(), ids(1..=4));

        // The torn record's sequence was never acknowledged; it is reused.
        sink.send(rec(6));
        wait_acked(&handle, 5).await;
        assert_eq!(mock.received().last().map(|r| r.sequence), Some(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_size_bound_drops_the_oldest_segment_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (reserved, port) = reserved_port();
        let mut cfg = config(dir.path(), port);
        cfg.max_bytes = 16 * 1024;
        cfg.segment_bytes = 4 * 1024;
        let (sink, handle) = start(cfg).await;

        for i in 1..=400 {
            sink.send(rec(i));
        }
        wait_written(&handle, 400).await;
        let stats = handle.stats().spool;
        assert!(stats.bytes <= 16 * 1024, "{stats:?}");
        assert!(handle.dropped_full() > 0, "{stats:?}");
        assert!(stats.dropped_segments > 0, "{stats:?}");
        assert_eq!(handle.spool_depth() + handle.dropped_full(), 400);
        // Counted once, under its reason, and nothing else lost.
        let losses = handle.losses();
        assert_eq!(losses.count(LossReason::SpoolFull), handle.dropped_full());
        assert_eq!(losses.total(), handle.dropped_full());
        assert_eq!(handle.stats_reader().dropped_full(), losses.total());
        let kept = handle.spool_depth();

        let mock = Mock::start_on(reserved);
        wait_acked(&handle, 400).await;
        let got = mock.received();
        assert_eq!(got.len() as u64, kept);
        // The newest survive, in order, each once.
        let first = 400 - kept + 1;
        assert_eq!(
            got.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            ids(first..=400)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quarantined_ids_are_counted_and_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mock = Mock::start().await;
        mock.quarantine(&["req-00003", "req-00007"]);
        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;
        for i in 1..=10 {
            sink.send(rec(i));
        }
        wait_acked(&handle, 10).await;
        assert_eq!(handle.quarantined(), 2);
        assert_eq!(handle.shipped(), 10);
        assert_eq!(mock.received_ids(), ids(1..=10));
        assert_eq!(handle.spool_depth(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_writes_the_queue_and_waits_for_acks() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        mock.set_acking(false);
        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;
        for i in 1..=20 {
            sink.send(rec(i));
        }
        // Straight to flush: what is still queued gets written first.
        let mut flush = tokio::spawn(handle.flush(WAIT));
        mock.wait_received(20).await;
        // Nothing is acknowledged yet, so flush cannot be done.
        assert!(timeout(Duration::from_millis(100), &mut flush)
            .await
            .is_err());
        // It stopped accepting.
        timeout(WAIT, sink.closed()).await.unwrap();
        sink.send(rec(99));
        assert_eq!(sink.dropped(), 1);
        assert_eq!(sink.losses().count(LossReason::Shutdown), 1);
        assert_eq!(sink.losses().total(), 1);

        mock.set_acking(true);
        let report = timeout(WAIT, flush).await.unwrap().unwrap();
        assert_eq!(report.written, 20);
        assert_eq!(report.acked, 20);
        assert_eq!(report.unacked, 0);
        assert!(!report.timed_out);
        assert_eq!(mock.received_ids(), ids(1..=20));
        assert!(segment_files(dir.path()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_gives_up_at_its_timeout_and_the_next_start_resends() {
        let dir = tempfile::tempdir().unwrap();
        let mut mock = Mock::start().await;
        mock.set_acking(false);
        let (sink, handle) = start(config(dir.path(), mock.addr.port())).await;
        for i in 1..=5 {
            sink.send(rec(i));
        }
        mock.wait_received(5).await;
        let report = handle.flush(Duration::from_millis(300)).await;
        assert!(report.timed_out);
        assert_eq!((report.written, report.acked, report.unacked), (5, 0, 5));
        drop(sink);
        mock.wait_closed().await;

        mock.set_acking(true);
        let (_sink, handle) = start(config(dir.path(), mock.addr.port())).await;
        wait_acked(&handle, 5).await;
        assert_eq!(mock.received_ids()[5..], ids(1..=5)[..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawn_refuses_bad_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (_sink, rx) = LogSink::new(8);
        let mut cfg = config(dir.path(), 1);
        cfg.control_planes.clear();
        let e = pipeline::spawn(cfg, rx).await.unwrap_err();
        assert!(e.to_string().contains("no control-plane URL"), "{e}");

        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let (_sink, rx) = LogSink::new(8);
        let e = pipeline::spawn(config(&file.join("spool"), 1), rx)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("spool"), "{e:#}");
    }

    #[test]
    fn default_spool_dir_keeps_the_node_id_inside() {
        assert_eq!(
            pipeline::default_spool_dir("dp-1"),
            Path::new("./data/spool/dp-1")
        );
        assert_eq!(
            pipeline::default_spool_dir("../etc"),
            Path::new("./data/spool/.._etc")
        );
        assert_eq!(
            pipeline::default_spool_dir(".."),
            Path::new("./data/spool/_..")
        );
        assert_eq!(pipeline::default_spool_dir(""), Path::new("./data/spool/_"));
    }
}
