//! Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`):
//! requests, whole answers, the event stream and the Anthropic error
//! shape, to and from the intermediate form.
//!
//! An Anthropic client's stream must have contiguous, non-overlapping
//! blocks; the intermediate stream may interleave blocks (parallel tool
//! calls from an OpenAI chat upstream), so the [`Encoder`] keeps one live
//! block at a time and queues the others in order.
//!
//! Round trip (`encode_request(decode_request(x))`) gives `x` back as a
//! JSON value, except for these normalisations: a message whose content is
//! one text block becomes a string (and the other way round for system
//! blocks with more than one part); `max_tokens` is 4096 when absent;
//! empty text blocks are dropped; consecutive same-role messages are
//! merged; `strict` on tools and the fields in [`IGNORED`] (such as
//! `cache_control`) are not written.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::chat::raw_message;
use crate::envelope::{self, CallId};
use crate::error::{says_nothing, ApiError, Error, ErrorType, Lossy};
use crate::ir::{
    Effort, Family, Image, Message, Names, Opaque, Origin, Part, Path, Reasoning, Request,
    Response, ResponseFormat, Role, StopReason, Tool, ToolChoice, Usage,
};
use crate::json::Text;
use crate::stream::{sse, Block, Delta, EncoderOptions, Event, StreamDecoder, StreamEncoder};

pub const NAME: &str = "Anthropic Messages";

/// The target named when a client's field has no place in the
/// intermediate form (whatever the upstream protocol is).
const ANY_TARGET: &str = "target";

/// The `max_tokens` sent when the request has none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Request fields that are only hints, safe to ignore, and therefore
/// ignored silently (any other field the intermediate form cannot hold is
/// reported through [`Lossy`]): `cache_control` anywhere (prompt caching
/// is the upstream's business), `metadata` other than `user_id` (kept as
/// the end-user id), `service_tier`, `anthropic_version` and
/// `anthropic_beta` (Bedrock/Vertex-style body fields), `citations`
/// on text blocks of earlier turns, `context_management` (Anthropic's
/// server-side clearing of old context: without it the upstream sees the
/// whole context the client sent), `thinking.display` (whether thinking
/// text is shown; it is passed either way), and tools with
/// `defer_loading: true` (tool search: a deferred tool is not offered to
/// the model until searched for, and other providers have no search, so it
/// is left out).
pub const IGNORED: &[&str] = &[
    "cache_control",
    "metadata",
    "service_tier",
    "anthropic_version",
    "anthropic_beta",
    "context_management",
    "thinking.display",
    "tools[].defer_loading",
    "messages[].content[].citations",
];

const TOP_IGNORED: &[&str] = &[
    "service_tier",
    "anthropic_version",
    "anthropic_beta",
    "cache_control",
    "context_management",
];

// ---------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    messages: Vec<AMessage>,
    #[serde(default)]
    system: Option<AContent>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    tools: Option<Vec<ATool>>,
    #[serde(default)]
    tool_choice: Option<AToolChoice>,
    #[serde(default)]
    thinking: Option<AThinking>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    metadata: Option<AMetadata>,
    /// `effort` (a reasoning effort) and `format` (structured output).
    #[serde(default)]
    output_config: Option<Map<String, Value>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct AMessage {
    role: String,
    content: AContent,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AContent {
    Text(String),
    Blocks(Vec<ABlock>),
}

/// A content block of any type; `kind` names it, so a block type added
/// tomorrow is read and named rather than refused.
#[derive(Debug, Default, Deserialize)]
struct ABlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    source: Option<ASource>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tool_use_id: Option<String>,
    #[serde(default)]
    content: Option<AContent>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ASource {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ATool {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct AToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct AThinking {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    budget_tokens: Option<u64>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct AMetadata {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(flatten)]
    #[allow(dead_code)]
    extra: Map<String, Value>,
}

// The answer side reads only the fields it uses: every other member of an
// answer or event is passed over by the parser without being built (no
// catch-all map), which is most of what translating an answer costs.

/// A whole answer, or the `message` of a `message_start` event.
#[derive(Debug, Deserialize)]
struct AResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<AnswerBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: Option<AUsage>,
}

/// A content block of an answer or a `content_block_start` event; `kind`
/// names it, so a block type added tomorrow is read and passed over.
#[derive(Debug, Default, Deserialize)]
struct AnswerBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

/// One stream event; `kind` names it, so an event type added tomorrow is
/// read (and passed over) rather than refused.
#[derive(Debug, Deserialize)]
struct AStreamEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<AResponse>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    content_block: Option<AnswerBlock>,
    #[serde(default)]
    delta: Option<AStreamDelta>,
    #[serde(default)]
    usage: Option<AUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct AStreamDelta {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
}

// What an Anthropic client is sent, written straight from these (fields
// in alphabetical order: the order a `serde_json::Map` writes them in).

#[derive(Serialize)]
struct UsageOut {
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
}

/// A content block, or a delta of one: only the fields given are written.
#[derive(Default, Serialize)]
struct BlockOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_json: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Text<'a>>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// A whole answer, or the `message` of `message_start`.
#[derive(Serialize)]
struct MessageOut<'a> {
    content: &'a [BlockOut<'a>],
    id: &'a str,
    model: &'a str,
    role: &'static str,
    stop_reason: Option<&'a str>,
    stop_sequence: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    usage: UsageOut,
}

impl BlockOut<'_> {
    /// The text of a plain text block (nothing else set).
    fn plain_text(&self) -> Option<&str> {
        match self {
            BlockOut {
                data: None,
                id: None,
                input: None,
                name: None,
                partial_json: None,
                signature: None,
                text: Some(Text(t)),
                thinking: None,
                kind: "text",
            } => Some(t),
            _ => None,
        }
    }
}

/// A whole answer's JSON: what serde writes for `rest` with `content` in
/// it, but with plain text blocks, the bulk of an answer, written straight
/// (serde_json writes every key and mark with a call of its own, and its
/// escaping goes a byte at a time). `rest.content` is empty.
fn answer_json(content: &[BlockOut<'_>], rest: &MessageOut<'_>) -> Vec<u8> {
    const OPEN: &[u8] = b"{\"content\":[";
    let texts: usize = content
        .iter()
        .filter_map(BlockOut::plain_text)
        .map(str::len)
        .sum();
    let mut out = Vec::with_capacity(256 + texts + texts / 8);
    out.extend_from_slice(OPEN);
    for (i, b) in content.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match b.plain_text() {
            Some(t) => {
                out.extend_from_slice(b"{\"text\":\"");
                crate::json::escape(&mut out, t);
                out.extend_from_slice(b"\",\"type\":\"text\"}");
            }
            // Writing into a Vec cannot fail.
            None => drop(serde_json::to_writer(&mut out, b)),
        }
    }
    out.push(b']');
    // `{"content":[]` and then the rest of the fields, in serde's order.
    let tail = serde_json::to_vec(rest).unwrap_or_default();
    out.extend_from_slice(tail.get(OPEN.len() + 1..).unwrap_or_default());
    out
}

/// `message_start`, `content_block_*` and `message_stop` events.
#[derive(Serialize)]
struct EventOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content_block: Option<BlockOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<BlockOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<MessageOut<'a>>,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl EventOut<'_> {
    fn of(kind: &'static str) -> Self {
        EventOut {
            content_block: None,
            delta: None,
            index: None,
            message: None,
            kind,
        }
    }
}

#[derive(Serialize)]
struct StopOut<'a> {
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct MessageDeltaOut<'a> {
    delta: StopOut<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
    usage: UsageOut,
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// An Anthropic client's names for the settings and fields encoders may
/// refuse (those it has no field for keep the intermediate form's).
const NAMES: Names = Names {
    parallel_tool_calls: "tool_choice.disable_parallel_tool_use",
    top_k: "top_k",
    stop: "stop_sequences",
    seed: "seed",
    presence_penalty: "presence_penalty",
    frequency_penalty: "frequency_penalty",
    response_format: "output_config.format",
    call_id: "tool_use_id",
};

/// A client's Messages (or `count_tokens`) body as the intermediate form.
pub fn decode_request(body: &[u8], lossy: &mut Lossy) -> Result<Request, Error> {
    let r: MessagesRequest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("invalid {NAME} request: {e}")))?;
    lossy.unknown(&r.extra, "", TOP_IGNORED)?;
    let mut req = Request {
        names: NAMES,
        model: r.model,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        stop: r.stop_sequences.unwrap_or_default(),
        stream: r.stream.unwrap_or(false),
        user: r.metadata.and_then(|m| m.user_id),
        ..Request::default()
    };
    match r.system {
        None => {}
        Some(AContent::Text(t)) if !t.is_empty() => {
            req.system.push(Part::Text { text: t });
            req.system_origins.push(Path::at(&["system"], &[]));
        }
        Some(AContent::Text(_)) => {}
        Some(AContent::Blocks(blocks)) => {
            for (i, b) in blocks.into_iter().enumerate() {
                let path = Path::at(&["system"], &[i]);
                if b.kind != "text" {
                    lossy.drop(path, ANY_TARGET, "system blocks other than text")?;
                    continue;
                }
                lossy.unknown(&b.extra, path, &["cache_control", "citations"])?;
                req.system.push(Part::Text {
                    text: b.text.unwrap_or_default(),
                });
                req.system_origins.push(path);
            }
        }
    }
    for (i, t) in r.tools.unwrap_or_default().into_iter().enumerate() {
        let path = Path::at(&["tools"], &[i]);
        if t.extra.get("defer_loading") == Some(&Value::Bool(true)) {
            // Offered only after a tool search, which other providers lack.
            continue;
        }
        match t.kind.as_deref() {
            None | Some("custom") => {}
            Some(other) => {
                lossy.drop(
                    path,
                    ANY_TARGET,
                    &format!("'{other}' is a server tool only Anthropic runs"),
                )?;
                continue;
            }
        }
        lossy.unknown(&t.extra, path, &["cache_control", "defer_loading"])?;
        req.tools.push(Tool {
            name: t.name,
            description: t.description,
            parameters: t
                .input_schema
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: t.strict,
        });
    }
    if let Some(tc) = r.tool_choice {
        lossy.unknown(&tc.extra, "tool_choice", &["cache_control"])?;
        req.tool_choice = Some(match tc.kind.as_str() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Named(
                tc.name
                    .ok_or_else(|| invalid("tool_choice.name is missing"))?,
            ),
            other => {
                return Err(invalid(format!(
                    "tool_choice.type: unknown value '{other}'"
                )))
            }
        });
        if let Some(d) = tc.disable_parallel_tool_use {
            req.parallel_tool_calls = Some(!d);
        }
    }
    if let Some(t) = r.thinking {
        lossy.unknown(&t.extra, "thinking", &["cache_control", "display"])?;
        req.reasoning = Some(match t.kind.as_str() {
            "enabled" => Reasoning {
                enabled: true,
                effort: None,
                budget_tokens: t.budget_tokens,
                include_thoughts: true,
            },
            "adaptive" => Reasoning {
                enabled: true,
                effort: None,
                budget_tokens: None,
                include_thoughts: true,
            },
            "disabled" => Reasoning {
                enabled: false,
                effort: None,
                budget_tokens: None,
                include_thoughts: false,
            },
            other => return Err(invalid(format!("thinking.type: unknown value '{other}'"))),
        });
    }
    if let Some(config) = r.output_config {
        decode_output_config(config, &mut req, lossy)?;
    }
    for (i, m) in r.messages.into_iter().enumerate() {
        let path = Path::at(&["messages"], &[i]);
        lossy.unknown(&m.extra, path, &["cache_control"])?;
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            // A system message inside the conversation (Claude Code sends
            // its environment so): its text joins the instructions, which
            // every other protocol keeps in one place.
            "system" => {
                decode_system_message(m.content, i, &mut req, lossy)?;
                continue;
            }
            other => return Err(invalid(format!("{path}.role: unknown role '{other}'"))),
        };
        let mut msg = Message::new(role, Vec::new());
        match m.content {
            AContent::Text(t) => msg.push(
                Part::Text { text: t },
                Origin::at(Path::at(&["messages", "content"], &[i, Path::KEY])),
            ),
            AContent::Blocks(blocks) => {
                for (j, b) in blocks.into_iter().enumerate() {
                    decode_block(b, i, j, &req.messages, &mut msg, lossy)?;
                }
            }
        }
        req.messages.push(msg);
    }
    Ok(req)
}

