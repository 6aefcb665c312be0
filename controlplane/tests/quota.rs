//! The quota runtime (#15) against real databases: the atomic grant under
//! racing control planes, windows, leases, spend from ingested logs and its
//! reset, and the `Quota` gRPC stream through a tonic client. Every `both!`
//! test runs against a fresh SQLite file and a fresh PostgreSQL database
//! (see `common`); "two control planes" are two `Store`s on one PostgreSQL
//! database (SQLite admits one control plane: there the racers share one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use llmgw_controlplane::logs::{ingest, query, LogFeed};
use llmgw_controlplane::quota::assign::{self, Asker};
use llmgw_controlplane::quota::QuotaService;
use llmgw_controlplane::store::quota::DAY_MS;
use llmgw_controlplane::store::Store;
use llmgw_core::limits::{BucketId, Kind, Limits, Period, Scope};
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::admin_client::AdminClient;
use llmgw_proto::v1::logs_client::LogsClient;
use llmgw_proto::v1::quota_client::QuotaClient;
use llmgw_proto::v1::quota_server::QuotaServer;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(15);

/// The stores of two control planes on one database (one store twice on
/// SQLite).
async fn two_stores(db: &Db) -> [Store; 2] {
    let first = db.open().await;
    let second = match db.kind {
        common::Kind::Postgres => db.open().await,
        common::Kind::Sqlite => first.clone(),
    };
    [first, second]
}

fn rate(rpm: u64, window_ms: u32) -> Limits {
    Limits {
        rpm: Some(rpm),
        window_ms,
        ..Limits::default()
    }
}

async fn scalar(store: &Store, sql: &str) -> i64 {
    count(store, sql).await
}

both! {
    async fn racing_grants_never_exceed_the_limit(db: Db) {
        const LIMIT: u64 = 1_000;
        let stores = two_stores(&db).await;
        let bucket = BucketId::new(Scope::Key, "k", Kind::Rpm);
        let window = (60_000, 120_000);
        let mut tasks = Vec::new();
        for i in 0..24u64 {
            let store = stores[(i % 2) as usize].clone();
            let bucket = bucket.clone();
            tasks.push(tokio::spawn(async move {
                let node = format!("node-{i}");
                let mut held = 0;
                // Ask for a little more until nothing more comes.
                loop {
                    let g = store
                        .grant(&bucket, window, &node, held + 7 + i, LIMIT)
                        .await
                        .unwrap();
                    assert!(g.fleet <= LIMIT, "fleet {} > {LIMIT}", g.fleet);
                    assert!(g.node >= held, "a grant shrank");
                    if g.node == held {
                        return held;
                    }
                    held = g.node;
                }
            }));
        }
        let mut granted = 0;
        for t in tasks {
            granted += t.await.unwrap();
        }
        // Demand exceeded the limit: all of it and no more was handed out.
        assert_eq!(granted, LIMIT);
        let s = &stores[0];
        assert_eq!(
            scalar(s, "SELECT granted FROM quota_windows WHERE name = 'k'").await,
            LIMIT as i64
        );
        assert_eq!(
            scalar(s, "SELECT CAST(SUM(granted) AS BIGINT) FROM quota_grants").await,
            LIMIT as i64
        );
        assert_eq!(s.window_granted(&bucket, window.0).await.unwrap(), LIMIT);

        // Concurrency leases race the same way.
        let conc = BucketId::new(Scope::Model, "m", Kind::Concurrency);
        let mut tasks = Vec::new();
        for i in 0..24u64 {
            let store = stores[(i % 2) as usize].clone();
            let conc = conc.clone();
            tasks.push(tokio::spawn(async move {
                let l = store
                    .lease(&conc, &format!("node-{i}"), 1 + i % 3, 5, 1_000, 10_000)
                    .await
                    .unwrap();
                assert!(l.fleet <= 5);
                l.slots
            }));
        }
        let mut slots = 0;
        for t in tasks {
            slots += t.await.unwrap();
        }
        assert_eq!(slots, 5);
        assert_eq!(s.leased(Scope::Model, "m", 1_000).await.unwrap(), 5);
        if db.kind == common::Kind::Postgres {
            stores[1].close().await;
        }
        stores[0].close().await;
    }
}

