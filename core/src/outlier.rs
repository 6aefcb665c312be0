//! Outlier ejection: a target whose recent attempts mostly failed is ejected
//! for a cool-down, which doubles each time the same target is ejected again
//! soon after. Pure logic; the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Outcomes remembered per target.
    pub window: usize,
    /// Fewest outcomes before a verdict.
    pub min_requests: usize,
    /// Failure share at or above which the target is ejected.
    pub failure_ratio: f64,
    pub base_cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window: 20,
            min_requests: 5,
            failure_ratio: 0.5,
            base_cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// The health record of one target.
#[derive(Debug, Default, Clone)]
pub struct Health {
    outcomes: VecDeque<bool>,
    ejected_until: Option<Instant>,
    /// Ejections in a row; reset after a healthy stretch.
    strikes: u32,
}

impl Health {
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }

    /// Records one attempt; returns true when this outcome ejected it.
    pub fn record(&mut self, ok: bool, now: Instant, policy: &Policy) -> bool {
        if let Some(until) = self.ejected_until {
            if now >= until {
                // Re-admitted: judge it afresh, but remember the strikes.
                self.ejected_until = None;
                self.outcomes.clear();
            }
        }
        self.outcomes.push_back(ok);
        while self.outcomes.len() > policy.window {
            self.outcomes.pop_front();
        }
        if self.ejected_until.is_some() {
            return false;
        }
        let n = self.outcomes.len();
        let failures = self.outcomes.iter().filter(|o| !**o).count();
        if n >= policy.min_requests && failures as f64 / n as f64 >= policy.failure_ratio {
            self.strikes = self.strikes.saturating_add(1);
            let factor = 1u32 << (self.strikes - 1).min(16);
            let cooldown = policy
                .base_cooldown
                .saturating_mul(factor)
                .min(policy.max_cooldown);
            self.ejected_until = Some(now + cooldown);
            self.outcomes.clear();
            return true;
        }
        if n >= policy.window && failures == 0 {
            self.strikes = 0;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_then_readmits_with_doubling_cooldown() {
        let p = Policy::default();
        let mut h = Health::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(!h.record(false, t0, &p));
        }
        assert!(h.record(false, t0, &p));
        assert!(h.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!h.is_ejected(t0 + Duration::from_secs(10)));
        let t1 = t0 + Duration::from_secs(11);
        for _ in 0..4 {
            h.record(false, t1, &p);
        }
        assert!(h.record(false, t1, &p));
        assert!(h.is_ejected(t1 + Duration::from_secs(19)));
        assert!(!h.is_ejected(t1 + Duration::from_secs(20)));
    }

    #[test]
    fn mostly_healthy_is_not_ejected() {
        let p = Policy::default();
        let mut h = Health::default();
        let t = Instant::now();
        for i in 0..40 {
            assert!(!h.record(i % 3 != 0, t, &p));
        }
        assert!(!h.is_ejected(t));
    }
}
