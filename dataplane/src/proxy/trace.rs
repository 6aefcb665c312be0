//! Tracing a request with OpenTelemetry (#19, docs/tracing.md). When a
//! request starts, its W3C context is read and the sampling decision is
//! made; each attempt gets a span id, sent upstream in `traceparent`, and
//! its wall-clock times. Nothing else happens on the request's path: the
//! spans (the request's SERVER span and a CLIENT span per attempt, with
//! the GenAI semantic conventions' attributes) are built from the finished
//! log record when it is emitted, and handed to the bounded span queue,
//! which drops rather than waits.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use llmgw_core::Protocol;
use llmgw_proto::v1 as pb;
use llmgw_telemetry::{Sampling, SpanQueue};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::dialect::Endpoint;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// A data plane's tracing: where spans go and which requests are traced.
#[derive(Debug)]
pub struct Tracing {
    pub queue: SpanQueue,
    pub sampling: Sampling,
    /// Attach the request body and the answer's text to request spans.
    pub capture_content: bool,
    scope: InstrumentationScope,
}

impl Tracing {
    pub fn new(queue: SpanQueue, sampling: Sampling, capture_content: bool) -> Tracing {
        Tracing {
            queue,
            sampling,
            capture_content,
            scope: InstrumentationScope::builder("llmgw-dataplane")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }
}

/// The trace id a request's log record carries: its own trace's when it
/// is traced, else the client's (a request that is not sampled still
/// belongs to the client's trace).
pub(super) fn client_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    let v = headers.get(TRACEPARENT)?;
    llmgw_telemetry::parse_traceparent(v.as_bytes()).map(|p| p.trace_id)
}

/// A traced request: its ids, the context it came with, and each
/// attempt's span.
#[derive(Debug)]
pub(super) struct RequestTrace {
    pub trace_id: TraceId,
    span_id: SpanId,
    /// The client's span, when it sent a valid `traceparent`.
    parent: Option<SpanId>,
    state: TraceState,
    start: SystemTime,
    started: std::time::Instant,
    operation: &'static str,
    /// The request log's name for the client's protocol.
    client_protocol: &'static str,
    pub params: Params,
    attempts: Vec<AttemptSpan>,
    /// Captured content (`--otel-capture-content`): the request body and
    /// the answer's text, capped like the log's bodies.
    pub content: Option<Content>,
}

/// The request's generation parameters, as the client sent them.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Params {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
}

#[derive(Debug, Default)]
pub(super) struct Content {
    /// Each is kept up to this many bytes.
    pub cap: usize,
    pub input: String,
    pub output: String,
}

/// One attempt's span, matched by position with the record's attempts.
#[derive(Debug)]
struct AttemptSpan {
    span_id: SpanId,
    start: SystemTime,
    end: SystemTime,
    protocol: Protocol,
    server: Option<(String, u16)>,
    /// Why the attempt failed, when it failed without a status.
    error_type: Option<&'static str>,
}

/// An attempt being made: its span id and when it started.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttemptStart {
    span_id: SpanId,
    start: SystemTime,
}

impl RequestTrace {
    /// Starts a trace for a request, or `None` when it is not sampled.
    pub fn begin(
        tracing: &Tracing,
        headers: &HeaderMap,
        endpoint: Endpoint,
    ) -> Option<Box<RequestTrace>> {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| llmgw_telemetry::parse_traceparent(v.as_bytes()));
        let trace_id = parent.map_or_else(llmgw_telemetry::new_trace_id, |p| p.trace_id);
        if !tracing.sampling.sample(parent.map(|p| p.sampled), trace_id) {
            return None;
        }
        let state = if parent.is_some() {
            headers
                .get(TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default()
        } else {
            TraceState::default()
        };
        Some(Box::new(RequestTrace {
            trace_id,
            span_id: llmgw_telemetry::new_span_id(),
            parent: parent.map(|p| p.span_id),
            state,
            start: SystemTime::now(),
            started: std::time::Instant::now(),
            operation: operation(endpoint),
            client_protocol: super::client_protocol_name(endpoint),
            params: Params::default(),
            attempts: Vec::new(),
            content: tracing.capture_content.then(Content::default),
        }))
    }

