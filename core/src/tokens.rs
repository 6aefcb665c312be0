//! Token estimates with tiktoken, for when an upstream reports no usage and
//! for routing rules on `input_tokens`: `o200k_base` for the gpt-4o,
//! o-series and gpt-5 families, `cl100k_base` for everything else.
//!
//! Each encoding's table is built on first use and kept for the life of the
//! process. A table is tens of MiB (the two together are about 55 MiB of
//! resident memory), and most gateways never need one because upstreams
//! report usage, so nothing is loaded up front. Building a table takes a
//! noticeable fraction of a second, so code on a request path asks with
//! [`try_estimate_input`], which never loads: it says which [`Encoding`] is
//! missing, and the caller can load it elsewhere ([`Encoding::load`] on a
//! blocking thread) and use [`approximate_input`] meanwhile.

use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// A tiktoken encoding the gateway counts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

/// Built tables; `None` inside if building failed (then estimates fall back
/// to [`approximate_input`]'s rule of thumb rather than failing a record).
static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();

impl Encoding {
    /// The encoding for an upstream model name.
    pub fn for_model(model: &str) -> Encoding {
        let m = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let o200k = m.starts_with("gpt-4o")
            || m.starts_with("chatgpt-4o")
            || m.starts_with("gpt-4.1")
            || m.starts_with("gpt-4.5")
            || m.starts_with("gpt-5")
            || m.starts_with("o1")
            || m.starts_with("o3")
            || m.starts_with("o4");
        if o200k {
            Encoding::O200kBase
        } else {
            Encoding::Cl100kBase
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    fn cell(self) -> &'static OnceLock<Option<CoreBPE>> {
        match self {
            Encoding::O200kBase => &O200K,
            Encoding::Cl100kBase => &CL100K,
        }
    }

    /// The table if it is built; never waits.
    pub fn get(self) -> Option<&'static CoreBPE> {
        self.cell().get().and_then(Option::as_ref)
    }

    /// Whether the table is built (or building it has failed): a further
    /// [`Encoding::load`] returns at once.
    pub fn is_loaded(self) -> bool {
        self.cell().get().is_some()
    }

    /// The table, building it first if needed. This blocks for the build
    /// (and while another thread builds it): call it on a blocking thread.
    /// `None` only if the embedded vocabulary could not be parsed.
    pub fn load(self) -> Option<&'static CoreBPE> {
        self.cell()
            .get_or_init(|| {
                let built = match self {
                    Encoding::O200kBase => tiktoken_rs::o200k_base(),
                    Encoding::Cl100kBase => tiktoken_rs::cl100k_base(),
                };
                built.ok()
            })
            .as_ref()
    }
}

/// Tokens of `text`, building the model's encoding if needed (blocking).
pub fn count_text(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match Encoding::for_model(model).load() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => approximate_text(text),
    }
}

/// Per-message overhead of the chat format (role and separators).
const PER_MESSAGE: u64 = 3;

/// Bytes per token of the rule of thumb for English text with these
/// encodings.
const BYTES_PER_TOKEN: u64 = 4;

fn approximate_text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(BYTES_PER_TOKEN)
}

/// The request's cap on output tokens as its body names it: `max_tokens`,
/// `max_completion_tokens` or `max_output_tokens`, in that order, else
/// Gemini's `generationConfig.maxOutputTokens`.
pub fn max_output(body: &serde_json::Value) -> Option<u64> {
    ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|f| body.get(*f).and_then(serde_json::Value::as_u64))
        .or_else(|| {
            body.pointer("/generationConfig/maxOutputTokens")
                .and_then(serde_json::Value::as_u64)
        })
}

/// Estimates the input tokens of a request body of any protocol: the
/// text of messages, system prompt, prompt or input, plus a small overhead
/// per chat message. Builds the model's encoding if needed (blocking).
pub fn estimate_input(model: &str, body: &Value) -> u64 {
    let (text, messages) = input_text(body);
    count_text(model, &text) + overhead(messages)
}

/// [`estimate_input`] if the model's encoding is already built; otherwise,
/// without waiting, the encoding that is missing.
pub fn try_estimate_input(model: &str, body: &Value) -> Result<u64, Encoding> {
    let encoding = Encoding::for_model(model);
    if !encoding.is_loaded() {
        return Err(encoding);
    }
    Ok(estimate_input(model, body))
}

/// A rough estimate that needs no encoding: the same text as
/// [`estimate_input`] at about four bytes per token, plus the same
/// per-message overhead. For use while an encoding is being built.
pub fn approximate_input(body: &Value) -> u64 {
    let (text, messages) = input_text(body);
    approximate(text.len() as u64, messages)
}

