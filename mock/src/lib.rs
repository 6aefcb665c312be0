//! `llmgw-mock`: a mock upstream LLM provider for llmgw's end-to-end tests
//! (the official Python `openai`/`anthropic` SDKs call the gateway, which
//! forwards here), its protocol translation tests, and benchmarks. It
//! speaks four protocols as a faithful upstream: OpenAI Chat Completions,
//! OpenAI Responses, Anthropic Messages and Google Gemini.
//!
//! # Endpoints
//! OpenAI and Anthropic with or without the `/v1` prefix (a provider base
//! URL is `http://127.0.0.1:PORT/v1`):
//! - OpenAI: `POST /v1/chat/completions`, `/v1/completions`,
//!   `/v1/embeddings`, `/v1/responses`; `GET /v1/models` (the Anthropic list
//!   shape when the request has an `anthropic-version` header, paged by
//!   `limit` and `after_id`).
//! - OpenAI's audio and image endpoints: `POST /v1/audio/speech`,
//!   `/v1/audio/transcriptions`, `/v1/audio/translations`,
//!   `/v1/images/generations`, `/v1/images/edits`, `/v1/images/variations`
//!   (see [`media`]).
//! - Anthropic: `POST /v1/messages`, `/v1/messages/count_tokens`.
//!
//! Gemini with or without the `/v1beta` prefix (base URL
//! `http://127.0.0.1:PORT/v1beta` or `http://127.0.0.1:PORT`; `/v1/models/…`
//! works too):
//! - `POST /v1beta/models/{model}:generateContent`;
//! - `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`: SSE, each
//!   `data:` a whole `GenerateContentResponse`, no terminator; without
//!   `alt=sse` the same responses as one streamed JSON array
//!   (`[{…},\r\n{…}\n]`, content type `application/json`);
//! - `POST /v1beta/models/{model}:countTokens` (`contents`, or a
//!   `generateContentRequest`): `{"totalTokens": n, "promptTokensDetails": …}`;
//! - `GET /v1beta/models` (also `GET /models` with a Gemini key):
//!   `{"models": [{"name": "models/ID", …}]}`, paged by `pageSize` and
//!   `pageToken` (`nextPageToken`).
//!
//! The model lists hold `--models`; Anthropic's and Gemini's have at most
//! `--models-page-size` models per page (0, the default: all in one).
//!
//! A Gemini request needs a key, in the `x-goog-api-key` header or the
//! `key` query parameter; without one it gets 403 `PERMISSION_DENIED`, as
//! the real API answers. The model is the path's. There is no body
//! `stream` flag: `streamGenerateContent` streams.
//!
//! # Replies
//! Chunk `i` of a text reply is `"tok{i} "` in every protocol; a whole
//! reply's text is all chunk texts in order. `model` echoes the request's
//! (Gemini: `modelVersion` is the path's model). Prompt tokens are the
//! number of whitespace-separated words in the request's message texts:
//! `messages`, `system`, `input`, `instructions`, `prompt`, Gemini
//! `contents` and `systemInstruction` (at least 1; see [`parse`] for
//! exactly which strings count). Completion tokens are the number of
//! chunks (see below for thinking and tool calls). With `"stream": true`
//! the reply is SSE, one event per body frame; OpenAI chat and completions
//! streams end with `data: [DONE]`, and have a final usage chunk (empty
//! `choices`, after the finish chunk) only with
//! `stream_options.include_usage`, as the real API. Responses events carry
//! `sequence_number` (0, 1, …) and end with exactly one of
//! `response.completed` / `response.incomplete` / `response.failed`.
//! Anthropic's `message_start` has `output_tokens: 1`, as the real API
//! does; the final count is `message_delta`'s.
//!
//! When the request's max output tokens (`max_tokens`,
//! `max_completion_tokens`, `max_output_tokens`,
//! `generationConfig.maxOutputTokens`) is below the number of text chunks,
//! the text is cut to that many chunks and the reply ends with max tokens
//! (`length` / `max_tokens` / `incomplete` + `max_output_tokens` /
//! `MAX_TOKENS`).
//!
//! Ids: Chat `chatcmpl-mock{seq}`, tool calls `call_mock{seq}_{i}`;
//! Responses `resp_mock{seq}`, items `rs_mock{seq}`, `msg_mock{seq}`,
//! `fc_mock{seq}_{i}` with `call_id` `call_mock{seq}_{i}`; Anthropic
//! `msg_mock{seq}`, tool uses `toolu_mock{seq}_{i}`; Gemini
//! `responseId` `mockresp{seq}`, function calls have no id.
//!
//! # Behaviour
//! Field by field, the first that says something wins:
//! 1. request headers `x-mock-*` (below);
//! 2. the next step of the script of the request's model (every request
//!    for that model takes one step, whatever its headers say; for Gemini
//!    the path's model);
//! 3. the instance [`Defaults`].
//!
//! Each header has a script-step field ([`Step`]) of the same name in
//! snake case. Flags take `1/true/yes/on` or `0/false/no/off`.
//!
//! | header | step field | effect |
//! |---|---|---|
//! | `x-mock-status: N` | `status` | HTTP status; ≥ 400 gets an error body in the endpoint's own shape: OpenAI `{"error":{message,type,param,code}}`, Anthropic `{"type":"error","error":{type,message}}` (529 → `overloaded_error`), Gemini `{"error":{code,message,status}}` (429 → `RESOURCE_EXHAUSTED`, with a `RetryInfo` detail when `retry-after` is set) |
//! | `x-mock-retry-after: S` | `retry_after` | `retry-after: S` header |
//! | `x-mock-latency-ms: MS` | `latency_ms` | wait before the response head |
//! | `x-mock-chunks: N` | `chunks` | text chunks (and completion tokens) |
//! | `x-mock-chunk-delay-ms: MS` | `chunk_delay_ms` | wait before each streamed content event |
//! | `x-mock-reset-before-first-byte` | `reset_before_first_byte` | close the connection without a response |
//! | `x-mock-reset-after-chunks: N` | `reset_after_chunks` | stream N content events, then abort the body |
//! | `x-mock-hang` | `hang` | never respond |
//! | `x-mock-body-delay-ms: MS` | `body_delay_ms` | a whole (non-streamed) reply: its head at once, its body MS later |
//! | `x-mock-read-delay-ms: MS` | (header only) | audio and image endpoints: wait MS before reading the request body (a slow upstream; the model is in the body, so no script step can set it) |
//! | `x-mock-no-usage` | `no_usage` | no usage (see below) |
//! | `x-mock-reply-bytes: N` | `reply_bytes` | pad non-streaming text to N bytes |
//! | `x-mock-tool-calls: N` | `tool_calls` | reply with N parallel tool calls |
//! | `x-mock-interleave` | `interleave` | interleave the calls' streamed argument fragments |
//! | `x-mock-args-final-only` | `args_final_only` | stream each call's arguments in one piece |
//! | `x-mock-thinking` | `thinking` | start the reply with thinking |
//! | `x-mock-cache: R,W` | `cache: [R, W]` | R cache-read, W cache-write input tokens |
//! | `x-mock-finish: F` | `finish` | end with `stop`, `length`, `stop_sequence` or `content_filter` |
//! | `x-mock-max-tokens-in-args` | `max_tokens_in_args` | cut at max tokens halfway through the last call's arguments |
//! | `x-mock-content-and-finish` | `content_and_finish` | Chat streams: the last delta carries `finish_reason` |
//! | `x-mock-usage-in-finish` | `usage_in_finish` | Chat streams with `include_usage`: usage in the finish chunk, no separate usage chunk |
//! | `x-mock-error-after: N` | `error_after` | streams: after N content events, an in-stream error ends the stream |
//! | `x-mock-stop-reason: R` | `stop_reason` | send R as it is as the stop reason (Chat `finish_reason`, Anthropic `stop_reason`, Gemini `finishReason`; Responses: `incomplete` with reason R, or `completed`); the content is a normal end's |
//!
//! A "content event" is one streamed piece of thinking, text or tool-call
//! arguments (Gemini: one chunk). `reset-after-chunks` and `error-after`
//! count them; when there are fewer, the cut comes right after the last
//! one.
//!
//! `no-usage` drops `usage` from OpenAI replies (and the include_usage
//! chunk; Responses get `"usage": null`) and `usageMetadata` from Gemini's;
//! Anthropic's required usage fields stay, set to 0.
//! `reset-before-first-byte` closes the HTTP/1 connection without a
//! response (an HTTP/2 stream is reset). `reset-after-chunks: N` sends N
//! content events, waits 20 ms so they are flushed, then aborts the body:
//! the client sees a truncated stream and an error (no `[DONE]`, no closing
//! events). `latency-ms` is waited first, then reset, hang or status apply.
//!
//! ## Tool calls (`tool-calls: N`)
//! Call `i` is named after the request's tools in order, cycling
//! (`tools[].function.name`, `tools[].name`,
//! `tools[].functionDeclarations[].name`; `"mock_tool"` without tools),
//! with arguments `{"city":"Paris","n":i}` ([`tool_arguments`]), streamed
//! as 4 fragments `{"city"` `:"Paris"` `,"n":` `i}` ([`arg_fragments`]).
//! With tool calls the reply has no text unless `chunks` is set explicitly
//! (header or step): then the text comes first. Each fragment counts as an
//! output token. The stop reason is `tool_calls` / `tool_use` / `completed`
//! with `function_call` items / `STOP` with `functionCall` parts, unless
//! `finish` says otherwise.
//! - Chat: per call, an opening delta `{index, id, type: function,
//!   function: {name, arguments: ""}}`, then `{index, function:
//!   {arguments}}` fragments. `interleave`: all openings, then the
//!   fragments round-robin (`index` 0,1,0,1,…). `args-final-only`: the
//!   opening, then one delta with the whole arguments.
//! - Responses: per call `output_item.added` (`function_call`, `arguments:
//!   ""`, `in_progress`), `function_call_arguments.delta`s,
//!   `function_call_arguments.done` (`name`, `arguments`),
//!   `output_item.done`. `interleave`: all items added, deltas alternating
//!   `output_index`, then the done events. `args-final-only`: no deltas.
//! - Anthropic: per call a `tool_use` block (`input: {}`) with
//!   `input_json_delta`s; `args-final-only`: a single delta; `interleave`
//!   is ignored (blocks cannot overlap).
//! - Gemini: one chunk per call with a whole `functionCall {name, args}`
//!   part (no id); `interleave` and `args-final-only` change nothing.
//!
//! `max-tokens-in-args` (with tool calls): the last call gets only its
//! first 2 fragments (`{"city":"Paris"`), and the reply ends with max
//! tokens: Chat `length` (non-streaming: the truncated `arguments`),
//! Responses `response.incomplete` (`max_output_tokens`, the call item
//! `incomplete` with the truncated arguments), Anthropic `max_tokens` (the
//! block stops after the partial JSON; non-streaming: the cut block is
//! left out), Gemini `MAX_TOKENS` in a chunk of its own without the cut
//! call.
//!
//! ## Thinking (`thinking`)
//! [`THINKING_CHUNKS`] (3) chunks `"think{i} "`
//! ([`thinking_text`] is the whole) come first; they count as output and
//! as reasoning tokens. Signatures are [`signature`]`(text)`: deterministic
//! valid base64.
//! - Chat: `reasoning_content` deltas (non-streaming:
//!   `message.reasoning_content`); `completion_tokens_details.reasoning_tokens`.
//! - Responses: a `reasoning` item first (`output_item.added`,
//!   `reasoning_summary_part.added`, `reasoning_summary_text.delta`s,
//!   `.done`, `reasoning_summary_part.done`, `output_item.done`) with
//!   `summary: [{type: summary_text, text}]`, and `encrypted_content` =
//!   `signature("rs:" + thinking)` only when the request's `include` has
//!   `reasoning.encrypted_content`; `output_tokens_details.reasoning_tokens`.
//! - Anthropic: a `thinking` block first (`content_block_start` with
//!   `thinking: "", signature: ""`, `thinking_delta`s, one
//!   `signature_delta` = `signature(thinking)`); non-streaming `{type:
//!   thinking, thinking, signature}`; `output_tokens` include it.
//! - Gemini: `thought: true` text parts, the last (non-streaming: the only)
//!   one with `thoughtSignature` = `signature(thinking)`; with tool calls
//!   the first `functionCall` part also has `thoughtSignature` =
//!   `signature(thinking + "#call")`; `thoughtsTokenCount`, not in
//!   `candidatesTokenCount`. Sent whatever the request's `thinkingConfig`.
//!
//! ## Cache (`cache: R,W`)
//! The total input is P + R + W (P = prompt words). Chat
//! `prompt_tokens` = P+R+W with `prompt_tokens_details.cached_tokens` = R;
//! Responses `input_tokens` = P+R+W with `input_tokens_details.cached_tokens`
//! = R; Anthropic `input_tokens` = P, `cache_read_input_tokens` = R,
//! `cache_creation_input_tokens` = W (in `message_start` and whole
//! replies); Gemini `promptTokenCount` = P+R+W with
//! `cachedContentTokenCount` = R.
//!
//! ## Finish (`finish: F`)
//! | F | Chat | Responses | Anthropic | Gemini |
//! |---|---|---|---|---|
//! | `stop` | `stop` | `completed` | `end_turn` | `STOP` |
//! | `length` | `length` | `incomplete` (`max_output_tokens`) | `max_tokens` | `MAX_TOKENS` |
//! | `stop_sequence` | `stop` | `completed` | `stop_sequence`, `stop_sequence` = the request's first (`stop_sequences`, `stop`, `stopSequences`; else `"###"`) | `STOP` |
//! | `content_filter` | `content_filter` | `incomplete` (`content_filter`) | `refusal` | `SAFETY` (a final chunk without content, with `safetyRatings`) |
//!
//! ## Chat stream shapes
//! By default the finish chunk has an empty delta and, with
//! `include_usage`, usage follows in a separate late chunk with empty
//! `choices` (`usage: null` on the others), as the real API.
//! `content-and-finish` puts `finish_reason` on the last content delta;
//! `usage-in-finish` puts usage in the chunk with `finish_reason` (what
//! several OpenAI-compatible servers do).
//!
//! ## In-stream errors (`error-after: N`)
//! After N content events the stream ends with the protocol's own error
//! event, without the usual closing events: Chat `data:
//! {"error":{message,type:"server_error",…}}` (no `[DONE]`); Responses
//! `response.failed` (`response.status: failed`, `response.error.code:
//! server_error`); Anthropic `event: error` with `overloaded_error`;
//! Gemini `data: {"error":{"code":503,…,"status":"UNAVAILABLE"}}` (in the
//! JSON-array framing, a last array element). Non-streaming requests
//! ignore it.
//!
//! A request whose client goes away while its response is pending (hang,
//! latency) or streaming counts in `cancelled`; see [`Stats`].
//!
//! # Recorded requests
//! Every LLM request is kept as received ([`RecordedRequest`]):
//! [`MockServer::requests`] / [`MockServer::requests_for`]`(model)` in
//! Rust, `GET /_mock/requests[?model=m]` over HTTP
//! ([`RecordedRequest::to_json`]: `method`, `path`, `query`, `headers`,
//! `header_list`, `body` (text), `body_base64`, `body_json` (the parsed
//! body: assert on it to see what the gateway sent, e.g.
//! `body_json.contents[2].parts[0].functionResponse.name` or an Anthropic
//! thinking block's `signature`), `model`, `stream`). `model` is Gemini's
//! path model, else the body's. The body is kept byte for byte; a `key`
//! query parameter's value is recorded as `REDACTED` (headers, including
//! `x-goog-api-key` and `authorization`, are kept as sent).
//!
//! # Control API
//! - `GET /_mock/requests[?model=m]`: recorded requests, oldest first;
//!   `DELETE /_mock/requests` forgets them and zeroes the `requests` and
//!   `cancelled` counters.
//! - `GET /_mock/stats`: `{"requests": N, "cancelled": M, "active": K}`.
//! - `POST /_mock/script` `{"model": "m", "steps": [{"status": 503},
//!   {"tool_calls": 2, "thinking": true}, {"cache": [10, 0], "finish":
//!   "length"}, ...]}` replaces `m`'s script (unknown fields are refused);
//!   `GET /_mock/script` shows what is left; `DELETE /_mock/script[?model=m]`
//!   clears all scripts (or `m`'s).
//! - `POST /_mock/reset`: scripts, requests and counters; `GET /healthz`.

