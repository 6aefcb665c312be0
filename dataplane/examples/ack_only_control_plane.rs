//! A stand-in control plane for benchmarking the data plane's log shipping
//! apart from log storage: it serves one fixed snapshot (a provider at
//! `--upstream`, a model `bench`, one key) and acknowledges every log batch
//! as it arrives, without storing it.
//!
//! ```sh
//! cargo run --release -p llmgw-dataplane --example ack_only_control_plane -- \
//!     --upstream http://127.0.0.1:PORT/v1 --key KEY --token TOKEN
//! ```
//!
//! It prints `listening on ADDR` once it accepts connections.

#![allow(clippy::print_stdout, clippy::expect_used)]

use std::net::SocketAddr;

use clap::Parser;
use llmgw_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use llmgw_proto::v1::logs_server::{Logs, LogsServer};
use llmgw_proto::v1::{
    LogAck, LogBatch, Settings, Snapshot, SnapshotKey, SnapshotModel, SnapshotProvider,
    SnapshotRequest, SnapshotTarget,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The provider's base URL, e.g. http://127.0.0.1:9000/v1.
    #[arg(long)]
    upstream: String,
    /// The client key the snapshot accepts.
    #[arg(long)]
    key: String,
    /// The data-plane token.
    #[arg(long)]
    token: String,
}

#[derive(Clone)]
struct AckOnly {
    snapshot: Snapshot,
    auth: String,
}

impl AckOnly {
    fn check<T>(&self, r: &Request<T>) -> Result<(), Status> {
        let got = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if got == Some(self.auth.as_str()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("bad data-plane token"))
        }
    }
}

#[tonic::async_trait]
impl Discovery for AckOnly {
    type StreamSnapshotsStream = ReceiverStream<Result<Snapshot, Status>>;

    async fn stream_snapshots(
        &self,
        request: Request<Streaming<SnapshotRequest>>,
    ) -> Result<Response<Self::StreamSnapshotsStream>, Status> {
        self.check(&request)?;
        let (tx, rx) = mpsc::channel(4);
        let snapshot = self.snapshot.clone();
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            let _ = tx.send(Ok(snapshot)).await;
            // The stream stays open while the data plane keeps it.
            while let Ok(Some(_ack)) = inbound.message().await {}
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Logs for AckOnly {
    type ShipStream = ReceiverStream<Result<LogAck, Status>>;

    async fn ship(
        &self,
        request: Request<Streaming<LogBatch>>,
    ) -> Result<Response<Self::ShipStream>, Status> {
        self.check(&request)?;
        let (tx, rx) = mpsc::channel(64);
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let ack = LogAck {
                    acked_sequence: batch.last_sequence,
                    quarantined_ids: Vec::new(),
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let snapshot = Snapshot {
        version: 1,
        nonce: "ack-only-1".into(),
        providers: vec![SnapshotProvider {
            name: "mock".into(),
            protocol: "openai".into(),
            base_url: a.upstream.clone(),
            api_key: "sk-upstream-bench-0000".into(),
            timeout_s: 120,
            stream_usage: true,
            ..Default::default()
        }],
        models: vec![SnapshotModel {
            name: "bench".into(),
            strategy: "priority".into(),
            max_attempts: 2,
            targets: vec![SnapshotTarget {
                provider: "mock".into(),
                upstream_model: "bench".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        keys: vec![SnapshotKey {
            name: "bench".into(),
            hash: llmgw_core::keys::hash_hex(&a.key),
            log_bodies: true,
            ..Default::default()
        }],
        settings: Some(Settings {
            retry_max_attempts: 2,
            retry_delay_ms: 200,
            http_timeout_s: 120,
            log_bodies: true,
            log_body_max_bytes: 65536,
            max_request_body_bytes: 10 << 20,
            connect_timeout_ms: 5000,
            first_byte_timeout_s: 120,
            deadline_s: 300,
            ..Default::default()
        }),
    };
    let control_plane = AckOnly {
        snapshot,
        auth: format!("Bearer {}", a.token),
    };
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .expect("cannot bind --listen");
    let addr = listener.local_addr().expect("no local address");
    println!("listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(DiscoveryServer::new(control_plane.clone()))
        .add_service(LogsServer::new(control_plane))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
        .expect("the server failed");
}
