//! Google Gemini (`models/{model}:generateContent`,
//! `:streamGenerateContent`, `:countTokens`): contents of parts
//! alternating between `user` and `model`, function declarations in a
//! subset of JSON Schema ([`crate::schema::for_gemini`]), and a stream of
//! whole `GenerateContentResponse`s.
//!
//! What the gateway does that the API does not say:
//! - Gemini gives function calls no ids. A call without one gets
//!   `call_<responseId>_<n>` (upstream answers: `n` counts the answer's
//!   calls from 0) or `call_<c>_<p>` (a client's history: content `c`,
//!   part `p`); a client's `functionResponse` without an id is linked to
//!   the earliest unanswered call of its name. Ids a client sends are
//!   kept; ids are not sent upstream (Gemini links by position).
//! - A `thoughtSignature` on a `functionCall` part is the call's
//!   signature; on a text part it becomes a thinking part with empty text
//!   just before that text, and goes back onto the text part that follows
//!   it. Every model turn's first `functionCall` without a Gemini
//!   signature gets Google's documented placeholder
//!   `skip_thought_signature_validator` (Gemini 3 rejects unsigned calls
//!   in history that came from elsewhere; older models ignore it).
//! - A tool result is `functionResponse.response = {"result": …}`, or
//!   `{"error": …}` for an error; other objects pass as JSON text.
//! - Only `gs://` and Files API URIs go to Gemini as `fileData`; Gemini
//!   cannot take a plain https image URL and the gateway never fetches.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::envelope;
use crate::error::{ApiError, Error, ErrorType, Lossy};
use crate::ir::{
    Effort, Family, Image, Message, Names, Opaque, Origin, Part, Path, Reasoning, Request,
    Response, ResponseFormat, Role, StopReason, Tool, ToolChoice, Usage,
};
use crate::schema::for_gemini;
use crate::stream::{sse, Block, Delta, EncoderOptions, Event, StreamDecoder, StreamEncoder};

pub const NAME: &str = "Google Gemini";

/// The target named when a client's field has no place in the
/// intermediate form.
const GATEWAY: &str = "target";

/// Google's documented placeholder for a function call whose signature
/// was not made by Gemini.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Request fields that are only hints and are ignored without a record:
/// `safetySettings` (the upstream's defaults apply), `labels`,
/// `generationConfig.responseModalities` (text only), `candidateCount: 1`,
/// `responseLogprobs: false`, and a body's `model` (the URL names it).
pub const IGNORED: &[&str] = &[
    "safetySettings",
    "labels",
    "model",
    "generationConfig.responseModalities",
    "generationConfig.candidateCount",
    "generationConfig.responseLogprobs",
];

// ---------------------------------------------------------------------------
// Wire types (camelCase, with the snake_case spellings Google also accepts)

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    #[serde(default)]
    contents: Vec<Content>,
    #[serde(default, alias = "system_instruction")]
    system_instruction: Option<Content>,
    #[serde(default)]
    tools: Vec<ToolWire>,
    #[serde(default, alias = "tool_config")]
    tool_config: Option<ToolConfig>,
    #[serde(default, alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    #[serde(default, alias = "safety_settings")]
    safety_settings: Option<Value>,
    #[serde(default, alias = "cached_content")]
    cached_content: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Content {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<PartWire>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartWire {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default, alias = "thought_signature")]
    thought_signature: Option<String>,
    #[serde(default, alias = "inline_data")]
    inline_data: Option<Blob>,
    #[serde(default, alias = "file_data")]
    file_data: Option<FileData>,
    #[serde(default, alias = "function_call")]
    function_call: Option<FunctionCall>,
    #[serde(default, alias = "function_response")]
    function_response: Option<FunctionResponse>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    #[serde(alias = "mime_type")]
    mime_type: String,
    data: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    #[serde(default, alias = "mime_type")]
    mime_type: Option<String>,
    #[serde(alias = "file_uri")]
    file_uri: String,
}

#[derive(Debug, Deserialize)]
struct FunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct FunctionResponse {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    response: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolWire {
    #[serde(default, alias = "function_declarations")]
    function_declarations: Vec<FunctionDeclaration>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default, alias = "parameters_json_schema")]
    parameters_json_schema: Option<Value>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    #[serde(default, alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfig>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default, alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default, alias = "top_p")]
    top_p: Option<f64>,
    #[serde(default, alias = "top_k")]
    top_k: Option<f64>,
    #[serde(default, alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(default, alias = "stop_sequences")]
    stop_sequences: Option<Vec<String>>,
    #[serde(default, alias = "candidate_count")]
    candidate_count: Option<u64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default, alias = "presence_penalty")]
    presence_penalty: Option<f64>,
    #[serde(default, alias = "frequency_penalty")]
    frequency_penalty: Option<f64>,
    #[serde(default, alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(default, alias = "response_schema")]
    response_schema: Option<Value>,
    #[serde(default, alias = "response_json_schema")]
    response_json_schema: Option<Value>,
    #[serde(default, alias = "thinking_config")]
    thinking_config: Option<ThinkingConfig>,
    #[serde(default, alias = "response_modalities")]
    response_modalities: Option<Value>,
    #[serde(default, alias = "response_logprobs")]
    response_logprobs: Option<bool>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    #[serde(default, alias = "thinking_budget")]
    thinking_budget: Option<i64>,
    #[serde(default, alias = "include_thoughts")]
    include_thoughts: Option<bool>,
    #[serde(default, alias = "thinking_level")]
    thinking_level: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A `GenerateContentResponse` (a whole answer, or one stream chunk).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(flatten)]
    _extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(flatten)]
    _extra: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
    #[serde(flatten)]
    _extra: Map<String, Value>,
}

impl UsageMetadata {
    fn to_ir(&self) -> Usage {
        Usage {
            input: (self.prompt_token_count + self.tool_use_prompt_token_count)
                .saturating_sub(self.cached_content_token_count),
            cache_read: self.cached_content_token_count,
            cache_write: 0,
            output: self.candidates_token_count + self.thoughts_token_count,
            reasoning: self.thoughts_token_count,
        }
    }
}

fn usage_json(u: &Usage) -> Value {
    let candidates = u.output.saturating_sub(u.reasoning);
    json!({
        "promptTokenCount": u.total_input(),
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": u.reasoning,
        "cachedContentTokenCount": u.cache_read,
        "totalTokenCount": u.total_input() + u.output,
    })
}

// ---------------------------------------------------------------------------
// Requests

fn invalid(field: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("invalid '{field}': {e}"))
}

/// A Gemini client's names for the settings and fields encoders may
/// refuse (those it has no field for keep the intermediate form's;
/// `response_format` is set to the field the client used).
const NAMES: Names = Names {
    parallel_tool_calls: "parallel_tool_calls",
    top_k: "generationConfig.topK",
    stop: "generationConfig.stopSequences",
    seed: "generationConfig.seed",
    presence_penalty: "generationConfig.presencePenalty",
    frequency_penalty: "generationConfig.frequencyPenalty",
    response_format: "generationConfig.responseMimeType",
    call_id: "functionResponse.id",
};

fn signature_of(v: &Option<String>) -> Option<Opaque> {
    v.as_deref().map(|s| envelope::unwrap(s, Family::Gemini))
}

/// A tool result's content from `functionResponse.response`.
fn result_from(response: &Value) -> (Vec<Part>, bool) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Value::Object(o) = response {
        if o.len() == 1 {
            if let Some(r) = o.get("result").or_else(|| o.get("output")) {
                return (vec![Part::Text { text: text(r) }], false);
            }
            if let Some(e) = o.get("error") {
                return (vec![Part::Text { text: text(e) }], true);
            }
        }
    }
    (
        vec![Part::Text {
            text: text(response),
        }],
        false,
    )
}

/// An upstream's parts as IR parts, without origins (the answer's
/// decoder uses this; `_path` is no longer used: a path is only named for
/// a client's request, by [`decode_parts_of`]).
fn decode_parts(
    parts: &[PartWire],
    _path: &str,
    lossy: &mut Lossy,
    call_id: &mut dyn FnMut(usize) -> String,
    result_id: &mut dyn FnMut(&str) -> String,
) -> Result<Vec<Part>, Error> {
    decode_parts_of(parts, 0, lossy, call_id, result_id, None)
}

