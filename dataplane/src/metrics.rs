//! Prometheus metrics at `GET /metrics`. Labels are few and bounded:
//! model and provider names come from the configuration (a model name the
//! configuration does not know is counted as ""), statuses are classes
//! ("2xx"), and no key, id or client address is ever a label.
//!
//! Counting a request goes through handles cached per (model, provider):
//! looking series up in the families by label set cost an allocation per
//! label and a hash of the set, seven times per request.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, RwLock};

use llmgw_core::table::NameMap;
use llmgw_proto::v1 as pb;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub provider: String,
    pub status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub provider: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub provider: String,
    pub outcome: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ]
    .into_iter()
}

/// One (model, provider) pair's series, each created on first use as the
/// families would, so /metrics shows the same series as without the cache.
#[derive(Default)]
struct Series {
    /// Requests and latency by status class: none, 1xx .. 5xx.
    by_class: [OnceLock<(Counter, Histogram)>; 6],
    ttfb: OnceLock<Histogram>,
    cost: OnceLock<Counter<f64, AtomicU64>>,
    cancelled: OnceLock<Counter>,
    tokens: [OnceLock<Counter>; 4],
    /// `gen_ai_client_token_usage` for input and output tokens.
    token_usage: [OnceLock<Histogram>; 2],
    /// `gen_ai_server_time_to_first_token_seconds`.
    first_token: OnceLock<Histogram>,
}

/// Raises a counter to a total kept elsewhere (copied at each scrape).
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// `gen_ai_client_token_usage`'s buckets: the GenAI conventions' advice
/// (powers of four from 1 to 4^13 tokens).
fn token_buckets() -> impl Iterator<Item = f64> {
    (0..14).map(|i| 4f64.powi(i))
}

/// `gen_ai_server_time_to_first_token_seconds`' buckets (the
/// conventions' advice).
fn first_token_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ]
    .into_iter()
}

/// `gen_ai_client_token_usage{model,provider,token_type}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenUsageLabels {
    pub model: String,
    pub provider: String,
    pub token_type: &'static str,
}

/// The OpenTelemetry GenAI metrics, in a registry of their own: their
/// names are the conventions' (`gen_ai_*`), not under `llmgw_`.
struct GenAi {
    registry: Registry,
    token_usage: Family<TokenUsageLabels, Histogram>,
    first_token: Family<ModelLabels, Histogram>,
}

impl GenAi {
    fn new() -> GenAi {
        let mut registry = Registry::default();
        let token_usage = Family::<TokenUsageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(token_buckets())
        });
        let first_token = Family::<ModelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(first_token_buckets())
        });
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per request (gen_ai.client.token.usage), input including cached input",
            token_usage.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time to the first token of a streamed answer (gen_ai.server.time_to_first_token)",
            prometheus_client::registry::Unit::Seconds,
            first_token.clone(),
        );
        GenAi {
            registry,
            token_usage,
            first_token,
        }
    }
}

/// The span export's counts, copied from its queue at each scrape.
#[derive(Default)]
struct TraceMetrics {
    queue: OnceLock<llmgw_telemetry::SpanQueue<llmgw_telemetry::EncodedSpan>>,
    exported: Counter,
    dropped: Family<ReasonLabels, Counter>,
    queued: Gauge,
    copying: std::sync::Mutex<()>,
}

const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_creation"];
const OUTCOMES: [&str; 6] = [
    "timeout",
    "error",
    "success",
    "rate_limited",
    "client_error",
    "server_error",
];

/// model -> provider -> series. The hasher is foldhash's, as for the
/// table's names ([`llmgw_core::table::NameMap`]): these are the snapshot's
/// names (a model the table does not have is counted under ""), looked up
/// for every request.
type SeriesCache = NameMap<NameMap<Arc<Series>>>;

