#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! The admin-auth matrix: every method of the `Admin` service, as listed in
//! `proto/llmgw/v1/admin.proto` (so a new method is covered the day it is
//! added), refuses a call without a token, with a wrong token, with a client
//! key, with the data-plane token and with the admin token not sent as a
//! bearer, over gRPC and over gRPC-web; and accepts the admin token. The
//! data-plane services refuse the admin token and client keys likewise.
//! There are no roles: the admin token is the one credential.

use std::time::Duration;

use llmgw_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// `(service, method, server_streaming, client_streaming)` of every rpc in
/// a proto file.
fn rpcs(file: &str) -> Vec<(String, String, bool, bool)> {
    let path = format!("{}/../proto/llmgw/v1/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut service = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.trim_end_matches('{').trim().to_string();
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            let name = rest.split('(').next().unwrap().trim().to_string();
            let (args, ret) = rest.split_once("returns").unwrap();
            out.push((
                service.clone(),
                name,
                ret.contains("stream "),
                args.contains("(stream "),
            ));
        }
    }
    assert!(!out.is_empty(), "no rpc in {path}");
    out
}

fn with_auth<T>(mut r: Request<T>, auth: Option<&str>) -> Request<T> {
    if let Some(a) = auth {
        r.metadata_mut()
            .insert("authorization", MetadataValue::try_from(a).unwrap());
    }
    r
}

/// Calls `/llmgw.v1.{service}/{method}` with an empty message and the
/// given `authorization`; returns the status code (`Ok` when the call, or
/// the stream's opening, succeeded).
async fn call(
    ch: &Channel,
    service: &str,
    method: &str,
    server_streaming: bool,
    client_streaming: bool,
    auth: Option<&str>,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/llmgw.v1.{service}/{method}")).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let fut = async {
        if client_streaming {
            // An open request stream: the interceptor judges the headers.
            let req = with_auth(Request::new(tokio_stream::pending::<()>()), auth);
            grpc.streaming(req, path, codec).await.map(|_| ())
        } else if server_streaming {
            grpc.server_streaming(with_auth(Request::new(()), auth), path, codec)
                .await
                .map(|_| ())
        } else {
            grpc.unary(with_auth(Request::new(()), auth), path, codec)
                .await
                .map(|_| ())
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok(())) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => panic!("{service}/{method} did not answer within 10 s"),
    }
}

/// The same call over gRPC-web (HTTP/1.1, as the dashboard makes it);
/// returns the `grpc-status` of a trailers-only answer, if any.
async fn call_web(
    addr: std::net::SocketAddr,
    service: &str,
    method: &str,
    auth: Option<&str>,
) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /llmgw.v1.{service}/{method} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: 5\r\nconnection: close\r\n"
    );
    if let Some(a) = auth {
        req.push_str(&format!("authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&[0, 0, 0, 0, 0]).await.unwrap();
    let mut buf = vec![0u8; 16384];
    let mut got = Vec::new();
    // The head is enough: a refusal is trailers-only, in the head.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("no gRPC-web answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("grpc-status:"))
        .map(|v| v.trim().to_string())
}

/// A control plane, a client key of it, and a channel to it.
async fn start() -> (ControlPlane, String, Channel) {
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let client_key = cli_json(&cp, &["key", "create", "matrix"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let ch = Channel::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    (cp, client_key, ch)
}

#[tokio::test]
async fn every_admin_method_refuses_all_but_the_admin_token() {
    let (cp, client_key, ch) = start().await;
    let admin = format!("Bearer {}", cp.admin_token);
    let refused: Vec<(&str, String)> = vec![
        ("no token", String::new()),
        ("a wrong token", format!("Bearer {}x", cp.admin_token)),
        (
            "a token prefix",
            format!("Bearer {}", &cp.admin_token[..cp.admin_token.len() / 2]),
        ),
        ("a client key", format!("Bearer {client_key}")),
        (
            "the data-plane token",
            format!("Bearer {}", cp.dataplane_token),
        ),
        ("the admin token without 'Bearer'", cp.admin_token.clone()),
        (
            "the admin token as Basic",
            format!("Basic {}", cp.admin_token),
        ),
        ("an empty bearer", "Bearer ".to_string()),
    ];
    let methods = rpcs("admin.proto");
    assert!(methods.len() >= 20, "{methods:?}");
    for (service, method, ss, cs) in &methods {
        assert_eq!(service, "Admin");
        for (what, auth) in &refused {
            let auth = (!auth.is_empty()).then_some(auth.as_str());
            let code = call(&ch, service, method, *ss, *cs, auth).await;
            assert_eq!(code, Code::Unauthenticated, "{method} with {what}");
            let web = call_web(cp.addr, service, method, auth).await;
            assert_eq!(web.as_deref(), Some("16"), "gRPC-web {method} with {what}");
        }
    }
    // The admin token passes the check (the empty request may still be
    // invalid). ApplyConfig would empty the configuration; it goes last.
    let mut ordered: Vec<_> = methods.iter().filter(|m| m.1 != "ApplyConfig").collect();
    ordered.extend(methods.iter().filter(|m| m.1 == "ApplyConfig"));
    for (service, method, ss, cs) in ordered {
        let code = call(&ch, service, method, *ss, *cs, Some(&admin)).await;
        assert_ne!(
            code,
            Code::Unauthenticated,
            "{method} refused the admin token"
        );
        assert_ne!(
            code,
            Code::PermissionDenied,
            "{method} refused the admin token"
        );
        assert_ne!(code, Code::Unimplemented, "{method} is not served");
    }
    assert!(!cp.log().contains(&client_key), "the client key was logged");
}

#[tokio::test]
async fn data_plane_services_refuse_the_admin_token_and_client_keys() {
    let (cp, client_key, ch) = start().await;
    let methods: Vec<_> = ["discovery.proto", "logs.proto"]
        .into_iter()
        .flat_map(rpcs)
        .collect();
    assert_eq!(methods.len(), 2, "{methods:?}");
    for (service, method, ss, cs) in &methods {
        for (what, auth) in [
            ("no token", None),
            (
                "the admin token",
                Some(format!("Bearer {}", cp.admin_token)),
            ),
            ("a client key", Some(format!("Bearer {client_key}"))),
            (
                "a wrong token",
                Some(format!("Bearer {}x", cp.dataplane_token)),
            ),
        ] {
            let code = call(&ch, service, method, *ss, *cs, auth.as_deref()).await;
            assert_eq!(
                code,
                Code::Unauthenticated,
                "{service}/{method} with {what}"
            );
        }
        let right = format!("Bearer {}", cp.dataplane_token);
        let code = call(&ch, service, method, *ss, *cs, Some(&right)).await;
        assert_ne!(
            code,
            Code::Unauthenticated,
            "{service}/{method} refused the data-plane token"
        );
    }
}
