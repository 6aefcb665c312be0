//! A data plane's local accounting of one quota bucket (#15): what the
//! control plane granted it for the current window, what it has used and
//! holds in reservations, how far past its grant it may go (the slack),
//! what it may admit while no control plane answers (the fallback share),
//! and what it asks for in its next report (`wanted`). Pure: the caller
//! passes the time and the fleet's figures; no clock, no lock, no I/O.
//!
//! Units are those of the bucket's kind (`crate::limits::Kind`): requests
//! (rpm), tokens (tpm), requests in flight (concurrency) or micro-dollars
//! (budget). The protocol is proto/llmgw/v1/quota.proto.
//!
//! # What a data plane may admit
//! - Connected (an assignment arrived within the last lease): up to
//!   `min(limit, granted + slack)`, where `slack = ceil(limit × slack% /
//!   100 / data_planes)`. A concurrency lease past its `expires_at_ms`
//!   counts as no grant.
//! - Outage (no assignment for longer than a lease, or none ever): per the
//!   limit's `on_outage`, `open` admits up to the fallback share
//!   `ceil(limit / data_planes)` (data planes last received, 1 before any),
//!   `closed` nothing.
//! - A budget whose spend this data plane has not heard yet (none has
//!   arrived since the bucket was made), while connected or just started,
//!   admits one request and reports at once, asking for the figure
//!   (`wanted` 1); the rest wait for it. In an outage it falls back like a
//!   known one, from a spend of 0. A new period of a budget whose spend was
//!   known starts known, at 0.
//! - A budget admits while `fleet_used + charged_since < budget` (connected;
//!   a new `fleet_used` keeps what was charged here beyond it, since spend
//!   only grows, unless it is below the last one: a reset)
//!   or, in an outage with `open`, while `charged_since < ceil((budget −
//!   fleet_used) / data_planes)`.
//!
//! # What it asks for
//! `wanted = min(limit, used + max(floor, 2 × demand))` for rpm and tpm,
//! where `demand` is what was asked of the bucket since the last report
//! (admitted or refused) and `floor = ceil(limit / (4 × data_planes))`; two
//! report intervals of the recent demand cover the time until the next
//! grant arrives. Concurrency asks for `min(limit, peak + floor)` while in
//! use, `peak` being the most requests wanted at once (in flight, plus one
//! refused) and held while the requests in flight come within one of it;
//! it is forgotten a lease after, and an idle data plane asks for 0, so it
//! gives its slots back. Budgets ask for 1 while their spend is unknown, else
//! 0: their assignment carries the spend.

use crate::limits::{Kind, OnOutage};

/// The fleet's figures a bucket's allowance depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    /// Whether an assignment arrived within the last lease.
    pub connected: bool,
    /// Not connected yet, but only just started: no control plane has
    /// answered this process, which is younger than a lease. Unknown
    /// budgets wait for their spend then, as when connected, rather than
    /// fall back as in an outage.
    pub starting: bool,
    /// Data planes the control plane last counted (at least 1).
    pub data_planes: u32,
    /// `Settings.quota_slack_percent`.
    pub slack_percent: u32,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// How far past its grant one data plane may admit while it waits for
/// more: `ceil(limit × slack% / 100 / data_planes)`.
#[inline]
pub fn slack(limit: u64, slack_percent: u32, data_planes: u32) -> u64 {
    let den = 100 * u64::from(data_planes.max(1));
    // Every admission asks this: 64-bit arithmetic unless the product
    // overflows (a limit beyond 10^17), where 128-bit division (a call of
    // its own, tens of instructions) takes over.
    if let Some(num) = limit.checked_mul(u64::from(slack_percent)) {
        return num.div_ceil(den);
    }
    let num = u128::from(limit) * u128::from(slack_percent);
    u64::try_from(num.div_ceil(u128::from(den))).unwrap_or(u64::MAX)
}

/// What one data plane admits per window while no control plane answers
/// (`on_outage` "open"): `ceil(limit / data_planes)`.
#[inline]
pub fn fallback_share(limit: u64, data_planes: u32) -> u64 {
    ceil_div(limit, u64::from(data_planes.max(1)))
}

