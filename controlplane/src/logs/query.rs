//! `ListLogs` and `GetLog`.
//!
//! Lists use keyset pagination: the page token holds the sort value and id
//! of the last row shown, and the next page starts strictly after it in
//! (sort value, id) order, so pages stay stable while new rows arrive and
//! cost the same however deep they go.

use std::collections::HashMap;

use base64::Engine as _;
use llmgw_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::details::Fields;
use super::row::{add_details, attempt_from_row, stored_id, summary_from_row, SUMMARY_COLUMNS};
use super::sql::{in_list, Filter, Param, Statement, COST_NANOS, TOKENS};
use crate::store::{Store, StoreError};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

/// What a list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderBy {
    Time,
    Latency,
    Ttfb,
    Tokens,
    Cost,
    Status,
}

impl OrderBy {
    pub fn parse(s: &str) -> Result<OrderBy, StoreError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "" | "time" => OrderBy::Time,
            "latency" => OrderBy::Latency,
            "ttfb" => OrderBy::Ttfb,
            "tokens" => OrderBy::Tokens,
            "cost" => OrderBy::Cost,
            "status" => OrderBy::Status,
            other => {
                return Err(StoreError::Invalid(format!(
                    "order_by '{other}' is not one of time, latency, ttfb, tokens, cost, status"
                )))
            }
        })
    }

    /// The SQL expression sorted on.
    fn expr(self) -> &'static str {
        match self {
            OrderBy::Time => "time_ms",
            OrderBy::Latency => "latency_ms",
            OrderBy::Ttfb => "ttfb_ms",
            OrderBy::Tokens => TOKENS,
            // The exact cost: PostgreSQL keeps no floating-point one
            // (migration 0037).
            OrderBy::Cost => COST_NANOS,
            OrderBy::Status => "status",
        }
    }

    /// The sort value of a record, as the page token keeps it.
    fn value_of(self, r: &pb::RequestLog) -> serde_json::Value {
        let n = |v: u64| serde_json::Value::from(i64::try_from(v).unwrap_or(i64::MAX));
        match self {
            OrderBy::Time => r.time_ms.into(),
            OrderBy::Latency => n(r.latency_ms),
            OrderBy::Ttfb => n(r.ttfb_ms),
            OrderBy::Tokens => n(r.input_tokens.saturating_add(r.output_tokens)),
            OrderBy::Cost => r.cost_nanos.into(),
            OrderBy::Status => r.status.into(),
        }
    }

    fn param(self, v: &serde_json::Value) -> Option<Param> {
        match self {
            // A token from before 0037 holds the floating-point cost.
            OrderBy::Cost => v
                .as_i64()
                .or_else(|| v.as_f64().map(|c| (c * 1e9).round() as i64))
                .map(Param::Int),
            _ => v.as_i64().map(Param::Int),
        }
    }
}

/// What a page token holds: the order it belongs to and the last row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    #[serde(rename = "o")]
    order: OrderBy,
    #[serde(rename = "a")]
    ascending: bool,
    #[serde(rename = "v")]
    value: serde_json::Value,
    id: String,
}

