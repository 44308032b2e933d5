//! `secondary`: parse flags, set up tracing, build, serve until a signal, say why it stopped.

use clap::Parser;
use replog_secondary::config::SecondaryConfig;
use replog_secondary::startup::Application;
use replog_shell::{shutdown, telemetry};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// The allocator: jemalloc returns freed pages to the kernel after its decay time, so a node's
/// resident memory follows what it holds. glibc's malloc kept the freed buffers of large runs in
/// per-thread arenas: a secondary under `w=1` load grew to about 95 MiB, and at 56 MiB it held
/// only 18 (docs/BENCHMARKS.md, "Round 5").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = SecondaryConfig::parse();
    telemetry::init();
    let id = config.id.clone();
    let stop = CancellationToken::new();
    let app = match Application::build(config, stop.clone()).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%id, %error, "secondary failed to start");
            return ExitCode::FAILURE;
        }
    };
    let addr = app.local_addr();
    tracing::info!(%id, %addr, "secondary listening");
    // The one line on stdout: tests and scripts read the bound address from it.
    println!("listening on http://{addr}");
    let signal = tokio::spawn(shutdown::wait_for_stop(stop.clone()));
    let served = app.run_until_stopped().await;
    let reason = signal.await.ok();
    match served {
        Ok(()) => {
            tracing::info!(%id, ?reason, "secondary stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%id, %error, ?reason, "secondary stopped with an error");
            ExitCode::FAILURE
        }
    }
}
