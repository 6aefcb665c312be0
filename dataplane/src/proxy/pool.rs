//! One provider's upstream connections: a pool over hyper's own
//! connections (`hyper::client::conn`), which replaced hyper-util's legacy
//! client.
//!
//! hyper-util's client kept one pool for every destination, keyed by
//! (scheme, authority): each request hashed that key with SipHash on
//! checkout and again on return, boxed its futures and cloned the client
//! several times, about 8,000 instructions a request of which hyper's own
//! hand-off to the connection is 500. A pool here belongs to one
//! destination (a provider's base URL, through its proxy if any), so taking
//! a connection is a lock and a pop, and giving it back a lock and a push.
//!
//! What it keeps of hyper-util's client:
//! - **HTTP/2 when TLS's ALPN picks it**: one connection shared by every
//!   request, replaced once it closes. It is made once for a burst: requests
//!   that find none wait for the one being made rather than each opening
//!   their own (a connection already opened by one of them is closed once
//!   ALPN says HTTP/2 and another has been made);
//! - **HTTP/1 connections reused**, the most recently used first. One goes
//!   back once hyper says it can take the next request: at once when the
//!   answer has already been read, otherwise a small task waits for its
//!   body to end;
//! - **a request a pooled connection never sent** (it closed first; hyper
//!   hands the request back) is sent again on another connection;
//! - **idle connections expire** after the idle timeout: checked when one is
//!   taken or given back, and by a sweep while any is idle;
//! - **HTTP/1's request line in origin form** with a `Host` header (the host,
//!   and the port unless it is the scheme's default); HTTP/2 sends the
//!   absolute URI as its pseudo-headers.
//!
//! The connector (DNS, TCP, TLS, the provider's proxy) is the caller's,
//! under one connect timeout ([`Connector`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens a connection to a URI's authority, within one limit for all of
/// it (DNS, TCP, TLS, a proxy's handshake).
pub trait Connector: Send + Sync + 'static {
    type Io: Read + Write + Connection + Unpin + Send + 'static;
    fn connect(&self, uri: Uri) -> impl Future<Output = Result<Self::Io, BoxError>> + Send;
}

/// Where a request goes, made once per provider and path: the URI in both
/// forms, and HTTP/1's `Host`. No `Debug`: a base URL may carry user info.
pub struct Destination {
    /// The absolute URI: what is dialled, and HTTP/2's `:scheme`,
    /// `:authority` and `:path`.
    pub uri: Uri,
    /// The path and query, HTTP/1's request target.
    origin: Uri,
    /// HTTP/1's `Host`, as hyper-util wrote it: the host, and the port
    /// unless it is the scheme's default (written as a number).
    host: HeaderValue,
}

impl Destination {
    /// `uri` must be absolute (a scheme and a host). User info in it is
    /// left out: it is sent neither as HTTP/2's `:authority` (RFC 9113,
    /// 8.3.1) nor in `Host`.
    pub fn new(uri: Uri) -> Result<Destination, String> {
        let uri = without_user_info(uri)?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or("no host")?;
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => return Err("the scheme must be http or https".into()),
        };
        let host = match uri.port_u16() {
            Some(port) if port != default_port => HeaderValue::try_from(format!("{host}:{port}")),
            _ => HeaderValue::try_from(host),
        }
        .map_err(|e| format!("the host cannot be a header: {e}"))?;
        let origin = match uri.path_and_query() {
            Some(pq) if pq.as_str() != "/" => {
                let mut parts = http::uri::Parts::default();
                parts.path_and_query = Some(pq.clone());
                Uri::from_parts(parts).map_err(|e| e.to_string())?
            }
            _ => Uri::default(),
        };
        Ok(Destination { uri, origin, host })
    }
}

