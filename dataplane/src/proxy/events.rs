//! Passed-through stream events read for what the observer keeps, without
//! building a JSON tree of each: a passed-through stream is read event by
//! event, and each event's tree (its maps, keys and strings, built and
//! dropped) was most of the data plane's work per chunk.
//!
//! - A Chat Completions event (the `data:` of an OpenAI-protocol event
//!   other than Responses'): each choice's text (`delta.content`, else
//!   `text`), the first choice's `finish_reason`, `usage` and `error`.
//! - An Anthropic Messages event: its `type`, `delta.text` and
//!   `delta.stop_reason`, and the members only a few events have, read as
//!   trees: `usage`, `message` and `error`.
//!
//! Every other member is skipped. The reading is strict: a member of a type
//! the tree's reading would not use the same way (a `delta` that is neither
//! an object nor null, a text that is neither a string nor null, a
//! `choices` that is neither an array nor null, a repeated member, a top
//! level that is not an object, invalid JSON) fails it, and the caller
//! reads the event as a tree as before; a null member reads as the tree
//! reads it. So whatever this reads is what the tree gives, with one
//! difference: a member this skips is only checked for syntax, so an event
//! whose skipped parts nest deeper than serde_json's tree allows (128),
//! hold a number out of `f64`'s range or a string with a lone surrogate
//! escape (`\ud800`) is read here, where the tree's reading would have
//! skipped the whole event (and, for Chat, kept its extra usage chunk).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// What one event holds for the observer.
#[derive(Debug, Default, PartialEq)]
pub struct ChatEvent<'a> {
    /// `choices`, when it is an array.
    choices: Option<Choices<'a>>,
    /// `usage`, unless absent or null.
    pub usage: Option<Value>,
    /// `error`, unless absent or null.
    pub error: Option<Value>,
}

#[derive(Debug, Default, PartialEq)]
struct Choices<'a> {
    len: usize,
    /// The first choice's `finish_reason`, when it is a string.
    first_stop: Option<Cow<'a, str>>,
    /// Each choice's text, in order (rarely more than one).
    texts: Vec<Cow<'a, str>>,
}

impl<'a> ChatEvent<'a> {
    /// Reads `data`; `None` when the strict reading does not apply.
    pub fn read(data: &'a str) -> Option<ChatEvent<'a>> {
        serde_json::from_str(data).ok()
    }

    /// The choices' texts, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.choices
            .iter()
            .flat_map(|c| c.texts.iter().map(|t| t.as_ref()))
    }

    /// The first choice's finish reason.
    pub fn stop(&self) -> Option<&str> {
        self.choices.as_ref()?.first_stop.as_deref()
    }

    /// The extra usage chunk that `include_usage` adds: no choices, and a
    /// usage object (`openai::is_usage_chunk` on the tree).
    pub fn is_usage_chunk(&self) -> bool {
        self.choices.as_ref().is_some_and(|c| c.len == 0)
            && self.usage.as_ref().is_some_and(Value::is_object)
    }
}

/// A string, borrowed from the event when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A string or null (`None`).
fn nullable_text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Option<Text<'de>>>()?.map(|t| t.0))
}

/// Fails the reading on a member named twice (the tree keeps the last).
fn once<T, E: de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(name)),
        None => Ok(()),
    }
}

