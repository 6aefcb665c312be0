//! Request logs at volume: ingest throughput and the latency of the main
//! log queries, against a real control plane on a real database.
//!
//! Starts the control plane in process on 127.0.0.1:0, ships `--rows`
//! generated records over the data planes' Logs gRPC stream (batches of
//! `--batch`, `--streams` data planes at once, each waiting for its acks as
//! the shipper does), then times each admin query the dashboard and the CLI
//! run, `--repeat` times, over gRPC. Records are spread over the last
//! `--days` days in time order, as they arrive in production.
//!
//! `bench/log_volume.sh` runs it at 1 and 10 million rows on PostgreSQL
//! (`--days 30` spreads them over 30 days). Besides lists, it times stats
//! over the last 24 hours, 7 and 30 days by model, provider and key, and
//! reports each answer's `source` (which rollup cube and levels).
//!
//! ```text
//! cargo run --release -p llmgw-controlplane --example log_volume -- \
//!     --database-url postgres://... --rows 1000000
//! ```
#![allow(
    clippy::print_stdout,
    reason = "a measurement tool: results go to stdout"
)]

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use llmgw_controlplane::config::Args;
use llmgw_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::logs_client::LogsClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The control plane's own allocator (`src/main.rs`), so that the control
/// plane in this process allocates as the binary does. Under the system
/// allocator, `malloc` and `free` took a tenth of the process's samples.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_TOKEN: &str = "log-volume-admin-token";
const DP_TOKEN: &str = "log-volume-dataplane-token";
const ADMIN_BEARER: &str = "Bearer log-volume-admin-token";
const DP_BEARER: &str = "Bearer log-volume-dataplane-token";
const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

#[derive(Debug, Parser)]
struct Opts {
    /// postgres://... or sqlite:PATH (an empty database).
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Days the records are spread over, ending now.
    #[arg(long, default_value_t = 7)]
    days: i64,
    /// Spread the records over this many seconds ending now instead of
    /// `--days`: the density of live traffic (200,000 records over 10 s is
    /// 20,000 requests a second), where a batch falls within a second or
    /// two and adds to few rollup rows. Spread over days, a batch of 1,000
    /// spans most of an hour, and ingest writes a rollup row per record.
    #[arg(long)]
    span_seconds: Option<i64>,
    /// Records per batch (the data plane ships up to 1,000 by default).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Data planes shipping at once.
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Runs of each query; the median and the maximum are reported.
    #[arg(long, default_value_t = 15)]
    repeat: usize,
    /// Ship nothing: time the queries over what the database holds (from
    /// an earlier run that kept it), as of now.
    #[arg(long)]
    no_ingest: bool,
    /// Leave the indexes of finished days as ingest grew them. By default
    /// they are rebuilt after ingest, as the control plane does once a day
    /// is over (`logs/reindex.rs`), so that sizes and query times are those
    /// of a database that has run a while.
    #[arg(long)]
    no_rebuild: bool,
    /// The control plane's `--rollup-minute-retention-days`: minute rows
    /// of the rollups are written only from the start of the UTC day that
    /// many days before now on, as on a control plane that has run a while
    /// (the horizon is set, settled, before ingest). 0 keeps every minute.
    #[arg(long, default_value_t = 7)]
    rollup_minute_retention_days: u32,
    /// Dashboards open on the overview while ingest runs, each loading it
    /// every `--dashboard-every-ms`: the five stats calls of the
    /// overview's last 24 hours, at once, as the page makes them. 0: none.
    #[arg(long, default_value_t = 0)]
    dashboards: usize,
    /// How often each dashboard loads the overview (the page does every
    /// 30,000 ms); 0 loads it again as soon as it has it, the worst case.
    #[arg(long, default_value_t = 0)]
    dashboard_every_ms: u64,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Percent of the records that are a coding agent's turns: one of
    /// four agents' system prompt and tools (about 30 kB), then the
    /// conversation so far (its own turns of 1 to 3 kB), logged up to the
    /// data plane's default body cap (64 KiB), with an answer of about
    /// 1 kB. 0: the chat corpus alone.
    #[arg(long, default_value_t = 0)]
    agent_percent: u64,
}

