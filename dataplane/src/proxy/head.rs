//! What routing needs of a request body (`model`, `stream` and
//! `stream_options.include_usage`), and whom the request is for (`user`,
//! `metadata.user_id`), read in one validating pass without
//! building a JSON tree of the body (only those few small members are
//! read as trees). Every other member is checked exactly as a tree
//! parse would check it (syntax, UTF-8, escapes, number range, nesting
//! depth) and then dropped; the tree is only built when a rule or a token
//! estimate asks for it. Building it for every request cost about a
//! twentieth of the data plane's instructions per request.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use llmgw_core::Protocol;

/// The members of a request body the proxy reads. Like a JSON tree, a
/// member named twice counts with its last value, and a member of an
/// unexpected type counts as absent.
#[derive(Debug, Default, PartialEq)]
pub struct Head {
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage` is `true`.
    pub include_usage: bool,
    /// `user`: OpenAI's name for the end user.
    pub user: Option<String>,
    /// `metadata.user_id`: Anthropic's name for the end user.
    pub metadata_user_id: Option<String>,
}

/// The longest end-user name a record keeps, in bytes.
pub const MAX_USER: usize = 256;

/// The end user a request is for: the `X-User-ID` header, else the body's
/// field of the client's protocol (OpenAI's `user`, Anthropic's
/// `metadata.user_id`), cut to [`MAX_USER`] bytes at a character
/// boundary. Empty when none names one, and when the name holds a control
/// character (it is shown in terminals and tables: an escape sequence or a
/// line break there would be the client's to forge).
pub fn end_user<'a>(header: Option<&'a str>, head: &'a Head, protocol: Protocol) -> &'a str {
    let named = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .or(match protocol {
            Protocol::OpenAi | Protocol::OpenAiChat => head.user.as_deref(),
            Protocol::Anthropic => head.metadata_user_id.as_deref(),
            Protocol::Gemini => None,
        });
    let user = named.unwrap_or_default().trim();
    if user.chars().any(char::is_control) {
        return "";
    }
    let mut end = user.len().min(MAX_USER);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    &user[..end]
}

/// Why a body could not be read.
#[derive(Debug, PartialEq)]
pub enum HeadError {
    /// Not JSON at all.
    Syntax(String),
    /// JSON, but not an object.
    NotAnObject,
}

impl Head {
    pub fn parse(raw: &[u8]) -> Result<Head, HeadError> {
        serde_json::from_slice::<Head>(raw).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => HeadError::NotAnObject,
            _ => HeadError::Syntax(e.to_string()),
        })
    }
}

/// The body as a JSON tree, for rules and token estimates; `Null` if it
/// is not JSON (bodies reach this only after [`Head::parse`] accepted them).
pub fn tree(raw: &[u8]) -> Value {
    serde_json::from_slice(raw).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Model,
    Stream,
    StreamOptions,
    User,
    Metadata,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let mut head = Head::default();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        // These few are small: read as trees, they are
                        // judged exactly as the whole body's tree would be.
                        Field::Model => {
                            head.model = match map.next_value::<Value>()? {
                                Value::String(s) => Some(s),
                                _ => None,
                            }
                        }
                        Field::Stream => {
                            head.stream = map.next_value::<Value>()?.as_bool().unwrap_or(false)
                        }
                        Field::StreamOptions => {
                            head.include_usage = map
                                .next_value::<Value>()?
                                .get("include_usage")
                                .and_then(Value::as_bool)
                                == Some(true)
                        }
                        Field::User => {
                            head.user = match map.next_value::<Value>()? {
                                Value::String(s) => Some(s),
                                _ => None,
                            }
                        }
                        Field::Metadata => {
                            head.metadata_user_id = match map.next_value::<Value>()? {
                                Value::Object(mut m) => match m.remove("user_id") {
                                    Some(Value::String(s)) => Some(s),
                                    _ => None,
                                },
                                _ => None,
                            }
                        }
                        Field::Other => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                Ok(head)
            }
        }
        d.deserialize_map(V)
    }
}

/// Any JSON value, read through `deserialize_any` so that serde_json
/// checks it as it would for a tree (`IgnoredAny` skips strings without
/// checking their UTF-8 or escapes, numbers without their range, and
/// nesting without the depth limit), and then dropped.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                while map.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Checked)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Head, HeadError> {
        Head::parse(s.as_bytes())
    }

    #[test]
    fn the_end_user_comes_from_the_header_else_the_clients_own_field() {
        let h = head(r#"{"model":"m","user":"u-openai","metadata":{"user_id":"u-anthropic"}}"#)
            .unwrap();
        assert_eq!(end_user(None, &h, Protocol::OpenAi), "u-openai");
        assert_eq!(end_user(None, &h, Protocol::Anthropic), "u-anthropic");
        assert_eq!(end_user(None, &h, Protocol::Gemini), "");
        for p in Protocol::ALL {
            assert_eq!(end_user(Some(" alice "), &h, p), "alice");
        }
        assert_eq!(end_user(Some(" "), &h, Protocol::OpenAi), "u-openai");
        assert_eq!(end_user(Some("zoë"), &h, Protocol::OpenAi), "zoë");
        // A control character anywhere: no one.
        for bad in ["a\u{1b}[31mb", "a\nb", "a\u{7f}", "a\u{85}b"] {
            assert_eq!(end_user(Some(bad), &h, Protocol::OpenAi), "", "{bad:?}");
            let body = serde_json::json!({"model": "m", "user": bad}).to_string();
            assert_eq!(end_user(None, &head(&body).unwrap(), Protocol::OpenAi), "");
        }
        // Not a string, or not where the protocol keeps it: no one.
        let h = head(r#"{"model":"m","user":5,"metadata":{"user_id":["x"]}}"#).unwrap();
        assert_eq!(end_user(None, &h, Protocol::OpenAi), "");
        assert_eq!(end_user(None, &h, Protocol::Anthropic), "");
        let h = head(r#"{"model":"m","metadata":"u"}"#).unwrap();
        assert_eq!(end_user(None, &h, Protocol::Anthropic), "");
        // Cut to the limit at a character boundary.
        let long = format!(r#"{{"model":"m","user":"a{}"}}"#, "é".repeat(200));
        let h = head(&long).unwrap();
        let u = end_user(None, &h, Protocol::OpenAi);
        assert_eq!(u.len(), MAX_USER - 1);
        assert!(u.starts_with("aéé"));
    }

    #[test]
    fn reads_what_routing_needs() {
        let h = head(
            r#"{"messages":[{"role":"user","content":"hi \"model\""}],"model":"gpt","stream":true,
                "stream_options":{"include_usage":true},"n":1.5,"x":null,"y":{"model":"no"}}"#,
        )
        .unwrap();
        assert_eq!(
            h,
            Head {
                model: Some("gpt".into()),
                stream: true,
                include_usage: true,
                ..Head::default()
            }
        );
    }

    #[test]
    fn escaped_names_and_values_and_duplicates_read_as_a_tree_would() {
        let h =
            head(r#"{"mod\u0065l":"a\u00e9","model":"b","stream":false,"stream":true}"#).unwrap();
        assert_eq!(h.model.as_deref(), Some("b"));
        assert!(h.stream);
        let h = head(r#"{"model":"b","model":"\u00e9\n"}"#).unwrap();
        assert_eq!(h.model.as_deref(), Some("é\n"));
    }

    #[test]
    fn wrong_types_count_as_absent() {
        let h = head(r#"{"model":5,"stream":"yes","stream_options":{"include_usage":"true"}}"#)
            .unwrap();
        assert_eq!(h, Head::default());
        let h = head(r#"{"model":["a"],"stream":{"a":1},"stream_options":[true]}"#).unwrap();
        assert_eq!(h, Head::default());
    }

    #[test]
    fn rejects_what_a_tree_would() {
        for bad in [
            "",
            "{",
            r#"{"model":"a",}"#,
            r#"{"model":"a"} x"#,
            "{'a':1}",
            "nul",
        ] {
            assert!(matches!(head(bad), Err(HeadError::Syntax(_))), "{bad}");
        }
        // Anything that does not open an object is refused as such at its
        // first byte, even if it is broken further on ("[1").
        for not_object in [
            "[]",
            r#"["gpt",true]"#,
            "1",
            "\"gpt\"",
            "null",
            "true",
            "[1",
        ] {
            assert_eq!(
                head(not_object),
                Err(HeadError::NotAnObject),
                "{not_object}"
            );
        }
        // What a tree parse refuses inside members that are not read:
        // broken UTF-8, a lone surrogate, a number out of range, and
        // nesting past serde_json's limit (the stack stays safe).
        let bad_utf8 = b"{\"model\":\"m\",\"x\":\"\xff\"}";
        assert!(serde_json::from_slice::<Value>(bad_utf8).is_err());
        assert!(matches!(Head::parse(bad_utf8), Err(HeadError::Syntax(_))));
        for bad in [
            r#"{"model":"m","x":"\ud800"}"#,
            r#"{"model":"m","x":[1e400]}"#,
            r#"{"model":"m","x":{"\ud800":1}}"#,
        ] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
            assert!(matches!(head(bad), Err(HeadError::Syntax(_))), "{bad}");
        }
        for depth in [200, 100_000] {
            let deep = format!(
                "{{\"model\":\"m\",\"a\":{}{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert!(serde_json::from_str::<Value>(&deep).is_err());
            assert!(matches!(head(&deep), Err(HeadError::Syntax(_))), "{depth}");
        }
        // Whatever it accepts, the tree parse accepts too.
        let fine = r#"{"model":"m","x":[1e300,-0,"\ud83d\ude00",{"a":null}]}"#;
        assert!(head(fine).is_ok());
        assert_ne!(tree(fine.as_bytes()), Value::Null);
    }

    #[test]
    fn agrees_with_the_tree_on_valid_bodies() {
        for body in [
            r#"{"model":"m","stream":true}"#,
            r#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#,
            r#"{"stream":true}"#,
            r#"{}"#,
        ] {
            let t = tree(body.as_bytes());
            let h = head(body).unwrap();
            assert_eq!(h.model.as_deref(), t.get("model").and_then(Value::as_str));
            assert_eq!(
                h.stream,
                t.get("stream").and_then(Value::as_bool).unwrap_or(false)
            );
            assert_eq!(
                h.include_usage,
                t.get("stream_options")
                    .and_then(|o| o.get("include_usage"))
                    .and_then(Value::as_bool)
                    == Some(true)
            );
        }
    }
}
