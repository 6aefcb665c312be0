//! The live view of requests in flight and admin cancel (#17): the `Live`
//! gRPC service that data planes report their requests on
//! (proto/llmgw/v1/live.proto), and what the admin API's `ListInFlight`,
//! `WatchInFlight` and `CancelRequest` need.
//!
//! Reports are stored in `live_requests` (`store::live`) by the control
//! plane that holds the data plane's stream, so every control plane on the
//! same database lists the same view. A cancel is sent down the stream if
//! this control plane holds it; otherwise (PostgreSQL) a NOTIFY on
//! [`LIVE_CHANNEL`] reaches the control plane that does, which LISTENs as
//! the hub does for configuration changes. Watches read the table again on
//! every change this control plane stores (at most every
//! [`WATCH_MIN_GAP`]), and at least every [`WATCH_EVERY`] (for changes
//! stored by the others).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use llmgw_proto::v1 as pb;
use secrecy::ExposeSecret;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::store::{rfc3339, Backend, LiveStream, Store, LIVE_CHANNEL};

/// How often a watch reads the table without a local change.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// The shortest time between two reads of one watch (many data planes'
/// reports wake it at most this often).
pub const WATCH_MIN_GAP: Duration = Duration::from_millis(200);
/// How often rows past their lease are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// How long a cancel waits for the data plane's answer.
const CANCEL_WAIT: Duration = Duration::from_secs(2);
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(200);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest node id accepted (a DNS name's length).
const MAX_NODE_ID: usize = 253;

type Commands = mpsc::Sender<Result<pb::LiveCommand, Status>>;

/// The live view of this control plane: its streams, the cancels waiting
/// for an answer, and a counter that moves on every stored change.
#[derive(Clone)]
pub struct LiveHub {
    store: Store,
    /// This control plane's name in `live_requests.control_plane` and in
    /// who cancelled.
    id: Arc<str>,
    streams: Arc<Mutex<HashMap<String, Commands>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<bool>>>>,
    changes: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub").field("id", &self.id).finish()
    }
}

/// This process's name: the host and a random suffix.
fn control_plane_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control-plane".into());
    format!("{host}#{:08x}", rand::random::<u32>())
}

impl LiveHub {
    pub fn new(store: Store) -> Self {
        let (changes, _) = watch::channel(0);
        LiveHub {
            store,
            id: control_plane_id().into(),
            streams: Arc::default(),
            waiting: Arc::default(),
            changes: Arc::new(changes),
        }
    }

    /// This control plane's name in the live view.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The requests in flight, oldest first.
    pub async fn list(&self, node_id: &str) -> Result<Vec<pb::InFlightRequest>, Status> {
        let now = self.store.live_clock_ms().await?;
        Ok(self.store.live_list(node_id, now).await?)
    }

