//! llmgw's data plane as a library. [`start`] raises the file-descriptor
//! limit, binds the client and ops listeners and opens the discovery stream
//! to the control plane; the returned [`Running`] exposes the bound
//! addresses, the routing table and its applied version, and drives
//! shutdown. The binary is a thin wrapper, so tests run the real
//! thing in-process.

pub mod backoff;
mod channel;
pub mod config;
mod discovery;
pub mod limits;
pub mod live;
pub mod logs;
pub mod metrics;
pub mod peer;
pub mod proxy;
mod server;
pub mod table;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Certificate;
use tracing::info;

pub use config::{Cli, Config, LogFormat, RequestLogMode};
pub use server::{BoxError, RequestBody, ResponseBody};
pub use table::TableHandle;

/// Finished request records waiting for the spool writer.
const LOG_QUEUE: usize = 16 * 1024;
/// File descriptors kept out of the connection cap: the spool, the
/// discovery and log-shipping connections, the ops listener, logs.
const FD_RESERVE: u64 = 256;
/// Probes and scrapes need few connections; a cap keeps the ops listener
/// from holding many descriptors if it is reachable by more than them.
const OPS_MAX_CONNECTIONS: usize = 64;
/// How long the ops listener's last connections may finish.
const OPS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets up logging: format from `--log-format`, filter from `RUST_LOG`
/// (default `info`). Does nothing if a subscriber is already set.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // An error only means a subscriber is already installed.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Binds the listener and starts the HTTP server and the discovery client.
/// Fails only on local problems (bad token characters, address in use);
/// an unreachable control plane is retried in the background.
pub async fn start(config: Config) -> Result<Running> {
    if config.control_planes.is_empty() {
        bail!("no control-plane URL configured");
    }
    let mut auth = AsciiMetadataValue::try_from(format!("Bearer {}", config.token.expose_secret()))
        .map_err(|_| anyhow!("the data-plane token contains characters not allowed in a header"))?;
    auth.set_sensitive(true);

    // Connections are file descriptors: take all the process may have,
    // and keep the connection caps below it.
    let mut limits = config.limits;
    if let Some(fds) = llmgw_listener::raise_fd_limit() {
        limits = limits.fit_fds(fds.soft, FD_RESERVE);
    }
    let client_gate = llmgw_listener::Gate::new("client", limits);

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr().context("bound address")?;
    server::log_bound(local_addr);
    let ops_listener = match config.ops_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--ops-listen)"))?;
            let bound = l.local_addr().context("bound ops address")?;
            server::log_ops_bound(bound);
            Some((l, bound))
        }
        None => None,
    };

    // tiktoken's tables (about 55 MiB) are built only when an estimate is
    // needed, off the request path: see `proxy::estimate`.

    let table = TableHandle::new();
    let (versions_tx, versions) = watch::channel(0u64);
    let limiter = limits::Limiter::new();
    let live = live::Live::new();
    let (log_sink, log_records) = logs::LogSink::new(LOG_QUEUE);
    let log_sink = Arc::new(log_sink);
    let mut logs_config = logs::LogsConfig::from_config(&config);
    logs_config.spool_dir = config
        .spool_dir
        .clone()
        .unwrap_or_else(|| logs::default_spool_dir(&config.node_id));
    logs_config.max_bytes = config.spool_max_bytes;
    logs_config.sync_interval = config.spool_sync_interval;
    logs_config.ship_linger = config.log_ship_linger;
    let logs = logs::spawn(logs_config, log_records)
        .await
        .context("cannot open the request-log spool")?;
    let metrics = metrics::Metrics::with_log_losses(logs.losses());
    let mut proxy = proxy::Proxy::new(
        table.clone(),
        Arc::clone(&log_sink),
        Arc::clone(&metrics),
        config.node_id.clone(),
        config.request_log,
    );
    let mut span_worker = None;
    if let Some(settings) = &config.telemetry {
        let resource = llmgw_telemetry::resource(
            "llmgw-dataplane",
            vec![opentelemetry::KeyValue::new(
                "service.instance.id",
                config.node_id.clone(),
            )],
        );
        let framing = llmgw_telemetry::otlp::Framing::new(
            &resource,
            proxy::TRACE_SCOPE,
            env!("CARGO_PKG_VERSION"),
        );
        let (queue, worker) = llmgw_telemetry::start_encoded(settings, framing)
            .map_err(|e| anyhow!("cannot start OpenTelemetry export: {e}"))?;
        metrics.trace_queue(queue.clone());
        proxy = proxy.with_tracing(proxy::Tracing::new(
            queue,
            settings.sampling,
            settings.capture_content,
        ));
        span_worker = Some(worker);
        info!(endpoint = %settings.endpoint, transport = ?settings.transport, "exporting traces over OTLP");
    }
    let state = Arc::new(server::State {
        logs: Some(logs.stats_reader()),
        table: table.clone(),
        proxy: proxy
            .with_limiter(Arc::clone(&limiter))
            .with_live(Arc::clone(&live))
            .with_unauthenticated_log_rate(config.unauthenticated_log_per_minute)
            .with_spool_wait(config.spool_wait)
            .with_max_upload_bytes(config.max_upload_bytes)
            .with_max_upload_spool_bytes(config.max_upload_spool_bytes),
        draining: Default::default(),
        connections: Some(client_gate.clone()),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);

    let server = tokio::spawn(server::serve(
        listener,
        Arc::clone(&state),
        client_gate,
        server::Role::Client,
        shutdown_rx,
        config.shutdown_grace,
    ));
    // The ops listener outlives the client one's drain (probes see /readyz
    // fail, scrapes see the last requests), and stops in `join`.
    let (ops_shutdown, ops_shutdown_rx) = watch::channel(false);
    let ops_addr = ops_listener.as_ref().map(|(_, a)| *a);
    let ops_server = ops_listener.map(|(l, _)| {
        let ops_limits = llmgw_listener::Limits {
            max_connections: OPS_MAX_CONNECTIONS,
            max_unauthenticated: OPS_MAX_CONNECTIONS,
            ..limits
        };
        tokio::spawn(server::serve(
            l,
            Arc::clone(&state),
            llmgw_listener::Gate::new("ops", ops_limits),
            server::Role::Ops,
            ops_shutdown_rx,
            OPS_GRACE,
        ))
    });
    info!(
        node_id = %config.node_id,
        control_planes = config.control_planes.len(),
        "connecting to the control plane"
    );
    let (channels, channels_rx) = watch::channel(None);
    let incarnation = limits::client::incarnation(&config.node_id);
    let live_client = tokio::spawn(
        live::client::LiveClient {
            live,
            channels: channels_rx.clone(),
            node_id: config.node_id.clone(),
            incarnation: incarnation.clone(),
            auth: auth.clone(),
            backoff: backoff::Backoff::new(config.backoff_initial, config.backoff_max),
            proxy_port: local_addr.port(),
            advertise_url: config.advertise_url.clone().unwrap_or_default(),
        }
        .run(),
    );
    let quota = tokio::spawn(
        limits::client::QuotaClient {
            limiter,
            channels: channels_rx,
            node_id: incarnation,
            auth: auth.clone(),
            backoff: backoff::Backoff::new(config.backoff_initial, config.backoff_max),
        }
        .run(),
    );
    let discovery = tokio::spawn(
        discovery::Discovery {
            endpoints: config.control_planes,
            node_id: config.node_id.clone(),
            auth,
            tls_ca: config.tls_ca_pem.map(Certificate::from_pem),
            connect_timeout: config.connect_timeout,
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
            backoff: backoff::Backoff::new(config.backoff_initial, config.backoff_max),
            table: table.clone(),
            versions: versions_tx,
            channels,
        }
        .run(),
    );

    Ok(Running {
        local_addr,
        ops_addr,
        ops_shutdown,
        ops_server,
        node_id: config.node_id,
        table,
        versions,
        state,
        shutdown,
        server: Some(server),
        discovery: Some(discovery),
        quota: Some(quota),
        live: Some(live_client),
        logs: Some(logs),
        span_worker,
        flush_timeout: config.shutdown_grace,
    })
}

