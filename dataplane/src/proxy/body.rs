//! Byte-exact request body edits. The body sent upstream is the client's
//! body with only the value of the top-level `model` replaced (and, for
//! OpenAI chat streams whose provider asks for it, `stream_options` told to
//! include usage). Nothing is re-serialised, so key order, spacing and
//! number formats reach the upstream exactly as the client wrote them.

use bytes::Bytes;

/// Where a top-level member's value sits in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Skips a string and returns its raw contents (without quotes).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        // Most of a response is string contents: jump from one quote or
        // backslash to the next.
        while let Some(off) = find_quote_or_backslash(self.b.get(self.i..)?) {
            self.i += off;
            if self.b[self.i] == b'"' {
                let s = &self.b[start..self.i];
                self.i += 1;
                return Some(s);
            }
            self.i += 2;
        }
        None
    }

    /// Skips any JSON value, returning its span.
    fn value(&mut self) -> Option<Span> {
        self.ws();
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                while self.i < self.b.len() {
                    match self.b[self.i] {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(Span { start, end: self.i });
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                return None;
            }
            _ => {
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                if self.i == start {
                    return None;
                }
            }
        }
        Some(Span { start, end: self.i })
    }
}

/// The position of the first `"` or `\\` in `b` (SIMD, through memchr).
fn find_quote_or_backslash(b: &[u8]) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', b)
}

/// Whether a raw JSON string (quotes included) is `name`. Keys without an
/// escape compare as bytes; only an escaped key is decoded.
fn key_is(quoted: &[u8], name: &str) -> bool {
    let inner = &quoted[1..quoted.len().saturating_sub(1)];
    if !inner.contains(&b'\\') {
        return inner == name.as_bytes();
    }
    serde_json::from_slice::<String>(quoted).is_ok_and(|k| k == name)
}

/// One top-level member: its raw key (quotes included) and value span.
type Member<'b> = (&'b [u8], Span);

/// The members of the top-level object, and the position of the closing
/// brace.
fn members(body: &[u8]) -> Option<(Vec<Member<'_>>, usize)> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    s.eat(b'{')?;
    let mut out = Vec::new();
    s.ws();
    if s.peek()? == b'}' {
        return Some((out, s.i));
    }
    loop {
        s.ws();
        let key_start = s.i;
        s.string()?;
        let key = &body[key_start..s.i];
        s.ws();
        s.eat(b':')?;
        let span = s.value()?;
        out.push((key, span));
        s.ws();
        match s.peek()? {
            b',' => s.i += 1,
            b'}' => return Some((out, s.i)),
            _ => return None,
        }
    }
}

/// The raw bytes of the top-level member `name` (the last one, as a JSON
/// parser keeps), without parsing anything else. `None` when the body is
/// not an object or has no such member.
pub fn top_level<'b>(body: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let (members, _) = members(body)?;
    members
        .iter()
        .rev()
        .find(|(k, _)| key_is(k, name))
        .map(|(_, s)| &body[s.start..s.end])
}

/// Replaces the value of every top-level `model` member with `model`.
/// Returns `None` when the body is not a JSON object with a `model`.
pub fn replace_model(body: &[u8], model: &str) -> Option<Bytes> {
    let (members, _) = members(body)?;
    let spans: Vec<Span> = members
        .iter()
        .filter(|(k, _)| key_is(k, "model"))
        .map(|(_, s)| *s)
        .collect();
    if spans.is_empty() {
        return None;
    }
    let value = serde_json::to_string(model).ok()?;
    let mut out = Vec::with_capacity(body.len() + value.len());
    let mut at = 0;
    for span in spans {
        out.extend_from_slice(&body[at..span.start]);
        out.extend_from_slice(value.as_bytes());
        at = span.end;
    }
    out.extend_from_slice(&body[at..]);
    Some(Bytes::from(out))
}