/// [`approximate_input`] from its two figures: the bytes of text it
/// counts and the chat messages (for a caller that measured them without
/// building a tree).
pub fn approximate(text_bytes: u64, messages: u64) -> u64 {
    text_bytes.div_ceil(BYTES_PER_TOKEN) + overhead(messages)
}

fn overhead(messages: u64) -> u64 {
    messages * PER_MESSAGE + u64::from(messages > 0) * PER_MESSAGE
}

/// The text an input estimate counts, and the number of chat messages.
fn input_text(body: &Value) -> (String, u64) {
    let mut text = String::new();
    let mut messages = 0u64;
    if let Some(system) = body.get("system") {
        collect_text(system, &mut text);
    }
    if let Some(instructions) = body.get("instructions") {
        collect_text(instructions, &mut text);
    }
    // Gemini: `systemInstruction` and `contents`, whose parts hold `text`.
    for field in ["systemInstruction", "system_instruction"] {
        if let Some(system) = body.get(field) {
            collect_text(system.get("parts").unwrap_or(system), &mut text);
        }
    }
    if let Some(list) = body.get("contents").and_then(Value::as_array) {
        for c in list {
            messages += 1;
            if let Some(parts) = c.get("parts") {
                collect_text(parts, &mut text);
            }
        }
    }
    if let Some(list) = body.get("messages").and_then(Value::as_array) {
        for m in list {
            messages += 1;
            if let Some(c) = m.get("content") {
                collect_text(c, &mut text);
            }
        }
    }
    for field in ["prompt", "input"] {
        if let Some(v) = body.get(field) {
            collect_text(v, &mut text);
        }
    }
    if let Some(tools) = body.get("tools") {
        text.push_str(&tools.to_string());
    }
    (text, messages)
}

/// Appends the text found in a content value: a string, a list of strings,
/// or content parts with `text`.
fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => {
            for i in items {
                collect_text(i, out);
            }
        }
        Value::Object(o) => {
            if let Some(t) = o.get("text") {
                collect_text(t, out);
            } else if let Some(c) = o.get("content") {
                collect_text(c, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_encoding_by_family() {
        for m in [
            "gpt-4o-mini",
            "openai/o3-mini",
            "gpt-5",
            "GPT-4.1",
            "chatgpt-4o-latest",
        ] {
            assert_eq!(Encoding::for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in ["gpt-3.5-turbo", "claude-sonnet", "text-embedding-3-small"] {
            assert_eq!(Encoding::for_model(m), Encoding::Cl100kBase, "{m}");
        }
    }

    #[test]
    fn estimates_grow_with_text() {
        let short = json!({"messages": [{"role": "user", "content": "hi"}]});
        let long = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hello there, how are you doing today?"}]}], "system": "be brief"});
        let a = estimate_input("gpt-4o", &short);
        let b = estimate_input("gpt-4o", &long);
        assert!(a >= 1 && b > a, "{a} {b}");
        assert_eq!(count_text("gpt-4o", ""), 0);
        assert_eq!(count_text("gpt-4o", "hello world"), 2);
        assert!(estimate_input("text-embedding-3-small", &json!({"input": ["a b", "c"]})) >= 2);
        // Gemini bodies count their contents and system instruction.
        let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]});
        let with_system = json!({"contents": gemini["contents"].clone(),
            "systemInstruction": {"parts": [{"text": "be brief and kind"}]}});
        let g = approximate_input(&gemini);
        assert!(g > 3 && approximate_input(&with_system) > g);
    }

    #[test]
    fn loading_is_on_demand_and_once() {
        let body = json!({"messages": [{"role": "user", "content": "hello world"}]});
        // Another test may have built it already; either way, once built,
        // the non-blocking path answers exactly what the blocking one does.
        let exact = estimate_input("gpt-4o", &body);
        assert!(Encoding::O200kBase.is_loaded());
        assert!(Encoding::O200kBase.get().is_some());
        assert_eq!(try_estimate_input("gpt-4o", &body), Ok(exact));
        // "hello world\n" is 3 tokens, plus 3 for the message and 3 for the reply.
        assert_eq!(exact, 9);
    }

    #[test]
    fn approximation_counts_the_same_text() {
        let body = json!({"system": "abcd", "messages": [{"role": "user", "content": "efgh"}]});
        // "abcd\nefgh\n" is 10 bytes: 3 tokens at 4 bytes each, rounded up,
        // plus 3 per message and 3 for the reply.
        assert_eq!(approximate_input(&body), 3 + 3 + 3);
        assert_eq!(approximate_input(&json!({})), 0);
    }
}
