//! The live client: one `Live.Stream` (proto/llmgw/v1/live.proto) on the
//! connection the discovery client opened to its control plane. It sends
//! every request in flight when the stream opens, then every
//! [`TICK`] what changed since: requests that started (and still run),
//! ended, or moved to another attempt, and tokens so far at most every
//! [`TOKENS_EVERY`] per request; with nothing to say, a report every
//! [`HEARTBEAT`] renews the entries' lease. A cancel command is carried
//! out at once and answered in a report sent at once; so is a grant (kept
//! in [`super::grants`]). Full reports say where the control plane reaches
//! this data plane's proxy (its port and `--advertise-url`). A failed stream is
//! opened again with the discovery client's backoff, and a new one starts
//! with the full set again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::live_client::LiveClient as Grpc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::{Live, Progress};
use crate::backoff::Backoff;

/// How often changes are reported (a request shorter than this may never
/// be seen by the control plane).
pub const TICK: Duration = Duration::from_millis(250);
/// The shortest time between two reports of one request's tokens.
pub const TOKENS_EVERY: Duration = Duration::from_secs(1);
/// The longest time between two reports (the control plane's lease of
/// the entries is five of these).
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// The live loop's state; [`LiveClient::run`] consumes it.
pub(crate) struct LiveClient {
    pub live: Arc<Live>,
    /// The discovery client's current channel.
    pub channels: watch::Receiver<Option<Channel>>,
    pub node_id: String,
    /// This process (node id and a random suffix).
    pub incarnation: String,
    /// `Bearer <token>`, marked sensitive.
    pub auth: AsciiMetadataValue,
    pub backoff: Backoff,
    /// The port the proxy listener is bound to.
    pub proxy_port: u16,
    /// `--advertise-url`, or empty.
    pub advertise_url: String,
}

/// Answers to the control plane's commands, for the next report.
#[derive(Default)]
struct Answers {
    cancelled: Vec<pb::CancelResult>,
    granted: Vec<pb::GrantResult>,
}

/// What was last reported of one request.
struct Sent {
    progress: Progress,
    tokens_at: Instant,
}

