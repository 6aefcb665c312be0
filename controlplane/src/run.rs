//! Sending one request through a data plane as a client key, for replay
//! and the playground (#17), and streaming its answer back as `RunChunk`s:
//! the head (status, request id, route headers), the body's bytes as they
//! arrive, then the end (TTFB, latency, and the error when it broke off).
//!
//! The control plane holds no client key's secret, so the request carries
//! a single-use grant (`LiveHub::grant`) that a data plane whose live
//! stream this control plane holds has acknowledged; the data plane
//! authenticates it as the named key and logs the request with the grant's
//! origin. The request goes to the data plane's proxy over the hyper
//! client of the control plane's outbound calls (`upstream_call`): a
//! connect timeout and an idle timeout between chunks, never a total one
//! (streams can be long). When the gRPC client goes away, the request is
//! dropped, which the data plane logs as a client cancel.
//!
//! The token is sent in a header marked sensitive and appears in no error,
//! log line or `Debug` output.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use llmgw_core::error_chain;
use llmgw_proto::v1 as pb;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::live::{Granted, LiveHub};

/// The longest wait for the answer's head, and between two of its chunks.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The answer's headers a `RunHead` carries: the content type and the
/// gateway's own (`x-llmgw-*`: request id, route, limits).
fn shown_header(name: &str) -> bool {
    name == "content-type" || name.starts_with("x-llmgw-")
}

/// A request to send: the client path (with its query), the body, the
/// protocol headers to pass on, and who it is sent as.
#[derive(Clone, PartialEq, Eq)]
pub struct Run {
    pub path: String,
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    /// The client key's name.
    pub key: String,
    /// "replay" or "playground".
    pub origin: &'static str,
    pub replay_of: String,
    /// The data plane to send it through; any connected one when empty.
    pub node_id: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("path", &self.path)
            .field("body_bytes", &self.body.len())
            .field("headers", &self.headers)
            .field("key", &self.key)
            .field("origin", &self.origin)
            .field("replay_of", &self.replay_of)
            .field("node_id", &self.node_id)
            .finish()
    }
}

pub type RunStream = Pin<Box<dyn Stream<Item = Result<pb::RunChunk, Status>> + Send>>;

