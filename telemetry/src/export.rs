//! The span queue and its export task. A span is handed over with
//! `try_send` on a bounded channel and never waits: when the queue is full
//! (the collector is slow or down) the span is dropped and counted. One
//! task batches the queue (up to the batch size, or the schedule delay)
//! and sends each batch under the export timeout; a batch that fails or
//! times out is counted and given up, never retried into a queue that
//! requests are waiting to fill.
//!
//! The queue carries either kind of span: the data plane's request spans,
//! already encoded as OTLP bytes ([`crate::otlp`]) and sent by
//! [`RawExporter`], or the SDK's `SpanData` from `tracing` (the control
//! plane's, through [`QueueProcessor`]) sent by `opentelemetry-otlp`.
//!
//! The SDK's `BatchSpanProcessor` does the same job, but it keeps its drop
//! count to itself (we must export it on `/metrics`) and runs its exports
//! on a thread of its own blocking on futures; this queue runs on the
//! process's tokio runtime.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Settings, Transport};
use crate::otlp::Framing;
use crate::transport::RawExporter;

/// A span already encoded as an OTLP `Span` message.
pub type EncodedSpan = Vec<u8>;

/// Sends one batch of `T` to the collector.
pub trait Export<T>: Send + Sync + 'static {
    /// Sends `batch`; an error says why it was not accepted.
    fn export(&self, batch: Vec<T>) -> impl Future<Output = Result<(), String>> + Send;
    /// The task is ending.
    fn shutdown(&mut self) {}
}

/// An SDK exporter (`opentelemetry-otlp`'s, or a test's) of `SpanData`.
#[derive(Debug)]
pub struct Sdk<E>(pub E);

impl<E: SpanExporter + Sync + 'static> Export<SpanData> for Sdk<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = Result<(), String>> + Send {
        let sent = self.0.export(batch);
        async move { sent.await.map_err(|e| e.to_string()) }
    }

    fn shutdown(&mut self) {
        let _ = self.0.shutdown();
    }
}

impl Export<EncodedSpan> for RawExporter {
    fn export(&self, batch: Vec<EncodedSpan>) -> impl Future<Output = Result<(), String>> + Send {
        RawExporter::export(self, batch)
    }
}

/// What became of the spans handed to the queue.
#[derive(Debug, Default)]
pub struct Stats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans in batches that failed or timed out.
    pub dropped_export_failed: AtomicU64,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct SpanQueue<T = SpanData> {
    tx: mpsc::Sender<T>,
    stats: Arc<Stats>,
}

