//! Rate limits for what a flood could multiply: process-log lines that
//! repeat once per request ([`LogLimiter`]: at most one line per kind per
//! interval, with the count of lines held back since the last one), and
//! request-log rows for clients that never authenticated ([`PerAddress`]: a
//! small token bucket per client address, in a map of bounded size).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a rate-limited warning kind may be written.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// One line per interval for each kind of repeated warning.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    kinds: Mutex<HashMap<&'static str, Window>>,
}

#[derive(Debug)]
struct Window {
    last: Instant,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(WARN_INTERVAL)
    }
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line of `kind` may be written now, and if so how many were
    /// held back since the last one. `None`: count this one and stay quiet.
    pub fn admit(&self, kind: &'static str) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    fn admit_at(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        match kinds.get_mut(kind) {
            None => {
                kinds.insert(
                    kind,
                    Window {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
            Some(w) if now.duration_since(w.last) >= self.interval => {
                let held = std::mem::take(&mut w.suppressed);
                w.last = now;
                Some(held)
            }
            Some(w) => {
                w.suppressed += 1;
                None
            }
        }
    }
}

/// The process-wide limiter for repeated warnings.
pub fn warnings() -> &'static LogLimiter {
    static LIMITER: std::sync::OnceLock<LogLimiter> = std::sync::OnceLock::new();
    LIMITER.get_or_init(LogLimiter::default)
}

/// A `tracing::warn!` written at most once per [`WARN_INTERVAL`] for its
/// kind (the message), with `suppressed`: how many were held back since.
#[macro_export]
macro_rules! warn_limited {
    (@kind [$($f:tt)*] $msg:literal) => {
        if let Some(suppressed) = $crate::throttle::warnings().admit($msg) {
            tracing::warn!($($f)* suppressed, $msg);
        }
    };
    (@kind [$($f:tt)*] $head:tt $($rest:tt)*) => {
        $crate::warn_limited!(@kind [$($f)* $head] $($rest)*)
    };
    ($($field:tt)*) => {
        $crate::warn_limited!(@kind [] $($field)*)
    };
}

/// Token buckets by client address: each address may pass `burst` times at
/// once and then `per_minute` times a minute. At most `capacity` addresses
/// are tracked; when the map is full, the addresses whose buckets have
/// refilled are forgotten, and if none has, new addresses share one
/// overflow bucket (so a spread-out flood is still bounded).
#[derive(Debug)]
pub struct PerAddress {
    per_minute: u32,
    capacity: usize,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    by_address: HashMap<String, Bucket>,
    overflow: Bucket,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// How many addresses [`PerAddress`] tracks by default.
pub const ADDRESSES: usize = 4096;

impl PerAddress {
    pub fn new(per_minute: u32, capacity: usize) -> Self {
        PerAddress {
            per_minute,
            capacity: capacity.max(1),
            state: Mutex::new(Buckets {
                by_address: HashMap::new(),
                overflow: Bucket {
                    tokens: f64::from(per_minute),
                    at: Instant::now(),
                },
            }),
        }
    }

    /// Takes a token for `address`; false when its bucket is empty.
    pub fn allow(&self, address: &str) -> bool {
        self.allow_at(address, Instant::now())
    }

    fn allow_at(&self, address: &str, now: Instant) -> bool {
        if self.per_minute == 0 {
            return false;
        }
        let burst = f64::from(self.per_minute);
        let rate = burst / 60.0;
        let refill = |b: &mut Bucket| {
            let secs = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + secs * rate).min(burst);
            b.at = now;
        };
        let take = |b: &mut Bucket| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                true
            } else {
                false
            }
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = s.by_address.get_mut(address) {
            refill(b);
            return take(b);
        }
        if s.by_address.len() >= self.capacity {
            // Forget the addresses that have been quiet long enough to be
            // full again: they lose nothing by being forgotten.
            s.by_address.retain(|_, b| {
                let secs = now.saturating_duration_since(b.at).as_secs_f64();
                b.tokens + secs * rate < burst
            });
        }
        if s.by_address.len() >= self.capacity {
            refill(&mut s.overflow);
            return take(&mut s.overflow);
        }
        let mut b = Bucket {
            tokens: burst,
            at: now,
        };
        let ok = take(&mut b);
        s.by_address.insert(address.to_string(), b);
        ok
    }

    /// How many addresses are tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_address
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit_at("a", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(l.admit_at("a", t0 + Duration::from_secs(i)), None);
        }
        // Another kind has its own window.
        assert_eq!(l.admit_at("b", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(l.admit_at("a", t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(l.admit_at("a", t0 + Duration::from_secs(11)), None);
        assert_eq!(l.admit_at("a", t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let p = PerAddress::new(6, 16);
        let t0 = Instant::now();
        let passed = (0..100).filter(|_| p.allow_at("1.2.3.4", t0)).count();
        assert_eq!(passed, 6);
        // Another address has its own bucket.
        assert!(p.allow_at("5.6.7.8", t0));
        // Six a minute: one token every ten seconds.
        assert!(!p.allow_at("1.2.3.4", t0 + Duration::from_secs(9)));
        assert!(p.allow_at("1.2.3.4", t0 + Duration::from_secs(10)));
        assert!(!p.allow_at("1.2.3.4", t0 + Duration::from_secs(11)));
        assert!(!PerAddress::new(0, 16).allow_at("1.2.3.4", t0));
    }

    #[test]
    fn the_map_is_bounded_and_a_spread_flood_shares_one_bucket() {
        let p = PerAddress::new(3, 8);
        let t0 = Instant::now();
        let passed = (0..1000)
            .filter(|i| p.allow_at(&format!("10.0.{}.{}", i / 256, i % 256), t0))
            .count();
        assert!(p.tracked() <= 8);
        // Eight addresses tracked, then the overflow bucket's three.
        assert_eq!(passed, 8 + 3);
        // Once the tracked buckets have refilled, new addresses get room.
        let later = t0 + Duration::from_secs(120);
        assert!(p.allow_at("192.168.0.1", later));
        assert!(p.tracked() <= 8);
    }
}
