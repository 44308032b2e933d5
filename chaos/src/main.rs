//! `chaos`: parse flags, set up progress logging, run, print the summary; exit 0 when every
//! check passed, 1 on any violation, 2 when the run itself could not be carried out.

use chaos::config::ChaosConfig;
use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = ChaosConfig::parse();
    // Progress goes to stderr; the summary to stdout.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    match chaos::run(config).await {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("chaos: the run could not be carried out: {error}");
            ExitCode::from(2)
        }
    }
}
