//! Sends batches of encoded spans ([`crate::otlp`]) to the collector:
//! OTLP/gRPC as a unary `TraceService/Export` call on a tonic channel, or
//! OTLP/HTTP as a protobuf POST. The request body is framed from the
//! spans' bytes as they are; nothing is decoded or re-encoded. The
//! collector's headers (`OTEL_EXPORTER_OTLP_HEADERS`, a vendor's API key)
//! go on every call and never into a log line.

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Status;

use crate::config::{Settings, Transport};
use crate::otlp::Framing;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The OTLP trace exporter of encoded spans.
pub struct RawExporter {
    framing: Framing,
    how: How,
}

impl std::fmt::Debug for RawExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawExporter").finish_non_exhaustive()
    }
}

enum How {
    Grpc {
        client: tonic::client::Grpc<Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: http::HeaderMap,
    },
}

impl RawExporter {
    /// The exporter for `settings`; it connects on its first export.
    pub fn new(settings: &Settings, framing: Framing) -> Result<RawExporter, String> {
        let how = match settings.transport {
            Transport::Grpc => {
                let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
                    .map_err(|e| format!("OTLP endpoint: {e}"))?
                    .connect_timeout(settings.export_timeout.min(CONNECT_TIMEOUT))
                    .timeout(settings.export_timeout);
                if settings.endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(ClientTlsConfig::new().with_enabled_roots())
                        .map_err(|e| format!("OTLP endpoint TLS: {e}"))?;
                }
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in settings.headers.iter() {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                        .map_err(|_| format!("OTLP header name '{k}' is not valid"))?;
                    let mut value: tonic::metadata::MetadataValue<_> = v
                        .parse()
                        .map_err(|_| format!("OTLP header '{k}' has a value that is not valid"))?;
                    value.set_sensitive(true);
                    metadata.insert(key, value);
                }
                How::Grpc {
                    client: tonic::client::Grpc::new(endpoint.connect_lazy()),
                    metadata,
                }
            }
            Transport::HttpProtobuf => {
                let mut headers = http::HeaderMap::new();
                for (k, v) in settings.headers.iter() {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("OTLP header name '{k}' is not valid"))?;
                    let mut value = http::HeaderValue::from_str(v)
                        .map_err(|_| format!("OTLP header '{k}' has a value that is not valid"))?;
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                let client = reqwest::Client::builder()
                    .connect_timeout(settings.export_timeout.min(CONNECT_TIMEOUT))
                    .timeout(settings.export_timeout)
                    .build()
                    .map_err(|e| format!("the OTLP HTTP client: {e}"))?;
                How::Http {
                    client,
                    url: settings.endpoint.clone(),
                    headers,
                }
            }
        };
        Ok(RawExporter { framing, how })
    }

    /// Sends one batch; an error says why it was not accepted.
    pub async fn export(&self, spans: Vec<Vec<u8>>) -> Result<(), String> {
        let body = self.framing.request(&spans);
        match &self.how {
            How::Grpc { client, metadata } => {
                let mut client = client.clone();
                client
                    .ready()
                    .await
                    .map_err(|e| format!("the collector cannot be reached: {e}"))?;
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                client
                    .unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("the collector answered {:?}: {}", s.code(), s.message()))
            }
            How::Http {
                client,
                url,
                headers,
            } => {
                let answer = client
                    .post(url)
                    .headers(headers.clone())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("the collector cannot be reached: {}", e.without_url()))?;
                let status = answer.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the collector answered HTTP {status}"))
                }
            }
        }
    }
}

/// How long a connection to the collector may take to open.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends a request's bytes as they are; reads and drops the answer (an
/// `ExportTraceServiceResponse`).
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Headers;
    use crate::sample::Sampling;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn settings(endpoint: String, transport: Transport) -> Settings {
        Settings {
            endpoint,
            transport,
            sampling: Sampling::default(),
            queue_size: 8,
            batch_size: 8,
            schedule_delay: std::time::Duration::from_millis(10),
            export_timeout: std::time::Duration::from_secs(5),
            capture_content: false,
            headers: Headers::default(),
        }
    }

    fn framing() -> Framing {
        Framing::new(
            &opentelemetry_sdk::Resource::builder_empty().build(),
            "t",
            "",
        )
    }

    /// A one-request HTTP server answering `status`; returns what it read.
    async fn server(status: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body by its content-length.
            loop {
                let n = c.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let answer =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            c.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        (url, task)
    }

    #[tokio::test]
    async fn http_posts_protobuf_with_the_headers_and_maps_a_refusal() {
        let (url, task) = server("200 OK").await;
        let mut s = settings(url, Transport::HttpProtobuf);
        s.headers = {
            let mut h = Headers::default();
            h.read("T", "x-team=a").unwrap();
            h
        };
        let e = RawExporter::new(&s, framing()).unwrap();
        e.export(vec![vec![0x0a, 0x00]]).await.unwrap();
        let req = task.await.unwrap().to_ascii_lowercase();
        assert!(req.starts_with("post /v1/traces "), "{req}");
        assert!(
            req.contains("content-type: application/x-protobuf"),
            "{req}"
        );
        assert!(req.contains("x-team: a"), "{req}");

        let (url, task) = server("503 Service Unavailable").await;
        let e = RawExporter::new(&settings(url, Transport::HttpProtobuf), framing()).unwrap();
        let err = e.export(vec![]).await.unwrap_err();
        assert!(err.contains("HTTP 503"), "{err}");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_collector_that_is_not_there_is_an_error_on_both_transports() {
        // A port that was free a moment ago.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        for (url, t) in [
            (format!("http://{addr}/v1/traces"), Transport::HttpProtobuf),
            (format!("http://{addr}"), Transport::Grpc),
        ] {
            let e = RawExporter::new(&settings(url, t), framing()).unwrap();
            let err = e.export(vec![]).await.unwrap_err();
            assert!(
                err.contains("cannot be reached") || err.contains("connect error"),
                "{t:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_grpc_error_status_is_an_error() {
        // An HTTP/2 server that is not a collector: any gRPC call fails.
        let (url, task) = server("404 Not Found").await;
        let url = url.trim_end_matches("/v1/traces").to_string();
        let e = RawExporter::new(&settings(url, Transport::Grpc), framing()).unwrap();
        assert!(e.export(vec![]).await.is_err());
        task.abort();
    }
}
