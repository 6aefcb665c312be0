//! The log shipper: streams the spool to the control plane's `Logs.Ship`
//! and trims the spool behind its acknowledgements.
//!
//! The spool's writes wake the shipper (no polling); while it holds
//! records for a fuller batch, only a write that fills one, or after which
//! the held records are no longer in memory ([`super::wake`]).
//! Records go in batches of up to `batch_max_records` / `batch_max_bytes`,
//! with at most `window` unacknowledged batches in flight. A full batch
//! goes at once; records too few to fill one wait for more, up to about
//! `linger` from when the shipper first held them (as Kafka's `linger.ms`),
//! then go together.
//! The control plane stores each batch in one transaction, whose fixed
//! cost is many records' worth (docs/benchmarks.md, "Batches gathered for
//! the linger"): without the wait a moderate load went almost a record per
//! batch, since each acknowledgement came back before the next record.
//! A graceful shutdown ([`super::LogsHandle::flush`]) ends the holding.
//! Each acknowledgement covers every record up to its sequence; the spool is
//! trimmed to it. After any failure the stream is re-opened (next URL,
//! jittered backoff, forever) and everything after the last acknowledgement
//! is sent again: at-least-once delivery, which the control plane's
//! idempotent ingest (by record id) turns into exactly-once storage.
//!
//! Records travel as the bytes the spool holds ([`super::wire`]): the
//! shipper never decodes them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use http::Uri;
use llmgw_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel};
use tracing::{debug, error, info, warn};

use super::spool::{RawReadBatch, Spool};
use super::wake::Held;
use super::wire::{RawBatch, ShipCodec};
use crate::backoff::Backoff;

/// A stream that stayed up this long counts as healthy even without acks
/// (an idle data plane sends nothing), so the next reconnect is fast.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Quarantined ids quoted in one warning.
const QUARANTINE_IDS_LOGGED: usize = 10;

/// Counters shared with [`super::LogsHandle`].
#[derive(Debug, Default)]
pub(crate) struct ShipCounters {
    /// Records acknowledged by the control plane (quarantined included).
    pub shipped: AtomicU64,
    /// Batches acknowledged.
    pub batches: AtomicU64,
    /// Records the control plane quarantined.
    pub quarantined: AtomicU64,
    /// Streams opened.
    pub connects: AtomicU64,
    /// True while a stream is open.
    pub connected: AtomicBool,
}

pub(crate) struct Shipper {
    pub endpoints: Vec<Uri>,
    pub node_id: String,
    /// `Bearer <token>`, marked sensitive.
    pub auth: AsciiMetadataValue,
    pub tls_ca: Option<Certificate>,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub backoff: Backoff,
    pub spool: Arc<Spool>,
    pub counters: Arc<ShipCounters>,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub window: usize,
    /// How long records too few to fill a batch wait for more.
    pub linger: Duration,
    /// Set by a graceful shutdown ([`super::LogsHandle::flush`]): records
    /// are no longer held for the linger.
    pub draining: tokio::sync::watch::Receiver<bool>,
    pub ack_timeout: Duration,
    /// Acknowledgements that could not be recorded on disk, counted so
    /// that a lasting failure logs a line per power of two, not per batch.
    pub ack_failures: u64,
}

/// A batch sent and not yet acknowledged.
struct InFlight {
    last_seq: u64,
    records: u64,
}

