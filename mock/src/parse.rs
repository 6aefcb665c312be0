//! Reads the few fields of an LLM request body that the mock needs — model,
//! stream flags, embedding options — and counts prompt words while parsing,
//! without building a JSON tree: unknown fields are skipped.
//!
//! The prompt word count is the number of whitespace-separated words in the
//! text of `messages`, `system`, `prompt`, `input` and `instructions`. Inside
//! those, only strings under the keys `content`, `text` and `input` count
//! (so `"role"` and `"type"` do not), and each number in a token array counts
//! as one word.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The parts of a request body the mock looks at.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LlmRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub messages: Option<Words>,
    #[serde(default)]
    pub system: Option<Words>,
    #[serde(default)]
    pub prompt: Option<Words>,
    #[serde(default)]
    pub input: Option<Input>,
    #[serde(default)]
    pub instructions: Option<Words>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<usize>,
}

impl LlmRequest {
    /// Prompt tokens: the word count, at least 1.
    pub fn prompt_tokens(&self) -> u64 {
        let w = |x: &Option<Words>| x.map_or(0, |w| w.0);
        let words = w(&self.messages)
            + w(&self.system)
            + w(&self.prompt)
            + w(&self.instructions)
            + self.input.map_or(0, |i| i.words);
        words.max(1)
    }

    /// Whether an OpenAI stream should end with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Number of inputs of an embeddings request (at least 1).
    pub fn embedding_inputs(&self) -> usize {
        self.input.map_or(1, |i| i.items.max(1))
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Word count of a JSON value (see the module docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Words(pub u64);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WordsVisitor)
    }
}

fn count_words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

struct WordsVisitor;

