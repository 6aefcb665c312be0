//! The connector through an `https://` proxy (TLS to the proxy, then a
//! CONNECT tunnel, then TLS to the upstream inside it), against a test
//! proxy and upstream on loopback with a self-signed certificate; and the
//! errors of a proxy that is down or refuses, which name only its scheme.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgw_core::proxy::ProxyUrl;
use llmgw_outbound::ProxyConnector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

struct Tls {
    acceptor: TlsAcceptor,
    client: rustls::ClientConfig,
}

fn tls() -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        client,
    }
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// An HTTPS upstream answering every request with `ok`.
async fn upstream(acceptor: TlsAcceptor) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                read_head(&mut s).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// An HTTPS CONNECT proxy; records each CONNECT's head.
async fn proxy(acceptor: TlsAcceptor, seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let head = read_head(&mut s).await;
                seen.lock().unwrap().push(head.clone());
                let target = head.split(' ').nth(1).unwrap_or_default().to_string();
                let port = target.rsplit(':').next().unwrap_or_default();
                let Ok(mut up) = TcpStream::connect(format!("127.0.0.1:{port}")).await else {
                    return;
                };
                s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .unwrap();
                relay(&mut s, &mut up).await;
            });
        }
    });
    port
}

async fn relay<A, B>(a: &mut A, b: &mut B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional(a, b).await;
}

fn client(
    tls: &rustls::ClientConfig,
    proxy: &ProxyUrl,
) -> Client<hyper_rustls::HttpsConnector<ProxyConnector>, Empty<Bytes>> {
    let transport = ProxyConnector::new(HttpConnector::new(), tls.clone(), Some(proxy)).unwrap();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(transport);
    Client::builder(TokioExecutor::new()).build(https)
}

#[tokio::test]
async fn tls_to_the_proxy_then_tls_to_the_upstream_inside_the_tunnel() {
    let t = tls();
    let up = upstream(t.acceptor.clone()).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let px = proxy(t.acceptor.clone(), seen.clone()).await;
    let url = ProxyUrl::parse(&format!("https://pu:pp-secret@localhost:{px}")).unwrap();
    let c = client(&t.client, &url);
    let uri: http::Uri = format!("https://localhost:{up}/v1/models").parse().unwrap();
    let resp = c.get(uri).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with(&format!("CONNECT localhost:{up} HTTP/1.1\r\n")),
        "{}",
        seen[0]
    );
    // base64("pu:pp-secret")
    assert!(
        seen[0].contains("Proxy-Authorization: Basic cHU6cHAtc2VjcmV0\r\n"),
        "{}",
        seen[0]
    );
}

#[tokio::test]
async fn a_proxy_down_or_refusing_is_a_connect_error_naming_its_scheme_only() {
    let t = tls();
    // Down: nothing listens on the port.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    for scheme in ["http", "socks5"] {
        let url = ProxyUrl::parse(&format!("{scheme}://pu:pp-secret@127.0.0.1:{port}")).unwrap();
        let err = client(&t.client, &url)
            .get("http://127.0.0.1:9/x".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let text = llmgw_core::error_chain(&err);
        assert!(
            text.contains(&format!(
                "through the provider's {scheme} proxy: cannot connect to the proxy"
            )),
            "{text}"
        );
        assert!(!text.contains("pp-secret") && !format!("{err:?}").contains("pp-secret"));
        // Errors reach API clients: no address of the proxy either.
        assert!(!text.contains(&port.to_string()), "{text}");
    }
    // Refusing: a proxy that answers 407 to the CONNECT.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                .await;
        }
    });
    let url = ProxyUrl::parse(&format!("http://pu:pp-secret@127.0.0.1:{port}")).unwrap();
    let err = client(&t.client, &url)
        .get("http://127.0.0.1:9/x".parse().unwrap())
        .await
        .unwrap_err();
    let text = llmgw_core::error_chain(&err);
    assert!(
        text.contains(
            "through the provider's http proxy: the CONNECT tunnel failed: tunnel error: \
             proxy authorization required"
        ),
        "{text}"
    );
    assert!(!text.contains("pp-secret"));
    let dbg = format!(
        "{:?}",
        ProxyConnector::new(HttpConnector::new(), t.client.clone(), Some(&url)).unwrap()
    );
    assert_eq!(dbg, format!("ProxyConnector(http://****@127.0.0.1:{port})"));
}

#[tokio::test]
async fn a_tls_proxy_whose_certificate_does_not_match_is_named_by_kind_only() {
    let t = tls();
    // The proxy's certificate is for "localhost"; it is reached as
    // 127.0.0.1, so the handshake fails on the name, and rustls's own
    // message names the host the certificate was checked against.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = proxy(t.acceptor.clone(), seen.clone()).await;
    let url = ProxyUrl::parse(&format!("https://pu:pp-secret@127.0.0.1:{port}")).unwrap();
    let err = client(&t.client, &url)
        .get("http://127.0.0.1:9/x".parse().unwrap())
        .await
        .unwrap_err();
    let text = llmgw_core::error_chain(&err);
    assert!(
        text.contains(
            "through the provider's https proxy: cannot connect to the proxy: \
             the TLS handshake with the proxy failed"
        ),
        "{text}"
    );
    for leak in ["127.0.0.1", "localhost", &port.to_string(), "pp-secret"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    assert!(seen.lock().unwrap().is_empty());
}
