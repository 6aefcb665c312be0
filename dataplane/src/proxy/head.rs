//! What routing needs of a request body (`model`, `stream` and
//! `stream_options.include_usage`), whom the request is for (`user`,
//! `metadata.user_id`), and what a token reservation needs (the size of
//! the text an input estimate counts, and the `max_tokens` asked for; see
//! [`Head::approximate_input`]), read in one validating pass without
//! building a JSON tree of the body (only those few small members are
//! read as trees, and `model` from its raw text, whose place in the body
//! the attempt's splice uses). Every other member is checked exactly as a tree
//! parse would check it (syntax, UTF-8, escapes, number range, nesting
//! depth) and then dropped; the tree is only built when a rule or a token
//! estimate asks for it. Building it for every request cost about a
//! twentieth of the data plane's instructions per request.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use llmgw_core::Protocol;

/// The members of a request body the proxy reads. Like a JSON tree, a
/// member named twice counts with its last value, and a member of an
/// unexpected type counts as absent.
#[derive(Debug, Default, PartialEq)]
pub struct Head {
    pub model: Option<String>,
    /// Where each top-level `model` value is in the body, in order (a
    /// member named twice has two), whatever its type: the attempt
    /// replaces them there without scanning the body again.
    pub model_spans: ModelSpans,
    /// A `model` value a tree parse refuses: the body is refused with the
    /// tree parse's own error.
    model_refused: bool,
    pub stream: bool,
    /// `stream_options.include_usage` is `true`.
    pub include_usage: bool,
    /// `user`: OpenAI's name for the end user.
    pub user: Option<String>,
    /// `metadata.user_id`: Anthropic's name for the end user.
    pub metadata_user_id: Option<String>,
    /// What the input estimate counts, member by member.
    pub input: InputSize,
    /// `max_tokens`, `max_completion_tokens`, `max_output_tokens` and
    /// `generationConfig.maxOutputTokens`, in that order of precedence.
    pub max_output: [Option<u64>; 4],
    /// `temperature` (Gemini: `generationConfig.temperature`), for traces.
    pub temperature: Option<f64>,
    /// `top_p` (Gemini: `generationConfig.topP`), for traces.
    pub top_p: Option<f64>,
}

/// Byte ranges of a body's top-level `model` values: nearly always one,
/// which is kept without an allocation.
#[derive(Debug, Default, PartialEq, Clone)]
pub struct ModelSpans {
    one: Option<std::ops::Range<usize>>,
    /// All of them, when there is more than one.
    all: Vec<std::ops::Range<usize>>,
}

impl ModelSpans {
    fn push(&mut self, span: std::ops::Range<usize>) {
        if self.one.is_none() && self.all.is_empty() {
            self.one = Some(span);
            return;
        }
        self.all.extend(self.one.take());
        self.all.push(span);
    }

    pub fn as_slice(&self) -> &[std::ops::Range<usize>] {
        match &self.one {
            Some(one) => std::slice::from_ref(one),
            None => &self.all,
        }
    }
}

/// The bytes of text that `llmgw_core::tokens::approximate_input` would
/// count in a body's tree, per top-level member (a member named twice
/// counts with its last value, as in a tree), and its chat messages.
#[derive(Debug, Default, PartialEq, Clone, Copy)]
pub struct InputSize {
    system: u64,
    instructions: u64,
    /// `systemInstruction`, `system_instruction`.
    system_instruction: [u64; 2],
    /// `contents` (Gemini) and `messages`: (text bytes, entries).
    contents: (u64, u64),
    messages: (u64, u64),
    prompt: u64,
    input: u64,
    /// The compact JSON of `tools`.
    tools: u64,
}

impl Head {
    /// The rough input estimate of the body (about four bytes a token of
    /// its text, plus a few per chat message): exactly what
    /// `llmgw_core::tokens::approximate_input` gives for the body's tree,
    /// without building it.
    pub fn approximate_input(&self) -> u64 {
        let i = &self.input;
        let text = i.system
            + i.instructions
            + i.system_instruction[0]
            + i.system_instruction[1]
            + i.contents.0
            + i.messages.0
            + i.prompt
            + i.input
            + i.tools;
        llmgw_core::tokens::approximate(text, i.contents.1 + i.messages.1)
    }