/// The parts of `contents[c]` as IR parts; `origins`, when given, gets
/// where each came from. `call_id` makes the id of a call without one
/// from its position among the calls.
fn decode_parts_of(
    parts: &[PartWire],
    c: usize,
    lossy: &mut Lossy,
    call_id: &mut dyn FnMut(usize) -> String,
    result_id: &mut dyn FnMut(&str) -> String,
    mut origins: Option<&mut Vec<Origin>>,
) -> Result<Vec<Part>, Error> {
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let p_path = Path::at(&["contents", "parts"], &[c, j]);
        lossy.unknown(&p.extra, p_path, &[])?;
        let mut before = out.len();
        // The origin of the call or result this part holds.
        let mut origin = Origin::at(p_path);
        let signature = signature_of(&p.thought_signature);
        if let Some(fc) = &p.function_call {
            let (id, thinking, own) = match &fc.id {
                Some(id) => {
                    let c = envelope::unwrap_call_id(id);
                    (c.id, c.thinking, c.signature)
                }
                None => (call_id(j), Vec::new(), None),
            };
            out.extend(thinking);
            let arguments = match &fc.args {
                Some(a) => a.to_string(),
                None => "{}".to_string(),
            };
            out.push(Part::ToolCall {
                id,
                name: fc.name.clone(),
                arguments,
                signature: signature.or(own),
            });
            origin = Origin::call(
                p_path,
                Path::at(&["contents", "parts", "functionCall", "args"], &[c, j]),
            );
        } else if let Some(fr) = &p.function_response {
            let id = match &fr.id {
                Some(id) => envelope::unwrap_call_id(id).id,
                None => result_id(&fr.name),
            };
            let (content, is_error) = result_from(&fr.response);
            out.push(Part::ToolResult {
                call_id: id,
                name: Some(fr.name.clone()),
                content,
                is_error,
            });
            origin = Origin::result(
                p_path,
                vec![Path::at(
                    &["contents", "parts", "functionResponse", "response"],
                    &[c, j],
                )],
            );
        } else if let Some(text) = &p.text {
            if p.thought == Some(true) {
                // Thought parts the gateway made from one signed thinking
                // block of another family come back as several parts with
                // the signature on the last: they are one block again.
                let foreign = signature
                    .as_ref()
                    .is_some_and(|s| s.family != Family::Gemini);
                let mut text = text.clone();
                if foreign {
                    let mut prefix = String::new();
                    while let Some(Part::Thinking {
                        signature: None,
                        text: t,
                        ..
                    }) = out.last()
                    {
                        prefix.insert_str(0, t);
                        out.pop();
                        before -= 1;
                        if let Some(o) = origins.as_deref_mut() {
                            o.pop();
                        }
                    }
                    text.insert_str(0, &prefix);
                }
                out.push(Part::Thinking {
                    text,
                    signature,
                    redacted: false,
                    id: None,
                });
            } else {
                if let Some(sig) = signature {
                    out.push(Part::Thinking {
                        text: String::new(),
                        signature: Some(sig),
                        redacted: false,
                        id: None,
                    });
                }
                if !text.is_empty() {
                    out.push(Part::Text { text: text.clone() });
                }
            }
        } else if let Some(blob) = &p.inline_data {
            if blob.mime_type.starts_with("image/") {
                out.push(Part::Image(Image::Base64 {
                    media_type: blob.mime_type.clone(),
                    data: blob.data.clone(),
                }));
            } else {
                lossy.drop(
                    p_path.field("inlineData"),
                    GATEWAY,
                    &format!("only images are supported, not '{}'", blob.mime_type),
                )?;
            }
        } else if let Some(f) = &p.file_data {
            let image = f
                .mime_type
                .as_deref()
                .is_none_or(|m| m.starts_with("image/"));
            if image {
                out.push(Part::Image(Image::Url {
                    url: f.file_uri.clone(),
                }));
            } else {
                lossy.drop(
                    p_path.field("fileData"),
                    GATEWAY,
                    "only images are supported",
                )?;
            }
        } else if let Some(sig) = signature {
            out.push(Part::Thinking {
                text: String::new(),
                signature: Some(sig),
                redacted: false,
                id: None,
            });
        }
        if let Some(o) = origins.as_deref_mut() {
            // Thinking carried in a call's id, then the call: all of it
            // came from this part; the last part pushed is the call or
            // result `origin` describes.
            let n = out.len() - before;
            for _ in 1..n {
                o.push(Origin::at(p_path));
            }
            if n > 0 {
                o.push(origin);
            }
        }
    }
    Ok(out)
}

fn decode_body(b: GenerateRequest, lossy: &mut Lossy) -> Result<Request, Error> {
    lossy.unknown(&b.extra, "", IGNORED)?;
    let _ = b.safety_settings;
    let mut req = Request {
        names: NAMES,
        ..Request::default()
    };
    if b.cached_content.is_some() {
        lossy.drop(
            "cachedContent",
            GATEWAY,
            "a Gemini cache can only be used with Gemini",
        )?;
    }
    if let Some(sys) = &b.system_instruction {
        lossy.unknown(&sys.extra, "systemInstruction", &["role"])?;
        for (j, p) in sys.parts.iter().enumerate() {
            let at = Path::at(&["systemInstruction", "parts"], &[Path::KEY, j]);
            match &p.text {
                Some(t) => {
                    req.system.push(Part::Text { text: t.clone() });
                    req.system_origins.push(at);
                }
                None => lossy.drop(at, GATEWAY, "system instructions can only be text")?,
            }
        }
    }
    // Calls not yet answered, by name, for results without ids.
    let mut pending: Vec<(String, String)> = Vec::new();
    for (c, content) in b.contents.iter().enumerate() {
        let path = Path::at(&["contents"], &[c]);
        lossy.unknown(&content.extra, path, &[])?;
        let role = match content.role.as_deref() {
            None | Some("user") | Some("function") => Role::User,
            Some("model") => Role::Assistant,
            Some(other) => {
                return Err(invalid(
                    path.field("role"),
                    format!("unknown role '{other}'"),
                ))
            }
        };
        let mut origins = Vec::new();
        let parts = {
            let mut make_id = |p: usize| format!("call_{c}_{p}");
            let pending_ref = &mut pending;
            let mut result_id = |name: &str| match pending_ref.iter().position(|(n, _)| n == name) {
                Some(i) => pending_ref.remove(i).1,
                None => format!("call_{name}"),
            };
            decode_parts_of(
                &content.parts,
                c,
                lossy,
                &mut make_id,
                &mut result_id,
                Some(&mut origins),
            )?
        };
        for p in &parts {
            match p {
                Part::ToolCall { id, name, .. } => pending.push((name.clone(), id.clone())),
                Part::ToolResult { call_id, .. } => pending.retain(|(_, i)| i != call_id),
                _ => {}
            }
        }
        if parts.is_empty() {
            continue;
        }
        req.messages.push(Message {
            role,
            content: parts,
            origins,
        });
    }
    for (i, t) in b.tools.iter().enumerate() {
        lossy.unknown(&t.extra, Path::at(&["tools"], &[i]), &[])?;
        for (k, f) in t.function_declarations.iter().enumerate() {
            let path = Path::at(&["tools", "functionDeclarations"], &[i, k]);
            lossy.unknown(&f.extra, path, &[])?;
            req.tools.push(Tool {
                name: f.name.clone(),
                description: f.description.clone(),
                parameters: f
                    .parameters_json_schema
                    .clone()
                    .or_else(|| f.parameters.clone())
                    .map(lower_types)
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                strict: None,
            });
        }
    }
    if let Some(tc) = &b.tool_config {
        lossy.unknown(&tc.extra, "toolConfig", &[])?;
        if let Some(fc) = &tc.function_calling_config {
            lossy.unknown(&fc.extra, "toolConfig.functionCallingConfig", &[])?;
            let names = fc.allowed_function_names.clone().unwrap_or_default();
            req.tool_choice = match fc.mode.as_deref().unwrap_or("AUTO") {
                "AUTO" | "MODE_UNSPECIFIED" | "VALIDATED" => Some(ToolChoice::Auto),
                "NONE" => Some(ToolChoice::None),
                "ANY" if names.len() == 1 => Some(ToolChoice::Named(names[0].clone())),
                "ANY" => {
                    if names.len() > 1 {
                        lossy.drop(
                            "toolConfig.functionCallingConfig.allowedFunctionNames",
                            GATEWAY,
                            "only one allowed function name can be kept",
                        )?;
                    }
                    Some(ToolChoice::Required)
                }
                other => {
                    return Err(invalid(
                        "toolConfig.functionCallingConfig.mode",
                        format!("unknown mode '{other}'"),
                    ))
                }
            };
        }
    }
    if let Some(g) = &b.generation_config {
        lossy.unknown(&g.extra, "generationConfig", &[])?;
        let _ = (&g.response_modalities, g.response_logprobs);
        if g.candidate_count.is_some_and(|n| n > 1) {
            lossy.drop(
                "generationConfig.candidateCount",
                GATEWAY,
                "only one candidate is supported",
            )?;
        }
        req.temperature = g.temperature;
        req.top_p = g.top_p;
        req.top_k = g.top_k.map(|k| k as u64);
        req.max_tokens = g.max_output_tokens;
        req.stop = g.stop_sequences.clone().unwrap_or_default();
        req.seed = g.seed;
        req.presence_penalty = g.presence_penalty;
        req.frequency_penalty = g.frequency_penalty;
        if g.response_json_schema.is_some() {
            req.names.response_format = "generationConfig.responseJsonSchema";
        } else if g.response_schema.is_some() {
            req.names.response_format = "generationConfig.responseSchema";
        }
        let schema = g
            .response_json_schema
            .clone()
            .or_else(|| g.response_schema.clone().map(lower_types));
        req.response_format = match (g.response_mime_type.as_deref(), schema) {
            (_, Some(schema)) => Some(ResponseFormat::JsonSchema {
                name: "response".into(),
                schema,
                strict: None,
                description: None,
            }),
            (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
            (Some("text/plain"), None) => Some(ResponseFormat::Text),
            (Some(other), None) => {
                lossy.drop(
                    "generationConfig.responseMimeType",
                    GATEWAY,
                    &format!("'{other}' is not supported"),
                )?;
                None
            }
            (None, None) => None,
        };
        if let Some(t) = &g.thinking_config {
            lossy.unknown(&t.extra, "generationConfig.thinkingConfig", &[])?;
            let include_thoughts = t.include_thoughts.unwrap_or(false);
            let level =
                match t.thinking_level.as_deref() {
                    Some(l) => Some(Effort::parse(&l.to_ascii_lowercase()).ok_or_else(|| {
                        invalid("generationConfig.thinkingConfig.thinkingLevel", l)
                    })?),
                    None => None,
                };
            req.reasoning = Some(match t.thinking_budget {
                Some(0) => Reasoning {
                    enabled: false,
                    effort: None,
                    budget_tokens: None,
                    include_thoughts: false,
                },
                Some(n) => Reasoning {
                    enabled: true,
                    effort: level,
                    budget_tokens: u64::try_from(n).ok(),
                    include_thoughts,
                },
                None => Reasoning {
                    enabled: true,
                    effort: level,
                    budget_tokens: None,
                    include_thoughts,
                },
            });
        }
    }
    Ok(req)
}

/// Gemini's OpenAPI type names (`STRING`, `OBJECT`) as JSON Schema's.
fn lower_types(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    if k == "type" {
                        if let Value::String(s) = x {
                            *s = s.to_ascii_lowercase();
                        }
                    } else if k != "enum" {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

pub fn decode_request(body: &[u8], lossy: &mut Lossy) -> Result<Request, Error> {
    let b: GenerateRequest = serde_json::from_slice(body)
        .map_err(|e| Error::Invalid(format!("invalid request body: {e}")))?;
    decode_body(b, lossy)
}

/// A `countTokens` body: `{contents}` or `{generateContentRequest}`.
pub fn decode_count_request(body: &[u8], lossy: &mut Lossy) -> Result<Request, Error> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::Invalid(format!("invalid request body: {e}")))?;
    let inner = v
        .get("generateContentRequest")
        .or_else(|| v.get("generate_content_request"))
        .cloned()
        .unwrap_or(v);
    let b: GenerateRequest = serde_json::from_value(inner)
        .map_err(|e| Error::Invalid(format!("invalid request body: {e}")))?;
    decode_body(b, lossy)
}

fn mime_of(uri: &str) -> &'static str {
    let lower = uri.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else if lower.ends_with(".heic") {
        "image/heic"
    } else {
        "image/jpeg"
    }
}