impl<'de> Deserialize<'de> for ChatEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ChatEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat stream event")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatEvent<'de>, A::Error> {
                let mut ev = ChatEvent::default();
                // Each member once; `Some(None)` is present and null.
                let (mut choices, mut usage, mut error) = (None, None, None);
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "choices" => {
                            once(&choices, "choices")?;
                            choices = Some(map.next_value::<Option<Choices<'de>>>()?);
                        }
                        "usage" => {
                            once(&usage, "usage")?;
                            usage = Some(map.next_value::<Option<Value>>()?);
                        }
                        "error" => {
                            once(&error, "error")?;
                            error = Some(map.next_value::<Option<Value>>()?);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                // Null reads as absent, as the tree's `get` then `!is_null()`.
                ev.choices = choices.flatten();
                ev.usage = usage.flatten();
                ev.error = error.flatten();
                Ok(ev)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Choices<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Choices<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices<'de>, A::Error> {
                let mut out = Choices::default();
                while let Some(c) = seq.next_element::<Choice<'de>>()? {
                    if out.len == 0 {
                        out.first_stop = c.stop;
                    }
                    out.len += 1;
                    if let Some(t) = c.text {
                        out.texts.push(t);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// One choice: its text and finish reason.
struct Choice<'a> {
    text: Option<Cow<'a, str>>,
    stop: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Choice<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Choice<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a choice object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Choice<'de>, A::Error> {
                // `delta`: absent (`None`), null or without `content`
                // (`Some(None)`), or its `content` (`Some(Some(..))`, itself
                // a string or null).
                let mut delta: Option<Option<Option<Cow<'de, str>>>> = None;
                let mut text: Option<Option<Cow<'de, str>>> = None;
                let mut stop: Option<Option<Cow<'de, str>>> = None;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "delta" => {
                            once(&delta, "delta")?;
                            delta = Some(map.next_value::<Option<Delta<'de>>>()?.and_then(|d| d.0));
                        }
                        "text" => {
                            once(&text, "text")?;
                            text = Some(nullable_text(&mut map)?);
                        }
                        "finish_reason" => {
                            once(&stop, "finish_reason")?;
                            stop = Some(nullable_text(&mut map)?);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                // The tree: `delta.content` when the delta has a `content`
                // member (whatever it holds), else `text`.
                let text = match delta.flatten() {
                    Some(content) => content,
                    None => text.flatten(),
                };
                Ok(Choice {
                    text,
                    stop: stop.flatten(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A delta object: its `content` member, if it has one (`Some(None)`:
/// present and null).
struct Delta<'a>(Option<Option<Cow<'a, str>>>);

impl<'de> Deserialize<'de> for Delta<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Delta<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a delta object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Delta<'de>, A::Error> {
                let mut content = None;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if key.0 == "content" {
                        once(&content, "content")?;
                        content = Some(nullable_text(&mut map)?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Delta(content))
            }
        }
        d.deserialize_map(V)
    }
}

/// What one Anthropic event holds for the observer. `usage`, `message` and
/// `error` keep null as `Value::Null`: the tree's reading tells a null
/// member from an absent one there.
#[derive(Debug, Default, PartialEq)]
pub struct AnthropicEvent<'a> {
    /// `type`, when it is a string.
    kind: Option<Cow<'a, str>>,
    /// `delta.text`, when it is a string.
    pub text: Option<Cow<'a, str>>,
    /// `delta.stop_reason`, when it is a string.
    pub stop: Option<Cow<'a, str>>,
    pub usage: Option<Value>,
    pub message: Option<Value>,
    pub error: Option<Value>,
}

impl<'a> AnthropicEvent<'a> {
    /// Reads `data`; `None` when the strict reading does not apply.
    pub fn read(data: &'a str) -> Option<AnthropicEvent<'a>> {
        serde_json::from_str(data).ok()
    }

    /// The event's kind: its `type`, else the SSE event's name.
    pub fn kind<'s>(&'s self, name: &'s str) -> &'s str {
        self.kind.as_deref().unwrap_or(name)
    }
}

impl<'de> Deserialize<'de> for AnthropicEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnthropicEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an Anthropic stream event")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AnthropicEvent<'de>, A::Error> {
                let mut kind = None;
                // A null delta reads as an empty one.
                let mut delta: Option<AnthropicDelta<'de>> = None;
                let (mut usage, mut message, mut error) = (None, None, None);
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "type" => {
                            once(&kind, "type")?;
                            kind = Some(nullable_text(&mut map)?);
                        }
                        "delta" => {
                            once(&delta, "delta")?;
                            delta = Some(
                                map.next_value::<Option<AnthropicDelta<'de>>>()?
                                    .unwrap_or_default(),
                            );
                        }
                        "usage" => {
                            once(&usage, "usage")?;
                            usage = Some(map.next_value::<Value>()?);
                        }
                        "message" => {
                            once(&message, "message")?;
                            message = Some(map.next_value::<Value>()?);
                        }
                        "error" => {
                            once(&error, "error")?;
                            error = Some(map.next_value::<Value>()?);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let AnthropicDelta { text, stop } = delta.unwrap_or_default();
                Ok(AnthropicEvent {
                    kind: kind.flatten(),
                    text,
                    stop,
                    usage,
                    message,
                    error,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// An Anthropic delta object: its `text` and `stop_reason`, each a string
/// or null.
#[derive(Default)]
struct AnthropicDelta<'a> {
    text: Option<Cow<'a, str>>,
    stop: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for AnthropicDelta<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnthropicDelta<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a delta object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AnthropicDelta<'de>, A::Error> {
                let (mut text, mut stop) = (None, None);
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "text" => {
                            once(&text, "text")?;
                            text = Some(nullable_text(&mut map)?);
                        }
                        "stop_reason" => {
                            once(&stop, "stop_reason")?;
                            stop = Some(nullable_text(&mut map)?);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(AnthropicDelta {
                    text: text.flatten(),
                    stop: stop.flatten(),
                })
            }
        }
        d.deserialize_map(V)
    }
}
