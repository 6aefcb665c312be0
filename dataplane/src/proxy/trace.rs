//! Tracing a request with OpenTelemetry (#19, docs/tracing.md). When a
//! request starts, its W3C context is read and the sampling decision is
//! made; each attempt gets a span id, sent upstream in `traceparent`, and
//! its wall-clock times. Nothing else happens on the request's path: the
//! spans (the request's SERVER span and a CLIENT span per attempt, with
//! the GenAI semantic conventions' attributes) are written as OTLP bytes
//! ([`llmgw_telemetry::otlp`]) from the finished log record when it is
//! emitted, and handed to the bounded span queue, which drops rather than
//! waits.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;

use llmgw_core::table::Provider;
use llmgw_core::Protocol;
use llmgw_proto::v1 as pb;
use llmgw_telemetry::otlp::{unix_nanos, Kind, SpanHead, SpanWriter};
use llmgw_telemetry::{EncodedSpan, Sampling, SpanQueue};
use opentelemetry::trace::{SpanId, TraceId, TraceState};

use super::dialect::Endpoint;

/// The W3C headers, as names made at compile time (a `&str` name is
/// parsed again on every lookup).
pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(super) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A data plane's tracing: where spans go and which requests are traced.
#[derive(Debug)]
pub struct Tracing {
    pub queue: SpanQueue<EncodedSpan>,
    pub sampling: Sampling,
    /// Attach the request body and the answer's text to request spans.
    pub capture_content: bool,
}

/// The instrumentation scope of the data plane's spans.
pub const SCOPE: &str = "llmgw-dataplane";

impl Tracing {
    pub fn new(
        queue: SpanQueue<EncodedSpan>,
        sampling: Sampling,
        capture_content: bool,
    ) -> Tracing {
        Tracing {
            queue,
            sampling,
            capture_content,
        }
    }
}