    /// Whether the request came with a client's context (its `tracestate`
    /// then goes on upstream; without one a client's `tracestate` belongs
    /// to no trace of ours and is dropped).
    pub fn has_parent(&self) -> bool {
        self.parent.is_some()
    }

    /// An attempt is about to be sent: its span id, and the `traceparent`
    /// that carries it upstream.
    pub fn attempt(&self) -> (AttemptStart, Option<HeaderValue>) {
        let span_id = llmgw_telemetry::new_span_id();
        let header =
            HeaderValue::from_str(&llmgw_telemetry::traceparent(self.trace_id, span_id, true)).ok();
        (
            AttemptStart {
                span_id,
                start: SystemTime::now(),
            },
            header,
        )
    }

    /// An attempt has ended (or was skipped, `start` being now): one for
    /// each attempt in the record, in order.
    pub fn attempted(
        &mut self,
        start: AttemptStart,
        protocol: Protocol,
        base_url: &str,
        error_type: Option<&'static str>,
    ) {
        self.attempts.push(AttemptSpan {
            span_id: start.span_id,
            start: start.start,
            end: SystemTime::now(),
            protocol,
            server: server_of(base_url),
            error_type,
        });
    }

    /// Keeps the client's body for the span, capped at `cap` bytes (the
    /// log's body cap, which the answer's text is capped at too).
    pub fn capture_input(&mut self, body: &[u8], cap: usize) {
        if let Some(c) = &mut self.content {
            c.cap = cap;
            c.input = capped(body, cap);
        }
    }

    /// Whether the span carries the request's content.
    pub fn captures(&self) -> bool {
        self.content.is_some()
    }

    /// Keeps the answer's text for the span, capped.
    pub fn capture_output(&mut self, text: &str) {
        if let Some(c) = &mut self.content {
            c.output = capped(text.as_bytes(), c.cap);
        }
    }

