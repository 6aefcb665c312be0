//! Enforcement of limits (#15) in the data plane: the [`Limiter`] that
//! admits or refuses a request against its key's, model's and provider's
//! buckets with no round trip, the [`Admission`] that a request holds until
//! it ends (its concurrency slot, its token reservation, its budget charge),
//! the quota client that reports use to the control plane and takes its
//! grants back ([`client`]), and the rate-limit headers ([`headers`]).
//!
//! State is kept per (scope, name): one [`Entry`] holds all four kinds of
//! that scope behind one mutex, so related counts never drift apart, and a
//! request locks each of its entries once, never across an await. Entries
//! are found by the name as `&str` (no allocation once the entry exists)
//! and outlive snapshots, so a config push does not reset what was used.
//! The accounting itself is pure and lives in `llmgw_core::quota`.
//!
//! A request with no limits on its key and model skips all of this: no
//! clock is read and no lock is taken.

pub mod client;
pub mod headers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use llmgw_core::limits::{Kind, Limits, Scope};
use llmgw_core::quota::{Bucket, Fleet};
use tokio::sync::Notify;

/// The concurrency lease the data plane assumes before the control plane
/// names one.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The wall clock in Unix ms: windows are aligned to the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Rpm => 0,
        Kind::Tpm => 1,
        Kind::Concurrency => 2,
        Kind::Budget => 3,
    }
}

fn scope_index(s: Scope) -> usize {
    match s {
        Scope::Key => 0,
        Scope::Model => 1,
        Scope::Provider => 2,
    }
}

/// The buckets of one (scope, name).
#[derive(Debug)]
pub struct Entry {
    pub scope: Scope,
    pub name: String,
    state: Mutex<EntryState>,
}

#[derive(Debug, Default)]
struct EntryState {
    /// By [`kind_index`].
    buckets: [Option<Bucket>; 4],
    /// The limits last seen for this (scope, name), for reports.
    limits: Option<Limits>,
    /// By [`kind_index`]: the current window of each kind under `limits`
    /// (start, end), kept until `now` leaves it or the limits change, so
    /// that an admission rarely works out a calendar period.
    windows: [(i64, i64); 4],
    /// Last admission or settlement, for pruning idle entries.
    touched_ms: i64,
}

impl Entry {
    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EntryState {
    /// Takes `limits` as this entry's current ones; a change forgets the
    /// windows worked out under the old ones.
    fn set_limits(&mut self, limits: &Limits) {
        if self.limits.as_ref() != Some(limits) {
            self.limits = Some(*limits);
            self.windows = [(0, 0); 4];
        }
    }

    /// Whether an rpm or tpm bucket's window, or a budget's period, is
    /// still open at `now_ms`: a budget's spend, once heard, is kept for
    /// its period (entries are only made for configured names, so they
    /// stay few), so an idle key's next burst does not wait for it again.
    fn has_open_window(&self, now_ms: i64) -> bool {
        let Some(limits) = &self.limits else {
            return false;
        };
        [Kind::Rpm, Kind::Tpm, Kind::Budget]
            .into_iter()
            .any(|kind| {
                self.buckets[kind_index(kind)]
                    .as_ref()
                    .is_some_and(|b| limits.window(kind, b.window_start_ms).1 > now_ms)
            })
    }

    /// The window of `kind` holding `now_ms` under the current limits
    /// ([`EntryState::set_limits`] first). A time before the current
    /// window (a request that read the clock just before another one
    /// moved the window on, or a clock stepped back) stays in it: going
    /// back would roll the bucket to the old window and forget its use.
    fn window(&mut self, kind: Kind, now_ms: i64) -> (i64, i64) {
        let w = &mut self.windows[kind_index(kind)];
        if now_ms >= w.1 {
            if let Some(l) = &self.limits {
                *w = l.window(kind, now_ms);
            }
        }
        *w
    }

    /// The bucket of `kind` for the window that starts at `start` (that of
    /// `limits.window(kind, now)`), created or brought up to date with
    /// `limits` (a snapshot may change them).
    fn bucket(&mut self, kind: Kind, limit: u64, limits: &Limits, start: i64) -> &mut Bucket {
        let start = if kind == Kind::Concurrency { 0 } else { start };
        let b = self.buckets[kind_index(kind)]
            .get_or_insert_with(|| Bucket::new(kind, limit, limits.on_outage, start));
        b.limit = limit;
        b.on_outage = limits.on_outage;
        b.roll(start);
        b
    }
}

/// What the control-plane link says about the fleet.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// When the quota stream last delivered a message.
    heard: Option<Instant>,
    /// Whether the stream is open and has delivered a message.
    open: bool,
    data_planes: u32,
    lease: Duration,
    /// When this limiter (the process) started.
    started: Instant,
}

