//! Response bodies in the shapes the official OpenAI, Anthropic and Google
//! SDKs accept: whole replies of the non-chat endpoints (completions,
//! embeddings, token counts), the lazily rendered plain text streams of
//! Chat Completions, Completions and Anthropic Messages (the benchmarks'
//! path), errors, model lists. Chat replies with anything more than plain
//! text, and every Responses and Gemini reply, are [`crate::compose`]'s.
//!
//! Reply text is deterministic: chunk `i` is `"tok{i} "`, and a whole reply
//! is all chunk texts in order (then padding, when asked for). Prompt
//! tokens come from [`crate::parse`]; completion tokens are the number of
//! chunks. The per-chunk stream events are written by hand from a prefix
//! rendered once per request; the rarer, larger objects use `json!`.

use std::fmt::Write as _;

use base64::Engine as _;
use hyper::body::Bytes;
use serde_json::{json, Value};

use crate::compose::{chat_head, named, Protocol};

/// The LLM endpoints the mock serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Messages,
    CountTokens,
    Models,
    /// `models/{model}:generateContent`.
    GeminiGenerate,
    /// `models/{model}:streamGenerateContent`.
    GeminiStream,
    /// `models/{model}:countTokens`.
    GeminiCountTokens,
    /// `GET models` in Gemini's shape.
    GeminiModels,
}

impl Endpoint {
    /// Whether `stream: true` gives an event stream.
    pub fn streams(self) -> bool {
        matches!(
            self,
            Self::Chat | Self::Completions | Self::Responses | Self::Messages
        )
    }

    /// The chat protocol whose replies [`crate::compose`] renders.
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            Self::Chat => Some(Protocol::Chat),
            Self::Responses => Some(Protocol::Responses),
            Self::Messages => Some(Protocol::Messages),
            Self::GeminiGenerate | Self::GeminiStream => Some(Protocol::Gemini),
            _ => None,
        }
    }
}

/// Text of chunk `i`.
pub fn chunk_text(i: u32) -> String {
    format!("tok{i} ")
}

/// All chunk texts of a reply of `chunks` chunks, in order.
pub fn full_text(chunks: u32) -> String {
    let mut s = String::with_capacity(chunks as usize * 7);
    for i in 0..chunks {
        let _ = write!(s, "tok{i} ");
    }
    s
}

/// [`full_text`] padded with `"pad "` repeats to exactly `bytes` bytes when
/// it is shorter.
pub fn padded_text(chunks: u32, bytes: usize) -> String {
    let mut s = full_text(chunks);
    if s.len() < bytes {
        s.reserve(bytes - s.len());
        while s.len() < bytes {
            let take = (bytes - s.len()).min(4);
            s.push_str(&"pad "[..take]);
        }
    }
    s
}

/// What every reply of one request shares.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub endpoint: Endpoint,
    pub seq: u64,
    pub model: String,
    pub created: u64,
    pub prompt_tokens: u64,
    pub chunks: u32,
    /// False with `no-usage`.
    pub usage: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
}

fn openai_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}

impl Reply {
    fn completion_tokens(&self) -> u64 {
        u64::from(self.chunks)
    }

