//! The `llmgw-dataplane` binary: parse flags, set up logging, start the data
//! plane, and drain it on SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use llmgw_dataplane::{init_tracing, start, Cli};
use tracing::{error, info, warn};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    // Installed before start so an early SIGTERM is not lost.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match start(config).await {
        Ok(r) => r,
        Err(e) => {
            error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };

    let signal = signals.recv().await;
    info!(signal, "shutting down");
    running.shutdown();
    tokio::select! {
        joined = running.join() => match joined {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e:#}");
                ExitCode::FAILURE
            }
        },
        // An impatient operator: a second signal skips the drain.
        signal = signals.recv() => {
            warn!(signal, "second signal; exiting without finishing the drain");
            ExitCode::FAILURE
        }
    }
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals)
    }

    async fn recv(&mut self) -> &'static str {
        // Without a handler, waiting fails at once; treat that as a signal.
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
