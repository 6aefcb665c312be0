//! llmgw control plane: owns the database, pushes versioned snapshots to
//! data planes over the discovery stream, and serves the admin API over
//! gRPC and gRPC-web on one port.

pub mod admin;
pub mod apply;
pub mod config;
pub mod connections;
pub mod convert;
pub mod dashboard;
pub mod discovery;
pub mod explain;
pub mod hub;
pub mod live;
pub mod logs;
pub mod model_test;
pub mod model_tools;
pub mod playground;
pub mod quota;
pub mod replay;
pub mod run;
pub mod secrets;
pub mod settings;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod upstream_call;
pub mod upstream_models;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use llmgw_proto::v1::{
    admin_server::AdminServer, discovery_server::DiscoveryServer, live_server::LiveServer,
    logs_server::LogsServer, quota_server::QuotaServer,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Args;
use crate::hub::Hub;
use crate::secrets::Sealer;
use crate::store::Store;

/// Largest HTTP/2 frame the control plane accepts (`SETTINGS_MAX_FRAME_SIZE`).
const LOG_FRAME_BYTES: u32 = 256 * 1024;
/// File descriptors kept out of the connection cap: the database pool,
/// files, logs.
const FD_RESERVE: u64 = 256;

/// A started control plane.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    store: Store,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops accepting, ends the discovery streams and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let r = self.task.await.context("server task panicked")?;
        self.store.close().await;
        r
    }

    /// Waits until the server stops by itself.
    pub async fn wait(self) -> anyhow::Result<()> {
        let Running { task, store, .. } = self;
        let r = task.await.context("server task panicked")?;
        store.close().await;
        r
    }

    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens the store, loads the secrets, publishes the first snapshot and
