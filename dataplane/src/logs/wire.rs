//! Request logs on the wire without re-encoding them. The spool keeps each
//! record as the protobuf encoding of a `RequestLog`; a `LogBatch` is
//! `node_id` (field 1), `last_sequence` (2) and `records` (3, repeated
//! `RequestLog`), and a repeated message field is nothing but each
//! message's bytes behind a tag and a length. So a batch is assembled
//! from the spool's frames as they are: no decoding into structs only for
//! the gRPC codec to encode them again, which cost the shipper most of its
//! CPU. [`ShipCodec`] is the client-side codec of `Logs.Ship` that does
//! this; acknowledgements are decoded as usual.
//!
//! The same holds on the way in: a record's headers, bodies and request
//! strings are encoded by a [`FieldWriter`] straight from the request's
//! buffers while it is handled, and travel to the spool as bytes in a
//! [`LogRecord`], instead of as maps and strings copied only to be encoded
//! and freed again.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use llmgw_proto::v1 as pb;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// `LogBatch` field numbers (`proto/llmgw/v1/logs.proto`).
const BATCH_NODE_ID: u32 = 1;
const BATCH_LAST_SEQUENCE: u32 = 2;
const BATCH_RECORDS: u32 = 3;
/// `RequestLog.sequence`.
const RECORD_SEQUENCE: u32 = 2;

/// `RequestLog` fields a [`FieldWriter`] fills (`proto/llmgw/v1/logs.proto`).
pub mod field {
    pub const CLIENT_IP: u32 = 6;
    pub const USER_AGENT: u32 = 7;
    pub const PROTOCOL: u32 = 8;
    pub const PATH: u32 = 9;
    pub const REQUEST_HEADERS: u32 = 28;
    pub const RESPONSE_HEADERS: u32 = 29;
    pub const REQUEST_BODY: u32 = 30;
    pub const RESPONSE_BODY: u32 = 31;
    pub const REQUEST_BODY_TRUNCATED: u32 = 32;
    pub const RESPONSE_BODY_TRUNCATED: u32 = 33;
    pub const UPSTREAM_PROTOCOL: u32 = 35;
    /// The body sent upstream, when it differs from the client's.
    pub const UPSTREAM_REQUEST_BODY: u32 = 37;
    pub const UPSTREAM_REQUEST_BODY_TRUNCATED: u32 = 38;
    /// Repeated: one [`FieldWriter::string`](super::FieldWriter::string)
    /// per dropped field, in order.
    pub const DROPPED_FIELDS: u32 = 39;
    /// The end user the request was for.
    pub const USER: u32 = 44;
}

/// A request log on its way to the spool: the record's small fields, and
/// its bulky ones (headers, bodies) already encoded. Protobuf lets a
/// message's fields come in any order, so `fields`' encoding followed by
/// `encoded` is the record; a field must be set in one of the two only.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LogRecord {
    /// Everything but what `encoded` holds; metrics read these, and the
    /// spool sets `sequence` and the writer `node_id`. Boxed: the record
    /// moves through the queue, the writer's batch and the spool's I/O
    /// thread, and a `RequestLog` is about 900 bytes to copy each time.
    pub fields: Box<pb::RequestLog>,
    /// Further fields of the same `RequestLog`, protobuf-encoded.
    pub encoded: Bytes,
}

impl From<pb::RequestLog> for LogRecord {
    fn from(fields: pb::RequestLog) -> Self {
        LogRecord {
            fields: Box::new(fields),
            encoded: Bytes::new(),
        }
    }
}

impl LogRecord {
    pub fn encoded_len(&self) -> usize {
        self.fields.encoded_len() + self.encoded.len()
    }

    /// Appends the record's encoding (without a length prefix).
    pub fn encode_raw(&self, out: &mut impl BufMut) {
        self.fields.encode_raw(out);
        out.put_slice(&self.encoded);
    }

    /// The whole record as one message, decoded.
    #[cfg(test)]
    pub fn decode(&self) -> Result<pb::RequestLog, prost::DecodeError> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_raw(&mut buf);
        pb::RequestLog::decode(&buf[..])
    }
}

