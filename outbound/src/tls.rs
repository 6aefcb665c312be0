//! The TLS settings of outbound calls: rustls with the ring provider and
//! Mozilla's roots (webpki-roots), as both planes have always used.

use std::sync::Arc;

/// A client configuration with Mozilla's roots and no ALPN (the connector
/// builders set it). Loading the roots is the costly part: callers that
/// build many clients keep one and clone it.
pub fn client_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(config.with_root_certificates(roots).with_no_client_auth())
}