/// An image part, or none when the image is a URL Gemini cannot fetch
/// (refused, or dropped in lenient mode, naming `at`).
fn image_part(img: &Image, at: Path, lossy: &mut Lossy) -> Result<Option<Value>, Error> {
    match img {
        Image::Base64 { media_type, data } => Ok(Some(
            json!({"inlineData": {"mimeType": media_type, "data": data}}),
        )),
        Image::Url { url } => {
            if url.starts_with("gs://")
                || url.starts_with("https://generativelanguage.googleapis.com/")
            {
                Ok(Some(
                    json!({"fileData": {"mimeType": mime_of(url), "fileUri": url}}),
                ))
            } else {
                lossy.drop(at, NAME, "Gemini takes images only inline (base64) or as gs:// / Files API URIs, not by URL; send the image as base64")?;
                Ok(None)
            }
        }
    }
}

fn response_value(content: &[Part], is_error: bool) -> Value {
    let text: Vec<&str> = content
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let text = text.join("\n\n");
    if is_error {
        json!({ "error": text })
    } else {
        json!({ "result": text })
    }
}

/// The contents for a request's messages.
fn encode_contents(req: &Request, lossy: &mut Lossy) -> Result<Vec<Value>, Error> {
    let mut contents: Vec<(String, Vec<Value>)> = Vec::new();
    let mut names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let mut parts: Vec<Value> = Vec::new();
        let mut extra_images: Vec<Value> = Vec::new();
        let mut carried: Option<String> = None;
        let mut first_call_done = false;
        for (j, p) in m.content.iter().enumerate() {
            match p {
                Part::Text { text } => {
                    if text.is_empty() && carried.is_none() {
                        continue;
                    }
                    let mut v = json!({ "text": text });
                    if let Some(sig) = carried.take() {
                        v["thoughtSignature"] = json!(sig);
                    }
                    parts.push(v);
                }
                Part::Image(img) => parts.extend(image_part(img, m.path(i, j), lossy)?),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                    signature,
                } => {
                    names.insert(id.as_str(), name.as_str());
                    let args: Value = if arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments)
                            .map_err(|e| invalid(m.arguments_path(i, j), e))?
                    };
                    let mut v = json!({"functionCall": {"name": name, "args": args}});
                    match signature {
                        Some(s) if s.family == Family::Gemini => {
                            v["thoughtSignature"] = json!(s.value)
                        }
                        _ if !first_call_done => v["thoughtSignature"] = json!(SKIP_SIGNATURE),
                        _ => {}
                    }
                    first_call_done = true;
                    parts.push(v);
                }
                Part::ToolResult {
                    call_id,
                    name,
                    content,
                    is_error,
                } => {
                    let name = match name {
                        Some(n) => n.as_str(),
                        None => names.get(call_id.as_str()).copied().ok_or_else(|| {
                            Error::Untranslatable {
                                field: m.path(i, j).field(req.names.call_id).to_string(),
                                target: NAME,
                                reason: format!(
                                    "Gemini needs the function's name, and no earlier call has id '{call_id}'"
                                ),
                            }
                        })?,
                    };
                    parts.push(json!({"functionResponse": {"name": name, "response": response_value(content, *is_error)}}));
                    for (k, c) in content.iter().enumerate() {
                        if let Part::Image(img) = c {
                            extra_images.extend(image_part(img, m.inner_path(i, j, k), lossy)?);
                        }
                    }
                }
                Part::Thinking {
                    text, signature, ..
                } => {
                    let Some(sig) = signature.as_ref().filter(|s| s.family == Family::Gemini)
                    else {
                        continue;
                    };
                    if text.is_empty() {
                        // The signature of the text part that follows.
                        match m.content.get(j + 1) {
                            Some(Part::Text { .. }) => carried = Some(sig.value.clone()),
                            _ => parts.push(json!({"text": "", "thoughtSignature": sig.value})),
                        }
                    } else {
                        parts.push(
                            json!({"text": text, "thought": true, "thoughtSignature": sig.value}),
                        );
                    }
                }
            }
        }
        parts.extend(extra_images);
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((r, ps)) if r == role => ps.extend(parts),
            _ => contents.push((role.to_string(), parts)),
        }
    }
    Ok(contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect())
}

