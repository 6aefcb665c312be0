//! The connector both planes use to reach a provider's upstream: hyper-util's
//! client connector with rustls and Mozilla's roots, directly or through the
//! provider's outbound proxy (`llmgw provider update NAME --proxy URL`).
//!
//! - `http://` and `https://` proxies are asked for an HTTP CONNECT tunnel
//!   to the upstream's host and port (over TLS to the proxy for `https://`),
//!   with `Proxy-Authorization: Basic` when the URL has credentials;
//! - `socks5://` proxies get a SOCKS5 handshake, with username/password
//!   authentication when given; the upstream's host name is resolved by the
//!   proxy;
//! - TLS to an `https://` upstream runs inside the tunnel, end to end.
//!
//! The protocol code is hyper-util's (`client-proxy`); this crate picks the
//! route and keeps the proxy's credentials out of every error and `Debug`.

pub mod connector;
pub mod tls;

pub use connector::{ProxyConnector, Stream};