/// `uri` with its authority's user info (`user:password@`) left out.
fn without_user_info(uri: Uri) -> Result<Uri, String> {
    let Some(hostport) = uri
        .authority()
        .and_then(|a| a.as_str().rsplit_once('@'))
        .map(|(_, hostport)| hostport.to_owned())
    else {
        return Ok(uri);
    };
    let mut parts = uri.into_parts();
    parts.authority = Some(hostport.parse().map_err(|e| format!("{e}"))?);
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (DNS, TCP, TLS, the proxy, HTTP/2's
    /// handshake): the request was not sent.
    Connect(BoxError),
    /// The exchange on a connection failed.
    Send(hyper::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

/// Shows the cause itself: the attempt's error says which step it was.
impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => e.fmt(f),
            SendError::Send(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => e.source(),
            SendError::Send(e) => std::error::Error::source(e),
        }
    }
}

/// How long idle connections are kept, and how many.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// A pool of connections to one destination. A clone shares it.
pub struct Pool<C, B> {
    shared: Arc<Shared<C, B>>,
}

impl<C, B> Clone for Pool<C, B> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<C, B> {
    connector: C,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    limits: Limits,
    idle: Mutex<Idle<B>>,
}

/// The connections not in use (HTTP/1), and the shared one (HTTP/2).
struct Idle<B> {
    /// Oldest first; each with when it went idle.
    h1: VecDeque<(http1::SendRequest<B>, Instant)>,
    /// With when a request last took it.
    h2: Option<(http2::SendRequest<B>, Instant)>,
    /// While the HTTP/2 connection is being made: which making it is, and
    /// a receiver that wakes when it ends (made, failed or given up).
    h2_connecting: Option<(u64, watch::Receiver<()>)>,
    /// How many times an HTTP/2 connection has been made (numbers the
    /// above).
    h2_connects: u64,
    /// Whether the last connection made here was HTTP/2: the next one is
    /// then expected to be, and is made once for every request waiting.
    h2_expected: bool,
    /// Whether a sweep task is running.
    sweeping: bool,
}

impl<B> Idle<B> {
    fn new() -> Self {
        Idle {
            h1: VecDeque::new(),
            h2: None,
            h2_connecting: None,
            h2_connects: 0,
            h2_expected: false,
            sweeping: false,
        }
    }

    /// A connection that can take a request at `now`: the shared HTTP/2
    /// one, or the most recently used HTTP/1 one. Once one has expired, so
    /// has every older one; one that closed while idle is dropped here.
    fn take(&mut self, now: Instant, timeout: Duration) -> Option<Lease<B>> {
        if let Some((tx, since)) = &mut self.h2 {
            if !tx.is_closed() {
                *since = now;
                return Some(Lease::H2(tx.clone()));
            }
            self.h2 = None;
        }
        while let Some((tx, since)) = self.h1.pop_back() {
            if now.saturating_duration_since(since) >= timeout {
                self.h1.clear();
                return None;
            }
            if tx.is_ready() {
                return Some(Lease::H1(tx));
            }
        }
        None
    }

    /// `tx` idle from `now`, after dropping what has expired by then and,
    /// past the cap, the oldest.
    fn push(&mut self, tx: http1::SendRequest<B>, now: Instant, limits: Limits) {
        self.expire_oldest(now, limits.idle_timeout);
        while self.h1.len() >= limits.max_idle && self.h1.pop_front().is_some() {}
        self.h1.push_back((tx, now));
    }

    /// Drops the HTTP/1 connections, oldest first, that have idled
    /// `timeout` by `now`.
    fn expire_oldest(&mut self, now: Instant, timeout: Duration) {
        while let Some((_, since)) = self.h1.front() {
            if now.saturating_duration_since(*since) < timeout {
                break;
            }
            self.h1.pop_front();
        }
    }

    /// Drops what has idled `timeout` by `now`, and HTTP/1 connections
    /// that closed.
    fn expire(&mut self, now: Instant, timeout: Duration) {
        self.expire_oldest(now, timeout);
        self.h1.retain(|(tx, _)| !tx.is_closed());
        if let Some((tx, since)) = &self.h2 {
            if tx.is_closed() || now.saturating_duration_since(*since) >= timeout {
                self.h2 = None;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.h1.is_empty() && self.h2.is_none()
    }
}

/// A connection taken for one request.
enum Lease<B> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

/// What a request does when it needs a connection.
enum Next<C, B> {
    Lease(Lease<B>),
    /// Waits for the HTTP/2 connection being made, then looks again.
    Wait(watch::Receiver<()>),
    /// Opens one; with the lead when it is expected to be HTTP/2.
    Connect(Option<Lead<C, B>>),
}

/// The making of the pool's HTTP/2 connection. While it lives, requests
/// that find no connection wait for it; when it ends (made, failed, or its
/// request gone), they wake and look again.
///
/// One that ends without a connection also stops expecting HTTP/2, so the
/// requests woken connect each on their own, at once, as they would have
/// without waiting: an upstream that is down fails them together, not one
/// connect timeout after another.
struct Lead<C, B> {
    shared: Arc<Shared<C, B>>,
    number: u64,
    /// Whether the shared connection was made (or found).
    made: bool,
    _done: watch::Sender<()>,
}

impl<C, B> Drop for Lead<C, B> {
    fn drop(&mut self) {
        let mut idle = self.shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle
            .h2_connecting
            .as_ref()
            .is_some_and(|(n, _)| *n == self.number)
        {
            idle.h2_connecting = None;
        }
        if !self.made {
            idle.h2_expected = false;
        }
        // Then `_done` drops, which wakes the waiting requests.
    }
}

impl<C, B> Pool<C, B>
where
    C: Connector,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub fn new(connector: C, limits: Limits) -> Self {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new()).adaptive_window(true);
        Pool {
            shared: Arc::new(Shared {
                connector,
                h1: http1::Builder::new(),
                h2,
                limits,
                idle: Mutex::new(Idle::new()),
            }),
        }
    }

    /// Sends `req` to `dest` (its URI and, on HTTP/1, its `Host` are set
    /// here) on a pooled connection, or a new one.
    pub async fn send(
        &self,
        dest: &Destination,
        mut req: Request<B>,
    ) -> Result<Response<Incoming>, SendError> {
        loop {
            let (lease, reused) = match self.checkout() {
                Next::Lease(lease) => (lease, true),
                Next::Wait(mut made) => {
                    // Ends when the making does, whichever way.
                    let _ = made.changed().await;
                    continue;
                }
                // Boxed: connecting (DNS, TLS, a proxy, HTTP/2's
                // handshake) is a large future, and rare; inline, it would
                // make every request's future larger, and every move of it
                // a longer copy.
                Next::Connect(lead) => Box::pin(self.connect(dest, lead)).await?,
            };
            let unsent = match lease {
                Lease::H1(mut tx) => {
                    *req.uri_mut() = dest.origin.clone();
                    if !req.headers().contains_key(HOST) {
                        req.headers_mut().insert(HOST, dest.host.clone());
                    }
                    match tx.try_send_request(req).await {
                        Ok(res) => {
                            self.give_back(tx);
                            return Ok(res);
                        }
                        Err(e) => e,
                    }
                }
                Lease::H2(mut tx) => {
                    *req.uri_mut() = dest.uri.clone();
                    match tx.try_send_request(req).await {
                        Ok(res) => return Ok(res),
                        Err(e) => e,
                    }
                }
            };
            let mut unsent = unsent;
            match unsent.take_message() {
                // The connection closed before the request went out: on a
                // pooled one (which may have been closed by the server
                // while idle) it goes again on another. A new connection
                // that fails so has nothing to fall back on.
                Some(r) if reused => req = r,
                _ => return Err(SendError::Send(unsent.into_error())),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idle<B>> {
        self.shared.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection; else, when an HTTP/2 one is expected, the
    /// making of it (led by this request, or waited for); else a
    /// connection of this request's own.
    fn checkout(&self) -> Next<C, B> {
        let mut idle = self.lock();
        if let Some(lease) = idle.take(Instant::now(), self.shared.limits.idle_timeout) {
            return Next::Lease(lease);
        }
        if !idle.h2_expected {
            return Next::Connect(None);
        }
        if let Some((_, made)) = &idle.h2_connecting {
            return Next::Wait(made.clone());
        }
        Next::Connect(Some(self.lead(&mut idle)))
    }

    /// This request makes the HTTP/2 connection; others wait for it.
    fn lead(&self, idle: &mut Idle<B>) -> Lead<C, B> {
        idle.h2_connects += 1;
        let (done, made) = watch::channel(());
        idle.h2_connecting = Some((idle.h2_connects, made));
        Lead {
            shared: Arc::clone(&self.shared),
            number: idle.h2_connects,
            made: false,
            _done: done,
        }
    }

    /// An HTTP/1 connection back to the pool once it can take the next
    /// request: now if its answer has been read, else when it has.
    fn give_back(&self, mut tx: http1::SendRequest<B>) {
        if tx.is_ready() {
            self.put(tx);
        } else if !tx.is_closed() {
            let pool = Arc::downgrade(&self.shared);
            tokio::spawn(async move {
                if tx.ready().await.is_ok() {
                    if let Some(shared) = pool.upgrade() {
                        Pool { shared }.put(tx);
                    }
                }
            });
        }
    }

    fn put(&self, tx: http1::SendRequest<B>) {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.push(tx, now, self.shared.limits);
        self.sweep_while_idle(&mut idle);
    }

    /// Starts the sweep unless it runs.
    fn sweep_while_idle(&self, idle: &mut Idle<B>) {
        if !idle.sweeping {
            idle.sweeping = true;
            let timeout = self.shared.limits.idle_timeout;
            tokio::spawn(sweep(Arc::downgrade(&self.shared), timeout));
        }
    }

    /// A new connection, HTTP/2 when ALPN chose it, and whether it was
    /// already in use. An HTTP/2 connection is made once: when another
    /// request has made it meanwhile (or is making it), this one's is
    /// dropped and that one is shared.
    async fn connect(
        &self,
        dest: &Destination,
        mut lead: Option<Lead<C, B>>,
    ) -> Result<(Lease<B>, bool), SendError> {
        let io = self
            .shared
            .connector
            .connect(dest.uri.clone())
            .await
            .map_err(SendError::Connect)?;
        if !io.connected().is_negotiated_h2() {
            // Not the HTTP/2 connection that was expected: whoever waits
            // for it opens their own.
            drop(lead);
            self.lock().h2_expected = false;
            let (tx, conn) = self
                .shared
                .h1
                .handshake(io)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            drive(conn, "HTTP/1");
            return Ok((Lease::H1(tx), false));
        }
        loop {
            let waiting = {
                let mut idle = self.lock();
                idle.h2_expected = true;
                if let Some((tx, _)) = &idle.h2 {
                    if !tx.is_closed() {
                        if let Some(lead) = &mut lead {
                            lead.made = true;
                        }
                        return Ok((Lease::H2(tx.clone()), true));
                    }
                }
                match (&lead, &idle.h2_connecting) {
                    (None, Some((_, made))) => Some(made.clone()),
                    (None, None) => {
                        lead = Some(self.lead(&mut idle));
                        None
                    }
                    (Some(_), _) => None,
                }
            };
            match waiting {
                Some(mut made) => {
                    let _ = made.changed().await;
                }
                None => break,
            }
        }
        let (tx, conn) = self
            .shared
            .h2
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        drive(conn, "HTTP/2");
        {
            let mut idle = self.lock();
            idle.h2 = Some((tx.clone(), Instant::now()));
            self.sweep_while_idle(&mut idle);
        }
        // Wakes the waiting requests, which find it.
        if let Some(mut lead) = lead {
            lead.made = true;
        }
        Ok((Lease::H2(tx), false))
    }
}

/// Runs a connection's I/O as a task of its own, until it closes.
fn drive<F>(conn: F, version: &'static str)
where
    F: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, version, "an upstream connection ended");
        }
    });
}

/// Drops expired and closed connections while any is idle; ends with the
/// pool, or when none is left (the next one idled starts it again).
async fn sweep<C, B>(pool: Weak<Shared<C, B>>, timeout: Duration) {
    // Often enough that nothing idles much past its timeout.
    let every = (timeout / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.expire(Instant::now(), timeout);
        if idle.is_empty() {
            idle.sweeping = false;
            return;
        }
    }
}

#[cfg(test)]
impl<C, B> Pool<C, B> {
    /// Whether two handles share one pool.
    pub fn same_pool(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// How many HTTP/1 connections are idle, and whether an HTTP/2 one is
    /// kept.
    fn idle_counts(&self) -> (usize, bool) {
        let idle = self.shared.idle.lock().unwrap();
        (idle.h1.len(), idle.h2.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::service::service_fn;
    use hyper_util::client::legacy::connect::Connected;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::net::{TcpListener, TcpStream};

    /// Plain TCP, or TLS with ALPN (h2, http/1.1) against one certificate.
    struct TestConnector {
        tls: Option<tokio_rustls::TlsConnector>,
    }

    trait AnyStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
    impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AnyStream for S {}

    /// A connection, and whether ALPN chose HTTP/2.
    struct Io(TokioIo<Box<dyn AnyStream>>, bool);

    impl Read for Io {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: hyper::rt::ReadBufCursor<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl Write for Io {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    impl Connection for Io {
        fn connected(&self) -> Connected {
            if self.1 {
                Connected::new().negotiated_h2()
            } else {
                Connected::new()
            }
        }
    }

    impl Connector for TestConnector {
        type Io = Io;
        async fn connect(&self, uri: Uri) -> Result<Io, BoxError> {
            let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
            let tcp = TcpStream::connect(addr).await?;
            match &self.tls {
                None => Ok(Io(TokioIo::new(Box::new(tcp)), false)),
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from("localhost")?;
                    let s = tls.connect(name, tcp).await?;
                    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                    Ok(Io(TokioIo::new(Box::new(s)), h2))
                }
            }
        }
    }

    type TestPool = Pool<TestConnector, Full<Bytes>>;

    fn limits() -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(90),
            max_idle: 1024,
        }
    }

    /// What the server saw of each request: its connection's number, the
    /// version, the request target and `Host`.
    type Seen = Arc<Mutex<Vec<(usize, http::Version, String, Option<String>)>>>;

    /// A server answering `ok` (or, for `/stream`, three chunks, the last
    /// once `release` is notified). With `goaway_after`, each connection is
    /// shut down gracefully (HTTP/2's GOAWAY) once it has answered that
    /// many requests.
    async fn server(
        tls: Option<tokio_rustls::TlsAcceptor>,
        goaway_after: Option<usize>,
        release: Arc<tokio::sync::Notify>,
    ) -> (u16, Seen, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let accepted = conns.clone();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let n = conns.fetch_add(1, Ordering::SeqCst);
                let (seen, tls, release) = (seen2.clone(), tls.clone(), release.clone());
                tokio::spawn(async move {
                    let served = Arc::new(AtomicUsize::new(0));
                    let done = Arc::new(tokio::sync::Notify::new());
                    let (served2, done2) = (served.clone(), done.clone());
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (seen, release) = (seen.clone(), release.clone());
                        let served = served2.clone();
                        let done = done2.clone();
                        async move {
                            let host = req
                                .headers()
                                .get(HOST)
                                .map(|h| h.to_str().unwrap().to_owned());
                            let target = req.uri().to_string();
                            seen.lock().unwrap().push((n, req.version(), target, host));
                            let count = served.fetch_add(1, Ordering::SeqCst) + 1;
                            if goaway_after == Some(count) {
                                done.notify_one();
                            }
                            let body: http_body_util::combinators::BoxBody<Bytes, Infallible> =
                                if req.uri().path() == "/stream" {
                                    BodyExt::boxed(StreamBody::new(chunks(release)))
                                } else {
                                    BodyExt::boxed(Full::new(Bytes::from_static(b"ok")))
                                };
                            Ok::<_, Infallible>(Response::new(body))
                        }
                    });
                    let io: Box<dyn AnyStream> = match tls {
                        None => Box::new(tcp),
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(_) => return,
                        },
                    };
                    let auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = auto.serve_connection(TokioIo::new(io), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        () = done.notified() => {}
                    }
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                });
            }
        });
        (port, seen, accepted)
    }

    /// An HTTP/1 server that answers one request per connection and closes
    /// it when `close` is notified, without having said so in the answer;
    /// it counts connections.
    async fn closing_server(close: Arc<tokio::sync::Notify>) -> (u16, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let close = close.clone();
                tokio::spawn(async move {
                    // The head, then the two bytes of `{}`.
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = s.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"{}") {
                            break;
                        }
                    }
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    close.notified().await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (port, conns)
    }

    fn chunks(
        release: Arc<tokio::sync::Notify>,
    ) -> impl futures::Stream<Item = Result<hyper::body::Frame<Bytes>, Infallible>> + Send {
        futures::stream::unfold(0, move |i| {
            let release = release.clone();
            async move {
                match i {
                    0 | 1 => Some((Ok(hyper::body::Frame::data(Bytes::from("x"))), i + 1)),
                    2 => {
                        release.notified().await;
                        Some((Ok(hyper::body::Frame::data(Bytes::from("end"))), 3))
                    }
                    _ => None,
                }
            }
        })
    }

    fn tls_pair() -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = ck.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        (
            tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            tokio_rustls::TlsConnector::from(Arc::new(client)),
        )
    }

    fn request() -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(Bytes::from_static(b"{}")));
        *r.method_mut() = http::Method::POST;
        r
    }

    async fn read(res: Response<Incoming>) -> Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    /// Waits (bounded) until the pool holds `n` idle HTTP/1 connections.
    async fn idle_becomes<C: Connector>(pool: &Pool<C, Full<Bytes>>, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while pool.idle_counts().0 != n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("idle stayed {:?}, not {n}", pool.idle_counts()));
    }

    #[test]
    fn destinations_carry_both_forms_and_hyper_utils_host() {
        let d = |u: &str| Destination::new(u.parse().unwrap()).unwrap();
        let a = d("http://127.0.0.1:8080/v1/chat/completions?x=1");
        assert_eq!(a.origin, "/v1/chat/completions?x=1");
        assert_eq!(a.host, "127.0.0.1:8080");
        assert_eq!(a.uri, "http://127.0.0.1:8080/v1/chat/completions?x=1");
        assert_eq!(d("http://vllm.internal/v1").host, "vllm.internal");
        assert_eq!(d("http://a:80/v1").host, "a");
        assert_eq!(d("https://a:443/v1").host, "a");
        assert_eq!(d("https://a:80/v1").host, "a:80");
        assert_eq!(d("http://a:443/v1").host, "a:443");
        assert_eq!(d("http://[::1]:9000/v1").host, "[::1]:9000");
        assert_eq!(d("http://u:p@a:1/v1").host, "a:1");
        // User info goes nowhere: not in HTTP/2's `:authority` either.
        assert_eq!(d("https://u:p@a/v1?k=1").uri, "https://a/v1?k=1");
        assert_eq!(d("http://u@[::1]:01/v1").uri, "http://[::1]:01/v1");
        assert_eq!(d("http://a:01/v1").host, "a:1");
        assert_eq!(d("https://api.openai.com").origin, "/");
        assert_eq!(d("https://api.openai.com/").origin, "/");
        for bad in ["/v1", "ftp://a/v1"] {
            assert!(Destination::new(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn http1_connections_are_reused_in_origin_form_with_host() {
        let (port, seen, _) = server(None, None, Arc::default()).await;
        let pool = TestPool::new(TestConnector { tls: None }, limits());
        let dest =
            Destination::new(format!("http://127.0.0.1:{port}/v1/x").parse().unwrap()).unwrap();
        for _ in 0..3 {
            let res = pool.send(&dest, request()).await.unwrap();
            assert_eq!(read(res).await, "ok");
            idle_becomes(&pool, 1).await;
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        for (conn, version, target, host) in seen {
            assert_eq!(conn, 0, "one connection for all three");
            assert_eq!(version, http::Version::HTTP_11);
            assert_eq!(target, "/v1/x");
            assert_eq!(host.as_deref(), Some(format!("127.0.0.1:{port}").as_str()));
        }
        // Concurrent requests each take a connection of their own.
        let (a, b) = tokio::join!(pool.send(&dest, request()), pool.send(&dest, request()));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((read(a).await, read(b).await), ("ok".into(), "ok".into()));
        idle_becomes(&pool, 2).await;
    }

    #[tokio::test]
    async fn a_connection_goes_back_only_once_its_streamed_body_has_ended() {
        let release = Arc::new(tokio::sync::Notify::new());
        let (port, seen, _) = server(None, None, release.clone()).await;
        let pool = TestPool::new(TestConnector { tls: None }, limits());
        let stream =
            Destination::new(format!("http://127.0.0.1:{port}/stream").parse().unwrap()).unwrap();
        let plain =
            Destination::new(format!("http://127.0.0.1:{port}/plain").parse().unwrap()).unwrap();
        let mut body = pool.send(&stream, request()).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "x");
        // Mid-stream, the connection is not idle: another request opens
        // its own.
        assert_eq!(pool.idle_counts(), (0, false));
        let res = pool.send(&plain, request()).await.unwrap();
        assert_eq!(read(res).await, "ok");
        idle_becomes(&pool, 1).await;
        release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "xend");
        idle_becomes(&pool, 2).await;
        let conns: Vec<usize> = seen.lock().unwrap().iter().map(|s| s.0).collect();
        assert_eq!(conns, [0, 1]);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_passed_over() {
        let close = Arc::new(tokio::sync::Notify::new());
        let (port, conns) = closing_server(close.clone()).await;
        let pool = TestPool::new(TestConnector { tls: None }, limits());
        let dest =
            Destination::new(format!("http://127.0.0.1:{port}/v1").parse().unwrap()).unwrap();
        for round in 1..=3 {
            let res = pool.send(&dest, request()).await.unwrap();
            assert_eq!(read(res).await, "ok");
            // Back in the pool, then closed by the server.
            idle_becomes(&pool, 1).await;
            close.notify_one();
            tokio::time::timeout(Duration::from_secs(10), async {
                while !pool.shared.idle.lock().unwrap().h1[0].0.is_closed() {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .unwrap();
            assert_eq!(conns.load(Ordering::SeqCst), round);
        }
        // The closed one is dropped when taken, not sent on.
        let timeout = limits().idle_timeout;
        let taken = pool.lock().take(Instant::now(), timeout);
        assert!(taken.is_none());
        assert_eq!(pool.idle_counts(), (0, false));
        let res = pool.send(&dest, request()).await.unwrap();
        assert_eq!(read(res).await, "ok");
        assert_eq!(conns.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn alpn_h2_is_one_shared_connection_made_once_per_burst() {
        let (acceptor, connector) = tls_pair();
        let (port, seen, accepted) = server(Some(acceptor), Some(8), Arc::default()).await;
        let pool = TestPool::new(
            TestConnector {
                tls: Some(connector),
            },
            limits(),
        );
        let dest =
            Destination::new(format!("https://localhost:{port}/v1/x").parse().unwrap()).unwrap();
        // A cold burst: each request opens a connection (nothing says yet
        // that it will be HTTP/2), but all eight are served on one.
        let sends = (0..8).map(|_| pool.send(&dest, request()));
        for res in futures::future::join_all(sends).await {
            let res = res.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            assert_eq!(read(res).await, "ok");
        }
        let first: Vec<usize> = seen.lock().unwrap().iter().map(|s| s.0).collect();
        assert_eq!(first.len(), 8);
        assert!(first.iter().all(|c| *c == first[0]), "{first:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 8, "eight opened, one kept");
        assert_eq!(pool.idle_counts(), (0, true));
        // The server sent GOAWAY after eight. Once the pool has seen the
        // connection close, a burst opens exactly one more connection.
        tokio::time::timeout(Duration::from_secs(10), async {
            while pool
                .lock()
                .h2
                .as_ref()
                .is_some_and(|(tx, _)| !tx.is_closed())
            {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let before = accepted.load(Ordering::SeqCst);
        let sends = (0..8).map(|_| pool.send(&dest, request()));
        for res in futures::future::join_all(sends).await {
            assert_eq!(read(res.unwrap()).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
        let seen = seen.lock().unwrap().clone();
        let second: Vec<usize> = seen[8..].iter().map(|s| s.0).collect();
        assert_eq!(second.len(), 8);
        assert!(
            second.iter().all(|c| *c == second[0] && *c != first[0]),
            "{second:?}"
        );
        for (_, version, target, host) in &seen {
            assert_eq!(*version, http::Version::HTTP_2);
            // HTTP/2 carries the absolute URI, and no Host.
            assert_eq!(target, &format!("https://localhost:{port}/v1/x"));
            assert_eq!(host, &None);
        }
    }

    #[tokio::test]
    async fn a_connect_failure_is_a_connect_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let pool = TestPool::new(TestConnector { tls: None }, limits());
        let dest =
            Destination::new(format!("http://127.0.0.1:{port}/v1").parse().unwrap()).unwrap();
        let err = pool.send(&dest, request()).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert_eq!(pool.idle_counts(), (0, false));
    }

    /// A TCP connection whose reads end (EOF) once `cut` is set, without
    /// waking anyone: the server's end gone, and the pool's driver of the
    /// connection not yet told. A write after the cut is an error, and
    /// counted.
    struct Severable {
        tcp: TcpStream,
        cut: Arc<AtomicBool>,
        writes_after_cut: Arc<AtomicUsize>,
    }

    impl tokio::io::AsyncRead for Severable {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.cut.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(Ok(()));
            }
            std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Severable {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.cut.load(Ordering::SeqCst) {
                self.writes_after_cut.fetch_add(1, Ordering::SeqCst);
                return std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    /// Plain TCP through [`Severable`]: each connection's cut, in the order
    /// they were made; with `cut_at_once`, every connection starts cut.
    #[derive(Default)]
    struct SeveringConnector {
        cuts: Mutex<Vec<Arc<AtomicBool>>>,
        writes_after_cut: Arc<AtomicUsize>,
        cut_at_once: bool,
    }

    impl SeveringConnector {
        fn cut(&self, conn: usize) {
            self.cuts.lock().unwrap()[conn].store(true, Ordering::SeqCst);
        }
    }

    impl Connector for SeveringConnector {
        type Io = Io;
        async fn connect(&self, uri: Uri) -> Result<Io, BoxError> {
            let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
            let tcp = TcpStream::connect(addr).await?;
            let cut = Arc::new(AtomicBool::new(self.cut_at_once));
            self.cuts.lock().unwrap().push(cut.clone());
            let io = Severable {
                tcp,
                cut,
                writes_after_cut: self.writes_after_cut.clone(),
            };
            Ok(Io(TokioIo::new(Box::new(io)), false))
        }
    }

    #[tokio::test]
    async fn a_request_a_closed_pooled_connection_never_took_goes_on_a_new_one() {
        let (port, seen, conns) = server(None, None, Arc::default()).await;
        let pool = Pool::<SeveringConnector, Full<Bytes>>::new(Default::default(), limits());
        let dest =
            Destination::new(format!("http://127.0.0.1:{port}/v1").parse().unwrap()).unwrap();
        let res = pool.send(&dest, request()).await.unwrap();
        assert_eq!(read(res).await, "ok");
        idle_becomes(&pool, 1).await;
        // The pooled connection ends unseen: the pool still takes it, and
        // its driver finds the end only when the request wakes it, before
        // writing a byte. The request goes again, on a new connection.
        pool.shared.connector.cut(0);
        let res = pool.send(&dest, request()).await.unwrap();
        assert_eq!(read(res).await, "ok");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        let on: Vec<usize> = seen.lock().unwrap().iter().map(|s| s.0).collect();
        assert_eq!(on, [0, 1]);
        let writes_after_cut = &pool.shared.connector.writes_after_cut;
        assert_eq!(writes_after_cut.load(Ordering::SeqCst), 0);
        idle_becomes(&pool, 1).await;
    }

    #[tokio::test]
    async fn a_new_connection_that_ends_before_the_request_is_an_error_not_a_loop() {
        let (port, seen, conns) = server(None, None, Arc::default()).await;
        let connector = SeveringConnector {
            cut_at_once: true,
            ..Default::default()
        };
        let pool = Pool::<SeveringConnector, Full<Bytes>>::new(connector, limits());
        let dest =
            Destination::new(format!("http://127.0.0.1:{port}/v1").parse().unwrap()).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), pool.send(&dest, request()))
            .await
            .expect("one try, not a loop")
            .unwrap_err();
        // Not a connect error: the connection was made, the exchange
        // failed, and nothing else was tried.
        assert!(!err.is_connect(), "{err:?}");
        assert_eq!(pool.shared.connector.cuts.lock().unwrap().len(), 1);
        assert!(seen.lock().unwrap().is_empty());
        assert!(conns.load(Ordering::SeqCst) <= 1);
        assert_eq!(pool.idle_counts(), (0, false));
    }

    /// A connector whose every attempt waits for a permit, then fails.
    struct GateConnector {
        attempts: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    impl Connector for GateConnector {
        type Io = Io;
        async fn connect(&self, _: Uri) -> Result<Io, BoxError> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await?.forget();
            Err("connection refused".into())
        }
    }

    #[tokio::test]
    async fn when_the_http2_connection_cannot_be_made_the_waiting_requests_connect_at_once() {
        let pool = Pool::<GateConnector, Full<Bytes>>::new(
            GateConnector {
                attempts: AtomicUsize::new(0),
                gate: tokio::sync::Semaphore::new(0),
            },
            limits(),
        );
        let attempts = || pool.shared.connector.attempts.load(Ordering::SeqCst);
        // The last connection here was HTTP/2: one request makes the next,
        // the other three wait for it.
        pool.lock().h2_expected = true;
        let dest = Destination::new("https://localhost:1/v1".parse().unwrap()).unwrap();
        let sends = futures::future::join_all((0..4).map(|_| pool.send(&dest, request())));
        let drive = async {
            let waited = |n: usize| {
                tokio::time::timeout(Duration::from_secs(10), async move {
                    while attempts() != n {
                        tokio::task::yield_now().await;
                    }
                })
            };
            waited(1).await.expect("one request leads");
            // It fails: the three waiting connect each on their own, at
            // once (not one after another's failure).
            pool.shared.connector.gate.add_permits(1);
            waited(4)
                .await
                .expect("the waiting requests connect together");
            pool.shared.connector.gate.add_permits(3);
        };
        let (results, ()) = tokio::join!(sends, drive);
        for r in results {
            assert!(r.unwrap_err().is_connect());
        }
        assert_eq!(attempts(), 4);
        assert!(!pool.lock().h2_expected);
        assert!(pool.lock().h2_connecting.is_none());
    }

    /// A ready HTTP/1 sender on a connection of its own.
    async fn sender(port: u16) -> http1::SendRequest<Full<Bytes>> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut tx, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        tx.ready().await.unwrap();
        tx
    }

    #[tokio::test]
    async fn idle_connections_go_newest_first_expire_and_are_capped() {
        let (port, _, _) = server(None, None, Arc::default()).await;
        let limits = Limits {
            idle_timeout: Duration::from_secs(90),
            max_idle: 2,
        };
        let secs = Duration::from_secs;
        let t0 = Instant::now();
        let mut idle = Idle::new();
        let since = |idle: &Idle<Full<Bytes>>| -> Vec<Duration> {
            idle.h1.iter().map(|(_, t)| *t - t0).collect()
        };
        // The cap drops the oldest.
        for at in [0, 1, 2] {
            idle.push(sender(port).await, t0 + secs(at), limits);
        }
        assert_eq!(since(&idle), [secs(1), secs(2)]);
        // Taken newest first.
        assert!(matches!(
            idle.take(t0 + secs(3), limits.idle_timeout),
            Some(Lease::H1(_))
        ));
        assert_eq!(since(&idle), [secs(1)]);
        // Given back, it is the newest; a push drops what has expired.
        idle.push(sender(port).await, t0 + secs(91), limits);
        assert_eq!(since(&idle), [secs(91)]);
        idle.push(sender(port).await, t0 + secs(100), limits);
        assert_eq!(since(&idle), [secs(91), secs(100)]);
        // A take finds the newest expired: every one has.
        assert!(idle.take(t0 + secs(190), limits.idle_timeout).is_none());
        assert!(idle.is_empty());
        // The sweep's expiry, from when each went idle.
        idle.push(sender(port).await, t0, limits);
        idle.push(sender(port).await, t0 + secs(10), limits);
        idle.expire(t0 + secs(89), limits.idle_timeout);
        assert_eq!(since(&idle), [secs(0), secs(10)]);
        idle.expire(t0 + secs(90), limits.idle_timeout);
        assert_eq!(since(&idle), [secs(10)]);
        idle.expire(t0 + secs(100), limits.idle_timeout);
        assert!(idle.is_empty());
    }
}
