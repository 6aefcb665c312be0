//! Limits (#15) in the real data plane, in-process, against a scripted
//! control plane (tonic `Discovery` and `Quota` servers whose every report
//! the test sees and whose every assignment the test writes) and the mock
//! upstream: reports carry the buckets' use and demand, grants plus slack
//! are what a data plane admits, refusals come in the client's protocol
//! with their headers, and an exhausted budget is the quota error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use llmgw_dataplane::{start, Config, Running};
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use llmgw_proto::v1::quota_server::{Quota, QuotaServer};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "dp-token";
const SECRET: &str = "sk-llmgw-limited";

type Sender<T> = mpsc::UnboundedSender<Result<T, Status>>;

#[derive(Clone)]
struct Cp {
    snapshots: mpsc::UnboundedSender<Sender<pb::Snapshot>>,
    quotas: mpsc::UnboundedSender<Sender<pb::QuotaAssignments>>,
    reports: mpsc::UnboundedSender<pb::QuotaReport>,
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
impl Quota for Cp {
    type StreamQuotaStream = UnboundedReceiverStream<Result<pb::QuotaAssignments, Status>>;

    async fn stream_quota(
        &self,
        request: Request<Streaming<pb::QuotaReport>>,
    ) -> Result<Response<Self::StreamQuotaStream>, Status> {
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
        let _ = self.quotas.send(tx);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

struct Harness {
    dp: Running,
    quota: Sender<pb::QuotaAssignments>,
    reports: mpsc::UnboundedReceiver<pb::QuotaReport>,
    _mock: llmgw_mock::MockServer,
    _snapshots: Sender<pb::Snapshot>,
}

impl Harness {
    async fn start(key_limits: pb::Limits) -> Harness {
        let mock = llmgw_mock::start(llmgw_mock::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (snapshots_tx, mut snapshots) = mpsc::unbounded_channel();
        let (quotas_tx, mut quotas) = mpsc::unbounded_channel();
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let cp = Cp {
            snapshots: snapshots_tx,
            quotas: quotas_tx,
            reports: reports_tx,
        };
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(DiscoveryServer::new(cp.clone()))
                .add_service(QuotaServer::new(cp))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let mut c = Config::new(
            vec![format!("http://{addr}").parse().unwrap()],
            SecretString::from(TOKEN),
        );
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.ops_listen = Some("127.0.0.1:0".parse().unwrap());
        c.node_id = "dp-limits".into();
        c.spool_dir = Some(tempfile::tempdir().unwrap().keep());
        c.backoff_max = Duration::from_millis(200);
        let dp = start(c).await.unwrap();
        let snapshot_tx = timeout(WAIT, snapshots.recv()).await.unwrap().unwrap();
        snapshot_tx
            .send(Ok(snapshot(&mock.base_url(), key_limits)))
            .unwrap();
        timeout(WAIT, dp.wait_for_version(1))
            .await
            .unwrap()
            .unwrap();
        let quota = timeout(WAIT, quotas.recv()).await.unwrap().unwrap();
        // The first report names the data plane.
        let first = timeout(WAIT, reports.recv()).await.unwrap().unwrap();
        // The node id and this process's own suffix.
        let suffix = first.node_id.strip_prefix("dp-limits#").unwrap_or_default();
        assert!(
            suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            first.node_id
        );
        Harness {
            dp,
            quota,
            reports,
            _mock: mock,
            _snapshots: snapshot_tx,
        }
    }

    /// Sends `assignments` (with `data_planes` live data planes and a
    /// minute's lease) and waits until the data plane has applied them.
    async fn assign(&self, data_planes: u32, assignments: Vec<pb::BucketAssignment>) {
        let a = pb::QuotaAssignments {
            assignments,
            data_planes,
            lease_ms: 60_000,
        };
        let mut applied = self.dp.limiter().applied();
        let before = *applied.borrow_and_update();
        self.quota.send(Ok(a)).unwrap();
        timeout(WAIT, applied.wait_for(|n| *n > before))
            .await
            .unwrap()
            .unwrap();
    }

    /// The next report that has a `scope:kind` bucket, and that bucket.
    async fn report_of(&mut self, scope: &str, kind: &str) -> (pb::QuotaReport, pb::BucketUsage) {
        loop {
            let r = timeout(WAIT, self.reports.recv()).await.unwrap().unwrap();
            let found = r
                .usage
                .iter()
                .find(|u| {
                    u.bucket
                        .as_ref()
                        .is_some_and(|b| b.scope == scope && b.kind == kind)
                })
                .cloned();
            if let Some(u) = found {
                return (r, u);
            }
        }
    }

    async fn chat(&self) -> Reply {
        post(
            self.dp.local_addr(),
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {SECRET}"))],
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi there"}],"max_tokens":5}"#,
        )
        .await
    }

    async fn messages(&self) -> Reply {
        post(
            self.dp.local_addr(),
            "/v1/messages",
            &[("x-api-key", SECRET), ("anthropic-version", "2023-06-01")],
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi there"}],"max_tokens":5}"#,
        )
        .await
    }

    async fn metrics(&self) -> String {
        let addr = self.dp.ops_addr().unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        timeout(WAIT, s.read_to_string(&mut raw))
            .await
            .unwrap()
            .unwrap();
        raw
    }
}

fn snapshot(base_url: &str, key_limits: pb::Limits) -> pb::Snapshot {
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
            prices: Some(pb::Prices {
                input_per_mtok: 1.0,
                output_per_mtok: 1.0,
                ..Default::default()
            }),
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
            limits: Some(key_limits),
            ..Default::default()
        }],
        settings: Some(pb::Settings {
            retry_max_attempts: 1,
            http_timeout_s: 30,
            ..Default::default()
        }),
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 POST, so the test needs no HTTP client crate.
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
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
    let mut raw = String::new();
    timeout(WAIT, s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // A chunked body starts with its first chunk's size.
    let json = body.find('{').map_or("", |i| &body[i..]);
    let json = json.rfind('}').map_or("", |i| &json[..=i]);
    Reply {
        status,
        headers,
        body: serde_json::from_str(json).unwrap_or_default(),
    }
}

fn key_bucket(kind: &str) -> pb::BucketId {
    pb::BucketId {
        scope: "key".into(),
        name: "team".into(),
        kind: kind.into(),
    }
}

#[tokio::test]
async fn grants_plus_slack_are_admitted_and_refusals_carry_the_headers() {
    // A day's window: the test never straddles one.
    let mut h = Harness::start(pb::Limits {
        rpm: Some(6),
        window_ms: 86_400_000,
        ..Default::default()
    })
    .await;
    // Connected, two data planes: the slack is ceil(6 × 10% / 2) = 1.
    h.assign(2, vec![]).await;
    let r = h.chat().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("6"));
    // Of the fleet's 6, this one used 1 and no other data plane holds a grant.
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("5"));
    // Low at once (no grant yet): reported with its use and demand:
    // used 1 + max(ceil(6 / 8), 2 × 1).
    let (_, u) = h.report_of("key", "rpm").await;
    assert_eq!((u.used, u.wanted), (1, 3));
    assert_eq!(u.bucket.as_ref().unwrap().name, "team");
    h.assign(
        2,
        vec![pb::BucketAssignment {
            bucket: Some(key_bucket("rpm")),
            window_start_ms: u.window_start_ms,
            granted: 3,
            limit: 6,
            fleet_used: 3,
            expires_at_ms: u.window_start_ms + 86_400_000,
        }],
    )
    .await;
    // Grant 3 + slack 1 = 4 in the window; one is used. The fleet has
    // granted 3 more to others: 6 − 1 − 0 left, less each one admitted.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = h.chat().await;
        seen.push((
            r.status,
            r.header("x-ratelimit-remaining-requests")
                .map(str::to_owned),
        ));
    }
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        seen,
        [
            (200, some("4")),
            (200, some("3")),
            (200, some("2")),
            (429, some("0"))
        ]
    );
    let refused = h.chat().await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.header("x-should-retry"), None);
    let anthropic = h.messages().await;
    assert_eq!(anthropic.status, 429);
    assert_eq!(anthropic.body["error"]["type"], "rate_limit_error");
    assert!(anthropic
        .header("anthropic-ratelimit-requests-reset")
        .is_some_and(|v| v.ends_with('Z')));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"llmgw_limit_refusals_total{scope="key",kind="rpm"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_idle_data_plane_reports_every_half_lease_to_stay_counted() {
    // No limits anywhere: no buckets, nothing to report but being there.
    let mut h = Harness::start(pb::Limits::default()).await;
    let a = pb::QuotaAssignments {
        assignments: vec![],
        data_planes: 3,
        lease_ms: 600,
    };
    h.quota.send(Ok(a)).unwrap();
    // Each comes within a lease of the last (awaited with room to spare).
    for _ in 0..3 {
        let r = timeout(WAIT, h.reports.recv()).await.unwrap().unwrap();
        assert!(r.usage.is_empty(), "{r:?}");
    }
}

