//! The request-log spool on a full disk, for real: each test mounts a small
//! tmpfs (it needs root, as CI runs; without it the test fails and says
//! so) and unmounts it at the end, even on failure.
//!
//! - `full_disk::the_data_plane_keeps_its_reserve_and_recovers_without_a_restart`
//!   runs the real data plane in-process, with the mock upstream and a
//!   scripted control plane whose log ingest is away, until the spool
//!   reaches its free-space reserve; then another writer fills the disk to
//!   the last byte, the ingest comes back, and the acknowledgements must
//!   still be recorded, the segments trimmed, and new records written and
//!   shipped, with every record either stored once or counted lost by
//!   reason in `/metrics`.
//! - `full_disk::a_spool_without_reserve_counts_write_errors_and_trims_in_place`
//!   drives the spool itself to `ENOSPC` (no reserve), restarts it on the
//!   full disk with an acknowledgement file of the old format, and checks
//!   that the upgrade, the acknowledgement and the trim need no space.
//! - `full_disk::a_spool_without_an_ack_file_on_a_full_disk_makes_room_for_one`
//!   restarts such a spool without any acknowledgement file on a disk full
//!   to the byte: the oldest segment is dropped (and counted) to make room
//!   for it, and acknowledgements trim from then on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmgw_dataplane::logs::spool::{self, Spool, SpoolOptions};
use llmgw_dataplane::logs::{LossReason, Losses};
use llmgw_dataplane::{start, Config, Running};
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use llmgw_proto::v1::logs_server::{Logs, LogsServer};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "dp-token-full-disk";
const CLIENT_KEY: &str = "sk-llmgw-full-disk";

