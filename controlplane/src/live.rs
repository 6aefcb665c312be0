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
//!
//! The same streams carry replay's and the playground's single-use grants
//! ([`LiveHub::grant`]): each data plane reports where its proxy listens,
//! and a grant goes down the stream of a data plane this control plane
//! holds, which acknowledges it before `run` sends the request there.

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
/// Who waits for a data plane's answer to a grant: `Err` says why it was
/// refused.
/// A grant waiting for its answer, and the stream it was sent down (its
/// waiter is dropped, failing the wait at once, when that stream ends).
type GrantWaiter = (String, oneshot::Sender<Result<(), String>>);

/// One data plane's live stream held by this control plane.
#[derive(Clone)]
struct Held {
    commands: Commands,
    stream_id: String,
    node_id: String,
    /// Where its proxy is reached (replay and playground): its
    /// `--advertise-url`, else `http://{peer ip}:{proxy port}`; `None`
    /// when it reported neither (an older data plane).
    base_url: Option<String>,
}

/// A grant a data plane acknowledged (see [`LiveHub::grant`]): the token
/// to send as the request's bearer, and where to send it.
pub struct Granted {
    pub token: secrecy::SecretString,
    pub node_id: String,
    pub base_url: String,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Granted")
            .field("token", &"<redacted>")
            .field("node_id", &self.node_id)
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// How long a grant may wait for its request on the data plane.
pub const GRANT_TTL: Duration = Duration::from_secs(30);
/// How long a grant waits for the data plane's acknowledgement.
const GRANT_WAIT: Duration = Duration::from_secs(2);

/// The live view of this control plane: its streams, the cancels waiting
/// for an answer, and a counter that moves on every stored change.
#[derive(Clone)]
pub struct LiveHub {
    store: Store,
    /// This control plane's name in `live_requests.control_plane` and in
    /// who cancelled.
    id: Arc<str>,
    streams: Arc<Mutex<HashMap<String, Held>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<bool>>>>,
    /// Grants sent, waiting for their data plane's answer, by grant id.
    granting: Arc<Mutex<HashMap<String, GrantWaiter>>>,
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
            granting: Arc::default(),
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
            .map(|h| h.commands.clone());
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
            grant: None,
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