/// Why a limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The limit, or this data plane's share of it, is used up.
    Reached,
    /// A new window's grant has not arrived yet (only the slack was left):
    /// it is a report's round trip away.
    NoGrantYet,
    /// The budget's spend has not reached this data plane yet.
    SpendUnknown,
    /// No control plane answers, and this data plane's fallback share is
    /// used (or the limit is `on_outage: closed`).
    Outage,
    /// The request reserves more tokens than the whole limit allows in a
    /// window: retrying cannot help.
    TooLarge { reserved: u64, limit: u64 },
}

/// The limit that refused a request, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub scope: Scope,
    pub kind: Kind,
    pub why: Why,
    /// Whole seconds, rounded up; `None` when waiting cannot help.
    pub retry_after_s: Option<u64>,
    /// The rate-limit headers' figures at the refusal.
    pub rates: RateInfo,
}

impl Refusal {
    /// The record's `limited_by`: "key:rpm".
    pub fn label(&self) -> String {
        format!("{}:{}", self.scope, self.kind)
    }

    /// Whether the same request may succeed later: not for an exhausted
    /// budget, nor for a reservation larger than the limit.
    pub fn retryable(&self) -> bool {
        match self.why {
            Why::TooLarge { .. } => false,
            Why::Reached => self.kind != Kind::Budget,
            Why::NoGrantYet | Why::SpendUnknown | Why::Outage => true,
        }
    }

    pub fn message(&self) -> String {
        match self.why {
            Why::TooLarge { reserved, limit } => {
                return format!(
                "this request reserves {reserved} tokens (its input and its max_tokens) and the \
                     {} token rate limit is {limit} a window; ask for fewer max_tokens",
                self.scope
            )
            }
            Why::SpendUnknown => {
                return format!(
                "the {} spend budget's current spend is not known here yet; try again in a second",
                self.scope
            )
            }
            Why::Outage => {
                return format!(
                    "the gateway cannot reach its control plane, and this node's share of the {} \
                     {} limit is used; try again later",
                    self.scope, self.kind
                )
            }
            Why::NoGrantYet | Why::Reached => {}
        }
        match self.kind {
            Kind::Budget => format!(
                "the {} spend budget is exhausted; ask the gateway's operator to raise it",
                self.scope
            ),
            Kind::Concurrency => format!(
                "too many requests in flight for this {}; try again when one ends",
                self.scope
            ),
            Kind::Rpm => format!(
                "the {} request rate limit is reached; try again after the window resets",
                self.scope
            ),
            Kind::Tpm => format!(
                "the {} token rate limit is reached; try again after the window resets",
                self.scope
            ),
        }
    }
}

/// One rate limit's figures for headers: the tightest applicable scope's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub remaining: u64,
    /// The window's end, Unix ms.
    pub reset_at_ms: i64,
}

/// The figures for the rate-limit headers of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateInfo {
    pub requests: Option<Rate>,
    pub tokens: Option<Rate>,
}

