//! The spool's recent writes, kept in memory for the shipper.
//!
//! The shipper sends what the writer has just written, and the control
//! plane's acknowledgement comes a moment later. Reading those frames back
//! from the segment file costs a trip to the blocking pool, an `open`, a
//! `read` and a second checksum pass. When only the last write was kept, a
//! shipper whose window of batches was full fell more than one write
//! behind, and under load it read most records back from the file that way.
//!
//! [`Recent`] keeps the frames of the latest writes, up to a bound in
//! bytes. Its lock is its own: it is held only to add, forget or slice
//! frames, never across a `write`, so the shipper reads here without
//! waiting for the spool's writer. Frames leave this store when:
//! - the control plane acknowledges them;
//! - a bound of the spool drops their segment;
//! - a failed write makes what follows uncertain;
//! - newer writes push them past the bound.
//!
//! A read that does not find `from` here returns `None`; the caller then
//! reads the file, which serves the same records.

use std::collections::VecDeque;

use bytes::Bytes;

use super::spool::{RawReadBatch, RawRecord, FRAME_HEADER_BYTES};

/// How many bytes of frames the spool keeps in memory, at most. The oldest
/// go first, and those are the ones already sent: what matters is that the
/// writes not yet sent fit, which under S3's load (a few hundred records of
/// about 2 KiB between two acknowledgements) they do many times over. It is
/// a ceiling, not a cost: once everything is acknowledged the store is
/// empty. Counted in frame bytes; the buffers that hold them may be up to
/// about twice that (a `Vec`'s spare capacity, a part of a write kept for
/// its sibling in another segment).
pub(crate) const RECENT_MAX_BYTES: usize = 4 << 20;

/// The frames of one write that went to one segment, kept.
#[derive(Debug)]
pub(crate) struct KeptWrite {
    /// The write's buffer; shared by the parts of a write that spans
    /// segments.
    pub data: Bytes,
    /// (sequence, start, end) of each frame in `data`, consecutive.
    pub frames: Vec<(u64, usize, usize)>,
    /// First sequence of the segment that holds them: a read, like a read
    /// of the file, stays within one segment.
    pub segment: u64,
}

impl KeptWrite {
    fn first_seq(&self) -> u64 {
        self.frames.first().map_or(0, |f| f.0)
    }

    fn last_seq(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.0)
    }

    /// Bytes of frames, headers included.
    fn bytes(&self) -> usize {
        match (self.frames.first(), self.frames.last()) {
            (Some(first), Some(last)) => last.2 - first.1,
            _ => 0,
        }
    }
}

/// The recent writes, oldest first, with consecutive sequences.
#[derive(Debug)]
pub(crate) struct Recent {
    writes: VecDeque<KeptWrite>,
    bytes: usize,
    max_bytes: usize,
}