#[tokio::test]
async fn requests_wait_for_a_budgets_unknown_spend_and_the_report_asks_for_it() {
    let mut h = Harness::start(pb::Limits {
        budget_micros: Some(1_000_000),
        budget_period: "day".into(),
        ..Default::default()
    })
    .await;
    h.assign(1, vec![]).await;
    // The first request is admitted with the spend unknown; the second
    // waits for the figure rather than be refused.
    let (first, second) = tokio::join!(h.chat(), async {
        tokio::task::yield_now().await;
        h.chat().await
    });
    assert_eq!(first.status, 200, "{:?}", first.body);
    let _ = second;
    // Reported at once, asking for the spend (wanted 1) until it has it.
    let (_, u) = h.report_of("key", "budget").await;
    assert_eq!(u.wanted, 1, "{u:?}");
    let spend = pb::BucketAssignment {
        bucket: Some(key_bucket("budget")),
        window_start_ms: u.window_start_ms,
        granted: 0,
        limit: 1_000_000,
        fleet_used: 0,
        expires_at_ms: 0,
    };
    // Three requests at once while the figure is on its way: one admitted,
    // two waiting; all three answered 200 once it arrives.
    let sends = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.assign(1, vec![spend.clone()]).await;
    };
    let (a, b, c, ()) = tokio::join!(h.chat(), h.chat(), h.chat(), sends);
    for r in [&a, &b, &c] {
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let (_, u) = h.report_of("key", "budget").await;
    assert_eq!(u.wanted, 0, "{u:?}");
}

