//! Per-provider upstream HTTP clients, each with its own connection pool,
//! and the upstream URIs parsed once per provider and endpoint, each with
//! the `Host` header HTTP/1 sends for it.
//!
//! The client is hyper-util's pooled client over a rustls connector, used
//! directly: reqwest on top of it re-parsed the URL of every request and
//! ran redirect and proxy layers the gateway never uses, about a fifth of
//! the data plane's instructions per request. What reqwest did that the
//! gateway needs is done here: the connect timeout covers DNS, TCP and TLS
//! ([`TimeoutConnector`]), TCP keepalive finds dead pooled connections, and
//! [`is_safe_to_resend`] picks out the HTTP/2 refusals reqwest resent.
//!
//! A provider with an outbound proxy gets its connections through it
//! (`llmgw_outbound::ProxyConnector`: HTTP CONNECT or SOCKS5, with TLS to
//! the upstream inside the tunnel); a pool is kept per (provider, proxy),
//! so a snapshot that changes the proxy starts a new pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use llmgw_core::proxy::ProxyUrl;
use llmgw_core::table::NameMap;
use llmgw_outbound::ProxyConnector;

use super::error::AttemptError;

/// One provider's pooled client. A clone shares the pool.
pub type UpstreamClient = Client<TimeoutConnector, UpstreamBody>;

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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The TLS connector with one limit on all of connecting: DNS, TCP and the
/// TLS handshake (hyper-util's own connect timeout covers only TCP). A
/// timeout is a connect error, so the attempt fails over like any other.
///
/// The connectors are shared behind an `Arc`: hyper-util clones its client,
/// and so this connector, several times for every request, while only a
/// new connection uses them. Each connection gets its own copy, made ready
/// inside the limit.
#[derive(Clone)]
pub struct TimeoutConnector {
    inner: std::sync::Arc<HttpsConnector<ProxyConnector>>,
    timeout: Duration,
}

impl tower::Service<Uri> for TimeoutConnector {
    type Response = <HttpsConnector<ProxyConnector> as tower::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    /// Always ready: the copy that connects is made ready in [`Self::call`].
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut connector = HttpsConnector::clone(&self.inner);
        let limit = self.timeout;
        Box::pin(async move {
            let connecting = async move {
                use tower::ServiceExt;
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
        })
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
    client: UpstreamClient,
    /// The base URL the parsed URIs were made from; a snapshot that changes
    /// it drops them.
    base_url: String,
    /// Parsed URIs by path (a few per provider: its endpoints, and for
    /// Gemini one per model and method), with their [`host_header`].
    uris: Vec<(String, Uri, Option<HeaderValue>)>,
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
    /// The provider's client (a new one, with a new pool, when the connect
    /// timeout or the proxy changed), the URI of `path` under `base_url`,
    /// and its `Host` header when it can be given ([`host_header`]).
    pub fn get(
        &self,
        provider: &str,
        base_url: &str,
        path: &str,
        connect_timeout: Duration,
        proxy: Option<&ProxyUrl>,
    ) -> Result<(UpstreamClient, Uri, Option<HeaderValue>), AttemptError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // One lookup in the usual case (a known provider, same settings).
        let entry = match entries.get_mut(provider) {
            Some(e) if e.connect_timeout == connect_timeout && e.proxy.as_ref() == proxy => e,
            _ => {
                let client = build_client(self.tls_config()?, connect_timeout, proxy)?;
                let entry = Entry {
                    connect_timeout,
                    proxy: proxy.cloned(),
                    client,
                    base_url: base_url.to_string(),
                    uris: Vec::new(),
                };
                match entries.entry(provider.to_string()) {
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        o.insert(entry);
                        o.into_mut()
                    }
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(entry),
                }
            }
        };
        if entry.base_url != base_url {
            entry.base_url = base_url.to_string();
            entry.uris.clear();
        }
        if let Some((_, uri, host)) = entry.uris.iter().find(|(p, _, _)| p == path) {
            return Ok((entry.client.clone(), uri.clone(), host.clone()));
        }
        let uri = upstream_uri(base_url, path)?;
        let host = host_header(&uri);
        entry
            .uris
            .push((path.to_string(), uri.clone(), host.clone()));
        Ok((entry.client.clone(), uri, host))
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

/// The `Host` header hyper-util's client writes for `uri` on an HTTP/1
/// connection (the host, and the port unless it is the scheme's default),
/// made once here instead of formatted for every request; the same bytes
/// go out. Only for `http://`: a plain connection is always HTTP/1 here
/// (HTTP/2 comes only from ALPN inside TLS), while an `https://` one may be
/// HTTP/2, where no `Host` is sent; hyper-util goes on writing it there for
/// HTTP/1. `None` too when the header would not be the URI's authority byte
/// for byte (user info, a default port written out).
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let authority = uri.authority()?.as_str();
    let host = uri.host()?;
    // hyper-util's rule: the port unless it is the scheme's default.
    let written = match uri.port() {
        // Written as a number (`Port`'s `Display`), as hyper-util does.
        Some(port) if port.as_u16() != 80 => format!("{host}:{}", port.as_u16()),
        _ => host.to_string(),
    };
    if written != authority {
        return None;
    }
    HeaderValue::from_str(authority).ok()
}

