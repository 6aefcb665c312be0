//! The control plane's quota runtime (#15): the `Quota` gRPC service that
//! hands data planes their shares of the fleet's limits, and the admin
//! reads and resets of fleet use. The protocol is in
//! proto/llmgw/v1/quota.proto; docs/architecture.md ("Limits and the quota
//! protocol") explains it and its error bound.
//!
//! - [`configured`]: the limits a snapshot configures, per scope and name.
//! - [`assign`]: the grant math, one bucket's report answered from the
//!   database (`store::quota` keeps the grants, leases and spend).
//! - [`session`]: one data plane's `StreamQuota` stream.
//! - [`usage`]: GetLimits and ResetSpend for the admin API.
//!
//! A bucket with no configured limit (the limit was removed, or the name
//! is unknown) gets no assignment at all: the data plane then stops
//! tracking it.

pub mod assign;
pub mod configured;
mod session;
pub mod usage;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use llmgw_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::logs::LogFeed;
use crate::store::{now_ms, Store};
use configured::LimitTable;

/// The default length of a concurrency lease (`--quota-lease-ms`).
pub const DEFAULT_LEASE_MS: u32 = 10_000;
/// How often ended windows, lapsed leases and silent nodes are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The `Quota` service.
#[derive(Debug, Clone)]
pub struct QuotaService {
    store: Store,
    limits: CurrentLimits,
    feed: LogFeed,
    lease_ms: u32,
    shutdown: watch::Receiver<bool>,
}

impl QuotaService {
    /// `feed` carries the records this control plane stores, so a budget's
    /// new spend reaches the data planes without waiting for a report.
    /// `snapshots` is the hub's (`Hub::subscribe`): the limits granted
    /// from are those of the current snapshot.
    pub fn new(
        store: Store,
        snapshots: watch::Receiver<Option<Arc<pb::Snapshot>>>,
        feed: LogFeed,
        lease_ms: u32,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        QuotaService {
            store,
            limits: CurrentLimits::new(snapshots),
            feed,
            lease_ms: lease_ms.max(1),
            shutdown,
        }
    }
}

type AssignmentStream = Pin<Box<dyn Stream<Item = Result<pb::QuotaAssignments, Status>> + Send>>;

#[tonic::async_trait]
impl pb::quota_server::Quota for QuotaService {
    type StreamQuotaStream = AssignmentStream;

    async fn stream_quota(
        &self,
        request: Request<Streaming<pb::QuotaReport>>,
    ) -> Result<Response<Self::StreamQuotaStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let s = session::Session::new(self.store.clone(), self.limits.clone(), self.lease_ms, tx);
        // Subscribed before answering, so no spend stored after is missed.
        let records = self.feed.subscribe();
        tokio::spawn(s.run(inbound, records, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The limits of the current snapshot, rebuilt when its version moves on.
#[derive(Debug, Clone)]
pub struct CurrentLimits {
    snapshots: watch::Receiver<Option<Arc<pb::Snapshot>>>,
    table: Arc<Mutex<Arc<LimitTable>>>,
}

impl CurrentLimits {
    pub fn new(snapshots: watch::Receiver<Option<Arc<pb::Snapshot>>>) -> Self {
        CurrentLimits {
            snapshots,
            table: Arc::default(),
        }
    }

    /// The table of the current snapshot (empty before the first).
    pub fn current(&self) -> Arc<LimitTable> {
        let Some(snapshot) = self.snapshots.borrow().clone() else {
            return Arc::default();
        };
        let Ok(mut table) = self.table.lock() else {
            return Arc::new(LimitTable::from_snapshot(&snapshot));
        };
        if table.version != snapshot.version || snapshot.version == 0 {
            *table = Arc::new(LimitTable::from_snapshot(&snapshot));
        }
        Arc::clone(&table)
    }
}

/// Resolves when `shutdown` turns true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Deletes ended windows, leases lapsed for longer than a lease and data
/// planes silent for a day, now and then, until `shutdown`.
pub async fn prune(store: Store, lease_ms: u32, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stopped(&mut shutdown) => return,
        }
        match store.prune_quota(now_ms(), i64::from(lease_ms)).await {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "pruned quota rows"),
            Err(e) => tracing::warn!(error = %e, "cannot prune quota rows"),
        }
    }
}
