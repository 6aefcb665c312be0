//! OpenAI Responses (`POST /v1/responses`): requests made of input items,
//! answers made of output items, and the item-event stream Codex CLI and
//! the openai SDKs read.
//!
//! What the gateway does that the API does not say:
//! - It keeps no state: `previous_response_id` cannot be honoured, and the
//!   body it sends to an OpenAI upstream has `store: false` and asks for
//!   `reasoning.encrypted_content` so that reasoning comes back inline.
//! - A reasoning item becomes one [`Part::Thinking`] per summary part, all
//!   with the item's id; the item's `encrypted_content` rides on the last.
//!   Consecutive thinking parts with one id become one item again.
//! - Opaque state of another family (an Anthropic signature, a Gemini
//!   `thoughtSignature`) is carried in a reasoning item's
//!   `encrypted_content` ([`envelope::wrap`]); an Anthropic
//!   `redacted_thinking` block gets an item id starting `rs_redacted_` so
//!   that it comes back as redacted. A function call's own signature
//!   (Gemini) rides in its `call_id` ([`envelope::wrap_call_id`]).
//! - Responses has no error flag on a tool result: an error result's
//!   output is prefixed with `Error: `.
//!
//! Errors use the Chat Completions error shape ([`crate::chat`]).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::envelope;
use crate::error::{ApiError, Error, Lossy};
use crate::ir::{
    Effort, Family, Image, Message, Names, Origin, Part, Path, Reasoning, Request, Response,
    ResponseFormat, Role, StopReason, Tool, ToolChoice, Usage,
};
use crate::stream::{sse, Block, Delta, EncoderOptions, Event, StreamDecoder, StreamEncoder};

pub const NAME: &str = "OpenAI Responses";

/// The target named when a client's field has no place in the
/// intermediate form.
const GATEWAY: &str = "target";

/// Request fields that are only hints and are ignored without a record:
/// `store` (the gateway never stores), `include`, `prompt_cache_key`,
/// `prompt_cache_retention`, `metadata`, `truncation`, `service_tier`,
/// `safety_identifier`, `client_metadata` (Codex's own bookkeeping),
/// `stream_options`, `background: false`,
/// `text.verbosity`, an input item's `id` and `status`, and an image's
/// `detail`.
pub const IGNORED: &[&str] = &[
    "store",
    "client_metadata",
    "include",
    "prompt_cache_key",
    "prompt_cache_retention",
    "metadata",
    "truncation",
    "service_tier",
    "safety_identifier",
    "stream_options",
    "background",
    "text.verbosity",
    "input[].id",
    "input[].status",
    "input[].content[].detail",
];

/// The smallest `max_output_tokens` OpenAI accepts.
const MIN_OUTPUT_TOKENS: u64 = 16;

// ---------------------------------------------------------------------------
// Wire types

/// A Responses request body.
#[derive(Debug, Deserialize)]
struct RequestBody {
    #[serde(default)]
    model: String,
    #[serde(default)]
    instructions: Option<Value>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    reasoning: Option<ReasoningConfig>,
    #[serde(default)]
    text: Option<TextConfig>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ReasoningConfig {
    #[serde(default)]
    effort: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    generate_summary: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct TextConfig {
    #[serde(default)]
    format: Option<TextFormat>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct TextFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
    #[serde(default)]
    description: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A `message` item (also the short `{role, content}` form).
#[derive(Debug, Deserialize)]
struct MessageItem {
    role: String,
    content: Value,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A content part of a message or of a tool output.
#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    image_url: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A `function_call` item.
#[derive(Debug, Deserialize)]
struct FunctionCallItem {
    #[serde(default)]
    id: Option<String>,
    call_id: String,
    name: String,
    #[serde(default)]
    arguments: String,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A `function_call_output` item.
#[derive(Debug, Deserialize)]
struct FunctionCallOutputItem {
    call_id: String,
    output: Value,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A `reasoning` item.
#[derive(Debug, Deserialize)]
struct ReasoningItem {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    summary: Vec<SummaryPart>,
    #[serde(default)]
    content: Option<Vec<SummaryPart>>,
    #[serde(default)]
    encrypted_content: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct SummaryPart {
    #[serde(default)]
    text: String,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A `function` tool.
#[derive(Debug, Deserialize)]
struct FunctionTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A response object (whole answer, and inside stream events).
#[derive(Debug, Default, Deserialize)]
struct ResponseObject {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    created_at: Option<f64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    output: Vec<Value>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(flatten)]
    _extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
    #[serde(flatten)]
    _extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Debug, Default, Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl WireUsage {
    fn to_ir(&self) -> Usage {
        let cached = self
            .input_tokens_details
            .as_ref()
            .map_or(0, |d| d.cached_tokens);
        Usage {
            input: self.input_tokens.saturating_sub(cached),
            cache_read: cached,
            cache_write: 0,
            output: self.output_tokens,
            reasoning: self
                .output_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
        }
    }
}

/// The usage object a Responses client gets.
fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.total_input(),
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.total_input() + u.output,
    })
}

/// One stream event.
#[derive(Debug, Deserialize)]
struct StreamEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    output_index: Option<usize>,
    #[serde(default)]
    content_index: Option<usize>,
    #[serde(default)]
    summary_index: Option<usize>,
    #[serde(default)]
    item: Option<Value>,
    #[serde(default)]
    part: Option<Value>,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    response: Option<ResponseObject>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(flatten)]
    _extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------
// Requests

fn invalid(field: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("invalid '{field}': {e}"))
}

/// A Responses client's names for the settings and fields encoders may
/// refuse (those it has no field for keep the intermediate form's).
const NAMES: Names = Names {
    response_format: "text.format",
    ..Names::IR
};

/// Appends `part` to the last message when it has `role`, else starts one.
fn push_to(messages: &mut Vec<Message>, role: Role, part: Part, at: Origin) {
    match messages.last_mut() {
        Some(m) if m.role == role => m.push(part, at),
        _ => {
            let mut m = Message::new(role, Vec::new());
            m.push(part, at);
            messages.push(m);
        }
    }
}

fn text_of(v: &Value, field: &str) -> Result<String, Error> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                let part: ContentPart = serde_json::from_value(p.clone())
                    .map_err(|e| invalid(format!("{field}[{i}]"), e))?;
                if let Some(t) = part.text {
                    if !out.is_empty() {
                        out.push_str("\n\n");
                    }
                    out.push_str(&t);
                }
            }
            Ok(out)
        }
        Value::Null => Ok(String::new()),
        _ => Err(invalid(field, "expected a string or a list of parts")),
    }
}

/// Message or tool-output content parts of input item `i` (at `names`:
/// `input[i].content` or `input[i].output`) as IR parts with their paths.
fn decode_parts(
    content: &Value,
    i: usize,
    names: &'static [&'static str],
    lossy: &mut Lossy,
) -> Result<Vec<(Part, Path)>, Error> {
    let whole = Path::at(names, &[i, Path::KEY]);
    let parts = match content {
        Value::String(s) => return Ok(vec![(Part::Text { text: s.clone() }, whole)]),
        Value::Array(a) => a,
        Value::Null => return Ok(Vec::new()),
        _ => return Err(invalid(whole, "expected a string or a list of parts")),
    };
    let mut out = Vec::new();
    for (j, raw) in parts.iter().enumerate() {
        let p_path = Path::at(names, &[i, j]);
        let part: ContentPart =
            serde_json::from_value(raw.clone()).map_err(|e| invalid(p_path, e))?;
        match part.kind.as_str() {
            "input_text" | "output_text" | "text" | "summary_text" => {
                lossy.unknown(&part.extra, p_path, &["annotations", "logprobs"])?;
                out.push((
                    Part::Text {
                        text: part.text.unwrap_or_default(),
                    },
                    p_path,
                ));
            }
            "refusal" => out.push((
                Part::Text {
                    text: part.refusal.unwrap_or_default(),
                },
                p_path,
            )),
            "input_image" => {
                lossy.unknown(&part.extra, p_path, &["detail"])?;
                if let Some(url) = part.image_url {
                    out.push((Part::Image(Image::from_url(&url)), p_path));
                } else if part.file_id.is_some() {
                    lossy.drop(
                        p_path.field("file_id"),
                        GATEWAY,
                        "OpenAI file ids cannot be resolved by the gateway",
                    )?;
                } else {
                    return Err(invalid(p_path, "input_image without image_url"));
                }
            }
            other => {
                lossy.drop(
                    p_path,
                    GATEWAY,
                    &format!("content part type '{other}' is not supported"),
                )?;
            }
        }
    }
    Ok(out)
}

fn decode_effort(s: &str) -> Option<Effort> {
    match s {
        "xhigh" => Some(Effort::High),
        _ => Effort::parse(s),
    }
}