fn encode_body(req: &Request, lossy: &mut Lossy) -> Result<Map<String, Value>, Error> {
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        Value::Array(encode_contents(req, lossy)?),
    );
    let mut sys = Vec::new();
    for (i, p) in req.system.iter().enumerate() {
        match p {
            Part::Text { text } => sys.push(json!({ "text": text })),
            _ => lossy.drop(
                req.system_path(i),
                NAME,
                "system instructions can only be text",
            )?,
        }
    }
    if !sys.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": sys }));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({ "name": t.name });
                if let Some(desc) = &t.description {
                    d["description"] = json!(desc);
                }
                let params = for_gemini(&t.parameters);
                let has_props = params
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| !p.is_empty());
                if has_props {
                    d["parameters"] = params;
                }
                d
            })
            .collect();
        body.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
    }
    if let Some(tc) = &req.tool_choice {
        let cfg = match tc {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Named(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
        };
        body.insert("toolConfig".into(), json!({ "functionCallingConfig": cfg }));
    }
    if req.parallel_tool_calls == Some(false) {
        lossy.drop(
            req.names.parallel_tool_calls,
            NAME,
            "Gemini cannot be limited to one function call per turn",
        )?;
    }
    let mut g = Map::new();
    if let Some(t) = req.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        g.insert("topP".into(), json!(t));
    }
    if let Some(k) = req.top_k {
        g.insert("topK".into(), json!(k));
    }
    if let Some(m) = req.max_tokens {
        g.insert("maxOutputTokens".into(), json!(m));
    }
    if !req.stop.is_empty() {
        g.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(s) = req.seed {
        g.insert("seed".into(), json!(s));
    }
    if let Some(p) = req.presence_penalty {
        g.insert("presencePenalty".into(), json!(p));
    }
    if let Some(p) = req.frequency_penalty {
        g.insert("frequencyPenalty".into(), json!(p));
    }
    match &req.response_format {
        Some(ResponseFormat::Text) => {
            g.insert("responseMimeType".into(), json!("text/plain"));
        }
        Some(ResponseFormat::JsonObject) => {
            g.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            g.insert("responseMimeType".into(), json!("application/json"));
            g.insert("responseSchema".into(), for_gemini(schema));
        }
        None => {}
    }
    if let Some(r) = &req.reasoning {
        let cfg = if r.enabled {
            let budget = r
                .budget()
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
            json!({"thinkingBudget": budget, "includeThoughts": r.include_thoughts})
        } else {
            json!({"thinkingBudget": 0})
        };
        g.insert("thinkingConfig".into(), cfg);
    }
    if !g.is_empty() {
        body.insert("generationConfig".into(), Value::Object(g));
    }
    Ok(body)
}

pub fn encode_request(req: &Request, lossy: &mut Lossy) -> Result<Vec<u8>, Error> {
    let body = encode_body(req, lossy)?;
    serde_json::to_vec(&Value::Object(body)).map_err(|e| Error::Invalid(e.to_string()))
}

/// A `countTokens` body: `generateContentRequest`, which carries the
/// system instruction and tools (bare `contents` would not).
pub fn encode_count_request(req: &Request, lossy: &mut Lossy) -> Result<Vec<u8>, Error> {
    let mut body = encode_body(req, lossy)?;
    let model = if req.model.starts_with("models/") {
        req.model.clone()
    } else {
        format!("models/{}", req.model)
    };
    body.insert("model".into(), json!(model));
    serde_json::to_vec(&json!({ "generateContentRequest": body }))
        .map_err(|e| Error::Invalid(e.to_string()))
}

pub fn decode_count_response(body: &[u8]) -> Result<u64, Error> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::Upstream(format!("countTokens body: {e}")))?;
    v.get("totalTokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Upstream("countTokens answer without totalTokens".into()))
}

pub fn encode_count_response(n: u64) -> Vec<u8> {
    json!({ "totalTokens": n }).to_string().into_bytes()
}

// ---------------------------------------------------------------------------
// Whole answers

fn stop_of(reason: &str, has_calls: bool) -> StopReason {
    match reason {
        "STOP" if has_calls => StopReason::ToolUse,
        "STOP" => StopReason::EndTurn,
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY" => StopReason::ContentFilter,
        // RECITATION, BLOCKLIST, MALFORMED_FUNCTION_CALL, ...: kept as
        // they came; other protocols get the nearest reason.
        other => StopReason::Other(other.to_string()),
    }
}

/// Gemini's own finish reasons with no equivalent elsewhere; a Gemini
/// client gets them as they are.
const OWN_REASONS: [&str; 16] = [
    "FINISH_REASON_UNSPECIFIED",
    "RECITATION",
    "LANGUAGE",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "MALFORMED_FUNCTION_CALL",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "IMAGE_OTHER",
    "NO_IMAGE",
    "UNEXPECTED_TOOL_CALL",
    "TOO_MANY_TOOL_CALLS",
    "MALFORMED_RESPONSE",
];

/// The `finishReason` a Gemini client gets.
fn finish_reason(stop: &StopReason) -> &str {
    match stop {
        StopReason::Other(raw) if OWN_REASONS.contains(&raw.as_str()) => raw.as_str(),
        other => reason_of(other),
    }
}

/// A reason's Gemini name; the nearest one for a reason Gemini has no name
/// for.
fn reason_of(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence(_) | StopReason::ToolUse => "STOP",
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter => "SAFETY",
        StopReason::Other(raw) => reason_of(&crate::stop::nearest(raw)),
    }
}

/// A stop reason as a Gemini upstream names it (`finishReason`).
pub fn stop_name(stop: &StopReason) -> String {
    match stop {
        StopReason::Other(raw) => raw.clone(),
        named => reason_of(named).to_string(),
    }
}

fn call_id_for(response_id: &str, n: usize) -> String {
    if response_id.is_empty() {
        format!("call_{n}")
    } else {
        format!("call_{response_id}_{n}")
    }
}

pub fn decode_response(body: &[u8]) -> Result<Response, Error> {
    let r: GenerateResponse =
        serde_json::from_slice(body).map_err(|e| Error::Upstream(format!("Gemini body: {e}")))?;
    let response_id = r.response_id.clone().unwrap_or_default();
    let mut lossy = Lossy::lenient();
    let candidate = r.candidates.first();
    let parts = candidate
        .and_then(|c| c.content.as_ref())
        .map(|c| c.parts.as_slice())
        .unwrap_or(&[]);
    let mut n = 0;
    let mut make_id = |_: usize| {
        let id = call_id_for(&response_id, n);
        n += 1;
        id
    };
    let mut result_id = |name: &str| format!("call_{name}");
    let content = decode_parts(parts, "parts", &mut lossy, &mut make_id, &mut result_id)?;
    let has_calls = content.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    let stop = match candidate.and_then(|c| c.finish_reason.as_deref()) {
        Some(f) => stop_of(f, has_calls),
        None if r
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some()) =>
        {
            StopReason::ContentFilter
        }
        None if has_calls => StopReason::ToolUse,
        None => StopReason::EndTurn,
    };
    Ok(Response {
        id: response_id.clone(),
        model: r.model_version.clone().unwrap_or_default(),
        content,
        stop,
        usage: r.usage_metadata.as_ref().map(UsageMetadata::to_ir),
        created: None,
    })
}

