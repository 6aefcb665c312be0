//! The Anthropic protocol: `x-api-key` (or bearer) keys, `{"type":"error"}`
//! bodies, named stream events ending in `message_stop`, and usage in
//! `message_start` and `message_delta`, cache tokens included.

use http::HeaderMap;
use serde_json::{json, Value};

use super::dialect::{u, Dialect, Endpoint, StreamSeen, Usage};
use super::error::ErrorKind;
use super::generated::Generated;
use llmgw_core::Protocol;

pub struct Anthropic;

fn usage_of(us: &Value) -> Usage {
    Usage {
        input: u(us, &["input_tokens"]),
        output: u(us, &["output_tokens"]),
        cache_read: u(us, &["cache_read_input_tokens"]),
        cache_write: u(us, &["cache_creation_input_tokens"]),
        reasoning: 0,
    }
}

impl Dialect for Anthropic {
    fn protocol(&self) -> Protocol {
        Protocol::Anthropic
    }

    fn client_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .or_else(|| super::openai::bearer(headers))
    }

    fn error_body(&self, kind: ErrorKind, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind.anthropic_type(), "message": message}})
            .to_string()
            .into_bytes()
    }

    fn stream_error_event(&self, message: &str) -> Vec<u8> {
        let body = json!({"type": "error", "error": {"type": "api_error", "message": message}});
        format!("event: error\ndata: {body}\n\n").into_bytes()
    }

    fn usage_of_body(&self, _endpoint: Endpoint, body: &Value) -> Option<Usage> {
        body.get("usage").filter(|u| u.is_object()).map(usage_of)
    }

    fn text_of_body(&self, _endpoint: Endpoint, body: &Value, out: &mut Generated) {
        for block in body
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = block.get("text").and_then(Value::as_str) {
                out.push(t);
            }
        }
    }

    fn observe_event(&self, _endpoint: Endpoint, name: &str, data: &Value, seen: &mut StreamSeen) {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or(name);
        observe(
            kind,
            data.get("message"),
            data.get("usage"),
            data.get("delta")
                .and_then(|d| d.get("text"))
                .and_then(Value::as_str),
            seen,
        );
    }
}

/// What a stream event of kind `kind` shows: its `message` (whose usage
/// `message_start` carries), its `usage` (`message_delta`'s), and its
/// `delta.text` (`content_block_delta`'s). From the event's tree, or from
/// its reading without one (`events::AnthropicEvent`).
pub(super) fn observe(
    kind: &str,
    message: Option<&Value>,
    usage: Option<&Value>,
    text: Option<&str>,
    seen: &mut StreamSeen,
) {
    match kind {
        "message_start" => {
            if let Some(us) = message.and_then(|m| m.get("usage")) {
                seen.usage = Some(usage_of(us));
            }
        }
        "message_delta" => {
            if let Some(us) = usage {
                let mut cur = seen.usage.unwrap_or_default();
                let delta = usage_of(us);
                // message_delta counts are cumulative.
                cur.output = delta.output.max(cur.output);
                if delta.input > 0 {
                    cur.input = delta.input;
                }
                if delta.cache_read > 0 {
                    cur.cache_read = delta.cache_read;
                }
                if delta.cache_write > 0 {
                    cur.cache_write = delta.cache_write;
                }
                seen.usage = Some(cur);
            }
        }
        "content_block_delta" => {
            if let Some(t) = text {
                seen.text.push(t);
            }
        }
        "message_stop" => {
            seen.finished = true;
            seen.marked_end = true;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn keys_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(Anthropic.client_key(&h), Some("k1"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer k2"));
        assert_eq!(Anthropic.client_key(&h), Some("k2"));
    }

    #[test]
    fn stream_usage_accumulates() {
        let mut seen = StreamSeen::default();
        Anthropic.observe_event(Endpoint::Messages, "message_start", &json!({"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":4,"cache_creation_input_tokens":2,"output_tokens":1}}}), &mut seen);
        Anthropic.observe_event(
            Endpoint::Messages,
            "content_block_delta",
            &json!({"type":"content_block_delta","delta":{"type":"text_delta","text":"hey"}}),
            &mut seen,
        );
        Anthropic.observe_event(
            Endpoint::Messages,
            "message_delta",
            &json!({"type":"message_delta","usage":{"output_tokens":7}}),
            &mut seen,
        );
        Anthropic.observe_event(
            Endpoint::Messages,
            "message_stop",
            &json!({"type":"message_stop"}),
            &mut seen,
        );
        let u = seen.usage.unwrap();
        assert_eq!(
            (u.input, u.output, u.cache_read, u.cache_write),
            (10, 7, 4, 2)
        );
        assert_eq!(seen.text.kept(), "hey");
        assert!(seen.finished);
    }
}