/// The least a data plane asks for: `ceil(limit / (4 × data_planes))`.
pub fn wanted_floor(limit: u64, data_planes: u32) -> u64 {
    ceil_div(limit, 4 * u64::from(data_planes.max(1)))
}

/// One bucket's local state for its current window (rpm, tpm), period
/// (budget) or lease (concurrency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub kind: Kind,
    pub limit: u64,
    pub on_outage: OnOutage,
    /// The window's or period's start, Unix ms; 0 for concurrency.
    pub window_start_ms: i64,
    /// Units granted for this window (the current lease for concurrency).
    pub granted: u64,
    /// When the grant lapses, Unix ms (concurrency leases).
    pub expires_at_ms: i64,
    /// Whether an assignment for this window has arrived.
    pub assigned: bool,
    /// Units used in the window: admitted requests; settled tokens plus
    /// outstanding reservations; requests in flight; micro-dollars charged.
    pub used: u64,
    /// Outstanding token reservations (part of `used`).
    pub reserved: u64,
    /// The control plane's fleet-wide figure (sum of grants; a budget's
    /// durable spend).
    pub fleet_used: u64,
    /// Budget: micro-dollars charged here since `fleet_used` arrived.
    pub charged_since: u64,
    /// Units asked of the bucket (admitted or refused) since the last report.
    pub demand: u64,
    /// Concurrency: the most in flight plus refused, and when it was seen.
    pub peak: u64,
    pub peak_at_ms: i64,
    /// Budget: requests admitted before any spend figure arrived (see
    /// [`Bucket::budget_admits`]).
    pub admitted_unknown: u64,
}

impl Bucket {
    pub fn new(kind: Kind, limit: u64, on_outage: OnOutage, window_start_ms: i64) -> Self {
        Bucket {
            kind,
            limit,
            on_outage,
            window_start_ms,
            granted: 0,
            expires_at_ms: 0,
            assigned: false,
            used: 0,
            reserved: 0,
            fleet_used: 0,
            charged_since: 0,
            demand: 0,
            peak: 0,
            peak_at_ms: 0,
            admitted_unknown: 0,
        }
    }

    /// Moves to the window holding now (`window_start_ms`): a new window
    /// starts with nothing used and nothing granted. Concurrency has one
    /// endless window.
    #[inline]
    pub fn roll(&mut self, window_start_ms: i64) {
        if self.kind == Kind::Concurrency || window_start_ms == self.window_start_ms {
            return;
        }
        let known = self.assigned;
        *self = Bucket::new(self.kind, self.limit, self.on_outage, window_start_ms);
        // A new budget period starts with nothing spent: a data plane that
        // knew the spend knows it is 0 at the start (charges elsewhere since
        // then arrive with the next figure, as within a period).
        if self.kind == Kind::Budget {
            self.assigned = known;
        }
    }

    /// Units the bucket may hold in this window (rpm, tpm, concurrency).
    #[inline]
    pub fn allowance(&self, fleet: Fleet, now_ms: i64) -> u64 {
        if !fleet.connected {
            return match self.on_outage {
                OnOutage::Open => fallback_share(self.limit, fleet.data_planes),
                OnOutage::Closed => 0,
            };
        }
        let granted = if self.kind == Kind::Concurrency && self.expires_at_ms <= now_ms {
            0
        } else {
            self.granted
        };
        let extra = slack(self.limit, fleet.slack_percent, fleet.data_planes);
        self.limit.min(granted.saturating_add(extra))
    }

    /// Admits `units` (1 request, a token reservation, 1 slot) if they fit
    /// the allowance, and takes them.
    pub fn try_take(&mut self, units: u64, fleet: Fleet, now_ms: i64) -> bool {
        let ok = self.fits(units, fleet, now_ms);
        self.ask(units, now_ms);
        if ok {
            self.take(units);
        }
        ok
    }

