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
    // First: the flag holds for the whole process, and for memory touched
    // from then on.
    let huge_pages = no_huge_pages();
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
    if let Err(e) = huge_pages {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off; log ingest costs more CPU");
    }
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

/// Turns transparent huge pages off for this process, as the data plane
/// does. mimalloc asks the kernel for them on its arenas
/// (`madvise(MADV_HUGEPAGE)`) and gives freed memory back, so log ingest,
/// which allocates and frees a batch's buffers and a zstd context's tables
/// per batch, kept faulting in fresh 2 MiB pages: zeroing them was 18% of
/// the control plane's CPU samples during S2 (docs/benchmarks.md, "Huge
/// pages in the control plane").
fn no_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::thread::disable_transparent_huge_pages(true)?;
    Ok(())
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
