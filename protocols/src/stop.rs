//! Stop reasons with no equivalent in every protocol.
//!
//! A decoder keeps a reason that has no exact equivalent as it came
//! ([`StopReason::Other`]), so the request log can record it; an encoder
//! whose protocol has no such reason answers with the nearest one that
//! every protocol names, from [`nearest`]. docs/translation.md has the
//! table.

use crate::ir::StopReason;

/// The nearest reason every protocol has, for a raw reason of any of the
/// four protocols; `EndTurn` for one not known.
pub fn nearest(raw: &str) -> StopReason {
    match raw {
        // Anthropic: the upstream paused a long (server-tool) turn and
        // expects the client to send it back; the turn ends here.
        "pause_turn" => StopReason::EndTurn,
        // Anthropic, Responses: out of room.
        "model_context_window_exceeded" | "max_output_tokens" | "length" | "MAX_TOKENS" => {
            StopReason::MaxTokens
        }
        // Chat's deprecated single function call.
        "function_call" | "tool_calls" | "tool_use" => StopReason::ToolUse,
        // Gemini's blocks other than SAFETY.
        "refusal"
        | "content_filter"
        | "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => StopReason::ContentFilter,
        // Gemini: MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL,
        // TOO_MANY_TOOL_CALLS (no call is delivered), OTHER,
        // FINISH_REASON_UNSPECIFIED, ...; Responses: failed, cancelled.
        _ => StopReason::EndTurn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Part, Response};
    use crate::{EncoderOptions, Wire};
    use serde_json::Value;

    #[test]
    fn raw_reasons_have_a_nearest_named_one() {
        for (raw, want) in [
            ("pause_turn", StopReason::EndTurn),
            ("model_context_window_exceeded", StopReason::MaxTokens),
            ("function_call", StopReason::ToolUse),
            ("RECITATION", StopReason::ContentFilter),
            ("BLOCKLIST", StopReason::ContentFilter),
            ("MALFORMED_FUNCTION_CALL", StopReason::EndTurn),
            ("something new", StopReason::EndTurn),
        ] {
            assert_eq!(nearest(raw), want, "{raw}");
        }
    }

    /// The reason field of a whole answer encoded for a client of `wire`.
    fn client_reason(wire: Wire, stop: StopReason) -> String {
        let resp = Response {
            id: "r".into(),
            model: "m".into(),
            content: vec![Part::Text { text: "x".into() }],
            stop,
            usage: None,
            created: None,
        };
        let body: Value =
            serde_json::from_slice(&wire.encode_response(&resp, &EncoderOptions::default()))
                .unwrap();
        let at = match wire {
            Wire::Chat => "/choices/0/finish_reason",
            Wire::Responses => "/incomplete_details/reason",
            Wire::Anthropic => "/stop_reason",
            Wire::Gemini => "/candidates/0/finishReason",
        };
        body.pointer(at)
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_string()
    }

    #[test]
    fn a_raw_reason_reaches_each_client_as_its_nearest_and_is_named_as_it_came() {
        let raw = |s: &str| StopReason::Other(s.into());
        // (upstream, its raw reason, what chat, responses, anthropic, gemini clients get)
        for (from, reason, want) in [
            (
                Wire::Anthropic,
                "pause_turn",
                ["stop", "(none)", "pause_turn", "STOP"],
            ),
            (
                Wire::Anthropic,
                "model_context_window_exceeded",
                [
                    "length",
                    "max_output_tokens",
                    "model_context_window_exceeded",
                    "MAX_TOKENS",
                ],
            ),
            (
                Wire::Gemini,
                "MALFORMED_FUNCTION_CALL",
                ["stop", "(none)", "end_turn", "MALFORMED_FUNCTION_CALL"],
            ),
            (
                Wire::Gemini,
                "RECITATION",
                ["content_filter", "content_filter", "refusal", "RECITATION"],
            ),
            (
                Wire::Gemini,
                "BLOCKLIST",
                ["content_filter", "content_filter", "refusal", "BLOCKLIST"],
            ),
            (
                Wire::Chat,
                "function_call",
                ["tool_calls", "(none)", "tool_use", "STOP"],
            ),
            (
                Wire::Responses,
                "failed",
                ["stop", "(none)", "end_turn", "STOP"],
            ),
        ] {
            let clients = [Wire::Chat, Wire::Responses, Wire::Anthropic, Wire::Gemini];
            for (to, want) in clients.into_iter().zip(want) {
                assert_eq!(client_reason(to, raw(reason)), want, "{reason} to {to:?}");
            }
            assert_eq!(from.stop_name(&raw(reason)), reason);
        }
        // Reasons with an equivalent are named as each upstream sends them.
        for (wire, names) in [
            (
                Wire::Chat,
                ["stop", "length", "tool_calls", "content_filter"],
            ),
            (
                Wire::Responses,
                [
                    "completed",
                    "max_output_tokens",
                    "completed",
                    "content_filter",
                ],
            ),
            (
                Wire::Anthropic,
                ["end_turn", "max_tokens", "tool_use", "refusal"],
            ),
            (Wire::Gemini, ["STOP", "MAX_TOKENS", "STOP", "SAFETY"]),
        ] {
            let stops = [
                StopReason::EndTurn,
                StopReason::MaxTokens,
                StopReason::ToolUse,
                StopReason::ContentFilter,
            ];
            for (stop, name) in stops.iter().zip(names) {
                assert_eq!(wire.stop_name(stop), name, "{wire:?}");
            }
        }
    }
}