    /// Counts `units` asked of the bucket (call before taking them),
    /// admitted or refused, for the next report's `wanted`.
    #[inline]
    pub fn ask(&mut self, units: u64, now_ms: i64) {
        self.demand = self.demand.saturating_add(units);
        if self.kind == Kind::Concurrency {
            // Requests that wanted a slot at once: those held and this one.
            let want = self.used + 1;
            if want >= self.peak {
                self.peak = want;
                self.peak_at_ms = now_ms;
            }
        }
    }

    /// Whether `units` fit without taking them.
    #[inline]
    pub fn fits(&self, units: u64, fleet: Fleet, now_ms: i64) -> bool {
        match self.kind {
            Kind::Budget => self.budget_admits(fleet),
            _ => self.used.saturating_add(units) <= self.allowance(fleet, now_ms),
        }
    }

    /// Takes `units` that [`Bucket::fits`] admitted.
    #[inline]
    pub fn take(&mut self, units: u64) {
        match self.kind {
            Kind::Budget => {
                if !self.assigned {
                    self.admitted_unknown += 1;
                }
            }
            Kind::Tpm => {
                self.used = self.used.saturating_add(units);
                self.reserved = self.reserved.saturating_add(units);
            }
            Kind::Rpm | Kind::Concurrency => self.used = self.used.saturating_add(units),
        }
    }

    /// Gives back `units` that [`Bucket::take`] took, before anyone else
    /// saw them (an admission that another of its buckets refused).
    pub fn untake(&mut self, units: u64) {
        match self.kind {
            Kind::Budget => {
                if !self.assigned {
                    self.admitted_unknown = self.admitted_unknown.saturating_sub(1);
                }
            }
            Kind::Tpm => {
                self.used = self.used.saturating_sub(units);
                self.reserved = self.reserved.saturating_sub(units);
            }
            Kind::Rpm | Kind::Concurrency => self.used = self.used.saturating_sub(units),
        }
    }

    /// Whether a budget admits another request. Before any spend figure
    /// arrived (a data plane that just started, or an entry created again
    /// after it was idle), the spend is unknown: one request is admitted,
    /// which makes the data plane report at once, and the rest wait for the
    /// figure ([`Bucket::spend_unknown`]).
    #[inline]
    pub fn budget_admits(&self, fleet: Fleet) -> bool {
        if !self.assigned && (fleet.connected || fleet.starting) {
            return self.admitted_unknown == 0;
        }
        if fleet.connected {
            return self.fleet_used.saturating_add(self.charged_since) < self.limit;
        }
        match self.on_outage {
            OnOutage::Open => {
                let left = self.limit.saturating_sub(self.fleet_used);
                self.charged_since < fallback_share(left, fleet.data_planes)
            }
            OnOutage::Closed => false,
        }
    }

    /// Settles a token reservation made in `window_start_ms` with the real
    /// count. A reservation from a window that has ended is dropped with
    /// it: the tokens count in no window.
    pub fn settle(&mut self, window_start_ms: i64, reserved: u64, actual: u64) {
        if window_start_ms != self.window_start_ms {
            return;
        }
        let reserved = reserved.min(self.reserved);
        self.reserved -= reserved;
        self.used = self.used.saturating_sub(reserved).saturating_add(actual);
    }

    /// A budget whose spend this data plane has not heard yet (it asks for
    /// it: its report's `wanted` is 1).
    #[inline]
    pub fn spend_unknown(&self) -> bool {
        self.kind == Kind::Budget && !self.assigned
    }

    /// Gives back a concurrency slot.
    pub fn release(&mut self) {
        self.used = self.used.saturating_sub(1);
    }

    /// Charges a budget with a request's cost, in the period it was admitted.
    pub fn charge(&mut self, period_start_ms: i64, micros: u64) {
        if period_start_ms != self.window_start_ms {
            return;
        }
        self.used = self.used.saturating_add(micros);
        self.charged_since = self.charged_since.saturating_add(micros);
    }

