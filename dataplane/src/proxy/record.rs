//! Building a request's log record: redacted headers, capped bodies, usage
//! (reported, or estimated with tiktoken) and cost. A record is finished
//! after the response is done; one that needs a tiktoken estimate, or the
//! duration of an uploaded audio file (a per-second price, and an answer
//! that did not say it), is finished on a blocking thread, so counting
//! never delays a client.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use llmgw_core::price::{Metered, PriceSheet, NANOS_PER_USD};
use llmgw_proto::v1 as pb;

use super::dialect::Usage;
use super::generated::Generated;
use super::media::Quantities;
use crate::config::RequestLogMode;
use crate::logs::wire::field;
use tokio::sync::oneshot;

use super::hold::Hold;
use super::trace::RequestTrace;
use crate::logs::{FieldWriter, LogRecord, LogSink, Spooled};
use crate::metrics::Metrics;

/// Where finished records go: metrics first, then the log pipeline (unless
/// request logging is off).
#[derive(Debug)]
pub struct Emitter {
    pub logs: Arc<LogSink>,
    pub metrics: Arc<Metrics>,
    pub mode: RequestLogMode,
    /// Records being finished on blocking threads.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub settled: tokio::sync::Notify,
    /// Longest a response's end waits for its record to reach the spool
    /// (`--spool-wait-ms`; zero: no wait). See [`super::hold`].
    pub spool_wait: std::time::Duration,
    /// OpenTelemetry, when an endpoint is set: a traced request's spans
    /// are made from its record here.
    pub tracing: Option<super::Tracing>,
}

impl Emitter {
    pub fn new(logs: Arc<LogSink>, metrics: Arc<Metrics>, mode: RequestLogMode) -> Self {
        Emitter {
            logs,
            metrics,
            mode,
            in_flight: Default::default(),
            settled: tokio::sync::Notify::new(),
            spool_wait: crate::logs::DEFAULT_SPOOL_WAIT,
            tracing: None,
        }
    }

    /// A wait for a record about to be emitted, and the sender to emit it
    /// with ([`Emitter::emit_with`]); none when nothing is recorded or
    /// waiting is off.
    pub fn hold(self: &Arc<Self>) -> (Option<oneshot::Sender<()>>, Hold) {
        if !self.mode.records() || self.spool_wait.is_zero() {
            return (None, Hold::none());
        }
        let (tx, spooled) = Spooled::channel();
        let hold = Hold::new(spooled, self);
        (hold.waiting().then_some(tx), hold)
    }

    /// [`Emitter::emit_traced`], with a wait that the response's end holds on.
    pub fn emit_held(
        self: &Arc<Self>,
        record: Box<pb::RequestLog>,
        encoded: FieldWriter,
        trace: Option<Box<RequestTrace>>,
    ) -> Hold {
        let (tx, hold) = self.hold();
        self.emit_with(record, encoded, tx, trace);
        hold
    }

