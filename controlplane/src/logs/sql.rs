//! SQL text with bound parameters, and the `LogFilter` as WHERE conditions.
//!
//! Values never go into the SQL text: every one is a `$N` parameter. The
//! same statements run on SQLite and PostgreSQL.

use llmgw_proto::v1 as pb;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use super::row::canonical_trace_id;
use crate::store::StoreError;

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    Real(f64),
    Text(String),
    /// Bytes: a request id as stored (`row::stored_id`).
    Bytes(Vec<u8>),
}

/// A statement and its parameters, `$1` being the first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Statement {
    /// Adds a parameter and returns its placeholder.
    pub fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    /// The statement behind a prefix, e.g. `EXPLAIN QUERY PLAN `.
    pub fn with_prefix(&self, prefix: &str) -> Statement {
        Statement {
            sql: format!("{prefix}{}", self.sql),
            params: self.params.clone(),
        }
    }

    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        bind_all(sqlx::query(&self.sql), &self.params)
    }

    pub async fn fetch_all(&self, conn: &mut AnyConnection) -> Result<Vec<AnyRow>, sqlx::Error> {
        self.query().fetch_all(&mut *conn).await
    }
}

pub fn bind_all<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    params: &'q [Param],
) -> Query<'q, Any, AnyArguments<'q>> {
    for p in params {
        q = match p {
            Param::Int(v) => q.bind(*v),
            Param::Real(v) => q.bind(*v),
            Param::Text(v) => q.bind(v.as_str()),
            Param::Bytes(v) => q.bind(v.as_slice()),
        };
    }
    q
}