/// A `role: "system"` message (number `i`): its text blocks join
/// `req.system`.
fn decode_system_message(
    content: AContent,
    i: usize,
    req: &mut Request,
    lossy: &mut Lossy,
) -> Result<(), Error> {
    match content {
        AContent::Text(t) if t.is_empty() => {}
        AContent::Text(t) => {
            req.system.push(Part::Text { text: t });
            req.system_origins
                .push(Path::at(&["messages", "content"], &[i, Path::KEY]));
        }
        AContent::Blocks(blocks) => {
            for (j, b) in blocks.into_iter().enumerate() {
                let bp = Path::at(&["messages", "content"], &[i, j]);
                if b.kind != "text" {
                    lossy.drop(bp, ANY_TARGET, "system message blocks other than text")?;
                    continue;
                }
                lossy.unknown(&b.extra, bp, &["cache_control", "citations"])?;
                if let Some(text) = b.text.filter(|t| !t.is_empty()) {
                    req.system.push(Part::Text { text });
                    req.system_origins.push(bp);
                }
            }
        }
    }
    Ok(())
}

/// `output_config`: `effort` is the reasoning effort (kept with the
/// thinking setting), `format` a JSON schema for the answer.
fn decode_output_config(
    config: Map<String, Value>,
    req: &mut Request,
    lossy: &mut Lossy,
) -> Result<(), Error> {
    for (k, v) in config {
        match (k.as_str(), &v) {
            ("effort", Value::String(e)) => {
                let effort = match e.as_str() {
                    "max" | "xhigh" => Some(Effort::High),
                    other => Effort::parse(other),
                };
                let Some(effort) = effort else {
                    lossy.drop("output_config.effort", ANY_TARGET, "an unknown effort")?;
                    continue;
                };
                let r = req.reasoning.get_or_insert(Reasoning {
                    enabled: true,
                    effort: None,
                    budget_tokens: None,
                    include_thoughts: true,
                });
                r.effort = Some(effort);
            }
            ("format", Value::Object(f))
                if f.get("type").and_then(Value::as_str) == Some("json_schema") =>
            {
                let Some(schema) = f.get("schema") else {
                    return Err(invalid("output_config.format.schema is missing"));
                };
                req.response_format = Some(ResponseFormat::JsonSchema {
                    name: "output".into(),
                    schema: schema.clone(),
                    strict: Some(true),
                    description: None,
                });
            }
            _ if says_nothing(&v) => {}
            _ => lossy.drop(
                format!("output_config.{k}"),
                ANY_TARGET,
                "no equivalent in the other protocols",
            )?,
        }
    }
    Ok(())
}

fn decode_image(
    source: Option<ASource>,
    path: Path,
    lossy: &mut Lossy,
) -> Result<Option<Image>, Error> {
    let s = source.ok_or_else(|| invalid(format!("{path}.source is missing")))?;
    lossy.unknown(&s.extra, path.field("source"), &["cache_control"])?;
    Ok(match s.kind.as_str() {
        "base64" => Some(Image::Base64 {
            media_type: s
                .media_type
                .ok_or_else(|| invalid(format!("{path}.source.media_type is missing")))?,
            data: s
                .data
                .ok_or_else(|| invalid(format!("{path}.source.data is missing")))?,
        }),
        "url" => Some(Image::Url {
            url: s
                .url
                .ok_or_else(|| invalid(format!("{path}.source.url is missing")))?,
        }),
        other => {
            lossy.drop(
                path.field("source"),
                ANY_TARGET,
                &format!("'{other}' image sources are Anthropic's own"),
            )?;
            None
        }
    })
}

/// The name of the call `id` among `messages` and `current`.
fn call_name(messages: &[Message], current: &[Part], id: &str) -> Option<String> {
    let find = |parts: &[Part]| {
        parts.iter().find_map(|p| match p {
            Part::ToolCall { id: i, name, .. } if i == id => Some(name.clone()),
            _ => None,
        })
    };
    find(current).or_else(|| messages.iter().rev().find_map(|m| find(&m.content)))
}

/// A text or image block (at the top of a message or inside a tool
/// result), at `path`.
fn decode_leaf(b: ABlock, path: Path, lossy: &mut Lossy) -> Result<Option<Part>, Error> {
    Ok(if b.kind == "text" {
        lossy.unknown(&b.extra, path, &["cache_control", "citations"])?;
        Some(Part::Text {
            text: b.text.unwrap_or_default(),
        })
    } else {
        lossy.unknown(&b.extra, path, &["cache_control"])?;
        decode_image(b.source, path, lossy)?.map(Part::Image)
    })
}

/// Block `j` of message `i`, appended to `out`.
fn decode_block(
    b: ABlock,
    i: usize,
    j: usize,
    earlier: &[Message],
    out: &mut Message,
    lossy: &mut Lossy,
) -> Result<(), Error> {
    let path = Path::at(&["messages", "content"], &[i, j]);
    match b.kind.as_str() {
        "text" | "image" => {
            if let Some(p) = decode_leaf(b, path, lossy)? {
                out.push(p, Origin::at(path));
            }
        }
        "tool_use" => {
            lossy.unknown(&b.extra, path, &["cache_control"])?;
            let raw =
                b.id.ok_or_else(|| invalid(format!("{path}.id is missing")))?;
            let carried = envelope::unwrap_call_id(&raw);
            // Thinking carried in the id goes back before the call, unless
            // the turn already has its thinking.
            if !carried.thinking.is_empty()
                && !out
                    .content
                    .iter()
                    .any(|p| matches!(p, Part::Thinking { .. }))
            {
                let at = out
                    .content
                    .iter()
                    .position(|p| !matches!(p, Part::Thinking { .. }))
                    .unwrap_or(out.content.len());
                for (k, t) in carried.thinking.into_iter().enumerate() {
                    out.content.insert(at + k, t);
                    out.origins.insert(at + k, Origin::at(path));
                }
            }
            let input = b.input.unwrap_or_else(|| json!({}));
            let call = Part::ToolCall {
                id: carried.id,
                name: b
                    .name
                    .ok_or_else(|| invalid(format!("{path}.name is missing")))?,
                arguments: input.to_string(),
                signature: carried.signature,
            };
            let args = Path::at(&["messages", "content", "input"], &[i, j]);
            out.push(call, Origin::call(path, args));
        }
        "tool_result" => {
            lossy.unknown(&b.extra, path, &["cache_control"])?;
            let raw = b
                .tool_use_id
                .ok_or_else(|| invalid(format!("{path}.tool_use_id is missing")))?;
            let call_id = envelope::unwrap_call_id(&raw).id;
            let mut content = Vec::new();
            let mut inner = Vec::new();
            match b.content {
                None => {}
                Some(AContent::Text(t)) => {
                    content.push(Part::Text { text: t });
                    inner.push(Path::at(
                        &["messages", "content", "content"],
                        &[i, j, Path::KEY],
                    ));
                }
                Some(AContent::Blocks(blocks)) => {
                    for (k, block) in blocks.into_iter().enumerate() {
                        let ip = Path::at(&["messages", "content", "content"], &[i, j, k]);
                        match block.kind.as_str() {
                            "text" | "image" => {
                                if let Some(p) = decode_leaf(block, ip, lossy)? {
                                    content.push(p);
                                    inner.push(ip);
                                }
                            }
                            other => lossy.drop(
                                ip,
                                ANY_TARGET,
                                &format!("'{other}' blocks in tool results"),
                            )?,
                        }
                    }
                }
            }
            let result = Part::ToolResult {
                name: call_name(earlier, &out.content, &call_id),
                call_id,
                content,
                is_error: b.is_error.unwrap_or(false),
            };
            out.push(result, Origin::result(path, inner));
        }
        "thinking" => {
            lossy.unknown(&b.extra, path, &["cache_control"])?;
            let thinking = Part::Thinking {
                text: b.thinking.unwrap_or_default(),
                signature: b
                    .signature
                    .filter(|s| !s.is_empty())
                    .map(|s| envelope::unwrap(&s, Family::Anthropic)),
                redacted: false,
                id: None,
            };
            out.push(thinking, Origin::at(path));
        }
        "redacted_thinking" => {
            lossy.unknown(&b.extra, path, &["cache_control"])?;
            let thinking = Part::Thinking {
                text: String::new(),
                signature: b.data.map(|d| envelope::unwrap(&d, Family::Anthropic)),
                redacted: true,
                id: None,
            };
            out.push(thinking, Origin::at(path));
        }
        other => lossy.drop(
            path,
            ANY_TARGET,
            &format!("'{other}' blocks have no equivalent in the other protocols"),
        )?,
    }
    Ok(())
}

