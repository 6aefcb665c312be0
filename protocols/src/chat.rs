//! OpenAI Chat Completions (`/v1/chat/completions`): requests, whole
//! answers, `chat.completion.chunk` streams and the OpenAI error shape, to
//! and from the intermediate form.
//!
//! Chat has no field for opaque reasoning state. A client of this protocol
//! gets a turn's thinking (signatures included) carried inside the first
//! tool call's id ([`envelope::wrap_call_id`]) and the visible thinking in
//! the non-standard but widely used `reasoning_content`; both come back
//! in its next request and are restored here.
//!
//! Round trip (`encode_request(decode_request(x))`) gives `x` back as a
//! JSON value, except for these normalisations: a content array of one
//! text part becomes a string; `stop` is always an array; tools without
//! `parameters` get an empty object schema; `max_completion_tokens` is
//! written only when reasoning is set (else `max_tokens`);
//! `reasoning_effort: "none"` is not written; streaming requests always
//! ask for `stream_options.include_usage`; legacy `functions` /
//! `function_call` become `tools` / `tool_calls`; fields in [`IGNORED`]
//! are not written.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::envelope::{self, CallId};
use crate::error::{ApiError, Error, ErrorType, Lossy};
use crate::ir::{
    Effort, Image, Message, Names, Origin, Part, Path, Reasoning, Request, Response,
    ResponseFormat, Role, StopReason, Tool, ToolChoice, Usage,
};
use crate::json::Text;
use crate::stream::{sse, Block, Delta, EncoderOptions, Event, StreamDecoder, StreamEncoder};

pub const NAME: &str = "OpenAI Chat Completions";

/// The target named when a client's field has no place in the
/// intermediate form (whatever the upstream protocol is).
const ANY_TARGET: &str = "target";

/// Request fields that are only hints, safe to ignore, and therefore
/// ignored silently (any other field the intermediate form cannot hold is
/// reported through [`Lossy`]): `stream_options` (the gateway asks for
/// usage itself and honours the client's `include_usage`), `store`,
/// `metadata`, `service_tier`, `prompt_cache_key`,
/// `prompt_cache_retention`, `safety_identifier`, `user` (kept as the
/// end-user id), `n: 1`, `logprobs: false`, `modalities: ["text"]`; on
/// messages the participant `name`; on image parts `detail`; on any part
/// `cache_control`.
pub const IGNORED: &[&str] = &[
    "stream_options",
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "messages[].name",
    "messages[].content[].image_url.detail",
    "messages[].content[].cache_control",
];

// ---------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Option<Vec<ChatTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    functions: Option<Vec<ChatFunctionDef>>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    reasoning_effort: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    modalities: Option<Vec<String>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<ChatContent>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ChatToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    function_call: Option<ChatFunctionCall>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChatContent {
    Text(String),
    Parts(Vec<ChatPart>),
}

/// A content part; `kind` names the variant, so a part type added
/// tomorrow is read and named rather than refused.
#[derive(Debug, Deserialize)]
struct ChatPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image_url: Option<ChatImageUrl>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ChatImageUrl {
    url: String,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A tool call in a request (answers read [`AnswerToolCall`]).
#[derive(Debug, Deserialize)]
struct ChatToolCall {
    /// A streamed call's index, which some clients send back: accepted
    /// and passed over.
    #[serde(default)]
    #[allow(dead_code)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    function: Option<ChatFunctionCall>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ChatFunctionCall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ChatTool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    function: Option<ChatFunctionDef>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct ChatFunctionDef {
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

// The answer side reads only the fields it uses: every other member of an
// answer or chunk is passed over by the parser without being built (no
// catch-all map), which is most of what translating an answer costs.

/// A whole answer or a stream chunk.
#[derive(Debug, Deserialize)]
struct ChatCompletion<'a> {
    /// Borrowed: a stream repeats it in every chunk and only the first is
    /// read.
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<Value>,
    #[serde(default)]
    choices: Vec<ChatChoice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChatChoice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<ChatDelta>,
    #[serde(default)]
    delta: Option<ChatDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// An answer's message, or a chunk's delta.
#[derive(Debug, Default, Deserialize)]
struct ChatDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    /// The name some OpenAI-compatible servers use for `reasoning_content`.
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<AnswerToolCall>>,
    #[serde(default)]
    function_call: Option<AnswerFunction>,
}

/// A tool call in an answer or a stream delta (where every field but
/// `index` may be missing).
#[derive(Debug, Deserialize)]
struct AnswerToolCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<AnswerFunction>,
}

#[derive(Debug, Default, Deserialize)]
struct AnswerFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek's name for cached input.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

// What a Chat client is sent, written straight from these (fields in
// alphabetical order: the order a `serde_json::Map` writes them in).

#[derive(Serialize)]
struct UsageOut {
    completion_tokens: u64,
    completion_tokens_details: ReasoningTokensOut,
    prompt_tokens: u64,
    prompt_tokens_details: CachedTokensOut,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokensOut {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct CachedTokensOut {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    arguments: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    function: FunctionOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

/// A whole answer's message.
#[derive(Serialize)]
struct MessageOut<'a> {
    content: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<Text<'a>>,
    refusal: Option<()>,
    role: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    finish_reason: Option<&'static str>,
    index: u32,
    logprobs: Option<()>,
    message: MessageOut<'a>,
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    choices: [ChoiceOut<'a>; 1],
    created: i64,
    id: &'a str,
    model: &'a str,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

/// A chunk's delta: only the fields given are written.
#[derive(Default, Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ChunkChoiceOut<'a> {
    delta: DeltaOut<'a>,
    finish_reason: Option<&'static str>,
    index: u32,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    choices: &'a [ChunkChoiceOut<'a>],
    created: i64,
    id: &'a str,
    model: &'a str,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

const TOP_IGNORED: &[&str] = &[
    "stream_options",
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
];

/// A Chat client's names for the settings and fields encoders may refuse.
const NAMES: Names = Names {
    call_id: "tool_call_id",
    ..Names::IR
};

/// A client's Chat Completions body as the intermediate form.
pub fn decode_request(body: &[u8], lossy: &mut Lossy) -> Result<Request, Error> {
    let r: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("invalid {NAME} request: {e}")))?;
    lossy.unknown(&r.extra, "", TOP_IGNORED)?;
    if r.n.is_some_and(|n| n > 1) {
        lossy.drop("n", ANY_TARGET, "only one choice can be generated")?;
    }
    if r.logprobs == Some(true) {
        lossy.drop(
            "logprobs",
            ANY_TARGET,
            "log probabilities are not available",
        )?;
    }
    if let Some(m) = &r.modalities {
        if m.iter().any(|m| m != "text") {
            lossy.drop("modalities", ANY_TARGET, "only text output is available")?;
        }
    }

    let mut req = Request {
        model: r.model,
        max_tokens: r.max_completion_tokens.or(r.max_tokens),
        temperature: r.temperature,
        top_p: r.top_p,
        seed: r.seed,
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
        stream: r.stream.unwrap_or(false),
        user: r.user,
        parallel_tool_calls: r.parallel_tool_calls,
        stop: match r.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        names: NAMES,
        ..Request::default()
    };

    // Tools, new style and legacy.
    for (i, t) in r.tools.unwrap_or_default().into_iter().enumerate() {
        let path = Path::at(&["tools"], &[i]);
        match (t.kind.as_str(), t.function) {
            ("function", Some(f)) => {
                lossy.unknown(&t.extra, path, &[])?;
                req.tools
                    .push(function_tool(f, path.field("function"), lossy)?);
            }
            ("function", None) => {
                return Err(invalid(format!("{path}.function is missing")));
            }
            (kind, _) => lossy.drop(
                path,
                ANY_TARGET,
                &format!("'{kind}' tools are not function tools"),
            )?,
        }
    }
    for (i, f) in r.functions.unwrap_or_default().into_iter().enumerate() {
        req.tools
            .push(function_tool(f, Path::at(&["functions"], &[i]), lossy)?);
    }
    let choice = match (&r.tool_choice, &r.function_call) {
        (Some(tc), _) => Some((tc, "tool_choice")),
        (None, Some(fc)) => Some((fc, "function_call")),
        (None, None) => None,
    };
    if let Some((tc, field)) = choice {
        req.tool_choice = decode_tool_choice(tc, field, lossy)?;
    }

    if let Some(rf) = &r.response_format {
        req.response_format = Some(decode_response_format(rf)?);
    }
    if let Some(e) = &r.reasoning_effort {
        req.reasoning = Some(match e.as_str() {
            "none" => Reasoning {
                enabled: false,
                effort: None,
                budget_tokens: None,
                include_thoughts: false,
            },
            other => {
                // `xhigh` and the like: the highest effort the form has.
                let effort = Effort::parse(other).unwrap_or(Effort::High);
                Reasoning {
                    enabled: true,
                    effort: Some(effort),
                    budget_tokens: None,
                    include_thoughts: false,
                }
            }
        });
    }

    decode_messages(r.messages, &mut req, lossy)?;
    Ok(req)
}

fn function_tool(
    f: ChatFunctionDef,
    path: impl std::fmt::Display,
    lossy: &mut Lossy,
) -> Result<Tool, Error> {
    lossy.unknown(&f.extra, path, &[])?;
    Ok(Tool {
        name: f.name,
        description: f.description,
        parameters: f
            .parameters
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        strict: f.strict,
    })
}

/// `tool_choice`, or the legacy `function_call` (`field` is which).
fn decode_tool_choice(
    v: &Value,
    field: &str,
    lossy: &mut Lossy,
) -> Result<Option<ToolChoice>, Error> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(invalid(format!("{field}: unknown value '{other}'"))),
        },
        Value::Object(o) => {
            // {"type":"function","function":{"name":..}} or legacy {"name":..}
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str);
            match name {
                Some(n) => ToolChoice::Named(n.to_string()),
                None => {
                    lossy.drop(
                        field,
                        ANY_TARGET,
                        "only auto, none, required and one named function are available",
                    )?;
                    return Ok(None);
                }
            }
        }
        _ => return Err(invalid(format!("{field} must be a string or an object"))),
    }))
}

