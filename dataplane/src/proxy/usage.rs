//! Reported usage read straight from the bytes of a whole response's
//! `usage` member into the few numbers the gateway keeps, without building
//! a JSON tree: for a 1.5 KiB reply the maps and keys of that tree cost
//! more than finding the member. Anything unexpected (a count that is not
//! an unsigned integer, a member of another type, a repeated key) gives
//! `None`, and the caller reads the tree as before, so the result is always
//! what the dialect's own reading gives.

use llmgw_core::Protocol;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::dialect::{Endpoint, Usage};

/// The members of OpenAI's and Anthropic's usage objects that are counted;
/// others are skipped without being kept.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    #[serde(deserialize_with = "cached_tokens")]
    prompt_tokens_details: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    #[serde(deserialize_with = "cached_tokens")]
    input_tokens_details: Option<u64>,
    #[serde(deserialize_with = "reasoning_tokens")]
    completion_tokens_details: Option<u64>,
    #[serde(deserialize_with = "reasoning_tokens")]
    output_tokens_details: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

fn cached_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    detail(d, "cached_tokens")
}

fn reasoning_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    detail(d, "reasoning_tokens")
}

/// Member `name` of a details object, or `None` for `null`. Only an
/// object (or null) is accepted: a derived struct would also read an array.
fn detail<'de, D: Deserializer<'de>>(d: D, name: &'static str) -> Result<Option<u64>, D::Error> {
    struct Details(&'static str);
    impl<'de> Visitor<'de> for Details {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a details object or null")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
            let mut cached = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == self.0 {
                    if cached.is_some() {
                        return Err(de::Error::duplicate_field(self.0));
                    }
                    cached = Some(map.next_value::<Option<u64>>()?);
                } else {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            Ok(cached.flatten())
        }
    }
    d.deserialize_any(Details(name))
}

/// Usage from the raw `usage` member of a whole response body.
pub fn from_raw(protocol: Protocol, endpoint: Endpoint, raw: &[u8]) -> Option<Usage> {
    // A derived struct also reads from an array (its fields in order); the
    // dialects count only an object.
    if raw.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let r: Raw = serde_json::from_slice(raw).ok()?;
    Some(match (protocol, endpoint) {
        (Protocol::Anthropic, _) => Usage {
            input: r.input_tokens.unwrap_or(0),
            output: r.output_tokens.unwrap_or(0),
            cache_read: r.cache_read_input_tokens.unwrap_or(0),
            cache_write: r.cache_creation_input_tokens.unwrap_or(0),
            reasoning: 0,
        },
        // OpenAI's input counts include the cached tokens.
        (Protocol::OpenAi | Protocol::OpenAiChat, Endpoint::Responses) => {
            let cached = r.input_tokens_details.unwrap_or(0);
            Usage {
                input: r.input_tokens.unwrap_or(0).saturating_sub(cached),
                output: r.output_tokens.unwrap_or(0),
                cache_read: cached,
                cache_write: 0,
                reasoning: r.output_tokens_details.unwrap_or(0),
            }
        }
        (Protocol::Gemini, _) => return None,
        (Protocol::OpenAi | Protocol::OpenAiChat, _) => {
            let cached = r.prompt_tokens_details.unwrap_or(0);
            Usage {
                input: r.prompt_tokens.unwrap_or(0).saturating_sub(cached),
                output: r.completion_tokens.unwrap_or(0),
                cache_read: cached,
                cache_write: 0,
                reasoning: r.completion_tokens_details.unwrap_or(0),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::dialect::dialect;
    use serde_json::Value;

    /// What the dialect reads from the tree.
    fn slow(protocol: Protocol, endpoint: Endpoint, raw: &str) -> Option<Usage> {
        let usage: Value = serde_json::from_str(raw).ok()?;
        let body = serde_json::json!({ "usage": usage });
        dialect(protocol).usage_of_body(endpoint, &body)
    }

    #[test]
    fn agrees_with_the_dialects() {
        let cases = [
            r#"{"completion_tokens":4,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":5,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":2},"total_tokens":9}"#,
            r#"{"input_tokens":10,"input_tokens_details":{"cached_tokens":3},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":17}"#,
            r#"{"input_tokens":12,"cache_creation_input_tokens":5,"cache_read_input_tokens":4,"output_tokens":9,"service_tier":"standard","server_tool_use":null}"#,
            r#"{"prompt_tokens":5,"prompt_tokens_details":null}"#,
            r#"{"prompt_tokens":5,"extra":[1,{"a":"b\"}"}]}"#,
            r#"{}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":null},"input_tokens_details":{}}"#,
        ];
        for raw in cases {
            for (p, e) in [
                (Protocol::OpenAi, Endpoint::ChatCompletions),
                (Protocol::OpenAi, Endpoint::Embeddings),
                (Protocol::OpenAi, Endpoint::Responses),
                (Protocol::Anthropic, Endpoint::Messages),
            ] {
                let fast = from_raw(p, e, raw.as_bytes());
                assert!(fast.is_some(), "{raw}");
                assert_eq!(fast, slow(p, e, raw), "{p:?} {e:?} {raw}");
            }
        }
    }

    #[test]
    fn gives_up_on_what_it_cannot_read_exactly() {
        for raw in [
            "null",
            "[1]",
            r#"{"prompt_tokens":5.5}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":"5"}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_tokens_details":7}"#,
            r#"{"prompt_tokens_details":[3]}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1.5}}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}"#,
        ] {
            assert_eq!(
                from_raw(Protocol::OpenAi, Endpoint::ChatCompletions, raw.as_bytes()),
                None,
                "{raw}"
            );
        }
    }
}
