//! Log retention: removes request logs (and their attempts) and quarantined
//! records older than the configured number of days, once at start and
//! then every hour.
//!
//! - SQLite deletes a few thousand rows per transaction, pausing between
//!   them, so that ingest is never held up for long.
//! - Headers and bodies (`request_log_details`, and the pieces of long
//!   bodies in `request_log_pieces`) go earlier, after
//!   `--body-retention-days` (7 by default, at most the logs' days), the
//!   same way: whole day partitions on PostgreSQL, batches on SQLite. The
//!   records stay, and say that their bodies expired.
//! - The log rollups (`rollup.rs`) have their own retention, at least as
//!   long as the request logs': their buckets that ended before the cutoff
//!   go in the same hourly pass, a few thousand rows per statement (plain
//!   deletes, which control planes sharing a database may run at once).
//!   Their minute rows, the bulk of them, go earlier
//!   (`--rollup-minute-retention-days`, 7 by default): stats read hours
//!   and days before the minutes' horizon (`rollup::advance_minute_horizon`).
//! - PostgreSQL drops whole day partitions once the day is entirely older
//!   than the cutoff (so a day is kept up to a day longer than asked). Each
//!   drop takes a short lock timeout and is retried rather than queueing
//!   ingest behind it, and a transaction-scoped advisory lock lets only one
//!   control plane at a time do it. The same hourly pass creates today's and
//!   tomorrow's partitions ahead of ingest. (`reindex.rs` rebuilds the
//!   indexes of days that are over, on its own timer.)

use std::time::Duration;

use sqlx::Row;
use tokio::sync::watch;

use super::sql::{Param, Statement};
use crate::store::{now_ms, Backend, Store, StoreError};

/// Rows deleted per transaction.
pub const BATCH: usize = 5000;
/// `request_log_details` rows deleted per transaction on SQLite: since
/// migration 0035 a row is a block of up to 512 records' details (about
/// 13 KB for small bodies), so a batch frees about as much as 5,000 rows
/// of one record did.
pub const DETAILS_BATCH: usize = 64;
const EVERY: Duration = Duration::from_secs(3600);
/// Pause between two delete transactions, to let other writers in.
pub(super) const PAUSE: Duration = Duration::from_millis(20);
pub(super) const DAY_MS: i64 = 24 * 3600 * 1000;

/// How long to keep what, in days; 0 keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    pub logs: u32,
    pub rollups: u32,
    /// Headers and bodies (`request_log_details`); 0 keeps them as long as
    /// the logs. Never more than `logs` (see [`Days::new`]).
    pub bodies: u32,
    /// The rollups' minute rows; 0 deletes no more of them (those behind
    /// a horizon already set stay gone).
    pub rollup_minutes: u32,
}

/// The bodies' days when none is given.
pub const DEFAULT_BODY_DAYS: u32 = 7;

impl Days {
    /// Everything kept for ever: no retention at all.
    pub const FOREVER: Days = Days {
        logs: 0,
        rollups: 0,
        bodies: 0,
        rollup_minutes: 0,
    };

    /// The days in force from the flags: bodies default to
    /// [`DEFAULT_BODY_DAYS`], or the logs' days when those are fewer; a
    /// body retention given longer than the logs' is refused, since a
    /// record's bodies cannot outlive its summary.
    pub fn new(
        logs: u32,
        rollups: u32,
        bodies: Option<u32>,
        rollup_minutes: u32,
    ) -> Result<Days, String> {
        let bodies = match bodies {
            None if logs > 0 => DEFAULT_BODY_DAYS.min(logs),
            None => DEFAULT_BODY_DAYS,
            Some(b) if logs > 0 && b > logs => {
                return Err(format!(
                    "--body-retention-days (BODY_RETENTION_DAYS) is {b}, longer than \
                     --log-retention-days (LOG_RETENTION_DAYS) {logs}: a record's headers \
                     and bodies cannot be kept longer than the record; give at most {logs}, \
                     or 0 to keep them as long as the logs"
                ))
            }
            Some(b) => b,
        };
        Ok(Days {
            logs,
            rollups,
            bodies,
            rollup_minutes,
        })
    }

