//! The intermediate form every protocol converts to and from: one request,
//! one response and one usage, small enough that each protocol maps onto
//! it field by field. It is never sent anywhere; it exists only between a
//! client protocol's decoder and a provider protocol's encoder.
//!
//! Conventions every converter keeps:
//! - System and developer instructions are [`Request::system`], never a
//!   message; a message's role is only user or assistant.
//! - A tool result is a [`Part::ToolResult`] in a user message (as in
//!   Anthropic); a protocol that gives results their own role or item
//!   splits or merges messages when it encodes.
//! - Tool-call arguments are JSON text, exactly as produced; they are
//!   parsed only by an encoder whose protocol wants an object.
//! - Opaque reasoning state ([`Opaque`]) records the family that made it;
//!   an encoder sends it only to that family and drops it elsewhere.
//! - Every message part and system part remembers where it came from in
//!   the client's body ([`Path`], set by the client protocol's decoder),
//!   so that a field an encoder refuses or drops is named in the client's
//!   own terms (`input[2].content[1]`, `contents[0].parts[3]`), never in
//!   the intermediate form's.

use std::fmt;

use serde_json::Value;

/// A chat request in the intermediate form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The model the client asked for (the gateway replaces it).
    pub model: String,
    /// System and developer instructions, in order (text parts; an image
    /// here is named as untranslatable by encoders that cannot take it).
    pub system: Vec<Part>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `Some(false)`: at most one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning: Option<Reasoning>,
    pub stream: bool,
    /// An end-user id, where the protocol has one (OpenAI `user`,
    /// Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Where each part of `system` came from in the client's body (the
    /// same length as `system`, or empty when the request was not
    /// decoded from a client's body).
    pub system_origins: Vec<Path>,
    /// The client's names for the settings above.
    pub names: Names,
}

impl Request {
    /// The client's path of system part `i`.
    pub fn system_path(&self, i: usize) -> Path {
        self.system_origins
            .get(i)
            .copied()
            .unwrap_or_else(|| Path::at(&["system"], &[i]))
    }
}

/// A place in the client's body: field names chosen by the client
/// protocol's decoder, each with an index where the field is a list
/// (`input[2].content[1]`). Copy and allocation-free, so that every part
/// can carry one; rendered as text only when a field is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    names: &'static [&'static str],
    /// The index after each of the first three names ([`Path::KEY`]: none).
    index: [u32; 3],
}

impl Path {
    /// An index slot for a name that is not a list.
    pub const KEY: usize = usize::MAX;

    /// `names` with `index` (one per name, [`Path::KEY`] for a name that
    /// is not a list; missing trailing ones are [`Path::KEY`]).
    pub fn at(names: &'static [&'static str], index: &[usize]) -> Path {
        let mut idx = [u32::MAX; 3];
        for (slot, i) in idx.iter_mut().zip(index) {
            *slot = u32::try_from(*i).unwrap_or(u32::MAX);
        }
        Path { names, index: idx }
    }

    /// The field `name` of what this path names, rendered when shown.
    pub fn field(self, name: &str) -> Field<'_> {
        Field { path: self, name }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, name) in self.names.iter().enumerate() {
            if k > 0 {
                f.write_str(".")?;
            }
            f.write_str(name)?;
            match self.index.get(k) {
                Some(&i) if i != u32::MAX => write!(f, "[{i}]")?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// A field below a [`Path`] (`{path}.{name}`); `name` may itself be a
/// dotted path, and an empty one names the path itself.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    path: Path,
    name: &'a str,
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}", self.path)
        } else {
            write!(f, "{}.{}", self.path, self.name)
        }
    }
}

/// The client's names for settings an encoder may have to refuse, and
/// for the call id of a tool result (relative to the result's [`Path`]). The default is the
/// intermediate form's own names ([`Names::IR`]), for a request not
/// decoded from a client's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    pub parallel_tool_calls: &'static str,
    pub top_k: &'static str,
    pub stop: &'static str,
    pub seed: &'static str,
    pub presence_penalty: &'static str,
    pub frequency_penalty: &'static str,
    pub response_format: &'static str,
    /// The id of the call a tool result answers, below the result.
    pub call_id: &'static str,
}

