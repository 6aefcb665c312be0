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
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/responses" => Endpoint::Responses,
            "/v1/messages" => Endpoint::Messages,
            "/v1/messages/count_tokens" => Endpoint::CountTokens,
            _ => return None,
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
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => Protocol::Anthropic,
            _ => Protocol::OpenAi,
        }
    }

    /// The path after `/v1`, appended to the provider's base URL.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            Endpoint::Messages => "/messages",
            Endpoint::CountTokens => "/messages/count_tokens",
        }
    }
}

/// Token counts as an upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// For OpenAI this includes cached tokens; for Anthropic it does not.
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

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
        Protocol::OpenAi | Protocol::OpenAiChat | Protocol::Gemini => &super::openai::OpenAi,
        Protocol::Anthropic => &super::anthropic::Anthropic,
    }
}