    /// The bodies' days in effect: the logs' when 0.
    pub fn bodies_in_effect(self) -> u32 {
        if self.bodies == 0 {
            self.logs
        } else {
            self.bodies
        }
    }

    /// The rollups' days in effect: more than the request logs' (stats
    /// read the rollups for any range, so they must cover every raw row,
    /// and PostgreSQL drops raw rows a whole day partition at a time, up to
    /// a day after their cutoff), and forever when the logs are kept
    /// forever.
    pub fn rollups_in_effect(self) -> u32 {
        if self.logs == 0 || self.rollups == 0 {
            0
        } else {
            self.rollups.max(self.logs.saturating_add(1))
        }
    }
}

fn cutoff(days: u32) -> i64 {
    now_ms().saturating_sub(i64::from(days).saturating_mul(DAY_MS))
}

/// Runs until `shutdown` turns true.
pub async fn run(store: Store, days: Days, shutdown: watch::Receiver<bool>) {
    let rollup_days = days.rollups_in_effect();
    if rollup_days != days.rollups {
        tracing::warn!(
            asked = days.rollups,
            kept = rollup_days,
            "log rollups are kept at least as long as the request logs"
        );
    }
    let body_days = days.bodies_in_effect();
    let minute_days = days.rollup_minutes;
    let days = days.logs;
    if days == 0 {
        tracing::info!("log retention is off (--log-retention-days 0)");
    } else {
        tracing::info!(
            days,
            rollup_days,
            "log retention: deleting older request logs and rollups every hour"
        );
    }
    if minute_days > 0 {
        tracing::info!(
            minute_days,
            "rollup minute rows: keeping those from the start of the UTC day this many days ago"
        );
    }
    let mut stop = Some(shutdown);
    loop {
        if store.backend() == Backend::Postgres {
            let now = now_ms();
            for day in [now, now + DAY_MS] {
                if let Err(e) = ensure_day(&store, day).await {
                    tracing::warn!(error = %e, "cannot create a request-log partition ahead");
                }
            }
        }
        // Bodies first: they go before (or with) their records.
        if body_days > 0 {
            let pass =
                purge_details_older_than(&store, cutoff(body_days), DETAILS_BATCH, stop.clone());
            if !run_pass(Pass::Bodies, body_days, pass, &mut stop).await {
                return;
            }
            match super::details::purge_dictionaries(&store, cutoff(body_days)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "body retention: deleted unused dictionaries"),
                Err(e) => tracing::warn!(error = %e, "cannot delete unused log dictionaries"),
            }
        }
        if days > 0 {
            let pass = purge_older_than(&store, cutoff(days), BATCH, stop.clone());
            if !run_pass(Pass::Logs, days, pass, &mut stop).await {
                return;
            }
        }
        if rollup_days > 0 {
            let pass = super::rollup::purge_older_than(&store, cutoff(rollup_days));
            if !run_pass(Pass::Rollups, rollup_days, pass, &mut stop).await {
                return;
            }
        }
        if minute_days > 0 {
            let pass = super::rollup::advance_minute_horizon(&store, cutoff(minute_days), now_ms());
            if !run_pass(Pass::RollupMinutes, minute_days, pass, &mut stop).await {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = super::shutdown_signal(&mut stop) => return,
        }
    }
}

/// A kind of retention pass, for its log lines.
#[derive(Clone, Copy)]
enum Pass {
    Bodies,
    Logs,
    Rollups,
    RollupMinutes,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Bodies => "body retention",
            Pass::Logs => "log retention",
            Pass::Rollups => "rollup retention",
            Pass::RollupMinutes => "rollup minute retention",
        }
    }

    fn deleted(self) -> &'static str {
        match self {
            Pass::Bodies => "deleted the headers and bodies of older records (details rows)",
            Pass::Logs => "deleted old records",
            Pass::Rollups => "deleted old rollups",
            Pass::RollupMinutes => "deleted old minute rows",
        }
    }
}