#[tokio::test]
async fn an_exhausted_budget_is_the_quota_error_and_spend_is_reported() {
    let mut h = Harness::start(pb::Limits {
        budget_micros: Some(1_000),
        budget_period: "day".into(),
        ..Default::default()
    })
    .await;
    h.assign(1, vec![]).await;
    let r = h.chat().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The charge is the record's cost: 2 prompt + 4 completion tokens (the
    // mock's words and chunks) at $1 per million each = 6 micro-dollars.
    let (_, u) = loop {
        let (r, u) = h.report_of("key", "budget").await;
        if u.used > 0 {
            break (r, u);
        }
    };
    assert_eq!(u.used, 6);
    // The control plane's durable spend reaches the budget.
    h.assign(
        1,
        vec![pb::BucketAssignment {
            bucket: Some(key_bucket("budget")),
            window_start_ms: u.window_start_ms,
            granted: 0,
            limit: 1_000,
            fleet_used: 1_000,
            expires_at_ms: 0,
        }],
    )
    .await;
    let openai = h.chat().await;
    assert_eq!(openai.status, 429);
    assert_eq!(openai.body["error"]["type"], "insufficient_quota");
    assert_eq!(openai.body["error"]["code"], "insufficient_quota");
    assert_eq!(openai.header("x-should-retry"), Some("false"));
    let to_midnight: u64 = openai.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&to_midnight), "{to_midnight}");
    let anthropic = h.messages().await;
    assert_eq!(anthropic.status, 429);
    assert_eq!(anthropic.body["error"]["type"], "billing_error");
    assert_eq!(anthropic.header("x-should-retry"), Some("false"));
}