/// `base_url` + `path` as an absolute http(s) URI with a host.
fn upstream_uri(base_url: &str, path: &str) -> Result<Uri, AttemptError> {
    let text = format!("{base_url}{path}");
    let invalid = |why: &dyn std::fmt::Display| {
        AttemptError::Request(format!("invalid upstream URL {text}: {why}"))
    };
    let uri: Uri = text.parse().map_err(|e| invalid(&e))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid(&"the scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(&"no host"));
    }
    Ok(uri)
}

fn build_client(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    proxy: Option<&ProxyUrl>,
) -> Result<UpstreamClient, AttemptError> {
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
        inner: std::sync::Arc::new(https),
        timeout: connect_timeout,
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_adaptive_window(true)
        .build(connector))
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
        let (client, uri, _) = u
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
        *req.uri_mut() = uri;
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .expect("the connect timeout did not fire")
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(started.elapsed() >= limit);
        hold.abort();
    }

    #[test]
    fn a_pool_is_kept_per_provider_and_proxy() {
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
        u.get("p", "http://a:1/v1", "/x", t, Some(&a)).unwrap();
        assert_eq!(seen(&u).as_deref(), Some("http://****@127.0.0.1:3128"));
        u.get("p", "http://a:1/v1", "/x", t, Some(&b)).unwrap();
        assert_eq!(seen(&u).as_deref(), Some("socks5://127.0.0.1:1080"));
        u.get("p", "http://a:1/v1", "/x", t, None).unwrap();
        assert_eq!(seen(&u), None);
        // Other credentials on the same proxy are another pool too.
        let a2 = proxy("http://u:other@127.0.0.1:3128");
        assert_ne!(a, a2);
        u.get("p", "http://a:1/v1", "/x", t, Some(&a2)).unwrap();
        assert!(u.entries.lock().unwrap()["p"].proxy.as_ref() == Some(&a2));
    }

    #[test]
    fn host_headers_are_hyper_utils_for_plain_http_only() {
        let host =
            |u: &str| host_header(&u.parse().unwrap()).map(|h| h.to_str().unwrap().to_owned());
        assert_eq!(
            host("http://127.0.0.1:8080/v1").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            host("http://vllm.internal/v1").as_deref(),
            Some("vllm.internal")
        );
        assert_eq!(host("http://[::1]:9000/v1").as_deref(), Some("[::1]:9000"));
        assert_eq!(host("http://a:443/v1").as_deref(), Some("a:443"));
        // TLS may bring HTTP/2, where no Host goes: left to hyper-util; so
        // are a default port written out and user info, which hyper-util
        // would leave out of the header.
        assert_eq!(host("https://api.openai.com/v1"), None);
        assert_eq!(host("https://api.example.com:8443/v1"), None);
        assert_eq!(host("http://a:80/v1"), None);
        assert_eq!(host("http://u:p@a:1/v1"), None);
        // hyper-util would write `a:1`, not the authority's `a:01`.
        assert_eq!(host("http://a:01/v1"), None);
        let u = Upstreams::default();
        let t = Duration::from_secs(5);
        let (_, _, h) = u.get("p", "http://a:1/v1", "/x", t, None).unwrap();
        assert_eq!(h.unwrap(), "a:1");
        let (_, _, h) = u.get("p", "http://a:1/v1", "/x", t, None).unwrap();
        assert_eq!(h.unwrap(), "a:1");
    }

    #[test]
    fn uris_follow_the_base_url_and_clients_the_timeout() {
        let u = Upstreams::default();
        let t = Duration::from_secs(5);
        let (_, a, _) = u
            .get("p", "http://a:1/v1", "/chat/completions", t, None)
            .unwrap();
        assert_eq!(a, "http://a:1/v1/chat/completions");
        let (_, b, _) = u.get("p", "http://a:1/v1", "/embeddings", t, None).unwrap();
        assert_eq!(b, "http://a:1/v1/embeddings");
        let (_, c, _) = u
            .get("p", "http://b:2/v2", "/chat/completions", t, None)
            .unwrap();
        assert_eq!(c, "http://b:2/v2/chat/completions");
        let (_, d, _) = u
            .get(
                "p",
                "http://b:2/v2",
                "/chat/completions",
                Duration::from_secs(1),
                None,
            )
            .unwrap();
        assert_eq!(d, c);
        let (_, e, _) = u
            .get("s", "https://api.example.com/v1", "/messages", t, None)
            .unwrap();
        assert_eq!(e, "https://api.example.com/v1/messages");
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
