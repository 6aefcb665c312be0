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
#[cfg_attr(test, derive(Debug, PartialEq))]
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
    let r = match plain(raw) {
        Some(r) => r,
        None => serde_json::from_slice::<Raw>(raw).ok()?,
    };
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

/// [`Raw`] read by hand from a usage object of the plain shape every
/// provider sends: keys without escapes, values that are unsigned integers
/// or `null`, and the details members objects of the same. Anything else
/// (a string, a float, a nested array, an escape, a repeated counted key)
/// gives `None`, and the caller reads it with serde as before; so whatever
/// this returns is what serde returns for the same bytes. It spares serde's
/// generated visitor, about 3,000 instructions for OpenAI's usage object.
fn plain(raw: &[u8]) -> Option<Raw> {
    let mut p = Plain { b: raw, i: 0 };
    let mut r = Raw::default();
    // Counted members seen, one bit each: a repeated one is serde's error.
    let mut seen = 0u16;
    p.object(|p, key| {
        let (bit, slot, details): (u16, &mut Option<u64>, Option<&str>) = match key {
            b"prompt_tokens" => (1, &mut r.prompt_tokens, None),
            b"completion_tokens" => (1 << 1, &mut r.completion_tokens, None),
            b"prompt_tokens_details" => {
                (1 << 2, &mut r.prompt_tokens_details, Some("cached_tokens"))
            }
            b"input_tokens" => (1 << 3, &mut r.input_tokens, None),
            b"output_tokens" => (1 << 4, &mut r.output_tokens, None),
            b"input_tokens_details" => (1 << 5, &mut r.input_tokens_details, Some("cached_tokens")),
            b"completion_tokens_details" => (
                1 << 6,
                &mut r.completion_tokens_details,
                Some("reasoning_tokens"),
            ),
            b"output_tokens_details" => (
                1 << 7,
                &mut r.output_tokens_details,
                Some("reasoning_tokens"),
            ),
            b"cache_read_input_tokens" => (1 << 8, &mut r.cache_read_input_tokens, None),
            b"cache_creation_input_tokens" => (1 << 9, &mut r.cache_creation_input_tokens, None),
            // Not counted: any number or null is skipped.
            _ => {
                p.number_or_null()?;
                return Some(());
            }
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        *slot = match details {
            None => p.number_or_null()?,
            Some(name) => p.details(name)?,
        };
        Some(())
    })?;
    p.ws();
    (p.i == raw.len()).then_some(r)
}

/// The strict little reader behind [`plain`].
struct Plain<'a> {
    b: &'a [u8],
    i: usize,
}

impl Plain<'_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        // Compact JSON has no whitespace to skip.
        if self.b.get(self.i) != Some(&c) {
            self.ws();
            if self.b.get(self.i) != Some(&c) {
                return None;
            }
        }
        self.i += 1;
        Some(())
    }

    /// An object's members, each value read by `member` (given the key's
    /// bytes); keys must be ASCII from 0x20 on, without a backslash
    /// ([`key_len`]).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let start = self.i;
            let len = key_len(&self.b[start..])?;
            let key = &self.b[start..start + len];
            self.i = start + len + 1;
            self.eat(b':')?;
            member(self, key)?;
            self.ws();
            match self.b.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `null` (`None`) or an unsigned integer in JSON's form that fits a
    /// `u64`; anything else is `None` from the outer `Option`.
    #[inline]
    fn number_or_null(&mut self) -> Option<Option<u64>> {
        self.ws();
        let rest = self.b.get(self.i..)?;
        if rest.first() == Some(&b'n') {
            if !rest.starts_with(b"null") {
                return None;
            }
            self.i += 4;
            return Some(None);
        }
        let mut n = 0u64;
        let mut digits = 0;
        while let Some(d) = rest.get(digits).map(|c| c.wrapping_sub(b'0')) {
            if d > 9 {
                break;
            }
            // Nineteen digits always fit a u64; more are checked.
            n = if digits < 19 {
                n * 10 + u64::from(d)
            } else {
                n.checked_mul(10)?.checked_add(u64::from(d))?
            };
            digits += 1;
        }
        // JSON has no leading zeros; a fraction or exponent is a float.
        if digits == 0
            || (digits > 1 && rest[0] == b'0')
            || matches!(rest.get(digits), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        self.i += digits;
        Some(Some(n))
    }

    /// A details object (or `null`): its member `name`, others skipped.
    fn details(&mut self, name: &str) -> Option<Option<u64>> {
        self.ws();
        if self.b[self.i..].starts_with(b"null") {
            self.i += 4;
            return Some(None);
        }
        let mut found: Option<Option<u64>> = None;
        self.object(|p, key| {
            let n = p.number_or_null()?;
            if key == name.as_bytes() {
                if found.is_some() {
                    return None;
                }
                found = Some(n);
            }
            Some(())
        })?;
        Some(found.flatten())
    }
}

