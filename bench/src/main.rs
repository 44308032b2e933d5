//! `load`: sends writes to a running master from concurrent clients and reports throughput and
//! latency percentiles. Loopback or your own hosts only; the run is bounded by `--writes`.
//!
//! ```text
//! cargo run --release -p replog-bench -- --master http://127.0.0.1:8000 --writes 20000 --concurrency 64 --w 3
//! ```

use clap::Parser;
use replog_common::wire::http::WriteBody;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flags of the load generator.
#[derive(Debug, Parser)]
#[command(name = "load", about = "Write load against a replog master")]
struct Args {
    /// The master's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    master: String,
    /// Total writes to send.
    #[arg(long, default_value_t = 10_000)]
    writes: usize,
    /// Clients sending at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Write concern of every write.
    #[arg(long, default_value_t = 1)]
    w: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .expect("client");
    let url = format!("{}/messages", args.master.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let payload = "x".repeat(args.size);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, url, next, failures, payload) = (
                client.clone(),
                url.clone(),
                next.clone(),
                failures.clone(),
                payload.clone(),
            );
            let (total, w) = (args.writes, args.w);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let body = WriteBody {
                        content: payload.clone(),
                        w: Some(w as u64),
                        message_id: None,
                        timeout_ms: None,
                    };
                    let sent = Instant::now();
                    match client.post(&url).json(&body).send().await {
                        Ok(response) if response.status().is_success() => {
                            latencies.push(sent.elapsed())
                        }
                        Ok(response) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("write failed: {}", response.status());
                        }
                        Err(error) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("write failed: {error}");
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(args.writes);
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    println!(
        "writes={} ok={} failed={} w={} concurrency={} size={}B elapsed={:.2}s throughput={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms",
        args.writes,
        latencies.len(),
        failures.load(Ordering::Relaxed),
        args.w,
        args.concurrency,
        args.size,
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}