fn model_parts(resp: &Response) -> Vec<Value> {
    let mut parts = Vec::new();
    let mut carried: Option<String> = None;
    for (j, p) in resp.content.iter().enumerate() {
        match p {
            Part::Text { text } => {
                let mut v = json!({ "text": text });
                if let Some(s) = carried.take() {
                    v["thoughtSignature"] = json!(s);
                }
                parts.push(v);
            }
            Part::ToolCall {
                id,
                name,
                arguments,
                signature,
            } => {
                // Cut by max tokens: what is complete of it (the finish
                // reason says it was cut).
                let args = Value::Object(crate::partial::object(arguments));
                let mut v = json!({"functionCall": {"id": id, "name": name, "args": args}});
                if let Some(s) = signature {
                    v["thoughtSignature"] = json!(envelope::wrap(s, Family::Gemini));
                }
                parts.push(v);
            }
            Part::Thinking {
                text, signature, ..
            } => {
                let sig = signature
                    .as_ref()
                    .map(|s| envelope::wrap(s, Family::Gemini));
                if text.is_empty() && matches!(resp.content.get(j + 1), Some(Part::Text { .. })) {
                    carried = sig;
                    continue;
                }
                let mut v = json!({"text": text, "thought": true});
                if let Some(s) = sig {
                    v["thoughtSignature"] = json!(s);
                }
                parts.push(v);
            }
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    parts
}

pub fn encode_response(resp: &Response, opts: &EncoderOptions) -> Vec<u8> {
    let id = if resp.id.is_empty() {
        &opts.id
    } else {
        &resp.id
    };
    let mut v = json!({
        "candidates": [{
            "content": {"role": "model", "parts": model_parts(resp)},
            "finishReason": finish_reason(&resp.stop),
            "index": 0,
        }],
        "modelVersion": opts.model,
        "responseId": id,
    });
    if let Some(u) = &resp.usage {
        v["usageMetadata"] = usage_json(u);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Errors

fn status_name(kind: ErrorType) -> &'static str {
    match kind {
        ErrorType::InvalidRequest | ErrorType::RequestTooLarge => "INVALID_ARGUMENT",
        ErrorType::Authentication => "UNAUTHENTICATED",
        ErrorType::Permission => "PERMISSION_DENIED",
        ErrorType::NotFound => "NOT_FOUND",
        ErrorType::RateLimit => "RESOURCE_EXHAUSTED",
        ErrorType::Overloaded => "UNAVAILABLE",
        ErrorType::Timeout => "DEADLINE_EXCEEDED",
        ErrorType::Api => "INTERNAL",
    }
}

pub fn decode_error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Google's streamed errors come as a one-element array.
    let err = v
        .get("error")
        .or_else(|| v.get(0).and_then(|x| x.get("error")));
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let kind = match err.and_then(|e| e.get("status")).and_then(Value::as_str) {
        Some("INVALID_ARGUMENT") | Some("FAILED_PRECONDITION") | Some("OUT_OF_RANGE") => {
            ErrorType::InvalidRequest
        }
        Some("UNAUTHENTICATED") => ErrorType::Authentication,
        Some("PERMISSION_DENIED") => ErrorType::Permission,
        Some("NOT_FOUND") => ErrorType::NotFound,
        Some("RESOURCE_EXHAUSTED") => ErrorType::RateLimit,
        Some("UNAVAILABLE") => ErrorType::Overloaded,
        Some("DEADLINE_EXCEEDED") => ErrorType::Timeout,
        _ => ErrorType::from_status(status),
    };
    ApiError {
        status,
        kind,
        message,
    }
}

fn error_json(err: &ApiError) -> Value {
    json!({"error": {
        "code": err.status_for_non_anthropic(),
        "message": err.message,
        "status": status_name(err.kind),
    }})
}

pub fn encode_error(err: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&error_json(err)).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Reading an upstream stream

#[derive(Debug, Clone, Copy, PartialEq)]
enum OpenKind {
    Text,
    Thinking,
}

/// Reads a Gemini upstream stream (`alt=sse`: one whole
/// `GenerateContentResponse` per event).
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    complete: bool,
    next_block: usize,
    open: Option<(OpenKind, usize)>,
    response_id: String,
    calls: usize,
    has_calls: bool,
    stopped: bool,
}

impl Decoder {
    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some((_, index)) = self.open.take() {
            out.push(Event::BlockStop { index });
        }
    }

    fn block(&mut self, kind: OpenKind, out: &mut Vec<Event>) -> usize {
        if let Some((k, i)) = self.open {
            if k == kind {
                return i;
            }
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(Event::BlockStart {
            index,
            block: match kind {
                OpenKind::Text => Block::Text,
                OpenKind::Thinking => Block::Thinking {
                    id: None,
                    redacted: false,
                },
            },
        });
        self.open = Some((kind, index));
        index
    }

    fn part(&mut self, p: &PartWire, out: &mut Vec<Event>) {
        let signature = signature_of(&p.thought_signature);
        if let Some(fc) = &p.function_call {
            self.close(out);
            let id = match &fc.id {
                Some(id) => id.clone(),
                None => {
                    let id = call_id_for(&self.response_id, self.calls);
                    self.calls += 1;
                    id
                }
            };
            let index = self.next_block;
            self.next_block += 1;
            out.push(Event::BlockStart {
                index,
                block: Block::ToolCall {
                    id,
                    name: fc.name.clone(),
                    signature,
                },
            });
            let args = fc
                .args
                .as_ref()
                .map_or_else(|| "{}".to_string(), Value::to_string);
            out.push(Event::Delta {
                index,
                delta: Delta::Arguments(args),
            });
            out.push(Event::BlockStop { index });
            self.has_calls = true;
            return;
        }
        let Some(text) = &p.text else {
            if let Some(sig) = signature {
                self.close(out);
                let i = self.block(OpenKind::Thinking, out);
                out.push(Event::Delta {
                    index: i,
                    delta: Delta::Signature(sig),
                });
                self.close(out);
            }
            return;
        };
        if p.thought == Some(true) {
            let i = self.block(OpenKind::Thinking, out);
            if !text.is_empty() {
                out.push(Event::Delta {
                    index: i,
                    delta: Delta::Thinking(text.clone()),
                });
            }
            if let Some(sig) = signature {
                out.push(Event::Delta {
                    index: i,
                    delta: Delta::Signature(sig),
                });
                self.close(out);
            }
            return;
        }
        if let Some(sig) = signature {
            // The signature of this text part: a thinking part just
            // before it.
            self.close(out);
            let i = self.block(OpenKind::Thinking, out);
            out.push(Event::Delta {
                index: i,
                delta: Delta::Signature(sig),
            });
            self.close(out);
        }
        if !text.is_empty() {
            let i = self.block(OpenKind::Text, out);
            out.push(Event::Delta {
                index: i,
                delta: Delta::Text(text.clone()),
            });
        }
    }
}

impl StreamDecoder for Decoder {
    fn event(&mut self, _name: &str, data: &str, out: &mut Vec<Event>) -> Result<(), Error> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let r: GenerateResponse = serde_json::from_str(data)
            .map_err(|e| Error::Upstream(format!("Gemini stream chunk: {e}")))?;
        if !self.started {
            self.started = true;
            self.response_id = r.response_id.clone().unwrap_or_default();
            out.push(Event::Start {
                id: self.response_id.clone(),
                model: r.model_version.clone().unwrap_or_default(),
            });
        }
        if let Some(err) = &r.error {
            self.close(out);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream stream error")
                .to_string();
            out.push(Event::Error { message });
            return Ok(());
        }
        let mut finish = None;
        if let Some(c) = r.candidates.first() {
            if let Some(content) = &c.content {
                for p in &content.parts {
                    self.part(p, out);
                }
            }
            finish = c.finish_reason.clone();
        } else if let Some(reason) = r
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.clone())
        {
            finish = Some(format!("BLOCKED_{reason}"));
        }
        if let Some(u) = &r.usage_metadata {
            out.push(Event::Usage(u.to_ir()));
        }
        if let Some(f) = finish {
            self.close(out);
            let stop = if f.starts_with("BLOCKED_") {
                StopReason::ContentFilter
            } else {
                stop_of(&f, self.has_calls)
            };
            if !self.stopped {
                self.stopped = true;
                out.push(Event::Stop(stop));
            }
            self.complete = true;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        self.close(out);
    }

    fn complete(&self) -> bool {
        self.complete
    }
}

// ---------------------------------------------------------------------------
// Writing a client stream

#[derive(Debug)]
enum OpenBlock {
    Text,
    Thinking,
    Call {
        id: String,
        name: String,
        signature: Option<Opaque>,
        args: String,
    },
}

/// Writes a Gemini stream for a client: SSE (`alt=sse`) or a JSON array.
#[derive(Debug)]
pub struct Encoder {
    opts: EncoderOptions,
    id: String,
    blocks: HashMap<usize, OpenBlock>,
    chunks: usize,
    ended: bool,
    stop: Option<StopReason>,
    usage: Option<Usage>,
}

impl Encoder {
    pub fn new(opts: EncoderOptions) -> Encoder {
        let id = opts.id.clone();
        Encoder {
            opts,
            id,
            blocks: HashMap::new(),
            chunks: 0,
            ended: false,
            stop: None,
            usage: None,
        }
    }

    fn write(&mut self, v: &Value, out: &mut Vec<u8>) {
        if self.opts.sse {
            sse(out, None, v);
        } else {
            out.extend_from_slice(if self.chunks == 0 { b"[" } else { b",\r\n" });
            let _ = serde_json::to_writer(&mut *out, v);
        }
        self.chunks += 1;
    }

    fn chunk(&mut self, part: Value, out: &mut Vec<u8>) {
        let v = json!({
            "candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
            "modelVersion": self.opts.model,
            "responseId": self.id,
        });
        self.write(&v, out);
    }

    fn close_array(&mut self, out: &mut Vec<u8>) {
        if !self.opts.sse {
            if self.chunks == 0 {
                out.push(b'[');
            }
            out.push(b']');
        }
    }

