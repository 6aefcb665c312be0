//! The control plane's OpenTelemetry spans (#19, docs/tracing.md): one
//! per admin call, one per snapshot push (from the push to the data
//! plane's ACK or NACK), and one per stored log batch. They are `tracing`
//! spans of the target [`TARGET`], which only the OpenTelemetry layer
//! sees; `tracing-opentelemetry` turns them into OTel spans and the shared
//! bounded queue (`llmgw_telemetry::export`) sends them, never making a
//! call wait. Tracing is off, and these spans cost next to nothing,
//! unless an OTLP endpoint is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

/// The target of the spans that are exported.
pub const TARGET: &str = "llmgw::otel";

/// The running export, flushed at shutdown.
pub struct Telemetry {
    worker: llmgw_telemetry::Worker,
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Sends what is queued, within `limit`.
    pub async fn flush(self, limit: std::time::Duration) {
        let _ = self.provider.shutdown();
        self.worker.flush(limit).await;
    }
}

/// The OpenTelemetry layer, boxed to sit beside the log's.
pub type OtelLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The OpenTelemetry layer for the subscriber, when an endpoint is set.
/// Must run inside the tokio runtime (the exporter's task starts here).
pub fn layer<S>(
    args: &llmgw_telemetry::TelemetryArgs,
) -> anyhow::Result<Option<(OtelLayer<S>, Telemetry)>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let Some(settings) = llmgw_telemetry::Settings::from_env(args).map_err(anyhow::Error::msg)?
    else {
        return Ok(None);
    };
    let resource = llmgw_telemetry::resource("llmgw-controlplane", Vec::new());
    let (queue, worker) =
        llmgw_telemetry::start(&settings, &resource).map_err(anyhow::Error::msg)?;
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(settings.sampling.sdk_sampler())
        .with_span_processor(llmgw_telemetry::QueueProcessor(queue))
        .build();
    let tracer = provider.tracer("llmgw-controlplane");
    // Only the attributes the spans name: no source locations, threads,
    // targets or busy and idle times.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO))
        .boxed();
    Ok(Some((layer, Telemetry { worker, provider })))
}

/// The span of one admin gRPC call (gRPC-web included), named like the
/// RPC conventions' `{service}/{method}`; other paths get none.
pub fn admin_call(req: &http::Request<()>) -> Span {
    let Some(rpc) = req.uri().path().strip_prefix('/') else {
        return Span::none();
    };
    let Some((service, method)) = rpc.split_once('/') else {
        return Span::none();
    };
    if service != "llmgw.v1.Admin" {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "admin call",
        otel.name = rpc,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    )
}

/// The span of a snapshot sent to a data plane, until it answers.
pub fn snapshot_push(node_id: &str, version: u64) -> Span {
    tracing::info_span!(
        target: TARGET,
        "snapshot push",
        otel.kind = "producer",
        llmgw.node_id = node_id,
        // Integers as i64: the bridge records a u64 as text.
        llmgw.snapshot.version = i64::try_from(version).unwrap_or(i64::MAX),
        llmgw.ack = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The span of one log batch stored.
pub fn log_ingest(node_id: &str, records: usize) -> Span {
    tracing::info_span!(
        target: TARGET,
        "log ingest",
        otel.kind = "consumer",
        llmgw.node_id = node_id,
        llmgw.records = i64::try_from(records).unwrap_or(i64::MAX),
    )
}