    /// The non-streaming body. `dims` and `base64` only matter for
    /// embeddings, `inputs` is the number of embeddings.
    pub fn whole(&self, text: &str, embedding: EmbeddingShape) -> Bytes {
        match self.endpoint {
            Endpoint::Completions => self.completion(text),
            Endpoint::Embeddings => self.embeddings(embedding),
            Endpoint::CountTokens => to_bytes(&json!({"input_tokens": self.prompt_tokens})),
            Endpoint::GeminiCountTokens => to_bytes(&json!({
                "totalTokens": self.prompt_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}]
            })),
            // Chat replies are compose's; model lists are pre-rendered.
            _ => Bytes::new(),
        }
    }

    fn completion(&self, text: &str) -> Bytes {
        let mut v = json!({
            "id": format!("cmpl-mock{}", self.seq),
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "system_fingerprint": "fp_mock"
        });
        if self.usage {
            v["usage"] = openai_usage(self.prompt_tokens, self.completion_tokens());
        }
        to_bytes(&v)
    }

    fn embeddings(&self, shape: EmbeddingShape) -> Bytes {
        let data: Vec<Value> = (0..shape.inputs)
            .map(|i| {
                let vector = (0..shape.dims).map(move |j| embedding_value(i, j));
                let embedding = if shape.base64 {
                    let bytes: Vec<u8> = vector.flat_map(f32::to_le_bytes).collect();
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    Value::Array(vector.map(|x| json!(x)).collect())
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let mut v = json!({"object": "list", "data": data, "model": self.model});
        if self.usage {
            v["usage"] =
                json!({"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens});
        }
        to_bytes(&v)
    }

    /// Anthropic usage; with `no-usage` the required fields are kept, as 0.
    fn anthropic_usage(&self, output_tokens: u64) -> Value {
        let (input, output) = if self.usage {
            (self.prompt_tokens, output_tokens)
        } else {
            (0, 0)
        };
        json!({
            "input_tokens": input,
            "output_tokens": output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0
        })
    }
}

/// What an embeddings reply looks like.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EmbeddingShape {
    pub inputs: usize,
    pub dims: usize,
    pub base64: bool,
}

/// Component `j` of embedding `i`: deterministic, in [-0.5, 0.5).
fn embedding_value(i: usize, j: usize) -> f32 {
    ((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.5
}

/// The events of one streamed reply: `prefix_len` opening events, one event
/// per chunk, `suffix_len` closing events.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    reply: Reply,
    /// Chat and completions: each chunk's JSON up to `"choices":`.
    head: String,
}

impl StreamPlan {
    pub fn new(reply: Reply) -> Self {
        let model_json = Value::String(reply.model.clone()).to_string();
        let head = match reply.endpoint {
            Endpoint::Chat => chat_head(reply.seq, reply.created, &reply.model),
            Endpoint::Completions => format!(
                r#"{{"id":"cmpl-mock{}","object":"text_completion","created":{},"model":{},"system_fingerprint":"fp_mock","choices":"#,
                reply.seq, reply.created, model_json
            ),
            _ => String::new(),
        };
        Self { reply, head }
    }

    pub fn chunks(&self) -> u32 {
        self.reply.chunks
    }

    pub fn prefix_len(&self) -> usize {
        match self.reply.endpoint {
            // message_start, content_block_start, ping
            Endpoint::Messages => 3,
            _ => 0,
        }
    }

    pub fn suffix_len(&self) -> usize {
        match self.reply.endpoint {
            // finish chunk, [usage chunk], [DONE]
            Endpoint::Chat | Endpoint::Completions => 2 + usize::from(self.usage_chunk()),
            // content_block_stop, message_delta, message_stop
            Endpoint::Messages => 3,
            _ => 0,
        }
    }

    pub fn len(&self) -> usize {
        self.prefix_len() + self.reply.chunks as usize + self.suffix_len()
    }

    fn usage_chunk(&self) -> bool {
        self.reply.include_usage && self.reply.usage
    }

    /// `,"usage":null` on OpenAI chunks when a usage chunk will follow.
    fn usage_null(&self) -> &'static str {
        if self.usage_chunk() {
            r#","usage":null"#
        } else {
            ""
        }
    }

    /// Event number `k`.
    pub fn event(&self, k: usize) -> Bytes {
        let (p, n) = (self.prefix_len(), self.reply.chunks as usize);
        if k < p {
            self.prefix(k)
        } else if k < p + n {
            self.chunk((k - p) as u32)
        } else {
            self.suffix(k - p - n)
        }
    }

    fn chunk(&self, i: u32) -> Bytes {
        let mut s = String::with_capacity(self.head.len() + 160);
        match self.reply.endpoint {
            Endpoint::Chat => {
                s.push_str("data: ");
                s.push_str(&self.head);
                s.push_str(r#"[{"index":0,"delta":{"#);
                if i == 0 {
                    s.push_str(r#""role":"assistant","#);
                }
                let _ = write!(
                    s,
                    r#""content":"tok{i} "}},"logprobs":null,"finish_reason":null}}]"#
                );
                s.push_str(self.usage_null());
                s.push_str("}\n\n");
            }
            Endpoint::Completions => {
                s.push_str("data: ");
                s.push_str(&self.head);
                let _ = write!(
                    s,
                    r#"[{{"text":"tok{i} ","index":0,"logprobs":null,"finish_reason":null}}]"#
                );
                s.push_str(self.usage_null());
                s.push_str("}\n\n");
            }
            Endpoint::Messages => {
                let _ = write!(
                    s,
                    "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"tok{i} \"}}}}\n\n"
                );
            }
            _ => {}
        }
        Bytes::from(s)
    }

    fn prefix(&self, k: usize) -> Bytes {
        let r = &self.reply;
        match (r.endpoint, k) {
            (Endpoint::Messages, 0) => {
                // Like the real API: output_tokens starts at 1 here; the
                // final count is message_delta's (cumulative) output_tokens.
                let usage = r.anthropic_usage(1);
                named(
                    "message_start",
                    &json!({"type": "message_start", "message": {
                        "id": format!("msg_mock{}", r.seq),
                        "type": "message",
                        "role": "assistant",
                        "model": r.model,
                        "content": [],
                        "stop_reason": null,
                        "stop_sequence": null,
                        "usage": usage
                    }}),
                )
            }
            (Endpoint::Messages, 1) => Bytes::from_static(
                b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            ),
            (Endpoint::Messages, _) => {
                Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
            }
            _ => Bytes::new(),
        }
    }

    fn suffix(&self, j: usize) -> Bytes {
        let r = &self.reply;
        match (r.endpoint, j) {
            (Endpoint::Chat, 0) => Bytes::from(format!(
                "data: {}[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]{}}}\n\n",
                self.head,
                self.usage_null()
            )),
            (Endpoint::Completions, 0) => Bytes::from(format!(
                "data: {}[{{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}}]{}}}\n\n",
                self.head,
                self.usage_null()
            )),
            (Endpoint::Chat | Endpoint::Completions, 1) if self.usage_chunk() => {
                Bytes::from(format!(
                    "data: {}[],\"usage\":{}}}\n\n",
                    self.head,
                    openai_usage(r.prompt_tokens, r.completion_tokens())
                ))
            }
            (Endpoint::Chat | Endpoint::Completions, _) => Bytes::from_static(b"data: [DONE]\n\n"),
            (Endpoint::Messages, 0) => Bytes::from_static(
                b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            ),
            (Endpoint::Messages, 1) => {
                let output = if r.usage { r.completion_tokens() } else { 0 };
                named(
                    "message_delta",
                    &json!({"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                            "usage": {"output_tokens": output}}),
                )
            }
            (Endpoint::Messages, _) => Bytes::from_static(
                b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ),
            _ => Bytes::new(),
        }
    }
}

/// Which protocol's error shape a reply uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

/// An error body for `status` in `dialect`'s shape.
/// Gemini's 429 also says `retry_after` in a `RetryInfo` detail.
pub(crate) fn error_body(
    dialect: Dialect,
    status: u16,
    message: &str,
    retry_after: Option<u64>,
) -> Bytes {
    let v = match dialect {
        Dialect::OpenAi => {
            let (kind, code) = match status {
                400 => ("invalid_request_error", "invalid_request"),
                401 => ("invalid_request_error", "invalid_api_key"),
                403 => ("permission_error", "permission_denied"),
                404 => ("invalid_request_error", "model_not_found"),
                408 => ("timeout_error", "timeout"),
                409 => ("conflict_error", "conflict"),
                422 => ("invalid_request_error", "unprocessable_entity"),
                429 => ("rate_limit_error", "rate_limit_exceeded"),
                503 => ("server_error", "service_unavailable"),
                500.. => ("server_error", "server_error"),
                _ => ("invalid_request_error", "invalid_request"),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Dialect::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 | 529 => "overloaded_error",
                500.. => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Dialect::Gemini => {
            let status_name = match status {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                409 => "ABORTED",
                429 => "RESOURCE_EXHAUSTED",
                499 => "CANCELLED",
                501 => "UNIMPLEMENTED",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                500.. => "INTERNAL",
                _ => "FAILED_PRECONDITION",
            };
            let mut error = json!({"code": status, "message": message, "status": status_name});
            if let Some(s) = retry_after.filter(|_| status == 429) {
                error["details"] = json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{s}s")
                }]);
            }
            json!({"error": error})
        }
    };
    to_bytes(&v)
}

/// `GET /v1/models` for OpenAI clients.
pub(crate) fn openai_models(models: &[String]) -> Bytes {
    let data: Vec<Value> = models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "llmgw-mock"}))
        .collect();
    to_bytes(&json!({"object": "list", "data": data}))
}

/// The page of `models` that starts at `start` and holds at most `size`
/// (0: all the rest), and whether more follow.
fn models_page(models: &[String], start: usize, size: usize) -> (&[String], bool) {
    let rest = models.get(start..).unwrap_or_default();
    let n = if size == 0 {
        rest.len()
    } else {
        size.min(rest.len())
    };
    (&rest[..n], n < rest.len())
}

/// `GET /v1beta/models` for Gemini clients: the page after `page_token`
/// (the index of its first model, as the previous page's
/// `nextPageToken` says) of at most `page_size` models (0: all).
pub(crate) fn gemini_models(
    models: &[String],
    page_token: Option<&str>,
    page_size: usize,
) -> Result<Bytes, String> {
    let start = match page_token {
        None | Some("") => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|&i| i <= models.len())
            .ok_or_else(|| format!("Invalid page token: {t}"))?,
    };
    let (page, more) = models_page(models, start, page_size);
    let listed: Vec<Value> = page
        .iter()
        .map(|m| {
            json!({
                "name": format!("models/{m}"),
                "version": "001",
                "displayName": m,
                "description": "llmgw-mock model",
                "inputTokenLimit": 1_048_576,
                "outputTokenLimit": 65_536,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
                "thinking": true
            })
        })
        .collect();
    let mut v = json!({"models": listed});
    if more {
        v["nextPageToken"] = json!((start + page.len()).to_string());
    }
    Ok(to_bytes(&v))
}

/// `GET /v1/models` for Anthropic clients (requests with
/// `anthropic-version`): the page after the model `after_id` of at most
/// `limit` models (0: all).
pub(crate) fn anthropic_models(
    models: &[String],
    after_id: Option<&str>,
    limit: usize,
) -> Result<Bytes, String> {
    let start = match after_id {
        None => 0,
        Some(id) => {
            models
                .iter()
                .position(|m| m == id)
                .ok_or_else(|| format!("after_id: no model '{id}'"))?
                + 1
        }
    };
    let (page, more) = models_page(models, start, limit);
    let data: Vec<Value> = page
        .iter()
        .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}))
        .collect();
    Ok(to_bytes(&json!({
        "data": data,
        "has_more": more,
        "first_id": page.first(),
        "last_id": page.last()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(endpoint: Endpoint, include_usage: bool) -> Reply {
        Reply {
            endpoint,
            seq: 7,
            model: "m\"x".into(),
            created: 1,
            prompt_tokens: 3,
            chunks: 2,
            usage: true,
            include_usage,
        }
    }

    /// Every event is valid SSE whose data is JSON (or `[DONE]`).
    fn events(plan: &StreamPlan) -> Vec<(Option<String>, String)> {
        (0..plan.len())
            .map(|k| {
                let b = plan.event(k);
                let s = std::str::from_utf8(&b).unwrap();
                assert!(s.ends_with("\n\n"), "{s:?}");
                let mut name = None;
                let mut data = String::new();
                for line in s.trim_end().lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = d.to_owned();
                    } else {
                        panic!("bad line {line:?}");
                    }
                }
                if data != "[DONE]" {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    if let Some(n) = &name {
                        assert_eq!(v["type"], n.as_str());
                    }
                }
                (name, data)
            })
            .collect()
    }

    #[test]
    fn model_lists_are_paged_as_asked() {
        let models: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let v = |b: Bytes| serde_json::from_slice::<Value>(&b).unwrap();
        let all = v(anthropic_models(&models, None, 0).unwrap());
        assert_eq!(
            (all["data"].as_array().unwrap().len(), &all["has_more"]),
            (3, &json!(false))
        );
        let p1 = v(anthropic_models(&models, None, 2).unwrap());
        assert_eq!(
            (&p1["last_id"], &p1["has_more"]),
            (&json!("b"), &json!(true))
        );
        let p2 = v(anthropic_models(&models, Some("b"), 2).unwrap());
        assert_eq!(
            (&p2["data"][0]["id"], &p2["has_more"]),
            (&json!("c"), &json!(false))
        );
        assert!(anthropic_models(&models, Some("zz"), 2).is_err());

        let g1 = v(gemini_models(&models, None, 2).unwrap());
        assert_eq!(g1["models"][1]["name"], "models/b");
        assert_eq!(g1["nextPageToken"], "2");
        let g2 = v(gemini_models(&models, Some("2"), 2).unwrap());
        assert_eq!(g2["models"].as_array().unwrap().len(), 1);
        assert!(g2.get("nextPageToken").is_none());
        assert!(v(gemini_models(&models, None, 0).unwrap())
            .get("nextPageToken")
            .is_none());
        assert!(gemini_models(&models, Some("9"), 2).is_err());
    }

    #[test]
    fn all_stream_events_are_json() {
        for ep in [Endpoint::Chat, Endpoint::Completions, Endpoint::Messages] {
            for include_usage in [false, true] {
                let plan = StreamPlan::new(reply(ep, include_usage));
                let ev = events(&plan);
                assert_eq!(ev.len(), plan.len());
            }
        }
    }

    #[test]
    fn chat_stream_usage_chunk_only_when_asked() {
        let without = events(&StreamPlan::new(reply(Endpoint::Chat, false)));
        assert_eq!(without.len(), 4);
        assert!(!without.iter().any(|(_, d)| d.contains("usage")));
        let with = events(&StreamPlan::new(reply(Endpoint::Chat, true)));
        assert_eq!(with.len(), 5);
        let usage: Value = serde_json::from_str(&with[3].1).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 5);
        assert_eq!(usage["model"], "m\"x");
        assert_eq!(with[4].1, "[DONE]");
    }

    #[test]
    fn padding_reaches_the_size() {
        assert_eq!(padded_text(2, 0), "tok0 tok1 ");
        let p = padded_text(2, 23);
        assert_eq!(p.len(), 23);
        assert!(p.starts_with("tok0 tok1 pad pad"));
        assert_eq!(chunk_text(3), "tok3 ");
    }

    #[test]
    fn error_shapes() {
        let v: Value =
            serde_json::from_slice(&error_body(Dialect::Anthropic, 529, "busy", None)).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","error":{"type":"overloaded_error","message":"busy"}})
        );
        let v: Value =
            serde_json::from_slice(&error_body(Dialect::OpenAi, 429, "slow", None)).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        let v: Value =
            serde_json::from_slice(&error_body(Dialect::Gemini, 429, "slow", Some(3))).unwrap();
        assert_eq!(v["error"]["code"], 429);
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(v["error"]["details"][0]["retryDelay"], "3s");
    }
}
