//! What a chat reply says — thinking, text, parallel tool calls, how it
//! ends, usage — and how each of the four protocols writes it, whole and
//! as a stream: OpenAI Chat Completions, OpenAI Responses, Anthropic
//! Messages and Gemini `generateContent`.
//!
//! A `Composition` is decided once per request from its resolved
//! `Behavior` and parsed body; `Composition::whole` renders the
//! non-streaming body and `Composition::stream` every event of the
//! stream up front (as a `BuiltStream`). Plain text streams of Chat
//! Completions and Anthropic Messages, the benchmarks' path, are rendered
//! lazily by `StreamPlan` (in `render`) instead; the two agree event for
//! event (see the tests).
//!
//! Deterministic content:
//! - thinking: [`THINKING_CHUNKS`] chunks `"think{i} "`, signed with
//!   [`signature`] of the whole thinking text;
//! - text: chunk `i` is `"tok{i} "`;
//! - tool call `i`: name `tools[i % len]` of the request (`"mock_tool"`
//!   without tools), arguments [`tool_arguments`]`(i)` =
//!   `{"city":"Paris","n":i}`, streamed as the 4 fragments of
//!   [`arg_fragments`].
//!
//! Output tokens are thinking chunks + text chunks + argument fragments
//! (4 per call, fewer for a cut call); reasoning tokens are the thinking
//! chunks. With cache `R,W` the total input is prompt words + R + W.

use std::fmt::Write as _;

use base64::Engine as _;
use hyper::body::Bytes;
use serde_json::{json, Map, Value};

use crate::behavior::{Behavior, Finish};
use crate::parse::LlmRequest;
use crate::render::{chunk_text, full_text, padded_text};

/// Number of thinking chunks of a reply with thinking.
pub const THINKING_CHUNKS: u32 = 3;

/// Name of the tool called when the request declares none.
pub const DEFAULT_TOOL: &str = "mock_tool";

/// The protocols whose replies a [`Composition`] renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Chat,
    Responses,
    Messages,
    Gemini,
}