/// `--agent-percent`, for [`record`].
static AGENT_PERCENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The data plane's default cap on a logged body.
const BODY_CAP: usize = 64 * 1024;

/// `len` bytes of words in no order from `seed`: text that compresses as
/// prose does (a repeated phrase would compress to nothing).
fn words(seed: u64, len: usize) -> String {
    const WORDS: [&str; 32] = [
        "read", "the", "file", "before", "you", "write", "run", "tests", "and", "check", "every",
        "change", "a", "small", "diff", "is", "better", "ask", "when", "path", "error", "plan",
        "agent", "tool", "call", "result", "line", "code", "fix", "review", "commit", "branch",
    ];
    let mut x = seed | 1;
    let mut text = String::with_capacity(len + 8);
    while text.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(WORDS[(x % 32) as usize]);
        text.push(if x.is_multiple_of(13) { '.' } else { ' ' });
    }
    text
}

/// A coding agent's request and answer for record `n` (`h` its hash): the
/// agent's prompt and tools, the turns of its conversation so far, cut at
/// [`BODY_CAP`] as the data plane logs it.
fn agent_turn(n: u64, h: u64, model: &str) -> (String, String) {
    static PREFIXES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..4u64)
            .map(|a| {
                let tools: Vec<String> = (0..40u64)
                    .map(|t| {
                        format!(
                            r#"{{"name":"tool_{t}","description":"{}","input_schema":{{"type":"object","properties":{{"path":{{"type":"string"}}}}}}}}"#,
                            words(a * 1000 + t + 7, 300)
                        )
                    })
                    .collect();
                format!(
                    r#""system":"{}","tools":[{}],"messages":["#,
                    words(a + 1, 12_000),
                    tools.join(",")
                )
            })
            .collect()
    });
    // Conversations of 24 turns; the records of one are consecutive, so
    // they are in the same batch or the next ones.
    let conv = n / 24;
    let turn = n % 24;
    let agent = usize::try_from(conv % 4).unwrap_or(0);
    let mut body = format!(r#"{{"model":"{model}",{}"#, PREFIXES[agent]);
    for t in 0..=turn {
        if body.len() >= BODY_CAP {
            break;
        }
        let len = 1000 + usize::try_from((conv * 31 + t * 17) % 2000).unwrap_or(0);
        body.push_str(&format!(
            r#"{{"role":"user","content":"{}"}},"#,
            words(conv * 1000 + t + 99, len)
        ));
    }
    body.push_str("]}");
    let mut cut = BODY_CAP.min(body.len());
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body.truncate(cut);
    let answer = format!(
        r#"{{"id":"msg_{n}","content":[{{"type":"text","text":"{}"}}]}}"#,
        words(h, 1000)
    );
    (body, answer)
}

/// One dashboard on the overview (`dashboard/src/pages/overview.tsx`,
/// the "Last 24 hours" window) loading it again and again until `stop`;
/// returns how long each load took, in microseconds.
async fn overview_loads(
    channel: Channel,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<u32>> {
    let admin = AdminClient::new(InterceptedService::new(channel, bearer(ADMIN_BEARER)))
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut loads = Vec::new();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        if !every.is_zero() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
        }
        let filter = pb::LogFilter {
            since_ms: llmgw_controlplane::store::now_ms() - DAY_MS,
            ..Default::default()
        };
        let call = |group: &str, bucket_s: u32| {
            let mut admin = admin.clone();
            let req = pb::GetStatsRequest {
                filter: Some(filter.clone()),
                group_by: group.to_string(),
                bucket_s,
            };
            async move { admin.get_stats(req).await }
        };
        let began = Instant::now();
        let (total, models, providers, keys, users) = tokio::join!(
            call("", 900),
            call("model", 0),
            call("provider", 0),
            call("key", 0),
            call("user", 0)
        );
        for answer in [total, models, providers, keys, users] {
            answer?;
        }
        loads.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(loads)
}

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