pub fn decode_request(body: &[u8], lossy: &mut Lossy) -> Result<Request, Error> {
    let b: RequestBody = serde_json::from_slice(body)
        .map_err(|e| Error::Invalid(format!("invalid request body: {e}")))?;
    lossy.unknown(&b.extra, "", IGNORED)?;
    let mut req = Request {
        names: NAMES,
        model: b.model,
        stream: b.stream.unwrap_or(false),
        user: b.user,
        parallel_tool_calls: b.parallel_tool_calls,
        max_tokens: b.max_output_tokens,
        temperature: b.temperature,
        top_p: b.top_p,
        ..Default::default()
    };
    if let Some(instr) = &b.instructions {
        let text = text_of(instr, "instructions")?;
        if !text.is_empty() {
            req.system.push(Part::Text { text });
            req.system_origins.push(Path::at(&["instructions"], &[]));
        }
    }
    if b.previous_response_id.is_some() {
        lossy.drop(
            "previous_response_id",
            GATEWAY,
            "the gateway keeps no state; send the whole conversation",
        )?;
    }
    match &b.input {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_to(
            &mut req.messages,
            Role::User,
            Part::Text { text: s.clone() },
            Origin::at(Path::at(&["input"], &[])),
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                decode_item(item, i, &mut req, lossy)?;
            }
        }
        Some(_) => return Err(invalid("input", "expected a string or a list of items")),
    }
    for (i, t) in b.tools.iter().flatten().enumerate() {
        let path = Path::at(&["tools"], &[i]);
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "function" {
            lossy.drop(
                path,
                GATEWAY,
                &format!("built-in tool '{kind}' is not supported"),
            )?;
            continue;
        }
        let f: FunctionTool = serde_json::from_value(t.clone()).map_err(|e| invalid(path, e))?;
        lossy.unknown(&f.extra, path, &["type"])?;
        req.tools.push(Tool {
            name: f.name,
            description: f.description,
            parameters: f
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: f.strict,
        });
    }
    if let Some(tc) = &b.tool_choice {
        req.tool_choice = match tc {
            Value::String(s) => match s.as_str() {
                "auto" => Some(ToolChoice::Auto),
                "none" => Some(ToolChoice::None),
                "required" => Some(ToolChoice::Required),
                other => return Err(invalid("tool_choice", format!("unknown value '{other}'"))),
            },
            Value::Object(o) => match (o.get("type").and_then(Value::as_str), o.get("name")) {
                (Some("function"), Some(Value::String(n))) => Some(ToolChoice::Named(n.clone())),
                (kind, _) => {
                    lossy.drop(
                        "tool_choice",
                        GATEWAY,
                        &format!("tool choice '{}' is not supported", kind.unwrap_or("")),
                    )?;
                    None
                }
            },
            _ => return Err(invalid("tool_choice", "expected a string or an object")),
        };
    }
    if let Some(r) = &b.reasoning {
        lossy.unknown(&r.extra, "reasoning", &[])?;
        let summary = r.summary.as_deref().or(r.generate_summary.as_deref());
        let include_thoughts = matches!(summary, Some(s) if s != "none");
        match r.effort.as_deref() {
            Some("none") => {
                req.reasoning = Some(Reasoning {
                    enabled: false,
                    effort: None,
                    budget_tokens: None,
                    include_thoughts: false,
                })
            }
            Some(e) => {
                let effort = decode_effort(e)
                    .ok_or_else(|| invalid("reasoning.effort", format!("unknown value '{e}'")))?;
                req.reasoning = Some(Reasoning {
                    enabled: true,
                    effort: Some(effort),
                    budget_tokens: None,
                    include_thoughts,
                });
            }
            None if include_thoughts => {
                req.reasoning = Some(Reasoning {
                    enabled: true,
                    effort: None,
                    budget_tokens: None,
                    include_thoughts,
                })
            }
            None => {}
        }
    }
    if let Some(t) = &b.text {
        lossy.unknown(&t.extra, "text", &["verbosity"])?;
        if let Some(f) = &t.format {
            lossy.unknown(&f.extra, "text.format", &[])?;
            req.response_format = Some(match f.kind.as_str() {
                "text" => ResponseFormat::Text,
                "json_object" => ResponseFormat::JsonObject,
                "json_schema" => ResponseFormat::JsonSchema {
                    name: f.name.clone().unwrap_or_else(|| "response".into()),
                    schema: f.schema.clone().unwrap_or_else(|| json!({})),
                    strict: f.strict,
                    description: f.description.clone(),
                },
                other => {
                    return Err(invalid(
                        "text.format.type",
                        format!("unknown value '{other}'"),
                    ))
                }
            });
        }
    }
    Ok(req)
}

fn decode_item(item: &Value, i: usize, req: &mut Request, lossy: &mut Lossy) -> Result<(), Error> {
    let path = Path::at(&["input"], &[i]);
    let kind = match item.get("type") {
        Some(Value::String(s)) => s.as_str(),
        None if item.get("role").is_some() => "message",
        _ => return Err(invalid(path, "an input item needs a 'type'")),
    };
    match kind {
        "message" => {
            let m: MessageItem =
                serde_json::from_value(item.clone()).map_err(|e| invalid(path, e))?;
            lossy.unknown(&m.extra, path, &["type", "id", "status"])?;
            let parts = decode_parts(&m.content, i, &["input", "content"], lossy)?;
            let role = match m.role.as_str() {
                "system" | "developer" => {
                    for (p, at) in parts {
                        req.system.push(p);
                        req.system_origins.push(at);
                    }
                    return Ok(());
                }
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(invalid(
                        path.field("role"),
                        format!("unknown role '{other}'"),
                    ))
                }
            };
            // An assistant message after its reasoning joins that turn.
            let after_thinking = role == Role::Assistant
                && matches!(
                    req.messages.last(),
                    Some(Message { role: Role::Assistant, content, .. })
                        if matches!(content.last(), Some(Part::Thinking { .. }))
                );
            if !after_thinking {
                req.messages.push(Message::new(role, Vec::new()));
            }
            if let Some(last) = req.messages.last_mut() {
                for (p, at) in parts {
                    last.push(p, Origin::at(at));
                }
            }
        }
        "function_call" => {
            let f: FunctionCallItem =
                serde_json::from_value(item.clone()).map_err(|e| invalid(path, e))?;
            lossy.unknown(&f.extra, path, &["type", "status"])?;
            let _ = f.id;
            let call = envelope::unwrap_call_id(&f.call_id);
            for t in call.thinking {
                push_to(&mut req.messages, Role::Assistant, t, Origin::at(path));
            }
            push_to(
                &mut req.messages,
                Role::Assistant,
                Part::ToolCall {
                    id: call.id,
                    name: f.name,
                    arguments: f.arguments,
                    signature: call.signature,
                },
                Origin::call(path, Path::at(&["input", "arguments"], &[i])),
            );
        }
        "function_call_output" => {
            let o: FunctionCallOutputItem =
                serde_json::from_value(item.clone()).map_err(|e| invalid(path, e))?;
            lossy.unknown(&o.extra, path, &["type", "id", "status"])?;
            let (content, inner): (Vec<Part>, Vec<Path>) =
                decode_parts(&o.output, i, &["input", "output"], lossy)?
                    .into_iter()
                    .unzip();
            let part = Part::ToolResult {
                call_id: envelope::unwrap_call_id(&o.call_id).id,
                name: None,
                content,
                is_error: false,
            };
            let origin = Origin::result(path, inner);
            let results_only = matches!(
                req.messages.last(),
                Some(Message { role: Role::User, content, .. })
                    if content.iter().all(|p| matches!(p, Part::ToolResult { .. }))
            );
            if !results_only {
                req.messages.push(Message::new(Role::User, Vec::new()));
            }
            push_to(&mut req.messages, Role::User, part, origin);
        }
        "reasoning" => {
            let r: ReasoningItem =
                serde_json::from_value(item.clone()).map_err(|e| invalid(path, e))?;
            lossy.unknown(&r.extra, path, &["type", "status"])?;
            for (k, p) in r.summary.iter().enumerate() {
                lossy.unknown(
                    &p.extra,
                    Path::at(&["input", "summary"], &[i, k]),
                    &["type"],
                )?;
            }
            for (k, p) in r.content.iter().flatten().enumerate() {
                lossy.unknown(
                    &p.extra,
                    Path::at(&["input", "content"], &[i, k]),
                    &["type"],
                )?;
            }
            for (k, part) in reasoning_parts(&r).into_iter().enumerate() {
                let at = if r.summary.is_empty() {
                    path
                } else {
                    Path::at(&["input", "summary"], &[i, k])
                };
                push_to(&mut req.messages, Role::Assistant, part, Origin::at(at));
            }
        }
        other => {
            lossy.drop(
                path,
                GATEWAY,
                &format!("input item type '{other}' is not supported"),
            )?;
        }
    }
    Ok(())
}

/// A reasoning item as thinking parts: one per summary part, the
/// encrypted content on the last.
fn reasoning_parts(r: &ReasoningItem) -> Vec<Part> {
    let signature = r
        .encrypted_content
        .as_deref()
        .map(|v| envelope::unwrap(v, Family::OpenAi));
    let redacted =
        r.id.as_deref()
            .is_some_and(|i| i.starts_with("rs_redacted_"))
            && signature
                .as_ref()
                .is_some_and(|s| s.family == Family::Anthropic);
    let mut texts: Vec<&str> = r.summary.iter().map(|s| s.text.as_str()).collect();
    if texts.is_empty() {
        texts.push("");
    }
    let n = texts.len();
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| Part::Thinking {
            text: t.to_string(),
            signature: if i + 1 == n { signature.clone() } else { None },
            redacted,
            id: r.id.clone(),
        })
        .collect()
}

fn image_json(img: &Image) -> Value {
    json!({"type": "input_image", "image_url": img.to_url(), "detail": "auto"})
}

fn tool_output(content: &[Part], is_error: bool) -> Value {
    let all_text = content.iter().all(|p| matches!(p, Part::Text { .. }));
    if all_text {
        let mut s: String = content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        if is_error {
            s = format!("Error: {s}");
        }
        return Value::String(s);
    }
    let mut parts = Vec::new();
    if is_error {
        parts.push(json!({"type": "input_text", "text": "Error:"}));
    }
    for p in content {
        match p {
            Part::Text { text } => parts.push(json!({"type": "input_text", "text": text})),
            Part::Image(img) => parts.push(image_json(img)),
            _ => {}
        }
    }
    Value::Array(parts)
}

/// The reasoning item for a run of thinking parts with one id (only
/// OpenAI state goes back to OpenAI).
fn reasoning_item(run: &[&Part]) -> Option<Value> {
    let mut id = None;
    let mut summary = Vec::new();
    let mut encrypted = None;
    for p in run {
        if let Part::Thinking {
            text,
            signature,
            id: pid,
            ..
        } = p
        {
            id = pid.clone();
            if !text.is_empty() {
                summary.push(json!({"type": "summary_text", "text": text}));
            }
            if let Some(s) = signature {
                if s.family == Family::OpenAi {
                    encrypted = Some(s.value.clone());
                }
            }
        }
    }
    let encrypted = encrypted?;
    let mut item = json!({"type": "reasoning", "summary": summary, "encrypted_content": encrypted});
    if let Some(id) = id {
        item["id"] = Value::String(id);
    }
    Some(item)
}