impl RateInfo {
    fn tighten(slot: &mut Option<Rate>, r: Rate) {
        if slot.is_none_or(|s| r.remaining < s.remaining) {
            *slot = Some(r);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// Takes the tighter of each rate.
    pub fn merge(&mut self, other: &RateInfo) {
        if let Some(r) = other.requests {
            RateInfo::tighten(&mut self.requests, r);
        }
        if let Some(r) = other.tokens {
            RateInfo::tighten(&mut self.tokens, r);
        }
    }
}

/// A hold's parts before it has its entry: the token reservation, the
/// concurrency slot and the budget period (as in [`Hold`]).
type Held = (Option<(i64, u64)>, bool, Option<i64>);

/// What a request holds in one entry.
#[derive(Debug)]
struct Hold {
    entry: Arc<Entry>,
    /// A token reservation: its window and units.
    tpm: Option<(i64, u64)>,
    slot: bool,
    /// The budget period the request is charged in.
    budget: Option<i64>,
}

/// A request's hold on its buckets, given back when it ends: the
/// concurrency slots at once ([`Admission::release_slots`]), the token
/// reservation settled and the budget charged with the real figures
/// ([`Admission::settle`]). Dropped unsettled (a refusal further on, an
/// error, a client gone before the response), it settles with nothing used.
#[derive(Debug)]
pub struct Admission {
    /// Key, model, provider.
    holds: [Option<Hold>; 3],
    /// The figures for this response's rate-limit headers.
    pub rates: RateInfo,
}

impl Admission {
    /// Takes over another admission's holds (a provider's, at the attempt
    /// that answered).
    pub fn absorb(&mut self, mut other: Admission) {
        for (mine, theirs) in self.holds.iter_mut().zip(other.holds.iter_mut()) {
            if mine.is_none() {
                *mine = theirs.take();
            }
        }
        self.rates.merge(&other.rates);
    }

    /// Whether the request's end has nothing to give back (a request rate
    /// only): such an admission need not be kept.
    pub fn holds_nothing(&self) -> bool {
        self.holds.iter().all(Option::is_none)
    }

    /// Gives the concurrency slots back (the response has ended). The
    /// control plane hears of it with the next report, which renews the
    /// lease at what is in use then.
    pub fn release_slots(&mut self) {
        for h in self.holds.iter_mut().flatten() {
            if std::mem::take(&mut h.slot) {
                let mut st = h.entry.lock();
                if let Some(b) = st.buckets[kind_index(Kind::Concurrency)].as_mut() {
                    b.release();
                }
            }
        }
    }

    /// Settles the token reservations with the `tokens` really used (input
    /// plus output) and charges `cost_micros` to the budgets.
    pub fn settle(mut self, tokens: u64, cost_micros: u64) {
        self.finish(tokens, cost_micros);
    }

    fn finish(&mut self, tokens: u64, cost_micros: u64) {
        let mut now = None;
        for h in self.holds.iter_mut().flatten() {
            if !h.slot && h.tpm.is_none() && h.budget.is_none() {
                continue;
            }
            // One lock of each entry gives back all it holds.
            let mut st = h.entry.lock();
            if std::mem::take(&mut h.slot) {
                if let Some(b) = st.buckets[kind_index(Kind::Concurrency)].as_mut() {
                    b.release();
                }
            }
            st.touched_ms = *now.get_or_insert_with(now_ms);
            if let Some((window, reserved)) = h.tpm.take() {
                if let Some(b) = st.buckets[kind_index(Kind::Tpm)].as_mut() {
                    b.settle(window, reserved, tokens);
                }
            }
            if let Some(period) = h.budget.take() {
                if let Some(b) = st.buckets[kind_index(Kind::Budget)].as_mut() {
                    b.charge(period, cost_micros);
                }
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.finish(0, 0);
    }
}

/// One admission's pass over its buckets: what it took so far, and the
/// first refusal.
struct Pass {
    now: i64,
    fleet: Fleet,
    tokens: u64,
    rates: RateInfo,
    /// By subject: a hold's parts.
    taken: [Held; 3],
    /// By subject: every kind it took units of (bits by `kind_index`), to
    /// give back on a refusal.
    took: [u8; 3],
    low: bool,
    refusal: Option<Refusal>,
}

impl Pass {
    /// Admits subject `i`'s bucket of `kind`, or notes why not.
    #[inline(always)]
    fn step(&mut self, st: &mut EntryState, s: &Subject<'_>, i: usize, kind: Kind, limit: u64) {
        let now = self.now;
        let units = if kind == Kind::Tpm { self.tokens } else { 1 };
        let (start, end) = st.window(kind, now);
        let b = st.bucket(kind, limit, s.limits, start);
        let ok = b.fits(units, self.fleet, now);
        b.ask(units, now);
        if ok && self.refusal.is_none() {
            b.take(units);
            self.low |= b.is_low();
            self.took[i] |= 1 << kind_index(kind);
            match kind {
                Kind::Rpm => {
                    RateInfo::tighten(&mut self.rates.requests, rate(limit, b.remaining(), end));
                }
                Kind::Tpm => {
                    self.taken[i].0 = Some((b.window_start_ms, units));
                    RateInfo::tighten(&mut self.rates.tokens, rate(limit, b.remaining(), end));
                }
                Kind::Concurrency => self.taken[i].1 = true,
                Kind::Budget => self.taken[i].2 = Some(b.window_start_ms),
            }
            return;
        }
        // This bucket refuses, or an earlier one did: nothing more is
        // taken, and the headers show what is left.
        let why = if ok {
            Why::Reached
        } else {
            refusal_why(b, kind, units, limit, self.fleet)
        };
        if matches!(kind, Kind::Rpm | Kind::Tpm) {
            // A bucket that refused for good has nothing left for this
            // client; one waiting for its grant shows what the fleet has
            // left as it knows it.
            let remaining = if ok {
                b.remaining().saturating_sub(units)
            } else if why == Why::NoGrantYet {
                b.remaining()
            } else {
                0
            };
            let slot = if kind == Kind::Rpm {
                &mut self.rates.requests
            } else {
                &mut self.rates.tokens
            };
            RateInfo::tighten(slot, rate(limit, remaining, end));
        }
        if !ok && self.refusal.is_none() {
            let retry_after_s = match (kind, why) {
                (_, Why::TooLarge { .. }) => None,
                (_, Why::NoGrantYet | Why::SpendUnknown) | (Kind::Concurrency, _) => Some(1),
                (Kind::Budget, Why::Outage) => Some(1),
                (Kind::Budget, _) if end == i64::MAX => None,
                _ => Some(((end - now).max(1) as u64).div_ceil(1000)),
            };
            self.refusal = Some(Refusal {
                scope: s.scope,
                kind,
                why,
                retry_after_s,
                rates: RateInfo::default(),
            });
        }
    }
}

/// A rate's figures for the headers.
fn rate(limit: u64, remaining: u64, reset_at_ms: i64) -> Rate {
    Rate {
        limit,
        remaining,
        reset_at_ms,
    }
}

/// Why `b` does not fit `units` of `kind`.
fn refusal_why(b: &Bucket, kind: Kind, units: u64, limit: u64, fleet: Fleet) -> Why {
    if kind == Kind::Tpm && units > limit {
        Why::TooLarge {
            reserved: units,
            limit,
        }
    } else if b.spend_unknown() && (fleet.connected || fleet.starting) {
        Why::SpendUnknown
    } else if !fleet.connected {
        Why::Outage
    } else if matches!(kind, Kind::Rpm | Kind::Tpm) && !b.assigned {
        Why::NoGrantYet
    } else {
        Why::Reached
    }
}

/// A scope to admit against: which, whose, and its limits.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub scope: Scope,
    pub name: &'a str,
    pub limits: &'a Limits,
}

/// FNV-1a over a name. The maps hold only names from the configuration
/// (keys, models and providers of the snapshot, never a client's string),
/// so no seeded hash is needed; SipHash cost each admission a few hundred
/// instructions.
#[derive(Debug, Clone, Copy, Default)]
pub struct NameHash;

impl std::hash::BuildHasher for NameHash {
    type Hasher = NameHasher;
    fn build_hasher(&self) -> NameHasher {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

/// See [`NameHash`].
#[derive(Debug)]
pub struct NameHasher(u64);

impl NameHasher {
    fn mix(&mut self, word: u64) {
        // The high bits reach the low ones (hashbrown takes both ends).
        self.0 = (self.0 ^ word)
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(29);
    }
}

impl std::hash::Hasher for NameHasher {
    /// Eight bytes a step (FNV's step on words): a name costs a few
    /// instructions a word, not a few a byte.
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Entries = HashMap<String, Arc<Entry>, NameHash>;

/// The data plane's buckets and its view of the control-plane link.
#[derive(Debug)]
pub struct Limiter {
    /// By [`scope_index`]: name -> entry.
    entries: [RwLock<Entries>; 3],
    link: Mutex<Link>,
    /// A bucket ran low or refused: report now.
    pub(crate) changed: Notify,
    /// Counts the quota messages applied (tests await it).
    pub(crate) applied: tokio::sync::watch::Sender<u64>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            entries: Default::default(),
            link: Mutex::new(Link {
                heard: None,
                open: false,
                data_planes: 1,
                lease: DEFAULT_LEASE,
                started: Instant::now(),
            }),
            changed: Notify::new(),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Limiter {
    pub fn new() -> Arc<Self> {
        Arc::new(Limiter::default())
    }

    fn link(&self) -> Link {
        *self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fleet as an admission sees it now.
    fn fleet(&self, slack_percent: u32) -> Fleet {
        let link = self.link();
        let connected = link.open || link.heard.is_some_and(|t| t.elapsed() < link.lease);
        Fleet {
            connected,
            starting: !connected && link.heard.is_none() && link.started.elapsed() < link.lease,
            data_planes: link.data_planes.max(1),
            slack_percent,
        }
    }

    /// Whether the data plane counts as connected to a quota service.
    pub fn connected(&self) -> bool {
        self.fleet(0).connected
    }

    /// Changes each time a message from the quota service is applied; its
    /// value is how many were.
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn entry(&self, scope: Scope, name: &str) -> Arc<Entry> {
        let map = &self.entries[scope_index(scope)];
        if let Some(e) = map.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Arc::clone(e);
        }
        let mut w = map.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(w.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(Entry {
                scope,
                name: name.to_owned(),
                state: Mutex::default(),
            })
        }))
    }

    /// Admits a request against every subject (all must admit, or none is
    /// charged): one request of each rpm, `tokens` of each tpm, a slot of
    /// each concurrency limit, and each budget's check.
    pub fn admit(
        self: &Arc<Self>,
        subjects: &[Subject<'_>],
        tokens: u64,
        slack_percent: u32,
    ) -> Result<Admission, Refusal> {
        self.admit_at(subjects, tokens, slack_percent, now_ms())
    }

    /// [`Limiter::admit`] as of `now` (Unix ms): a request admitted as it
    /// arrives passes the clock it already read.
    ///
    /// Every entry is locked (in scope order, key, model, provider, the
    /// same everywhere) for the whole admission, so each bucket takes its
    /// units as it admits them, and a later bucket's refusal gives them
    /// back before anyone else can see them.
    pub fn admit_at(
        self: &Arc<Self>,
        subjects: &[Subject<'_>],
        tokens: u64,
        slack_percent: u32,
        now: i64,
    ) -> Result<Admission, Refusal> {
        let fleet = self.fleet(slack_percent);
        let mut entries: [Option<Arc<Entry>>; 3] = Default::default();
        for (slot, s) in entries.iter_mut().zip(subjects) {
            *slot = Some(self.entry(s.scope, s.name));
        }
        let mut guards: [Option<std::sync::MutexGuard<'_, EntryState>>; 3] = Default::default();
        for (g, e) in guards.iter_mut().zip(entries.iter()) {
            *g = e.as_ref().map(|e| e.lock());
        }
        let mut pass = Pass {
            now,
            fleet,
            tokens,
            rates: RateInfo::default(),
            taken: Default::default(),
            took: [0; 3],
            low: false,
            refusal: None,
        };
        for (i, (g, s)) in guards.iter_mut().zip(subjects).enumerate() {
            let Some(st) = g.as_mut() else { continue };
            st.touched_ms = now;
            st.set_limits(s.limits);
            // Kind by kind, in [`Kind::ALL`]'s order; each call knows its
            // kind, so every branch on the kind folds away.
            let l = s.limits;
            if let Some(limit) = l.rpm {
                pass.step(st, s, i, Kind::Rpm, limit);
            }
            if let Some(limit) = l.tpm {
                pass.step(st, s, i, Kind::Tpm, limit);
            }
            if let Some(limit) = l.max_concurrency {
                pass.step(st, s, i, Kind::Concurrency, u64::from(limit));
            }
            if let Some(b) = l.budget {
                pass.step(st, s, i, Kind::Budget, b.micros);
            }
        }
        let Pass {
            rates,
            taken,
            took,
            low,
            refusal,
            ..
        } = pass;
        if let Some(mut r) = refusal {
            // What was taken before the refusal goes back under the same
            // locks: no other request saw it.
            for (g, mask) in guards.iter_mut().zip(took) {
                let Some(st) = g.as_mut() else { continue };
                for kind in Kind::ALL {
                    if mask & (1 << kind_index(kind)) != 0 {
                        if let Some(b) = st.buckets[kind_index(kind)].as_mut() {
                            b.untake(if kind == Kind::Tpm { tokens } else { 1 });
                        }
                    }
                }
            }
            r.rates = rates;
            drop(guards);
            self.changed.notify_one();
            return Err(r);
        }
        drop(guards);
        if low {
            self.changed.notify_one();
        }
        // A subject holds its entry only when the request's end has
        // something to give back there (tokens to settle, a slot, a budget
        // to charge); a request rate is done with once admitted. Each hold
        // goes at its scope's place (key, model, provider), so that
        // [`Admission::absorb`] can merge a provider's hold into a
        // request's.
        let mut admission = Admission {
            holds: Default::default(),
            rates,
        };
        for ((s, e), (tpm, slot, budget)) in subjects.iter().zip(entries).zip(taken) {
            if let Some(entry) = e.filter(|_| tpm.is_some() || slot || budget.is_some()) {
                admission.holds[scope_index(s.scope)] = Some(Hold {
                    entry,
                    tpm,
                    slot,
                    budget,
                });
            }
        }
        Ok(admission)
    }

    /// Every entry, for a report.
    fn all_entries(&self) -> Vec<Arc<Entry>> {
        let mut out = Vec::new();
        for map in &self.entries {
            out.extend(
                map.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned(),
            );
        }
        out
    }

    /// Drops entries no request holds, no one used for `idle_ms`, and with
    /// no rate window still open: a window's use must outlive the entry's
    /// idleness, or an entry made again would report nothing used and be
    /// granted the window again.
    fn prune(&self, now: i64, idle_ms: i64) {
        for map in &self.entries {
            let mut w = map.write().unwrap_or_else(|e| e.into_inner());
            w.retain(|_, e| {
                if Arc::strong_count(e) > 1 {
                    return true;
                }
                let st = e.lock();
                now - st.touched_ms < idle_ms || st.has_open_window(now)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_core::limits::{Budget, OnOutage, Period};

    fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
        let mut l = Limits {
            window_ms: 60_000,
            ..Limits::default()
        };
        f(&mut l);
        l
    }

    /// A connected limiter, and key limits of 1,000 tpm and a daily budget
    /// of 500 micro-dollars.
    fn connected_with_tpm_and_budget() -> (Arc<Limiter>, Limits) {
        let l = Limiter::new();
        connect(&l, 1);
        let key = limits(|l| {
            l.tpm = Some(1000);
            l.budget = Some(Budget {
                micros: 500,
                period: Period::Day,
            });
        });
        (l, key)
    }

    /// Key "k" and model "m" with their limits.
    fn key_and_model<'a>(key: &'a Limits, model: &'a Limits) -> [Subject<'a>; 2] {
        [
            Subject {
                scope: Scope::Key,
                name: "k",
                limits: key,
            },
            Subject {
                scope: Scope::Model,
                name: "m",
                limits: model,
            },
        ]
    }

    fn connect(l: &Limiter, data_planes: u32) {
        let mut link = l.link.lock().unwrap();
        link.open = true;
        link.heard = Some(Instant::now());
        link.data_planes = data_planes;
    }

    #[test]
    fn outage_open_admits_the_fallback_share_and_closed_refuses() {
        let l = Limiter::new();
        let key = limits(|l| l.rpm = Some(3));
        let subject = [Subject {
            scope: Scope::Key,
            name: "k",
            limits: &key,
        }];
        // Never connected: "open" admits the whole limit over 1 data plane.
        let admitted: Vec<_> = (0..5)
            .filter_map(|_| l.admit(&subject, 0, 10).ok())
            .collect();
        assert_eq!(admitted.len(), 3);
        let refusal = l.admit(&subject, 0, 10).unwrap_err();
        assert_eq!(refusal.label(), "key:rpm");
        assert!(refusal.retry_after_s.is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(refusal.rates.requests.map(|r| r.remaining), Some(0));
        let closed = limits(|l| {
            l.rpm = Some(3);
            l.on_outage = OnOutage::Closed;
        });
        let r = l
            .admit(
                &[Subject {
                    scope: Scope::Model,
                    name: "m",
                    limits: &closed,
                }],
                0,
                10,
            )
            .unwrap_err();
        assert_eq!(r.label(), "model:rpm");
    }

    #[test]
    fn unknown_spend_and_oversized_reservations_are_told_apart() {
        let (l, key) = connected_with_tpm_and_budget();
        let subject = [Subject {
            scope: Scope::Key,
            name: "k",
            limits: &key,
        }];
        // More than the whole tpm limit: never, and no point retrying.
        let r = l.admit(&subject, 1001, 10).unwrap_err();
        assert_eq!(
            (r.why, r.retry_after_s, r.retryable()),
            (
                Why::TooLarge {
                    reserved: 1001,
                    limit: 1000
                },
                None,
                false
            )
        );
        assert!(r.message().contains("1001 tokens"), "{}", r.message());
        // A new window's first grant has not come: try again in a second,
        // and the headers show what is left, not 0.
        let r = l.admit(&subject, 500, 10).unwrap_err();
        assert_eq!((r.why, r.retry_after_s), (Why::NoGrantYet, Some(1)));
        assert!(r.retryable());
        assert_eq!(r.rates.tokens.map(|t| t.remaining), Some(1000));
        // The budget's spend is unknown: one request, then wait for it.
        let first = l.admit(&subject, 50, 10).unwrap();
        let r = l.admit(&subject, 50, 10).unwrap_err();
        assert_eq!(
            (r.label(), r.why, r.retry_after_s),
            ("key:budget".into(), Why::SpendUnknown, Some(1))
        );
        assert!(r.retryable());
        drop(first);
    }

    #[test]
    fn a_changed_window_applies_to_the_next_admission() {
        let l = Limiter::new();
        let subject = |limits| {
            [Subject {
                scope: Scope::Key,
                name: "k",
                limits,
            }]
        };
        let minute = limits(|l| l.rpm = Some(100));
        let now = now_ms();
        let a = l.admit(&subject(&minute), 0, 10).unwrap();
        let reset = a.rates.requests.unwrap().reset_at_ms;
        assert!(
            reset > now && reset <= now + 60_000 + 1_000,
            "{reset} {now}"
        );
        let second = Limits {
            window_ms: 1_000,
            ..minute
        };
        let b = l.admit(&subject(&second), 0, 10).unwrap();
        let reset = b.rates.requests.unwrap().reset_at_ms;
        assert!(reset <= now_ms() + 1_000, "{reset}");
        assert_eq!(reset % 1_000, 0);
    }

    #[test]
    fn all_must_admit_and_a_refusal_charges_nothing() {
        let l = Limiter::new();
        connect(&l, 1);
        let key = limits(|l| l.max_concurrency = Some(2));
        let model = limits(|l| l.max_concurrency = Some(1));
        let subjects = key_and_model(&key, &model);
        // Slack alone before a grant: ceil(2 × 10% / 1) = 1 for the key.
        let first = l.admit(&subjects, 0, 10).unwrap();
        let r = l.admit(&subjects, 0, 10).unwrap_err();
        assert_eq!(
            (r.label(), r.retry_after_s),
            ("key:concurrency".into(), Some(1))
        );
        drop(first);
        // The slot came back on drop.
        let again = l.admit(&subjects, 0, 10).unwrap();
        let key_entry = l.entry(Scope::Key, "k");
        assert_eq!(
            key_entry.lock().buckets[kind_index(Kind::Concurrency)]
                .as_ref()
                .map(|b| b.used),
            Some(1)
        );
        drop(again);
    }

    /// An admission with an earlier clock than the window's (a request
    /// that read it just before another moved the window on) counts in
    /// the current window and leaves its bucket as it was.
    #[test]
    fn an_earlier_clock_never_takes_a_bucket_back_a_window() {
        let l = Limiter::new();
        connect(&l, 1);
        let key = limits(|l| l.rpm = Some(100));
        let subject = [Subject {
            scope: Scope::Key,
            name: "k",
            limits: &key,
        }];
        let bucket = |l: &Limiter| {
            let e = l.entry(Scope::Key, "k");
            let st = e.lock();
            let b = st.buckets[kind_index(Kind::Rpm)].as_ref().unwrap();
            (b.window_start_ms, b.used)
        };
        l.admit_at(&subject, 0, 100, 120_000).unwrap();
        l.admit_at(&subject, 0, 100, 120_001).unwrap();
        assert_eq!(bucket(&l), (120_000, 2));
        let r = l.admit_at(&subject, 0, 100, 119_900).unwrap();
        assert_eq!(bucket(&l), (120_000, 3));
        assert_eq!(r.rates.requests.map(|r| r.reset_at_ms), Some(180_000));
    }

    /// A later subject's refusal gives back what the earlier ones took, of
    /// every kind, and the refusal's headers still show the key's rates.
    #[test]
    fn a_later_refusal_gives_back_what_earlier_subjects_took() {
        let l = Limiter::new();
        connect(&l, 1);
        let key = limits(|l| {
            l.rpm = Some(100);
            l.tpm = Some(10_000);
            l.max_concurrency = Some(50);
            l.budget = Some(Budget {
                micros: 1_000_000,
                period: Period::Day,
            });
        });
        // Slack alone before a grant: one request a window.
        let model = limits(|l| l.rpm = Some(1));
        let subjects = key_and_model(&key, &model);
        let first = l.admit(&subjects, 30, 100).unwrap();
        {
            // The budget's spend arrives (0 so far).
            let e = l.entry(Scope::Key, "k");
            let mut st = e.lock();
            let b = st.buckets[kind_index(Kind::Budget)].as_mut().unwrap();
            let period = b.window_start_ms;
            b.assign(period, 0, 1_000_000, 0, i64::MAX);
        }
        let used = |l: &Limiter| {
            let e = l.entry(Scope::Key, "k");
            let st = e.lock();
            Kind::ALL.map(|k| {
                st.buckets[kind_index(k)]
                    .as_ref()
                    .map(|b| (b.used, b.reserved, b.admitted_unknown))
            })
        };
        let demand = |l: &Limiter| {
            let e = l.entry(Scope::Key, "k");
            let st = e.lock();
            Kind::ALL.map(|k| st.buckets[kind_index(k)].as_ref().map(|b| b.demand))
        };
        let before = used(&l);
        let asked = demand(&l);
        let r = l.admit(&subjects, 30, 100).unwrap_err();
        assert_eq!(r.label(), "model:rpm");
        assert_eq!(used(&l), before);
        // Each bucket still heard the request asked (the next report's
        // `wanted`): one request, 30 tokens, a slot, a budget check.
        let grew: Vec<_> = demand(&l)
            .iter()
            .zip(asked)
            .map(|(now, then)| now.unwrap() - then.unwrap())
            .collect();
        assert_eq!(grew, [1, 30, 1, 1]);
        let requests = r.rates.requests.unwrap();
        assert_eq!((requests.limit, requests.remaining), (1, 0));
        // As the request would have left them: 30 reserved before, 30 now.
        let tokens = r.rates.tokens.unwrap();
        assert_eq!((tokens.limit, tokens.remaining), (10_000, 9_940));
        drop(first);
    }

    #[test]
    fn tokens_are_settled_and_budgets_charged_when_the_request_ends() {
        let (l, key) = connected_with_tpm_and_budget();
        let subject = [Subject {
            scope: Scope::Key,
            name: "k",
            limits: &key,
        }];
        {
            let e = l.entry(Scope::Key, "k");
            let mut st = e.lock();
            let now = now_ms();
            let b = st.bucket(Kind::Tpm, 1000, &key, key.window(Kind::Tpm, now).0);
            let start = b.window_start_ms;
            b.assign(start, 1000, 1000, 1000, start + 60_000);
            // The budget's spend is known: nothing spent yet.
            let b = st.bucket(Kind::Budget, 500, &key, key.window(Kind::Budget, now).0);
            let start = b.window_start_ms;
            b.assign(start, 0, 500, 0, 0);
        }
        let a = l.admit(&subject, 800, 10).unwrap();
        assert_eq!(a.rates.tokens.map(|r| r.remaining), Some(200));
        assert!(l.admit(&subject, 800, 10).is_err());
        a.settle(30, 400);
        let b = l.admit(&subject, 800, 10).unwrap();
        b.settle(30, 200);
        // 600 micros charged of 500: the next is refused with the budget.
        let r = l.admit(&subject, 1, 10).unwrap_err();
        assert_eq!(r.label(), "key:budget");
        let e = l.entry(Scope::Key, "k");
        let st = e.lock();
        assert_eq!(
            st.buckets[kind_index(Kind::Tpm)].as_ref().map(|b| b.used),
            Some(60)
        );
    }

    #[test]
    fn a_provider_admission_is_absorbed_and_released_with_the_request() {
        let l = Limiter::new();
        let key = limits(|l| l.rpm = Some(10));
        let provider = limits(|l| {
            l.max_concurrency = Some(1);
            l.rpm = Some(2);
        });
        let mut a = l
            .admit(
                &[Subject {
                    scope: Scope::Key,
                    name: "k",
                    limits: &key,
                }],
                0,
                10,
            )
            .unwrap();
        let p = [Subject {
            scope: Scope::Provider,
            name: "p",
            limits: &provider,
        }];
        let pa = l.admit(&p, 0, 10).unwrap();
        a.absorb(pa);
        // The tighter of the two: the provider's 2 rpm, 1 left.
        assert_eq!(
            a.rates.requests.map(|r| (r.limit, r.remaining)),
            Some((2, 1))
        );
        assert_eq!(
            l.admit(&p, 0, 10).unwrap_err().label(),
            "provider:concurrency"
        );
        drop(a);
        assert!(l.admit(&p, 0, 10).is_ok());
        l.prune(now_ms() + 1_000_000, 1);
        assert!(l.all_entries().is_empty());
    }
}