fn decode_response_format(v: &Value) -> Result<ResponseFormat, Error> {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    Ok(match kind {
        "text" => ResponseFormat::Text,
        "json_object" => ResponseFormat::JsonObject,
        "json_schema" => {
            let js = v
                .get("json_schema")
                .ok_or_else(|| invalid("response_format.json_schema is missing"))?;
            ResponseFormat::JsonSchema {
                name: js
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_string(),
                schema: js.get("schema").cloned().unwrap_or_else(|| json!({})),
                strict: js.get("strict").and_then(Value::as_bool),
                description: js
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }
        }
        other => {
            return Err(invalid(format!(
                "response_format.type: unknown value '{other}'"
            )))
        }
    })
}

/// Text and image parts of message `i`'s content, each with its path.
fn decode_content(
    content: Option<ChatContent>,
    i: usize,
    lossy: &mut Lossy,
) -> Result<Vec<(Part, Path)>, Error> {
    let mut out = Vec::new();
    match content {
        None => {}
        Some(ChatContent::Text(t)) => out.push((
            Part::Text { text: t },
            Path::at(&["messages", "content"], &[i, Path::KEY]),
        )),
        Some(ChatContent::Parts(parts)) => {
            for (j, p) in parts.into_iter().enumerate() {
                let pp = Path::at(&["messages", "content"], &[i, j]);
                lossy.unknown(&p.extra, pp, &["cache_control"])?;
                match p.kind.as_str() {
                    "text" => out.push((
                        Part::Text {
                            text: p.text.unwrap_or_default(),
                        },
                        pp,
                    )),
                    "refusal" => out.push((
                        Part::Text {
                            text: p.refusal.unwrap_or_default(),
                        },
                        pp,
                    )),
                    "image_url" => {
                        let iu = p
                            .image_url
                            .ok_or_else(|| invalid(format!("{pp}.image_url is missing")))?;
                        lossy.unknown(&iu.extra, pp.field("image_url"), &["detail"])?;
                        out.push((Part::Image(Image::from_url(&iu.url)), pp));
                    }
                    other => lossy.drop(
                        pp,
                        ANY_TARGET,
                        &format!("'{other}' content parts are not available"),
                    )?,
                }
            }
        }
    }
    Ok(out)
}

/// Appends decoded parts to a message.
fn push_all(m: &mut Message, parts: Vec<(Part, Path)>) {
    for (p, at) in parts {
        m.push(p, Origin::at(at));
    }
}

/// The name of the call `id` among the messages so far.
fn call_name(messages: &[Message], id: &str) -> Option<String> {
    messages.iter().rev().find_map(|m| {
        m.content.iter().find_map(|p| match p {
            Part::ToolCall { id: i, name, .. } if i == id => Some(name.clone()),
            _ => None,
        })
    })
}

fn decode_messages(
    messages: Vec<ChatMessage>,
    req: &mut Request,
    lossy: &mut Lossy,
) -> Result<(), Error> {
    // Legacy function calls have no id: the last call of each name gets one.
    let mut legacy_ids: HashMap<String, String> = HashMap::new();
    // Whether the last message pushed holds tool results only (so that
    // consecutive tool messages merge into one user message).
    let mut last_is_results = false;
    for (i, m) in messages.into_iter().enumerate() {
        let path = Path::at(&["messages"], &[i]);
        lossy.unknown(&m.extra, path, &[])?;
        let _ = m.name; // a participant name is only a hint
        match m.role.as_str() {
            "system" | "developer" => {
                for (p, at) in decode_content(m.content, i, lossy)? {
                    req.system.push(p);
                    req.system_origins.push(at);
                }
                continue;
            }
            "user" => {
                let mut msg = Message::new(Role::User, Vec::new());
                push_all(&mut msg, decode_content(m.content, i, lossy)?);
                req.messages.push(msg);
                last_is_results = false;
            }
            "assistant" => {
                let mut msg = Message::new(Role::Assistant, Vec::new());
                let mut restored: Vec<(Part, Path)> = Vec::new();
                let mut calls = Vec::new();
                for (j, tc) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    let tp = Path::at(&["messages", "tool_calls"], &[i, j]);
                    lossy.unknown(&tc.extra, tp, &["index"])?;
                    if tc.kind.as_deref().is_some_and(|k| k != "function") {
                        lossy.drop(tp, ANY_TARGET, "only function calls are available")?;
                        continue;
                    }
                    let f = tc
                        .function
                        .ok_or_else(|| invalid(format!("{tp}.function is missing")))?;
                    lossy.unknown(&f.extra, tp.field("function"), &[])?;
                    let raw_id = tc
                        .id
                        .ok_or_else(|| invalid(format!("{tp}.id is missing")))?;
                    let carried = envelope::unwrap_call_id(&raw_id);
                    if restored.is_empty() {
                        restored = carried.thinking.into_iter().map(|t| (t, tp)).collect();
                    }
                    let call = Part::ToolCall {
                        id: carried.id,
                        name: f.name.unwrap_or_default(),
                        arguments: f.arguments.unwrap_or_default(),
                        signature: carried.signature,
                    };
                    let args = Path::at(
                        &["messages", "tool_calls", "function", "arguments"],
                        &[i, j],
                    );
                    calls.push((call, tp, args));
                }
                if let Some(f) = m.function_call {
                    let name = f.name.unwrap_or_default();
                    let id = format!("call_legacy_{i}");
                    legacy_ids.insert(name.clone(), id.clone());
                    let call = Part::ToolCall {
                        id,
                        name,
                        arguments: f.arguments.unwrap_or_default(),
                        signature: None,
                    };
                    calls.push((
                        call,
                        Path::at(&["messages", "function_call"], &[i]),
                        Path::at(&["messages", "function_call", "arguments"], &[i]),
                    ));
                }
                // Thinking first: carried state wins over the visible text,
                // which it contains.
                if !restored.is_empty() {
                    push_all(&mut msg, restored);
                } else if let Some(r) = m.reasoning_content.filter(|r| !r.is_empty()) {
                    msg.push(
                        Part::Thinking {
                            text: r,
                            signature: None,
                            redacted: false,
                            id: None,
                        },
                        Origin::at(Path::at(&["messages", "reasoning_content"], &[i])),
                    );
                }
                push_all(&mut msg, decode_content(m.content, i, lossy)?);
                if let Some(r) = m.refusal.filter(|r| !r.is_empty()) {
                    msg.push(
                        Part::Text { text: r },
                        Origin::at(Path::at(&["messages", "refusal"], &[i])),
                    );
                }
                for (call, at, args) in calls {
                    msg.push(call, Origin::call(at, args));
                }
                req.messages.push(msg);
                last_is_results = false;
            }
            "tool" | "function" => {
                let (call_id, name) = if m.role == "tool" {
                    let raw = m
                        .tool_call_id
                        .ok_or_else(|| invalid(format!("{path}.tool_call_id is missing")))?;
                    let id = envelope::unwrap_call_id(&raw).id;
                    let name = call_name(&req.messages, &id);
                    (id, name)
                } else {
                    let name = m.name.clone().unwrap_or_default();
                    let id = legacy_ids
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| format!("call_legacy_{i}"));
                    (id, Some(name))
                };
                let (content, inner): (Vec<Part>, Vec<Path>) =
                    decode_content(m.content, i, lossy)?.into_iter().unzip();
                let result = Part::ToolResult {
                    call_id,
                    name,
                    content,
                    is_error: false,
                };
                let origin = Origin::result(path, inner);
                match req.messages.last_mut() {
                    Some(last) if last_is_results => last.push(result, origin),
                    _ => {
                        let mut msg = Message::new(Role::User, Vec::new());
                        msg.push(result, origin);
                        req.messages.push(msg);
                    }
                }
                last_is_results = true;
            }
            other => return Err(invalid(format!("{path}.role: unknown role '{other}'"))),
        }
    }
    Ok(())
}

