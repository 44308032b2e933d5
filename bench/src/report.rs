//! The results of an invocation: one [`Cell`] per measured (run, queue type, clients, system,
//! w), written as JSON and as markdown tables (one table per run and queue type), with replog's
//! ratio to the bare pipeline of the same run, queue type and clients.

use crate::args::{Pace, Plan, QueueKind, Stop};
use crate::memory::{self, NodeMemory};
use crate::stats::{ratio, LagEntries, Latency};
use serde::Serialize;
use std::fmt::Write as _;

/// Which system a cell measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// The bare RabbitMQ pipeline.
    Raw,
    /// replog through HTTP.
    Replog,
}

impl System {
    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            System::Raw => "raw",
            System::Replog => "replog",
        }
    }
}

/// One lag row: a secondary (or a bare consumer).
#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    /// `s1`, `q1`, or a URL.
    pub name: String,
    /// Entries behind, sampled every 100 ms.
    pub entries: LagEntries,
    /// From publish to delivery (bare pipeline only).
    pub delivery: Option<Latency>,
}

/// replog divided by the bare pipeline: throughput (higher is better) and latencies (lower is
/// better). `None` where the bare pipeline measured nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    /// Writes per second.
    pub throughput: Option<f64>,
    /// p50 latency.
    pub p50: Option<f64>,
    /// p90 latency.
    pub p90: Option<f64>,
    /// p99 latency.
    pub p99: Option<f64>,
    /// Max latency.
    pub max: Option<f64>,
}

impl Ratios {
    /// `replog / raw`, figure by figure.
    pub fn of(replog: &Cell, raw: &Cell) -> Ratios {
        Ratios {
            throughput: ratio(replog.throughput, raw.throughput),
            p50: ratio(replog.latency.p50_ms, raw.latency.p50_ms),
            p90: ratio(replog.latency.p90_ms, raw.latency.p90_ms),
            p99: ratio(replog.latency.p99_ms, raw.latency.p99_ms),
            max: ratio(replog.latency.max_ms, raw.latency.max_ms),
        }
    }
}

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// 1-based repetition.
    pub run: usize,
    /// What was measured.
    pub system: System,
    /// The queue type.
    pub queue_type: QueueKind,
    /// Secondaries of the cluster (queues of the bare pipeline).
    pub secondaries: usize,
    /// Independent logs the writes were spread over (1 for the bare pipeline).
    pub partitions: usize,
    /// Answered writes per second of each log, in partition order (replog only).
    pub per_partition: Vec<f64>,
    /// Concurrent clients.
    pub clients: usize,
    /// The write concern (`all` for the bare pipeline: every consumer).
    pub w: String,
    /// `closed` or `open R/s`.
    pub pace: String,
    /// Entry size in bytes.
    pub size: usize,
    /// Answered writes.
    pub ok: u64,
    /// Failed writes.
    pub failed: u64,
    /// Why the first write failed, or why the cell could not run.
    pub error: Option<String>,
    /// Seconds from the first write to the last answer.
    pub elapsed_s: f64,
    /// Answered writes per second.
    pub throughput: f64,
    /// Latency percentiles.
    pub latency: Latency,
    /// Lag of every secondary (consumer).
    pub lag: Vec<Lag>,
    /// Publishes the broker did not confirm (bare pipeline only).
    pub unconfirmed: Option<u64>,
    /// From the last answer until every secondary held the last entry, in ms (replog only).
    pub catch_up_ms: Option<f64>,
    /// replog against the bare pipeline of the same run, queue type and clients.
    pub vs_raw: Option<Ratios>,
    /// Each node's resident memory over the cell (replog with `--memory-every` only).
    pub memory: Vec<NodeMemory>,
    /// CPU time per answered write, by process (the broker only when it runs here).
    pub cpu: Vec<crate::cpu::ProcessCpu>,
}

/// `1.23`, or `–` for nothing.
fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.decimals$}"))
}