    /// Waits until no record is being finished, up to `limit`.
    pub async fn settled(&self, limit: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let wait = async {
            loop {
                let notified = self.settled.notified();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Sends a finished record: to metrics, to the log pipeline and, for
    /// a traced request, to the span queue. `encoded` holds the record's
    /// fields already written as protobuf (headers, bodies, the request's
    /// own strings; see [`log_headers`] and [`log_body`]).
    pub fn emit_traced(
        &self,
        record: Box<pb::RequestLog>,
        encoded: FieldWriter,
        trace: Option<Box<RequestTrace>>,
    ) {
        self.emit_with(record, encoded, None, trace);
    }

    /// [`Emitter::emit_traced`], releasing `spooled` once the record is in the
    /// spool (or given up), and ending the request's spans.
    pub fn emit_with(
        &self,
        mut record: Box<pb::RequestLog>,
        encoded: FieldWriter,
        spooled: Option<oneshot::Sender<()>>,
        trace: Option<Box<RequestTrace>>,
    ) {
        if record.outcome == pb::Outcome::Unspecified as i32 {
            record.set_outcome(outcome_of(&record));
        }
        self.metrics.observe(&record);
        if let (Some(trace), Some(tracing)) = (trace, &self.tracing) {
            trace.finish(tracing, &record);
        }
        if self.mode.records() {
            self.logs.send_with(
                LogRecord {
                    fields: record,
                    encoded: encoded.finish(),
                },
                spooled,
            );
        }
    }
}

/// The outcome of a record that was not given one where it ended: a
/// cancel, a success, or else an upstream's error answer.
pub fn outcome_of(r: &pb::RequestLog) -> pb::Outcome {
    if r.cancelled {
        pb::Outcome::CancelledByClient
    } else if (200..400).contains(&r.status) && r.error.is_empty() {
        pb::Outcome::Ok
    } else {
        pb::Outcome::UpstreamError
    }
}

/// The status a request the client abandoned is logged with (nginx's
/// "client closed request").
pub const CLIENT_CLOSED: u32 = 499;

/// Marks a record as abandoned by its client.
pub fn cancelled_by_client(r: &mut pb::RequestLog) {
    r.cancelled = true;
    r.status = CLIENT_CLOSED;
    r.set_outcome(pb::Outcome::CancelledByClient);
}

/// Usage with every count zero: what an upstream that does not count
/// reports (Anthropic's required fields set to 0). For an answer that is
/// not empty it is treated as missing, and estimated.
pub fn is_zero(u: &Usage) -> bool {
    u.input == 0 && u.output == 0 && u.cache_read == 0 && u.cache_write == 0
}

/// Whether a header's values are credentials, masked in logs. One `match`,
/// which compares a name only with those of its length.
fn is_secret_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "proxy-authorization"
            | "cookie"
            | "set-cookie"
    )
}

/// Writes `headers` into map field `field`, secrets masked. A name's
/// values come one after another in a `HeaderMap`; they are joined into one
/// entry, each masked on its own.
pub fn log_headers(w: &mut FieldWriter, field: u32, headers: &HeaderMap) {
    // A joined or masked value, reused for every name.
    let mut value = String::new();
    let mut it = headers.iter().peekable();
    while let Some((name, v)) = it.next() {
        let n = name.as_str();
        let secret = is_secret_header(n);
        let single = it.peek().is_none_or(|(next, _)| *next != name);
        if single && !secret {
            // The common case: written straight from the header.
            w.map_entry(field, n, &text(v));
            continue;
        }
        value.clear();
        let mut v = v;
        loop {
            if secret {
                llmgw_core::keys::mask_into(&mut value, &text(v));
            } else {
                value.push_str(&text(v));
            }
            match it.next_if(|(next, _)| *next == name) {
                Some((_, next)) => {
                    value.push_str(", ");
                    v = next;
                }
                None => break,
            }
        }
        w.map_entry(field, n, &value);
    }
}

/// A header value as text. Values are nearly always visible ASCII, which
/// `to_str` checks far faster than a lossy UTF-8 conversion.
fn text(v: &HeaderValue) -> std::borrow::Cow<'_, str> {
    match v.to_str() {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    }
}

/// Writes a body into string field `field`, cut at `cap` bytes, and
/// whether it was cut into `truncated_field`.
pub fn log_body(w: &mut FieldWriter, field: u32, truncated_field: u32, body: &[u8], cap: usize) {
    let truncated = body.len() > cap;
    let kept = &body[..body.len().min(cap)];
    match std::str::from_utf8(kept) {
        // The usual case: the bytes are the text.
        Ok(text) => w.string(field, text),
        Err(_) => {
            // A character cut at the cap becomes U+FFFD, which may not fit.
            let mut text = String::from_utf8_lossy(kept).into_owned();
            while text.len() > cap {
                text.pop();
            }
            w.string(field, &text);
        }
    }
    w.bool(truncated_field, truncated);
}

/// [`log_body`] for a request body.
pub fn log_request_body(w: &mut FieldWriter, body: &[u8], cap: usize) {
    log_body(
        w,
        field::REQUEST_BODY,
        field::REQUEST_BODY_TRUNCATED,
        body,
        cap,
    );
}

