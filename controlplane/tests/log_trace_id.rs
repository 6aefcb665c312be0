//! Trace ids on request logs (#19, migration 0013): shipped by a data plane
//! on the log stream, stored, read back by GetLog and ListLogs, filtered on
//! by ListLogs, GetStats and FollowLogs through the partial index, on a
//! fresh SQLite file and a fresh PostgreSQL database (see `common`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::time::Duration;

use common::*;
use llmgw_controlplane::logs::query::list_statement;
use llmgw_controlplane::logs::sql::Param;
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::admin_client::AdminClient;
use llmgw_proto::v1::logs_client::LogsClient;
use sqlx::{Connection, Row};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::Code;

const ADMIN_TOKEN: &str = "admin-token-for-trace-id-tests";
const DP_TOKEN: &str = "dataplane-token-for-trace-id-tests";
const WAIT: Duration = Duration::from_secs(15);

/// Two traces, as a data plane sends them: lowercase.
const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

fn bearer(token: &str) -> Bearer {
    Bearer(format!("Bearer {token}").parse().unwrap())
}

type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

fn id(n: u32) -> String {
    format!("0190a2b4-0000-7000-8000-{n:012x}")
}

fn number(id: &str) -> u32 {
    u32::from_str_radix(&id[24..], 16).unwrap()
}

/// Record `n`, an hour ago plus `n` ms, with this trace id as sent.
fn rec(n: u32, trace_id: &str) -> pb::RequestLog {
    pb::RequestLog {
        id: id(n),
        sequence: u64::from(n),
        time_ms: llmgw_controlplane::store::now_ms() - 3_600_000 + i64::from(n),
        key: "k1".into(),
        model: "m-a".into(),
        provider: "p-x".into(),
        status: 200,
        latency_ms: 100,
        usage_source: "reported".into(),
        attempts: vec![pb::Attempt {
            provider: "p-x".into(),
            upstream_model: "up-a".into(),
            status: 200,
            error: String::new(),
            latency_ms: 90,
            // When it was sent (migration 0015): read back below.
            start_offset_ms: 3 + u64::from(n),
        }],
        trace_id: trace_id.into(),
        ..Default::default()
    }
}

/// Ships one batch on its own stream and returns its ack.
async fn ship(channel: &Channel, seq: u64, records: Vec<pb::RequestLog>) -> pb::LogAck {
    let mut logs = LogsClient::with_interceptor(channel.clone(), bearer(DP_TOKEN));
    let batch = pb::LogBatch {
        node_id: "node-1".into(),
        last_sequence: seq,
        records,
    };
    let mut acks = logs
        .ship(tokio_stream::iter([batch]))
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(WAIT, acks.message())
        .await
        .expect("no ack")
        .unwrap()
        .expect("the stream ended without an ack")
}

fn by_trace(trace_id: &str) -> pb::LogFilter {
    pb::LogFilter {
        trace_id: trace_id.into(),
        ..Default::default()
    }
}