pub struct Metrics {
    registry: Registry,
    series: RwLock<SeriesCache>,
    /// provider -> attempt counters by outcome (as in `OUTCOMES`).
    attempt_series: RwLock<NameMap<Arc<[OnceLock<Counter>; 6]>>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    ttfb: Family<ModelLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    attempts: Family<AttemptLabels, Counter>,
    cancelled: Family<ModelLabels, Counter>,
    pub snapshot_version: Gauge,
    pub spool_depth: Gauge,
    pub log_records_dropped: Gauge,
    pub log_records_quarantined: Gauge,
    /// Records and batches the control plane acknowledged since start: how
    /// well the shipper batches (records per batch) under the load it has.
    pub log_records_shipped: Gauge,
    pub log_batches_shipped: Gauge,
    /// Requests refused before authentication, by reason.
    pub unauthenticated: Family<ReasonLabels, Counter>,
    /// Of those, the ones not written to the request log (rate-limited).
    pub unauthenticated_rows_suppressed: Counter,
    /// Responses sent without waiting for their record to reach the
    /// spool, by reason (`timeout`: the wait's bound passed; `stalled`: the
    /// spool's writer was stuck in one write).
    pub spool_waits_given_up: Family<ReasonLabels, Counter>,
    /// Requests refused by the gateway's own limits (#15).
    limit_refusals: Family<LimitLabels, Counter>,
    connections: ConnectionMetrics,
    genai: GenAi,
    traces: TraceMetrics,
}

/// `llmgw_limit_refusals_total{scope,kind}`: both from fixed sets.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    scope: &'static str,
    kind: &'static str,
}

/// The client listener's connection counts, copied from its gate at each
/// scrape.
#[derive(Default)]
struct ConnectionMetrics {
    open: Gauge,
    unauthenticated: Gauge,
    refused: Family<RefusedLabels, Counter>,
    idle_closed: Counter,
    /// Serializes the copies, so that two scrapes do not both add.
    copying: std::sync::Mutex<()>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn status_class(status: u32) -> String {
    match status {
        0 => "none".into(),
        s => format!("{}xx", s / 100),
    }
}

/// `llmgw_log_records_lost_total{reason}`: the request-log pipeline's loss
/// counters ([`crate::logs::Losses`]), read at each scrape. The reasons are
/// a fixed set; every one is shown, zero or not.
#[derive(Debug)]
struct LogLosses(Arc<crate::logs::Losses>);

impl Collector for LogLosses {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "log_records_lost",
            "Request records lost before reaching the control plane, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in self.0.snapshot() {
            let labels = [("reason", reason.label())];
            ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Metrics::build(None)
    }

    /// Also exports the request-log pipeline's losses by reason
    /// (`llmgw_log_records_lost_total{reason}`).
    pub fn with_log_losses(losses: Arc<crate::logs::Losses>) -> Arc<Self> {
        Metrics::build(Some(losses))
    }

