//! The quota runtime's tables (#15, migrations `0012_quota.sql`): the
//! rpm/tpm grants of each window, the concurrency leases, the data planes
//! on the quota stream, and the spend counted from request logs.
//!
//! The one rule every write here keeps: the grants of one window of one
//! bucket, and the live leases of one concurrency bucket, never add up to
//! more than the limit, however many control planes share the database.
//! - rpm/tpm: one conditional upsert raises a window's total by at most
//!   what is left (`granted < limit`, adding `min(wanted, limit - granted)`
//!   computed from the row it updates). PostgreSQL re-reads the row after
//!   waiting for a concurrent writer's lock, SQLite serializes writers.
//! - concurrency: a change first locks the bucket's row in `quota_windows`
//!   (window 0), then sums the other nodes' live leases and writes its own
//!   within what is left.
//!
//! The quota's domain logic (which limit applies, what to answer) lives in
//! `crate::quota`; this file only reads and writes rows.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use llmgw_core::limits::{BucketId, Kind, Scope};
use sqlx::{AnyConnection, Row};

use super::multirow::{insert_text, insert_texts, statement_parts};
use super::{Backend, Result, Store};

/// One UTC day, ms.
pub const DAY_MS: i64 = 86_400_000;

/// A data plane's rpm/tpm grant in one window, and the window's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowGrant {
    /// This node's grant in the window, in total.
    pub node: u64,
    /// Every node's grants in the window.
    pub fleet: u64,
}

/// A data plane's concurrency lease after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub slots: u64,
    /// The live leases of the bucket, this one included.
    pub fleet: u64,
    pub expires_at_ms: i64,
}

/// Spend to add at ingest, summed per (scope, name, UTC day), written in
/// key order so that concurrent batches lock rows in the same order.
#[derive(Debug, Default)]
pub struct SpendBatch(BTreeMap<(Scope, String, i64), i64>);

