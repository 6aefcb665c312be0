//! The live view's table (`live_requests`, migration 0014): the requests in
//! flight on every data plane, written by the control plane that holds each
//! data plane's live stream, so that any control plane on the same
//! database lists them and routes a cancel (`crate::live`).
//!
//! A row belongs to one stream (`stream_id`) of one control plane. It is
//! deleted when its request ends, when its stream ends, and is ignored
//! (then pruned) once `seen_ms` is older than [`LIVE_LEASE_MS`]; a stream's
//! rows are renewed by its reports, at most every quarter lease.

use llmgw_proto::v1 as pb;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{flag, int, Backend, Result, Store};

/// How long a row lives without a report from its stream.
pub const LIVE_LEASE_MS: i64 = 10_000;
/// The NOTIFY channel that carries a cancel to the control plane holding
/// the data plane's stream (PostgreSQL; payload: stream id, request id
/// and who cancelled, separated by tabs).
pub const LIVE_CHANNEL: &str = "llmgw_live";

/// Who holds the stream a request was reported on.
#[derive(Debug, Clone)]
pub struct LiveOwner {
    pub node_id: String,
    pub stream_id: String,
    pub control_plane: String,
}

/// The stream a report came on.
#[derive(Debug, Clone)]
pub struct LiveStream {
    pub stream_id: String,
    pub control_plane: String,
    pub node_id: String,
    pub incarnation: String,
}

const COLUMNS: &str = "id, node_id, control_plane, key_name, model, provider, upstream_model, \
     client_protocol, upstream_protocol, stream, started_ms, attempt, tokens, seen_ms";

fn request_of(row: &AnyRow) -> Result<pb::InFlightRequest> {
    Ok(pb::InFlightRequest {
        id: row.try_get("id")?,
        node_id: row.try_get("node_id")?,
        control_plane: row.try_get("control_plane")?,
        key: row.try_get("key_name")?,
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        upstream_model: row.try_get("upstream_model")?,
        client_protocol: row.try_get("client_protocol")?,
        upstream_protocol: row.try_get("upstream_protocol")?,
        stream: flag(row, "stream")?,
        started_ms: row.try_get("started_ms")?,
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(0),
        tokens: row.try_get::<i64, _>("tokens")?.unsigned_abs(),
        updated_ms: row.try_get("seen_ms")?,
    })
}

impl Store {
    /// The clock that leases are written and judged by: the database's on
    /// PostgreSQL, which every control plane shares (their own clocks may
    /// differ by seconds, and a lease is 10 s); this process's on SQLite,
    /// which one control plane serves.
    pub async fn live_clock_ms(&self) -> Result<i64> {
        if self.backend != Backend::Postgres {
            return Ok(super::now_ms());
        }
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Applies one report of `stream` in one transaction: a full report
    /// first drops what this process's other streams had reported; then
    /// the upserts, the ends, and the stream's lease renewed.
    pub async fn live_apply(
        &self,
        stream: &LiveStream,
        report: &pb::LiveReport,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if report.full {
            sqlx::query("DELETE FROM live_requests WHERE incarnation = $1 AND stream_id <> $2")
                .bind(&stream.incarnation)
                .bind(&stream.stream_id)
                .execute(&mut *tx)
                .await?;
        }
        for r in &report.upserts {
            sqlx::query(
                "INSERT INTO live_requests (id, node_id, incarnation, stream_id, control_plane, \
                 key_name, model, provider, upstream_model, client_protocol, upstream_protocol, \
                 stream, started_ms, attempt, tokens, seen_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (id) DO UPDATE SET node_id = excluded.node_id, \
                 incarnation = excluded.incarnation, stream_id = excluded.stream_id, \
                 control_plane = excluded.control_plane, provider = excluded.provider, \
                 upstream_model = excluded.upstream_model, \
                 upstream_protocol = excluded.upstream_protocol, attempt = excluded.attempt, \
                 tokens = excluded.tokens, seen_ms = excluded.seen_ms",
            )
            .bind(&r.id)
            .bind(&stream.node_id)
            .bind(&stream.incarnation)
            .bind(&stream.stream_id)
            .bind(&stream.control_plane)
            .bind(&r.key)
            .bind(&r.model)
            .bind(&r.provider)
            .bind(&r.upstream_model)
            .bind(&r.client_protocol)
            .bind(&r.upstream_protocol)
            .bind(int(r.stream))
            .bind(r.started_ms)
            .bind(i64::from(r.attempt))
            .bind(i64::try_from(r.tokens).unwrap_or(i64::MAX))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for id in &report.ended {
            sqlx::query("DELETE FROM live_requests WHERE id = $1 AND stream_id = $2")
                .bind(id)
                .bind(&stream.stream_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE live_requests SET seen_ms = $1 WHERE stream_id = $2 AND seen_ms < $3")
            .bind(now)
            .bind(&stream.stream_id)
            .bind(now - LIVE_LEASE_MS / 4)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A stream ended: its requests are no longer known to be in flight.
    pub async fn live_stream_ended(&self, stream_id: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM live_requests WHERE stream_id = $1")
            .bind(stream_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The requests in flight (of one data plane when `node_id` is not
    /// empty), oldest first; rows past their lease are left out.
    pub async fn live_list(&self, node_id: &str, now: i64) -> Result<Vec<pb::InFlightRequest>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM live_requests WHERE seen_ms >= $1 \
             AND ($2 = '' OR node_id = $3) ORDER BY started_ms, id"
        ))
        .bind(now - LIVE_LEASE_MS)
        .bind(node_id)
        .bind(node_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(request_of).collect()
    }

    /// Who serves request `id`, if it is in flight.
    pub async fn live_owner(&self, id: &str, now: i64) -> Result<Option<LiveOwner>> {
        let row = sqlx::query(
            "SELECT node_id, stream_id, control_plane FROM live_requests \
             WHERE id = $1 AND seen_ms >= $2",
        )
        .bind(id)
        .bind(now - LIVE_LEASE_MS)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(LiveOwner {
                node_id: r.try_get("node_id")?,
                stream_id: r.try_get("stream_id")?,
                control_plane: r.try_get("control_plane")?,
            })
        })
        .transpose()
    }

    /// Deletes rows past their lease (their stream went silent, or its
    /// control plane died).
    pub async fn live_prune(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM live_requests WHERE seen_ms < $1")
            .bind(now - LIVE_LEASE_MS)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// PostgreSQL: asks every control plane to pass a cancel to the stream
    /// it holds.
    pub async fn live_notify_cancel(&self, stream_id: &str, id: &str, by: &str) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let payload = format!("{stream_id}\t{id}\t{by}");
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(LIVE_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The status a request's log was stored with, if it was.
    pub async fn logged_status(&self, id: &str) -> Result<Option<u32>> {
        let status: Option<i64> =
            sqlx::query_scalar("SELECT status FROM request_logs WHERE id = $1")
                .bind(crate::logs::stored_id(id))
                .fetch_optional(&self.pool)
                .await?;
        Ok(status.map(|s| u32::try_from(s).unwrap_or(0)))
    }
}