    /// Makes a single-use grant to send one request as client key `key`
    /// (replay and playground): a random token whose SHA-256 goes to a
    /// data plane whose live stream this control plane holds (the one
    /// named `node_id`, else any), which must acknowledge it within
    /// [`GRANT_WAIT`]. The token itself never leaves this process but in
    /// the request that uses it.
    pub async fn grant(
        &self,
        node_id: &str,
        key: &str,
        origin: &str,
        replay_of: &str,
    ) -> Result<Granted, Status> {
        let held = self.pick_waiting(node_id).await?;
        let base_url = held.base_url.clone().ok_or_else(|| {
            Status::failed_precondition(format!(
                "data plane {} does not say where its proxy listens (upgrade it)",
                held.node_id
            ))
        })?;
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        let token = format!("{}{}", GRANT_PREFIX, hex::encode(secret));
        let hash = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).to_vec();
        let id = uuid::Uuid::new_v4().to_string();
        let (done, heard) = oneshot::channel();
        self.granting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), (held.stream_id.clone(), done));
        let command = pb::LiveCommand {
            cancel: None,
            grant: Some(pb::Grant {
                id: id.clone(),
                token_sha256: hash,
                key: key.to_string(),
                origin: origin.to_string(),
                replay_of: replay_of.to_string(),
                ttl_ms: u32::try_from(GRANT_TTL.as_millis()).unwrap_or(u32::MAX),
            }),
        };
        // None: the stream closed; Some(None): no answer in time.
        // One bound over the send (a data plane that stops reading its
        // commands fills the channel) and the answer.
        let deadline = tokio::time::Instant::now() + GRANT_WAIT;
        let answer = match tokio::time::timeout_at(deadline, held.commands.send(Ok(command))).await
        {
            Ok(Ok(())) => match tokio::time::timeout_at(deadline, heard).await {
                Ok(Ok(a)) => Some(Some(a)),
                Ok(Err(_)) => None,
                Err(_) => Some(None),
            },
            Ok(Err(_)) => None,
            Err(_) => Some(None),
        };
        self.granting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match answer {
            Some(Some(Ok(()))) => Ok(Granted {
                token: token.into(),
                node_id: held.node_id,
                base_url,
            }),
            Some(Some(Err(why))) => Err(Status::unavailable(format!(
                "data plane {} refused the grant: {why}",
                held.node_id
            ))),
            None => Err(Status::unavailable(format!(
                "data plane {}'s live stream closed; try again",
                held.node_id
            ))),
            Some(None) => Err(Status::unavailable(format!(
                "data plane {} did not acknowledge the grant within {} s",
                held.node_id,
                GRANT_WAIT.as_secs()
            ))),
        }
    }

    /// [`Self::pick`], waiting up to [`GRANT_WAIT`] for a stream to open
    /// when there is none yet (a data plane that just connected, or
    /// reconnects after this control plane restarted).
    async fn pick_waiting(&self, node_id: &str) -> Result<Held, Status> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + GRANT_WAIT;
        loop {
            match self.pick(node_id) {
                Ok(h) => return Ok(h),
                Err(e) => {
                    let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
                    if !matches!(changed, Ok(Ok(()))) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The stream of data plane `node_id` held here, else any stream held
    /// here whose data plane said where its proxy listens.
    fn pick(&self, node_id: &str) -> Result<Held, Status> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let node_id = node_id.trim();
        if !node_id.is_empty() {
            return streams
                .values()
                .filter(|h| h.node_id == node_id)
                .max_by_key(|h| h.base_url.is_some())
                .cloned()
                .ok_or_else(|| {
                    Status::unavailable(format!(
                        "data plane {node_id} is not connected to this control plane \
                         (a replay or playground request goes through a data plane \
                         whose live stream this control plane holds)"
                    ))
                });
        }
        let mut candidates: Vec<&Held> =
            streams.values().filter(|h| h.base_url.is_some()).collect();
        if candidates.is_empty() {
            return Err(Status::unavailable(if streams.is_empty() {
                "no data plane is connected to this control plane"
            } else {
                "no data plane connected to this control plane says where its proxy \
                 listens (upgrade them)"
            }));
        }
        let i = rand::random::<usize>() % candidates.len();
        Ok(candidates.swap_remove(i).clone())
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
            .map(|h| h.commands.clone());
        if let Some(commands) = local {
            tracing::info!(id, "passing on a cancel from another control plane");
            let _ = commands
                .send(Ok(pb::LiveCommand {
                    cancel: Some(pb::CancelInFlight {
                        id: id.to_string(),
                        by: by.to_string(),
                    }),
                    grant: None,
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

/// The header a data plane names a request's id in.
pub const REQUEST_ID_HEADER: &str = "x-llmgw-request-id";

/// The prefix of grant tokens (the data plane looks up only those).
pub use llmgw_core::keys::GRANT_PREFIX;

/// Where a data plane's proxy is reached, from its first report: its
/// advertised URL (checked again: it is a data plane's word), else
/// `http://{peer}:{proxy_port}`.
fn proxy_url(report: &pb::LiveReport, peer: Option<std::net::IpAddr>) -> Option<String> {
    if !report.advertise_url.is_empty() {
        return llmgw_core::validate::base_url(&report.advertise_url).ok();
    }
    let port = u16::try_from(report.proxy_port).ok().filter(|p| *p != 0)?;
    Some(format!("http://{}", std::net::SocketAddr::new(peer?, port)))
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
        // Authenticated data planes only reach this: their address is
        // where their proxy is, when they advertise no URL.
        let peer = llmgw_listener::remote_addr(request.extensions()).map(|a| a.ip());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(session(
            self.hub.clone(),
            inbound,
            tx,
            peer,
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
    peer: Option<std::net::IpAddr>,
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
                let held = Held {
                    commands: tx.clone(),
                    stream_id: stream_id.clone(),
                    node_id: report.node_id.clone(),
                    base_url: proxy_url(&report, peer),
                };
                hub.streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(stream_id.clone(), held);
                // A replay or playground request waiting for a data plane
                // may take this one now.
                hub.changed();
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
        for g in &report.granted {
            let waiter = hub
                .granting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&g.id);
            if let Some((_, w)) = waiter {
                let _ = w.send(if g.accepted {
                    Ok(())
                } else {
                    Err(g.error.clone())
                });
            }
        }
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
    // Grants sent down this stream will get no answer.
    hub.granting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|_, (sent_on, _)| *sent_on != stream_id);
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

    async fn hub() -> LiveHub {
        let sealer = crate::secrets::Sealer::new(
            &secrecy::SecretString::from(crate::secrets::generate_master_key()),
            &[],
        )
        .unwrap();
        let store = Store::open("sqlite::memory:", Arc::new(sealer))
            .await
            .unwrap();
        LiveHub::new(store)
    }

    /// A data plane's stream held by `hub`: its commands arrive on the
    /// receiver returned.
    fn hold(
        hub: &LiveHub,
        stream: &str,
        node: &str,
        base_url: Option<&str>,
    ) -> mpsc::Receiver<Result<pb::LiveCommand, Status>> {
        let (tx, rx) = mpsc::channel(1);
        hub.streams.lock().unwrap().insert(
            stream.into(),
            Held {
                commands: tx,
                stream_id: stream.into(),
                node_id: node.into(),
                base_url: base_url.map(str::to_string),
            },
        );
        rx
    }

    /// Answers the next grant on `rx` as the data plane would.
    async fn answer(
        hub: &LiveHub,
        rx: &mut mpsc::Receiver<Result<pb::LiveCommand, Status>>,
        accept: bool,
    ) -> pb::Grant {
        let g = rx.recv().await.unwrap().unwrap().grant.unwrap();
        let (_, w) = hub.granting.lock().unwrap().remove(&g.id).unwrap();
        w.send(if accept {
            Ok(())
        } else {
            Err("bad grant".into())
        })
        .unwrap();
        g
    }

    #[tokio::test]
    async fn a_grant_goes_to_the_named_data_plane_and_its_token_matches_the_hash() {
        let hub = hub().await;
        let mut a = hold(&hub, "s-a", "dp-a", Some("http://10.0.0.1:8080"));
        let _b = hold(&hub, "s-b", "dp-b", Some("http://10.0.0.2:8080"));
        let (granted, g) = tokio::join!(
            hub.grant("dp-a", "k", "replay", "orig"),
            answer(&hub, &mut a, true)
        );
        let granted = granted.unwrap();
        assert_eq!(granted.node_id, "dp-a");
        assert_eq!(granted.base_url, "http://10.0.0.1:8080");
        assert_eq!(
            (g.key.as_str(), g.origin.as_str(), g.replay_of.as_str()),
            ("k", "replay", "orig")
        );
        let token = granted.token.expose_secret();
        assert!(token.starts_with(GRANT_PREFIX));
        assert_eq!(
            g.token_sha256,
            <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).to_vec()
        );
        assert!(!format!("{:?}", g).contains(token));
    }

    #[tokio::test]
    async fn a_refused_grant_says_why() {
        let hub = hub().await;
        let mut a = hold(&hub, "s-a", "dp-a", Some("http://10.0.0.1:8080"));
        let (granted, _) = tokio::join!(
            hub.grant("", "k", "playground", ""),
            answer(&hub, &mut a, false)
        );
        let e = granted.err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(
            e.message().contains("refused the grant: bad grant"),
            "{}",
            e.message()
        );
    }

    #[tokio::test]
    async fn no_answer_no_data_plane_or_no_address_fail_within_the_bound() {
        let hub = hub().await;
        // The store is open; the grants below do not touch it.
        tokio::time::pause();
        // Nobody holds a stream: UNAVAILABLE after waiting for one.
        let e = hub.grant("", "k", "replay", "").await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(
            e.message().contains("no data plane is connected"),
            "{}",
            e.message()
        );
        // A named data plane held elsewhere.
        let _a = hold(&hub, "s-a", "dp-a", Some("http://10.0.0.1:8080"));
        let e = hub.grant("dp-x", "k", "replay", "").await.err().unwrap();
        assert!(
            e.message().contains("dp-x is not connected"),
            "{}",
            e.message()
        );
        // One that never answers: the wait ends at GRANT_WAIT.
        let started = tokio::time::Instant::now();
        let e = hub.grant("dp-a", "k", "replay", "").await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(started.elapsed() <= GRANT_WAIT + Duration::from_millis(10));
        // One whose command channel is full (it stopped reading): the same
        // bound holds for the send.
        let started = tokio::time::Instant::now();
        let e = hub.grant("dp-a", "k", "replay", "").await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(started.elapsed() <= GRANT_WAIT + Duration::from_millis(10));
        assert!(
            hub.granting.lock().unwrap().is_empty(),
            "waiters are cleaned up"
        );
        // A data plane that did not say where its proxy is.
        let _old = hold(&hub, "s-old", "dp-old", None);
        let e = hub.grant("dp-old", "k", "replay", "").await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }

    fn req(id: &str, tokens: u64) -> pb::InFlightRequest {
        pb::InFlightRequest {
            id: id.into(),
            tokens,
            ..Default::default()
        }
    }

    #[test]
    fn the_proxy_url_is_advertised_or_the_peer_and_port() {
        let mut r = pb::LiveReport {
            proxy_port: 8000,
            ..Default::default()
        };
        let v4 = Some("10.0.0.7".parse().unwrap());
        assert_eq!(proxy_url(&r, v4).as_deref(), Some("http://10.0.0.7:8000"));
        let v6 = Some("::1".parse().unwrap());
        assert_eq!(proxy_url(&r, v6).as_deref(), Some("http://[::1]:8000"));
        assert_eq!(proxy_url(&r, None), None);
        r.advertise_url = "https://DP.example/".into();
        assert_eq!(proxy_url(&r, v4).as_deref(), Some("https://dp.example"));
        r.advertise_url = "ftp://x".into();
        assert_eq!(proxy_url(&r, v4), None);
        r.advertise_url = String::new();
        r.proxy_port = 0;
        assert_eq!(proxy_url(&r, v4), None);
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