/// What the invocation ran, for the tables' heading.
pub fn describe(plan: &Plan) -> String {
    let stop = match plan.stop {
        Stop::After(duration) => format!("{:.1} s per cell", duration.as_secs_f64()),
        Stop::Writes(writes) => format!("{writes} writes per cell"),
    };
    let pace = match plan.pace {
        Pace::Closed => "closed loop".to_owned(),
        Pace::Open { rate } => format!("open loop at {rate} writes/s"),
    };
    let secondaries = plan
        .secondaries
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let partitions = if plan.partitions > 1 {
        format!(
            ", {} partitions (independent logs) routed by key hash",
            plan.partitions
        )
    } else {
        String::new()
    };
    let memory = plan.memory_every.map_or_else(String::new, |every| {
        format!(", nodes' RSS sampled every {:.1} s", every.as_secs_f64())
    });
    let flags = if plan.master_flags.is_empty() {
        String::new()
    } else {
        format!(", masters started with `{}`", plan.master_flags.join(" "))
    };
    format!(
        "{} B entries, {secondaries} secondaries{partitions}, {pace}, {stop}, {} run(s){memory}{flags}",
        plan.size, plan.runs
    )
}

/// The markdown tables: one per run, queue type and number of secondaries.
pub fn markdown(plan: &Plan, cells: &[Cell]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "_{}_\n", describe(plan));
    let mut groups: Vec<(usize, QueueKind, usize)> = Vec::new();
    for cell in cells {
        let group = (cell.run, cell.queue_type, cell.secondaries);
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    for (run, queue_type, secondaries) in groups {
        let _ = writeln!(
            out,
            "#### Run {run}, {} queues, {secondaries} secondaries\n",
            queue_type.name()
        );
        out.push_str(
            "| system | C | w | load | writes/s | p50 ms | p90 ms | p99 ms | max ms | ×raw writes/s | ×raw p50 | ×raw p99 | lag mean/max entries | failed |\n",
        );
        out.push_str("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
        for cell in cells.iter().filter(|cell| {
            (cell.run, cell.queue_type, cell.secondaries) == (run, queue_type, secondaries)
        }) {
            let lag = if cell.lag.is_empty() {
                "–".to_owned()
            } else {
                cell.lag
                    .iter()
                    .map(|lag| format!("{} {:.1}/{}", lag.name, lag.entries.mean, lag.entries.max))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let vs = cell.vs_raw;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
                cell.system.name(),
                cell.clients,
                cell.w,
                cell.pace,
                cell.throughput,
                cell.latency.p50_ms,
                cell.latency.p90_ms,
                cell.latency.p99_ms,
                cell.latency.max_ms,
                figure(vs.and_then(|vs| vs.throughput), 2),
                figure(vs.and_then(|vs| vs.p50), 2),
                figure(vs.and_then(|vs| vs.p99), 2),
                lag,
                if cell.error.is_some() && cell.ok == 0 {
                    "not run".to_owned()
                } else {
                    cell.failed.to_string()
                },
            );
        }
        out.push('\n');
    }
    let errors: Vec<&Cell> = cells.iter().filter(|cell| cell.error.is_some()).collect();
    if !errors.is_empty() {
        out.push_str("Errors:\n\n");
        for cell in errors {
            let _ = writeln!(
                out,
                "- run {} {} C={} w={}: {}",
                cell.run,
                cell.queue_type.name(),
                cell.clients,
                cell.w,
                cell.error.as_deref().unwrap_or_default().replace('\n', " ")
            );
        }
        out.push('\n');
    }
    let raw_delivery: Vec<String> = cells
        .iter()
        .filter(|cell| cell.system == System::Raw)
        .map(|cell| {
            let per_consumer = cell
                .lag
                .iter()
                .filter_map(|lag| {
                    lag.delivery.map(|delivery| {
                        format!(
                            "{} p50 {:.2} / p99 {:.2} / max {:.2} ms",
                            lag.name, delivery.p50_ms, delivery.p99_ms, delivery.max_ms
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join("; ");
            format!(
                "- run {} {} C={}: {per_consumer}",
                cell.run,
                cell.queue_type.name(),
                cell.clients
            )
        })
        .collect();
    if !raw_delivery.is_empty() {
        out.push_str("Bare pipeline, publish-to-delivery time per consumer:\n\n");
        out.push_str(&raw_delivery.join("\n"));
        out.push_str("\n\n");
    }
    let catch_up: Vec<String> = cells
        .iter()
        .filter(|cell| cell.system == System::Replog)
        .map(|cell| {
            format!(
                "- {} w={}: {}",
                cell_label(cell),
                cell.w,
                cell.catch_up_ms
                    .map_or("not within 60 s".to_owned(), |ms| format!("{ms:.0} ms"))
            )
        })
        .collect();
    if !catch_up.is_empty() {
        out.push_str(
            "replog, time from the last answer until every secondary held the last entry:\n\n",
        );
        out.push_str(&catch_up.join("\n"));
        out.push('\n');
    }
    let cpu: Vec<String> = cells
        .iter()
        .filter(|cell| !cell.cpu.is_empty())
        .map(|cell| {
            format!(
                "- {} {} w={}: {}",
                cell_label(cell),
                cell.system.name(),
                cell.w,
                crate::cpu::line(&cell.cpu)
            )
        })
        .collect();
    if !cpu.is_empty() {
        out.push_str(
            "\nCPU time per answered write, in µs, by process (user + system from `/proc`, over the load; \
             `load` is the load generator, which also runs the bare pipeline's publisher and consumers):\n\n",
        );
        out.push_str(&cpu.join("\n"));
        out.push('\n');
    }
    if plan.partitions > 1 {
        out.push_str("\nreplog, answered writes per second of each partition (log):\n\n");
        for cell in cells.iter().filter(|cell| cell.system == System::Replog) {
            let _ = writeln!(
                out,
                "- {} w={}: {} (total {:.0})",
                cell_label(cell),
                cell.w,
                per_partition(cell),
                cell.throughput
            );
        }
    }
    out.push_str(&memory_tables(cells));
    out
}

/// Which cell a list item is about: `run 1 classic N=2 C=64`.
fn cell_label(cell: &Cell) -> String {
    format!(
        "run {} {} N={} C={}",
        cell.run,
        cell.queue_type.name(),
        cell.secondaries,
        cell.clients
    )
}

/// A "Memory (RSS) over the cell" table per cell whose nodes were sampled; empty if none.
fn memory_tables(cells: &[Cell]) -> String {
    let mut out = String::new();
    for cell in cells.iter().filter(|cell| !cell.memory.is_empty()) {
        let _ = writeln!(
            out,
            "\n#### Memory (RSS) over the cell: run {}, {} queues, {} secondaries, C={}, w={}, {}\n",
            cell.run,
            cell.queue_type.name(),
            cell.secondaries,
            cell.clients,
            cell.w,
            cell.pace
        );
        out.push_str(&memory::table(&cell.memory));
    }
    if !out.is_empty() {
        out.push_str(
            "\n`VmRSS` of each node, sampled from the first write of the cell to the last answer. \
             At warm-up: the first sample after the first minute (or after the first 10% of the \
             cell, if shorter), read `warm-up s` after the first write; peak: the largest sample; \
             growth: last minus at warm-up; slope: least squares over the samples from warm-up \
             on; second-half slope: the same over the second half of the cell (a cache filling to \
             its cap levels off there, a leak does not).\n",
        );
    }
    out
}

/// `p0 1234, p1 1187` writes/s, or `–` when nothing was measured.
fn per_partition(cell: &Cell) -> String {
    if cell.per_partition.is_empty() {
        return "–".to_owned();
    }
    cell.per_partition
        .iter()
        .enumerate()
        .map(|(partition, rate)| format!("p{partition} {rate:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One table of every replog cell, in the order run: secondaries, partitions, clients, `w`,
/// throughput (in total and per partition) and latency. For comparing cluster shapes side by
/// side (`scripts/bench-scaling`).
pub fn summary(cells: &[Cell]) -> String {
    let mut out = String::from(
        "| secondaries | partitions | queues | C | w | writes/s | per partition | p50 ms | p90 ms | p99 ms | max ms | failed |\n\
         |---:|---:|---|---:|---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for cell in cells.iter().filter(|cell| cell.system == System::Replog) {
        let w = if cell.w == "all" {
            format!("all ({})", cell.secondaries + 1)
        } else {
            cell.w.clone()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {w} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            cell.secondaries,
            cell.partitions,
            cell.queue_type.name(),
            cell.clients,
            cell.throughput,
            if cell.partitions > 1 {
                per_partition(cell)
            } else {
                "–".to_owned()
            },
            cell.latency.p50_ms,
            cell.latency.p90_ms,
            cell.latency.p99_ms,
            cell.latency.max_ms,
            if cell.error.is_some() && cell.ok == 0 {
                "not run".to_owned()
            } else {
                cell.failed.to_string()
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(system: System, throughput: f64, p50: f64, p99: f64) -> Cell {
        Cell {
            run: 1,
            system,
            queue_type: QueueKind::Classic,
            secondaries: 2,
            partitions: 1,
            per_partition: vec![],
            clients: 64,
            w: "3".into(),
            pace: "closed".into(),
            size: 100,
            ok: 10,
            failed: 0,
            error: None,
            elapsed_s: 1.0,
            throughput,
            latency: Latency {
                p50_ms: p50,
                p90_ms: p50,
                p99_ms: p99,
                max_ms: p99,
                mean_ms: p50,
            },
            lag: vec![],
            unconfirmed: None,
            catch_up_ms: None,
            vs_raw: None,
            memory: vec![],
            cpu: vec![],
        }
    }

    #[test]
    fn ratios_are_replog_over_raw() {
        let raw = cell(System::Raw, 6000.0, 1.0, 4.0);
        let replog = cell(System::Replog, 3000.0, 2.5, 2.0);
        let ratios = Ratios::of(&replog, &raw);
        assert_eq!(ratios.throughput, Some(0.5));
        assert_eq!(ratios.p50, Some(2.5));
        assert_eq!(ratios.p99, Some(0.5));
    }

    #[test]
    fn a_raw_cell_that_measured_nothing_gives_no_ratio() {
        let raw = cell(System::Raw, 0.0, 0.0, 0.0);
        let replog = cell(System::Replog, 3000.0, 2.5, 2.0);
        assert_eq!(Ratios::of(&replog, &raw).throughput, None);
    }

    #[test]
    fn the_table_has_a_row_per_cell_and_the_ratio() {
        let plan = <crate::args::Args as clap::Parser>::try_parse_from(["load"])
            .unwrap()
            .plan()
            .unwrap();
        let raw = cell(System::Raw, 6000.0, 1.0, 4.0);
        let mut replog = cell(System::Replog, 3000.0, 2.5, 2.0);
        replog.vs_raw = Some(Ratios::of(&replog, &raw));
        let table = markdown(&plan, &[raw, replog]);
        assert!(
            table.contains("| raw | 64 | 3 | closed | 6000 |"),
            "{table}"
        );
        assert!(table.contains("| 0.50 | 2.50 | 0.50 |"), "{table}");
        assert!(
            table.contains("#### Run 1, classic queues, 2 secondaries"),
            "{table}"
        );
    }

    #[test]
    fn sampled_cells_get_a_memory_table() {
        let plan = <crate::args::Args as clap::Parser>::try_parse_from(["load"])
            .unwrap()
            .plan()
            .unwrap();
        let plain = cell(System::Replog, 3000.0, 2.5, 2.0);
        assert!(!markdown(&plan, std::slice::from_ref(&plain)).contains("Memory"));
        let mut sampled = plain;
        sampled.memory = vec![NodeMemory::of(
            "master".into(),
            7,
            std::time::Duration::from_secs(5),
            &[memory::Sample {
                at_s: 0.0,
                rss_kib: 2048,
            }],
        )];
        let text = markdown(&plan, &[sampled]);
        assert!(
            text.contains("#### Memory (RSS) over the cell: run 1, classic queues, 2 secondaries, C=64, w=3, closed"),
            "{text}"
        );
        assert!(
            text.contains("| master | 7 | 1 | 0.0 | 2.0 | 2.0 | 2.0 | +0.0 | – |"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_has_a_row_per_replog_cell_with_all_resolved() {
        let raw = cell(System::Raw, 6000.0, 1.0, 4.0);
        let mut all = cell(System::Replog, 3000.0, 2.5, 2.0);
        all.w = "all".into();
        all.secondaries = 8;
        let mut split = cell(System::Replog, 5000.0, 2.0, 3.0);
        split.partitions = 2;
        split.per_partition = vec![2600.0, 2400.0];
        let table = summary(&[raw, all, split]);
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(
            table.contains("| 8 | 1 | classic | 64 | all (9) | 3000 | – |"),
            "{table}"
        );
        assert!(
            table.contains("| 2 | 2 | classic | 64 | 3 | 5000 | p0 2600, p1 2400 |"),
            "{table}"
        );
    }
}