/// A tmpfs of `bytes` mounted on a fresh folder; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let failure = match &out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failure {
            panic!(
                "cannot mount a {bytes}-byte tmpfs on {} ({why}): this test fills a real \
                 filesystem and must run as root (CI does); run it as root or in a container \
                 that allows mount",
                dir.path().display()
            );
        }
        let t = Tmpfs { dir };
        let st = rustix::fs::statvfs(t.path()).unwrap();
        assert_eq!(
            st.f_blocks * st.f_frsize,
            bytes,
            "the tmpfs has another size"
        );
        t
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes still free.
    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(self.path()).unwrap();
        st.f_bavail * st.f_frsize
    }

    /// Another writer takes every free byte: a file written until the
    /// filesystem says `ENOSPC`.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [64 << 10, 4 << 10, 512, 1] {
            let buf = vec![0x5a; chunk];
            loop {
                match file.write(&buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
        }
        assert_eq!(self.free(), 0, "the filler left space");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it open: detach it now, freed when
            // the last file closes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

type SnapshotSender = mpsc::UnboundedSender<Result<pb::Snapshot, Status>>;

/// A scripted control plane: discovery sends one snapshot; log ingest
/// refuses streams while `ingest` is off, and otherwise stores every
/// record and acknowledges every batch.
#[derive(Clone)]
struct Cp {
    snapshot: pb::Snapshot,
    ingest: watch::Sender<bool>,
    received: Arc<Mutex<Vec<pb::RequestLog>>>,
    /// Open discovery streams, kept so they stay open.
    streams: Arc<Mutex<Vec<SnapshotSender>>>,
}

#[tonic::async_trait]
impl Discovery for Cp {
    type StreamSnapshotsStream = UnboundedReceiverStream<Result<pb::Snapshot, Status>>;

    async fn stream_snapshots(
        &self,
        request: Request<Streaming<pb::SnapshotRequest>>,
    ) -> Result<Response<Self::StreamSnapshotsStream>, Status> {
        let mut inbound = request.into_inner();
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Ok(self.snapshot.clone())).unwrap();
        self.streams.lock().unwrap().push(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Logs for Cp {
    type ShipStream = UnboundedReceiverStream<Result<pb::LogAck, Status>>;

    async fn ship(
        &self,
        request: Request<Streaming<pb::LogBatch>>,
    ) -> Result<Response<Self::ShipStream>, Status> {
        if !*self.ingest.borrow() {
            return Err(Status::unavailable("log ingest is away"));
        }
        let mut inbound = request.into_inner();
        let received = Arc::clone(&self.received);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                received.lock().unwrap().extend(batch.records);
                let ack = pb::LogAck {
                    acked_sequence: batch.last_sequence,
                    quarantined_ids: Vec::new(),
                };
                if tx.send(Ok(ack)).is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

impl Cp {
    async fn start(snapshot: pb::Snapshot) -> (Cp, SocketAddr, JoinHandle<()>) {
        let cp = Cp {
            snapshot,
            ingest: watch::Sender::new(false),
            received: Arc::default(),
            streams: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = cp.clone();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(DiscoveryServer::new(service.clone()))
                .add_service(LogsServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (cp, addr, server)
    }

    fn received_ids(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.id.clone())
            .collect()
    }

    fn highest_sequence(&self) -> u64 {
        let received = self.received.lock().unwrap();
        received.iter().map(|r| r.sequence).max().unwrap_or(0)
    }
}

/// One model on the mock upstream; bodies logged, up to 64 KiB.
fn snapshot(upstream: &str) -> pb::Snapshot {
    pb::Snapshot {
        version: 1,
        nonce: "n1".into(),
        providers: vec![pb::SnapshotProvider {
            name: "mock".into(),
            protocol: "openai".into(),
            base_url: upstream.into(),
            api_key: "sk-upstream".into(),
            stream_usage: true,
            ..Default::default()
        }],
        models: vec![pb::SnapshotModel {
            name: "m".into(),
            strategy: "priority".into(),
            targets: vec![pb::SnapshotTarget {
                provider: "mock".into(),
                upstream_model: "m".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        keys: vec![pb::SnapshotKey {
            name: "k".into(),
            hash: llmgw_core::keys::hash_hex(CLIENT_KEY),
            log_bodies: true,
            ..Default::default()
        }],
        settings: Some(pb::Settings {
            retry_max_attempts: 1,
            http_timeout_s: 30,
            log_bodies: true,
            log_body_max_bytes: 65536,
            max_request_body_bytes: 1 << 20,
            ..Default::default()
        }),
    }
}

/// A raw HTTP/1.1 exchange: the status and the body.
async fn http(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut s = timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let req = format!(
        "{head}\r\nhost: localhost\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    timeout(WAIT, s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let status = raw[9..12].parse().unwrap();
    (status, raw.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// One chat request with a `bytes`-long prompt tagged `tag`; every
/// request makes one request log.
async fn chat(addr: SocketAddr, tag: usize, bytes: usize) {
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": format!("{tag} {}", "w".repeat(bytes))}],
    })
    .to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json"
    );
    let (status, body) = http(addr, &head, &body).await;
    assert_eq!(status, 200, "{body}");
}

/// `count` requests, eight at a time.
async fn chats(addr: SocketAddr, tags: std::ops::Range<usize>, bytes: usize) {
    let mut set = tokio::task::JoinSet::new();
    for tag in tags {
        if set.len() >= 8 {
            set.join_next().await.unwrap().unwrap();
        }
        set.spawn(chat(addr, tag, bytes));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// The data plane's Prometheus text. The one place that knows where
/// `/metrics` is served.
async fn scrape(dp: &Running) -> String {
    let ops = dp.ops_addr().expect("the test asks for an ops listener");
    let (status, body) = http(ops, "GET /metrics HTTP/1.1", "").await;
    assert_eq!(status, 200);
    body
}

/// The value of the series `name` (with its labels, if any) in `text`.
fn value(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn lost(text: &str, reason: LossReason) -> u64 {
    value(
        text,
        &format!(
            "llmgw_log_records_lost_total{{reason=\"{}\"}}",
            reason.label()
        ),
    )
}

fn lost_total(text: &str) -> u64 {
    LossReason::ALL.iter().map(|&r| lost(text, r)).sum()
}

/// Polls `/metrics` until `done` holds, within [`WAIT`].
async fn metrics_until(dp: &Running, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(dp).await;
        if done(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached in time\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `done` until it holds, within [`WAIT`].
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

/// Named so that `cargo test full_disk` selects them.
mod full_disk {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_data_plane_keeps_its_reserve_and_recovers_without_a_restart() {
        const DISK: u64 = 4 << 20;
        const RESERVE: u64 = 512 << 10;
        // A record of about 16 KiB.
        const PROMPT: usize = 16_000;
        let disk = Tmpfs::mount(DISK);
        let spool_dir = disk.path().join("spool");
        let upstream = llmgw_mock::start(llmgw_mock::Config::default())
            .await
            .unwrap();
        let (cp, cp_addr, cp_server) = Cp::start(snapshot(&upstream.base_url())).await;

        let mut config = Config::new(
            vec![format!("http://{cp_addr}").parse().unwrap()],
            SecretString::from(TOKEN),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.ops_listen = Some("127.0.0.1:0".parse().unwrap());
        config.node_id = "dp-full-disk".into();
        config.spool_dir = Some(spool_dir.clone());
        // Larger than the disk: the reserve is what binds. Segments of
        // 2 MiB (a quarter of it).
        config.spool_max_bytes = 8 << 20;
        config.spool_min_free_bytes = RESERVE;
        config.backoff_initial = Duration::from_millis(10);
        config.backoff_max = Duration::from_millis(100);
        config.connect_timeout = Duration::from_secs(2);
        let dp = start(config).await.unwrap();
        timeout(WAIT, dp.wait_for_version(1))
            .await
            .unwrap()
            .unwrap();

        // 1. The ingest is away: about 6 MiB of records for a 4 MiB disk.
        let mut sent = 0;
        chats(dp.local_addr(), sent..sent + 400, PROMPT).await;
        sent += 400;
        let text = metrics_until(&dp, "every record spooled or counted", |t| {
            value(t, "llmgw_log_spool_depth") + lost_total(t) == sent as u64
        })
        .await;
        let dropped = lost(&text, LossReason::DiskReserve);
        assert!(dropped > 0, "the reserve was never reached\n{text}");
        assert_eq!(lost_total(&text), dropped, "{text}");
        // The spool kept the reserve (give or take one write).
        assert!(disk.free() + (64 << 10) >= RESERVE, "{} free", disk.free());
        assert!(cp.received_ids().is_empty());

        // 2. Someone else takes the rest of the disk, to the last byte.
        let filler = disk.fill();

        // 3. The ingest returns: the spool ships, records the
        //    acknowledgements in place and trims, on a full disk.
        cp.ingest.send_replace(true);
        let text = metrics_until(&dp, "everything spooled shipped", |t| {
            value(t, "llmgw_log_spool_depth") == 0
        })
        .await;
        until("acknowledged segments trimmed", || {
            segments(&spool_dir) == 0
        })
        .await;
        let acked = cp.highest_sequence();
        until("the acknowledgement recorded on disk", || {
            spool::persisted_ack(&spool_dir) == Some(acked)
        })
        .await;
        assert_eq!(
            cp.received_ids().len() as u64 + lost_total(&text),
            sent as u64,
            "{text}"
        );
        // The trimmed segments' space is back, beyond the reserve.
        assert!(disk.free() > RESERVE, "{} free", disk.free());

        // 4. Without a restart, new records are written and shipped.
        chats(dp.local_addr(), sent..sent + 20, PROMPT).await;
        sent += 20;
        until("new records shipped", || {
            cp.received_ids().len() as u64 + dropped == sent as u64
        })
        .await;

        // 5. Space returns in full: still writing.
        std::fs::remove_file(filler).unwrap();
        chats(dp.local_addr(), sent..sent + 20, PROMPT).await;
        sent += 20;
        until("records after the filler shipped", || {
            cp.received_ids().len() as u64 + dropped == sent as u64
        })
        .await;

        // The shipper's own counts agree: each record that was not lost was
        // acknowledged once, in batches of one or more.
        let text = metrics_until(&dp, "every stored record acknowledged", |t| {
            value(t, "llmgw_log_records_shipped") == sent as u64 - dropped
        })
        .await;
        let batches = value(&text, "llmgw_log_batches_shipped");
        assert!((1..=sent as u64 - dropped).contains(&batches), "{text}");

        // Every record stored once or counted lost, by reason.
        let text = scrape(&dp).await;
        let ids = cp.received_ids();
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "records doubled");
        assert_eq!(ids.len() as u64 + lost_total(&text), sent as u64, "{text}");
        assert_eq!(lost(&text, LossReason::DiskReserve), dropped, "{text}");
        assert_eq!(lost_total(&text), dropped, "{text}");
        assert_eq!(value(&text, "llmgw_log_records_dropped"), dropped, "{text}");
        // The newest records made it: loss is of the oldest.
        let received = cp.received.lock().unwrap().clone();
        let tags: HashSet<usize> = received
            .iter()
            .filter_map(|r| {
                let body = &r.request_body;
                let at = body.find("\"content\":\"")? + 11;
                body[at..].split(' ').next()?.parse().ok()
            })
            .collect();
        assert_eq!(tags.len(), received.len(), "every record tagged once");
        assert!((390..440).all(|t| tags.contains(&t)), "the newest are kept");

        dp.shutdown();
        timeout(WAIT, dp.join()).await.unwrap().unwrap();
        cp_server.abort();
        drop(upstream);
    }

    fn record(i: usize) -> pb::RequestLog {
        pb::RequestLog {
            id: format!("r{i}"),
            model: "m".into(),
            request_body: "x".repeat(16 << 10),
            ..Default::default()
        }
    }

    const NO_RESERVE: SpoolOptions = SpoolOptions {
        max_bytes: 64 << 20,
        segment_bytes: 256 << 10,
        min_free_bytes: 0,
    };

    /// A spool without reserve on `disk`, written to until the disk says
    /// no: the spool, its losses, and the records appended.
    fn spool_until_enospc(disk: &Tmpfs) -> (PathBuf, Spool, Arc<Losses>, u64) {
        let dir = disk.path().join("spool");
        let losses = Arc::new(Losses::default());
        let spool = Spool::open_with_losses(&dir, NO_RESERVE, Arc::clone(&losses)).unwrap();
        let mut appended = 0u64;
        for batch in 0..100 {
            let records: Vec<_> = (0..8).map(|i| record(batch * 8 + i)).collect();
            appended += 8;
            if let Err(e) = spool.append(records) {
                assert_eq!(e.raw_os_error(), Some(28), "{e}");
                let write_errors = losses.count(LossReason::WriteError);
                assert!(write_errors > 0);
                assert_eq!(spool.depth() + write_errors, appended);
                assert_eq!(losses.total(), write_errors);
                return (dir, spool, losses, appended);
            }
        }
        panic!("the disk never filled");
    }

    #[test]
    fn a_spool_without_reserve_counts_write_errors_and_trims_in_place() {
        let disk = Tmpfs::mount(2 << 20);
        let (dir, spool, losses, _) = spool_until_enospc(&disk);
        let write_errors = losses.count(LossReason::WriteError);
        let opts = NO_RESERVE;
        let kept = spool.depth();
        // The failed write was cut off again; another writer takes that
        // room and the rest, so nothing below can allocate.
        let _filler = disk.fill();

        // Restart on the full disk, with the acknowledgement file of the
        // format before preallocation (12 bytes, rewritten in its page).
        drop(spool);
        let ack_path = dir.join(spool::ACK_FILE);
        let mut old = 3u64.to_le_bytes().to_vec();
        old.extend_from_slice(&crc32fast::hash(&3u64.to_le_bytes()).to_le_bytes());
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&ack_path)
                .unwrap();
            f.set_len(old.len() as u64).unwrap();
            f.write_all_at(&old, 0).unwrap();
        }
        assert_eq!(disk.free(), 0);
        let spool = Spool::open_with_losses(&dir, opts, Arc::clone(&losses)).unwrap();
        assert_eq!(spool.acked(), 3);
        assert_eq!(
            std::fs::metadata(&ack_path).unwrap().len(),
            spool::ACK_FILE_BYTES
        );
        assert_eq!(spool::persisted_ack(&dir), Some(3));
        // Everything written is still there (the lost records' sequences
        // were never shipped, and are free again).
        assert_eq!(spool.depth(), kept - 3);
        let last = spool.last_written();
        assert_eq!(last, kept);
        assert!(segments(&dir) > 1);

        // The control plane acknowledges everything: recorded and trimmed
        // on the full disk.
        spool.ack(last).unwrap();
        assert_eq!(spool::persisted_ack(&dir), Some(last));
        assert_eq!(segments(&dir), 0);
        assert!(disk.free() > 1 << 20, "{} free", disk.free());

        // Writing resumes in the same process, sequences going on.
        assert_eq!(spool.append(vec![record(1000)]).unwrap(), Some(last + 1));
        assert_eq!(spool.depth(), 1);
        assert_eq!(losses.total(), write_errors);
    }

    #[test]
    fn a_spool_without_an_ack_file_on_a_full_disk_makes_room_for_one() {
        let disk = Tmpfs::mount(2 << 20);
        let (dir, spool, losses, appended) = spool_until_enospc(&disk);
        let write_errors = losses.count(LossReason::WriteError);
        // As a spool of an earlier version that never had an
        // acknowledgement: no `acked` file, and a disk full to the byte.
        drop(spool);
        std::fs::remove_file(dir.join(spool::ACK_FILE)).unwrap();
        let _filler = disk.fill();
        let spool = Spool::open_with_losses(&dir, NO_RESERVE, Arc::clone(&losses)).unwrap();
        // The oldest segment made room for the file; its records counted.
        assert_eq!(
            std::fs::metadata(dir.join(spool::ACK_FILE)).unwrap().len(),
            spool::ACK_FILE_BYTES
        );
        let dropped = losses.count(LossReason::DiskReserve);
        assert!(dropped > 0);
        assert_eq!(spool.depth() + dropped + write_errors, appended);
        // Acknowledgements are recorded and trim from then on.
        let last = spool.last_written();
        spool.ack(last).unwrap();
        assert_eq!(spool::persisted_ack(&dir), Some(last));
        assert_eq!(segments(&dir), 0);
        assert_eq!(spool.append(vec![record(1000)]).unwrap(), Some(last + 1));
    }
}