/// The arguments of tool call `i`.
pub fn tool_arguments(i: usize) -> String {
    format!(r#"{{"city":"Paris","n":{i}}}"#)
}

/// The streamed fragments of [`tool_arguments`]`(i)`, in order.
pub fn arg_fragments(i: usize) -> Vec<String> {
    vec![
        r#"{"city""#.to_owned(),
        r#":"Paris""#.to_owned(),
        r#","n":"#.to_owned(),
        format!("{i}}}"),
    ]
}

/// The whole thinking text of a reply with thinking.
pub fn thinking_text() -> String {
    (0..THINKING_CHUNKS).map(|i| format!("think{i} ")).collect()
}

/// A deterministic, opaque, valid base64 signature of `text`: what the
/// mock sends as Anthropic's thinking `signature`, Gemini's
/// `thoughtSignature` and Responses' `encrypted_content`. Gemini's
/// signature of the first function call is `signature(thinking + "#call")`,
/// Responses' `encrypted_content` is `signature("rs:" + thinking)`.
pub fn signature(text: &str) -> String {
    // FNV-1a, then a splitmix64 sequence from it: 32 bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut bytes = b"sig:".to_vec();
    for _ in 0..4 {
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        bytes.extend_from_slice(&z.to_be_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One tool call of a reply.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub name: String,
    /// The argument fragments sent (all 4, or the first half when cut).
    pub fragments: Vec<String>,
    /// False when max tokens cut the arguments.
    pub complete: bool,
}

impl Call {
    fn arguments(&self) -> String {
        self.fragments.concat()
    }
}

/// How the reply ends, after the tool calls and max tokens are taken into
/// account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Stop,
    Length,
    StopSequence,
    ContentFilter,
    ToolUse,
}

/// Everything one reply says (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Composition {
    pub protocol: Protocol,
    pub seq: u64,
    pub model: String,
    pub created: u64,
    /// Prompt words (uncached input).
    pub prompt: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub thinking: bool,
    pub text_chunks: u32,
    /// Non-streaming text is padded to this many bytes (`reply-bytes`).
    pub reply_bytes: usize,
    pub calls: Vec<Call>,
    pub ending: Ending,
    /// Anthropic's `stop_sequence` when the ending is a stop sequence.
    pub stop_sequence: String,
    pub usage: bool,
    pub include_usage: bool,
    pub interleave: bool,
    pub args_final_only: bool,
    pub content_and_finish: bool,
    pub usage_in_finish: bool,
    pub encrypted_reasoning: bool,
    pub error_after: Option<u32>,
    /// A stop reason word sent as it is (`x-mock-stop-reason`).
    pub stop_reason: Option<String>,
}

impl Composition {
    pub fn new(
        protocol: Protocol,
        seq: u64,
        model: String,
        created: u64,
        req: &LlmRequest,
        b: &Behavior,
    ) -> Self {
        let mut text_chunks = if b.tool_calls > 0 && !b.chunks_explicit {
            0
        } else {
            b.chunks
        };
        let mut truncated = false;
        if let Some(max) = req.max_output() {
            if u64::from(text_chunks) > max {
                text_chunks = u32::try_from(max).unwrap_or(u32::MAX);
                truncated = true;
            }
        }
        let mut names = req.tool_names();
        if names.is_empty() {
            names.push(DEFAULT_TOOL.to_owned());
        }
        let mut calls: Vec<Call> = (0..b.tool_calls as usize)
            .map(|i| Call {
                name: names[i % names.len()].clone(),
                fragments: arg_fragments(i),
                complete: true,
            })
            .collect();
        let cut = b.max_tokens_in_args && !calls.is_empty();
        if let Some(last) = calls.last_mut().filter(|_| cut) {
            last.fragments.truncate(2);
            last.complete = false;
        }
        let ending = if cut || truncated {
            Ending::Length
        } else {
            match b.finish {
                Some(Finish::Stop) => Ending::Stop,
                Some(Finish::Length) => Ending::Length,
                Some(Finish::StopSequence) => Ending::StopSequence,
                Some(Finish::ContentFilter) => Ending::ContentFilter,
                None if calls.is_empty() => Ending::Stop,
                None => Ending::ToolUse,
            }
        };
        Self {
            protocol,
            seq,
            model,
            created,
            prompt: req.prompt_tokens(),
            cache_read: b.cache_read,
            cache_write: b.cache_write,
            thinking: b.thinking,
            text_chunks,
            reply_bytes: b.reply_bytes,
            calls,
            ending,
            stop_sequence: req
                .first_stop_sequence()
                .unwrap_or_else(|| "###".to_owned()),
            usage: !b.no_usage,
            include_usage: req.include_usage(),
            interleave: b.interleave,
            args_final_only: b.args_final_only,
            content_and_finish: b.content_and_finish,
            usage_in_finish: b.usage_in_finish,
            encrypted_reasoning: req.includes_encrypted_reasoning(),
            error_after: b.error_after,
            stop_reason: b.stop_reason.clone(),
        }
    }

    /// Whether a Chat Completions or Anthropic stream of this reply is the
    /// plain text stream [`crate::render::StreamPlan`] renders.
    pub fn is_plain(&self) -> bool {
        !self.thinking
            && self.calls.is_empty()
            && self.ending == Ending::Stop
            && self.cache_read == 0
            && self.cache_write == 0
            && !self.content_and_finish
            && !self.usage_in_finish
            && self.error_after.is_none()
            && self.stop_reason.is_none()
    }

    fn thinking_chunks(&self) -> u32 {
        if self.thinking {
            THINKING_CHUNKS
        } else {
            0
        }
    }

    /// All output tokens, reasoning included.
    fn output_tokens(&self) -> u64 {
        u64::from(self.thinking_chunks())
            + u64::from(self.text_chunks)
            + self
                .calls
                .iter()
                .map(|c| c.fragments.len() as u64)
                .sum::<u64>()
    }

    fn reasoning_tokens(&self) -> u64 {
        u64::from(self.thinking_chunks())
    }

    /// Total input: prompt words + cache reads + cache writes.
    fn input_tokens(&self) -> u64 {
        self.prompt + self.cache_read + self.cache_write
    }

    fn text(&self) -> String {
        full_text(self.text_chunks)
    }

    /// Non-streaming text: the chunk texts, padded to `reply-bytes`.
    fn whole_text(&self) -> String {
        padded_text(self.text_chunks, self.reply_bytes)
    }

    /// The non-streaming body.
    pub fn whole(&self) -> Bytes {
        let v = match self.protocol {
            Protocol::Chat => self.chat_whole(),
            Protocol::Responses => self.responses_whole(),
            Protocol::Messages => self.messages_whole(),
            Protocol::Gemini => self.gemini_whole(),
        };
        Bytes::from(v.to_string())
    }

    /// Every event of the stream. `gemini_sse`: Gemini's `alt=sse` (else a
    /// streamed JSON array).
    pub fn stream(&self, gemini_sse: bool) -> BuiltStream {
        let mut s = match self.protocol {
            Protocol::Chat => self.chat_stream(),
            Protocol::Responses => self.responses_stream(),
            Protocol::Messages => self.messages_stream(),
            Protocol::Gemini => self.gemini_stream(gemini_sse),
        };
        if let Some(n) = self.error_after {
            let k = s.abort_index(n);
            s.events.truncate(k);
            s.content.truncate(k);
            let error = self.stream_error(k, gemini_sse);
            s.events.push(error);
            s.content.push(false);
        }
        s
    }

    /// The in-stream error event that ends the stream at event `k`.
    fn stream_error(&self, k: usize, gemini_sse: bool) -> Bytes {
        let message = "llmgw-mock: injected in-stream error";
        match self.protocol {
            Protocol::Chat => Bytes::from(format!(
                "data: {}\n\n",
                json!({"error": {"message": message, "type": "server_error", "param": null, "code": "server_error"}})
            )),
            Protocol::Responses => named(
                "response.failed",
                &json!({"type": "response.failed", "sequence_number": k,
                        "response": self.response_object("failed", json!([]), Value::Null,
                            Value::Null, json!({"code": "server_error", "message": message}))}),
            ),
            Protocol::Messages => named(
                "error",
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            Protocol::Gemini => {
                let v =
                    json!({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}});
                if gemini_sse {
                    Bytes::from(format!("data: {v}\n\n"))
                } else {
                    let sep = if k == 0 { "[" } else { ",\r\n" };
                    Bytes::from(format!("{sep}{v}\n]"))
                }
            }
        }
    }

    // ---------------------------------------------------------------
    // Chat Completions

    fn chat_finish_reason(&self) -> &str {
        if let Some(raw) = &self.stop_reason {
            return raw;
        }
        match self.ending {
            Ending::Stop | Ending::StopSequence => "stop",
            Ending::Length => "length",
            Ending::ContentFilter => "content_filter",
            Ending::ToolUse => "tool_calls",
        }
    }

    fn chat_usage(&self) -> Value {
        let (p, c) = (self.input_tokens(), self.output_tokens());
        json!({
            "prompt_tokens": p,
            "completion_tokens": c,
            "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": self.cache_read, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens(),
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        })
    }

    fn call_id(&self, c: usize) -> String {
        format!("call_mock{}_{c}", self.seq)
    }

    fn chat_whole(&self) -> Value {
        let content = if self.text_chunks == 0 && !self.calls.is_empty() {
            Value::Null
        } else {
            Value::String(self.whole_text())
        };
        let mut message =
            json!({"role": "assistant", "content": content, "refusal": null, "annotations": []});
        if self.thinking {
            message["reasoning_content"] = Value::String(thinking_text());
        }
        if !self.calls.is_empty() {
            let calls: Vec<Value> = self
                .calls
                .iter()
                .enumerate()
                .map(|(c, call)| {
                    json!({"id": self.call_id(c), "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments()}})
                })
                .collect();
            message["tool_calls"] = Value::Array(calls);
        }
        let mut v = json!({
            "id": format!("chatcmpl-mock{}", self.seq),
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": self.chat_finish_reason()
            }],
            "service_tier": "default",
            "system_fingerprint": "fp_mock"
        });
        if self.usage {
            v["usage"] = self.chat_usage();
        }
        v
    }

    /// The order of tool-call pieces in Chat Completions streams.
    fn chat_call_pieces(&self) -> Vec<(usize, Piece)> {
        let n = self.calls.len();
        let mut out = Vec::new();
        if self.args_final_only {
            if self.interleave {
                out.extend((0..n).map(|c| (c, Piece::Open)));
                out.extend((0..n).map(|c| (c, Piece::Whole)));
            } else {
                for c in 0..n {
                    out.push((c, Piece::Open));
                    out.push((c, Piece::Whole));
                }
            }
        } else if self.interleave {
            out.extend((0..n).map(|c| (c, Piece::Open)));
            let rounds = self.calls.iter().map(|c| c.fragments.len()).max();
            for r in 0..rounds.unwrap_or(0) {
                for (c, call) in self.calls.iter().enumerate() {
                    if r < call.fragments.len() {
                        out.push((c, Piece::Fragment(r)));
                    }
                }
            }
        } else {
            for (c, call) in self.calls.iter().enumerate() {
                out.push((c, Piece::Open));
                out.extend((0..call.fragments.len()).map(|r| (c, Piece::Fragment(r))));
            }
        }
        out
    }

    fn chat_stream(&self) -> BuiltStream {
        let head = chat_head(self.seq, self.created, &self.model);
        let mut deltas: Vec<(Value, bool)> = Vec::new();
        for i in 0..self.thinking_chunks() {
            deltas.push((json!({"reasoning_content": format!("think{i} ")}), true));
        }
        for i in 0..self.text_chunks {
            deltas.push((json!({"content": chunk_text(i)}), true));
        }
        for (c, piece) in self.chat_call_pieces() {
            let call = &self.calls[c];
            let (tc, content) = match piece {
                Piece::Open => (
                    json!({"index": c, "id": self.call_id(c), "type": "function",
                           "function": {"name": call.name, "arguments": ""}}),
                    false,
                ),
                Piece::Fragment(r) => (
                    json!({"index": c, "function": {"arguments": call.fragments[r]}}),
                    true,
                ),
                Piece::Whole => (
                    json!({"index": c, "function": {"arguments": call.arguments()}}),
                    true,
                ),
            };
            deltas.push((json!({"tool_calls": [tc]}), content));
        }
        if let Some((first, _)) = deltas.first_mut() {
            first["role"] = json!("assistant");
        }
        let usage_chunk = self.usage && self.include_usage;
        let null_usage = if usage_chunk { r#","usage":null"# } else { "" };
        let with_usage = format!(r#","usage":{}"#, self.chat_usage());
        let finish = self.chat_finish_reason();
        let mut s = BuiltStream::default();
        let last = deltas.len().checked_sub(1);
        let finish_in_delta = self.content_and_finish && last.is_some();
        for (k, (delta, content)) in deltas.iter().enumerate() {
            let ends = finish_in_delta && Some(k) == last;
            let reason = if ends {
                format!("\"{finish}\"")
            } else {
                "null".to_owned()
            };
            let usage = if ends && usage_chunk && self.usage_in_finish {
                with_usage.as_str()
            } else {
                null_usage
            };
            s.push(
                Bytes::from(format!(
                    "data: {head}[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{reason}}}]{usage}}}\n\n"
                )),
                *content,
            );
        }
        s.closing = s.len();
        if !finish_in_delta {
            let usage = if usage_chunk && self.usage_in_finish {
                with_usage.as_str()
            } else {
                null_usage
            };
            s.push(
                Bytes::from(format!(
                    "data: {head}[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"{finish}\"}}]{usage}}}\n\n"
                )),
                false,
            );
        }
        if usage_chunk && !self.usage_in_finish {
            s.push(
                Bytes::from(format!("data: {head}[]{with_usage}}}\n\n")),
                false,
            );
        }
        s.push(Bytes::from_static(b"data: [DONE]\n\n"), false);
        s
    }

    // ---------------------------------------------------------------
    // Responses

    fn responses_usage(&self) -> Value {
        if !self.usage {
            return Value::Null;
        }
        let (p, c) = (self.input_tokens(), self.output_tokens());
        json!({
            "input_tokens": p,
            "input_tokens_details": {"cached_tokens": self.cache_read},
            "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens()},
            "total_tokens": p + c
        })
    }

    fn reasoning_id(&self) -> String {
        format!("rs_mock{}", self.seq)
    }

    fn message_id(&self) -> String {
        format!("msg_mock{}", self.seq)
    }

    fn function_item_id(&self, c: usize) -> String {
        format!("fc_mock{}_{c}", self.seq)
    }

    fn reasoning_item(&self, done: bool) -> Value {
        let summary = if done {
            json!([{"type": "summary_text", "text": thinking_text()}])
        } else {
            json!([])
        };
        let mut item = json!({"type": "reasoning", "id": self.reasoning_id(), "summary": summary});
        if done && self.encrypted_reasoning {
            item["encrypted_content"] =
                Value::String(signature(&format!("rs:{}", thinking_text())));
        }
        item
    }

    fn message_item(&self, text: Option<&str>, status: &str) -> Value {
        let content = match text {
            Some(t) => {
                json!([{"type": "output_text", "text": t, "annotations": [], "logprobs": []}])
            }
            None => json!([]),
        };
        json!({"type": "message", "id": self.message_id(), "status": status,
               "role": "assistant", "content": content})
    }

    fn call_item(&self, c: usize, arguments: &str, status: &str) -> Value {
        json!({"type": "function_call", "id": self.function_item_id(c), "call_id": self.call_id(c),
               "name": self.calls[c].name, "arguments": arguments, "status": status})
    }

    /// Whether the reply ends cut (max tokens or content filter).
    fn cut_short(&self) -> bool {
        matches!(self.ending, Ending::Length | Ending::ContentFilter)
    }

    /// Status of the text message at the end of the reply.
    fn message_status(&self) -> &'static str {
        if self.cut_short() && self.calls.is_empty() {
            "incomplete"
        } else {
            "completed"
        }
    }

    fn call_status(&self, c: usize) -> &'static str {
        if self.calls[c].complete {
            "completed"
        } else {
            "incomplete"
        }
    }

    /// The output items of the finished reply; `text` is the message text.
    fn responses_output(&self, text: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if self.thinking {
            out.push(self.reasoning_item(true));
        }
        if self.text_chunks > 0 {
            out.push(self.message_item(Some(text), self.message_status()));
        }
        for (c, call) in self.calls.iter().enumerate() {
            out.push(self.call_item(c, &call.arguments(), self.call_status(c)));
        }
        out
    }

    fn responses_status(&self) -> (&'static str, Value) {
        match self.stop_reason.as_deref() {
            Some("completed") => return ("completed", Value::Null),
            Some(raw) => return ("incomplete", json!({ "reason": raw })),
            None => {}
        }
        match self.ending {
            Ending::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
            Ending::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
            _ => ("completed", Value::Null),
        }
    }

    /// A Responses API `response` object.
    fn response_object(
        &self,
        status: &str,
        output: Value,
        usage: Value,
        incomplete_details: Value,
        error: Value,
    ) -> Value {
        json!({
            "id": format!("resp_mock{}", self.seq),
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": false,
            "error": error,
            "incomplete_details": incomplete_details,
            "instructions": null,
            "max_output_tokens": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "service_tier": "default",
            "store": false,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {}
        })
    }

    fn responses_whole(&self) -> Value {
        let (status, details) = self.responses_status();
        let output = Value::Array(self.responses_output(&self.whole_text()));
        self.response_object(status, output, self.responses_usage(), details, Value::Null)
    }

    fn responses_stream(&self) -> BuiltStream {
        let mut s = BuiltStream::default();
        let ev = |s: &mut BuiltStream, name: &str, mut v: Value, content: bool| {
            v["type"] = Value::String(name.to_owned());
            v["sequence_number"] = json!(s.len());
            s.push(named(name, &v), content);
        };
        let in_progress = self.response_object(
            "in_progress",
            json!([]),
            Value::Null,
            Value::Null,
            Value::Null,
        );
        ev(
            &mut s,
            "response.created",
            json!({"response": in_progress}),
            false,
        );
        ev(
            &mut s,
            "response.in_progress",
            json!({"response": in_progress}),
            false,
        );
        let mut oi = 0usize;
        if self.thinking {
            let id = self.reasoning_id();
            let text = thinking_text();
            ev(
                &mut s,
                "response.output_item.added",
                json!({"output_index": oi, "item": self.reasoning_item(false)}),
                false,
            );
            ev(
                &mut s,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": oi, "summary_index": 0,
                      "part": {"type": "summary_text", "text": ""}}),
                false,
            );
            for i in 0..THINKING_CHUNKS {
                ev(
                    &mut s,
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": oi, "summary_index": 0,
                          "delta": format!("think{i} ")}),
                    true,
                );
            }
            ev(
                &mut s,
                "response.reasoning_summary_text.done",
                json!({"item_id": id, "output_index": oi, "summary_index": 0, "text": text}),
                false,
            );
            ev(
                &mut s,
                "response.reasoning_summary_part.done",
                json!({"item_id": id, "output_index": oi, "summary_index": 0,
                      "part": {"type": "summary_text", "text": text}}),
                false,
            );
            ev(
                &mut s,
                "response.output_item.done",
                json!({"output_index": oi, "item": self.reasoning_item(true)}),
                false,
            );
            oi += 1;
        }
        if self.text_chunks > 0 {
            let id = self.message_id();
            let text = self.text();
            ev(
                &mut s,
                "response.output_item.added",
                json!({"output_index": oi, "item": self.message_item(None, "in_progress")}),
                false,
            );
            ev(
                &mut s,
                "response.content_part.added",
                json!({"item_id": id, "output_index": oi, "content_index": 0,
                      "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                false,
            );
            for i in 0..self.text_chunks {
                ev(
                    &mut s,
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": oi, "content_index": 0,
                          "delta": chunk_text(i), "logprobs": []}),
                    true,
                );
            }
            ev(
                &mut s,
                "response.output_text.done",
                json!({"item_id": id, "output_index": oi, "content_index": 0,
                      "text": text, "logprobs": []}),
                false,
            );
            ev(
                &mut s,
                "response.content_part.done",
                json!({"item_id": id, "output_index": oi, "content_index": 0,
                      "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
                false,
            );
            ev(
                &mut s,
                "response.output_item.done",
                json!({"output_index": oi, "item": self.message_item(Some(&text), self.message_status())}),
                false,
            );
            oi += 1;
        }
        let first_call = oi;
        let added = |s: &mut BuiltStream, c: usize| {
            ev(
                s,
                "response.output_item.added",
                json!({"output_index": first_call + c, "item": self.call_item(c, "", "in_progress")}),
                false,
            );
        };
        let delta = |s: &mut BuiltStream, c: usize, r: usize| {
            ev(
                s,
                "response.function_call_arguments.delta",
                json!({"item_id": self.function_item_id(c), "output_index": first_call + c,
                      "delta": self.calls[c].fragments[r]}),
                true,
            );
        };
        let done = |s: &mut BuiltStream, c: usize| {
            let args = self.calls[c].arguments();
            ev(
                s,
                "response.function_call_arguments.done",
                json!({"item_id": self.function_item_id(c), "output_index": first_call + c,
                      "name": self.calls[c].name, "arguments": args}),
                false,
            );
            ev(
                s,
                "response.output_item.done",
                json!({"output_index": first_call + c,
                      "item": self.call_item(c, &args, self.call_status(c))}),
                false,
            );
        };
        let fragments = |c: usize| {
            if self.args_final_only {
                0
            } else {
                self.calls[c].fragments.len()
            }
        };
        let n = self.calls.len();
        if self.interleave {
            (0..n).for_each(|c| added(&mut s, c));
            let rounds = (0..n).map(fragments).max().unwrap_or(0);
            for r in 0..rounds {
                for c in (0..n).filter(|&c| r < fragments(c)) {
                    delta(&mut s, c, r);
                }
            }
            (0..n).for_each(|c| done(&mut s, c));
        } else {
            for c in 0..n {
                added(&mut s, c);
                (0..fragments(c)).for_each(|r| delta(&mut s, c, r));
                done(&mut s, c);
            }
        }
        s.closing = s.len();
        let (status, details) = self.responses_status();
        let terminal = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let output = Value::Array(self.responses_output(&self.text()));
        let response =
            self.response_object(status, output, self.responses_usage(), details, Value::Null);
        ev(&mut s, terminal, json!({"response": response}), false);
        s
    }

    // ---------------------------------------------------------------
    // Anthropic Messages

    fn anthropic_stop_reason(&self) -> &str {
        if let Some(raw) = &self.stop_reason {
            return raw;
        }
        match self.ending {
            Ending::Stop => "end_turn",
            Ending::Length => "max_tokens",
            Ending::StopSequence => "stop_sequence",
            Ending::ContentFilter => "refusal",
            Ending::ToolUse => "tool_use",
        }
    }

    fn anthropic_stop_sequence(&self) -> Value {
        if self.ending == Ending::StopSequence {
            Value::String(self.stop_sequence.clone())
        } else {
            Value::Null
        }
    }

    /// Anthropic usage; with `no-usage` the required fields are kept, as 0.
    fn anthropic_usage(&self, output_tokens: u64) -> Value {
        if !self.usage {
            return json!({"input_tokens": 0, "output_tokens": 0,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
        }
        json!({
            "input_tokens": self.prompt,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read
        })
    }

    fn tool_use_id(&self, c: usize) -> String {
        format!("toolu_mock{}_{c}", self.seq)
    }

    fn messages_whole(&self) -> Value {
        let mut content = Vec::new();
        if self.thinking {
            let t = thinking_text();
            content.push(json!({"type": "thinking", "thinking": t, "signature": signature(&t)}));
        }
        if self.text_chunks > 0 || (self.calls.is_empty() && !self.thinking) {
            content.push(json!({"type": "text", "text": self.whole_text()}));
        }
        for (c, call) in self.calls.iter().enumerate().filter(|(_, c)| c.complete) {
            let input: Value =
                serde_json::from_str(&call.arguments()).unwrap_or_else(|_| json!({}));
            content.push(json!({"type": "tool_use", "id": self.tool_use_id(c),
                                "name": call.name, "input": input}));
        }
        json!({
            "id": format!("msg_mock{}", self.seq),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.anthropic_stop_reason(),
            "stop_sequence": self.anthropic_stop_sequence(),
            "usage": self.anthropic_usage(self.output_tokens())
        })
    }

    fn messages_stream(&self) -> BuiltStream {
        let mut s = BuiltStream::default();
        let ev = |s: &mut BuiltStream, v: Value, content: bool| {
            let name = v["type"].as_str().unwrap_or_default().to_owned();
            s.push(named(&name, &v), content);
        };
        ev(
            &mut s,
            json!({"type": "message_start", "message": {
                "id": format!("msg_mock{}", self.seq),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": self.anthropic_usage(1)
            }}),
            false,
        );
        let mut index = 0usize;
        let mut pinged = false;
        let mut start = |s: &mut BuiltStream, index: usize, block: Value| {
            ev(
                s,
                json!({"type": "content_block_start", "index": index, "content_block": block}),
                false,
            );
            if !pinged {
                ev(s, json!({"type": "ping"}), false);
                pinged = true;
            }
        };
        let delta = |s: &mut BuiltStream, index: usize, d: Value, content: bool| {
            ev(
                s,
                json!({"type": "content_block_delta", "index": index, "delta": d}),
                content,
            );
        };
        let stop = |s: &mut BuiltStream, index: usize| {
            ev(
                s,
                json!({"type": "content_block_stop", "index": index}),
                false,
            );
        };
        if self.thinking {
            start(
                &mut s,
                index,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            );
            for i in 0..THINKING_CHUNKS {
                delta(
                    &mut s,
                    index,
                    json!({"type": "thinking_delta", "thinking": format!("think{i} ")}),
                    true,
                );
            }
            delta(
                &mut s,
                index,
                json!({"type": "signature_delta", "signature": signature(&thinking_text())}),
                false,
            );
            stop(&mut s, index);
            index += 1;
        }
        if self.text_chunks > 0 {
            start(&mut s, index, json!({"type": "text", "text": ""}));
            for i in 0..self.text_chunks {
                delta(
                    &mut s,
                    index,
                    json!({"type": "text_delta", "text": chunk_text(i)}),
                    true,
                );
            }
            stop(&mut s, index);
            index += 1;
        }
        for (c, call) in self.calls.iter().enumerate() {
            start(
                &mut s,
                index,
                json!({"type": "tool_use", "id": self.tool_use_id(c),
                                         "name": call.name, "input": {}}),
            );
            if self.args_final_only {
                delta(
                    &mut s,
                    index,
                    json!({"type": "input_json_delta", "partial_json": call.arguments()}),
                    true,
                );
            } else {
                for f in &call.fragments {
                    delta(
                        &mut s,
                        index,
                        json!({"type": "input_json_delta", "partial_json": f}),
                        true,
                    );
                }
            }
            stop(&mut s, index);
            index += 1;
        }
        if !pinged {
            ev(&mut s, json!({"type": "ping"}), false);
        }
        s.closing = s.len();
        let output = if self.usage { self.output_tokens() } else { 0 };
        ev(
            &mut s,
            json!({"type": "message_delta",
                          "delta": {"stop_reason": self.anthropic_stop_reason(),
                                    "stop_sequence": self.anthropic_stop_sequence()},
                          "usage": {"output_tokens": output}}),
            false,
        );
        ev(&mut s, json!({"type": "message_stop"}), false);
        s
    }

    // ---------------------------------------------------------------
    // Gemini

    fn gemini_finish_reason(&self) -> &str {
        if let Some(raw) = &self.stop_reason {
            return raw;
        }
        match self.ending {
            Ending::Stop | Ending::StopSequence | Ending::ToolUse => "STOP",
            Ending::Length => "MAX_TOKENS",
            Ending::ContentFilter => "SAFETY",
        }
    }

    /// `usageMetadata` after `thoughts` thinking and `candidates` other
    /// output tokens.
    fn gemini_usage(&self, thoughts: u64, candidates: u64) -> Value {
        let prompt = self.input_tokens();
        let mut u = Map::new();
        u.insert("promptTokenCount".into(), json!(prompt));
        if candidates > 0 {
            u.insert("candidatesTokenCount".into(), json!(candidates));
        }
        u.insert(
            "totalTokenCount".into(),
            json!(prompt + thoughts + candidates),
        );
        if self.cache_read > 0 {
            u.insert("cachedContentTokenCount".into(), json!(self.cache_read));
        }
        if thoughts > 0 {
            u.insert("thoughtsTokenCount".into(), json!(thoughts));
        }
        u.insert(
            "promptTokensDetails".into(),
            json!([{"modality": "TEXT", "tokenCount": prompt}]),
        );
        Value::Object(u)
    }

    fn gemini_final_usage(&self) -> Value {
        let thoughts = self.reasoning_tokens();
        self.gemini_usage(thoughts, self.output_tokens() - thoughts)
    }

    fn gemini_call_part(&self, c: usize) -> Value {
        let call = &self.calls[c];
        let args: Value = serde_json::from_str(&call.arguments()).unwrap_or_else(|_| json!({}));
        let mut part = json!({"functionCall": {"name": call.name, "args": args}});
        if c == 0 && self.thinking {
            part["thoughtSignature"] =
                Value::String(signature(&format!("{}#call", thinking_text())));
        }
        part
    }

    /// A `GenerateContentResponse` with one candidate.
    fn gemini_response(
        &self,
        parts: Option<Vec<Value>>,
        finish: Option<&str>,
        usage: Value,
    ) -> Value {
        let mut candidate = Map::new();
        if let Some(parts) = parts {
            candidate.insert("content".into(), json!({"parts": parts, "role": "model"}));
        }
        if let Some(f) = finish {
            candidate.insert("finishReason".into(), json!(f));
            if f == "SAFETY" {
                candidate.insert(
                    "safetyRatings".into(),
                    json!([{"category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                            "probability": "HIGH", "blocked": true}]),
                );
            }
        }
        candidate.insert("index".into(), json!(0));
        let mut v = json!({
            "candidates": [Value::Object(candidate)],
            "modelVersion": self.model,
            "responseId": format!("mockresp{}", self.seq)
        });
        if self.usage {
            v["usageMetadata"] = usage;
        }
        v
    }

    /// Whether the finish reason comes in a chunk of its own, without
    /// content (a safety block, or a call cut by max tokens).
    fn gemini_separate_finish(&self) -> bool {
        self.ending == Ending::ContentFilter || self.calls.iter().any(|c| !c.complete)
    }

    fn gemini_whole(&self) -> Value {
        let mut parts = Vec::new();
        if self.thinking {
            let t = thinking_text();
            parts.push(json!({"text": t, "thought": true, "thoughtSignature": signature(&t)}));
        }
        if self.text_chunks > 0 || (self.calls.is_empty() && !self.thinking) {
            parts.push(json!({"text": self.whole_text()}));
        }
        for (c, _) in self.calls.iter().enumerate().filter(|(_, c)| c.complete) {
            parts.push(self.gemini_call_part(c));
        }
        let parts = (self.ending != Ending::ContentFilter).then_some(parts);
        self.gemini_response(
            parts,
            Some(self.gemini_finish_reason()),
            self.gemini_final_usage(),
        )
    }

    fn gemini_stream(&self, sse: bool) -> BuiltStream {
        // (parts, thoughts so far, candidates so far)
        let mut chunks: Vec<(Vec<Value>, u64, u64)> = Vec::new();
        let (mut thoughts, mut cands) = (0u64, 0u64);
        for i in 0..self.thinking_chunks() {
            thoughts += 1;
            let mut part = json!({"text": format!("think{i} "), "thought": true});
            if i + 1 == THINKING_CHUNKS {
                part["thoughtSignature"] = Value::String(signature(&thinking_text()));
            }
            chunks.push((vec![part], thoughts, cands));
        }
        for i in 0..self.text_chunks {
            cands += 1;
            chunks.push((vec![json!({"text": chunk_text(i)})], thoughts, cands));
        }
        for (c, call) in self.calls.iter().enumerate().filter(|(_, c)| c.complete) {
            cands += call.fragments.len() as u64;
            chunks.push((vec![self.gemini_call_part(c)], thoughts, cands));
        }
        let separate = self.gemini_separate_finish() || chunks.is_empty();
        let finish = self.gemini_finish_reason();
        let mut values: Vec<(Value, bool)> = Vec::new();
        let last = chunks.len().checked_sub(1);
        for (k, (parts, t, c)) in chunks.into_iter().enumerate() {
            let v = if !separate && Some(k) == last {
                self.gemini_response(Some(parts), Some(finish), self.gemini_final_usage())
            } else {
                self.gemini_response(Some(parts), None, self.gemini_usage(t, c))
            };
            values.push((v, true));
        }
        if separate {
            let parts = (self.ending != Ending::ContentFilter && values.is_empty())
                .then(|| vec![json!({"text": ""})]);
            let v = self.gemini_response(parts, Some(finish), self.gemini_final_usage());
            values.push((v, false));
        }
        let mut s = BuiltStream::default();
        let n = values.len();
        for (k, (v, content)) in values.into_iter().enumerate() {
            if !content && s.closing == 0 {
                s.closing = k;
            }
            let bytes = if sse {
                format!("data: {v}\n\n")
            } else if k == 0 {
                format!("[{v}")
            } else {
                format!(",\r\n{v}")
            };
            s.push(Bytes::from(bytes), content);
        }
        if s.closing == 0 {
            s.closing = n;
        }
        if !sse {
            s.push(Bytes::from_static(b"\n]"), false);
        }
        s
    }
}

/// A piece of a Chat Completions tool call stream.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// The first delta: id and name, empty arguments.
    Open,
    /// Argument fragment `r`.
    Fragment(usize),
    /// The whole arguments at once.
    Whole,
}

/// Each chunk of a Chat Completions stream up to `"choices":`.
pub(crate) fn chat_head(seq: u64, created: u64, model: &str) -> String {
    let mut s = String::with_capacity(128);
    let _ = write!(
        s,
        r#"{{"id":"chatcmpl-mock{seq}","object":"chat.completion.chunk","created":{created},"model":{},"system_fingerprint":"fp_mock","choices":"#,
        Value::String(model.to_owned())
    );
    s
}

/// An SSE event with an `event:` line, as the Responses and Anthropic
/// streams have.
pub(crate) fn named(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// A stream rendered up front: its events, which of them are content
/// events (thinking, text or argument deltas: the ones the chunk delay
/// precedes and `reset-after-chunks` / `error-after` count), and where the
/// closing events begin.
#[derive(Debug, Default)]
pub(crate) struct BuiltStream {
    events: Vec<Bytes>,
    content: Vec<bool>,
    /// Index of the first closing event (finish chunk, `message_delta`,
    /// terminal `response.*`, Gemini's separate finish chunk).
    closing: usize,
}

impl BuiltStream {
    fn push(&mut self, event: Bytes, content: bool) {
        self.events.push(event);
        self.content.push(content);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn event(&self, k: usize) -> Bytes {
        self.events.get(k).cloned().unwrap_or_default()
    }

    pub fn is_content(&self, k: usize) -> bool {
        self.content.get(k).copied().unwrap_or(false)
    }

    /// Where a stream cut after `n` content events stops: before content
    /// event `n + 1`, else right after the last content event, else (no
    /// content at all) before the closing events.
    pub fn abort_index(&self, n: u32) -> usize {
        let mut seen = 0u32;
        let mut after_last = None;
        for (k, &c) in self.content.iter().enumerate() {
            if c {
                if seen == n {
                    return k;
                }
                seen += 1;
                after_last = Some(k + 1);
            }
        }
        after_last.unwrap_or(self.closing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Defaults;

    fn compose(protocol: Protocol, body: &str, step: crate::Step) -> Composition {
        let req: LlmRequest = serde_json::from_str(body).unwrap();
        let b = Behavior::resolve(step, &Defaults::default());
        Composition::new(protocol, 3, "m".into(), 1, &req, &b)
    }

    #[test]
    fn signature_is_deterministic_base64() {
        let a = signature("x");
        assert_eq!(a, signature("x"));
        assert_ne!(a, signature("y"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert!(raw.starts_with(b"sig:"));
    }

    #[test]
    fn fragments_make_the_arguments() {
        for i in [0, 7, 12] {
            assert_eq!(arg_fragments(i).concat(), tool_arguments(i));
            let v: Value = serde_json::from_str(&tool_arguments(i)).unwrap();
            assert_eq!(v, json!({"city": "Paris", "n": i}));
        }
    }

    #[test]
    fn max_tokens_truncates_text() {
        let c = compose(
            Protocol::Messages,
            r#"{"max_tokens":2,"messages":[]}"#,
            crate::Step::default(),
        );
        assert_eq!(c.text_chunks, 2);
        assert_eq!(c.ending, Ending::Length);
        assert!(!c.is_plain());
    }

    /// The data of each SSE event, as JSON (or the raw text).
    fn data(events: impl Iterator<Item = Bytes>) -> Vec<(Option<String>, Value)> {
        events
            .map(|b| {
                let s = String::from_utf8(b.to_vec()).unwrap();
                let name = s
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .map(str::to_owned);
                let d = s.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                (
                    name,
                    serde_json::from_str(d).unwrap_or(Value::String(d.into())),
                )
            })
            .collect()
    }

    #[test]
    fn built_plain_streams_match_the_lazy_plan() {
        use crate::render::{Endpoint, Reply, StreamPlan};
        for (protocol, endpoint, body) in [
            (
                Protocol::Chat,
                Endpoint::Chat,
                r#"{"messages":[{"role":"user","content":"a b"}]}"#,
            ),
            (
                Protocol::Chat,
                Endpoint::Chat,
                r#"{"messages":[],"stream_options":{"include_usage":true}}"#,
            ),
            (
                Protocol::Messages,
                Endpoint::Messages,
                r#"{"max_tokens":99,"messages":[{"role":"user","content":"a b"}]}"#,
            ),
        ] {
            let c = compose(protocol, body, crate::Step::default());
            assert!(c.is_plain());
            let built = c.stream(true);
            let req: LlmRequest = serde_json::from_str(body).unwrap();
            let lazy = StreamPlan::new(Reply {
                endpoint,
                seq: c.seq,
                model: c.model.clone(),
                created: c.created,
                prompt_tokens: req.prompt_tokens(),
                chunks: c.text_chunks,
                usage: true,
                include_usage: req.include_usage(),
            });
            assert_eq!(
                data((0..built.len()).map(|k| built.event(k))),
                data((0..lazy.len()).map(|k| lazy.event(k))),
                "{body}"
            );
            for n in 0..6 {
                let lazy_abort = lazy.prefix_len() + n.min(lazy.chunks()) as usize;
                assert_eq!(built.abort_index(n), lazy_abort);
            }
        }
    }

    #[test]
    fn abort_index_counts_content_events() {
        let step = crate::Step {
            tool_calls: Some(1),
            ..crate::Step::default()
        };
        let c = compose(Protocol::Chat, r#"{"messages":[]}"#, step);
        let s = c.stream(true);
        // open, 4 fragments, finish, [DONE]
        assert_eq!(s.len(), 7);
        assert_eq!(s.abort_index(0), 1);
        assert_eq!(s.abort_index(2), 3);
        assert_eq!(s.abort_index(9), 5);
    }
}
