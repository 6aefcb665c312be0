//! Rollup deltas (`log_rollup_deltas`, migration 0027): what each ingest
//! batch adds to the rollups, appended at ingest and folded into
//! `log_rollups` in the background.
//!
//! - **Appended at ingest** ([`append`] on SQLite, [`append_pg`] with
//!   `COPY` on PostgreSQL), in the batch's transaction and only for the
//!   records it inserted (a record shipped twice counts once): a row per
//!   cube, minute and dimensions, summed over the batch. A plain insert:
//!   it locks no row another batch writes. Upserting the
//!   rollups at ingest held the locks of the rows every batch shares (the
//!   small cubes' minutes, hours and days) until the batch committed, and
//!   concurrent batches waited on each other (docs/benchmarks.md).
//! - **Folded in by compaction** ([`compact_once`], every second in
//!   [`run`]): a transaction deletes the oldest deltas, sums them per
//!   cube, level, bucket and dimensions, and adds the sums to their rollup
//!   rows (`rollup.rs`'s upserts), save minute rows behind the minutes'
//!   settled horizon, which nothing reads. The deletion and the upserts commit
//!   together, so each delta is folded in exactly once, whatever fails
//!   between. One compaction runs at a time on a PostgreSQL database
//!   (an advisory lock; the others skip their turn), so the rollups have a
//!   single writer.
//! - **Read by stats** with the rollups, in the same statement
//!   (`rollup::select_statement`).

use std::sync::LazyLock;
use std::time::Duration;

use futures::TryStreamExt;

use llmgw_proto::v1 as pb;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tokio::sync::watch;

use super::copy::CopyText;
use super::rollup::{self, Agg, Dims, RollupBatch};
use super::sketch::Sketch;
use crate::store::multirow::{insert_text, insert_texts, statement_parts};
use crate::store::{Backend, Store, StoreError};

/// Columns written by [`append`], in bind order (and read back by
/// [`compact`] in the same order): the rollups' without the level and the
/// hash of the dimensions, which compaction computes.
static COLUMNS: LazyLock<Vec<&str>> = LazyLock::new(|| {
    rollup::COLUMNS
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "bucket_s" | "dims"))
        .collect()
});

/// Deltas folded per compaction transaction: enough to merge many
/// batches' rows into one upsert each. A pass writes each of its rollup
/// rows once, whatever the number of deltas it folds, so when compaction
/// lags behind ingest a larger pass writes fewer rows a delta: 200,000
/// sustained 28–36k rows/s of ingest where 50,000 sustained 23–27k (and
/// 20,000 fell behind; docs/benchmarks.md, "Ingest through COPY"). On
/// PostgreSQL the transaction holds only compaction's advisory lock and
/// the rows only compaction writes: about 2 s at live density, 5–6 s in
/// a backfill, where nearly every delta is a row of its own; its sums take
/// a few hundred bytes per rollup row in memory (80 MiB more at the peak of
/// a 7-day backfill than with 50,000). On SQLite a twentieth:
/// its transaction holds the database's one write lock, which ingest
/// waits for.
fn compact_batch(backend: Backend) -> i64 {
    match backend {
        Backend::Postgres => 200_000,
        Backend::Sqlite => 10_000,
    }
}

/// How often [`run`] folds the deltas in.
const EVERY: Duration = Duration::from_secs(1);