/// A started data plane. Call [`Running::shutdown`] and then
/// [`Running::join`] to stop it gracefully; dropping it stops it abruptly.
pub struct Running {
    local_addr: SocketAddr,
    ops_addr: Option<SocketAddr>,
    ops_shutdown: watch::Sender<bool>,
    ops_server: Option<JoinHandle<()>>,
    node_id: String,
    table: TableHandle,
    versions: watch::Receiver<u64>,
    state: Arc<server::State>,
    shutdown: watch::Sender<bool>,
    // Options only so `join` can take them while `Drop` still aborts.
    server: Option<JoinHandle<()>>,
    discovery: Option<JoinHandle<()>>,
    quota: Option<JoinHandle<()>>,
    /// The live client (requests in flight, cancel).
    live: Option<JoinHandle<()>>,
    logs: Option<logs::LogsHandle>,
    /// The span export task, flushed at the end of `join`.
    span_worker: Option<llmgw_telemetry::Worker>,
    flush_timeout: std::time::Duration,
}

impl Running {
    /// The address the HTTP server is bound to (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the ops listener (/healthz, /readyz, /metrics), if
    /// one was asked for.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The limits' buckets and the quota link (#15).
    pub fn limiter(&self) -> &Arc<limits::Limiter> {
        &self.state.proxy.limiter
    }

