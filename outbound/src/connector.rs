//! [`ProxyConnector`]: the transport under the TLS connector, which opens a
//! TCP connection to the upstream, or a tunnel to it through the provider's
//! proxy. The TLS to an `https://` upstream is the caller's
//! `HttpsConnector` over this, so it runs inside the tunnel.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine as _;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use llmgw_core::proxy::{ProxyScheme, ProxyUrl};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the connector gives the TLS layer: a TCP connection, or a tunnel
/// through a proxy (itself over TLS for an `https://` proxy).
pub type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Reaches the proxy itself: plain TCP, or TLS (HTTP/1.1 only, for the
/// CONNECT) for an `https://` proxy.
type ToProxy = HttpsConnector<HttpConnector>;

#[derive(Clone)]
enum Route {
    Direct(HttpConnector),
    /// To the proxy at `Uri`, then the handshake that opens the tunnel.
    Proxied(ToProxy, Uri, Handshake),
}

/// How a tunnel is asked of the proxy.
#[derive(Clone)]
enum Handshake {
    /// HTTP CONNECT, with the `Proxy-Authorization` value (sensitive).
    Connect(Option<HeaderValue>),
    /// SOCKS5, with the username and password.
    Socks5(Option<(String, String)>),
}

/// Connects to an upstream directly or through one proxy. A clone shares
/// nothing mutable; the pool above it is per (provider, proxy).
#[derive(Clone)]
pub struct ProxyConnector {
    route: Route,
    /// The proxy as `Debug` shows it (no credentials).
    shown: Option<String>,
    /// The proxy's scheme, for errors: they reach API clients in the
    /// gateway's error answers, so they name neither the proxy's address
    /// nor its credentials (the provider's configuration has both).
    scheme: &'static str,
}

impl std::fmt::Debug for ProxyConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shown {
            None => f.write_str("ProxyConnector(direct)"),
            Some(p) => write!(f, "ProxyConnector({p})"),
        }
    }
}

/// A connection already open to the proxy, handed to hyper-util's tunnel
/// or SOCKS handshake as its "connector", so that a failure to reach the
/// proxy is told apart (with its cause) from a refusal by the proxy.
#[derive(Clone)]
struct Opened(Arc<Mutex<Option<Stream>>>);

impl tower::Service<Uri> for Opened {
    type Response = Stream;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Stream, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        std::future::ready(taken.ok_or_else(|| std::io::Error::other("the connection was used")))
    }
}

/// A connect error through a proxy: names the proxy (masked) and the step.
#[derive(Debug)]
pub struct ProxyError {
    message: String,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProxyError {}

impl ProxyConnector {
    /// `http` is the TCP connector (its timeouts and keepalive are used to
    /// reach the upstream or the proxy); `tls` is used to reach an
    /// `https://` proxy.
    pub fn new(
        mut http: HttpConnector,
        tls: rustls::ClientConfig,
        proxy: Option<&ProxyUrl>,
    ) -> Result<Self, String> {
        // https:// URIs reach the TLS layer above through this connector.
        http.enforce_http(false);
        let Some(proxy) = proxy else {
            return Ok(ProxyConnector {
                route: Route::Direct(http),
                shown: None,
                scheme: "",
            });
        };
        let to_proxy = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let kind = proxy.scheme.as_str();
        // The proxy's own address, with its port always written (hyper-util
        // would otherwise take 443 for a SOCKS proxy).
        let scheme = match proxy.scheme {
            ProxyScheme::Https => "https",
            ProxyScheme::Http | ProxyScheme::Socks5 => "http",
        };
        let proxy_uri: Uri = format!("{scheme}://{}:{}", proxy.host, proxy.port)
            .parse()
            .map_err(|_| format!("the provider's {kind} proxy is not a valid address"))?;
        let handshake = match proxy.scheme {
            ProxyScheme::Socks5 => Handshake::Socks5(proxy.credentials.as_ref().map(|c| {
                (
                    c.username.expose_secret().to_string(),
                    c.password.expose_secret().to_string(),
                )
            })),
            ProxyScheme::Http | ProxyScheme::Https => {
                let auth = match &proxy.credentials {
                    None => None,
                    Some(c) => {
                        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                            "{}:{}",
                            c.username.expose_secret(),
                            c.password.expose_secret()
                        ));
                        let mut v =
                            HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
                                format!(
                                    "the provider's {kind} proxy: its credentials cannot be sent"
                                )
                            })?;
                        v.set_sensitive(true);
                        Some(v)
                    }
                };
                Handshake::Connect(auth)
            }
        };
        Ok(ProxyConnector {
            route: Route::Proxied(to_proxy, proxy_uri, handshake),
            shown: Some(proxy.shown()),
            scheme: kind,
        })
    }
}

