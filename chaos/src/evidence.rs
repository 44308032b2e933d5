//! Evidence from the nodes' own logs: when each node durably stored each entry, when the master
//! acknowledged each write, and what each restarted node recovered.
//!
//! The nodes run with `RUST_LOG` raised to `debug` for exactly the events used here:
//!
//! - secondary, `replog_secondary::applier` (debug): `entries stored and applied first=A
//!   last=B`, logged after the append (and its fsync) returned and before the position is
//!   acked to the master;
//! - master, `replog_master::writer` (debug): `entry sequenced and stored order=N`, logged after
//!   the append (and its fsync) returned and before the client is answered;
//! - master (info): `write acknowledged order=N message_id=.. w=.. acks=..`, logged once the
//!   write concern was met, right before the answer is sent;
//! - at every start, what the node recovered from its data directory: the master's `log
//!   recovered; ... last=N`, the secondary's `starting secondary ... applied=N`.
//!
//! Every timestamp is the wall clock of the same machine, the clock the checker's history uses.
//! The lines are appended with one unbuffered write each to a file that outlives the process, so
//! a SIGKILL cannot lose a line that was written; it can only prevent a line from being written
//! at all, which is why what a node recovered at its next start counts as evidence too.

use std::collections::HashMap;
use std::path::Path;

/// The tracing filter the master runs with.
pub const MASTER_LOG_FILTER: &str = "info,replog_master::writer=debug,lapin=warn,amq_protocol=warn";

/// The tracing filter every secondary runs with.
pub const SECONDARY_LOG_FILTER: &str =
    "info,replog_secondary::applier=debug,lapin=warn,amq_protocol=warn";

/// A node stored entries `first..=last` at `at_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// When (µs since the epoch).
    pub at_us: u64,
    /// The first order stored.
    pub first: u64,
    /// The last order stored.
    pub last: u64,
}

/// The master acknowledged a write at `at_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// When (µs since the epoch).
    pub at_us: u64,
    /// The entry's order.
    pub order: u64,
    /// The entry's id.
    pub message_id: String,
    /// The write concern.
    pub w: u64,
    /// The master's count of holders.
    pub acks: u64,
}

/// A node started with `recovered` entries in its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// When (µs since the epoch).
    pub at_us: u64,
    /// The end of the log it recovered.
    pub recovered: u64,
}

/// Everything read from one node's log.
#[derive(Debug, Clone, Default)]
pub struct NodeLog {
    /// `master`, `s1`, ...
    pub name: String,
    /// Every store, in log order.
    pub stored: Vec<Stored>,
    /// Every acknowledgement (master only), in log order.
    pub acknowledged: Vec<Acknowledged>,
    /// Every start, in log order.
    pub starts: Vec<Started>,
}

impl NodeLog {
    /// Reads a master's log.
    pub fn read_master(name: &str, path: &Path) -> std::io::Result<NodeLog> {
        Ok(NodeLog::parse_master(name, &std::fs::read_to_string(path)?))
    }

    /// Reads a secondary's log.
    pub fn read_secondary(name: &str, path: &Path) -> std::io::Result<NodeLog> {
        Ok(NodeLog::parse_secondary(
            name,
            &std::fs::read_to_string(path)?,
        ))
    }

    /// Parses a master's log text.
    pub fn parse_master(name: &str, text: &str) -> NodeLog {
        let mut log = NodeLog {
            name: name.to_owned(),
            ..NodeLog::default()
        };
        for line in text.lines() {
            let Some(event) = Event::parse(line) else {
                continue;
            };
            match event.message {
                "entry sequenced and stored" => {
                    if let Some(order) = event.number("order") {
                        log.stored.push(Stored {
                            at_us: event.at_us,
                            first: order,
                            last: order,
                        });
                    }
                }
                "write acknowledged" => {
                    if let (Some(order), Some(message_id), Some(w), Some(acks)) = (
                        event.number("order"),
                        event.fields.get("message_id"),
                        event.number("w"),
                        event.number("acks"),
                    ) {
                        log.acknowledged.push(Acknowledged {
                            at_us: event.at_us,
                            order,
                            message_id: (*message_id).to_owned(),
                            w,
                            acks,
                        });
                    }
                }
                "log recovered; numbering continues after the last entry" => {
                    if let Some(recovered) = event.number("last") {
                        log.starts.push(Started {
                            at_us: event.at_us,
                            recovered,
                        });
                    }
                }
                _ => {}
            }
        }
        log
    }

    /// Parses a secondary's log text.
    pub fn parse_secondary(name: &str, text: &str) -> NodeLog {
        let mut log = NodeLog {
            name: name.to_owned(),
            ..NodeLog::default()
        };
        for line in text.lines() {
            let Some(event) = Event::parse(line) else {
                continue;
            };
            match event.message {
                "entries stored and applied" => {
                    if let (Some(first), Some(last)) = (event.number("first"), event.number("last"))
                    {
                        log.stored.push(Stored {
                            at_us: event.at_us,
                            first,
                            last,
                        });
                    }
                }
                "starting secondary" => {
                    if let Some(recovered) = event.number("applied") {
                        log.starts.push(Started {
                            at_us: event.at_us,
                            recovered,
                        });
                    }
                }
                _ => {}
            }
        }
        log
    }

    /// For each order up to `len`, the earliest time this node is known to have held it
    /// durably: a store line covering it, or a start that recovered it.
    pub fn earliest_hold(&self, len: u64) -> Vec<Option<u64>> {
        let mut earliest = vec![None; len as usize + 1];
        let mut note = |order: u64, at: u64| {
            if let Some(slot) = earliest.get_mut(order as usize) {
                if slot.is_none_or(|seen| at < seen) {
                    *slot = Some(at);
                }
            }
        };
        for stored in &self.stored {
            for order in stored.first..=stored.last.min(len) {
                note(order, stored.at_us);
            }
        }
        for start in &self.starts {
            for order in 1..=start.recovered.min(len) {
                note(order, start.at_us);
            }
        }
        earliest
    }

