//! The data plane's HTTP servers. Client connections go through [`route`],
//! which hands the LLM API paths to the proxy and answers /healthz and
//! /readyz itself; the ops listener ([`Role::Ops`]) answers /healthz,
//! /readyz and /metrics on connections of its own, so probes and scrapes
//! get through while the client port is saturated, and /metrics (model and
//! provider names) is not on the client port at all.
//!
//! Every connection passes an [`llmgw_listener::Gate`] (caps on open and
//! on unauthenticated connections), idles out through
//! [`llmgw_listener::GuardedIo`], and reads its request body under
//! [`llmgw_listener::TimedBody`]. Shutdown is graceful: stop accepting,
//! then let open connections finish within a grace period.
//!
//! Apart from closing idle connections (the idle timeout, and those still
//! idle a moment into a drain), an HTTP/1.1 connection is closed after a
//! response only when that response says `Connection: close` (RFC 9112
//! §9.6; see [`answer`]): when draining, after a body cut for its slowness, near the idle deadline
//! of a connection that has not sent a valid key (which its requests do not
//! move), and when a handler answered without reading the request body to
//! its end (a wrong key, an unknown path, a body over the size limit) and
//! the rest is too large to read, of unknown length, or held back by
//! `Expect: 100-continue`. A small unread rest is read after the answer
//! ([`settle_unread`]), so the connection carries the next request (only a
//! client that then stops sending the body it promised loses it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use llmgw_listener::{Gate, GuardedIo, TimedBody, TrackedBody, Unread};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::peer::Peer;
use crate::table::TableHandle;

/// A client request's body: read under the body timeout and minimum rate,
/// and given back to the server if its handler drops it before the end.
pub type RequestBody = Unread<TimedBody<hyper::body::Incoming>>;

/// Which listener a server loop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Client traffic: the LLM APIs, /healthz and /readyz.
    Client,
    /// /healthz, /readyz and /metrics only.
    Ops,
}

/// Error type of response bodies; boxed so streamed proxy bodies fit later.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of every response the server sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What handlers share.
#[derive(Debug)]
pub(crate) struct State {
    pub table: TableHandle,
    pub proxy: crate::proxy::Proxy,
    /// Set at the start of shutdown; /readyz fails from then on.
    pub draining: AtomicBool,
    /// The request-log pipeline's counters; `None` in unit tests.
    pub logs: Option<crate::logs::LogsStatsReader>,
    /// The client listener's connection counts, for /metrics; `None` in
    /// unit tests.
    pub connections: Option<Gate>,
}

impl State {
    /// Why the data plane should get no traffic, if it should not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Acquire) {
            Some("draining")
        } else if self.table.load().is_none() {
            Some("no snapshot applied yet")
        } else {
            None
        }
    }
}