/// `dst` with its port written: a tunnel is asked for `host:port`, and
/// hyper-util takes 443 when the URI has none, whatever its scheme.
fn with_port(dst: Uri) -> Result<Uri, BoxError> {
    if dst.port().is_some() {
        return Ok(dst);
    }
    let port = if dst.scheme() == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    };
    let host = dst.host().ok_or("the upstream URL has no host")?;
    let authority: Authority = format!("{host}:{port}").parse()?;
    let mut parts = dst.into_parts();
    parts.authority = Some(authority);
    Ok(Uri::from_parts(parts)?)
}

impl tower::Service<Uri> for ProxyConnector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.route {
            Route::Direct(h) => h.poll_ready(cx).map_err(Into::into),
            Route::Proxied(p, ..) => p.poll_ready(cx),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (to_proxy, proxy_uri, handshake) = match &mut self.route {
            Route::Direct(h) => {
                let connecting = h.call(dst);
                return Box::pin(async move { Ok(MaybeHttpsStream::Http(connecting.await?)) });
            }
            Route::Proxied(p, u, h) => (p, u.clone(), h.clone()),
        };
        let connecting = to_proxy.call(proxy_uri.clone());
        let scheme = self.scheme;
        Box::pin(async move {
            let fail = |step: &str, cause: &dyn std::error::Error| -> BoxError {
                Box::new(ProxyError {
                    message: format!(
                        "through the provider's {scheme} proxy: {step}: {}",
                        llmgw_core::error_chain(cause)
                    ),
                })
            };
            let dst = with_port(dst)?;
            let conn = connecting.await.map_err(|e| -> BoxError {
                Box::new(ProxyError {
                    message: format!(
                        "through the provider's {scheme} proxy: cannot connect to the proxy: {}",
                        connect_failure(e.as_ref())
                    ),
                })
            })?;
            let opened = Opened(Arc::new(Mutex::new(Some(conn))));
            match handshake {
                Handshake::Connect(auth) => {
                    let mut tunnel = Tunnel::new(proxy_uri, opened);
                    if let Some(a) = auth {
                        tunnel = tunnel.with_auth(a);
                    }
                    tunnel
                        .call(dst)
                        .await
                        .map_err(|e| fail("the CONNECT tunnel failed", &e))
                }
                Handshake::Socks5(auth) => {
                    let mut socks = SocksV5::new(proxy_uri, opened);
                    if let Some((user, pass)) = auth {
                        socks = socks.with_auth(user, pass);
                    }
                    socks
                        .call(dst)
                        .await
                        .map_err(|e| fail("the SOCKS5 handshake failed", &e))
                }
            }
        })
    }
}

/// What went wrong connecting to a proxy, by kind only: these words reach
/// API clients in the gateway's error answers, and the errors beneath name
/// the proxy's host (a resolver's, or a TLS certificate's name).
fn connect_failure(e: &(dyn std::error::Error + 'static)) -> String {
    let mut io_kind = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string().to_ascii_lowercase();
        if ["certificate", "tls", "handshake"]
            .iter()
            .any(|w| text.contains(w))
        {
            return "the TLS handshake with the proxy failed".into();
        }
        if text.contains("dns") || text.contains("lookup") {
            return "the proxy's host name did not resolve".into();
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        cur = err.source();
    }
    match io_kind {
        Some(kind) => kind.to_string(),
        None => "the connection failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_is_asked_for_the_schemes_default_port() {
        let p = |s: &str| with_port(s.parse().unwrap()).unwrap().to_string();
        assert_eq!(p("http://api.example/v1/x"), "http://api.example:80/v1/x");
        assert_eq!(p("https://api.example/v1"), "https://api.example:443/v1");
        assert_eq!(p("http://127.0.0.1:9999/v1"), "http://127.0.0.1:9999/v1");
        assert_eq!(p("https://[::1]/v1"), "https://[::1]:443/v1");
    }
}