fn encode_message(m: &Message, input: &mut Vec<Value>) {
    let text_type = match m.role {
        Role::User => "input_text",
        Role::Assistant => "output_text",
    };
    let role = match m.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let mut content: Vec<Value> = Vec::new();
    let flush = |content: &mut Vec<Value>, input: &mut Vec<Value>| {
        if !content.is_empty() {
            input
                .push(json!({"type": "message", "role": role, "content": std::mem::take(content)}));
        }
    };
    let mut i = 0;
    while i < m.content.len() {
        match &m.content[i] {
            Part::Text { text } => {
                let mut part = json!({"type": text_type, "text": text});
                if m.role == Role::Assistant {
                    part["annotations"] = json!([]);
                }
                content.push(part);
            }
            Part::Image(img) => content.push(image_json(img)),
            Part::ToolCall {
                id,
                name,
                arguments,
                ..
            } => {
                flush(&mut content, input);
                input.push(json!({"type": "function_call", "call_id": id, "name": name, "arguments": arguments}));
            }
            Part::ToolResult {
                call_id,
                content: c,
                is_error,
                ..
            } => {
                flush(&mut content, input);
                input.push(json!({"type": "function_call_output", "call_id": call_id, "output": tool_output(c, *is_error)}));
            }
            Part::Thinking { id, .. } => {
                flush(&mut content, input);
                let mut run = vec![&m.content[i]];
                while let Some(next @ Part::Thinking { id: nid, .. }) = m.content.get(i + 1) {
                    if nid.is_none() || nid != id {
                        break;
                    }
                    run.push(next);
                    i += 1;
                }
                if let Some(item) = reasoning_item(&run) {
                    input.push(item);
                }
            }
        }
        i += 1;
    }
    flush(&mut content, input);
}

/// What a request's `include` asks for to get reasoning items back with
/// their state.
const ENCRYPTED_REASONING: &str = "reasoning.encrypted_content";

/// Whether the upstream must be asked for `reasoning.encrypted_content`.
/// The gateway always sends `store: false`, and a reasoning model's
/// reasoning items can then come back on the next turn only with their
/// encrypted content; a model that does not reason refuses the `include`
/// ("Encrypted content is not supported with this model"). So it is
/// asked when the model reasons: the client asked for reasoning, or the
/// conversation already carries OpenAI reasoning state (the model
/// reasoned before), or the model is of a family that reasons whether
/// asked or not ([`reasons_by_default`]).
fn wants_encrypted_reasoning(req: &Request) -> bool {
    if req.reasoning.as_ref().is_some_and(|r| r.enabled) {
        return true;
    }
    let carries_state = req.messages.iter().any(|m| {
        m.content.iter().any(|p| {
            matches!(p, Part::Thinking { signature: Some(s), .. } if s.family == Family::OpenAi)
        })
    });
    carries_state || reasons_by_default(&req.model)
}

/// OpenAI's reasoning models, which reason even when not asked to: the
/// o-series (`o1`, `o3`, `o4-mini`, ...), GPT-5 and later but for the
/// `-chat` models, and the Codex models. A deployment of another name is
/// asked only when reasoning is requested or its state is carried.
fn reasons_by_default(model: &str) -> bool {
    let m = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let o_series = m
        .strip_prefix('o')
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    let gpt = m
        .strip_prefix("gpt-")
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major >= 5)
        && !m.contains("-chat");
    o_series || gpt || m.starts_with("codex")
}

pub fn encode_request(req: &Request, lossy: &mut Lossy) -> Result<Vec<u8>, Error> {
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    let mut instructions = Vec::new();
    for (i, p) in req.system.iter().enumerate() {
        match p {
            Part::Text { text } => instructions.push(text.as_str()),
            _ => lossy.drop(req.system_path(i), NAME, "instructions can only be text")?,
        }
    }
    if !instructions.is_empty() {
        body.insert("instructions".into(), json!(instructions.join("\n\n")));
    }
    let mut input = Vec::new();
    for m in &req.messages {
        encode_message(m, &mut input);
    }
    body.insert("input".into(), Value::Array(input));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"type": "function", "name": t.name, "parameters": t.parameters, "strict": t.strict.unwrap_or(false)});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        body.insert(
            "tool_choice".into(),
            match tc {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Named(n) => json!({"type": "function", "name": n}),
            },
        );
    }
    if let Some(p) = req.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(p));
    }
    if let Some(m) = req.max_tokens {
        body.insert("max_output_tokens".into(), json!(m.max(MIN_OUTPUT_TOKENS)));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        body.insert("top_p".into(), json!(t));
    }
    if req.top_k.is_some() {
        lossy.drop(req.names.top_k, NAME, "Responses has no top_k")?;
    }
    if !req.stop.is_empty() {
        lossy.drop(req.names.stop, NAME, "Responses has no stop sequences")?;
    }
    if req.seed.is_some() {
        lossy.drop(req.names.seed, NAME, "Responses has no seed")?;
    }
    if req.presence_penalty.is_some() {
        lossy.drop(
            req.names.presence_penalty,
            NAME,
            "Responses has no presence_penalty",
        )?;
    }
    if req.frequency_penalty.is_some() {
        lossy.drop(
            req.names.frequency_penalty,
            NAME,
            "Responses has no frequency_penalty",
        )?;
    }
    if let Some(r) = &req.reasoning {
        if r.enabled {
            let mut cfg = Map::new();
            if let Some(e) = r.effort() {
                cfg.insert("effort".into(), json!(e.as_str()));
            }
            if r.include_thoughts {
                cfg.insert("summary".into(), json!("auto"));
            }
            body.insert("reasoning".into(), Value::Object(cfg));
        }
    }
    if wants_encrypted_reasoning(req) {
        body.insert("include".into(), json!([ENCRYPTED_REASONING]));
    }
    if let Some(f) = &req.response_format {
        let format = match f {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
                description,
            } => {
                let mut v = json!({"type": "json_schema", "name": name, "schema": schema});
                if let Some(s) = strict {
                    v["strict"] = json!(s);
                }
                if let Some(d) = description {
                    v["description"] = json!(d);
                }
                v
            }
        };
        body.insert("text".into(), json!({ "format": format }));
    }
    if let Some(u) = &req.user {
        body.insert("user".into(), json!(u));
    }
    body.insert("stream".into(), json!(req.stream));
    body.insert("store".into(), json!(false));
    serde_json::to_vec(&Value::Object(body)).map_err(|e| Error::Invalid(e.to_string()))
}

// ---------------------------------------------------------------------------
// Whole answers

fn stop_of(
    status: Option<&str>,
    reason: Option<&str>,
    has_calls: bool,
    refused: bool,
) -> StopReason {
    match status {
        Some("incomplete") => match reason {
            Some("max_output_tokens") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::ContentFilter,
            Some(r) => StopReason::Other(r.to_string()),
            None => StopReason::Other("incomplete".into()),
        },
        Some("failed") => StopReason::Other("failed".into()),
        Some("cancelled") => StopReason::Other("cancelled".into()),
        _ if refused => StopReason::ContentFilter,
        _ if has_calls => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

pub fn decode_response(body: &[u8]) -> Result<Response, Error> {
    let r: ResponseObject = serde_json::from_slice(body)
        .map_err(|e| Error::Upstream(format!("Responses body: {e}")))?;
    let mut content = Vec::new();
    let mut has_calls = false;
    let mut refused = false;
    for item in &r.output {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for p in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match p.get("type").and_then(Value::as_str) {
                        Some("output_text") => content.push(Part::Text {
                            text: p
                                .get("text")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                        }),
                        Some("refusal") => {
                            refused = true;
                            content.push(Part::Text {
                                text: p
                                    .get("refusal")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_string(),
                            });
                        }
                        _ => {}
                    }
                }
            }
            Some("function_call") => {
                let f: FunctionCallItem = serde_json::from_value(item.clone())
                    .map_err(|e| Error::Upstream(format!("function_call item: {e}")))?;
                has_calls = true;
                content.push(Part::ToolCall {
                    id: f.call_id,
                    name: f.name,
                    arguments: f.arguments,
                    signature: None,
                });
            }
            Some("reasoning") => {
                let ri: ReasoningItem = serde_json::from_value(item.clone())
                    .map_err(|e| Error::Upstream(format!("reasoning item: {e}")))?;
                content.extend(reasoning_parts(&ri));
            }
            _ => {}
        }
    }
    let reason = r
        .incomplete_details
        .as_ref()
        .and_then(|d| d.reason.as_deref());
    Ok(Response {
        id: r.id,
        model: r.model,
        content,
        stop: stop_of(r.status.as_deref(), reason, has_calls, refused),
        usage: r.usage.as_ref().map(WireUsage::to_ir),
        created: r.created_at.map(|c| c as i64),
    })
}

/// The status and `incomplete_details` a stop reason stands for; a reason
/// Responses has no name for stands for the nearest one it has.
fn status_of(stop: &StopReason) -> (&'static str, Value) {
    match stop {
        StopReason::MaxTokens => ("incomplete", json!({"reason": "max_output_tokens"})),
        StopReason::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        StopReason::Other(raw) => status_of(&crate::stop::nearest(raw)),
        _ => ("completed", Value::Null),
    }
}

/// A stop reason as a Responses upstream states it: the
/// `incomplete_details.reason` of an incomplete answer, else its `status`.
pub fn stop_name(stop: &StopReason) -> String {
    match stop {
        StopReason::MaxTokens => "max_output_tokens".into(),
        StopReason::ContentFilter => "content_filter".into(),
        StopReason::Other(raw) => raw.clone(),
        _ => "completed".into(),
    }
}

/// The response object a client gets, around `output`.
fn response_object(
    id: &str,
    opts: &EncoderOptions,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
    incomplete: Value,
    error: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": opts.created,
        "status": status,
        "background": false,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": opts.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage.map(usage_json),
        "user": null,
        "metadata": {},
    })
}

fn response_id(upstream: &str, opts: &EncoderOptions) -> String {
    if upstream.starts_with("resp_") || opts.id.is_empty() {
        upstream.to_string()
    } else {
        opts.id.clone()
    }
}

/// Item ids: `msg_`, `fc_`, `rs_` + the response id's tail + a counter.
fn item_id(prefix: &str, resp_id: &str, n: usize) -> String {
    let tail = resp_id.rsplit('_').next().unwrap_or(resp_id);
    format!("{prefix}_{tail}{n}")
}

