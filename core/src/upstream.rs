//! What a request to a provider's upstream carries, by protocol, with no
//! I/O: the credential header the data plane and the control plane both
//! send (one rule, so a provider that works for requests works for the
//! control plane's own calls), and the tiny request a model test sends.

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use serde_json::{json, Value};

use crate::serving::ModelType;
use crate::validate::Protocol;

/// The `anthropic-version` sent when the provider's headers set none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The header that carries a Gemini key.
pub const GEMINI_KEY_HEADER: &str = "x-goog-api-key";

/// A provider's credential header: `protocol`'s header for `api_key`
/// (OpenAI `Authorization: Bearer`, Anthropic `x-api-key`, Gemini
/// `x-goog-api-key`), marked sensitive so it never prints. `None` for a key
/// that cannot be a header value. The data plane builds it once, when a
/// snapshot is taken in, not for every request.
pub fn credential(protocol: Protocol, api_key: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = match protocol {
        Protocol::OpenAi | Protocol::OpenAiChat => (
            AUTHORIZATION,
            HeaderValue::try_from(format!("Bearer {api_key}")),
        ),
        Protocol::Anthropic => (
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(api_key),
        ),
        Protocol::Gemini => (
            HeaderName::from_static(GEMINI_KEY_HEADER),
            HeaderValue::from_str(api_key),
        ),
    };
    let mut value = value.ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// Adds a credential from [`credential`] to `headers`, replacing one the
/// headers already have; and for Anthropic an `anthropic-version` unless
/// one is set.
pub fn insert_credential(
    headers: &mut HeaderMap,
    protocol: Protocol,
    credential: Option<&(HeaderName, HeaderValue)>,
) {
    if let Some((name, value)) = credential {
        headers.insert(name.clone(), value.clone());
    }
    if protocol == Protocol::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
}

/// [`insert_credential`] for a key given as text (the control plane's own
/// calls). A key that cannot be a header value is left out.
pub fn insert_auth(headers: &mut HeaderMap, protocol: Protocol, api_key: Option<&str>) {
    let credential = api_key.and_then(|k| credential(protocol, k));
    insert_credential(headers, protocol, credential.as_ref());
}

/// The smallest request that shows a target answers: its path under the
/// provider's base URL and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyRequest {
    pub path: String,
    pub body: Value,
}

/// The text a model test sends.
pub const PING: &str = "ping";

/// The tiny request for `upstream_model` in `protocol`'s own API: one user
/// message "ping" asking for the fewest output tokens the API accepts
/// (OpenAI Responses `max_output_tokens` 16, its minimum; Chat Completions
/// `max_tokens` 1; Anthropic `max_tokens` 1; Gemini `maxOutputTokens` 1),
/// or for an embedding model an embedding of "ping". `Err` says why a
/// model cannot be tested (an embedding model on a protocol with no
/// embeddings API the gateway serves, or a type with no tiny request).
pub fn tiny_request(
    protocol: Protocol,
    model_type: ModelType,
    upstream_model: &str,
) -> Result<TinyRequest, String> {
    let model = upstream_model;
    let (path, body) = match (model_type, protocol) {
        (ModelType::Chat, Protocol::OpenAi) => (
            "/responses".to_string(),
            json!({"model": model, "input": PING, "max_output_tokens": 16, "store": false}),
        ),
        (ModelType::Chat, Protocol::OpenAiChat) => (
            "/chat/completions".to_string(),
            json!({"model": model, "messages": [{"role": "user", "content": PING}], "max_tokens": 1}),
        ),
        (ModelType::Chat, Protocol::Anthropic) => (
            "/messages".to_string(),
            json!({"model": model, "messages": [{"role": "user", "content": PING}], "max_tokens": 1}),
        ),
        (ModelType::Chat, Protocol::Gemini) => (
            format!("/models/{model}:generateContent"),
            json!({
                "contents": [{"role": "user", "parts": [{"text": PING}]}],
                "generationConfig": {"maxOutputTokens": 1}
            }),
        ),
        (ModelType::Embedding, Protocol::OpenAi | Protocol::OpenAiChat) => (
            "/embeddings".to_string(),
            json!({"model": model, "input": PING}),
        ),
        (ModelType::Embedding, p) => {
            return Err(format!(
                "an embedding model cannot be tested on a {} provider: the gateway serves embeddings only from OpenAI-protocol providers",
                p.as_str()
            ))
        }
        (t, _) => {
            return Err(format!(
                "a {} model has no test request; only chat and embedding models can be tested",
                t.as_str()
            ))
        }
    };
    Ok(TinyRequest { path, body })
}