/// Anthropic ids take `[A-Za-z0-9_-]` only; other characters become `_`
/// (the same way for a call and its result).
fn tool_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn image_json(img: &Image) -> Value {
    match img {
        Image::Base64 { media_type, data } => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        Image::Url { url } => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// A part as a block; `args` is where a tool call's arguments are in the
/// client's body.
fn encode_block(p: &Part, args: Path, lossy: &mut Lossy) -> Result<Option<Value>, Error> {
    Ok(match p {
        Part::Text { text } if text.trim().is_empty() => None,
        Part::Text { text } => Some(json!({"type": "text", "text": text})),
        Part::Image(img) => Some(image_json(img)),
        Part::ToolCall {
            id,
            name,
            arguments,
            ..
        } => {
            let input = if arguments.trim().is_empty() {
                json!({})
            } else {
                match serde_json::from_str::<Value>(arguments) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        lossy.drop(args, NAME, "tool-call arguments are not a JSON object")?;
                        json!({})
                    }
                }
            };
            Some(json!({"type": "tool_use", "id": tool_id(id), "name": name, "input": input}))
        }
        Part::ToolResult {
            call_id,
            content,
            is_error,
            ..
        } => {
            let mut b = Map::new();
            b.insert("type".into(), json!("tool_result"));
            b.insert("tool_use_id".into(), json!(tool_id(call_id)));
            if let [Part::Text { text }] = content.as_slice() {
                b.insert("content".into(), json!(text));
            } else {
                let mut inner = Vec::new();
                for c in content {
                    if let Some(v) = encode_block(c, args, lossy)? {
                        inner.push(v);
                    }
                }
                if !inner.is_empty() {
                    b.insert("content".into(), Value::Array(inner));
                }
            }
            if *is_error {
                b.insert("is_error".into(), json!(true));
            }
            Some(Value::Object(b))
        }
        Part::Thinking {
            text,
            signature: Some(sig),
            redacted,
            ..
        } if sig.family == Family::Anthropic => Some(if *redacted {
            json!({"type": "redacted_thinking", "data": sig.value})
        } else {
            json!({"type": "thinking", "thinking": text, "signature": sig.value})
        }),
        // Thinking of another family, or unsigned, would be refused.
        Part::Thinking { .. } => None,
    })
}

/// The messages of a request as Anthropic turns: empty blocks dropped,
/// consecutive same-role messages merged, tool results first in a user
/// turn and thinking first in an assistant turn.
fn encode_messages(req: &Request, lossy: &mut Lossy) -> Result<Vec<Value>, Error> {
    let mut turns: Vec<(Role, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let mut blocks = Vec::new();
        for (j, p) in m.content.iter().enumerate() {
            if let Some(b) = encode_block(p, m.arguments_path(i, j), lossy)? {
                blocks.push(b);
            }
        }
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == m.role => b.extend(blocks),
            _ => turns.push((m.role, blocks)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, blocks)| {
            let first = match role {
                Role::User => "tool_result",
                Role::Assistant => "thinking",
            };
            let is_first = |b: &Value| {
                let t = b.get("type").and_then(Value::as_str).unwrap_or("");
                t == first || (role == Role::Assistant && t == "redacted_thinking")
            };
            let (mut ordered, rest): (Vec<Value>, Vec<Value>) =
                blocks.into_iter().partition(is_first);
            ordered.extend(rest);
            let content = match ordered.as_slice() {
                [b] if b.get("type").and_then(Value::as_str) == Some("text") => {
                    b.get("text").cloned().unwrap_or_default()
                }
                _ => Value::Array(ordered),
            };
            json!({
                "role": if role == Role::User { "user" } else { "assistant" },
                "content": content,
            })
        })
        .collect())
}

fn encode_system(req: &Request, lossy: &mut Lossy) -> Result<Option<Value>, Error> {
    let mut blocks = Vec::new();
    for (i, p) in req.system.iter().enumerate() {
        match p {
            Part::Text { text } if text.trim().is_empty() => {}
            Part::Text { text } => blocks.push(text.clone()),
            _ => lossy.drop(req.system_path(i), NAME, "system takes text only")?,
        }
    }
    Ok(match blocks.len() {
        0 => None,
        1 => blocks.pop().map(Value::String),
        _ => Some(Value::Array(
            blocks
                .into_iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        )),
    })
}

fn encode_tools(req: &Request, body: &mut Map<String, Value>) {
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut o = Map::new();
                o.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    o.insert("description".into(), json!(d));
                }
                o.insert("input_schema".into(), t.parameters.clone());
                Value::Object(o)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let mut choice = match &req.tool_choice {
            None => None,
            Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
            Some(ToolChoice::None) => Some(json!({"type": "none"})),
            Some(ToolChoice::Required) => Some(json!({"type": "any"})),
            Some(ToolChoice::Named(n)) => Some(json!({"type": "tool", "name": n})),
        };
        if let Some(p) = req.parallel_tool_calls {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if let Some(o) = c.as_object_mut() {
                if o.get("type").and_then(Value::as_str) != Some("none") {
                    o.insert("disable_parallel_tool_use".into(), json!(!p));
                }
            }
        }
        if let Some(c) = choice {
            body.insert("tool_choice".into(), c);
        }
    }
}

/// `thinking` for a request with `max_tokens`; the budget stays below
/// `max_tokens` and at or above Anthropic's minimum of 1024.
fn encode_thinking(r: &Reasoning, max_tokens: u64) -> Option<Value> {
    if !r.enabled {
        return Some(json!({"type": "disabled"}));
    }
    match r.budget() {
        None => Some(json!({"type": "adaptive"})),
        Some(b) => {
            if max_tokens <= 1024 {
                return None;
            }
            let b = b.max(1024).min(max_tokens - 1);
            Some(json!({"type": "enabled", "budget_tokens": b}))
        }
    }
}

/// Whether the conversation ends in a tool loop (a user turn of tool
/// results after an assistant turn with calls) whose assistant turn does
/// not start with a thinking block.
fn tool_loop_without_thinking(messages: &[Value]) -> bool {
    let kinds = |m: &Value| -> Vec<String> {
        match m.get("content") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|b| {
                    b.get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                })
                .collect(),
            _ => vec!["text".to_string()],
        }
    };
    let [.., assistant, user] = messages else {
        return false;
    };
    let a = kinds(assistant);
    assistant.get("role").and_then(Value::as_str) == Some("assistant")
        && kinds(user).iter().any(|k| k == "tool_result")
        && a.iter().any(|k| k == "tool_use")
        && !a
            .first()
            .is_some_and(|k| k == "thinking" || k == "redacted_thinking")
}

/// The intermediate form as a body for an Anthropic upstream.
pub fn encode_request(req: &Request, lossy: &mut Lossy) -> Result<Vec<u8>, Error> {
    let body = encode_body(req, lossy)?;
    serde_json::to_vec(&Value::Object(body)).map_err(|e| invalid(e.to_string()))
}

fn encode_body(req: &Request, lossy: &mut Lossy) -> Result<Map<String, Value>, Error> {
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));
    if let Some(s) = encode_system(req, lossy)? {
        body.insert("system".into(), s);
    }
    let messages = encode_messages(req, lossy)?;
    let unsigned_loop = tool_loop_without_thinking(&messages);
    body.insert("messages".into(), Value::Array(messages));
    encode_tools(req, &mut body);
    if let Some(t) = req
        .reasoning
        .as_ref()
        .and_then(|r| encode_thinking(r, max_tokens))
    {
        // Anthropic refuses thinking while a tool loop's assistant turn
        // has no thinking of its own (history from another family): that
        // request goes without thinking rather than failing.
        let enabled = t.get("type").and_then(Value::as_str) != Some("disabled");
        if !(enabled && unsigned_loop) {
            body.insert("thinking".into(), t);
        }
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        body.insert("top_p".into(), json!(t));
    }
    if let Some(k) = req.top_k {
        body.insert("top_k".into(), json!(k));
    }
    if req.seed.is_some() {
        lossy.drop(req.names.seed, NAME, "no seed parameter")?;
    }
    if req.presence_penalty.is_some() {
        lossy.drop(req.names.presence_penalty, NAME, "no presence penalty")?;
    }
    if req.frequency_penalty.is_some() {
        lossy.drop(req.names.frequency_penalty, NAME, "no frequency penalty")?;
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(_) => lossy.drop(req.names.response_format, NAME, "no structured output")?,
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(u) = &req.user {
        body.insert("metadata".into(), json!({"user_id": u}));
    }
    Ok(body)
}

/// A `count_tokens` body: the request without the fields that endpoint
/// refuses (system, tools and thinking are kept: they count).
pub fn encode_count_request(req: &Request, lossy: &mut Lossy) -> Result<Vec<u8>, Error> {
    let mut body = encode_body(req, lossy)?;
    for k in [
        "max_tokens",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
    ] {
        body.remove(k);
    }
    serde_json::to_vec(&Value::Object(body)).map_err(|e| invalid(e.to_string()))
}

/// A `count_tokens` answer: `{"input_tokens": n}`.
pub fn decode_count_response(body: &[u8]) -> Result<u64, Error> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::Upstream(format!("{NAME} count_tokens answer: {e}")))?;
    v.get("input_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Upstream("count_tokens answer has no input_tokens".into()))
}

/// A `count_tokens` answer for an Anthropic client.
pub fn encode_count_response(n: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"input_tokens": n})).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Whole answers
// ---------------------------------------------------------------------------

fn stop_of(reason: Option<&str>, sequence: Option<String>) -> StopReason {
    match reason {
        None | Some("end_turn") => StopReason::EndTurn,
        Some("stop_sequence") => StopReason::StopSequence(sequence),
        Some("max_tokens") => StopReason::MaxTokens,
        Some("tool_use") => StopReason::ToolUse,
        Some("refusal") => StopReason::ContentFilter,
        Some(other) => StopReason::Other(other.to_string()),
    }
}

/// The `stop_reason` and `stop_sequence` an Anthropic client gets.
fn stop_json(stop: &StopReason) -> (&str, Option<&str>) {
    match stop {
        StopReason::StopSequence(s) => ("stop_sequence", s.as_deref()),
        StopReason::Other(raw) if OWN_REASONS.contains(&raw.as_str()) => (raw.as_str(), None),
        other => (reason_of(other), None),
    }
}

/// Anthropic's reasons that have no equivalent elsewhere.
const OWN_REASONS: [&str; 2] = ["pause_turn", "model_context_window_exceeded"];

/// A reason's Anthropic name; the nearest one for a reason Anthropic has
/// no name for.
fn reason_of(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::StopSequence(_) => "stop_sequence",
        StopReason::MaxTokens => "max_tokens",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
        StopReason::Other(raw) => reason_of(&crate::stop::nearest(raw)),
    }
}

/// A stop reason as an Anthropic upstream names it (`stop_reason`).
pub fn stop_name(stop: &StopReason) -> String {
    match stop {
        StopReason::Other(raw) => raw.clone(),
        named => reason_of(named).to_string(),
    }
}

fn merge_usage(u: &mut Usage, a: &AUsage) {
    if let Some(v) = a.input_tokens {
        u.input = v;
    }
    if let Some(v) = a.cache_read_input_tokens {
        u.cache_read = v;
    }
    if let Some(v) = a.cache_creation_input_tokens {
        u.cache_write = v;
    }
    if let Some(v) = a.output_tokens {
        u.output = v;
    }
}

