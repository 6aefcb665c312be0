//! Log retention: deletes request logs (and their attempts) and quarantined
//! records older than the configured number of days, once at start and
//! then every hour, a few thousand rows per transaction so that ingest is
//! never held up for long.

use std::time::Duration;

use sqlx::Row;
use tokio::sync::watch;

use super::sql::{Param, Statement};
use crate::store::{now_ms, Store, StoreError};

/// Rows deleted per transaction.
pub const BATCH: usize = 5000;
const EVERY: Duration = Duration::from_secs(3600);
/// Pause between two delete transactions, to let other writers in.
const PAUSE: Duration = Duration::from_millis(20);
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Runs until `shutdown` turns true; `days == 0` keeps logs forever.
pub async fn run(store: Store, days: u32, shutdown: watch::Receiver<bool>) {
    if days == 0 {
        tracing::info!("log retention is off (--log-retention-days 0)");
        return;
    }
    tracing::info!(
        days,
        "log retention: deleting older request logs every hour"
    );
    let mut stop = Some(shutdown);
    loop {
        let cutoff = now_ms().saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        let pass = purge_older_than(&store, cutoff, BATCH, stop.clone());
        let outcome = tokio::select! {
            r = pass => r,
            _ = super::shutdown_signal(&mut stop) => return,
        };
        match outcome {
            Ok(0) => tracing::debug!("log retention: nothing to delete"),
            Ok(n) => tracing::info!(deleted = n, days, "log retention: deleted old records"),
            Err(e) => tracing::warn!(error = %e, "log retention pass failed; trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = super::shutdown_signal(&mut stop) => return,
        }
    }
}

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
    loop {
        if stopping() {
            return Ok(deleted);
        }
        let mut tx = store.pool().begin().await?;
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
        .map(|r| -> Result<(i64, String), sqlx::Error> { Ok((r.try_get(0)?, r.try_get(1)?)) })
        .transpose()?;
        let mut st = Statement::default();
        let cutoff = st.bind(Param::Int(cutoff_ms));
        let mut cond = format!("time_ms < {cutoff}");
        if let Some((t, id)) = &boundary {
            let t = st.bind(Param::Int(*t));
            let id = st.bind(Param::Text(id.clone()));
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
