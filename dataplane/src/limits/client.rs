//! The quota client: one `Quota.StreamQuota` stream (proto/llmgw/v1/
//! quota.proto) on the connection the discovery client opened to its
//! control plane. It reports every bucket's use at least once a second (a
//! third of a lease when that is shorter) while there are buckets, and at
//! once (at most every [`MIN_REPORT_GAP`]) when a bucket runs low or
//! refuses, one at a time (each waits for the last one's answer); it
//! applies the assignments that come back. A failed stream is
//! opened again with the discovery client's backoff; meanwhile the data
//! plane stays connected for one lease from the last message, then falls
//! back per limit (`on_outage`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use llmgw_core::limits::{BucketId, Kind, Scope};
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::quota_client::QuotaClient as Grpc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::{now_ms, Limiter};
use crate::backoff::Backoff;

/// The longest between two reports while there are buckets (a third of
/// the lease when that is shorter, so leases are renewed in time).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest between two reports asked for at once.
pub const MIN_REPORT_GAP: Duration = Duration::from_millis(50);
/// How long a report waits for the last one's answer before it is sent
/// anyway (an answer lost, or a control plane that does not answer each).
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// An entry nobody used for this long is dropped (after its last report).
const IDLE_MS: i64 = 120_000;

/// The longest quota node id the control plane takes (a DNS name's length).
const MAX_NODE_ID: usize = 253;

/// This process's name on the quota stream: the node id and a random
/// suffix of its own. The control plane keeps each node's grants of a
/// window; a data plane restarted within a window under the same node id
/// would otherwise be granted again what its predecessor used. A new
/// process is a new node: what the old one held stays counted until its
/// window ends, and its leases lapse.
pub(crate) fn incarnation(node_id: &str) -> String {
    let suffix = format!("#{:08x}", rand::random::<u32>());
    let mut end = node_id.len().min(MAX_NODE_ID - suffix.len());
    while !node_id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &node_id[..end])
}

/// The quota loop's state; [`QuotaClient::run`] consumes it.
pub(crate) struct QuotaClient {
    pub limiter: Arc<Limiter>,
    /// The discovery client's current channel.
    pub channels: watch::Receiver<Option<Channel>>,
    pub node_id: String,
    /// `Bearer <token>`, marked sensitive.
    pub auth: AsciiMetadataValue,
    pub backoff: Backoff,
}

impl QuotaClient {
    /// Streams quota over the discovery client's channel, forever.
    pub async fn run(mut self) {
        loop {
            let channel = match self.channels.wait_for(Option::is_some).await {
                Ok(c) => c.clone(),
                // The discovery client is gone: so is the data plane.
                Err(_) => return,
            };
            let Some(channel) = channel else { continue };
            self.channels.mark_unchanged();
            match self.stream_once(channel).await {
                Ok(()) => info!("control plane ended the quota stream"),
                Err(e) => match e.downcast_ref::<tonic::Status>() {
                    Some(s) if s.code() == tonic::Code::Unimplemented => {
                        warn!("the control plane has no quota service; limits are enforced locally")
                    }
                    _ => warn!(error = format!("{e:#}"), "quota stream failed"),
                },
            }
            self.limiter.set_open(false);
            let delay = self.backoff.next_delay();
            debug!(
                delay_ms = delay.as_millis() as u64,
                "reopening the quota stream"
            );
            // A new channel (the discovery client reconnected) ends the wait.
            let _ = tokio::time::timeout(delay, self.channels.changed()).await;
        }
    }

