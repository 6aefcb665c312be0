//! Per-provider upstream connection pools ([`super::pool`]), and the
//! upstream destinations made once per provider and endpoint (the URI in
//! both forms, and the `Host` header HTTP/1 sends for it).
//!
//! The pools connect with hyper-util's TCP connector under rustls: reqwest,
//! which the data plane used first, re-parsed the URL of every request and
//! ran redirect and proxy layers the gateway never uses, and hyper-util's
//! pooled client after it hashed its pool's key twice a request. What they
//! did that the gateway needs is done here: the connect timeout covers DNS,
//! TCP and TLS ([`TimeoutConnector`]), TCP keepalive finds dead pooled
//! connections, and [`is_safe_to_resend`] picks out the HTTP/2 refusals
//! reqwest resent.
//!
//! A provider with an outbound proxy gets its connections through it
//! (`llmgw_outbound::ProxyConnector`: HTTP CONNECT or SOCKS5, with TLS to
//! the upstream inside the tunnel). A pool is kept per provider, proxy and
//! base URL: a snapshot that changes the proxy or the base URL (another
//! host) starts a new pool. The one before is kept beside it until the next
//! change (its idle connections expire as usual), so requests of the old
//! and the new table do not replace each other's pool.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use llmgw_core::proxy::ProxyUrl;
use llmgw_core::table::NameMap;
use llmgw_outbound::ProxyConnector;

use super::error::AttemptError;
use super::pool::{self, BoxError, Destination, Pool};

/// One provider's pool. A clone shares it.
pub type UpstreamPool = Pool<TimeoutConnector, UpstreamBody>;

/// What an upstream request carries: a body in memory, or a multipart
/// upload replayed from its tee ([`super::upload`]).
pub enum UpstreamBody {
    Full(Full<Bytes>),
    Replay(super::upload::Replay),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            UpstreamBody::Replay(r) => Pin::new(r).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(b) => b.is_end_stream(),
            UpstreamBody::Replay(r) => r.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Full(b) => b.size_hint(),
            UpstreamBody::Replay(r) => r.size_hint(),
        }
    }
}

/// The TLS connector with one limit on all of connecting: DNS, TCP and the
/// TLS handshake (hyper-util's own connect timeout covers only TCP). A
/// timeout is a connect error, so the attempt fails over like any other.
/// Each connection gets its own copy of the connector, made ready inside
/// the limit.
pub struct TimeoutConnector {
    inner: HttpsConnector<ProxyConnector>,
    timeout: Duration,
}

impl pool::Connector for TimeoutConnector {
    type Io = <HttpsConnector<ProxyConnector> as tower::Service<Uri>>::Response;

    async fn connect(&self, uri: Uri) -> Result<Self::Io, BoxError> {
        let mut connector = self.inner.clone();
        let limit = self.timeout;
        let connecting = async move {
            use tower::{Service, ServiceExt};
            connector.ready().await?.call(uri).await
        };
        match tokio::time::timeout(limit, connecting).await {
            Ok(done) => done,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting took longer than {} ms", limit.as_millis()),
            )
            .into()),
        }
    }
}

/// Whether an upstream error is an HTTP/2 refusal that is safe to resend
/// at once on another connection: a graceful GOAWAY (NO_ERROR) or a
/// REFUSED_STREAM, both of which mean the server did not process the
/// request (RFC 9113, 8.7). Providers close HTTP/2 connections this way
/// routinely; it is not the target failing.
pub fn is_safe_to_resend(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h2e) = err.downcast_ref::<h2::Error>() {
            let reason = h2e.reason();
            return h2e.is_remote()
                && ((h2e.is_go_away() && reason == Some(h2::Reason::NO_ERROR))
                    || (h2e.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM)));
        }
        cur = err.source();
    }
    false
}

/// What is kept per provider name.
struct Entry {
    connect_timeout: Duration,
    /// The proxy the pool's connections go through.
    proxy: Option<ProxyUrl>,
    pool: UpstreamPool,
    /// The base URL the destinations were made from. Another base URL is
    /// another entry, with its own pool (these connections go to this
    /// host).
    base_url: String,
    /// Destinations by path (a few per provider: its endpoints, and for
    /// Gemini one per model and method).
    destinations: Vec<(String, Arc<Destination>)>,
    /// The settings and pool before the last change. While a snapshot
    /// change is taken in, requests of the old table (a retry, a request
    /// read before it) and of the new one alternate; each finds its pool
    /// here instead of replacing the other's.
    previous: Option<Box<Entry>>,
}

impl Entry {
    fn is_for(&self, base_url: &str, connect_timeout: Duration, proxy: Option<&ProxyUrl>) -> bool {
        self.connect_timeout == connect_timeout
            && self.proxy.as_ref() == proxy
            && self.base_url == base_url
    }
}

