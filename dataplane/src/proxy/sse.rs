//! Splits a server-sent-events byte stream into whole events as bytes
//! arrive, without copying more than the unfinished tail.

use bytes::{Bytes, BytesMut};

/// One parsed event: its `event:` name (empty if none) and joined `data:`
/// (borrowed from the event when it is one line, as nearly all are).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: &'a str,
    pub data: std::borrow::Cow<'a, str>,
}

#[derive(Debug, Default)]
pub struct Splitter {
    tail: BytesMut,
}

/// Position just past the first blank line in `b`, if any. A line ends
/// with CRLF, LF or CR, so a blank line follows a line end as `\n`, `\r\n`
/// or a lone `\r`. After an LF, a `\r` is a blank line either way, but
/// whether the next byte is its `\n` is only known once that byte is here:
/// until then the event is held, so that the split does not depend on
/// where the chunks were cut.
fn boundary(b: &[u8]) -> Option<usize> {
    // From line end to line end (memchr), not byte by byte: most of an
    // event is its data.
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'\n', b'\r', &b[i..]) {
        i += off;
        let next = *b.get(i + 1)?;
        match (b[i], next) {
            (b'\n', b'\n') | (b'\r', b'\r') => return Some(i + 2),
            (b'\n', b'\r') => {
                return match b.get(i + 2) {
                    Some(b'\n') => Some(i + 3),
                    Some(_) => Some(i + 2),
                    None => None,
                };
            }
            _ => i += 1,
        }
    }
    None
}

impl Splitter {
    /// Adds bytes and returns every event they complete, each as its raw
    /// bytes including the blank line that ends it.
    pub fn push(&mut self, chunk: &Bytes) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.tail.is_empty() {
            // Common case: events arrive whole; slice without copying.
            let mut rest = chunk.clone();
            while let Some(end) = boundary(&rest) {
                out.push(rest.split_to(end));
            }
            if !rest.is_empty() {
                self.tail.extend_from_slice(&rest);
            }
            return out;
        }
        self.tail.extend_from_slice(chunk);
        while let Some(end) = boundary(&self.tail) {
            out.push(self.tail.split_to(end).freeze());
        }
        out
    }

    /// Whatever is left when the stream ends (an event without a final
    /// blank line).
    pub fn take_rest(&mut self) -> Option<Bytes> {
        (!self.tail.is_empty()).then(|| self.tail.split().freeze())
    }
}

/// The lines of `text`, split at every `\n` and `\r` (found with memchr:
/// a `str` split decodes every character, which was most of the cost of
/// reading an event).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        let rest = &text.as_bytes()[from..];
        let end = memchr::memchr2(b'\n', b'\r', rest).map(|i| from + i);
        start = end.map(|e| e + 1);
        // Line ends are ASCII, so both ends are character boundaries.
        text.get(from..end.unwrap_or(text.len()))
    })
}

/// Parses one raw event.
pub fn parse(raw: &[u8]) -> Event<'_> {
    let text = std::str::from_utf8(raw).unwrap_or("");
    let mut ev = Event::default();
    let mut first = true;
    for line in lines(text) {
        if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            if first {
                ev.data = std::borrow::Cow::Borrowed(v);
            } else {
                let data = ev.data.to_mut();
                data.push('\n');
                data.push_str(v);
            }
            first = false;
        } else if let Some(v) = line.strip_prefix("event:") {
            ev.name = v.strip_prefix(' ').unwrap_or(v);
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut s = Splitter::default();
        assert!(s.push(&Bytes::from_static(b"data: {\"a\"")).is_empty());
        let out = s.push(&Bytes::from_static(b":1}\n\ndata: [DONE]\n\nevent: x\n"));
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0][..], b"data: {\"a\":1}\n\n");
        assert_eq!(parse(&out[1]).data, "[DONE]");
        let out = s.push(&Bytes::from_static(b"data: y\r\n\r\n"));
        assert_eq!(out.len(), 1);
        let ev = parse(&out[0]);
        assert_eq!((ev.name, ev.data.as_ref()), ("x", "y"));
        assert!(s.take_rest().is_none());
    }

    #[test]
    fn lines_split_at_every_line_end() {
        let all: Vec<&str> = lines("a\r\nb\rc\n\né").collect();
        assert_eq!(all, ["a", "", "b", "c", "", "é"]);
        assert_eq!(lines("").collect::<Vec<_>>(), [""]);
        assert_eq!(lines("x\n").collect::<Vec<_>>(), ["x", ""]);
    }

    #[test]
    fn whole_events_are_not_copied_or_merged() {
        let mut s = Splitter::default();
        let out = s.push(&Bytes::from_static(b"data: 1\n\ndata: 2\n\n"));
        assert_eq!(out.len(), 2);
        let multi = parse(b"event: e\ndata: a\ndata: b\n\n");
        assert_eq!(multi.data, "a\nb");
    }

    #[test]
    fn an_lf_line_then_a_cr_blank_line_ends_the_event() {
        // Found by the property test below: `\n\r` followed by anything but
        // `\n` is a line end and a blank line; the two events were merged.
        let mut s = Splitter::default();
        let out = s.push(&Bytes::from_static(b"data: a\n\rdata: b\r\n\r"));
        assert_eq!(out.len(), 1);
        assert_eq!(parse(&out[0]).data, "a");
        // `\n\r` at the end of what has arrived waits for the next byte.
        let out = s.push(&Bytes::from_static(b"\n"));
        assert_eq!(out.len(), 1);
        assert_eq!(parse(&out[0]).data, "b");
        assert!(s.take_rest().is_none());
    }
}