/// Accepts connections until `shutdown` turns true, then drains them.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    gate: Gate,
    role: Role,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer lets hyper enforce its header-read timeout (30 s) on HTTP/1
    // clients; HTTP/2 pings find peers that went away without a word.
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEPALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    // Kept so connections still open after the grace period can be cut.
    let mut connections = JoinSet::new();
    let limits = *gate.limits();

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = match gate.admit() {
                        Ok(conn) => conn,
                        Err(why) => {
                            llmgw_listener::refuse_http(stream, why);
                            continue;
                        }
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    let state = Arc::clone(&state);
                    // The address is formatted once per connection rather
                    // than per request.
                    let client = Arc::new(Peer::new(peer.ip().to_string()));
                    let io = GuardedIo::new(stream, conn.clone());
                    let service = service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        let state = Arc::clone(&state);
                        let client = Arc::clone(&client);
                        // Counted busy until the response is sent, so the
                        // idle timeout never cuts a long answer.
                        let guard = conn.request();
                        // For authentication to mark, and for the answer to
                        // see how near the connection's deadline is; once
                        // marked, there is nothing left to do (and no
                        // extension to allocate).
                        let unauthenticated = (!conn.is_authenticated()).then(|| {
                            req.extensions_mut().insert(conn.clone());
                            conn.clone()
                        });
                        async move {
                            let resp =
                                answer(&state, role, req, &client, &limits, unauthenticated).await;
                            Ok::<_, Infallible>(
                                resp.map(|b| TrackedBody::new(b, guard)),
                            )
                        }
                    });
                    let conn = builder.serve_connection(TokioIo::new(io), service).into_owned();
                    let conn = graceful.watch(conn);
                    connections.spawn(async move {
                        if let Err(e) = conn.await {
                            debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors; pause instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            // A dropped sender also means stop: nobody is left to ask.
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        }
    }

    drop(listener);
    info!(
        open_connections = graceful.count(),
        grace_s = grace.as_secs_f64(),
        "stopped accepting connections; draining"
    );
    // Keep-alive connections first get a moment to carry one more request
    // each (answered with `Connection: close`); then idle ones are closed
    // and busy ones finish within what is left of the grace period.
    let deadline = tokio::time::Instant::now() + grace;
    let lame_duck = tokio::time::Instant::now() + IDLE_DRAIN.min(grace / 2);
    while !connections.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep_until(lame_duck) => break,
            Some(_) = connections.join_next() => {}
        }
    }
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            open_connections = connections.len(),
            "grace period over; closing the remaining connections"
        );
    }
    connections.shutdown().await;
    info!(?role, "HTTP server stopped");
}

/// Answers one request of a connection. `unauthenticated`: the
/// connection, if it had not sent a valid key before this request.
///
/// On HTTP/1, this is also where the connection's fate after the response
/// is decided: a server must not close a keep-alive connection after a
/// response that does not say `Connection: close`, or the client sends its
/// next request into the close. So a body the handler left unread is read
/// or the close announced ([`settle_unread`]), and so is the idle close
/// coming to a connection that has not authenticated
/// ([`llmgw_listener::Conn::closing_soon`]).
async fn answer(
    state: &State,
    role: Role,
    req: Request<hyper::body::Incoming>,
    client: &Peer,
    limits: &llmgw_listener::Limits,
    unauthenticated: Option<llmgw_listener::Conn>,
) -> Response<ResponseBody> {
    let http1 = req.version() <= http::Version::HTTP_11;
    // The only expectation there is: `100-continue`.
    let expects_continue = req.headers().contains_key(header::EXPECT);
    let (parts, body) = req.into_parts();
    let (body, leftover) = Unread::new(TimedBody::new(body, limits));
    let req = Request::from_parts(parts, body);
    let mut resp = match role {
        Role::Client => route(state, req, client).await,
        Role::Ops => {
            let resp = ops(state, &req);
            drop(req);
            resp
        }
    };
    if http1 {
        if unauthenticated.is_some_and(|conn| conn.closing_soon()) {
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        settle_unread(&mut resp, leftover.take(), expects_continue);
    }
    resp
}

/// Dispatches a request on its path.
pub(crate) async fn route(
    state: &State,
    req: Request<RequestBody>,
    client: &Peer,
) -> Response<ResponseBody> {
    let http1 = req.version() <= http::Version::HTTP_11;
    let mut resp = if crate::proxy::Proxy::serves(req.uri().path()) {
        // Just started (or restarted) and no snapshot yet: a load balancer
        // that does not probe /readyz already sends traffic. Hold the
        // request briefly rather than fail it; the first snapshot usually
        // arrives within milliseconds.
        if !state.table.is_loaded() {
            state.table.wait_loaded(FIRST_SNAPSHOT_WAIT).await;
        }
        state.proxy.handle(req, client).await
    } else {
        local(state, &req)
    };
    // Draining: this connection's next response is its last, so the client
    // stops reusing it instead of racing a close of an idle connection.
    // A body cut for its slowness is still unread: the connection cannot
    // carry another request.
    if http1
        && (state.draining.load(Ordering::Acquire) || resp.status() == StatusCode::REQUEST_TIMEOUT)
    {
        resp.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}

/// Decides what becomes of an HTTP/1 request body that its handler dropped
/// before the end (it answered from the head alone: a wrong or expired key,
/// an unknown path, a body over the size limit). hyper, left with it,
/// tries one read for the rest and, if the rest has not all arrived (an SDK
/// writes the head and the body separately), closes the connection after
/// the response without saying so, while the client, told nothing, sends
/// its next request on it. So a small rest of known length is read to its
/// end in the background: the connection then carries the next request
/// (or, if the response says `Connection: close`, closes once the client
/// has sent everything, so that no reset cuts the response short). Any
/// other rest (too large, of unknown length, or not sent because the
/// client waits for `100 Continue`) is dropped, so hyper closes the
/// connection, and the response says `Connection: close`.
fn settle_unread(
    resp: &mut Response<ResponseBody>,
    unread: Option<TimedBody<hyper::body::Incoming>>,
    expects_continue: bool,
) {
    let Some(body) = unread else {
        // Read to the end, or still held by its handler: nothing to do.
        return;
    };
    // A body cut for its slowness is not waited for again (its 408 says
    // `Connection: close`).
    if hyper::body::Body::is_end_stream(&body) || resp.status() == StatusCode::REQUEST_TIMEOUT {
        return;
    }
    let small = hyper::body::Body::size_hint(&body)
        .exact()
        .is_some_and(|left| left <= DRAIN_MAX);
    if small && !expects_continue {
        // Bounded by the body's own timeout and minimum rate; a client that
        // stops sending what it promised loses the connection.
        tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    break;
                }
            }
        });
    } else {
        resp.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
}