fn text_of(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Text and image parts (each with its path in the client's body) as Chat
/// content: a string for one text part, else an array of parts.
fn encode_content(
    parts: &[(&Part, Path)],
    images: bool,
    lossy: &mut Lossy,
) -> Result<Value, Error> {
    if let [(Part::Text { text }, _)] = parts {
        return Ok(Value::String(text.clone()));
    }
    let mut out = Vec::new();
    for (p, at) in parts {
        match p {
            Part::Text { text } => out.push(json!({"type": "text", "text": text})),
            Part::Image(img) if images => {
                out.push(json!({"type": "image_url", "image_url": {"url": img.to_url()}}))
            }
            Part::Image(_) => lossy.drop(at, NAME, "images are not available here")?,
            _ => {}
        }
    }
    if out.is_empty() {
        return Ok(Value::String(String::new()));
    }
    Ok(Value::Array(out))
}

/// The intermediate form as a body for a Chat Completions upstream.
pub fn encode_request(req: &Request, lossy: &mut Lossy) -> Result<Vec<u8>, Error> {
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    let mut messages = Vec::new();
    for (i, p) in req.system.iter().enumerate() {
        match p {
            Part::Text { text } => messages.push(json!({"role": "system", "content": text})),
            _ => lossy.drop(req.system_path(i), NAME, "system messages take text only")?,
        }
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::User => {
                let mut rest = Vec::new();
                for (j, p) in m.content.iter().enumerate() {
                    match p {
                        Part::ToolResult {
                            call_id,
                            content,
                            is_error,
                            ..
                        } => {
                            let parts: Vec<(&Part, Path)> = content
                                .iter()
                                .enumerate()
                                .map(|(k, c)| (c, m.inner_path(i, j, k)))
                                .collect();
                            let mut c = encode_content(&parts, false, lossy)?;
                            if *is_error {
                                // Chat has no error flag: say it in the text.
                                c = Value::String(format!("Error: {}", text_of(content)));
                            }
                            messages.push(
                                json!({"role": "tool", "tool_call_id": call_id, "content": c}),
                            );
                        }
                        Part::Text { .. } | Part::Image(_) => rest.push((p, m.path(i, j))),
                        _ => {}
                    }
                }
                if !rest.is_empty() {
                    let c = encode_content(&rest, true, lossy)?;
                    messages.push(json!({"role": "user", "content": c}));
                }
            }
            Role::Assistant => {
                let mut msg = Map::new();
                msg.insert("role".into(), json!("assistant"));
                let texts: Vec<(&Part, Path)> = m
                    .content
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| matches!(p, Part::Text { .. }))
                    .map(|(j, p)| (p, m.path(i, j)))
                    .collect();
                let calls: Vec<Value> = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolCall {
                            id,
                            name,
                            arguments,
                            ..
                        } => Some(json!({
                            "id": id,
                            "type": "function",
                            "function": {
                                "name": name,
                                "arguments": if arguments.is_empty() { "{}" } else { arguments },
                            },
                        })),
                        _ => None,
                    })
                    .collect();
                // Visible thinking of no family (a chat upstream's own
                // `reasoning_content`) goes back as it came; signed
                // thinking has no field here and is dropped.
                let reasoning: String = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::Thinking {
                            text,
                            signature: None,
                            redacted: false,
                            ..
                        } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                if !reasoning.is_empty() {
                    msg.insert("reasoning_content".into(), json!(reasoning));
                }
                let content = if texts.is_empty() {
                    if calls.is_empty() {
                        json!("")
                    } else {
                        Value::Null
                    }
                } else {
                    encode_content(&texts, false, lossy)?
                };
                msg.insert("content".into(), content);
                if !calls.is_empty() {
                    msg.insert("tool_calls".into(), Value::Array(calls));
                }
                messages.push(Value::Object(msg));
            }
        }
    }
    body.insert("messages".into(), Value::Array(messages));

    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    f.insert("description".into(), json!(d));
                }
                f.insert("parameters".into(), t.parameters.clone());
                if let Some(s) = t.strict {
                    f.insert("strict".into(), json!(s));
                }
                json!({"type": "function", "function": f})
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
                ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
            },
        );
    }
    if let Some(p) = req.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(p));
    }
    let reasoning_on = req.reasoning.as_ref().filter(|r| r.enabled);
    if let Some(m) = req.max_tokens {
        let key = if reasoning_on.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body.insert(key.into(), json!(m));
    }
    if let Some(r) = reasoning_on {
        let effort = r.effort().unwrap_or(Effort::Medium);
        body.insert("reasoning_effort".into(), json!(effort.as_str()));
    }
    for (k, v) in [
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("presence_penalty", req.presence_penalty),
        ("frequency_penalty", req.frequency_penalty),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    if let Some(s) = req.seed {
        body.insert("seed".into(), json!(s));
    }
    if req.top_k.is_some() {
        lossy.drop(req.names.top_k, NAME, "no top_k sampling parameter")?;
    }
    if !req.stop.is_empty() {
        body.insert("stop".into(), json!(req.stop));
    }
    if let Some(rf) = &req.response_format {
        body.insert(
            "response_format".into(),
            match rf {
                ResponseFormat::Text => json!({"type": "text"}),
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                    description,
                } => {
                    let mut js = Map::new();
                    js.insert("name".into(), json!(name));
                    if let Some(d) = description {
                        js.insert("description".into(), json!(d));
                    }
                    js.insert("schema".into(), schema.clone());
                    if let Some(s) = strict {
                        js.insert("strict".into(), json!(s));
                    }
                    json!({"type": "json_schema", "json_schema": js})
                }
            },
        );
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(u) = &req.user {
        body.insert("user".into(), json!(u));
    }
    serde_json::to_vec(&Value::Object(body)).map_err(|e| invalid(e.to_string()))
}

// ---------------------------------------------------------------------------
// Whole answers
// ---------------------------------------------------------------------------

fn usage_of(u: &ChatUsage) -> Usage {
    let prompt = u.prompt_tokens.unwrap_or(0);
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .or(u.prompt_cache_hit_tokens)
        .unwrap_or(0)
        .min(prompt);
    Usage {
        input: prompt - cached,
        cache_read: cached,
        cache_write: 0,
        output: u.completion_tokens.unwrap_or(0),
        reasoning: u
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
    }
}