impl Names {
    /// The intermediate form's own names (the OpenAI ones); a client's
    /// table states only where it differs.
    pub const IR: Names = Names {
        parallel_tool_calls: "parallel_tool_calls",
        top_k: "top_k",
        stop: "stop",
        seed: "seed",
        presence_penalty: "presence_penalty",
        frequency_penalty: "frequency_penalty",
        response_format: "response_format",
        call_id: "call_id",
    };
}

impl Default for Names {
    fn default() -> Names {
        Names::IR
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// Where each part of `content` came from in the client's body (the
    /// same length as `content`, or empty for a message not decoded from
    /// a client's body).
    pub origins: Vec<Origin>,
}

/// Where a message part came from in the client's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub at: Path,
    /// For a tool call: where its arguments are.
    pub arguments: Option<Path>,
    /// For a tool result: where each part of its content came from.
    pub inner: Vec<Path>,
}

impl Origin {
    /// A part at `at`.
    pub fn at(at: Path) -> Origin {
        Origin {
            at,
            arguments: None,
            inner: Vec::new(),
        }
    }

    /// A tool call at `at`, its arguments at `arguments`.
    pub fn call(at: Path, arguments: Path) -> Origin {
        Origin {
            at,
            arguments: Some(arguments),
            inner: Vec::new(),
        }
    }

    /// A tool result at `at`, the parts of its content at `inner`.
    pub fn result(at: Path, inner: Vec<Path>) -> Origin {
        Origin {
            at,
            arguments: None,
            inner,
        }
    }
}

impl Message {
    /// A message with no origins (made by the gateway, or in a test).
    pub fn new(role: Role, content: Vec<Part>) -> Message {
        Message {
            role,
            content,
            origins: Vec::new(),
        }
    }

    /// Appends `part`, which came from `at`.
    pub fn push(&mut self, part: Part, at: Origin) {
        self.content.push(part);
        self.origins.push(at);
    }

    /// The client's path of part `j` of this message, the message being
    /// number `i` of the request.
    pub fn path(&self, i: usize, j: usize) -> Path {
        match self.origins.get(j) {
            Some(o) => o.at,
            None => Path::at(&["messages", "content"], &[i, j]),
        }
    }

    /// The client's path of the arguments of tool call `j` of this
    /// message.
    pub fn arguments_path(&self, i: usize, j: usize) -> Path {
        match self.origins.get(j).and_then(|o| o.arguments) {
            Some(p) => p,
            None => Path::at(&["messages", "content", "arguments"], &[i, j]),
        }
    }

    /// The client's path of part `k` of tool result `j` of this message.
    pub fn inner_path(&self, i: usize, j: usize, k: usize) -> Path {
        match self.origins.get(j).and_then(|o| o.inner.get(k)) {
            Some(p) => *p,
            None => Path::at(&["messages", "content", "content"], &[i, j, k]),
        }
    }
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text {
        text: String,
    },
    Image(Image),
    /// A call the assistant made. `arguments` is JSON text.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
        /// Gemini's `thoughtSignature` on a `functionCall` part.
        signature: Option<Opaque>,
    },
    /// The result of a call, linked by `call_id`. `name` is the called
    /// tool's name where the protocol carries it (Gemini needs it; an
    /// encoder that needs it and lacks it looks up the call by id in the
    /// earlier messages).
    ToolResult {
        call_id: String,
        name: Option<String>,
        /// Text and images.
        content: Vec<Part>,
        is_error: bool,
    },
    /// Model reasoning. `text` is the visible thinking or summary (may be
    /// empty); `signature` the opaque state that must come back unchanged
    /// to the same family; `redacted` marks Anthropic `redacted_thinking`
    /// (whose `data` is the signature). `id` is a Responses reasoning
    /// item's id.
    Thinking {
        text: String,
        signature: Option<Opaque>,
        redacted: bool,
        id: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// An `https:` URL. The gateway never fetches it.
    Url {
        url: String,
    },
    Base64 {
        media_type: String,
        data: String,
    },
}

