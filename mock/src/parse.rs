//! Reads the few fields of an LLM request body that the mock needs — model,
//! stream flags, embedding options, tool names, max output tokens, stop
//! sequences, `include` — and counts prompt words while parsing, without
//! building a JSON tree: unknown fields are skipped. One struct reads all
//! four protocols' requests (OpenAI Chat Completions and Responses,
//! Anthropic Messages, Gemini `generateContent`).
//!
//! The prompt word count is the number of whitespace-separated words in the
//! text of `messages`, `system`, `prompt`, `input`, `instructions`,
//! `contents` and `systemInstruction` (and of a Gemini `countTokens`
//! request's `generateContentRequest`). Inside those, only strings under the
//! keys `content`, `text`, `input` and `parts` count (so `"role"`, `"type"`,
//! tool call arguments and thinking do not), and each number in a token
//! array counts as one word.

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
    /// Gemini `contents`.
    #[serde(default)]
    pub contents: Option<Words>,
    /// Gemini `systemInstruction`.
    #[serde(default, rename = "systemInstruction", alias = "system_instruction")]
    pub system_instruction: Option<Words>,
    /// Gemini `generationConfig`.
    #[serde(default, rename = "generationConfig", alias = "generation_config")]
    pub generation_config: Option<GenerationConfig>,
    /// Gemini `countTokens`' wrapped request.
    #[serde(
        default,
        rename = "generateContentRequest",
        alias = "generate_content_request"
    )]
    pub generate_content_request: Option<Box<LlmRequest>>,
    /// Tool declarations of any of the four protocols.
    #[serde(default)]
    pub tools: Option<Vec<ToolDecl>>,
    /// Chat Completions (`max_tokens` is Anthropic's too).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Responses.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Chat Completions `stop`: a string or a list.
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    /// Anthropic.
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    /// Responses `include`.
    #[serde(default)]
    pub include: Option<Vec<String>>,
}

/// The parts of Gemini's `generationConfig` the mock uses.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GenerationConfig {
    #[serde(default, rename = "maxOutputTokens", alias = "max_output_tokens")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, rename = "stopSequences", alias = "stop_sequences")]
    pub stop_sequences: Option<Vec<String>>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// One entry of `tools`: Chat Completions `{function: {name}}`, Responses
/// and Anthropic `{name}`, Gemini `{functionDeclarations: [{name}]}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ToolDecl {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    function: Option<Named>,
    #[serde(
        default,
        rename = "functionDeclarations",
        alias = "function_declarations"
    )]
    function_declarations: Option<Vec<Named>>,
}

#[derive(Debug, Default, Deserialize)]
struct Named {
    #[serde(default)]
    name: Option<String>,
}

impl LlmRequest {
    /// Prompt tokens: the word count, at least 1.
    pub fn prompt_tokens(&self) -> u64 {
        let w = |x: &Option<Words>| x.map_or(0, |w| w.0);
        let words = w(&self.messages)
            + w(&self.system)
            + w(&self.prompt)
            + w(&self.instructions)
            + self.input.map_or(0, |i| i.words)
            + w(&self.contents)
            + w(&self.system_instruction)
            + self
                .generate_content_request
                .as_ref()
                .map_or(0, |r| r.prompt_words());
        words.max(1)
    }

    /// The word count without the floor of 1.
    fn prompt_words(&self) -> u64 {
        let w = |x: &Option<Words>| x.map_or(0, |w| w.0);
        w(&self.messages)
            + w(&self.system)
            + w(&self.prompt)
            + w(&self.instructions)
            + self.input.map_or(0, |i| i.words)
            + w(&self.contents)
            + w(&self.system_instruction)
    }

    /// Names of the request's function tools, in order.
    pub fn tool_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for t in self.tools.iter().flatten() {
            if let Some(n) = &t.name {
                names.push(n.clone());
            } else if let Some(n) = t.function.as_ref().and_then(|f| f.name.as_ref()) {
                names.push(n.clone());
            }
            for d in t.function_declarations.iter().flatten() {
                if let Some(n) = &d.name {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    /// The request's max output tokens, in whichever protocol's field.
    pub fn max_output(&self) -> Option<u64> {
        self.max_completion_tokens
            .or(self.max_tokens)
            .or(self.max_output_tokens)
            .or(self
                .generation_config
                .as_ref()
                .and_then(|g| g.max_output_tokens))
    }

    /// The request's first stop sequence, in whichever protocol's field.
    pub fn first_stop_sequence(&self) -> Option<String> {
        let chat = match &self.stop {
            Some(OneOrMany::One(s)) => Some(s.clone()),
            Some(OneOrMany::Many(v)) => v.first().cloned(),
            None => None,
        };
        chat.or_else(|| self.stop_sequences.as_ref()?.first().cloned())
            .or_else(|| {
                self.generation_config
                    .as_ref()?
                    .stop_sequences
                    .as_ref()?
                    .first()
                    .cloned()
            })
    }

    /// Whether a Responses request asked for `reasoning.encrypted_content`.
    pub fn includes_encrypted_reasoning(&self) -> bool {
        self.include
            .iter()
            .flatten()
            .any(|s| s == "reasoning.encrypted_content")
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
                Ok(TextKey(matches!(s, "content" | "text" | "input" | "parts")))
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
    fn gemini_contents_system_and_config() {
        let r = parse(
            r#"{"contents":[{"role":"user","parts":[{"text":"a b c"},
                  {"functionResponse":{"name":"f","response":{"text":"x y"}}}]},
                  {"role":"model","parts":[{"functionCall":{"name":"f","args":{"q":"no"}}}]}],
                "systemInstruction":{"parts":[{"text":"be kind"}]},
                "tools":[{"functionDeclarations":[{"name":"f","parameters":{}},{"name":"g"}]}],
                "generationConfig":{"maxOutputTokens":7,"stopSequences":["END"]}}"#,
        );
        assert_eq!(r.prompt_tokens(), 5);
        assert_eq!(r.tool_names(), ["f", "g"]);
        assert_eq!(r.max_output(), Some(7));
        assert_eq!(r.first_stop_sequence().as_deref(), Some("END"));
        let r = parse(
            r#"{"generateContentRequest":{"model":"models/x",
                "contents":[{"parts":[{"text":"one two"}]}]}}"#,
        );
        assert_eq!(r.prompt_tokens(), 2);
    }

    #[test]
    fn tool_names_of_each_protocol() {
        let r = parse(
            r#"{"tools":[{"type":"function","function":{"name":"a","parameters":{}}},
                         {"type":"function","name":"b"},{"type":"web_search"},
                         {"name":"c","input_schema":{}}],
                "stop":"S","include":["reasoning.encrypted_content"],"max_output_tokens":3}"#,
        );
        assert_eq!(r.tool_names(), ["a", "b", "c"]);
        assert_eq!(r.first_stop_sequence().as_deref(), Some("S"));
        assert!(r.includes_encrypted_reasoning());
        assert_eq!(r.max_output(), Some(3));
        let r = parse(r#"{"stop_sequences":["x","y"],"max_tokens":9}"#);
        assert_eq!(r.first_stop_sequence().as_deref(), Some("x"));
        assert_eq!(r.max_output(), Some(9));
    }

    #[test]
    fn prompt_string_or_list() {
        assert_eq!(parse(r#"{"prompt":"a b c"}"#).prompt_tokens(), 3);
        assert_eq!(parse(r#"{"prompt":["a b","c"]}"#).prompt_tokens(), 3);
    }
}