both! {
    async fn demand_moves_grants_between_nodes_across_windows(db: Db) {
        let store = db.open().await;
        let limits = rate(10, 1_000);
        let bucket = BucketId::new(Scope::Model, "m", Kind::Rpm);
        let t0 = 1_000_000;
        let ask = |node: &'static str, now: i64, start: i64, wanted: u64| {
            let store = store.clone();
            let bucket = bucket.clone();
            async move {
                let usage = pb::BucketUsage {
                    window_start_ms: start,
                    wanted,
                    ..Default::default()
                };
                let asker = Asker { node, now_ms: now, lease_ms: 10_000 };
                assign::assign(&store, asker, &bucket, (&limits, 10), &usage)
                    .await
                    .unwrap()
            }
        };
        // Window 1: a has the traffic and takes it all.
        let a = ask("a", t0 + 10, t0, 10).await;
        assert_eq!((a.granted, a.fleet_used, a.limit), (10, 10, 10));
        assert_eq!((a.window_start_ms, a.expires_at_ms), (t0, t0 + 1_000));
        let b = ask("b", t0 + 20, t0, 4).await;
        assert_eq!((b.granted, b.fleet_used), (0, 10));
        // Window 2: the traffic moved to b, and so does the capacity.
        let b = ask("b", t0 + 1_010, t0 + 1_000, 8).await;
        assert_eq!((b.granted, b.fleet_used), (8, 8));
        let a = ask("a", t0 + 1_020, t0 + 1_000, 10).await;
        assert_eq!((a.granted, a.fleet_used), (2, 10));
        // A grant is never taken back within its window.
        let a = ask("a", t0 + 1_030, t0 + 1_000, 0).await;
        assert_eq!(a.granted, 2);
        // A report about a past window asks for nothing in the current one.
        let c = ask("c", t0 + 1_040, t0, 5).await;
        assert_eq!((c.granted, c.window_start_ms), (0, t0 + 1_000));
        // Ended windows are pruned with their grants.
        // (window 1 and a's grant in it; b's refused ask left no row)
        assert_eq!(store.prune_quota(t0 + 2_000, 0).await.unwrap(), 2);
        assert_eq!(store.window_granted(&bucket, t0).await.unwrap(), 0);
        assert_eq!(store.window_granted(&bucket, t0 + 1_000).await.unwrap(), 10);
        store.close().await;
    }
}

both! {
    async fn leases_lapse_so_a_vanished_nodes_slots_return(db: Db) {
        let store = db.open().await;
        let bucket = BucketId::new(Scope::Provider, "p", Kind::Concurrency);
        let t = 5_000;
        let a = store.lease(&bucket, "a", 3, 3, t, 1_000).await.unwrap();
        assert_eq!((a.slots, a.fleet, a.expires_at_ms), (3, 3, t + 1_000));
        let b = store.lease(&bucket, "b", 2, 3, t + 10, 1_000).await.unwrap();
        assert_eq!((b.slots, b.fleet), (0, 3));
        // a renews at fewer slots: they go back to the pool.
        let a = store.lease(&bucket, "a", 1, 3, t + 500, 1_000).await.unwrap();
        assert_eq!(a.slots, 1);
        let b = store.lease(&bucket, "b", 2, 3, t + 510, 1_000).await.unwrap();
        assert_eq!((b.slots, b.fleet), (2, 3));
        // a stops reporting: its lease lapses and b can have everything.
        assert_eq!(store.leased(Scope::Provider, "p", t + 1_499).await.unwrap(), 3);
        assert_eq!(store.leased(Scope::Provider, "p", t + 1_500).await.unwrap(), 2);
        let b = store.lease(&bucket, "b", 3, 3, t + 1_500, 1_000).await.unwrap();
        assert_eq!((b.slots, b.fleet), (3, 3));
        store.close().await;
    }
}

fn spend_rec(n: u32, t: i64, cost: f64) -> pb::RequestLog {
    pb::RequestLog {
        id: format!("0190a2b4-0000-7000-8000-{n:012x}"),
        time_ms: t,
        key: "k1".into(),
        model: "m1".into(),
        provider: "p1".into(),
        status: 200,
        cost,
        ..Default::default()
    }
}