fn encode_token(c: &Cursor) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_token(token: &str) -> Result<Cursor, StoreError> {
    let bad = || StoreError::Invalid("page_token is not a token from ListLogs".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// A checked `ListLogsRequest`.
#[derive(Debug, Clone)]
pub struct ListQuery {
    filter: Filter,
    order: OrderBy,
    ascending: bool,
    limit: u32,
    after: Option<(Param, String)>,
}

impl ListQuery {
    pub fn parse(r: &pb::ListLogsRequest) -> Result<ListQuery, StoreError> {
        let filter = Filter::parse(&r.filter.clone().unwrap_or_default())?;
        let order = OrderBy::parse(&r.order_by)?;
        let limit = match r.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let after = if r.page_token.trim().is_empty() {
            None
        } else {
            let c = decode_token(&r.page_token)?;
            if c.order != order || c.ascending != r.ascending {
                return Err(StoreError::Invalid(
                    "page_token belongs to a list in another order; start again without it".into(),
                ));
            }
            let v = order
                .param(&c.value)
                .ok_or_else(|| StoreError::Invalid("page_token is damaged".into()))?;
            Some((v, c.id))
        };
        Ok(ListQuery {
            filter,
            order,
            ascending: r.ascending,
            limit,
            after,
        })
    }

    /// The page's SELECT: one row more than the limit, to know whether
    /// another page follows.
    pub fn statement(&self) -> Statement {
        let mut st = Statement::default();
        let mut conds = self.filter.conditions(&mut st);
        let expr = self.order.expr();
        let (dir, cmp) = if self.ascending {
            ("ASC", ">")
        } else {
            ("DESC", "<")
        };
        if let Some((v, id)) = &self.after {
            // `expr <= v` alone can use an index on expr; the second test
            // breaks ties by id.
            let v = st.bind(v.clone());
            let id = st.bind(Param::Bytes(stored_id(id)));
            conds.push(format!(
                "{expr} {cmp}= {v} AND ({expr} {cmp} {v} OR id {cmp} {id})"
            ));
        }
        let wh = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let limit = st.bind(Param::Int(i64::from(self.limit) + 1));
        st.sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM request_logs{wh} \
             ORDER BY {expr} {dir}, id {dir} LIMIT {limit}"
        );
        st
    }
}

/// The statement `ListLogs` runs for a request (for tests and EXPLAIN).
pub fn list_statement(r: &pb::ListLogsRequest) -> Result<Statement, StoreError> {
    Ok(ListQuery::parse(r)?.statement())
}

pub async fn list(
    store: &Store,
    r: pb::ListLogsRequest,
) -> Result<pb::ListLogsResponse, StoreError> {
    let q = ListQuery::parse(&r)?;
    let st = q.statement();
    let mut conn = store.pool().acquire().await?;
    let rows = st.fetch_all(&mut conn).await?;
    let mut records = rows
        .iter()
        .map(summary_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = records.len() > q.limit as usize;
    records.truncate(q.limit as usize);
    add_attempts(&mut conn, &mut records).await?;
    let next_page_token = match records.last() {
        Some(last) if more => encode_token(&Cursor {
            order: q.order,
            ascending: q.ascending,
            value: q.order.value_of(last),
            id: last.id.clone(),
        }),
        _ => String::new(),
    };
    Ok(pb::ListLogsResponse {
        records,
        next_page_token,
    })
}

/// Fills in each record's attempts, in order.
async fn add_attempts(
    conn: &mut sqlx::AnyConnection,
    records: &mut [pb::RequestLog],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut st = Statement::default();
    let ids = in_list(
        &mut st,
        records.iter().map(|r| Param::Bytes(stored_id(&r.id))),
    );
    // The records' time span: on PostgreSQL only the days it covers are read.
    let first = records.iter().map(|r| r.time_ms).min().unwrap_or_default();
    let last = records.iter().map(|r| r.time_ms).max().unwrap_or_default();
    let first = st.bind(Param::Int(first));
    let last = st.bind(Param::Int(last));
    st.sql = format!(
        "SELECT request_id, attempt, provider, upstream_model, status, error, latency_ms, \
         start_offset_ms \
         FROM request_attempts WHERE request_id IN ({ids}) \
         AND request_time_ms BETWEEN {first} AND {last} ORDER BY request_id, attempt"
    );
    let rows = st.query().persistent(false).fetch_all(conn).await?;
    let mut by_id: HashMap<String, Vec<pb::Attempt>> = HashMap::new();
    for row in &rows {
        let (id, a) = attempt_from_row(row)?;
        by_id.entry(id).or_default().push(a);
    }
    for r in records {
        if let Some(a) = by_id.remove(&r.id) {
            r.attempts = a;
        }
    }
    Ok(())
}

/// A record's details by its time and stored id (`row::stored_id`), for
/// a record stored with a details row of its own (before migration 0038,
/// SQLite 0035): the index on `time_ms` finds that millisecond's rows (the
/// test `queries_use_indexes` checks the plan).
pub const DETAILS_OF: &str = "SELECT data FROM request_log_details WHERE time_ms = $1 AND id = $2";

/// The details blocks of a time (`details.rs`, "Blocks"), through the same
/// index: nearly always one, more when batches' blocks start in the same
/// millisecond.
pub const BLOCKS_AT: &str = "SELECT data FROM request_log_details WHERE time_ms = $1";

/// One record with headers, bodies and attempts.
pub async fn get(store: &Store, id: &str) -> Result<pb::RequestLog, StoreError> {
    let canonical = uuid::Uuid::parse_str(id.trim())
        .map_err(|_| StoreError::Invalid(format!("'{id}' is not a request id (a UUID)")))?
        .hyphenated()
        .to_string();
    let id_bytes = stored_id(&canonical);
    let mut conn = store.pool().acquire().await?;
    let row = sqlx::query(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM request_logs WHERE id = $1"
    ))
    .bind(id_bytes.as_slice())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("request log {canonical} not found")))?;
    let mut rec = summary_from_row(&row)?;
    let offset: Option<i64> = sqlx::Row::try_get(&row, "details_offset_ms")?;
    // Every record is stored with details unless body retention was about
    // to remove them; none left means it did.
    match details_of(store, &mut conn, rec.time_ms, offset, &id_bytes).await {
        Ok(Some(fields)) => add_details(&mut rec, fields)?,
        Ok(None) => rec.bodies_expired = true,
        // The summary still answers; the details read as gone.
        Err(StoreError::Invalid(why)) => {
            tracing::warn!(
                id = canonical,
                reason = why,
                "a request log's details cannot be read"
            );
            rec.bodies_expired = true;
        }
        Err(e) => return Err(e),
    }
    let mut one = [rec];
    add_attempts(&mut conn, &mut one).await?;
    let [rec] = one;
    Ok(rec)
}

