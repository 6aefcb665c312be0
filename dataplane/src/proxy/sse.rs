//! Splits a server-sent-events byte stream into whole events as bytes
//! arrive, without copying more than the unfinished tail.

use bytes::{Bytes, BytesMut};

/// One parsed event: its `event:` name (empty if none) and joined `data:`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event<'a> {
    pub name: &'a str,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Splitter {
    tail: BytesMut,
}

/// Position just past the first blank line in `b`, if any.
fn boundary(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' {
            if b[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if b[i + 1] == b'\r' && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        } else if b[i] == b'\r' && b[i + 1] == b'\r' {
            return Some(i + 2);
        }
        i += 1;
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

/// Parses one raw event.
pub fn parse(raw: &[u8]) -> Event<'_> {
    let text = std::str::from_utf8(raw).unwrap_or("");
    let mut ev = Event::default();
    let mut first = true;
    for line in text.split(['\n', '\r']) {
        if let Some(v) = line.strip_prefix("data:") {
            if !first {
                ev.data.push('\n');
            }
            ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
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
        assert_eq!((ev.name, ev.data.as_str()), ("x", "y"));
        assert!(s.take_rest().is_none());
    }

    #[test]
    fn whole_events_are_not_copied_or_merged() {
        let mut s = Splitter::default();
        let out = s.push(&Bytes::from_static(b"data: 1\n\ndata: 2\n\n"));
        assert_eq!(out.len(), 2);
        let multi = parse(b"event: e\ndata: a\ndata: b\n\n");
        assert_eq!(multi.data, "a\nb");
    }
}
