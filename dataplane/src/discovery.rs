//! The discovery client: one bidirectional `StreamSnapshots` stream to the
//! control plane. Each snapshot is validated whole, published with a single
//! atomic swap, and answered with an ACK or a NACK. A data plane keeps
//! serving its last table while the control plane is away, so the stream is
//! re-opened forever with jittered backoff and the process never exits for
//! want of a control plane.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use http::Uri;
use llmgw_core::RoutingTable;
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::discovery_client::DiscoveryClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::table::TableHandle;

/// Snapshots carry every key and model; the 4 MiB gRPC default is too
/// small for a large deployment.
const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// The discovery loop's state; [`Discovery::run`] consumes it.
pub(crate) struct Discovery {
    pub endpoints: Vec<Uri>,
    pub node_id: String,
    /// `Bearer <token>`, marked sensitive.
    pub auth: AsciiMetadataValue,
    pub tls_ca: Option<Certificate>,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub backoff: Backoff,
    pub table: TableHandle,
    pub versions: watch::Sender<u64>,
    /// The channel of the current stream, for the quota client, which
    /// streams beside the snapshots on the same connection.
    pub channels: watch::Sender<Option<Channel>>,
}

impl Discovery {
    /// Streams from the control planes in turn, forever.
    pub async fn run(mut self) {
        let mut next = 0usize;
        loop {
            let Some(uri) = self
                .endpoints
                .get(next % self.endpoints.len().max(1))
                .cloned()
            else {
                error!("no control-plane URL configured; discovery is idle");
                return;
            };
            next = next.wrapping_add(1);
            match self.stream_once(&uri).await {
                Ok(()) => info!(control_plane = %uri, "control plane ended the discovery stream"),
                Err(e) => match e.downcast_ref::<tonic::Status>() {
                    Some(s) if s.code() == tonic::Code::Unauthenticated => error!(
                        control_plane = %uri,
                        message = s.message(),
                        "control plane refused the data-plane token"
                    ),
                    _ => {
                        warn!(control_plane = %uri, error = format!("{e:#}"), "discovery stream failed")
                    }
                },
            }
            let delay = self.backoff.next_delay();
            debug!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting to the control plane"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection and stream; returns when either ends.
    async fn stream_once(&mut self, uri: &Uri) -> Result<()> {
        let channel = self.connect(uri).await?;
        self.channels.send_replace(Some(channel.clone()));
        let mut client =
            DiscoveryClient::new(channel).max_decoding_message_size(MAX_SNAPSHOT_BYTES);

        let (tx, rx) = mpsc::channel(4);
        // The control plane resends current state; telling it what we have
        // lets it log and compare.
        let applied = self.table.version();
        tx.send(pb::SnapshotRequest {
            node_id: self.node_id.clone(),
            version: applied,
            response_nonce: String::new(),
            error_detail: String::new(),
        })
        .await
        .map_err(|_| anyhow!("request stream closed"))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", self.auth.clone());

        let mut inbound = client.stream_snapshots(request).await?.into_inner();
        info!(control_plane = %uri, applied_version = applied, "discovery stream open");
        while let Some(snapshot) = inbound.message().await? {
            // A snapshot arrived, so this control plane works: reconnect fast next time.
            self.backoff.reset();
            let reply = apply(&self.table, &self.versions, &self.node_id, snapshot);
            tx.send(reply)
                .await
                .map_err(|_| anyhow!("request stream closed"))?;
        }
        Ok(())
    }

    async fn connect(&self, uri: &Uri) -> Result<Channel> {
        crate::channel::connect(
            uri,
            crate::channel::ChannelSettings {
                connect_timeout: self.connect_timeout,
                keepalive_interval: self.keepalive_interval,
                keepalive_timeout: self.keepalive_timeout,
                tls_ca: self.tls_ca.as_ref(),
            },
        )
        .await
    }
}

/// Validates a snapshot, publishes it if good, and returns the ACK or NACK.
pub(crate) fn apply(
    table: &TableHandle,
    versions: &watch::Sender<u64>,
    node_id: &str,
    mut snapshot: pb::Snapshot,
) -> pb::SnapshotRequest {
    // Taken before the conversion consumes the snapshot.
    let version = snapshot.version;
    let nonce = std::mem::take(&mut snapshot.nonce);
    let (providers, models, keys) = (
        snapshot.providers.len(),
        snapshot.models.len(),
        snapshot.keys.len(),
    );
    match RoutingTable::try_from(snapshot) {
        Ok(new) => {
            table.store(Arc::new(new));
            // send_replace notifies even for an equal version (a resend).
            versions.send_replace(version);
            info!(version, nonce, providers, models, keys, "snapshot applied");
            pb::SnapshotRequest {
                node_id: node_id.to_string(),
                version,
                response_nonce: nonce,
                error_detail: String::new(),
            }
        }
        Err(e) => {
            let current = table.version();
            warn!(
                version,
                nonce,
                applied_version = current,
                error = %e,
                "snapshot rejected; still serving the previous table"
            );
            pb::SnapshotRequest {
                node_id: node_id.to_string(),
                version: current,
                response_nonce: nonce,
                error_detail: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64, nonce: &str) -> pb::Snapshot {
        pb::Snapshot {
            version,
            nonce: nonce.into(),
            providers: vec![pb::SnapshotProvider {
                name: "openai".into(),
                protocol: "openai".into(),
                base_url: "https://api.example.com/v1".into(),
                api_key: "sk-upstream-secret".into(),
                ..Default::default()
            }],
            models: vec![pb::SnapshotModel {
                name: "gpt".into(),
                strategy: "priority".into(),
                targets: vec![pb::SnapshotTarget {
                    provider: "openai".into(),
                    upstream_model: "gpt-4o".into(),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            keys: vec![],
            settings: Some(pb::Settings {
                retry_max_attempts: 3,
                retry_delay_ms: 100,
                http_timeout_s: 60,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn valid_snapshot_is_swapped_in_and_acked() {
        let table = TableHandle::new();
        let (tx, rx) = watch::channel(0);
        let ack = apply(&table, &tx, "dp-1", snapshot(3, "n3"));
        assert_eq!(ack.node_id, "dp-1");
        assert_eq!((ack.version, ack.response_nonce.as_str()), (3, "n3"));
        assert!(ack.error_detail.is_empty());
        assert_eq!(table.version(), 3);
        assert_eq!(*rx.borrow(), 3);
        assert!(table.load().is_some_and(|t| t.models.contains_key("gpt")));
    }

    #[test]
    fn invalid_snapshot_keeps_the_table_and_is_nacked() {
        let table = TableHandle::new();
        let (tx, mut rx) = watch::channel(0);
        apply(&table, &tx, "dp-1", snapshot(3, "n3"));
        rx.mark_unchanged();
        let before = table.load().unwrap();

        let mut bad = snapshot(4, "n4");
        bad.models[0].targets[0].provider = "gone".into();
        let nack = apply(&table, &tx, "dp-1", bad);
        assert_eq!((nack.version, nack.response_nonce.as_str()), (3, "n4"));
        assert!(
            nack.error_detail.contains("unknown provider 'gone'"),
            "{}",
            nack.error_detail
        );
        assert!(Arc::ptr_eq(&before, &table.load().unwrap()));
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn nack_before_any_table_reports_version_zero() {
        let table = TableHandle::new();
        let (tx, _rx) = watch::channel(0);
        let nack = apply(
            &table,
            &tx,
            "dp-1",
            pb::Snapshot {
                version: 1,
                nonce: "a".into(),
                ..Default::default()
            },
        );
        assert_eq!((nack.version, nack.response_nonce.as_str()), (0, "a"));
        assert!(
            nack.error_detail.contains("no settings"),
            "{}",
            nack.error_detail
        );
        assert!(table.load().is_none());
    }

    #[test]
    fn resent_version_is_applied_again() {
        let table = TableHandle::new();
        let (tx, mut rx) = watch::channel(0);
        apply(&table, &tx, "dp-1", snapshot(3, "a"));
        rx.mark_unchanged();
        let first = table.load().unwrap();
        let ack = apply(&table, &tx, "dp-1", snapshot(3, "b"));
        assert_eq!((ack.version, ack.response_nonce.as_str()), (3, "b"));
        assert!(rx.has_changed().unwrap());
        assert!(!Arc::ptr_eq(&first, &table.load().unwrap()));
    }
}
