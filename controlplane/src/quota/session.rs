//! One data plane's `StreamQuota` stream: every report is answered with one
//! `QuotaAssignments` (with the live data planes and the lease length), so
//! each answer also tells the data plane that a control plane is there. It
//! carries the current assignment of every rpm, tpm and concurrency bucket
//! reported (a data plane that rebuilt its buckets gets its grants back at
//! once), and a budget's only when it changed or when the report's `used`
//! went down (the data plane lost its count): a budget assignment restarts
//! the data plane's count of what it charged since `fleet_used`.
//!
//! Between reports the session watches the request logs this control plane
//! stores: when one with a cost names a budget the data plane reported
//! (its key, model or provider), the budget's new spend is sent unasked
//! after [`PUSH_DELAY`], which gathers a burst of records into one push.
//! Spend stored by another control plane reaches the data plane with its
//! next report (at least once a second while it holds grants).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use llmgw_core::limits::{BucketId, Kind, Scope};
use llmgw_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Status, Streaming};

use super::assign::{self, Asker};
use super::{stopped, CurrentLimits};
use crate::store::{now_ms, Store, StoreError};

/// How long a budget push waits for more records after the first.
const PUSH_DELAY: Duration = Duration::from_millis(100);
/// The longest node_id accepted (a DNS name's length, as discovery's).
const MAX_NODE_ID: usize = 253;

type Out = mpsc::Sender<Result<pb::QuotaAssignments, Status>>;

pub(super) struct Session {
    store: Store,
    limits: CurrentLimits,
    lease_ms: u32,
    tx: Out,
    node: String,
    /// The assignment last sent per bucket.
    sent: HashMap<BucketId, pb::BucketAssignment>,
    /// The budget buckets the data plane reported, with the `used` of the
    /// last report.
    budgets: BTreeMap<BucketId, u64>,
    /// A report named a bucket that does not read (logged once).
    warned: bool,
}

impl Session {
    pub(super) fn new(store: Store, limits: CurrentLimits, lease_ms: u32, tx: Out) -> Self {
        Session {
            store,
            limits,
            lease_ms,
            tx,
            node: String::new(),
            sent: HashMap::new(),
            budgets: BTreeMap::new(),
            warned: false,
        }
    }

    pub(super) async fn run(
        mut self,
        mut inbound: Streaming<pb::QuotaReport>,
        records: broadcast::Receiver<Arc<pb::RequestLog>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let first = match inbound.message().await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "quota stream failed before its first report");
                return;
            }
        };
        let node = first.node_id.trim();
        if node.is_empty() || node.len() > MAX_NODE_ID || node.chars().any(char::is_control) {
            let _ = self
                .tx
                .send(Err(Status::invalid_argument(format!(
                    "the first quota report must carry a node_id of 1 to {MAX_NODE_ID} \
                     printable characters"
                ))))
                .await;
            return;
        }
        self.node = node.to_owned();
        tracing::info!(node_id = self.node, "data plane on the quota stream");
        let mut records = BroadcastStream::new(records);
        let mut report = Some(first);
        let mut push_at: Option<Instant> = None;
        loop {
            if let Some(r) = report.take() {
                if let Err(e) = self.answer(r).await {
                    self.fail(e).await;
                    break;
                }
            }
            let push = async {
                match push_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(r)) => report = Some(r),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(node_id = self.node, error = %e, "quota stream ended");
                        break;
                    }
                },
                Some(rec) = records.next() => {
                    // A lagging subscriber missed records: any may matter.
                    let matters = rec.map_or(true, |r| self.spends_on(&r));
                    if matters && push_at.is_none() && !self.budgets.is_empty() {
                        push_at = Some(Instant::now() + PUSH_DELAY);
                    }
                }
                () = push => {
                    push_at = None;
                    if let Err(e) = self.push_budgets().await {
                        self.fail(e).await;
                        break;
                    }
                }
                _ = self.tx.closed() => break,
                () = stopped(&mut shutdown) => break,
            }
        }
        tracing::info!(node_id = self.node, "data plane left the quota stream");
    }

    /// Answers one report.
    async fn answer(&mut self, report: pb::QuotaReport) -> Result<(), StoreError> {
        let now = now_ms();
        self.store.quota_node_reported(&self.node, now).await?;
        let table = self.limits.current();
        let node = self.node.clone();
        let asker = Asker {
            node: &node,
            now_ms: now,
            lease_ms: self.lease_ms,
        };
        let mut changed = Vec::new();
        for usage in &report.usage {
            let Some(Ok(bucket)) = usage.bucket.as_ref().map(BucketId::try_from) else {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        node_id = self.node,
                        "a quota report names a bucket that does not read; ignoring it"
                    );
                }
                continue;
            };
            let Some(limit) = table.limit(&bucket) else {
                self.forget(&bucket);
                continue;
            };
            let a = assign::assign(&self.store, asker, &bucket, limit, usage).await?;
            // A budget's spend is sent again when the data plane asks for
            // it (`wanted` 1: it has none, as after its bucket was made
            // again) or its own count went down (its accounting restarted).
            let renews = match bucket.kind {
                Kind::Budget => {
                    let before = self.budgets.insert(bucket.clone(), usage.used);
                    usage.wanted > 0 || before.is_some_and(|before| usage.used < before)
                }
                _ => true,
            };
            if renews || self.sent.get(&bucket) != Some(&a) {
                self.sent.insert(bucket, a.clone());
                changed.push(a);
            }
        }
        self.send(changed, now).await
    }

    /// Sends the budgets whose spend changed.
    async fn push_budgets(&mut self) -> Result<(), StoreError> {
        let now = now_ms();
        let table = self.limits.current();
        let mut changed = Vec::new();
        for bucket in self.budgets.keys().cloned().collect::<Vec<_>>() {
            let Some(limit) = table.limit(&bucket) else {
                self.forget(&bucket);
                continue;
            };
            let a = assign::budget(&self.store, &bucket, limit, now).await?;
            if self.sent.get(&bucket) != Some(&a) {
                self.sent.insert(bucket, a.clone());
                changed.push(a);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        self.send(changed, now).await
    }

    async fn send(
        &self,
        assignments: Vec<pb::BucketAssignment>,
        now: i64,
    ) -> Result<(), StoreError> {
        let live = self
            .store
            .quota_nodes_since(now.saturating_sub(i64::from(self.lease_ms)))
            .await?;
        let msg = pb::QuotaAssignments {
            assignments,
            data_planes: live.max(1),
            lease_ms: self.lease_ms,
        };
        // A closed stream ends the session at the loop's next turn.
        let _ = self.tx.send(Ok(msg)).await;
        Ok(())
    }

    fn forget(&mut self, bucket: &BucketId) {
        self.sent.remove(bucket);
        self.budgets.remove(bucket);
    }

    /// Whether a stored record's cost counts against a budget reported here.
    fn spends_on(&self, r: &pb::RequestLog) -> bool {
        r.cost > 0.0
            && self.budgets.keys().any(|b| {
                let name = match b.scope {
                    Scope::Key => &r.key,
                    Scope::Model => &r.model,
                    Scope::Provider => &r.provider,
                };
                *name == b.name
            })
    }

    async fn fail(&self, e: StoreError) {
        tracing::error!(node_id = self.node, error = %e, "cannot answer a quota report");
        let _ = self
            .tx
            .send(Err(Status::unavailable(
                "the control plane cannot reach its database; report again later",
            )))
            .await;
    }
}