fn bearer(header: &'static str) -> Bearer {
    Bearer(tonic::metadata::MetadataValue::from_static(header))
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "claude-sonnet",
    "claude-haiku",
    "o3",
    "o4-mini",
    "llama-70b",
    "mistral-large",
    "gemini-pro",
    "embed-small",
];
const PROVIDERS: &[&str] = &["openai-a", "openai-b", "anthropic", "azure", "together"];

/// Record `n` of `total`, spread over `[start, end)`: deterministic, with
/// a plausible mix of models, providers, keys, statuses and sizes.
fn record(node: &str, n: u64, total: u64, start: i64, end: i64) -> pb::RequestLog {
    let span = u64::try_from(end - start).unwrap_or(1);
    let offset =
        i64::try_from(u128::from(n) * u128::from(span) / u128::from(total.max(1))).unwrap_or(0);
    // A cheap hash, so neighbours differ.
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    let pick = |m: u64| usize::try_from(h % m).unwrap_or(0);
    let status = match h % 100 {
        0..=1 => 500,
        2..=3 => 429,
        4 => 400,
        _ => 200,
    };
    let model = MODELS[pick(MODELS.len() as u64)];
    let provider = PROVIDERS[pick(7) % PROVIDERS.len()];
    let latency = 50 + (h >> 8) % 4000;
    let input = 20 + (h >> 16) % 3000;
    let output = if status == 200 {
        5 + (h >> 24) % 800
    } else {
        0
    };
    let agent = (h >> 40) % 100 < AGENT_PERCENT.load(std::sync::atomic::Ordering::Relaxed);
    let (request_body, response_body) = if agent {
        agent_turn(n, h, model)
    } else {
        (
            format!(
                r#"{{"model":"{model}","messages":[{{"role":"user","content":"Summarise ticket {n} in two sentences, please."}}],"max_tokens":256}}"#
            ),
            format!(
                r#"{{"id":"chatcmpl-{n}","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"The customer reports an issue; support replied with a fix."}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{input},"completion_tokens":{output}}}}}"#
            ),
        )
    };
    // UUIDv7, as the data plane makes them: time first, so ids arrive in
    // about the order of the primary key.
    let time_ms = start + offset;
    let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(time_ms / 1000).unwrap_or(0),
        u32::try_from((time_ms % 1000) * 1_000_000).unwrap_or(0),
    ))
    .to_string();
    pb::RequestLog {
        id,
        sequence: n + 1,
        node_id: node.to_string(),
        time_ms,
        key: format!("key-{:03}", (h >> 32) % 200),
        client_ip: format!("10.0.{}.{}", (h >> 40) % 256, (h >> 48) % 256),
        user_agent: "OpenAI/Python 1.57.0".into(),
        protocol: if model.starts_with("claude") {
            "anthropic"
        } else {
            "openai"
        }
        .into(),
        path: "/v1/chat/completions".into(),
        model: model.into(),
        provider: provider.into(),
        upstream_model: format!("{model}-2025"),
        status,
        stream: h.is_multiple_of(3),
        cancelled: h.is_multiple_of(211),
        latency_ms: latency,
        ttfb_ms: latency / 5,
        retries: u32::from(status == 429),
        input_tokens: input,
        output_tokens: output,
        usage_source: "reported".into(),
        cost: (input as f64 * 2.5 + output as f64 * 10.0) / 1e6,
        error: if status >= 400 {
            "upstream returned an error".into()
        } else {
            String::new()
        },
        snapshot_version: 42,
        request_headers: [
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), "[redacted]".to_string()),
        ]
        .into(),
        response_headers: [("content-type".to_string(), "application/json".to_string())].into(),
        request_body,
        response_body,
        attempts: vec![pb::Attempt {
            provider: provider.into(),
            upstream_model: format!("{model}-2025"),
            status,
            error: String::new(),
            latency_ms: latency.saturating_sub(2),
            start_offset_ms: 1,
        }],
        ..Default::default()
    }
}

/// Refusals in a row, with no ack between them, before `ship` gives up
/// (at 200 ms apart, about a minute).
const MAX_REFUSALS: u32 = 300;

