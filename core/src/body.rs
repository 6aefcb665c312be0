//! Byte-exact request body edits. The body sent upstream is the client's
//! body with only the value of the top-level `model` replaced (and, for
//! OpenAI chat streams whose provider asks for it, `stream_options` told to
//! include usage). Nothing is re-serialised, so key order, spacing and
//! number formats reach the upstream exactly as the client wrote them.
//!
//! The documented exception, off unless configured: a provider's or
//! target's default parameters are appended as top-level members when the
//! body lacks them ([`fill_missing`]); every byte already there stays.
//!
//! The same scanning reads a response body's top-level members without
//! parsing the rest: [`top_levels`] from the start, [`top_levels_from_end`]
//! from the end, where a reply's counts sit.

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
    #[inline]
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        // Most of a body is string contents, and long text holds far more
        // escapes (every line break) than quotes: jump from one quote to
        // the next (SIMD, through memchr) and tell an escaped one by the
        // backslashes before it (an odd number escapes it). Each backslash
        // is counted for one quote at most, so the scan stays linear.
        loop {
            let q = self.i + end_quote(self.b.get(self.i..)?)?;
            self.i = q + 1;
            let backslashes = self.b[start..q]
                .iter()
                .rev()
                .take_while(|&&c| c == b'\\')
                .count();
            if backslashes.is_multiple_of(2) {
                return Some(&self.b[start..q]);
            }
        }
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

/// The position of the first `"` in `b` (SIMD, through memchr).
fn end_quote(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'"', b)
}

/// Whether a raw JSON string (quotes included) is `name`. Keys without an
/// escape compare as bytes; only an escaped key is decoded.
fn key_is(quoted: &[u8], name: &str) -> bool {
    Key::of(quoted).is(name)
}

/// A member's key, looked at once for any number of names: its bytes, or
/// for a key with an escape its decoded text (`None` if it is not valid).
enum Key<'b> {
    Plain(&'b [u8]),
    Escaped(Option<String>),
}

impl<'b> Key<'b> {
    fn of(quoted: &'b [u8]) -> Self {
        let inner = &quoted[1..quoted.len().saturating_sub(1)];
        if inner.contains(&b'\\') {
            Key::Escaped(serde_json::from_slice::<String>(quoted).ok())
        } else {
            Key::Plain(inner)
        }
    }

    fn is(&self, name: &str) -> bool {
        match self {
            Key::Plain(k) => *k == name.as_bytes(),
            Key::Escaped(k) => k.as_deref() == Some(name),
        }
    }
}

/// One top-level member: its raw key (quotes included) and value span.
type Member<'b> = (&'b [u8], Span);

/// Calls `each` with every member of the top-level object, in order, and
/// returns the position of the closing brace; `None` when the body is not
/// an object. Nothing is collected: a caller keeps what it looks for.
fn for_each_member<'b>(body: &'b [u8], mut each: impl FnMut(Member<'b>)) -> Option<usize> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return Some(s.i);
    }
    loop {
        s.ws();
        let key_start = s.i;
        s.string()?;
        let key = &body[key_start..s.i];
        s.ws();
        s.eat(b':')?;
        let span = s.value()?;
        each((key, span));
        s.ws();
        match s.peek()? {
            b',' => s.i += 1,
            b'}' => return Some(s.i),
            _ => return None,
        }
    }
}

/// The members of the top-level object, and the position of the closing
/// brace.
fn members(body: &[u8]) -> Option<(Vec<Member<'_>>, usize)> {
    let mut out = Vec::new();
    let close = for_each_member(body, |m| out.push(m))?;
    Some((out, close))
}

/// The raw bytes of the top-level member `name` (the last one, as a JSON
/// parser keeps), without parsing anything else. `None` when the body is
/// not an object or has no such member.
pub fn top_level<'b>(body: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let [found] = top_levels(body, [name])?;
    found
}

/// The raw bytes of each top-level member of `names` (the last one of a
/// name), found in one pass over the body. `None` when the body is not an
/// object.
pub fn top_levels<'b, const N: usize>(
    body: &'b [u8],
    names: [&str; N],
) -> Option<[Option<&'b [u8]>; N]> {
    let mut out = [None; N];
    for_each_member(body, |(k, s)| {
        let k = Key::of(k);
        for (slot, name) in out.iter_mut().zip(names) {
            if k.is(name) {
                *slot = Some(&body[s.start..s.end]);
            }
        }
    })?;
    Some(out)
}

