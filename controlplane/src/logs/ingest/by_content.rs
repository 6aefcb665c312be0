//! Ingest's side of the bodies stored by content (`logs/pieces.rs`): which
//! pieces of a prepared batch are new and compressed ([`new_pieces`], on
//! the blocking pool with the rest of `record.rs`'s preparation), and
//! which of them the writers store with the records inserted now
//! ([`piece_rows`]).

use std::collections::{BTreeMap, HashSet};

use llmgw_proto::v1 as pb;

use super::record::{Batch, Prepared};
use crate::logs::details;
use crate::logs::pieces::{self, Key};
use crate::store::StoreError;

/// The pieces of the bodies of records stored with details that `known`
/// does not hold (or holds for a day too near the body cutoff to take its
/// word: `pieces::trusted`), each compressed once.
pub(super) fn new_pieces(
    good: &[Prepared],
    known: &pieces::Known,
    body_days: u32,
    now: i64,
) -> Result<BTreeMap<Key, Vec<u8>>, StoreError> {
    let mut new = BTreeMap::new();
    let mut cctx = None;
    for p in good.iter().filter(|p| p.block.is_some()) {
        let day = pieces::day_of(p.rec.time_ms);
        let trusted = pieces::trusted(body_days, day, now);
        for (field, hash, range) in &p.cuts {
            let key = (day, *hash);
            if new.contains_key(&key) || (trusted && known.contains(&key)) {
                continue;
            }
            let cctx = match &mut cctx {
                Some(c) => c,
                None => cctx.insert(pieces::compressor()?),
            };
            let body = body_field(&p.rec, *field)?.as_bytes();
            let piece = body
                .get(range.clone())
                .ok_or_else(|| StoreError::Invalid("a body piece out of its body".into()))?;
            new.insert(key, pieces::pack(cctx, piece)?);
        }
    }
    Ok(new)
}

/// The body of a record that a details field of [`pieces::PIECED`] holds.
fn body_field(rec: &pb::RequestLog, field: usize) -> Result<&str, StoreError> {
    match field {
        details::REQUEST_BODY => Ok(&rec.request_body),
        details::UPSTREAM_REQUEST_BODY => Ok(&rec.upstream_request_body),
        _ => Err(StoreError::Invalid(format!(
            "detail field {field} is not stored by content"
        ))),
    }
}

/// The pieces of the records of `fresh` (stored now, with details): the
/// rows to write (those `pieces` holds, in key order, so concurrent
/// batches take their locks in one order), and every key they refer to
/// (known to be stored once the batch commits).
pub(super) fn piece_rows<'a>(
    batch: &Batch<'a>,
    fresh: &HashSet<String>,
) -> (Vec<(&'a Key, &'a [u8])>, Vec<Key>) {
    let mut keys = std::collections::BTreeSet::new();
    for p in batch.good {
        if p.block.is_some() && fresh.contains(&p.rec.id) {
            let day = pieces::day_of(p.rec.time_ms);
            keys.extend(p.cuts.iter().map(|(_, h, _)| (day, *h)));
        }
    }
    let rows = batch
        .pieces
        .iter()
        .filter(|(k, _)| keys.contains(*k))
        .map(|(k, d)| (k, d.as_slice()))
        .collect();
    (rows, keys.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::good;
    use super::super::record::{prepare_all, Blocks};
    use super::*;

    #[test]
    fn long_bodies_are_cut_into_pieces_each_compressed_once() {
        let now = 1_714_564_900_000;
        // 40 kB of text with content to cut at, and two bodies that begin
        // with it.
        let prompt = pieces::words(7, 40_000);
        let record = |n: u32, time_ms: i64, body: String| pb::RequestLog {
            id: format!("0190a2b4-0000-7000-8000-{n:012x}"),
            time_ms,
            request_body: body,
            ..good()
        };
        let records = vec![
            record(1, now, format!("{prompt} turn 1")),
            record(2, now, format!("{prompt} turn 2")),
            record(3, now, "{}".into()),
            // Past its body cutoff: stored without details, so no pieces.
            record(4, now - 8 * 24 * 3600 * 1000, format!("{prompt} old")),
        ];
        let known = pieces::Known::default();
        let batch = prepare_all(records.clone(), "n", now, None, 7, 1000, &known).unwrap();
        let [one, two, short, old] = &batch.good[..] else {
            panic!("four records");
        };
        assert_eq!((one.pieced, two.pieced, short.pieced), (0b100, 0b100, 0));
        assert!(old.block.is_none() && one.block.is_some());
        // The bodies share all but their last pieces, compressed once.
        let keys = |p: &Prepared| -> Vec<Key> {
            p.cuts
                .iter()
                .map(|(_, h, _)| (pieces::day_of(p.rec.time_ms), *h))
                .collect()
        };
        let mut all: Vec<Key> = keys(one).into_iter().chain(keys(two)).collect();
        all.sort_unstable();
        all.dedup();
        assert!(all.len() < keys(one).len() + 3, "{} pieces", all.len());
        assert_eq!(batch.pieces.keys().copied().collect::<Vec<_>>(), all);
        // The plain form holds the hashes and the last piece only.
        assert!(one.plain.len() < 20_000);
        let blocks = Blocks {
            list: batch.blocks,
            dict: None,
        };
        let b = Batch {
            node: "n",
            good: &batch.good,
            blocks: &blocks,
            pieces: &batch.pieces,
            per_insert: 1000,
            now,
        };
        // Only the pieces of records stored now are written, in key order.
        let fresh: HashSet<String> = [one.rec.id.clone()].into();
        let (rows, referred) = piece_rows(&b, &fresh);
        let mut of_one = keys(one);
        of_one.sort_unstable();
        of_one.dedup();
        assert_eq!(rows.iter().map(|(k, _)| **k).collect::<Vec<_>>(), of_one);
        assert_eq!(referred, of_one);
        // Pieces this control plane stored before are not compressed again.
        known.add(of_one.iter().copied());
        let again = prepare_all(records, "n", now, None, 7, 1000, &known).unwrap();
        assert_eq!(again.pieces.len(), all.len() - of_one.len());
        assert!(again.pieces.keys().all(|k| !of_one.contains(k)));
    }
}
