//! Watches a response on its way to the client: finds usage, generated
//! text and the stop reason, keeps a capped copy for the request log, and, when the gateway
//! asked an OpenAI chat stream for usage on the client's behalf, removes
//! that extra chunk. Otherwise the bytes pass exactly as they came.

use bytes::{Bytes, BytesMut};
use llmgw_protocols::Wire;
use serde_json::Value;

use super::body::top_levels_from_end;
use super::dialect::{Dialect, Endpoint, StreamSeen, Usage};
use super::events::{AnthropicEvent, ChatEvent};
use super::openai::is_usage_chunk;
use super::sse::{self, Splitter};
use crate::logs::capture::Capture;

/// Largest non-streaming body parsed for usage.
const MAX_PARSED_BODY: usize = 8 << 20;

/// A non-streamed answer's bytes: a body that comes in one chunk (most
/// do) is kept as that chunk, without a copy; one in several is gathered
/// into one buffer.
#[derive(Default)]
struct Whole {
    one: Bytes,
    more: BytesMut,
}

impl Whole {
    fn push(&mut self, chunk: &Bytes) {
        if self.more.is_empty() {
            if self.one.is_empty() {
                self.one = chunk.clone();
                return;
            }
            self.more.reserve(self.one.len() + chunk.len());
            self.more.extend_from_slice(&std::mem::take(&mut self.one));
        }
        self.more.extend_from_slice(chunk);
    }

    fn len(&self) -> usize {
        self.one.len() + self.more.len()
    }

    fn as_slice(&self) -> &[u8] {
        if self.more.is_empty() {
            &self.one
        } else {
            &self.more
        }
    }

    /// The bytes, shared: a gathered body becomes one chunk for it.
    fn shared(&mut self) -> Bytes {
        if !self.more.is_empty() {
            self.one = std::mem::take(&mut self.more).freeze();
        }
        self.one.clone()
    }

    fn into_bytes(mut self) -> Bytes {
        self.shared();
        self.one
    }
}

pub struct Observer {
    dialect: &'static dyn Dialect,
    endpoint: Endpoint,
    streaming: bool,
    strip_usage_chunk: bool,
    splitter: Splitter,
    pub seen: StreamSeen,
    /// Why the upstream stopped, as it said it (the record's
    /// `stop_reason`); empty until an event or the body says.
    pub stop_reason: String,
    /// The whole body of a non-streaming response, for usage, and for the
    /// log while it is not over [`MAX_PARSED_BODY`].
    whole: Whole,
    whole_overflow: bool,
    /// What the request log keeps of a streamed response, or of one over
    /// [`MAX_PARSED_BODY`]: a non-streaming answer's is cut from `whole`
    /// ([`Self::take_logged`]), so it is kept once.
    pub logged: Capture,
    /// Read a whole answer's text even when usage is reported (a trace
    /// that captures content wants it).
    pub want_text: bool,
    /// Audio (speech): its content type; the bytes are only counted.
    opaque: Option<String>,
    /// Bytes of an opaque answer.
    opaque_bytes: u64,
    /// The last bytes of a media answer too large to keep whole.
    media_tail: Vec<u8>,
}

impl Observer {
    pub fn new(
        dialect: &'static dyn Dialect,
        endpoint: Endpoint,
        streaming: bool,
        strip_usage_chunk: bool,
        log_cap: usize,
    ) -> Self {
        Observer {
            dialect,
            endpoint,
            streaming,
            strip_usage_chunk: streaming && strip_usage_chunk,
            splitter: Splitter::default(),
            seen: StreamSeen::default(),
            stop_reason: String::new(),
            whole: Whole::default(),
            whole_overflow: false,
            logged: if streaming {
                Capture::streaming(log_cap)
            } else {
                Capture::new(log_cap)
            },
            want_text: false,
            opaque: None,
            opaque_bytes: 0,
            media_tail: Vec::new(),
        }
    }

    /// Passes the answer without keeping any of it: an audio answer of
    /// this content type, whose log says only its size and type.
    pub fn opaque(&mut self, content_type: &str) {
        self.opaque = Some(content_type.chars().take(128).collect());
        self.streaming = false;
        self.strip_usage_chunk = false;
    }

    /// Keeps the last [`super::media::TAIL_BYTES`] of a media answer.
    fn keep_tail(&mut self, chunk: &[u8]) {
        let tail = &mut self.media_tail;
        let keep = chunk.len().min(super::media::TAIL_BYTES);
        tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        let over = tail.len().saturating_sub(super::media::TAIL_BYTES);
        tail.drain(..over);
    }