    /// The finished spans, from the request's record.
    pub fn finish(self: Box<Self>, tracing: &Tracing, r: &pb::RequestLog) {
        let t = *self;
        let elapsed = if r.latency_ms > 0 {
            Duration::from_millis(r.latency_ms)
        } else {
            t.started.elapsed()
        };
        let end = t.start + elapsed;
        let last = t.attempts.last();
        let upstream_protocol = last.map(|a| a.protocol);
        let mut attrs = Vec::with_capacity(28);
        attrs.push(kv("gen_ai.operation.name", t.operation));
        if let Some(p) = upstream_protocol {
            attrs.push(kv("gen_ai.provider.name", provider_name(p)));
        }
        if !r.model.is_empty() {
            attrs.push(kv("gen_ai.request.model", r.model.clone()));
        }
        if !r.upstream_model.is_empty() {
            attrs.push(kv("gen_ai.response.model", r.upstream_model.clone()));
        }
        if let Some(n) = t.params.max_tokens {
            attrs.push(KeyValue::new(
                "gen_ai.request.max_tokens",
                i64::try_from(n).unwrap_or(i64::MAX),
            ));
        }
        if let Some(x) = t.params.temperature {
            attrs.push(KeyValue::new("gen_ai.request.temperature", x));
        }
        if let Some(x) = t.params.top_p {
            attrs.push(KeyValue::new("gen_ai.request.top_p", x));
        }
        if !r.stop_reason.is_empty() {
            attrs.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(vec![StringValue::from(
                    r.stop_reason.clone(),
                )])),
            ));
        }
        if r.usage_source != "none" && !r.usage_source.is_empty() {
            // The conventions count cached input in the input.
            let input = r.input_tokens + r.cache_read_tokens + r.cache_creation_tokens;
            attrs.push(int("gen_ai.usage.input_tokens", input));
            attrs.push(int("gen_ai.usage.output_tokens", r.output_tokens));
            if r.cache_read_tokens > 0 {
                attrs.push(int(
                    "gen_ai.usage.cache_read.input_tokens",
                    r.cache_read_tokens,
                ));
            }
            if r.cache_creation_tokens > 0 {
                attrs.push(int(
                    "gen_ai.usage.cache_creation.input_tokens",
                    r.cache_creation_tokens,
                ));
            }
        }
        if r.status > 0 {
            attrs.push(int("http.response.status_code", u64::from(r.status)));
        }
        if let Some((host, port)) = last.and_then(|a| a.server.clone()) {
            attrs.push(kv("server.address", host));
            attrs.push(int("server.port", u64::from(port)));
        }
        let outcome = pb::Outcome::try_from(r.outcome).unwrap_or(pb::Outcome::Unspecified);
        let failed = r.status >= 400 || !matches!(outcome, pb::Outcome::Ok);
        if failed {
            attrs.push(kv("error.type", request_error_type(r, outcome)));
        }
        attrs.push(kv("llmgw.request_id", r.id.clone()));
        if !r.key.is_empty() {
            attrs.push(kv("llmgw.key", r.key.clone()));
        }
        if !r.provider.is_empty() {
            attrs.push(kv(
                "llmgw.target",
                format!("{}/{}", r.provider, r.upstream_model),
            ));
        }
        attrs.push(kv("llmgw.client_protocol", t.client_protocol));
        if let Some(p) = upstream_protocol {
            attrs.push(kv("llmgw.upstream_protocol", p.as_str()));
        }
        attrs.push(KeyValue::new("llmgw.stream", r.stream));
        attrs.push(kv("llmgw.outcome", outcome_name(outcome)));
        if let Some(c) = &t.content {
            if !c.input.is_empty() {
                attrs.push(kv("gen_ai.input.messages", c.input.clone()));
            }
            if !c.output.is_empty() {
                attrs.push(kv("gen_ai.output.messages", c.output.clone()));
            }
        }
        let mut events = SpanEvents::default();
        if r.stream && (200..300).contains(&r.status) {
            events.events.push(Event::new(
                "llmgw.first_token",
                t.start + Duration::from_millis(r.ttfb_ms),
                Vec::new(),
                0,
            ));
        }
        // A 4xx is the client's error, not the server's (an upstream's 400
        // included): only a 5xx, a timeout or a broken answer marks the
        // server span.
        let status = if matches!(outcome, pb::Outcome::Interrupted | pb::Outcome::Timeout)
            || r.status >= 500
        {
            Status::error(r.error.clone())
        } else {
            Status::Unset
        };
        let name = if r.model.is_empty() {
            Cow::Borrowed(t.operation)
        } else {
            Cow::Owned(format!("{} {}", t.operation, r.model))
        };
        tracing.queue.send(SpanData {
            span_context: SpanContext::new(
                t.trace_id,
                t.span_id,
                TraceFlags::SAMPLED,
                false,
                t.state.clone(),
            ),
            parent_span_id: t.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: t.parent.is_some(),
            span_kind: SpanKind::Server,
            name,
            start_time: t.start,
            end_time: end.max(t.start),
            attributes: attrs,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: tracing.scope.clone(),
        });
        let answered = t.attempts.len().checked_sub(1).filter(|&last| {
            r.attempts
                .get(last)
                .is_some_and(|a| a.error.is_empty() && (1..400).contains(&a.status))
        });
        for (n, (a, rec)) in t.attempts.iter().zip(&r.attempts).enumerate() {
            // The attempt that answered lasts as long as its answer (the
            // upstream's own span, its child, does), and a stream that broke
            // or timed out after its head fails it too.
            let answering = answered == Some(n);
            let broke =
                answering && matches!(outcome, pb::Outcome::Interrupted | pb::Outcome::Timeout);
            let mut attrs = Vec::with_capacity(12);
            attrs.push(kv("gen_ai.operation.name", t.operation));
            attrs.push(kv("gen_ai.provider.name", provider_name(a.protocol)));
            attrs.push(kv("gen_ai.request.model", rec.upstream_model.clone()));
            if let Some((host, port)) = &a.server {
                attrs.push(kv("server.address", host.clone()));
                attrs.push(int("server.port", u64::from(*port)));
            }
            if rec.status > 0 {
                attrs.push(int("http.response.status_code", u64::from(rec.status)));
            }
            let failed = !rec.error.is_empty() || rec.status >= 400 || broke;
            if failed {
                let ty = if broke {
                    request_error_type(r, outcome)
                } else if rec.status >= 400 {
                    Cow::Owned(rec.status.to_string())
                } else {
                    Cow::Borrowed(a.error_type.unwrap_or("_OTHER"))
                };
                attrs.push(kv("error.type", ty));
            }
            attrs.push(int("llmgw.attempt", n as u64 + 1));
            attrs.push(kv(
                "llmgw.target",
                format!("{}/{}", rec.provider, rec.upstream_model),
            ));
            attrs.push(kv("llmgw.provider", rec.provider.clone()));
            tracing.queue.send(SpanData {
                span_context: SpanContext::new(
                    t.trace_id,
                    a.span_id,
                    TraceFlags::SAMPLED,
                    false,
                    t.state.clone(),
                ),
                parent_span_id: t.span_id,
                parent_span_is_remote: false,
                span_kind: SpanKind::Client,
                name: Cow::Owned(format!("{} {}", t.operation, rec.upstream_model)),
                start_time: a.start,
                end_time: if answering { end } else { a.end }.max(a.start),
                attributes: attrs,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: if broke {
                    Status::error(r.error.clone())
                } else if failed {
                    Status::error(rec.error.clone())
                } else {
                    Status::Unset
                },
                instrumentation_scope: tracing.scope.clone(),
            });
        }
    }
}