    /// Starts that recovered less than the node had logged as stored before them: stored
    /// entries lost across a crash. Returns `(start, highest stored before it)`.
    pub fn lost_across_restarts(&self) -> Vec<(Started, u64)> {
        let mut lost = Vec::new();
        for start in &self.starts {
            let stored_before = self
                .stored
                .iter()
                .filter(|stored| stored.at_us < start.at_us)
                .map(|stored| stored.last)
                .chain(
                    self.starts
                        .iter()
                        .filter(|earlier| earlier.at_us < start.at_us)
                        .map(|earlier| earlier.recovered),
                )
                .max()
                .unwrap_or(0);
            if start.recovered < stored_before {
                lost.push((*start, stored_before));
            }
        }
        lost
    }
}

/// One parsed tracing line: `2026-11-25T11:07:40.681578Z  INFO message key=value ...`.
#[derive(Debug)]
struct Event<'a> {
    /// The timestamp, µs since the epoch.
    at_us: u64,
    /// The message, up to the first `key=value` field.
    message: &'a str,
    /// The fields after the message.
    fields: HashMap<&'a str, &'a str>,
}

impl<'a> Event<'a> {
    fn parse(line: &'a str) -> Option<Event<'a>> {
        let (stamp, rest) = line.split_once(' ')?;
        let at_us = parse_rfc3339_us(stamp)?;
        let rest = rest.trim_start();
        let (level, rest) = rest.split_once(' ')?;
        if !matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR") {
            return None;
        }
        let rest = rest.trim_start();
        // The message ends where the first ` key=` begins.
        let mut message_end = rest.len();
        let mut fields = HashMap::new();
        let mut offset: usize = 0;
        for token in rest.split(' ') {
            if let Some((key, value)) = token.split_once('=') {
                let is_key = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if is_key {
                    if message_end == rest.len() {
                        message_end = offset.saturating_sub(1);
                    }
                    fields.insert(key, value);
                }
            }
            offset += token.len() + 1;
        }
        Some(Event {
            at_us,
            message: rest[..message_end.min(rest.len())].trim_end(),
            fields,
        })
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.fields.get(key)?.parse().ok()
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` into µs since the epoch.
pub fn parse_rfc3339_us(stamp: &str) -> Option<u64> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (time, ""),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: u64 = clock_parts.next()?.parse().ok()?;
    let minute: u64 = clock_parts.next()?.parse().ok()?;
    let second: u64 = clock_parts.next()?.parse().ok()?;
    let micros: u64 = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        digits.parse().ok()?
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = u64::try_from(days).ok()? * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_the_epoch_clock() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_us("1970-01-02T00:00:01.5Z"),
            Some(86_401_500_000)
        );
        // date -u -d 2026-11-25T11:07:40Z +%s = 1795604860
        assert_eq!(
            parse_rfc3339_us("2026-11-25T11:07:40.681578Z"),
            Some(1_795_604_860_681_578)
        );
        assert_eq!(
            parse_rfc3339_us("2024-02-29T00:00:00.000000001Z"),
            Some(1_709_164_800_000_000)
        );
        assert_eq!(parse_rfc3339_us("garbage"), None);
    }

    const MASTER: &str = "\
----- testkit: starting master (start #1) -----
2026-11-25T11:07:40.683262Z  INFO log recovered; numbering continues after the last entry data_dir=/tmp/x entries=0 segments=1 last=0 confirmed=0 torn_tail_cut=false
2026-11-25T11:07:41.000001Z DEBUG entry sequenced and stored order=1 message_id=a
2026-11-25T11:07:41.000100Z  INFO write acknowledged order=1 message_id=a w=2 acks=2 duplicate=false
2026-11-25T11:07:42.000000Z  INFO log recovered; numbering continues after the last entry data_dir=/tmp/x entries=1 segments=1 last=1 confirmed=1 torn_tail_cut=false
";

    const SECONDARY: &str = "\
2026-11-25T11:07:40.700000Z  INFO starting secondary id=s1 broker=amqp://guest:***@127.0.0.1:1/%2f?heartbeat=10 namespace=n master=http://127.0.0.1:2 applied=0 delay_ms=0 fail_rate=0 queue_type=Classic
2026-11-25T11:07:41.000050Z DEBUG entries stored and applied first=1 last=3
2026-11-25T11:07:43.000000Z  INFO starting secondary id=s1 applied=2
";

    #[test]
    fn the_events_are_read_from_node_logs() {
        let master = NodeLog::parse_master("master", MASTER);
        assert_eq!(master.starts.len(), 2);
        assert_eq!(
            master.stored,
            vec![Stored {
                at_us: 1_795_604_861_000_001,
                first: 1,
                last: 1
            }]
        );
        assert_eq!(master.acknowledged.len(), 1);
        assert_eq!(master.acknowledged[0].message_id, "a");
        assert_eq!(master.acknowledged[0].acks, 2);
        assert!(master.lost_across_restarts().is_empty());

        let secondary = NodeLog::parse_secondary("s1", SECONDARY);
        assert_eq!(secondary.stored.len(), 1);
        assert_eq!(secondary.starts.len(), 2);
        let earliest = secondary.earliest_hold(4);
        assert_eq!(earliest[1], Some(1_795_604_861_000_050));
        assert_eq!(earliest[4], None);
        // Stored up to 3, restarted with 2: an entry was lost.
        let lost = secondary.lost_across_restarts();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].1, 3);
    }
}