/// Runs `pass` (kept `days`) to its end and logs what it did; `false`
/// when shutdown came first.
async fn run_pass(
    kind: Pass,
    days: u32,
    pass: impl std::future::Future<Output = Result<u64, StoreError>>,
    stop: &mut Option<watch::Receiver<bool>>,
) -> bool {
    let outcome = tokio::select! {
        r = pass => r,
        _ = super::shutdown_signal(stop) => return false,
    };
    match outcome {
        Ok(0) => tracing::debug!("{}: nothing to delete", kind.name()),
        Ok(n) => tracing::info!(deleted = n, days, "{}: {}", kind.name(), kind.deleted()),
        Err(e) => tracing::warn!(
            error = %e,
            "{} pass failed; trying again later",
            kind.name()
        ),
    }
    true
}

/// PostgreSQL: the day partitions for the day holding `t_ms`, in a short
/// transaction of its own.
///
/// `llmgw_ensure_log_day` (migration 0036) creates each table beside its
/// parent and attaches it, under SHARE UPDATE EXCLUSIVE locks on the three
/// parents, which readers and ingest's open batches do not conflict with;
/// retention's drop of a day does. It takes those locks in one statement
/// that waits at most 200 ms for each, so that it holds a parent while
/// waiting for another at most 400 ms in all, under PostgreSQL's deadlock
/// check (1 s); it locks no existing day, so autovacuum on one is not in
/// its way. Here it tries again after a pause, 40 times (10 to 26 s); then
/// the error goes to the caller (ingest: the batch fails and the data
/// plane resends it).
pub async fn ensure_day(store: &Store, t_ms: i64) -> Result<(), StoreError> {
    ensure_partition(store, "SELECT llmgw_ensure_log_day($1)", t_ms).await
}

/// PostgreSQL: the day partition of `request_log_pieces` for the day
/// holding `t_ms`, made when ingest first stores a body piece of that day
/// (`llmgw_ensure_pieces_day`, migration 0039: the same steps as
/// [`ensure_day`], for that one parent).
pub async fn ensure_pieces_day(store: &Store, t_ms: i64) -> Result<(), StoreError> {
    ensure_partition(store, "SELECT llmgw_ensure_pieces_day($1)", t_ms).await
}