/// What [`top_levels`] finds, read from the end of the body backwards and
/// stopping as soon as every name is found. A reply's counts sit at its
/// end (OpenAI's `usage` after `choices`, Anthropic's after `content`), so
/// the answer's text before them is not read at all: for a short chat
/// reply that is most of the scan.
///
/// For a well-formed object the result is `top_levels`' (the last member of
/// a name is the first met from the end). The members before the last one
/// found are not read: a body whose tail is well-formed gives what it
/// holds even if what comes before is not JSON, which a reader of usage can
/// accept (the upstream did count those tokens). So, unlike `top_levels`,
/// two objects one after the other give the second's members, and a reply
/// framed as server-sent events gives its last event's; anything but
/// whitespace after the closing brace gives `None`. `None` when the tail is
/// not the end of an object, or when, with a name not found, the body is
/// not an object from its first byte. Strings are not checked for escapes
/// or UTF-8 here: the caller parses the spans it keeps.
pub fn top_levels_from_end<'b, const N: usize>(
    body: &'b [u8],
    names: [&str; N],
) -> Option<[Option<&'b [u8]>; N]> {
    let mut out = [None; N];
    let mut found = 0;
    let mut s = BackScanner {
        b: body,
        i: body.len(),
    };
    s.ws();
    s.eat(b'}')?;
    s.ws();
    if s.last()? != b'{' {
        loop {
            s.ws();
            let end = s.i;
            s.value()?;
            let value = &body[s.i..end];
            s.ws();
            s.eat(b':')?;
            s.ws();
            let key_end = s.i;
            s.string()?;
            let key = Key::of(&body[s.i..key_end]);
            for (slot, name) in out.iter_mut().zip(names) {
                if slot.is_none() && key.is(name) {
                    *slot = Some(value);
                    found += 1;
                }
            }
            if found == N {
                return Some(out);
            }
            s.ws();
            match s.last()? {
                b',' => s.i -= 1,
                b'{' => break,
                _ => return None,
            }
        }
    }
    // At the opening brace with a name missing: the whole body was read,
    // so it must be an object from its first byte, as `top_levels` asks.
    s.i -= 1;
    s.ws();
    (s.i == 0).then_some(out)
}

/// A scanner that moves from the end of the body towards its start; `i` is
/// the end (exclusive) of what is left to read.
struct BackScanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl BackScanner<'_> {
    fn ws(&mut self) {
        while self.i > 0 && matches!(self.b[self.i - 1], b' ' | b'\t' | b'\n' | b'\r') {
            self.i -= 1;
        }
    }

    fn last(&self) -> Option<u8> {
        self.b.get(self.i.checked_sub(1)?).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.last()? == c).then(|| self.i -= 1)
    }

    /// Skips a string backwards, from its closing quote to its opening one:
    /// the nearest quote before that is not escaped (an even number of
    /// backslashes before it). Each backslash is counted for one quote at
    /// most, so the scan stays linear.
    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            let q = memchr::memrchr(b'"', &self.b[..self.i])?;
            self.i = q;
            let backslashes = self.b[..q]
                .iter()
                .rev()
                .take_while(|&&c| c == b'\\')
                .count();
            if backslashes.is_multiple_of(2) {
                return Some(());
            }
        }
    }

    /// Skips any JSON value backwards, leaving `i` at its first byte.
    fn value(&mut self) -> Option<()> {
        match self.last()? {
            b'"' => self.string(),
            b'}' | b']' => {
                let mut depth = 0usize;
                while let Some(c) = self.last() {
                    match c {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'}' | b']' => depth += 1,
                        b'{' | b'[' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.i -= 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i -= 1;
                }
                None
            }
            _ => {
                let end = self.i;
                // Up to what may stand before a scalar, or what cannot be
                // in one (the end of a string, an object or an array).
                while self.i > 0
                    && !matches!(
                        self.b[self.i - 1],
                        b',' | b':'
                            | b'{'
                            | b'['
                            | b' '
                            | b'\t'
                            | b'\n'
                            | b'\r'
                            | b'"'
                            | b'}'
                            | b']'
                    )
                {
                    self.i -= 1;
                }
                (self.i != end).then_some(())
            }
        }
    }
}

