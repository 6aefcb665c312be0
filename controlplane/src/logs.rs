//! Request logs: ingest from data planes (the `Logs.Ship` stream), the admin
//! queries over them (`ListLogs`, `GetLog`, `FollowLogs`, `GetStats`) and
//! the retention job.
//!
//! - [`ingest`] validates and stores one batch in one transaction,
//!   idempotently by record id, quarantining what cannot be stored.
//! - [`query`] builds the list and get statements (filters pushed into SQL
//!   with bound parameters, keyset pagination) and runs them.
//! - [`rollup`] keeps per-minute, hourly and daily aggregates at ingest,
//!   with mergeable latency sketches ([`sketch`]).
//! - [`stats`] answers from the rollups, or from the matching raw rows for
//!   filters the rollups cannot answer, and says which.
//! - [`details`] stores each record's headers and bodies apart from its
//!   summary, compressed with zstd.
//! - [`retention`] deletes old rows in small batches, bodies earlier and
//!   rollups later.
//! - [`LogFeed`] carries freshly stored records to `FollowLogs` streams.

mod account;
pub mod blocks;
pub mod copy;
pub mod deltas;
pub mod details;
pub mod export;
pub mod ingest;
pub mod pieces;
pub mod query;
pub mod reindex;
pub mod retention;
pub mod rollup;
mod row;
pub mod sketch;
pub mod sql;
pub mod stats;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use llmgw_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::store::Store;

pub use row::{format_time, id_text, stored_id, strip_details};

/// How many stored records a slow `FollowLogs` stream may fall behind
/// before it is ended.
const FEED_CAPACITY: usize = 4096;
/// Largest `LogBatch` accepted, in bytes (bodies make records big).
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Freshly stored records, published after their transaction commits.
/// Publishing never waits: a follower that falls behind by more than
/// [`FEED_CAPACITY`] records is told so and its stream ends.
#[derive(Debug, Clone)]
pub struct LogFeed {
    tx: broadcast::Sender<Arc<pb::RequestLog>>,
}

impl Default for LogFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LogFeed {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        LogFeed { tx }
    }

    /// Publishes stored records (without headers and bodies).
    pub fn publish(&self, records: Vec<pb::RequestLog>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for r in records {
            // Only fails when nobody listens, which is fine.
            let _ = self.tx.send(Arc::new(r));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<pb::RequestLog>> {
        self.tx.subscribe()
    }

    /// A stream of newly stored records matching `filter`. It ends when the
    /// client goes away, when `shutdown` turns true, or with
    /// `RESOURCE_EXHAUSTED` when the client reads too slowly to keep up.
    pub fn follow(
        &self,
        filter: pb::LogFilter,
        shutdown: Option<watch::Receiver<bool>>,
    ) -> Result<LogStream, Status> {
        // Same validation as the SQL queries, so a bad filter fails here.
        sql::Filter::parse(&filter)?;
        // Subscribed before answering: once the client has the response
        // headers, every record stored afterwards reaches it.
        let mut rx = self.subscribe();
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut shutdown = shutdown;
            loop {
                let item = tokio::select! {
                    _ = shutdown_signal(&mut shutdown) => break,
                    _ = tx.closed() => break,
                    r = rx.recv() => r,
                };
                let send = match item {
                    Ok(rec) if sql::matches(&filter, &rec) => Ok((*rec).clone()),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        Err(Status::resource_exhausted(format!(
                            "this follower fell behind and {n} records were skipped; \
                             follow again, and use ListLogs for the gap"
                        )))
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let last = send.is_err();
                tokio::select! {
                    sent = tx.send(send) => if sent.is_err() { break },
                    _ = shutdown_signal(&mut shutdown) => break,
                }
                if last {
                    break;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(out)))
    }
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<pb::RequestLog, Status>> + Send>>;
type AckStream = Pin<Box<dyn Stream<Item = Result<pb::LogAck, Status>> + Send>>;

/// Resolves when the watched flag turns true or its sender is gone (the
/// server is no more); never without a channel.
pub async fn shutdown_signal(rx: &mut Option<watch::Receiver<bool>>) {
    match rx.as_mut() {
        Some(r) => {
            let _ = r.wait_for(|s| *s).await;
        }
        None => futures::future::pending::<()>().await,
    }
}

/// The `Logs` gRPC service data planes ship their request records to.
#[derive(Debug, Clone)]
pub struct LogsService {
    store: Store,
    feed: LogFeed,
    shutdown: watch::Receiver<bool>,
}

impl LogsService {
    pub fn new(store: Store, feed: LogFeed, shutdown: watch::Receiver<bool>) -> Self {
        LogsService {
            store,
            feed,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl pb::logs_server::Logs for LogsService {
    type ShipStream = AckStream;

    async fn ship(
        &self,
        request: Request<Streaming<pb::LogBatch>>,
    ) -> Result<Response<Self::ShipStream>, Status> {
        let peer = llmgw_listener::remote_addr(request.extensions())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(ship_loop(
            self.store.clone(),
            self.feed.clone(),
            inbound,
            tx,
            Some(self.shutdown.clone()),
            peer,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Stores batches one at a time, in order, answering each after its commit.
/// A batch being stored is finished (and acknowledged) before a shutdown
/// ends the stream.
async fn ship_loop(
    store: Store,
    feed: LogFeed,
    mut inbound: Streaming<pb::LogBatch>,
    tx: mpsc::Sender<Result<pb::LogAck, Status>>,
    mut shutdown: Option<watch::Receiver<bool>>,
    peer: String,
) {
    let mut node = String::new();
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown_signal(&mut shutdown) => break,
            _ = tx.closed() => break,
            m = inbound.message() => m,
        };
        let batch = match msg {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(peer, node_id = node, error = %e, "log stream ended");
                break;
            }
        };
        if node.is_empty() && !batch.node_id.is_empty() {
            node = batch.node_id.clone();
            tracing::info!(peer, node_id = node, "data plane is shipping logs");
        }
        let (batch_node, last_sequence, records) = (
            batch.node_id.clone(),
            batch.last_sequence,
            batch.records.len(),
        );
        let span = crate::telemetry::log_ingest(&batch_node, records);
        match tracing::Instrument::instrument(ingest::store_batch(&store, batch), span).await {
            Ok(done) => {
                tracing::debug!(
                    node_id = batch_node,
                    sequence = last_sequence,
                    records,
                    stored = done.stored.len(),
                    quarantined = done.quarantined.len(),
                    "log batch stored"
                );
                feed.publish(done.stored);
                let ack = pb::LogAck {
                    acked_sequence: last_sequence,
                    quarantined_ids: done.quarantined,
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(
                    node_id = batch_node,
                    sequence = last_sequence,
                    error = %e,
                    "cannot store a log batch; the data plane will resend it"
                );
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the control plane cannot store logs right now; resend later",
                    )))
                    .await;
                break;
            }
        }
    }
}
