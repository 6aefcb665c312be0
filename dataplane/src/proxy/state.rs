//! Runtime routing state shared by all requests: rotation counters per
//! model, a smoothed time to first byte and outlier health per target, and
//! the retry budget. It outlives snapshots, so a config push does not reset
//! what the gateway has learnt about its upstreams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use llmgw_core::outlier::{Health, Policy};
use llmgw_core::routing::{RouteState, TargetKey};

/// Weight of the newest sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;

#[derive(Debug, Default)]
struct TargetStats {
    ttfb_ewma_ms: Option<f64>,
    health: Health,
}

/// The maps are foldhash's, as the table's ([`llmgw_core::table::NameMap`]):
/// their keys are the snapshot's models and targets, never a client's.
#[derive(Debug, Default)]
pub struct RouterState {
    turns: RwLock<foldhash::HashMap<String, Arc<AtomicU64>>>,
    targets: Mutex<foldhash::HashMap<TargetKey, TargetStats>>,
    policy: Policy,
}

impl RouterState {
    /// Records one attempt's outcome and, on success, its time to first byte.
    pub fn record(&self, key: &TargetKey, ok: bool, ttfb: Option<Duration>) {
        let now = Instant::now();
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        // The key is copied only the first time a target is seen.
        let stats = match targets.get_mut(key) {
            Some(stats) => stats,
            None => targets.entry(key.clone()).or_default(),
        };
        if let Some(t) = ttfb {
            let ms = t.as_secs_f64() * 1000.0;
            stats.ttfb_ewma_ms = Some(match stats.ttfb_ewma_ms {
                Some(prev) => prev + EWMA_ALPHA * (ms - prev),
                None => ms,
            });
        }
        if stats.health.record(ok, now, &self.policy) {
            crate::warn_limited!(
                provider = %key.provider,
                upstream_model = %key.upstream_model,
                "target ejected as an outlier"
            );
        }
    }
}

impl RouteState for RouterState {
    fn next_turn(&self, model: &str) -> u64 {
        if let Some(c) = self
            .turns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
        {
            return c.fetch_add(1, Ordering::Relaxed);
        }
        let mut w = self.turns.write().unwrap_or_else(|e| e.into_inner());
        w.entry(model.to_string())
            .or_default()
            .fetch_add(1, Ordering::Relaxed)
    }

    fn ttfb_ewma_ms(&self, target: &TargetKey) -> Option<f64> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(target)
            .and_then(|s| s.ttfb_ewma_ms)
    }

    fn is_ejected(&self, target: &TargetKey) -> bool {
        let now = Instant::now();
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(target)
            .is_some_and(|s| s.health.is_ejected(now))
    }

    fn random_below(&self, n: u64) -> u64 {
        rand::random::<u64>() % n.max(1)
    }
}

/// A retry budget over a sliding ten-second window: retries may add a share
/// of the first attempts (20% by default), plus a small floor, so an
/// upstream that is down for everyone does not get every request
/// multiplied. The share and floor come with each snapshot's settings.
#[derive(Debug)]
pub struct RetryBudget {
    buckets: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    start: Instant,
    /// (second, requests, retries), one per second of the window.
    slots: [(u64, u64, u64); 10],
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new()
    }
}

impl RetryBudget {
    pub fn new() -> Self {
        RetryBudget {
            buckets: Mutex::new(Buckets {
                start: Instant::now(),
                slots: [(u64::MAX, 0, 0); 10],
            }),
        }
    }

    fn with_slot<R>(&self, f: impl FnOnce(&mut Buckets, usize) -> R) -> R {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let sec = b.start.elapsed().as_secs();
        let i = (sec % 10) as usize;
        if b.slots[i].0 != sec {
            b.slots[i] = (sec, 0, 0);
        }
        f(&mut b, i)
    }

    /// Counts a client request (its first attempt).
    pub fn deposit(&self) {
        self.with_slot(|b, i| b.slots[i].1 += 1);
    }

    /// Takes one retry from the budget if there is room: retries in the
    /// window stay below `ratio` × requests + `floor`.
    pub fn try_withdraw(&self, ratio: f64, floor: u64) -> bool {
        self.with_slot(|b, i| {
            let now = b.slots[i].0;
            let (requests, retries) = b
                .slots
                .iter()
                .filter(|s| s.0 != u64::MAX && now.saturating_sub(s.0) < 10)
                .fold((0, 0), |(q, r), s| (q + s.1, r + s.2));
            let allowed = (requests as f64 * ratio) as u64 + floor;
            if retries < allowed {
                b.slots[i].2 += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_floor_plus_ratio() {
        let b = RetryBudget::new();
        for _ in 0..10 {
            b.deposit();
        }
        // 10 requests * 0.2 + 2 = 4 retries.
        let granted = (0..10).filter(|_| b.try_withdraw(0.2, 2)).count();
        assert_eq!(granted, 4);
        // A bigger budget from a newer snapshot applies at once.
        let more = (0..10).filter(|_| b.try_withdraw(0.5, 2)).count();
        assert_eq!(more, 3);
    }

    #[test]
    fn ewma_and_turns() {
        let s = RouterState::default();
        let k = TargetKey {
            provider: "p".into(),
            upstream_model: "m".into(),
        };
        s.record(&k, true, Some(Duration::from_millis(100)));
        s.record(&k, true, Some(Duration::from_millis(200)));
        let e = s.ttfb_ewma_ms(&k).unwrap();
        assert!((e - 130.0).abs() < 1e-6, "{e}");
        assert_eq!(s.next_turn("a"), 0);
        assert_eq!(s.next_turn("a"), 1);
        assert_eq!(s.next_turn("b"), 0);
        for _ in 0..5 {
            s.record(&k, false, None);
        }
        assert!(s.is_ejected(&k));
    }
}