/// Appends `minutes` (a batch's sums at the minute level,
/// [`RollupBatch::minutes`]) on `conn`, the ingest's transaction on
/// SQLite ([`append_pg`] on PostgreSQL).
pub async fn append(conn: &mut AnyConnection, minutes: &RollupBatch) -> Result<(), StoreError> {
    static TEXTS: LazyLock<Vec<String>> =
        LazyLock::new(|| insert_texts(&[("log_rollup_deltas", &COLUMNS, "")]));
    let rows: Vec<_> = minutes.0.iter().collect();
    for (slot, part) in statement_parts(&rows) {
        let mut q = sqlx::query(insert_text(&TEXTS, Backend::Sqlite, 0, slot));
        for (key, agg) in part {
            q = rollup::bind_values(
                q.bind(key.cube).bind(key.start_ms),
                agg,
                agg.latency.to_bytes()?,
                agg.ttfb.to_bytes()?,
                true,
            );
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// [`append`] on PostgreSQL, with `COPY` (`copy.rs`): a batch's
/// thousand-odd deltas in one round trip, parsed by the server in bulk.
pub async fn append_pg(
    conn: &mut sqlx::postgres::PgConnection,
    minutes: &RollupBatch,
) -> Result<(), StoreError> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("COPY log_rollup_deltas ({}) FROM STDIN", COLUMNS.join(", ")));
    if minutes.0.is_empty() {
        return Ok(());
    }
    let mut rows = CopyText::with_capacity(minutes.0.len() * 160);
    for (key, agg) in &minutes.0 {
        // In `COLUMNS`' order.
        let d = &agg.dims;
        rows.int(key.cube);
        rows.int(key.start_ms);
        for v in [
            d.model.as_str(),
            d.provider.as_str(),
            d.upstream_model.as_str(),
            d.key_name.as_str(),
            d.end_user.as_str(),
            d.outcome,
        ] {
            rows.text(v);
        }
        rows.int(i64::from(d.failed));
        for v in agg.counts {
            rows.int(v);
        }
        rows.float(agg.cost);
        rows.int(agg.cost_nanos);
        rows.bytes(&agg.latency.to_bytes()?);
        rows.bytes(&agg.ttfb.to_bytes()?);
        rows.end_row();
    }
    let mut copy = conn.copy_in_raw(&SQL).await?;
    copy.send(rows.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// Folds up to [`compact_batch`] of the oldest deltas into the rollups in
/// one transaction; returns how many. On PostgreSQL, while another control
/// plane is folding, waits for it when `wait`, or else returns 0.
pub async fn compact_once(store: &Store, wait: bool) -> Result<u64, StoreError> {
    let backend = store.backend();
    let sql = format!(
        "DELETE FROM log_rollup_deltas WHERE seq IN \
         (SELECT seq FROM log_rollup_deltas ORDER BY seq LIMIT $1) RETURNING {}",
        COLUMNS.join(", ")
    );
    // Most seconds of an idle control plane: no transaction (on SQLite,
    // no write lock) for nothing to fold.
    let any: Option<i64> = sqlx::query_scalar("SELECT seq FROM log_rollup_deltas LIMIT 1")
        .fetch_optional(store.pool())
        .await?;
    if any.is_none() {
        return Ok(0);
    }
    let mut tx = store.pool().begin().await?;
    if backend == Backend::Postgres {
        // One compaction at a time on a database: the rollups then have
        // one writer, which reads a row's sketches and writes them back
        // merged without another writer in between (`rollup.rs`). Another
        // control plane that holds the lock folds these deltas too.
        let sql = if wait {
            "SELECT pg_advisory_xact_lock(hashtext('llmgw_rollup_compaction')) IS NOT NULL"
        } else {
            "SELECT pg_try_advisory_xact_lock(hashtext('llmgw_rollup_compaction'))"
        };
        let ours: bool = sqlx::query_scalar(sql).fetch_one(&mut *tx).await?;
        if !ours {
            tx.commit().await?;
            return Ok(0);
        }
    }
    // The delete comes first: on SQLite it takes the write lock at once.
    // Summed as the rows arrive: the deltas themselves are not held.
    let mut batch = RollupBatch::default();
    let mut folded = 0u64;
    let mut unreadable = 0u64;
    {
        let mut rows = sqlx::query(&sql)
            .bind(compact_batch(backend))
            .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            folded += 1;
            // A delta that cannot be read is left out (it is deleted with
            // the others): kept, it would stop every later compaction.
            match delta_of(&row) {
                Ok((cube, start_ms, agg)) => batch.add_minute(cube, start_ms, &agg)?,
                Err(e) => {
                    unreadable += 1;
                    tracing::error!(error = %e, "a rollup delta cannot be read; left out of the rollups");
                }
            }
        }
    }
    if unreadable > 0 {
        tracing::error!(unreadable, "rollup deltas left out of the rollups");
    }
    if folded == 0 {
        tx.commit().await?;
        return Ok(0);
    }
    // Late records (a spool shipped after an outage) add no minute rows
    // that retention would delete: stats read hours before the horizon.
    let unread_before = rollup::minute_horizon(&mut tx)
        .await?
        .unread_before(crate::store::now_ms());
    batch.drop_minutes_before(unread_before);
    batch.write(&mut tx, backend).await?;
    tx.commit().await?;
    Ok(folded)
}

/// A delta as compaction reads it back: its cube, minute and sums.
fn delta_of(row: &AnyRow) -> Result<(i64, i64, Agg), StoreError> {
    let outcome: String = row.try_get(7)?;
    let outcome = match pb::Outcome::from_name(&outcome) {
        Some(o) => o.name(),
        // Written by a newer control plane: counted, as unspecified.
        None => {
            tracing::warn!(
                outcome,
                "a rollup delta has an outcome this version does not know"
            );
            ""
        }
    };
    let dims = Dims {
        model: row.try_get(2)?,
        provider: row.try_get(3)?,
        upstream_model: row.try_get(4)?,
        key_name: row.try_get(5)?,
        end_user: row.try_get(6)?,
        outcome,
        failed: row.try_get::<i64, _>(8)? != 0,
    };
    let mut counts = [0i64; 9];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = row.try_get(9 + i)?;
    }
    let agg = Agg {
        dims,
        counts,
        cost: row.try_get(18)?,
        cost_nanos: row.try_get(19)?,
        latency: Sketch::from_bytes(&row.try_get::<Vec<u8>, _>(20)?)?,
        ttfb: Sketch::from_bytes(&row.try_get::<Vec<u8>, _>(21)?)?,
    };
    Ok((row.try_get(0)?, row.try_get(1)?, agg))
}

/// Folds every delta in; returns how many. Deltas appended meanwhile may
/// be folded too.
pub async fn compact(store: &Store) -> Result<u64, StoreError> {
    fold_all(store, true).await
}

async fn fold_all(store: &Store, wait: bool) -> Result<u64, StoreError> {
    let mut folded = 0;
    loop {
        let n = compact_once(store, wait).await?;
        folded += n;
        if n < compact_batch(store.backend()).unsigned_abs() {
            return Ok(folded);
        }
    }
}

/// Folds the deltas in every second until `shutdown` turns true.
pub async fn run(store: Store, shutdown: watch::Receiver<bool>) {
    let mut stop = Some(shutdown);
    loop {
        tokio::select! {
            r = fold_all(&store, false) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "folding the rollup deltas in failed; trying again");
                }
            }
            _ = super::shutdown_signal(&mut stop) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = super::shutdown_signal(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_reads_the_columns_where_append_writes_them() {
        // `compact_once` reads the returned columns by position.
        let at = |c: &str| COLUMNS.iter().position(|x| *x == c);
        assert_eq!(COLUMNS.len(), 22);
        assert_eq!(
            [
                "cube",
                "start_ms",
                "end_user",
                "outcome",
                "failed",
                "requests",
                "reasoning_tokens",
                "cost",
                "cost_nanos",
                "latency_sketch",
                "ttfb_sketch"
            ]
            .map(at),
            [0, 1, 6, 7, 8, 9, 17, 18, 19, 20, 21].map(Some)
        );
    }
}
