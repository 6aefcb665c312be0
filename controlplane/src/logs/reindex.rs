//! PostgreSQL: each day's log indexes rebuilt once the day is over.
//!
//! Ingest grows the indexes of a day partition one record at a time. Most
//! of them insert into the middle of the tree (each model's newest entry
//! sits before the next model's oldest), and a page split there leaves
//! two half-full pages that later records rarely fill: on the log_volume
//! corpus the indexes a day's records grow take about 70 bytes a record
//! more than the same indexes built once from the finished day
//! (docs/benchmarks.md "Bytes per row").
//!
//! So the retention pass (`retention.rs`, hourly) rebuilds the indexes of
//! the day partitions of `request_logs`, `request_attempts` and
//! `request_log_details` whose day ended at least [`GRACE_MS`] ago, newest
//! first (an upgraded database's oldest days are the next that retention
//! drops) and a few days per pass, with `REINDEX TABLE CONCURRENTLY`: ingest
//! goes on writing to the partition meanwhile (a record that comes late is
//! stored as ever). A rebuilt partition says so in its comment
//! ([`MARK`]), which goes when retention drops it; a rebuild that stopped
//! halfway (the control plane killed, the connection lost) leaves invalid
//! indexes named `…_ccnew` or `…_ccold`, which the next try drops first.
//! A session advisory lock lets one control plane at a time do it. The
//! rebuild runs on a connection of its own, taken out of the pool and
//! closed after: the lock goes with it, also when the pass is dropped at
//! shutdown halfway through a statement.
//!
//! SQLite has no partitions to finish; it is left as it is.

use sqlx::{AnyConnection, Connection, Row};

use super::retention::day_start_ms;
use crate::store::{Backend, Store, StoreError};

const DAY_MS: i64 = 24 * 3600 * 1000;
/// How long after its end a day is taken as finished: records a data plane
/// spooled while it could not reach a control plane still come in after
/// midnight, and those go into pages the rebuild has just filled.
pub const GRACE_MS: i64 = 3600 * 1000;
/// Days rebuilt in one pass at most: a database upgraded with months of
/// days behind it catches up over hours, not in one long pass.
pub const DAYS_PER_PASS: usize = 3;
/// The comment a rebuilt partition carries (followed by the time).
pub const MARK: &str = "llmgw: indexes rebuilt";
/// The tables whose day partitions are rebuilt, all with the same suffix.
const PARENTS: [&str; 3] = ["request_logs", "request_attempts", "request_log_details"];

/// Rebuilds the indexes of up to `days` finished days not rebuilt yet, as
/// of `now_ms`; returns the partitions rebuilt. Nothing on SQLite, and
/// nothing when another control plane is rebuilding.
pub async fn rebuild_finished_days(
    store: &Store,
    now_ms: i64,
    days: usize,
) -> Result<usize, StoreError> {
    if store.backend() != Backend::Postgres || days == 0 {
        return Ok(0);
    }
    let mut conn = store.pool().acquire().await?.detach();
    let ours: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('llmgw_log_reindex'))")
            .fetch_one(&mut conn)
            .await?;
    let rebuilt = if ours {
        rebuild(&mut conn, now_ms, days).await
    } else {
        Ok(0)
    };
    // Closing the session releases the lock.
    let closed = conn.close().await;
    let rebuilt = rebuilt?;
    closed?;
    Ok(rebuilt)
}

async fn rebuild(conn: &mut AnyConnection, now_ms: i64, days: usize) -> Result<usize, StoreError> {
    // Partitions of the three tables not marked yet, by name. The names
    // come from the catalog and are checked against the pattern below
    // before they are put in a statement.
    let rows = sqlx::query(
        "SELECT p.relname::TEXT, c.relname::TEXT FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname IN ('request_logs', 'request_attempts', 'request_log_details') \
         AND COALESCE(obj_description(c.oid, 'pg_class'), '') NOT LIKE $1 \
         ORDER BY c.relname",
    )
    .bind(format!("{MARK}%"))
    .fetch_all(&mut *conn)
    .await?;
    let mut by_day: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
    for row in rows {
        let parent: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let Some(day) = finished_day(&parent, &name, now_ms) else {
            continue;
        };
        by_day.entry(day).or_default().push(name);
    }
    let mut rebuilt = 0;
    // Newest first: the days retention keeps longest.
    for (_, names) in by_day.into_iter().rev().take(days) {
        for name in names {
            drop_leftovers(conn, &name).await?;
            let started = std::time::Instant::now();
            sqlx::query(&format!("REINDEX TABLE CONCURRENTLY \"{name}\""))
                .execute(&mut *conn)
                .await?;
            let at = super::row::format_time(crate::store::now_ms());
            sqlx::query(&format!("COMMENT ON TABLE \"{name}\" IS '{MARK} {at}'"))
                .execute(&mut *conn)
                .await?;
            tracing::info!(
                partition = name,
                ms = started.elapsed().as_millis() as u64,
                "log indexes: rebuilt a finished day's"
            );
            rebuilt += 1;
        }
    }
    Ok(rebuilt)
}

/// The start of the day partition `name` of `parent` holds, when that day
/// ended [`GRACE_MS`] or more before `now_ms`; `None` for anything else,
/// including a name that is not `<parent>_pYYYYMMDD`.
fn finished_day(parent: &str, name: &str, now_ms: i64) -> Option<i64> {
    if !PARENTS.contains(&parent) {
        return None;
    }
    let suffix = name.strip_prefix(parent)?.strip_prefix("_p")?;
    let day = day_start_ms(suffix)?;
    (day.checked_add(DAY_MS)?.checked_add(GRACE_MS)? <= now_ms).then_some(day)
}

/// Drops the invalid indexes a rebuild of `name` left when it stopped
/// halfway: PostgreSQL names them after the index with `_ccnew` or
/// `_ccold` (and a number when taken).
async fn drop_leftovers(conn: &mut AnyConnection, name: &str) -> Result<(), StoreError> {
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
         WHERE x.indrelid = to_regclass($1) AND NOT x.indisvalid \
         AND c.relname ~ '_cc(new|old)[0-9]*$'",
    )
    .bind(format!("\"{name}\""))
    .fetch_all(&mut *conn)
    .await?;
    for index in left {
        if !index
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            continue;
        }
        tracing::info!(index, "log indexes: dropping what an earlier rebuild left");
        sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS \"{index}\""))
            .execute(&mut *conn)
            .await?;
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
        assert_eq!(
            finished_day("request_logs", name, end + GRACE_MS),
            Some(day)
        );
        assert_eq!(finished_day("request_logs", name, end + GRACE_MS - 1), None);
        assert_eq!(
            finished_day(
                "request_log_details",
                "request_log_details_p20261203",
                end + GRACE_MS
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
                finished_day(parent, name, end + 10 * DAY_MS),
                None,
                "{name}"
            );
        }
    }
}