/// Ships records `first..last` (of `total`) as one data plane would: when
/// the control plane refuses a batch for now (`Unavailable`: its
/// transaction was rolled back), the stream is opened again after a pause
/// and the records from the last ack on are sent again. (The ids here are
/// made afresh, so a batch stored whose ack was lost would be stored
/// twice; the count after ingest would say so.) Gives up after
/// [`MAX_REFUSALS`] refusals in a row with no ack between them. Returns
/// the acked sequence (the index of the next record to send) and the
/// number of refusals.
async fn ship(
    channel: Channel,
    node: String,
    range: std::ops::Range<u64>,
    total: u64,
    (start, end): (i64, i64),
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let mut client = LogsClient::new(InterceptedService::new(channel, bearer(DP_BEARER)))
        .max_encoding_message_size(64 * 1024 * 1024);
    let mut acked = range.start;
    let mut refusals = 0u64;
    let mut in_a_row = 0u32;
    while acked < range.end {
        let before = acked;
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::LogBatch>(4);
        let node2 = node.clone();
        let (from, to) = (acked, range.end);
        let producer = tokio::spawn(async move {
            let mut n = from;
            while n < to {
                let upto = (n + batch as u64).min(to);
                let records = (n..upto)
                    .map(|i| record(&node2, i, total, start, end))
                    .collect();
                let b = pb::LogBatch {
                    node_id: node2.clone(),
                    last_sequence: upto,
                    records,
                };
                if tx.send(b).await.is_err() {
                    break;
                }
                n = upto;
            }
        });
        let result = async {
            let mut acks = client
                .ship(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            while let Some(ack) = acks.message().await? {
                anyhow::ensure!(
                    ack.quarantined_ids.is_empty(),
                    "{node}: {} records quarantined",
                    ack.quarantined_ids.len()
                );
                acked = ack.acked_sequence;
            }
            Ok(())
        }
        .await;
        producer.abort();
        // A stream that ended early (the control plane shutting down) or
        // was refused goes on from the last ack below.
        match result {
            Ok(()) => {}
            Err(e)
                if e.downcast_ref::<tonic::Status>()
                    .is_some_and(|s| s.code() == tonic::Code::Unavailable) => {}
            Err(e) => return Err(e),
        }
        if acked < range.end {
            refusals += 1;
            in_a_row = if acked > before { 1 } else { in_a_row + 1 };
            anyhow::ensure!(
                in_a_row <= MAX_REFUSALS,
                "{node}: the control plane refused {MAX_REFUSALS} times in a row"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok((acked, refusals))
}

#[derive(Debug, serde::Serialize)]
struct QueryResult {
    query: String,
    median_ms: f64,
    max_ms: f64,
    rows: usize,
    /// Where a stats answer came from (`GetStatsResponse.source`).
    source: String,
}

async fn time_query<F, Fut>(name: &str, repeat: usize, mut f: F) -> anyhow::Result<QueryResult>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    // One untimed run warms the caches, as a dashboard's second look would.
    let rows = f().await?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(QueryResult {
        query: name.to_string(),
        median_ms: times[times.len() / 2],
        max_ms: times[times.len() - 1],
        rows,
        source: String::new(),
    })
}

/// The master key the example's databases are sealed with: the same in
/// every run, so that `--no-ingest` opens a database an earlier run left.
/// It seals nothing of value (the example stores no provider key).
const BENCH_MASTER_KEY: &str = "bGxtZ3ctbG9nLXZvbHVtZS1iZW5jaC1tYXN0ZXIta2U=";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    AGENT_PERCENT.store(
        opts.agent_percent.min(100),
        std::sync::atomic::Ordering::Relaxed,
    );
    let dir = tempfile::tempdir()?;
    let args = Args::try_parse_from([
        "llmgw-controlplane",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.path().display().to_string(),
        "--database-url",
        &opts.database_url,
        "--admin-token",
        ADMIN_TOKEN,
        "--dataplane-token",
        DP_TOKEN,
        "--master-key",
        BENCH_MASTER_KEY,
        "--log-retention-days",
        "0",
        // The example sets the minute rows' horizon itself, below: the
        // control plane's first retention pass, at start, would set it as
        // moved now, and compaction would then write every minute for the
        // hour it settles.
        "--rollup-minute-retention-days",
        "0",
    ])?;
    let running = llmgw_controlplane::start(args).await?;
    let channel = Channel::from_shared(format!("http://{}", running.local_addr()))?
        .connect()
        .await?;

    let end = llmgw_controlplane::store::now_ms();
    let start = match opts.span_seconds {
        Some(s) => end - s.max(1) * 1000,
        None => end - opts.days * DAY_MS,
    };
    let streams = opts.streams.max(1) as u64;
    let spread = match opts.span_seconds {
        Some(s) => format!("{} s", s.max(1)),
        None => format!("{} days", opts.days),
    };
    println!(
        "ingesting {} records over {spread} from {streams} data planes in batches of {}",
        opts.rows, opts.batch
    );
    if opts.rollup_minute_retention_days > 0 {
        // What the control plane's retention pass does at start and then
        // hourly (`logs/retention.rs`), done here before ingest and dated
        // an hour back, so that it has settled: compaction writes no
        // minute row behind it, which retention would delete.
        use llmgw_controlplane::logs::rollup;
        let days = i64::from(opts.rollup_minute_retention_days);
        rollup::advance_minute_horizon(
            running.store(),
            end - days * DAY_MS,
            end - rollup::MINUTE_HORIZON_SETTLE_MS,
        )
        .await?;
    }
    let (stop_dashboards, dashboards_stop) = tokio::sync::watch::channel(false);
    let dashboards: Vec<_> = (0..opts.dashboards)
        .map(|_| {
            tokio::spawn(overview_loads(
                channel.clone(),
                Duration::from_millis(opts.dashboard_every_ms),
                dashboards_stop.clone(),
            ))
        })
        .collect();
    let began = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..streams {
        if opts.no_ingest {
            break;
        }
        // Interleaved slices keep the whole run in time order.
        let per = opts.rows / streams;
        let range = s * per..if s + 1 == streams {
            opts.rows
        } else {
            (s + 1) * per
        };
        // Each data plane covers the whole span for its slice of records.
        tasks.push(tokio::spawn(ship(
            channel.clone(),
            format!("dp-{s}"),
            range,
            opts.rows,
            (start, end),
            opts.batch,
        )));
    }
    let mut refusals = 0u64;
    for t in tasks {
        refusals += t.await??.1;
    }
    let ingest_s = began.elapsed().as_secs_f64();
    let rate = opts.rows as f64 / ingest_s;
    println!(
        "ingest: {} rows in {ingest_s:.1} s = {rate:.0} rows/s",
        opts.rows
    );
    stop_dashboards.send_replace(true);
    let mut overview_us = Vec::new();
    for d in dashboards {
        overview_us.extend(d.await??);
    }
    overview_us.sort_unstable();
    // Nearest rank, as stats computes it.
    let overview_ms =
        |p: u32| llmgw_controlplane::logs::stats::percentile(&overview_us, p) / 1000.0;
    if opts.dashboards > 0 {
        println!(
            "overview (last 24 h, 5 stats calls) on {} dashboards, every {} ms, during \
             ingest: {} loads, median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            opts.dashboards,
            opts.dashboard_every_ms,
            overview_us.len(),
            overview_ms(50),
            overview_ms(95),
            overview_ms(100)
        );
    }
    if refusals > 0 {
        println!(
            "ingest: the control plane refused a batch for now {refusals} times; \
             each was sent again, as a data plane does"
        );
    }

    let store = running.store();
    // The rollup deltas compaction had not folded in yet when ingest
    // ended, and the time to fold them: ingest is only as fast as the
    // rate both keep up with.
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_rollup_deltas")
        .fetch_one(store.pool())
        .await?;
    let folding = Instant::now();
    llmgw_controlplane::logs::deltas::compact(store).await?;
    let fold_s = folding.elapsed().as_secs_f64();
    println!(
        "rollup deltas: {pending} pending at the end of ingest, folded in {fold_s:.1} s more \
         (ingest and compaction together: {:.0} rows/s)",
        opts.rows as f64 / (ingest_s + fold_s)
    );
    let mut rebuild_s = None;
    if !opts.no_rebuild {
        let rebuilding = Instant::now();
        let n = llmgw_controlplane::logs::reindex::rebuild_finished_days(
            store,
            llmgw_controlplane::store::now_ms(),
            usize::MAX,
            // Every finished day, whatever retention would drop soon.
            llmgw_controlplane::logs::retention::Days::FOREVER,
            llmgw_controlplane::logs::reindex::LOCK_TIMEOUT,
        )
        .await?
        .unwrap_or(0);
        let s = rebuilding.elapsed().as_secs_f64();
        if n > 0 {
            println!("indexes of finished days rebuilt: {n} partitions in {s:.1} s");
            rebuild_s = Some(s);
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM request_logs")
        .fetch_one(store.pool())
        .await?;
    anyhow::ensure!(
        opts.no_ingest || u64::try_from(stored)? == opts.rows,
        "{stored} rows stored for {} sent",
        opts.rows
    );
    if opts.no_ingest {
        println!("{stored} rows stored before");
    }
    // Fresh statistics, as autovacuum would have them by now.
    sqlx::query("ANALYZE").execute(store.pool()).await?;
    let size: Option<i64> = if opts.database_url.starts_with("postgres") {
        sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(store.pool())
            .await
            .ok()
    } else {
        None
    };
    let rollup_bytes: Option<i64> = if opts.database_url.starts_with("postgres") {
        sqlx::query_scalar("SELECT pg_total_relation_size('log_rollups')")
            .fetch_one(store.pool())
            .await
            .ok()
    } else {
        None
    };
    // Rows of each rollup cube (a database before cubes has none).
    let cube_rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.name, COUNT(r.cube) FROM log_rollup_cubes c \
         LEFT JOIN log_rollups r ON r.cube = c.cube GROUP BY c.name ORDER BY c.name",
    )
    .fetch_all(store.pool())
    .await
    .unwrap_or_default();
    let rollup_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_rollups")
        .fetch_one(store.pool())
        .await?;
    // And of each level (`bucket_s`: 60, 3600, 86400).
    let level_rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT bucket_s, COUNT(*) FROM log_rollups GROUP BY bucket_s ORDER BY 1")
            .fetch_all(store.pool())
            .await?;

    let mut admin = AdminClient::new(InterceptedService::new(
        channel.clone(),
        bearer(ADMIN_BEARER),
    ))
    .max_decoding_message_size(64 * 1024 * 1024);
    let now = end;
    let f = pb::LogFilter::default;
    let list = |filter: pb::LogFilter, order: &str| pb::ListLogsRequest {
        filter: Some(filter),
        limit: 50,
        order_by: order.to_string(),
        ..Default::default()
    };
    let stats = |filter: pb::LogFilter, group: &str, bucket_s: u32| pb::GetStatsRequest {
        filter: Some(filter),
        group_by: group.to_string(),
        bucket_s,
    };
    let last = |ms: i64| pb::LogFilter {
        since_ms: now - ms,
        ..f()
    };
    let lists: Vec<(&str, pb::ListLogsRequest)> = vec![
        ("newest 50", list(f(), "")),
        (
            "model, last 24 h, newest 50",
            list(
                pb::LogFilter {
                    model: "claude-haiku".into(),
                    ..last(DAY_MS)
                },
                "",
            ),
        ),
        (
            "key, any time, newest 50",
            list(
                pb::LogFilter {
                    key: "key-017".into(),
                    ..f()
                },
                "",
            ),
        ),
        (
            "errors (5xx), newest 50",
            list(
                pb::LogFilter {
                    status_min: 500,
                    status_max: 599,
                    ..f()
                },
                "",
            ),
        ),
        ("slowest 50, last hour", list(last(HOUR_MS), "latency")),
    ];
    let mut results = Vec::new();
    for (name, req) in lists {
        let r = time_query(name, opts.repeat, || {
            let mut admin = admin.clone();
            let req = req.clone();
            async move { Ok(admin.list_logs(req).await?.into_inner().records.len()) }
        })
        .await?;
        results.push(r);
    }
    // The second page, as the dashboard fetches it.
    let first = admin.list_logs(list(f(), "")).await?.into_inner();
    let token = first.next_page_token.clone();
    results.push(
        time_query("next page (cursor)", opts.repeat, || {
            let mut admin = admin.clone();
            let token = token.clone();
            async move {
                let req = pb::ListLogsRequest {
                    limit: 50,
                    page_token: token,
                    ..Default::default()
                };
                Ok(admin.list_logs(req).await?.into_inner().records.len())
            }
        })
        .await?,
    );
    let some_id = first
        .records
        .get(7)
        .map(|r| r.id.clone())
        .context("no records listed")?;
    results.push(
        time_query("one record with attempts", opts.repeat, || {
            let mut admin = admin.clone();
            let id = some_id.clone();
            async move {
                let r = admin.get_log(pb::GetLogRequest { id }).await?.into_inner();
                Ok(r.attempts.len())
            }
        })
        .await?,
    );
    // The dashboard's overview and the bar of issue #18: 24 hours, 7 and
    // 30 days, by model, provider and key (a range longer than the corpus
    // covers what there is).
    let mut stat_queries: Vec<(String, pb::GetStatsRequest)> = vec![
        (
            "stats: last hour, totals".into(),
            stats(last(HOUR_MS), "", 0),
        ),
        (
            "stats: last 24 h by model, hourly".into(),
            stats(last(DAY_MS), "model", 3600),
        ),
    ];
    for (range, ms) in [
        ("24 h", DAY_MS),
        ("7 days", 7 * DAY_MS),
        ("30 days", 30 * DAY_MS),
    ] {
        for group in ["model", "provider", "key"] {
            stat_queries.push((
                format!("stats: last {range} by {group}"),
                stats(last(ms), group, 0),
            ));
        }
    }
    for (name, req) in stat_queries {
        let source = admin.get_stats(req.clone()).await?.into_inner().source;
        let mut r = time_query(&name, opts.repeat.min(5), || {
            let mut admin = admin.clone();
            let req = req.clone();
            async move { Ok(admin.get_stats(req).await?.into_inner().groups.len()) }
        })
        .await?;
        r.source = source;
        results.push(r);
    }

    println!();
    println!("| query | median ms | max ms | rows | source |");
    println!("|---|---:|---:|---:|---|");
    for r in &results {
        println!(
            "| {} | {:.1} | {:.1} | {} | {} |",
            r.query, r.median_ms, r.max_ms, r.rows, r.source
        );
    }
    if let Some(bytes) = size {
        println!(
            "database size: {:.2} GiB",
            bytes as f64 / (1024.0 * 1024.0 * 1024.0)
        );
    }
    println!(
        "rollups: {rollup_rows} rows{}{}",
        rollup_bytes.map_or(String::new(), |b| format!(
            ", {:.0} MiB",
            b as f64 / (1024.0 * 1024.0)
        )),
        if cube_rows.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                cube_rows
                    .iter()
                    .map(|(c, n)| format!("{c}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    println!(
        "rollup rows by level (bucket_s: rows): {}",
        level_rows
            .iter()
            .map(|(b, n)| format!("{b}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(path) = &opts.json {
        let doc = serde_json::json!({
            "rows": opts.rows,
            "days": opts.days,
            "batch": opts.batch,
            "streams": opts.streams,
            "ingest_seconds": ingest_s,
            "ingest_rows_per_second": rate,
            "ingest_refusals": refusals,
            "rebuild_seconds": rebuild_s,
            "database_bytes": size,
            "rollup_rows": rollup_rows,
            "rollup_bytes": rollup_bytes,
            "rollup_rows_by_cube": cube_rows,
            "rollup_rows_by_level": level_rows,
            "rollup_minute_retention_days": opts.rollup_minute_retention_days,
            "queries": results,
            "dashboards": opts.dashboards,
            "dashboard_every_ms": opts.dashboard_every_ms,
            "overview_loads_during_ingest": overview_us.len(),
            "overview_ms_median": overview_ms(50),
            "overview_ms_p95": overview_ms(95),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .context("shutdown hung")??;
    Ok(())
}