/// An upstream's whole Messages answer.
pub fn decode_response(body: &[u8]) -> Result<Response, Error> {
    let r: AResponse =
        serde_json::from_slice(body).map_err(|e| Error::Upstream(format!("{NAME} answer: {e}")))?;
    let mut content = Vec::new();
    for b in r.content {
        match b.kind.as_str() {
            "text" => content.push(Part::Text {
                text: b.text.unwrap_or_default(),
            }),
            "thinking" => content.push(Part::Thinking {
                text: b.thinking.unwrap_or_default(),
                signature: b.signature.filter(|s| !s.is_empty()).map(|value| Opaque {
                    family: Family::Anthropic,
                    value,
                }),
                redacted: false,
                id: None,
            }),
            "redacted_thinking" => content.push(Part::Thinking {
                text: String::new(),
                signature: b.data.map(|value| Opaque {
                    family: Family::Anthropic,
                    value,
                }),
                redacted: true,
                id: None,
            }),
            "tool_use" => content.push(Part::ToolCall {
                id: b.id.unwrap_or_default(),
                name: b.name.unwrap_or_default(),
                arguments: b.input.unwrap_or_else(|| json!({})).to_string(),
                signature: None,
            }),
            // Server tools (web search and the like) ran upstream; their
            // blocks have no equivalent elsewhere.
            _ => {}
        }
    }
    Ok(Response {
        id: r.id.unwrap_or_default(),
        model: r.model.unwrap_or_default(),
        content,
        stop: stop_of(r.stop_reason.as_deref(), r.stop_sequence),
        usage: r.usage.as_ref().map(|a| {
            let mut u = Usage::default();
            merge_usage(&mut u, a);
            u
        }),
        created: None,
    })
}

fn usage_out(u: &Usage) -> UsageOut {
    UsageOut {
        cache_creation_input_tokens: u.cache_write,
        cache_read_input_tokens: u.cache_read,
        input_tokens: u.input,
        output_tokens: u.output,
    }
}

/// A call's arguments as `input`: whole, or what is complete of them when
/// max tokens cut them (the stop reason says so).
fn arguments_object(arguments: &str) -> Value {
    Value::Object(crate::partial::object(arguments))
}

fn call_id_for_client(id: &str, signature: &Option<Opaque>) -> String {
    envelope::wrap_call_id(&CallId {
        id: id.to_string(),
        thinking: Vec::new(),
        signature: signature.clone(),
    })
}

/// A whole answer for an Anthropic client.
pub fn encode_response(resp: &Response, opts: &EncoderOptions) -> Vec<u8> {
    // What the blocks borrow: signatures and call ids as the client gets
    // them, tool inputs as objects.
    let mut owned: Vec<(String, Value)> = Vec::new();
    for p in &resp.content {
        match p {
            Part::Thinking { signature, .. } => {
                let sig = signature
                    .as_ref()
                    .map(|s| envelope::wrap(s, Family::Anthropic))
                    .unwrap_or_default();
                owned.push((sig, Value::Null));
            }
            Part::ToolCall {
                id,
                arguments,
                signature,
                ..
            } => owned.push((
                call_id_for_client(id, signature),
                arguments_object(arguments),
            )),
            _ => {}
        }
    }
    let mut owned = owned.iter();
    let mut content = Vec::new();
    for p in &resp.content {
        match p {
            Part::Text { text } => {
                if !text.is_empty() {
                    content.push(BlockOut {
                        text: Some(Text(text)),
                        kind: "text",
                        ..BlockOut::default()
                    });
                }
            }
            Part::Thinking { text, redacted, .. } => {
                let sig = owned.next().map_or("", |(s, _)| s.as_str());
                content.push(if *redacted {
                    BlockOut {
                        data: Some(sig),
                        kind: "redacted_thinking",
                        ..BlockOut::default()
                    }
                } else {
                    BlockOut {
                        signature: Some(sig),
                        thinking: Some(Text(text)),
                        kind: "thinking",
                        ..BlockOut::default()
                    }
                });
            }
            Part::ToolCall { name, .. } => {
                if let Some((id, input)) = owned.next() {
                    content.push(BlockOut {
                        id: Some(id),
                        input: Some(input),
                        name: Some(name),
                        kind: "tool_use",
                        ..BlockOut::default()
                    });
                }
            }
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    let (stop_reason, stop_sequence) = stop_json(&resp.stop);
    let usage = resp.usage.unwrap_or(Usage {
        input: opts.input_estimate,
        ..Usage::default()
    });
    let rest = MessageOut {
        content: &[],
        id: if resp.id.is_empty() {
            &opts.id
        } else {
            &resp.id
        },
        model: &opts.model,
        role: "assistant",
        stop_reason: Some(stop_reason),
        stop_sequence,
        kind: "message",
        usage: usage_out(&usage),
    };
    answer_json(&content, &rest)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

fn kind_of(t: &str) -> Option<ErrorType> {
    Some(match t {
        "invalid_request_error" => ErrorType::InvalidRequest,
        "authentication_error" => ErrorType::Authentication,
        "permission_error" | "billing_error" => ErrorType::Permission,
        "not_found_error" => ErrorType::NotFound,
        "request_too_large" => ErrorType::RequestTooLarge,
        "rate_limit_error" => ErrorType::RateLimit,
        "overloaded_error" => ErrorType::Overloaded,
        "timeout_error" => ErrorType::Timeout,
        "api_error" => ErrorType::Api,
        _ => return None,
    })
}

fn type_of(k: ErrorType) -> &'static str {
    match k {
        ErrorType::InvalidRequest => "invalid_request_error",
        ErrorType::Authentication => "authentication_error",
        ErrorType::Permission => "permission_error",
        ErrorType::NotFound => "not_found_error",
        ErrorType::RequestTooLarge => "request_too_large",
        ErrorType::RateLimit => "rate_limit_error",
        ErrorType::Overloaded => "overloaded_error",
        ErrorType::Timeout => "timeout_error",
        ErrorType::Api => "api_error",
    }
}

/// An Anthropic error body (`{"type":"error","error":{"type","message"}}`).
pub fn decode_error(status: u16, body: &[u8]) -> ApiError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let e = v.as_ref().and_then(|v| v.get("error"));
    let message = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let kind = e
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .and_then(kind_of)
        .unwrap_or_else(|| ErrorType::from_status(status));
    ApiError {
        status,
        kind,
        message: message.unwrap_or_else(|| raw_message(status, body)),
    }
}

fn error_json(kind: ErrorType, message: &str) -> Value {
    json!({"type": "error", "error": {"type": type_of(kind), "message": message}})
}

/// An error for an Anthropic client.
pub fn encode_error(err: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&error_json(err.kind, &err.message)).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Stream decoder
// ---------------------------------------------------------------------------

/// A block of the upstream stream being read.
#[derive(Debug)]
struct OpenBlock {
    index: usize,
    /// A tool call's `input` from `content_block_start`, sent as arguments
    /// at the stop when no `input_json_delta` came.
    input: Option<Value>,
    had_arguments: bool,
}

/// Reads an Anthropic upstream stream.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    next_block: usize,
    /// Upstream block index → block being read. Blocks of types with no
    /// equivalent (server tools) are not here and their events are
    /// passed over.
    open: HashMap<usize, OpenBlock>,
    usage: Usage,
    done: bool,
}

impl Decoder {
    fn start_block(&mut self, upstream: usize, b: AnswerBlock, out: &mut Vec<Event>) {
        let index = self.next_block;
        let block = match b.kind.as_str() {
            "text" => Block::Text,
            "thinking" => Block::Thinking {
                id: None,
                redacted: false,
            },
            "redacted_thinking" => Block::Thinking {
                id: None,
                redacted: true,
            },
            "tool_use" => Block::ToolCall {
                id: b.id.clone().unwrap_or_default(),
                name: b.name.clone().unwrap_or_default(),
                signature: None,
            },
            _ => return,
        };
        self.next_block += 1;
        out.push(Event::BlockStart { index, block });
        let mut open = OpenBlock {
            index,
            input: None,
            had_arguments: false,
        };
        match b.kind.as_str() {
            "text" => {
                if let Some(t) = b.text.filter(|t| !t.is_empty()) {
                    out.push(Event::Delta {
                        index,
                        delta: Delta::Text(t),
                    });
                }
            }
            "thinking" => {
                if let Some(t) = b.thinking.filter(|t| !t.is_empty()) {
                    out.push(Event::Delta {
                        index,
                        delta: Delta::Thinking(t),
                    });
                }
                if let Some(s) = b.signature.filter(|s| !s.is_empty()) {
                    out.push(Event::Delta {
                        index,
                        delta: Delta::Signature(Opaque {
                            family: Family::Anthropic,
                            value: s,
                        }),
                    });
                }
            }
            "redacted_thinking" => {
                if let Some(d) = b.data {
                    out.push(Event::Delta {
                        index,
                        delta: Delta::Signature(Opaque {
                            family: Family::Anthropic,
                            value: d,
                        }),
                    });
                }
            }
            _ => {
                open.input = b
                    .input
                    .filter(|v| !matches!(v, Value::Object(m) if m.is_empty()) && !v.is_null());
            }
        }
        self.open.insert(upstream, open);
    }

    fn stop_block(&mut self, upstream: usize, out: &mut Vec<Event>) {
        if let Some(b) = self.open.remove(&upstream) {
            if let (Some(input), false) = (&b.input, b.had_arguments) {
                out.push(Event::Delta {
                    index: b.index,
                    delta: Delta::Arguments(input.to_string()),
                });
            }
            out.push(Event::BlockStop { index: b.index });
        }
    }
}