/// Replaces the value of every top-level `model` member with `model`.
/// Returns `None` when the body is not a JSON object with a `model`.
///
/// When every `model` already holds exactly the bytes the new value would
/// be written as (a model whose upstream model is its own name, the
/// default), the body is returned as it is, a new handle on the same
/// buffer: a long-context body is not copied to change nothing. (A name
/// that JSON must escape is written again even then: the same bytes, in a
/// copy.)
pub fn replace_model(body: &Bytes, model: &str) -> Option<Bytes> {
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    for_each_member(body, |(k, s)| {
        if key_is(k, "model") {
            spans.push(s.start..s.end);
        }
    })?;
    replace_model_at(body, &spans, model)
}

/// [`replace_model`] where the body's first pass already found the
/// top-level `model` values (`spans`, in order, as byte ranges of
/// `body`): the body is not scanned again. `None` when there are none, or
/// when a span is not within the body or the spans overlap or are out of
/// order.
pub fn replace_model_at(
    body: &Bytes,
    spans: &[std::ops::Range<usize>],
    model: &str,
) -> Option<Bytes> {
    if spans.is_empty() {
        return None;
    }
    // A name that JSON writes as it is (no quote, backslash or control
    // character) is compared in place; only a change is written out.
    let plain = !model.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20);
    let mut same = plain;
    for s in spans {
        let held = body.get(s.clone())?;
        same &= held.len() == model.len() + 2
            && held.first() == Some(&b'"')
            && held.last() == Some(&b'"')
            && &held[1..held.len() - 1] == model.as_bytes();
    }
    if same {
        return Some(body.clone());
    }
    let value = serde_json::to_string(model).ok()?;
    let mut out = Vec::with_capacity(body.len() + value.len());
    let mut at = 0;
    for span in spans {
        out.extend_from_slice(body.get(at..span.start)?);
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
    let (top, close) = members(body)?;
    let existing = top
        .iter()
        .rev()
        .find(|(k, _)| key_is(k, "stream_options"))
        .map(|(_, s)| *s);
    let mut out = Vec::with_capacity(body.len() + 48);
    match existing {
        Some(span) => {
            // Spliced, not re-serialized: every other byte of the client's
            // `stream_options` stays as it was (a number re-printed by
            // serde_json may change).
            let inner = &body[span.start..span.end];
            out.extend_from_slice(&body[..span.start]);
            if inner == b"null" {
                out.extend_from_slice(br#"{"include_usage":true}"#);
            } else {
                let (options, close) = members(inner)?;
                let mut at = 0;
                for (_, v) in options.iter().filter(|(k, _)| key_is(k, "include_usage")) {
                    out.extend_from_slice(&inner[at..v.start]);
                    out.extend_from_slice(b"true");
                    at = v.end;
                }
                if at == 0 {
                    out.extend_from_slice(&inner[..close]);
                    if !options.is_empty() {
                        out.push(b',');
                    }
                    out.extend_from_slice(br#""include_usage":true"#);
                    at = close;
                }
                out.extend_from_slice(&inner[at..]);
            }
            out.extend_from_slice(&body[span.end..]);
        }
        None => {
            out.extend_from_slice(&body[..close]);
            if !top.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
            out.extend_from_slice(&body[close..]);
        }
    }
    Some(Bytes::from(out))
}

/// Appends each default `(name, JSON value)` whose name is not a
/// top-level member of the body, before the closing brace, without
/// touching any other byte. With nothing to add the body is returned as it
/// is (a new handle on the same buffer). `None` when the body is not a
/// JSON object.
pub fn fill_missing(body: &Bytes, defaults: &[(String, Bytes)]) -> Option<Bytes> {
    if defaults.is_empty() {
        return Some(body.clone());
    }
    let mut present = vec![false; defaults.len()];
    let mut any_member = false;
    let close = for_each_member(body, |(k, _)| {
        any_member = true;
        let k = Key::of(k);
        for (seen, (name, _)) in present.iter_mut().zip(defaults) {
            if !*seen && k.is(name) {
                *seen = true;
            }
        }
    })?;
    if present.iter().all(|p| *p) {
        return Some(body.clone());
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(&body[..close]);
    for ((name, value), seen) in defaults.iter().zip(present) {
        if seen {
            continue;
        }
        if any_member {
            out.push(b',');
        }
        any_member = true;
        out.extend_from_slice(serde_json::to_string(name).ok()?.as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&body[close..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_missing_appends_only_what_is_absent() {
        let d = |pairs: &[(&str, &str)]| -> Vec<(String, Bytes)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), Bytes::from(v.to_string())))
                .collect()
        };
        let body = Bytes::from_static(b"{\"model\": \"m\",  \"temperature\" : 1e0 }\n");
        let t = d(&[("temperature", "0.2")]);
        let same = fill_missing(&body, &t).unwrap();
        assert_eq!(same, body);
        assert_eq!(same.as_ptr(), body.as_ptr(), "not copied");
        let added = fill_missing(&body, &d(&[("top_p", "0.9"), ("temperature", "0.2")])).unwrap();
        assert_eq!(
            &added[..],
            b"{\"model\": \"m\",  \"temperature\" : 1e0 ,\"top_p\":0.9}\n"
        );
        assert_eq!(
            &fill_missing(&Bytes::from_static(b"{ }"), &t).unwrap()[..],
            b"{ \"temperature\":0.2}"
        );
        // An escaped key is the same key.
        let esc = Bytes::from_static(br#"{"t\u0065mperature":1}"#);
        assert_eq!(fill_missing(&esc, &t).unwrap(), esc);
        assert!(fill_missing(&Bytes::from_static(b"[1]"), &t).is_none());
        assert_eq!(
            fill_missing(&Bytes::from_static(b"[1]"), &[]).unwrap(),
            &b"[1]"[..]
        );
    }

    #[test]
    fn a_string_ends_at_the_first_quote_no_backslash_escapes() {
        let cases: [(&[u8], Option<&[u8]>); 9] = [
            (br#""""#, Some(b"")),
            (br#""abc" x"#, Some(b"abc")),
            (br#""a\"b" x"#, Some(br#"a\"b"#)),
            (br#""a\\" x"#, Some(br#"a\\"#)),
            (br#""a\\\"" x"#, Some(br#"a\\\""#)),
            (br#""\\\\" x"#, Some(br#"\\\\"#)),
            (br#""line\nline\t\u0022" x"#, Some(br#"line\nline\t\u0022"#)),
            (br#""never closed\""#, None),
            (br#""a\"#, None),
        ];
        for (input, want) in cases {
            let mut s = Scanner { b: input, i: 0 };
            assert_eq!(s.string(), want, "{}", String::from_utf8_lossy(input));
            if let Some(w) = want {
                assert_eq!(s.i, w.len() + 2);
            }
        }
        // A quote at any position after any number of backslashes.
        for run in 0..6 {
            for pad in 0..40 {
                let mut b = vec![b'"'];
                b.extend(std::iter::repeat_n(b'a', pad));
                b.extend(std::iter::repeat_n(b'\\', run));
                b.extend_from_slice(b"\"tail\" ");
                let mut s = Scanner { b: &b, i: 0 };
                let got = s.string().unwrap();
                let want = if run.is_multiple_of(2) {
                    1 + pad + run
                } else {
                    b.len() - 2
                };
                assert_eq!(got, &b[1..want], "{run} {pad}");
            }
        }
        assert_eq!(end_quote("é\"".as_bytes()), Some(2));
        assert_eq!(end_quote(&[0xff, 0x80, 0x22]), Some(2));
    }

    /// `replace_model` of a byte string.
    fn replace(body: &[u8], model: &str) -> Option<Bytes> {
        replace_model(&Bytes::copy_from_slice(body), model)
    }

    #[test]
    fn only_the_model_value_changes() {
        let body = br#"{ "messages":[{"role":"user","content":"model \"x\" {}"}],
  "model" :  "alias",  "temperature":0.70, "n":1e0 }"#;
        let out = replace(body, "gpt-4o/2024:08").unwrap();
        let expected = br#"{ "messages":[{"role":"user","content":"model \"x\" {}"}],
  "model" :  "gpt-4o/2024:08",  "temperature":0.70, "n":1e0 }"#;
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn nested_model_keys_are_left_alone() {
        let body = br#"{"metadata":{"model":"keep"},"model":"a"}"#;
        assert_eq!(
            &replace(body, "b").unwrap()[..],
            br#"{"metadata":{"model":"keep"},"model":"b"}"#
        );
        let escaped = br#"{"mod\u0065l":"a"}"#;
        assert_eq!(
            &replace(escaped, "b").unwrap()[..],
            br#"{"mod\u0065l":"b"}"#
        );
        assert!(replace(br#"{"x":1}"#, "b").is_none());
        assert!(replace(br#"[1]"#, "b").is_none());
        assert!(replace(br#"{"model":"a""#, "b").is_none());
    }

    #[test]
    fn a_model_that_does_not_change_is_not_copied() {
        let body = Bytes::from_static(br#"{"messages":[],"model":"bench","model" : "bench"}"#);
        let out = replace_model(&body, "bench").unwrap();
        assert_eq!(out, body);
        // The same buffer, not a copy of it.
        assert_eq!(out.as_ptr(), body.as_ptr());
        // Written differently (an escape), or one of two differs: rewritten.
        let escaped = Bytes::from_static(br#"{"model":"b\u0065nch"}"#);
        let out = replace_model(&escaped, "bench").unwrap();
        assert_eq!(&out[..], br#"{"model":"bench"}"#);
        let two = Bytes::from_static(br#"{"model":"bench","model":"other"}"#);
        let out = replace_model(&two, "bench").unwrap();
        assert_eq!(&out[..], br#"{"model":"bench","model":"bench"}"#);
        assert_ne!(out.as_ptr(), two.as_ptr());
    }

    #[test]
    // One span, and a backwards one, are what is tested.
    #[allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]
    fn the_model_is_replaced_where_it_was_found() {
        let body = Bytes::from_static(br#"{"model":"a","x":1,"model":"b"}"#);
        let out = replace_model_at(&body, &[9..12, 27..30], "q\"").unwrap();
        assert_eq!(&out[..], br#"{"model":"q\"","x":1,"model":"q\""}"#);
        // Unchanged: the same buffer.
        let same = replace_model_at(&body, &[9..12], "a").unwrap();
        assert_eq!(same.as_ptr(), body.as_ptr());
        // None found, a span past the end, or spans out of order: nothing
        // is spliced (and nothing panics).
        assert!(replace_model_at(&body, &[], "a").is_none());
        assert!(replace_model_at(&body, &[25..40], "z").is_none());
        assert!(replace_model_at(&body, &[27..30, 9..12], "z").is_none());
        assert!(replace_model_at(&body, &[12..9], "z").is_none());
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
        // Several in one pass, each as top_level finds it.
        let [usage, stop, missing] = top_levels(
            br#"{"stop_reason":"a","usage":1,"content":[{"stop_reason":"x"}],"stop_reason":"b"}"#,
            ["usage", "stop_reason", "status"],
        )
        .unwrap();
        assert_eq!(
            (usage, stop, missing),
            (Some(&b"1"[..]), Some(&br#""b""#[..]), None)
        );
        assert!(top_levels(b"[]", ["usage"]).is_none());
    }

    #[test]
    fn members_are_found_from_the_end_without_reading_the_text_before() {
        // OpenAI's order: the counts after the answer's text.
        let body = br#"{"id":"x","choices":[{"message":{"content":"a \"usage\": {} \\"}}],"usage" : {"prompt_tokens":3,"d":{"e":[1,"}"]}} ,"service_tier":"default"}
"#;
        assert_eq!(
            top_levels_from_end(body, ["usage"]).unwrap(),
            [Some(&br#"{"prompt_tokens":3,"d":{"e":[1,"}"]}}"#[..])]
        );
        // The last of a name; an escaped key; a name that is not there
        // reads the whole body and finds nothing.
        assert_eq!(
            top_levels_from_end(br#"{"usage":1,"usage":2}"#, ["usage"]).unwrap(),
            [Some(&b"2"[..])]
        );
        assert_eq!(
            top_levels_from_end(br#"{"us\u0061ge":null}"#, ["usage"]).unwrap(),
            [Some(&b"null"[..])]
        );
        assert_eq!(top_levels_from_end(body, ["status"]).unwrap(), [None]);
        assert_eq!(top_levels_from_end(b" { } ", ["usage"]).unwrap(), [None]);
        // The stop: what comes before the last name found is not read, so
        // a broken front is seen only when the scan reaches it.
        let broken_front = br#"{"id":"x" "choices":[],"usage":{"prompt_tokens":1}}"#;
        assert_eq!(
            top_levels_from_end(broken_front, ["usage"]).unwrap(),
            [Some(&br#"{"prompt_tokens":1}"#[..])]
        );
        assert!(top_levels_from_end(broken_front, ["usage", "status"]).is_none());
        assert!(top_levels(broken_front, ["usage"]).is_none());
        // Objects one after the other, or events: the last one's; anything
        // after the closing brace: nothing.
        assert_eq!(
            top_levels_from_end(b"{\"usage\":1}\n{\"usage\":2}", ["usage"]).unwrap(),
            [Some(&b"2"[..])]
        );
        assert_eq!(
            top_levels_from_end(b"data: {\"usage\":3}\n\n", ["usage"]).unwrap(),
            [Some(&b"3"[..])]
        );
        assert!(top_levels_from_end(b"{\"usage\":1} x", ["usage"]).is_none());
        // A scalar ends where a string, an object or an array does.
        assert!(top_levels_from_end(br#"{"a":"x"1}"#, ["usage"]).is_none());
        assert!(top_levels_from_end(br#"{"usage":{},"b":"x"1}"#, ["usage"]).is_none());
        // Not the end of an object, or not an object from its first byte.
        for bad in [
            &br#"[{"usage":1}]"#[..],
            br#"{"usage":1"#,
            br#"x{"usage":1}"#,
            br#"{"usage":}"#,
            br#"{:1}"#,
            br#"}"#,
            b"",
        ] {
            assert!(
                top_levels_from_end(bad, ["usage", "status"]).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn model_names_are_escaped() {
        let out = replace(br#"{"model":"a"}"#, "we\"ird").unwrap();
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

/// Property tests: the scanner and the edits checked against `serde_json`
/// on generated JSON objects (any key order, duplicate keys, escaped keys,
/// any whitespace, any string) and on mutations of them. The scanner runs
/// only on bodies `serde_json` accepted (`head::Head::parse` comes first),
/// so on those it must agree with `serde_json` exactly; on anything else it
/// must not panic, and must not call a JSON value that is not an object one.
///
/// CI runs proptest's default 256 cases per property (a few seconds). A
/// longer run: `PROPTEST_CASES=100000 cargo test -p llmgw-dataplane --lib
/// proxy::body`.
#[cfg(test)]
mod props {
    use std::fmt;

    use proptest::prelude::*;
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde::Deserialize;
    use serde_json::Value;

    use super::*;

    /// The top-level members of an object in order, duplicates kept.
    #[derive(Debug, Clone, PartialEq)]
    struct Members(Vec<(String, Value)>);

    impl<'de> Deserialize<'de> for Members {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members, A::Error> {
                    let mut out = Vec::new();
                    while let Some(kv) = m.next_entry::<String, Value>()? {
                        out.push(kv);
                    }
                    Ok(Members(out))
                }
            }
            d.deserialize_map(V)
        }
    }

    /// What `serde_json` makes of a body.
    enum Verdict {
        Object(Members),
        NotAnObject,
        Invalid,
    }

    fn verdict(body: &[u8]) -> Verdict {
        match serde_json::from_slice::<Members>(body) {
            Ok(m) => Verdict::Object(m),
            Err(e) if e.classify() == serde_json::error::Category::Data => Verdict::NotAnObject,
            Err(_) => Verdict::Invalid,
        }
    }

    /// A JSON value as written, with the freedom JSON allows in writing it.
    #[derive(Debug, Clone)]
    enum J {
        Lit(&'static str),
        Num(String),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    /// How to write: whitespace between tokens and whether strings are
    /// written with every character `\u`-escaped, both taken in turn.
    #[derive(Debug, Clone)]
    struct Style {
        ws: Vec<u8>,
        escape: Vec<bool>,
        n: usize,
    }

    impl Style {
        fn space(&mut self, out: &mut Vec<u8>) {
            const WS: [&str; 6] = ["", "", " ", "\n", "\t ", "\r\n  "];
            let w = self
                .ws
                .get(self.n % self.ws.len().max(1))
                .copied()
                .unwrap_or(0);
            self.n += 1;
            out.extend_from_slice(WS[w as usize % WS.len()].as_bytes());
        }

        fn string(&mut self, s: &str, out: &mut Vec<u8>) {
            let escape = !self.escape.is_empty() && self.escape[self.n % self.escape.len()];
            self.n += 1;
            if !escape {
                out.extend_from_slice(serde_json::to_string(s).unwrap().as_bytes());
                return;
            }
            out.push(b'"');
            let mut units = [0u16; 2];
            for c in s.chars() {
                for u in c.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
                }
            }
            out.push(b'"');
        }

        fn write(&mut self, j: &J, out: &mut Vec<u8>) {
            self.space(out);
            match j {
                J::Lit(s) => out.extend_from_slice(s.as_bytes()),
                J::Num(s) => out.extend_from_slice(s.as_bytes()),
                J::Str(s) => self.string(s, out),
                J::Arr(items) => {
                    out.push(b'[');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            self.space(out);
                            out.push(b',');
                        }
                        self.write(v, out);
                    }
                    self.space(out);
                    out.push(b']');
                }
                J::Obj(members) => {
                    out.push(b'{');
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            self.space(out);
                            out.push(b',');
                        }
                        self.space(out);
                        self.string(k, out);
                        self.space(out);
                        out.push(b':');
                        self.write(v, out);
                    }
                    self.space(out);
                    out.push(b'}');
                }
            }
            self.space(out);
        }
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => Just("model".to_string()),
            1 => Just("stream_options".to_string()),
            1 => Just("usage".to_string()),
            1 => Just("Model".to_string()),
            1 => Just("model ".to_string()),
            2 => "[a-z_]{0,8}",
            1 => any::<String>(),
        ]
    }

    fn json() -> impl Strategy<Value = J> {
        let leaf = prop_oneof![
            Just(J::Lit("null")),
            Just(J::Lit("true")),
            Just(J::Lit("false")),
            "-?(0|[1-9][0-9]{0,12})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,2})?".prop_map(J::Num),
            any::<String>().prop_map(J::Str),
            "[\"\\\\{}\\[\\]:, a-z]{0,12}".prop_map(J::Str),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
                prop::collection::vec((key(), inner), 0..6).prop_map(J::Obj),
            ]
        })
    }

    /// A written top-level object.
    fn object() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec((key(), json()), 0..8),
            prop::collection::vec(0u8..6, 1..16),
            prop::collection::vec(any::<bool>(), 0..5),
        )
            .prop_map(|(members, ws, escape)| {
                let mut out = Vec::new();
                Style { ws, escape, n: 0 }.write(&J::Obj(members), &mut out);
                out
            })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Delete(usize),
        Insert(usize, u8),
        Replace(usize, u8),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let byte = prop::sample::select(b"{}[]\",:\\ \n0a-.e\xc3\xff".to_vec());
        prop_oneof![
            any::<usize>().prop_map(Mutation::Delete),
            (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
        for m in ms {
            let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
            match *m {
                Mutation::Delete(i) if !b.is_empty() => {
                    let i = at(i, b.len());
                    b.remove(i);
                }
                Mutation::Insert(i, c) => {
                    let i = at(i, b.len() + 1);
                    b.insert(i, c);
                }
                Mutation::Replace(i, c) if !b.is_empty() => {
                    let i = at(i, b.len());
                    b[i] = c;
                }
                Mutation::Truncate(i) => {
                    let i = at(i, b.len() + 1);
                    b.truncate(i);
                }
                _ => {}
            }
        }
        b
    }

    /// Every property of the scanner and the edits, for one body.
    fn check(body: &[u8], new_model: &str) -> Result<(), TestCaseError> {
        // Whatever the body, nothing panics.
        let found = top_level(body, "model");
        let replaced = replace_model(&Bytes::copy_from_slice(body), new_model);
        let usage = request_stream_usage(body);
        let from_end = top_levels_from_end(body, ["model", "usage"]);
        let members = match verdict(body) {
            Verdict::Object(m) => m,
            Verdict::NotAnObject => {
                prop_assert!(found.is_none() && replaced.is_none() && usage.is_none());
                // The scan from the end reads no further back than its
                // last name (its contract): a body that is no object only
                // before that point (`[` for its first `{`) gives what
                // its tail holds, and only when every name was found.
                prop_assert!(from_end.is_none_or(|f| f.iter().all(Option::is_some)));
                return Ok(());
            }
            // Never reaches the scanner (Head::parse refuses it first).
            Verdict::Invalid => return Ok(()),
        };
        let last = |ms: &Members, k: &str| {
            ms.0.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };

        // The scanner finds what serde_json finds, for every key.
        for (k, _) in &members.0 {
            let raw = top_level(body, k);
            prop_assert!(raw.is_some(), "{k:?} not found");
            let got: Value = serde_json::from_slice(raw.unwrap_or_default())
                .map_err(|e| TestCaseError::fail(format!("span of {k:?} is not JSON: {e}")))?;
            prop_assert_eq!(Some(got), last(&members, k));
        }
        prop_assert_eq!(found.is_some(), last(&members, "model").is_some());

        // Read from the end, any names give what the forward pass gives,
        // whether they are all found (an early stop) or not.
        prop_assert_eq!(from_end, top_levels(body, ["model", "usage"]));
        for (k, _) in &members.0 {
            let k = k.as_str();
            prop_assert_eq!(top_levels_from_end(body, [k]), top_levels(body, [k]));
            prop_assert_eq!(
                top_levels_from_end(body, [k, "usage", "status"]),
                top_levels(body, [k, "usage", "status"])
            );
        }

        // The splice changes the value of every top-level `model` and
        // nothing else: other members keep their bytes.
        match replaced {
            None => prop_assert!(last(&members, "model").is_none()),
            Some(out) => {
                let after = serde_json::from_slice::<Members>(&out)
                    .map_err(|e| TestCaseError::fail(format!("splice output is not JSON: {e}")))?;
                let want: Vec<(String, Value)> = members
                    .0
                    .iter()
                    .map(|(k, v)| {
                        let v = if k == "model" {
                            Value::String(new_model.into())
                        } else {
                            v.clone()
                        };
                        (k.clone(), v)
                    })
                    .collect();
                prop_assert_eq!(after.0, want);
                for (k, _) in members.0.iter().filter(|(k, _)| k != "model") {
                    prop_assert_eq!(top_level(&out, k), top_level(body, k));
                }
            }
        }

        // The usage request: `stream_options.include_usage` set, the rest
        // unchanged, unless `stream_options` is neither an object nor null.
        let options = last(&members, "stream_options");
        match usage {
            None => prop_assert!(!matches!(
                options,
                None | Some(Value::Null | Value::Object(_))
            )),
            Some(out) => {
                let after = serde_json::from_slice::<Members>(&out)
                    .map_err(|e| TestCaseError::fail(format!("usage output is not JSON: {e}")))?;
                let mut want = members.0.clone();
                let mut merged = match options {
                    Some(Value::Object(o)) => o,
                    _ => serde_json::Map::new(),
                };
                merged.insert("include_usage".into(), Value::Bool(true));
                match want.iter().rposition(|(k, _)| k == "stream_options") {
                    Some(i) => want[i].1 = Value::Object(merged),
                    None => want.push(("stream_options".into(), Value::Object(merged))),
                }
                prop_assert_eq!(after.0, want);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn generated_objects_agree_with_serde_json(body in object(), model in any::<String>()) {
            // The generator writes valid JSON, or the check proves little.
            prop_assert!(matches!(verdict(&body), Verdict::Object(_)), "{}", String::from_utf8_lossy(&body));
            check(&body, &model)?;
        }

        #[test]
        fn mutated_objects_agree_with_serde_json_or_are_refused_first(
            body in object(),
            ms in prop::collection::vec(mutation(), 1..4),
            model in "[a-z0-9/:.-]{1,12}",
        ) {
            check(&mutate(body, &ms), &model)?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
            check(&body, "m")?;
        }

        #[test]
        fn defaults_are_appended_when_absent_and_nothing_else_changes(
            body in object(),
            names in prop::collection::btree_set(key(), 0..4),
            values in prop::collection::vec(json(), 4),
        ) {
            let Verdict::Object(Members(before)) = verdict(&body) else {
                return Err(TestCaseError::fail("the generator wrote an invalid object"));
            };
            let defaults: Vec<(String, Bytes)> = names
                .into_iter()
                .zip(values)
                .map(|(n, j)| {
                    let mut v = Vec::new();
                    Style { ws: vec![0], escape: vec![], n: 0 }.write(&j, &mut v);
                    (n, Bytes::from(v))
                })
                .collect();
            let body = Bytes::from(body);
            let out = fill_missing(&body, &defaults).unwrap();
            let Verdict::Object(Members(after)) = verdict(&out) else {
                return Err(TestCaseError::fail(format!("not an object: {}", String::from_utf8_lossy(&out))));
            };
            let mut want = before.clone();
            for (n, v) in &defaults {
                if !before.iter().any(|(k, _)| k == n) {
                    want.push((n.clone(), serde_json::from_slice(v).unwrap()));
                }
            }
            prop_assert_eq!(&after, &want);
            if want.len() == before.len() {
                // Nothing to add: the very same bytes.
                prop_assert_eq!(&out, &body);
            } else {
                // Every byte of the client's body is kept, in place: the
                // members added sit just before the closing brace.
                let close = body.iter().rposition(|c| *c == b'}').unwrap();
                prop_assert_eq!(&out[..close], &body[..close]);
                prop_assert_eq!(&out[out.len() - (body.len() - close)..], &body[close..]);
            }
        }
    }
}