#[derive(Default)]
pub struct Upstreams {
    /// By provider name (foldhash, as the table's names).
    entries: Mutex<NameMap<Entry>>,
    /// Built once: loading the root store is the costly part of a client.
    tls: Mutex<Option<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstreams")
    }
}

impl Upstreams {
    /// The provider's pool (a new one when the connect timeout, the proxy
    /// or the base URL changed) and the destination of `path` under
    /// `base_url`.
    pub fn get(
        &self,
        provider: &str,
        base_url: &str,
        path: &str,
        connect_timeout: Duration,
        proxy: Option<&ProxyUrl>,
    ) -> Result<(UpstreamPool, Arc<Destination>), AttemptError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // One lookup in the usual case (a known provider, same settings).
        let entry = match entries.get_mut(provider) {
            Some(e) if e.is_for(base_url, connect_timeout, proxy) => e,
            Some(e)
                if e.previous
                    .as_ref()
                    .is_some_and(|p| p.is_for(base_url, connect_timeout, proxy)) =>
            {
                // Back to the settings before: they swap places.
                if let Some(mut previous) = e.previous.take() {
                    std::mem::swap(e, &mut previous);
                    e.previous = Some(previous);
                }
                e
            }
            found => {
                let pool = build_pool(self.tls_config()?, connect_timeout, proxy)?;
                let mut entry = Entry {
                    connect_timeout,
                    proxy: proxy.cloned(),
                    pool,
                    base_url: base_url.to_string(),
                    destinations: Vec::new(),
                    previous: None,
                };
                match found {
                    Some(e) => {
                        // The one before the last is dropped, with its pool.
                        std::mem::swap(e, &mut entry);
                        entry.previous = None;
                        e.previous = Some(Box::new(entry));
                        e
                    }
                    None => entries.entry(provider.to_string()).or_insert(entry),
                }
            }
        };
        if let Some((_, dest)) = entry.destinations.iter().find(|(p, _)| p == path) {
            return Ok((entry.pool.clone(), Arc::clone(dest)));
        }
        let dest = Arc::new(upstream_destination(base_url, path)?);
        entry
            .destinations
            .push((path.to_string(), Arc::clone(&dest)));
        Ok((entry.pool.clone(), dest))
    }

    /// The shared TLS settings; a copy shares the root store.
    fn tls_config(&self) -> Result<rustls::ClientConfig, AttemptError> {
        let mut tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = tls.as_ref() {
            return Ok(c.clone());
        }
        // ALPN (h2, http/1.1) is set by the connector builder.
        let config = llmgw_outbound::tls::client_config().map_err(AttemptError::Connect)?;
        *tls = Some(config.clone());
        Ok(config)
    }
}

/// `base_url` + `path` as a destination: an absolute http(s) URI with a
/// host.
fn upstream_destination(base_url: &str, path: &str) -> Result<Destination, AttemptError> {
    let text = format!("{base_url}{path}");
    let invalid = |why: &dyn std::fmt::Display| {
        AttemptError::Request(format!("invalid upstream URL {text}: {why}"))
    };
    let uri: Uri = text.parse().map_err(|e| invalid(&e))?;
    Destination::new(uri).map_err(|e| invalid(&e))
}

