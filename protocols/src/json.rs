//! Long answer texts written as JSON strings in one pass.
//!
//! serde_json escapes a string one byte at a time (about ten instructions a
//! byte), and a translated answer spends most of its encoding there: an
//! answer's text is the bulk of its bytes. [`Text`] serializes a long text
//! through [`escape`], which skips runs of plain bytes eight at a time, and
//! hands the result to serde_json as a [`RawValue`]; a short text takes
//! serde_json's own path. The output is byte for byte what serde_json
//! writes.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// Below this length a text goes through serde_json's own escaping: the
/// extra allocation and check of the raw path cost more than they save.
const LONG: usize = 128;

/// A text to be written as a JSON string (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Text<'a>(pub &'a str);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.len() < LONG {
            return serializer.serialize_str(self.0);
        }
        let mut quoted = String::with_capacity(self.0.len() + self.0.len() / 16 + 2);
        quoted.push('"');
        escape(&mut quoted, self.0);
        quoted.push('"');
        match RawValue::from_string(quoted) {
            Ok(raw) => raw.serialize(serializer),
            // Cannot happen (the escaping is complete), but if it did, the
            // slow path is still right.
            Err(_) => serializer.serialize_str(self.0),
        }
    }
}

/// Where [`escape`] writes: a `String` or a byte buffer.
pub trait Sink {
    /// Appends `s`.
    fn put(&mut self, s: &str);
}

impl Sink for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

/// Appends `s` to `out` escaped as the inside of a JSON string, the way
/// serde_json escapes it: `"`, `\` and the control characters, with the
/// short forms where JSON has them and `\u00xx` (lowercase) otherwise.
pub fn escape(out: &mut impl Sink, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        i += plain_run(&bytes[i..]);
        if i == bytes.len() {
            break;
        }
        out.put(&s[start..i]);
        let b = bytes[i];
        let mut code = [b'\\', b'u', b'0', b'0', 0, 0];
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                code[4] = HEX[usize::from(b >> 4)];
                code[5] = HEX[usize::from(b & 0xf)];
                // ASCII, so always valid.
                std::str::from_utf8(&code).unwrap_or_default()
            }
        };
        out.put(short);
        i += 1;
        start = i;
    }
    out.put(&s[start..]);
}

/// The number of leading bytes of `b` that need no escaping: eight at a
/// time while a word holds none of `"`, `\` or a control character, then
/// one at a time.
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let mut n = 0;
    for chunk in b.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let ctrl = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let s = w ^ (ONES * u64::from(b'\\'));
        let slash = s.wrapping_sub(ONES) & !s;
        if (ctrl | quote | slash) & HIGH != 0 {
            break;
        }
        n += 8;
    }
    n + b[n..].iter().take_while(|&&c| !needs_escape(c)).count()
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(s: &str) -> String {
        serde_json::to_string(&Text(s)).unwrap()
    }

    #[test]
    fn long_and_short_texts_match_serde_json() {
        let long =
            "a \"quoted\" word\\ with\ttabs,\nnew lines, \u{1} \u{1f} \u{7f} é 漢字 🦀 ".repeat(8);
        let cut = long.trim_end_matches(' ').trim_end_matches('🦀');
        for s in ["", "plain", "\"", "\u{0}", long.as_str(), cut] {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        assert!(long.len() >= LONG);
    }

    #[test]
    fn a_text_inside_a_value_round_trips() {
        let long = "x\"y\n".repeat(100);
        let ours =
            serde_json::to_value(std::collections::BTreeMap::from([("t", Text(&long))])).unwrap();
        assert_eq!(ours, serde_json::json!({ "t": long }));
    }

    proptest! {
        #[test]
        fn any_text_is_escaped_as_serde_json_escapes_it(s in "\\PC{0,400}|[\\x00-\\x7f]{0,300}") {
            let mut out = String::new();
            escape(&mut out, &s);
            let expected = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(format!("\"{out}\""), expected.clone());
            prop_assert_eq!(ours(&s), expected);
        }
    }
}