    /// Takes an assignment for `window_start_ms`; one for another window is
    /// ignored (an old window's grant is dead, a future one comes again).
    pub fn assign(
        &mut self,
        window_start_ms: i64,
        granted: u64,
        limit: u64,
        fleet_used: u64,
        expires_at_ms: i64,
    ) {
        if self.kind != Kind::Concurrency && window_start_ms != self.window_start_ms {
            return;
        }
        self.granted = granted;
        if limit > 0 {
            self.limit = limit;
        }
        if self.kind == Kind::Budget {
            // Spend only grows, so both the new figure and the old one plus
            // what was charged here since are at most the true spend: keep
            // the larger. A figure below the old one is a reset.
            self.charged_since = if fleet_used >= self.fleet_used {
                (self.fleet_used.saturating_add(self.charged_since)).saturating_sub(fleet_used)
            } else {
                0
            };
        }
        self.fleet_used = fleet_used;
        self.expires_at_ms = expires_at_ms;
        self.assigned = true;
    }

    /// What to ask for in the next report (see the module docs), and the
    /// demand counter starts again.
    pub fn wanted(&mut self, data_planes: u32, now_ms: i64, lease_ms: i64) -> u64 {
        let floor = wanted_floor(self.limit, data_planes);
        let demand = std::mem::take(&mut self.demand);
        match self.kind {
            Kind::Rpm | Kind::Tpm => self.limit.min(
                self.used
                    .saturating_add(floor.max(demand.saturating_mul(2))),
            ),
            Kind::Concurrency => {
                // The peak is forgotten a lease after it was last reached;
                // requests in flight reach it again.
                if now_ms - self.peak_at_ms > lease_ms {
                    self.peak = self.used;
                    self.peak_at_ms = now_ms;
                }
                // (The peak counts a refused request beyond those held.)
                if self.used > 0 && self.used + 1 >= self.peak {
                    self.peak = self.peak.max(self.used);
                    self.peak_at_ms = now_ms;
                }
                if self.peak == 0 && self.used == 0 && demand == 0 {
                    0
                } else {
                    self.limit
                        .min(self.peak.max(self.used).saturating_add(floor))
                }
            }
            // A budget asks only for its spend, and only until it has it.
            Kind::Budget => u64::from(!self.assigned),
        }
    }

    /// Whether to report at once: less than half of the last grant is left,
    /// or a grant is wanted and none has come for this window.
    #[inline]
    pub fn is_low(&self) -> bool {
        match self.kind {
            Kind::Budget => !self.assigned && self.demand > 0,
            _ if !self.assigned => self.demand > 0,
            _ => self.granted.saturating_sub(self.used) < self.granted.div_ceil(2),
        }
    }

