//! Runs the real data plane in-process against a scripted mock control
//! plane: a tonic `Discovery` server that records every request and sends
//! the snapshots each test scripts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use llmgw_dataplane::{start, Config, Running};
use llmgw_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use llmgw_proto::v1::{
    Settings, Snapshot, SnapshotKey, SnapshotModel, SnapshotProvider, SnapshotRequest,
    SnapshotTarget,
};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "dp-token-right";

type SnapshotSender = mpsc::UnboundedSender<Result<Snapshot, Status>>;

#[derive(Clone)]
struct MockService {
    token: String,
    calls: mpsc::UnboundedSender<String>,
    requests: mpsc::UnboundedSender<SnapshotRequest>,
    streams: mpsc::UnboundedSender<SnapshotSender>,
}

#[tonic::async_trait]
impl Discovery for MockService {
    type StreamSnapshotsStream = UnboundedReceiverStream<Result<Snapshot, Status>>;

    async fn stream_snapshots(
        &self,
        request: Request<Streaming<SnapshotRequest>>,
    ) -> Result<Response<Self::StreamSnapshotsStream>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let _ = self.calls.send(auth.clone());
        if auth != format!("Bearer {}", self.token) {
            return Err(Status::unauthenticated("bad data-plane token"));
        }
        let mut inbound = request.into_inner();
        let requests = self.requests.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                if requests.send(r).is_err() {
                    break;
                }
            }
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.streams.send(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// A scripted control plane: each accepted stream shows up on `streams`
/// as a sender for snapshots; every request on any stream on `requests`;
/// the `authorization` value of every call on `calls`.
struct Mock {
    addr: SocketAddr,
    calls: mpsc::UnboundedReceiver<String>,
    requests: mpsc::UnboundedReceiver<SnapshotRequest>,
    streams: mpsc::UnboundedReceiver<SnapshotSender>,
    server: JoinHandle<()>,
}

impl Mock {
    async fn start(port: u16) -> Mock {
        Mock::start_with(port, None).await
    }

    /// `identity` is a (certificate, key) PEM pair for a TLS listener.
    async fn start_with(port: u16, identity: Option<(String, String)>) -> Mock {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let service = MockService {
            token: TOKEN.into(),
            calls: calls_tx,
            requests: requests_tx,
            streams: streams_tx,
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = identity {
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .unwrap();
        }
        let server = tokio::spawn(async move {
            builder
                .add_service(DiscoveryServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Mock {
            addr,
            calls,
            requests,
            streams,
            server,
        }
    }

    /// Stops accepting and closes the listener (open streams live on until
    /// their snapshot senders are dropped).
    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
    }

    async fn next_stream(&mut self) -> SnapshotSender {
        timeout(WAIT, self.streams.recv())
            .await
            .expect("no discovery stream opened in time")
            .unwrap()
    }

    async fn next_request(&mut self) -> SnapshotRequest {
        timeout(WAIT, self.requests.recv())
            .await
            .expect("no SnapshotRequest in time")
            .unwrap()
    }

    async fn next_call(&mut self) -> String {
        timeout(WAIT, self.calls.recv())
            .await
            .expect("no StreamSnapshots call in time")
            .unwrap()
    }
}

fn config(control_planes: &[SocketAddr], token: &str) -> Config {
    let urls = control_planes
        .iter()
        .map(|a| format!("http://{a}").parse().unwrap())
        .collect();
    let mut c = Config::new(urls, SecretString::from(token));
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.node_id = "dp-test".into();
    // Each data plane gets its own spool; tests run in parallel.
    c.spool_dir = Some(tempfile::tempdir().unwrap().keep());
    c.backoff_max = Duration::from_millis(500);
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// A valid snapshot, shaped like `sample()` in core's table tests.
fn snapshot(version: u64, nonce: &str) -> Snapshot {
    Snapshot {
        version,
        nonce: nonce.into(),
        providers: vec![SnapshotProvider {
            limits: Default::default(),
            name: "openai".into(),
            protocol: "openai".into(),
            base_url: "https://api.example.com/v1/".into(),
            api_key: "sk-upstream-secret".into(),
            headers: [("x-org".to_string(), "acme".to_string())].into(),
            timeout_s: 0,
            stream_usage: true,
            proxy: String::new(),
            default_params: Default::default(),
        }],
        models: vec![SnapshotModel {
            limits: Default::default(),
            name: "gpt".into(),
            strategy: "priority".into(),
            max_attempts: 0,
            retry_delay_ms: Some(5),
            prices: None,
            exact_prices: None,
            price_schedule: Vec::new(),
            default_max_tokens: None,
            translation: String::new(),
            r#type: String::new(),
            targets: vec![SnapshotTarget {
                provider: "openai".into(),
                upstream_model: "gpt-4o".into(),
                priority: 0,
                weight: 1,
                rules: String::new(),
                prices: None,
                exact_prices: None,
                default_params: Default::default(),
            }],
        }],
        keys: vec![SnapshotKey {
            limits: Default::default(),
            name: "k".into(),
            hash: llmgw_core::keys::hash_hex("sk-llmgw-test"),
            models: vec![],
            expires_at_ms: 0,
            log_bodies: false,
        }],
        settings: Some(Settings {
            retry_max_attempts: 3,
            retry_delay_ms: 1000,
            http_timeout_s: 60,
            log_bodies: false,
            log_body_max_bytes: 65536,
            max_request_body_bytes: 32 << 20,
            // Zero means the default for fields this test does not care about.
            ..Default::default()
        }),
    }
}

/// A minimal HTTP/1.1 GET, so the tests need no HTTP client crate.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    timeout(WAIT, s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

async fn ready(dp: &Running) -> (u16, serde_json::Value) {
    let (status, body) = get(dp.local_addr(), "/readyz").await;
    (status, serde_json::from_str(&body).unwrap())
}

async fn wait_version(dp: &Running, v: u64) {
    timeout(WAIT, dp.wait_for_version(v))
        .await
        .expect("version not applied in time")
        .unwrap();
}

fn assert_ack(r: &SnapshotRequest, version: u64, nonce: &str) {
    assert_eq!(r.node_id, "dp-test");
    assert_eq!((r.version, r.response_nonce.as_str()), (version, nonce));
    assert!(
        r.error_detail.is_empty(),
        "unexpected NACK: {}",
        r.error_detail
    );
}

#[tokio::test]
async fn readiness_follows_the_first_snapshot() {
    let mut mock = Mock::start(0).await;
    let dp = start(config(&[mock.addr], TOKEN)).await.unwrap();
    assert_ne!(dp.local_addr().port(), 0);

    let stream = mock.next_stream().await;
    let first = mock.next_request().await;
    assert_eq!(first.node_id, "dp-test");
    assert_eq!((first.version, first.response_nonce.as_str()), (0, ""));

    assert_eq!(get(dp.local_addr(), "/healthz").await, (200, "ok".into()));
    let (status, body) = ready(&dp).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        serde_json::json!({"ready": false, "reason": "no snapshot applied yet"})
    );
    assert!(!dp.is_ready());

    stream.send(Ok(snapshot(1, "n1"))).unwrap();
    assert_ack(&mock.next_request().await, 1, "n1");
    wait_version(&dp, 1).await;
    assert_eq!(ready(&dp).await.0, 200);
    assert_eq!(get(dp.local_addr(), "/healthz").await, (200, "ok".into()));

    let (status, body) = get(dp.local_addr(), "/v1/unknown").await;
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["type"], "not_found_error");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn valid_snapshots_are_acked_and_applied() {
    let mut mock = Mock::start(0).await;
    let dp = start(config(&[mock.addr], TOKEN)).await.unwrap();
    let stream = mock.next_stream().await;
    mock.next_request().await;

    stream.send(Ok(snapshot(3, "a"))).unwrap();
    assert_ack(&mock.next_request().await, 3, "a");
    assert_eq!(dp.applied_version(), 3);
    let table = dp.table().load().unwrap();
    assert_eq!(table.version, 3);
    assert!(table.models.contains_key("gpt"));
    assert!(table.authenticate("sk-llmgw-test", 0).is_ok());

    // A resend of the same version is applied and ACKed too.
    let mut versions = dp.versions();
    versions.mark_unchanged();
    stream.send(Ok(snapshot(3, "b"))).unwrap();
    assert_ack(&mock.next_request().await, 3, "b");
    timeout(WAIT, versions.changed()).await.unwrap().unwrap();

    stream.send(Ok(snapshot(4, "c"))).unwrap();
    assert_ack(&mock.next_request().await, 4, "c");
    assert_eq!(dp.table().version(), 4);
}

#[tokio::test]
async fn invalid_snapshot_is_nacked_and_previous_table_kept() {
    let mut mock = Mock::start(0).await;
    let dp = start(config(&[mock.addr], TOKEN)).await.unwrap();
    let stream = mock.next_stream().await;
    mock.next_request().await;
    stream.send(Ok(snapshot(1, "good"))).unwrap();
    assert_ack(&mock.next_request().await, 1, "good");
    let before = dp.table().load().unwrap();

    let mut bad = snapshot(2, "bad");
    bad.models[0].targets[0].provider = "gone".into();
    stream.send(Ok(bad)).unwrap();
    let nack = mock.next_request().await;
    assert_eq!((nack.version, nack.response_nonce.as_str()), (1, "bad"));
    assert!(
        nack.error_detail.contains("unknown provider 'gone'"),
        "{}",
        nack.error_detail
    );
    assert_eq!(dp.applied_version(), 1);
    assert!(std::sync::Arc::ptr_eq(&before, &dp.table().load().unwrap()));
    assert_eq!(ready(&dp).await.0, 200);

    // The stream stays usable after a NACK.
    stream.send(Ok(snapshot(3, "next"))).unwrap();
    assert_ack(&mock.next_request().await, 3, "next");
}

#[tokio::test]
async fn reconnects_after_the_control_plane_goes_away() {
    let mut mock = Mock::start(0).await;
    let addr = mock.addr;
    let dp = start(config(&[addr], TOKEN)).await.unwrap();
    let stream = mock.next_stream().await;
    mock.next_request().await;
    stream.send(Ok(snapshot(1, "n1"))).unwrap();
    assert_ack(&mock.next_request().await, 1, "n1");

    // The control plane dies: no listener, and the open stream ends.
    mock.stop().await;
    drop(stream);
    assert_eq!(ready(&dp).await.0, 200, "an outage must not fail readiness");

    let mut mock = Mock::start(addr.port()).await;
    let stream = timeout(Duration::from_secs(20), mock.streams.recv())
        .await
        .expect("the data plane did not reconnect")
        .unwrap();
    let first = mock.next_request().await;
    assert_eq!(first.node_id, "dp-test");
    assert_eq!((first.version, first.response_nonce.as_str()), (1, ""));
    assert_eq!(ready(&dp).await.0, 200);
    assert!(dp.is_running());

    stream.send(Ok(snapshot(2, "n2"))).unwrap();
    assert_ack(&mock.next_request().await, 2, "n2");
    wait_version(&dp, 2).await;
}

#[tokio::test]
async fn wrong_token_is_retried_without_exiting() {
    let mut mock = Mock::start(0).await;
    let dp = start(config(&[mock.addr], "dp-token-wrong")).await.unwrap();

    for _ in 0..3 {
        assert_eq!(mock.next_call().await, "Bearer dp-token-wrong");
    }
    assert!(
        mock.streams.try_recv().is_err(),
        "no stream may be accepted"
    );
    assert!(dp.is_running());
    assert_eq!(dp.applied_version(), 0);
    assert_eq!(get(dp.local_addr(), "/healthz").await, (200, "ok".into()));
    let (status, body) = ready(&dp).await;
    assert_eq!(status, 503);
    assert_eq!(body["reason"], "no snapshot applied yet");
}

#[tokio::test]
async fn round_robin_reaches_a_later_control_plane() {
    // A port nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut mock = Mock::start(0).await;
    let dp = start(config(&[dead, mock.addr], TOKEN)).await.unwrap();
    let stream = mock.next_stream().await;
    mock.next_request().await;
    stream.send(Ok(snapshot(1, "n1"))).unwrap();
    assert_ack(&mock.next_request().await, 1, "n1");
    wait_version(&dp, 1).await;
}

#[tokio::test]
async fn shutdown_fails_readiness_and_stops_serving() {
    let mut mock = Mock::start(0).await;
    let dp = start(config(&[mock.addr], TOKEN)).await.unwrap();
    let stream = mock.next_stream().await;
    mock.next_request().await;
    stream.send(Ok(snapshot(1, "n1"))).unwrap();
    assert_ack(&mock.next_request().await, 1, "n1");
    assert!(dp.is_ready());

    let addr = dp.local_addr();
    dp.shutdown();
    assert!(
        !dp.is_ready(),
        "readiness must fail as soon as draining starts"
    );
    timeout(WAIT, dp.join())
        .await
        .expect("drain took too long")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
}

#[tokio::test]
async fn https_control_plane_with_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();

    let mut mock = Mock::start_with(0, Some((leaf.pem(), leaf_key.serialize_pem()))).await;
    let mut c = config(&[], TOKEN);
    c.control_planes = vec![format!("https://localhost:{}", mock.addr.port())
        .parse()
        .unwrap()];
    c.tls_ca_pem = Some(ca.pem().into_bytes());
    let dp = start(c).await.unwrap();

    let stream = mock.next_stream().await;
    assert_eq!(mock.next_request().await.version, 0);
    stream.send(Ok(snapshot(1, "tls"))).unwrap();
    assert_ack(&mock.next_request().await, 1, "tls");
    wait_version(&dp, 1).await;
}
