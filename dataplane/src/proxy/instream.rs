//! Errors an upstream reports inside a response that started as a success:
//! Anthropic's `error` event, an OpenAI Chat chunk with an `error` object,
//! a Responses `response.failed` (or `error`) event, a Gemini chunk with an
//! `error` object. The request log records them with the HTTP status the
//! error implies (Anthropic's `overloaded_error` is 529) and its message.

use llmgw_core::Protocol;
use llmgw_protocols::Wire;
use serde_json::Value;

use super::dialect::Endpoint;

/// Status for an in-stream error that names none the gateway knows.
pub const UNKNOWN_STATUS: u16 = 502;

/// The wire a pass-through response is in: the client's own.
pub fn pass_through_wire(protocol: Protocol, endpoint: Endpoint) -> Wire {
    match protocol {
        Protocol::Anthropic => Wire::Anthropic,
        Protocol::Gemini => Wire::Gemini,
        Protocol::OpenAi | Protocol::OpenAiChat if endpoint == Endpoint::Responses => {
            Wire::Responses
        }
        Protocol::OpenAi | Protocol::OpenAiChat => Wire::Chat,
    }
}

/// The status and message of an upstream error event, if `data` (the event
/// named `name`, in `wire`) is one.
pub fn error_event(wire: Wire, name: &str, data: &Value) -> Option<(u16, String)> {
    let kind = data.get("type").and_then(Value::as_str).unwrap_or(name);
    let (error, status) = match wire {
        Wire::Anthropic => {
            return (kind == "error").then(|| anthropic_error(data.get("error")));
        }
        Wire::Responses => {
            let e = match kind {
                "response.failed" => data.get("response").and_then(|r| r.get("error")),
                "error" => Some(data.get("error").unwrap_or(data)),
                _ => return None,
            };
            (e, openai_status(e))
        }
        Wire::Chat => return data.get("error").filter(|e| !e.is_null()).map(chat_error),
        Wire::Gemini => {
            let e = data.get("error").filter(|e| !e.is_null())?;
            let code = e
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..=599).contains(c));
            (Some(e), code.unwrap_or(UNKNOWN_STATUS))
        }
    };
    Some(reported(error, status))
}

/// The status and message of an Anthropic `error` event, from its
/// `error` member.
pub fn anthropic_error(e: Option<&Value>) -> (u16, String) {
    let t = e.and_then(|e| e.get("type")).and_then(Value::as_str);
    reported(e, anthropic_status(t.unwrap_or_default()))
}

/// The status and message of a Chat stream event's `error` member (not
/// null).
pub fn chat_error(e: &Value) -> (u16, String) {
    reported(Some(e), openai_status(Some(e)))
}

/// An upstream's error in a stream, as the record and the client are told.
fn reported(error: Option<&Value>, status: u16) -> (u16, String) {
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("the upstream reported an error in the stream");
    (status, format!("upstream error in the stream: {message}"))
}

/// The HTTP status Anthropic documents for an error type.
fn anthropic_status(t: &str) -> u16 {
    match t {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "overloaded_error" => 529,
        _ => UNKNOWN_STATUS,
    }
}

/// The HTTP status an OpenAI error's `code` or `type` implies.
fn openai_status(e: Option<&Value>) -> u16 {
    let field = |k: &str| e.and_then(|e| e.get(k)).and_then(Value::as_str);
    for name in [field("code"), field("type")].into_iter().flatten() {
        match name {
            "rate_limit_exceeded" | "rate_limit_error" | "insufficient_quota" => return 429,
            "server_error" | "internal_error" => return 500,
            "server_overloaded" | "overloaded" => return 503,
            "invalid_request_error" | "invalid_prompt" => return 400,
            _ => {}
        }
    }
    UNKNOWN_STATUS
}

/// An error element of a streamed Gemini JSON array (no `alt=sse`).
pub fn in_gemini_array(items: &[Value]) -> Option<(u16, String)> {
    items
        .iter()
        .find_map(|item| error_event(Wire::Gemini, "", item))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_wire_names_its_error_and_status() {
        let cases = [
            (
                Wire::Anthropic,
                "error",
                json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
                Some(529),
            ),
            (
                Wire::Anthropic,
                "error",
                json!({"type":"error","error":{"type":"new_error","message":"x"}}),
                Some(502),
            ),
            (
                Wire::Anthropic,
                "content_block_delta",
                json!({"type":"content_block_delta","delta":{"text":"error"}}),
                None,
            ),
            (
                Wire::Chat,
                "",
                json!({"error":{"message":"boom","type":"server_error","code":"server_error"}}),
                Some(500),
            ),
            (
                Wire::Chat,
                "",
                json!({"error":{"message":"slow","code":"rate_limit_exceeded"}}),
                Some(429),
            ),
            (
                Wire::Chat,
                "",
                json!({"choices":[{"delta":{"content":"error"}}],"error":null}),
                None,
            ),
            (
                Wire::Responses,
                "response.failed",
                json!({"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"m"}}}),
                Some(500),
            ),
            (
                Wire::Responses,
                "error",
                json!({"type":"error","code":"rate_limit_exceeded","message":"m"}),
                Some(429),
            ),
            (
                Wire::Responses,
                "response.completed",
                json!({"type":"response.completed","response":{}}),
                None,
            ),
            (
                Wire::Gemini,
                "",
                json!({"error":{"code":503,"message":"m","status":"UNAVAILABLE"}}),
                Some(503),
            ),
            (
                Wire::Gemini,
                "",
                json!({"error":{"code":200,"message":"m"}}),
                Some(502),
            ),
            (
                Wire::Gemini,
                "",
                json!({"candidates":[{"content":{"parts":[{"text":"error"}]}}]}),
                None,
            ),
        ];
        for (wire, name, data, status) in cases {
            let got = error_event(wire, name, &data);
            assert_eq!(got.as_ref().map(|g| g.0), status, "{wire:?} {data}");
            if let Some((_, message)) = got {
                assert!(message.starts_with("upstream error in the stream: "));
            }
        }
        let (_, m) = error_event(
            Wire::Anthropic,
            "error",
            &json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        )
        .unwrap();
        assert!(m.ends_with("Overloaded"), "{m}");
        let items = [json!({"candidates":[]}), json!({"error":{"code":429}})];
        assert_eq!(in_gemini_array(&items).map(|e| e.0), Some(429));
        assert_eq!(
            pass_through_wire(Protocol::OpenAi, Endpoint::Responses),
            Wire::Responses
        );
        assert_eq!(
            pass_through_wire(Protocol::OpenAi, Endpoint::ChatCompletions),
            Wire::Chat
        );
    }
}
