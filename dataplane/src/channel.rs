//! The gRPC channel to a control plane, shared by the discovery client and
//! the log shipper: same timeouts, keepalives and TLS for both streams.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use http::Uri;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Debug, Clone)]
pub(crate) struct ChannelSettings<'a> {
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Trusted CA for https; system roots when `None`.
    pub tls_ca: Option<&'a Certificate>,
}

pub(crate) async fn connect(uri: &Uri, s: ChannelSettings<'_>) -> Result<Channel> {
    let mut endpoint = Endpoint::from(uri.clone())
        .connect_timeout(s.connect_timeout)
        .http2_keep_alive_interval(s.keepalive_interval)
        .keep_alive_timeout(s.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if uri.scheme_str() == Some("https") {
        // IPv6 hosts come bracketed in URLs but not in certificates.
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = ClientTlsConfig::new().domain_name(host);
        let tls = match s.tls_ca {
            Some(ca) => tls.ca_certificate(ca.clone()),
            None => tls.with_native_roots(),
        };
        endpoint = endpoint.tls_config(tls).context("TLS setup")?;
    }
    // connect_timeout covers TCP only; this bounds the TLS and HTTP/2
    // handshakes too.
    let channel = tokio::time::timeout(s.connect_timeout, endpoint.connect())
        .await
        .map_err(|_| anyhow!("connect timed out after {:?}", s.connect_timeout))??;
    Ok(channel)
}
