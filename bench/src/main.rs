//! `load`: replog's benchmark. Runs replog through HTTP (a cluster of release nodes it starts,
//! or `--master URL`) and, with `--raw`, the bare RabbitMQ pipeline of the same shape in the same
//! invocation, and prints both with their ratio. Loopback or your own hosts only.
//!
//! ```text
//! cargo run --release -p replog-bench --bin load -- --raw --clients 1,16,64 --w 1,2,3 \
//!     --queue-type classic,quorum --duration 10s --markdown out.md --json out.json
//! cargo run --release -p replog-bench --bin load -- --master http://127.0.0.1:8000 --writes 20000 --concurrency 64 --w 3
//! cargo run --release -p replog-bench --bin load -- --secondaries 1,2,4,8 --w all,2 --duration 8s --summary out.md
//! cargo run --release -p replog-bench --bin load -- --secondaries 2 --partitions 2 --w 2
//! cargo run --release -p replog-bench --bin load -- --clients 64 --w 3 --rate 2000 --duration 10m --memory-every 5s
//! ```

use clap::Parser;
use replog_bench::args::Args;
use replog_bench::report::{self, Cell, System};

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("load: {error}");
            std::process::exit(2);
        }
    };
    eprintln!("load: {}", report::describe(&plan));
    let progress = |cell: &Cell| {
        let system = match cell.system {
            System::Raw => "raw",
            System::Replog => "replog",
        };
        match (&cell.error, cell.ok) {
            (Some(error), 0) => eprintln!(
                "run {} {} C={} {system} w={}: not run: {error}",
                cell.run,
                cell.queue_type.name(),
                cell.clients,
                cell.w
            ),
            _ => eprintln!(
                "run {} {} N={} C={} {system} w={}: {} ok, {} failed, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                cell.run,
                cell.queue_type.name(),
                cell.secondaries,
                cell.clients,
                cell.w,
                cell.ok,
                cell.failed,
                cell.throughput,
                cell.latency.p50_ms,
                cell.latency.p99_ms,
                cell.latency.max_ms
            ),
        }
    };
    let cells = match replog_bench::run(&plan, progress).await {
        Ok(cells) => cells,
        Err(error) => {
            eprintln!("load: {error}");
            std::process::exit(1);
        }
    };
    let markdown = report::markdown(&plan, &cells);
    println!("{markdown}");
    if let Some(path) = &args.markdown {
        if let Err(error) = std::fs::write(path, &markdown) {
            eprintln!("load: cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
    }
    if let Some(path) = &args.summary {
        if let Err(error) = std::fs::write(path, report::summary(&cells)) {
            eprintln!("load: cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "description": report::describe(&plan),
            "cells": cells,
        });
        let text = serde_json::to_string_pretty(&json).expect("cells serialise");
        if let Err(error) = std::fs::write(path, text) {
            eprintln!("load: cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
    }
    // A cell that measured nothing is a failed benchmark.
    if cells.iter().any(|cell| cell.ok == 0) {
        std::process::exit(1);
    }
}