fn message_json(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

fn call_json(item_id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

fn reasoning_json(id: &str, summary: &[String], encrypted: Option<&str>) -> Value {
    let summary: Vec<Value> = summary
        .iter()
        .map(|t| json!({"type": "summary_text", "text": t}))
        .collect();
    let mut v = json!({"id": id, "type": "reasoning", "summary": summary});
    if let Some(e) = encrypted {
        v["encrypted_content"] = json!(e);
    }
    v
}

fn reasoning_id(given: &Option<String>, redacted: bool, resp_id: &str, n: usize) -> String {
    match given {
        Some(id) => id.clone(),
        None if redacted => item_id("rs_redacted", resp_id, n),
        None => item_id("rs", resp_id, n),
    }
}

pub fn encode_response(resp: &Response, opts: &EncoderOptions) -> Vec<u8> {
    let id = response_id(&resp.id, opts);
    let mut output: Vec<Value> = Vec::new();
    let mut i = 0;
    while i < resp.content.len() {
        let n = output.len();
        match &resp.content[i] {
            Part::Text { text } => {
                output.push(message_json(&item_id("msg", &id, n), text, "completed"))
            }
            Part::Image(_) | Part::ToolResult { .. } => {}
            Part::ToolCall {
                id: call_id,
                name,
                arguments,
                signature,
            } => {
                let wrapped = envelope::wrap_call_id(&envelope::CallId {
                    id: call_id.clone(),
                    thinking: Vec::new(),
                    signature: signature.clone(),
                });
                output.push(call_json(
                    &item_id("fc", &id, n),
                    &wrapped,
                    name,
                    arguments,
                    "completed",
                ));
            }
            Part::Thinking {
                text,
                signature,
                redacted,
                id: rid,
            } => {
                let mut summary = Vec::new();
                if !text.is_empty() {
                    summary.push(text.clone());
                }
                let mut sig = signature.clone();
                while let Some(Part::Thinking {
                    text: t,
                    signature: s,
                    id: nid,
                    ..
                }) = resp.content.get(i + 1)
                {
                    if rid.is_none() || nid != rid {
                        break;
                    }
                    if !t.is_empty() {
                        summary.push(t.clone());
                    }
                    if s.is_some() {
                        sig = s.clone();
                    }
                    i += 1;
                }
                let enc = sig.map(|s| envelope::wrap(&s, Family::OpenAi));
                output.push(reasoning_json(
                    &reasoning_id(rid, *redacted, &id, n),
                    &summary,
                    enc.as_deref(),
                ));
            }
        }
        i += 1;
    }
    let (status, incomplete) = status_of(&resp.stop);
    let obj = response_object(
        &id,
        &EncoderOptions {
            created: resp.created.unwrap_or(opts.created),
            ..opts.clone()
        },
        status,
        output,
        resp.usage.as_ref(),
        incomplete,
        Value::Null,
    );
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// Errors: the Chat Completions shape.
pub fn decode_error(status: u16, body: &[u8]) -> ApiError {
    crate::chat::decode_error(status, body)
}

/// Errors: the Chat Completions shape.
pub fn encode_error(err: &ApiError) -> Vec<u8> {
    crate::chat::encode_error(err)
}

// ---------------------------------------------------------------------------
// Reading an upstream stream

#[derive(Debug, Clone, Copy, PartialEq)]
enum ItemKind {
    Message,
    Call,
    Reasoning,
    Other,
}

#[derive(Debug)]
struct ItemState {
    kind: ItemKind,
    /// Open blocks: (content or summary index, block index).
    blocks: Vec<(usize, usize)>,
    /// Content indices whose text was streamed.
    streamed: Vec<usize>,
    args_sent: bool,
    reasoning_id: Option<String>,
    done: bool,
}

/// Reads a Responses upstream stream.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    complete: bool,
    next_block: usize,
    items: HashMap<usize, ItemState>,
    has_calls: bool,
    refused: bool,
}

impl Decoder {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<Event>) {
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: id.to_string(),
                model: model.to_string(),
            });
        }
    }

    fn open(&mut self, block: Block, out: &mut Vec<Event>) -> usize {
        let index = self.next_block;
        self.next_block += 1;
        out.push(Event::BlockStart { index, block });
        index
    }

    fn item_added(&mut self, oi: usize, item: &Value, out: &mut Vec<Event>) {
        if self.items.get(&oi).is_some_and(|s| !s.done) {
            return;
        }
        let kind = match item.get("type").and_then(Value::as_str) {
            Some("message") => ItemKind::Message,
            Some("function_call") => ItemKind::Call,
            Some("reasoning") => ItemKind::Reasoning,
            _ => ItemKind::Other,
        };
        let mut state = ItemState {
            kind,
            blocks: Vec::new(),
            streamed: Vec::new(),
            args_sent: false,
            reasoning_id: item.get("id").and_then(Value::as_str).map(str::to_string),
            done: false,
        };
        match kind {
            ItemKind::Call => {
                self.has_calls = true;
                let s = |k: &str| {
                    item.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let b = self.open(
                    Block::ToolCall {
                        id: s("call_id"),
                        name: s("name"),
                        signature: None,
                    },
                    out,
                );
                state.blocks.push((0, b));
                let args = s("arguments");
                if !args.is_empty() {
                    state.args_sent = true;
                    out.push(Event::Delta {
                        index: b,
                        delta: Delta::Arguments(args),
                    });
                }
            }
            ItemKind::Reasoning => {
                let b = self.open(
                    Block::Thinking {
                        id: state.reasoning_id.clone(),
                        redacted: false,
                    },
                    out,
                );
                state.blocks.push((0, b));
            }
            ItemKind::Message | ItemKind::Other => {}
        }
        self.items.insert(oi, state);
    }

    /// The block of a message's content part, opened on first use.
    fn text_block(&mut self, oi: usize, ci: usize, out: &mut Vec<Event>) -> usize {
        if !self.items.contains_key(&oi) {
            self.item_added(oi, &json!({"type": "message"}), out);
        }
        if let Some(&(_, b)) = self
            .items
            .get(&oi)
            .and_then(|s| s.blocks.iter().find(|(c, _)| *c == ci))
        {
            return b;
        }
        let b = self.open(Block::Text, out);
        if let Some(s) = self.items.get_mut(&oi) {
            s.blocks.push((ci, b));
        }
        b
    }

    /// The block of a reasoning item's summary part: a new thinking block
    /// (same item id) for each summary part after the first.
    fn summary_block(&mut self, oi: usize, si: usize, out: &mut Vec<Event>) -> Option<usize> {
        if !self.items.contains_key(&oi) {
            self.item_added(oi, &json!({"type": "reasoning"}), out);
        }
        let state = self.items.get(&oi)?;
        if let Some(&(_, b)) = state.blocks.iter().find(|(c, _)| *c == si) {
            return Some(b);
        }
        let id = state.reasoning_id.clone();
        let old: Vec<usize> = state.blocks.iter().map(|(_, b)| *b).collect();
        for b in old {
            out.push(Event::BlockStop { index: b });
        }
        let b = self.open(
            Block::Thinking {
                id,
                redacted: false,
            },
            out,
        );
        if let Some(s) = self.items.get_mut(&oi) {
            s.blocks = vec![(si, b)];
        }
        Some(b)
    }

    fn item_done(&mut self, oi: usize, item: &Value, out: &mut Vec<Event>) {
        if !self.items.contains_key(&oi) {
            self.item_added(oi, item, out);
        }
        let kind = match self.items.get(&oi) {
            Some(s) if !s.done => s.kind,
            _ => return,
        };
        match kind {
            ItemKind::Message => {
                for (ci, p) in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let text = match p.get("type").and_then(Value::as_str) {
                        Some("output_text") => p.get("text"),
                        Some("refusal") => {
                            self.refused = true;
                            p.get("refusal")
                        }
                        _ => None,
                    };
                    let text = text.and_then(Value::as_str).unwrap_or("");
                    let streamed = self
                        .items
                        .get(&oi)
                        .is_some_and(|s| s.streamed.contains(&ci));
                    if !streamed && !text.is_empty() {
                        let b = self.text_block(oi, ci, out);
                        out.push(Event::Delta {
                            index: b,
                            delta: Delta::Text(text.to_string()),
                        });
                    }
                }
            }
            ItemKind::Call => {
                let sent = self.items.get(&oi).is_some_and(|s| s.args_sent);
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                if !sent && !args.is_empty() {
                    if let Some(&(_, b)) = self.items.get(&oi).and_then(|s| s.blocks.first()) {
                        out.push(Event::Delta {
                            index: b,
                            delta: Delta::Arguments(args.to_string()),
                        });
                    }
                }
            }
            ItemKind::Reasoning => {
                let streamed = self.items.get(&oi).is_some_and(|s| !s.streamed.is_empty());
                if !streamed {
                    let texts: Vec<String> = item
                        .get("summary")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.get("text").and_then(Value::as_str).map(str::to_string))
                        .collect();
                    for (si, t) in texts.into_iter().enumerate() {
                        if let Some(b) = self.summary_block(oi, si, out) {
                            out.push(Event::Delta {
                                index: b,
                                delta: Delta::Thinking(t),
                            });
                        }
                    }
                }
                if let Some(enc) = item.get("encrypted_content").and_then(Value::as_str) {
                    if let Some(&(_, b)) = self.items.get(&oi).and_then(|s| s.blocks.last()) {
                        out.push(Event::Delta {
                            index: b,
                            delta: Delta::Signature(envelope::unwrap(enc, Family::OpenAi)),
                        });
                    }
                }
            }
            ItemKind::Other => {}
        }
        if let Some(s) = self.items.get_mut(&oi) {
            s.done = true;
            for (_, b) in s.blocks.drain(..) {
                out.push(Event::BlockStop { index: b });
            }
        }
    }

    fn close_all(&mut self, out: &mut Vec<Event>) {
        let mut open: Vec<usize> = self
            .items
            .values_mut()
            .flat_map(|s| {
                s.done = true;
                s.blocks.drain(..).map(|(_, b)| b).collect::<Vec<_>>()
            })
            .collect();
        open.sort_unstable();
        for b in open {
            out.push(Event::BlockStop { index: b });
        }
    }

    fn terminal(&mut self, r: &ResponseObject, out: &mut Vec<Event>) {
        self.start(&r.id, &r.model, out);
        for (oi, item) in r.output.iter().enumerate() {
            if self.items.get(&oi).is_some_and(|s| !s.done) {
                self.item_done(oi, item, out);
            }
        }
        self.close_all(out);
        if let Some(u) = &r.usage {
            out.push(Event::Usage(u.to_ir()));
        }
        if r.status.as_deref() == Some("failed") {
            let message = r
                .error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("the upstream response failed")
                .to_string();
            out.push(Event::Error { message });
        } else {
            let reason = r
                .incomplete_details
                .as_ref()
                .and_then(|d| d.reason.as_deref());
            out.push(Event::Stop(stop_of(
                r.status.as_deref(),
                reason,
                self.has_calls,
                self.refused,
            )));
        }
        self.complete = true;
    }
}