impl Image {
    /// A `data:` URL split into its media type and base64 data, else a URL.
    pub fn from_url(url: &str) -> Image {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((meta, data)) = rest.split_once(',') {
                if let Some(media_type) = meta.strip_suffix(";base64") {
                    return Image::Base64 {
                        media_type: media_type.to_string(),
                        data: data.to_string(),
                    };
                }
            }
        }
        Image::Url {
            url: url.to_string(),
        }
    }

    /// The image as a URL (`data:` for base64).
    pub fn to_url(&self) -> String {
        match self {
            Image::Url { url } => url.clone(),
            Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// The family of models that produced opaque reasoning state. State goes
/// back only to its own family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Anthropic,
    Gemini,
    OpenAi,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Anthropic => "anthropic",
            Family::Gemini => "gemini",
            Family::OpenAi => "openai",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Some(match s {
            "anthropic" => Family::Anthropic,
            "gemini" => Family::Gemini,
            "openai" => Family::OpenAi,
            _ => return None,
        })
    }
}

/// Opaque state (a thinking signature, `redacted_thinking` data, Gemini's
/// `thoughtSignature`, Responses' `encrypted_content`), byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opaque {
    pub family: Family,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
    /// OpenAI `strict`.
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    /// At least one tool (OpenAI `required`, Anthropic `any`, Gemini `ANY`).
    Required,
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
        description: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Effort> {
        Some(match s {
            "minimal" => Effort::Minimal,
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" => Effort::High,
            _ => return None,
        })
    }

    /// The thinking budget an effort stands for, where a protocol wants
    /// tokens (Anthropic `budget_tokens`, Gemini `thinkingBudget`).
    pub fn budget_tokens(self) -> u64 {
        match self {
            Effort::Minimal => 1024,
            Effort::Low => 2048,
            Effort::Medium => 8192,
            Effort::High => 24576,
        }
    }

    /// The effort a token budget stands for.
    pub fn from_budget(tokens: u64) -> Effort {
        match tokens {
            0..=1024 => Effort::Minimal,
            1025..=4096 => Effort::Low,
            4097..=16384 => Effort::Medium,
            _ => Effort::High,
        }
    }
}

/// Reasoning asked for. `enabled: false` switches it off explicitly
/// (Anthropic `disabled`, Gemini budget 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Reasoning {
    pub enabled: bool,
    pub effort: Option<Effort>,
    pub budget_tokens: Option<u64>,
    /// Whether the client wants the thinking text or a summary of it.
    pub include_thoughts: bool,
}

impl Reasoning {
    /// The budget in tokens: the explicit one, else the effort's.
    pub fn budget(&self) -> Option<u64> {
        self.budget_tokens
            .or_else(|| self.effort.map(Effort::budget_tokens))
    }

    /// The effort: the explicit one, else the budget's.
    pub fn effort(&self) -> Option<Effort> {
        self.effort
            .or_else(|| self.budget_tokens.map(Effort::from_budget))
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    /// A stop sequence matched; the sequence when the upstream names it.
    StopSequence(Option<String>),
    MaxTokens,
    ToolUse,
    /// Refusal, content filter, safety.
    ContentFilter,
    /// A reason with no equivalent, as the upstream sent it.
    Other(String),
}

/// Token counts with one meaning for every protocol. Total input is
/// `input + cache_read + cache_write`; `output` includes `reasoning`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens neither read from nor written to a cache.
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    /// All generated tokens, reasoning included.
    pub output: u64,
    /// The reasoning share of `output`.
    pub reasoning: u64,
}

impl Usage {
    pub fn total_input(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }
}

/// A whole (non-streaming) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: String,
    pub model: String,
    /// The assistant's content in order.
    pub content: Vec<Part>,
    pub stop: StopReason,
    pub usage: Option<Usage>,
    /// Unix seconds, where the upstream gave it.
    pub created: Option<i64>,
}

/// A request to count input tokens (Anthropic `count_tokens`, Gemini
/// `countTokens`) is a [`Request`] whose answer is a number.
pub type CountRequest = Request;