    /// The output tokens the request asks for at most, if it names a limit.
    pub fn max_output(&self) -> Option<u64> {
        self.max_output.iter().flatten().next().copied()
    }
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
    /// The head of a body, or why a tree parse would refuse it. A refused
    /// body is parsed a second time, as a tree, for the tree parse's own
    /// words: the cost of bad input only.
    pub fn parse(raw: &[u8]) -> Result<Head, HeadError> {
        let mut de = serde_json::Deserializer::from_slice(raw);
        let parsed = HeadSeed {
            base: raw.as_ptr() as usize,
            len: raw.len(),
        }
        .deserialize(&mut de)
        .and_then(|head| de.end().map(|()| head));
        // In the tree parse's words: skipping a value (as `model` is, for
        // its place) may place an error a byte apart.
        let refused = |ours: String| {
            HeadError::Syntax(
                serde_json::from_slice::<Value>(raw)
                    .err()
                    .map_or(ours, |tree| tree.to_string()),
            )
        };
        match parsed {
            Ok(head) if !head.model_refused => Ok(head),
            Ok(_) => Err(refused("invalid 'model'".to_string())),
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                Err(HeadError::NotAnObject)
            }
            Err(e) => Err(refused(e.to_string())),
        }
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
    System,
    Instructions,
    #[serde(rename = "systemInstruction")]
    SystemInstruction,
    #[serde(rename = "system_instruction")]
    SystemInstructionSnake,
    Contents,
    Messages,
    Prompt,
    Input,
    Tools,
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    #[serde(rename = "generationConfig")]
    GenerationConfig,
    Temperature,
    TopP,
    #[serde(other)]
    Other,
}

/// Reads a [`Head`] from the body at `base` (its address) of `len` bytes,
/// which the `model` values' spans are measured from.
struct HeadSeed {
    base: usize,
    len: usize,
}

impl<'de> DeserializeSeed<'de> for HeadSeed {
    type Value = Head;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Head, D::Error> {
        struct V(HeadSeed);
        impl<'de> Visitor<'de> for V {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let mut head = Head::default();
                // Sampling parameters, top-level and Gemini's: Gemini's
                // win (a body has one or the other).
                let mut sampling = (None, None);
                let mut gemini_sampling = (None, None);
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        // `model` from its raw text, and the few below
                        // read as trees: each is judged exactly as the
                        // whole body's tree would be.
                        Field::Model => {
                            let raw = map.next_value::<&'de RawValue>()?.get();
                            // Where it is, if it is within the body read.
                            let start = (raw.as_ptr() as usize).wrapping_sub(self.0.base);
                            if start <= self.0.len && raw.len() <= self.0.len - start {
                                head.model_spans.push(start..start + raw.len());
                            }
                            head.model = match model(raw) {
                                Some(m) => m,
                                None => {
                                    head.model_refused = true;
                                    None
                                }
                            };
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
                        Field::System => head.input.system = map.next_value::<Text>()?.0,
                        Field::Instructions => {
                            head.input.instructions = map.next_value::<Text>()?.0;
                        }
                        Field::SystemInstruction => {
                            head.input.system_instruction[0] = map.next_value::<Text<true>>()?.0;
                        }
                        Field::SystemInstructionSnake => {
                            head.input.system_instruction[1] = map.next_value::<Text<true>>()?.0;
                        }
                        Field::Contents => {
                            head.input.contents = map.next_value::<Entries<b'p'>>()?.into();
                        }
                        Field::Messages => {
                            head.input.messages = map.next_value::<Entries<b'c'>>()?.into();
                        }
                        Field::Prompt => head.input.prompt = map.next_value::<Text>()?.0,
                        Field::Input => head.input.input = map.next_value::<Text>()?.0,
                        Field::Tools => head.input.tools = map.next_value::<JsonLen>()?.0,
                        Field::MaxTokens => head.max_output[0] = map.next_value::<Count>()?.0,
                        Field::MaxCompletionTokens => {
                            head.max_output[1] = map.next_value::<Count>()?.0;
                        }
                        Field::MaxOutputTokens => {
                            head.max_output[2] = map.next_value::<Count>()?.0;
                        }
                        Field::GenerationConfig => {
                            let g = map.next_value::<GenerationConfig>()?;
                            head.max_output[3] = g.max;
                            gemini_sampling = (g.temperature, g.top_p);
                        }
                        Field::Temperature => sampling.0 = map.next_value::<Float>()?.0,
                        Field::TopP => sampling.1 = map.next_value::<Float>()?.0,
                        Field::Other => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                head.temperature = gemini_sampling.0.or(sampling.0);
                head.top_p = gemini_sampling.1.or(sampling.1);
                Ok(head)
            }
        }
        d.deserialize_map(V(self))
    }
}