fn build_pool(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    proxy: Option<&ProxyUrl>,
) -> Result<UpstreamPool, AttemptError> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // Finds pooled connections whose peer vanished (as reqwest did).
    http.set_keepalive(Some(Duration::from_secs(15)));
    http.set_keepalive_interval(Some(Duration::from_secs(15)));
    http.set_keepalive_retries(Some(3));
    // https:// URIs reach the TLS layer through this connector, directly
    // or through the proxy.
    http.enforce_http(false);
    let transport = ProxyConnector::new(http, tls.clone(), proxy).map_err(AttemptError::Connect)?;
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(transport);
    let connector = TimeoutConnector {
        inner: https,
        timeout: connect_timeout,
    };
    Ok(Pool::new(
        connector,
        pool::Limits {
            idle_timeout: Duration::from_secs(90),
            max_idle: 1024,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http2_refusals_are_resent() {
        let goaway: h2::Error = h2::Reason::NO_ERROR.into();
        // A locally made error is not the server refusing.
        assert!(!is_safe_to_resend(&goaway));
        let io = std::io::Error::other("connection reset");
        assert!(!is_safe_to_resend(&io));
    }

    #[tokio::test]
    async fn the_connect_timeout_covers_the_tls_handshake() {
        // A server that accepts TCP and never answers the TLS hello.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let u = Upstreams::default();
        let limit = Duration::from_millis(300);
        let (pool, dest) = u
            .get(
                "tls",
                &format!("https://{addr}/v1"),
                "/chat/completions",
                limit,
                None,
            )
            .unwrap();
        let mut req = http::Request::new(UpstreamBody::Full(Full::new(Bytes::from_static(b"{}"))));
        *req.method_mut() = http::Method::POST;
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), pool.send(&dest, req))
            .await
            .expect("the connect timeout did not fire")
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(
            llmgw_core::error_chain(&err).contains("connecting took longer than 300 ms"),
            "{err}"
        );
        assert!(started.elapsed() >= limit);
        hold.abort();
    }

    #[test]
    fn a_pool_is_kept_per_provider_proxy_and_base_url() {
        let u = Upstreams::default();
        let t = Duration::from_secs(5);
        let proxy = |s: &str| ProxyUrl::parse(s).unwrap();
        let (a, b) = (
            proxy("http://u:p@127.0.0.1:3128"),
            proxy("socks5://127.0.0.1:1080"),
        );
        let seen = |u: &Upstreams| {
            let entries = u.entries.lock().unwrap();
            entries["p"].proxy.as_ref().map(ProxyUrl::shown)
        };
        let same = |x: &UpstreamPool, y: &UpstreamPool| x.same_pool(y);
        let (p1, _) = u.get("p", "http://a:1/v1", "/x", t, Some(&a)).unwrap();
        assert_eq!(seen(&u).as_deref(), Some("http://****@127.0.0.1:3128"));
        let (p2, _) = u.get("p", "http://a:1/v1", "/y", t, Some(&a)).unwrap();
        assert!(same(&p1, &p2), "same settings, same pool");
        u.get("p", "http://a:1/v1", "/x", t, Some(&b)).unwrap();
        assert_eq!(seen(&u).as_deref(), Some("socks5://127.0.0.1:1080"));
        u.get("p", "http://a:1/v1", "/x", t, None).unwrap();
        assert_eq!(seen(&u), None);
        // Other credentials on the same proxy are another pool too.
        let a2 = proxy("http://u:other@127.0.0.1:3128");
        assert_ne!(a, a2);
        u.get("p", "http://a:1/v1", "/x", t, Some(&a2)).unwrap();
        assert!(u.entries.lock().unwrap()["p"].proxy.as_ref() == Some(&a2));
        // Another base URL (another host): the old connections are not
        // used for it.
        let (p3, _) = u.get("p", "http://a:1/v1", "/x", t, Some(&a2)).unwrap();
        let (p4, _) = u.get("p", "http://b:1/v1", "/x", t, Some(&a2)).unwrap();
        assert!(!same(&p3, &p4));
        // While a change is taken in, requests of both tables alternate:
        // each keeps its pool.
        for _ in 0..3 {
            let (old, _) = u.get("p", "http://a:1/v1", "/x", t, Some(&a2)).unwrap();
            assert!(same(&old, &p3));
            let (new, _) = u.get("p", "http://b:1/v1", "/x", t, Some(&a2)).unwrap();
            assert!(same(&new, &p4));
        }
        // A third setting drops the oldest.
        u.get("p", "http://c:1/v1", "/x", t, Some(&a2)).unwrap();
        let (again, _) = u.get("p", "http://a:1/v1", "/x", t, Some(&a2)).unwrap();
        assert!(!same(&again, &p3));
    }

    #[test]
    fn destinations_follow_the_base_url() {
        let u = Upstreams::default();
        let t = Duration::from_secs(5);
        let (_, a) = u
            .get("p", "http://a:1/v1", "/chat/completions", t, None)
            .unwrap();
        assert_eq!(a.uri, "http://a:1/v1/chat/completions");
        let (_, b) = u.get("p", "http://a:1/v1", "/embeddings", t, None).unwrap();
        assert_eq!(b.uri, "http://a:1/v1/embeddings");
        let (_, a2) = u
            .get("p", "http://a:1/v1", "/chat/completions", t, None)
            .unwrap();
        assert!(Arc::ptr_eq(&a, &a2), "made once");
        let (_, c) = u
            .get("p", "http://b:2/v2", "/chat/completions", t, None)
            .unwrap();
        assert_eq!(c.uri, "http://b:2/v2/chat/completions");
        let (_, d) = u
            .get(
                "p",
                "http://b:2/v2",
                "/chat/completions",
                Duration::from_secs(1),
                None,
            )
            .unwrap();
        assert_eq!(d.uri, c.uri);
        let (_, e) = u
            .get("s", "https://api.example.com/v1", "/messages", t, None)
            .unwrap();
        assert_eq!(e.uri, "https://api.example.com/v1/messages");
        for bad in ["not a url", "ftp://a/v1", "/v1", "http:///v1"] {
            assert!(
                matches!(
                    u.get("q", bad, "/x", t, None),
                    Err(AttemptError::Request(_))
                ),
                "{bad}"
            );
        }
    }
}
