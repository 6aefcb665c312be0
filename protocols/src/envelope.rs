//! The envelope that carries opaque reasoning state through a client whose
//! protocol has no field for it, or none for that family.
//!
//! Two forms, both made only of `[A-Za-z0-9_-]` so that any id or
//! signature field accepts them:
//! - a value: `lgw1` + family letter (`a`, `g`, `o`) + `_` + the state in
//!   base64url. It stands in a field the client echoes back as it is (an
//!   Anthropic `signature`, a Gemini `thoughtSignature`, a Responses
//!   `encrypted_content`) when the state came from another family.
//! - a tool-call id: `lgwc_` + base64url of a small JSON object with the
//!   original id, the thinking of the turn and the call's own signature,
//!   for clients (OpenAI chat) whose only echoed field is the call id.
//!
//! Decoders of client requests unwrap both; anything without the prefix
//! is the client protocol's own native state.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::ir::{Family, Opaque, Part};

const VALUE_PREFIX: &str = "lgw1";
const CALL_PREFIX: &str = "lgwc_";

fn letter(f: Family) -> char {
    match f {
        Family::Anthropic => 'a',
        Family::Gemini => 'g',
        Family::OpenAi => 'o',
    }
}

fn family_of(c: char) -> Option<Family> {
    Some(match c {
        'a' => Family::Anthropic,
        'g' => Family::Gemini,
        'o' => Family::OpenAi,
        _ => return None,
    })
}

/// The value a client of family `native` gets for `state`: the state
/// itself when it is native, else the enveloped form.
pub fn wrap(state: &Opaque, native: Family) -> String {
    if state.family == native {
        return state.value.clone();
    }
    format!(
        "{VALUE_PREFIX}{}_{}",
        letter(state.family),
        URL_SAFE_NO_PAD.encode(state.value.as_bytes())
    )
}

/// What a client of family `native` sent back: enveloped state from
/// another family, else its own.
pub fn unwrap(value: &str, native: Family) -> Opaque {
    let decoded = value.strip_prefix(VALUE_PREFIX).and_then(|rest| {
        let mut chars = rest.chars();
        let family = family_of(chars.next()?)?;
        let b64 = chars.as_str().strip_prefix('_')?;
        let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
        Some(Opaque {
            family,
            value: String::from_utf8(bytes).ok()?,
        })
    });
    decoded.unwrap_or_else(|| Opaque {
        family: native,
        value: value.to_string(),
    })
}

/// What a tool-call id carries besides the id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallId {
    pub id: String,
    /// The thinking that came before the call in its turn.
    pub thinking: Vec<Part>,
    /// The call's own signature (Gemini).
    pub signature: Option<Opaque>,
}

fn opaque_json(o: &Opaque) -> Value {
    json!({"f": o.family.as_str(), "v": o.value})
}

fn opaque_from(v: &Value) -> Option<Opaque> {
    Some(Opaque {
        family: Family::parse(v.get("f")?.as_str()?)?,
        value: v.get("v")?.as_str()?.to_string(),
    })
}

/// The id a client gets for a call: the bare id when there is nothing to
/// carry, else the enveloped form.
pub fn wrap_call_id(call: &CallId) -> String {
    if call.thinking.is_empty() && call.signature.is_none() {
        return call.id.clone();
    }
    let thinking: Vec<Value> = call
        .thinking
        .iter()
        .filter_map(|p| match p {
            Part::Thinking {
                text,
                signature,
                redacted,
                id,
            } => Some(json!({
                "x": text,
                "s": signature.as_ref().map(opaque_json),
                "r": redacted,
                "i": id,
            })),
            _ => None,
        })
        .collect();
    let body = json!({
        "i": call.id,
        "t": thinking,
        "s": call.signature.as_ref().map(opaque_json),
    });
    format!("{CALL_PREFIX}{}", URL_SAFE_NO_PAD.encode(body.to_string()))
}

/// A call id as the client sent it back.
pub fn unwrap_call_id(id: &str) -> CallId {
    let decoded = id.strip_prefix(CALL_PREFIX).and_then(|b64| {
        let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        let thinking = v
            .get("t")?
            .as_array()?
            .iter()
            .map(|t| Part::Thinking {
                text: t.get("x").and_then(Value::as_str).unwrap_or("").to_string(),
                signature: t.get("s").and_then(opaque_from),
                redacted: t.get("r").and_then(Value::as_bool).unwrap_or(false),
                id: t.get("i").and_then(Value::as_str).map(str::to_string),
            })
            .collect();
        Some(CallId {
            id: v.get("i")?.as_str()?.to_string(),
            thinking,
            signature: v.get("s").and_then(opaque_from),
        })
    });
    decoded.unwrap_or_else(|| CallId {
        id: id.to_string(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_native_state_passes() {
        let g = Opaque {
            family: Family::Gemini,
            value: "CiQB+/sig==".into(),
        };
        let w = wrap(&g, Family::Anthropic);
        assert!(w.starts_with("lgw1g_"));
        assert!(w
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        assert_eq!(unwrap(&w, Family::Anthropic), g);
        assert_eq!(wrap(&g, Family::Gemini), g.value);
        assert_eq!(unwrap("plain", Family::Anthropic).family, Family::Anthropic);
    }

    #[test]
    fn call_ids_carry_thinking() {
        let c = CallId {
            id: "toolu_1".into(),
            thinking: vec![Part::Thinking {
                text: "hmm".into(),
                signature: Some(Opaque {
                    family: Family::Anthropic,
                    value: "sig".into(),
                }),
                redacted: false,
                id: None,
            }],
            signature: None,
        };
        let w = wrap_call_id(&c);
        assert!(w.starts_with("lgwc_"));
        assert_eq!(unwrap_call_id(&w), c);
        let bare = CallId {
            id: "call_1".into(),
            ..Default::default()
        };
        assert_eq!(wrap_call_id(&bare), "call_1");
        assert_eq!(unwrap_call_id("call_1"), bare);
    }
}
