//! Free TCP ports on 127.0.0.1 that can be bound again after the process using them died.
//!
//! Port 0 would do for a process that never restarts, but it hands out ports from the kernel's
//! ephemeral range, and while a node is down any outgoing connection on the machine may be
//! given its old port as a local port, so the restarted node could not bind it. These ports
//! come from below that range (read from `/proc/sys/net/ipv4/ip_local_port_range`), where the
//! kernel never picks, and are checked by binding them once.

use rand::Rng;
use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// The lowest port handed out: above the usual fixed service ports.
const LOWEST: u16 = 20_000;

/// Where the ephemeral range starts when `/proc` does not say (Linux's default).
const DEFAULT_EPHEMERAL_START: u16 = 32_768;

/// Ports in our range that belong to something else even when nothing listens on them right
/// now: the distribution port of a default RabbitMQ node (AMQP port + 20000), such as the
/// machine's shared broker. (`rabbitmqctl`'s own ports, 35672 and up, lie above our range.)
const RESERVED: &[u16] = &[25_672];

/// How many random candidates to try before giving up.
const ATTEMPTS: usize = 500;

/// Ports this process handed out already, so that two callers never get the same one even
/// before either has bound it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// No free port was found.
#[derive(Debug, thiserror::Error)]
#[error("no free port between {low} and {high} after {ATTEMPTS} attempts")]
pub struct PortError {
    /// The lowest port tried.
    pub low: u16,
    /// The highest port tried.
    pub high: u16,
}

/// A port on 127.0.0.1 that was free a moment ago, outside the ephemeral range, and never
/// returned twice by this process.
pub fn free_port() -> Result<u16, PortError> {
    let high = ephemeral_start().saturating_sub(1).max(LOWEST + 1_000);
    let mut rng = rand::rng();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..ATTEMPTS {
        let port = rng.random_range(LOWEST..=high);
        if RESERVED.contains(&port) || handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(PortError { low: LOWEST, high })
}

fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        // Each port is bound at once and held, so that nothing else on the machine can take it
        // between the check and the bind and the test proves what callers rely on.
        let held: Vec<(u16, TcpListener)> = (0..20)
            .map(|_| {
                let port = free_port().unwrap();
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap_or_else(|e| {
                    panic!("port {port} was handed out but cannot be bound: {e}")
                });
                (port, listener)
            })
            .collect();
        let distinct: HashSet<u16> = held.iter().map(|(port, _)| *port).collect();
        assert_eq!(distinct.len(), held.len());
        for (port, _) in &held {
            assert!(*port >= LOWEST && *port < ephemeral_start().max(LOWEST + 1_001));
        }
    }
}
