#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! The discovery protocol's NACK and stale-nonce rules, driven by a scripted
//! data plane (a raw tonic client) next to a real one.

use std::time::{Duration, Instant};

use llmgw_e2e::*;
use llmgw_proto::v1::discovery_client::DiscoveryClient;
use llmgw_proto::v1::{Snapshot, SnapshotRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A scripted data plane: sends what the test says, receives snapshots.
struct Scripted {
    tx: mpsc::Sender<SnapshotRequest>,
    inbound: Streaming<Snapshot>,
}

impl Scripted {
    async fn connect(cp: &ControlPlane, node_id: &str) -> Scripted {
        let channel = tonic::transport::Endpoint::from_shared(cp.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.send(SnapshotRequest {
            node_id: node_id.to_string(),
            ..SnapshotRequest::default()
        })
        .await
        .unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", cp.dataplane_token).parse().unwrap(),
        );
        let inbound = DiscoveryClient::new(channel)
            .stream_snapshots(request)
            .await
            .expect("the control plane accepts the stream")
            .into_inner();
        Scripted { tx, inbound }
    }

    async fn next(&mut self) -> Snapshot {
        tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("a snapshot within the bound")
            .expect("stream ok")
            .expect("stream still open")
    }

    async fn send(&self, version: u64, nonce: &str, error: &str) {
        self.tx
            .send(SnapshotRequest {
                node_id: "scripted".to_string(),
                version,
                response_nonce: nonce.to_string(),
                error_detail: error.to_string(),
            })
            .await
            .unwrap();
    }
}

/// Asserts for `window` that the scripted node's acked_version stays `want`.
async fn acked_stays(cp: &ControlPlane, want: u64, window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        let d = dataplane(cp, "scripted").await.expect("scripted listed");
        assert_eq!(
            d["acked_version"], want,
            "a stale ACK moved acked_version: {d}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn nack_is_recorded_and_not_resent() {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    cli_ok(
        &cp,
        &[
            "provider",
            "add",
            "p",
            "--protocol",
            "openai",
            "--base-url",
            "http://127.0.0.1:9",
        ],
    )
    .await;
    cli_ok(&cp, &["model", "add", "m", "--target", "p"]).await;

    // A real data plane alongside.
    let real = DataPlane::start(&cp.url(), "dp-real", &cp.dataplane_token).await;
    let v1 = wait_in_sync(&cp, "dp-real").await;

    // The scripted one gets the same snapshot and rejects it.
    let mut s = Scripted::connect(&cp, "scripted").await;
    let first = s.next().await;
    assert_eq!(first.version, v1);
    assert!(!first.nonce.is_empty());
    assert_eq!(first.models.len(), 1);
    s.send(0, &first.nonce, "test rejects").await;

    let d = poll(WAIT, "the NACK to be recorded", || async {
        dataplane(&cp, "scripted")
            .await
            .filter(|d| d["last_nack_error"] == "test rejects")
    })
    .await;
    assert_eq!(d["nacked_version"], v1, "{d}");
    assert_eq!(d["acked_version"], 0, "{d}");
    assert_eq!(d["connected"], true, "{d}");
    // The real data plane is unaffected.
    let r = dataplane(&cp, "dp-real").await.unwrap();
    assert_eq!(r["acked_version"], v1, "{r}");
    assert_eq!(r["connected"], true, "{r}");
    assert_eq!(r["last_nack_error"], "", "{r}");
    assert_eq!(real.ready_version().await, Some(v1));

    // A change: the next snapshot the scripted client gets is newer than the
    // rejected one; the rejected one was not resent in between.
    cli_ok(&cp, &["model", "update", "m", "--max-attempts", "2"]).await;
    let second = s.next().await;
    assert!(
        second.version > v1,
        "after a NACK of v{v1} the next snapshot is v{}",
        second.version
    );
    assert_ne!(second.nonce, first.nonce);
    assert_eq!(second.models[0].max_attempts, 2);
    let v2 = second.version;

    // Stale nonces are ignored: the rejected snapshot's and an unknown one.
    s.send(v1, &first.nonce, "").await;
    s.send(v2, "not-a-nonce-we-sent", "").await;
    acked_stays(&cp, 0, Duration::from_millis(400)).await;
    let d = dataplane(&cp, "scripted").await.unwrap();
    assert_eq!(d["last_nack_error"], "test rejects", "{d}");

    // A proper ACK counts.
    s.send(v2, &second.nonce, "").await;
    wait_acked(&cp, "scripted", v2, WAIT).await;

    // The real data plane followed the change and never had a NACK.
    real.wait_version(v2, WAIT).await;
    let r = wait_acked(&cp, "dp-real", v2, WAIT).await;
    assert_eq!(r["nacked_version"], 0, "{r}");
    assert_eq!(r["last_nack_error"], "", "{r}");
    assert!(real.log().contains("snapshot applied"));
    assert!(!real.log().contains("snapshot rejected"));
}