impl Shipper {
    /// Ships to the control planes in turn, forever.
    pub async fn run(mut self) {
        let mut next = 0usize;
        loop {
            let Some(uri) = self
                .endpoints
                .get(next % self.endpoints.len().max(1))
                .cloned()
            else {
                error!("no control-plane URL configured; request logs stay in the spool");
                return;
            };
            next = next.wrapping_add(1);
            let opened = Instant::now();
            let result = self.ship_once(&uri).await;
            self.counters.connected.store(false, Ordering::Relaxed);
            match result {
                Ok(()) => info!(control_plane = %uri, "control plane ended the log stream"),
                Err(e) => match e.downcast_ref::<tonic::Status>() {
                    Some(s) if s.code() == tonic::Code::Unauthenticated => error!(
                        control_plane = %uri,
                        message = s.message(),
                        "control plane refused the data-plane token for log shipping"
                    ),
                    _ => {
                        warn!(control_plane = %uri, error = format!("{e:#}"), "log stream failed")
                    }
                },
            }
            if opened.elapsed() >= HEALTHY_AFTER {
                self.backoff.reset();
            }
            let delay = self.backoff.next_delay();
            debug!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting the log stream"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection and stream; returns when it ends or fails.
    async fn ship_once(&mut self, uri: &Uri) -> Result<()> {
        let channel = self.connect(uri).await?;
        let mut client = tonic::client::Grpc::new(channel);
        let window = self.window.max(1);
        let (tx, rx) = mpsc::channel::<RawBatch>(window);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", self.auth.clone());
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("llmgw.v1.Logs", "Ship"));
        client
            .ready()
            .await
            .map_err(|e| anyhow!("log stream not ready: {e}"))?;
        let path = http::uri::PathAndQuery::from_static("/llmgw.v1.Logs/Ship");
        let mut inbound = client
            .streaming(request, path, ShipCodec)
            .await?
            .into_inner();
        self.counters.connected.store(true, Ordering::Relaxed);
        self.counters.connects.fetch_add(1, Ordering::Relaxed);

        let written = self.spool.subscribe_written();
        let spool = Arc::clone(&self.spool);
        let wake = spool.ship_wake();
        let mut acked = self.spool.acked();
        // Everything after the last acknowledgement goes (again).
        let mut next = acked + 1;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        // When the oldest unacknowledged batch stops being waited for.
        let mut ack_deadline = Instant::now();
        // When records held back for a fuller batch go anyway: set when
        // records are first held, cleared once none is left waiting, so
        // what a batch's limits or a segment's end leave behind goes at
        // once if the linger has passed.
        let mut held_until: Option<Instant> = None;
        // A graceful shutdown waits for every record: nothing is held then.
        let mut draining = self.draining.clone();
        let mut drain = *draining.borrow_and_update();

        info!(
            control_plane = %uri,
            acked_sequence = acked,
            pending = self.spool.depth(),
            "log stream open"
        );

        loop {
            // Fill the window with what the spool holds.
            while in_flight.len() < window {
                // Any write wakes, until a hold is decided from what is
                // read next: none is missed between the two.
                wake.hold(None);
                let last_written = *written.borrow();
                if next > last_written {
                    held_until = None;
                    break;
                }
                // Too few for a full batch: held for more records, until
                // the linger has passed. Records no longer in memory are
                // old enough to go.
                if !drain
                    && !self.linger.is_zero()
                    && held_until.is_none_or(|t| Instant::now() < t)
                    && last_written - next + 1 < self.batch_max_records as u64
                    && self
                        .spool
                        .bytes_in_memory_from(next)
                        .is_some_and(|b| b < self.batch_max_bytes)
                {
                    held_until.get_or_insert_with(|| Instant::now() + self.linger);
                    wake.hold(Some(Held {
                        from: next,
                        max_records: self.batch_max_records as u64,
                        max_bytes: self.batch_max_bytes,
                    }));
                    break;
                }
                let (max_records, max_bytes) = (self.batch_max_records, self.batch_max_bytes);
                // What was just written is read from memory; the rest
                // from the file, on a blocking thread.
                let read = match self.spool.read_raw_in_memory(next, max_records, max_bytes) {
                    Some(read) => read,
                    None => {
                        let spool = Arc::clone(&self.spool);
                        tokio::task::spawn_blocking(move || {
                            spool.read_raw_from(next, max_records, max_bytes)
                        })
                        .await
                        .context("spool read task")?
                        .context("reading the spool")?
                    }
                };
                let RawReadBatch { records, next_seq } = read;
                next = next_seq.max(next + 1);
                let Some(last_seq) = records.last().map(|r| r.sequence) else {
                    continue;
                };
                let n = records.len() as u64;
                if in_flight.is_empty() {
                    ack_deadline = Instant::now() + self.ack_timeout;
                }
                tx.send(RawBatch {
                    node_id: self.node_id.clone(),
                    last_sequence: last_seq,
                    records: records.into_iter().map(|r| r.payload).collect(),
                })
                .await
                .map_err(|_| anyhow!("log request stream closed"))?;
                debug!(records = n, last_sequence = last_seq, "log batch sent");
                in_flight.push_back(InFlight {
                    last_seq,
                    records: n,
                });
            }

            tokio::select! {
                msg = inbound.message() => {
                    let Some(ack) = msg? else {
                        return Ok(());
                    };
                    if self.handle_ack(ack, &mut acked, &mut in_flight).await? {
                        self.backoff.reset();
                        ack_deadline = Instant::now() + self.ack_timeout;
                    }
                }
                // A write that concerns the shipper ([`super::wake`]).
                _ = wake.notified(), if in_flight.len() < window => {}
                // Only with room in the window: a hold that has passed
                // stays set while records wait, and would wake at once.
                _ = sleep_until_held(held_until), if held_until.is_some() && in_flight.len() < window => {}
                changed = draining.changed(), if held_until.is_some() && !drain => {
                    // The handle gone counts as a shutdown too.
                    drain = changed.is_err() || *draining.borrow_and_update();
                }
                _ = tokio::time::sleep_until(ack_deadline), if !in_flight.is_empty() => {
                    return Err(anyhow!(
                        "no acknowledgement for {:?} with {} batches in flight",
                        self.ack_timeout,
                        in_flight.len()
                    ));
                }
            }
        }
    }

    /// Applies an acknowledgement; true if it advanced.
    async fn handle_ack(
        &mut self,
        ack: pb::LogAck,
        acked: &mut u64,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<bool> {
        if !ack.quarantined_ids.is_empty() {
            let n = ack.quarantined_ids.len() as u64;
            let total = self.counters.quarantined.fetch_add(n, Ordering::Relaxed) + n;
            let shown: Vec<&str> = ack
                .quarantined_ids
                .iter()
                .take(QUARANTINE_IDS_LOGGED)
                .map(String::as_str)
                .collect();
            warn!(
                count = n,
                total_quarantined = total,
                ids = ?shown,
                "control plane quarantined request logs (acknowledged, not retried)"
            );
        }
        let Some(highest_sent) = in_flight.back().map(|b| b.last_seq) else {
            if ack.acked_sequence > *acked {
                warn!(
                    acked_sequence = ack.acked_sequence,
                    "acknowledgement with nothing in flight: ignored"
                );
            }
            return Ok(false);
        };
        if ack.acked_sequence <= *acked {
            return Ok(false);
        }
        let seq = if ack.acked_sequence > highest_sent {
            warn!(
                acked_sequence = ack.acked_sequence,
                highest_sent, "acknowledgement beyond what was sent: capped"
            );
            highest_sent
        } else {
            ack.acked_sequence
        };
        let mut records = 0;
        let mut batches = 0;
        while in_flight.front().is_some_and(|b| b.last_seq <= seq) {
            if let Some(b) = in_flight.pop_front() {
                records += b.records;
                batches += 1;
            }
        }
        *acked = seq;
        self.counters.shipped.fetch_add(records, Ordering::Relaxed);
        self.counters.batches.fetch_add(batches, Ordering::Relaxed);
        // Mostly in memory; the acknowledgement file and the deletion of
        // segments on a blocking thread.
        if !self.spool.ack_in_memory(seq) {
            let spool = Arc::clone(&self.spool);
            match tokio::task::spawn_blocking(move || spool.ack(seq)).await {
                Ok(Ok(())) => {}
                // The acknowledgement still counts in memory; at worst a restart
                // resends what it covered.
                Ok(Err(e)) => {
                    self.ack_failures += 1;
                    if self.ack_failures.is_power_of_two() {
                        warn!(
                            error = %e,
                            acked_sequence = seq,
                            failures = self.ack_failures,
                            "cannot record a log acknowledgement on disk; segments are kept until it can"
                        );
                    }
                }
                Err(e) => return Err(anyhow!("spool acknowledgement task failed: {e}")),
            }
        }
        debug!(acked_sequence = seq, records, "log batch acknowledged");
        Ok(true)
    }

    /// As the discovery client connects: same timeouts, keepalives and TLS.
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

/// Sleeps until `until`; forever when there is none (the branch that awaits
/// it is disabled then).
async fn sleep_until_held(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