impl<'de> Visitor<'de> for WordsVisitor {
    type Value = Words;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, s: &str) -> Result<Words, E> {
        Ok(Words(count_words(s)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Words, E> {
        Ok(Words(0))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Words, E> {
        Ok(Words(1))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Words, E> {
        Ok(Words(1))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Words, E> {
        Ok(Words(1))
    }

    fn visit_unit<E>(self) -> Result<Words, E> {
        Ok(Words(0))
    }

    fn visit_none<E>(self) -> Result<Words, E> {
        Ok(Words(0))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Words, D::Error> {
        Words::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Words, A::Error> {
        let mut n = 0;
        while let Some(Words(w)) = seq.next_element()? {
            n += w;
        }
        Ok(Words(n))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Words, A::Error> {
        let mut n = 0;
        while let Some(TextKey(counted)) = map.next_key()? {
            if counted {
                n += map.next_value::<Words>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Words(n))
    }
}

/// An object key; true when the value under it is prompt text.
struct TextKey(bool);

impl<'de> Deserialize<'de> for TextKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TextKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, s: &str) -> Result<TextKey, E> {
                Ok(TextKey(matches!(s, "content" | "text" | "input")))
            }
        }
        d.deserialize_str(V)
    }
}

/// The `input` of an embeddings or responses request: how many inputs it
/// holds (a string, an array of strings, a token array, an array of token
/// arrays, or an array of items) and its word count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Input {
    pub items: usize,
    pub words: u64,
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Input;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array or an object")
            }
            fn visit_str<E>(self, s: &str) -> Result<Input, E> {
                Ok(Input {
                    items: 1,
                    words: count_words(s),
                })
            }
            fn visit_u64<E>(self, _: u64) -> Result<Input, E> {
                Ok(Input { items: 1, words: 1 })
            }
            fn visit_i64<E>(self, _: i64) -> Result<Input, E> {
                Ok(Input { items: 1, words: 1 })
            }
            fn visit_f64<E>(self, _: f64) -> Result<Input, E> {
                Ok(Input { items: 1, words: 1 })
            }
            fn visit_bool<E>(self, _: bool) -> Result<Input, E> {
                Ok(Input::default())
            }
            fn visit_unit<E>(self) -> Result<Input, E> {
                Ok(Input::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
                let (mut items, mut words, mut all_numbers) = (0, 0, true);
                while let Some(e) = seq.next_element::<Element>()? {
                    items += 1;
                    words += e.words;
                    all_numbers &= e.number;
                }
                // A flat token array is one input.
                if items > 0 && all_numbers {
                    items = 1;
                }
                Ok(Input { items, words })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Input, A::Error> {
                Ok(Input {
                    items: 1,
                    words: WordsVisitor.visit_map(map)?.0,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// One element of an `input` array.
struct Element {
    number: bool,
    words: u64,
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, _: u64) -> Result<Element, E> {
                Ok(Element {
                    number: true,
                    words: 1,
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element, E> {
                self.visit_u64(0)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element, E> {
                self.visit_u64(0)
            }
            fn visit_str<E>(self, s: &str) -> Result<Element, E> {
                Ok(Element {
                    number: false,
                    words: count_words(s),
                })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element, E> {
                self.visit_unit()
            }
            fn visit_unit<E>(self) -> Result<Element, E> {
                Ok(Element {
                    number: false,
                    words: 0,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element, A::Error> {
                Ok(Element {
                    number: false,
                    words: WordsVisitor.visit_seq(seq)?.0,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Element, A::Error> {
                Ok(Element {
                    number: false,
                    words: WordsVisitor.visit_map(map)?.0,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> LlmRequest {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn chat_messages_count_content_words_only() {
        let r = parse(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
                "messages":[{"role":"system","content":"be brief"},
                            {"role":"user","content":[{"type":"text","text":"hello there world"},
                                                      {"type":"image_url","image_url":{"url":"x y"}}]}],
                "temperature":0.5,"tools":[{"type":"function","function":{"name":"f"}}]}"#,
        );
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.stream, Some(true));
        assert!(r.include_usage());
        assert_eq!(r.prompt_tokens(), 5);
    }

    #[test]
    fn anthropic_system_blocks_and_messages() {
        let r = parse(
            r#"{"model":"c","max_tokens":10,"system":[{"type":"text","text":"a b"}],
                "messages":[{"role":"user","content":"one two three"}]}"#,
        );
        assert_eq!(r.prompt_tokens(), 5);
        assert!(!r.include_usage());
    }

    #[test]
    fn empty_prompt_is_one_token() {
        assert_eq!(parse(r#"{"model":"m","messages":[]}"#).prompt_tokens(), 1);
        assert_eq!(parse(r#"{"model":null,"stream":null}"#).prompt_tokens(), 1);
    }

    #[test]
    fn embedding_inputs_are_counted() {
        assert_eq!(parse(r#"{"input":"a b"}"#).embedding_inputs(), 1);
        let r = parse(r#"{"input":["a b","c"]}"#);
        assert_eq!((r.embedding_inputs(), r.prompt_tokens()), (2, 3));
        let r = parse(r#"{"input":[1,2,3]}"#);
        assert_eq!((r.embedding_inputs(), r.prompt_tokens()), (1, 3));
        let r = parse(r#"{"input":[[1,2],[3]]}"#);
        assert_eq!((r.embedding_inputs(), r.prompt_tokens()), (2, 3));
    }

    #[test]
    fn responses_input_items_and_instructions() {
        let r = parse(
            r#"{"model":"m","instructions":"be nice",
                "input":[{"role":"user","content":[{"type":"input_text","text":"x y z"}]}]}"#,
        );
        assert_eq!(r.prompt_tokens(), 5);
        assert_eq!(
            parse(r#"{"input":"just four words here"}"#).prompt_tokens(),
            4
        );
    }

    #[test]
    fn prompt_string_or_list() {
        assert_eq!(parse(r#"{"prompt":"a b c"}"#).prompt_tokens(), 3);
        assert_eq!(parse(r#"{"prompt":["a b","c"]}"#).prompt_tokens(), 3);
    }
}
