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
