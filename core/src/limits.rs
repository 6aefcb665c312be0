//! Limits (#15): what a client key, a model or a provider may use, as
//! validated domain types, and the time arithmetic that both planes share:
//! the rate windows aligned since the Unix epoch and the UTC calendar
//! periods of spend budgets. Pure: no clock is read here; callers pass the
//! time in Unix milliseconds.
//!
//! The wire form is `llmgw.v1.Limits` (proto/llmgw/v1/common.proto); the
//! quota protocol that hands out the fleet's shares is
//! proto/llmgw/v1/quota.proto.

use std::fmt;

use llmgw_proto::v1 as pb;

/// The rate window when a limit names none: one minute.
pub const DEFAULT_WINDOW_MS: u32 = 60_000;
/// The shortest window accepted (tests use short ones).
pub const MIN_WINDOW_MS: u32 = 100;
/// The longest window accepted: one day.
pub const MAX_WINDOW_MS: u32 = 86_400_000;

/// What a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Key,
    Model,
    Provider,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Key, Scope::Model, Scope::Provider];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Model => "model",
            Scope::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a limit, which is also the kind of its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Requests per window.
    Rpm,
    /// Input plus output tokens per window.
    Tpm,
    /// Requests in flight.
    Concurrency,
    /// Micro-dollars per budget period.
    Budget,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Rpm, Kind::Tpm, Kind::Concurrency, Kind::Budget];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rpm => "rpm",
            Kind::Tpm => "tpm",
            Kind::Concurrency => "concurrency",
            Kind::Budget => "budget",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One limit of one scope: the unit of the quota protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId {
    pub scope: Scope,
    pub name: String,
    pub kind: Kind,
}

impl BucketId {
    pub fn new(scope: Scope, name: impl Into<String>, kind: Kind) -> Self {
        BucketId {
            scope,
            name: name.into(),
            kind,
        }
    }

    /// The log record's and the metrics' name of the limit: "key:rpm".
    pub fn label(&self) -> String {
        format!("{}:{}", self.scope, self.kind)
    }
}

impl From<&BucketId> for pb::BucketId {
    fn from(b: &BucketId) -> Self {
        pb::BucketId {
            scope: b.scope.as_str().to_owned(),
            name: b.name.clone(),
            kind: b.kind.as_str().to_owned(),
        }
    }
}

impl TryFrom<&pb::BucketId> for BucketId {
    type Error = LimitsError;

    fn try_from(b: &pb::BucketId) -> Result<Self, Self::Error> {
        let scope = Scope::parse(&b.scope).ok_or_else(|| LimitsError::Scope(b.scope.clone()))?;
        let kind = Kind::parse(&b.kind).ok_or_else(|| LimitsError::Kind(b.kind.clone()))?;
        if b.name.is_empty() {
            return Err(LimitsError::EmptyName);
        }
        Ok(BucketId::new(scope, b.name.clone(), kind))
    }
}

/// The UTC calendar period of a spend budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Period {
    Day,
    /// From Monday 00:00 UTC.
    Week,
    #[default]
    Month,
    /// Since the budget was set or its spend last reset.
    Total,
}

impl Period {
    pub const ALL: [Period; 4] = [Period::Day, Period::Week, Period::Month, Period::Total];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// Empty means the default, "month".
    pub fn parse(s: &str) -> Option<Period> {
        if s.is_empty() {
            return Some(Period::default());
        }
        Period::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The period holding `now_ms`: its start and its end (exclusive), Unix
    /// ms. "total" is `(0, i64::MAX)`.
    pub fn bounds(self, now_ms: i64) -> (i64, i64) {
        const DAY: i64 = 86_400_000;
        let day = now_ms.div_euclid(DAY);
        match self {
            Period::Day => (day * DAY, (day + 1) * DAY),
            Period::Week => {
                // 1970-01-01 was a Thursday: Monday is 3 days earlier.
                let monday = (day + 3).div_euclid(7) * 7 - 3;
                (monday * DAY, (monday + 7) * DAY)
            }
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    days_from_civil(y, m, 1) * DAY,
                    days_from_civil(ny, nm, 1) * DAY,
                )
            }
            Period::Total => (0, i64::MAX),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a data plane does with a limit while no control plane answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnOutage {
    /// Admit up to the limit divided by the data planes last known.
    #[default]
    Open,
    /// Refuse.
    Closed,
}

impl OnOutage {
    pub fn as_str(self) -> &'static str {
        match self {
            OnOutage::Open => "open",
            OnOutage::Closed => "closed",
        }
    }

    /// Empty means "open".
    pub fn parse(s: &str) -> Option<OnOutage> {
        match s {
            "" | "open" => Some(OnOutage::Open),
            "closed" => Some(OnOutage::Closed),
            _ => None,
        }
    }
}

/// A spend budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Budget {
    pub micros: u64,
    pub period: Period,
}