    /// An audio or image answer's whole body, for its quantities; for a
    /// streamed, an opaque (audio) or an oversized one, only the usage
    /// found in its last bytes.
    pub fn take_media_body(&mut self) -> Option<Bytes> {
        if self.streaming || self.opaque.is_some() || self.whole_overflow {
            return super::media::usage_of_tail(&self.media_tail);
        }
        Some(std::mem::take(&mut self.whole).into_bytes())
    }

    /// What the log keeps of the response: an opaque answer's size and
    /// content type (when bodies are logged), else the capped copy: of a
    /// whole answer, its first `cap` bytes, shared with `whole` (which
    /// stays for [`Self::finish`] and [`Self::take_media_body`]).
    pub fn take_logged(&mut self) -> (Bytes, bool) {
        if let Some(ct) = &self.opaque {
            if self.logged.cap() == 0 {
                return (Bytes::new(), false);
            }
            let note = format!("[{} bytes of {ct}, not logged]", self.opaque_bytes);
            return (Bytes::from(note), false);
        }
        if !self.streaming && !self.whole_overflow {
            let whole = self.whole.shared();
            let cap = self.logged.cap();
            return if whole.len() > cap {
                (whole.slice(..cap), true)
            } else {
                (whole, false)
            };
        }
        (self.logged.take(), self.logged.truncated())
    }

    fn log(&mut self, b: &[u8]) {
        self.logged.push(b);
    }

    pub fn streaming(&self) -> bool {
        self.streaming
    }

    /// The terminal event that ends a broken stream in the client's protocol.
    pub fn stream_error_event(&self, message: &str) -> Vec<u8> {
        self.dialect.stream_error_event(message)
    }