    fn flush_call(&mut self, index: usize, out: &mut Vec<u8>) {
        if let Some(OpenBlock::Call {
            id,
            name,
            signature,
            args,
        }) = self.blocks.remove(&index)
        {
            // Whole, or what is complete of it when max tokens cut it.
            let args = Value::Object(crate::partial::object(&args));
            let mut part = json!({"functionCall": {"id": id, "name": name, "args": args}});
            if let Some(s) = signature {
                part["thoughtSignature"] = json!(envelope::wrap(&s, Family::Gemini));
            }
            self.chunk(part, out);
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
                if self.id.is_empty() {
                    self.id = id;
                }
            }
            Event::BlockStart { index, block } => {
                let b = match block {
                    Block::Text => OpenBlock::Text,
                    Block::Thinking { .. } => OpenBlock::Thinking,
                    Block::ToolCall {
                        id,
                        name,
                        signature,
                    } => OpenBlock::Call {
                        id,
                        name,
                        signature,
                        args: String::new(),
                    },
                };
                self.blocks.insert(index, b);
            }
            Event::Delta { index, delta } => match (self.blocks.get_mut(&index), delta) {
                (Some(OpenBlock::Text), Delta::Text(t)) if !t.is_empty() => {
                    self.chunk(json!({ "text": t }), out)
                }
                (Some(OpenBlock::Thinking), Delta::Thinking(t)) if !t.is_empty() => {
                    self.chunk(json!({"text": t, "thought": true}), out)
                }
                (Some(OpenBlock::Thinking), Delta::Signature(s)) => {
                    let sig = envelope::wrap(&s, Family::Gemini);
                    self.chunk(
                        json!({"text": "", "thought": true, "thoughtSignature": sig}),
                        out,
                    )
                }
                (Some(OpenBlock::Call { args, .. }), Delta::Arguments(a)) => args.push_str(&a),
                _ => {}
            },
            Event::BlockStop { index } => {
                if matches!(self.blocks.get(&index), Some(OpenBlock::Call { .. })) {
                    self.flush_call(index, out);
                } else {
                    self.blocks.remove(&index);
                }
            }
            Event::Usage(u) => self.usage = Some(u),
            Event::Stop(s) => self.stop = Some(s),
            Event::Error { message } => self.fail(&message, out),
        }
    }

    fn finish(&mut self, fallback_usage: Option<Usage>, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        // A call cut off before its stop still goes out whole.
        let mut open: Vec<usize> = self.blocks.keys().copied().collect();
        open.sort_unstable();
        for index in open {
            self.flush_call(index, out);
        }
        if self.usage.is_none() {
            self.usage = fallback_usage;
        }
        let stop = self.stop.clone().unwrap_or(StopReason::EndTurn);
        let mut v = json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": ""}]},
                "finishReason": finish_reason(&stop),
                "index": 0,
            }],
            "modelVersion": self.opts.model,
            "responseId": self.id,
        });
        if let Some(u) = &self.usage {
            v["usageMetadata"] = usage_json(u);
        }
        self.write(&v, out);
        self.close_array(out);
        self.ended = true;
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let err = error_json(&ApiError {
            status: 500,
            kind: ErrorType::Api,
            message: message.to_string(),
        });
        self.write(&err, out);
        self.close_array(out);
        self.ended = true;
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sig(f: Family, v: &str) -> Option<Opaque> {
        Some(Opaque {
            family: f,
            value: v.into(),
        })
    }

    fn sdk_request() -> Value {
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}}]},
                {"role": "model", "parts": [
                    {"text": "Let me check.", "thoughtSignature": "TSIG"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "FSIG"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"error": "timeout"}}}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                       "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"temperature": 0.5, "topP": 0.9, "topK": 40, "maxOutputTokens": 1000, "stopSequences": ["END"],
                                 "seed": 7, "responseMimeType": "application/json",
                                 "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}},
            "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]
        })
    }

    #[test]
    fn decodes_an_sdk_request_and_links_results_to_calls() {
        let req =
            decode_request(sdk_request().to_string().as_bytes(), &mut Lossy::strict()).unwrap();
        assert_eq!(
            req.system,
            vec![Part::Text {
                text: "Be brief.".into()
            }]
        );
        assert_eq!(req.messages.len(), 3);
        assert_eq!(
            req.messages[1].content,
            vec![
                Part::Thinking {
                    text: String::new(),
                    signature: sig(Family::Gemini, "TSIG"),
                    redacted: false,
                    id: None
                },
                Part::Text {
                    text: "Let me check.".into()
                },
                Part::ToolCall {
                    id: "call_1_1".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into(),
                    signature: sig(Family::Gemini, "FSIG")
                },
                Part::ToolCall {
                    id: "call_1_2".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Rome\"}".into(),
                    signature: None
                },
            ]
        );
        assert_eq!(
            req.messages[2].content,
            vec![
                Part::ToolResult {
                    call_id: "call_1_1".into(),
                    name: Some("get_weather".into()),
                    content: vec![Part::Text {
                        text: "sunny".into()
                    }],
                    is_error: false
                },
                Part::ToolResult {
                    call_id: "call_1_2".into(),
                    name: Some("get_weather".into()),
                    content: vec![Part::Text {
                        text: "timeout".into()
                    }],
                    is_error: true
                },
            ]
        );
        assert_eq!(
            req.tools[0].parameters,
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
        );
        assert_eq!(
            req.tool_choice,
            Some(ToolChoice::Named("get_weather".into()))
        );
        assert_eq!(req.top_k, Some(40));
        assert_eq!(req.stop, vec!["END".to_string()]);
        assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(
            req.reasoning,
            Some(Reasoning {
                enabled: true,
                effort: None,
                budget_tokens: Some(2048),
                include_thoughts: true
            })
        );
    }

    #[test]
    fn accepts_snake_case_and_keeps_client_ids() {
        let body = json!({
            "contents": [
                {"role": "model", "parts": [{"function_call": {"id": "abc", "name": "f", "args": {}}, "thought_signature": "S"}]},
                {"role": "user", "parts": [{"function_response": {"id": "abc", "name": "f", "response": {"output": 1}}}]}
            ],
            "system_instruction": {"parts": [{"text": "sys"}]},
            "generation_config": {"max_output_tokens": 10, "thinking_config": {"thinking_budget": 0}}
        });
        let req = decode_request(body.to_string().as_bytes(), &mut Lossy::strict()).unwrap();
        assert_eq!(req.system, vec![Part::Text { text: "sys".into() }]);
        assert_eq!(
            req.messages[0].content[0],
            Part::ToolCall {
                id: "abc".into(),
                name: "f".into(),
                arguments: "{}".into(),
                signature: sig(Family::Gemini, "S")
            }
        );
        assert!(
            matches!(&req.messages[1].content[0], Part::ToolResult { call_id, content, .. } if call_id == "abc" && content == &vec![Part::Text { text: "1".into() }])
        );
        assert_eq!(req.max_tokens, Some(10));
        assert!(!req.reasoning.unwrap().enabled);
        let unknown = json!({"contents": [], "cachedContent": "cachedContents/1", "frobnicate": 1});
        let mut l = Lossy::lenient();
        decode_request(unknown.to_string().as_bytes(), &mut l).unwrap();
        assert_eq!(l.dropped, vec!["frobnicate", "cachedContent"]);
        assert!(decode_request(unknown.to_string().as_bytes(), &mut Lossy::strict()).is_err());
    }

    #[test]
    fn round_trips_requests() {
        // Defaults: every model turn's first unsigned functionCall gets the
        // placeholder signature; ids are not sent; `thinkingLevel` becomes
        // a budget.
        let corpus = vec![
            sdk_request_with_placeholder(),
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}, {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/x.png"}}]}]}),
            json!({"contents": [
                {"role": "user", "parts": [{"text": "q"}]},
                {"role": "model", "parts": [{"text": "thinking...", "thought": true, "thoughtSignature": "T1"}, {"text": "a"}, {"text": "", "thoughtSignature": "T2"}]},
                {"role": "user", "parts": [{"text": "more"}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "noargs", "description": "d"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
            "generationConfig": {"presencePenalty": 0.1, "frequencyPenalty": 0.2, "responseMimeType": "application/json",
                                 "responseSchema": {"type": "object", "properties": {"a": {"type": "string"}}}}}),
        ];
        for x in corpus {
            let req = decode_request(x.to_string().as_bytes(), &mut Lossy::strict()).unwrap();
            let back: Value =
                serde_json::from_slice(&encode_request(&req, &mut Lossy::strict()).unwrap())
                    .unwrap();
            assert_eq!(back, x);
        }
    }

    /// The SDK request as the encoder writes it back: `safetySettings`
    /// ignored, schema types in JSON Schema's spelling. The turn's first
    /// call is signed, so no placeholder is added.
    fn sdk_request_with_placeholder() -> Value {
        let mut x = sdk_request();
        x.as_object_mut().unwrap().remove("safetySettings");
        x["tools"][0]["functionDeclarations"][0]["parameters"] = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        x
    }

    #[test]
    fn encoding_for_gemini() {
        let req = Request {
            messages: vec![
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![Part::Text { text: "a".into() }],
                },
                Message {
                    role: Role::User,
                    origins: Vec::new(),
                    content: vec![
                        Part::Text { text: "".into() },
                        Part::Text { text: "b".into() },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    origins: Vec::new(),
                    content: vec![
                        Part::Thinking {
                            text: "claude".into(),
                            signature: sig(Family::Anthropic, "A"),
                            redacted: false,
                            id: None,
                        },
                        Part::ToolCall {
                            id: "toolu_1".into(),
                            name: "f".into(),
                            arguments: "{\"x\":1}".into(),
                            signature: None,
                        },
                        Part::ToolCall {
                            id: "toolu_2".into(),
                            name: "g".into(),
                            arguments: "".into(),
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
                            content: vec![Part::Text { text: "ok".into() }],
                            is_error: false,
                        },
                        Part::ToolResult {
                            call_id: "toolu_2".into(),
                            name: None,
                            content: vec![Part::Image(Image::Base64 {
                                media_type: "image/png".into(),
                                data: "P".into(),
                            })],
                            is_error: true,
                        },
                    ],
                },
            ],
            tools: vec![Tool {
                name: "f".into(),
                description: None,
                parameters: json!({"type": "object", "additionalProperties": false, "properties": {"x": {"type": ["integer", "null"]}}}),
                strict: Some(true),
            }],
            tool_choice: Some(ToolChoice::Required),
            reasoning: Some(Reasoning {
                enabled: true,
                effort: Some(Effort::Low),
                budget_tokens: None,
                include_thoughts: true,
            }),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "n".into(),
                schema: json!({"const": "x"}),
                strict: None,
                description: None,
            }),
            ..Default::default()
        };
        let v: Value =
            serde_json::from_slice(&encode_request(&req, &mut Lossy::strict()).unwrap()).unwrap();
        assert_eq!(
            v["contents"],
            json!([
                {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": SKIP_SIGNATURE},
                    {"functionCall": {"name": "g", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "f", "response": {"result": "ok"}}},
                    {"functionResponse": {"name": "g", "response": {"error": ""}}},
                    {"inlineData": {"mimeType": "image/png", "data": "P"}}
                ]}
            ])
        );
        assert_eq!(
            v["tools"][0]["functionDeclarations"][0]["parameters"],
            json!({"type": "object", "properties": {"x": {"type": "integer", "nullable": true}}})
        );
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
        assert_eq!(
            v["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 2048, "includeThoughts": true})
        );
        assert_eq!(
            v["generationConfig"]["responseSchema"],
            json!({"type": "string", "enum": ["x"]})
        );

        let url = Request {
            messages: vec![Message {
                role: Role::User,
                origins: Vec::new(),
                content: vec![Part::Image(Image::Url {
                    url: "https://example.com/cat.png".into(),
                })],
            }],
            ..Default::default()
        };
        // An image by URL: refused in strict mode, dropped in lenient
        // mode, named either way (here in the intermediate form's terms:
        // this request was not decoded from a client's body).
        assert!(matches!(
            encode_request(&url, &mut Lossy::strict()),
            Err(Error::Untranslatable { field, .. }) if field == "messages[0].content[0]"
        ));
        let mut lenient = Lossy::lenient();
        let v: Value =
            serde_json::from_slice(&encode_request(&url, &mut lenient).unwrap()).unwrap();
        assert_eq!(v["contents"], json!([]));
        assert_eq!(lenient.dropped, vec!["messages[0].content[0]".to_string()]);
        let orphan = Request {
            messages: vec![Message {
                role: Role::User,
                origins: Vec::new(),
                content: vec![Part::ToolResult {
                    call_id: "nope".into(),
                    name: None,
                    content: vec![],
                    is_error: false,
                }],
            }],
            ..Default::default()
        };
        assert!(matches!(
            encode_request(&orphan, &mut Lossy::lenient()),
            Err(Error::Untranslatable { .. })
        ));
    }

    #[test]
    fn decodes_whole_answers_with_stable_ids() {
        let body = json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "plan", "thought": true},
                {"functionCall": {"name": "a", "args": {"q": 1}}, "thoughtSignature": "SIG"},
                {"functionCall": {"name": "b", "args": {}}}
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 40, "candidatesTokenCount": 10, "thoughtsTokenCount": 25, "totalTokenCount": 135},
            "modelVersion": "gemini-2.5-pro", "responseId": "R1"
        });
        let r = decode_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(
            r.usage,
            Some(Usage {
                input: 60,
                cache_read: 40,
                cache_write: 0,
                output: 35,
                reasoning: 25
            })
        );
        assert_eq!(
            r.content[1],
            Part::ToolCall {
                id: "call_R1_0".into(),
                name: "a".into(),
                arguments: "{\"q\":1}".into(),
                signature: sig(Family::Gemini, "SIG")
            }
        );
        assert!(matches!(&r.content[2], Part::ToolCall { id, .. } if id == "call_R1_1"));
        for (reason, stop) in [
            ("MAX_TOKENS", StopReason::MaxTokens),
            ("SAFETY", StopReason::ContentFilter),
            ("RECITATION", StopReason::Other("RECITATION".into())),
            (
                "MALFORMED_FUNCTION_CALL",
                StopReason::Other("MALFORMED_FUNCTION_CALL".into()),
            ),
            ("STOP", StopReason::EndTurn),
        ] {
            let b = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
            assert_eq!(
                decode_response(b.to_string().as_bytes()).unwrap().stop,
                stop
            );
        }
    }

    #[test]
    fn encodes_whole_answers() {
        let resp = Response {
            id: "msg_1".into(),
            model: "claude".into(),
            content: vec![
                Part::Thinking {
                    text: "t".into(),
                    signature: sig(Family::Anthropic, "A"),
                    redacted: false,
                    id: None,
                },
                Part::Text { text: "hi".into() },
                Part::ToolCall {
                    id: "toolu_9".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                    signature: None,
                },
            ],
            stop: StopReason::ToolUse,
            usage: Some(Usage {
                input: 5,
                cache_read: 5,
                cache_write: 0,
                output: 9,
                reasoning: 4,
            }),
            created: None,
        };
        let v: Value = serde_json::from_slice(&encode_response(
            &resp,
            &EncoderOptions {
                model: "gemini-x".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        let parts = &v["candidates"][0]["content"]["parts"];
        assert_eq!(parts[0]["thought"], true);
        assert_eq!(
            envelope::unwrap(
                parts[0]["thoughtSignature"].as_str().unwrap(),
                Family::Gemini
            ),
            sig(Family::Anthropic, "A").unwrap()
        );
        assert_eq!(
            parts[2],
            json!({"functionCall": {"id": "toolu_9", "name": "f", "args": {"a": 1}}})
        );
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            v["usageMetadata"],
            json!({"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 4, "cachedContentTokenCount": 5, "totalTokenCount": 19})
        );
        // Echoed back, the thinking and the call come back as they were.
        let echo = json!({"contents": [{"role": "model", "parts": parts}]});
        let req = decode_request(echo.to_string().as_bytes(), &mut Lossy::strict()).unwrap();
        assert_eq!(req.messages[0].content, resp.content);
    }

    fn decode_all(chunks: &[Value]) -> (Vec<Event>, bool) {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.event("", &c.to_string(), &mut out).unwrap();
        }
        d.finish(&mut out);
        (out, d.complete())
    }

    fn upstream_chunks() -> Vec<Value> {
        let c = |parts: Value| json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}], "modelVersion": "gemini-2.5-flash", "responseId": "RID"});
        let mut last = c(json!([{"functionCall": {"name": "b", "args": {}}}]));
        last["candidates"][0]["finishReason"] = json!("STOP");
        last["usageMetadata"] = json!({"promptTokenCount": 20, "candidatesTokenCount": 8, "thoughtsTokenCount": 3, "totalTokenCount": 31});
        vec![
            c(json!([{"text": "hmm", "thought": true}])),
            c(json!([{"text": "Sure", "thoughtSignature": "TS"}])),
            c(json!([{"text": "!"}])),
            c(json!([{"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "FS"}])),
            last,
        ]
    }

    #[test]
    fn decodes_a_stream_golden() {
        let (events, complete) = decode_all(&upstream_chunks());
        assert!(complete);
        assert_eq!(
            events,
            vec![
                Event::Start {
                    id: "RID".into(),
                    model: "gemini-2.5-flash".into()
                },
                Event::BlockStart {
                    index: 0,
                    block: Block::Thinking {
                        id: None,
                        redacted: false
                    }
                },
                Event::Delta {
                    index: 0,
                    delta: Delta::Thinking("hmm".into())
                },
                Event::BlockStop { index: 0 },
                Event::BlockStart {
                    index: 1,
                    block: Block::Thinking {
                        id: None,
                        redacted: false
                    }
                },
                Event::Delta {
                    index: 1,
                    delta: Delta::Signature(Opaque {
                        family: Family::Gemini,
                        value: "TS".into()
                    })
                },
                Event::BlockStop { index: 1 },
                Event::BlockStart {
                    index: 2,
                    block: Block::Text
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Text("Sure".into())
                },
                Event::Delta {
                    index: 2,
                    delta: Delta::Text("!".into())
                },
                Event::BlockStop { index: 2 },
                Event::BlockStart {
                    index: 3,
                    block: Block::ToolCall {
                        id: "call_RID_0".into(),
                        name: "a".into(),
                        signature: sig(Family::Gemini, "FS")
                    }
                },
                Event::Delta {
                    index: 3,
                    delta: Delta::Arguments("{\"x\":1}".into())
                },
                Event::BlockStop { index: 3 },
                Event::BlockStart {
                    index: 4,
                    block: Block::ToolCall {
                        id: "call_RID_1".into(),
                        name: "b".into(),
                        signature: None
                    }
                },
                Event::Delta {
                    index: 4,
                    delta: Delta::Arguments("{}".into())
                },
                Event::BlockStop { index: 4 },
                Event::Usage(Usage {
                    input: 20,
                    cache_read: 0,
                    cache_write: 0,
                    output: 11,
                    reasoning: 3
                }),
                Event::Stop(StopReason::ToolUse),
            ]
        );
        let (cut, complete) = decode_all(&upstream_chunks()[..3]);
        assert!(!complete);
        assert_eq!(cut.last(), Some(&Event::BlockStop { index: 2 }));
    }

    fn stream_events() -> Vec<Event> {
        vec![
            Event::Start {
                id: "msg_1".into(),
                model: "claude".into(),
            },
            Event::BlockStart {
                index: 0,
                block: Block::Text,
            },
            Event::Delta {
                index: 0,
                delta: Delta::Text("Hi".into()),
            },
            Event::BlockStart {
                index: 1,
                block: Block::ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    signature: None,
                },
            },
            Event::Delta {
                index: 1,
                delta: Delta::Arguments("{\"a\"".into()),
            },
            Event::BlockStop { index: 0 },
            Event::Delta {
                index: 1,
                delta: Delta::Arguments(":1}".into()),
            },
            Event::BlockStop { index: 1 },
            Event::Stop(StopReason::ToolUse),
            Event::Usage(Usage {
                input: 4,
                cache_read: 0,
                cache_write: 0,
                output: 6,
                reasoning: 0,
            }),
        ]
    }

    fn encode(events: Vec<Event>, sse_mode: bool) -> Vec<u8> {
        let mut e = Encoder::new(EncoderOptions {
            model: "gemini-2.5-pro".into(),
            id: "gw1".into(),
            sse: sse_mode,
            ..Default::default()
        });
        let mut out = Vec::new();
        for ev in events {
            e.event(ev, &mut out);
        }
        e.finish(None, &mut out);
        e.finish(None, &mut out);
        out
    }

    #[test]
    fn encodes_a_stream_golden() {
        let out = String::from_utf8(encode(stream_events(), true)).unwrap();
        let chunks: Vec<Value> = out
            .split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| serde_json::from_str(f.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(
            chunks,
            vec![
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}], "modelVersion": "gemini-2.5-pro", "responseId": "gw1"}),
                json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"id": "call_1", "name": "f", "args": {"a": 1}}}]}, "index": 0}], "modelVersion": "gemini-2.5-pro", "responseId": "gw1"}),
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                       "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "thoughtsTokenCount": 0, "cachedContentTokenCount": 0, "totalTokenCount": 10},
                       "modelVersion": "gemini-2.5-pro", "responseId": "gw1"}),
            ]
        );
        // Without SSE: a JSON array, as Google's own non-SSE stream.
        let array = encode(stream_events(), false);
        let v: Value = serde_json::from_slice(&array).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert!(String::from_utf8(array).unwrap().contains("},\r\n{"));
    }

    #[test]
    fn a_call_cut_by_max_tokens_still_goes_out_whole_and_failure_ends_the_stream() {
        let events = vec![
            Event::Start {
                id: "r".into(),
                model: "m".into(),
            },
            Event::BlockStart {
                index: 0,
                block: Block::ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    signature: None,
                },
            },
            Event::Delta {
                index: 0,
                delta: Delta::Arguments("{\"a\":".into()),
            },
            Event::Stop(StopReason::MaxTokens),
        ];
        let v: Value = serde_json::from_slice(&encode(events, false)).unwrap();
        assert_eq!(
            v[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
            json!({})
        );
        assert_eq!(v[1]["candidates"][0]["finishReason"], "MAX_TOKENS");

        let mut e = Encoder::new(EncoderOptions {
            sse: false,
            ..Default::default()
        });
        let mut out = Vec::new();
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
                delta: Delta::Text("x".into()),
            },
            &mut out,
        );
        e.fail("boom", &mut out);
        e.finish(None, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v[1],
            json!({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}})
        );
    }

    #[test]
    fn counting_and_errors() {
        let req = Request {
            model: "gemini-2.5-pro".into(),
            system: vec![Part::Text { text: "s".into() }],
            messages: vec![Message {
                role: Role::User,
                origins: Vec::new(),
                content: vec![Part::Text { text: "hi".into() }],
            }],
            ..Default::default()
        };
        let v: Value =
            serde_json::from_slice(&encode_count_request(&req, &mut Lossy::strict()).unwrap())
                .unwrap();
        assert_eq!(
            v["generateContentRequest"]["model"],
            "models/gemini-2.5-pro"
        );
        assert_eq!(
            v["generateContentRequest"]["systemInstruction"],
            json!({"parts": [{"text": "s"}]})
        );
        let back =
            decode_count_request(&serde_json::to_vec(&v).unwrap(), &mut Lossy::strict()).unwrap();
        assert_eq!(back.system, req.system);
        let bare = decode_count_request(
            br#"{"contents": [{"parts": [{"text": "hi"}]}]}"#,
            &mut Lossy::strict(),
        )
        .unwrap();
        assert_eq!(bare.messages[0].content, req.messages[0].content);
        assert_eq!(
            decode_count_response(br#"{"totalTokens": 31, "promptTokensDetails": []}"#).unwrap(),
            31
        );
        assert_eq!(encode_count_response(5), br#"{"totalTokens":5}"#.to_vec());

        let e = decode_error(
            429,
            br#"{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(
            e,
            ApiError {
                status: 429,
                kind: ErrorType::RateLimit,
                message: "quota".into()
            }
        );
        let out: Value = serde_json::from_slice(&encode_error(&ApiError {
            status: 529,
            kind: ErrorType::Overloaded,
            message: "busy".into(),
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}})
        );
    }

    proptest! {
        /// Decoding is a function of the chunks: the same chunks give the
        /// same events, every block opened is closed, and indices are
        /// contiguous from 0.
        #[test]
        fn decoding_is_deterministic_and_balanced(picks in proptest::collection::vec(0usize..5, 0..12)) {
            let all = upstream_chunks();
            let chunks: Vec<Value> = picks.iter().map(|&i| all[i].clone()).collect();
            let (a, _) = decode_all(&chunks);
            let (b, _) = decode_all(&chunks);
            prop_assert_eq!(&a, &b);
            let starts: Vec<usize> = a.iter().filter_map(|e| match e { Event::BlockStart { index, .. } => Some(*index), _ => None }).collect();
            prop_assert_eq!(starts.clone(), (0..starts.len()).collect::<Vec<_>>());
            let stops = a.iter().filter(|e| matches!(e, Event::BlockStop { .. })).count();
            prop_assert_eq!(stops, starts.len());
            // The encoder's SSE output parses back as JSON objects.
            let out = String::from_utf8(encode(a, true)).unwrap();
            for f in out.split("\n\n").filter(|f| !f.is_empty()) {
                let v: Value = serde_json::from_str(f.strip_prefix("data: ").unwrap()).unwrap();
                prop_assert!(v.is_object());
            }
        }
    }
}