/// Makes an OpenAI chat request ask for usage in its stream. An existing
/// `stream_options` object gets `include_usage: true` merged in (that one
/// member is re-serialised); otherwise the member is appended. Returns
/// `None` if the body cannot be edited.
pub fn request_stream_usage(body: &[u8]) -> Option<Bytes> {
    let (members, close) = members(body)?;
    let existing = members
        .iter()
        .rev()
        .find(|(k, _)| key_is(k, "stream_options"))
        .map(|(_, s)| *s);
    let mut out = Vec::with_capacity(body.len() + 48);
    match existing {
        Some(span) => {
            let mut v: serde_json::Value =
                serde_json::from_slice(&body[span.start..span.end]).ok()?;
            match &mut v {
                serde_json::Value::Object(o) => {
                    o.insert("include_usage".into(), serde_json::Value::Bool(true));
                }
                serde_json::Value::Null => {
                    v = serde_json::json!({"include_usage": true});
                }
                _ => return None,
            }
            out.extend_from_slice(&body[..span.start]);
            out.extend_from_slice(serde_json::to_string(&v).ok()?.as_bytes());
            out.extend_from_slice(&body[span.end..]);
        }
        None => {
            out.extend_from_slice(&body[..close]);
            if !members.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
            out.extend_from_slice(&body[close..]);
        }
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_quote_or_backslash_at_any_position() {
        for len in 0..40 {
            for pos in 0..=len {
                for c in [b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    // Bytes next to the sought ones that the bit trick could
                    // confuse: the character codes one above each.
                    for (i, x) in b.iter_mut().enumerate() {
                        if i % 3 == 0 {
                            *x = b'#';
                        } else if i % 5 == 0 {
                            *x = b']';
                        }
                    }
                    let want = (pos < len).then_some(pos);
                    if pos < len {
                        b[pos] = c;
                        // A later one must not be reported first.
                        if pos + 1 < len {
                            b[pos + 1] = b'"';
                        }
                    }
                    assert_eq!(find_quote_or_backslash(&b), want, "{len} {pos} {c}");
                }
            }
        }
        assert_eq!(find_quote_or_backslash("é\"".as_bytes()), Some(2));
        assert_eq!(find_quote_or_backslash(&[0xff, 0x80, 0x22]), Some(2));
    }

    #[test]
    fn only_the_model_value_changes() {
        let body = br#"{ "messages":[{"role":"user","content":"model \"x\" {}"}],
  "model" :  "alias",  "temperature":0.70, "n":1e0 }"#;
        let out = replace_model(body, "gpt-4o/2024:08").unwrap();
        let expected = br#"{ "messages":[{"role":"user","content":"model \"x\" {}"}],
  "model" :  "gpt-4o/2024:08",  "temperature":0.70, "n":1e0 }"#;
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn nested_model_keys_are_left_alone() {
        let body = br#"{"metadata":{"model":"keep"},"model":"a"}"#;
        assert_eq!(
            &replace_model(body, "b").unwrap()[..],
            br#"{"metadata":{"model":"keep"},"model":"b"}"#
        );
        let escaped = br#"{"mod\u0065l":"a"}"#;
        assert_eq!(
            &replace_model(escaped, "b").unwrap()[..],
            br#"{"mod\u0065l":"b"}"#
        );
        assert!(replace_model(br#"{"x":1}"#, "b").is_none());
        assert!(replace_model(br#"[1]"#, "b").is_none());
        assert!(replace_model(br#"{"model":"a""#, "b").is_none());
    }

    #[test]
    fn top_level_members_are_found_without_parsing_the_rest() {
        let body = br#"{"choices":[{"usage":{"x":1}}], "usage" : {"prompt_tokens":3} ,"z":"}"}"#;
        assert_eq!(top_level(body, "usage").unwrap(), br#"{"prompt_tokens":3}"#);
        assert_eq!(
            top_level(br#"{"usage":1,"usage":2}"#, "usage").unwrap(),
            b"2"
        );
        assert_eq!(
            top_level(br#"{"us\u0061ge":null}"#, "usage").unwrap(),
            b"null"
        );
        assert!(top_level(br#"{"choices":[]}"#, "usage").is_none());
        assert!(top_level(br#"[{"usage":1}]"#, "usage").is_none());
    }

    #[test]
    fn model_names_are_escaped() {
        let out = replace_model(br#"{"model":"a"}"#, "we\"ird").unwrap();
        assert_eq!(&out[..], br#"{"model":"we\"ird"}"#);
    }

    #[test]
    fn stream_usage_is_appended_or_merged() {
        let out = request_stream_usage(br#"{"model":"a","stream":true}"#).unwrap();
        assert_eq!(
            &out[..],
            br#"{"model":"a","stream":true,"stream_options":{"include_usage":true}}"#
        );
        let out = request_stream_usage(br#"{"stream_options":{"x":1},"model":"a"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["x"], 1);
        let out = request_stream_usage(b"{\"model\":\"a\" }\n").unwrap();
        assert_eq!(
            &out[..],
            b"{\"model\":\"a\" ,\"stream_options\":{\"include_usage\":true}}\n"
        );
    }
}