impl SpendBatch {
    /// Adds `micros` spent by `name` of `scope` at `time_ms`; empty names
    /// and non-positive amounts are ignored.
    pub fn add(&mut self, scope: Scope, name: &str, time_ms: i64, micros: i64) {
        if name.is_empty() || micros <= 0 {
            return;
        }
        let day = time_ms.div_euclid(DAY_MS) * DAY_MS;
        *self.0.entry((scope, name.to_owned(), day)).or_default() += micros;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Upserts the sums on `conn` (the ingest's transaction on SQLite;
    /// [`SpendBatch::write_pg`] on PostgreSQL), in key order, a multi-row
    /// statement per [`statement_parts`] (a statement per row kept a
    /// batch's transaction waiting on hundreds of round trips while it held
    /// the rows' locks).
    pub async fn write(&self, conn: &mut AnyConnection) -> Result<()> {
        static TEXTS: LazyLock<Vec<String>> = LazyLock::new(|| {
            insert_texts(&[(
                "spend",
                &["scope", "name", "day_start_ms", "micros"],
                " ON CONFLICT (scope, name, day_start_ms) \
                 DO UPDATE SET micros = spend.micros + excluded.micros",
            )])
        });
        let rows: Vec<_> = self.0.iter().collect();
        for (slot, part) in statement_parts(&rows) {
            let mut q = sqlx::query(insert_text(&TEXTS, Backend::Sqlite, 0, slot));
            for ((scope, name, day), micros) in part {
                q = q
                    .bind(scope.as_str())
                    .bind(name.as_str())
                    .bind(*day)
                    .bind(**micros);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// [`SpendBatch::write`] on PostgreSQL, in one statement of four
    /// arrays: `UNNEST` returns them in order, so the rows are locked in
    /// key order as with [`SpendBatch::write`].
    pub async fn write_pg(&self, conn: &mut sqlx::postgres::PgConnection) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut scopes = Vec::with_capacity(self.0.len());
        let mut names = Vec::with_capacity(self.0.len());
        let mut days = Vec::with_capacity(self.0.len());
        let mut micros = Vec::with_capacity(self.0.len());
        for ((scope, name, day), m) in &self.0 {
            scopes.push(scope.as_str());
            names.push(name.as_str());
            days.push(*day);
            micros.push(*m);
        }
        sqlx::query(
            "INSERT INTO spend (scope, name, day_start_ms, micros) \
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[]) \
             ON CONFLICT (scope, name, day_start_ms) \
             DO UPDATE SET micros = spend.micros + excluded.micros",
        )
        .bind(scopes)
        .bind(names)
        .bind(days)
        .bind(micros)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// A cost in nano-dollars as micro-dollars (the budgets' unit), rounded
/// half up.
pub fn micros_of_nanos(nanos: i64) -> i64 {
    if nanos > 0 {
        nanos.saturating_add(500) / 1000
    } else {
        0
    }
}

/// A floating-point cost in dollars as nano-dollars, to the nearest (what
/// a record from a data plane older than exact prices says).
pub fn nanos_of(cost: f64) -> i64 {
    if cost.is_finite() && cost > 0.0 {
        // Saturating float-to-int conversion; ingest bounds costs anyway.
        (cost * 1e9).round() as i64
    } else {
        0
    }
}

async fn add_spend(
    conn: &mut AnyConnection,
    scope: Scope,
    name: &str,
    day_start_ms: i64,
    micros: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO spend (scope, name, day_start_ms, micros) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope, name, day_start_ms) \
         DO UPDATE SET micros = spend.micros + excluded.micros",
    )
    .bind(scope.as_str())
    .bind(name)
    .bind(day_start_ms)
    .bind(micros)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// rpm/tpm: raises `node`'s grant in the window starting at
    /// `window.0` towards `wanted` (a total), within what `limit` leaves.
    /// Never lowers a grant: a data plane may already have used it.
    pub async fn grant(
        &self,
        bucket: &BucketId,
        window: (i64, i64),
        node: &str,
        wanted: u64,
        limit: u64,
    ) -> Result<WindowGrant> {
        let (start, end) = window;
        let kind = bucket.kind.as_str();
        let scope = bucket.scope.as_str();
        let held: u64 = u64_of(
            sqlx::query_scalar::<_, i64>(
                "SELECT granted FROM quota_grants WHERE scope = $1 AND name = $2 AND kind = $3 \
                 AND window_start_ms = $4 AND node_id = $5",
            )
            .bind(scope)
            .bind(bucket.name.as_str())
            .bind(kind)
            .bind(start)
            .bind(node)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0),
        );
        let more = wanted.saturating_sub(held);
        if more == 0 || limit == 0 {
            let fleet = self.window_granted(bucket, start).await?;
            return Ok(WindowGrant { node: held, fleet });
        }
        let (limit, more) = (i64_of(limit), i64_of(more));
        // Writes only, so that SQLite takes its write lock at the first
        // statement (a read first could not upgrade while another writes).
        let mut tx = self.pool.begin().await?;
        // The one statement that keeps the window within the limit: it adds
        // min(more, limit - granted) to the row as it finds it, and only
        // while something is left.
        let taken = sqlx::query(
            "INSERT INTO quota_windows \
             (scope, name, kind, window_start_ms, window_end_ms, granted, last_add) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (scope, name, kind, window_start_ms) DO UPDATE SET \
             last_add = CASE WHEN $7 - quota_windows.granted < $8 \
                 THEN $7 - quota_windows.granted ELSE $8 END, \
             granted = quota_windows.granted + CASE WHEN $7 - quota_windows.granted < $8 \
                 THEN $7 - quota_windows.granted ELSE $8 END \
             WHERE quota_windows.granted < $7 \
             RETURNING last_add, granted",
        )
        .bind(scope)
        .bind(bucket.name.as_str())
        .bind(kind)
        .bind(start)
        .bind(end)
        .bind(more.min(limit))
        .bind(limit)
        .bind(more)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = taken else {
            tx.commit().await?;
            let fleet = self.window_granted(bucket, start).await?;
            return Ok(WindowGrant { node: held, fleet });
        };
        let added: i64 = row.try_get(0)?;
        let fleet: i64 = row.try_get(1)?;
        let node_total: i64 = sqlx::query_scalar(
            "INSERT INTO quota_grants \
             (scope, name, kind, window_start_ms, node_id, window_end_ms, granted) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (scope, name, kind, window_start_ms, node_id) \
             DO UPDATE SET granted = quota_grants.granted + excluded.granted \
             RETURNING granted",
        )
        .bind(scope)
        .bind(bucket.name.as_str())
        .bind(kind)
        .bind(start)
        .bind(node)
        .bind(end)
        .bind(added)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(WindowGrant {
            node: u64_of(node_total),
            fleet: u64_of(fleet),
        })
    }

    /// rpm/tpm: every node's grants in the window starting at `start`.
    pub async fn window_granted(&self, bucket: &BucketId, start: i64) -> Result<u64> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT granted FROM quota_windows WHERE scope = $1 AND name = $2 AND kind = $3 \
             AND window_start_ms = $4",
        )
        .bind(bucket.scope.as_str())
        .bind(bucket.name.as_str())
        .bind(bucket.kind.as_str())
        .bind(start)
        .fetch_optional(&self.pool)
        .await?;
        Ok(v.map_or(0, u64_of))
    }

    /// Concurrency: renews (or takes, or shrinks) `node`'s lease of the
    /// bucket to `wanted` slots, within what the other nodes' live leases
    /// leave of `limit`; it lives until `now + lease_ms`.
    pub async fn lease(
        &self,
        bucket: &BucketId,
        node: &str,
        wanted: u64,
        limit: u64,
        now: i64,
        lease_ms: i64,
    ) -> Result<Lease> {
        let (scope, name) = (bucket.scope, bucket.name.as_str());
        let mut tx = self.pool.begin().await?;
        // The bucket's lock: every change to its leases updates this row
        // first, so the sum below cannot change until we commit.
        sqlx::query(
            "INSERT INTO quota_windows \
             (scope, name, kind, window_start_ms, window_end_ms, granted, last_add) \
             VALUES ($1, $2, $3, 0, $4, 0, 0) \
             ON CONFLICT (scope, name, kind, window_start_ms) \
             DO UPDATE SET granted = quota_windows.granted",
        )
        .bind(scope.as_str())
        .bind(name)
        .bind(Kind::Concurrency.as_str())
        .bind(i64::MAX)
        .execute(&mut *tx)
        .await?;
        let others: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(slots), 0) AS BIGINT) FROM quota_leases \
             WHERE scope = $1 AND name = $2 AND node_id <> $3 AND expires_at_ms > $4",
        )
        .bind(scope.as_str())
        .bind(name)
        .bind(node)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let others = u64_of(others);
        let slots = wanted.min(limit.saturating_sub(others));
        let expires_at_ms = now.saturating_add(lease_ms);
        sqlx::query(
            "INSERT INTO quota_leases (scope, name, node_id, slots, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (scope, name, node_id) \
             DO UPDATE SET slots = excluded.slots, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(scope.as_str())
        .bind(name)
        .bind(node)
        .bind(i64_of(slots))
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Lease {
            slots,
            fleet: others + slots,
            expires_at_ms,
        })
    }

    /// Concurrency: the slots of the bucket's leases live at `now`.
    pub async fn leased(&self, scope: Scope, name: &str, now: i64) -> Result<u64> {
        let v: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(slots), 0) AS BIGINT) FROM quota_leases \
             WHERE scope = $1 AND name = $2 AND expires_at_ms > $3",
        )
        .bind(scope.as_str())
        .bind(name)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64_of(v))
    }

    /// The spend of `name` of `scope` over the days starting in
    /// `[period.0, period.1)`, micro-dollars (never below zero).
    pub async fn spend(&self, scope: Scope, name: &str, period: (i64, i64)) -> Result<u64> {
        let mut conn = self.pool.acquire().await?;
        Ok(u64_of(spend_in(&mut conn, scope, name, period).await?))
    }

    /// Forgets the spend of `period` (see [`Store::spend`]): adds its
    /// negative to the day of `now`. Returns what was forgotten.
    pub async fn reset_spend(
        &self,
        scope: Scope,
        name: &str,
        period: (i64, i64),
        now: i64,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let today = now.div_euclid(DAY_MS) * DAY_MS;
        // Takes the row's lock (and SQLite's write lock) before the sum, so
        // a concurrent ingest counts either before the reset or after it.
        sqlx::query(
            "INSERT INTO spend (scope, name, day_start_ms, micros) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (scope, name, day_start_ms) DO UPDATE SET micros = spend.micros",
        )
        .bind(scope.as_str())
        .bind(name)
        .bind(today)
        .execute(&mut *tx)
        .await?;
        let spent = spend_in(&mut tx, scope, name, period).await?;
        if spent > 0 {
            add_spend(&mut tx, scope, name, today, -spent).await?;
        }
        tx.commit().await?;
        Ok(u64_of(spent))
    }

    /// Records that `node` reported now.
    pub async fn quota_node_reported(&self, node: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO quota_nodes (node_id, last_report_ms) VALUES ($1, $2) \
             ON CONFLICT (node_id) DO UPDATE SET last_report_ms = excluded.last_report_ms",
        )
        .bind(node)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The data planes that reported since `since`.
    pub async fn quota_nodes_since(&self, since: i64) -> Result<u32> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM quota_nodes WHERE last_report_ms > $1")
                .bind(since)
                .fetch_one(&self.pool)
                .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Deletes what can no longer matter at `now`: windows that ended and
    /// their grants, leases expired for more than `grace_ms`, and data
    /// planes silent for a day. Returns the rows deleted.
    pub async fn prune_quota(&self, now: i64, grace_ms: i64) -> Result<u64> {
        let cutoff = now.saturating_sub(grace_ms);
        let mut n = 0;
        for (sql, at) in [
            ("DELETE FROM quota_grants WHERE window_end_ms < $1", cutoff),
            ("DELETE FROM quota_windows WHERE window_end_ms < $1", cutoff),
            ("DELETE FROM quota_leases WHERE expires_at_ms < $1", cutoff),
            (
                "DELETE FROM quota_nodes WHERE last_report_ms < $1",
                now.saturating_sub(DAY_MS),
            ),
        ] {
            n += sqlx::query(sql)
                .bind(at)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(n)
    }
}