/// starts serving.
pub async fn start(args: Args) -> anyhow::Result<Running> {
    let mut limits = args.connections.limits();
    limits.check().map_err(anyhow::Error::msg)?;
    let retention_days = logs::retention::Days::new(
        args.log_retention_days,
        args.rollup_retention_days,
        args.body_retention_days,
        args.rollup_minute_retention_days,
    )
    .map_err(anyhow::Error::msg)?;
    // Connections are file descriptors: take all the process may have, and
    // keep the connection caps below it.
    if let Some(fds) = llmgw_listener::raise_fd_limit() {
        limits = limits.fit_fds(fds.soft, FD_RESERVE);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data folder {}", args.data_dir.display()))?;

    let master = secrets::from_env_or_file(
        args.master_key.clone(),
        &args.data_dir.join("master.key"),
        secrets::generate_master_key,
    )?;
    if master.generated {
        tracing::warn!(
            file = %master.file.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            "GENERATED A NEW MASTER KEY: provider API keys are sealed with it. Back this file up, \
             or set LLMGW_MASTER_KEY in production; without it the stored keys cannot be opened"
        );
    } else if let Some(file) = &master.file {
        tracing::info!(file = %file.display(), "master key read from file");
    }
    // An empty LLMGW_MASTER_KEY_PREVIOUS means none.
    let previous: Vec<secrecy::SecretString> = args
        .master_key_previous
        .iter()
        .filter(|k| !secrecy::ExposeSecret::expose_secret(*k).trim().is_empty())
        .cloned()
        .collect();
    let sealer = Arc::new(Sealer::new(&master.value, &previous)?);

    let url = match &args.database_url {
        Some(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ => store::sqlite_url(&args.data_dir.join("llmgw.db")),
    };
    tracing::info!(database = %store::redact_url(&url), "opening database");
    let store = Store::open(&url, sealer)
        .await
        .with_context(|| format!("cannot open database {}", store::redact_url(&url)))?;
    store
        .check_master_key()
        .await
        .context("master key check failed")?;
    if store.sync_settings(&args.settings().to_stored()).await? {
        tracing::info!("global settings changed; publishing a new version");
    }

    let admin_token = load_token(
        args.admin_token.clone(),
        &args,
        "admin-token",
        "LLMGW_ADMIN_TOKEN",
    )?;
    let dataplane_token = load_token(
        args.dataplane_token.clone(),
        &args,
        "dataplane-token",
        "LLMGW_DATAPLANE_TOKEN",
    )?;

    let hub = Hub::new(store.clone());
    hub.refresh()
        .await
        .context("cannot build the first snapshot")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(hub.clone().reconcile(shutdown_rx.clone()));
    tokio::spawn(hub.clone().listen(shutdown_rx.clone()));

    let log_feed = logs::LogFeed::new();
    let live_hub = live::LiveHub::new(store.clone());
    tokio::spawn(live_hub.clone().listen(shutdown_rx.clone()));
    tokio::spawn(live_hub.clone().prune(shutdown_rx.clone()));

    let admin = AdminServer::with_interceptor(
        admin::AdminService::new(store.clone(), hub.clone())
            .with_logs(log_feed.clone(), shutdown_rx.clone())
            .with_live(live_hub.clone()),
        move |req: tonic::Request<()>| {
            discovery::check_bearer(req.metadata(), &admin_token, "admin token")?;
            connections::authenticated(&req);
            Ok(req)
        },
    );
    let logs_svc = tonic::service::interceptor::InterceptedService::new(
        LogsServer::new(logs::LogsService::new(
            store.clone(),
            log_feed.clone(),
            shutdown_rx.clone(),
        ))
        .max_decoding_message_size(logs::MAX_BATCH_BYTES),
        data_plane_auth(dataplane_token.clone()),
    );
    let discovery_svc = DiscoveryServer::with_interceptor(
        discovery::DiscoveryService::new(hub.clone(), store.clone(), shutdown_rx.clone()),
        data_plane_auth(dataplane_token.clone()),
    );
    let quota_svc = QuotaServer::with_interceptor(
        quota::QuotaService::new(
            store.clone(),
            hub.subscribe(),
            log_feed,
            args.quota_lease_ms,
            shutdown_rx.clone(),
        ),
        data_plane_auth(dataplane_token.clone()),
    );
    let live_svc = LiveServer::with_interceptor(
        live::LiveService::new(live_hub, shutdown_rx.clone()),
        data_plane_auth(dataplane_token),
    );

    let mut builder = tonic::transport::Server::builder()
        .trace_fn(telemetry::admin_call)
        .accept_http1(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        // Log batches run to hundreds of KiB; at HTTP/2's default 16 KiB a
        // data plane writes each batch as a dozen frames, one system call
        // each, on its request core.
        .max_frame_size(Some(LOG_FRAME_BYTES));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let cert = std::fs::read(cert)
            .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?;
        let key =
            std::fs::read(key).with_context(|| format!("cannot read TLS key {}", key.display()))?;
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )
            .context("invalid TLS configuration")?;
    }
    let dashboard = dashboard::DashboardLayer::new(args.dashboard_dir());
    if dashboard.is_built() {
        tracing::info!(dir = %dashboard.dir().display(), "serving the web dashboard at /");
    } else {
        tracing::info!(
            dir = %dashboard.dir().display(),
            "web dashboard not built (cd dashboard && npm ci && npm run build)"
        );
    }
    // Page requests are answered before tonic-web, which refuses HTTP/1.1
    // requests that are not gRPC-web.
    let router = builder
        .layer(connections::ConnLayer::requests())
        .layer(dashboard)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(connections::ConnLayer::bodies(limits))
        .add_service(admin)
        .add_service(discovery_svc)
        .add_service(logs_svc)
        .add_service(quota_svc)
        .add_service(live_svc);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(
        address = %local_addr,
        tls = args.tls_cert.is_some(),
        "control plane listening (gRPC and gRPC-web)"
    );
    tokio::spawn(quota::prune(
        store.clone(),
        args.quota_lease_ms,
        shutdown_rx.clone(),
    ));
    // Before ingest starts: records about to lose their bodies are stored
    // without them.
    store
        .details()
        .set_body_days(retention_days.bodies_in_effect());
    tokio::spawn(logs::retention::run(
        store.clone(),
        retention_days,
        shutdown_rx.clone(),
    ));
    tokio::spawn(logs::reindex::run(
        store.clone(),
        retention_days,
        shutdown_rx.clone(),
    ));
    tokio::spawn(logs::deltas::run(store.clone(), shutdown_rx.clone()));
    // Beyond a cap a connection is closed at once; the others idle out.
    let gate = llmgw_listener::Gate::new("controlplane", limits);
    let incoming = futures::StreamExt::filter_map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        move |accepted| {
            let admitted = match accepted {
                Ok(stream) => {
                    // Without TCP_NODELAY a unary response (headers, message
                    // and trailers in separate writes) meets the client's
                    // delayed ACK: +40 ms per call.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    Ok(connections::guard(&gate, stream))
                }
                Err(e) => Err(e),
            };
            async move {
                match admitted {
                    Ok(guarded) => guarded.map(Ok::<_, std::io::Error>),
                    Err(e) => {
                        // Usually out of file descriptors: tonic would retry
                        // at once and spin. Pause, as the data plane does;
                        // at most ten lines a second.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        None
                    }
                }
            }
        },
    );
    let mut stop = shutdown_rx;
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("server failed")
    });
    Ok(Running {
        local_addr,
        shutdown: shutdown_tx,
        task,
        store,
    })
}

/// The interceptor of the services data planes call (discovery, logs,
/// quota, live): the data-plane token, and the connection counts as
/// authenticated.
fn data_plane_auth(
    token: Arc<secrecy::SecretString>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        discovery::check_bearer(req.metadata(), &token, "data-plane token")?;
        connections::authenticated(&req);
        Ok(req)
    }
}

fn load_token(
    env: Option<secrecy::SecretString>,
    args: &Args,
    file: &str,
    var: &str,
) -> anyhow::Result<Arc<secrecy::SecretString>> {
    let loaded = secrets::from_env_or_file(env, &args.data_dir.join(file), secrets::random_token)?;
    if let Some(path) = &loaded.file {
        if loaded.generated {
            tracing::warn!(
                file = %path.display(),
                "{var} is not set: generated a token and stored it in this file (mode 0600)"
            );
        } else {
            tracing::info!(file = %path.display(), "{var} is not set: using the token in this file");
        }
    }
    Ok(Arc::new(loaded.value))
}

/// Installs the tracing subscriber: the log, filtered by `RUST_LOG`
/// (default `info`), and the OpenTelemetry layer when an OTLP endpoint is
/// set (its own filter: only [`telemetry::TARGET`]'s spans). Must run
/// inside the tokio runtime.
pub fn init_tracing(
    format: config::LogFormat,
    otel: &llmgw_telemetry::TelemetryArgs,
) -> anyhow::Result<Option<telemetry::Telemetry>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = match format {
        config::LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
        config::LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    let (otel_layer, running) = match telemetry::layer(otel)? {
        Some((layer, running)) => (Some(layer), Some(running)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(otel_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(running)
}
