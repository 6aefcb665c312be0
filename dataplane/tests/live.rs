//! The live stream (#17) of the real data plane, in-process, against a
//! scripted control plane (tonic `Discovery` and `Live` servers whose every
//! report the test reads and whose every command the test writes) and the
//! mock upstream: the first report is the full set, a stream is reported
//! with its attempt and target and ends with an `ended`; a cancel of an
//! unknown id is answered not found; a cancel ends a stream with an error
//! event and a request waiting for its first byte with a 499 in its
//! client's protocol (Gemini `CANCELLED`); a stream opened again resends
//! every request in flight. A grant (replay, playground) is acknowledged
//! at once, authenticates one request as its key and no second one, and
//! a grant for a key the snapshot lacks is refused as an invalid key; the
//! first report says which port the proxy listens on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use llmgw_dataplane::{start, Config, Running};
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use llmgw_proto::v1::live_server::{Live, LiveServer};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "dp-token";
const SECRET: &str = "sk-llmgw-live";

type Sender<T> = mpsc::UnboundedSender<Result<T, Status>>;

#[derive(Clone)]
struct Cp {
    snapshots: mpsc::UnboundedSender<Sender<pb::Snapshot>>,
    commands: mpsc::UnboundedSender<Sender<pb::LiveCommand>>,
    reports: mpsc::UnboundedSender<pb::LiveReport>,
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
        let _ = self.snapshots.send(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Live for Cp {
    type StreamStream = UnboundedReceiverStream<Result<pb::LiveCommand, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::LiveReport>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let auth = request.metadata().get("authorization").cloned();
        if auth.as_ref().and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("bad token"));
        }
        let mut inbound = request.into_inner();
        let reports = self.reports.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                if reports.send(r).is_err() {
                    break;
                }
            }
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.commands.send(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct Harness {
    dp: Running,
    commands_rx: mpsc::UnboundedReceiver<Sender<pb::LiveCommand>>,
    commands: Sender<pb::LiveCommand>,
    reports: mpsc::UnboundedReceiver<pb::LiveReport>,
    _mock: llmgw_mock::MockServer,
    _snapshots: Sender<pb::Snapshot>,
}

impl Harness {
    async fn start() -> Harness {
        let mock = llmgw_mock::start(llmgw_mock::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (snapshots_tx, mut snapshots) = mpsc::unbounded_channel();
        let (commands_tx, mut commands_rx) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let cp = Cp {
            snapshots: snapshots_tx,
            commands: commands_tx,
            reports: reports_tx,
        };
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(DiscoveryServer::new(cp.clone()))
                .add_service(LiveServer::new(cp))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let mut c = Config::new(
            vec![format!("http://{addr}").parse().unwrap()],
            SecretString::from(TOKEN),
        );
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.ops_listen = None;
        c.node_id = "dp-live".into();
        c.spool_dir = Some(tempfile::tempdir().unwrap().keep());
        c.backoff_initial = Duration::from_millis(20);
        c.backoff_max = Duration::from_millis(100);
        let dp = start(c).await.unwrap();
        let snapshot_tx = timeout(WAIT, snapshots.recv()).await.unwrap().unwrap();
        snapshot_tx.send(Ok(snapshot(&mock.base_url()))).unwrap();
        timeout(WAIT, dp.wait_for_version(1))
            .await
            .unwrap()
            .unwrap();
        let commands = timeout(WAIT, commands_rx.recv()).await.unwrap().unwrap();
        Harness {
            dp,
            commands_rx,
            commands,
            reports,
            _mock: mock,
            _snapshots: snapshot_tx,
        }
    }

    /// The next report for which `find` gives something.
    async fn report<T>(&mut self, what: &str, find: impl Fn(&pb::LiveReport) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = timeout(left, self.reports.recv())
                .await
                .unwrap_or_else(|_| panic!("no report with {what}"))
                .unwrap();
            if let Some(v) = find(&r) {
                return v;
            }
        }
    }

    fn cancel(&self, id: &str, by: &str) {
        self.commands
            .send(Ok(pb::LiveCommand {
                cancel: Some(pb::CancelInFlight {
                    id: id.into(),
                    by: by.into(),
                }),
                grant: None,
            }))
            .unwrap();
    }

    fn grant(&self, id: &str, token: &str, key: &str) {
        use sha2::Digest;
        self.commands
            .send(Ok(pb::LiveCommand {
                cancel: None,
                grant: Some(pb::Grant {
                    id: id.into(),
                    token_sha256: sha2::Sha256::digest(token.as_bytes()).to_vec(),
                    key: key.into(),
                    origin: "replay".into(),
                    replay_of: "0190-original".into(),
                    ttl_ms: 10_000,
                }),
            }))
            .unwrap();
    }
}

fn snapshot(base_url: &str) -> pb::Snapshot {
    pb::Snapshot {
        version: 1,
        nonce: "n".into(),
        providers: vec![pb::SnapshotProvider {
            name: "mock".into(),
            protocol: "openai".into(),
            base_url: base_url.into(),
            ..Default::default()
        }],
        models: vec![pb::SnapshotModel {
            name: "gpt".into(),
            strategy: "priority".into(),
            targets: vec![pb::SnapshotTarget {
                provider: "mock".into(),
                upstream_model: "gpt-4o".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        keys: vec![pb::SnapshotKey {
            name: "team".into(),
            hash: llmgw_core::keys::hash_hex(SECRET),
            ..Default::default()
        }],
        settings: Some(pb::Settings {
            retry_max_attempts: 1,
            http_timeout_s: 60,
            ..Default::default()
        }),
    }
}

/// A request sent over raw HTTP/1.1; read with [`read_until`] and
/// [`read_to_end`].
async fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

async fn read_until(s: &mut TcpStream, got: &mut String, marker: &str) {
    let mut buf = [0u8; 4096];
    while !got.contains(marker) {
        let n = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the response ended before {marker:?}: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

async fn read_to_end(s: &mut TcpStream, got: &mut String, bound: Duration) {
    let mut rest = Vec::new();
    timeout(bound, s.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("the response did not end within {bound:?}: {got}"))
        .unwrap();
    got.push_str(&String::from_utf8_lossy(&rest));
}

const SLOW_CHAT: &str =
    r#"{"model":"gpt","stream":true,"messages":[{"role":"user","content":"go on"}]}"#;

fn slow_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("authorization", "Bearer sk-llmgw-live"),
        ("x-mock-chunks", "300"),
        ("x-mock-chunk-delay-ms", "30"),
    ]
}

#[tokio::test]
async fn reports_a_stream_and_cancels_it() {
    let mut h = Harness::start().await;
    let first = h.report("the first report", |r| Some(r.clone())).await;
    assert!(first.full, "{first:?}");
    assert!(first.upserts.is_empty());
    assert_eq!(first.node_id, "dp-live");
    assert!(first.incarnation.starts_with("dp-live#"), "{first:?}");

    let mut s = send(
        h.dp.local_addr(),
        "/v1/chat/completions",
        &slow_headers(),
        SLOW_CHAT,
    )
    .await;
    let mut got = String::new();
    read_until(&mut s, &mut got, "\"content\"").await;
    let entry = h
        .report("the stream", |r| {
            r.upserts.iter().find(|e| e.model == "gpt").cloned()
        })
        .await;
    assert_eq!(entry.key, "team");
    assert_eq!(entry.provider, "mock");
    assert_eq!(entry.upstream_model, "gpt-4o");
    assert_eq!(entry.client_protocol, "openai-chat");
    assert_eq!(entry.upstream_protocol, "openai");
    assert_eq!(entry.attempt, 1);
    assert!(entry.stream && entry.started_ms > 0);
    assert_eq!(h.dp.live().len(), 1);
    // Tokens so far come with a later report.
    h.report("tokens", |r| {
        r.upserts
            .iter()
            .any(|e| e.id == entry.id && e.tokens > 0)
            .then_some(())
    })
    .await;

    h.cancel("no-such-request", "x");
    let answer = h
        .report("the unknown id's answer", |r| r.cancelled.first().cloned())
        .await;
    assert_eq!(answer.id, "no-such-request");
    assert!(!answer.found);

    let cancelled = Instant::now();
    h.cancel(&entry.id, "an admin (test)");
    read_to_end(&mut s, &mut got, Duration::from_secs(1)).await;
    assert!(cancelled.elapsed() <= Duration::from_secs(1));
    assert!(!got.contains("[DONE]"), "{got}");
    assert!(
        got.contains("the request was cancelled by an administrator") && !got.contains("(test)"),
        "{got}"
    );
    // The answer, and the end, reported.
    let answer = h
        .report("the cancel's answer", |r| {
            r.cancelled.iter().find(|c| c.id == entry.id).cloned()
        })
        .await;
    assert!(answer.found);
    h.report("the end", |r| r.ended.contains(&entry.id).then_some(()))
        .await;
    assert!(h.dp.live().is_empty());
}

#[tokio::test]
async fn a_request_waiting_for_its_first_byte_gets_a_499_in_its_protocol() {
    let mut h = Harness::start().await;
    let mut s = send(
        h.dp.local_addr(),
        "/v1beta/models/gpt:generateContent",
        &[("x-goog-api-key", SECRET), ("x-mock-latency-ms", "30000")],
        r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
    )
    .await;
    let entry = h
        .report("the waiting request", |r| r.upserts.first().cloned())
        .await;
    assert_eq!(entry.client_protocol, "gemini");
    assert!(!entry.stream);
    let cancelled = Instant::now();
    h.cancel(&entry.id, "an admin (test)");
    let mut got = String::new();
    read_to_end(&mut s, &mut got, Duration::from_secs(1)).await;
    assert!(cancelled.elapsed() <= Duration::from_secs(1));
    assert!(got.starts_with("HTTP/1.1 499"), "{got}");
    assert!(got.contains(r#""status":"CANCELLED""#), "{got}");
    assert!(got.contains("cancelled by an administrator"), "{got}");
    assert!(!got.contains("(test)"), "the client is not told who: {got}");
}

#[tokio::test]
async fn a_new_stream_resends_every_request_in_flight() {
    let mut h = Harness::start().await;
    h.report("the first report", |r| r.full.then_some(())).await;
    let mut s = send(
        h.dp.local_addr(),
        "/v1/chat/completions",
        &slow_headers(),
        SLOW_CHAT,
    )
    .await;
    let mut got = String::new();
    read_until(&mut s, &mut got, "\"content\"").await;
    let entry = h.report("the stream", |r| r.upserts.first().cloned()).await;
    // The control plane ends the stream; the data plane opens another.
    h.commands
        .send(Err(Status::unavailable("going away")))
        .unwrap();
    h.commands = timeout(WAIT, h.commands_rx.recv()).await.unwrap().unwrap();
    let again = h
        .report("the full set again", |r| r.full.then(|| r.clone()))
        .await;
    assert_eq!(again.upserts.len(), 1, "{again:?}");
    assert_eq!(again.upserts[0].id, entry.id);
    // And the cancel works on the new stream.
    h.cancel(&entry.id, "an admin (test)");
    read_to_end(&mut s, &mut got, Duration::from_secs(1)).await;
    assert!(got.contains("cancelled by an administrator"), "{got}");
    assert!(!got.contains("(test)"), "the client is not told who: {got}");
}

/// Status line of a whole answer to a non-streaming chat request.
async fn status_of(addr: SocketAddr, bearer: &str) -> String {
    let auth = format!("Bearer {bearer}");
    let mut s = send(
        addr,
        "/v1/chat/completions",
        &[("authorization", auth.as_str())],
        r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let mut got = String::new();
    read_to_end(&mut s, &mut got, WAIT).await;
    got.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_grant_authenticates_one_request_as_its_key() {
    let mut h = Harness::start().await;
    let first = h.report("the first report", |r| Some(r.clone())).await;
    assert_eq!(first.proxy_port, u32::from(h.dp.local_addr().port()));
    assert!(first.advertise_url.is_empty());

    let token = "llmgw-grant-00112233445566778899aabbccddeeff";
    h.grant("g-1", token, "team");
    let answer = h
        .report("the grant's answer", |r| r.granted.first().cloned())
        .await;
    assert_eq!(answer.id, "g-1");
    assert!(answer.accepted, "{answer:?}");
    assert_eq!(h.dp.live().grants.len(), 1);

    let addr = h.dp.local_addr();
    assert!(status_of(addr, token).await.contains(" 200 "));
    // Single use.
    assert_eq!(h.dp.live().grants.len(), 0);
    assert!(status_of(addr, token).await.contains(" 401 "));

    // A key the snapshot does not have (revoked, deleted) is refused as
    // any unknown key is.
    let other = "llmgw-grant-ffeeddccbbaa99887766554433221100";
    h.grant("g-2", other, "revoked-key");
    h.report("the second grant's answer", |r| {
        r.granted
            .iter()
            .any(|g| g.id == "g-2" && g.accepted)
            .then_some(())
    })
    .await;
    assert!(status_of(addr, other).await.contains(" 401 "));

    // A malformed grant is refused, saying why.
    h.commands
        .send(Ok(pb::LiveCommand {
            cancel: None,
            grant: Some(pb::Grant {
                id: "g-3".into(),
                key: "team".into(),
                ..Default::default()
            }),
        }))
        .unwrap();
    let bad = h
        .report("the bad grant's answer", |r| {
            r.granted.iter().find(|g| g.id == "g-3").cloned()
        })
        .await;
    assert!(!bad.accepted && bad.error.contains("32 bytes"), "{bad:?}");
}
