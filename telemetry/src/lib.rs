//! OpenTelemetry for llmgw's two planes (#19; docs/tracing.md): settings
//! from `--otel-*` flags and the standard `OTEL_*` variables, W3C trace
//! context, head sampling, and the bounded span queue that exports over
//! OTLP (gRPC or HTTP/protobuf) without ever making a request wait.
//!
//! The data plane writes its request and attempt spans itself, straight
//! into OTLP protobuf ([`otlp`]), when a request's record is finished,
//! and [`transport`] sends them; the control plane's spans come from
//! `tracing` through `tracing-opentelemetry`, [`export::QueueProcessor`]
//! and `opentelemetry-otlp`. Both go through the same kind of
//! [`export::SpanQueue`].

pub mod config;
pub mod context;
pub mod export;
pub mod otlp;
pub mod sample;
pub mod transport;

pub use config::{Settings, TelemetryArgs, Transport};
pub use context::{
    new_span_id, new_trace_id, parse_traceparent, trace_id_hex, traceparent, traceparent_bytes,
    Parent,
};
pub use export::{
    resource, start, start_encoded, EncodedSpan, QueueProcessor, SpanQueue, Stats, Worker,
};
pub use sample::Sampling;

/// Logs an export problem at most once every ten seconds: a collector
/// that is down must not flood the log.
fn warn_export(message: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(target: "llmgw::telemetry", "{message} (spans dropped; counted in llmgw_otel_spans_dropped_total)");
    }
}