/// The `model` a tree parse reads from a `model` value's raw text (which
/// serde_json has checked as far as skipping a value checks it: syntax,
/// escapes' form, no control byte in a string; and the raw text as UTF-8):
/// a string is the model, anything else counts as absent. `None` when a
/// tree parse would refuse the value (a lone surrogate in an escape, a
/// number out of range, nesting past the limit).
fn model(raw: &str) -> Option<Option<String>> {
    let b = raw.as_bytes();
    if b.first() == Some(&b'"') {
        if !b.contains(&b'\\') {
            // Without an escape, the text between the quotes is the string
            // (control bytes were refused while skipping, broken UTF-8 when
            // the raw text was taken).
            return Some(raw.get(1..raw.len() - 1).map(str::to_string));
        }
        return match serde_json::from_str::<Value>(raw).ok()? {
            Value::String(s) => Some(Some(s)),
            _ => Some(None),
        };
    }
    // In a list, nested one level deeper, as it is in the body: the depth
    // limit counts from the body's object.
    serde_json::from_str::<Value>(&format!("[{raw}]")).ok()?;
    Some(None)
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

/// Walks what is left of a list, checking it as a tree parse would.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Checked>()?.is_some() {}
    Ok(())
}

/// Walks what is left of an object, checking it as a tree parse would.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Checked, Checked>()?.is_some() {}
    Ok(())
}

/// The scalars a visitor that only looks into strings, lists or objects
/// takes as `$value`, checked as `Checked` checks them.
macro_rules! scalars_are {
    ($ty:ty, $value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$ty, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$ty, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$ty, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$ty, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$ty, E> {
            Ok($value)
        }
    };
}

/// Strings, which a visitor that does not read them takes as `$value`.
macro_rules! strings_are {
    ($ty:ty, $value:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$ty, E> {
            Ok($value)
        }
    };
}

/// Lists, which a visitor that does not read them checks and takes as
/// `$value`.
macro_rules! lists_are {
    ($ty:ty, $value:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<$ty, A::Error> {
            skip_seq(seq)?;
            Ok($value)
        }
    };
}

/// Objects, which a visitor that does not read them checks and takes as
/// `$value`.
macro_rules! objects_are {
    ($ty:ty, $value:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
            skip_map(map)?;
            Ok($value)
        }
    };
}

/// An object member's name, compared with one name (`Key<b'c'>`:
/// "content"; `Key<b'p'>`: "parts"; `Key<b't'>`: "text").
struct Key<const F: u8>(bool);

impl<const F: u8> Key<F> {
    const NAME: &'static str = match F {
        b'c' => "content",
        b'p' => "parts",
        _ => "text",
    };
}

impl<'de, const F: u8> Deserialize<'de> for Key<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const F: u8>;
        impl<const F: u8> Visitor<'_> for V<F> {
            type Value = Key<F>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<F>, E> {
                Ok(Key(s == Key::<F>::NAME))
            }
        }
        d.deserialize_identifier(V::<F>)
    }
}

/// The bytes of text `collect_text` (llmgw_core::tokens) counts in a
/// value: a string and a line break; each item of a list; an object's
/// `text`, else its `content`. `Text<true>` reads a system instruction
/// (Gemini): an object's `parts` first.
struct Text<const PARTS: bool = false>(u64);