    async fn stream_once(&mut self, channel: Channel) -> Result<()> {
        let mut client = Grpc::new(channel);
        let (tx, rx) = mpsc::channel(4);
        tx.send(self.limiter.report(&self.node_id))
            .await
            .map_err(|_| anyhow!("report stream closed"))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", self.auth.clone());
        let mut inbound = client.stream_quota(request).await?.into_inner();
        debug!("quota stream open");
        let mut last_report = Instant::now();
        let mut next_tick = last_report + self.limiter.report_interval();
        // One report at a time: the control plane answers each with one
        // message, and a report waits for the last one's answer (or for
        // ANSWER_WAIT), so a slow control plane never faces a backlog of
        // reports whose grants would arrive late. Reports carry totals, so
        // the one sent next says everything the skipped ones would have.
        let mut unanswered = true;
        let mut wanted = false;
        loop {
            let due = tokio::select! {
                m = inbound.message() => match m? {
                    Some(a) => {
                        self.backoff.reset();
                        self.limiter.apply(&a);
                        unanswered = false;
                        wanted
                    }
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(next_tick.into()) => {
                    next_tick = Instant::now() + self.limiter.report_interval();
                    self.limiter.prune(now_ms(), IDLE_MS);
                    // With no buckets, a report every half lease still: the
                    // control plane counts the data planes that reported
                    // within a lease (the divisor of every slack and
                    // fallback share), and this one learns the count.
                    self.limiter.has_buckets() || last_report.elapsed() >= self.limiter.heartbeat()
                }
                () = self.limiter.changed.notified() => {
                    tokio::time::sleep_until((last_report + MIN_REPORT_GAP).into()).await;
                    true
                }
            };
            wanted |= due;
            if wanted && (!unanswered || last_report.elapsed() >= ANSWER_WAIT) {
                wanted = false;
                unanswered = true;
                last_report = Instant::now();
                next_tick = last_report + self.limiter.report_interval();
                tx.send(self.limiter.report(&self.node_id))
                    .await
                    .map_err(|_| anyhow!("report stream closed"))?;
            }
        }
    }
}

impl Limiter {
    /// Notes whether the quota stream is open (and has answered).
    pub(crate) fn set_open(&self, open: bool) {
        let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        link.open = open && link.heard.is_some();
    }

    /// How often to report: every second, or every third of a lease when
    /// the control plane's lease is shorter than three seconds.
    fn report_interval(&self) -> Duration {
        REPORT_INTERVAL
            .min(self.link().lease / 3)
            .max(MIN_REPORT_GAP)
    }

    /// How often a data plane with no buckets reports: half a lease.
    fn heartbeat(&self) -> Duration {
        (self.link().lease / 2).max(MIN_REPORT_GAP)
    }

    fn has_buckets(&self) -> bool {
        self.entries
            .iter()
            .any(|m| !m.read().unwrap_or_else(|e| e.into_inner()).is_empty())
    }

    /// A report of every bucket: its window, use and what it wants.
    pub(crate) fn report(&self, node_id: &str) -> pb::QuotaReport {
        let now = now_ms();
        let link = self.link();
        let lease_ms = link.lease.as_millis() as i64;
        let mut usage = Vec::new();
        for entry in self.all_entries() {
            let mut st = entry.lock();
            let Some(limits) = st.limits else { continue };
            for (kind, limit) in limits.kinds() {
                let b = st.bucket(kind, limit, &limits, limits.window(kind, now).0);
                let wanted = b.wanted(link.data_planes, now, lease_ms);
                usage.push(pb::BucketUsage {
                    bucket: Some(pb::BucketId::from(&BucketId::new(
                        entry.scope,
                        entry.name.clone(),
                        kind,
                    ))),
                    window_start_ms: b.window_start_ms,
                    used: b.used,
                    in_flight: if kind == Kind::Concurrency { b.used } else { 0 },
                    wanted,
                });
            }
        }
        pb::QuotaReport {
            node_id: node_id.to_string(),
            usage,
        }
    }

    /// Takes the control plane's assignments.
    pub(crate) fn apply(&self, a: &pb::QuotaAssignments) {
        {
            let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
            link.heard = Some(Instant::now());
            link.open = true;
            if a.data_planes > 0 {
                link.data_planes = a.data_planes;
            }
            if a.lease_ms > 0 {
                link.lease = Duration::from_millis(a.lease_ms.into());
            }
        }
        for x in &a.assignments {
            let Some(id) = x.bucket.as_ref() else {
                continue;
            };
            let (Some(scope), Some(kind)) = (Scope::parse(&id.scope), Kind::parse(&id.kind)) else {
                continue;
            };
            let entry = {
                let map = self.entries[super::scope_index(scope)]
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                match map.get(id.name.as_str()) {
                    Some(e) => Arc::clone(e),
                    None => continue,
                }
            };
            let mut st = entry.lock();
            // Brought to the current window first: the assignment may be
            // for a window this bucket has not seen yet.
            if let (Some(limits), Some(limit)) = (st.limits, st.limits.and_then(|l| l.get(kind))) {
                st.bucket(kind, limit, &limits, limits.window(kind, now_ms()).0);
            }
            if let Some(b) = st.buckets[super::kind_index(kind)].as_mut() {
                b.assign(
                    x.window_start_ms,
                    x.granted,
                    x.limit,
                    x.fleet_used,
                    x.expires_at_ms,
                );
            }
        }
        self.applied.send_modify(|n| *n += 1);
    }
}