    fn build(log_losses: Option<Arc<crate::logs::Losses>>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("llmgw");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let ttfb = Family::<ModelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let tokens = Family::<TokenLabels, Counter>::default();
        let cost = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        let attempts = Family::<AttemptLabels, Counter>::default();
        let cancelled = Family::<ModelLabels, Counter>::default();
        let snapshot_version = Gauge::default();
        let spool_depth = Gauge::default();
        let log_records_dropped = Gauge::default();
        let log_records_quarantined = Gauge::default();
        let log_records_shipped = Gauge::default();
        let log_batches_shipped = Gauge::default();
        registry.register("requests", "Client requests", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Client request latency, to the end of the response",
            latency.clone(),
        );
        registry.register(
            "time_to_first_byte_seconds",
            "Time to the first response byte",
            ttfb.clone(),
        );
        registry.register("tokens", "Tokens counted", tokens.clone());
        registry.register("cost_usd", "Cost in US dollars", cost.clone());
        registry.register(
            "upstream_attempts",
            "Upstream attempts by outcome",
            attempts.clone(),
        );
        registry.register(
            "cancelled_requests",
            "Requests the client abandoned",
            cancelled.clone(),
        );
        registry.register(
            "snapshot_version",
            "Version of the routing snapshot in use",
            snapshot_version.clone(),
        );
        registry.register(
            "log_spool_depth",
            "Request records waiting for the control plane's acknowledgement",
            spool_depth.clone(),
        );
        registry.register(
            "log_records_dropped",
            "Request records lost for any reason (llmgw_log_records_lost_total by reason)",
            log_records_dropped.clone(),
        );
        if let Some(losses) = log_losses {
            registry.register_collector(Box::new(LogLosses(losses)));
        }
        registry.register(
            "log_records_quarantined",
            "Request records the control plane could not store and quarantined",
            log_records_quarantined.clone(),
        );
        registry.register(
            "log_records_shipped",
            "Request records the control plane acknowledged (quarantined ones included)",
            log_records_shipped.clone(),
        );
        registry.register(
            "log_batches_shipped",
            "Batches of request records the control plane acknowledged",
            log_batches_shipped.clone(),
        );
        let unauthenticated = Family::<ReasonLabels, Counter>::default();
        let unauthenticated_rows_suppressed = Counter::default();
        registry.register(
            "unauthenticated_requests",
            "Requests refused before authentication, by reason (missing, invalid or expired key)",
            unauthenticated.clone(),
        );
        registry.register(
            "unauthenticated_log_rows_suppressed",
            "Unauthenticated requests not written to the request log (over the per-address rate)",
            unauthenticated_rows_suppressed.clone(),
        );
        let spool_waits_given_up = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "log_spool_waits_given_up",
            "Responses ended without waiting for their record to reach the spool (timeout or stalled writer)",
            spool_waits_given_up.clone(),
        );
        let limit_refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Requests refused by the gateway's own limits, by scope (key, model, provider) and kind (rpm, tpm, concurrency, budget)",
            limit_refusals.clone(),
        );
        let connections = ConnectionMetrics::default();
        connections.register(&mut registry);
        let traces = TraceMetrics::default();
        registry.register(
            "otel_spans_exported",
            "Spans the OpenTelemetry collector accepted",
            traces.exported.clone(),
        );
        registry.register(
            "otel_spans_dropped",
            "Spans dropped: the export queue was full (queue_full) or a batch failed or timed out (export_failed)",
            traces.dropped.clone(),
        );
        registry.register(
            "otel_queue_spans",
            "Spans waiting for export",
            traces.queued.clone(),
        );
        Arc::new(Metrics {
            connections,
            genai: GenAi::new(),
            traces,
            registry,
            series: RwLock::default(),
            attempt_series: RwLock::default(),
            requests,
            latency,
            ttfb,
            tokens,
            cost,
            attempts,
            cancelled,
            snapshot_version,
            spool_depth,
            log_records_dropped,
            log_records_quarantined,
            log_records_shipped,
            log_batches_shipped,
            unauthenticated,
            unauthenticated_rows_suppressed,
            spool_waits_given_up,
            limit_refusals,
        })
    }

    /// Counts a request refused by a limit.
    pub fn limit_refused(&self, scope: &'static str, kind: &'static str) {
        self.limit_refusals
            .get_or_create(&LimitLabels { scope, kind })
            .inc();
    }

    /// Counts one finished request.
    pub fn observe(&self, r: &pb::RequestLog) {
        // A request for a model the configuration does not have carries the
        // client's model name in its record, which must not become a label.
        let model = if r.provider.is_empty() && r.status == 404 {
            ""
        } else {
            r.model.as_str()
        };
        let s = self.series(model, &r.provider);
        let class = match r.status {
            0 => 0,
            s @ 100..=599 => (s / 100) as usize,
            // Not an HTTP status; counted under its own class uncached.
            _ => usize::MAX,
        };
        let labels = || RequestLabels {
            model: model.to_string(),
            provider: r.provider.clone(),
            status_class: status_class(r.status),
        };
        let latency = r.latency_ms as f64 / 1000.0;
        match s.by_class.get(class) {
            Some(slot) => {
                let (requests, histogram) = slot.get_or_init(|| {
                    let l = labels();
                    (
                        self.requests.get_or_create(&l).clone(),
                        self.latency.get_or_create(&l).clone(),
                    )
                });
                requests.inc();
                histogram.observe(latency);
            }
            None => {
                let l = labels();
                self.requests.get_or_create(&l).inc();
                self.latency.get_or_create(&l).observe(latency);
            }
        }
        let ml = || ModelLabels {
            model: model.to_string(),
            provider: r.provider.clone(),
        };
        s.ttfb
            .get_or_init(|| self.ttfb.get_or_create(&ml()).clone())
            .observe(r.ttfb_ms as f64 / 1000.0);
        if r.stream && (200..300).contains(&r.status) && !r.provider.is_empty() {
            s.first_token
                .get_or_init(|| self.genai.first_token.get_or_create(&ml()).clone())
                .observe(r.ttfb_ms as f64 / 1000.0);
        }
        if !r.provider.is_empty() && r.usage_source != "none" && !r.usage_source.is_empty() {
            let input = r.input_tokens + r.cache_read_tokens + r.cache_creation_tokens;
            for ((slot, token_type), n) in s
                .token_usage
                .iter()
                .zip(["input", "output"])
                .zip([input, r.output_tokens])
            {
                slot.get_or_init(|| {
                    self.genai
                        .token_usage
                        .get_or_create(&TokenUsageLabels {
                            model: model.to_string(),
                            provider: r.provider.clone(),
                            token_type,
                        })
                        .clone()
                })
                .observe(n as f64);
            }
        }
        if r.cost > 0.0 {
            s.cost
                .get_or_init(|| self.cost.get_or_create(&ml()).clone())
                .inc_by(r.cost);
        }
        if r.cancelled {
            s.cancelled
                .get_or_init(|| self.cancelled.get_or_create(&ml()).clone())
                .inc();
        }
        let counts = [
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_creation_tokens,
        ];
        for ((slot, kind), n) in s.tokens.iter().zip(TOKEN_KINDS).zip(counts) {
            if n > 0 {
                slot.get_or_init(|| {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            model: model.to_string(),
                            provider: r.provider.clone(),
                            kind: kind.into(),
                        })
                        .clone()
                })
                .inc_by(n);
            }
        }
        for a in &r.attempts {
            let outcome = match a.status {
                0 if a.error.contains("timeout") || a.error.contains("deadline") => 0,
                0 => 1,
                200..=299 => 2,
                429 => 3,
                400..=499 => 4,
                _ => 5,
            };
            self.attempt_series(&a.provider)[outcome]
                .get_or_init(|| {
                    self.attempts
                        .get_or_create(&AttemptLabels {
                            provider: a.provider.clone(),
                            outcome: OUTCOMES[outcome].into(),
                        })
                        .clone()
                })
                .inc();
        }
    }

    fn series(&self, model: &str, provider: &str) -> Arc<Series> {
        let found = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
            .and_then(|p| p.get(provider))
            .cloned();
        if let Some(s) = found {
            return s;
        }
        let mut cache = self.series.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            cache
                .entry(model.to_string())
                .or_default()
                .entry(provider.to_string())
                .or_default(),
        )
    }

    fn attempt_series(&self, provider: &str) -> Arc<[OnceLock<Counter>; 6]> {
        let found = self
            .attempt_series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(provider)
            .cloned();
        if let Some(s) = found {
            return s;
        }
        let mut cache = self
            .attempt_series
            .write()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(cache.entry(provider.to_string()).or_default())
    }

    /// Copies the client listener's connection counts.
    pub fn observe_connections(&self, gate: &llmgw_listener::Gate) {
        use llmgw_listener::Refusal;
        let c = &self.connections;
        let _copying = c.copying.lock().unwrap_or_else(|e| e.into_inner());
        let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        c.open.set(gauge(gate.open()));
        c.unauthenticated.set(gauge(gate.unauthenticated()));
        for why in [Refusal::Full, Refusal::Unauthenticated] {
            let labels = RefusedLabels {
                reason: why.as_str(),
            };
            catch_up(&c.refused.get_or_create(&labels), gate.refused_count(why));
        }
        catch_up(&c.idle_closed, gate.idle_closed());
    }

    /// Exports the span queue's counts (tracing is on).
    pub fn trace_queue(&self, queue: llmgw_telemetry::SpanQueue<llmgw_telemetry::EncodedSpan>) {
        let _ = self.traces.queue.set(queue);
    }

    /// Copies the span queue's counts into the metrics.
    fn observe_traces(&self) {
        use std::sync::atomic::Ordering;
        let t = &self.traces;
        let Some(q) = t.queue.get() else { return };
        let _one = t.copying.lock().unwrap_or_else(|e| e.into_inner());
        let stats = q.stats();
        catch_up(&t.exported, stats.exported.load(Ordering::Relaxed));
        for (reason, n) in [
            ("queue_full", &stats.dropped_queue_full),
            ("export_failed", &stats.dropped_export_failed),
        ] {
            let c = t.dropped.get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            });
            catch_up(&c, n.load(Ordering::Relaxed));
        }
        t.queued.set(i64::try_from(q.queued()).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        self.observe_traces();
        let mut out = String::new();
        if encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.genai.registry))
            .and_then(|()| encode_eof(&mut out))
            .is_err()
        {
            out.clear();
        }
        out
    }
}