impl<'de, const PARTS: bool> Deserialize<'de> for Text<PARTS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const PARTS: bool>;
        impl<'de, const PARTS: bool> Visitor<'de> for V<PARTS> {
            type Value = Text<PARTS>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_are!(Text<PARTS>, Text(0));
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<PARTS>, E> {
                Ok(Text(s.len() as u64 + 1))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<PARTS>, A::Error> {
                let mut n = 0u64;
                while let Some(t) = seq.next_element::<Text>()? {
                    n += t.0;
                }
                Ok(Text(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<PARTS>, A::Error> {
                let (mut parts, mut text, mut content) = (None, None, None);
                while let Some(k) = map.next_key::<TextField>()? {
                    let slot = match k {
                        TextField::Parts if PARTS => &mut parts,
                        TextField::Text => &mut text,
                        TextField::Content => &mut content,
                        TextField::Parts | TextField::Other => {
                            map.next_value::<Checked>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Text>()?.0);
                }
                Ok(Text(parts.or(text).or(content).unwrap_or(0)))
            }
        }
        d.deserialize_any(V::<PARTS>)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum TextField {
    Parts,
    Text,
    Content,
    #[serde(other)]
    Other,
}

/// A list of chat entries (`messages`, or Gemini's `contents`): the text
/// of each entry's member `Key<F>`, and how many entries there are. A
/// value that is not a list counts nothing.
struct Entries<const F: u8>(u64, u64);

impl<const F: u8> From<Entries<F>> for (u64, u64) {
    fn from(e: Entries<F>) -> (u64, u64) {
        (e.0, e.1)
    }
}

impl<'de, const F: u8> Deserialize<'de> for Entries<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const F: u8>;
        impl<'de, const F: u8> Visitor<'de> for V<F> {
            type Value = Entries<F>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_are!(Entries<F>, Entries(0, 0));
            strings_are!(Entries<F>, Entries(0, 0));
            objects_are!(Entries<F>, Entries(0, 0));
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries<F>, A::Error> {
                let (mut text, mut entries) = (0u64, 0u64);
                while let Some(e) = seq.next_element::<Entry<F>>()? {
                    text += e.0;
                    entries += 1;
                }
                Ok(Entries(text, entries))
            }
        }
        d.deserialize_any(V::<F>)
    }
}

/// One chat entry: the text of its member `Key<F>` (the last, if named
/// twice).
struct Entry<const F: u8>(u64);

impl<'de, const F: u8> Deserialize<'de> for Entry<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const F: u8>;
        impl<'de, const F: u8> Visitor<'de> for V<F> {
            type Value = Entry<F>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_are!(Entry<F>, Entry(0));
            strings_are!(Entry<F>, Entry(0));
            lists_are!(Entry<F>, Entry(0));
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry<F>, A::Error> {
                let mut text = 0;
                while let Some(k) = map.next_key::<Key<F>>()? {
                    if k.0 {
                        text = map.next_value::<Text>()?.0;
                    } else {
                        map.next_value::<Checked>()?;
                    }
                }
                Ok(Entry(text))
            }
        }
        d.deserialize_any(V::<F>)
    }
}

/// A token count as `Value::as_u64` reads one: a non-negative integer,
/// else none.
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                Ok(Count(Some(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(n).ok()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            strings_are!(Count, Count(None));
            lists_are!(Count, Count(None));
            objects_are!(Count, Count(None));
        }
        d.deserialize_any(V)
    }
}

/// Gemini's `generationConfig`: its `maxOutputTokens`, `temperature` and
/// `topP`.
#[derive(Default)]
struct GenerationConfig {
    max: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum GenerationField {
    #[serde(rename = "maxOutputTokens")]
    MaxOutputTokens,
    #[serde(rename = "temperature")]
    Temperature,
    #[serde(rename = "topP")]
    TopP,
    #[serde(other)]
    Other,
}

/// A number, as a float; anything else is absent.
struct Float(Option<f64>);

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Float;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Float, E> {
                Ok(Float(Some(n as f64)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Float, E> {
                Ok(Float(Some(n as f64)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Float, E> {
                Ok(Float(Some(n)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Float, E> {
                Ok(Float(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Float, E> {
                Ok(Float(None))
            }
            strings_are!(Float, Float(None));
            lists_are!(Float, Float(None));
            objects_are!(Float, Float(None));
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for GenerationConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GenerationConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars_are!(GenerationConfig, GenerationConfig::default());
            strings_are!(GenerationConfig, GenerationConfig::default());
            lists_are!(GenerationConfig, GenerationConfig::default());
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<GenerationConfig, A::Error> {
                let mut g = GenerationConfig::default();
                while let Some(k) = map.next_key::<GenerationField>()? {
                    match k {
                        GenerationField::MaxOutputTokens => g.max = map.next_value::<Count>()?.0,
                        GenerationField::Temperature => {
                            g.temperature = map.next_value::<Float>()?.0;
                        }
                        GenerationField::TopP => g.top_p = map.next_value::<Float>()?.0,
                        GenerationField::Other => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                Ok(g)
            }
        }
        d.deserialize_any(V)
    }
}

/// The length of a value's compact JSON as `Value::to_string` writes it
/// (the input estimate counts `tools` so). A member named twice in an
/// object counts twice here, once in a tree.
struct JsonLen(u64);

/// The length of a string written as a JSON string, quotes included.
fn quoted_len(s: &str) -> u64 {
    let escapes: u64 = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    s.len() as u64 + escapes + 2
}

fn digits(mut n: u64) -> u64 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

impl<'de> Deserialize<'de> for JsonLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonLen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<JsonLen, E> {
                Ok(JsonLen(if b { 4 } else { 5 }))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<JsonLen, E> {
                Ok(JsonLen(digits(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<JsonLen, E> {
                Ok(JsonLen(digits(n.unsigned_abs()) + u64::from(n < 0)))
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<JsonLen, E> {
                // Rare in tools; written as a tree would write it.
                Ok(JsonLen(Value::from(f).to_string().len() as u64))
            }
            fn visit_unit<E: de::Error>(self) -> Result<JsonLen, E> {
                Ok(JsonLen(4))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<JsonLen, E> {
                Ok(JsonLen(quoted_len(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonLen, A::Error> {
                let (mut n, mut items) = (2u64, 0u64);
                while let Some(v) = seq.next_element::<JsonLen>()? {
                    n += v.0;
                    items += 1;
                }
                Ok(JsonLen(n + items.saturating_sub(1)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonLen, A::Error> {
                let (mut n, mut members) = (2u64, 0u64);
                while let Some((k, v)) = map.next_entry::<JsonLen, JsonLen>()? {
                    // The name, a colon and the value.
                    n += k.0 + 1 + v.0;
                    members += 1;
                }
                Ok(JsonLen(n + members.saturating_sub(1)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    // A body with one `model` has one span: `vec![9..14]` means that.
    #![allow(clippy::single_range_in_vec_init)]
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
                model_spans: h.model_spans.clone(),
                stream: true,
                include_usage: true,
                input: h.input,
                ..Head::default()
            }
        );
        assert_eq!(h.model_spans.as_slice(), [63..68]);
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
        let spans = |h: &Head| Head {
            model_spans: h.model_spans.clone(),
            ..Head::default()
        };
        assert_eq!(h, spans(&h));
        assert_eq!(h.model_spans.as_slice(), [9..10]);
        let h = head(r#"{"model":["a"],"stream":{"a":1},"stream_options":[true]}"#).unwrap();
        assert_eq!(h, spans(&h));
        assert_eq!(h.model_spans.as_slice(), [9..14]);
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

    /// What a reservation read from the tree before `Head` measured it.
    fn tree_max_output(t: &Value) -> Option<u64> {
        llmgw_core::tokens::max_output(t)
    }

    /// A sampling parameter as the tree has it: the top-level member,
    /// else Gemini's in `generationConfig` (which wins when both are set).
    fn tree_param(t: &Value, top: &str, gemini: &str) -> Option<f64> {
        t.get("generationConfig")
            .and_then(|g| g.get(gemini))
            .and_then(Value::as_f64)
            .or_else(|| t.get(top).and_then(Value::as_f64))
    }

    #[test]
    fn reads_sampling_parameters_for_traces() {
        let h = head(r#"{"model":"m","temperature":0.7,"top_p":1,"max_tokens":9}"#).unwrap();
        assert_eq!((h.temperature, h.top_p), (Some(0.7), Some(1.0)));
        let h = head(r#"{"generationConfig":{"temperature":0,"topP":0.95,"maxOutputTokens":5}}"#)
            .unwrap();
        assert_eq!(
            (h.temperature, h.top_p, h.max_output()),
            (Some(0.0), Some(0.95), Some(5))
        );
        let h =
            head(r#"{"temperature":"hot","top_p":null,"generationConfig":{"topP":[1]}}"#).unwrap();
        assert_eq!((h.temperature, h.top_p), (None, None));
        // Both, in either order, and a member named twice: as the tree.
        for body in [
            r#"{"generationConfig":{"temperature":0.1},"temperature":0.9}"#,
            r#"{"temperature":0.9,"generationConfig":{"temperature":0.1}}"#,
            r#"{"generationConfig":{"temperature":0.1},"generationConfig":{"topP":0.5},"temperature":0.9}"#,
        ] {
            let (h, t) = (head(body).unwrap(), tree(body.as_bytes()));
            assert_eq!(
                h.temperature,
                tree_param(&t, "temperature", "temperature"),
                "{body}"
            );
            assert_eq!(h.top_p, tree_param(&t, "top_p", "topP"), "{body}");
        }
    }

    #[test]
    fn measures_the_input_estimate_and_max_tokens_as_the_tree_does() {
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":"Hello, how are you today?"}]}"#,
            r#"{"model":"m","max_tokens":1024,"system":[{"type":"text","text":"be \"brief\"\n"}],
                "messages":[{"role":"user","content":[{"type":"text","text":"hi","content":"x"},
                {"type":"image","source":{"type":"base64","data":"AAAA"}}]},"hello",[1],
                {"content":{"content":"nested"}}],"tools":[{"name":"t\u00e9","x":[1,-2,3.5,null,true,false,{}],"e":"\u0001"}]}"#,
            r#"{"contents":[{"role":"user","parts":[{"text":"hello there"},{"inlineData":{"data":"QUJD"}}]},7],
                "systemInstruction":{"parts":[{"text":"be kind"}],"text":"no"},
                "system_instruction":"snake","generationConfig":{"temperature":0.2,"maxOutputTokens":77}}"#,
            r#"{"instructions":"do it","input":[{"role":"user","content":[{"type":"input_text","text":"q"}]}],
                "max_output_tokens":-5,"max_completion_tokens":12,"prompt":["a","b"]}"#,
            r#"{"messages":{"content":"not a list"},"max_tokens":1.5,"contents":"no","generationConfig":[1],
                "system":{"content":"c"},"tools":"s","messages":[{"content":"a","content":"bbbb"}]}"#,
            r#"{"max_tokens":3,"max_tokens":"x","systemInstruction":{"content":"c"}}"#,
        ] {
            let t = tree(body.as_bytes());
            assert_ne!(t, Value::Null, "{body}");
            let h = head(body).unwrap();
            assert_eq!(
                h.approximate_input(),
                llmgw_core::tokens::approximate_input(&t),
                "{body}"
            );
            assert_eq!(h.max_output(), tree_max_output(&t), "{body}");
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let names = prop::sample::select(vec![
            "text",
            "content",
            "parts",
            "role",
            "type",
            "data",
            "maxOutputTokens",
            "temperature",
            "topP",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z\"\\\\\n\t\u{1}\u{7f}é😀 ]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(names.clone(), inner, 0..4).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever the body holds where an estimate looks, `Head` gives
        /// the tree's estimate and `max_tokens`.
        #[test]
        fn the_estimate_agrees_with_the_tree(
            members in proptest::collection::btree_map(
                proptest::sample::select(vec![
                    "system", "instructions", "systemInstruction", "system_instruction",
                    "contents", "messages", "prompt", "input", "tools", "max_tokens",
                    "max_completion_tokens", "max_output_tokens", "generationConfig", "other",
                    "temperature", "top_p",
                ]),
                json_value(),
                0..8,
            )
        ) {
            let body = Value::Object(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
            // Compared with the tree of the same bytes, as the proxy reads
            // them (serde_json's float parsing does not round-trip every
            // f64, so `body` itself may print other digits).
            let raw = body.to_string();
            let t = tree(raw.as_bytes());
            let h = head(&raw).unwrap();
            proptest::prop_assert_eq!(
                h.approximate_input(),
                llmgw_core::tokens::approximate_input(&t)
            );
            proptest::prop_assert_eq!(h.max_output(), tree_max_output(&t));
            proptest::prop_assert_eq!(h.temperature, tree_param(&t, "temperature", "temperature"));
            proptest::prop_assert_eq!(h.top_p, tree_param(&t, "top_p", "topP"));
        }
    }

    #[test]
    fn finds_where_model_is_as_the_splice_would() {
        let cases: [(&str, Vec<std::ops::Range<usize>>); 7] = [
            (r#"{"model":"gpt"}"#, vec![9..14]),
            (" {\n \"model\" :\t\"gpt\" , \"x\":1}", vec![14..19]),
            (
                r#"{"mod\u0065l":"a","y":{"model":"no"},"model":7}"#,
                vec![14..17, 45..46],
            ),
            (
                r#"{"model":"caf\u00e9","messages":[{"model":"no"}]}"#,
                vec![9..20],
            ),
            (r#"{"model":{"a":[1,"b"]}}"#, vec![9..22]),
            (r#"{"messages":[]}"#, vec![]),
            (
                r#"{"model":1,"model":2,"model":"c"}"#,
                vec![9..10, 19..20, 29..32],
            ),
        ];
        for (body, spans) in cases {
            let h = head(body).unwrap();
            assert_eq!(h.model_spans.as_slice(), spans, "{body}");
            // The splice at those places is the one that scans for them.
            let bytes = bytes::Bytes::copy_from_slice(body.as_bytes());
            for to in ["gpt", "other", "q\"uote"] {
                assert_eq!(
                    llmgw_core::body::replace_model_at(&bytes, h.model_spans.as_slice(), to),
                    llmgw_core::body::replace_model(&bytes, to),
                    "{body} -> {to}"
                );
            }
        }
        assert_eq!(
            head(r#"{"model":"caf\u00e9"}"#).unwrap().model.as_deref(),
            Some("café")
        );
    }

    #[test]
    fn a_model_a_tree_refuses_is_refused_with_the_trees_error() {
        let deep = |depth: usize| {
            format!(
                "{{\"model\":{}{},\"x\":1}}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        for bad in [
            r#"{"model":"\ud800"}"#.to_string(),
            r#"{"model":"a\ud800b","x":1}"#.to_string(),
            r#"{"model":1e400}"#.to_string(),
            r#"{"model":[1,-1e999]}"#.to_string(),
            "{\"model\":\"a\u{1}\"}".to_string(),
            deep(1000),
        ] {
            let tree = serde_json::from_str::<Value>(&bad).unwrap_err().to_string();
            assert_eq!(head(&bad), Err(HeadError::Syntax(tree)), "{bad}");
        }
        // At the depth limit: what the tree takes, the head takes; one
        // level more, both refuse (a `model` value is a level below the
        // body's object).
        let limit = (1..1000)
            .take_while(|&d| serde_json::from_str::<Value>(&deep(d)).is_ok())
            .last()
            .unwrap();
        assert!(limit > 100, "{limit}");
        assert_eq!(head(&deep(limit)).unwrap().model, None);
        let tree = serde_json::from_str::<Value>(&deep(limit + 1))
            .unwrap_err()
            .to_string();
        assert_eq!(head(&deep(limit + 1)), Err(HeadError::Syntax(tree)));
        let bad_utf8 = b"{\"model\":\"\xff\"}";
        assert!(matches!(Head::parse(bad_utf8), Err(HeadError::Syntax(_))));
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