/// The record numbers of a list with this filter, newest first.
async fn numbers(admin: &mut Admin, filter: pb::LogFilter) -> Vec<u32> {
    let r = admin
        .list_logs(pb::ListLogsRequest {
            filter: Some(filter),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.records.iter().map(|x| number(&x.id)).collect()
}

both! {
    async fn trace_ids_are_stored_read_back_and_filtered(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let (running, channel) =
            start_control_plane(&db, dir.path(), ADMIN_TOKEN, DP_TOKEN, &[]).await;
        let records = vec![
            rec(1, TRACE_A),
            // Another span of the same trace, in capitals with spaces: one
            // spelling is stored.
            rec(2, " 4BF92F3577B34DA6A3CE929D0E0E4736 "),
            rec(3, TRACE_B),
            rec(4, ""),
            // Not a trace id: the record is kept, without it.
            rec(5, "not-a-trace-id"),
            rec(6, "00000000000000000000000000000000"),
        ];
        let ack = ship(&channel, 6, records).await;
        assert!(ack.quarantined_ids.is_empty(), "{:?}", ack.quarantined_ids);

        let stored: Vec<String> =
            // PostgreSQL stores no trace id as NULL (migration 0037).
            sqlx::query_scalar("SELECT COALESCE(trace_id, '') FROM request_logs ORDER BY time_ms")
                .fetch_all(running.store().pool())
                .await
                .unwrap();
        assert_eq!(stored, [TRACE_A, TRACE_A, TRACE_B, "", "", ""]);

        // By id.
        let mut admin = AdminClient::with_interceptor(channel.clone(), bearer(ADMIN_TOKEN));
        for (n, want) in [(1, TRACE_A), (2, TRACE_A), (3, TRACE_B), (4, ""), (5, "")] {
            let r = admin.get_log(pb::GetLogRequest { id: id(n) }).await.unwrap().into_inner();
            assert_eq!(r.trace_id, want, "record {n}");
            // An attempt's send time comes back with it.
            assert_eq!(r.attempts[0].start_offset_ms, 3 + u64::from(n), "record {n}");
        }

        // By the filter, in either case; lists carry the trace id too.
        assert_eq!(numbers(&mut admin, by_trace(TRACE_A)).await, [2, 1]);
        assert_eq!(numbers(&mut admin, by_trace(&TRACE_A.to_uppercase())).await, [2, 1]);
        assert_eq!(numbers(&mut admin, by_trace(TRACE_B)).await, [3]);
        assert!(numbers(&mut admin, by_trace("ffffffffffffffffffffffffffffffff")).await.is_empty());
        assert_eq!(numbers(&mut admin, by_trace("")).await.len(), 6);
        let listed = admin
            .list_logs(pb::ListLogsRequest {
                filter: Some(by_trace(TRACE_A)),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.records[0].trace_id, TRACE_A);
        // The filter pages like any other.
        let rest = admin
            .list_logs(pb::ListLogsRequest {
                filter: Some(by_trace(TRACE_A)),
                limit: 1,
                page_token: listed.next_page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.records.iter().map(|r| number(&r.id)).collect::<Vec<_>>(), [1]);
        for bad in ["not-a-trace-id", "4bf92f35", "00000000000000000000000000000000"] {
            let e = admin
                .list_logs(pb::ListLogsRequest {
                    filter: Some(by_trace(bad)),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
            assert!(e.message().contains("32 hex digits"), "{bad}: {}", e.message());
        }

        // Stats of one trace.
        let stats = admin
            .get_stats(pb::GetStatsRequest {
                filter: Some(by_trace(TRACE_A)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.total.unwrap().requests, 2);

        // Following one trace: once the call is answered, records stored
        // afterwards reach it, and only that trace's.
        let mut follow = admin
            .follow_logs(pb::FollowLogsRequest { filter: Some(by_trace(&TRACE_B.to_uppercase())) })
            .await
            .unwrap()
            .into_inner();
        let ack = ship(&channel, 8, vec![rec(7, TRACE_A), rec(8, TRACE_B)]).await;
        assert!(ack.quarantined_ids.is_empty());
        let got = tokio::time::timeout(WAIT, follow.message())
            .await
            .expect("nothing followed")
            .unwrap()
            .unwrap();
        assert_eq!((number(&got.id), got.trace_id.as_str()), (8, TRACE_B));
        drop(follow);

        tokio::time::timeout(WAIT, running.shutdown()).await.expect("shutdown hung").unwrap();
    }
}

both! {
    async fn a_trace_is_found_through_its_index(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let (running, channel) =
            start_control_plane(&db, dir.path(), ADMIN_TOKEN, DP_TOKEN, &[]).await;
        // Many requests, a few of them traced: the plan is not that of an
        // empty table.
        let records: Vec<_> = (1..=600u32)
            .map(|n| {
                let trace = match n % 100 {
                    0 => TRACE_A,
                    1 => TRACE_B,
                    _ => "",
                };
                rec(n, trace)
            })
            .collect();
        let ack = ship(&channel, 600, records).await;
        assert!(ack.quarantined_ids.is_empty());
        let st = list_statement(&pb::ListLogsRequest {
            filter: Some(by_trace(TRACE_A)),
            ..Default::default()
        })
        .unwrap();
        match db.kind {
            Kind::Sqlite => {
                let mut conn = running.store().pool().acquire().await.unwrap();
                let rows = st
                    .with_prefix("EXPLAIN QUERY PLAN ")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
                assert!(
                    plan.iter().any(|d| d.contains("INDEX request_logs_trace_id_time")),
                    "the trace index is not used: {plan:?}\n{}",
                    st.sql
                );
            }
            Kind::Postgres => {
                let mut conn = sqlx::postgres::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("ANALYZE request_logs").execute(&mut conn).await.unwrap();
                sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.unwrap();
                let sql = format!("EXPLAIN {}", st.sql);
                let mut q = sqlx::query(&sql);
                for p in &st.params {
                    q = match p {
                        Param::Int(v) => q.bind(*v),
                        Param::Real(v) => q.bind(*v),
                        Param::Text(v) => q.bind(v.as_str()),
                        Param::Bytes(v) => q.bind(v.as_slice()),
                    };
                }
                let plan: Vec<String> = q
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect();
                let plan = plan.join("\n");
                // Each day partition has its copy of the index, named
                // after the partition and the columns.
                assert!(
                    plan.lines().any(|l| l.contains("Index") && l.contains("trace_id")),
                    "the trace index is not used:\n{plan}\n{}",
                    st.sql
                );
                assert!(!plan.contains("Seq Scan"), "{plan}");
                conn.close().await.unwrap();
            }
        }
        tokio::time::timeout(WAIT, running.shutdown()).await.expect("shutdown hung").unwrap();
    }
}
