//! Translation on the request path, for a target whose protocol is not the
//! client's (`llmgw_core::serving`): the client's body is decoded once into
//! the intermediate form and encoded for each target tried; the answer is
//! transcoded back, a stream event by event as it arrives, a whole body
//! once it is complete. The protocols themselves live in `llmgw-protocols`;
//! this module only feeds them bytes.

use bytes::Bytes;
use llmgw_core::serving::WireFormat;
use llmgw_protocols::ir::{self, Usage};
use llmgw_protocols::stream::Delta;
use llmgw_protocols::{
    anthropic, gemini, EncoderOptions, Event, Lossy, StreamDecoder, StreamEncoder, Wire,
};

use super::dialect::Endpoint;
use super::error::ErrorKind;
use super::generated::Generated;
use super::sse::{self, Splitter};
use crate::logs::capture::Capture;

/// The `max_tokens` an Anthropic target gets when neither the client nor
/// the model says (Anthropic requires one).
use llmgw_protocols::anthropic::DEFAULT_MAX_TOKENS;

/// Largest upstream body read whole to be translated.
pub const MAX_TRANSLATED_BODY: usize = 64 << 20;

pub fn wire(w: WireFormat) -> Wire {
    match w {
        WireFormat::Chat => Wire::Chat,
        WireFormat::Responses => Wire::Responses,
        WireFormat::Anthropic => Wire::Anthropic,
        WireFormat::Gemini => Wire::Gemini,
    }
}

/// A client's request in the intermediate form, decoded once.
pub struct Translation {
    request: ir::Request,
    /// Whether the client counts tokens rather than generating.
    pub counting: bool,
    /// What the client's own decoding left out (lenient mode).
    pub dropped: Vec<String>,
    lenient: bool,
}

/// A translation failure as the client's error.
fn refused(e: &llmgw_protocols::Error) -> (ErrorKind, String) {
    (ErrorKind::BadRequest, e.to_string())
}

impl Translation {
    pub fn decode(
        from: Wire,
        endpoint: Endpoint,
        raw: &[u8],
        path_model: Option<&str>,
        streaming: bool,
        lenient: bool,
    ) -> Result<Translation, (ErrorKind, String)> {
        let mut lossy = if lenient {
            Lossy::lenient()
        } else {
            Lossy::strict()
        };
        let counting = matches!(
            endpoint,
            Endpoint::CountTokens | Endpoint::GeminiCountTokens
        );
        let mut request = if endpoint == Endpoint::GeminiCountTokens {
            gemini::decode_count_request(raw, &mut lossy)
        } else {
            from.decode_request(raw, &mut lossy)
        }
        .map_err(|e| refused(&e))?;
        if let Some(m) = path_model {
            request.model = m.to_string();
        }
        request.stream = streaming && !counting;
        Ok(Translation {
            request,
            counting,
            dropped: lossy.dropped,
            lenient,
        })
    }

    /// The body for a target of wire `to`, and every field left out on
    /// the way (the client's own and the target's).
    pub fn encode(
        &self,
        to: Wire,
        upstream_model: &str,
        default_max_tokens: Option<u64>,
    ) -> Result<(Bytes, Vec<String>), (ErrorKind, String)> {
        let mut lossy = Lossy {
            lenient: self.lenient,
            dropped: self.dropped.clone(),
        };
        let mut req = self.request.clone();
        req.model = upstream_model.to_string();
        if to == Wire::Anthropic && req.max_tokens.is_none() && !self.counting {
            req.max_tokens = Some(default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS));
        }
        let body = match (self.counting, to) {
            (true, Wire::Anthropic) => anthropic::encode_count_request(&req, &mut lossy),
            (true, Wire::Gemini) => gemini::encode_count_request(&req, &mut lossy),
            _ => to.encode_request(&req, &mut lossy),
        }
        .map_err(|e| refused(&e))?;
        Ok((Bytes::from(body), lossy.dropped))
    }

    /// The path after the provider's base URL.
    pub fn upstream_path(&self, to: Wire, upstream_model: &str) -> String {
        match (to, self.counting) {
            (Wire::Chat, _) => "/chat/completions".into(),
            (Wire::Responses, _) => "/responses".into(),
            (Wire::Anthropic, false) => "/messages".into(),
            (Wire::Anthropic, true) => "/messages/count_tokens".into(),
            (Wire::Gemini, true) => format!("/models/{upstream_model}:countTokens"),
            (Wire::Gemini, false) if self.request.stream => {
                format!("/models/{upstream_model}:streamGenerateContent?alt=sse")
            }
            (Wire::Gemini, false) => format!("/models/{upstream_model}:generateContent"),
        }
    }
}