fn stop_of(finish: &str, refused: bool) -> StopReason {
    match finish {
        "stop" if refused => StopReason::ContentFilter,
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        // `function_call` (deprecated) among them: kept as it came.
        other => StopReason::Other(other.to_string()),
    }
}

/// The finish reason a Chat client gets: a reason Chat has no name for
/// becomes the nearest one it has.
fn finish_of(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence(_) => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
        StopReason::Other(raw) => finish_of(&crate::stop::nearest(raw)),
    }
}

/// A stop reason as a Chat upstream names it (`finish_reason`).
pub fn stop_name(stop: &StopReason) -> String {
    match stop {
        StopReason::Other(raw) => raw.clone(),
        named => finish_of(named).to_string(),
    }
}

fn created_of(v: &Option<Value>) -> Option<i64> {
    v.as_ref()
        .and_then(|c| c.as_i64().or_else(|| c.as_f64().map(|f| f as i64)))
}

/// An upstream's whole Chat Completions answer.
pub fn decode_response(body: &[u8]) -> Result<Response, Error> {
    // UTF-8 checked once for the whole body rather than string by string.
    let body = std::str::from_utf8(body)
        .map_err(|e| Error::Upstream(format!("{NAME} answer is not UTF-8: {e}")))?;
    let c: ChatCompletion =
        serde_json::from_str(body).map_err(|e| Error::Upstream(format!("{NAME} answer: {e}")))?;
    let choice = c
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| Error::Upstream(format!("{NAME} answer has no choices")))?;
    let m = choice.message.unwrap_or_default();
    let mut content = Vec::new();
    if let Some(r) = m
        .reasoning_content
        .or(m.reasoning)
        .filter(|r| !r.is_empty())
    {
        content.push(Part::Thinking {
            text: r,
            signature: None,
            redacted: false,
            id: None,
        });
    }
    if let Some(t) = m.content.filter(|t| !t.is_empty()) {
        content.push(Part::Text { text: t });
    }
    let refused = m.refusal.as_ref().is_some_and(|r| !r.is_empty());
    if let Some(r) = m.refusal.filter(|r| !r.is_empty()) {
        content.push(Part::Text { text: r });
    }
    for (j, tc) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
        let f = tc.function.unwrap_or_default();
        content.push(Part::ToolCall {
            id: tc.id.unwrap_or_else(|| format!("call_{j}")),
            name: f.name.unwrap_or_default(),
            arguments: f.arguments.unwrap_or_default(),
            signature: None,
        });
    }
    if let Some(f) = m.function_call {
        content.push(Part::ToolCall {
            id: "call_legacy_0".into(),
            name: f.name.unwrap_or_default(),
            arguments: f.arguments.unwrap_or_default(),
            signature: None,
        });
    }
    Ok(Response {
        id: c.id.map(Cow::into_owned).unwrap_or_default(),
        model: c.model.map(Cow::into_owned).unwrap_or_default(),
        content,
        stop: stop_of(choice.finish_reason.as_deref().unwrap_or("stop"), refused),
        usage: c.usage.as_ref().map(usage_of),
        created: created_of(&c.created),
    })
}

fn usage_out(u: &Usage) -> UsageOut {
    UsageOut {
        completion_tokens: u.output,
        completion_tokens_details: ReasoningTokensOut {
            reasoning_tokens: u.reasoning,
        },
        prompt_tokens: u.total_input(),
        prompt_tokens_details: CachedTokensOut {
            cached_tokens: u.cache_read,
        },
        total_tokens: u.total_input() + u.output,
    }
}

/// Whether any thinking part carries opaque state worth carrying.
fn has_state(thinking: &[Part]) -> bool {
    thinking.iter().any(|p| {
        matches!(
            p,
            Part::Thinking {
                signature: Some(_),
                ..
            }
        )
    })
}

/// A whole answer for a Chat Completions client.
pub fn encode_response(resp: &Response, opts: &EncoderOptions) -> Vec<u8> {
    let thinking: Vec<Part> = resp
        .content
        .iter()
        .filter(|p| matches!(p, Part::Thinking { .. }))
        .cloned()
        .collect();
    let mut carry = if has_state(&thinking) {
        thinking
    } else {
        Vec::new()
    };
    let reasoning: String = resp
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Thinking { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let text = text_of(&resp.content);
    let mut ids = Vec::new();
    for p in &resp.content {
        if let Part::ToolCall { id, signature, .. } = p {
            ids.push(envelope::wrap_call_id(&CallId {
                id: id.clone(),
                thinking: std::mem::take(&mut carry),
                signature: signature.clone(),
            }));
        }
    }
    let calls: Vec<ToolCallOut> = resp
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall {
                name, arguments, ..
            } => Some((name, arguments)),
            _ => None,
        })
        .zip(&ids)
        .map(|((name, arguments), id)| ToolCallOut {
            function: FunctionOut {
                arguments,
                name: Some(name),
            },
            id: Some(id),
            index: None,
            kind: Some("function"),
        })
        .collect();
    let body = CompletionOut {
        choices: [ChoiceOut {
            finish_reason: Some(finish_of(&resp.stop)),
            index: 0,
            logprobs: None,
            message: MessageOut {
                content: (!text.is_empty() || calls.is_empty()).then_some(Text(&text)),
                reasoning_content: (!reasoning.is_empty()).then_some(Text(&reasoning)),
                refusal: None,
                role: "assistant",
                tool_calls: calls,
            },
        }],
        created: resp.created.unwrap_or(opts.created),
        id: if resp.id.is_empty() {
            &opts.id
        } else {
            &resp.id
        },
        model: &opts.model,
        object: "chat.completion",
        usage: resp.usage.as_ref().map(usage_out),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

fn kind_of(t: &str) -> Option<ErrorType> {
    Some(match t {
        "invalid_request_error" | "invalid_request" | "context_length_exceeded" => {
            ErrorType::InvalidRequest
        }
        "authentication_error" | "invalid_api_key" => ErrorType::Authentication,
        "permission_error" | "permission_denied" => ErrorType::Permission,
        "not_found_error" | "model_not_found" => ErrorType::NotFound,
        "request_too_large" => ErrorType::RequestTooLarge,
        "rate_limit_error" | "rate_limit_exceeded" | "insufficient_quota" | "tokens" => {
            ErrorType::RateLimit
        }
        "overloaded_error" | "service_unavailable" => ErrorType::Overloaded,
        "timeout" | "timeout_error" => ErrorType::Timeout,
        "server_error" | "api_error" | "internal_error" => ErrorType::Api,
        _ => return None,
    })
}

/// A readable message for a body that is not the protocol's error shape.
pub(crate) fn raw_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("the upstream answered with status {status}");
    }
    text.chars().take(1000).collect()
}

/// An OpenAI error body (`{"error":{"message","type","param","code"}}`).
pub fn decode_error(status: u16, body: &[u8]) -> ApiError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let e = v.as_ref().and_then(|v| v.get("error"));
    let message = e
        .and_then(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .or_else(|| e.as_str())
        })
        .map(str::to_string);
    let kind = e
        .and_then(|e| {
            e.get("type")
                .and_then(Value::as_str)
                .and_then(kind_of)
                .or_else(|| e.get("code").and_then(Value::as_str).and_then(kind_of))
        })
        .unwrap_or_else(|| ErrorType::from_status(status));
    ApiError {
        status,
        kind,
        message: message.unwrap_or_else(|| raw_message(status, body)),
    }
}

fn error_json(err_kind: ErrorType, message: &str) -> Value {
    let (t, code) = match err_kind {
        ErrorType::InvalidRequest => ("invalid_request_error", Value::Null),
        ErrorType::Authentication => ("authentication_error", json!("invalid_api_key")),
        ErrorType::Permission => ("permission_error", Value::Null),
        ErrorType::NotFound => ("not_found_error", Value::Null),
        ErrorType::RequestTooLarge => ("invalid_request_error", json!("request_too_large")),
        ErrorType::RateLimit => ("rate_limit_error", json!("rate_limit_exceeded")),
        ErrorType::Overloaded => ("server_error", json!("overloaded")),
        ErrorType::Timeout => ("server_error", json!("timeout")),
        ErrorType::Api => ("server_error", Value::Null),
    };
    json!({"error": {"message": message, "type": t, "param": null, "code": code}})
}

