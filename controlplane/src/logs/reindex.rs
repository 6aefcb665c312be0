//! PostgreSQL: each day's log indexes rebuilt once the day is over.
//!
//! Ingest grows the indexes of a day partition one record at a time. Most
//! of them insert into the middle of the tree (each model's newest entry
//! sits before the next model's oldest), and a page split there leaves
//! two half-full pages that later records rarely fill: on the log_volume
//! corpus a finished day's records take about 72 bytes less each once its
//! indexes are built again from the finished day (docs/benchmarks.md
//! "Bytes per row").
//!
//! So a task of its own ([`run`]: ten minutes after start, then hourly)
//! rebuilds the indexes of the day partitions of `request_logs`,
//! `request_attempts` and `request_log_details` whose day ended at least
//! [`GRACE_MS`] ago, newest first and a few days per pass, with `REINDEX
//! TABLE CONCURRENTLY`: ingest goes on writing to the partition meanwhile
//! (a record that comes late is stored as ever).
//!
//! - A rebuilt partition says so in its comment ([`MARK`]), which goes when
//!   retention drops it. Migration 0030 marks the `request_logs` days it
//!   built.
//! - Days that retention drops within two days are left, so that a rebuild
//!   does not hold up their `DROP TABLE` (which would hold ingest).
//! - A rebuild that stopped halfway (the control plane killed, the
//!   statement cancelled) leaves invalid indexes named `…_ccnew` or
//!   `…_ccold`, on the partition or on its TOAST table; the next try drops
//!   them first (those on the TOAST table only when the control plane's
//!   role is a superuser, since no other role may name them: otherwise a
//!   warning says so, and the rebuild goes on without them).
//! - A session advisory lock lets one control plane at a time rebuild. The
//!   rebuild runs on a connection of its own, taken out of the pool and
//!   closed after; dropped at shutdown, the connection closes, and the
//!   server ends the session (and the lock) once the statement it is
//!   running ends.
//! - A rebuild waits at most [`LOCK_TIMEOUT`] for a lock, and for the
//!   transactions older than it to end (a long dump, a session left idle
//!   in a transaction); past it, it gives up and leaves its `_ccnew`
//!   indexes for the next pass to drop.
//! - A partition that cannot be rebuilt is logged and left for the next
//!   pass; the others go on.
//!
//! SQLite has no partitions to finish; it is left as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::watch;

use super::retention::{day_start_ms, Days, DAY_MS};
use crate::store::{now_ms, Backend, Store, StoreError};

/// How long after its end a day is taken as finished: records a data plane
/// spooled while it could not reach a control plane still come in after
/// midnight, and those go into pages the rebuild has just filled.
pub const GRACE_MS: i64 = 3600 * 1000;
/// Days rebuilt in one pass at most: a database upgraded with months of
/// days behind it catches up over hours, not in one long pass.
pub const DAYS_PER_PASS: usize = 3;
/// The comment a rebuilt partition carries (followed by when or how).
pub const MARK: &str = "llmgw: indexes rebuilt";
/// The first pass after start, when data planes may still be resending
/// what they spooled, and the passes after it.
const FIRST: Duration = Duration::from_secs(600);
const EVERY: Duration = Duration::from_secs(3600);
/// The longest a rebuild waits for a lock or for older transactions.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// The tables whose day partitions are rebuilt, all with the same suffix,
/// and the retention that drops them.
const PARENTS: [(&str, Kept); 3] = [
    ("request_logs", Kept::Logs),
    ("request_attempts", Kept::Logs),
    ("request_log_details", Kept::Bodies),
];

#[derive(Clone, Copy)]
enum Kept {
    Logs,
    Bodies,
}

/// Runs the passes until `shutdown` turns true (PostgreSQL only).
pub async fn run(store: Store, retention: Days, shutdown: watch::Receiver<bool>) {
    if store.backend() != Backend::Postgres {
        return;
    }
    let mut stop = Some(shutdown);
    let mut wait = FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = super::shutdown_signal(&mut stop) => return,
        }
        wait = EVERY;
        let pass = rebuild_finished_days(&store, now_ms(), DAYS_PER_PASS, retention, LOCK_TIMEOUT);
        let outcome = tokio::select! {
            r = pass => r,
            _ = super::shutdown_signal(&mut stop) => return,
        };
        match outcome {
            Ok(Some(0)) => tracing::debug!("log indexes: no finished day to rebuild"),
            Ok(Some(n)) => tracing::info!(
                partitions = n,
                "log indexes: rebuilt the indexes of finished days"
            ),
            Ok(None) => tracing::debug!("log indexes: another control plane is rebuilding"),
            Err(e) => tracing::warn!(error = %e, "log index rebuild failed; trying again later"),
        }
    }
}