fn kv(key: &'static str, value: impl Into<StringValue>) -> KeyValue {
    KeyValue::new(key, Value::String(value.into()))
}

fn int(key: &'static str, n: u64) -> KeyValue {
    KeyValue::new(key, i64::try_from(n).unwrap_or(i64::MAX))
}

/// The GenAI operation of an endpoint.
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        Endpoint::GeminiGenerate | Endpoint::GeminiStream { .. } => "generate_content",
        Endpoint::CountTokens | Endpoint::GeminiCountTokens => "count_tokens",
    }
}

/// `gen_ai.provider.name` by the upstream's protocol.
fn provider_name(p: Protocol) -> &'static str {
    match p {
        Protocol::OpenAi | Protocol::OpenAiChat => "openai",
        Protocol::Anthropic => "anthropic",
        Protocol::Gemini => "gcp.gemini",
    }
}

fn outcome_name(o: pb::Outcome) -> &'static str {
    match o {
        pb::Outcome::Unspecified => "unspecified",
        pb::Outcome::Ok => "ok",
        pb::Outcome::UpstreamError => "upstream_error",
        pb::Outcome::Interrupted => "interrupted",
        pb::Outcome::Timeout => "timeout",
        pb::Outcome::CancelledByClient => "cancelled_by_client",
        pb::Outcome::CancelledByAdmin => "cancelled_by_admin",
        pb::Outcome::Refused => "refused",
    }
}

/// `error.type` of a failed request: a timeout or a cut stream by name,
/// else the status code.
fn request_error_type(r: &pb::RequestLog, o: pb::Outcome) -> Cow<'static, str> {
    match o {
        pb::Outcome::Timeout => Cow::Borrowed("timeout"),
        pb::Outcome::Interrupted => Cow::Borrowed("interrupted"),
        pb::Outcome::CancelledByClient => Cow::Borrowed("cancelled"),
        _ if r.status > 0 => Cow::Owned(r.status.to_string()),
        _ => Cow::Borrowed("_OTHER"),
    }
}

/// The host and port of a provider's base URL.
fn server_of(base_url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = base_url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some((host.to_string(), port))
}

/// At most `cap` bytes of `b` as text, cut at a character boundary.
fn capped(b: &[u8], cap: usize) -> String {
    let mut end = b.len().min(cap);
    while end > 0 && end < b.len() && (b[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_read_from_base_urls() {
        assert_eq!(
            server_of("https://api.openai.com/v1"),
            Some(("api.openai.com".into(), 443))
        );
        assert_eq!(
            server_of("http://127.0.0.1:8080/v1"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(server_of("http://[::1]:9/x"), Some(("::1".into(), 9)));
        assert_eq!(server_of("not a url"), None);
    }

    #[test]
    fn captured_content_is_cut_at_a_character() {
        assert_eq!(capped("héllo".as_bytes(), 2), "h");
        assert_eq!(capped(b"hello", 10), "hello");
        assert_eq!(capped(b"hello", 3), "hel");
    }
}
