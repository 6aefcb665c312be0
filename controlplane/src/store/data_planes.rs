//! What the control plane records of each data plane: its stream, the
//! versions it acknowledged or refused, and when it was last seen.

use sqlx::Row;

use super::{flag, now_ms, Result, Store};

#[derive(Debug, Clone, Default)]
pub struct DataPlaneRow {
    pub node_id: String,
    pub peer_address: String,
    pub connected_since: i64,
    pub last_seen: i64,
    pub acked_version: u64,
    pub nacked_version: u64,
    pub last_nack_error: String,
    pub connected: bool,
}

impl Store {
    pub async fn data_plane_connected(
        &self,
        node_id: &str,
        peer: &str,
        version: u64,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO data_planes (node_id, peer_address, connected_since, last_seen, \
             acked_version, connected) VALUES ($1, $2, $3, $4, $5, 1) \
             ON CONFLICT (node_id) DO UPDATE SET peer_address = excluded.peer_address, \
             connected_since = excluded.connected_since, last_seen = excluded.last_seen, \
             acked_version = excluded.acked_version, connected = 1",
        )
        .bind(node_id)
        .bind(peer)
        .bind(now)
        .bind(now)
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn data_plane_acked(&self, node_id: &str, version: u64) -> Result<()> {
        sqlx::query("UPDATE data_planes SET acked_version = $1, last_seen = $2 WHERE node_id = $3")
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .bind(now_ms())
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn data_plane_nacked(&self, node_id: &str, version: u64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE data_planes SET nacked_version = $1, last_nack_error = $2, last_seen = $3 \
             WHERE node_id = $4",
        )
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .bind(error)
        .bind(now_ms())
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn data_plane_seen(&self, node_id: &str) -> Result<()> {
        sqlx::query("UPDATE data_planes SET last_seen = $1 WHERE node_id = $2")
            .bind(now_ms())
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a stream gone, unless a newer stream of the same node took over.
    pub async fn data_plane_disconnected(&self, node_id: &str, connected_since: i64) -> Result<()> {
        sqlx::query(
            "UPDATE data_planes SET connected = 0, last_seen = $1 \
             WHERE node_id = $2 AND connected_since <= $3",
        )
        .bind(now_ms())
        .bind(node_id)
        .bind(connected_since)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn data_plane_since(&self, node_id: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT connected_since FROM data_planes WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    pub async fn data_planes(&self) -> Result<Vec<DataPlaneRow>> {
        let rows = sqlx::query("SELECT * FROM data_planes ORDER BY node_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DataPlaneRow {
                    node_id: r.try_get("node_id")?,
                    peer_address: r.try_get("peer_address")?,
                    connected_since: r.try_get("connected_since")?,
                    last_seen: r.try_get("last_seen")?,
                    acked_version: r.try_get::<i64, _>("acked_version")?.unsigned_abs(),
                    nacked_version: r.try_get::<i64, _>("nacked_version")?.unsigned_abs(),
                    last_nack_error: r.try_get("last_nack_error")?,
                    connected: flag(r, "connected")?,
                })
            })
            .collect()
    }
}