/// Appends `RequestLog` fields in protobuf's wire format. As prost does for
/// proto3, empty strings and `false` are not written.
#[derive(Debug, Default)]
pub struct FieldWriter {
    buf: BytesMut,
}

impl FieldWriter {
    /// A writer with room for `bytes`, so that a record's fields are
    /// written without growing the buffer again and again.
    pub fn with_capacity(bytes: usize) -> Self {
        FieldWriter {
            buf: BytesMut::with_capacity(bytes),
        }
    }

    /// Room for a `map<string, string>` field holding `headers`.
    pub fn headers_len(headers: &http::HeaderMap) -> usize {
        // Per entry at most: field key 2, entry length 2, key and value
        // tags 2, their lengths 4.
        headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 10)
            .sum()
    }

    pub fn string(&mut self, field: u32, value: &str) {
        if value.is_empty() {
            return;
        }
        self.reserve(2 + encoded_len_varint(value.len() as u64) + value.len());
        put_key(&mut self.buf, field, WireType::LengthDelimited);
        put_len(&mut self.buf, value.len());
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// Room for `n` more bytes. A large addition (a body) gets that room
    /// and [`TAIL`] more, not the doubling a growing buffer does: a record
    /// is held as it is while its response streams and while it waits in
    /// the log pipeline, and a doubled buffer could hold twice the record.
    fn reserve(&mut self, n: usize) {
        let free = self.buf.capacity() - self.buf.len();
        if n < EXACT_FROM || free >= n {
            self.buf.reserve(n);
            return;
        }
        let mut grown = BytesMut::with_capacity(self.buf.len() + n + TAIL);
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
    }

    /// Bytes of memory the buffer holds, used or not.
    #[cfg(test)]
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    pub fn bool(&mut self, field: u32, value: bool) {
        if value {
            put_key(&mut self.buf, field, WireType::Varint);
            self.buf.put_u8(1);
        }
    }

    /// One entry of a `map<string, string>` field.
    pub fn map_entry(&mut self, field: u32, key: &str, value: &str) {
        let part = |s: &str| {
            if s.is_empty() {
                0
            } else {
                1 + encoded_len_varint(s.len() as u64) + s.len()
            }
        };
        let len = part(key) + part(value);
        self.buf.reserve(2 + encoded_len_varint(len as u64) + len);
        put_key(&mut self.buf, field, WireType::LengthDelimited);
        put_len(&mut self.buf, len);
        for (tag, s) in [(MAP_KEY, key), (MAP_VALUE, value)] {
            if !s.is_empty() {
                self.buf.put_u8(tag);
                put_len(&mut self.buf, s.len());
                self.buf.extend_from_slice(s.as_bytes());
            }
        }
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Additions from this size on (bodies) grow a record's buffer by exactly
/// what they need, plus [`TAIL`]; smaller ones (headers, names) grow it
/// the usual way.
const EXACT_FROM: usize = 4096;
/// Room left after a body for what a record still gets after it: the
/// response's headers and a few short fields.
const TAIL: usize = 1024;

/// Tags of a map entry's key (field 1) and value (field 2), both strings.
const MAP_KEY: u8 = 1 << 3 | WireType::LengthDelimited as u8;
const MAP_VALUE: u8 = 2 << 3 | WireType::LengthDelimited as u8;

/// A field's key; the one- and two-byte cases (fields 1 to 2047) inline,
/// where prost's `encode_key` is a call for every field written.
#[inline]
fn put_key(buf: &mut BytesMut, field: u32, wire_type: WireType) {
    let key = field << 3 | wire_type as u32;
    if key < 0x80 {
        buf.put_u8(key as u8);
    } else if key < 0x4000 {
        buf.put_slice(&[key as u8 | 0x80, (key >> 7) as u8]);
    } else {
        encode_key(field, wire_type, buf);
    }
}

/// A length as a varint; the one-byte case (most header parts) inline.
#[inline]
fn put_len(buf: &mut BytesMut, len: usize) {
    if len < 0x80 {
        buf.put_u8(len as u8);
    } else {
        encode_varint(len as u64, buf);
    }
}

/// A `LogBatch` whose records are already encoded `RequestLog`s.
#[derive(Debug, Clone, Default)]
pub struct RawBatch {
    pub node_id: String,
    pub last_sequence: u64,
    /// Encoded `RequestLog` messages, in sequence order.
    pub records: Vec<Bytes>,
}

impl RawBatch {
    /// Appends the batch's protobuf encoding, byte for byte what prost
    /// would write for the equivalent `pb::LogBatch`.
    pub fn encode(&self, out: &mut impl BufMut) {
        if !self.node_id.is_empty() {
            encode_key(BATCH_NODE_ID, WireType::LengthDelimited, out);
            encode_varint(self.node_id.len() as u64, out);
            out.put_slice(self.node_id.as_bytes());
        }
        if self.last_sequence != 0 {
            encode_key(BATCH_LAST_SEQUENCE, WireType::Varint, out);
            encode_varint(self.last_sequence, out);
        }
        for r in &self.records {
            encode_key(BATCH_RECORDS, WireType::LengthDelimited, out);
            encode_varint(r.len() as u64, out);
            out.put_slice(r);
        }
    }

    /// Size of [`RawBatch::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
        let mut n = 0;
        if !self.node_id.is_empty() {
            n += field(self.node_id.len());
        }
        if self.last_sequence != 0 {
            n += 1 + encoded_len_varint(self.last_sequence);
        }
        n + self.records.iter().map(|r| field(r.len())).sum::<usize>()
    }
}

/// The `sequence` of an encoded `RequestLog`, found by walking its
/// top-level fields (0 when absent, as protobuf defines); `None` if the
/// bytes are not a well-formed message at that level.
pub fn record_sequence(mut payload: &[u8]) -> Option<u64> {
    let mut sequence = 0;
    while payload.has_remaining() {
        let key = prost::encoding::decode_varint(&mut payload).ok()?;
        let field = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => {
                let v = prost::encoding::decode_varint(&mut payload).ok()?;
                if field == RECORD_SEQUENCE {
                    // The last occurrence wins, as in a full decode.
                    sequence = v;
                }
            }
            1 => skip(&mut payload, 8)?,
            2 => {
                let len = prost::encoding::decode_varint(&mut payload).ok()?;
                skip(&mut payload, usize::try_from(len).ok()?)?;
            }
            5 => skip(&mut payload, 4)?,
            _ => return None,
        }
    }
    Some(sequence)
}