/// An error for a Chat Completions (or Responses) client.
pub fn encode_error(err: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&error_json(err.kind, &err.message)).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Stream decoder
// ---------------------------------------------------------------------------

/// Reads a Chat Completions upstream stream. Text and thinking blocks close
/// when the other kind or a tool call begins; tool-call blocks stay open
/// until the finish, since a chunk never says a call is over.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    next_block: usize,
    /// The open text or thinking block: (index, is_thinking).
    open_text: Option<(usize, bool)>,
    /// Chat call index → (block index, still open).
    calls: Vec<(usize, usize, bool)>,
    refused: bool,
    stopped: bool,
    done: bool,
}

impl Decoder {
    fn close_text(&mut self, out: &mut Vec<Event>) {
        if let Some((i, _)) = self.open_text.take() {
            out.push(Event::BlockStop { index: i });
        }
    }

    fn text_delta(&mut self, thinking: bool, s: String, out: &mut Vec<Event>) {
        if s.is_empty() {
            return;
        }
        let index = match self.open_text {
            Some((i, t)) if t == thinking => i,
            _ => {
                self.close_text(out);
                let i = self.next_block;
                self.next_block += 1;
                out.push(Event::BlockStart {
                    index: i,
                    block: if thinking {
                        Block::Thinking {
                            id: None,
                            redacted: false,
                        }
                    } else {
                        Block::Text
                    },
                });
                self.open_text = Some((i, thinking));
                i
            }
        };
        out.push(Event::Delta {
            index,
            delta: if thinking {
                Delta::Thinking(s)
            } else {
                Delta::Text(s)
            },
        });
    }

    fn tool_fragment(
        &mut self,
        chat_index: Option<usize>,
        id: Option<String>,
        f: Option<AnswerFunction>,
        out: &mut Vec<Event>,
    ) {
        let (name, args) = match f {
            Some(f) => (f.name, f.arguments.unwrap_or_default()),
            None => (None, String::new()),
        };
        // Servers that omit `index` send each call whole: a new id is a
        // new call, else the fragment belongs to the last call.
        let chat_index = chat_index.unwrap_or_else(|| match (&id, self.calls.last()) {
            (None, Some(&(ci, _, _))) => ci,
            _ => self.calls.len(),
        });
        let known = self.calls.iter().find(|c| c.0 == chat_index).map(|c| c.1);
        let index = match known {
            Some(i) => i,
            None => {
                self.close_text(out);
                let i = self.next_block;
                self.next_block += 1;
                out.push(Event::BlockStart {
                    index: i,
                    block: Block::ToolCall {
                        id: id
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| format!("call_{chat_index}")),
                        name: name.unwrap_or_default(),
                        signature: None,
                    },
                });
                self.calls.push((chat_index, i, true));
                i
            }
        };
        if !args.is_empty() {
            out.push(Event::Delta {
                index,
                delta: Delta::Arguments(args),
            });
        }
    }

    fn close_all(&mut self, out: &mut Vec<Event>) {
        self.close_text(out);
        for c in &mut self.calls {
            if c.2 {
                c.2 = false;
                out.push(Event::BlockStop { index: c.1 });
            }
        }
    }
}

impl StreamDecoder for Decoder {
    fn event(&mut self, _name: &str, data: &str, out: &mut Vec<Event>) -> Result<(), Error> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: ChatCompletion = serde_json::from_str(data)
            .map_err(|e| Error::Upstream(format!("{NAME} stream chunk: {e}")))?;
        if let Some(e) = &chunk.error {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string());
            out.push(Event::Error { message });
            return Ok(());
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: chunk.id.map(Cow::into_owned).unwrap_or_default(),
                model: chunk.model.map(Cow::into_owned).unwrap_or_default(),
            });
        }
        for choice in chunk.choices {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(d) = choice.delta.or(choice.message) {
                if let Some(r) = d.reasoning_content.or(d.reasoning) {
                    self.text_delta(true, r, out);
                }
                if let Some(t) = d.content {
                    self.text_delta(false, t, out);
                }
                if let Some(r) = d.refusal.filter(|r| !r.is_empty()) {
                    self.refused = true;
                    self.text_delta(false, r, out);
                }
                for tc in d.tool_calls.unwrap_or_default() {
                    self.tool_fragment(tc.index, tc.id, tc.function, out);
                }
                if let Some(f) = d.function_call {
                    self.tool_fragment(Some(0), None, Some(f), out);
                }
            }
            if let Some(f) = choice.finish_reason.filter(|f| !f.is_empty()) {
                self.close_all(out);
                if !self.stopped {
                    self.stopped = true;
                    out.push(Event::Stop(stop_of(&f, self.refused)));
                }
            }
        }
        if let Some(u) = &chunk.usage {
            out.push(Event::Usage(usage_of(u)));
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        self.close_all(out);
    }

    fn complete(&self) -> bool {
        self.done
    }
}

// ---------------------------------------------------------------------------
// Stream encoder
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    /// A tool call with its Chat index.
    Tool(usize),
}

/// Writes `chat.completion.chunk` frames for a Chat Completions client.
#[derive(Debug)]
pub struct Encoder {
    opts: EncoderOptions,
    id: String,
    started: bool,
    blocks: HashMap<usize, Kind>,
    next_call: usize,
    /// The turn's thinking so far, carried in the first call's id.
    thinking: Vec<Part>,
    carried: bool,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    done: bool,
}

impl Encoder {
    pub fn new(opts: EncoderOptions) -> Encoder {
        Encoder {
            id: opts.id.clone(),
            opts,
            started: false,
            blocks: HashMap::new(),
            next_call: 0,
            thinking: Vec::new(),
            carried: false,
            stop: None,
            usage: None,
            done: false,
        }
    }

    /// One chunk of `choices` (and `usage`).
    fn chunk(&self, choices: &[ChunkChoiceOut], usage: Option<UsageOut>, out: &mut Vec<u8>) {
        let c = ChunkOut {
            choices,
            created: self.opts.created,
            id: &self.id,
            model: &self.opts.model,
            object: "chat.completion.chunk",
            usage,
        };
        sse(out, None, &c);
    }

    fn delta(&self, delta: DeltaOut, out: &mut Vec<u8>) {
        let choice = ChunkChoiceOut {
            delta,
            finish_reason: None,
            index: 0,
            logprobs: None,
        };
        self.chunk(std::slice::from_ref(&choice), None, out);
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let d = DeltaOut {
                content: Some(""),
                role: Some("assistant"),
                ..DeltaOut::default()
            };
            self.delta(d, out);
        }
    }

    /// A delta of one tool call.
    fn tool_delta(&self, call: ToolCallOut, out: &mut Vec<u8>) {
        let d = DeltaOut {
            tool_calls: Some([call]),
            ..DeltaOut::default()
        };
        self.delta(d, out);
    }

    fn thinking_part(&mut self) -> Option<&mut Part> {
        self.thinking.last_mut()
    }
}

