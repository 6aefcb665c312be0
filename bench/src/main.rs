//! `llmgw-bench`: the streaming client of the benchmark harness
//! (`bench/run.sh`, scenarios S4 and S5).
//!
//! `llmgw-bench sse` opens N concurrent streams (one HTTP/1.1 connection
//! each) against a base URL (the mock directly, nginx, or the gateway) in
//! the client API `--api` names (OpenAI chat, `/v1/chat/completions`, or
//! Anthropic messages, `/v1/messages`), asks the mock for `--chunks`
//! content chunks `--chunk-delay-ms` apart through `x-mock-*` headers, and
//! times every body frame as it arrives. It prints one JSON object on
//! stdout:
//!
//! - `ttff_ms`: time from sending the request to the first frame holding a
//!   `data:` event (p50, p99, max over all streams);
//! - `ttfc_ms`: time from sending the request to the first content event
//!   (the first text chunk: the same mock delay in every protocol, where
//!   the first `data:` event is not: an Anthropic stream opens with
//!   `message_start` before any text);
//! - `gap_ms`: time between consecutive content events of a stream;
//! - `coalesced`: frames that carried more than one content event (each
//!   chunk the upstream sent should arrive as its own frame);
//!   `multi_event_frames` counts frames with more than one event of any
//!   kind (the closing events are sent back to back, so a proxy may join
//!   those legitimately);
//! - `late`: content events that came more than `--late-ms` after the
//!   chunk delay following the previous one;
//! - `missing`: content events expected and not received;
//! - `max_open`: the most streams open at one time.
//!
//! It never asserts anything: the harness compares the three columns.
//!
//! `llmgw-bench proxy` is a diagnostic floor for S3: a reverse proxy built
//! from the same hyper server and pooled hyper client the data plane uses
//! (same builders, same runtime), forwarding every request to one upstream
//! and streaming both bodies, with nothing else: no auth, routing, body
//! parsing, usage or logging. Measured beside nginx and llmgw, it shows
//! how much of llmgw's cost per request is the Rust HTTP stack itself.
//!
//! `llmgw-bench codec` runs the translation codecs of `llmgw-protocols`
//! alone, without HTTP, on upstream answers recorded from the mock: a
//! target for callgrind while working on their cost (`codec.rs`).
//!
//! Scenario S8, long-context bodies (`longctx.rs`, `s8.rs`):
//! `llmgw-bench body --bytes N` prints a realistic chat request body of
//! exactly N bytes (the same bytes every time), `llmgw-bench bodies` keeps
//! `--in-flight` such requests going against one server and prints bytes
//! per second, and `llmgw-bench s8` runs the whole scenario against direct,
//! nginx and llmgw (`bench/run.sh --scenarios S8` calls it).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

mod codec;
mod longctx;
mod otlp_sink;
mod s8;

// The data plane's allocator, so that `proxy` is its floor.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "llmgw-bench", about = "Benchmark helpers for llmgw")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open concurrent SSE streams and time every frame.
    Sse(SseArgs),
    /// A bare hyper reverse proxy to one upstream (a floor for S3).
    Proxy(ProxyArgs),
    /// The translation codecs alone, on recorded upstream answers: a
    /// target for callgrind (see `codec.rs`).
    Codec(codec::CodecArgs),
    /// Print one long-context request body (S8) of exactly --bytes bytes.
    Body(BodyArgs),
    /// Keep long-context requests in flight against one server (S8's load).
    Bodies(longctx::LoadArgs),
    /// Scenario S8: long-context bodies through direct, nginx and llmgw.
    S8(s8::S8Args),
    /// An OTLP/HTTP receiver that accepts and counts spans (the tracing
    /// benchmark's collector).
    OtlpSink(otlp_sink::SinkArgs),
}

#[derive(Parser, Clone)]
struct BodyArgs {
    /// Size of the body in bytes.
    #[arg(long, default_value_t = 512 * 1024)]
    bytes: usize,
    /// `"stream": true`.
    #[arg(long)]
    stream: bool,
    /// Model name in the body.
    #[arg(long, default_value = "bench")]
    model: String,
}

#[derive(Parser, Clone)]
struct ProxyArgs {
    /// Address to listen on, IP:PORT.
    #[arg(long)]
    listen: String,
    /// Upstream address, IP:PORT (plain HTTP).
    #[arg(long)]
    upstream: String,
}

/// The client API a stream is requested in.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// OpenAI Chat Completions: `POST /v1/chat/completions`, a bearer key.
    Chat,
    /// Anthropic Messages: `POST /v1/messages`, an `x-api-key` key,
    /// `max_tokens` and `anthropic-version`.
    Messages,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Messages => "/v1/messages",
        }
    }
}

