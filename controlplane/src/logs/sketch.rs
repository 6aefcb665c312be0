//! The mergeable latency and TTFB sketch of the log rollups: up to
//! [`EXACT_VALUES`] values as they are (stored as `L` and a varint each),
//! then an HdrHistogram of milliseconds with 2 significant digits, stored
//! as its V2 encoding (a 40-byte header and run-length varints of the
//! counts).
//!
//! **Why two forms.** Most rollup rows are minutes of one model, key and
//! user, holding a few requests. A histogram is a few kilobytes of counts
//! to allocate, and its encoding walks all of them: at ingest, building and
//! encoding histograms for such rows took about as much of the control
//! plane's time as storing the records (docs/benchmarks.md, "Log ingest").
//!
//! **Error.** A sketch of values is exact. In a histogram, values below 256
//! ms are kept exactly; above, a value is kept as its bucket, and buckets
//! are at most 1/128 of their lowest value wide (0.8%). A percentile from
//! a histogram is the nearest-rank value of the recorded values (the same
//! rank the raw rows' percentiles use) rounded up to the top of its bucket:
//! never below the exact percentile and at most 1% above it, whatever the
//! number of merged sketches.
//!
//! **Merging stored sketches** ([`Sketch::merge_encoded`]) reads a V2
//! encoding's counts straight into the sketch merged into, without building
//! the stored histogram first: a stats answer over a month merges tens of
//! thousands of stored sketches, and allocating, decoding and adding a
//! histogram for each was most of its time.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

use crate::store::StoreError;

/// Significant decimal digits kept.
const SIGFIG: u8 = 2;

/// The largest relative error of a percentile from a sketch.
pub const RELATIVE_ERROR: f64 = 0.01;

/// Up to this many values a sketch keeps them exactly, as a list: most
/// minute rows hold a few requests, and a list is a few bytes to encode
/// where a histogram's encoding walks its hundreds of counts.
pub const EXACT_VALUES: usize = 32;

/// The first byte of a list's encoding. A V2 histogram's starts with its
/// cookie (0x1c...).
const LIST_TAG: u8 = b'L';

/// A mergeable distribution of durations in milliseconds.
#[derive(Debug, Clone)]
pub struct Sketch(Repr);

#[derive(Debug, Clone)]
enum Repr {
    /// At most [`EXACT_VALUES`] values, as recorded.
    Values(Vec<u64>),
    Histogram(Box<Histogram<u64>>),
}

/// An empty histogram that grows to the values recorded (so a sketch of
/// small values stays small).
fn histogram() -> Result<Histogram<u64>, StoreError> {
    Histogram::new(SIGFIG)
        .map_err(|e| StoreError::Invalid(format!("cannot make a latency sketch: {e:?}")))
}

/// The cookie of an uncompressed V2 encoding.
const V2_COOKIE: u32 = 0x1c84_9313;
/// A V2 header: cookie, payload length, normalizing offset and digits (4
/// bytes each), lowest and highest trackable values and the integer to
/// double ratio (8 bytes each).
const V2_HEADER: usize = 40;
/// How a histogram of [`SIGFIG`] digits with a lowest value of 1 (as
/// [`histogram`] makes them) lays out its counts: half a sub-bucket is
/// 2^7 values (the smallest power of two of at least 2 × 10^SIGFIG / 2).
const SUB_BUCKET_HALF_MAGNITUDE: u32 = 7;

/// The value a count at `index` stands for, in a histogram of
/// [`SIGFIG`] digits and a lowest value of 1 (hdrhistogram's `value_for`).
fn value_at_index(index: u64) -> Option<u64> {
    let half = 1u64 << SUB_BUCKET_HALF_MAGNITUDE;
    let bucket = (index >> SUB_BUCKET_HALF_MAGNITUDE).checked_sub(1);
    let (bucket, sub) = match bucket {
        Some(b) => (b, (index & (half - 1)) + half),
        None => (0, index & (half - 1)),
    };
    let shift = u32::try_from(bucket).ok()?;
    (shift < 64 - 8).then(|| sub << shift)
}