impl StreamDecoder for Decoder {
    fn event(&mut self, _name: &str, data: &str, out: &mut Vec<Event>) -> Result<(), Error> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let ev: AStreamEvent = serde_json::from_str(data)
            .map_err(|e| Error::Upstream(format!("{NAME} stream event: {e}")))?;
        match ev.kind.as_str() {
            "message_start" => {
                let m = ev.message;
                if !self.started {
                    self.started = true;
                    out.push(Event::Start {
                        id: m.as_ref().and_then(|m| m.id.clone()).unwrap_or_default(),
                        model: m.as_ref().and_then(|m| m.model.clone()).unwrap_or_default(),
                    });
                }
                if let Some(u) = m.as_ref().and_then(|m| m.usage.as_ref()) {
                    merge_usage(&mut self.usage, u);
                    out.push(Event::Usage(self.usage));
                }
            }
            "content_block_start" => {
                if let (Some(i), Some(b)) = (ev.index, ev.content_block) {
                    self.start_block(i, b, out);
                }
            }
            "content_block_delta" => {
                let (Some(i), Some(d)) = (ev.index, ev.delta) else {
                    return Ok(());
                };
                let Some(b) = self.open.get_mut(&i) else {
                    return Ok(());
                };
                let index = b.index;
                let delta = match d.kind.as_deref() {
                    Some("text_delta") => d.text.map(Delta::Text),
                    Some("thinking_delta") => d.thinking.map(Delta::Thinking),
                    Some("signature_delta") => d.signature.map(|value| {
                        Delta::Signature(Opaque {
                            family: Family::Anthropic,
                            value,
                        })
                    }),
                    Some("input_json_delta") => d.partial_json.filter(|p| !p.is_empty()).map(|p| {
                        b.had_arguments = true;
                        Delta::Arguments(p)
                    }),
                    // citations_delta and what comes tomorrow.
                    _ => None,
                };
                if let Some(delta) = delta {
                    out.push(Event::Delta { index, delta });
                }
            }
            "content_block_stop" => {
                if let Some(i) = ev.index {
                    self.stop_block(i, out);
                }
            }
            "message_delta" => {
                if let Some(d) = ev.delta {
                    if d.stop_reason.is_some() {
                        out.push(Event::Stop(stop_of(
                            d.stop_reason.as_deref(),
                            d.stop_sequence,
                        )));
                    }
                }
                if let Some(u) = &ev.usage {
                    merge_usage(&mut self.usage, u);
                    out.push(Event::Usage(self.usage));
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let message = ev
                    .error
                    .as_ref()
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the upstream reported an error")
                    .to_string();
                out.push(Event::Error { message });
            }
            // ping, and event types added tomorrow.
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        let mut open: Vec<usize> = self.open.keys().copied().collect();
        open.sort_by_key(|k| self.open.get(k).map(|b| b.index));
        for k in open {
            self.stop_block(k, out);
        }
    }

    fn complete(&self) -> bool {
        self.done
    }
}

// ---------------------------------------------------------------------------
// Stream encoder
// ---------------------------------------------------------------------------

/// Whether streamed JSON text has formed one whole value: a depth and
/// in-string state machine, fed fragment by fragment, never reparsing.
#[derive(Debug, Default, Clone, Copy)]
struct JsonProgress {
    depth: u32,
    in_string: bool,
    escape: bool,
    opened: bool,
}

impl JsonProgress {
    fn feed(&mut self, s: &str) {
        for c in s.chars() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if c == '\\' {
                    self.escape = true;
                } else if c == '"' {
                    self.in_string = false;
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => {
                    self.depth += 1;
                    self.opened = true;
                }
                '}' | ']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    fn complete(&self) -> bool {
        self.opened && self.depth == 0 && !self.in_string
    }
}

/// An intermediate block as the encoder knows it.
#[derive(Debug, Clone)]
struct IrBlock {
    block: Block,
}

/// The Anthropic block being written.
#[derive(Debug)]
struct Live {
    ir: usize,
    index: usize,
    json: Option<JsonProgress>,
}

/// Writes an Anthropic event stream for an Anthropic client: one live block
/// at a time, contiguous indices, everything held back (usage, stop) until
/// [`StreamEncoder::finish`].
#[derive(Debug)]
pub struct Encoder {
    opts: EncoderOptions,
    id: String,
    message_started: bool,
    start_seen: bool,
    blocks: HashMap<usize, IrBlock>,
    live: Option<Live>,
    next_index: usize,
    /// IR blocks whose Anthropic block was closed for good (a tool call
    /// closed early): their later events are passed over.
    closed_tools: Vec<usize>,
    queue: VecDeque<Event>,
    /// At the finish every live block may close.
    finishing: bool,
    usage: Option<Usage>,
    stop: Option<StopReason>,
    saw_tool: bool,
    done: bool,
    /// The input estimate was supplied.
    estimated: bool,
}

impl Encoder {
    pub fn new(opts: EncoderOptions) -> Encoder {
        Encoder {
            id: opts.id.clone(),
            opts,
            message_started: false,
            start_seen: false,
            blocks: HashMap::new(),
            live: None,
            next_index: 0,
            closed_tools: Vec::new(),
            queue: VecDeque::new(),
            finishing: false,
            usage: None,
            stop: None,
            saw_tool: false,
            done: false,
            estimated: false,
        }
    }

    /// `message_start`, written lazily so that usage the upstream reports
    /// at its own start is in it.
    fn message_start(&mut self, out: &mut Vec<u8>) {
        if self.message_started {
            return;
        }
        self.message_started = true;
        let (input, read, write) = match self.usage {
            Some(u) => (u.input, u.cache_read, u.cache_write),
            None => (self.opts.input_estimate, 0, 0),
        };
        let ev = EventOut {
            message: Some(MessageOut {
                content: &[],
                id: &self.id,
                model: &self.opts.model,
                role: "assistant",
                stop_reason: None,
                stop_sequence: None,
                kind: "message",
                usage: UsageOut {
                    cache_creation_input_tokens: write,
                    cache_read_input_tokens: read,
                    input_tokens: input,
                    output_tokens: 1,
                },
            }),
            ..EventOut::of("message_start")
        };
        sse(out, Some("message_start"), &ev);
    }

    fn close_live(&mut self, out: &mut Vec<u8>) {
        if let Some(l) = self.live.take() {
            if l.json.is_some() {
                self.closed_tools.push(l.ir);
            }
            let ev = EventOut {
                index: Some(l.index),
                ..EventOut::of("content_block_stop")
            };
            sse(out, Some("content_block_stop"), &ev);
        }
    }

    fn live_closable(&self) -> bool {
        match &self.live {
            None => true,
            Some(l) => self.finishing || l.json.is_none_or(|j| j.complete()),
        }
    }

    /// Makes IR block `ir` the live Anthropic block, opening it shaped by
    /// its first delta. False when another block must finish first.
    fn activate(&mut self, ir: usize, first: Option<&Delta>, out: &mut Vec<u8>) -> bool {
        if self.live.as_ref().is_some_and(|l| l.ir == ir) {
            return true;
        }
        if !self.live_closable() {
            return false;
        }
        self.close_live(out);
        let Some(b) = self.blocks.get(&ir) else {
            return false;
        };
        let index = self.next_index;
        self.next_index += 1;
        // What the block borrows: redacted data, a call id as the client
        // gets it.
        let owned = match (&b.block, first) {
            (Block::Thinking { redacted: true, .. }, Some(Delta::Signature(s))) => {
                envelope::wrap(s, Family::Anthropic)
            }
            (Block::ToolCall { id, signature, .. }, _) => call_id_for_client(id, signature),
            _ => String::new(),
        };
        let empty = Value::Object(Map::new());
        let (content_block, json_state) = match &b.block {
            Block::Text => (
                BlockOut {
                    text: Some(Text("")),
                    kind: "text",
                    ..BlockOut::default()
                },
                None,
            ),
            Block::Thinking { redacted: true, .. } => (
                BlockOut {
                    data: Some(&owned),
                    kind: "redacted_thinking",
                    ..BlockOut::default()
                },
                None,
            ),
            Block::Thinking { .. } => (
                BlockOut {
                    signature: Some(""),
                    thinking: Some(Text("")),
                    kind: "thinking",
                    ..BlockOut::default()
                },
                None,
            ),
            Block::ToolCall { name, .. } => (
                BlockOut {
                    id: Some(&owned),
                    input: Some(&empty),
                    name: Some(name),
                    kind: "tool_use",
                    ..BlockOut::default()
                },
                Some(JsonProgress::default()),
            ),
        };
        let ev = EventOut {
            content_block: Some(content_block),
            index: Some(index),
            ..EventOut::of("content_block_start")
        };
        sse(out, Some("content_block_start"), &ev);
        if json_state.is_some() {
            self.saw_tool = true;
        }
        self.live = Some(Live {
            ir,
            index,
            json: json_state,
        });
        true
    }

    fn is_live(&self, ir: usize) -> bool {
        self.live.as_ref().is_some_and(|l| l.ir == ir)
    }

    fn handle(&mut self, event: Event, out: &mut Vec<u8>) {
        let ir = match &event {
            Event::BlockStart { index, .. }
            | Event::Delta { index, .. }
            | Event::BlockStop { index } => *index,
            _ => return,
        };
        // Order across blocks is kept: once something waits, everything
        // for a block other than the live one waits behind it.
        if !self.queue.is_empty() && !self.is_live(ir) {
            self.queue.push_back(event);
            return;
        }
        match event {
            Event::BlockStart { index, block } => {
                let is_tool = matches!(block, Block::ToolCall { .. });
                self.blocks.insert(index, IrBlock { block });
                // A tool call opens at once (its id and name are known and
                // it must appear even without arguments); text and thinking
                // open with their first delta.
                if is_tool && !self.activate(index, None, out) {
                    self.queue.push_back(Event::BlockStart {
                        index,
                        block: self
                            .blocks
                            .get(&index)
                            .map(|b| b.block.clone())
                            .unwrap_or(Block::Text),
                    });
                }
            }
            Event::Delta { index, delta } => {
                if self.closed_tools.contains(&index) || !self.blocks.contains_key(&index) {
                    return;
                }
                if !self.activate(index, Some(&delta), out) {
                    self.queue.push_back(Event::Delta { index, delta });
                    return;
                }
                self.write_delta(delta, out);
            }
            Event::BlockStop { index } if self.is_live(index) => {
                self.close_live(out);
                self.drain(out);
            }
            _ => {}
        }
    }

    fn write_delta(&mut self, delta: Delta, out: &mut Vec<u8>) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let index = live.index;
        let wrapped;
        let d = match &delta {
            Delta::Text(t) | Delta::Thinking(t) => {
                if !t.is_empty() {
                    let (field, kind) = match delta {
                        Delta::Text(_) => ("text", "text_delta"),
                        _ => ("thinking", "thinking_delta"),
                    };
                    text_delta(out, index, field, kind, t);
                }
                return;
            }
            Delta::Signature(s) => {
                let redacted = self
                    .blocks
                    .get(&live.ir)
                    .is_some_and(|b| matches!(b.block, Block::Thinking { redacted: true, .. }));
                if redacted {
                    // Its data went out with its start.
                    return;
                }
                wrapped = envelope::wrap(s, Family::Anthropic);
                BlockOut {
                    signature: Some(&wrapped),
                    kind: "signature_delta",
                    ..BlockOut::default()
                }
            }
            Delta::Arguments(a) => {
                if a.is_empty() {
                    return;
                }
                match live.json.as_mut() {
                    Some(j) => j.feed(a),
                    None => return,
                }
                BlockOut {
                    partial_json: Some(a),
                    kind: "input_json_delta",
                    ..BlockOut::default()
                }
            }
        };
        let ev = EventOut {
            delta: Some(d),
            index: Some(index),
            ..EventOut::of("content_block_delta")
        };
        sse(out, Some("content_block_delta"), &ev);
    }

    /// Replays what waited, in order, now that the live block is gone.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while self.live.is_none() && !self.queue.is_empty() {
            let waiting: Vec<Event> = self.queue.drain(..).collect();
            for e in waiting {
                self.handle(e, out);
            }
        }
    }
}

/// Writes a `content_block_delta` of text or thinking: the bulk of a
/// stream, so written straight, not through serde. The bytes are those
/// [`sse`] writes for the same [`EventOut`] (the tests compare them).
fn text_delta(out: &mut Vec<u8>, index: usize, field: &str, kind: &str, text: &str) {
    use std::io::Write as _;
    out.reserve(text.len() + 120);
    out.extend_from_slice(b"event: content_block_delta\ndata: {\"delta\":{\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":\"");
    crate::json::escape(out, text);
    out.extend_from_slice(b"\",\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "\"}},\"index\":{index},\"type\":\"content_block_delta\"}}\n\n"
    );
}