async fn ensure_partition(store: &Store, sql: &str, t_ms: i64) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match sqlx::query(sql).bind(t_ms).execute(store.pool()).await {
            Ok(_) => return Ok(()),
            Err(e) if lock_timeout(&e) && tries + 1 < ENSURE_TRIES => {
                tries += 1;
                tracing::debug!("log partitions: a parent table is busy; trying again");
                tokio::time::sleep(ENSURE_RETRY_PAUSE).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How many times [`ensure_day`] tries, and its pause between tries.
const ENSURE_TRIES: u32 = 40;
const ENSURE_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Deletes request logs with `time_ms < cutoff_ms` (attempts first) and
/// quarantined records received before it, `batch` rows per transaction.
/// Returns how many request logs and quarantined records were deleted.
pub async fn purge_older_than(
    store: &Store,
    cutoff_ms: i64,
    batch: usize,
    shutdown: Option<watch::Receiver<bool>>,
) -> Result<u64, StoreError> {
    let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let stopping = || shutdown.as_ref().is_some_and(|s| *s.borrow());
    let mut deleted = 0u64;
    if store.backend() == Backend::Postgres {
        deleted += drop_days_older_than(store, cutoff_ms, Parent::Logs, &stopping).await?;
        drop_days_older_than(store, cutoff_ms, Parent::Pieces, &stopping).await?;
    }
    while store.backend() == Backend::Sqlite {
        if stopping() {
            return Ok(deleted);
        }
        // IMMEDIATE: the write lock first. A deferred transaction that
        // reads and then writes fails at once (SQLITE_BUSY, no waiting)
        // when another writer (ingest, the rollup compaction) committed in
        // between.
        let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
        // The last row of this batch in (time, id) order; none when fewer
        // than a batch are left. Rows up to it go, so no id list is needed.
        let boundary = sqlx::query(
            "SELECT time_ms, id FROM request_logs WHERE time_ms < $1 \
             ORDER BY time_ms, id LIMIT 1 OFFSET $2",
        )
        .bind(cutoff_ms)
        .bind(batch - 1)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| -> Result<(i64, Vec<u8>), sqlx::Error> { Ok((r.try_get(0)?, r.try_get(1)?)) })
        .transpose()?;
        let mut st = Statement::default();
        let cutoff = st.bind(Param::Int(cutoff_ms));
        let mut cond = format!("time_ms < {cutoff}");
        if let Some((t, id)) = &boundary {
            let t = st.bind(Param::Int(*t));
            let id = st.bind(Param::Bytes(id.clone()));
            cond.push_str(&format!(
                " AND time_ms <= {t} AND (time_ms < {t} OR id <= {id})"
            ));
        }
        // Attempts first (the foreign key cascades too, but SQLite only
        // enforces it where foreign_keys is on).
        st.sql = format!(
            "DELETE FROM request_attempts WHERE request_id IN \
             (SELECT id FROM request_logs WHERE {cond})"
        );
        st.query().execute(&mut *tx).await?;
        st.sql = format!("DELETE FROM request_logs WHERE {cond}");
        let done = st.query().execute(&mut *tx).await?;
        tx.commit().await?;
        deleted += done.rows_affected();
        if boundary.is_none() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    if store.backend() == Backend::Sqlite {
        purge_details_older_than(store, cutoff_ms, DETAILS_BATCH, shutdown.clone()).await?;
    }
    // Quarantined records have no key; delete them by time, in batches too.
    loop {
        if stopping() {
            return Ok(deleted);
        }
        let done = sqlx::query(
            "DELETE FROM log_quarantine WHERE received_at IN \
             (SELECT received_at FROM log_quarantine WHERE received_at < $1 \
              ORDER BY received_at LIMIT $2) AND received_at < $1",
        )
        .bind(cutoff_ms)
        .bind(batch)
        .execute(store.pool())
        .await?;
        deleted += done.rows_affected();
        if done.rows_affected() < batch.unsigned_abs() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok(deleted)
}

/// Deletes the headers and bodies (`request_log_details`, and the body
/// pieces of `request_log_pieces`) of records with `time_ms < cutoff_ms`,
/// keeping the records: PostgreSQL drops the day partitions of both that
/// are entirely older, SQLite deletes `batch` rows per statement with
/// pauses (a block goes once its time, its earliest record's, is before
/// the cutoff: its other records' bodies up to an hour early,
/// `blocks::MAX_SPAN_MS`; a day's pieces once the whole day is). Returns
/// the details rows deleted (blocks, and rows of one record stored before
/// migration 0035).
pub async fn purge_details_older_than(
    store: &Store,
    cutoff_ms: i64,
    batch: usize,
    shutdown: Option<watch::Receiver<bool>>,
) -> Result<u64, StoreError> {
    let stopping = || shutdown.as_ref().is_some_and(|s| *s.borrow());
    if store.backend() == Backend::Postgres {
        let deleted = drop_days_older_than(store, cutoff_ms, Parent::Details, &stopping).await?;
        // Days of pieces whose details partition was dropped without them
        // (by a control plane from before migration 0039).
        drop_days_older_than(store, cutoff_ms, Parent::Pieces, &stopping).await?;
        return Ok(deleted);
    }
    let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let mut deleted = 0u64;
    loop {
        if stopping() {
            return Ok(deleted);
        }
        // The index on time_ms finds the oldest rows.
        let done = sqlx::query(
            "DELETE FROM request_log_details WHERE rowid IN \
             (SELECT rowid FROM request_log_details WHERE time_ms < $1 \
              ORDER BY time_ms LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(batch)
        .execute(store.pool())
        .await?;
        deleted += done.rows_affected();
        if done.rows_affected() < batch.unsigned_abs() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    // A day's pieces, once every block of that day is gone: a block's time
    // is within its records' day, so all of them are once the day ended
    // before the cutoff.
    loop {
        if stopping() {
            return Ok(deleted);
        }
        let done = sqlx::query(
            "DELETE FROM request_log_pieces WHERE rowid IN \
             (SELECT rowid FROM request_log_pieces WHERE day_ms <= $1 LIMIT $2)",
        )
        .bind(cutoff_ms.saturating_sub(DAY_MS))
        .bind(PIECES_BATCH)
        .execute(store.pool())
        .await?;
        if done.rows_affected() < PIECES_BATCH.unsigned_abs() {
            return Ok(deleted);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// SQLite: body pieces deleted per statement (each a few kilobytes).
const PIECES_BATCH: i64 = 256;

/// The partitioned table whose day partitions a retention pass drops.
#[derive(Clone, Copy)]
enum Parent {
    /// A whole day of request logs: logs, attempts, details and pieces.
    Logs,
    /// A day of details and pieces only (body retention).
    Details,
    /// A day of pieces left without its details.
    Pieces,
}

impl Parent {
    fn table(self) -> &'static str {
        match self {
            Parent::Logs => "request_logs",
            Parent::Details => "request_log_details",
            Parent::Pieces => "request_log_pieces",
        }
    }
}

/// Lock wait allowed for one partition drop; past it the drop gives way to
/// ingest and is tried again.
const DROP_LOCK_TIMEOUT: &str = "500ms";
const DROP_TRIES: u32 = 10;
const DROP_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// PostgreSQL: drops the day partitions of `parent` (and, for the logs,
/// of the tables beside it) whose whole day is before `cutoff_ms`; returns
/// the rows of `parent` they held. Another control plane doing the same
/// at the same time makes this one skip.
async fn drop_days_older_than(
    store: &Store,
    cutoff_ms: i64,
    parent: Parent,
    stopping: &impl Fn() -> bool,
) -> Result<u64, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname = $1 ORDER BY 1",
    )
    .bind(parent.table())
    .fetch_all(store.pool())
    .await?;
    let prefix = format!("{}_p", parent.table());
    let mut deleted = 0u64;
    for name in names {
        let Some(suffix) = name.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let Some(day) = day_start_ms(suffix) else {
            continue;
        };
        if day.saturating_add(DAY_MS) > cutoff_ms {
            continue;
        }
        let mut tries = 0;
        loop {
            if stopping() {
                return Ok(deleted);
            }
            match drop_day(store, parent, suffix).await {
                Ok(Some(n)) => {
                    deleted += n;
                    break;
                }
                // Another control plane holds the retention lock.
                Ok(None) => return Ok(deleted),
                Err(e) if lock_timeout(&e) && tries + 1 < DROP_TRIES => {
                    tries += 1;
                    tracing::debug!(partition = name, "log retention: table busy; trying again");
                    tokio::time::sleep(DROP_RETRY_PAUSE).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(deleted)
}

/// Drops one day of `parent` (the logs: with their attempts, details and
/// pieces; the details: with their pieces) in one short transaction;
/// `None` when another control plane holds the retention lock.
async fn drop_day(store: &Store, parent: Parent, suffix: &str) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let ours: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('llmgw_log_retention'))")
            .fetch_one(&mut *tx)
            .await?;
    if !ours {
        return Ok(None);
    }
    sqlx::query(&format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    let counted = format!("{}_p{suffix}", parent.table());
    // Gone already (another control plane dropped it between our listing
    // and now): nothing to count.
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::TEXT")
        .bind(&counted)
        .fetch_one(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(Some(0));
    }
    let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{counted}\""))
        .fetch_one(&mut *tx)
        .await?;
    // Details before pieces, as ingest writes them; a day of pieces is
    // made on demand (`llmgw_ensure_pieces_day`, which locks its parent
    // alone), hence IF EXISTS.
    let details = format!("\"request_log_details_p{suffix}\", \"request_log_pieces_p{suffix}\"");
    let drop = match parent {
        Parent::Logs => {
            format!("DROP TABLE IF EXISTS \"request_attempts_p{suffix}\", {details}, \"{counted}\"")
        }
        Parent::Details => format!("DROP TABLE IF EXISTS {details}"),
        Parent::Pieces => format!("DROP TABLE IF EXISTS \"{counted}\""),
    };
    sqlx::query(&drop).execute(&mut *tx).await?;
    tx.commit().await?;
    match parent {
        Parent::Logs => tracing::info!(
            partition = counted,
            rows,
            "log retention: dropped a day of request logs"
        ),
        Parent::Details => tracing::info!(
            partition = counted,
            rows,
            "body retention: dropped a day of headers and bodies"
        ),
        Parent::Pieces => tracing::info!(
            partition = counted,
            rows,
            "body retention: dropped a day of body pieces"
        ),
    }
    Ok(Some(rows.unsigned_abs()))
}

/// PostgreSQL's lock_not_available.
fn lock_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

/// `YYYYMMDD` to the Unix milliseconds of that day's start (UTC).
pub(super) fn day_start_ms(suffix: &str) -> Option<i64> {
    if suffix.len() != 8 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = humantime::parse_rfc3339(&format!(
        "{}-{}-{}T00:00:00Z",
        &suffix[0..4],
        &suffix[4..6],
        &suffix[6..8]
    ))
    .ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()?.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollups_are_kept_a_day_longer_than_logs_at_least() {
        let kept = |logs, rollups| {
            Days {
                logs,
                rollups,
                bodies: 0,
                rollup_minutes: 0,
            }
            .rollups_in_effect()
        };
        assert_eq!(kept(30, 90), 90);
        assert_eq!(kept(30, 7), 31);
        assert_eq!(kept(30, 31), 31);
        assert_eq!(kept(0, 90), 0);
        assert_eq!(kept(30, 0), 0);
    }

    #[test]
    fn bodies_are_kept_at_most_as_long_as_logs() {
        let days = |logs, bodies| Days::new(logs, 90, bodies, 7);
        assert_eq!(days(30, None).unwrap().bodies_in_effect(), 7);
        assert_eq!(days(30, None).unwrap().rollup_minutes, 7);
        assert_eq!(days(3, None).unwrap().bodies_in_effect(), 3);
        assert_eq!(days(0, None).unwrap().bodies_in_effect(), 7);
        assert_eq!(days(30, Some(0)).unwrap().bodies_in_effect(), 30);
        assert_eq!(days(0, Some(0)).unwrap().bodies_in_effect(), 0);
        assert_eq!(days(30, Some(30)).unwrap().bodies_in_effect(), 30);
        assert_eq!(days(0, Some(400)).unwrap().bodies_in_effect(), 400);
        let e = days(30, Some(31)).unwrap_err();
        assert!(
            e.contains("--body-retention-days") && e.contains("at most 30"),
            "{e}"
        );
    }

    #[test]
    fn partition_days_parse() {
        assert_eq!(day_start_ms("19700101"), Some(0));
        assert_eq!(day_start_ms("20261127"), Some(1_795_737_600_000));
        assert_eq!(day_start_ms("2026112"), None);
        assert_eq!(day_start_ms("2026-11-2"), None);
        assert_eq!(day_start_ms("20261399"), None);
    }
}