/// Property tests: the splitter and [`parse`] against a reference reader
/// written from the WHATWG event-stream rules, on generated streams (CRLF,
/// LF and CR line endings, comments, `id:`/`retry:` lines, multi-line data,
/// non-ASCII text) cut into chunks anywhere, inside UTF-8 characters too.
/// Events without data are left out on both sides (the proxy skips them).
/// An event the stream ends in without a blank line counts, as
/// [`Splitter::take_rest`] hands it over.
///
/// CI runs proptest's default 256 cases per property (well under a
/// second). A longer run: `PROPTEST_CASES=100000 cargo test -p
/// llmgw-dataplane --lib proxy::sse`.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// The events of a whole stream, as the event-stream rules read them.
    fn reference(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let (mut name, mut data, mut has_data) = (String::new(), String::new(), false);
        let mut dispatch = |name: &mut String, data: &mut String, has_data: &mut bool| {
            if *has_data && !data.is_empty() {
                out.push((std::mem::take(name), std::mem::take(data)));
            }
            name.clear();
            data.clear();
            *has_data = false;
        };
        let mut rest = text;
        let mut pending = false;
        while !rest.is_empty() {
            let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
            let line = &rest[..end];
            let after = &rest[end..];
            rest = match after.strip_prefix("\r\n") {
                Some(r) => r,
                None => after.get(1..).unwrap_or(after),
            };
            if line.is_empty() {
                dispatch(&mut name, &mut data, &mut has_data);
                pending = false;
                continue;
            }
            pending = true;
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                }
                "event" => name = value.to_string(),
                _ => {}
            }
        }
        if pending {
            dispatch(&mut name, &mut data, &mut has_data);
        }
        out
    }

    /// Pushes `input` cut at `cuts`; returns the raw events (the rest last).
    fn split(input: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        let mut s = Splitter::default();
        let mut raw = Vec::new();
        let mut at = 0;
        for p in points.into_iter().chain([input.len()]) {
            raw.extend(s.push(&Bytes::copy_from_slice(&input[at..p])));
            at = p;
        }
        raw.extend(s.take_rest());
        raw
    }

    fn events(raw: &[Bytes]) -> Vec<(String, String)> {
        raw.iter()
            .map(|r| parse(r))
            .filter(|e| !e.data.is_empty())
            .map(|e| (e.name.to_string(), e.data.into_owned()))
            .collect()
    }

    fn check(input: &str, cuts: &[usize]) -> Result<(), TestCaseError> {
        let raw = split(input.as_bytes(), cuts);
        // Nothing lost, nothing added, nothing reordered.
        prop_assert_eq!(raw.concat(), input.as_bytes());
        let got = events(&raw);
        prop_assert_eq!(&got, &events(&split(input.as_bytes(), &[])));
        prop_assert_eq!(got, reference(input));
        Ok(())
    }

    fn eol() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["\n", "\r\n", "\r"])
    }

    fn line() -> impl Strategy<Value = String> {
        let text = "[^\r\n]{0,12}";
        prop_oneof![
            4 => (prop::bool::ANY, text).prop_map(|(sp, v)| format!("data:{}{v}", if sp { " " } else { "" })),
            1 => "[a-z_.]{0,10}".prop_map(|n| format!("event: {n}")),
            1 => text.prop_map(|c| format!(":{c}")),
            1 => Just("id: 7".to_string()),
            1 => Just("retry: 100".to_string()),
        ]
    }

    fn stream() -> impl Strategy<Value = String> {
        let event = (prop::collection::vec((line(), eol()), 1..5), eol());
        (prop::collection::vec(event, 0..6), prop::bool::ANY).prop_map(|(events, cut_last)| {
            let mut s = String::new();
            let n = events.len();
            for (i, (lines, blank)) in events.into_iter().enumerate() {
                for (l, e) in lines {
                    s.push_str(&l);
                    s.push_str(e);
                }
                // The last event may end without its blank line.
                if !(cut_last && i + 1 == n) {
                    s.push_str(blank);
                }
            }
            s
        })
    }

    proptest! {
        #[test]
        fn events_do_not_depend_on_chunk_boundaries(
            input in stream(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            check(&input, &cuts)?;
        }

        #[test]
        fn line_end_soup_splits_like_the_reference(
            input in "(data: x|data:é|event: e|:c|\\r|\\n|€|a){0,40}",
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            check(&input, &cuts)?;
        }
    }
}