async fn spend_in(
    conn: &mut AnyConnection,
    scope: Scope,
    name: &str,
    (start, end): (i64, i64),
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(micros), 0) AS BIGINT) FROM spend \
         WHERE scope = $1 AND name = $2 AND day_start_ms >= $3 AND day_start_ms < $4",
    )
    .bind(scope.as_str())
    .bind(name)
    .bind(start)
    .bind(end)
    .fetch_one(&mut *conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_sums_per_scope_name_and_utc_day() {
        let mut b = SpendBatch::default();
        b.add(Scope::Key, "k", DAY_MS + 5, 10);
        b.add(Scope::Key, "k", 2 * DAY_MS - 1, 5);
        b.add(Scope::Key, "k", 2 * DAY_MS, 1);
        b.add(Scope::Model, "", DAY_MS, 7);
        b.add(Scope::Model, "m", DAY_MS, 0);
        let rows: Vec<_> = b.0.into_iter().collect();
        assert_eq!(
            rows,
            [
                ((Scope::Key, "k".to_owned(), DAY_MS), 15),
                ((Scope::Key, "k".to_owned(), 2 * DAY_MS), 1),
            ]
        );
    }

    #[test]
    fn micros_round_to_the_nearest() {
        assert_eq!(micros_of_nanos(499), 0);
        assert_eq!(micros_of_nanos(500), 1);
        assert_eq!(micros_of_nanos(1_250_000_000), 1_250_000);
        assert_eq!(micros_of_nanos(-5), 0);
        assert_eq!(nanos_of(0.1), 100_000_000);
        assert_eq!(nanos_of(0.000_000_000_4), 0);
        assert_eq!(nanos_of(1e9), 1_000_000_000_000_000_000);
        assert_eq!(nanos_of(f64::NAN), 0);
    }
}
