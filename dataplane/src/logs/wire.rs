//! Request logs on the wire without re-encoding them. The spool keeps each
//! record as the protobuf encoding of a `RequestLog`; a `LogBatch` is
//! `node_id` (field 1), `last_sequence` (2) and `records` (3, repeated
//! `RequestLog`), and a repeated message field is nothing but each
//! message's bytes behind a tag and a length. So a batch is assembled
//! from the spool's frames as they are: no decoding into structs only for
//! the gRPC codec to encode them again, which cost the shipper most of its
//! CPU. [`ShipCodec`] is the client-side codec of `Logs.Ship` that does
//! this; acknowledgements are decoded as usual.

use bytes::{Buf, BufMut, Bytes};
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