/// `$a, $b, ...` for a list of values, bound into `st`.
pub fn in_list<I: IntoIterator<Item = Param>>(st: &mut Statement, values: I) -> String {
    values
        .into_iter()
        .map(|v| st.bind(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL test for a failed request: an error status, a cancel, or an
/// error message.
pub const FAILED: &str = "(status >= 400 OR cancelled <> 0 OR error <> '')";

/// The condition of the partial index `request_logs_not_ok_outcome_time`
/// (migration 0025): an outcome other than ok, or unrecorded. ([`FAILED`]
/// is that of `request_logs_failed_time`.)
pub const NOT_OK_OUTCOME: &str = "outcome NOT IN ('', 'ok')";

/// The SQL expression for a request's exact cost in nano-dollars: its
/// `cost_nanos`, or for a row stored before that column (migration 0021)
/// its floating-point cost to the nearest nano-dollar, as ingest takes a
/// record from an older data plane.
pub const COST_NANOS: &str = cost_nanos_sql!();

/// [`COST_NANOS`] as a literal, for statements put together with
/// `concat!` (`row::SUMMARY_COLUMNS`).
macro_rules! cost_nanos_sql {
    () => {
        "COALESCE(cost_nanos, CAST(ROUND(cost * 1000000000) AS BIGINT))"
    };
}
pub(crate) use cost_nanos_sql;

/// The SQL expression for input plus output tokens, summed in 64 bits:
/// PostgreSQL keeps each in a 32-bit column (migration 0030), and two
/// large ones would overflow their sum.
pub const TOKENS: &str = "(CAST(input_tokens AS BIGINT) + output_tokens)";

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A checked `LogFilter`: zero or empty means "no bound".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    model: Option<String>,
    provider: Option<String>,
    key: Option<String>,
    protocol: Option<String>,
    upstream_protocol: Option<String>,
    stop_reason: Option<String>,
    user: Option<String>,
    /// Canonical: 32 lowercase hex digits.
    trace_id: Option<String>,
    replay_of: Option<String>,
    status_min: Option<i64>,
    status_max: Option<i64>,
    min_latency_ms: Option<i64>,
    max_latency_ms: Option<i64>,
    min_tokens: Option<i64>,
    max_tokens: Option<i64>,
    stream: Option<bool>,
    errors_only: bool,
    outcome: Option<&'static str>,
}

fn text(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn positive(v: u64) -> Option<i64> {
    (v > 0).then(|| clamp(v))
}

impl Filter {
    pub fn parse(f: &pb::LogFilter) -> Result<Filter, StoreError> {
        if f.since_ms < 0 || f.until_ms < 0 {
            return Err(StoreError::Invalid(
                "since_ms and until_ms must not be negative".into(),
            ));
        }
        if f.since_ms > 0 && f.until_ms > 0 && f.since_ms >= f.until_ms {
            return Err(StoreError::Invalid(
                "the time range is empty: since must be before until".into(),
            ));
        }
        if f.status_min > 0 && f.status_max > 0 && f.status_min > f.status_max {
            return Err(StoreError::Invalid(
                "status_min must not be above status_max".into(),
            ));
        }
        if f.min_latency_ms > 0 && f.max_latency_ms > 0 && f.min_latency_ms > f.max_latency_ms {
            return Err(StoreError::Invalid(
                "min_latency_ms must not be above max_latency_ms".into(),
            ));
        }
        if f.min_tokens > 0 && f.max_tokens > 0 && f.min_tokens > f.max_tokens {
            return Err(StoreError::Invalid(
                "min_tokens must not be above max_tokens".into(),
            ));
        }
        let trace_id = match text(&f.trace_id) {
            None => None,
            Some(t) => Some(canonical_trace_id(&t).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "trace_id '{}' is not a trace id: give its 32 hex digits",
                    t.chars().take(80).collect::<String>()
                ))
            })?),
        };
        Ok(Filter {
            since_ms: (f.since_ms > 0).then_some(f.since_ms),
            until_ms: (f.until_ms > 0).then_some(f.until_ms),
            model: text(&f.model),
            provider: text(&f.provider),
            key: text(&f.key),
            protocol: text(&f.protocol),
            upstream_protocol: text(&f.upstream_protocol),
            stop_reason: text(&f.stop_reason),
            user: text(&f.user),
            trace_id,
            replay_of: text(&f.replay_of),
            status_min: (f.status_min > 0).then(|| i64::from(f.status_min)),
            status_max: (f.status_max > 0).then(|| i64::from(f.status_max)),
            min_latency_ms: positive(f.min_latency_ms),
            max_latency_ms: positive(f.max_latency_ms),
            min_tokens: positive(f.min_tokens),
            max_tokens: positive(f.max_tokens),
            stream: f.stream,
            errors_only: f.errors_only,
            outcome: match f.outcome() {
                pb::Outcome::Unspecified => None,
                o => Some(o.name()),
            },
        })
    }

    /// The WHERE conditions (to be joined with AND), values bound in `st`.
    pub fn conditions(&self, st: &mut Statement) -> Vec<String> {
        let mut c = Vec::new();
        let mut cmp = |st: &mut Statement, expr: &str, op: &str, p: Param| {
            let ph = st.bind(p);
            c.push(format!("{expr} {op} {ph}"));
        };
        if let Some(v) = self.since_ms {
            cmp(st, "time_ms", ">=", Param::Int(v));
        }
        if let Some(v) = self.until_ms {
            cmp(st, "time_ms", "<", Param::Int(v));
        }
        if let Some(v) = &self.model {
            cmp(st, "model", "=", Param::Text(v.clone()));
        }
        if let Some(v) = &self.provider {
            cmp(st, "provider", "=", Param::Text(v.clone()));
        }
        if let Some(v) = &self.key {
            cmp(st, "key_name", "=", Param::Text(v.clone()));
        }
        if let Some(v) = &self.protocol {
            cmp(st, "protocol", "=", Param::Text(v.clone()));
        }
        if let Some(v) = &self.upstream_protocol {
            cmp(st, "upstream_protocol", "=", Param::Text(v.clone()));
        }
        if let Some(v) = &self.stop_reason {
            cmp(st, "stop_reason", "=", Param::Text(v.clone()));
        }
        if let Some(v) = &self.user {
            // The literal `<> ''` lets the planner use the partial index
            // (0009: only rows that name a user), which a bound value
            // alone does not prove applies.
            cmp(
                st,
                "end_user <> '' AND end_user",
                "=",
                Param::Text(v.clone()),
            );
        }
        if let Some(v) = &self.trace_id {
            // As for the user: the literal matches the partial index (0013).
            cmp(
                st,
                "trace_id <> '' AND trace_id",
                "=",
                Param::Text(v.clone()),
            );
        }
        if let Some(v) = &self.replay_of {
            // As for the user: the literal matches the partial index (0016).
            cmp(
                st,
                "replay_of <> '' AND replay_of",
                "=",
                Param::Text(v.clone()),
            );
        }
        if let Some(v) = self.status_min {
            cmp(st, "status", ">=", Param::Int(v));
        }
        if let Some(v) = self.status_max {
            cmp(st, "status", "<=", Param::Int(v));
        }
        if let Some(v) = self.min_latency_ms {
            cmp(st, "latency_ms", ">=", Param::Int(v));
        }
        if let Some(v) = self.max_latency_ms {
            cmp(st, "latency_ms", "<=", Param::Int(v));
        }
        if let Some(v) = self.min_tokens {
            cmp(st, TOKENS, ">=", Param::Int(v));
        }
        if let Some(v) = self.max_tokens {
            cmp(st, TOKENS, "<=", Param::Int(v));
        }
        if let Some(v) = self.stream {
            cmp(st, "stream", "=", Param::Int(i64::from(v)));
        }
        if let Some(v) = self.outcome {
            // A failed outcome repeats the condition of the partial index
            // (0025) word for word, as for the user: SQLite uses a partial
            // index only when the query states its condition.
            let field = if v == pb::Outcome::Ok.name() {
                "outcome".to_string()
            } else {
                format!("{NOT_OK_OUTCOME} AND outcome")
            };
            cmp(st, &field, "=", Param::Text(v.to_string()));
        }
        // Errors only, or statuses from 400 (all failures): the condition
        // of the partial index of failures (0025), word for word.
        if self.errors_only || self.status_min.is_some_and(|v| v >= 400) {
            c.push(FAILED.to_string());
        }
        c
    }

    /// The time range, `[since, until)`, each bound absent for none.
    pub fn range(&self) -> (Option<i64>, Option<i64>) {
        (self.since_ms, self.until_ms)
    }

    /// The same filter over another time range.
    pub fn with_range(&self, since_ms: Option<i64>, until_ms: Option<i64>) -> Filter {
        Filter {
            since_ms,
            until_ms,
            ..self.clone()
        }
    }

    /// The conditions over the rollup columns (`log_rollups`, see
    /// `rollup.rs`), time aside, each with the column it tests (so stats
    /// can pick a rollup cube that keeps it), or `None` when a condition
    /// needs the raw rows: the rollups keep model, provider, key, end user,
    /// outcome and failure, and nothing of protocols, stop reasons, traces,
    /// replays, statuses, latencies, token counts or streaming per request.
    pub fn rollup_conditions(&self, st: &mut Statement) -> Option<Vec<(&'static str, String)>> {
        // Every field by name, so that a new filter cannot be ignored here
        // (and stats silently answer for a wider set of requests).
        let Filter {
            since_ms: _,
            until_ms: _,
            model,
            provider,
            key,
            protocol,
            upstream_protocol,
            stop_reason,
            user,
            trace_id,
            replay_of,
            status_min,
            status_max,
            min_latency_ms,
            max_latency_ms,
            min_tokens,
            max_tokens,
            stream,
            errors_only,
            outcome,
        } = self;
        let raw_only = protocol.is_some()
            || upstream_protocol.is_some()
            || stop_reason.is_some()
            || trace_id.is_some()
            || replay_of.is_some()
            || status_min.is_some()
            || status_max.is_some()
            || min_latency_ms.is_some()
            || max_latency_ms.is_some()
            || min_tokens.is_some()
            || max_tokens.is_some()
            || stream.is_some();
        if raw_only {
            return None;
        }
        let mut c = Vec::new();
        for (col, v) in [
            ("model", model),
            ("provider", provider),
            ("key_name", key),
            ("end_user", user),
        ] {
            if let Some(v) = v {
                c.push((col, format!("{col} = {}", st.bind(Param::Text(v.clone())))));
            }
        }
        if let Some(v) = outcome {
            c.push((
                "outcome",
                format!("outcome = {}", st.bind(Param::Text(v.to_string()))),
            ));
        }
        if *errors_only {
            c.push(("failed", "failed = 1".to_string()));
        }
        Some(c)
    }

    /// ` WHERE a AND b` or nothing.
    pub fn where_sql(&self, st: &mut Statement) -> String {
        let c = self.conditions(st);
        if c.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", c.join(" AND "))
        }
    }
}