fn delta_text(e: &StreamEvent) -> String {
    match &e.delta {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

impl StreamDecoder for Decoder {
    fn event(&mut self, name: &str, data: &str, out: &mut Vec<Event>) -> Result<(), Error> {
        if data.trim().is_empty() || data.trim() == "[DONE]" {
            return Ok(());
        }
        let e: StreamEvent = serde_json::from_str(data)
            .map_err(|err| Error::Upstream(format!("Responses stream event: {err}")))?;
        let kind = if e.kind.is_empty() {
            name
        } else {
            e.kind.as_str()
        };
        let oi = e.output_index.unwrap_or(0);
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                let (id, model) = e
                    .response
                    .as_ref()
                    .map(|r| (r.id.clone(), r.model.clone()))
                    .unwrap_or_default();
                self.start(&id, &model, out);
            }
            "response.output_item.added" => {
                self.start("", "", out);
                if let Some(item) = &e.item {
                    self.item_added(oi, item, out);
                }
            }
            "response.output_item.done" => {
                self.start("", "", out);
                if let Some(item) = &e.item {
                    self.item_done(oi, item, out);
                }
            }
            "response.content_part.added" => {
                self.start("", "", out);
                let is_text = e
                    .part
                    .as_ref()
                    .and_then(|p| p.get("type"))
                    .and_then(Value::as_str)
                    .is_some_and(|t| t == "output_text" || t == "refusal");
                if is_text {
                    self.text_block(oi, e.content_index.unwrap_or(0), out);
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                self.start("", "", out);
                if kind == "response.refusal.delta" {
                    self.refused = true;
                }
                let ci = e.content_index.unwrap_or(0);
                let b = self.text_block(oi, ci, out);
                if let Some(s) = self.items.get_mut(&oi) {
                    if !s.streamed.contains(&ci) {
                        s.streamed.push(ci);
                    }
                }
                out.push(Event::Delta {
                    index: b,
                    delta: Delta::Text(delta_text(&e)),
                });
            }
            "response.function_call_arguments.delta" => {
                self.start("", "", out);
                if let Some(s) = self.items.get_mut(&oi) {
                    if let Some(&(_, b)) = s.blocks.first() {
                        s.args_sent = true;
                        out.push(Event::Delta {
                            index: b,
                            delta: Delta::Arguments(delta_text(&e)),
                        });
                    }
                }
            }
            "response.function_call_arguments.done" => {
                if let Some(s) = self.items.get_mut(&oi) {
                    let args = e.arguments.clone().unwrap_or_default();
                    if !s.args_sent && !args.is_empty() {
                        if let Some(&(_, b)) = s.blocks.first() {
                            s.args_sent = true;
                            out.push(Event::Delta {
                                index: b,
                                delta: Delta::Arguments(args),
                            });
                        }
                    }
                }
            }
            "response.reasoning_summary_part.added" => {
                self.start("", "", out);
                self.summary_block(oi, e.summary_index.unwrap_or(0), out);
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.start("", "", out);
                let si = e.summary_index.or(e.content_index).unwrap_or(0);
                if let Some(b) = self.summary_block(oi, si, out) {
                    if let Some(s) = self.items.get_mut(&oi) {
                        if !s.streamed.contains(&si) {
                            s.streamed.push(si);
                        }
                    }
                    out.push(Event::Delta {
                        index: b,
                        delta: Delta::Thinking(delta_text(&e)),
                    });
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let r = e.response.unwrap_or_default();
                let r = ResponseObject {
                    status: r
                        .status
                        .clone()
                        .or_else(|| Some(kind.trim_start_matches("response.").to_string())),
                    ..r
                };
                self.terminal(&r, out);
            }
            "error" => {
                self.start("", "", out);
                let message = e
                    .message
                    .clone()
                    .or_else(|| {
                        e.error
                            .as_ref()
                            .and_then(|x| x.get("message"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "upstream stream error".into());
                out.push(Event::Error { message });
            }
            // Done events that repeat what deltas said, and anything new.
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.started {
            return;
        }
        self.close_all(out);
    }

    fn complete(&self) -> bool {
        self.complete
    }
}

// ---------------------------------------------------------------------------
// Writing a client stream

#[derive(Debug)]
enum ItemBody {
    Message {
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        args: String,
    },
    Reasoning {
        summary: Vec<String>,
        encrypted: Option<String>,
        part_open: bool,
    },
}

#[derive(Debug)]
struct OutItem {
    id: String,
    body: ItemBody,
    done: bool,
    /// The status it ended with.
    status: &'static str,
    /// The IR block feeding it, while open.
    block: Option<usize>,
}

/// Writes a Responses stream for a client.
#[derive(Debug)]
pub struct Encoder {
    opts: EncoderOptions,
    id: String,
    seq: u64,
    started: bool,
    ended: bool,
    items: Vec<OutItem>,
    /// IR block index → output index.
    blocks: HashMap<usize, usize>,
    /// A reasoning item whose block stopped but that a following thinking
    /// block with the same id may continue.
    lingering: Option<usize>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
}

impl Encoder {
    pub fn new(opts: EncoderOptions) -> Encoder {
        let id = opts.id.clone();
        Encoder {
            opts,
            id,
            seq: 0,
            started: false,
            ended: false,
            items: Vec::new(),
            blocks: HashMap::new(),
            lingering: None,
            stop: None,
            usage: None,
        }
    }

    fn emit(&mut self, kind: &str, mut data: Value, out: &mut Vec<u8>) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        sse(out, Some(kind), &data);
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = "resp_gateway".into();
        }
        let obj = response_object(
            &self.id,
            &self.opts,
            "in_progress",
            Vec::new(),
            None,
            Value::Null,
            Value::Null,
        );
        self.emit("response.created", json!({ "response": obj.clone() }), out);
        self.emit("response.in_progress", json!({ "response": obj }), out);
    }

    fn item_json(&self, oi: usize, status: &str) -> Value {
        let item = &self.items[oi];
        match &item.body {
            ItemBody::Message { text } => {
                if status == "in_progress" {
                    json!({"id": item.id, "type": "message", "status": status, "role": "assistant", "content": []})
                } else {
                    message_json(&item.id, text, status)
                }
            }
            ItemBody::Call {
                call_id,
                name,
                args,
            } => {
                let a = if status == "in_progress" {
                    ""
                } else {
                    args.as_str()
                };
                call_json(&item.id, call_id, name, a, status)
            }
            ItemBody::Reasoning {
                summary, encrypted, ..
            } => {
                if status == "in_progress" {
                    reasoning_json(&item.id, &[], None)
                } else {
                    reasoning_json(&item.id, summary, encrypted.as_deref())
                }
            }
        }
    }

    fn add_item(&mut self, block: usize, id: String, body: ItemBody, out: &mut Vec<u8>) {
        let oi = self.items.len();
        self.items.push(OutItem {
            id,
            body,
            done: false,
            status: "in_progress",
            block: Some(block),
        });
        self.blocks.insert(block, oi);
        let item = self.item_json(oi, "in_progress");
        self.emit(
            "response.output_item.added",
            json!({"output_index": oi, "item": item}),
            out,
        );
        if matches!(self.items[oi].body, ItemBody::Message { .. }) {
            let item_id = self.items[oi].id.clone();
            self.emit(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": oi, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                out,
            );
        }
    }

    /// Closes a reasoning item's open summary part.
    fn close_summary_part(&mut self, oi: usize, out: &mut Vec<u8>) {
        let item_id = self.items[oi].id.clone();
        let (si, text) = match &mut self.items[oi].body {
            ItemBody::Reasoning {
                summary, part_open, ..
            } if *part_open => {
                *part_open = false;
                (
                    summary.len() - 1,
                    summary.last().cloned().unwrap_or_default(),
                )
            }
            _ => return,
        };
        self.emit(
            "response.reasoning_summary_text.done",
            json!({"item_id": item_id, "output_index": oi, "summary_index": si, "text": text}),
            out,
        );
        self.emit(
            "response.reasoning_summary_part.done",
            json!({"item_id": item_id, "output_index": oi, "summary_index": si,
                   "part": {"type": "summary_text", "text": text}}),
            out,
        );
    }

    /// Ends an item: its done events, whatever its state.
    fn end_item(&mut self, oi: usize, status: &'static str, out: &mut Vec<u8>) {
        if self.items[oi].done {
            return;
        }
        self.items[oi].done = true;
        self.items[oi].status = status;
        if let Some(b) = self.items[oi].block.take() {
            self.blocks.remove(&b);
        }
        if self.lingering == Some(oi) {
            self.lingering = None;
        }
        let item_id = self.items[oi].id.clone();
        match &self.items[oi].body {
            ItemBody::Message { text } => {
                let text = text.clone();
                self.emit(
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": oi, "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": oi, "content_index": 0,
                           "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
                    out,
                );
            }
            ItemBody::Call { name, args, .. } => {
                let (name, args) = (name.clone(), args.clone());
                self.emit(
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": oi, "name": name, "arguments": args}),
                    out,
                );
            }
            ItemBody::Reasoning { .. } => self.close_summary_part(oi, out),
        }
        let item = self.item_json(oi, status);
        self.emit(
            "response.output_item.done",
            json!({"output_index": oi, "item": item}),
            out,
        );
    }

    fn end_lingering(&mut self, out: &mut Vec<u8>) {
        if let Some(oi) = self.lingering.take() {
            self.end_item(oi, "completed", out);
        }
    }

    fn end_open_items(&mut self, status: &'static str, out: &mut Vec<u8>) {
        for oi in 0..self.items.len() {
            self.end_item(oi, status, out);
        }
    }

    fn output(&self) -> Vec<Value> {
        (0..self.items.len())
            .map(|oi| self.item_json(oi, self.items[oi].status))
            .collect()
    }

    fn block_start(&mut self, index: usize, block: Block, out: &mut Vec<u8>) {
        let n = self.items.len();
        match block {
            Block::Thinking { id, redacted } => {
                if let Some(oi) = self.lingering {
                    let same = id.is_some()
                        && matches!(&self.items[oi].body, ItemBody::Reasoning { .. })
                        && Some(&self.items[oi].id) == id.as_ref();
                    if same {
                        self.lingering = None;
                        self.items[oi].block = Some(index);
                        self.blocks.insert(index, oi);
                        return;
                    }
                }
                self.end_lingering(out);
                let rid = reasoning_id(&id, redacted, &self.id, n);
                self.add_item(
                    index,
                    rid,
                    ItemBody::Reasoning {
                        summary: Vec::new(),
                        encrypted: None,
                        part_open: false,
                    },
                    out,
                );
            }
            Block::Text => {
                self.end_lingering(out);
                let id = item_id("msg", &self.id, n);
                self.add_item(
                    index,
                    id,
                    ItemBody::Message {
                        text: String::new(),
                    },
                    out,
                );
            }
            Block::ToolCall {
                id: call_id,
                name,
                signature,
            } => {
                self.end_lingering(out);
                let call_id = envelope::wrap_call_id(&envelope::CallId {
                    id: call_id,
                    thinking: Vec::new(),
                    signature,
                });
                let id = item_id("fc", &self.id, n);
                self.add_item(
                    index,
                    id,
                    ItemBody::Call {
                        call_id,
                        name,
                        args: String::new(),
                    },
                    out,
                );
            }
        }
    }

    fn delta(&mut self, index: usize, delta: Delta, out: &mut Vec<u8>) {
        let Some(&oi) = self.blocks.get(&index) else {
            return;
        };
        let item_id = self.items[oi].id.clone();
        match (&mut self.items[oi].body, delta) {
            (ItemBody::Message { text }, Delta::Text(t)) => {
                text.push_str(&t);
                self.emit(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": oi, "content_index": 0, "delta": t, "logprobs": []}),
                    out,
                );
            }
            (ItemBody::Call { args, .. }, Delta::Arguments(a)) => {
                args.push_str(&a);
                self.emit(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": oi, "delta": a}),
                    out,
                );
            }
            (
                ItemBody::Reasoning {
                    summary, part_open, ..
                },
                Delta::Thinking(t),
            )
            | (
                ItemBody::Reasoning {
                    summary, part_open, ..
                },
                Delta::Text(t),
            ) => {
                let opened = !*part_open;
                if opened {
                    *part_open = true;
                    summary.push(String::new());
                }
                let si = summary.len() - 1;
                if let Some(last) = summary.last_mut() {
                    last.push_str(&t);
                }
                if opened {
                    self.emit(
                        "response.reasoning_summary_part.added",
                        json!({"item_id": item_id, "output_index": oi, "summary_index": si,
                               "part": {"type": "summary_text", "text": ""}}),
                        out,
                    );
                }
                self.emit(
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": item_id, "output_index": oi, "summary_index": si, "delta": t}),
                    out,
                );
            }
            (ItemBody::Reasoning { encrypted, .. }, Delta::Signature(s)) => {
                *encrypted = Some(envelope::wrap(&s, Family::OpenAi));
            }
            // A delta that does not fit its block (text into a call): the
            // client has nowhere to put it.
            _ => {}
        }
    }

    fn block_stop(&mut self, index: usize, out: &mut Vec<u8>) {
        let Some(&oi) = self.blocks.get(&index) else {
            return;
        };
        if matches!(self.items[oi].body, ItemBody::Reasoning { .. }) {
            self.close_summary_part(oi, out);
            self.blocks.remove(&index);
            self.items[oi].block = None;
            self.end_lingering(out);
            self.lingering = Some(oi);
        } else {
            self.end_item(oi, "completed", out);
        }
    }
}

impl StreamEncoder for Encoder {
    fn event(&mut self, event: Event, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match event {
            Event::Start { id, .. } => {
                if !self.started && (id.starts_with("resp_") || self.id.is_empty()) {
                    self.id = id;
                }
                self.ensure_started(out);
            }
            Event::BlockStart { index, block } => {
                self.ensure_started(out);
                self.block_start(index, block, out);
            }
            Event::Delta { index, delta } => {
                self.ensure_started(out);
                self.delta(index, delta, out);
            }
            Event::BlockStop { index } => self.block_stop(index, out),
            Event::Usage(u) => self.usage = Some(u),
            Event::Stop(s) => self.stop = Some(s),
            Event::Error { message } => self.fail(&message, out),
        }
    }

    fn finish(&mut self, fallback_usage: Option<Usage>, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ensure_started(out);
        self.end_open_items("completed", out);
        if self.usage.is_none() {
            self.usage = fallback_usage;
        }
        let stop = self.stop.clone().unwrap_or(StopReason::EndTurn);
        let (status, incomplete) = status_of(&stop);
        let obj = response_object(
            &self.id,
            &self.opts,
            status,
            self.output(),
            self.usage.as_ref(),
            incomplete,
            Value::Null,
        );
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(kind, json!({ "response": obj }), out);
        self.ended = true;
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ensure_started(out);
        self.end_open_items("incomplete", out);
        let obj = response_object(
            &self.id,
            &self.opts,
            "failed",
            self.output(),
            self.usage.as_ref(),
            Value::Null,
            json!({"code": "server_error", "message": message}),
        );
        self.emit("response.failed", json!({ "response": obj }), out);
        self.ended = true;
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Opaque;
    use proptest::prelude::*;

    fn lenient() -> Lossy {
        Lossy::lenient()
    }

    /// `(event name, data)` of each SSE frame.
    fn frames(out: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|f| !f.trim().is_empty())
            .map(|f| {
                let mut name = String::new();
                let mut data = String::new();
                for line in f.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    } else {
                        panic!("bad SSE line {line:?}");
                    }
                }
                (name, serde_json::from_str(&data).unwrap())
            })
            .collect()
    }

    fn codex_request() -> Value {
        json!({
            "model": "gpt-5-codex",
            "instructions": "You are Codex.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "auto"}
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Looking."}], "encrypted_content": "gAAAA=="},
                {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "call_a", "output": "README.md"}
            ],
            "tools": [{"type": "function", "name": "shell", "description": "Run a command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}, "strict": false}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "reasoning": {"effort": "high", "summary": "auto"},
            "store": false,
            "stream": true,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "abc"
        })
    }

    #[test]
    fn decodes_a_codex_request() {
        let body = serde_json::to_vec(&codex_request()).unwrap();
        let req = decode_request(&body, &mut Lossy::strict()).unwrap();
        assert_eq!(
            req.system,
            vec![
                Part::Text {
                    text: "You are Codex.".into()
                },
                Part::Text {
                    text: "Sandbox: read-only.".into()
                }
            ]
        );
        assert_eq!(req.messages.len(), 3);
        assert_eq!(
            req.messages[0].content[1],
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBOR".into()
            })
        );
        assert_eq!(
            req.messages[1].content,
            vec![
                Part::Thinking {
                    text: "Looking.".into(),
                    signature: Some(Opaque {
                        family: Family::OpenAi,
                        value: "gAAAA==".into()
                    }),
                    redacted: false,
                    id: Some("rs_1".into())
                },
                Part::ToolCall {
                    id: "call_a".into(),
                    name: "shell".into(),
                    arguments: "{\"cmd\":\"ls\"}".into(),
                    signature: None
                }
            ]
        );
        assert_eq!(
            req.messages[2].content,
            vec![Part::ToolResult {
                call_id: "call_a".into(),
                name: None,
                content: vec![Part::Text {
                    text: "README.md".into()
                }],
                is_error: false
            }]
        );
        assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(req.parallel_tool_calls, Some(false));
        let r = req.reasoning.unwrap();
        assert!(r.enabled && r.include_thoughts);
        assert_eq!(r.effort, Some(Effort::High));
        assert!(req.stream);
    }

    #[test]
    fn strict_refuses_what_the_ir_cannot_hold_and_lenient_records_it() {
        let body = json!({"model": "m", "input": "hi", "previous_response_id": "resp_1",
                          "tools": [{"type": "web_search"}], "top_logprobs": 2});
        let body = serde_json::to_vec(&body).unwrap();
        assert!(matches!(
            decode_request(&body, &mut Lossy::strict()),
            Err(Error::Untranslatable { .. })
        ));
        let mut l = lenient();
        let req = decode_request(&body, &mut l).unwrap();
        assert_eq!(
            req.messages[0].content,
            vec![Part::Text { text: "hi".into() }]
        );
        assert_eq!(
            l.dropped,
            vec!["top_logprobs", "previous_response_id", "tools[0]"]
        );
        assert!(matches!(
            decode_request(b"{\"input\": 3}", &mut lenient()),
            Err(Error::Invalid(m)) if m.contains("input")
        ));
    }

    #[test]
    fn round_trips_requests() {
        // Defaults the encoder writes: `store: false`, `stream`, a tool's
        // `strict`, an image's `detail: auto`, `annotations` on output
        // text, and the encrypted-content include for a model that
        // reasons (not for `gpt-4.1` or `gpt-4o`); system
        // and developer messages become `instructions`.
        let corpus = vec![
            json!({"model": "gpt-4.1", "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
                   "store": false, "stream": false}),
            json!({"model": "gpt-5", "instructions": "Be brief.",
                   "input": [
                       {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                                                   {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"}]},
                       {"type": "reasoning", "id": "rs_9", "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}], "encrypted_content": "enc"},
                       {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                       {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
                       {"type": "function_call", "call_id": "c2", "name": "get", "arguments": "{\"x\":1}"},
                       {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                       {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": "data:image/jpeg;base64,AAA", "detail": "auto"}]},
                       {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]}
                   ],
                   "tools": [{"type": "function", "name": "get", "description": "Get", "parameters": {"type": "object", "properties": {}}, "strict": true}],
                   "tool_choice": {"type": "function", "name": "get"},
                   "parallel_tool_calls": true,
                   "max_output_tokens": 500, "temperature": 0.2, "top_p": 0.9,
                   "reasoning": {"effort": "low", "summary": "auto"},
                   "include": ["reasoning.encrypted_content"],
                   "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
                   "user": "u1", "store": false, "stream": true}),
            json!({"model": "gpt-4o", "input": [], "tool_choice": "required", "text": {"format": {"type": "json_object"}}, "store": false, "stream": false}),
        ];
        for x in corpus {
            let req =
                decode_request(&serde_json::to_vec(&x).unwrap(), &mut Lossy::strict()).unwrap();
            let back: Value =
                serde_json::from_slice(&encode_request(&req, &mut Lossy::strict()).unwrap())
                    .unwrap();
            assert_eq!(back, x);
        }
    }

    #[test]
    fn encoding_keeps_only_openai_state_and_names_what_it_cannot_say() {
        let req = Request {
            model: "gpt-5".into(),
            max_tokens: Some(5),
            messages: vec![
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![Part::Text { text: "q".into() }],
                },
                Message {
                    role: Role::Assistant,
                    origins: Vec::new(),
                    content: vec![
                        Part::Thinking {
                            text: "claude thought".into(),
                            signature: Some(Opaque {
                                family: Family::Anthropic,
                                value: "sig".into(),
                            }),
                            redacted: false,
                            id: None,
                        },
                        Part::ToolCall {
                            id: "toolu_1".into(),
                            name: "f".into(),
                            arguments: "{}".into(),
                            signature: None,
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![Part::ToolResult {
                        call_id: "toolu_1".into(),
                        name: None,
                        content: vec![Part::Text {
                            text: "boom".into(),
                        }],
                        is_error: true,
                    }],
                },
            ],
            ..Default::default()
        };
        let v: Value =
            serde_json::from_slice(&encode_request(&req, &mut Lossy::strict()).unwrap()).unwrap();
        assert_eq!(v["max_output_tokens"], 16);
        assert_eq!(v["store"], false);
        assert_eq!(
            v["input"],
            json!([
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
                {"type": "function_call", "call_id": "toolu_1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "toolu_1", "output": "Error: boom"}
            ])
        );
        let stop = Request {
            stop: vec!["END".into()],
            ..req
        };
        assert!(matches!(
            encode_request(&stop, &mut Lossy::strict()),
            Err(Error::Untranslatable { field, .. }) if field == "stop"
        ));
    }

    #[test]
    fn decodes_whole_answers() {
        let body = json!({
            "id": "resp_1", "object": "response", "created_at": 1700000000, "status": "completed", "model": "gpt-5",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "E"},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": "Hi", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}", "status": "completed"}
            ],
            "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60}, "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 130}
        });
        let r = decode_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Some(Usage {
                input: 40,
                cache_read: 60,
                cache_write: 0,
                output: 30,
                reasoning: 20
            })
        );
        assert_eq!(r.content.len(), 3);
        assert_eq!(r.created, Some(1700000000));
        let cut = json!({"id": "r", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []});
        assert_eq!(
            decode_response(cut.to_string().as_bytes()).unwrap().stop,
            StopReason::MaxTokens
        );
        let filtered = json!({"id": "r", "status": "incomplete", "incomplete_details": {"reason": "content_filter"}, "output": []});
        assert_eq!(
            decode_response(filtered.to_string().as_bytes())
                .unwrap()
                .stop,
            StopReason::ContentFilter
        );
        let refusal = json!({"id": "r", "status": "completed", "output": [{"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}]});
        assert_eq!(
            decode_response(refusal.to_string().as_bytes())
                .unwrap()
                .stop,
            StopReason::ContentFilter
        );
    }

    #[test]
    fn encodes_whole_answers_with_foreign_state_enveloped() {
        let resp = Response {
            id: "msg_01".into(),
            model: "claude".into(),
            content: vec![
                Part::Thinking {
                    text: "hmm".into(),
                    signature: Some(Opaque {
                        family: Family::Anthropic,
                        value: "SIG".into(),
                    }),
                    redacted: false,
                    id: None,
                },
                Part::Text {
                    text: "Hello".into(),
                },
            ],
            stop: StopReason::MaxTokens,
            usage: Some(Usage {
                input: 10,
                cache_read: 5,
                cache_write: 5,
                output: 7,
                reasoning: 3,
            }),
            created: None,
        };
        let opts = EncoderOptions {
            model: "gpt-x".into(),
            id: "resp_abc".into(),
            created: 42,
            ..Default::default()
        };
        let v: Value = serde_json::from_slice(&encode_response(&resp, &opts)).unwrap();
        assert_eq!(v["id"], "resp_abc");
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 7,
                   "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 27})
        );
        let enc = v["output"][0]["encrypted_content"].as_str().unwrap();
        assert_eq!(
            envelope::unwrap(enc, Family::OpenAi),
            Opaque {
                family: Family::Anthropic,
                value: "SIG".into()
            }
        );
        assert_eq!(v["output"][1]["content"][0]["text"], "Hello");
        // The client echoes the item back: the thinking returns intact.
        let echoed = json!({"model": "m", "input": [v["output"][0].clone()]});
        let req = decode_request(echoed.to_string().as_bytes(), &mut Lossy::strict()).unwrap();
        assert_eq!(
            req.messages[0].content[0],
            resp.content[0]
                .clone()
                .with_id(v["output"][0]["id"].as_str())
        );
    }

    impl Part {
        fn with_id(self, new: Option<&str>) -> Part {
            match self {
                Part::Thinking {
                    text,
                    signature,
                    redacted,
                    ..
                } => Part::Thinking {
                    text,
                    signature,
                    redacted,
                    id: new.map(str::to_string),
                },
                p => p,
            }
        }
    }

    fn decode_all(events: &[Value]) -> (Vec<Event>, bool) {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for e in events {
            d.event(e["type"].as_str().unwrap(), &e.to_string(), &mut out)
                .unwrap();
        }
        d.finish(&mut out);
        (out, d.complete())
    }

    fn upstream_stream() -> Vec<Value> {
        let resp = json!({"id": "resp_u", "object": "response", "status": "in_progress", "model": "gpt-5", "output": []});
        vec![
            json!({"type": "response.created", "sequence_number": 0, "response": resp}),
            json!({"type": "response.in_progress", "sequence_number": 1, "response": resp}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
            json!({"type": "response.reasoning_summary_part.added", "output_index": 0, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            json!({"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0, "delta": "Plan"}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Plan"}], "encrypted_content": "ENC"}}),
            json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
            json!({"type": "response.content_part.added", "output_index": 1, "content_index": 0, "part": {"type": "output_text", "text": ""}}),
            json!({"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "Hi"}),
            json!({"type": "response.output_text.done", "output_index": 1, "content_index": 0, "text": "Hi"}),
            json!({"type": "response.output_item.done", "output_index": 1, "item": {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "Hi"}]}}),
            json!({"type": "response.output_item.added", "output_index": 2, "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "a", "arguments": ""}}),
            json!({"type": "response.output_item.added", "output_index": 3, "item": {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "b", "arguments": ""}}),
            json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{\"x\":"}),
            json!({"type": "response.function_call_arguments.delta", "output_index": 3, "delta": "{}"}),
            json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "1}"}),
            json!({"type": "response.function_call_arguments.done", "output_index": 2, "arguments": "{\"x\":1}"}),
            json!({"type": "response.output_item.done", "output_index": 2, "item": {"type": "function_call", "call_id": "call_1", "name": "a", "arguments": "{\"x\":1}"}}),
            json!({"type": "response.output_item.done", "output_index": 3, "item": {"type": "function_call", "call_id": "call_2", "name": "b", "arguments": "{}"}}),
            json!({"type": "response.completed", "response": {"id": "resp_u", "status": "completed", "model": "gpt-5", "output": [],
                   "usage": {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 10}, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5}}}}),
        ]
    }

    #[test]
    fn decodes_a_stream_golden() {
        let (events, complete) = decode_all(&upstream_stream());
        assert!(complete);
        let call = |id: &str, name: &str| Block::ToolCall {
            id: id.into(),
            name: name.into(),
            signature: None,
        };
        assert_eq!(
            events,
            vec![
                Event::Start {
                    id: "resp_u".into(),
                    model: "gpt-5".into()
                },
                Event::BlockStart {
                    index: 0,
                    block: Block::Thinking {
                        id: Some("rs_1".into()),
                        redacted: false
                    }
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Thinking("Plan".into())
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Signature(Opaque {
                        family: Family::OpenAi,
                        value: "ENC".into()
                    })
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    block: Block::Text
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Text("Hi".into())
                },
                Event::BlockStop { index: 1 },
                Event::BlockStart {
                    index: 2,
                    block: call("call_1", "a")
                },
                Event::BlockStart {
                    index: 3,
                    block: call("call_2", "b")
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Arguments("{\"x\":".into())
                },
                Event::Delta {
                    index: 3,
                    delta: Delta::Arguments("{}".into())
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Arguments("1}".into())
                },
                Event::BlockStop { index: 2 },
                Event::BlockStop { index: 3 },
                Event::Usage(Usage {
                    input: 40,
                    cache_read: 10,
                    cache_write: 0,
                    output: 20,
                    reasoning: 5
                }),
                Event::Stop(StopReason::ToolUse),
            ]
        );
        // Feeding the same events again gives the same result.
        assert_eq!(decode_all(&upstream_stream()).0, events);
    }

    #[test]
    fn arguments_only_in_done_events_are_emitted_once() {
        let only_done = vec![
            json!({"type": "response.created", "response": {"id": "r", "model": "m"}}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}}),
            json!({"type": "response.function_call_arguments.done", "output_index": 0, "arguments": "{\"q\":2}"}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"q\":2}"}}),
            json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "function_call", "call_id": "d", "name": "g", "arguments": ""}}),
            json!({"type": "response.output_item.done", "output_index": 1, "item": {"type": "function_call", "call_id": "d", "name": "g", "arguments": "{\"z\":3}"}}),
            json!({"type": "response.incomplete", "response": {"id": "r", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []}}),
        ];
        let (events, complete) = decode_all(&only_done);
        assert!(complete);
        let args: Vec<&Event> = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Delta {
                        delta: Delta::Arguments(_),
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(
            args,
            vec![
                &Event::Delta {
                    index: 0,
                    delta: Delta::Arguments("{\"q\":2}".into())
                },
                &Event::Delta {
                    index: 1,
                    delta: Delta::Arguments("{\"z\":3}".into())
                }
            ]
        );
        assert_eq!(events.last(), Some(&Event::Stop(StopReason::MaxTokens)));
        // A stream cut in the middle of arguments: blocks closed, not complete.
        let cut = &upstream_stream()[..15];
        let (events, complete) = decode_all(cut);
        assert!(!complete);
        let starts = events
            .iter()
            .filter(|e| matches!(e, Event::BlockStart { .. }))
            .count();
        let stops = events
            .iter()
            .filter(|e| matches!(e, Event::BlockStop { .. }))
            .count();
        assert_eq!(starts, stops);
    }

    fn encode(events: Vec<Event>, fallback: Option<Usage>) -> Vec<(String, Value)> {
        let mut e = Encoder::new(EncoderOptions {
            model: "gpt-5".into(),
            id: "resp_gw".into(),
            created: 7,
            ..Default::default()
        });
        let mut out = Vec::new();
        for ev in events {
            e.event(ev, &mut out);
        }
        e.finish(fallback, &mut out);
        e.finish(fallback, &mut out);
        frames(&out)
    }

    #[test]
    fn encodes_a_stream_golden() {
        let sig = Opaque {
            family: Family::Anthropic,
            value: "S".into(),
        };
        let frames = encode(
            vec![
                Event::Start {
                    id: "msg_1".into(),
                    model: "claude".into(),
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
                    delta: Delta::Thinking("think".into()),
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Signature(sig.clone()),
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    block: Block::Text,
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Text("Hel".into()),
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Text("lo".into()),
                },
                Event::BlockStop { index: 1 },
                Event::BlockStart {
                    index: 2,
                    block: Block::ToolCall {
                        id: "toolu_1".into(),
                        name: "f".into(),
                        signature: None,
                    },
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Arguments("{\"a\":".into()),
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Arguments("1}".into()),
                },
                Event::BlockStop { index: 2 },
                Event::Stop(StopReason::ToolUse),
                Event::Usage(Usage {
                    input: 3,
                    cache_read: 2,
                    cache_write: 0,
                    output: 9,
                    reasoning: 4,
                }),
            ],
            None,
        );
        let types: Vec<&str> = frames.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            types,
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (name, data)) in frames.iter().enumerate() {
            assert_eq!(data["type"], name.as_str());
            assert_eq!(data["sequence_number"], i as u64);
        }
        assert_eq!(frames[0].1["response"]["id"], "resp_gw");
        assert_eq!(frames[0].1["response"]["status"], "in_progress");
        assert_eq!(frames[0].1["response"]["usage"], Value::Null);
        let reasoning = &frames[7].1["item"];
        assert!(reasoning["id"].as_str().unwrap().starts_with("rs_"));
        assert_eq!(
            reasoning["summary"],
            json!([{"type": "summary_text", "text": "think"}])
        );
        assert_eq!(
            envelope::unwrap(
                reasoning["encrypted_content"].as_str().unwrap(),
                Family::OpenAi
            ),
            sig
        );
        assert!(frames[8].1["item"]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_"));
        assert_eq!(frames[12].1["text"], "Hello");
        assert_eq!(frames[18].1["arguments"], "{\"a\":1}");
        assert_eq!(frames[19].1["item"]["arguments"], "{\"a\":1}");
        assert_eq!(frames[19].1["item"]["call_id"], "toolu_1");
        assert!(frames[19].1["item"]["id"]
            .as_str()
            .unwrap()
            .starts_with("fc_"));
        let done = &frames[20].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"].as_array().unwrap().len(), 3);
        assert_eq!(done["output"][1]["content"][0]["text"], "Hello");
        assert_eq!(
            done["usage"],
            json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 9,
                   "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 14})
        );
    }

    #[test]
    fn overlapping_calls_keep_their_items_and_a_cut_is_incomplete() {
        let frames = encode(
            vec![
                Event::Start {
                    id: "x".into(),
                    model: "m".into(),
                },
                Event::BlockStart {
                    index: 0,
                    block: Block::ToolCall {
                        id: "c0".into(),
                        name: "a".into(),
                        signature: None,
                    },
                },
                Event::BlockStart {
                    index: 1,
                    block: Block::ToolCall {
                        id: "c1".into(),
                        name: "b".into(),
                        signature: None,
                    },
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Arguments("{\"y\"".into()),
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Arguments("{}".into()),
                },
                Event::BlockStop { index: 0 },
                Event::Delta {
                    index: 1,
                    delta: Delta::Arguments(":2".into()),
                },
                Event::Stop(StopReason::MaxTokens),
            ],
            Some(Usage {
                input: 1,
                output: 2,
                ..Default::default()
            }),
        );
        let deltas: Vec<(u64, &str)> = frames
            .iter()
            .filter(|(n, _)| n == "response.function_call_arguments.delta")
            .map(|(_, d)| {
                (
                    d["output_index"].as_u64().unwrap(),
                    d["delta"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(deltas, vec![(1, "{\"y\""), (0, "{}"), (1, ":2")]);
        let last = frames.last().unwrap();
        assert_eq!(last.0, "response.incomplete");
        assert_eq!(
            last.1["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(last.1["response"]["output"][1]["arguments"], "{\"y\":2");
        assert_eq!(last.1["response"]["usage"]["output_tokens"], 2);
        let dones = frames
            .iter()
            .filter(|(n, _)| n == "response.output_item.done")
            .count();
        assert_eq!(dones, 2);
    }

    #[test]
    fn a_failure_is_the_one_terminal_event() {
        let mut e = Encoder::new(EncoderOptions {
            id: "resp_1".into(),
            ..Default::default()
        });
        let mut out = Vec::new();
        e.event(
            Event::Start {
                id: "r".into(),
                model: "m".into(),
            },
            &mut out,
        );
        e.event(
            Event::BlockStart {
                index: 0,
                block: Block::Text,
            },
            &mut out,
        );
        e.event(
            Event::Delta {
                index: 0,
                delta: Delta::Text("par".into()),
            },
            &mut out,
        );
        e.fail("upstream went away", &mut out);
        e.finish(None, &mut out);
        e.event(
            Event::Delta {
                index: 0,
                delta: Delta::Text("x".into()),
            },
            &mut out,
        );
        let f = frames(&out);
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[names.len() - 2..],
            &["response.output_item.done", "response.failed"]
        );
        let failed = &f.last().unwrap().1["response"];
        assert_eq!(failed["status"], "failed");
        assert_eq!(
            failed["error"],
            json!({"code": "server_error", "message": "upstream went away"})
        );
        assert_eq!(failed["output"][0]["status"], "incomplete");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Open(u8),
        Text(u8, String),
        Args(u8, String),
        Close(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..4).prop_map(Step::Open),
            (0u8..4, "[a-z\"{}]{0,5}").prop_map(|(i, s)| Step::Text(i, s)),
            (0u8..4, "[a-z\"{}]{0,5}").prop_map(|(i, s)| Step::Args(i, s)),
            (0u8..4).prop_map(Step::Close),
        ]
    }

    proptest! {
        /// Whatever the IR events, the client stream is valid SSE of JSON,
        /// numbered in order, every item added is done, and exactly one
        /// terminal event ends it.
        #[test]
        fn encoder_output_is_always_well_formed(steps in proptest::collection::vec(step(), 0..40), stop in 0u8..3) {
            let mut events = vec![Event::Start { id: "r".into(), model: "m".into() }];
            let mut open = std::collections::HashSet::new();
            let mut started = std::collections::HashSet::new();
            for s in steps {
                match s {
                    Step::Open(i) if !started.contains(&i) => {
                        started.insert(i);
                        open.insert(i);
                        let block = match i % 3 {
                            0 => Block::Text,
                            1 => Block::ToolCall { id: format!("c{i}"), name: "f".into(), signature: None },
                            _ => Block::Thinking { id: None, redacted: false },
                        };
                        events.push(Event::BlockStart { index: i as usize, block });
                    }
                    Step::Text(i, t) if open.contains(&i) => events.push(Event::Delta { index: i as usize, delta: if i % 3 == 2 { Delta::Thinking(t) } else { Delta::Text(t) } }),
                    Step::Args(i, t) if open.contains(&i) => events.push(Event::Delta { index: i as usize, delta: Delta::Arguments(t) }),
                    Step::Close(i) if open.remove(&i) => events.push(Event::BlockStop { index: i as usize }),
                    _ => {}
                }
            }
            events.push(Event::Stop(match stop { 0 => StopReason::EndTurn, 1 => StopReason::MaxTokens, _ => StopReason::ToolUse }));
            let f = encode(events, None);
            let terminals = f.iter().filter(|(n, _)| n == "response.completed" || n == "response.incomplete" || n == "response.failed").count();
            prop_assert_eq!(terminals, 1);
            prop_assert!(f.last().unwrap().0.starts_with("response.completed") || f.last().unwrap().0 == "response.incomplete");
            for (i, (_, d)) in f.iter().enumerate() {
                prop_assert_eq!(d["sequence_number"].as_u64(), Some(i as u64));
            }
            let added = f.iter().filter(|(n, _)| n == "response.output_item.added").count();
            let done = f.iter().filter(|(n, _)| n == "response.output_item.done").count();
            prop_assert_eq!(added, done);
        }
    }
}
