//! The OpenAI protocol: bearer keys, `{"error":{...}}` bodies, `data:`
//! chunks ending in `[DONE]`, and usage in `usage` (chat, completions,
//! embeddings) or `response.usage` (responses).

use http::HeaderMap;
use serde_json::{json, Value};

use super::dialect::{u, Dialect, Endpoint, StreamSeen, Usage};
use super::error::ErrorKind;
use super::generated::Generated;
use llmgw_core::Protocol;

pub struct OpenAi;

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(super) fn usage_of(u_: &Value, endpoint: Endpoint) -> Option<Usage> {
    if !u_.is_object() {
        return None;
    }
    // OpenAI's input counts include the cached tokens.
    Some(if endpoint == Endpoint::Responses {
        let cached = u(u_, &["input_tokens_details", "cached_tokens"]);
        Usage {
            input: u(u_, &["input_tokens"]).saturating_sub(cached),
            output: u(u_, &["output_tokens"]),
            cache_read: cached,
            cache_write: 0,
            reasoning: u(u_, &["output_tokens_details", "reasoning_tokens"]),
        }
    } else {
        let cached = u(u_, &["prompt_tokens_details", "cached_tokens"]);
        Usage {
            input: u(u_, &["prompt_tokens"]).saturating_sub(cached),
            output: u(u_, &["completion_tokens"]),
            cache_read: cached,
            cache_write: 0,
            reasoning: u(u_, &["completion_tokens_details", "reasoning_tokens"]),
        }
    })
}

impl Dialect for OpenAi {
    fn protocol(&self) -> Protocol {
        Protocol::OpenAi
    }

    fn client_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        bearer(headers)
    }

    fn error_body(&self, kind: ErrorKind, message: &str) -> Vec<u8> {
        json!({"error": {"message": message, "type": kind.openai_type(), "code": kind.code(), "param": null}})
            .to_string()
            .into_bytes()
    }

    fn stream_error_event(&self, message: &str) -> Vec<u8> {
        let body = json!({"error": {"message": message, "type": "server_error", "code": "stream_interrupted"}});
        format!("data: {body}\n\n").into_bytes()
    }

    fn usage_of_body(&self, endpoint: Endpoint, body: &Value) -> Option<Usage> {
        usage_of(body.get("usage")?, endpoint)
    }

    fn text_of_body(&self, endpoint: Endpoint, body: &Value, out: &mut Generated) {
        match endpoint {
            Endpoint::Responses => {
                for item in body
                    .get("output")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    for c in item
                        .get("content")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(t) = c.get("text").and_then(Value::as_str) {
                            out.push(t);
                        }
                    }
                }
            }
            _ => {
                for choice in body
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let t = choice
                        .get("message")
                        .and_then(|m| m.get("content"))
                        .or_else(|| choice.get("text"))
                        .and_then(Value::as_str);
                    if let Some(t) = t {
                        out.push(t);
                    }
                }
            }
        }
    }

    fn observe_event(&self, endpoint: Endpoint, name: &str, data: &Value, seen: &mut StreamSeen) {
        if endpoint == Endpoint::Responses {
            let kind = data.get("type").and_then(Value::as_str).unwrap_or(name);
            match kind {
                "response.output_text.delta" => {
                    if let Some(d) = data.get("delta").and_then(Value::as_str) {
                        seen.text.push(d);
                    }
                }
                "response.completed" | "response.incomplete" | "response.failed" => {
                    if let Some(us) = data.get("response").and_then(|r| r.get("usage")) {
                        seen.usage = usage_of(us, endpoint).or(seen.usage);
                    }
                    seen.finished = true;
                    seen.marked_end = true;
                }
                _ => {}
            }
            return;
        }
        if let Some(us) = data.get("usage").filter(|v| !v.is_null()) {
            seen.usage = usage_of(us, endpoint).or(seen.usage);
        }
        for choice in data
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let t = choice
                .get("delta")
                .and_then(|d| d.get("content"))
                .or_else(|| choice.get("text"))
                .and_then(Value::as_str);
            if let Some(t) = t {
                seen.text.push(t);
            }
        }
    }
}

/// Whether a chunk is the extra usage chunk that `include_usage` adds: no
/// choices, and a usage object.
pub fn is_usage_chunk(data: &Value) -> bool {
    data.get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && data.get("usage").is_some_and(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_keys() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer sk-1"));
        assert_eq!(bearer(&h), Some("sk-1"));
        h.insert("authorization", HeaderValue::from_static("Basic x"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn usage_and_text() {
        let body = json!({"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}}});
        let u = OpenAi
            .usage_of_body(Endpoint::ChatCompletions, &body)
            .unwrap();
        assert_eq!((u.input, u.output, u.cache_read), (2, 2, 3));
        let mut t = Generated::default();
        OpenAi.text_of_body(Endpoint::ChatCompletions, &body, &mut t);
        assert_eq!(t.kept(), "hi");
        let mut seen = StreamSeen::default();
        OpenAi.observe_event(
            Endpoint::ChatCompletions,
            "",
            &json!({"choices":[{"delta":{"content":"a"}}]}),
            &mut seen,
        );
        OpenAi.observe_event(
            Endpoint::ChatCompletions,
            "",
            &json!({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}),
            &mut seen,
        );
        assert_eq!(seen.text.kept(), "a");
        assert_eq!(seen.usage.unwrap().output, 1);
        assert!(is_usage_chunk(
            &json!({"choices":[],"usage":{"prompt_tokens":1}})
        ));
        assert!(!is_usage_chunk(&json!({"choices":[{}],"usage":null})));
    }
}