/// [`log_body`] for a response body.
pub fn log_response_body(w: &mut FieldWriter, body: &[u8], cap: usize) {
    log_body(
        w,
        field::RESPONSE_BODY,
        field::RESPONSE_BODY_TRUNCATED,
        body,
        cap,
    );
}

/// The exact cost in nano-dollars of normalized usage: uncached input,
/// cache reads, cache writes (at the input price when no cache-write price
/// is set) and output (reasoning included), each at the price of the tier
/// the whole input falls in, plus any per-request price
/// ([`PriceSheet::cost`]). The same for every protocol, because usage is
/// normalized when it is read. The audio and image endpoints add their
/// `media` quantities (seconds, characters, images by size and quality);
/// the chat endpoints have none.
pub fn cost_nanos(usage: &Usage, media: Option<&Quantities>, prices: &PriceSheet) -> i64 {
    let mut m = Metered {
        input_tokens: usage.input,
        cache_read_tokens: usage.cache_read,
        cache_write_tokens: usage.cache_write,
        output_tokens: usage.output,
        ..Metered::default()
    };
    if let Some(q) = media {
        m.audio_milliseconds = q.audio_ms;
        m.characters = q.characters;
        m.images = q.images;
        m.image_size = given(&q.image_size);
        m.image_quality = given(&q.image_quality);
    }
    prices.cost(&m)
}

