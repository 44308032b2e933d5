//! CPU time per write, by process: where a cell's CPU went.
//!
//! On one machine the broker, the load generator and every node share the same cores, so
//! throughput alone hides who spent them. Each process's CPU time (user + system, from
//! `/proc/<pid>/stat`) is read just before the load starts and right after it ends; the
//! difference divided by the answered writes is its CPU cost per write, in microseconds. The
//! processes are the load generator itself (the bare pipeline's publisher and consumers live
//! there), the nodes of a cluster started here, and the broker when it runs on this machine
//! (the process listening on the AMQP URL's port). Linux only: elsewhere nothing is measured.

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
    if let Some(pid) = local_port(amqp_url).and_then(listener_of) {
        processes.insert(0, ("broker".to_owned(), pid));
    }
    processes
}

/// The port of the first broker URL when it names this machine (5672 unless given).
fn local_port(amqp_url: &str) -> Option<u16> {
    let first = amqp_url.split(',').next().unwrap_or_default();
    let (scheme, rest) = first.split_once("://").unwrap_or(("amqp", first));
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return None;
    }
    match port {
        Some(port) => port.parse().ok(),
        None if scheme == "amqps" => Some(5671),
        None => Some(5672),
    }
}

/// The process listening on TCP `port` on this machine: the socket's inode from
/// `/proc/net/tcp{,6}`, then the process holding it among `/proc/*/fd`.
fn listener_of(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|table| listening_inode(&table, port))?;
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|link| link.as_os_str() == socket.as_str())
                })
                .then_some(pid)
        })
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table.
pub fn listening_inode(table: &str, port: u16) -> Option<u64> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit_once(':')?.1;
        let listening =
            u16::from_str_radix(local_port, 16).ok()? == port && *fields.get(3)? == LISTEN;
        listening.then(|| fields.get(9)?.parse().ok()).flatten()
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
        assert_eq!(
            local_port("amqp://guest:guest@127.0.0.1:5672/%2f"),
            Some(5672)
        );
        assert_eq!(local_port("amqp://localhost"), Some(5672));
        assert_eq!(local_port("amqps://localhost"), Some(5671));
        assert_eq!(local_port("amqp://[::1]:5681/%2f"), Some(5681));
        assert_eq!(
            local_port("amqp://u:p@localhost:5682/%2f,amqp://u:p@other/%2f"),
            Some(5682)
        );
        assert_eq!(local_port("amqp://guest:guest@rabbit-1:5672/%2f"), None);
    }

    #[test]
    fn the_listening_socket_is_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1628 0100007F:D431 01 00000000:00000000 00:00000000 00000000   107        0 4242 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(listening_inode(table, 5672), Some(31337));
        assert_eq!(listening_inode(table, 5673), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let reading = CpuReading::take(&[("load".to_owned(), std::process::id())]);
        let spent = reading.since(1);
        assert_eq!(spent.len(), 1);
        assert!(spent[0].cpu_s >= 0.0);
    }
}