/// Tokens an image is counted as by the local tokenizer: the size of one
/// high-detail 512×512 tile at OpenAI, since a gateway that never fetches
/// an image cannot know its size.
pub const IMAGE_TOKENS: u64 = 765;

/// Per-message overhead of the chat format (role and separators).
const PER_MESSAGE: u64 = 3;

/// Counts a request's input with the local tokenizer: system, messages
/// (text, tool calls and results, thinking), tool definitions, and a fixed
/// amount per image. Runs on the blocking pool (building a tokenizer table
/// takes a noticeable fraction of a second the first time).
pub async fn count_locally(tokenizer_model: &str, t: &Translation) -> u64 {
    let mut text = String::new();
    let mut images = 0u64;
    let req = &t.request;
    collect(&req.system, &mut text, &mut images);
    for m in &req.messages {
        collect(&m.content, &mut text, &mut images);
    }
    for tool in &req.tools {
        text.push_str(&tool.name);
        text.push('\n');
        if let Some(d) = &tool.description {
            text.push_str(d);
            text.push('\n');
        }
        text.push_str(&tool.parameters.to_string());
        text.push('\n');
    }
    let messages = req.messages.len() as u64;
    let overhead = messages * PER_MESSAGE + u64::from(messages > 0) * PER_MESSAGE;
    let model = tokenizer_model.to_string();
    let counted =
        tokio::task::spawn_blocking(move || llmgw_core::tokens::count_text(&model, &text))
            .await
            .unwrap_or(0);
    counted + overhead + images * IMAGE_TOKENS
}

fn collect(parts: &[ir::Part], text: &mut String, images: &mut u64) {
    for p in parts {
        match p {
            ir::Part::Text { text: t } | ir::Part::Thinking { text: t, .. } => {
                text.push_str(t);
                text.push('\n');
            }
            ir::Part::Image(_) => *images += 1,
            ir::Part::ToolCall {
                name, arguments, ..
            } => {
                text.push_str(name);
                text.push('\n');
                text.push_str(arguments);
                text.push('\n');
            }
            ir::Part::ToolResult { content, .. } => collect(content, text, images),
        }
    }
}

/// An upstream error in the provider's shape, rewritten in the client's:
/// the status the client gets (529 is 503 outside Anthropic) and the body.
pub fn error(from: Wire, to: Wire, status: u16, body: &[u8]) -> (u16, Bytes) {
    let e = from.decode_error(status, body);
    let (status, body) = to.encode_error(&e);
    (status, Bytes::from(body))
}

/// A whole upstream answer rewritten for the client, with its usage for
/// the record, its generated text and its stop reason as the upstream
/// named it.
pub fn whole(
    from: Wire,
    to: Wire,
    counting: bool,
    body: &[u8],
    opts: &EncoderOptions,
    input_estimate: impl FnOnce() -> u64,
) -> Result<(Bytes, Option<Usage>, Generated, String), String> {
    if counting {
        let n = match from {
            Wire::Anthropic => anthropic::decode_count_response(body),
            _ => gemini::decode_count_response(body),
        }
        .map_err(|e| e.to_string())?;
        let out = match to {
            Wire::Gemini => gemini::encode_count_response(n),
            _ => anthropic::encode_count_response(n),
        };
        let usage = Usage {
            input: n,
            ..Default::default()
        };
        return Ok((
            Bytes::from(out),
            Some(usage),
            Generated::default(),
            String::new(),
        ));
    }
    let mut resp = from.decode_response(body).map_err(|e| e.to_string())?;
    // The generated text is needed only to estimate output tokens the
    // upstream did not report (none, or all zero).
    let mut text = Generated::default();
    let estimating = resp.usage.is_none_or(|u| super::record::is_zero(&u));
    for p in resp.content.iter().filter(|_| estimating) {
        match p {
            ir::Part::Text { text: t } | ir::Part::Thinking { text: t, .. } => {
                text.push(t);
            }
            ir::Part::ToolCall { arguments, .. } => text.push(arguments),
            _ => {}
        }
    }
    // The upstream's usage for the record (`None`: the record estimates
    // with tiktoken); the client always gets a usage, estimated if need be.
    let reported = resp.usage;
    if resp.usage.is_none() {
        resp.usage = Some(Usage {
            input: input_estimate(),
            output: text.len().div_ceil(4),
            ..Default::default()
        });
    }
    let out = to.encode_response(&resp, opts);
    Ok((Bytes::from(out), reported, text, from.stop_name(&resp.stop)))
}