impl<T> SpanQueue<T> {
    /// Queues a span for export, or drops and counts it.
    pub fn send(&self, span: T) {
        if self.tx.try_send(span).is_err() {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans waiting for export now.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The export task; [`Worker::flush`] sends what is queued and stops it.
#[derive(Debug)]
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Worker {
    /// Exports what is queued, within `limit`, and ends the task.
    pub async fn flush(self, limit: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// The resource of a plane's spans: the standard detectors (which read
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`), with
/// `default_service` as the name when neither names one, and `extra`
/// (such as `service.instance.id`).
pub fn resource(default_service: &'static str, extra: Vec<KeyValue>) -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut b = Resource::builder();
    if !named {
        b = b.with_service_name(default_service);
    }
    b.with_attributes(extra).build()
}

/// Starts the export of encoded spans (the data plane's) under `framing`
/// and its task on the current tokio runtime.
pub fn start_encoded(
    settings: &Settings,
    framing: Framing,
) -> Result<(SpanQueue<EncodedSpan>, Worker), String> {
    Ok(start_with(RawExporter::new(settings, framing)?, settings))
}

/// Starts the SDK's OTLP exporter and its task on the current tokio
/// runtime.
pub fn start(settings: &Settings, resource: &Resource) -> Result<(SpanQueue, Worker), String> {
    use opentelemetry_otlp::WithExportConfig;
    let built = match settings.transport {
        Transport::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.export_timeout)
            .build(),
        Transport::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.export_timeout)
            .build(),
    };
    let mut exporter = built.map_err(|e| format!("the OTLP exporter: {e}"))?;
    exporter.set_resource(resource);
    Ok(start_with(Sdk(exporter), settings))
}

/// The queue and task with any exporter (tests use one that stalls or
/// fails).
pub fn start_with<T: Send + 'static, E: Export<T>>(
    exporter: E,
    settings: &Settings,
) -> (SpanQueue<T>, Worker) {
    let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
    let stats = Arc::new(Stats::default());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(
        exporter,
        rx,
        stopped,
        Arc::clone(&stats),
        Batching {
            size: settings.batch_size.max(1),
            delay: settings.schedule_delay,
            timeout: settings.export_timeout,
        },
    ));
    (SpanQueue { tx, stats }, Worker { stop, task })
}

#[derive(Clone, Copy)]
struct Batching {
    size: usize,
    delay: Duration,
    timeout: Duration,
}

async fn run<T: Send + 'static, E: Export<T>>(
    mut exporter: E,
    mut rx: mpsc::Receiver<T>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
    b: Batching,
) {
    let mut batch: Vec<T> = Vec::with_capacity(b.size);
    loop {
        let first = tokio::select! {
            s = rx.recv() => s,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        // The rest of the batch: whatever is queued is taken at once, and
        // the delay's timer and the stop signal are set up once a batch.
        let delay = tokio::time::sleep(b.delay);
        tokio::pin!(delay);
        let stopped = stop.wait_for(|s| *s);
        tokio::pin!(stopped);
        let mut stopping = false;
        while batch.len() < b.size {
            let room = b.size - batch.len();
            tokio::select! {
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                () = &mut delay => break,
                _ = &mut stopped => stopping = true,
            }
            if stopping {
                break;
            }
        }
        export(&exporter, &mut batch, b.timeout, &stats).await;
        if stopping {
            break;
        }
    }
    // Stopping: what is still queued goes out in batches.
    rx.close();
    while let Some(s) = rx.recv().await {
        batch.push(s);
        if batch.len() >= b.size {
            export(&exporter, &mut batch, b.timeout, &stats).await;
        }
    }
    if !batch.is_empty() {
        export(&exporter, &mut batch, b.timeout, &stats).await;
    }
    exporter.shutdown();
}

async fn export<T, E: Export<T>>(exporter: &E, batch: &mut Vec<T>, limit: Duration, stats: &Stats) {
    let n = batch.len() as u64;
    let spans = std::mem::take(batch);
    match tokio::time::timeout(limit, exporter.export(spans)).await {
        Ok(Ok(())) => {
            stats.exported.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            stats.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
            crate::warn_export(&format!("the collector refused or failed a batch: {e}"));
        }
        Err(_) => {
            stats.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
            crate::warn_export("a span export timed out");
        }
    }
}

/// Feeds the SDK's tracer provider (spans made with `tracing`) into the
/// queue: sampled spans are queued at their end, never waited on.
#[derive(Debug)]
pub struct QueueProcessor(pub SpanQueue);

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.0.send(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Sampling;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
    use std::sync::Mutex;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        Accept,
        Fail,
        Stall,
    }

    #[derive(Debug, Clone)]
    struct Fake {
        mode: Arc<Mutex<Mode>>,
        got: Arc<Mutex<Vec<usize>>>,
        calls: Arc<tokio::sync::Notify>,
    }

    impl SpanExporter for Fake {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let mode = *self.mode.lock().unwrap();
            self.got.lock().unwrap().push(batch.len());
            self.calls.notify_one();
            match mode {
                Mode::Accept => Ok(()),
                Mode::Fail => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "refused".into(),
                )),
                Mode::Stall => std::future::pending().await,
            }
        }
    }

    fn span(n: u8) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes([n.max(1); 16]),
                SpanId::from_bytes([n.max(1); 8]),
                TraceFlags::SAMPLED,
                false,
                Default::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "s".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn settings(queue: usize, batch: usize) -> Settings {
        Settings {
            endpoint: "http://127.0.0.1:1".into(),
            transport: Transport::Grpc,
            sampling: Sampling::default(),
            queue_size: queue,
            batch_size: batch,
            schedule_delay: Duration::from_millis(50),
            export_timeout: Duration::from_secs(3600),
            capture_content: false,
            headers: Default::default(),
        }
    }

    fn fake(mode: Mode) -> Fake {
        Fake {
            mode: Arc::new(Mutex::new(mode)),
            got: Default::default(),
            calls: Default::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_size_and_by_delay() {
        let f = fake(Mode::Accept);
        let (q, worker) = start_with(Sdk(f.clone()), &settings(100, 4));
        for n in 0..6 {
            q.send(span(n));
        }
        // Four at once (the batch size), the other two after the delay.
        f.calls.notified().await;
        f.calls.notified().await;
        assert_eq!(*f.got.lock().unwrap(), vec![4, 2]);
        worker.flush(Duration::from_secs(1)).await;
        assert_eq!(q.stats().exported.load(Ordering::Relaxed), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_collector_fills_the_queue_and_drops_are_counted_without_waiting() {
        let f = fake(Mode::Stall);
        let (q, _worker) = start_with(Sdk(f.clone()), &settings(8, 2));
        q.send(span(1));
        q.send(span(2));
        // The worker holds the first batch in a call that never returns.
        f.calls.notified().await;
        for n in 0..100 {
            q.send(span(n)); // never waits
        }
        assert_eq!(q.queued(), 8, "the queue is bounded");
        assert_eq!(q.stats().dropped_queue_full.load(Ordering::Relaxed), 92);
        assert_eq!(q.stats().exported.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_and_timed_out_batches_are_counted_and_the_queue_moves_on() {
        let f = fake(Mode::Fail);
        let mut s = settings(16, 3);
        s.export_timeout = Duration::from_secs(1);
        let (q, worker) = start_with(Sdk(f.clone()), &s);
        for n in 0..3 {
            q.send(span(n));
        }
        f.calls.notified().await;
        *f.mode.lock().unwrap() = Mode::Stall;
        for n in 0..3 {
            q.send(span(n));
        }
        f.calls.notified().await;
        *f.mode.lock().unwrap() = Mode::Accept;
        for n in 0..3 {
            q.send(span(n));
        }
        f.calls.notified().await;
        worker.flush(Duration::from_secs(5)).await;
        assert_eq!(q.stats().dropped_export_failed.load(Ordering::Relaxed), 6);
        assert_eq!(q.stats().exported.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_sends_what_is_queued() {
        let f = fake(Mode::Accept);
        let mut s = settings(100, 10);
        s.schedule_delay = Duration::from_secs(3600);
        let (q, worker) = start_with(Sdk(f.clone()), &s);
        for n in 0..25 {
            q.send(span(n));
        }
        worker.flush(Duration::from_secs(5)).await;
        assert_eq!(q.stats().exported.load(Ordering::Relaxed), 25);
    }

    #[tokio::test]
    async fn the_processor_queues_sampled_spans_only() {
        let f = fake(Mode::Accept);
        let (q, worker) = start_with(Sdk(f.clone()), &settings(100, 10));
        let p = QueueProcessor(q.clone());
        p.on_end(span(1));
        let mut unsampled = span(2);
        unsampled.span_context = SpanContext::new(
            TraceId::from_bytes([2; 16]),
            SpanId::from_bytes([2; 8]),
            TraceFlags::default(),
            false,
            Default::default(),
        );
        p.on_end(unsampled);
        worker.flush(Duration::from_secs(5)).await;
        assert_eq!(q.stats().exported.load(Ordering::Relaxed), 1);
    }
}
