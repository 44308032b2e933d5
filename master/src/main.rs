//! `master`: parse flags, set up tracing, build, serve until a signal, say why it stopped.

use clap::Parser;
use replog_master::config::MasterConfig;
use replog_master::startup::Application;
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
    let config = MasterConfig::parse();
    telemetry::init();
    let stop = CancellationToken::new();
    let app = match Application::build(config, stop.clone()).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "master failed to start");
            return ExitCode::FAILURE;
        }
    };
    let addr = app.local_addr();
    tracing::info!(%addr, "master listening");
    // The one line on stdout: tests and scripts read the bound address from it.
    println!("listening on http://{addr}");
    let signal = tokio::spawn(shutdown::wait_for_stop(stop.clone()));
    let served = app.run_until_stopped().await;
    let reason = signal.await.ok();
    match served {
        Ok(()) => {
            tracing::info!(?reason, "master stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, ?reason, "master stopped with an error");
            ExitCode::FAILURE
        }
    }
}