#[derive(Parser, Clone)]
struct SseArgs {
    /// Address of the server, IP:PORT.
    #[arg(long)]
    addr: String,
    /// Client API: the request's path, body and key header.
    #[arg(long, value_enum, default_value = "chat")]
    api: Api,
    /// Request path (default: the API's).
    #[arg(long)]
    path: Option<String>,
    /// Client key (the mock and nginx ignore it): a bearer token for chat,
    /// `x-api-key` for messages.
    #[arg(long, default_value = "")]
    key: String,
    /// Model name in the request body.
    #[arg(long, default_value = "bench")]
    model: String,
    /// Streams open at once.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Times to open `streams` streams, one wave after the other.
    #[arg(long, default_value_t = 1)]
    waves: usize,
    /// Content chunks per stream (x-mock-chunks).
    #[arg(long, default_value_t = 64)]
    chunks: u32,
    /// Delay before each chunk (x-mock-chunk-delay-ms).
    #[arg(long, default_value_t = 20)]
    chunk_delay_ms: u64,
    /// A content event later than the chunk delay plus this counts as late.
    #[arg(long, default_value_t = 10)]
    late_ms: u64,
    /// At most this many connections being opened at once.
    #[arg(long, default_value_t = 64)]
    connect_parallelism: usize,
}

#[derive(Default)]
struct StreamResult {
    ttff: Option<Duration>,
    ttfc: Option<Duration>,
    gaps: Vec<Duration>,
    content_events: usize,
    coalesced: usize,
    multi_event_frames: usize,
    late: usize,
    error: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Sse(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(sse(a)),
        // The data plane's runtime: `#[tokio::main]`'s multi-thread one.
        Cmd::Codec(a) => codec::run(&a),
        Cmd::Body(a) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&longctx::body(a.bytes, a.stream, &a.model))?;
            Ok(())
        }
        Cmd::Bodies(a) => {
            let r = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(longctx::load(&a))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", r.to_json())?;
            Ok(())
        }
        Cmd::S8(a) => s8::run(&a),
        Cmd::OtlpSink(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(otlp_sink::run(a)),
        Cmd::Proxy(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(proxy(a)),
    }
}

type ProxyClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    hyper::body::Incoming,
>;

/// The data plane's server and client setup (`dataplane/src/server.rs`,
/// `proxy/upstream.rs`) without TLS, which a plain-HTTP upstream skips.
async fn proxy(a: ProxyArgs) -> Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use hyper_util::server::conn::auto;

    let listener = tokio::net::TcpListener::bind(&a.listen).await?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    let client: ProxyClient = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(http);
    let upstream: http::uri::Authority = a.upstream.parse().context("--upstream")?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait for some to close, as the data
            // plane does.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        stream.set_nodelay(true)?;
        let (client, upstream, builder) = (client.clone(), upstream.clone(), Arc::clone(&builder));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                forward(client.clone(), upstream.clone(), req)
            });
            // A client closing its connection is the end of a run.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: ProxyClient,
    upstream: http::uri::Authority,
    req: Request<hyper::body::Incoming>,
) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
    let (mut parts, body) = req.into_parts();
    let mut uri = http::uri::Parts::from(std::mem::take(&mut parts.uri));
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(upstream);
    // Fails only for forms a benchmark never sends (`OPTIONS *`); the
    // client then refuses the request.
    if let Ok(u) = http::Uri::from_parts(uri) {
        parts.uri = u;
    }
    parts.headers.remove(http::header::HOST);
    client.request(Request::from_parts(parts, body)).await
}