    /// Takes one upstream chunk and returns what the client gets.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.opaque.is_some() {
            self.opaque_bytes += chunk.len() as u64;
            // Kept to be read, never logged: a speech stream's last event
            // (`stream_format: sse`) has its usage.
            self.keep_tail(&chunk);
            return chunk;
        }
        if !self.streaming {
            if !self.whole_overflow && self.whole.len() + chunk.len() <= MAX_PARSED_BODY {
                self.whole.push(&chunk);
            } else {
                if !self.whole_overflow {
                    // From here the log keeps its own copy, starting with
                    // what came before.
                    let before = std::mem::take(&mut self.whole);
                    self.log(before.as_slice());
                }
                self.log(&chunk);
                self.whole_overflow = true;
                if self.endpoint.api().media() {
                    // Images as base64 can pass the cap: their usage is
                    // at the end.
                    self.keep_tail(&chunk);
                }
            }
            return chunk;
        }
        if self.endpoint.api().media() {
            // A streamed image or transcription ends with an event that
            // has its usage.
            self.keep_tail(&chunk);
        }
        let events = self.splitter.push(&chunk);
        if !self.strip_usage_chunk {
            for e in &events {
                self.observe(e);
            }
            self.log(&chunk);
            return chunk;
        }
        let mut out = BytesMut::with_capacity(chunk.len());
        for e in &events {
            if self.observe(e) {
                out.extend_from_slice(e);
            }
        }
        let out = out.freeze();
        self.log(&out);
        out
    }

    /// Reads one event; returns whether the client should get it.
    fn observe(&mut self, raw: &[u8]) -> bool {
        let ev = sse::parse(raw);
        if ev.data.is_empty() {
            return true;
        }
        if ev.data.trim() == "[DONE]" {
            self.seen.finished = true;
            self.seen.marked_end = true;
            return true;
        }
        let wire = super::instream::pass_through_wire(self.dialect.protocol(), self.endpoint);
        match wire {
            Wire::Chat => {
                if let Some(chat) = ChatEvent::read(&ev.data) {
                    return self.observe_chat(&chat);
                }
            }
            // The extra usage chunk is Chat's only.
            Wire::Anthropic if !self.strip_usage_chunk => {
                if let Some(a) = AnthropicEvent::read(&ev.data) {
                    self.observe_anthropic(&a, ev.name);
                    return true;
                }
            }
            _ => {}
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            return true;
        };
        self.dialect
            .observe_event(self.endpoint, ev.name, &data, &mut self.seen);
        if let Some(reason) = stop_in_event(wire, &data) {
            reason.clone_into(&mut self.stop_reason);
        }
        if self.seen.error.is_none() {
            self.seen.error = super::instream::error_event(wire, ev.name, &data).map(Box::new);
        }
        !(self.strip_usage_chunk && is_usage_chunk(&data))
    }

    /// [`Self::observe`] for a Chat event read without a tree: what
    /// `OpenAi::observe_event`, `stop_in_event`, `instream::error_event`
    /// and `is_usage_chunk` read from the tree, in the same order.
    fn observe_chat(&mut self, ev: &ChatEvent<'_>) -> bool {
        if let Some(us) = &ev.usage {
            self.seen.usage = super::openai::usage_of(us, self.endpoint).or(self.seen.usage);
        }
        for t in ev.texts() {
            self.seen.text.push(t);
        }
        if let Some(reason) = ev.stop() {
            reason.clone_into(&mut self.stop_reason);
        }
        if self.seen.error.is_none() {
            self.seen.error = ev
                .error
                .as_ref()
                .map(|e| Box::new(super::instream::chat_error(e)));
        }
        !(self.strip_usage_chunk && ev.is_usage_chunk())
    }

    /// [`Self::observe`] for an Anthropic event read without a tree: what
    /// `Anthropic::observe_event`, `stop_in_event` and
    /// `instream::error_event` read from the tree, in the same order.
    fn observe_anthropic(&mut self, ev: &AnthropicEvent<'_>, name: &str) {
        let kind = ev.kind(name);
        super::anthropic::observe(
            kind,
            ev.message.as_ref(),
            ev.usage.as_ref(),
            ev.text.as_deref(),
            &mut self.seen,
        );
        if let Some(reason) = &ev.stop {
            reason.as_ref().clone_into(&mut self.stop_reason);
        }
        if self.seen.error.is_none() && kind == "error" {
            self.seen.error = Some(Box::new(super::instream::anthropic_error(
                ev.error.as_ref(),
            )));
        }
    }

    /// Called at the normal end of the body: whatever is still held back.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.endpoint.api().media() && !self.streaming {
            // Read at the end with the request (`media::quantities`).
            self.seen.finished = true;
            return None;
        }
        if !self.streaming {
            if !self.whole_overflow {
                // Reported usage is all a whole body is read for: take the
                // top-level `usage` member alone rather than building a tree
                // of the whole body (a tenth of the data plane's work per
                // request at 1 KiB replies). Only without it is the body
                // parsed, for the text the estimate counts.
                // The member is read into the counted numbers directly when
                // it has the expected shape (`usage::from_raw`), else as a
                // tree through the dialect.
                let (protocol, endpoint) = (self.dialect.protocol(), self.endpoint);
                if endpoint.api().counts_tokens() {
                    // A count's answer: Anthropic `input_tokens`, Gemini
                    // `totalTokens`.
                    let member = if protocol == llmgw_core::Protocol::Gemini {
                        "totalTokens"
                    } else {
                        "input_tokens"
                    };
                    self.seen.usage = super::body::top_level(self.whole.as_slice(), member)
                        .and_then(|raw| serde_json::from_slice::<u64>(raw).ok())
                        .map(|n| Usage {
                            input: n,
                            ..Default::default()
                        });
                    self.seen.finished = true;
                    return None;
                }
                // One pass over the members for usage and the stop reason,
                // from the end, where they are: a Chat or Anthropic
                // answer's text before them is not read once they are
                // found (Responses keeps `status` before its output, so
                // its whole body is read). Chat keeps its stop reason
                // inside a choice: usage alone. Gemini's counts are
                // `usageMetadata`, read from the tree below.
                let wire = super::instream::pass_through_wire(protocol, endpoint);
                let [usage, stop, details, status] = match wire {
                    Wire::Chat => top_levels_from_end(self.whole.as_slice(), ["usage"])
                        .map(|[usage]| [usage, None, None, None]),
                    Wire::Anthropic => {
                        top_levels_from_end(self.whole.as_slice(), ["usage", "stop_reason"])
                            .map(|[usage, stop]| [usage, stop, None, None])
                    }
                    Wire::Responses => top_levels_from_end(
                        self.whole.as_slice(),
                        ["usage", "incomplete_details", "status"],
                    )
                    .map(|[usage, details, status]| [usage, None, details, status]),
                    Wire::Gemini => None,
                }
                .unwrap_or_default();
                self.stop_reason = stop_in_body(wire, stop, details, status);
                self.seen.usage = usage.and_then(|raw| {
                    super::usage::from_raw(protocol, endpoint, raw).or_else(|| {
                        let u = serde_json::from_slice::<Value>(raw).ok()?;
                        let mut only = serde_json::Map::with_capacity(1);
                        only.insert("usage".to_string(), u);
                        self.dialect.usage_of_body(endpoint, &Value::Object(only))
                    })
                });
                // Zero usage counts as none when there is an answer: the
                // text is needed for the estimate.
                if self.want_text || self.seen.usage.is_none_or(|u| super::record::is_zero(&u)) {
                    if let Ok(v) = serde_json::from_slice::<Value>(self.whole.as_slice()) {
                        if self.seen.usage.is_none() {
                            self.seen.usage = self.dialect.usage_of_body(self.endpoint, &v);
                        }
                        self.dialect
                            .text_of_body(self.endpoint, &v, &mut self.seen.text);
                        // A streamed Gemini JSON array can end in an error.
                        if let Some(items) = v.as_array() {
                            self.seen.error = super::instream::in_gemini_array(items).map(Box::new);
                        }
                    }
                }
            }
            self.seen.finished = true;
            return None;
        }
        let rest = self.splitter.take_rest()?;
        let keep = self.observe(&rest);
        if self.strip_usage_chunk {
            self.log(&rest);
            return keep.then_some(rest);
        }
        // Without stripping, these bytes already went out with their chunk.
        None
    }

    pub fn usage(&self) -> Option<Usage> {
        self.seen.usage
    }
}