    /// A full list, then the changes, until the client leaves or
    /// `shutdown` turns true.
    pub fn watch(
        &self,
        node_id: String,
        mut shutdown: Option<watch::Receiver<bool>>,
    ) -> Pin<Box<dyn Stream<Item = Result<pb::InFlightEvent, Status>> + Send>> {
        let (tx, rx) = mpsc::channel(16);
        let hub = self.clone();
        let mut changes = self.changes.subscribe();
        tokio::spawn(async move {
            let mut known: HashMap<String, pb::InFlightRequest> = HashMap::new();
            let mut first = true;
            loop {
                let read_at = tokio::time::Instant::now();
                let now = match hub.list(&node_id).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let event = diff(&mut known, now, first);
                if first || !event.upserts.is_empty() || !event.ended.is_empty() {
                    first = false;
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                let stop = async {
                    match shutdown.as_mut() {
                        Some(s) => {
                            let _ = s.wait_for(|s| *s).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let wait = async {
                    tokio::select! {
                        _ = changes.changed() => {}
                        () = tokio::time::sleep(WATCH_EVERY) => {}
                    }
                    tokio::time::sleep_until(read_at + WATCH_MIN_GAP).await;
                };
                tokio::select! {
                    () = wait => {}
                    () = tx.closed() => return,
                    () = stop => return,
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    /// Cancels request `id` on the data plane serving it.
    pub async fn cancel(&self, id: &str) -> Result<pb::CancelRequestResponse, Status> {
        let id = id.trim();
        if id.is_empty() {
            return Err(Status::invalid_argument("a request id is required"));
        }
        let now = self.store.live_clock_ms().await?;
        let Some(owner) = self.store.live_owner(id, now).await? else {
            return Err(match self.store.logged_status(id).await? {
                Some(status) => Status::failed_precondition(format!(
                    "request {id} has already ended (logged with status {status}); \
                     there is nothing to cancel"
                )),
                None => Status::not_found(format!(
                    "no request {id} is in flight on any data plane \
                     (the id is unknown, or the request ended moments ago)"
                )),
            });
        };
        let by = format!(
            "an admin (admin token) through control plane {} at {}",
            self.id,
            rfc3339(Some(now))
        );
        let mut answer = pb::CancelRequestResponse {
            id: id.to_string(),
            node_id: owner.node_id.clone(),
            by: by.clone(),
            confirmed: false,
        };
        let local = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&owner.stream_id)
            .cloned();
        let Some(commands) = local else {
            if self.store.backend() != Backend::Postgres || owner.control_plane == *self.id {
                return Err(Status::unavailable(format!(
                    "data plane {} is no longer connected; request {id} will be dropped from \
                     the live view when its lease runs out",
                    owner.node_id
                )));
            }
            self.store
                .live_notify_cancel(&owner.stream_id, id, &by)
                .await?;
            // Confirmed when the data plane reports the request ended.
            let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = self.store.live_clock_ms().await?;
                if self.store.live_owner(id, now).await?.is_none() {
                    answer.confirmed = true;
                    break;
                }
            }
            return Ok(answer);
        };
        let (done, heard) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), done);
        let command = pb::LiveCommand {
            cancel: Some(pb::CancelInFlight {
                id: id.to_string(),
                by,
            }),
        };
        if commands.send(Ok(command)).await.is_err() {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
            return Err(Status::unavailable(format!(
                "data plane {}'s stream closed; try again",
                owner.node_id
            )));
        }
        let found = tokio::time::timeout(CANCEL_WAIT, heard).await;
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        match found {
            Ok(Ok(true)) => answer.confirmed = true,
            Ok(Ok(false)) => {
                return Err(Status::failed_precondition(format!(
                    "request {id} has already ended: it ended on data plane {} \
                     before the cancel reached it",
                    owner.node_id
                )))
            }
            // No answer in time: sent, not confirmed.
            _ => {}
        }
        Ok(answer)
    }

    /// A cancel heard through NOTIFY: passed on if this control plane
    /// holds the stream.
    async fn forward(&self, payload: &str) {
        let mut parts = payload.splitn(3, '\t');
        let (Some(stream), Some(id), Some(by)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let local = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned();
        if let Some(commands) = local {
            tracing::info!(id, "passing on a cancel from another control plane");
            let _ = commands
                .send(Ok(pb::LiveCommand {
                    cancel: Some(pb::CancelInFlight {
                        id: id.to_string(),
                        by: by.to_string(),
                    }),
                }))
                .await;
        }
    }

    /// PostgreSQL only: passes on cancels sent through other control
    /// planes, until `shutdown`. The listening connection is opened again
    /// after a failure.
    pub async fn listen(self, mut shutdown: watch::Receiver<bool>) {
        if self.store.backend() != Backend::Postgres {
            return;
        }
        let mut backoff = LISTEN_BACKOFF_MIN;
        loop {
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                e = self.listen_once() => e,
                _ = shutdown.changed() => return,
            };
            tracing::warn!(error = %outcome, "live cancel listener lost; reconnecting");
            if started.elapsed() > LISTEN_BACKOFF_MAX {
                backoff = LISTEN_BACKOFF_MIN;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
        }
    }

    async fn listen_once(&self) -> sqlx::Error {
        let mut listener = match PgListener::connect(self.store.url().expose_secret()).await {
            Ok(l) => l,
            Err(e) => return e,
        };
        if let Err(e) = listener.listen(LIVE_CHANNEL).await {
            return e;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => self.forward(n.payload()).await,
                Ok(None) => return sqlx::Error::PoolClosed,
                Err(e) => return e,
            }
        }
    }

    /// Deletes rows past their lease, now and then, until `shutdown`.
    pub async fn prune(self, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let pruned = match self.store.live_clock_ms().await {
                Ok(now) => self.store.live_prune(now).await,
                Err(e) => Err(e),
            };
            match pruned {
                Ok(0) => {}
                Ok(rows) => {
                    tracing::info!(rows, "dropped requests in flight whose lease ran out");
                    self.changed();
                }
                Err(e) => tracing::warn!(error = %e, "cannot prune the live view"),
            }
        }
    }
}

/// The changes from `known` to `now` (everything when `full`); `known`
/// becomes `now`.
fn diff(
    known: &mut HashMap<String, pb::InFlightRequest>,
    now: Vec<pb::InFlightRequest>,
    full: bool,
) -> pb::InFlightEvent {
    let same = |a: &pb::InFlightRequest, b: &pb::InFlightRequest| {
        a.attempt == b.attempt
            && a.tokens == b.tokens
            && a.provider == b.provider
            && a.upstream_model == b.upstream_model
            && a.node_id == b.node_id
    };
    let mut upserts = Vec::new();
    let mut next = HashMap::with_capacity(now.len());
    for r in now {
        if full || known.get(&r.id).is_none_or(|k| !same(k, &r)) {
            upserts.push(r.clone());
        }
        next.insert(r.id.clone(), r);
    }
    let mut ended: Vec<String> = known
        .keys()
        .filter(|id| !next.contains_key(*id))
        .cloned()
        .collect();
    ended.sort();
    *known = next;
    pb::InFlightEvent {
        full,
        upserts,
        ended,
        count: u32::try_from(known.len()).unwrap_or(u32::MAX),
    }
}

/// The `Live` service data planes report on.
#[derive(Debug, Clone)]
pub struct LiveService {
    hub: LiveHub,
    shutdown: watch::Receiver<bool>,
}

impl LiveService {
    pub fn new(hub: LiveHub, shutdown: watch::Receiver<bool>) -> Self {
        LiveService { hub, shutdown }
    }
}

type CommandStream = Pin<Box<dyn Stream<Item = Result<pb::LiveCommand, Status>> + Send>>;

#[tonic::async_trait]
impl pb::live_server::Live for LiveService {
    type StreamStream = CommandStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::LiveReport>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(session(
            self.hub.clone(),
            inbound,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One data plane's live stream: each report stored, cancels' answers
/// handed to whoever waits; its rows deleted when it ends.
async fn session(
    hub: LiveHub,
    mut inbound: Streaming<pb::LiveReport>,
    tx: Commands,
    mut shutdown: watch::Receiver<bool>,
) {
    let stream_id = uuid::Uuid::now_v7().to_string();
    let mut stream: Option<LiveStream> = None;
    loop {
        let report = tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "live stream broke");
                    break;
                }
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let s = match &stream {
            Some(s) => s,
            None => {
                if report.node_id.is_empty() || report.node_id.len() > MAX_NODE_ID {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "a live report needs a node_id of 1 to 253 characters",
                        )))
                        .await;
                    return;
                }
                hub.streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(stream_id.clone(), tx.clone());
                tracing::info!(node_id = %report.node_id, "live stream open");
                stream.insert(LiveStream {
                    stream_id: stream_id.clone(),
                    control_plane: hub.id.to_string(),
                    node_id: report.node_id.clone(),
                    incarnation: if report.incarnation.is_empty() {
                        report.node_id.clone()
                    } else {
                        report.incarnation.clone()
                    },
                })
            }
        };
        for c in &report.cancelled {
            let waiter = hub
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&c.id);
            if let Some(w) = waiter {
                let _ = w.send(c.found);
            }
        }
        let moved = report.full || !report.upserts.is_empty() || !report.ended.is_empty();
        let applied = match hub.store.live_clock_ms().await {
            Ok(now) => hub.store.live_apply(s, &report, now).await,
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            tracing::warn!(error = %e, node_id = %s.node_id, "cannot store a live report");
        }
        if moved {
            hub.changed();
        }
    }
    hub.streams
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&stream_id);
    if let Some(s) = stream {
        match hub.store.live_stream_ended(&stream_id).await {
            Ok(n) => tracing::info!(node_id = %s.node_id, dropped = n, "live stream ended"),
            Err(e) => tracing::warn!(error = %e, "cannot drop an ended stream's requests"),
        }
        hub.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, tokens: u64) -> pb::InFlightRequest {
        pb::InFlightRequest {
            id: id.into(),
            tokens,
            ..Default::default()
        }
    }

    #[test]
    fn a_watch_sends_only_what_changed() {
        let mut known = HashMap::new();
        let e = diff(&mut known, vec![req("a", 0), req("b", 0)], true);
        assert!(e.full && e.upserts.len() == 2 && e.count == 2);
        let e = diff(&mut known, vec![req("a", 0), req("b", 3)], false);
        assert_eq!(e.upserts.len(), 1);
        assert_eq!(e.upserts[0].id, "b");
        let e = diff(&mut known, vec![req("b", 3)], false);
        assert!(e.upserts.is_empty());
        assert_eq!(e.ended, vec!["a".to_string()]);
        assert_eq!(e.count, 1);
    }
}