/// A translated stream on its way to the client: upstream events are
/// decoded and re-encoded as they arrive, and the client's frames go out
/// with the chunk that completed them.
pub struct Transcoder {
    splitter: Splitter,
    decoder: Box<dyn StreamDecoder>,
    encoder: Box<dyn StreamEncoder>,
    events: Vec<Event>,
    /// Usage the upstream reported, normalized.
    usage: Option<Usage>,
    /// Why the upstream stopped, as it named it.
    stop_reason: String,
    /// Generated text, for an estimate when no usage is reported.
    pub text: Generated,
    /// The client's terminal frames have been written.
    pub finished: bool,
    /// What the request log keeps of what the client got, in blocks up
    /// to the cap (as a passed-through stream's).
    pub logged: Capture,
    /// Why the upstream stream could not be read, if it could not.
    pub broken: Option<String>,
    /// The upstream's wire format.
    from: Wire,
    /// An error the upstream reported in the stream: the status it
    /// implies and its message.
    upstream_error: Option<(u16, String)>,
    /// Estimates the request's input tokens: run at most once, and only
    /// when the client must be told an input count the upstream has not
    /// reported (an Anthropic client's `message_start`, a final usage
    /// when the upstream reports none).
    estimate: Option<InputEstimate>,
    input_estimate: Option<u64>,
}

/// Estimates a request's input tokens.
pub type InputEstimate = Box<dyn FnOnce() -> u64 + Send>;

impl Transcoder {
    pub fn new(
        from: Wire,
        to: Wire,
        opts: EncoderOptions,
        log_cap: usize,
        estimate: InputEstimate,
    ) -> Transcoder {
        Transcoder {
            splitter: Splitter::default(),
            decoder: from.stream_decoder(),
            encoder: to.stream_encoder(opts),
            events: Vec::new(),
            usage: None,
            stop_reason: String::new(),
            text: Generated::default(),
            finished: false,
            logged: Capture::streaming(log_cap),
            broken: None,
            from,
            upstream_error: None,
            estimate: Some(estimate),
            input_estimate: None,
        }
    }

    fn input_estimate(&mut self) -> u64 {
        if let Some(f) = self.estimate.take() {
            self.input_estimate = Some(f());
        }
        self.input_estimate.unwrap_or(0)
    }

    /// Supplies the input estimate if the encoder is about to write one.
    fn estimate_for(&mut self, next: Option<&Event>) {
        if self.estimate.is_some() && self.encoder.wants_input_estimate(next) {
            let n = self.input_estimate();
            self.encoder.set_input_estimate(n);
        }
    }

    fn log(&mut self, b: &[u8]) {
        self.logged.push(b);
    }