/// The validated limits of one scope. `None` is no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u32>,
    pub budget: Option<Budget>,
    /// The rpm/tpm window.
    pub window_ms: u32,
    pub on_outage: OnOutage,
}

impl Limits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.tpm.is_none()
            && self.max_concurrency.is_none()
            && self.budget.is_none()
    }

    /// The limit of one kind, in its bucket's units.
    pub fn get(&self, kind: Kind) -> Option<u64> {
        match kind {
            Kind::Rpm => self.rpm,
            Kind::Tpm => self.tpm,
            Kind::Concurrency => self.max_concurrency.map(u64::from),
            Kind::Budget => self.budget.map(|b| b.micros),
        }
    }

    /// The kinds that are set, with their limits.
    pub fn kinds(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL
            .into_iter()
            .filter_map(|k| self.get(k).map(|v| (k, v)))
    }

    /// The window (rate kinds) or period (budget) holding `now_ms`: start
    /// and end, Unix ms. Concurrency has none: `(0, i64::MAX)`.
    pub fn window(&self, kind: Kind, now_ms: i64) -> (i64, i64) {
        match kind {
            Kind::Rpm | Kind::Tpm => {
                let w = i64::from(self.window_ms.max(1));
                let start = now_ms.div_euclid(w) * w;
                (start, start + w)
            }
            Kind::Concurrency => (0, i64::MAX),
            Kind::Budget => self
                .budget
                .map(|b| b.period.bounds(now_ms))
                .unwrap_or((0, i64::MAX)),
        }
    }
}

impl TryFrom<&pb::Limits> for Limits {
    type Error = LimitsError;

    /// Zero means "no limit" (an update's way of removing one).
    fn try_from(l: &pb::Limits) -> Result<Self, Self::Error> {
        let window_ms = match l.window_ms {
            0 => DEFAULT_WINDOW_MS,
            w if (MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&w) => w,
            w => return Err(LimitsError::Window(w)),
        };
        let period = Period::parse(&l.budget_period)
            .ok_or_else(|| LimitsError::Period(l.budget_period.clone()))?;
        let on_outage = OnOutage::parse(&l.on_outage)
            .ok_or_else(|| LimitsError::OnOutage(l.on_outage.clone()))?;
        Ok(Limits {
            rpm: l.rpm.filter(|&v| v > 0),
            tpm: l.tpm.filter(|&v| v > 0),
            max_concurrency: l.max_concurrency.filter(|&v| v > 0),
            budget: l
                .budget_micros
                .filter(|&v| v > 0)
                .map(|micros| Budget { micros, period }),
            window_ms,
            on_outage,
        })
    }
}

impl From<&Limits> for pb::Limits {
    fn from(l: &Limits) -> Self {
        pb::Limits {
            rpm: l.rpm,
            tpm: l.tpm,
            max_concurrency: l.max_concurrency,
            budget_micros: l.budget.map(|b| b.micros),
            budget_period: l
                .budget
                .map(|b| b.period.as_str().to_owned())
                .unwrap_or_default(),
            window_ms: if l.window_ms == DEFAULT_WINDOW_MS {
                0
            } else {
                l.window_ms
            },
            on_outage: match l.on_outage {
                OnOutage::Open => String::new(),
                OnOutage::Closed => "closed".to_owned(),
            },
        }
    }
}

