//! OTLP trace protobuf written straight from the data plane's own data
//! (#19). A request's spans are encoded once, when its log record is
//! finished, into the bytes of an OTLP `Span` message; the export task
//! only frames a batch of them ([`Framing`]) under the resource and scope
//! it encoded once at start.
//!
//! Why not the SDK's `SpanData` and `opentelemetry-otlp`: measured with
//! `bench/run.sh --callgrind`, building `SpanData` and the exporter's
//! regrouping, conversion and prost encoding cost about 43,000
//! instructions per request (docs/benchmarks.md, "Tracing"), more than a
//! third of the request itself. Writing the wire format once, with every
//! length known before it is written, costs a few thousand. The messages
//! are the ones in opentelemetry-proto's `trace/v1/trace.proto` and
//! `collector/trace/v1/trace_service.proto`; the unit tests decode what
//! this module writes with opentelemetry-proto's own types.

use opentelemetry::{Array, Value};

/// `Span.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// `Span.flags`: the context's "has is-remote" bit (`is_remote` is known).
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// `Span.flags`: the parent is remote.
const FLAG_IS_REMOTE: u32 = 0x200;
/// W3C trace flags: sampled.
const SAMPLED: u32 = 0x01;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

// Varints are prost's (the wire format is protobuf's; only the messages
// are written by hand).
use prost::encoding::encoded_len_varint as varint_len;

#[inline(always)]
fn varint(buf: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, buf);
}

#[inline(always)]
fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    // Fields 1 to 15 have one-byte tags.
    small_varint(buf, u64::from((field << 3) | u32::from(wire)));
}

#[inline(always)]
fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// A length-delimited field's whole size, from its content's size.
#[inline(always)]
fn field_len(field: u32, len: usize) -> usize {
    tag_len(field) + varint_len(len as u64) + len
}