impl Recent {
    pub fn new(max_bytes: usize) -> Recent {
        Recent {
            writes: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Adds a write's frames. A write that does not follow the last one
    /// (sequences lost to a failed write in between) starts afresh. The
    /// oldest writes go while the total is over the bound; the newest
    /// always stays.
    pub fn push(&mut self, write: KeptWrite) {
        if write.frames.is_empty() {
            return;
        }
        if self
            .writes
            .back()
            .is_some_and(|last| last.last_seq() + 1 != write.first_seq())
        {
            self.clear();
        }
        self.bytes += write.bytes();
        self.writes.push_back(write);
        while self.bytes > self.max_bytes && self.writes.len() > 1 {
            self.pop_front();
        }
    }

    /// Forgets every write whose frames are all at or below `seq`.
    pub fn forget_through(&mut self, seq: u64) {
        while self.writes.front().is_some_and(|w| w.last_seq() <= seq) {
            self.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.writes.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some(w) = self.writes.pop_front() {
            self.bytes -= w.bytes();
        }
    }

    /// Records from sequence `from` on, at most `max_records` and, past
    /// the first, `max_bytes` of frames, within the segment that holds
    /// `from`: what a read of the file returns. `None` if `from` is not
    /// here.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Option<RawReadBatch> {
        let at = self.writes.partition_point(|w| w.last_seq() < from);
        let first = self.writes.get(at)?;
        let skip = usize::try_from(from.checked_sub(first.first_seq())?).ok()?;
        let segment = first.segment;
        let mut records: Vec<RawRecord> = Vec::new();
        let mut taken = 0usize;
        'writes: for (k, write) in self.writes.range(at..).enumerate() {
            if write.segment != segment {
                break;
            }
            let frames = if k == 0 {
                &write.frames[skip..]
            } else {
                &write.frames[..]
            };
            for &(sequence, start, end) in frames {
                let size = end - start;
                if !records.is_empty() && (records.len() >= max_records || taken + size > max_bytes)
                {
                    break 'writes;
                }
                records.push(RawRecord {
                    sequence,
                    payload: write.data.slice(start + FRAME_HEADER_BYTES..end),
                });
                taken += size;
            }
        }
        let next_seq = records.last().map_or(from, |r| r.sequence + 1);
        Some(RawReadBatch { records, next_seq })
    }

    /// Bytes of frames kept from sequence `from` on, across segments;
    /// `None` if `from` is not here.
    pub fn bytes_from(&self, from: u64) -> Option<usize> {
        let at = self.writes.partition_point(|w| w.last_seq() < from);
        let first = self.writes.get(at)?;
        let skip = usize::try_from(from.checked_sub(first.first_seq())?).ok()?;
        let head = match (first.frames.get(skip), first.frames.last()) {
            (Some(start), Some(last)) => last.2 - start.1,
            _ => return None,
        };
        Some(
            head + self
                .writes
                .range(at + 1..)
                .map(KeptWrite::bytes)
                .sum::<usize>(),
        )
    }

    /// Writes kept (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Keeps only the newest `n` kept writes, each one write's part in one
    /// segment (tests: so that frames damaged in the file are read from
    /// it).
    #[cfg(test)]
    pub fn keep_newest(&mut self, n: usize) {
        while self.writes.len() > n {
            self.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write of `n` frames of `size` bytes each (header included) from
    /// sequence `first`, in `segment`; each payload is its sequence's
    /// digits, padded.
    fn write(first: u64, n: usize, size: usize, segment: u64) -> KeptWrite {
        let mut data = Vec::new();
        let mut frames = Vec::new();
        for i in 0..n {
            let seq = first + i as u64;
            let start = data.len();
            data.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
            let mut payload = seq.to_string().into_bytes();
            payload.resize(size - FRAME_HEADER_BYTES, b'.');
            data.extend_from_slice(&payload);
            frames.push((seq, start, data.len()));
        }
        KeptWrite {
            data: Bytes::from(data),
            frames,
            segment,
        }
    }

    fn seqs(b: &RawReadBatch) -> Vec<u64> {
        b.records.iter().map(|r| r.sequence).collect()
    }

    #[test]
    fn reads_cross_writes_within_a_segment_and_keep_to_the_limits() {
        let mut r = Recent::new(1 << 20);
        r.push(write(1, 3, 20, 1));
        r.push(write(4, 3, 20, 1));
        r.push(write(7, 2, 20, 7));
        let b = r.read(2, 100, 1 << 20).unwrap();
        // Across the first two writes, stopping at the segment's end.
        assert_eq!((seqs(&b), b.next_seq), (vec![2, 3, 4, 5, 6], 7));
        assert_eq!(&b.records[0].payload[..2], b"2.");
        assert_eq!(seqs(&r.read(2, 2, 1 << 20).unwrap()), [2, 3]);
        // Both limits hold across a write's end too.
        assert_eq!(seqs(&r.read(3, 2, 1 << 20).unwrap()), [3, 4]);
        assert_eq!(seqs(&r.read(3, 100, 40).unwrap()), [3, 4]);
        assert_eq!(seqs(&r.read(3, 100, 60).unwrap()), [3, 4, 5]);
        // Bytes: two frames fit in 40, not in 39; the first always goes.
        assert_eq!(seqs(&r.read(2, 100, 40).unwrap()), [2, 3]);
        assert_eq!(seqs(&r.read(2, 100, 39).unwrap()), [2]);
        assert_eq!(seqs(&r.read(2, 100, 1).unwrap()), [2]);
        assert_eq!(seqs(&r.read(7, 100, 1 << 20).unwrap()), [7, 8]);
        // Not here: before the first or after the last.
        assert!(r.read(0, 100, 1 << 20).is_none());
        assert!(r.read(9, 100, 1 << 20).is_none());
    }

    #[test]
    fn the_bytes_kept_from_a_sequence_on_cross_writes_and_segments() {
        let mut r = Recent::new(1 << 20);
        r.push(write(1, 3, 20, 1));
        r.push(write(4, 3, 20, 1));
        r.push(write(7, 2, 30, 7));
        assert_eq!(r.bytes_from(1), Some(180));
        assert_eq!(r.bytes_from(2), Some(160));
        assert_eq!(r.bytes_from(6), Some(80));
        assert_eq!(r.bytes_from(8), Some(30));
        assert_eq!(r.bytes_from(0), None);
        assert_eq!(r.bytes_from(9), None);
        r.forget_through(3);
        assert_eq!(r.bytes_from(2), None);
        assert_eq!(r.bytes_from(4), Some(120));
    }

    #[test]
    fn the_oldest_writes_go_past_the_bound_and_the_newest_stays() {
        let mut r = Recent::new(100);
        r.push(write(1, 2, 30, 1));
        r.push(write(3, 1, 30, 1));
        assert_eq!(r.len(), 2);
        // 60 + 30 + 30 > 100: the first write goes.
        r.push(write(4, 1, 30, 1));
        assert_eq!(r.len(), 2);
        assert!(r.read(2, 100, 1 << 20).is_none());
        assert_eq!(seqs(&r.read(3, 100, 1 << 20).unwrap()), [3, 4]);
        // A write larger than the bound is kept alone.
        r.push(write(5, 10, 30, 1));
        assert_eq!(r.len(), 1);
        assert_eq!(r.read(5, 100, 1 << 20).unwrap().records.len(), 10);
    }

    #[test]
    fn acknowledged_writes_and_writes_after_a_gap_are_forgotten() {
        let mut r = Recent::new(1 << 20);
        r.push(write(1, 3, 20, 1));
        r.push(write(4, 3, 20, 1));
        // Acknowledging 5 keeps the write that holds it (4 to 6).
        r.forget_through(5);
        assert_eq!(seqs(&r.read(4, 100, 1 << 20).unwrap()), [4, 5, 6]);
        assert!(r.read(3, 100, 1 << 20).is_none());
        r.forget_through(6);
        assert_eq!(r.len(), 0);
        // Sequences 8 and 9 were lost to a failed write: what came before
        // is not joined to what comes after.
        r.push(write(7, 1, 20, 7));
        r.push(write(10, 1, 20, 7));
        assert_eq!(r.len(), 1);
        assert!(r.read(7, 100, 1 << 20).is_none());
        assert_eq!(seqs(&r.read(10, 100, 1 << 20).unwrap()), [10]);
    }
}