fn batch(records: Vec<pb::RequestLog>) -> pb::LogBatch {
    pb::LogBatch {
        node_id: "node-1".into(),
        last_sequence: 1,
        records,
    }
}

both! {
    async fn spend_is_counted_once_durably_and_reset_forgets_the_period(db: Db) {
        let store = db.open().await;
        let now = llmgw_controlplane::store::now_ms();
        let today = Period::Day.bounds(now);
        let yesterday = today.0 - DAY_MS + 1;
        let mut refused = spend_rec(4, now, 0.0);
        refused.status = 429;
        refused.limited_by = "key:rpm".into();
        let records = vec![
            spend_rec(1, now, 0.25),
            spend_rec(2, now, 0.000_000_6),
            spend_rec(3, yesterday, 1.0),
            refused,
        ];
        let first = ingest::store_batch(&store, batch(records.clone())).await.unwrap();
        assert_eq!(first.stored.len(), 4);
        // Shipped again (a lost ack): stored and counted nothing more.
        let again = ingest::store_batch(&store, batch(records)).await.unwrap();
        assert!(again.stored.is_empty());
        for (scope, name) in [(Scope::Key, "k1"), (Scope::Model, "m1"), (Scope::Provider, "p1")] {
            assert_eq!(store.spend(scope, name, today).await.unwrap(), 250_001, "{scope}");
            assert_eq!(store.spend(scope, name, (0, i64::MAX)).await.unwrap(), 1_250_001);
        }
        assert_eq!(store.spend(Scope::Key, "m1", today).await.unwrap(), 0);
        // The refusing limit is stored and read back.
        let got = query::get(&store, "0190a2b4-0000-7000-8000-000000000004").await.unwrap();
        assert_eq!(got.limited_by, "key:rpm");
        assert_eq!(query::get(&store, &spend_rec(1, 0, 0.0).id).await.unwrap().limited_by, "");

        // A restart forgets nothing.
        store.close().await;
        let store = db.open().await;
        assert_eq!(store.spend(Scope::Key, "k1", today).await.unwrap(), 250_001);

        // Reset forgets today's period, not yesterday's spend.
        let forgotten = store.reset_spend(Scope::Key, "k1", today, now).await.unwrap();
        assert_eq!(forgotten, 250_001);
        assert_eq!(store.spend(Scope::Key, "k1", today).await.unwrap(), 0);
        assert_eq!(store.spend(Scope::Key, "k1", (0, i64::MAX)).await.unwrap(), 1_000_000);
        assert_eq!(store.spend(Scope::Model, "m1", today).await.unwrap(), 250_001);
        // Spend after the reset counts from zero; a second reset forgets it.
        ingest::store_batch(&store, batch(vec![spend_rec(5, now, 0.1)])).await.unwrap();
        assert_eq!(store.spend(Scope::Key, "k1", today).await.unwrap(), 100_000);
        assert_eq!(store.reset_spend(Scope::Key, "k1", today, now).await.unwrap(), 100_000);
        assert_eq!(store.reset_spend(Scope::Key, "k1", today, now).await.unwrap(), 0);
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// The gRPC stream
// ---------------------------------------------------------------------------

/// A `Quota` service on 127.0.0.1:0 granting from `snapshot`.
struct Served {
    channel: Channel,
    feed: LogFeed,
    stop: watch::Sender<bool>,
    _snapshots: watch::Sender<Option<Arc<pb::Snapshot>>>,
}

async fn serve(store: &Store, snapshot: pb::Snapshot, lease_ms: u32) -> Served {
    let (snap_tx, snap_rx) = watch::channel(Some(Arc::new(snapshot)));
    let (stop, stop_rx) = watch::channel(false);
    let feed = LogFeed::new();
    let svc = QuotaService::new(
        store.clone(),
        snap_rx,
        feed.clone(),
        lease_ms,
        stop_rx.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut until = stop_rx;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QuotaServer::new(svc))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = until.wait_for(|s| *s).await;
                },
            ),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Served {
        channel,
        feed,
        stop,
        _snapshots: snap_tx,
    }
}

