//! `replog-bench`: replog measured beside the bare RabbitMQ pipeline of the same shape, in one
//! invocation, so that the ratio between them means something on whatever machine runs it.
//!
//! - [`args`]: the flags and their validation into a [`args::Plan`].
//! - [`driver`]: closed- and open-loop clients around one `write` function.
//! - [`raw`]: the bare pipeline (confirmed publisher, fanout, batched acks, cumulative replies).
//! - [`http`]: the lean keep-alive HTTP/1.1 client of replog's write path.
//! - [`memory`]: the nodes' resident memory sampled during a cell, and its growth.
//! - [`cpu`]: CPU time per write by process (broker, load generator, each node).
//! - [`replog`]: replog through HTTP, on a cluster started here or a running one; lag sampling.
//! - [`stats`]: percentiles, lag summaries, ratios.
//! - [`report`]: the cells, as JSON and markdown tables.

#![warn(missing_docs)]

pub mod args;
pub mod cpu;
pub mod driver;
pub mod http;
pub mod memory;
pub mod raw;
pub mod replog;
pub mod report;
pub mod stats;

use args::{Plan, Target};
use report::{Cell, Lag, Ratios, System};
use stats::Latency;

/// Runs every cell of `plan`, in order: for each run, queue type, number of secondaries and
/// client count, the bare pipeline first, then replog for each `w`. A cell that cannot run is reported with its error
/// and the rest go on. `progress` sees each cell as it finishes.
pub async fn run(plan: &Plan, mut progress: impl FnMut(&Cell)) -> Result<Vec<Cell>, String> {
    let binaries = if plan.replog && plan.target == Target::Start {
        eprintln!("building release node binaries (once)...");
        let built = tokio::task::spawn_blocking(|| {
            replog_testkit::Binaries::get(replog_testkit::Profile::Release)
        })
        .await
        .map_err(|error| format!("the build task failed: {error}"))?;
        Some(built.map_err(|error| error.to_string())?)
    } else {
        None
    };
    let mut cells = Vec::new();
    for run in 1..=plan.runs {
        for &queue_type in &plan.queue_types {
            for (&secondaries, &clients) in plan
                .secondaries
                .iter()
                .flat_map(|n| plan.clients.iter().map(move |c| (n, c)))
            {
                let empty = |system: System, w: String| Cell {
                    run,
                    system,
                    queue_type,
                    secondaries,
                    partitions: if system == System::Raw {
                        1
                    } else {
                        plan.partitions
                    },
                    per_partition: Vec::new(),
                    clients,
                    w,
                    pace: plan.pace.label(),
                    size: plan.size,
                    ok: 0,
                    failed: 0,
                    error: None,
                    elapsed_s: 0.0,
                    throughput: 0.0,
                    latency: Latency::of_micros(&mut []),
                    lag: Vec::new(),
                    unconfirmed: None,
                    catch_up_ms: None,
                    vs_raw: None,
                    memory: Vec::new(),
                    cpu: Vec::new(),
                };
                let mut raw_cell = None;
                if plan.raw {
                    let spec = raw::RawSpec {
                        amqp_url: plan.amqp_url.clone(),
                        queue_type,
                        consumers: secondaries,
                        window: plan.window,
                        prefetch: plan.prefetch,
                        size: plan.size,
                        clients,
                        pace: plan.pace,
                        stop: plan.stop,
                    };
                    let mut cell = empty(System::Raw, "all".into());
                    match raw::run(&spec).await {
                        Ok(mut measured) => {
                            fill(&mut cell, &mut measured.outcome);
                            cell.unconfirmed = Some(measured.unconfirmed);
                            cell.cpu = measured.cpu;
                            cell.lag = measured
                                .lag
                                .into_iter()
                                .map(|lag| Lag {
                                    name: lag.name,
                                    entries: lag.entries,
                                    delivery: Some(lag.delivery),
                                })
                                .collect();
                        }
                        Err(error) => cell.error = Some(error.to_string()),
                    }
                    progress(&cell);
                    raw_cell = Some(cell.clone());
                    cells.push(cell);
                }
                if !plan.replog {
                    continue;
                }
                for w in &plan.w {
                    let spec = replog::ReplogSpec {
                        target: plan.target.clone(),
                        amqp_url: plan.amqp_url.clone(),
                        queue_type,
                        secondaries,
                        partitions: plan.partitions,
                        size: plan.size,
                        clients,
                        w: w.resolve(secondaries),
                        pace: plan.pace,
                        stop: plan.stop,
                        timeout: plan.timeout,
                        memory_every: plan.memory_every,
                        master_flags: plan.master_flags.clone(),
                    };
                    let mut cell = empty(System::Replog, w.label());
                    match replog::run(&spec, binaries.as_ref()).await {
                        Ok(mut measured) => {
                            fill(&mut cell, &mut measured.outcome);
                            cell.catch_up_ms = measured.catch_up.map(|d| d.as_secs_f64() * 1000.0);
                            cell.memory = measured.memory;
                            cell.cpu = measured.cpu;
                            cell.per_partition = measured
                                .per_partition
                                .iter()
                                .map(|&answered| {
                                    if cell.elapsed_s > 0.0 {
                                        answered as f64 / cell.elapsed_s
                                    } else {
                                        0.0
                                    }
                                })
                                .collect();
                            cell.lag = measured
                                .lag
                                .into_iter()
                                .map(|lag| Lag {
                                    name: lag.name,
                                    entries: lag.entries,
                                    delivery: None,
                                })
                                .collect();
                        }
                        Err(error) => cell.error = Some(error.to_string()),
                    }
                    cell.vs_raw = raw_cell.as_ref().map(|raw| Ratios::of(&cell, raw));
                    progress(&cell);
                    cells.push(cell);
                }
            }
        }
    }
    Ok(cells)
}

/// Copies what the clients measured into a cell.
fn fill(cell: &mut Cell, outcome: &mut driver::Outcome) {
    cell.ok = outcome.latencies_us.len() as u64;
    cell.failed = outcome.failed;
    cell.error = outcome.first_error.clone();
    cell.elapsed_s = outcome.elapsed.as_secs_f64();
    cell.throughput = outcome.throughput();
    cell.latency = Latency::of_micros(&mut outcome.latencies_us);
}