/// A request's size or quality as the price sheet looks it up; `None` when
/// the request left it to the upstream's default.
fn given(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// [`log_body`] for the body a translated request sent upstream.
pub fn log_upstream_request_body(w: &mut FieldWriter, body: &[u8], cap: usize) {
    log_body(
        w,
        field::UPSTREAM_REQUEST_BODY,
        field::UPSTREAM_REQUEST_BODY_TRUNCATED,
        body,
        cap,
    );
}

/// What a record says of a translation: the upstream protocol, that it
/// was translated, and the fields a lenient translation left out.
pub fn log_translation(
    r: &mut pb::RequestLog,
    w: &mut FieldWriter,
    upstream: llmgw_core::Protocol,
    dropped: &[String],
) {
    r.translated = true;
    w.string(field::UPSTREAM_PROTOCOL, upstream.as_str());
    for f in dropped {
        w.string(field::DROPPED_FIELDS, f);
    }
}

/// What is needed to finish a record once the response is over.
pub struct Finish {
    /// Boxed from the request's start to the spool, so that every move of
    /// the request's state moves a pointer, not about 900 bytes.
    pub record: Box<pb::RequestLog>,
    /// The record's fields written as protobuf so far.
    pub encoded: FieldWriter,
    pub usage: Option<Usage>,
    /// Request body, for an input estimate when no usage was reported
    /// (parsed only then, on the blocking thread that counts).
    pub request: Option<bytes::Bytes>,
    pub completion_text: Generated,
    /// The most input tokens a stream's usage has reported so far (its
    /// request body is let go then; see [`Finish::usage_seen`]).
    pub input_seen: u64,
    /// The target's prices in effect when the request arrived.
    pub prices: Arc<PriceSheet>,
    /// The model name tiktoken picks an encoding by.
    pub tokenizer_model: String,
    /// Whether there was an upstream response to count at all.
    pub counted: bool,
    /// The request's hold on its limits: slots given back when the
    /// response ends, tokens and cost settled once they are known.
    pub admission: Option<Box<crate::limits::Admission>>,
    /// The request's spans, when it is traced.
    pub trace: Option<Box<RequestTrace>>,
    /// An audio or image request: its quantities are read at the end,
    /// its tokens never estimated.
    pub media: Option<Box<super::media::MediaRequest>>,
    /// A media answer's whole body (when it was read whole), for its usage.
    pub media_response: Option<bytes::Bytes>,
    /// A media request's quantities, once read from its answer.
    pub quantities: Option<Box<Quantities>>,
}

impl Finish {
    /// A stream's usage so far: once the upstream has reported the input's
    /// tokens (Anthropic's `message_start`, Gemini's every chunk), no
    /// estimate will need the request body, and a long-context request
    /// (hundreds of KB from a coding agent) is not held for the rest of
    /// the stream. Its capped copy in the record is already written. The
    /// input seen is kept: should a later event report all-zero usage for
    /// an answer with text, the estimate takes the input from it.
    pub fn usage_seen(&mut self, usage: Option<Usage>) {
        let Some(u) = usage else { return };
        self.input_seen = self.input_seen.max(u.input);
        if self.request.is_some() && u.input + u.cache_read + u.cache_write > 0 {
            self.request = None;
        }
    }

    /// Whether finishing needs tiktoken: no usage was reported for a
    /// response that has to be counted.
    fn needs_estimate(&self) -> bool {
        self.counted && self.media.is_none() && self.reported().is_none()
    }

    /// The usage to record as reported: none when it is missing, or when
    /// it is all zero for an answer with text.
    fn reported(&self) -> Option<Usage> {
        self.usage
            .filter(|u| !(is_zero(u) && self.counted && !self.completion_text.is_empty()))
    }

    /// Completes usage and cost and hands the record to the log sink. Only
    /// a record that needs a token estimate goes to a blocking thread, so
    /// counting never blocks the runtime; the common case (usage reported
    /// by the upstream, or nothing to count) is a few field copies and is
    /// done right here, which spares every request a thread hand-off. The
    /// returned [`Hold`] is what the response's end waits on (bounded).
    #[must_use]
    pub fn submit(self, sink: Arc<Emitter>) -> Hold {
        let (spooled, hold) = sink.hold();
        self.submit_with(sink, spooled);
        hold
    }

    /// [`Finish::submit`] for a response no one waits on (its client left).
    pub fn submit_unheld(self, sink: &Arc<Emitter>) {
        self.submit_with(Arc::clone(sink), None);
    }

    fn submit_with(mut self, sink: Arc<Emitter>, spooled: Option<oneshot::Sender<()>>) {
        use std::sync::atomic::Ordering;
        // The response has ended: its concurrency slots are free now, not
        // after a token estimate.
        if let Some(a) = self.admission.as_mut() {
            a.release_slots();
        }
        let mut trace = self.trace.take();
        if let Some(t) = &mut trace {
            t.capture_output(self.completion_text.kept());
        }
        let measure = self.read_media();
        if !self.needs_estimate() && measure.is_none() {
            let (record, encoded) = self.complete();
            sink.emit_with(record, encoded, spooled, trace);
            return;
        }
        sink.in_flight.fetch_add(1, Ordering::AcqRel);
        let run = move || {
            if let Some(audio) = measure {
                self.measure(&audio);
            }
            let (record, encoded) = self.complete();
            sink.emit_with(record, encoded, spooled, trace);
            if sink.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                sink.settled.notify_waiters();
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(run);
            }
            Err(_) => run(),
        }
    }

    /// Reads an answered media request's quantities from its answer, and
    /// returns its upload when its audio must be measured: a per-second
    /// price applies and the answer gave no duration.
    fn read_media(&mut self) -> Option<super::upload::Audio> {
        let m = self.media.as_mut()?;
        if !self.counted {
            return None;
        }
        let mut q =
            super::media::quantities(m.endpoint, &m.request(), self.media_response.as_deref());
        let audio = m.audio.take();
        let needed = m.has_audio_duration()
            && q.audio_source.is_empty()
            && !self.prices.per_audio_second.is_zero();
        if needed && audio.is_none() {
            q.audio_source = super::media::AUDIO_UNKNOWN;
        }
        self.quantities = Some(Box::new(q));
        audio.filter(|_| needed)
    }

    /// Measures the uploaded audio (on a blocking thread): its duration,
    /// or the record says it is unknown, with a warning.
    fn measure(&mut self, audio: &super::upload::Audio) {
        let Some(q) = self.quantities.as_mut() else {
            return;
        };
        match super::duration::of_upload(audio) {
            Ok(ms) => {
                q.audio_ms = ms;
                q.audio_source = super::media::AUDIO_MEASURED;
            }
            Err(why) => {
                q.audio_source = super::media::AUDIO_UNKNOWN;
                crate::warn_limited!(
                    request_id = %self.record.id,
                    reason = %why,
                    "the duration of an uploaded audio file could not be measured: \
                     its per-second price is not charged"
                );
            }
        }
    }

    /// The finished record: usage (reported, else estimated) and cost.
    fn complete(self) -> (Box<pb::RequestLog>, FieldWriter) {
        let mut f = self;
        // An answered audio or image request's quantities: billed whether
        // or not the upstream reported tokens.
        let mut media = None;
        if let Some(m) = f.media.take() {
            // Audio and images: their quantities, and tokens only as the
            // upstream reported them.
            m.log_form(&mut f.encoded);
            m.mark_stream(&mut f.record);
            if f.counted {
                let q = f.quantities.take().map(|q| *q).unwrap_or_else(|| {
                    super::media::quantities(m.endpoint, &m.request(), f.media_response.as_deref())
                });
                q.record(&mut f.record);
                f.usage = q.tokens;
                media = Some(q);
            } else {
                f.usage = None;
            }
            f.counted = f.counted && f.usage.is_some();
            f.completion_text.clear();
        }
        let usage = match f.reported() {
            Some(u) => {
                f.record.usage_source = "reported".into();
                Some(u)
            }
            None if f.counted => {
                f.record.usage_source = "estimated".into();
                let input = f.request.as_deref().map_or(f.input_seen, |raw| {
                    let tree = super::head::tree(raw);
                    llmgw_core::tokens::estimate_input(&f.tokenizer_model, &tree)
                });
                let output = f.completion_text.tokens(&f.tokenizer_model);
                Some(Usage {
                    input,
                    output,
                    ..Default::default()
                })
            }
            None => {
                f.record.usage_source = "none".into();
                None
            }
        };
        // Moved out, not copied: the box goes on to the spool.
        let mut r = f.record;
        if let Some(u) = usage {
            r.input_tokens = u.input;
            r.output_tokens = u.output;
            r.cache_read_tokens = u.cache_read;
            r.cache_creation_tokens = u.cache_write;
            r.reasoning_tokens = u.reasoning;
            // A token count (count_tokens) is not billed.
            if f.counted && media.is_none() {
                r.cost_nanos = cost_nanos(&u, None, &f.prices);
                // For readers older than cost_nanos only.
                r.cost = r.cost_nanos as f64 / NANOS_PER_USD as f64;
            }
        }
        if let Some(q) = &media {
            r.cost_nanos = cost_nanos(&usage.unwrap_or_default(), Some(q), &f.prices);
            r.cost = r.cost_nanos as f64 / NANOS_PER_USD as f64;
        }
        if let Some(a) = f.admission.take() {
            let tokens =
                r.input_tokens + r.cache_read_tokens + r.cache_creation_tokens + r.output_tokens;
            // Budgets count micro-dollars: the exact cost, rounded half up.
            let micros = u64::try_from(r.cost_nanos.saturating_add(500) / 1000).unwrap_or(0);
            (*a).settle(tokens, micros);
        }
        (r, f.encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn decoded(w: FieldWriter) -> pb::RequestLog {
        LogRecord {
            fields: Box::default(),
            encoded: w.finish(),
        }
        .decode()
        .unwrap()
    }

    #[test]
    fn secrets_are_masked() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-llmgw-abcdefghijklmnop"),
        );
        h.insert("x-api-key", HeaderValue::from_static("short"));
        h.insert("user-agent", HeaderValue::from_static("ua"));
        h.append("accept", HeaderValue::from_static("a/b"));
        h.append("accept", HeaderValue::from_static("c/d"));
        h.append("cookie", HeaderValue::from_static("session=abcdefgh"));
        h.append("cookie", HeaderValue::from_static("x=1234567890ab"));
        h.insert("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        h.insert(
            "x-utf8",
            HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        );
        h.insert("x-empty", HeaderValue::from_static(""));
        let mut w = FieldWriter::default();
        log_headers(&mut w, field::RESPONSE_HEADERS, &h);
        let r = decoded(w).response_headers;
        assert_eq!(r.len(), 8);
        assert_eq!(r["x-latin"], "caf\u{fffd}");
        assert_eq!(r["x-utf8"], "caf\u{e9}");
        assert_eq!(r["accept"], "a/b, c/d");
        assert_eq!(r["cookie"], "****efgh, ****90ab");
        assert_eq!(r["authorization"], "****mnop");
        assert_eq!(r["x-api-key"], "****");
        assert_eq!(r["user-agent"], "ua");
        assert_eq!(r["x-empty"], "");
    }

    #[test]
    fn the_secret_headers_are_these() {
        for n in [
            "authorization",
            "x-api-key",
            "x-goog-api-key",
            "api-key",
            "proxy-authorization",
            "cookie",
            "set-cookie",
        ] {
            assert!(is_secret_header(n), "{n}");
        }
        for n in ["x-api-keys", "authorizatio", "content-type", "api_key", ""] {
            assert!(!is_secret_header(n), "{n}");
        }
    }

    #[test]
    fn bodies_are_capped() {
        let body = |raw: &[u8], cap| {
            let mut w = FieldWriter::default();
            log_request_body(&mut w, raw, cap);
            let r = decoded(w);
            (r.request_body, r.request_body_truncated)
        };
        assert_eq!(body(b"abc", 5), ("abc".into(), false));
        assert_eq!(body(b"abcdef", 3), ("abc".into(), true));
        // Cut inside a character: the lossy text, within the cap.
        let raw = "aé".as_bytes();
        assert_eq!(body(raw, 2), ("a".into(), true));
        assert_eq!(body(raw, 3), ("a\u{e9}".into(), false));
        assert_eq!(body(b"a\xffb", 9), ("a\u{fffd}b".into(), false));
    }

    fn finish(usage: Option<Usage>, text: &str) -> Finish {
        Finish {
            record: Box::default(),
            encoded: FieldWriter::default(),
            usage,
            request: Some(bytes::Bytes::from_static(
                br#"{"model":"gpt-4o","messages":[{"role":"user","content":"say something nice please"}]}"#,
            )),
            completion_text: text.into(),
            input_seen: 0,
            prices: Arc::new(PriceSheet::flat(llmgw_core::price::TokenPrices {
                input: "1".parse().unwrap(),
                output: "1".parse().unwrap(),
                ..Default::default()
            })),
            tokenizer_model: "gpt-4o".into(),
            counted: true,
            admission: None,
            trace: None,
            media: None,
            media_response: None,
            quantities: None,
        }
    }

    #[test]
    fn the_request_body_is_let_go_once_the_input_is_reported() {
        let mut f = finish(None, "");
        f.usage_seen(None);
        f.usage_seen(Some(Usage {
            output: 3,
            ..Default::default()
        }));
        assert!(f.request.is_some(), "no input reported yet: kept");
        f.usage_seen(Some(Usage {
            input: 12,
            ..Default::default()
        }));
        assert!(f.request.is_none());
    }

    #[test]
    fn zero_usage_for_an_answer_is_estimated() {
        let zero = Some(Usage::default());
        let f = finish(zero, "a few words of an answer");
        assert!(f.needs_estimate());
        let (r, _) = f.complete();
        assert_eq!(r.usage_source, "estimated");
        assert!(r.input_tokens > 0 && r.output_tokens > 0, "{r:?}");
        // 1 USD per million tokens: a nano-dollar is a thousandth of a token.
        assert_eq!(
            r.cost_nanos,
            (r.input_tokens + r.output_tokens) as i64 * 1000,
            "{r:?}"
        );
        assert_eq!(r.cost, r.cost_nanos as f64 / 1e9);
        // Zero for an empty answer is what was reported.
        let f = finish(zero, "");
        assert!(!f.needs_estimate());
        let (r, _) = f.complete();
        assert_eq!((r.usage_source.as_str(), r.output_tokens), ("reported", 0));
        // Real usage is kept as it is.
        let some = Some(Usage {
            input: 3,
            output: 2,
            ..Default::default()
        });
        let (r, _) = finish(some, "hi").complete();
        assert_eq!((r.usage_source.as_str(), r.input_tokens), ("reported", 3));
    }

    #[test]
    fn records_without_an_outcome_get_one() {
        let r = |status, error: &str, cancelled| pb::RequestLog {
            status,
            error: error.into(),
            cancelled,
            ..Default::default()
        };
        assert_eq!(outcome_of(&r(200, "", false)), pb::Outcome::Ok);
        assert_eq!(
            outcome_of(&r(400, "upstream answered 400", false)),
            pb::Outcome::UpstreamError
        );
        assert_eq!(
            outcome_of(&r(200, "broke", false)),
            pb::Outcome::UpstreamError
        );
        assert_eq!(
            outcome_of(&r(200, "", true)),
            pb::Outcome::CancelledByClient
        );
        let mut c = r(200, "", false);
        cancelled_by_client(&mut c);
        assert_eq!(
            (c.status, c.outcome()),
            (499, pb::Outcome::CancelledByClient)
        );
    }

    #[test]
    fn costs() {
        use llmgw_core::price::{Tier, TokenPrices};
        let usd = |s: &str| s.parse().unwrap();
        let p = PriceSheet {
            tokens: TokenPrices {
                input: usd("2"),
                output: usd("10"),
                cached_input: usd("1"),
                ..Default::default()
            },
            tiers: vec![Tier {
                above_input_tokens: 2_000_000,
                prices: TokenPrices {
                    input: usd("4"),
                    output: usd("20"),
                    cached_input: usd("2"),
                    cache_write: usd("5"),
                },
            }],
            per_request: usd("0.000000003"),
            ..Default::default()
        };
        let u = Usage {
            input: 1_000_000,
            output: 100_000,
            cache_read: 500_000,
            cache_write: 0,
            reasoning: 0,
        };
        assert_eq!(cost_nanos(&u, None, &p), 3_500_000_003);
        // Cache writes at the input price unless they have their own.
        let w = Usage {
            cache_write: 1_000_000,
            ..Default::default()
        };
        assert_eq!(cost_nanos(&w, None, &p), 2_000_000_003);
        // The whole input, cache included, picks the tier.
        let long = Usage {
            cache_write: 1_000_001,
            ..u
        };
        assert_eq!(
            cost_nanos(&long, None, &p),
            4_000_000_000 + 2_000_000_000 + 1_000_000_000 + 5_000_005_000 + 3
        );
    }

    #[test]
    fn media_costs_add_seconds_characters_and_images_to_tokens() {
        let usd = |s: &str| s.parse().unwrap();
        let p = PriceSheet {
            per_audio_second: usd("0.0001"),
            per_mchar: usd("15"),
            per_image: [
                ("1024x1024/high".to_string(), usd("0.167")),
                ("*".to_string(), usd("0.04")),
            ]
            .into_iter()
            .collect(),
            per_request: usd("0.001"),
            tokens: llmgw_core::price::TokenPrices {
                input: usd("2.5"),
                ..Default::default()
            },
            ..Default::default()
        };
        let q = |audio_ms, characters, images, size: &str, quality: &str| Quantities {
            tokens: None,
            audio_ms,
            audio_source: "",
            characters,
            images,
            image_size: size.into(),
            image_quality: quality.into(),
        };
        let none = Usage::default();
        // 1.5 s of audio: 150,000 nano-dollars, plus the request's.
        assert_eq!(
            cost_nanos(&none, Some(&q(1500, 0, 0, "", "")), &p),
            150_000 + 1_000_000
        );
        // 2,000 characters at 15 dollars per million.
        assert_eq!(
            cost_nanos(&none, Some(&q(0, 2000, 0, "", "")), &p),
            30_000_000 + 1_000_000
        );
        // Two images by size and quality; one with none given takes "*".
        assert_eq!(
            cost_nanos(&none, Some(&q(0, 0, 2, "1024x1024", "high")), &p),
            334_000_000 + 1_000_000
        );
        assert_eq!(
            cost_nanos(&none, Some(&q(0, 0, 1, "", "")), &p),
            40_000_000 + 1_000_000
        );
        // Reported tokens add to them (gpt-4o-transcribe).
        let tokens = Usage {
            input: 1000,
            ..Default::default()
        };
        assert_eq!(
            cost_nanos(&tokens, Some(&q(1500, 0, 0, "", "")), &p),
            2_500_000 + 150_000 + 1_000_000
        );
    }
}
