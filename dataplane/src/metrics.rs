//! Prometheus metrics at `GET /metrics`. Labels are few and bounded:
//! model and provider names come from the configuration, statuses are
//! classes ("2xx"), and no key, id or client address is ever a label.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use llmgw_proto::v1 as pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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

pub struct Metrics {
    registry: Registry,
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

impl Metrics {
    pub fn new() -> Arc<Self> {
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
            "Request records dropped because the queue or spool was full",
            log_records_dropped.clone(),
        );
        registry.register(
            "log_records_quarantined",
            "Request records the control plane could not store and quarantined",
            log_records_quarantined.clone(),
        );
        Arc::new(Metrics {
            registry,
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
        })
    }

    /// Counts one finished request.
    pub fn observe(&self, r: &pb::RequestLog) {
        let labels = RequestLabels {
            model: r.model.clone(),
            provider: r.provider.clone(),
            status_class: status_class(r.status),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(r.latency_ms as f64 / 1000.0);
        let ml = ModelLabels {
            model: r.model.clone(),
            provider: r.provider.clone(),
        };
        self.ttfb
            .get_or_create(&ml)
            .observe(r.ttfb_ms as f64 / 1000.0);
        if r.cost > 0.0 {
            self.cost.get_or_create(&ml).inc_by(r.cost);
        }
        if r.cancelled {
            self.cancelled.get_or_create(&ml).inc();
        }
        for (kind, n) in [
            ("input", r.input_tokens),
            ("output", r.output_tokens),
            ("cache_read", r.cache_read_tokens),
            ("cache_creation", r.cache_creation_tokens),
        ] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        model: r.model.clone(),
                        provider: r.provider.clone(),
                        kind: kind.into(),
                    })
                    .inc_by(n);
            }
        }
        for a in &r.attempts {
            let outcome = match a.status {
                0 if a.error.contains("timeout") || a.error.contains("deadline") => "timeout",
                0 => "error",
                200..=299 => "success",
                429 => "rate_limited",
                400..=499 => "client_error",
                _ => "server_error",
            };
            self.attempts
                .get_or_create(&AttemptLabels {
                    provider: a.provider.clone(),
                    outcome: outcome.into(),
                })
                .inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
