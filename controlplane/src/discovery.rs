//! The discovery service: one bidirectional stream per data plane, in the
//! manner of Envoy's state-of-the-world xDS.
//!
//! The stream sends the current snapshot, then every newer version. An ACK
//! or NACK counts only if it names the nonce last sent; anything else is
//! stale and ignored. After a NACK the stream is parked until a version
//! newer than the rejected one exists, so a rejected snapshot is never
//! resent in a loop.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use llmgw_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::hub::Hub;
use crate::store::Store;

/// How often a live stream refreshes the data plane's `last_seen`.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// NACK details are stored up to this length.
const MAX_ERROR_DETAIL: usize = 2000;

#[derive(Debug, Clone)]
pub struct DiscoveryService {
    hub: Hub,
    store: Store,
    shutdown: watch::Receiver<bool>,
}

impl DiscoveryService {
    pub fn new(hub: Hub, store: Store, shutdown: watch::Receiver<bool>) -> Self {
        DiscoveryService {
            hub,
            store,
            shutdown,
        }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl pb::discovery_server::Discovery for DiscoveryService {
    type StreamSnapshotsStream = SnapshotStream;

    async fn stream_snapshots(
        &self,
        request: Request<Streaming<pb::SnapshotRequest>>,
    ) -> Result<Response<Self::StreamSnapshotsStream>, Status> {
        let peer = llmgw_listener::remote_addr(request.extensions())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(2);
        let session = Session {
            hub: self.hub.clone(),
            store: self.store.clone(),
            peer,
            tx,
        };
        tokio::spawn(session.run(inbound, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct Session {
    hub: Hub,
    store: Store,
    peer: String,
    tx: mpsc::Sender<Result<pb::Snapshot, Status>>,
}

/// What was last sent on a stream, and the span that lasts until the
/// data plane answers it.
struct Sent {
    version: u64,
    nonce: String,
    span: tracing::Span,
}

impl Session {
    async fn run(
        self,
        mut inbound: Streaming<pb::SnapshotRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let first = match inbound.message().await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "discovery stream failed before its first request");
                return;
            }
        };
        let node_id = first.node_id.trim().to_string();
        if node_id.is_empty() || node_id.len() > 253 || node_id.chars().any(char::is_control) {
            let _ = self
                .tx
                .send(Err(Status::invalid_argument(
                    "the first request must carry a node_id of 1 to 253 printable characters",
                )))
                .await;
            return;
        }
        if let Err(e) = self
            .store
            .data_plane_connected(&node_id, &self.peer, first.version)
            .await
        {
            tracing::error!(node_id, error = %e, "cannot record data plane");
        }
        let since = self.store.data_plane_since(&node_id).await.unwrap_or(0);
        tracing::info!(node_id, peer = %self.peer, version = first.version, "data plane connected");

        let mut snapshots = self.hub.subscribe();
        let mut sent: Option<Sent> = None;
        let mut rejected: u64 = 0;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;

        loop {
            let current = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = current {
                let newer = sent.as_ref().is_none_or(|s| snapshot.version > s.version);
                if newer && snapshot.version > rejected {
                    let nonce = uuid::Uuid::new_v4().simple().to_string();
                    let mut out = (*snapshot).clone();
                    out.nonce.clone_from(&nonce);
                    tracing::debug!(node_id, version = out.version, nonce, "sending snapshot");
                    if self.tx.send(Ok(out)).await.is_err() {
                        break;
                    }
                    // Replacing an unanswered push ends its span unanswered.
                    sent = Some(Sent {
                        version: snapshot.version,
                        nonce,
                        span: crate::telemetry::snapshot_push(&node_id, snapshot.version),
                    });
                }
            }
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => {
                        if let Some(v) = self.answer(&node_id, &req, sent.as_mut()).await {
                            rejected = rejected.max(v);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(node_id, error = %e, "discovery stream ended");
                        break;
                    }
                },
                changed = snapshots.changed() => if changed.is_err() { break },
                _ = heartbeat.tick() => {
                    if let Err(e) = self.store.data_plane_seen(&node_id).await {
                        tracing::warn!(node_id, error = %e, "cannot record heartbeat");
                    }
                }
                _ = self.tx.closed() => break,
                _ = shutdown.changed() => break,
            }
        }
        if let Err(e) = self.store.data_plane_disconnected(&node_id, since).await {
            tracing::warn!(node_id, error = %e, "cannot record disconnect");
        }
        tracing::info!(node_id, "data plane disconnected");
    }

    /// Handles an ACK or NACK; returns the rejected version on a NACK.
    async fn answer(
        &self,
        node_id: &str,
        req: &pb::SnapshotRequest,
        sent: Option<&mut Sent>,
    ) -> Option<u64> {
        let Some(sent) = sent.filter(|s| s.nonce == req.response_nonce) else {
            tracing::debug!(
                node_id,
                nonce = req.response_nonce,
                "ignoring stale discovery request"
            );
            return None;
        };
        // The push's span ends with its answer.
        let span = std::mem::replace(&mut sent.span, tracing::Span::none());
        span.record(
            "llmgw.ack",
            if req.error_detail.is_empty() {
                "ack"
            } else {
                "nack"
            },
        );
        if !req.error_detail.is_empty() {
            span.record("otel.status_code", "ERROR");
        }
        drop(span);
        if req.error_detail.is_empty() {
            tracing::info!(node_id, version = sent.version, "snapshot acknowledged");
            if let Err(e) = self.store.data_plane_acked(node_id, sent.version).await {
                tracing::warn!(node_id, error = %e, "cannot record ACK");
            }
            None
        } else {
            let detail: String = req.error_detail.chars().take(MAX_ERROR_DETAIL).collect();
            tracing::warn!(node_id, version = sent.version, error = %detail, "snapshot rejected");
            if let Err(e) = self
                .store
                .data_plane_nacked(node_id, sent.version, &detail)
                .await
            {
                tracing::warn!(node_id, error = %e, "cannot record NACK");
            }
            Some(sent.version)
        }
    }
}

/// Checks `authorization: Bearer <token>` metadata in constant time.
pub fn check_bearer(
    metadata: &tonic::metadata::MetadataMap,
    expected: &Arc<secrecy::SecretString>,
    what: &str,
) -> Result<(), Status> {
    let presented = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            Status::unauthenticated(format!("missing {what} (authorization: Bearer <token>)"))
        })?;
    if crate::secrets::token_matches(presented, expected) {
        Ok(())
    } else {
        Err(Status::unauthenticated(format!("invalid {what}")))
    }
}