#[inline(always)]
fn bytes_field(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(buf, field, LEN);
    small_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

#[inline(always)]
fn parts_len(parts: &[&str]) -> usize {
    parts.iter().map(|p| p.len()).sum()
}

/// A string field made of `parts` in order (no joined copy is made).
#[inline(always)]
fn parts_field(buf: &mut Vec<u8>, field: u32, parts: &[&str]) {
    tag(buf, field, LEN);
    small_varint(buf, parts_len(parts) as u64);
    for p in parts {
        buf.extend_from_slice(p.as_bytes());
    }
}

#[inline(always)]
fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    tag(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// A length that is almost always below 128, as a varint: one `push` in
/// that case (attribute heads are mostly such lengths).
#[inline(always)]
fn small_varint(buf: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
    } else {
        varint(buf, v);
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a span is before its attributes: its ids, name and times.
#[derive(Debug, Clone, Copy)]
pub struct SpanHead<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent span and whether it is remote (a client's).
    pub parent: Option<([u8; 8], bool)>,
    /// The W3C `tracestate`, empty for none.
    pub trace_state: &'a str,
    pub kind: Kind,
    /// The name, written as these parts joined.
    pub name: &'a [&'a str],
    pub start_ns: u64,
    pub end_ns: u64,
}

/// One span's OTLP `Span` message, written field by field. Attributes,
/// events and the status may come in any order (protobuf's repeated
/// fields need not be contiguous).
#[derive(Debug)]
pub struct SpanWriter {
    buf: Vec<u8>,
}

impl SpanWriter {
    /// A span with room for `capacity` bytes before it grows.
    pub fn new(head: &SpanHead<'_>, capacity: usize) -> SpanWriter {
        let mut buf = Vec::with_capacity(capacity);
        bytes_field(&mut buf, 1, &head.trace_id);
        bytes_field(&mut buf, 2, &head.span_id);
        if !head.trace_state.is_empty() {
            bytes_field(&mut buf, 3, head.trace_state.as_bytes());
        }
        let mut flags = SAMPLED | FLAG_HAS_IS_REMOTE;
        if let Some((parent, remote)) = head.parent {
            bytes_field(&mut buf, 4, &parent);
            if remote {
                flags |= FLAG_IS_REMOTE;
            }
        }
        parts_field(&mut buf, 5, head.name);
        tag(&mut buf, 6, VARINT);
        small_varint(&mut buf, head.kind as u64);
        fixed64(&mut buf, 7, head.start_ns);
        fixed64(&mut buf, 8, head.end_ns);
        tag(&mut buf, 16, FIXED32);
        buf.extend_from_slice(&flags.to_le_bytes());
        SpanWriter { buf }
    }

    /// A `KeyValue` attribute's head up to its value's content (the
    /// `AnyValue` field's tag and length, and for a string value the
    /// string's tag and `string` length too), for a value of `any_len`
    /// bytes; room for the whole attribute is made at once.
    ///
    /// Inlined with the public writers below, so that a literal key's
    /// length, the lengths derived from it and the key's copy are
    /// constants at each call site: the attribute costs the value's copy
    /// and a few stores (measured with `bench/run.sh --callgrind`,
    /// docs/benchmarks.md "Tracing").
    #[inline(always)]
    fn attribute(&mut self, key: &str, any_len: usize, string: Option<usize>) {
        let kv_len = field_len(1, key.len()) + field_len(2, any_len);
        // Tag and length of the KeyValue (at most 1 + 10 bytes) and the
        // KeyValue itself.
        self.buf.reserve(11 + kv_len);
        self.buf.push((9 << 3) | LEN);
        small_varint(&mut self.buf, kv_len as u64);
        self.buf.push((1 << 3) | LEN);
        small_varint(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push((2 << 3) | LEN);
        small_varint(&mut self.buf, any_len as u64);
        if let Some(len) = string {
            self.buf.push((1 << 3) | LEN);
            small_varint(&mut self.buf, len as u64);
        }
    }

    /// A string attribute.
    #[inline(always)]
    pub fn str(&mut self, key: &str, value: &str) {
        self.str_parts(key, &[value]);
    }

    /// A string attribute made of `parts` joined.
    #[inline(always)]
    pub fn str_parts(&mut self, key: &str, parts: &[&str]) {
        let len = parts_len(parts);
        self.attribute(key, field_len(1, len), Some(len));
        for p in parts {
            self.buf.extend_from_slice(p.as_bytes());
        }
    }

    /// An integer attribute.
    #[inline(always)]
    pub fn int(&mut self, key: &str, value: i64) {
        let v = value as u64;
        self.attribute(key, tag_len(3) + varint_len(v), None);
        tag(&mut self.buf, 3, VARINT);
        small_varint(&mut self.buf, v);
    }

    /// An unsigned integer attribute, capped at `i64::MAX`.
    #[inline(always)]
    pub fn uint(&mut self, key: &str, value: u64) {
        self.int(key, i64::try_from(value).unwrap_or(i64::MAX));
    }

    #[inline(always)]
    pub fn double(&mut self, key: &str, value: f64) {
        self.attribute(key, tag_len(4) + 8, None);
        fixed64(&mut self.buf, 4, value.to_bits());
    }

    #[inline(always)]
    pub fn bool(&mut self, key: &str, value: bool) {
        self.attribute(key, tag_len(2) + 1, None);
        tag(&mut self.buf, 2, VARINT);
        self.buf.push(u8::from(value));
    }

    /// A string array attribute.
    pub fn str_array(&mut self, key: &str, values: &[&str]) {
        // ArrayValue { values: [AnyValue { string_value }] }
        let array_len: usize = values
            .iter()
            .map(|s| field_len(1, field_len(1, s.len())))
            .sum();
        self.attribute(key, field_len(5, array_len), None);
        tag(&mut self.buf, 5, LEN);
        small_varint(&mut self.buf, array_len as u64);
        for s in values {
            tag(&mut self.buf, 1, LEN);
            small_varint(&mut self.buf, field_len(1, s.len()) as u64);
            bytes_field(&mut self.buf, 1, s.as_bytes());
        }
    }

    /// An event with no attributes.
    pub fn event(&mut self, name: &str, time_ns: u64) {
        let len = tag_len(1) + 8 + field_len(2, name.len());
        tag(&mut self.buf, 11, LEN);
        small_varint(&mut self.buf, len as u64);
        fixed64(&mut self.buf, 1, time_ns);
        bytes_field(&mut self.buf, 2, name.as_bytes());
    }

    /// The span failed: status `ERROR` with `message`.
    pub fn error(&mut self, message: &str) {
        let mut len = tag_len(3) + 1;
        if !message.is_empty() {
            len += field_len(2, message.len());
        }
        tag(&mut self.buf, 15, LEN);
        small_varint(&mut self.buf, len as u64);
        if !message.is_empty() {
            bytes_field(&mut self.buf, 2, message.as_bytes());
        }
        tag(&mut self.buf, 3, VARINT);
        self.buf.push(2); // STATUS_CODE_ERROR
    }

    /// The finished `Span` message.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Any attribute value, as an `AnyValue` message (used for the resource,
/// written once).
fn any_value(v: &Value) -> Vec<u8> {
    let mut b = Vec::new();
    match v {
        Value::Bool(x) => {
            tag(&mut b, 2, VARINT);
            b.push(u8::from(*x));
        }
        Value::I64(x) => {
            tag(&mut b, 3, VARINT);
            varint(&mut b, *x as u64);
        }
        Value::F64(x) => fixed64(&mut b, 4, x.to_bits()),
        Value::String(s) => bytes_field(&mut b, 1, s.as_str().as_bytes()),
        Value::Array(a) => {
            let items: Vec<Vec<u8>> = match a {
                Array::Bool(v) => v.iter().map(|x| any_value(&Value::Bool(*x))).collect(),
                Array::I64(v) => v.iter().map(|x| any_value(&Value::I64(*x))).collect(),
                Array::F64(v) => v.iter().map(|x| any_value(&Value::F64(*x))).collect(),
                Array::String(v) => v
                    .iter()
                    .map(|x| any_value(&Value::String(x.clone())))
                    .collect(),
                _ => Vec::new(),
            };
            let mut array = Vec::new();
            for i in &items {
                bytes_field(&mut array, 1, i);
            }
            bytes_field(&mut b, 5, &array);
        }
        other => bytes_field(&mut b, 1, other.as_str().as_bytes()),
    }
    b
}

fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let mut kv = Vec::new();
    bytes_field(&mut kv, 1, key.as_bytes());
    bytes_field(&mut kv, 2, &any_value(value));
    bytes_field(buf, field, &kv);
}

/// The resource and instrumentation scope of a plane's spans, encoded
/// once; frames a batch of encoded spans into an
/// `ExportTraceServiceRequest`.
#[derive(Debug, Clone)]
pub struct Framing {
    /// The `resource` field (tag included) of `ResourceSpans`.
    resource: Vec<u8>,
    /// The `scope` field (tag included) of `ScopeSpans`.
    scope: Vec<u8>,
}

impl Framing {
    pub fn new(
        resource: &opentelemetry_sdk::Resource,
        scope_name: &str,
        scope_version: &str,
    ) -> Framing {
        let mut attrs = Vec::new();
        for (k, v) in resource.iter() {
            key_value(&mut attrs, 1, k.as_str(), v);
        }
        let mut r = Vec::new();
        bytes_field(&mut r, 1, &attrs);
        let mut s = Vec::new();
        bytes_field(&mut s, 1, scope_name.as_bytes());
        if !scope_version.is_empty() {
            bytes_field(&mut s, 2, scope_version.as_bytes());
        }
        let mut scope = Vec::new();
        bytes_field(&mut scope, 1, &s);
        let mut schema = Vec::new();
        if let Some(url) = resource.schema_url() {
            bytes_field(&mut schema, 3, url.as_bytes());
        }
        r.extend_from_slice(&schema);
        Framing { resource: r, scope }
    }

    /// An `ExportTraceServiceRequest` holding `spans`.
    pub fn request(&self, spans: &[Vec<u8>]) -> Vec<u8> {
        let spans_len: usize = spans.iter().map(|s| field_len(2, s.len())).sum();
        let scope_spans_len = self.scope.len() + spans_len;
        let resource_spans_len = self.resource.len() + field_len(2, scope_spans_len);
        let mut out = Vec::with_capacity(field_len(1, resource_spans_len));
        tag(&mut out, 1, LEN);
        varint(&mut out, resource_spans_len as u64);
        out.extend_from_slice(&self.resource);
        tag(&mut out, 2, LEN);
        varint(&mut out, scope_spans_len as u64);
        out.extend_from_slice(&self.scope);
        for s in spans {
            bytes_field(&mut out, 2, s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    fn attr<'a>(s: &'a Span, key: &str) -> &'a Any {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
            .unwrap_or_else(|| panic!("no attribute {key}"))
    }

    #[test]
    fn varint_lengths_match_what_is_written() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn a_span_decodes_with_the_official_types() {
        let long = "x".repeat(300);
        let head = SpanHead {
            trace_id: [7; 16],
            span_id: [8; 8],
            parent: Some(([9; 8], true)),
            trace_state: "vendor=1",
            kind: Kind::Server,
            name: &["chat ", "gpt-4o"],
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_500_000_000,
        };
        let mut w = SpanWriter::new(&head, 64);
        w.str("gen_ai.operation.name", "chat");
        w.str_parts("llmgw.target", &["mock", "/", "m1"]);
        w.str("long", &long);
        w.int("neg", -5);
        w.uint("big", u64::MAX);
        w.uint("n", 300);
        w.double("gen_ai.request.temperature", 0.25);
        w.bool("llmgw.stream", true);
        w.str_array("gen_ai.response.finish_reasons", &["stop", "length"]);
        w.event("llmgw.first_token", 1_700_000_000_100_000_000);
        w.error("upstream broke");
        let bytes = w.finish();
        let s = Span::decode(bytes.as_slice()).unwrap();
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![8; 8]);
        assert_eq!(s.parent_span_id, vec![9; 8]);
        assert_eq!(s.trace_state, "vendor=1");
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.name, "chat gpt-4o");
        assert_eq!(s.kind, 2);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_500_000_000);
        assert_eq!(
            attr(&s, "gen_ai.operation.name"),
            &Any::StringValue("chat".into())
        );
        assert_eq!(
            attr(&s, "llmgw.target"),
            &Any::StringValue("mock/m1".into())
        );
        assert_eq!(attr(&s, "long"), &Any::StringValue(long.clone()));
        assert_eq!(attr(&s, "neg"), &Any::IntValue(-5));
        assert_eq!(attr(&s, "big"), &Any::IntValue(i64::MAX));
        assert_eq!(attr(&s, "n"), &Any::IntValue(300));
        assert_eq!(
            attr(&s, "gen_ai.request.temperature"),
            &Any::DoubleValue(0.25)
        );
        assert_eq!(attr(&s, "llmgw.stream"), &Any::BoolValue(true));
        let Any::ArrayValue(a) = attr(&s, "gen_ai.response.finish_reasons") else {
            panic!("not an array")
        };
        let got: Vec<_> = a.values.iter().map(|v| v.value.clone()).collect();
        assert_eq!(
            got,
            vec![
                Some(Any::StringValue("stop".into())),
                Some(Any::StringValue("length".into()))
            ]
        );
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "llmgw.first_token");
        assert_eq!(s.events[0].time_unix_nano, 1_700_000_000_100_000_000);
        let status = s.status.unwrap();
        assert_eq!(status.code, 2);
        assert_eq!(status.message, "upstream broke");
    }

    #[test]
    fn a_root_span_has_no_parent_and_a_local_flag() {
        let head = SpanHead {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            trace_state: "",
            kind: Kind::Client,
            name: &["x"],
            start_ns: 1,
            end_ns: 2,
        };
        let s = Span::decode(SpanWriter::new(&head, 0).finish().as_slice()).unwrap();
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.flags, 0x101);
        assert_eq!(s.kind, 3);
        assert!(s.status.is_none());
    }

    #[test]
    fn a_batch_is_framed_under_the_resource_and_scope() {
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "llmgw-dataplane"),
                KeyValue::new("n", 3_i64),
                KeyValue::new(
                    "list",
                    Value::Array(Array::String(vec!["a".into(), "b".into()])),
                ),
            ])
            .build();
        let f = Framing::new(&resource, "llmgw-dataplane", "1.2.3");
        let spans: Vec<Vec<u8>> = (0..3u8)
            .map(|n| {
                SpanWriter::new(
                    &SpanHead {
                        trace_id: [n + 1; 16],
                        span_id: [n + 1; 8],
                        parent: None,
                        trace_state: "",
                        kind: Kind::Internal,
                        name: &["s"],
                        start_ns: 1,
                        end_ns: 2,
                    },
                    0,
                )
                .finish()
            })
            .collect();
        let req = ExportTraceServiceRequest::decode(f.request(&spans).as_slice()).unwrap();
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(attrs.len(), 3);
        assert!(attrs.iter().any(|kv| kv.key == "service.name"
            && kv.value.as_ref().unwrap().value
                == Some(Any::StringValue("llmgw-dataplane".into()))));
        assert!(attrs
            .iter()
            .any(|kv| kv.key == "n" && kv.value.as_ref().unwrap().value == Some(Any::IntValue(3))));
        assert_eq!(rs.scope_spans.len(), 1);
        let scope = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("llmgw-dataplane", "1.2.3")
        );
        let ids: Vec<_> = rs.scope_spans[0]
            .spans
            .iter()
            .map(|s| s.span_id[0])
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        // An empty batch is still a valid request.
        assert!(ExportTraceServiceRequest::decode(f.request(&[]).as_slice()).is_ok());
    }
}