/// Gets a grant for `run` from a data plane (errors: UNAVAILABLE, none
/// connected or none acknowledged), then sends the request and streams the
/// answer. A failure to reach the data plane ends the stream with
/// UNAVAILABLE; a broken answer ends it with `RunEnd.error`.
pub async fn start(hub: &LiveHub, run: Run) -> Result<RunStream, Status> {
    // What can be refused is refused before a grant is used up on it.
    check(&run)?;
    let granted = hub
        .grant(&run.node_id, &run.key, run.origin, &run.replay_of)
        .await?;
    let request = build(&granted, &run)?;
    let client = crate::upstream_call::client()
        .map_err(|e| Status::internal(format!("cannot set up the HTTP client: {e}")))?;
    let (tx, rx) = mpsc::channel(16);
    let head = pb::RunHead {
        node_id: granted.node_id.clone(),
        path: run.path.clone(),
        key: run.key.clone(),
        ..Default::default()
    };
    let shown = format!("{}{}", granted.base_url, run.path);
    drop(granted);
    tokio::spawn(async move {
        tokio::select! {
            () = relay(client, request, head, shown, &tx) => {}
            // The admin went away: dropping the request closes its
            // connection, which the data plane logs as a client cancel.
            () = tx.closed() => tracing::info!("replay or playground client left; request dropped"),
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// The path and headers of `run` make a valid HTTP request.
fn check(run: &Run) -> Result<(), Status> {
    run.path.parse::<http::uri::PathAndQuery>().map_err(|e| {
        Status::invalid_argument(format!("'{}' is not a valid path: {e}", run.path))
    })?;
    for (name, value) in &run.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err()
        {
            return Err(Status::invalid_argument(format!(
                "header '{name}' is not a valid HTTP header"
            )));
        }
    }
    Ok(())
}

/// The HTTP request to the data plane, the token in a sensitive header.
fn build(granted: &Granted, run: &Run) -> Result<Request<Full<Bytes>>, Status> {
    let url = format!("{}{}", granted.base_url, run.path);
    let uri: Uri = url.parse().map_err(|e| {
        Status::invalid_argument(format!("'{}' is not a valid path: {e}", run.path))
    })?;
    let mut request = Request::new(Full::new(run.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &run.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(Status::invalid_argument(format!(
                "header '{name}' is not a valid HTTP header"
            )));
        };
        headers.insert(n, v);
    }
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", granted.token.expose_secret()))
        .map_err(|_| Status::internal("the grant token is not a valid header value"))?;
    auth.set_sensitive(true);
    headers.insert(AUTHORIZATION, auth);
    Ok(request)
}

/// The control plane's outbound client (direct: a data plane is reached
/// without a provider's proxy).
type Client = crate::upstream_call::HttpsClient;
type Tx = mpsc::Sender<Result<pb::RunChunk, Status>>;

fn chunk(part: pb::run_chunk::Part) -> Result<pb::RunChunk, Status> {
    Ok(pb::RunChunk { part: Some(part) })
}

/// Sends the request and passes its answer on, until it ends or `tx`'s
/// receiver is gone.
async fn relay(
    client: Client,
    request: Request<Full<Bytes>>,
    mut head: pb::RunHead,
    shown: String,
    tx: &Tx,
) {
    let sent = Instant::now();
    let response = match tokio::time::timeout(IDLE_TIMEOUT, client.request(request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let what = if e.is_connect() {
                "cannot connect to data plane"
            } else {
                "no answer from data plane"
            };
            let _ = tx
                .send(Err(Status::unavailable(format!(
                    "{what} {} at POST {shown}: {}",
                    head.node_id,
                    error_chain(&e)
                ))))
                .await;
            return;
        }
        Err(_) => {
            let _ = tx
                .send(Err(Status::unavailable(format!(
                    "data plane {} did not answer POST {shown} within {} s",
                    head.node_id,
                    IDLE_TIMEOUT.as_secs()
                ))))
                .await;
            return;
        }
    };
    let ttfb_ms = elapsed_ms(sent);
    head.status = u32::from(response.status().as_u16());
    let mut headers = HashMap::new();
    for (name, value) in response.headers() {
        if shown_header(name.as_str()) {
            if let Ok(v) = value.to_str() {
                headers.insert(name.as_str().to_string(), v.to_string());
            }
        }
    }
    head.request_id = headers
        .get(crate::live::REQUEST_ID_HEADER)
        .cloned()
        .unwrap_or_default();
    head.headers = headers;
    tracing::info!(
        status = head.status,
        request_id = %head.request_id,
        node_id = %head.node_id,
        key = %head.key,
        path = %head.path,
        "replay or playground request answered"
    );
    if tx
        .send(chunk(pb::run_chunk::Part::Head(head)))
        .await
        .is_err()
    {
        return;
    }
    let mut body = response.into_body();
    let error = loop {
        match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty()
                        && tx
                            .send(chunk(pb::run_chunk::Part::Data(data.to_vec())))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            }
            Ok(None) => break String::new(),
            Ok(Some(Err(e))) => break format!("the answer broke off: {}", error_chain(&e)),
            Err(_) => {
                break format!(
                    "the answer stalled: nothing for {} s",
                    IDLE_TIMEOUT.as_secs()
                )
            }
        }
    };
    let end = pb::RunEnd {
        ttfb_ms,
        latency_ms: elapsed_ms(sent),
        error,
    };
    let _ = tx.send(chunk(pb::run_chunk::Part::End(end))).await;
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_shows_only_route_headers() {
        assert!(shown_header("content-type"));
        assert!(shown_header("x-llmgw-request-id"));
        assert!(!shown_header("set-cookie"));
        assert!(!shown_header("authorization"));
    }

    #[test]
    fn the_token_is_sent_sensitive_and_never_shown() {
        let granted = Granted {
            token: "llmgw-grant-secret-token".to_string().into(),
            node_id: "dp".into(),
            base_url: "http://127.0.0.1:1".into(),
        };
        let run = Run {
            path: "/v1/chat/completions".into(),
            body: Bytes::from_static(b"{}"),
            headers: vec![("openai-beta".into(), "x".into())],
            key: "k".into(),
            origin: "playground",
            replay_of: String::new(),
            node_id: String::new(),
        };
        let req = build(&granted, &run).unwrap();
        let auth = &req.headers()[AUTHORIZATION];
        assert!(auth.is_sensitive());
        assert_eq!(auth, "Bearer llmgw-grant-secret-token");
        assert_eq!(req.uri(), "http://127.0.0.1:1/v1/chat/completions");
        assert_eq!(req.headers()["openai-beta"], "x");
        for shown in [
            format!("{granted:?}"),
            format!("{run:?}"),
            format!("{req:?}"),
        ] {
            assert!(!shown.contains("secret-token"), "{shown}");
        }
    }
}