/// A short excerpt of an answer to a tiny request: the generated text
/// (every protocol's shape), or an embedding's size; `None` when the body
/// has neither.
pub fn answer_excerpt(body: &Value) -> Option<String> {
    if let Some(e) = body
        .get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .and_then(|d| d.get("embedding"))
        .and_then(Value::as_array)
    {
        return Some(format!("an embedding of {} dimensions", e.len()));
    }
    let mut text = String::new();
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str) {
            text.push_str(s);
        }
    };
    // Chat Completions.
    for c in array(body, "choices") {
        push(c.get("message").and_then(|m| m.get("content")));
    }
    // Responses.
    for item in array(body, "output") {
        for part in array(item, "content") {
            push(part.get("text"));
        }
    }
    // Anthropic Messages (`content` of a Chat message is a string).
    for block in array(body, "content") {
        push(block.get("text"));
    }
    // Gemini.
    for c in array(body, "candidates") {
        for part in c.get("content").map(|c| array(c, "parts")).unwrap_or(&[]) {
            push(part.get("text"));
        }
    }
    let answered = ["choices", "output", "content", "candidates"]
        .iter()
        .any(|f| body.get(f).is_some());
    answered.then_some(text)
}

fn array<'v>(v: &'v Value, field: &str) -> &'v [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn auth_is_each_protocols_and_sensitive() {
        let mut h = HeaderMap::new();
        insert_auth(&mut h, Protocol::OpenAiChat, Some("sk-1"));
        assert_eq!(h[AUTHORIZATION], "Bearer sk-1");
        assert!(h[AUTHORIZATION].is_sensitive());
        let mut h = HeaderMap::new();
        h.insert("anthropic-version", HeaderValue::from_static("2024-10-22"));
        insert_auth(&mut h, Protocol::Anthropic, Some("k"));
        assert_eq!(h["x-api-key"], "k");
        assert_eq!(h["anthropic-version"], "2024-10-22");
        let mut h = HeaderMap::new();
        insert_auth(&mut h, Protocol::Anthropic, None);
        assert_eq!(h["anthropic-version"], ANTHROPIC_VERSION);
        assert!(!h.contains_key("x-api-key"));
        let mut h = HeaderMap::new();
        insert_auth(&mut h, Protocol::Gemini, Some("AIza"));
        assert_eq!(h[GEMINI_KEY_HEADER], "AIza");
        let mut h = HeaderMap::new();
        insert_auth(&mut h, Protocol::OpenAi, Some("bad\nkey"));
        assert!(h.is_empty());
        assert!(credential(Protocol::Anthropic, "bad\nkey").is_none());
        // Built once, it prints nothing of the key.
        let (name, value) = credential(Protocol::OpenAi, "sk-secret").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer sk-secret")
        );
        assert!(!format!("{value:?}").contains("sk-secret"));
    }

    #[test]
    fn version_defaults_only_when_absent() {
        let mut h = HeaderMap::new();
        let c = credential(Protocol::Anthropic, "k");
        insert_credential(&mut h, Protocol::Anthropic, c.as_ref());
        assert_eq!(h["anthropic-version"], ANTHROPIC_VERSION);
        assert_eq!(h["x-api-key"], "k");
        let mut h = HeaderMap::new();
        h.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        insert_credential(&mut h, Protocol::Anthropic, None);
        assert_eq!(h["anthropic-version"], "2024-01-01");
    }

    #[test]
    fn tiny_requests_are_each_apis_smallest() {
        let r = tiny_request(Protocol::OpenAi, ModelType::Chat, "gpt").unwrap();
        assert_eq!(r.path, "/responses");
        assert_eq!(r.body["max_output_tokens"], 16);
        let r = tiny_request(Protocol::OpenAiChat, ModelType::Chat, "llama").unwrap();
        assert_eq!(r.path, "/chat/completions");
        assert_eq!(r.body["max_tokens"], 1);
        let r = tiny_request(Protocol::Anthropic, ModelType::Chat, "claude").unwrap();
        assert_eq!(r.path, "/messages");
        assert_eq!(r.body["messages"][0]["content"], PING);
        let r = tiny_request(Protocol::Gemini, ModelType::Chat, "gemini-2.5").unwrap();
        assert_eq!(r.path, "/models/gemini-2.5:generateContent");
        assert_eq!(r.body["generationConfig"]["maxOutputTokens"], 1);
        let r = tiny_request(Protocol::OpenAi, ModelType::Embedding, "e").unwrap();
        assert_eq!(r.path, "/embeddings");
        assert!(tiny_request(Protocol::Anthropic, ModelType::Embedding, "e").is_err());
        assert!(tiny_request(Protocol::OpenAi, ModelType::Image, "i").is_err());
    }

    #[test]
    fn excerpts_come_from_every_shape() {
        let chat = json!({"choices": [{"message": {"content": "po"}}]});
        assert_eq!(answer_excerpt(&chat).unwrap(), "po");
        let responses = json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "pong"}]}]});
        assert_eq!(answer_excerpt(&responses).unwrap(), "pong");
        let anthropic = json!({"content": [{"type": "text", "text": "P"}]});
        assert_eq!(answer_excerpt(&anthropic).unwrap(), "P");
        let gemini = json!({"candidates": [{"content": {"parts": [{"text": "G"}]}}]});
        assert_eq!(answer_excerpt(&gemini).unwrap(), "G");
        let emb = json!({"data": [{"embedding": [0.1, 0.2]}]});
        assert_eq!(
            answer_excerpt(&emb).unwrap(),
            "an embedding of 2 dimensions"
        );
        assert_eq!(answer_excerpt(&json!({"x": 1})), None);
    }
}