impl StreamEncoder for Encoder {
    fn event(&mut self, event: Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            Event::Start { id, .. } => {
                if !self.start_seen {
                    self.start_seen = true;
                    if !id.is_empty() {
                        self.id = id;
                    }
                }
            }
            Event::Usage(u) => self.usage = Some(u),
            Event::Stop(s) => self.stop = Some(s),
            Event::Error { message } => self.fail(&message, out),
            e @ (Event::BlockStart { .. } | Event::Delta { .. } | Event::BlockStop { .. }) => {
                self.message_start(out);
                self.handle(e, out);
            }
        }
    }

    fn finish(&mut self, fallback_usage: Option<Usage>, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.message_start(out);
        self.finishing = true;
        loop {
            self.close_live(out);
            if self.queue.is_empty() {
                break;
            }
            self.drain(out);
        }
        self.done = true;
        let usage = self.usage.or(fallback_usage).unwrap_or(Usage {
            input: self.opts.input_estimate,
            ..Usage::default()
        });
        self.usage = Some(usage);
        let stop = self.stop.clone().unwrap_or(if self.saw_tool {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        });
        let (stop_reason, stop_sequence) = stop_json(&stop);
        let ev = MessageDeltaOut {
            delta: StopOut {
                stop_reason,
                stop_sequence,
            },
            kind: "message_delta",
            usage: usage_out(&usage),
        };
        sse(out, Some("message_delta"), &ev);
        sse(out, Some("message_stop"), &EventOut::of("message_stop"));
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        sse(out, Some("error"), &error_json(ErrorType::Api, message));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn wants_input_estimate(&self, next: Option<&Event>) -> bool {
        // Only `message_start` says input before the end, and it is
        // written with the first block event or the finish.
        !self.estimated
            && !self.message_started
            && !self.done
            && self.usage.is_none()
            && next.is_none_or(|e| {
                matches!(
                    e,
                    Event::BlockStart { .. } | Event::Delta { .. } | Event::BlockStop { .. }
                )
            })
    }

    fn set_input_estimate(&mut self, estimate: u64) {
        self.estimated = true;
        self.opts.input_estimate = estimate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat;
    use proptest::prelude::*;

    #[test]
    fn a_written_answer_is_what_serde_writes() {
        let long = "a \"b\"\\ c\n\u{1}é🦀 ".repeat(20);
        let input = json!({"city": "Paris", "n": 1});
        let content = [
            BlockOut {
                signature: Some("sig"),
                thinking: Some(Text(&long)),
                kind: "thinking",
                ..BlockOut::default()
            },
            BlockOut {
                data: Some("opaque"),
                kind: "redacted_thinking",
                ..BlockOut::default()
            },
            BlockOut {
                text: Some(Text(&long)),
                kind: "text",
                ..BlockOut::default()
            },
            BlockOut {
                id: Some("toolu_1"),
                input: Some(&input),
                name: Some("weather"),
                kind: "tool_use",
                ..BlockOut::default()
            },
            BlockOut {
                text: Some(Text("short")),
                kind: "text",
                ..BlockOut::default()
            },
        ];
        for blocks in [&content[..], &content[2..3], &[]] {
            let answer = |content| MessageOut {
                content,
                id: "msg_1",
                model: "claude",
                role: "assistant",
                stop_reason: Some("end_turn"),
                stop_sequence: None,
                kind: "message",
                usage: UsageOut {
                    cache_creation_input_tokens: 1,
                    cache_read_input_tokens: 2,
                    input_tokens: 3,
                    output_tokens: 4,
                },
            };
            let ours = answer_json(blocks, &answer(&[]));
            let theirs = serde_json::to_vec(&answer(blocks)).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }

    #[test]
    fn a_written_text_delta_is_what_serde_writes() {
        let long = "a \"b\"\\ c\n\u{1}é🦀 ".repeat(20);
        for t in ["tok1 ", "", "\"", long.as_str()] {
            for (field, kind) in [("text", "text_delta"), ("thinking", "thinking_delta")] {
                let mut ours = Vec::new();
                text_delta(&mut ours, 3, field, kind, t);
                let d = BlockOut {
                    text: (field == "text").then_some(Text(t)),
                    thinking: (field == "thinking").then_some(Text(t)),
                    kind,
                    ..BlockOut::default()
                };
                let ev = EventOut {
                    delta: Some(d),
                    index: Some(3),
                    ..EventOut::of("content_block_delta")
                };
                let mut theirs = Vec::new();
                sse(&mut theirs, Some("content_block_delta"), &ev);
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    String::from_utf8(theirs).unwrap()
                );
            }
        }
    }

    /// What Claude Code sends a model it does not know, in strict mode: a
    /// system message in the conversation, context management, deferred
    /// tools, `output_config.effort` and `thinking.display`.
    #[test]
    fn claude_code_requests_decode_strictly() {
        let body = json!({
            "model": "m", "max_tokens": 32000, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
            ],
            "tools": [
                {"name": "Read", "description": "read", "input_schema": {"type": "object"}},
                {"name": "DeferredToolPlaceholder", "input_schema": {"type": "object"}, "defer_loading": true},
            ],
            "thinking": {"type": "adaptive", "display": "omitted"},
            "output_config": {"effort": "high"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "metadata": {"user_id": "u1"},
        });
        let mut lossy = Lossy::strict();
        let req = decode_request(body.to_string().as_bytes(), &mut lossy).unwrap();
        assert!(lossy.dropped.is_empty());
        assert_eq!(
            req.system,
            vec![
                Part::Text {
                    text: "You are Claude Code.".into()
                },
                Part::Text {
                    text: "# Environment".into()
                },
            ]
        );
        assert_eq!(req.messages.len(), 1);
        assert_eq!(req.tools.len(), 1);
        assert_eq!(req.tools[0].name, "Read");
        let r = req.reasoning.unwrap();
        assert!(r.enabled);
        assert_eq!(r.effort, Some(Effort::High));
        // Anything else in output_config is named.
        let other = json!({"model": "m", "messages": [], "output_config": {"task_budget": 5}});
        let e = decode_request(other.to_string().as_bytes(), &mut Lossy::strict()).unwrap_err();
        assert!(e.to_string().contains("output_config.task_budget"), "{e}");
    }

    fn decode(v: Value) -> Request {
        decode_request(v.to_string().as_bytes(), &mut Lossy::strict()).unwrap()
    }

    fn encode(r: &Request) -> Value {
        serde_json::from_slice(&encode_request(r, &mut Lossy::strict()).unwrap()).unwrap()
    }

    fn opts() -> EncoderOptions {
        EncoderOptions {
            model: "claude-client".into(),
            id: "msg_gw".into(),
            created: 0,
            input_estimate: 42,
            include_usage: false,
            sse: true,
        }
    }

    /// (event name, payload) of every frame.
    fn frames(out: &[u8]) -> Vec<(String, Value)> {
        let s = std::str::from_utf8(out).unwrap();
        assert!(s.ends_with("\n\n"));
        s.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (name, data) = f.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_string();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(v["type"], json!(name), "event name matches type");
                (name, v)
            })
            .collect()
    }

    /// Checks the grammar an SDK relies on and returns the accumulated
    /// content blocks (tool inputs parsed).
    fn well_formed(out: &[u8]) -> Vec<Value> {
        let f = frames(out);
        assert_eq!(f[0].0, "message_start");
        assert_eq!(f[f.len() - 2].0, "message_delta");
        assert_eq!(f[f.len() - 1].0, "message_stop");
        let mut blocks: Vec<Value> = Vec::new();
        let mut partial = String::new();
        let mut live: Option<usize> = None;
        for (name, v) in &f[1..f.len() - 2] {
            let i = v["index"].as_u64().unwrap() as usize;
            match name.as_str() {
                "content_block_start" => {
                    assert_eq!(live, None, "blocks do not overlap");
                    assert_eq!(i, blocks.len(), "indices are contiguous");
                    live = Some(i);
                    blocks.push(v["content_block"].clone());
                    partial.clear();
                }
                "content_block_delta" => {
                    assert_eq!(live, Some(i));
                    let b = &mut blocks[i];
                    let d = &v["delta"];
                    match (b["type"].as_str().unwrap(), d["type"].as_str().unwrap()) {
                        ("text", "text_delta") => {
                            b["text"] = json!(format!(
                                "{}{}",
                                b["text"].as_str().unwrap(),
                                d["text"].as_str().unwrap()
                            ))
                        }
                        ("thinking", "thinking_delta") => {
                            b["thinking"] = json!(format!(
                                "{}{}",
                                b["thinking"].as_str().unwrap(),
                                d["thinking"].as_str().unwrap()
                            ))
                        }
                        ("thinking", "signature_delta") => b["signature"] = d["signature"].clone(),
                        ("tool_use", "input_json_delta") => {
                            partial.push_str(d["partial_json"].as_str().unwrap())
                        }
                        (bt, dt) => panic!("{dt} in a {bt} block"),
                    }
                }
                "content_block_stop" => {
                    assert_eq!(live, Some(i));
                    if blocks[i]["type"] == "tool_use" && !partial.is_empty() {
                        blocks[i]["input"] =
                            serde_json::from_str(&partial).unwrap_or(json!({"unparsed": partial}));
                    }
                    live = None;
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(live, None, "every block is closed");
        blocks
    }

    #[test]
    fn decodes_a_full_request() {
        let mut lossy = Lossy::lenient();
        let body = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 2048,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "Be careful."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "let me", "signature": "EqQB"},
                    {"type": "redacted_thinking", "data": "RED"},
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [
                        {"type": "text", "text": "no such file"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "BBBB"}}]}
                ]}
            ],
            "tools": [{"name": "read", "description": "Read", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 1500},
            "stop_sequences": ["STOP"],
            "top_k": 5,
            "metadata": {"user_id": "user-7"},
            "stream": true
        });
        let r = decode_request(body.to_string().as_bytes(), &mut lossy).unwrap();
        assert_eq!(
            lossy.dropped,
            vec!["tools[1]".to_string(), "messages[0].content[3]".to_string()]
        );
        assert!(decode_request(body.to_string().as_bytes(), &mut Lossy::strict()).is_err());
        assert_eq!(r.system.len(), 2);
        assert_eq!(
            r.messages[0].content[1],
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            })
        );
        assert_eq!(
            r.messages[0].content[2],
            Part::Image(Image::Url {
                url: "https://x/i.png".into()
            })
        );
        assert_eq!(
            r.messages[1].content[0],
            Part::Thinking {
                text: "let me".into(),
                signature: Some(Opaque {
                    family: Family::Anthropic,
                    value: "EqQB".into()
                }),
                redacted: false,
                id: None,
            }
        );
        assert!(
            matches!(&r.messages[1].content[1], Part::Thinking { redacted: true, signature: Some(s), .. } if s.value == "RED")
        );
        assert!(
            matches!(&r.messages[1].content[2], Part::ToolCall { arguments, .. } if arguments == r#"{"path":"a"}"#)
        );
        let Part::ToolResult {
            call_id,
            name,
            content,
            is_error,
        } = &r.messages[2].content[0]
        else {
            panic!()
        };
        assert_eq!(
            (call_id.as_str(), name.as_deref(), *is_error, content.len()),
            ("toolu_1", Some("read"), true, 2)
        );
        assert_eq!(r.tool_choice, Some(ToolChoice::Required));
        assert_eq!(r.parallel_tool_calls, Some(false));
        assert_eq!(r.reasoning.as_ref().and_then(|r| r.budget()), Some(1500));
        assert_eq!(
            (r.top_k, r.user.as_deref(), r.stream),
            (Some(5), Some("user-7"), true)
        );
        assert_eq!(r.stop, vec!["STOP".to_string()]);
    }

    #[test]
    fn requests_round_trip() {
        let corpus = [
            json!({"model": "claude", "max_tokens": 1024, "system": "sys",
                   "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                {"role": "user", "content": "bye"}],
                   "temperature": 0.3, "top_p": 0.9, "top_k": 10, "stop_sequences": ["x"],
                   "metadata": {"user_id": "u"}, "stream": true}),
            json!({"model": "claude", "max_tokens": 8000,
                   "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                   "thinking": {"type": "enabled", "budget_tokens": 4000},
                   "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
                   "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
                   "messages": [
                       {"role": "user", "content": [{"type": "text", "text": "go"},
                           {"type": "image", "source": {"type": "url", "url": "https://i/p.png"}}]},
                       {"role": "assistant", "content": [
                           {"type": "thinking", "thinking": "t", "signature": "sig"},
                           {"type": "redacted_thinking", "data": "r"},
                           {"type": "text", "text": "calling"},
                           {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}]},
                       {"role": "user", "content": [
                           {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok", "is_error": true},
                           {"type": "text", "text": "more"}]}]}),
            json!({"model": "claude", "max_tokens": 64000, "thinking": {"type": "adaptive"},
                   "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "auto"},
                   "tools": [{"name": "g", "input_schema": {"type": "object"}}]}),
            json!({"model": "claude", "max_tokens": 10, "thinking": {"type": "disabled"},
                   "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                       "content": [{"type": "text", "text": "a"}, {"type": "image", "source":
                       {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]}]}),
        ];
        for x in corpus {
            assert_eq!(encode(&decode(x.clone())), x);
        }
    }

    #[test]
    fn encoding_merges_orders_and_filters() {
        let foreign = Opaque {
            family: Family::Gemini,
            value: "g".into(),
        };
        let mine = Opaque {
            family: Family::Anthropic,
            value: "a".into(),
        };
        let req = Request {
            model: "claude".into(),
            messages: vec![
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![Part::Text { text: "q".into() }],
                },
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![Part::Text { text: "  ".into() }],
                },
                Message {
                    role: Role::Assistant,
                    origins: Vec::new(),
                    content: vec![
                        Part::Text {
                            text: "I will call.".into(),
                        },
                        Part::Thinking {
                            text: "x".into(),
                            signature: Some(foreign),
                            redacted: false,
                            id: None,
                        },
                        Part::Thinking {
                            text: "y".into(),
                            signature: Some(mine),
                            redacted: false,
                            id: None,
                        },
                        Part::Thinking {
                            text: "unsigned".into(),
                            signature: None,
                            redacted: false,
                            id: None,
                        },
                        Part::ToolCall {
                            id: "functions.f:0".into(),
                            name: "f".into(),
                            arguments: String::new(),
                            signature: None,
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![Part::Text { text: "".into() }],
                },
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![
                        Part::Text {
                            text: "also".into(),
                        },
                        Part::ToolResult {
                            call_id: "functions.f:0".into(),
                            name: None,
                            content: vec![Part::Text { text: "r".into() }],
                            is_error: false,
                        },
                    ],
                },
            ],
            reasoning: Some(Reasoning {
                enabled: true,
                effort: Some(Effort::High),
                budget_tokens: None,
                include_thoughts: false,
            }),
            ..Request::default()
        };
        let v = encode(&req);
        assert_eq!(v["max_tokens"], json!(4096));
        assert_eq!(
            v["thinking"],
            json!({"type": "enabled", "budget_tokens": 4095})
        );
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "y", "signature": "a"},
                    {"type": "text", "text": "I will call."},
                    {"type": "tool_use", "id": "functions_f_0", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "functions_f_0", "content": "r"},
                    {"type": "text", "text": "also"}]}
            ])
        );
        // The same loop without its thinking: no thinking is asked for.
        let mut unsigned = req.clone();
        unsigned.messages[2].content.remove(2);
        let v = encode(&unsigned);
        assert!(v.get("thinking").is_none());
        assert_eq!(v["messages"][1]["content"][0]["type"], json!("text"));
        let mut strict = req.clone();
        strict.seed = Some(1);
        assert!(encode_request(&strict, &mut Lossy::strict()).is_err());
        strict.seed = None;
        strict.response_format = Some(ResponseFormat::JsonObject);
        let mut l = Lossy::lenient();
        encode_request(&strict, &mut l).unwrap();
        assert_eq!(l.dropped, vec!["response_format".to_string()]);
    }

    #[test]
    fn count_tokens_bodies() {
        let req = decode(
            json!({"model": "claude", "system": "s", "messages": [{"role": "user", "content": "hi"}],
                                "tools": [{"name": "f", "input_schema": {"type": "object"}}]}),
        );
        let v: Value =
            serde_json::from_slice(&encode_count_request(&req, &mut Lossy::strict()).unwrap())
                .unwrap();
        assert_eq!(
            v,
            json!({"model": "claude", "system": "s", "messages": [{"role": "user", "content": "hi"}],
                             "tools": [{"name": "f", "input_schema": {"type": "object"}}]})
        );
        assert_eq!(decode_count_response(br#"{"input_tokens": 17}"#), Ok(17));
        assert!(decode_count_response(b"{}").is_err());
        assert_eq!(encode_count_response(5), br#"{"input_tokens":5}"#.to_vec());
    }

    #[test]
    fn whole_answers() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                        {"type": "text", "text": "done"},
                        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "stop_sequence", "stop_sequence": "END",
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 6, "output_tokens": 3}});
        let r = decode_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.stop, StopReason::StopSequence(Some("END".into())));
        assert_eq!(
            r.usage,
            Some(Usage {
                input: 10,
                cache_read: 6,
                cache_write: 4,
                output: 3,
                reasoning: 0
            })
        );
        let back: Value = serde_json::from_slice(&encode_response(
            &r,
            &EncoderOptions {
                model: "claude".into(),
                ..opts()
            },
        ))
        .unwrap();
        assert_eq!(back, body, "an Anthropic answer survives the round trip");
        for (raw, want) in [
            ("max_tokens", StopReason::MaxTokens),
            ("tool_use", StopReason::ToolUse),
            ("refusal", StopReason::ContentFilter),
            ("pause_turn", StopReason::Other("pause_turn".into())),
        ] {
            assert_eq!(stop_of(Some(raw), None), want);
            assert_eq!(stop_json(&want).0, raw);
        }
        // State from another family is enveloped; a call's own signature rides in its id.
        let g = Opaque {
            family: Family::Gemini,
            value: "gsig".into(),
        };
        let resp = Response {
            id: String::new(),
            model: "gemini".into(),
            created: None,
            usage: None,
            stop: StopReason::Other("FINISH_REASON_UNSPECIFIED".into()),
            content: vec![
                Part::Thinking {
                    text: "th".into(),
                    signature: Some(g.clone()),
                    redacted: false,
                    id: None,
                },
                Part::ToolCall {
                    id: "call_0".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                    signature: Some(g.clone()),
                },
            ],
        };
        let v: Value = serde_json::from_slice(&encode_response(&resp, &opts())).unwrap();
        assert_eq!(v["id"], json!("msg_gw"));
        assert_eq!(v["stop_reason"], json!("end_turn"));
        assert_eq!(v["usage"]["input_tokens"], json!(42));
        let sig = v["content"][0]["signature"].as_str().unwrap();
        assert_eq!(envelope::unwrap(sig, Family::Anthropic), g);
        // The client sends the turn back: both come back as they were.
        let req = decode(json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": v["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": v["content"][1]["id"], "content": "r"}]}]}));
        assert!(
            matches!(&req.messages[1].content[0], Part::Thinking { signature: Some(s), .. } if *s == g)
        );
        assert!(
            matches!(&req.messages[1].content[1], Part::ToolCall { id, signature: Some(s), .. } if id == "call_0" && *s == g)
        );
        assert!(
            matches!(&req.messages[2].content[0], Part::ToolResult { call_id, name: Some(n), .. } if call_id == "call_0" && n == "f")
        );
    }

    fn decode_stream(events: &[Value]) -> (Vec<Event>, bool) {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for e in events {
            d.event(e["type"].as_str().unwrap(), &e.to_string(), &mut out)
                .unwrap();
        }
        d.finish(&mut out);
        (out, d.complete())
    }

    #[test]
    fn stream_decoder_golden() {
        let (events, complete) = decode_stream(&[
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                   "content": [], "stop_reason": null, "stop_sequence": null,
                   "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30, "output_tokens": 1}}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\": 1}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {"whole": true}}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 50}}),
            json!({"type": "message_stop"}),
        ]);
        assert!(complete);
        let sig = Opaque {
            family: Family::Anthropic,
            value: "EqQB".into(),
        };
        assert_eq!(
            events,
            vec![
                Event::Start {
                    id: "msg_1".into(),
                    model: "claude".into()
                },
                Event::Usage(Usage {
                    input: 12,
                    cache_read: 30,
                    cache_write: 0,
                    output: 1,
                    reasoning: 0
                }),
                Event::BlockStart {
                    index: 0,
                    block: Block::Thinking {
                        id: None,
                        redacted: false
                    }
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Thinking("Hmm".into())
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Signature(sig)
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    block: Block::ToolCall {
                        id: "toolu_1".into(),
                        name: "f".into(),
                        signature: None
                    }
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Arguments("{\"a\": 1}".into())
                },
                Event::BlockStop { index: 1 },
                Event::BlockStart {
                    index: 2,
                    block: Block::ToolCall {
                        id: "toolu_2".into(),
                        name: "g".into(),
                        signature: None
                    }
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Arguments("{\"whole\":true}".into())
                },
                Event::BlockStop { index: 2 },
                Event::Stop(StopReason::ToolUse),
                Event::Usage(Usage {
                    input: 12,
                    cache_read: 30,
                    cache_write: 0,
                    output: 50,
                    reasoning: 0
                }),
            ]
        );
        // Cut: no message_stop, an open block still closes; errors surface.
        let (events, complete) = decode_stream(&[
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ]);
        assert!(!complete);
        assert_eq!(
            events[events.len() - 2..],
            [
                Event::Error {
                    message: "Overloaded".into()
                },
                Event::BlockStop { index: 0 }
            ]
        );
        let (events, _) = decode_stream(&[
            json!({"type": "message_start", "message": {"id": "m", "model": "c"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "##"}, "usage": {"output_tokens": 3}}),
        ]);
        assert_eq!(
            events[1],
            Event::Stop(StopReason::StopSequence(Some("##".into())))
        );
    }

    fn run(events: Vec<Event>, fallback: Option<Usage>) -> (Vec<u8>, Option<Usage>) {
        let mut e = Encoder::new(opts());
        let mut out = Vec::new();
        for ev in events {
            e.event(ev, &mut out);
        }
        e.finish(fallback, &mut out);
        e.finish(fallback, &mut out);
        (out, e.usage())
    }

    fn tool(index: usize, id: &str) -> Event {
        Event::BlockStart {
            index,
            block: Block::ToolCall {
                id: id.into(),
                name: "f".into(),
                signature: None,
            },
        }
    }

    fn args(index: usize, s: &str) -> Event {
        Event::Delta {
            index,
            delta: Delta::Arguments(s.into()),
        }
    }

    #[test]
    fn stream_encoder_golden() {
        let (out, usage) = run(
            vec![
                Event::Start {
                    id: "chatcmpl-1".into(),
                    model: "gpt".into(),
                },
                Event::BlockStart {
                    index: 0,
                    block: Block::Thinking {
                        id: None,
                        redacted: false,
                    },
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Thinking("hm".into()),
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Signature(Opaque {
                        family: Family::Anthropic,
                        value: "s".into(),
                    }),
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    block: Block::Text,
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Text("Hi".into()),
                },
                Event::BlockStop { index: 1 },
                tool(2, "call_1"),
                args(2, "{\"a\":"),
                args(2, "1}"),
                Event::BlockStop { index: 2 },
                Event::Stop(StopReason::ToolUse),
                Event::Usage(Usage {
                    input: 5,
                    cache_read: 1,
                    cache_write: 2,
                    output: 9,
                    reasoning: 0,
                }),
            ],
            None,
        );
        let f: Vec<Value> = frames(&out).into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            f,
            vec![
                json!({"type": "message_start", "message": {"id": "chatcmpl-1", "type": "message", "role": "assistant",
                "model": "claude-client", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 42, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
                json!({"type": "content_block_stop", "index": 1}),
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}}),
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
                json!({"type": "content_block_stop", "index": 2}),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 5, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 1, "output_tokens": 9}}),
                json!({"type": "message_stop"}),
            ]
        );
        assert_eq!(usage.map(|u| u.output), Some(9));
    }

    #[test]
    fn message_start_carries_known_input() {
        let (out, _) = run(
            vec![
                Event::Start {
                    id: "m".into(),
                    model: "c".into(),
                },
                Event::Usage(Usage {
                    input: 7,
                    cache_read: 100,
                    cache_write: 3,
                    output: 1,
                    reasoning: 0,
                }),
                Event::BlockStart {
                    index: 0,
                    block: Block::Text,
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Text("x".into()),
                },
            ],
            None,
        );
        let f = frames(&out);
        assert_eq!(
            f[0].1["message"]["usage"],
            json!({"input_tokens": 7, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 100, "output_tokens": 1})
        );
        // Without any usage the fallback is the final usage.
        let fb = Usage {
            input: 11,
            output: 2,
            ..Usage::default()
        };
        let (out, usage) = run(
            vec![
                Event::Start {
                    id: "m".into(),
                    model: "c".into(),
                },
                Event::Stop(StopReason::MaxTokens),
            ],
            Some(fb),
        );
        let f = frames(&out);
        assert_eq!(f.len(), 3);
        assert_eq!(f[1].1["delta"]["stop_reason"], json!("max_tokens"));
        assert_eq!(f[1].1["usage"]["output_tokens"], json!(2));
        assert_eq!(usage, Some(fb));
    }

    #[test]
    fn interleaved_calls_are_serialised() {
        // An OpenAI chat upstream interleaving two calls and text.
        let events = vec![
            Event::Start {
                id: "c".into(),
                model: "gpt".into(),
            },
            Event::BlockStart {
                index: 0,
                block: Block::Text,
            },
            Event::Delta {
                index: 0,
                delta: Delta::Text("A".into()),
            },
            tool(1, "call_a"),
            tool(2, "call_b"),
            args(2, "{\"b\":"),
            args(1, "{\"a\":"),
            Event::Delta {
                index: 0,
                delta: Delta::Text("B".into()),
            },
            args(2, "2}"),
            args(1, "\"}\"}"),
            tool(3, "call_c"),
            Event::BlockStop { index: 0 },
            Event::BlockStop { index: 1 },
            Event::BlockStop { index: 2 },
            Event::BlockStop { index: 3 },
            Event::Stop(StopReason::ToolUse),
        ];
        let (out, _) = run(events, None);
        let blocks = well_formed(&out);
        assert_eq!(
            blocks,
            vec![
                json!({"type": "text", "text": "A"}),
                json!({"type": "tool_use", "id": "call_a", "name": "f", "input": {"a": "}"}}),
                json!({"type": "tool_use", "id": "call_b", "name": "f", "input": {"b": 2}}),
                json!({"type": "text", "text": "B"}),
                json!({"type": "tool_use", "id": "call_c", "name": "f", "input": {}}),
            ]
        );
        // A complete call may close early so that the next one streams.
        let (out, _) = run(
            vec![
                tool(0, "x"),
                args(0, "{\"q\":[1,{}]}"),
                tool(1, "y"),
                args(1, "{}"),
                args(0, " "),
                Event::BlockStop { index: 1 },
                Event::BlockStop { index: 0 },
            ],
            None,
        );
        let f = frames(&out);
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        // A call cut by max tokens mid-arguments still closes, its text kept.
        let (out, _) = run(
            vec![
                tool(0, "x"),
                args(0, "{\"a\":\"unfini"),
                tool(1, "y"),
                Event::Stop(StopReason::MaxTokens),
            ],
            None,
        );
        let blocks = well_formed(&out);
        assert_eq!(blocks[0]["input"], json!({"unparsed": "{\"a\":\"unfini"}));
        assert_eq!(blocks[1]["id"], json!("y"));
    }

    #[test]
    fn redacted_thinking_and_failure() {
        let (out, _) = run(
            vec![
                Event::BlockStart {
                    index: 0,
                    block: Block::Thinking {
                        id: None,
                        redacted: true,
                    },
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Signature(Opaque {
                        family: Family::OpenAi,
                        value: "enc".into(),
                    }),
                },
                Event::BlockStop { index: 0 },
            ],
            None,
        );
        let f = frames(&out);
        let data = f[1].1["content_block"]["data"].as_str().unwrap();
        assert_eq!(f[1].1["content_block"]["type"], json!("redacted_thinking"));
        assert_eq!(
            envelope::unwrap(data, Family::Anthropic),
            Opaque {
                family: Family::OpenAi,
                value: "enc".into()
            }
        );
        assert_eq!(f[2].0, "content_block_stop");

        let mut e = Encoder::new(opts());
        let mut out = Vec::new();
        e.event(
            Event::Start {
                id: "m".into(),
                model: "c".into(),
            },
            &mut out,
        );
        e.event(tool(0, "x"), &mut out);
        e.fail("upstream reset", &mut out);
        e.finish(None, &mut out);
        let f = frames(&out);
        assert_eq!(
            f.last().unwrap().1,
            json!({"type": "error", "error": {"type": "api_error", "message": "upstream reset"}})
        );
    }

    #[test]
    fn errors_read_and_write() {
        let e = decode_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorType::Overloaded, "Overloaded")
        );
        let e = decode_error(413, b"too big");
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorType::RequestTooLarge, "too big")
        );
        for (k, t) in [
            (ErrorType::InvalidRequest, "invalid_request_error"),
            (ErrorType::RateLimit, "rate_limit_error"),
            (ErrorType::RequestTooLarge, "request_too_large"),
            (ErrorType::Api, "api_error"),
        ] {
            let v: Value = serde_json::from_slice(&encode_error(&ApiError {
                status: 400,
                kind: k,
                message: "m".into(),
            }))
            .unwrap();
            assert_eq!(
                v,
                json!({"type": "error", "error": {"type": t, "message": "m"}})
            );
        }
    }

    proptest! {
        /// However an OpenAI chat upstream interleaves parallel calls and
        /// text, the Anthropic client gets a well-formed stream with every
        /// call's arguments whole.
        #[test]
        fn chat_upstream_to_anthropic_client_is_well_formed(
            n in 1usize..4,
            order in proptest::collection::vec((0usize..5, 0usize..3), 1..50),
        ) {
            let full: Vec<String> = (0..n).map(|i| format!("{{\"k{i}\":\"v{{}}{i}\",\"n\":[{i},{{}}]}}")).collect();
            let mut pos = vec![0usize; n];
            let mut started = vec![false; n];
            let mut chunks = vec![json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})];
            let mut text = String::new();
            for (who, len) in order {
                if who >= n {
                    text.push('t');
                    chunks.push(json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "t"}}]}));
                    continue;
                }
                let end = (pos[who] + len + 1).min(full[who].len());
                let frag = &full[who][pos[who]..end];
                pos[who] = end;
                let mut tc = json!({"index": who, "function": {"arguments": frag}});
                if !started[who] {
                    started[who] = true;
                    tc["id"] = json!(format!("call_{who}"));
                    tc["function"]["name"] = json!("f");
                }
                chunks.push(json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [tc]}}]}));
            }
            for who in 0..n {
                let mut tc = json!({"index": who, "function": {"arguments": &full[who][pos[who]..]}});
                if !started[who] { tc["id"] = json!(format!("call_{who}")); tc["function"]["name"] = json!("f"); }
                chunks.push(json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [tc]}}]}));
            }
            chunks.push(json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
            chunks.push(json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}));
            let mut d = chat::Decoder::default();
            let mut events = Vec::new();
            for c in &chunks { d.event("", &c.to_string(), &mut events).unwrap(); }
            d.event("", "[DONE]", &mut events).unwrap();
            d.finish(&mut events);
            let mut e = Encoder::new(opts());
            let mut out = Vec::new();
            for ev in events { e.event(ev, &mut out); }
            e.finish(None, &mut out);
            let blocks = well_formed(&out);
            let mut got_text = String::new();
            let mut calls = Vec::new();
            for b in &blocks {
                match b["type"].as_str().unwrap() {
                    "text" => got_text.push_str(b["text"].as_str().unwrap()),
                    "tool_use" => calls.push((b["id"].clone(), b["input"].clone())),
                    other => prop_assert!(false, "unexpected {}", other),
                }
            }
            prop_assert_eq!(got_text, text);
            prop_assert_eq!(calls.len(), n);
            for (i, f) in full.iter().enumerate() {
                let want: Value = serde_json::from_str(f).unwrap();
                let id = json!(format!("call_{i}"));
                prop_assert!(calls.contains(&(id, want)));
            }
            let last = frames(&out);
            prop_assert_eq!(&last[last.len() - 2].1["usage"]["output_tokens"], &json!(4));
        }
    }
}