impl LiveClient {
    /// Streams the live view over the discovery client's channel, forever.
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
                Ok(()) => info!("control plane ended the live stream"),
                Err(e) => match e.downcast_ref::<tonic::Status>() {
                    Some(s) if s.code() == tonic::Code::Unimplemented => {
                        warn!("the control plane has no live service; requests in flight are not reported")
                    }
                    _ => warn!(error = format!("{e:#}"), "live stream failed"),
                },
            }
            let delay = self.backoff.next_delay();
            debug!(
                delay_ms = delay.as_millis() as u64,
                "reopening the live stream"
            );
            // A new channel (the discovery client reconnected) ends the wait.
            let _ = tokio::time::timeout(delay, self.channels.changed()).await;
        }
    }

    async fn stream_once(&mut self, channel: Channel) -> Result<()> {
        let mut client = Grpc::new(channel);
        let (tx, rx) = mpsc::channel(8);
        let mut sent: HashMap<String, Sent> = HashMap::new();
        let first = self.diff(&mut sent, true, Answers::default());
        tx.send(first)
            .await
            .map_err(|_| anyhow!("report stream closed"))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", self.auth.clone());
        let mut inbound = client.stream(request).await?.into_inner();
        debug!("live stream open");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_report = Instant::now();
        loop {
            let mut answers = Answers::default();
            tokio::select! {
                m = inbound.message() => match m? {
                    Some(command) => {
                        self.backoff.reset();
                        if let Some(c) = command.cancel {
                            let found = self.live.cancel(&c.id, &c.by);
                            info!(id = %c.id, found, by = %c.by, "cancel from the control plane");
                            answers.cancelled.push(pb::CancelResult { id: c.id, found });
                        }
                        if let Some(g) = command.grant {
                            answers.granted.push(self.grant(g));
                        }
                    }
                    None => return Ok(()),
                },
                _ = tick.tick() => {}
            }
            let report = self.diff(&mut sent, false, answers);
            let empty = report.upserts.is_empty()
                && report.ended.is_empty()
                && report.cancelled.is_empty()
                && report.granted.is_empty();
            if empty && last_report.elapsed() < HEARTBEAT {
                continue;
            }
            last_report = Instant::now();
            tx.send(report)
                .await
                .map_err(|_| anyhow!("report stream closed"))?;
        }
    }

    /// Keeps a grant from the control plane; its answer.
    fn grant(&self, g: pb::Grant) -> pb::GrantResult {
        let kept = self.live.grants.add(
            &g.token_sha256,
            &g.key,
            &g.origin,
            &g.replay_of,
            Duration::from_millis(u64::from(g.ttl_ms)),
            Instant::now(),
        );
        match kept {
            Ok(()) => {
                debug!(grant = %g.id, key = %g.key, origin = %g.origin, "grant from the control plane");
                pb::GrantResult {
                    id: g.id,
                    accepted: true,
                    error: String::new(),
                }
            }
            Err(e) => {
                warn!(grant = %g.id, error = %e, "refused a grant from the control plane");
                pb::GrantResult {
                    id: g.id,
                    accepted: false,
                    error: e.to_string(),
                }
            }
        }
    }

    /// What changed since `sent` (everything when `full`), and `sent`
    /// brought up to date.
    fn diff(
        &self,
        sent: &mut HashMap<String, Sent>,
        full: bool,
        answers: Answers,
    ) -> pb::LiveReport {
        let now = Instant::now();
        let entries = self.live.snapshot();
        let mut upserts = Vec::new();
        for e in &entries {
            let p = e.progress();
            let changed = match sent.get(&e.id) {
                None => true,
                Some(_) if full => true,
                Some(s) => {
                    s.progress.attempt != p.attempt
                        || (s.progress.tokens != p.tokens
                            && now.duration_since(s.tokens_at) >= TOKENS_EVERY)
                }
            };
            if changed {
                upserts.push(e.report(&self.node_id, p));
                sent.insert(
                    e.id.clone(),
                    Sent {
                        progress: p,
                        tokens_at: now,
                    },
                );
            }
        }
        // Every entry is in `sent` now: any more there have ended.
        let mut ended = Vec::new();
        if sent.len() > entries.len() {
            let live: std::collections::HashSet<&str> =
                entries.iter().map(|e| e.id.as_str()).collect();
            sent.retain(|id, _| {
                let keep = live.contains(id.as_str());
                if !keep && !full {
                    ended.push(id.clone());
                }
                keep
            });
        }
        pb::LiveReport {
            node_id: self.node_id.clone(),
            incarnation: self.incarnation.clone(),
            full,
            upserts,
            ended,
            cancelled: answers.cancelled,
            granted: answers.granted,
            proxy_port: if full { u32::from(self.proxy_port) } else { 0 },
            advertise_url: if full {
                self.advertise_url.clone()
            } else {
                String::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Entry;
    use super::*;

    fn client(live: &Arc<Live>) -> LiveClient {
        let (_tx, channels) = watch::channel(None);
        LiveClient {
            live: Arc::clone(live),
            channels,
            node_id: "dp-1".into(),
            incarnation: "dp-1#00000001".into(),
            auth: AsciiMetadataValue::from_static("Bearer x"),
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            proxy_port: 8000,
            advertise_url: String::new(),
        }
    }

    #[test]
    fn reports_starts_changes_and_ends_once() {
        let live = Live::new();
        let c = client(&live);
        let mut sent = HashMap::new();
        let a = live.register(Entry::new(
            "a".into(),
            "k".into(),
            "m".into(),
            "anthropic",
            true,
            1,
        ));
        let r = c.diff(&mut sent, true, Answers::default());
        assert!(r.full);
        assert_eq!(r.upserts.len(), 1);
        assert_eq!(r.proxy_port, 8000);
        // Nothing changed: nothing to say.
        let r = c.diff(&mut sent, false, Answers::default());
        assert!(r.upserts.is_empty() && r.ended.is_empty());
        // A new attempt is reported at once; tokens wait for their second.
        a.attempt("p", "u", "openai");
        a.set_tokens(5);
        let r = c.diff(&mut sent, false, Answers::default());
        assert_eq!(r.upserts.len(), 1);
        assert_eq!(r.upserts[0].attempt, 1);
        assert_eq!(r.upserts[0].tokens, 5);
        a.set_tokens(9);
        let r = c.diff(&mut sent, false, Answers::default());
        assert!(r.upserts.is_empty());
        // A request that starts and ends between two reports is not sent.
        let b = live.register(Entry::new(
            "b".into(),
            "k".into(),
            "m".into(),
            "openai",
            false,
            1,
        ));
        drop(b);
        drop(a);
        let r = c.diff(&mut sent, false, Answers::default());
        assert!(r.upserts.is_empty());
        assert_eq!(r.ended, vec!["a".to_string()]);
        assert!(sent.is_empty());
        assert_eq!(r.proxy_port, 0);
    }

    #[test]
    fn a_grant_is_kept_and_answered() {
        use sha2::Digest;
        let live = Live::new();
        let c = client(&live);
        let hash = sha2::Sha256::digest(b"llmgw-grant-x").to_vec();
        let ok = c.grant(pb::Grant {
            id: "g1".into(),
            token_sha256: hash,
            key: "k".into(),
            origin: "replay".into(),
            replay_of: "r".into(),
            ttl_ms: 5000,
        });
        assert!(ok.accepted && ok.id == "g1", "{ok:?}");
        assert_eq!(live.grants.len(), 1);
        let bad = c.grant(pb::Grant {
            id: "g2".into(),
            key: "k".into(),
            ..Default::default()
        });
        assert!(!bad.accepted && bad.error.contains("32 bytes"), "{bad:?}");
    }
}
