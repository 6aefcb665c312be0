//! The `llmgw-mock` binary: parse flags, start the mock, print
//! `listening on IP:PORT` as the first stdout line (tests parse it), and
//! serve until SIGINT or SIGTERM.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use llmgw_mock::{start, Cli};
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let config = Cli::parse().into_config();
    let server = match start(config).await {
        Ok(s) => s,
        Err(e) => {
            error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "listening on {}", server.addr())
            .and_then(|()| out.flush())
            .is_err()
        {
            error!("cannot write the listening address to stdout");
            return ExitCode::FAILURE;
        }
    }
    wait_for_signal().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            error!("cannot install the SIGTERM handler: {e}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
