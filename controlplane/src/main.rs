//! `llmgw-controlplane`: parses flags, starts the control plane, and stops
//! it gracefully on SIGTERM or Ctrl-C.

use clap::Parser;
use llmgw_controlplane::config::Args;

// glibc's malloc cost a fifth of log ingest's instructions; see
// docs/architecture.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let telemetry = match llmgw_controlplane::init_tracing(args.log_format, &args.otel) {
        Ok(t) => t,
        Err(e) => {
            // No subscriber could be installed: stderr is the only place.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("llmgw-controlplane: {e:#}");
            }
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(s) = &telemetry {
        tracing::info!(export = ?s, "exporting traces over OTLP");
    }
    let running = match llmgw_controlplane::start(args).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stop = running.shutdown_sender();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    let code = match running.wait().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    if let Some(t) = telemetry {
        t.flush(std::time::Duration::from_secs(5)).await;
    }
    code
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
