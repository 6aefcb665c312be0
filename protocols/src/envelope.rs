//! The envelope that carries opaque reasoning state through a client whose
//! protocol has no field for it, or none for that family.
//!
//! Two forms:
//! - a value: standard base64 of `lgw1` + family letter (`a`, `g`, `o`) +
//!   `:` + the state. Base64, because Gemini's `thoughtSignature` is a
//!   protobuf `bytes` field that SDKs decode. It stands in a field the
//!   client echoes back as it is (an Anthropic `signature`, a Gemini
//!   `thoughtSignature`, a Responses `encrypted_content`) when the state
//!   came from another family.
//! - a tool-call id: `lgwc_` + base64url of a small JSON object with the
//!   original id, the thinking of the turn and the call's own signature,
//!   for clients (OpenAI chat) whose only echoed field is the call id.
//!
//! Decoders of client requests unwrap both; anything without the prefix
//! is the client protocol's own native state.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
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
    let mut raw = format!("{VALUE_PREFIX}{}:", letter(state.family)).into_bytes();
    raw.extend_from_slice(state.value.as_bytes());
    STANDARD.encode(raw)
}

/// What a client of family `native` sent back: enveloped state from
/// another family, else its own. The envelope is read in either base64
/// alphabet, padded or not (google-genai re-encodes bytes URL-safe).
pub fn unwrap(value: &str, native: Family) -> Opaque {
    let decoded = [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(value).ok())
        .and_then(|bytes| {
            let rest = bytes.strip_prefix(VALUE_PREFIX.as_bytes())?;
            let (&l, rest) = rest.split_first()?;
            let family = family_of(char::from(l))?;
            let state = rest.strip_prefix(b":")?;
            Some(Opaque {
                family,
                value: String::from_utf8(state.to_vec()).ok()?,
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
        assert_eq!(STANDARD.decode(&w).unwrap()[..6], *b"lgw1g:");
        assert_eq!(unwrap(&w, Family::Anthropic), g);
        // As google-genai sends bytes back: URL-safe, padded.
        let again = URL_SAFE.encode(STANDARD.decode(&w).unwrap());
        assert_eq!(unwrap(&again, Family::Gemini), g);
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
