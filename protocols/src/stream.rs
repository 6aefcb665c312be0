//! The intermediate form of a streamed answer, and the two halves of every
//! stream transcoder: a [`StreamDecoder`] turns one provider protocol's
//! events into [`Event`]s, a [`StreamEncoder`] turns [`Event`]s into one
//! client protocol's frames. A transcoder for a pair is one of each, fed
//! event by event; neither holds content back, except where the client
//! protocol itself requires a whole value (a Gemini client receives each
//! function call whole) or forbids overlap (an Anthropic client's blocks
//! follow one another).

use crate::error::Error;
use crate::ir::{Opaque, StopReason, Usage};

/// One step of a streamed answer.
///
/// Block indices are the decoder's own, from 0 in the order blocks start;
/// blocks may overlap (an OpenAI chat stream interleaves parallel tool
/// calls), and an encoder whose protocol forbids that serialises them.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The answer began. Always the first event.
    Start {
        id: String,
        model: String,
    },
    BlockStart {
        index: usize,
        block: Block,
    },
    Delta {
        index: usize,
        delta: Delta,
    },
    BlockStop {
        index: usize,
    },
    /// All usage known so far; a later one replaces an earlier one.
    Usage(Usage),
    /// Why generation stopped. Usage may still follow.
    Stop(StopReason),
    /// The upstream reported an error inside the stream.
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Text,
    /// `id`: a Responses reasoning item's id. `redacted`: Anthropic
    /// `redacted_thinking`, whose data comes as a signature delta.
    Thinking {
        id: Option<String>,
        redacted: bool,
    },
    ToolCall {
        id: String,
        name: String,
        /// Gemini's `thoughtSignature` on the call.
        signature: Option<Opaque>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Text(String),
    Thinking(String),
    /// Opaque state of a thinking block (a signature, redacted data,
    /// encrypted content), whole.
    Signature(Opaque),
    /// A fragment of a tool call's JSON arguments.
    Arguments(String),
}

/// What an encoder needs to know about the request and the gateway.
#[derive(Debug, Clone, Default)]
pub struct EncoderOptions {
    /// The model name the client sees (the one it asked for).
    pub model: String,
    /// An id for the answer when the upstream gives none.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// Input tokens estimated from the request, for protocols that report
    /// input at the start (Anthropic `message_start`) before the upstream
    /// has said; the final usage replaces it. A stream's caller may leave
    /// it 0 and supply it only when asked
    /// ([`StreamEncoder::wants_input_estimate`]).
    pub input_estimate: u64,
    /// OpenAI chat: the client asked for a usage chunk
    /// (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Gemini: SSE (`alt=sse`) rather than a streamed JSON array.
    pub sse: bool,
}

/// A provider protocol's stream, read event by event.
pub trait StreamDecoder: Send {
    /// One server-sent event: its `event:` name (empty if none) and its
    /// joined `data:` lines.
    fn event(&mut self, name: &str, data: &str, out: &mut Vec<Event>) -> Result<(), Error>;
    /// The upstream body ended. Closes what is still open.
    fn finish(&mut self, out: &mut Vec<Event>);
    /// Whether the protocol's own terminal event has been seen (a stream
    /// that ends without it was cut).
    fn complete(&self) -> bool;
}

/// A client protocol's stream, written event by event.
pub trait StreamEncoder: Send {
    fn event(&mut self, event: Event, out: &mut Vec<u8>);
    /// The answer is over: the terminal frames, once. `usage` is the final
    /// usage when the upstream reported none (an estimate).
    fn finish(&mut self, fallback_usage: Option<Usage>, out: &mut Vec<u8>);
    /// The stream failed after it started: the protocol's terminal error.
    fn fail(&mut self, message: &str, out: &mut Vec<u8>);
    /// The usage the client was (or will be) told.
    fn usage(&self) -> Option<Usage>;
    /// Whether writing `next` (the finish when `None`) would tell the
    /// client an input count the upstream has not reported yet: the
    /// caller then estimates it ([`StreamEncoder::set_input_estimate`])
    /// first, so that a stream whose client never needs one is spared the
    /// estimate.
    fn wants_input_estimate(&self, _next: Option<&Event>) -> bool {
        false
    }
    /// Replaces [`EncoderOptions::input_estimate`].
    fn set_input_estimate(&mut self, _estimate: u64) {}
}

/// Writes one server-sent event, its data serialized straight into `out`.
pub fn sse<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, name: Option<&str>, data: &T) {
    if let Some(n) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    // Writing into a Vec cannot fail (the types written have string keys).
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}
