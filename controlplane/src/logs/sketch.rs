//! The mergeable latency and TTFB sketch of the log rollups: an
//! HdrHistogram of milliseconds with 2 significant digits, stored as its
//! V2 encoding (a 40-byte header and run-length varints of the counts).
//!
//! **Error.** Values below 256 ms are kept exactly. Above, a value is kept
//! as its bucket, and buckets are at most 1/128 of their lowest value wide
//! (0.8%). A percentile from a sketch is the nearest-rank value of the
//! recorded values (the same rank the raw rows' percentiles use) rounded up
//! to the top of its bucket: never below the exact percentile and at most
//! 1% above it, whatever the number of merged sketches.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

use crate::store::StoreError;

/// Significant decimal digits kept.
const SIGFIG: u8 = 2;

/// The largest relative error of a percentile from a sketch.
pub const RELATIVE_ERROR: f64 = 0.01;

/// A mergeable distribution of durations in milliseconds.
#[derive(Debug, Clone)]
pub struct Sketch(Histogram<u64>);

impl Sketch {
    /// An empty sketch that grows to the values recorded (so a sketch of
    /// small values stays small).
    pub fn new() -> Result<Sketch, StoreError> {
        Histogram::new(SIGFIG)
            .map(Sketch)
            .map_err(|e| StoreError::Invalid(format!("cannot make a latency sketch: {e:?}")))
    }

    /// Records one value. The histogram grows to take it; a value beyond
    /// what it can ever hold (ingest bounds durations to 30 days) is
    /// recorded as its largest.
    pub fn record(&mut self, ms: u64) {
        if self.0.record(ms).is_err() {
            self.0.saturating_record(ms);
        }
    }

    /// Adds another sketch's values.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), StoreError> {
        self.0
            .add(&other.0)
            .map_err(|e| StoreError::Invalid(format!("cannot merge latency sketches: {e:?}")))
    }

    /// How many values it holds.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The V2 encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(64);
        V2Serializer::new()
            .serialize(&self.0, &mut out)
            .map_err(|e| StoreError::Invalid(format!("cannot encode a latency sketch: {e:?}")))?;
        Ok(out)
    }

    /// A sketch from its V2 encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, StoreError> {
        let mut h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(bytes))
            .map_err(|e| {
                StoreError::Invalid(format!("a stored latency sketch is unreadable: {e:?}"))
            })?;
        h.auto(true);
        Ok(Sketch(h))
    }

    /// Nearest-rank percentile: the top of the bucket holding the value of
    /// rank ceil(p × n / 100); 0 for an empty sketch.
    pub fn percentile(&self, p: u32) -> f64 {
        let n = self.0.len();
        if n == 0 {
            return 0.0;
        }
        let rank = (u64::from(p) * n).div_ceil(100).clamp(1, n);
        let mut seen = 0u64;
        for v in self.0.iter_recorded() {
            seen += v.count_at_value();
            if seen >= rank {
                return self.0.highest_equivalent(v.value_iterated_to()) as f64;
            }
        }
        self.0.max() as f64
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
}