fn skip(buf: &mut &[u8], n: usize) -> Option<()> {
    if buf.len() < n {
        return None;
    }
    buf.advance(n);
    Some(())
}

/// `Logs.Ship` from the client's side: [`RawBatch`]es out, `LogAck`s in.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShipCodec;

impl Codec for ShipCodec {
    type Encode = RawBatch;
    type Decode = pb::LogAck;
    type Encoder = ShipCodec;
    type Decoder = ShipCodec;

    fn encoder(&mut self) -> ShipCodec {
        ShipCodec
    }

    fn decoder(&mut self) -> ShipCodec {
        ShipCodec
    }
}

impl Encoder for ShipCodec {
    type Item = RawBatch;
    type Error = Status;

    fn encode(&mut self, item: RawBatch, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

impl Decoder for ShipCodec {
    type Item = pb::LogAck;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::LogAck>, Status> {
        pb::LogAck::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode a log acknowledgement: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, sequence: u64) -> pb::RequestLog {
        pb::RequestLog {
            id: id.into(),
            sequence,
            model: "m".into(),
            request_headers: [("a".to_string(), "b".to_string())].into(),
            attempts: vec![pb::Attempt {
                status: 200,
                ..Default::default()
            }],
            cost: 0.5,
            ..Default::default()
        }
    }

    #[test]
    fn keys_are_written_as_prost_writes_them() {
        for field in (1..4100).chain([prost::encoding::MAX_TAG - 1, prost::encoding::MAX_TAG]) {
            for wire_type in [WireType::Varint, WireType::LengthDelimited] {
                let (mut ours, mut prosts) = (BytesMut::new(), BytesMut::new());
                put_key(&mut ours, field, wire_type);
                encode_key(field, wire_type, &mut prosts);
                assert_eq!(ours, prosts, "{field} {wire_type:?}");
            }
        }
    }

    #[test]
    fn a_body_grows_the_record_by_what_it_needs_not_by_doubling() {
        let mut w = FieldWriter::with_capacity(256);
        w.map_entry(field::REQUEST_HEADERS, "content-type", "application/json");
        let request = "r".repeat(40_000);
        w.string(field::REQUEST_BODY, &request);
        // The response's headers fit in what was left after the body.
        let before = w.allocated();
        for i in 0..10 {
            w.map_entry(field::RESPONSE_HEADERS, &format!("x-h{i}"), "value");
        }
        assert_eq!(w.allocated(), before);
        let response = "s".repeat(65_536);
        w.string(field::RESPONSE_BODY, &response);
        let used = w.buf.len();
        assert!(used > 105_000);
        assert!(w.allocated() <= used + TAIL, "{} for {used}", w.allocated());
    }

    #[test]
    fn a_raw_batch_encodes_as_prost_does() {
        let records = vec![record("a", 7), record("b", 8)];
        let want = pb::LogBatch {
            node_id: "dp-1".into(),
            last_sequence: 8,
            records: records.clone(),
        }
        .encode_to_vec();
        let raw = RawBatch {
            node_id: "dp-1".into(),
            last_sequence: 8,
            records: records
                .iter()
                .map(|r| Bytes::from(r.encode_to_vec()))
                .collect(),
        };
        let mut got = Vec::new();
        raw.encode(&mut got);
        assert_eq!(got, want);
        assert_eq!(raw.encoded_len(), want.len());
        assert_eq!(pb::LogBatch::decode(&got[..]).unwrap().records, records);

        let empty = RawBatch::default();
        let mut got = Vec::new();
        empty.encode(&mut got);
        assert!(got.is_empty() && empty.encoded_len() == 0);
    }

    #[test]
    fn written_fields_decode_as_prost_encodes_them() {
        let mut w = FieldWriter::default();
        w.map_entry(field::REQUEST_HEADERS, "accept", "a/b, c/d");
        w.map_entry(field::REQUEST_HEADERS, "x-empty", "");
        w.map_entry(field::RESPONSE_HEADERS, "server", "mock");
        w.string(field::REQUEST_BODY, &"{\"model\":\"m\"}".repeat(20));
        w.string(field::RESPONSE_BODY, "");
        w.bool(field::REQUEST_BODY_TRUNCATED, true);
        w.bool(field::RESPONSE_BODY_TRUNCATED, false);
        let mut fields = record("a", 7);
        fields.request_headers.clear();
        let rec = LogRecord {
            fields: Box::new(fields.clone()),
            encoded: w.finish(),
        };
        let want = pb::RequestLog {
            request_headers: [
                ("accept".to_string(), "a/b, c/d".to_string()),
                ("x-empty".to_string(), String::new()),
            ]
            .into(),
            response_headers: [("server".to_string(), "mock".to_string())].into(),
            request_body: "{\"model\":\"m\"}".repeat(20),
            request_body_truncated: true,
            ..fields
        };
        assert_eq!(rec.decode().unwrap(), want);
        // Same fields, same bytes, whichever way they were encoded.
        assert_eq!(rec.encoded_len(), want.encoded_len());
        assert_eq!(
            record_sequence(&rec.decode().unwrap().encode_to_vec()),
            Some(7)
        );
        let plain = LogRecord::from(want.clone());
        assert_eq!(plain.decode().unwrap(), want);
    }

    #[test]
    fn sequences_are_read_without_decoding() {
        for seq in [0, 1, 300, u64::MAX] {
            let bytes = record("x", seq).encode_to_vec();
            assert_eq!(record_sequence(&bytes), Some(seq), "{seq}");
        }
        let bytes = record("x", 42).encode_to_vec();
        assert_eq!(record_sequence(&bytes[..bytes.len() - 1]), None);
        // Wire type 7 does not exist.
        assert_eq!(record_sequence(&[0x0f]), None);
    }
}