/// The largest unread rest of a request body read to keep its connection;
/// beyond it the connection is closed (with notice) instead.
const DRAIN_MAX: u64 = 1 << 20;

/// HTTP/2 pings to clients, and how long an answer may take.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request waits for the first snapshot before a 503.
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// After the listener closes, how long idle keep-alive connections stay
/// open so that clients see `Connection: close` on a response instead of a
/// connection closed under a request they are sending.
const IDLE_DRAIN: Duration = Duration::from_secs(1);

/// Health, readiness and anything the proxy does not serve on the client
/// port. /metrics is on the ops listener only.
fn local<B>(state: &State, req: &Request<B>) -> Response<ResponseBody> {
    let path = req.uri().path();
    match path {
        "/healthz" | "/readyz" if !matches!(*req.method(), Method::GET | Method::HEAD) => {
            method_not_allowed(req.method())
        }
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => readyz(state),
        _ => not_found(path),
    }
}

/// The ops listener: /healthz, /readyz and /metrics.
fn ops<B>(state: &State, req: &Request<B>) -> Response<ResponseBody> {
    let path = req.uri().path();
    match path {
        "/healthz" | "/readyz" | "/metrics"
            if !matches!(*req.method(), Method::GET | Method::HEAD) =>
        {
            method_not_allowed(req.method())
        }
        "/metrics" => metrics(state),
        "/healthz" | "/readyz" => local(state, req),
        _ => not_found(path),
    }
}

fn not_found(path: &str) -> Response<ResponseBody> {
    error(
        StatusCode::NOT_FOUND,
        &format!("Unknown path '{path}'"),
        "not_found_error",
        "not_found",
    )
}

fn metrics(state: &State) -> Response<ResponseBody> {
    let m = state.proxy.metrics();
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    m.snapshot_version.set(gauge(state.table.version()));
    if let Some(l) = &state.logs {
        m.spool_depth.set(gauge(l.spool_depth()));
        m.log_records_quarantined.set(gauge(l.quarantined()));
        m.log_records_shipped.set(gauge(l.shipped()));
        m.log_batches_shipped.set(gauge(l.batches()));
    }
    let dropped_full = state.logs.as_ref().map_or(0, |l| l.dropped_full());
    m.log_records_dropped
        .set(gauge(state.proxy.logs().dropped() + dropped_full));
    if let Some(gate) = &state.connections {
        m.observe_connections(gate);
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        m.encode(),
    )
}