/// Whether a record passes the filter: the same tests as the SQL, for the
/// records `FollowLogs` sees before any query.
pub fn matches(f: &pb::LogFilter, r: &pb::RequestLog) -> bool {
    let eq = |want: &str, got: &str| {
        let w = want.trim();
        w.is_empty() || w == got
    };
    let tokens = r.input_tokens.saturating_add(r.output_tokens);
    (f.since_ms <= 0 || r.time_ms >= f.since_ms)
        && (f.until_ms <= 0 || r.time_ms < f.until_ms)
        && eq(&f.model, &r.model)
        && eq(&f.provider, &r.provider)
        && eq(&f.key, &r.key)
        && eq(&f.protocol, &r.protocol)
        && eq(&f.upstream_protocol, &r.upstream_protocol)
        && eq(&f.stop_reason, &r.stop_reason)
        && eq(&f.user, &r.user)
        && (f.trace_id.trim().is_empty()
            || canonical_trace_id(&f.trace_id).is_some_and(|t| t == r.trace_id))
        && eq(&f.replay_of, &r.replay_of)
        && (f.status_min == 0 || r.status >= f.status_min)
        && (f.status_max == 0 || r.status <= f.status_max)
        && (f.min_latency_ms == 0 || r.latency_ms >= f.min_latency_ms)
        && (f.max_latency_ms == 0 || r.latency_ms <= f.max_latency_ms)
        && (f.min_tokens == 0 || tokens >= f.min_tokens)
        && (f.max_tokens == 0 || tokens <= f.max_tokens)
        && f.stream.is_none_or(|s| s == r.stream)
        && (!f.errors_only || is_failure(r))
        && (f.outcome == pb::Outcome::Unspecified as i32 || f.outcome == r.outcome)
}