/// Rebuilds the indexes of up to `days` finished days not rebuilt yet, as
/// of `now_ms`, leaving those that `retention` drops within two days, each
/// rebuild waiting at most `lock_timeout`; returns the partitions rebuilt,
/// or `None` when another control plane is rebuilding. Nothing on SQLite.
pub async fn rebuild_finished_days(
    store: &Store,
    now_ms: i64,
    days: usize,
    retention: Days,
    lock_timeout: Duration,
) -> Result<Option<usize>, StoreError> {
    if store.backend() != Backend::Postgres || days == 0 {
        return Ok(Some(0));
    }
    let mut conn = store.pool().acquire().await?.detach();
    let ours: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('llmgw_log_reindex'))")
            .fetch_one(&mut conn)
            .await?;
    let rebuilt = if ours {
        let wait = format!("SET lock_timeout = {}", lock_timeout.as_millis().max(1));
        match sqlx::query(&wait).execute(&mut conn).await {
            Ok(_) => rebuild(&mut conn, now_ms, days, retention).await.map(Some),
            Err(e) => Err(e.into()),
        }
    } else {
        Ok(None)
    };
    // Closing the session releases the lock; what was rebuilt stays so
    // whatever the close says.
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "log indexes: closing the rebuild's connection");
    }
    rebuilt
}

async fn rebuild(
    conn: &mut AnyConnection,
    now_ms: i64,
    days: usize,
    retention: Days,
) -> Result<usize, StoreError> {
    // Partitions of the three tables in this schema, not marked yet. The
    // names come from the catalog and are checked against the pattern of
    // `finished_day` before they are put in a statement.
    let rows = sqlx::query(
        "SELECT p.relname::TEXT, c.relname::TEXT FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname IN ('request_logs', 'request_attempts', 'request_log_details') \
         AND p.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
         AND COALESCE(obj_description(c.oid, 'pg_class'), '') NOT LIKE $1 \
         ORDER BY c.relname",
    )
    .bind(format!("{MARK}%"))
    .fetch_all(&mut *conn)
    .await?;
    let mut by_day: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for row in rows {
        let parent: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        if let Some(day) = finished_day(&parent, &name, now_ms, retention) {
            by_day.entry(day).or_default().push(name);
        }
    }
    let mut rebuilt = 0;
    // Newest first: the days retention keeps longest.
    for (_, names) in by_day.into_iter().rev().take(days) {
        for name in names {
            match rebuild_one(conn, &name).await {
                Ok(true) => rebuilt += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    partition = name,
                    error = %e,
                    "log indexes: cannot rebuild a finished day's; trying again later"
                ),
            }
        }
    }
    Ok(rebuilt)
}

/// Rebuilds and marks one partition; false when it is gone (retention
/// dropped it since it was listed).
async fn rebuild_one(conn: &mut AnyConnection, name: &str) -> Result<bool, StoreError> {
    let there: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::TEXT")
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    if there.is_none() {
        return Ok(false);
    }
    drop_leftovers(conn, name).await?;
    let started = std::time::Instant::now();
    sqlx::query(&format!("REINDEX TABLE CONCURRENTLY \"{name}\""))
        .execute(&mut *conn)
        .await?;
    let at = super::row::format_time(now_ms());
    sqlx::query(&format!("COMMENT ON TABLE \"{name}\" IS '{MARK} {at}'"))
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        partition = name,
        ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "log indexes: rebuilt a finished day's"
    );
    Ok(true)
}

/// The start of the day partition `name` of `parent` holds, when that day
/// ended [`GRACE_MS`] or more before `now_ms` and `retention` keeps it two
/// days more; `None` for anything else, including a name that is not
/// `<parent>_pYYYYMMDD`.
fn finished_day(parent: &str, name: &str, now_ms: i64, retention: Days) -> Option<i64> {
    let (_, kept) = PARENTS.iter().find(|(p, _)| *p == parent)?;
    let suffix = name.strip_prefix(parent)?.strip_prefix("_p")?;
    let day = day_start_ms(suffix)?;
    if day.checked_add(DAY_MS)?.checked_add(GRACE_MS)? > now_ms {
        return None;
    }
    let kept_days = match kept {
        Kept::Logs => retention.logs,
        Kept::Bodies => retention.bodies_in_effect(),
    };
    if kept_days > 0 {
        // Retention drops the day once it ends before its cutoff: within
        // two days when it starts before the cutoff plus a day.
        let cutoff = now_ms.saturating_sub(i64::from(kept_days).saturating_mul(DAY_MS));
        if day < cutoff.saturating_add(DAY_MS) {
            return None;
        }
    }
    Some(day)
}