pub mod behavior;
pub mod compose;
pub mod config;
pub mod media;
pub mod parse;
pub mod record;
pub mod render;
mod server;
mod sse;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use behavior::{Finish, Step};
pub use compose::{arg_fragments, signature, thinking_text, tool_arguments, THINKING_CHUNKS};
pub use config::{Cli, Config, Defaults};
pub use record::{RecordedRequest, Stats};

/// Error type of response bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Binds `config.listen` and serves in the background until the returned
/// server is shut down or dropped.
pub async fn start(config: Config) -> Result<MockServer> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let state = Arc::new(server::State::new(config));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::serve(listener, Arc::clone(&state), stopped));
    Ok(MockServer {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running mock. Dropping it stops the server and closes every
/// connection.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<server::State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT/v1`, the provider base URL to give the gateway (an
    /// unspecified listen address is replaced by loopback).
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// `http://IP:PORT`, for the control API.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}")
    }

    /// Recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.recorder.list(None)
    }

    /// Recorded requests whose body's `model` is `model`.
    pub fn requests_for(&self, model: &str) -> Vec<RecordedRequest> {
        self.state.recorder.list(Some(model))
    }

    /// Forgets recorded requests and zeroes `requests` and `cancelled`.
    pub fn clear(&self) {
        self.state.recorder.clear();
    }

    /// Replaces the script of upstream model `model`.
    pub fn set_script(&self, model: impl Into<String>, steps: Vec<Step>) {
        self.state.scripts.set(model.into(), steps);
    }

    /// Removes every script.
    pub fn clear_scripts(&self) {
        self.state.scripts.clear(None);
    }

    /// The request counters.
    pub fn stats(&self) -> Stats {
        self.state.recorder.stats()
    }

    /// Stops accepting, closes every connection and waits for the server
    /// task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