    fn forward(&mut self, out: &mut Vec<u8>) {
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            match &ev {
                Event::Usage(u) => {
                    self.usage = Some(*u);
                    if u.input > 0 {
                        // Reported: the estimate (and the request body it
                        // holds) is not needed.
                        self.estimate = None;
                        self.input_estimate.get_or_insert(u.input);
                    }
                }
                Event::Stop(s) => self.stop_reason = self.from.stop_name(s),
                // Everything generated counts toward an output estimate.
                Event::Delta {
                    delta: Delta::Text(t) | Delta::Thinking(t) | Delta::Arguments(t),
                    ..
                } => self.text.push(t),
                _ => {}
            }
            self.estimate_for(Some(&ev));
            self.encoder.event(ev, out);
        }
        // The buffer is kept for the next event.
        self.events = events;
    }

    fn read_event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.broken.is_some() {
            return;
        }
        let ev = sse::parse(raw);
        if ev.data.is_empty() {
            return;
        }
        if let Err(e) = self.decoder.event(ev.name, &ev.data, &mut self.events) {
            self.broken = Some(e.to_string());
        }
        if self.upstream_error.is_none() {
            if let Some(message) = self.events.iter().find_map(|e| match e {
                Event::Error { message } => Some(message),
                _ => None,
            }) {
                // The status the upstream's error names, from the event.
                let status = serde_json::from_str(&ev.data)
                    .ok()
                    .and_then(|v| super::instream::error_event(self.from, ev.name, &v))
                    .map_or(super::instream::UNKNOWN_STATUS, |(s, _)| s);
                self.upstream_error =
                    Some((status, format!("upstream error in the stream: {message}")));
            }
        }
        self.forward(out);
    }

    /// Takes one upstream chunk and returns what the client gets.
    pub fn feed(&mut self, chunk: &Bytes) -> Bytes {
        // Room for the usual re-encoding without regrowing.
        let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 2 + 128);
        for raw in self.splitter.push(chunk) {
            self.read_event(&raw, &mut out);
        }
        self.log(&out);
        Bytes::from(out)
    }

    /// The upstream body ended: what is still held back, and the client's
    /// terminal frames (`fallback`: the final usage when the upstream
    /// reported none, from the generated text's length in bytes, whose input is
    /// replaced by the estimate). A stream cut before the upstream's own terminal
    /// event ends in the client's error instead.
    pub fn finish(&mut self, fallback: impl FnOnce(u64) -> Usage) -> Bytes {
        let mut out = Vec::new();
        if let Some(rest) = self.splitter.take_rest() {
            self.read_event(&rest, &mut out);
        }
        if let Some(why) = self.broken.clone() {
            self.encoder.fail(&why, &mut out);
        } else if !self.decoder.complete() {
            self.decoder.finish(&mut self.events);
            self.forward(&mut out);
            self.encoder
                .fail("the upstream stream ended before its last event", &mut out);
            self.broken = Some("the upstream stream ended before its last event".into());
        } else {
            self.decoder.finish(&mut self.events);
            self.forward(&mut out);
            let fallback = self.usage.is_none().then(|| Usage {
                input: self.input_estimate(),
                ..fallback(self.text.len())
            });
            self.estimate_for(None);
            self.encoder.finish(fallback, &mut out);
        }
        self.finished = true;
        self.log(&out);
        Bytes::from(out)
    }

    /// The client's terminal error, for a stream that broke.
    pub fn fail(&mut self, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.finished {
            self.encoder.fail(message, &mut out);
            self.finished = true;
        }
        out
    }

    /// Why the stream failed, for the log: the upstream's own error
    /// first, else why it could not be read (a bad gateway).
    pub fn failure(&self) -> Option<(u16, String)> {
        self.upstream_error.clone().or_else(|| {
            self.broken
                .clone()
                .map(|m| (super::instream::UNKNOWN_STATUS, m))
        })
    }

    /// Usage the upstream reported.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Why the upstream stopped, as it named it; empty if it did not say.
    pub fn take_stop_reason(&mut self) -> String {
        std::mem::take(&mut self.stop_reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":7,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hé\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn chat_client() -> Transcoder {
        let opts = EncoderOptions {
            model: "m".into(),
            id: "req-1".into(),
            include_usage: true,
            ..Default::default()
        };
        Transcoder::new(Wire::Anthropic, Wire::Chat, opts, 1 << 20, Box::new(|| 0))
    }

    /// The client's whole stream, fed in pieces of `size` bytes.
    fn run(input: &[u8], size: usize) -> (String, Transcoder) {
        let mut t = chat_client();
        let mut out = Vec::new();
        for piece in input.chunks(size) {
            out.extend_from_slice(&t.feed(&Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&t.finish(|_| Usage::default()));
        (String::from_utf8(out).unwrap(), t)
    }

    #[test]
    fn a_stream_transcodes_the_same_whatever_its_byte_boundaries() {
        let (whole, t) = run(ANTHROPIC_STREAM.as_bytes(), ANTHROPIC_STREAM.len());
        assert!(t.finished && t.broken.is_none());
        assert_eq!(
            t.usage(),
            Some(Usage {
                input: 7,
                cache_read: 3,
                output: 9,
                ..Default::default()
            })
        );
        assert!(whole.ends_with("data: [DONE]\n\n"), "{whole}");
        assert!(
            whole.contains("\"finish_reason\":\"tool_calls\""),
            "{whole}"
        );
        assert!(whole.contains("\"prompt_tokens\":10"), "{whole}");
        // Everything generated, for an output estimate.
        assert_eq!(t.text.kept(), "hé{\"city\":\"Paris\"}");
        // Every split, even inside a UTF-8 character, gives the same bytes.
        for size in [1, 2, 3, 7, 64, 500] {
            assert_eq!(run(ANTHROPIC_STREAM.as_bytes(), size).0, whole, "{size}");
        }
        // The arguments arrive whole at the client, in fragments.
        let mut args = String::new();
        for line in whole.lines().filter_map(|l| l.strip_prefix("data: ")) {
            if line == "[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(a) = v.pointer("/choices/0/delta/tool_calls/0/function/arguments") {
                args.push_str(a.as_str().unwrap());
            }
        }
        assert_eq!(args, "{\"city\":\"Paris\"}");
    }

    #[test]
    fn a_reported_input_lets_the_estimate_and_its_request_body_go() {
        let opts = EncoderOptions {
            model: "m".into(),
            id: "req-1".into(),
            ..Default::default()
        };
        let mut t = Transcoder::new(
            Wire::Anthropic,
            Wire::Chat,
            opts,
            1 << 20,
            Box::new(|| unreachable!("the input was reported")),
        );
        let head =
            &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: content_block_start").unwrap()];
        t.feed(&Bytes::copy_from_slice(head.as_bytes()));
        assert!(t.estimate.is_none());
        assert_eq!(t.input_estimate(), 7);
    }

    #[test]
    fn the_log_keeps_what_the_client_got_up_to_the_cap_in_blocks() {
        let opts = EncoderOptions {
            model: "m".into(),
            id: "req-1".into(),
            ..Default::default()
        };
        let cap = 10_000;
        let mut t = Transcoder::new(Wire::Anthropic, Wire::Chat, opts, cap, Box::new(|| 0));
        let head = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: content_block_stop").unwrap()];
        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"more text \"}}\n\n";
        let mut out = t.feed(&Bytes::copy_from_slice(head.as_bytes())).to_vec();
        for _ in 0..2_000 {
            out.extend_from_slice(&t.feed(&Bytes::from_static(delta.as_bytes())));
            // Never more memory than the cap and one block.
            assert!(t.logged.allocated() <= cap + crate::logs::capture::BLOCK);
        }
        assert!(out.len() > 10 * cap);
        assert!(t.logged.truncated());
        let kept = t.logged.take();
        assert_eq!(&kept[..], &out[..cap]);
    }

    #[test]
    fn a_cut_stream_ends_in_the_clients_error() {
        let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_delta").unwrap()];
        let (out, t) = run(cut.as_bytes(), 100);
        assert!(t.broken.is_some());
        assert!(!out.contains("[DONE]"), "{out}");
        assert!(
            out.trim_end().ends_with('}') && out.contains("\"error\""),
            "{out}"
        );
    }

    #[test]
    fn an_in_stream_error_is_the_failure_with_its_status() {
        let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: content_block_stop").unwrap()];
        let errored = format!(
            "{cut}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
        );
        let (out, t) = run(errored.as_bytes(), 50);
        let (status, message) = t.failure().unwrap();
        assert_eq!(status, 529);
        assert!(message.contains("Overloaded"), "{message}");
        assert!(!out.contains("[DONE]"), "{out}");
        // A whole stream has none.
        let (_, t) = run(ANTHROPIC_STREAM.as_bytes(), 50);
        assert_eq!(t.failure(), None);
    }

    #[test]
    fn upstream_errors_take_the_clients_shape() {
        let (status, body) = error(
            Wire::Anthropic,
            Wire::Chat,
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
        );
        assert_eq!(status, 503);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "busy");
        let (status, body) = error(
            Wire::Chat,
            Wire::Gemini,
            429,
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        );
        assert_eq!(status, 429);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    }
}