/// Records one value in a histogram. It grows to take it; a value beyond
/// what it can ever hold (ingest bounds durations to 24 days) is recorded
/// as its largest.
fn record_in(h: &mut Histogram<u64>, ms: u64) {
    if h.record(ms).is_err() {
        h.saturating_record(ms);
    }
}

impl Sketch {
    pub fn new() -> Result<Sketch, StoreError> {
        Ok(Sketch(Repr::Values(Vec::new())))
    }

    /// Records one value.
    pub fn record(&mut self, ms: u64) {
        match &mut self.0 {
            Repr::Values(v) if v.len() < EXACT_VALUES => v.push(ms),
            Repr::Values(v) => match histogram() {
                Ok(mut h) => {
                    for &x in v.iter() {
                        record_in(&mut h, x);
                    }
                    record_in(&mut h, ms);
                    self.0 = Repr::Histogram(Box::new(h));
                }
                // (Cannot happen: the precision is valid.) The values stay exact.
                Err(_) => v.push(ms),
            },
            Repr::Histogram(h) => record_in(h, ms),
        }
    }

    /// Adds another sketch's values.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), StoreError> {
        match (&mut self.0, &other.0) {
            (Repr::Values(mine), Repr::Values(theirs)) => {
                if mine.len() + theirs.len() <= EXACT_VALUES {
                    mine.extend_from_slice(theirs);
                } else {
                    for &x in theirs {
                        self.record(x);
                    }
                }
            }
            (Repr::Histogram(mine), Repr::Values(theirs)) => {
                for &x in theirs {
                    record_in(mine, x);
                }
            }
            (Repr::Values(mine), Repr::Histogram(theirs)) => {
                let mut h = theirs.as_ref().clone();
                for &x in mine.iter() {
                    record_in(&mut h, x);
                }
                self.0 = Repr::Histogram(Box::new(h));
            }
            (Repr::Histogram(mine), Repr::Histogram(theirs)) => {
                mine.add(theirs.as_ref()).map_err(|e| {
                    StoreError::Invalid(format!("cannot merge latency sketches: {e:?}"))
                })?
            }
        }
        Ok(())
    }

    /// Records `n` of one value.
    fn record_n(&mut self, ms: u64, n: u64) -> Result<(), StoreError> {
        if let Repr::Values(v) = &mut self.0 {
            if v.len() as u64 + n <= EXACT_VALUES as u64 {
                v.extend(std::iter::repeat_n(ms, usize::try_from(n).unwrap_or(0)));
                return Ok(());
            }
        }
        let h = self.histogram_mut()?;
        if h.record_n(ms, n).is_err() {
            h.saturating_record_n(ms, n);
        }
        Ok(())
    }

    /// Its histogram, after turning a list into one.
    fn histogram_mut(&mut self) -> Result<&mut Histogram<u64>, StoreError> {
        if let Repr::Values(v) = &self.0 {
            let mut h = histogram()?;
            for &x in v {
                record_in(&mut h, x);
            }
            self.0 = Repr::Histogram(Box::new(h));
        }
        match &mut self.0 {
            Repr::Histogram(h) => Ok(h),
            Repr::Values(_) => Err(StoreError::Invalid(
                "a latency sketch did not become a histogram".into(),
            )),
        }
    }

    /// Adds the sketch `bytes` encodes (see [`Sketch::to_bytes`]), the same
    /// as `merge(&Sketch::from_bytes(bytes)?)` but without building it: a
    /// list's values are recorded, and a V2 histogram of the layout this
    /// module writes has its counts read straight into this sketch (any
    /// other encoding takes the long way).
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let unreadable = |what: &str| {
            StoreError::Invalid(format!("a stored latency sketch is unreadable: {what}"))
        };
        if let Some(mut rest) = bytes.strip_prefix(&[LIST_TAG]) {
            while !rest.is_empty() {
                let v = prost::encoding::decode_varint(&mut rest)
                    .map_err(|e| unreadable(&e.to_string()))?;
                self.record(v);
            }
            return Ok(());
        }
        let be32 = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let be64 = |at: usize| -> Option<u64> {
            Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let ours = be32(0) == Some(V2_COOKIE)
            && be32(8) == Some(0)
            && be32(12) == Some(u32::from(SIGFIG))
            && be64(16) == Some(1)
            && be64(32) == Some(1f64.to_bits());
        if !ours {
            return self.merge(&Sketch::from_bytes(bytes)?);
        }
        let len = be32(4).and_then(|l| usize::try_from(l).ok()).unwrap_or(0);
        let mut payload = bytes
            .get(V2_HEADER..V2_HEADER + len)
            .ok_or_else(|| unreadable("its payload is cut short"))?;
        // A histogram's buckets go into a histogram: as exact values each
        // would count as its bucket's lowest, below the exact percentile.
        self.histogram_mut()?;
        let mut index: u64 = 0;
        while !payload.is_empty() {
            // Zig-zag varints (prost's match the V2 ones up to 8 bytes:
            // counts below 2^56): a count, or minus a run of zero counts.
            let raw = prost::encoding::decode_varint(&mut payload)
                .map_err(|e| unreadable(&e.to_string()))?;
            let count = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            if count < 0 {
                index = index.saturating_add(count.unsigned_abs());
                continue;
            }
            if count > 0 {
                let value =
                    value_at_index(index).ok_or_else(|| unreadable("a count is out of range"))?;
                self.record_n(value, count.unsigned_abs())?;
            }
            index = index.saturating_add(1);
        }
        Ok(())
    }

    /// How many values it holds.
    pub fn count(&self) -> u64 {
        match &self.0 {
            Repr::Values(v) => v.len() as u64,
            Repr::Histogram(h) => h.len(),
        }
    }

    /// The encoding: [`LIST_TAG`] and each value as a varint, or a
    /// histogram's V2 encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        match &self.0 {
            Repr::Values(v) => {
                let mut out = Vec::with_capacity(1 + 3 * v.len());
                out.push(LIST_TAG);
                for &x in v {
                    prost::encoding::encode_varint(x, &mut out);
                }
                Ok(out)
            }
            Repr::Histogram(h) => {
                let mut out = Vec::with_capacity(64);
                V2Serializer::new()
                    .serialize(h.as_ref(), &mut out)
                    .map_err(|e| {
                        StoreError::Invalid(format!("cannot encode a latency sketch: {e:?}"))
                    })?;
                Ok(out)
            }
        }
    }

    /// A sketch from its encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, StoreError> {
        let unreadable = |e: &dyn std::fmt::Debug| {
            StoreError::Invalid(format!("a stored latency sketch is unreadable: {e:?}"))
        };
        if let Some(mut rest) = bytes.strip_prefix(&[LIST_TAG]) {
            let mut v = Vec::with_capacity(rest.len().min(EXACT_VALUES));
            while !rest.is_empty() {
                v.push(prost::encoding::decode_varint(&mut rest).map_err(|e| unreadable(&e))?);
            }
            if v.len() > EXACT_VALUES {
                let mut s = Sketch(Repr::Values(Vec::new()));
                for x in v {
                    s.record(x);
                }
                return Ok(s);
            }
            return Ok(Sketch(Repr::Values(v)));
        }
        let mut h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(bytes))
            .map_err(|e| unreadable(&e))?;
        h.auto(true);
        Ok(Sketch(Repr::Histogram(Box::new(h))))
    }

    /// Nearest-rank percentile: the value of rank ceil(p × n / 100), exact
    /// while the values are; from a histogram, the top of the bucket
    /// holding it. 0 for an empty sketch.
    pub fn percentile(&self, p: u32) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = (u64::from(p) * n).div_ceil(100).clamp(1, n);
        let h = match &self.0 {
            Repr::Values(v) => {
                let mut sorted = v.clone();
                sorted.sort_unstable();
                let i = usize::try_from(rank - 1).unwrap_or(0).min(sorted.len() - 1);
                return sorted[i] as f64;
            }
            Repr::Histogram(h) => h,
        };
        let mut seen = 0u64;
        for v in h.iter_recorded() {
            seen += v.count_at_value();
            if seen >= rank {
                return h.highest_equivalent(v.value_iterated_to()) as f64;
            }
        }
        h.max() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::stats::percentile;

    #[test]
    fn percentiles_within_the_stated_error_after_merging_and_encoding() {
        // A spread of durations, split over several sketches.
        let values: Vec<u32> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) % 90_000) + (i % 7))
            .collect();
        let mut merged = Sketch::new().unwrap();
        for part in values.chunks(700) {
            let mut s = Sketch::new().unwrap();
            for &v in part {
                s.record(u64::from(v));
            }
            let back = Sketch::from_bytes(&s.to_bytes().unwrap()).unwrap();
            merged.merge(&back).unwrap();
        }
        assert_eq!(merged.count(), values.len() as u64);
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for p in [1, 50, 90, 95, 99, 100] {
            let exact = percentile(&sorted, p);
            let got = merged.percentile(p);
            assert!(got >= exact, "p{p}: {got} < {exact}");
            assert!(
                got <= exact * (1.0 + RELATIVE_ERROR),
                "p{p}: {got} vs {exact}"
            );
        }
        // Small values are exact.
        let mut s = Sketch::new().unwrap();
        for v in [3u64, 1, 200, 255, 7] {
            s.record(v);
        }
        assert_eq!(s.percentile(50), 7.0);
        assert_eq!(s.percentile(100), 255.0);
        assert_eq!(Sketch::new().unwrap().percentile(50), 0.0);
        assert!(Sketch::from_bytes(b"not a sketch").is_err());
    }

    fn values(v: &[u64]) -> Sketch {
        let mut s = Sketch::new().unwrap();
        for &x in v {
            s.record(x);
        }
        s
    }

    fn is_list(s: &Sketch) -> bool {
        s.to_bytes().unwrap()[0] == LIST_TAG
    }

    #[test]
    fn a_few_values_stay_exact_as_a_list_and_many_become_a_histogram() {
        let few = values(&[70_001, 3, 300_000, 12]);
        let bytes = few.to_bytes().unwrap();
        assert_eq!(bytes.len(), 1 + 3 + 1 + 3 + 1);
        let back = Sketch::from_bytes(&bytes).unwrap();
        assert!(is_list(&back));
        assert_eq!(back.count(), 4);
        // Exact, not rounded up to a bucket's top.
        assert_eq!(back.percentile(50), 12.0);
        assert_eq!(back.percentile(75), 70_001.0);
        assert_eq!(back.percentile(100), 300_000.0);
        assert_eq!(Sketch::from_bytes(&[LIST_TAG]).unwrap().count(), 0);
        assert!(Sketch::from_bytes(&[LIST_TAG, 0x80]).is_err());

        let full: Vec<u64> = (1..=EXACT_VALUES as u64).map(|i| i * 1000).collect();
        assert!(is_list(&values(&full)));
        let mut more = full.clone();
        more.push(1);
        let h = values(&more);
        assert!(!is_list(&h));
        assert_eq!(h.count(), EXACT_VALUES as u64 + 1);
        // A histogram's encoding reads back as one (rows stored before the
        // list form are V2 too).
        let back = Sketch::from_bytes(&h.to_bytes().unwrap()).unwrap();
        assert!(!is_list(&back));
        assert_eq!(back.percentile(100), h.percentile(100));
    }

    #[test]
    fn merging_an_encoding_equals_merging_the_sketch_it_encodes() {
        // Every index of a histogram maps to the value hdrhistogram gives it.
        let mut h = histogram().unwrap();
        for i in 0..3000u64 {
            let v = value_at_index(i).unwrap();
            assert_eq!(h.lowest_equivalent(v), v, "index {i}");
            if i > 0 {
                assert!(v > value_at_index(i - 1).unwrap());
                assert_eq!(h.next_non_equivalent(value_at_index(i - 1).unwrap()), v);
            }
            record_in(&mut h, v);
        }
        let spread = |seed: u64, n: u64| -> Vec<u64> {
            (0..n)
                .map(|i| {
                    let x = (i + seed)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .rotate_left(13);
                    // 0 to about 40 minutes, over the scales.
                    (x % 2_400_000) >> (x % 13)
                })
                .collect()
        };
        let parts = [
            spread(1, 3),
            spread(2, 40),
            spread(3, 5000),
            spread(4, 31),
            spread(5, 900),
            vec![0, 0, 2_591_999_999],
        ];
        let mut slow = Sketch::new().unwrap();
        let mut fast = Sketch::new().unwrap();
        for p in &parts {
            let bytes = values(p).to_bytes().unwrap();
            slow.merge(&Sketch::from_bytes(&bytes).unwrap()).unwrap();
            fast.merge_encoded(&bytes).unwrap();
            assert_eq!(fast.count(), slow.count());
            for q in [1, 25, 50, 90, 95, 99, 100] {
                assert_eq!(fast.percentile(q), slow.percentile(q), "p{q}");
            }
        }
        // Into a list, staying one while it fits.
        let mut small = values(&[5, 6]);
        small
            .merge_encoded(&values(&[7, 8]).to_bytes().unwrap())
            .unwrap();
        assert!(is_list(&small));
        assert_eq!((small.count(), small.percentile(100)), (4, 8.0));
        // Damaged encodings are refused.
        let bytes = values(&parts[2]).to_bytes().unwrap();
        assert!(fast.merge_encoded(&bytes[..bytes.len() - 3]).is_err());
        assert!(fast.merge_encoded(b"not a sketch").is_err());
    }

    #[test]
    fn merges_of_either_form_keep_every_value() {
        let small: Vec<u64> = (0..10).map(|i| i * 37 + 1).collect();
        let big: Vec<u64> = (0..200).map(|i| i * 911 + 5).collect();
        let all = |parts: &[&[u64]]| -> Vec<u32> {
            let mut v: Vec<u32> = parts
                .iter()
                .flat_map(|p| p.iter().map(|&x| x as u32))
                .collect();
            v.sort_unstable();
            v
        };
        let check = |s: &Sketch, parts: &[&[u64]]| {
            let exact = all(parts);
            assert_eq!(s.count(), exact.len() as u64);
            for p in [1, 50, 95, 100] {
                let want = percentile(&exact, p);
                let got = s.percentile(p);
                assert!(
                    got >= want && got <= want * (1.0 + RELATIVE_ERROR),
                    "p{p}: {got} vs {want}"
                );
            }
        };
        // Values and values, within the list and past it.
        let mut a = values(&small);
        a.merge(&values(&small)).unwrap();
        assert!(is_list(&a));
        check(&a, &[&small, &small]);
        let mut b = values(&small);
        b.merge(&values(&big[..30])).unwrap();
        assert!(!is_list(&b));
        check(&b, &[&small, &big[..30]]);
        // A histogram and values, both ways.
        let mut c = values(&big);
        c.merge(&values(&small)).unwrap();
        check(&c, &[&big, &small]);
        let mut d = values(&small);
        d.merge(&values(&big)).unwrap();
        check(&d, &[&small, &big]);
        // Through the encodings, as ingest merges a stored row.
        let mut e = Sketch::from_bytes(&values(&big).to_bytes().unwrap()).unwrap();
        e.merge(&Sketch::from_bytes(&values(&small).to_bytes().unwrap()).unwrap())
            .unwrap();
        check(&e, &[&big, &small]);
    }
}
