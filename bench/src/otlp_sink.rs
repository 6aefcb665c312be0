//! `llmgw-bench otlp-sink`: the OTLP receiver of the tracing benchmark
//! (docs/benchmarks.md, "Tracing"). It answers every `POST /v1/traces`
//! (OTLP over HTTP/protobuf) with an empty `ExportTraceServiceResponse`,
//! which encodes to no bytes, and counts exports and bytes; `GET /stats`
//! reports them as JSON. It prints `listening on ADDR` once bound.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(clap::Parser, Clone)]
pub struct SinkArgs {
    /// Address to listen on, IP:PORT (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

#[derive(Default)]
struct Counts {
    exports: AtomicU64,
    bytes: AtomicU64,
}

pub async fn run(a: SinkArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&a.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    let counts = Arc::new(Counts::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                answer(Arc::clone(&counts), req)
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
        });
    }
}

async fn answer(
    counts: Arc<Counts>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        r
    };
    match (method, path.as_str()) {
        (Method::POST, "/v1/traces") => {
            let body = req.into_body().collect().await?.to_bytes();
            counts.exports.fetch_add(1, Ordering::Relaxed);
            counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            Ok(reply(
                StatusCode::OK,
                "application/x-protobuf",
                Bytes::new(),
            ))
        }
        (Method::GET, "/stats") => {
            let body = serde_json::json!({
                "exports": counts.exports.load(Ordering::Relaxed),
                "bytes": counts.bytes.load(Ordering::Relaxed),
            });
            Ok(reply(
                StatusCode::OK,
                "application/json",
                Bytes::from(body.to_string()),
            ))
        }
        _ => Ok(reply(StatusCode::NOT_FOUND, "text/plain", Bytes::new())),
    }
}