impl ConnectionMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "client_connections_open",
            "Client connections open",
            self.open.clone(),
        );
        registry.register(
            "client_connections_unauthenticated",
            "Client connections that have not sent a valid key yet",
            self.unauthenticated.clone(),
        );
        registry.register(
            "client_connections_refused",
            "Client connections refused at a cap (max_connections, max_unauthenticated)",
            self.refused.clone(),
        );
        registry.register(
            "client_connections_idle_closed",
            "Client connections closed by the idle timeout",
            self.idle_closed.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_losses_are_exported_by_reason() {
        use crate::logs::{LossReason, Losses};
        let losses = Arc::new(Losses::default());
        let m = Metrics::with_log_losses(Arc::clone(&losses));
        losses.add(LossReason::DiskReserve, 7);
        losses.add(LossReason::WriteError, 2);
        let text = m.encode();
        assert!(
            text.contains("# TYPE llmgw_log_records_lost counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"llmgw_log_records_lost_total{reason="disk_reserve"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"llmgw_log_records_lost_total{reason="write_error"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"llmgw_log_records_lost_total{reason="queue_full"} 0"#),
            "{text}"
        );
        // Read at each scrape.
        losses.add(LossReason::DiskReserve, 1);
        assert!(m
            .encode()
            .contains(r#"llmgw_log_records_lost_total{reason="disk_reserve"} 8"#));
        assert!(!Metrics::new()
            .encode()
            .contains("llmgw_log_records_lost_total{"));
    }

    #[test]
    fn counts_requests_without_keys_as_labels() {
        let m = Metrics::new();
        m.observe(&pb::RequestLog {
            model: "gpt".into(),
            provider: "openai".into(),
            key: "secret-key-name".into(),
            status: 200,
            latency_ms: 12,
            input_tokens: 5,
            cost: 0.5,
            attempts: vec![pb::Attempt {
                provider: "openai".into(),
                status: 200,
                ..Default::default()
            }],
            ..Default::default()
        });
        m.snapshot_version.set(3);
        let text = m.encode();
        assert!(
            text.contains(
                r#"llmgw_requests_total{model="gpt",provider="openai",status_class="2xx"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"kind="input"} 5"#), "{text}");
        assert!(text.contains("llmgw_snapshot_version 3"), "{text}");
        assert!(text.contains(r#"outcome="success""#), "{text}");
        assert!(!text.contains("secret-key-name"));
        // Only series that were counted appear.
        assert!(!text.contains(r#"kind="output""#), "{text}");
        assert!(!text.contains("llmgw_cancelled_requests_total{"), "{text}");
    }

    #[test]
    fn cached_series_keep_counting_per_label_set() {
        let m = Metrics::new();
        let r = |model: &str, provider: &str, status: u32| pb::RequestLog {
            model: model.into(),
            provider: provider.into(),
            status,
            output_tokens: 2,
            cancelled: status == 0,
            ..Default::default()
        };
        for _ in 0..3 {
            m.observe(&r("gpt", "openai", 200));
        }
        m.observe(&r("gpt", "azure", 200));
        m.observe(&r("gpt", "openai", 502));
        m.observe(&r("gpt", "openai", 0));
        m.observe(&r("gpt", "openai", 700));
        let text = m.encode();
        for want in [
            r#"llmgw_requests_total{model="gpt",provider="openai",status_class="2xx"} 3"#,
            r#"llmgw_requests_total{model="gpt",provider="azure",status_class="2xx"} 1"#,
            r#"llmgw_requests_total{model="gpt",provider="openai",status_class="5xx"} 1"#,
            r#"llmgw_requests_total{model="gpt",provider="openai",status_class="none"} 1"#,
            r#"llmgw_requests_total{model="gpt",provider="openai",status_class="7xx"} 1"#,
            r#"llmgw_tokens_total{model="gpt",provider="openai",kind="output"} 12"#,
            r#"llmgw_cancelled_requests_total{model="gpt",provider="openai"} 1"#,
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }

    #[test]
    fn unknown_model_names_from_clients_are_not_labels() {
        let m = Metrics::new();
        for i in 0..50 {
            m.observe(&pb::RequestLog {
                model: format!("made-up-{i}"),
                status: 404,
                ..Default::default()
            });
        }
        let text = m.encode();
        assert!(!text.contains("made-up"), "{text}");
        assert!(
            text.contains(r#"llmgw_requests_total{model="",provider="",status_class="4xx"} 50"#),
            "{text}"
        );
    }
}