/// The trace id a request's log record carries: its own trace's when it
/// is traced, else the client's (a request that is not sampled still
/// belongs to the client's trace).
pub(super) fn client_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    let v = headers.get(&TRACEPARENT)?;
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
    /// The client's `tracestate`, checked and normalized; empty for none.
    state: String,
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
    /// The provider tried (`server.address` and `server.port` are its
    /// base URL's, read when the snapshot was taken in).
    provider: Arc<Provider>,
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
            .get(&TRACEPARENT)
            .and_then(|v| llmgw_telemetry::parse_traceparent(v.as_bytes()));
        let trace_id = parent.map_or_else(llmgw_telemetry::new_trace_id, |p| p.trace_id);
        if !tracing.sampling.sample(parent.map(|p| p.sampled), trace_id) {
            return None;
        }
        let state = if parent.is_some() {
            headers
                .get(&TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<TraceState>().ok())
                .map(|s| s.header())
                .unwrap_or_default()
        } else {
            String::new()
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
        let header = HeaderValue::from_bytes(&llmgw_telemetry::traceparent_bytes(
            self.trace_id,
            span_id,
            true,
        ))
        .ok();
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
        provider: &Arc<Provider>,
        error_type: Option<&'static str>,
    ) {
        self.attempts.push(AttemptSpan {
            span_id: start.span_id,
            start: start.start,
            end: SystemTime::now(),
            provider: Arc::clone(provider),
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

    /// How much of the answer's text a content capture keeps (0: none).
    pub fn content_cap(&self) -> usize {
        self.content.as_ref().map_or(0, |c| c.cap)
    }

    /// Keeps the answer's text for the span, capped.
    pub fn capture_output(&mut self, text: &str) {
        if let Some(c) = &mut self.content {
            c.output = capped(text.as_bytes(), c.cap);
        }
    }

    /// The finished spans, from the request's record, written as OTLP
    /// and queued.
    pub fn finish(self: Box<Self>, tracing: &Tracing, r: &pb::RequestLog) {
        let t = *self;
        let elapsed = if r.latency_ms > 0 {
            Duration::from_millis(r.latency_ms)
        } else {
            t.started.elapsed()
        };
        let start_ns = unix_nanos(t.start);
        let end_ns = unix_nanos(t.start + elapsed).max(start_ns);
        let trace_id = t.trace_id.to_bytes();
        let last = t.attempts.last();
        let upstream_protocol = last.map(|a| a.provider.protocol);
        let outcome = pb::Outcome::try_from(r.outcome).unwrap_or(pb::Outcome::Unspecified);
        let name_model: &str = if r.model.is_empty() { "" } else { &r.model };
        let name: &[&str] = if name_model.is_empty() {
            &[t.operation]
        } else {
            &[t.operation, " ", name_model]
        };
        let mut w = SpanWriter::new(
            &SpanHead {
                trace_id,
                span_id: t.span_id.to_bytes(),
                parent: t.parent.map(|p| (p.to_bytes(), true)),
                trace_state: &t.state,
                kind: Kind::Server,
                name,
                start_ns,
                end_ns,
            },
            1024 + t
                .content
                .as_ref()
                .map_or(0, |c| c.input.len() + c.output.len()),
        );
        w.str("gen_ai.operation.name", t.operation);
        if let Some(p) = upstream_protocol {
            w.str("gen_ai.provider.name", provider_name(p));
        }
        if !r.model.is_empty() {
            w.str("gen_ai.request.model", &r.model);
        }
        if !r.upstream_model.is_empty() {
            w.str("gen_ai.response.model", &r.upstream_model);
        }
        if let Some(n) = t.params.max_tokens {
            w.uint("gen_ai.request.max_tokens", n);
        }
        if let Some(x) = t.params.temperature {
            w.double("gen_ai.request.temperature", x);
        }
        if let Some(x) = t.params.top_p {
            w.double("gen_ai.request.top_p", x);
        }
        if !r.stop_reason.is_empty() {
            w.str_array("gen_ai.response.finish_reasons", &[&r.stop_reason]);
        }
        if r.usage_source != "none" && !r.usage_source.is_empty() {
            // The conventions count cached input in the input.
            let input = r.input_tokens + r.cache_read_tokens + r.cache_creation_tokens;
            w.uint("gen_ai.usage.input_tokens", input);
            w.uint("gen_ai.usage.output_tokens", r.output_tokens);
            if r.cache_read_tokens > 0 {
                w.uint("gen_ai.usage.cache_read.input_tokens", r.cache_read_tokens);
            }
            if r.cache_creation_tokens > 0 {
                w.uint(
                    "gen_ai.usage.cache_creation.input_tokens",
                    r.cache_creation_tokens,
                );
            }
        }
        if r.status > 0 {
            w.uint("http.response.status_code", u64::from(r.status));
        }
        let last_server = last.and_then(|a| a.provider.server.as_ref());
        if let Some((host, port)) = last_server {
            w.str("server.address", host);
            w.uint("server.port", u64::from(*port));
        }
        let failed = r.status >= 400 || !matches!(outcome, pb::Outcome::Ok);
        let mut digits = Digits::default();
        if failed {
            w.str("error.type", request_error_type(r, outcome, &mut digits));
        }
        w.str("llmgw.request_id", &r.id);
        if !r.key.is_empty() {
            w.str("llmgw.key", &r.key);
        }
        if !r.provider.is_empty() {
            w.str_parts("llmgw.target", &[&r.provider, "/", &r.upstream_model]);
        }
        w.str("llmgw.client_protocol", t.client_protocol);
        if let Some(p) = upstream_protocol {
            w.str("llmgw.upstream_protocol", p.as_str());
        }
        w.bool("llmgw.stream", r.stream);
        w.str("llmgw.outcome", outcome_name(outcome));
        if let Some(c) = &t.content {
            if !c.input.is_empty() {
                w.str("gen_ai.input.messages", &c.input);
            }
            if !c.output.is_empty() {
                w.str("gen_ai.output.messages", &c.output);
            }
        }
        if r.stream && (200..300).contains(&r.status) {
            w.event(
                "llmgw.first_token",
                start_ns.saturating_add(r.ttfb_ms.saturating_mul(1_000_000)),
            );
        }
        // A 4xx is the client's error, not the server's (an upstream's 400
        // included): only a 5xx, a timeout or a broken answer marks the
        // server span.
        if matches!(outcome, pb::Outcome::Interrupted | pb::Outcome::Timeout) || r.status >= 500 {
            w.error(&r.error);
        }
        tracing.queue.send(w.finish());
        let answered = t.attempts.len().checked_sub(1).filter(|&last| {
            r.attempts
                .get(last)
                .is_some_and(|a| a.error.is_empty() && (1..400).contains(&a.status))
        });
        let parent = Some((t.span_id.to_bytes(), false));
        for (n, (a, rec)) in t.attempts.iter().zip(&r.attempts).enumerate() {
            // The attempt that answered lasts as long as its answer (the
            // upstream's own span, its child, does), and a stream that broke
            // or timed out after its head fails it too.
            let answering = answered == Some(n);
            let broke =
                answering && matches!(outcome, pb::Outcome::Interrupted | pb::Outcome::Timeout);
            let a_start = unix_nanos(a.start);
            let a_end = if answering { end_ns } else { unix_nanos(a.end) }.max(a_start);
            let mut w = SpanWriter::new(
                &SpanHead {
                    trace_id,
                    span_id: a.span_id.to_bytes(),
                    parent,
                    trace_state: &t.state,
                    kind: Kind::Client,
                    name: &[t.operation, " ", &rec.upstream_model],
                    start_ns: a_start,
                    end_ns: a_end,
                },
                512,
            );
            w.str("gen_ai.operation.name", t.operation);
            w.str("gen_ai.provider.name", provider_name(a.provider.protocol));
            w.str("gen_ai.request.model", &rec.upstream_model);
            if let Some((host, port)) = &a.provider.server {
                w.str("server.address", host);
                w.uint("server.port", u64::from(*port));
            }
            if rec.status > 0 {
                w.uint("http.response.status_code", u64::from(rec.status));
            }
            let failed = !rec.error.is_empty() || rec.status >= 400 || broke;
            if failed {
                let ty = if broke {
                    request_error_type(r, outcome, &mut digits)
                } else if rec.status >= 400 {
                    digits.of(rec.status)
                } else {
                    a.error_type.unwrap_or("_OTHER")
                };
                w.str("error.type", ty);
            }
            w.uint("llmgw.attempt", n as u64 + 1);
            w.str_parts("llmgw.target", &[&rec.provider, "/", &rec.upstream_model]);
            w.str("llmgw.provider", &rec.provider);
            if broke {
                w.error(&r.error);
            } else if failed {
                w.error(&rec.error);
            }
            tracing.queue.send(w.finish());
        }
    }
}

/// A status code written as text without allocating.
#[derive(Default)]
struct Digits([u8; 10], usize);

impl Digits {
    fn of(&mut self, mut n: u32) -> &str {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.1 = i;
        std::str::from_utf8(&self.0[i..]).unwrap_or("_OTHER")
    }
}

/// The GenAI operation of an endpoint.
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        Endpoint::GeminiGenerate | Endpoint::GeminiStream { .. } => "generate_content",
        Endpoint::CountTokens | Endpoint::GeminiCountTokens => "count_tokens",
        Endpoint::AudioSpeech => "speech",
        Endpoint::AudioTranscriptions => "transcription",
        Endpoint::AudioTranslations => "translation",
        Endpoint::ImagesGenerations => "image_generation",
        Endpoint::ImagesEdits => "image_edit",
        Endpoint::ImagesVariations => "image_variation",
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
fn request_error_type<'d>(r: &pb::RequestLog, o: pb::Outcome, digits: &'d mut Digits) -> &'d str {
    match o {
        pb::Outcome::Timeout => "timeout",
        pb::Outcome::Interrupted => "interrupted",
        pb::Outcome::CancelledByClient => "cancelled",
        _ if r.status > 0 => digits.of(r.status),
        _ => "_OTHER",
    }
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
    fn status_codes_are_written_as_digits() {
        let mut d = Digits::default();
        assert_eq!(d.of(0), "0");
        assert_eq!(d.of(429), "429");
        assert_eq!(d.of(u32::MAX), "4294967295");
    }

    #[test]
    fn captured_content_is_cut_at_a_character() {
        assert_eq!(capped("héllo".as_bytes(), 2), "h");
        assert_eq!(capped(b"hello", 10), "hello");
        assert_eq!(capped(b"hello", 3), "hel");
    }
}
