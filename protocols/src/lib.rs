//! `llmgw-protocols`: the four LLM API protocols as typed values, and
//! translation between any two of them through a small intermediate form
//! ([`ir`]). Pure: no I/O, no clocks, no randomness; the data plane feeds it
//! bytes and writes out what it returns.
//!
//! One module per protocol ([`chat`], [`responses`], [`anthropic`],
//! [`gemini`]), each with the same parts:
//! - typed serde structs for its requests, responses and stream events,
//!   each keeping unknown fields (`#[serde(flatten)]`) and each enum of
//!   blocks, items or events having a fallback variant, so that what a
//!   provider adds tomorrow passes instead of being lost;
//! - `decode_request` / `encode_request` to and from [`ir::Request`]; the
//!   decoder records where each part came from ([`ir::Path`]) and the
//!   client's names for its settings ([`ir::Names`]), so that a field the
//!   target's encoder refuses or drops ([`Lossy`]) is named in the
//!   client's own terms; unknown fields follow one rule
//!   ([`Lossy::unknown`]);
//! - `decode_response` / `encode_response` to and from [`ir::Response`];
//! - a stream decoder and a stream encoder ([`stream`]);
//! - `decode_error` / `encode_error` for its error shape.
//!
//! [`Wire`] dispatches to them. A same-protocol request never comes here:
//! the data plane passes it through byte for byte.

pub mod anthropic;
pub mod chat;
pub mod envelope;
pub mod error;
pub mod gemini;
pub mod ir;
pub mod json;
pub mod partial;
pub mod responses;
pub mod schema;
pub mod stop;
pub mod stream;

pub use error::{ApiError, Error, ErrorType, Lossy};
pub use stream::{EncoderOptions, Event, StreamDecoder, StreamEncoder};

/// One of the four request/response protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    Chat,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// Google Gemini (`models/{model}:generateContent`).
    Gemini,
}

impl Wire {
    pub fn as_str(self) -> &'static str {
        match self {
            Wire::Chat => "openai-chat",
            Wire::Responses => "openai-responses",
            Wire::Anthropic => "anthropic",
            Wire::Gemini => "gemini",
        }
    }

    /// A name for people, used in error messages.
    pub fn title(self) -> &'static str {
        match self {
            Wire::Chat => chat::NAME,
            Wire::Responses => responses::NAME,
            Wire::Anthropic => anthropic::NAME,
            Wire::Gemini => gemini::NAME,
        }
    }

    /// The family whose opaque reasoning state this protocol carries
    /// natively.
    pub fn family(self) -> ir::Family {
        match self {
            Wire::Chat | Wire::Responses => ir::Family::OpenAi,
            Wire::Anthropic => ir::Family::Anthropic,
            Wire::Gemini => ir::Family::Gemini,
        }
    }

    /// A client's request body, in this protocol, as the intermediate form.
    pub fn decode_request(self, body: &[u8], lossy: &mut Lossy) -> Result<ir::Request, Error> {
        match self {
            Wire::Chat => chat::decode_request(body, lossy),
            Wire::Responses => responses::decode_request(body, lossy),
            Wire::Anthropic => anthropic::decode_request(body, lossy),
            Wire::Gemini => gemini::decode_request(body, lossy),
        }
    }

    /// The body to send upstream in this protocol.
    pub fn encode_request(self, req: &ir::Request, lossy: &mut Lossy) -> Result<Vec<u8>, Error> {
        match self {
            Wire::Chat => chat::encode_request(req, lossy),
            Wire::Responses => responses::encode_request(req, lossy),
            Wire::Anthropic => anthropic::encode_request(req, lossy),
            Wire::Gemini => gemini::encode_request(req, lossy),
        }
    }

    /// An upstream's whole answer in this protocol.
    pub fn decode_response(self, body: &[u8]) -> Result<ir::Response, Error> {
        match self {
            Wire::Chat => chat::decode_response(body),
            Wire::Responses => responses::decode_response(body),
            Wire::Anthropic => anthropic::decode_response(body),
            Wire::Gemini => gemini::decode_response(body),
        }
    }

    /// A whole answer for a client of this protocol.
    pub fn encode_response(self, resp: &ir::Response, opts: &EncoderOptions) -> Vec<u8> {
        match self {
            Wire::Chat => chat::encode_response(resp, opts),
            Wire::Responses => responses::encode_response(resp, opts),
            Wire::Anthropic => anthropic::encode_response(resp, opts),
            Wire::Gemini => gemini::encode_response(resp, opts),
        }
    }

    /// Reads an upstream stream in this protocol.
    pub fn stream_decoder(self) -> Box<dyn StreamDecoder> {
        match self {
            Wire::Chat => Box::new(chat::Decoder::default()),
            Wire::Responses => Box::new(responses::Decoder::default()),
            Wire::Anthropic => Box::new(anthropic::Decoder::default()),
            Wire::Gemini => Box::new(gemini::Decoder::default()),
        }
    }

    /// Writes a stream for a client of this protocol.
    pub fn stream_encoder(self, opts: EncoderOptions) -> Box<dyn StreamEncoder> {
        match self {
            Wire::Chat => Box::new(chat::Encoder::new(opts)),
            Wire::Responses => Box::new(responses::Encoder::new(opts)),
            Wire::Anthropic => Box::new(anthropic::Encoder::new(opts)),
            Wire::Gemini => Box::new(gemini::Encoder::new(opts)),
        }
    }

    /// A stop reason by its name in this protocol, as an upstream of this
    /// protocol sent it (the request log's `stop_reason`).
    pub fn stop_name(self, stop: &ir::StopReason) -> String {
        match self {
            Wire::Chat => chat::stop_name(stop),
            Wire::Responses => responses::stop_name(stop),
            Wire::Anthropic => anthropic::stop_name(stop),
            Wire::Gemini => gemini::stop_name(stop),
        }
    }

    /// An upstream error body in this protocol.
    pub fn decode_error(self, status: u16, body: &[u8]) -> ApiError {
        match self {
            Wire::Chat | Wire::Responses => chat::decode_error(status, body),
            Wire::Anthropic => anthropic::decode_error(status, body),
            Wire::Gemini => gemini::decode_error(status, body),
        }
    }

    /// An error for a client of this protocol, with the status it gets.
    pub fn encode_error(self, err: &ApiError) -> (u16, Vec<u8>) {
        match self {
            Wire::Chat | Wire::Responses => {
                (err.status_for_non_anthropic(), chat::encode_error(err))
            }
            Wire::Anthropic => (err.status, anthropic::encode_error(err)),
            Wire::Gemini => (err.status_for_non_anthropic(), gemini::encode_error(err)),
        }
    }
}
