//! What differs between the client protocols: how a client presents its
//! key, how errors look, how a stream signals an error, and where usage and
//! generated text sit in responses. One file per protocol implements
//! [`Dialect`].

use http::HeaderMap;
use serde_json::Value;

use super::error::ErrorKind;
use llmgw_core::Protocol;

/// The API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Messages,
    CountTokens,
    /// Gemini `:generateContent`.
    GeminiGenerate,
    /// Gemini `:streamGenerateContent`; `sse` with `alt=sse`, else a
    /// streamed JSON array.
    GeminiStream {
        sse: bool,
    },
    /// Gemini `:countTokens`.
    GeminiCountTokens,
}

/// Where a Gemini path names its model: `/v1beta/models/{model}:{method}`
/// (or `/v1/models/...`). The model is the part before the method.
fn gemini_path(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((model, method))
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::from_request(path, None).map(|(e, _)| e)
    }

    /// The endpoint of a request, and the model its path names (Gemini).
    pub fn from_request<'p>(
        path: &'p str,
        query: Option<&str>,
    ) -> Option<(Endpoint, Option<&'p str>)> {
        Some(match path {
            "/v1/chat/completions" => (Endpoint::ChatCompletions, None),
            "/v1/completions" => (Endpoint::Completions, None),
            "/v1/embeddings" => (Endpoint::Embeddings, None),
            "/v1/responses" => (Endpoint::Responses, None),
            "/v1/messages" => (Endpoint::Messages, None),
            "/v1/messages/count_tokens" => (Endpoint::CountTokens, None),
            _ => {
                let (model, method) = gemini_path(path)?;
                let e = match method {
                    "generateContent" => Endpoint::GeminiGenerate,
                    "streamGenerateContent" => Endpoint::GeminiStream {
                        sse: query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse")),
                    },
                    "countTokens" => Endpoint::GeminiCountTokens,
                    _ => return None,
                };
                (e, Some(model))
            }
        })
    }

    pub fn api(self) -> llmgw_core::serving::ClientApi {
        use llmgw_core::serving::ClientApi;
        match self {
            Endpoint::ChatCompletions => ClientApi::Chat,
            Endpoint::Completions => ClientApi::Completions,
            Endpoint::Embeddings => ClientApi::Embeddings,
            Endpoint::Responses => ClientApi::Responses,
            Endpoint::Messages => ClientApi::Messages,
            Endpoint::CountTokens => ClientApi::CountTokens,
            Endpoint::GeminiGenerate | Endpoint::GeminiStream { .. } => ClientApi::GeminiGenerate,
            Endpoint::GeminiCountTokens => ClientApi::GeminiCountTokens,
        }
    }

    /// The client's protocol family: where its key is, what its errors
    /// look like.
    pub fn protocol(self) -> Protocol {
        self.api().client_protocol()
    }

    /// Whether the client's path says it streams (Gemini); other
    /// protocols say so in the body.
    pub fn path_streams(self) -> bool {
        matches!(self, Endpoint::GeminiStream { .. })
    }

    /// Whether the model is named in the path rather than the body.
    pub fn model_in_path(self) -> bool {
        matches!(
            self,
            Endpoint::GeminiGenerate | Endpoint::GeminiStream { .. } | Endpoint::GeminiCountTokens
        )
    }

    /// The path after the provider's base URL for a pass-through request
    /// (Gemini's names the upstream model).
    pub fn upstream_path(self, upstream_model: &str) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            Endpoint::ChatCompletions => Cow::Borrowed("/chat/completions"),
            Endpoint::Completions => Cow::Borrowed("/completions"),
            Endpoint::Embeddings => Cow::Borrowed("/embeddings"),
            Endpoint::Responses => Cow::Borrowed("/responses"),
            Endpoint::Messages => Cow::Borrowed("/messages"),
            Endpoint::CountTokens => Cow::Borrowed("/messages/count_tokens"),
            Endpoint::GeminiGenerate => {
                Cow::Owned(format!("/models/{upstream_model}:generateContent"))
            }
            Endpoint::GeminiStream { sse: true } => Cow::Owned(format!(
                "/models/{upstream_model}:streamGenerateContent?alt=sse"
            )),
            Endpoint::GeminiStream { sse: false } => {
                Cow::Owned(format!("/models/{upstream_model}:streamGenerateContent"))
            }
            Endpoint::GeminiCountTokens => {
                Cow::Owned(format!("/models/{upstream_model}:countTokens"))
            }
        }
    }
}

/// Token counts, normalized: `input` is uncached input for every
/// protocol (OpenAI's and Gemini's reported input, which include cached
/// tokens, less the cached ones), and `output` includes reasoning.
pub use llmgw_protocols::ir::Usage;

pub trait Dialect: Send + Sync {
    fn protocol(&self) -> Protocol;
    /// The client's key, from the headers this protocol uses.
    fn client_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str>;
    /// An error body in this protocol's shape.
    fn error_body(&self, kind: ErrorKind, message: &str) -> Vec<u8>;
    /// The terminal event a broken stream ends with.
    fn stream_error_event(&self, message: &str) -> Vec<u8>;
    /// Sets the provider's credential and protocol headers upstream.
    fn upstream_auth(&self, headers: &mut HeaderMap, api_key: Option<&str>);
    /// Usage in a whole (non-streaming) response body.
    fn usage_of_body(&self, endpoint: Endpoint, body: &Value) -> Option<Usage>;
    /// Generated text in a whole response body.
    fn text_of_body(&self, endpoint: Endpoint, body: &Value, out: &mut String);
    /// Reads one stream event: adds usage and generated text, and says
    /// whether it ends the stream normally.
    fn observe_event(&self, endpoint: Endpoint, name: &str, data: &Value, seen: &mut StreamSeen);
}

/// What a stream has shown so far.
#[derive(Debug, Default)]
pub struct StreamSeen {
    pub usage: Option<Usage>,
    pub text: String,
    pub finished: bool,
    /// The stream's own end marker was seen (`[DONE]`, `message_stop`,
    /// `response.completed`, `.incomplete` or `.failed`): once it is out,
    /// the client has its answer, whatever follows before the body ends.
    pub marked_end: bool,
    /// An error the upstream reported in the response (see `instream`):
    /// the status it implies and its message.
    pub error: Option<Box<(u16, String)>>,
}

/// Largest amount of generated text kept for estimating output tokens.
pub const MAX_TEXT: usize = 1 << 20;

pub fn push_text(out: &mut String, s: &str) {
    if out.len() + s.len() <= MAX_TEXT {
        out.push_str(s);
    }
}

pub fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

pub fn dialect(protocol: Protocol) -> &'static dyn Dialect {
    match protocol {
        Protocol::OpenAi | Protocol::OpenAiChat => &super::openai::OpenAi,
        Protocol::Anthropic => &super::anthropic::Anthropic,
        Protocol::Gemini => &super::gemini::Gemini,
    }
}
