//! The Gemini protocol, as a client and as a provider: keys in
//! `x-goog-api-key` (or `?key=`, read by the handler), errors as
//! `{"error":{"code","message","status"}}`, streams whose every event (or
//! array element, without `alt=sse`) is a whole `GenerateContentResponse`,
//! and usage in `usageMetadata`, whose prompt count includes cached tokens
//! and whose candidates count excludes thoughts.

use http::HeaderMap;
use serde_json::{json, Value};

use super::dialect::{u, Dialect, Endpoint, StreamSeen, Usage};
use super::error::ErrorKind;
use super::generated::Generated;
use llmgw_core::Protocol;

pub struct Gemini;

/// The header Gemini keys travel in.
pub const KEY_HEADER: &str = llmgw_core::upstream::GEMINI_KEY_HEADER;

/// Google's status name for an HTTP status.
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 | 405 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Normalized usage from a `usageMetadata` object.
pub fn usage_of(m: &Value) -> Option<Usage> {
    if !m.is_object() {
        return None;
    }
    let cached = u(m, &["cachedContentTokenCount"]);
    let thoughts = u(m, &["thoughtsTokenCount"]);
    Some(Usage {
        input: u(m, &["promptTokenCount"]).saturating_sub(cached),
        cache_read: cached,
        cache_write: 0,
        output: u(m, &["candidatesTokenCount"]) + thoughts,
        reasoning: thoughts,
    })
}

fn text_of_chunk(chunk: &Value, out: &mut Generated) {
    for c in chunk
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for p in c
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                out.push(t);
            }
        }
    }
}

impl Dialect for Gemini {
    fn protocol(&self) -> Protocol {
        Protocol::Gemini
    }

    fn client_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get(KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .or_else(|| super::openai::bearer(headers))
    }

    fn error_body(&self, kind: ErrorKind, message: &str) -> Vec<u8> {
        let status = kind.status().as_u16();
        json!({"error": {"code": status, "message": message, "status": status_name(status)}})
            .to_string()
            .into_bytes()
    }

    fn stream_error_event(&self, message: &str) -> Vec<u8> {
        let body = json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}});
        format!("data: {body}\n\n").into_bytes()
    }

    fn usage_of_body(&self, _endpoint: Endpoint, body: &Value) -> Option<Usage> {
        // A streamed JSON array (no `alt=sse`): the last usage counts.
        if let Some(items) = body.as_array() {
            return items
                .iter()
                .rev()
                .find_map(|c| c.get("usageMetadata").and_then(usage_of));
        }
        body.get("usageMetadata").and_then(usage_of)
    }

    fn text_of_body(&self, _endpoint: Endpoint, body: &Value, out: &mut Generated) {
        match body.as_array() {
            Some(items) => items.iter().for_each(|c| text_of_chunk(c, out)),
            None => text_of_chunk(body, out),
        }
    }

    fn observe_event(&self, _endpoint: Endpoint, _name: &str, data: &Value, seen: &mut StreamSeen) {
        if let Some(us) = data.get("usageMetadata").and_then(usage_of) {
            seen.usage = Some(us);
        }
        text_of_chunk(data, &mut seen.text);
        let finished = data
            .get("candidates")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c.get("finishReason").is_some()));
        if finished {
            seen.finished = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_normalized() {
        let body = json!({"candidates":[{"content":{"parts":[{"text":"hi"}]}}],
            "usageMetadata":{"promptTokenCount":10,"cachedContentTokenCount":4,
            "candidatesTokenCount":3,"thoughtsTokenCount":5,"totalTokenCount":18}});
        let us = Gemini
            .usage_of_body(Endpoint::GeminiGenerate, &body)
            .unwrap();
        assert_eq!(
            us,
            Usage {
                input: 6,
                cache_read: 4,
                cache_write: 0,
                output: 8,
                reasoning: 5
            }
        );
        let mut t = Generated::default();
        Gemini.text_of_body(
            Endpoint::GeminiGenerate,
            &json!([body.clone(), body]),
            &mut t,
        );
        assert_eq!(t.kept(), "hihi");
        let e: Value =
            serde_json::from_slice(&Gemini.error_body(ErrorKind::InvalidKey, "no")).unwrap();
        assert_eq!(e["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(e["error"]["code"], 401);
    }
}