    /// The requests in flight (#17).
    pub fn live(&self) -> &Arc<live::Live> {
        &self.state.proxy.live
    }

    /// The routing table being served.
    pub fn table(&self) -> &TableHandle {
        &self.table
    }

    /// Version of the applied snapshot; 0 before the first one.
    pub fn applied_version(&self) -> u64 {
        *self.versions.borrow()
    }

    /// Changes whenever a snapshot is applied, a resent version included.
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.versions.clone()
    }

    /// Waits until a snapshot of at least `version` has been applied.
    pub async fn wait_for_version(&self, version: u64) -> Result<u64> {
        let mut rx = self.versions.clone();
        let v = rx
            .wait_for(|v| *v >= version)
            .await
            .map_err(|_| anyhow!("the discovery client has stopped"))?;
        Ok(*v)
    }

    /// What /readyz reports: a table is applied and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.state.not_ready_reason().is_none()
    }

    /// True while both the HTTP server and the discovery client run.
    pub fn is_running(&self) -> bool {
        let alive = |t: &Option<JoinHandle<()>>| t.as_ref().is_some_and(|t| !t.is_finished());
        alive(&self.server) && alive(&self.discovery)
    }

    /// Starts draining: /readyz fails at once, no new connections are
    /// accepted, and open ones get the grace period to finish.
    pub fn shutdown(&self) {
        self.state.draining.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
    }

    /// Waits for the HTTP server to finish draining, then stops discovery.
    /// Without a prior [`Running::shutdown`] this waits until one happens
    /// elsewhere, i.e. forever.
    pub async fn join(mut self) -> Result<()> {
        let served = match self.server.take() {
            Some(server) => server.await,
            None => Ok(()),
        };
        self.ops_shutdown.send_replace(true);
        if let Some(ops) = self.ops_server.take() {
            // Its failure would only be a panic, reported by the runtime.
            let _ = ops.await;
        }
        for task in [self.discovery.take(), self.quota.take(), self.live.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            // A cancelled task is the expected outcome.
            let _ = task.await;
        }
        // Records of the last responses may still be being counted.
        self.state
            .proxy
            .settled(self.flush_timeout.min(std::time::Duration::from_secs(5)))
            .await;
        if let Some(logs) = self.logs.take() {
            let report = logs.flush(self.flush_timeout).await;
            info!(?report, "request-log spool flushed");
        }
        if let Some(worker) = self.span_worker.take() {
            // The last requests' spans, sent within a bound: a collector
            // that is down must not hold the shutdown.
            worker
                .flush(self.flush_timeout.min(std::time::Duration::from_secs(5)))
                .await;
        }
        served.context("the HTTP server task failed")?;
        info!("data plane stopped");
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in [
            self.server.take(),
            self.ops_server.take(),
            self.discovery.take(),
            self.quota.take(),
            self.live.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
    }
}