/// One data plane's stream: reports go in, assignments come out.
struct Stream {
    reports: mpsc::Sender<pb::QuotaReport>,
    answers: tonic::Streaming<pb::QuotaAssignments>,
}

impl Stream {
    async fn open(channel: &Channel) -> Stream {
        Stream::open_with(channel, tonic::Request::new(())).await
    }

    /// With the metadata of `auth`.
    async fn open_with(channel: &Channel, auth: tonic::Request<()>) -> Stream {
        let (reports, rx) = mpsc::channel(8);
        let (metadata, extensions, ()) = auth.into_parts();
        let req = tonic::Request::from_parts(
            metadata,
            extensions,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        );
        let answers = QuotaClient::new(channel.clone())
            .stream_quota(req)
            .await
            .unwrap()
            .into_inner();
        Stream { reports, answers }
    }

    async fn next(&mut self) -> pb::QuotaAssignments {
        tokio::time::timeout(WAIT, self.answers.message())
            .await
            .expect("no answer")
            .unwrap()
            .expect("stream ended")
    }

    async fn report(&mut self, node: &str, usage: Vec<pb::BucketUsage>) -> pb::QuotaAssignments {
        self.reports
            .send(pb::QuotaReport {
                node_id: node.into(),
                usage,
            })
            .await
            .unwrap();
        self.next().await
    }
}

fn usage(b: &BucketId, start: i64, wanted: u64, in_flight: u64) -> pb::BucketUsage {
    pb::BucketUsage {
        bucket: Some(pb::BucketId::from(b)),
        window_start_ms: start,
        used: 0,
        in_flight,
        wanted,
    }
}

/// A budget's report: what this data plane charged in the period.
fn charged(b: &BucketId, used: u64) -> pb::BucketUsage {
    pb::BucketUsage {
        used,
        ..usage(b, 0, 0, 0)
    }
}