/// Why limits or a bucket could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("window_ms {0} is outside {MIN_WINDOW_MS}..={MAX_WINDOW_MS}")]
    Window(u32),
    #[error("budget_period {0:?} is not one of day, week, month, total")]
    Period(String),
    #[error("on_outage {0:?} is not one of open, closed")]
    OnOutage(String),
    #[error("scope {0:?} is not one of key, model, provider")]
    Scope(String),
    #[error("kind {0:?} is not one of rpm, tpm, concurrency, budget")]
    Kind(String),
    #[error("a bucket needs a name")]
    EmptyName,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn ms(rfc3339: &str) -> i64 {
        let t = humantime::parse_rfc3339(rfc3339).unwrap();
        t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
    }

    fn show(ms: i64) -> String {
        humantime::format_rfc3339(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
    }

    #[test]
    fn calendar_periods_are_utc_days_weeks_and_months() {
        let now = ms("2026-12-02T20:29:52Z"); // a Wednesday
        let (s, e) = Period::Day.bounds(now);
        assert_eq!(
            (show(s), show(e)),
            ("2026-12-02T00:00:00Z".into(), "2026-12-03T00:00:00Z".into())
        );
        let (s, e) = Period::Week.bounds(now);
        assert_eq!(
            (show(s), show(e)),
            ("2026-11-30T00:00:00Z".into(), "2026-12-07T00:00:00Z".into())
        );
        let (s, e) = Period::Month.bounds(now);
        assert_eq!(
            (show(s), show(e)),
            ("2026-12-01T00:00:00Z".into(), "2027-01-01T00:00:00Z".into())
        );
        let (s, e) = Period::Month.bounds(ms("2024-02-29T23:59:59.999Z"));
        assert_eq!(
            (show(s), show(e)),
            ("2024-02-01T00:00:00Z".into(), "2024-03-01T00:00:00Z".into())
        );
        // A Monday's first millisecond starts its own week.
        let monday = ms("2026-11-30T00:00:00Z");
        assert_eq!(Period::Week.bounds(monday).0, monday);
        assert_eq!(Period::Week.bounds(monday - 1).1, monday);
        assert_eq!(Period::Total.bounds(now), (0, i64::MAX));
    }

    #[test]
    fn civil_days_round_trip() {
        for day in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn rate_windows_align_to_the_epoch() {
        let l = Limits {
            rpm: Some(10),
            window_ms: 1_000,
            ..Limits::default()
        };
        assert_eq!(l.window(Kind::Rpm, 12_345), (12_000, 13_000));
        assert_eq!(l.window(Kind::Rpm, 13_000), (13_000, 14_000));
        assert_eq!(l.window(Kind::Concurrency, 12_345), (0, i64::MAX));
    }

    #[test]
    fn wire_limits_validate_and_zero_means_none() {
        let wire = pb::Limits {
            rpm: Some(0),
            tpm: Some(1_000),
            max_concurrency: Some(3),
            budget_micros: Some(50_000),
            budget_period: "day".into(),
            window_ms: 0,
            on_outage: "closed".into(),
        };
        let l = Limits::try_from(&wire).unwrap();
        assert_eq!(l.rpm, None);
        assert_eq!(l.tpm, Some(1_000));
        assert_eq!(l.max_concurrency, Some(3));
        assert_eq!(
            l.budget,
            Some(Budget {
                micros: 50_000,
                period: Period::Day
            })
        );
        assert_eq!(l.window_ms, DEFAULT_WINDOW_MS);
        assert_eq!(l.on_outage, OnOutage::Closed);
        assert_eq!(
            l.kinds().collect::<Vec<_>>(),
            [
                (Kind::Tpm, 1_000),
                (Kind::Concurrency, 3),
                (Kind::Budget, 50_000)
            ]
        );
        // Back to the wire and again: the same limits.
        assert_eq!(Limits::try_from(&pb::Limits::from(&l)).unwrap(), l);

        for (bad, field) in [
            (
                pb::Limits {
                    window_ms: 5,
                    ..Default::default()
                },
                "window_ms",
            ),
            (
                pb::Limits {
                    budget_period: "year".into(),
                    ..Default::default()
                },
                "budget_period",
            ),
            (
                pb::Limits {
                    on_outage: "maybe".into(),
                    ..Default::default()
                },
                "on_outage",
            ),
        ] {
            let e = Limits::try_from(&bad).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        assert!(Limits::try_from(&pb::Limits::default()).unwrap().is_empty());
    }

    #[test]
    fn buckets_read_from_the_wire() {
        let b = BucketId::new(Scope::Model, "gpt", Kind::Tpm);
        assert_eq!(BucketId::try_from(&pb::BucketId::from(&b)).unwrap(), b);
        assert_eq!(b.label(), "model:tpm");
        let bad = pb::BucketId {
            scope: "team".into(),
            name: "x".into(),
            kind: "rpm".into(),
        };
        assert!(BucketId::try_from(&bad).is_err());
    }
}
