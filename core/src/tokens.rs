//! Token estimates with tiktoken, for when an upstream reports no usage and
//! for routing rules on `input_tokens`: `o200k_base` for the gpt-4o,
//! o-series and gpt-5 families, `cl100k_base` for everything else.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// The encoding for an upstream model name.
pub fn encoding_for(model: &str) -> &'static CoreBPE {
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
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    }
}

/// Loads both encodings, so the first estimate does not pay for it.
pub fn warm_up() {
    let _ = tiktoken_rs::o200k_base_singleton();
    let _ = tiktoken_rs::cl100k_base_singleton();
}

pub fn count_text(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    encoding_for(model).encode_ordinary(text).len() as u64
}

/// Per-message overhead of the chat format (role and separators).
const PER_MESSAGE: u64 = 3;

/// Estimates the input tokens of a request body of either protocol: the
/// text of messages, system prompt, prompt or input, plus a small overhead
/// per chat message.
pub fn estimate_input(model: &str, body: &Value) -> u64 {
    let mut text = String::new();
    let mut messages = 0u64;
    if let Some(system) = body.get("system") {
        collect_text(system, &mut text);
    }
    if let Some(instructions) = body.get("instructions") {
        collect_text(instructions, &mut text);
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
    count_text(model, &text) + messages * PER_MESSAGE + u64::from(messages > 0) * PER_MESSAGE
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
        assert!(std::ptr::eq(
            encoding_for("gpt-4o-mini"),
            tiktoken_rs::o200k_base_singleton()
        ));
        assert!(std::ptr::eq(
            encoding_for("openai/o3-mini"),
            tiktoken_rs::o200k_base_singleton()
        ));
        assert!(std::ptr::eq(
            encoding_for("gpt-5"),
            tiktoken_rs::o200k_base_singleton()
        ));
        assert!(std::ptr::eq(
            encoding_for("gpt-3.5-turbo"),
            tiktoken_rs::cl100k_base_singleton()
        ));
        assert!(std::ptr::eq(
            encoding_for("claude-sonnet"),
            tiktoken_rs::cl100k_base_singleton()
        ));
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
    }
}