/// Drops the invalid indexes a rebuild of `name` left when it stopped
/// halfway, on the partition or on its TOAST table: PostgreSQL names them
/// after the index with `_ccnew` or `_ccold` (and a number when taken).
async fn drop_leftovers(conn: &mut AnyConnection, name: &str) -> Result<(), StoreError> {
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT x.indexrelid::regclass::TEXT FROM pg_index x \
         JOIN pg_class c ON c.oid = x.indexrelid \
         WHERE NOT x.indisvalid AND c.relname ~ '_cc(new|old)[0-9]*$' \
         AND x.indrelid IN (to_regclass($1), \
             (SELECT reltoastrelid FROM pg_class WHERE oid = to_regclass($1)))",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    for index in left {
        // `regclass` names it as a statement would: with its schema when
        // that is not on the search path (`pg_toast.`), quoted when it
        // must be. Only plain names are dropped.
        let plain = index
            .strip_prefix("pg_toast.")
            .unwrap_or(&index)
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            tracing::warn!(index, "log indexes: an invalid index left as it is");
            continue;
        }
        tracing::info!(index, "log indexes: dropping what an earlier rebuild left");
        let dropped = sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
            .execute(&mut *conn)
            .await;
        // Only a superuser may name what is in `pg_toast`. The index left
        // there is kept up to date by the partition's rare late writes
        // and goes with it; the rebuild skips it.
        if let Err(e) = dropped {
            if !index.starts_with("pg_toast.") {
                return Err(e.into());
            }
            tracing::warn!(
                index,
                error = %e,
                "log indexes: an interrupted rebuild left an index on a TOAST table that only a \
                 superuser can drop (DROP INDEX CONCURRENTLY); the partition is rebuilt without it"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_finished_an_hour_after_it_ends() {
        // 2026-12-03T00:00:00Z.
        let day = 1_796_256_000_000;
        let end = day + DAY_MS;
        let name = "request_logs_p20261203";
        let at = |now| finished_day("request_logs", name, now, Days::FOREVER);
        assert_eq!(at(end + GRACE_MS), Some(day));
        assert_eq!(at(end + GRACE_MS - 1), None);
        assert_eq!(
            finished_day(
                "request_log_details",
                "request_log_details_p20261203",
                end + GRACE_MS,
                Days::FOREVER
            ),
            Some(day)
        );
        // Only the three tables' day partitions.
        for (parent, name) in [
            ("request_logs", "request_logs_p20261203_wide"),
            ("request_logs", "request_logs_default"),
            ("request_logs", "request_attempts_p20261203"),
            ("log_rollups", "log_rollups_p20261203"),
            ("request_logs", "request_logs_p2026120\""),
        ] {
            assert_eq!(
                finished_day(parent, name, end + 10 * DAY_MS, Days::FOREVER),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn days_retention_drops_soon_are_left() {
        let day = 1_796_256_000_000;
        let keep = Days {
            logs: 30,
            rollups: 90,
            bodies: 7,
            rollup_minutes: 7,
        };
        // Seven days of bodies: the day that ended 6 days ago is dropped
        // within two days, the one that ended 4 days ago is not.
        let now = day + 7 * DAY_MS;
        let details = |now| {
            finished_day(
                "request_log_details",
                "request_log_details_p20261203",
                now,
                keep,
            )
        };
        let logs = |now| finished_day("request_logs", "request_logs_p20261203", now, keep);
        assert_eq!(details(now), None);
        assert_eq!(logs(now), Some(day));
        assert_eq!(details(day + 5 * DAY_MS), Some(day));
        // Thirty days of logs: at 30 days after its start retention drops
        // it within a day, so it is left; a day earlier, rebuilt.
        assert_eq!(logs(day + 30 * DAY_MS), None);
        assert_eq!(logs(day + 29 * DAY_MS), Some(day));
    }
}