impl StreamEncoder for Encoder {
    fn event(&mut self, event: Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            Event::Start { id, .. } => {
                if !id.is_empty() {
                    self.id = id;
                }
                self.start(out);
            }
            Event::BlockStart { index, block } => {
                self.start(out);
                match block {
                    Block::Text => {
                        self.blocks.insert(index, Kind::Text);
                    }
                    Block::Thinking { id, redacted } => {
                        self.blocks.insert(index, Kind::Thinking);
                        self.thinking.push(Part::Thinking {
                            text: String::new(),
                            signature: None,
                            redacted,
                            id,
                        });
                    }
                    Block::ToolCall {
                        id,
                        name,
                        signature,
                    } => {
                        let ci = self.next_call;
                        self.next_call += 1;
                        self.blocks.insert(index, Kind::Tool(ci));
                        let thinking = if !self.carried && has_state(&self.thinking) {
                            self.carried = true;
                            std::mem::take(&mut self.thinking)
                        } else {
                            Vec::new()
                        };
                        let id = envelope::wrap_call_id(&CallId {
                            id,
                            thinking,
                            signature,
                        });
                        let call = ToolCallOut {
                            function: FunctionOut {
                                arguments: "",
                                name: Some(&name),
                            },
                            id: Some(&id),
                            index: Some(ci),
                            kind: Some("function"),
                        };
                        self.tool_delta(call, out);
                    }
                }
            }
            Event::Delta { index, delta } => {
                self.start(out);
                match (delta, self.blocks.get(&index).copied()) {
                    (Delta::Text(t), _) if t.is_empty() => {}
                    (Delta::Text(t), _) => {
                        let d = DeltaOut {
                            content: Some(&t),
                            ..DeltaOut::default()
                        };
                        self.delta(d, out);
                    }
                    (Delta::Thinking(t), _) => {
                        if let Some(Part::Thinking { text, .. }) = self.thinking_part() {
                            text.push_str(&t);
                        }
                        let d = DeltaOut {
                            reasoning_content: Some(&t),
                            ..DeltaOut::default()
                        };
                        self.delta(d, out);
                    }
                    (Delta::Signature(s), _) => {
                        if let Some(Part::Thinking { signature, .. }) = self.thinking_part() {
                            *signature = Some(s);
                        }
                    }
                    (Delta::Arguments(a), Some(Kind::Tool(ci))) => {
                        let call = ToolCallOut {
                            function: FunctionOut {
                                arguments: &a,
                                name: None,
                            },
                            id: None,
                            index: Some(ci),
                            kind: None,
                        };
                        self.tool_delta(call, out);
                    }
                    (Delta::Arguments(_), _) => {}
                }
            }
            Event::BlockStop { .. } => {}
            Event::Usage(u) => self.usage = Some(u),
            Event::Stop(s) => self.stop = Some(s),
            Event::Error { message } => self.fail(&message, out),
        }
    }

    fn finish(&mut self, fallback_usage: Option<Usage>, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.done = true;
        let finish = self.stop.as_ref().map(finish_of).unwrap_or("stop");
        let last = ChunkChoiceOut {
            delta: DeltaOut::default(),
            finish_reason: Some(finish),
            index: 0,
            logprobs: None,
        };
        self.chunk(std::slice::from_ref(&last), None, out);
        if self.usage.is_none() {
            self.usage = fallback_usage;
        }
        if self.opts.include_usage {
            let usage = usage_out(&self.usage.unwrap_or_default());
            self.chunk(&[], Some(usage), out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        sse(out, None, &error_json(ErrorType::Api, message));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Family, Opaque};
    use proptest::prelude::*;

    fn decode(v: Value) -> Request {
        decode_request(v.to_string().as_bytes(), &mut Lossy::strict()).unwrap()
    }

    fn encode(r: &Request) -> Value {
        serde_json::from_slice(&encode_request(r, &mut Lossy::strict()).unwrap()).unwrap()
    }

    fn feed(chunks: &[Value]) -> (Vec<Event>, bool) {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.event("", &c.to_string(), &mut out).unwrap();
        }
        d.event("", "[DONE]", &mut out).unwrap();
        d.finish(&mut out);
        (out, d.complete())
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    /// The JSON payloads of an SSE body, `[DONE]` as a string.
    fn payloads(out: &[u8]) -> Vec<Value> {
        let s = std::str::from_utf8(out).unwrap();
        assert!(s.ends_with("\n\n"), "frames end with a blank line");
        s.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let d = f.strip_prefix("data: ").expect("data frame");
                if d == "[DONE]" {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(d).unwrap()
                }
            })
            .collect()
    }

    fn opts(include_usage: bool) -> EncoderOptions {
        EncoderOptions {
            model: "client-model".into(),
            id: "chatcmpl-gw".into(),
            created: 7,
            input_estimate: 10,
            include_usage,
            sse: true,
        }
    }

    #[test]
    fn decodes_roles_system_tools_and_results() {
        let r = decode(json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is here?"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ], "name": "bob"},
                {"role": "assistant", "content": null, "reasoning_content": "hmm",
                 "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": "{\"k\":1}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "put", "arguments": "{}"}}
                 ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "one"},
                {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get", "description": "d",
                       "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "get"}},
            "parallel_tool_calls": false,
            "stop": "END",
            "max_completion_tokens": 99,
            "reasoning_effort": "low",
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": true}},
            "user": "u1",
            "stream": true,
            "stream_options": {"include_usage": true},
            "n": 1
        }));
        assert_eq!(
            r.system,
            vec![
                Part::Text {
                    text: "Be brief.".into()
                },
                Part::Text {
                    text: "Use tools.".into()
                }
            ]
        );
        assert_eq!(
            r.messages.len(),
            4,
            "tool messages merge into one user message"
        );
        assert_eq!(
            r.messages[0].content[1],
            Part::Image(Image::Url {
                url: "https://x/y.png".into()
            })
        );
        assert_eq!(
            r.messages[0].content[2],
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            })
        );
        assert!(
            matches!(&r.messages[1].content[0], Part::Thinking { text, signature: None, .. } if text == "hmm")
        );
        assert!(
            matches!(&r.messages[1].content[2], Part::ToolCall { id, name, .. } if id == "call_b" && name == "put")
        );
        assert_eq!(r.messages[2].role, Role::User);
        assert_eq!(
            r.messages[2].content[1],
            Part::ToolResult {
                call_id: "call_b".into(),
                name: Some("put".into()),
                content: vec![Part::Text { text: "two".into() }],
                is_error: false
            }
        );
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("get".into())));
        assert_eq!(r.parallel_tool_calls, Some(false));
        assert_eq!(r.stop, vec!["END".to_string()]);
        assert_eq!(r.max_tokens, Some(99));
        assert_eq!(
            r.reasoning.as_ref().and_then(|r| r.effort),
            Some(Effort::Low)
        );
        assert!(matches!(
            r.response_format,
            Some(ResponseFormat::JsonSchema {
                strict: Some(true),
                ..
            })
        ));
        assert_eq!(r.user.as_deref(), Some("u1"));
        assert!(r.stream);
        assert_eq!(r.tools[0].strict, Some(true));
    }

    #[test]
    fn legacy_functions_map_to_tools() {
        let r = decode(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
                {"role": "function", "name": "f", "content": "done"}
            ],
            "functions": [{"name": "f", "parameters": {"type": "object"}}],
            "function_call": {"name": "f"}
        }));
        assert_eq!(r.tools[0].name, "f");
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("f".into())));
        let Part::ToolCall { id, .. } = &r.messages[1].content[0] else {
            panic!()
        };
        assert!(
            matches!(&r.messages[2].content[0], Part::ToolResult { call_id, .. } if call_id == id)
        );
    }

    #[test]
    fn lossy_fields_are_refused_or_recorded() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                          "logprobs": true, "top_logprobs": 2, "n": 3, "logit_bias": {"1": 2},
                          "audio": {"voice": "x"}, "modalities": ["text", "audio"], "metadata": {"a": "b"},
                          "store": true});
        let e = decode_request(body.to_string().as_bytes(), &mut Lossy::strict()).unwrap_err();
        assert!(matches!(e, Error::Untranslatable { .. }));
        let mut l = Lossy::lenient();
        decode_request(body.to_string().as_bytes(), &mut l).unwrap();
        for f in [
            "logprobs",
            "top_logprobs",
            "n",
            "logit_bias",
            "audio",
            "modalities",
        ] {
            assert!(l.dropped.iter().any(|d| d == f), "{f} in {:?}", l.dropped);
        }
        assert!(!l.dropped.iter().any(|d| d == "metadata" || d == "store"));
        let bad = decode_request(
            br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
            &mut Lossy::strict(),
        );
        assert!(matches!(bad, Err(Error::Invalid(m)) if m.contains("messages[0].role")));
    }

    #[test]
    fn requests_round_trip() {
        let corpus = [
            json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
                   "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "seed": 3, "presence_penalty": 0.1,
                   "frequency_penalty": 0.2, "stop": ["a", "b"], "user": "u"}),
            json!({"model": "o3", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                     {"type": "image_url", "image_url": {"url": "https://i/x.png"}}]}],
                   "max_completion_tokens": 500, "reasoning_effort": "high", "stream": true,
                   "stream_options": {"include_usage": true}}),
            json!({"model": "gpt-4o", "messages": [
                     {"role": "user", "content": "weather?"},
                     {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "w", "arguments": "{\"c\":\"P\"}"}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                     {"role": "assistant", "content": "It is sunny."}],
                   "tools": [{"type": "function", "function": {"name": "w", "description": "weather",
                      "parameters": {"type": "object", "properties": {"c": {"type": "string"}}}}}],
                   "tool_choice": "required", "parallel_tool_calls": true,
                   "response_format": {"type": "json_object"}}),
        ];
        for x in corpus {
            assert_eq!(encode(&decode(x.clone())), x);
        }
    }

    #[test]
    fn encodes_for_upstream() {
        let sig = Opaque {
            family: Family::Anthropic,
            value: "sig".into(),
        };
        let req = Request {
            model: "gpt".into(),
            messages: vec![
                Message {
                    role: Role::Assistant,
                    origins: Vec::new(),
                    content: vec![
                        Part::Thinking {
                            text: "t".into(),
                            signature: Some(sig),
                            redacted: false,
                            id: None,
                        },
                        Part::ToolCall {
                            id: "toolu_1".into(),
                            name: "f".into(),
                            arguments: String::new(),
                            signature: None,
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![
                        Part::ToolResult {
                            call_id: "toolu_1".into(),
                            name: None,
                            is_error: true,
                            content: vec![Part::Text {
                                text: "boom".into(),
                            }],
                        },
                        Part::Text {
                            text: "go on".into(),
                        },
                    ],
                },
            ],
            top_k: Some(3),
            stream: true,
            ..Request::default()
        };
        assert!(
            encode_request(&req, &mut Lossy::strict()).is_err(),
            "top_k is refused in strict mode"
        );
        let mut l = Lossy::lenient();
        let v: Value = serde_json::from_slice(&encode_request(&req, &mut l).unwrap()).unwrap();
        assert_eq!(l.dropped, vec!["top_k".to_string()]);
        assert_eq!(
            v["messages"][0],
            json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            "signed thinking of another family is dropped"
        );
        assert_eq!(
            v["messages"][1],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "Error: boom"})
        );
        assert_eq!(
            v["messages"][2],
            json!({"role": "user", "content": "go on"})
        );
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        let mut with_reasoning = req.clone();
        with_reasoning.top_k = None;
        with_reasoning.max_tokens = Some(10);
        with_reasoning.reasoning = Some(Reasoning {
            enabled: true,
            effort: None,
            budget_tokens: Some(30000),
            include_thoughts: false,
        });
        let v = encode(&with_reasoning);
        assert_eq!(v["max_completion_tokens"], json!(10));
        assert_eq!(v["reasoning_effort"], json!("high"));
        assert!(v.get("max_tokens").is_none());
    }

    #[test]
    fn thinking_rides_in_the_first_call_id_and_comes_back() {
        let thinking = Part::Thinking {
            text: "plan".into(),
            signature: Some(Opaque {
                family: Family::Anthropic,
                value: "EqQBsig==".into(),
            }),
            redacted: false,
            id: None,
        };
        let resp = Response {
            id: "msg_1".into(),
            model: "claude".into(),
            content: vec![
                thinking.clone(),
                Part::ToolCall {
                    id: "toolu_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                    signature: None,
                },
                Part::ToolCall {
                    id: "toolu_2".into(),
                    name: "g".into(),
                    arguments: "{}".into(),
                    signature: None,
                },
            ],
            stop: StopReason::ToolUse,
            usage: Some(Usage {
                input: 5,
                cache_read: 3,
                cache_write: 2,
                output: 7,
                reasoning: 0,
            }),
            created: None,
        };
        let v: Value = serde_json::from_slice(&encode_response(&resp, &opts(false))).unwrap();
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["reasoning_content"], json!("plan"));
        assert_eq!(v["choices"][0]["finish_reason"], json!("tool_calls"));
        assert_eq!(v["usage"]["prompt_tokens"], json!(10));
        assert_eq!(
            v["usage"]["prompt_tokens_details"]["cached_tokens"],
            json!(3)
        );
        assert_eq!(v["model"], json!("client-model"));
        let id1 = msg["tool_calls"][0]["id"].as_str().unwrap();
        assert!(id1.starts_with("lgwc_"));
        assert_eq!(msg["tool_calls"][1]["id"], json!("toolu_2"));
        // The client sends the turn back.
        let back = decode(json!({"model": "m", "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": null, "reasoning_content": "plan", "tool_calls": msg["tool_calls"]},
            {"role": "tool", "tool_call_id": id1, "content": "r"}]}));
        assert_eq!(back.messages[1].content[0], thinking);
        assert!(
            matches!(&back.messages[1].content[1], Part::ToolCall { id, .. } if id == "toolu_1")
        );
        assert!(
            matches!(&back.messages[2].content[0], Part::ToolResult { call_id, name: Some(n), .. } if call_id == "toolu_1" && n == "f")
        );
    }

    #[test]
    fn decodes_whole_answers_and_usage() {
        let body = json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 5, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 5}}});
        let r = decode_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            r.usage,
            Some(Usage {
                input: 40,
                cache_read: 60,
                cache_write: 0,
                output: 20,
                reasoning: 5
            })
        );
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(r.created, Some(5));
        assert_eq!(r.content.len(), 2);
        let refusal = json!({"choices": [{"message": {"role": "assistant", "content": null, "refusal": "no"}, "finish_reason": "stop"}]});
        assert_eq!(
            decode_response(refusal.to_string().as_bytes())
                .unwrap()
                .stop,
            StopReason::ContentFilter
        );
        let cut = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]});
        assert_eq!(
            decode_response(cut.to_string().as_bytes()).unwrap().stop,
            StopReason::MaxTokens
        );
        let other = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "weird"}]});
        assert_eq!(
            decode_response(other.to_string().as_bytes()).unwrap().stop,
            StopReason::Other("weird".into())
        );
    }

    #[test]
    fn stream_decoder_golden_parallel_calls_and_late_usage() {
        let (events, complete) = feed(&[
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Let me check."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "put", "arguments": "{\"x\""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"k\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4,
                   "prompt_tokens_details": {"cached_tokens": 2}}}),
        ]);
        assert!(complete);
        assert_eq!(
            events,
            vec![
                Event::Start {
                    id: "chatcmpl-1".into(),
                    model: "gpt-x".into()
                },
                Event::BlockStart {
                    index: 0,
                    block: Block::Text
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Text("Let me check.".into())
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    block: Block::ToolCall {
                        id: "call_a".into(),
                        name: "get".into(),
                        signature: None
                    }
                },
                Event::BlockStart {
                    index: 2,
                    block: Block::ToolCall {
                        id: "call_b".into(),
                        name: "put".into(),
                        signature: None
                    }
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Arguments("{\"x\"".into())
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Arguments("{\"k\":".into())
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Arguments(":2}".into())
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Arguments("1}".into())
                },
                Event::BlockStop { index: 1 },
                Event::BlockStop { index: 2 },
                Event::Stop(StopReason::ToolUse),
                Event::Usage(Usage {
                    input: 8,
                    cache_read: 2,
                    cache_write: 0,
                    output: 4,
                    reasoning: 0
                }),
            ]
        );
    }

    #[test]
    fn stream_decoder_content_and_finish_together_and_cuts() {
        let (events, _) = feed(&[chunk(
            json!({"role": "assistant", "reasoning_content": "r", "content": "hi"}),
            json!("stop"),
        )]);
        assert_eq!(
            events[1..],
            [
                Event::BlockStart {
                    index: 0,
                    block: Block::Thinking {
                        id: None,
                        redacted: false
                    }
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Thinking("r".into())
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    block: Block::Text
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Text("hi".into())
                },
                Event::BlockStop { index: 1 },
                Event::Stop(StopReason::EndTurn),
            ]
        );
        // Cut by max tokens in the middle of the arguments.
        let (events, _) = feed(&[
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{\"a\":\"x"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("length")),
        ]);
        assert_eq!(
            events[events.len() - 3..],
            [
                Event::Delta {
                    index: 0,
                    delta: Delta::Arguments("{\"a\":\"x".into())
                },
                Event::BlockStop { index: 0 },
                Event::Stop(StopReason::MaxTokens),
            ]
        );
        // A stream that ends without [DONE] is not complete, and its blocks close.
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.event(
            "",
            &chunk(json!({"content": "x"}), Value::Null).to_string(),
            &mut out,
        )
        .unwrap();
        d.finish(&mut out);
        assert!(!d.complete());
        assert_eq!(out.last(), Some(&Event::BlockStop { index: 0 }));
        // An error inside the stream.
        let mut out = Vec::new();
        Decoder::default()
            .event(
                "",
                r#"{"error":{"message":"boom","type":"server_error"}}"#,
                &mut out,
            )
            .unwrap();
        assert_eq!(
            out,
            vec![Event::Error {
                message: "boom".into()
            }]
        );
    }

    #[test]
    fn stream_encoder_golden() {
        let mut e = Encoder::new(opts(true));
        let mut out = Vec::new();
        for ev in [
            Event::Start {
                id: "msg_1".into(),
                model: "up".into(),
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
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                block: Block::Text,
            },
            Event::Delta {
                index: 1,
                delta: Delta::Text("Hi".into()),
            },
            Event::BlockStart {
                index: 2,
                block: Block::ToolCall {
                    id: "t1".into(),
                    name: "f".into(),
                    signature: None,
                },
            },
            Event::BlockStart {
                index: 3,
                block: Block::ToolCall {
                    id: "t2".into(),
                    name: "g".into(),
                    signature: None,
                },
            },
            Event::Delta {
                index: 3,
                delta: Delta::Arguments("{}".into()),
            },
            Event::Delta {
                index: 2,
                delta: Delta::Arguments("{\"a\":1}".into()),
            },
            Event::Stop(StopReason::ToolUse),
            Event::Usage(Usage {
                input: 1,
                cache_read: 2,
                cache_write: 0,
                output: 3,
                reasoning: 1,
            }),
        ] {
            e.event(ev, &mut out);
        }
        e.finish(None, &mut out);
        e.finish(None, &mut out);
        let head = |d: Value| {
            json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 7, "model": "client-model",
            "choices": [{"index": 0, "delta": d, "logprobs": null, "finish_reason": null}]})
        };
        let p = payloads(&out);
        assert_eq!(
            p,
            vec![
                head(json!({"role": "assistant", "content": ""})),
                head(json!({"reasoning_content": "hm"})),
                head(json!({"content": "Hi"})),
                head(
                    json!({"tool_calls": [{"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}]})
                ),
                head(
                    json!({"tool_calls": [{"index": 1, "id": "t2", "type": "function", "function": {"name": "g", "arguments": ""}}]})
                ),
                head(json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]})),
                head(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]})),
                json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 7, "model": "client-model",
                   "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]}),
                json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 7, "model": "client-model",
                   "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6,
                   "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 1}}}),
                json!("[DONE]"),
            ]
        );
        assert_eq!(e.usage().map(|u| u.output), Some(3));
    }

    #[test]
    fn stream_encoder_without_usage_fallback_and_failure() {
        let mut e = Encoder::new(opts(false));
        let mut out = Vec::new();
        e.event(
            Event::Start {
                id: String::new(),
                model: "up".into(),
            },
            &mut out,
        );
        e.event(
            Event::Stop(StopReason::StopSequence(Some("X".into()))),
            &mut out,
        );
        let fallback = Usage {
            input: 9,
            ..Usage::default()
        };
        e.finish(Some(fallback), &mut out);
        let p = payloads(&out);
        assert_eq!(
            p.len(),
            3,
            "role chunk, finish chunk, [DONE]: no usage chunk"
        );
        assert_eq!(p[0]["id"], json!("chatcmpl-gw"));
        assert_eq!(p[1]["choices"][0]["finish_reason"], json!("stop"));
        assert_eq!(e.usage(), Some(fallback));

        let mut e = Encoder::new(opts(true));
        let mut out = Vec::new();
        e.event(
            Event::Start {
                id: "x".into(),
                model: "up".into(),
            },
            &mut out,
        );
        e.fail("upstream went away", &mut out);
        e.finish(None, &mut out);
        let p = payloads(&out);
        assert_eq!(
            p.last(),
            Some(
                &json!({"error": {"message": "upstream went away", "type": "server_error", "param": null, "code": null}})
            )
        );
        assert!(!p.contains(&json!("[DONE]")));
    }

    #[test]
    fn errors_read_and_write() {
        let e = decode_error(
            429,
            br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorType::RateLimit, "slow down")
        );
        let e = decode_error(400, br#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#);
        assert_eq!(e.kind, ErrorType::InvalidRequest);
        let e = decode_error(502, b"<html>bad gateway</html>");
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorType::Api, "<html>bad gateway</html>")
        );
        let e = decode_error(503, b"");
        assert_eq!(e.kind, ErrorType::Overloaded);
        assert!(e.message.contains("503"));
        let v: Value = serde_json::from_slice(&encode_error(&ApiError {
            status: 401,
            kind: ErrorType::Authentication,
            message: "no".into(),
        }))
        .unwrap();
        assert_eq!(v["error"]["type"], json!("authentication_error"));
        assert_eq!(v["error"]["message"], json!("no"));
    }

    proptest! {
        /// Whatever fragments the arguments come in, and however the calls
        /// interleave, each call's arguments arrive whole and in order,
        /// and the encoded stream is valid SSE whose payloads parse.
        #[test]
        fn fragments_keep_their_calls(
            args in proptest::collection::vec("[a-z0-9\"{}:, ]{0,24}", 1..4),
            cuts in proptest::collection::vec(1usize..6, 1..40),
            order in proptest::collection::vec(0usize..4, 0..60),
        ) {
            // Split each call's arguments into fragments.
            let mut frags: Vec<Vec<String>> = args.iter().map(|a| {
                let chars: Vec<char> = a.chars().collect();
                let mut v = Vec::new();
                let mut i = 0;
                let mut k = 0;
                while i < chars.len() {
                    let n = cuts[k % cuts.len()].min(chars.len() - i);
                    v.push(chars[i..i + n].iter().collect());
                    i += n;
                    k += 1;
                }
                v.reverse();
                v
            }).collect();
            let mut chunks = Vec::new();
            for (ci, _) in args.iter().enumerate() {
                chunks.push(chunk(json!({"tool_calls": [{"index": ci, "id": format!("call_{ci}"), "function": {"name": "f", "arguments": ""}}]}), Value::Null));
            }
            let mut pick = order.into_iter();
            loop {
                let live: Vec<usize> = (0..frags.len()).filter(|&i| !frags[i].is_empty()).collect();
                if live.is_empty() { break; }
                let ci = live[pick.next().unwrap_or(0) % live.len()];
                let f = frags[ci].pop().unwrap();
                chunks.push(chunk(json!({"tool_calls": [{"index": ci, "function": {"arguments": f}}]}), Value::Null));
            }
            chunks.push(chunk(json!({}), json!("tool_calls")));
            let (events, _) = feed(&chunks);
            let (again, _) = feed(&chunks);
            prop_assert_eq!(&events, &again);
            let mut got = vec![String::new(); args.len()];
            for e in &events {
                if let Event::Delta { index, delta: Delta::Arguments(a) } = e { got[*index].push_str(a); }
            }
            prop_assert_eq!(&got, &args);
            let mut enc = Encoder::new(opts(true));
            let mut out = Vec::new();
            for e in events { enc.event(e, &mut out); }
            enc.finish(None, &mut out);
            let p = payloads(&out);
            prop_assert_eq!(p.last(), Some(&json!("[DONE]")));
            let mut back = vec![String::new(); args.len()];
            for v in &p {
                if let Some(tcs) = v["choices"][0]["delta"]["tool_calls"].as_array() {
                    for tc in tcs {
                        let i = tc["index"].as_u64().unwrap() as usize;
                        back[i].push_str(tc["function"]["arguments"].as_str().unwrap());
                    }
                }
            }
            prop_assert_eq!(&back, &args);
        }
    }
}