/// The stop reason an already parsed stream event states, as it states it:
/// Chat's `finish_reason`, Anthropic's `message_delta` `stop_reason`,
/// Gemini's `finishReason`, or a Responses terminal event's
/// `incomplete_details.reason`, else its status.
fn stop_in_event(wire: Wire, data: &Value) -> Option<&str> {
    match wire {
        Wire::Chat => data.get("choices")?.get(0)?.get("finish_reason")?.as_str(),
        Wire::Anthropic => data.get("delta")?.get("stop_reason")?.as_str(),
        Wire::Gemini => data
            .get("candidates")?
            .get(0)?
            .get("finishReason")?
            .as_str(),
        Wire::Responses => match data.get("type")?.as_str()? {
            "response.completed"
            | "response.incomplete"
            | "response.failed"
            | "response.cancelled" => {
                let r = data.get("response")?;
                r.get("incomplete_details")
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .or_else(|| r.get("status")?.as_str())
            }
            _ => None,
        },
    }
}

/// The stop reason of a whole answer where it is a top-level member
/// (Anthropic's `stop_reason`; Responses' `incomplete_details.reason`, else
/// `status`), from those members' raw bytes: the rest of the body is not
/// parsed. Chat and Gemini keep it inside a choice or candidate, which
/// would take parsing the whole body: empty for them.
fn stop_in_body(
    wire: Wire,
    stop_reason: Option<&[u8]>,
    incomplete_details: Option<&[u8]>,
    status: Option<&[u8]>,
) -> String {
    let text = |raw: Option<&[u8]>| serde_json::from_slice::<String>(raw?).ok();
    let reason = match wire {
        Wire::Anthropic => text(stop_reason),
        Wire::Responses => incomplete_details
            .and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
            .and_then(|d| Some(d.get("reason")?.as_str()?.to_owned()))
            .or_else(|| text(status)),
        Wire::Chat | Wire::Gemini => None,
    };
    reason.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::dialect::dialect;
    use llmgw_core::Protocol;

    #[test]
    fn strips_only_the_extra_usage_chunk() {
        let d = dialect(Protocol::OpenAi);
        let mut o = Observer::new(d, Endpoint::ChatCompletions, true, true, 1 << 16);
        let a = o.feed(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,",
        ));
        assert_eq!(
            &a[..],
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
        );
        let b = o.feed(Bytes::from_static(
            b"\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
        ));
        assert_eq!(&b[..], b"data: [DONE]\n\n");
        assert!(o.finish().is_none());
        assert_eq!(o.usage().unwrap().input, 3);
        assert_eq!(o.seen.text.kept(), "hi");
        assert!(o.seen.finished);
    }

    #[test]
    fn passes_bytes_untouched_without_stripping() {
        let d = dialect(Protocol::OpenAi);
        let mut o = Observer::new(d, Endpoint::ChatCompletions, true, false, 4);
        let chunk =
            Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n");
        assert_eq!(o.feed(chunk.clone()), chunk);
        assert_eq!(o.usage().unwrap().input, 3);
        assert!(o.logged.truncated());
        assert_eq!(o.logged.len(), 4);
    }

    #[test]
    fn in_stream_errors_are_seen_and_passed_on() {
        let d = dialect(Protocol::Anthropic);
        let mut o = Observer::new(d, Endpoint::Messages, true, false, 1 << 16);
        let error = Bytes::from_static(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        );
        // The client gets the event as it came.
        assert_eq!(o.feed(error.clone()), error);
        let (status, message) = *o.seen.error.clone().unwrap();
        assert_eq!(status, 529);
        assert!(message.contains("Overloaded"), "{message}");
        assert!(!o.seen.finished);

        // Responses' response.failed ends the stream, and is an error.
        let d = dialect(Protocol::OpenAi);
        let mut o = Observer::new(d, Endpoint::Responses, true, false, 1 << 16);
        o.feed(Bytes::from_static(
            b"event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"m\"}}}\n\n",
        ));
        assert!(o.seen.finished);
        assert_eq!(o.seen.error.as_ref().map(|e| e.0), Some(500));

        // A streamed Gemini JSON array that ends in an error object.
        let d = dialect(Protocol::Gemini);
        let mut o = Observer::new(
            d,
            Endpoint::GeminiStream { sse: false },
            false,
            false,
            1 << 16,
        );
        o.feed(Bytes::from_static(
            b"[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}]}}]},\r\n{\"error\":{\"code\":503,\"message\":\"m\",\"status\":\"UNAVAILABLE\"}}\n]",
        ));
        o.finish();
        assert_eq!(o.seen.error.as_ref().map(|e| e.0), Some(503));
        assert_eq!(o.seen.text.kept(), "hi");

        // A normal chat stream has none.
        let d = dialect(Protocol::OpenAi);
        let mut o = Observer::new(d, Endpoint::ChatCompletions, true, false, 1 << 16);
        o.feed(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\ndata: [DONE]\n\n",
        ));
        assert!(o.seen.error.is_none() && o.seen.finished);
    }

    #[test]
    fn zero_usage_keeps_the_text_for_the_estimate() {
        let d = dialect(Protocol::Anthropic);
        let mut o = Observer::new(d, Endpoint::Messages, false, false, 1 << 16);
        o.feed(Bytes::from_static(
            b"{\"content\":[{\"type\":\"text\",\"text\":\"yo\"}],\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}",
        ));
        o.finish();
        assert_eq!(o.usage(), Some(Usage::default()));
        assert_eq!(o.seen.text.kept(), "yo");
    }

    #[test]
    fn media_answers_keep_their_usage_not_their_audio() {
        let d = dialect(Protocol::OpenAi);
        // A streamed image: the usage of its last event.
        let mut o = Observer::new(d, Endpoint::ImagesGenerations, true, false, 16);
        o.feed(Bytes::from_static(
            b"event: image_generation.partial_image\ndata: {\"b64_json\":\"AAAA\"}\n\n",
        ));
        o.feed(Bytes::from_static(
            b"event: image_generation.completed\ndata: {\"b64_json\":\"BBBB\",\
              \"usage\":{\"input_tokens\":3,\"output_tokens\":272}}\n\n",
        ));
        o.finish();
        let body = o.take_media_body().unwrap();
        let q = super::super::media::quantities(
            Endpoint::ImagesGenerations,
            &serde_json::json!({"n": 1}),
            Some(&body),
        );
        assert_eq!(q.tokens.map(|u| (u.input, u.output)), Some((3, 272)));
        // Audio passes whole and is only counted.
        let mut o = Observer::new(d, Endpoint::AudioSpeech, false, false, 1 << 16);
        o.opaque("audio/mpeg");
        let audio = Bytes::from(vec![7u8; 5000]);
        assert_eq!(o.feed(audio.clone()), audio);
        o.finish();
        assert_eq!(
            o.take_logged(),
            (Bytes::from("[5000 bytes of audio/mpeg, not logged]"), false)
        );
        assert_eq!(o.take_media_body(), None);
    }

    /// What the observer reads from a Chat event, after `before` (the usage
    /// seen so far): (usage, text, stop reason, error, is the extra usage
    /// chunk).
    type Read = (
        Option<Usage>,
        String,
        Option<String>,
        Option<(u16, String)>,
        bool,
    );

    fn read_by_tree(data: &str, before: Option<Usage>) -> Option<Read> {
        let v: Value = serde_json::from_str(data).ok()?;
        let mut seen = StreamSeen {
            usage: before,
            ..StreamSeen::default()
        };
        dialect(Protocol::OpenAi).observe_event(Endpoint::ChatCompletions, "", &v, &mut seen);
        Some((
            seen.usage,
            seen.text.kept().to_string(),
            stop_in_event(Wire::Chat, &v).map(str::to_string),
            super::super::instream::error_event(Wire::Chat, "", &v),
            is_usage_chunk(&v),
        ))
    }

    /// The same through the observer's own reading without a tree (which
    /// strips the extra usage chunk).
    fn read_without_tree(data: &str, before: Option<Usage>) -> Option<Read> {
        let d = dialect(Protocol::OpenAi);
        let mut o = Observer::new(d, Endpoint::ChatCompletions, true, true, 0);
        o.seen.usage = before;
        let ev = ChatEvent::read(data)?;
        let passed = o.observe_chat(&ev);
        Some((
            o.seen.usage,
            o.seen.text.kept().to_string(),
            (!o.stop_reason.is_empty()).then(|| o.stop_reason.clone()),
            o.seen.error.map(|e| *e),
            !passed,
        ))
    }

    #[test]
    fn a_chat_event_read_without_a_tree_reads_as_the_tree() {
        // Read without a tree, and the same as the tree.
        let read = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"line\nwith \"quotes\" and \u00e9"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}}}"#,
            r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"},"finish_reason":"length"}]}"#,
            r#"{"choices":[{"text":"legacy","finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":null,"text":"from text"}]}"#,
            r#"{"choices":[{"delta":{"content":null},"text":"not read"}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]}}]}"#,
            r#"{"choices":null,"usage":{"prompt_tokens":1}}"#,
            r#"{"error":{"message":"overloaded","type":"server_overloaded"}}"#,
            r#"{"error":null,"choices":[{"delta":{"content":"ok"}}]}"#,
            r#"{"choi\u0063es":[{"delta":{"content":"escaped key"}}]}"#,
            r#"{"x":[[[{"deep":[1,2,{"y":null}]}]]],"choices":[{"delta":{"content":"after"}}]}"#,
            r#"{}"#,
        ];
        let before = Some(Usage {
            input: 7,
            output: 1,
            ..Usage::default()
        });
        for data in read {
            for prior in [None, before] {
                let fast = read_without_tree(data, prior);
                assert!(fast.is_some(), "not read without a tree: {data}");
                assert_eq!(fast, read_by_tree(data, prior), "{data}");
            }
        }
        // Left to the tree (the observer reads these as before).
        for data in [
            r#"{"choices":[{"delta":"text"}]}"#,
            r#"{"choices":[{"delta":{"content":["part"]}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":1}]}"#,
            r#"{"choices":{"0":{"delta":{"content":"a"}}}}"#,
            r#"{"choices":[1]}"#,
            r#"{"choices":[],"choices":[{"delta":{"content":"last"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"[{"choices":[]}]"#,
            r#"{"choices":[{"delta":{"content":"cut"#,
            "",
        ] {
            assert_eq!(read_without_tree(data, None), None, "{data}");
        }
    }

    /// What the observer reads from an Anthropic event named `name`, after
    /// `before` (the usage seen so far): (usage, text, stop reason, error,
    /// finished).
    type ReadA = (
        Option<Usage>,
        String,
        Option<String>,
        Option<(u16, String)>,
        bool,
    );

    fn anthropic_seen(before: Option<Usage>) -> StreamSeen {
        StreamSeen {
            usage: before,
            ..StreamSeen::default()
        }
    }

    fn read_anthropic_by_tree(name: &str, data: &str, before: Option<Usage>) -> Option<ReadA> {
        let v: Value = serde_json::from_str(data).ok()?;
        let mut seen = anthropic_seen(before);
        dialect(Protocol::Anthropic).observe_event(Endpoint::Messages, name, &v, &mut seen);
        Some((
            seen.usage,
            seen.text.kept().to_string(),
            stop_in_event(Wire::Anthropic, &v).map(str::to_string),
            super::super::instream::error_event(Wire::Anthropic, name, &v),
            seen.finished,
        ))
    }

    fn read_anthropic_without_tree(name: &str, data: &str, before: Option<Usage>) -> Option<ReadA> {
        let d = dialect(Protocol::Anthropic);
        let mut o = Observer::new(d, Endpoint::Messages, true, false, 0);
        o.seen = anthropic_seen(before);
        let ev = AnthropicEvent::read(data)?;
        o.observe_anthropic(&ev, name);
        Some((
            o.seen.usage,
            o.seen.text.kept().to_string(),
            (!o.stop_reason.is_empty()).then(|| o.stop_reason.clone()),
            o.seen.error.map(|e| *e),
            o.seen.finished,
        ))
    }

    #[test]
    fn an_anthropic_event_read_without_a_tree_reads_as_the_tree() {
        let before = Some(Usage {
            input: 10,
            output: 1,
            ..Usage::default()
        });
        let read = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"c","stop_reason":null,"usage":{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"there\"\n"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":null,"usage":null}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
            ("ping", r#"{"type": "ping"}"#),
            (
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
            ("error", r#"{"type":"error","error":null}"#),
            // The kind from the event's name when `type` is absent or null.
            ("content_block_delta", r#"{"delta":{"text":"named"}}"#),
            ("message_stop", r#"{"type":null}"#),
            ("x", r#"{}"#),
        ];
        for (name, data) in read {
            for prior in [None, before] {
                let fast = read_anthropic_without_tree(name, data, prior);
                assert!(fast.is_some(), "not read without a tree: {data}");
                assert_eq!(
                    fast,
                    read_anthropic_by_tree(name, data, prior),
                    "{name} {data}"
                );
            }
        }
        // Left to the tree.
        for data in [
            r#"{"type":1}"#,
            r#"{"type":"content_block_delta","delta":"text"}"#,
            r#"{"type":"content_block_delta","delta":{"text":["a"]}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":3}}"#,
            r#"{"type":"a","type":"b"}"#,
            r#"{"type":"content_block_delta","delta":{"text":"a","text":"b"}}"#,
            r#"["message_stop"]"#,
            r#"{"type":"message_st"#,
        ] {
            assert_eq!(AnthropicEvent::read(data), None, "{data}");
        }
    }

    #[test]
    fn a_chat_stream_is_observed_without_trees_as_with_them() {
        let d = dialect(Protocol::OpenAi);
        let mut o = Observer::new(d, Endpoint::ChatCompletions, true, true, 1 << 16);
        let events = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            // Left to the tree: a delta that is a string.
            "data: {\"choices\":[{\"delta\":\"odd\",\"text\":\"lo\"}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        );
        let out = o.feed(Bytes::from_static(events.as_bytes()));
        // The usage chunk the gateway asked for is taken out.
        assert!(!out.windows(12).any(|w| w == b"prompt_token"));
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(o.seen.text.kept(), "Hello");
        assert_eq!(o.stop_reason, "stop");
        assert_eq!(o.usage().map(|u| (u.input, u.output)), Some((4, 2)));
        assert!(o.seen.finished);
    }

    #[test]
    fn a_whole_answer_is_logged_from_the_bytes_read_for_usage() {
        let d = dialect(Protocol::OpenAi);
        let body: &'static [u8] =
            b"{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}";
        // One chunk: logged as that chunk, not a copy of it.
        let mut o = Observer::new(d, Endpoint::ChatCompletions, false, false, 1 << 16);
        let chunk = Bytes::from_static(body);
        o.feed(chunk.clone());
        o.finish();
        assert_eq!(o.usage().map(|u| (u.input, u.output)), Some((3, 1)));
        let (logged, cut) = o.take_logged();
        assert_eq!(
            (logged.as_ptr(), &logged[..], cut),
            (chunk.as_ptr(), body, false)
        );
        // Several chunks, under a cap shorter than the body: its first
        // bytes, and usage read from all of it.
        let mut o = Observer::new(d, Endpoint::ChatCompletions, false, false, 20);
        for part in body.chunks(7) {
            o.feed(Bytes::copy_from_slice(part));
        }
        o.finish();
        assert_eq!(o.usage().map(|u| (u.input, u.output)), Some((3, 1)));
        assert_eq!(o.take_logged(), (Bytes::from_static(&body[..20]), true));
        // Nothing logged: cut at nothing.
        let mut o = Observer::new(d, Endpoint::ChatCompletions, false, false, 0);
        o.feed(chunk.clone());
        assert_eq!(o.take_logged(), (Bytes::new(), true));
    }

    #[test]
    fn an_answer_past_the_size_read_whole_is_logged_from_its_start() {
        let d = dialect(Protocol::OpenAi);
        let mut o = Observer::new(d, Endpoint::ChatCompletions, false, false, 1 << 16);
        let first = Bytes::from(vec![b'a'; MAX_PARSED_BODY - 10]);
        let second = Bytes::from(vec![b'b'; 100]);
        o.feed(Bytes::from_static(b"0123456789"));
        o.feed(first);
        // Past the size read whole: the log keeps its own copy from here,
        // with what came before.
        o.feed(second);
        o.finish();
        let (logged, cut) = o.take_logged();
        assert!(cut);
        assert_eq!(logged.len(), 1 << 16);
        assert!(logged.starts_with(b"0123456789aaa"));
        assert_eq!(o.take_media_body(), None);
    }

    #[test]
    fn whole_bodies_are_parsed_at_the_end() {
        let d = dialect(Protocol::Anthropic);
        let mut o = Observer::new(d, Endpoint::Messages, false, false, 1 << 16);
        o.feed(Bytes::from_static(
            b"{\"content\":[{\"type\":\"text\",\"text\":\"yo\"}],",
        ));
        o.feed(Bytes::from_static(
            b"\"usage\":{\"input_tokens\":4,\"output_tokens\":2}}",
        ));
        o.finish();
        assert_eq!(o.usage().unwrap().output, 2);

        // Without usage, the text is kept for the estimate.
        let mut o = Observer::new(d, Endpoint::Messages, false, false, 1 << 16);
        o.feed(Bytes::from_static(
            b"{\"content\":[{\"type\":\"text\",\"text\":\"yo\"}],\"usage\":null}",
        ));
        o.finish();
        assert!(o.usage().is_none());
        assert_eq!(o.seen.text.kept(), "yo");

        let d = dialect(Protocol::OpenAi);
        let mut o = Observer::new(d, Endpoint::ChatCompletions, false, false, 1 << 16);
        o.feed(Bytes::from_static(
            b"{\"choices\":[{\"message\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}",
        ));
        o.finish();
        assert_eq!(o.usage().unwrap().input, 5);
    }

    #[test]
    fn the_stop_reason_is_kept_as_the_upstream_said_it() {
        let streamed = |protocol, endpoint, events: &'static [u8]| {
            let mut o = Observer::new(dialect(protocol), endpoint, true, false, 0);
            o.feed(Bytes::from_static(events));
            o.finish();
            o.stop_reason
        };
        assert_eq!(
            streamed(
                Protocol::Anthropic,
                Endpoint::Messages,
                b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"pause_turn\"},\"usage\":{\"output_tokens\":1}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
            ),
            "pause_turn"
        );
        assert_eq!(
            streamed(
                Protocol::Gemini,
                Endpoint::GeminiStream { sse: true },
                b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\n\ndata: {\"candidates\":[{\"finishReason\":\"MALFORMED_FUNCTION_CALL\"}]}\n\n"
            ),
            "MALFORMED_FUNCTION_CALL"
        );
        // The usage chunk after the finish does not clear it.
        assert_eq!(
            streamed(
                Protocol::OpenAiChat,
                Endpoint::ChatCompletions,
                b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n"
            ),
            "tool_calls"
        );
        assert_eq!(
            streamed(
                Protocol::OpenAi,
                Endpoint::Responses,
                b"event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"}}}\n\n"
            ),
            "max_output_tokens"
        );

        let whole = |protocol, endpoint, body: &'static [u8]| {
            let mut o = Observer::new(dialect(protocol), endpoint, false, false, 0);
            o.feed(Bytes::from_static(body));
            o.finish();
            o.stop_reason
        };
        assert_eq!(
            whole(
                Protocol::Anthropic,
                Endpoint::Messages,
                br#"{"content":[{"type":"text","text":"stop_reason"}],"stop_reason":"refusal","usage":{"input_tokens":1,"output_tokens":1}}"#
            ),
            "refusal"
        );
        assert_eq!(
            whole(
                Protocol::OpenAi,
                Endpoint::Responses,
                br#"{"status":"completed","incomplete_details":null,"output":[],"usage":{"input_tokens":1,"output_tokens":1}}"#
            ),
            "completed"
        );
        // Chat keeps it inside a choice: not parsed for.
        assert_eq!(
            whole(
                Protocol::OpenAiChat,
                Endpoint::ChatCompletions,
                br#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#
            ),
            ""
        );
    }
}
