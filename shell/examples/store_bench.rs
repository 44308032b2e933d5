//! Append throughput of [`SegmentedLog`] with and without grouping fsyncs.
//!
//! Appends `--entries` entries of `--size` bytes of content into a fresh log per run, in batches
//! of 1 (one fsync per entry), 64 and 512 entries (one fsync per batch), and with syncing off,
//! then reads everything back in pages. Prints entries/s and MB/s of record bytes on disk.
//!
//! ```text
//! cargo run --release -p replog-common --example store_bench -- --entries 20000
//! ```
//!
//! The numbers depend on the disk under `--dir` (a temporary directory by default): on tmpfs an
//! fsync costs nothing, so the grouping shows no gain there.

use clap::Parser;
use replog_common::{Entry, MessageId, Order};
use replog_shell::store::{LogStore, SegmentedLog, SegmentedLogOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Measures SegmentedLog append and read throughput.
#[derive(Debug, Parser)]
struct Args {
    /// Entries appended per run.
    #[arg(long, default_value_t = 20_000)]
    entries: u64,
    /// Bytes of content per entry (the message id, a UUID, adds 36 more).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Where to create the temporary logs (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One way of appending to measure.
struct Run {
    /// Entries per `append` call.
    batch: usize,
    /// Whether appends are fsynced.
    sync: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let root = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    println!(
        "{} entries of {} content bytes, logs under {}",
        args.entries,
        args.size,
        root.path().display()
    );
    let entries: Vec<Entry> = (1..=args.entries)
        .map(|order| Entry {
            order: Order(order),
            message_id: MessageId::random(),
            content: "x".repeat(args.size),
        })
        .collect();

    let runs = [
        Run {
            batch: 1,
            sync: true,
        },
        Run {
            batch: 64,
            sync: true,
        },
        Run {
            batch: 512,
            sync: true,
        },
        Run {
            batch: 1,
            sync: false,
        },
        Run {
            batch: 512,
            sync: false,
        },
    ];
    println!(
        "{:<22} {:>10} {:>12} {:>9} {:>8}",
        "run", "seconds", "entries/s", "MB/s", "fsyncs"
    );
    for (i, run) in runs.iter().enumerate() {
        let dir = root.path().join(format!("run-{i}"));
        let options = SegmentedLogOptions {
            sync: run.sync,
            ..SegmentedLogOptions::default()
        };
        let (log, _) = SegmentedLog::open(&dir, options)?;
        let started = Instant::now();
        for batch in entries.chunks(run.batch) {
            log.append(batch)?;
        }
        let elapsed = started.elapsed();
        let fsyncs = if run.sync {
            entries.len().div_ceil(run.batch).to_string()
        } else {
            "0".to_owned()
        };
        report(
            &format!(
                "append batch {:>3} {}",
                run.batch,
                if run.sync { "sync" } else { "nosync" }
            ),
            elapsed,
            entries.len(),
            bytes_on_disk(&dir)?,
            &fsyncs,
        );

        if i + 1 == runs.len() {
            let started = Instant::now();
            let mut from = Order(1);
            let mut read = 0;
            loop {
                let page = log.read(from, 100)?;
                let Some(last) = page.last() else { break };
                from = last.order.next();
                read += page.len();
            }
            report(
                "read pages of 100",
                started.elapsed(),
                read,
                bytes_on_disk(&dir)?,
                "-",
            );
        }
    }
    Ok(())
}

fn report(name: &str, elapsed: Duration, entries: usize, bytes: u64, fsyncs: &str) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{name:<22} {seconds:>10.3} {:>12.0} {:>9.1} {fsyncs:>8}",
        entries as f64 / seconds,
        bytes as f64 / seconds / 1e6,
    );
}

fn bytes_on_disk(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}