fn snapshot() -> pb::Snapshot {
    pb::Snapshot {
        version: 3,
        models: vec![pb::SnapshotModel {
            name: "m1".into(),
            limits: Some(pb::Limits {
                rpm: Some(50),
                max_concurrency: Some(2),
                budget_micros: Some(1_000_000),
                budget_period: "day".into(),
                window_ms: 60_000,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

both! {
    async fn stream_grants_leases_and_pushes_budget_spend(db: Db) {
        let store = db.open().await;
        let served = serve(&store, snapshot(), 1_000).await;
        let rpm = BucketId::new(Scope::Model, "m1", Kind::Rpm);
        let conc = BucketId::new(Scope::Model, "m1", Kind::Concurrency);
        let budget = BucketId::new(Scope::Model, "m1", Kind::Budget);
        let unlimited = BucketId::new(Scope::Key, "nobody", Kind::Rpm);
        let now = llmgw_controlplane::store::now_ms();
        let window = now.div_euclid(60_000) * 60_000;

        // A first report without a node is refused.
        let mut nameless = Stream::open(&served.channel).await;
        nameless.reports.send(pb::QuotaReport::default()).await.unwrap();
        let e = tokio::time::timeout(WAIT, nameless.answers.message())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);

        let mut a = Stream::open(&served.channel).await;
        let got = a
            .report(
                "dp-a",
                vec![
                    usage(&rpm, window, 20, 0),
                    usage(&conc, 0, 2, 1),
                    usage(&budget, 0, 0, 0),
                    usage(&unlimited, window, 5, 0),
                ],
            )
            .await;
        assert_eq!((got.data_planes, got.lease_ms), (1, 1_000));
        // No limit, no assignment: the data plane stops tracking it.
        let by_kind = |g: &pb::QuotaAssignments, kind: &str| {
            g.assignments
                .iter()
                .find(|x| x.bucket.as_ref().unwrap().kind == kind)
                .cloned()
        };
        assert_eq!(got.assignments.len(), 3, "{got:?}");
        let r = by_kind(&got, "rpm").unwrap();
        assert!(
            (r.granted, r.limit, r.fleet_used, r.window_start_ms) == (20, 50, 20, window)
                // The minute turned between `now` and the report.
                || r.window_start_ms == window + 60_000,
            "{r:?}"
        );
        let c = by_kind(&got, "concurrency").unwrap();
        assert_eq!((c.granted, c.limit), (2, 2));
        let b = by_kind(&got, "budget").unwrap();
        assert_eq!((b.granted, b.fleet_used, b.expires_at_ms), (1_000_000, 0, 0));
        assert_eq!(b.window_start_ms, Period::Day.bounds(now).0);

        // The same report again: the lease is renewed, the unchanged budget
        // is not resent (its assignment would restart the data plane's count).
        let again = a
            .report("dp-a", vec![usage(&conc, 0, 2, 1), charged(&budget, 500)])
            .await;
        assert_eq!(again.assignments.len(), 1);
        assert_eq!(by_kind(&again, "concurrency").unwrap().granted, 2);
        // A data plane that lost its count (used went down) gets it again.
        let again = a.report("dp-a", vec![charged(&budget, 0)]).await;
        assert_eq!(by_kind(&again, "budget").unwrap().fleet_used, 0);

        // Spend stored by this control plane is pushed unasked.
        let stored = ingest::store_batch(&store, batch(vec![spend_rec(9, now, 0.3)]))
            .await
            .unwrap();
        served.feed.publish(stored.stored);
        let pushed = a.next().await;
        let b = by_kind(&pushed, "budget").unwrap();
        assert_eq!(b.fleet_used, 300_000);

        // A second data plane finds the slots leased; when the first
        // vanishes, its lease lapses and the slots come back.
        a.report("dp-a", vec![usage(&conc, 0, 2, 1)]).await;
        let mut b_stream = Stream::open(&served.channel).await;
        let got = b_stream.report("dp-b", vec![usage(&conc, 0, 2, 0)]).await;
        assert_eq!(got.data_planes, 2);
        assert_eq!(by_kind(&got, "concurrency").unwrap().granted, 0);
        drop(a);
        let returned = tokio::time::timeout(WAIT, async {
            loop {
                let got = b_stream.report("dp-b", vec![usage(&conc, 0, 2, 0)]).await;
                if let Some(c) = by_kind(&got, "concurrency").filter(|c| c.granted == 2) {
                    return c;
                }
                // The data plane's report cadence, shortened.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the vanished node's slots never came back");
        assert_eq!(returned.fleet_used, 2);
        let _ = served.stop.send(true);
        store.close().await;
    }
}

const ADMIN_TOKEN: &str = "quota-test-admin";
const DP_TOKEN: &str = "quota-test-dp";

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

both! {
    async fn the_real_control_plane_grants_configured_limits_and_pushes_shipped_spend(db: Db) {
        let dir = tempfile::tempdir().unwrap();
        let (running, channel) = start_control_plane(
            &db,
            dir.path(),
            ADMIN_TOKEN,
            DP_TOKEN,
            &["--quota-lease-ms", "700"],
        )
        .await;
        // Without the data-plane token, no stream.
        let report = || tokio_stream::iter([pb::QuotaReport { node_id: "dp".into(), usage: vec![] }]);
        for req in [tonic::Request::new(report()), authed(report(), ADMIN_TOKEN)] {
            let e = QuotaClient::new(channel.clone()).stream_quota(req).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }

        // A key with an rpm limit and a daily budget, set through the admin API.
        let mut admin = AdminClient::new(channel.clone());
        admin
            .create_api_key(authed(
                pb::CreateApiKeyRequest {
                    name: "team".into(),
                    limits: Some(pb::Limits {
                        rpm: Some(10),
                        budget_micros: Some(1_000_000),
                        budget_period: "day".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap();
        let rpm = BucketId::new(Scope::Key, "team", Kind::Rpm);
        let budget = BucketId::new(Scope::Key, "team", Kind::Budget);
        let now = llmgw_controlplane::store::now_ms();
        let window = now.div_euclid(60_000) * 60_000;

        let mut s = Stream::open_with(&channel, authed((), DP_TOKEN)).await;
        let got = s.report("dp-1", vec![usage(&rpm, window, 4, 0), charged(&budget, 0)]).await;
        assert_eq!((got.data_planes, got.lease_ms), (1, 700));
        let find = |g: &pb::QuotaAssignments, kind: &str| {
            g.assignments.iter().find(|x| x.bucket.as_ref().unwrap().kind == kind).cloned()
        };
        let r = find(&got, "rpm").unwrap();
        assert_eq!(r.limit, 10);
        // (Unless the minute turned between `now` and the report.)
        assert!(r.granted == 4 || r.window_start_ms != window, "{r:?}");
        assert_eq!(find(&got, "budget").unwrap().fleet_used, 0);
        let listed = admin
            .get_limits(authed(
                pb::GetLimitsRequest { scope: "key".into(), name: "team".into() },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner()
            .limits;
        let kinds: Vec<&str> = listed.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["rpm", "budget"]);

        // A shipped log with a cost reaches the stream as new spend, unasked.
        let mut rec = spend_rec(1, now, 0.2);
        rec.key = "team".into();
        let mut acks = LogsClient::new(channel.clone())
            .ship(authed(tokio_stream::iter([batch(vec![rec])]), DP_TOKEN))
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(WAIT, acks.message()).await.unwrap().unwrap().unwrap();
        let pushed = s.next().await;
        assert_eq!(find(&pushed, "budget").unwrap().fleet_used, 200_000);

        // Reset through the admin API: the next report carries the zero.
        let reset = admin
            .reset_spend(authed(
                pb::ResetSpendRequest { scope: "key".into(), name: "team".into() },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reset.forgotten_micros, 200_000);
        let got = s.report("dp-1", vec![charged(&budget, 200_000)]).await;
        assert_eq!(find(&got, "budget").unwrap().fleet_used, 0);
        drop(s);
        tokio::time::timeout(WAIT, running.shutdown()).await.unwrap().unwrap();
    }
}

fn admin_snapshot() -> pb::Snapshot {
    pb::Snapshot {
        version: 4,
        keys: vec![
            pb::SnapshotKey {
                name: "k1".into(),
                limits: Some(pb::Limits {
                    rpm: Some(100),
                    budget_micros: Some(1_000_000),
                    budget_period: "day".into(),
                    window_ms: 1_000,
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::SnapshotKey {
                name: "k2".into(),
                ..Default::default()
            },
        ],
        models: vec![pb::SnapshotModel {
            name: "m1".into(),
            limits: Some(pb::Limits {
                budget_micros: Some(5_000_000),
                budget_period: "total".into(),
                on_outage: "closed".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        settings: Some(pb::Settings {
            default_key_limits: Some(pb::Limits {
                tpm: Some(5_000),
                max_concurrency: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

both! {
    async fn get_limits_lists_fleet_use_and_reset_spend_forgets_it(db: Db) {
        use llmgw_controlplane::quota::usage::{limits_of, reset_spend_of};
        let store = db.open().await;
        let snap = admin_snapshot();
        let now = llmgw_controlplane::store::now_ms();
        // Some use: k1's rpm window, k2's lease, spend for k1 and m1.
        store
            .grant(
                &BucketId::new(Scope::Key, "k1", Kind::Rpm),
                (now.div_euclid(1_000) * 1_000, now.div_euclid(1_000) * 1_000 + 1_000),
                "dp",
                7,
                100,
            )
            .await
            .unwrap();
        store
            .lease(&BucketId::new(Scope::Key, "k2", Kind::Concurrency), "dp", 2, 3, now, 60_000)
            .await
            .unwrap();
        ingest::store_batch(&store, batch(vec![spend_rec(1, now, 0.5)])).await.unwrap();

        let all = limits_of(&store, Some(&snap), &pb::GetLimitsRequest::default())
            .await
            .unwrap()
            .limits;
        let rows: Vec<(&str, &str, &str, u64, bool)> = all
            .iter()
            .map(|l| (l.scope.as_str(), l.name.as_str(), l.kind.as_str(), l.limit, l.default))
            .collect();
        assert_eq!(
            rows,
            [
                ("key", "k1", "rpm", 100, false),
                ("key", "k1", "budget", 1_000_000, false),
                ("key", "k2", "tpm", 5_000, true),
                ("key", "k2", "concurrency", 3, true),
                ("model", "m1", "budget", 5_000_000, false),
            ]
        );
        let used: Vec<u64> = all.iter().map(|l| l.used).collect();
        // The rpm window may have turned since the grant: then nothing is
        // granted in the current one.
        assert!(used[0] == 7 || used[0] == 0, "{used:?}");
        assert_eq!(&used[1..], [500_000, 0, 2, 500_000]);
        let day = &all[1];
        assert_eq!(day.period, "day");
        let (start, end) = Period::Day.bounds(now);
        assert_eq!(day.window_start, llmgw_controlplane::logs::format_time(start));
        assert_eq!(day.window_end, llmgw_controlplane::logs::format_time(end));
        assert!(all[0].window_start.ends_with('Z') && !all[0].window_end.is_empty());
        // Concurrency and "total" budgets have no window.
        assert_eq!((all[3].window_start.as_str(), all[4].window_end.as_str()), ("", ""));
        assert_eq!((all[4].period.as_str(), all[4].on_outage.as_str()), ("total", "closed"));

        // Filters.
        let only = |scope: &str, name: &str| pb::GetLimitsRequest {
            scope: scope.into(),
            name: name.into(),
        };
        let k2 = limits_of(&store, Some(&snap), &only("key", "k2")).await.unwrap();
        assert_eq!(k2.limits.len(), 2);
        let models = limits_of(&store, Some(&snap), &only("model", "")).await.unwrap();
        assert_eq!(models.limits.len(), 1);
        assert_err!(limits_of(&store, Some(&snap), &only("team", "")).await, Invalid, "team");
        // Before the first snapshot there is nothing to list.
        assert!(limits_of(&store, None, &only("", "")).await.unwrap().limits.is_empty());

        // Reset forgets the period's spend of that name only.
        let reset = |scope: &str, name: &str| pb::ResetSpendRequest {
            scope: scope.into(),
            name: name.into(),
        };
        let r = reset_spend_of(&store, Some(&snap), &reset("key", "k1")).await.unwrap();
        assert_eq!(r.forgotten_micros, 500_000);
        let after = limits_of(&store, Some(&snap), &only("key", "k1")).await.unwrap();
        assert_eq!(after.limits[1].used, 0);
        let m1 = limits_of(&store, Some(&snap), &only("model", "m1")).await.unwrap();
        assert_eq!(m1.limits[0].used, 500_000);
        let r = reset_spend_of(&store, Some(&snap), &reset("model", "m1")).await.unwrap();
        assert_eq!(r.forgotten_micros, 500_000);
        assert_err!(reset_spend_of(&store, Some(&snap), &reset("key", "k2")).await, InUse, "no budget");
        assert_err!(reset_spend_of(&store, Some(&snap), &reset("key", "ghost")).await, NotFound, "ghost");
        assert_err!(reset_spend_of(&store, Some(&snap), &reset("key", "")).await, Invalid);
        store.close().await;
    }
}

both! {
    async fn a_batch_shipped_to_two_control_planes_at_once_is_counted_once(db: Db) {
        let stores = two_stores(&db).await;
        let now = llmgw_controlplane::store::now_ms();
        let records: Vec<pb::RequestLog> = (1..=40).map(|n| spend_rec(n, now, 0.01)).collect();
        // The same records, resent to both control planes, in four overlapping batches.
        let mut tasks = Vec::new();
        for i in 0..4usize {
            let store = stores[i % 2].clone();
            let part = records[i * 5..i * 5 + 25].to_vec();
            tasks.push(tokio::spawn(async move {
                ingest::store_batch(&store, batch(part)).await.unwrap().stored.len()
            }));
        }
        let mut stored = 0;
        for t in tasks {
            stored += t.await.unwrap();
        }
        assert_eq!(stored, 40);
        let today = Period::Day.bounds(now);
        for s in &stores {
            assert_eq!(s.spend(Scope::Provider, "p1", today).await.unwrap(), 400_000);
        }
        if db.kind == common::Kind::Postgres {
            stores[1].close().await;
        }
        stores[0].close().await;
    }
}