/// The length of an object key whose opening quote is behind `rest`: up
/// to its closing quote, if every byte before it is ASCII from 0x20 on
/// and not a backslash (`None` otherwise, and for a key that does not
/// end). Eight bytes at a time, as a key is usually two or three words;
/// a byte loop cost twice as much per key under callgrind.
fn key_len(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A set high bit where a byte of `w` is zero; exact for the lowest such
    // byte (a borrow only marks bytes above it).
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let mut n = 0;
    while let Some(chunk) = rest.get(n..n + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // Quote, backslash, a control byte (below 0x20, found as a
        // borrow from 0x20), or not ASCII.
        let stop = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | (w & HIGH);
        if stop != 0 {
            let at = n + (stop.trailing_zeros() / 8) as usize;
            return (rest[at] == b'"').then_some(at);
        }
        n += 8;
    }
    for (at, &c) in rest.iter().enumerate().skip(n) {
        match c {
            b'"' => return Some(at),
            b'\\' => return None,
            b' '..=0x7f => {}
            _ => return None,
        }
    }
    None
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
    fn the_plain_reading_is_serdes() {
        // Read by hand: the same as serde's reading.
        let plain_shapes = [
            r#"{"completion_tokens":4,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":5,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":2},"total_tokens":9}"#,
            r#"{"input_tokens":10,"input_tokens_details":{"cached_tokens":3},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":17}"#,
            r#" { "input_tokens" : 12 , "cache_creation_input_tokens":5,"cache_read_input_tokens":4,"output_tokens":9 } "#,
            r#"{"prompt_tokens":5,"prompt_tokens_details":null,"x":null}"#,
            r#"{}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":null},"input_tokens_details":{}}"#,
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":0}"#,
            r#"{"prompt_tokens":9999999999999999999,"completion_tokens":10000000000000000000}"#,
            r#"{"prompt_tokens":0,"completion_tokens":null,"x":1}"#,
            "{\"del\u{7f}\":1,\"prompt_tokens\":3}",
            " {\n\t\"prompt_tokens\" :\r 5 ,\"prompt_tokens_details\" : { \"cached_tokens\" : 1 } }\n",
        ];
        for raw in plain_shapes {
            let by_hand = plain(raw.as_bytes());
            assert!(by_hand.is_some(), "{raw}");
            assert_eq!(by_hand, serde_json::from_str::<Raw>(raw).ok(), "{raw}");
        }
        // Left to serde: whatever it would read otherwise, or refuse.
        for raw in [
            r#"{"prompt_tokens":5,"service_tier":"standard"}"#,
            r#"{"prompt_tokens":5,"extra":[1]}"#,
            r#"{"prompt_tokens":5,"server_tool_use":{"web_search_requests":0}}"#,
            r#"{"prompt\u005ftokens":5}"#,
            r#"{"prompt_tokens":05}"#,
            r#"{"prompt_tokens":5e0}"#,
            r#"{"prompt_tokens":5.0}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":18446744073709551616}"#,
            r#"{"prompt_tokens":99999999999999999999}"#,
            r#"{"prompt_tokens":nul}"#,
            r#"{"prompt_tokens":0,"x\u007f":1}"#,
            r#"{"prompt_tokens":nan}"#,
            "{\"ctl\u{1f}\":1}",
            r#"{"prompt_tokens":true}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}"#,
            r#"{"prompt_tokens_details":7}"#,
            r#"{"prompt_tokens":1}x"#,
            r#"{"prompt_tokens":1,}"#,
            r#"{"prompt_tokens":1"#,
            "{\"caf\u{e9}\":1}",
        ] {
            assert_eq!(plain(raw.as_bytes()), None, "{raw}");
        }
    }

    #[test]
    fn a_key_ends_at_its_quote_and_only_plain_bytes_come_before() {
        // What `key_len` must agree with, byte by byte.
        fn by_bytes(rest: &[u8]) -> Option<usize> {
            for (at, &c) in rest.iter().enumerate() {
                match c {
                    b'"' => return Some(at),
                    b'\\' | 0..=0x1f | 0x80..=0xff => return None,
                    _ => {}
                }
            }
            None
        }
        let specials = [
            b'"', b'\\', 0x00, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff, b'!', b'#',
        ];
        // Every special byte at every place of keys from 0 to 24 bytes
        // long, with and without a quote later, crossing the word edges.
        for len in 0..24 {
            for at in 0..len {
                for &special in &specials {
                    for tail in [&b""[..], b"\":1}", b"\""] {
                        let mut bytes = vec![b'k'; len];
                        bytes[at] = special;
                        bytes.extend_from_slice(tail);
                        assert_eq!(key_len(&bytes), by_bytes(&bytes), "{bytes:?}");
                    }
                }
            }
        }
        assert_eq!(key_len(b"prompt_tokens\":5"), Some(13));
        assert_eq!(key_len(b"completion_tokens_details\":{}"), Some(25));
        assert_eq!(key_len(b"\":1"), Some(0));
        assert_eq!(key_len(b"prompt\\u005ftokens\":5"), None);
        assert_eq!(key_len(b"caf\xc3\xa9\":1"), None);
        assert_eq!(key_len(b"unterminated"), None);
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
