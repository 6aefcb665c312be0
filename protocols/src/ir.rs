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
