//! Reconnect delays for the discovery stream: exponential growth with full
//! jitter, so data planes that lose the control plane together do not all
//! come back in lockstep.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: each delay is uniform in
/// `[0, ceiling]`, and the ceiling doubles per attempt up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    /// A zero `initial` is raised to 1 ms so the ceiling can grow.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial
            .max(Duration::from_millis(1))
            .min(max.max(Duration::from_millis(1)));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            ceiling: initial,
        }
    }

    /// The next delay to wait, and the ceiling doubles for the one after.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::thread_rng())
    }

    /// As [`Backoff::next_delay`], with the caller's random source.
    pub fn next_delay_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=nanos))
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// Back to the initial ceiling; called once a stream proves healthy.
    pub fn reset(&mut self) {
        self.ceiling = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff::new(100 * MS, 10_000 * MS)
    }

    #[test]
    fn delays_stay_within_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = backoff();
        for _ in 0..200 {
            let ceiling = b.ceiling();
            let d = b.next_delay_with(&mut rng);
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut b = backoff();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay_with(&mut rng);
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        for _ in 0..100 {
            assert!(b.next_delay_with(&mut rng) <= 10_000 * MS);
        }
        assert_eq!(b.ceiling(), 10_000 * MS);
    }

    #[test]
    fn delays_are_jittered() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(10_000 * MS, 10_000 * MS);
        let delays: std::collections::HashSet<_> =
            (0..20).map(|_| b.next_delay_with(&mut rng)).collect();
        assert!(delays.len() > 10, "{delays:?}");
        // Full jitter: the mean of many draws sits near half the ceiling.
        let mean = (0..2000)
            .map(|_| b.next_delay_with(&mut rng).as_secs_f64())
            .sum::<f64>()
            / 2000.0;
        assert!((4.0..6.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn reset_returns_to_initial() {
        let mut b = backoff();
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), 3200 * MS);
        b.reset();
        assert_eq!(b.ceiling(), 100 * MS);
        assert!(b.next_delay() <= 100 * MS);
        assert_eq!(b.ceiling(), 200 * MS);
    }

    #[test]
    fn degenerate_bounds_are_sane() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.ceiling(), MS);
        b.next_delay();
        assert_eq!(b.ceiling(), MS);
        let b = Backoff::new(5 * MS, 2 * MS);
        assert_eq!(b.ceiling(), 2 * MS);
    }
}