fn readyz(state: &State) -> Response<ResponseBody> {
    match state.not_ready_reason() {
        None => json_response(
            StatusCode::OK,
            &json!({"ready": true, "version": state.table.version()}),
        ),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": reason}),
        ),
    }
}

fn method_not_allowed(method: &Method) -> Response<ResponseBody> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method {method} is not allowed here"),
        "invalid_request_error",
        "method_not_allowed",
    );
    resp.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
    resp
}

/// An error in the OpenAI shape, which LLM clients know how to show.
pub(crate) fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: &str,
) -> Response<ResponseBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "code": code}}),
    )
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    respond(status, "application/json", value.to_string())
}

fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// Logs where the server listens; with port 0 this is the only way to know.
pub(crate) fn log_bound(addr: SocketAddr) {
    info!(listen = %addr, "HTTP server listening");
}

/// Logs where the ops listener listens, the same way.
pub(crate) fn log_ops_bound(addr: SocketAddr) {
    info!(listen = %addr, "ops server listening");
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_core::RoutingTable;
    use llmgw_proto::v1 as pb;

    async fn call(state: &State, method: Method, path: &str) -> (StatusCode, String) {
        call_on(local, state, method, path).await
    }

    async fn call_on(
        handler: fn(&State, &Request<()>) -> Response<ResponseBody>,
        state: &State,
        method: Method,
        path: &str,
    ) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let resp = handler(state, &req);
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    impl Default for State {
        fn default() -> Self {
            let (sink, _) = crate::logs::LogSink::new(1);
            let table = TableHandle::new();
            State {
                proxy: crate::proxy::Proxy::new(
                    table.clone(),
                    Arc::new(sink),
                    crate::metrics::Metrics::new(),
                    "test".into(),
                    crate::RequestLogMode::Full,
                ),
                table,
                draining: Default::default(),
                logs: None,
                connections: None,
            }
        }
    }

    fn with_table() -> State {
        let state = State::default();
        let snapshot = pb::Snapshot {
            version: 5,
            settings: Some(pb::Settings {
                retry_max_attempts: 1,
                http_timeout_s: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        state
            .table
            .store(Arc::new(RoutingTable::try_from(snapshot).unwrap()));
        state
    }

    #[tokio::test]
    async fn healthz_is_always_ok() {
        let (status, body) = call(&State::default(), Method::GET, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn readyz_follows_table_and_draining() {
        let state = State::default();
        let (status, body) = call(&state, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"ready": false, "reason": "no snapshot applied yet"})
        );

        let state = with_table();
        let (status, body) = call(&state, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, json!({"ready": true, "version": 5}));

        state.draining.store(true, Ordering::Release);
        let (status, body) = call(&state, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, json!({"ready": false, "reason": "draining"}));
    }

    #[tokio::test]
    async fn unknown_paths_get_an_openai_style_404() {
        let (status, body) = call(&State::default(), Method::POST, "/v1/nope?x=1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "Unknown path '/v1/nope'");
    }

    #[tokio::test]
    async fn metrics_are_served_on_the_ops_listener_only() {
        let state = with_table();
        let (status, body) = call_on(ops, &state, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("llmgw_snapshot_version 5"), "{body}");
        let (status, _) = call(&state, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        for path in ["/healthz", "/readyz"] {
            let (status, _) = call_on(ops, &state, Method::GET, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
        let (status, _) = call_on(ops, &state, Method::POST, "/metrics").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = call_on(ops, &state, Method::GET, "/v1/models").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn probes_only_take_get() {
        let (status, body) = call(&State::default(), Method::POST, "/healthz").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body.contains("method_not_allowed"), "{body}");
    }
}
