//! CPU time per write, by process: where a cell's CPU went.
//!
//! On one machine the broker, the load generator and every node share the same cores, so
//! throughput alone hides who spent them. Each process's CPU time (user + system, from
//! `/proc/<pid>/stat`) is read just before the load starts and right after it ends; the
//! difference divided by the answered writes is its CPU cost per write, in microseconds. The
//! processes are the load generator itself (the bare pipeline's publisher and consumers live
//! there), the nodes of a cluster started here, and the broker when it runs on this machine
//! (found by its `beam.smp` command line). Linux only: elsewhere nothing is measured.

use serde::Serialize;

/// One process's share of a cell's CPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessCpu {
    /// `broker`, `load`, `master`, `s1`, ...
    pub process: String,
    /// CPU time (user + system) during the load, in seconds.
    pub cpu_s: f64,
    /// `cpu_s` per answered write, in microseconds.
    pub us_per_write: f64,
}

/// CPU time readings of named processes, to be compared with a later reading.
#[derive(Debug, Clone)]
pub struct CpuReading {
    /// `(name, pid, CPU seconds)`; a process whose stat could not be read is left out.
    readings: Vec<(String, u32, f64)>,
}

impl CpuReading {
    /// Reads the CPU time of every `(name, pid)` now.
    pub fn take(processes: &[(String, u32)]) -> CpuReading {
        CpuReading {
            readings: processes
                .iter()
                .filter_map(|(name, pid)| cpu_seconds(*pid).map(|cpu| (name.clone(), *pid, cpu)))
                .collect(),
        }
    }

    /// What each process spent since this reading, per write of `writes`.
    pub fn since(&self, writes: u64) -> Vec<ProcessCpu> {
        self.readings
            .iter()
            .filter_map(|(name, pid, before)| {
                let spent = cpu_seconds(*pid)? - before;
                Some(per_write(name, spent, writes))
            })
            .collect()
    }
}

/// `spent` CPU seconds of `process` shared by `writes` writes.
pub fn per_write(process: &str, spent: f64, writes: u64) -> ProcessCpu {
    ProcessCpu {
        process: process.to_owned(),
        cpu_s: spent,
        us_per_write: if writes == 0 {
            0.0
        } else {
            spent * 1e6 / writes as f64
        },
    }
}

/// The load generator and, when it runs here, the broker: the processes every cell has.
pub fn own_processes(amqp_url: &str) -> Vec<(String, u32)> {
    let mut processes = vec![("load".to_owned(), std::process::id())];
    if is_loopback(amqp_url) {
        if let Some(pid) = find_broker() {
            processes.insert(0, ("broker".to_owned(), pid));
        }
    }
    processes
}

/// Whether the first broker URL names this machine.
fn is_loopback(amqp_url: &str) -> bool {
    let first = amqp_url.split(',').next().unwrap_or_default();
    let authority = first.split_once("://").map_or(first, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().unwrap_or_default().trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

/// The pid of a local RabbitMQ (its Erlang VM, `beam.smp`, running `rabbit`), if one runs.
fn find_broker() -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let command = std::fs::read(entry.path().join("cmdline")).ok()?;
        let command = String::from_utf8_lossy(&command);
        (command.contains("beam.smp") && command.contains("rabbit")).then_some(pid)
    })
}

/// User + system CPU seconds of `pid` so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may hold spaces, so fields are counted after its closing one.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Clock ticks per second of `/proc` times: `USER_HZ`, 100 on every Linux architecture that
/// matters here (it is fixed in the kernel ABI for x86 and arm).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// A markdown line per cell: `broker 140 · load 80 · master 130 · s1 45 · s2 45 · total 440`.
pub fn line(processes: &[ProcessCpu]) -> String {
    if processes.is_empty() {
        return "not measured".to_owned();
    }
    let total: f64 = processes.iter().map(|process| process.us_per_write).sum();
    let parts: Vec<String> = processes
        .iter()
        .map(|process| format!("{} {:.0}", process.process, process.us_per_write))
        .collect();
    format!("{} · total {total:.0}", parts.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1000 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn cpu_is_shared_by_the_writes() {
        let cpu = per_write("master", 0.5, 2_000);
        assert_eq!(cpu.us_per_write, 250.0);
        assert_eq!(per_write("load", 1.0, 0).us_per_write, 0.0);
        assert_eq!(
            line(&[cpu, per_write("s1", 0.1, 2_000)]),
            "master 250 · s1 50 · total 300"
        );
        assert_eq!(line(&[]), "not measured");
    }

    #[test]
    fn only_a_broker_on_this_machine_is_measured() {
        assert!(is_loopback("amqp://guest:guest@127.0.0.1:5672/%2f"));
        assert!(is_loopback("amqp://localhost"));
        assert!(is_loopback("amqp://[::1]:5672/%2f"));
        assert!(is_loopback("amqp://u:p@localhost:5672/%2f,amqp://u:p@other:5672/%2f"));
        assert!(!is_loopback("amqp://guest:guest@rabbit-1:5672/%2f"));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let reading = CpuReading::take(&[("load".to_owned(), std::process::id())]);
        let spent = reading.since(1);
        assert_eq!(spent.len(), 1);
        assert!(spent[0].cpu_s >= 0.0);
    }
}