async fn sse(a: SseArgs) -> Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(tokio::sync::Semaphore::new(a.connect_parallelism.max(1)));
    let mut request = serde_json::json!({
        "model": a.model,
        "stream": true,
        "messages": [{"role": "user", "content": "Stream me sixty-four chunks, please."}],
    });
    if a.api == Api::Messages {
        // Anthropic requires it; above the chunks, so the mock cuts nothing.
        request["max_tokens"] = serde_json::json!(u64::from(a.chunks).max(1) * 16);
    }
    let body = Bytes::from(request.to_string());
    let started = Instant::now();
    let mut results = Vec::with_capacity(a.streams * a.waves);
    for _ in 0..a.waves {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..a.streams {
            let (a, body) = (a.clone(), body.clone());
            let (open, max_open, connecting) = (open.clone(), max_open.clone(), connecting.clone());
            tasks.spawn(async move {
                let permit = connecting.acquire_owned().await;
                let r = one_stream(&a, body, permit.ok(), &open, &max_open).await;
                r.unwrap_or_else(|e| StreamResult {
                    error: Some(format!("{e:#}")),
                    ..StreamResult::default()
                })
            });
        }
        while let Some(r) = tasks.join_next().await {
            results.push(r.context("stream task")?);
        }
    }
    let elapsed = started.elapsed();

    let mut ttff: Vec<f64> = results.iter().filter_map(|r| r.ttff).map(ms).collect();
    let mut ttfc: Vec<f64> = results.iter().filter_map(|r| r.ttfc).map(ms).collect();
    let mut gaps: Vec<f64> = results
        .iter()
        .flat_map(|r| r.gaps.iter())
        .map(|d| ms(*d))
        .collect();
    let errors: Vec<&str> = results.iter().filter_map(|r| r.error.as_deref()).collect();
    let expected = results.len() * a.chunks as usize;
    let received: usize = results.iter().map(|r| r.content_events).sum();
    let out = serde_json::json!({
        "streams": results.len(),
        "errors": errors.len(),
        "first_error": errors.first(),
        "ttff_ms": summary(&mut ttff),
        "ttfc_ms": summary(&mut ttfc),
        "gap_ms": summary(&mut gaps),
        "content_events": received,
        "missing": expected.saturating_sub(received),
        "coalesced": results.iter().map(|r| r.coalesced).sum::<usize>(),
        "multi_event_frames": results.iter().map(|r| r.multi_event_frames).sum::<usize>(),
        "late": results.iter().map(|r| r.late).sum::<usize>(),
        "max_open": max_open.load(Ordering::Relaxed),
        "elapsed_s": elapsed.as_secs_f64(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(v: &mut [f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({"n": v.len(), "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)})
}

/// Decrements the open-stream count when the stream ends, however it ends.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn one_stream(
    a: &SseArgs,
    body: Bytes,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    open: &AtomicUsize,
    max_open: &AtomicUsize,
) -> Result<StreamResult> {
    let tcp = TcpStream::connect(&a.addr)
        .await
        .with_context(|| format!("connect {}", a.addr))?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = a.path.as_deref().unwrap_or(a.api.path());
    let mut req = Request::post(path)
        .header(http::header::HOST, a.addr.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-mock-chunks", a.chunks.to_string())
        .header("x-mock-chunk-delay-ms", a.chunk_delay_ms.to_string());
    if a.api == Api::Messages {
        req = req.header("anthropic-version", "2023-06-01");
    }
    if !a.key.is_empty() {
        req = match a.api {
            Api::Chat => req.header(http::header::AUTHORIZATION, format!("Bearer {}", a.key)),
            Api::Messages => req.header("x-api-key", a.key.as_str()),
        };
    }
    let req = req.body(Full::new(body))?;
    let sent = Instant::now();
    let resp = sender.send_request(req).await?;
    drop(permit);
    let n = open.fetch_add(1, Ordering::Relaxed) + 1;
    max_open.fetch_max(n, Ordering::Relaxed);
    let _guard = OpenGuard(open);
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let text = resp.into_body().collect().await?.to_bytes();
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&text));
    }
    let delay = Duration::from_millis(a.chunk_delay_ms);
    let late_after = delay + Duration::from_millis(a.late_ms);
    let mut body = resp.into_body();
    let mut r = StreamResult::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut last_content: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        pending.extend_from_slice(&data);
        let mut events = 0usize;
        let mut content = 0usize;
        while let Some(end) = find_blank_line(&pending) {
            let event: Vec<u8> = pending.drain(..end).collect();
            events += 1;
            let text = String::from_utf8_lossy(&event);
            if !text.contains("data:") {
                continue;
            }
            r.ttff.get_or_insert(now - sent);
            if is_content_chunk(&text) {
                r.ttfc.get_or_insert(now - sent);
                r.content_events += 1;
                content += 1;
                if let Some(prev) = last_content {
                    let gap = now - prev;
                    if gap > late_after {
                        r.late += 1;
                    }
                    r.gaps.push(gap);
                }
                last_content = Some(now);
            }
        }
        if content > 1 {
            r.coalesced += 1;
        }
        if events > 1 {
            r.multi_event_frames += 1;
        }
    }
    Ok(r)
}

/// Whether an event carries one of the mock's content chunks (`"tok{i} "`),
/// as `"content":"tok…` (chat) or `"text":"tok…` (an Anthropic
/// `text_delta`) however the proxy spaced the JSON (LiteLLM re-serialises
/// chunks with a space after the colon).
fn is_content_chunk(event: &str) -> bool {
    ["\"content\"", "\"text\""].iter().any(|key| {
        let mut rest = event;
        while let Some(at) = rest.find(key) {
            rest = &rest[at + key.len()..];
            let value = rest.trim_start_matches([' ', ':']);
            if value.starts_with("\"tok") {
                return true;
            }
        }
        false
    })
}

/// Position just past the first blank line (`\n\n`) in `b`.
fn find_blank_line(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}
