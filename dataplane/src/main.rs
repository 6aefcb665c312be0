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
    // First: the flag holds for the whole process, and for memory touched
    // from then on.
    let huge_pages = no_huge_pages();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if let Err(e) = huge_pages {
        warn!(error = %e, "cannot turn transparent huge pages off; memory per connection is higher");
    }
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

/// Turns transparent huge pages off for this process. mimalloc asks the
/// kernel for them on its arenas (`madvise(MADV_HUGEPAGE)`), and a kernel
/// that grants them (THP `always` or `madvise`) keeps a whole 2 MiB region
/// resident for a few touched bytes of it: measured with 1,000 open
/// streams, 57 KiB per stream without them against 82 KiB with them, and
/// 12 MiB idle against 26 MiB (docs/benchmarks.md, S5, "Memory per open
/// stream"). The data plane's heap is small objects, where huge pages save
/// little.
fn no_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::thread::disable_transparent_huge_pages(true)?;
    Ok(())
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