/// A failed request: status >= 400, cancelled, or an error message.
pub fn is_failure(r: &pb::RequestLog) -> bool {
    r.status >= 400 || r.cancelled || !r.error.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_not_interpolated() {
        let f = Filter::parse(&pb::LogFilter {
            since_ms: 10,
            until_ms: 20,
            model: "m'; DROP TABLE request_logs; --".into(),
            provider: "p".into(),
            key: "k".into(),
            status_min: 500,
            status_max: 599,
            min_latency_ms: 1,
            max_latency_ms: 2,
            min_tokens: 3,
            max_tokens: 4,
            stream: Some(true),
            errors_only: true,
            protocol: " anthropic ".into(),
            upstream_protocol: "openai-chat".into(),
            stop_reason: "pause_turn".into(),
            user: "u'--".into(),
            outcome: pb::Outcome::Timeout as i32,
            trace_id: " 4BF92F3577B34DA6A3CE929D0E0E4736 ".into(),
            replay_of: String::new(),
        })
        .unwrap();
        let mut st = Statement::default();
        let w = f.where_sql(&mut st);
        assert!(!w.contains("DROP"), "{w}");
        assert_eq!(st.params.len(), 18);
        assert!(w.contains("stop_reason = $8"), "{w}");
        assert_eq!(st.params[7], Param::Text("pause_turn".into()));
        assert!(w.contains("end_user <> '' AND end_user = $9"), "{w}");
        assert_eq!(st.params[8], Param::Text("u'--".into()));
        assert!(w.contains("trace_id <> '' AND trace_id = $10"), "{w}");
        assert_eq!(
            st.params[9],
            Param::Text("4bf92f3577b34da6a3ce929d0e0e4736".into())
        );
        assert!(w.contains("outcome = $18"), "{w}");
        assert_eq!(st.params[17], Param::Text("timeout".into()));
        assert!(w.contains("model = $3"), "{w}");
        assert!(w.contains(" protocol = $6"), "{w}");
        assert!(w.contains("upstream_protocol = $7"), "{w}");
        assert_eq!(st.params[5], Param::Text("anthropic".into()));
        assert_eq!(st.params[6], Param::Text("openai-chat".into()));
        assert!(w.ends_with(FAILED), "{w}");
    }

    #[test]
    fn bad_filters() {
        let bad = [
            pb::LogFilter {
                since_ms: 5,
                until_ms: 5,
                ..Default::default()
            },
            pb::LogFilter {
                status_min: 500,
                status_max: 400,
                ..Default::default()
            },
            pb::LogFilter {
                since_ms: -1,
                ..Default::default()
            },
        ];
        for f in bad {
            assert!(Filter::parse(&f).is_err(), "{f:?}");
        }
        let mut st = Statement::default();
        assert_eq!(
            Filter::parse(&pb::LogFilter::default())
                .unwrap()
                .where_sql(&mut st),
            ""
        );
    }

    #[test]
    fn matching_mirrors_sql() {
        let r = pb::RequestLog {
            time_ms: 100,
            model: "m".into(),
            status: 502,
            latency_ms: 50,
            input_tokens: 5,
            output_tokens: 5,
            stream: true,
            ..Default::default()
        };
        assert!(matches(&pb::LogFilter::default(), &r));
        assert!(matches(
            &pb::LogFilter {
                since_ms: 100,
                until_ms: 101,
                model: " m ".into(),
                status_min: 500,
                status_max: 599,
                min_tokens: 10,
                max_tokens: 10,
                stream: Some(true),
                errors_only: true,
                ..Default::default()
            },
            &r
        ));
        assert!(!matches(
            &pb::LogFilter {
                until_ms: 100,
                ..Default::default()
            },
            &r
        ));
        assert!(!matches(
            &pb::LogFilter {
                stream: Some(false),
                ..Default::default()
            },
            &r
        ));
        assert!(!matches(
            &pb::LogFilter {
                min_latency_ms: 51,
                ..Default::default()
            },
            &r
        ));
    }

    #[test]
    fn outcome_filters_in_sql_and_in_matching() {
        let f = pb::LogFilter {
            outcome: pb::Outcome::Interrupted as i32,
            ..Default::default()
        };
        let mut st = Statement::default();
        let w = Filter::parse(&f).unwrap().where_sql(&mut st);
        assert!(w.contains("outcome = $1"), "{w}");
        let mut r = pb::RequestLog::default();
        r.set_outcome(pb::Outcome::Interrupted);
        assert!(matches(&f, &r));
        assert!(matches(&pb::LogFilter::default(), &r));
        r.set_outcome(pb::Outcome::Ok);
        assert!(!matches(&f, &r));
        // Unspecified is no filter.
        let mut st = Statement::default();
        let w = Filter::parse(&pb::LogFilter::default())
            .unwrap()
            .where_sql(&mut st);
        assert!(!w.contains("outcome"), "{w}");
    }

    #[test]
    fn protocol_matching_mirrors_sql() {
        let r = pb::RequestLog {
            protocol: "anthropic".into(),
            upstream_protocol: "openai-chat".into(),
            ..Default::default()
        };
        let by = |protocol: &str, upstream_protocol: &str| pb::LogFilter {
            protocol: protocol.into(),
            upstream_protocol: upstream_protocol.into(),
            ..Default::default()
        };
        assert!(matches(&by("anthropic", ""), &r));
        assert!(matches(&by(" anthropic ", "openai-chat"), &r));
        assert!(matches(&by("", "openai-chat"), &r));
        assert!(!matches(&by("gemini", ""), &r));
        assert!(!matches(&by("", "anthropic"), &r));
        assert!(!matches(&by("anthropic", "openai"), &r));
        let stopped = |reason: &str| pb::LogFilter {
            stop_reason: reason.into(),
            ..Default::default()
        };
        let paused = pb::RequestLog {
            stop_reason: "pause_turn".into(),
            ..r.clone()
        };
        assert!(matches(&stopped("pause_turn"), &paused));
        assert!(!matches(&stopped("end_turn"), &paused));
        assert!(!matches(&stopped("pause_turn"), &r));
        let for_user = |user: &str| pb::LogFilter {
            user: user.into(),
            ..Default::default()
        };
        let alices = pb::RequestLog {
            user: "alice".into(),
            ..r.clone()
        };
        assert!(matches(&for_user(" alice "), &alices));
        assert!(!matches(&for_user("bob"), &alices));
        assert!(!matches(&for_user("alice"), &r));
        // A request no upstream answered has no upstream protocol.
        let unanswered = pb::RequestLog {
            protocol: "anthropic".into(),
            ..Default::default()
        };
        assert!(!matches(&by("", "openai-chat"), &unanswered));
    }

    #[test]
    fn trace_id_filters_in_sql_and_in_matching() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let by = |trace_id: &str| pb::LogFilter {
            trace_id: trace_id.into(),
            ..Default::default()
        };
        let traced = pb::RequestLog {
            trace_id: id.into(),
            ..Default::default()
        };
        assert!(matches(&by(id), &traced));
        assert!(matches(&by(" 4BF92F3577B34DA6A3CE929D0E0E4736 "), &traced));
        assert!(matches(&by(""), &traced));
        assert!(!matches(&by("0af7651916cd43dd8448eb211c80319c"), &traced));
        assert!(!matches(&by(id), &pb::RequestLog::default()));
        // Not a trace id: refused, with the reason (and never matching).
        for bad in ["xyz", "00000000000000000000000000000000", "4bf92f35"] {
            let e = Filter::parse(&by(bad)).unwrap_err().to_string();
            assert!(e.contains("32 hex digits"), "{bad}: {e}");
            assert!(!matches(&by(bad), &traced));
        }
        let mut st = Statement::default();
        let w = Filter::parse(&by(id)).unwrap().where_sql(&mut st);
        assert_eq!(w, " WHERE trace_id <> '' AND trace_id = $1");
        assert_eq!(st.params, [Param::Text(id.into())]);
    }

    #[test]
    fn replay_of_filters_in_sql_and_in_matching() {
        let by = |replay_of: &str| pb::LogFilter {
            replay_of: replay_of.into(),
            ..Default::default()
        };
        let replay = pb::RequestLog {
            replay_of: "orig".into(),
            ..Default::default()
        };
        assert!(matches(&by("orig"), &replay));
        assert!(matches(&by(" orig "), &replay));
        assert!(matches(&by(""), &replay));
        assert!(!matches(&by("other"), &replay));
        assert!(!matches(&by("orig"), &pb::RequestLog::default()));
        let mut st = Statement::default();
        let w = Filter::parse(&by("orig")).unwrap().where_sql(&mut st);
        assert_eq!(w, " WHERE replay_of <> '' AND replay_of = $1");
        assert_eq!(st.params, [Param::Text("orig".into())]);
    }

    #[test]
    fn failure_filters_repeat_the_partial_index_conditions() {
        let sql = |f: pb::LogFilter| {
            let mut st = Statement::default();
            Filter::parse(&f).unwrap().where_sql(&mut st)
        };
        let f = pb::LogFilter::default;
        let failed = |status_min, status_max, errors_only| pb::LogFilter {
            status_min,
            status_max,
            errors_only,
            ..f()
        };
        for (what, filter) in [
            ("errors only", failed(0, 0, true)),
            ("5xx", failed(500, 599, false)),
            ("from 400", failed(400, 0, false)),
            ("5xx, errors only", failed(500, 599, true)),
        ] {
            let w = sql(filter);
            assert_eq!(w.matches(FAILED).count(), 1, "{what}: {w}");
        }
        let outcome = |o: pb::Outcome| pb::LogFilter {
            outcome: o as i32,
            ..f()
        };
        for o in [pb::Outcome::Timeout, pb::Outcome::Refused] {
            assert_eq!(
                sql(outcome(o)),
                format!(" WHERE {NOT_OK_OUTCOME} AND outcome = $1")
            );
        }
        // Filters that admit successes must not narrow to the indexes' rows.
        assert_eq!(sql(outcome(pb::Outcome::Ok)), " WHERE outcome = $1");
        for (what, filter) in [
            ("none", f()),
            ("2xx", failed(200, 299, false)),
            ("from 300", failed(300, 0, false)),
            ("up to 499", failed(0, 499, false)),
        ] {
            let w = sql(filter);
            assert!(!w.contains(FAILED), "{what}: {w}");
            assert!(!w.contains(NOT_OK_OUTCOME), "{what}: {w}");
        }
    }
}