    /// What is left of the limit in this window as this data plane knows
    /// it, for the `remaining` headers: the limit less its own use and the
    /// other data planes' grants (`fleet_used` less its own grant, an upper
    /// bound of what they used). With one data plane: limit − used.
    #[inline]
    pub fn remaining(&self) -> u64 {
        let others = self.fleet_used.saturating_sub(self.granted);
        self.limit.saturating_sub(self.used.saturating_add(others))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UP: Fleet = Fleet {
        connected: true,
        starting: false,
        data_planes: 1,
        slack_percent: 10,
    };

    fn down(data_planes: u32) -> Fleet {
        Fleet {
            connected: false,
            starting: false,
            data_planes,
            slack_percent: 10,
        }
    }

    /// The 64-bit way and the 128-bit one agree, on both sides of where
    /// the product stops fitting 64 bits.
    #[test]
    fn slack_is_exact_for_huge_limits() {
        let wide = |limit: u64, pct: u32, dps: u32| {
            let num = u128::from(limit) * u128::from(pct);
            u64::try_from(num.div_ceil(100 * u128::from(dps.max(1)))).unwrap_or(u64::MAX)
        };
        for limit in [
            u64::MAX / 100,
            u64::MAX / 100 + 1,
            u64::MAX / 7,
            u64::MAX - 1,
            u64::MAX,
        ] {
            for pct in [0, 1, 10, 99, 100, u32::MAX] {
                for dps in [0, 1, 3, 1000, u32::MAX] {
                    assert_eq!(
                        slack(limit, pct, dps),
                        wide(limit, pct, dps),
                        "{limit} {pct} {dps}"
                    );
                }
            }
        }
    }

    /// What an admission took and gave back leaves every kind of bucket
    /// as it was.
    #[test]
    fn untake_undoes_take() {
        for kind in [Kind::Rpm, Kind::Tpm, Kind::Concurrency, Kind::Budget] {
            let mut b = Bucket::new(kind, 1000, OnOutage::Open, 0);
            b.take(7);
            let before = b.clone();
            b.take(40);
            b.untake(40);
            assert_eq!(b, before, "{kind:?}");
        }
    }

    #[test]
    fn shares_round_up() {
        assert_eq!(slack(100, 10, 3), 4);
        assert_eq!(slack(3, 10, 1), 1);
        assert_eq!(slack(100, 0, 3), 0);
        assert_eq!(fallback_share(10, 3), 4);
        assert_eq!(fallback_share(10, 0), 10);
        assert_eq!(wanted_floor(100, 3), 9);
        assert_eq!(wanted_floor(1, 5), 1);
    }

    #[test]
    fn rpm_admits_grant_plus_slack_then_refuses() {
        let mut b = Bucket::new(Kind::Rpm, 100, OnOutage::Open, 0);
        // Before any grant: only the slack.
        let fleet = Fleet {
            data_planes: 2,
            ..UP
        };
        let first: usize = (0..10).filter(|_| b.try_take(1, fleet, 1)).count();
        assert_eq!(first, 5);
        assert!(b.is_low());
        assert_eq!(b.wanted(2, 1, 1000), 5 + 20);
        b.assign(0, 40, 100, 40, 60_000);
        let more = (0..100).filter(|_| b.try_take(1, fleet, 2)).count();
        assert_eq!(more, 40);
        assert_eq!(b.used, 45);
        // A new window starts from nothing.
        b.roll(60_000);
        assert_eq!((b.used, b.granted, b.assigned), (0, 0, false));
        // An assignment for the old window is ignored.
        b.assign(0, 90, 100, 90, 60_000);
        assert_eq!(b.granted, 0);
    }

    #[test]
    fn tpm_reserves_then_settles_with_real_usage() {
        let mut b = Bucket::new(Kind::Tpm, 1000, OnOutage::Open, 0);
        b.assign(0, 1000, 1000, 1000, 60_000);
        assert!(b.try_take(600, UP, 1));
        assert!(!b.try_take(600, UP, 1));
        b.settle(0, 600, 50);
        assert_eq!((b.used, b.reserved), (50, 0));
        assert!(b.try_take(600, UP, 1));
        // More than reserved is charged too.
        b.settle(0, 600, 700);
        assert_eq!(b.used, 750);
        // A reservation from an ended window is dropped.
        assert!(b.try_take(200, UP, 1));
        b.roll(60_000);
        b.settle(0, 200, 300);
        assert_eq!(b.used, 0);
    }

    #[test]
    fn concurrency_leases_lapse_and_idle_planes_ask_for_nothing() {
        let mut b = Bucket::new(Kind::Concurrency, 3, OnOutage::Open, 0);
        b.assign(0, 3, 3, 3, 10_000);
        assert_eq!((0..5).filter(|_| b.try_take(1, UP, 5)).count(), 3);
        assert_eq!(b.peak, 4);
        assert_eq!(b.wanted(1, 5, 10_000), 3);
        // Still all in flight a while later: the peak holds.
        assert_eq!(b.wanted(1, 9_000, 10_000), 3);
        b.release();
        b.release();
        b.release();
        // The lease lapsed: only the slack (never beyond the limit).
        assert_eq!(b.allowance(UP, 10_001), 1);
        // Idle, but the peak was reached within the lease: still wanted.
        assert_eq!(b.wanted(1, 15_000, 10_000), 3);
        // Idle for a lease since: nothing wanted.
        assert_eq!(b.wanted(1, 19_001, 10_000), 0);
    }

    #[test]
    fn outage_follows_on_outage() {
        let mut open = Bucket::new(Kind::Rpm, 10, OnOutage::Open, 0);
        assert_eq!((0..10).filter(|_| open.try_take(1, down(3), 1)).count(), 4);
        let mut closed = Bucket::new(Kind::Rpm, 10, OnOutage::Closed, 0);
        assert!(!closed.try_take(1, down(3), 1));
        let mut budget = Bucket::new(Kind::Budget, 1000, OnOutage::Open, 0);
        budget.assign(0, 0, 1000, 400, 0);
        budget.charge(0, 150);
        assert!(budget.budget_admits(down(3)));
        budget.charge(0, 60);
        // (1000 − 400) / 3 = 200 spent locally.
        assert!(!budget.budget_admits(down(3)));
        assert!(budget.budget_admits(UP));
        // A figure that holds part of what was charged here: the estimate
        // stays 400 + 210; one that holds more replaces it.
        budget.assign(0, 0, 1000, 500, 0);
        assert_eq!(budget.fleet_used + budget.charged_since, 610);
        budget.assign(0, 0, 1000, 700, 0);
        assert_eq!((budget.fleet_used, budget.charged_since), (700, 0));
        budget.charge(0, 300);
        assert!(!budget.budget_admits(UP));
        // A figure below the last one is a reset of the spend.
        budget.assign(0, 0, 1000, 0, 0);
        assert!(budget.budget_admits(UP));
    }

    #[test]
    fn a_budget_whose_spend_is_unknown_admits_one_request_and_reports() {
        let mut b = Bucket::new(Kind::Budget, 1000, OnOutage::Open, 0);
        assert!(b.try_take(1, UP, 1));
        assert!(b.spend_unknown() && b.is_low());
        // The rest wait for the figure, which the report asks for.
        assert!(!b.try_take(1, UP, 1));
        assert_eq!(b.wanted(1, 1, 10_000), 1);
        // In an outage there is nothing to wait for: the fallback share of
        // the whole budget (nothing known spent), 500 of 1000 here.
        assert!(b.budget_admits(down(2)));
        b.charge(0, 500);
        assert!(!b.budget_admits(down(2)));
        // The figure says the budget is spent: refused for good.
        b.assign(0, 0, 1000, 1000, 0);
        assert!(!b.spend_unknown() && !b.is_low());
        assert_eq!(b.wanted(1, 2, 10_000), 0);
        assert!(!b.try_take(1, UP, 2));
        // A new period of a known budget starts known, at nothing spent.
        b.roll(86_400_000);
        assert!(!b.spend_unknown());
        assert!(b.try_take(1, UP, 86_400_001) && b.try_take(1, UP, 86_400_001));
    }

    proptest! {
        /// However requests arrive and settle, a connected data plane never
        /// holds more than min(limit, grant + slack) in a window, and
        /// settling every reservation leaves exactly the real usage.
        #[test]
        fn never_beyond_grant_plus_slack(
            limit in 1u64..5000,
            granted in 0u64..5000,
            planes in 1u32..6,
            slack_percent in 0u32..50,
            asks in proptest::collection::vec((1u64..400, 0u64..400), 1..60),
        ) {
            let fleet = Fleet { connected: true, starting: false, data_planes: planes, slack_percent };
            let mut b = Bucket::new(Kind::Tpm, limit, OnOutage::Open, 0);
            b.assign(0, granted.min(limit), limit, granted.min(limit), 60_000);
            let cap = limit.min(granted.min(limit) + slack(limit, slack_percent, planes));
            let mut held = Vec::new();
            for (reserve, actual) in asks {
                if b.try_take(reserve, fleet, 1) {
                    held.push((reserve, actual));
                }
                prop_assert!(b.used <= cap, "{} > {}", b.used, cap);
            }
            let real: u64 = held.iter().map(|(_, a)| a).sum();
            for (reserve, actual) in held {
                b.settle(0, reserve, actual);
            }
            prop_assert_eq!(b.reserved, 0);
            prop_assert_eq!(b.used, real);
            let w = b.wanted(planes, 2, 10_000);
            prop_assert!(w <= limit);
        }
    }
}
