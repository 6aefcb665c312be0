//! What differs between the client protocols: how a client presents its
//! key, how errors look, how a stream signals an error, and where usage and
//! generated text sit in responses. One file per protocol implements
//! [`Dialect`].

use super::generated::Generated;
use http::HeaderMap;
use serde_json::Value;

use super::error::ErrorKind;
use llmgw_core::Protocol;

pub use llmgw_core::endpoint::Endpoint;

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
    /// Usage in a whole (non-streaming) response body.
    fn usage_of_body(&self, endpoint: Endpoint, body: &Value) -> Option<Usage>;
    /// Generated text in a whole response body.
    fn text_of_body(&self, endpoint: Endpoint, body: &Value, out: &mut Generated);
    /// Reads one stream event: adds usage and generated text, and says
    /// whether it ends the stream normally.
    fn observe_event(&self, endpoint: Endpoint, name: &str, data: &Value, seen: &mut StreamSeen);
}

/// What a stream has shown so far.
#[derive(Debug, Default)]
pub struct StreamSeen {
    pub usage: Option<Usage>,
    pub text: Generated,
    pub finished: bool,
    /// The stream's own end marker was seen (`[DONE]`, `message_stop`,
    /// `response.completed`, `.incomplete` or `.failed`): once it is out,
    /// the client has its answer, whatever follows before the body ends.
    pub marked_end: bool,
    /// An error the upstream reported in the response (see `instream`):
    /// the status it implies and its message.
    pub error: Option<Box<(u16, String)>>,
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