/// The stored details of a record: in a block `offset` before its time,
/// or (no offset) in a row of its own. `None` when none is stored.
async fn details_of(
    store: &Store,
    conn: &mut sqlx::AnyConnection,
    time_ms: i64,
    offset: Option<i64>,
    id: &[u8],
) -> Result<Option<Fields>, StoreError> {
    let Some(offset) = offset else {
        let data: Option<Vec<u8>> = sqlx::query_scalar(DETAILS_OF)
            .bind(time_ms)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        return match data {
            Some(data) => store.details().decode(store.pool(), &data).await.map(Some),
            None => Ok(None),
        };
    };
    let block_ms = time_ms.saturating_sub(offset);
    let blocks: Vec<Vec<u8>> = sqlx::query_scalar(BLOCKS_AT)
        .bind(block_ms)
        .fetch_all(&mut *conn)
        .await?;
    // A damaged block says so unless another holds the record. A block's
    // records, and the body pieces they refer to, are of its UTC day.
    let day_ms = super::pieces::day_of(block_ms);
    let mut damaged = None;
    for data in blocks {
        match store
            .details()
            .find_in_block(store.pool(), &mut *conn, &data, id, day_ms)
            .await
        {
            Ok(Some(fields)) => return Ok(Some(fields)),
            Ok(None) => {}
            Err(e @ StoreError::Invalid(_)) => damaged = Some(e),
            Err(e) => return Err(e),
        }
    }
    damaged.map_or(Ok(None), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let c = Cursor {
            order: OrderBy::Cost,
            ascending: true,
            value: 0.1234.into(),
            id: "x".into(),
        };
        assert_eq!(decode_token(&encode_token(&c)).unwrap(), c);
        assert!(decode_token("!!").is_err());
        assert!(decode_token("e30").is_err()); // {}
    }

    #[test]
    fn keyset_statement() {
        let first = list_statement(&pb::ListLogsRequest {
            order_by: "latency".into(),
            limit: 5000,
            ..Default::default()
        })
        .unwrap();
        assert!(
            first
                .sql
                .ends_with("ORDER BY latency_ms DESC, id DESC LIMIT $1"),
            "{}",
            first.sql
        );
        assert_eq!(first.params, vec![Param::Int(1001)]);
        let token = encode_token(&Cursor {
            order: OrderBy::Latency,
            ascending: false,
            value: 70.into(),
            id: "abc".into(),
        });
        let next = list_statement(&pb::ListLogsRequest {
            order_by: "latency".into(),
            page_token: token.clone(),
            ..Default::default()
        })
        .unwrap();
        assert!(
            next.sql
                .contains("latency_ms <= $1 AND (latency_ms < $1 OR id < $2)"),
            "{}",
            next.sql
        );
        assert!(!next.sql.contains("OFFSET"));
        // A token is tied to its order.
        assert!(list_statement(&pb::ListLogsRequest {
            order_by: "latency".into(),
            ascending: true,
            page_token: token,
            ..Default::default()
        })
        .is_err());
        assert!(list_statement(&pb::ListLogsRequest {
            order_by: "size".into(),
            ..Default::default()
        })
        .is_err());
    }
}
