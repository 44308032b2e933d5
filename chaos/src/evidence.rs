//! Evidence from the nodes' own logs: when each node durably stored each entry, when the master
//! acknowledged each write, and what each restarted node recovered.
//!
//! # The contract
//! A node logs each piece of evidence as a tracing event with a structured `event` field whose
//! value is one of the constants in [`replog_common::events`], under the target
//! [`events::TARGET`]. Per-write events are at `debug`, so the nodes run with [`log_filter`],
//! which turns that one target on ([`events::ENABLE_DIRECTIVE`]). This module matches on those
//! constants and reads named fields only: never a message's prose, which may be reworded
//! freely. What it reads:
//!
//! - [`events::SEQUENCED`] (master) `order`: logged after the append (and its fsync) returned
//!   and before the client is answered;
//! - [`events::STORED`] (secondary) `first`, `last`: logged after the append (and its fsync)
//!   returned and before the position is acked to the master;
//! - [`events::ACKNOWLEDGED`] (master) `order`, `message_id`, `w`, `acks`: logged once the write
//!   concern was met, right before the answer is sent;
//! - [`events::RECOVERED`] (either node, at every start, at `info`) `last`: the end of the log
//!   the node recovered from its data directory;
//! - [`events::DIVERGED`] (secondary, at `error`) `order`, `held`, `offered`: the node was
//!   offered an entry at an order it holds with another message id; every one is a violation;
//! - [`events::DEDUPLICATED`] and [`events::DUPLICATE_DROPPED`] `order`: read and counted, but
//!   not evidence that a node holds anything it had not already logged.
//!
//! # The line format
//! The nodes write tracing-subscriber's default plain text without the target: an RFC 3339 UTC
//! timestamp, the level, the message if there is one, then the fields as `key=value` separated
//! by spaces, e.g.
//!
//! ```text
//! 2026-11-25T11:07:41.000100Z DEBUG event="acknowledged" order=1 message_id="a" w=2 acks=2 duplicate=false
//! 2026-11-25T11:07:42.000000Z  INFO log recovered; ... data_dir=/tmp/x event="recovered" last=5 confirmed=5
//! ```
//!
//! String values are quoted with Rust debug escapes (`\"`, `\\`, `\n`, `\u{..}`) and are
//! unescaped here; numbers and booleans are bare. A line counts as evidence only if its `event`
//! field is one of the constants; if a key appears twice, the last one wins, because an event's
//! own fields are printed after its message and any span context. An evidence event that lacks
//! a field it needs is counted in [`NodeLog::unreadable`] (a broken contract to surface, not a
//! line to skip in silence).
//!
//! # Why the lines can be trusted as a clock
//! Every timestamp is the wall clock of the same machine, the clock the checker's history uses.
//! The lines are appended with one unbuffered write each to a file that outlives the process, so
//! a SIGKILL cannot lose a line that was written; it can only prevent a line from being written
//! at all, which is why what a node recovered at its next start counts as evidence too.

use replog_common::events;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// The `RUST_LOG` filter every node of a run gets: `info`, plus the evidence events at `debug`,
/// with the AMQP client's chatter kept down.
pub fn log_filter() -> String {
    format!(
        "info,{},lapin=warn,amq_protocol=warn",
        events::ENABLE_DIRECTIVE
    )
}

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

/// A secondary found an entry conflicting with the one it holds at `order`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diverged {
    /// When (µs since the epoch).
    pub at_us: u64,
    /// The order both entries claim.
    pub order: u64,
    /// The message id the node holds there.
    pub held: String,
    /// The message id it was offered.
    pub offered: String,
}

/// A span of time during which a node held an order in its current data: from the first store
/// (or start) that covered it until a start that recovered less (its data directory was wiped
/// or cut while it was down), if one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// From when (µs since the epoch).
    pub from_us: u64,
    /// Until when, exclusive: the start that showed the loss; `None` while still held.
    pub until_us: Option<u64>,
}

impl Hold {
    /// Whether this span covers `at`.
    pub fn covers(&self, at: u64) -> bool {
        self.from_us <= at && self.until_us.is_none_or(|until| at < until)
    }
}

/// Everything read from one node's log.
#[derive(Debug, Clone, Default)]
pub struct NodeLog {
    /// `master`, `s1`, ...
    pub name: String,
    /// Every store ([`events::SEQUENCED`] on the master, [`events::STORED`] on a secondary), in
    /// log order.
    pub stored: Vec<Stored>,
    /// Every acknowledgement (master only), in log order.
    pub acknowledged: Vec<Acknowledged>,
    /// Every start, in log order.
    pub starts: Vec<Started>,
    /// Every divergence (secondaries only), in log order.
    pub diverged: Vec<Diverged>,
    /// Evidence events read, of every kind: zero means the checks built on this log had
    /// nothing to go on.
    pub events: usize,
    /// Evidence events (a known `event` name) missing a field they need, or with one that does
    /// not parse: the nodes and this module disagree about the contract.
    pub unreadable: usize,
}

impl NodeLog {
    /// Reads a node's log file.
    pub fn read(name: &str, path: &Path) -> std::io::Result<NodeLog> {
        Ok(NodeLog::parse(name, &std::fs::read_to_string(path)?))
    }

    /// Parses a node's log text. Master and secondaries log different events, so one parser
    /// serves both.
    pub fn parse(name: &str, text: &str) -> NodeLog {
        let mut log = NodeLog {
            name: name.to_owned(),
            ..NodeLog::default()
        };
        for line in text.lines() {
            let Some(event) = EventLine::parse(line) else {
                continue;
            };
            match log.note(&event) {
                Some(()) => log.events += 1,
                None => log.unreadable += 1,
            }
        }
        log
    }

    /// Records one evidence event; `None` when it lacks a field it needs.
    fn note(&mut self, event: &EventLine<'_>) -> Option<()> {
        let at_us = event.at_us;
        match event.name {
            events::SEQUENCED => {
                let order = event.number("order")?;
                self.stored.push(Stored {
                    at_us,
                    first: order,
                    last: order,
                });
            }
            events::STORED => {
                let (first, last) = (event.number("first")?, event.number("last")?);
                self.stored.push(Stored { at_us, first, last });
            }
            events::ACKNOWLEDGED => self.acknowledged.push(Acknowledged {
                at_us,
                order: event.number("order")?,
                message_id: event.text("message_id")?.to_owned(),
                w: event.number("w")?,
                acks: event.number("acks")?,
            }),
            events::RECOVERED => self.starts.push(Started {
                at_us,
                recovered: event.number("last")?,
            }),
            events::DIVERGED => self.diverged.push(Diverged {
                at_us,
                order: event.number("order")?,
                held: event.text("held")?.to_owned(),
                offered: event.text("offered")?.to_owned(),
            }),
            events::DEDUPLICATED | events::DUPLICATE_DROPPED => {
                event.number("order")?;
            }
            // `EventLine::parse` only lets the names in `events::ALL` through.
            _ => return None,
        }
        Some(())
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

    /// For each order up to `len`, the spans during which this node held it in its *current*
    /// data. A node's data can only be seen to vanish at its next start (a wiped directory is
    /// only noticed by the node that opens it): until then a node that went down keeps what it
    /// stored, as the master keeps counting its last report until it speaks again.
    pub fn current_holds(&self, len: u64) -> Vec<Vec<Hold>> {
        let len = len as usize;
        let mut spans: Vec<Vec<Hold>> = vec![Vec::new(); len + 1];
        // Starts before stores of the same microsecond: a start is logged before anything the
        // node stores after it.
        let mut steps: Vec<(u64, bool, u64, u64)> = self
            .starts
            .iter()
            .map(|start| (start.at_us, false, 1, start.recovered))
            .chain(
                self.stored
                    .iter()
                    .map(|stored| (stored.at_us, true, stored.first, stored.last)),
            )
            .collect();
        steps.sort_by_key(|&(at, is_store, ..)| (at, is_store));
        for (at, is_store, first, last) in steps {
            if !is_store {
                // What the start did not recover is gone from the node's data.
                for order in spans.iter_mut().skip(last as usize + 1) {
                    if let Some(open) = order.last_mut().filter(|hold| hold.until_us.is_none()) {
                        open.until_us = Some(at);
                    }
                }
            }
            for order in spans
                .iter_mut()
                .take(last.min(len as u64) as usize + 1)
                .skip(first.max(1) as usize)
            {
                if order.last().is_none_or(|hold| hold.until_us.is_some()) {
                    order.push(Hold {
                        from_us: at,
                        until_us: None,
                    });
                }
            }
        }
        spans
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

/// One evidence event read from a log line.
#[derive(Debug)]
struct EventLine<'a> {
    /// The timestamp, µs since the epoch.
    at_us: u64,
    /// The `event` field: one of [`events::ALL`].
    name: &'static str,
    /// The other fields, unquoted and unescaped.
    fields: HashMap<&'a str, Cow<'a, str>>,
}

impl<'a> EventLine<'a> {
    /// Reads `line` if it is an evidence event: `<timestamp> <LEVEL> [message] key=value ...`
    /// with an `event` field naming one of [`events::ALL`]. Any other line is `None`.
    fn parse(line: &'a str) -> Option<EventLine<'a>> {
        // Most lines are not evidence: skip them before any real work.
        if !line.contains("event=") {
            return None;
        }
        let (stamp, rest) = line.split_once(' ')?;
        let at_us = parse_rfc3339_us(stamp)?;
        let (level, rest) = rest.trim_start().split_once(' ')?;
        if !matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR") {
            return None;
        }
        let mut fields = fields(rest);
        let event = fields.remove("event")?;
        let name = events::ALL.into_iter().find(|name| *name == event)?;
        Some(EventLine {
            at_us,
            name,
            fields,
        })
    }

    /// A field holding an unsigned number.
    fn number(&self, key: &str) -> Option<u64> {
        self.fields.get(key)?.parse().ok()
    }

    /// A field's text, unescaped.
    fn text(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|value| value.as_ref())
    }
}

/// The `key=value` fields in the part of a line after its level. Words that are not a field
/// (the message, span names, the tail of a value printed with spaces in it) are skipped; a key
/// seen twice keeps its last value, the event's own field.
fn fields(mut text: &str) -> HashMap<&str, Cow<'_, str>> {
    let mut fields = HashMap::new();
    loop {
        text = text.trim_start_matches(' ');
        if text.is_empty() {
            return fields;
        }
        match field(text) {
            Some((key, value, rest)) => {
                fields.insert(key, value);
                text = rest;
            }
            None => text = text.find(' ').map_or("", |space| &text[space..]),
        }
    }
}

/// The field `text` starts with, if it starts with one, and the text after it.
fn field(text: &str) -> Option<(&str, Cow<'_, str>, &str)> {
    let (key, value) = text.split_once('=')?;
    let mut chars = key.chars();
    let is_key = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !is_key {
        return None;
    }
    match value.strip_prefix('"') {
        Some(quoted) => {
            let (value, rest) = unquote(quoted)?;
            (rest.is_empty() || rest.starts_with(' ')).then_some((key, value, rest))
        }
        None => {
            let end = value.find(' ').unwrap_or(value.len());
            Some((key, Cow::Borrowed(&value[..end]), &value[end..]))
        }
    }
}

/// Reads a string printed with Rust's `Debug` up to its closing quote (`text` starts after the
/// opening one): the unescaped string and the text after the quote. `None` if the quote never
/// closes or an escape is not one `Debug` writes.
fn unquote(text: &str) -> Option<(Cow<'_, str>, &str)> {
    // Borrowed until the first escape, so that the common plain value is not copied.
    let mut owned: Option<String> = None;
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                let value = owned.map_or(Cow::Borrowed(&text[..at]), Cow::Owned);
                return Some((value, &text[at + 1..]));
            }
            '\\' => {
                let out = owned.get_or_insert_with(|| text[..at].to_owned());
                let (_, escape) = chars.next()?;
                out.push(match escape {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '0' => '\0',
                    '\\' => '\\',
                    '"' => '"',
                    '\'' => '\'',
                    'u' => {
                        if chars.next()?.1 != '{' {
                            return None;
                        }
                        let mut code: u32 = 0;
                        loop {
                            let (_, digit) = chars.next()?;
                            if digit == '}' {
                                break;
                            }
                            code = code.checked_mul(16)?.checked_add(digit.to_digit(16)?)?;
                        }
                        char::from_u32(code)?
                    }
                    _ => return None,
                });
            }
            c => {
                if let Some(out) = owned.as_mut() {
                    out.push(c);
                }
            }
        }
    }
    None
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

    #[test]
    fn the_filter_turns_the_evidence_target_on() {
        assert!(log_filter()
            .split(',')
            .any(|d| d == events::ENABLE_DIRECTIVE));
        assert!(log_filter().starts_with("info,"));
    }

    const MASTER: &str = r#"----- testkit: starting master (start #1) -----
2026-11-25T11:07:40.683262Z  INFO log recovered; numbering continues after the last entry data_dir=/tmp/x entries=0 segments=1 event="recovered" last=0 confirmed=0 torn_tail_cut=false
2026-11-25T11:07:41.000001Z DEBUG event="sequenced" order=1 message_id="a"
2026-11-25T11:07:41.000002Z DEBUG event="deduplicated" order=1 message_id="a"
2026-11-25T11:07:41.000100Z DEBUG event="acknowledged" order=1 message_id="a" w=2 acks=2 duplicate=false
2026-11-25T11:07:41.000200Z  INFO write acknowledged order=9 message_id=b w=1 acks=1
2026-11-25T11:07:42.000000Z  INFO log recovered; numbering continues after the last entry data_dir=/tmp/x entries=1 segments=1 event="recovered" last=1 confirmed=1 torn_tail_cut=false
"#;

    const SECONDARY: &str = r#"2026-11-25T11:07:40.690000Z  INFO log recovered; applying continues after the last stored entry data_dir=/tmp/y entries=0 segments=1 torn_tail_cut=false
2026-11-25T11:07:40.700000Z  INFO starting secondary id=s1 broker=amqp://guest:***@127.0.0.1:1/%2f?heartbeat=10 namespace=n master=http://127.0.0.1:2 event="recovered" last=0 delay_ms=0 fail_rate=0 queue_type=Classic
2026-11-25T11:07:41.000050Z DEBUG event="stored" first=1 last=3
2026-11-25T11:07:41.000060Z DEBUG event="duplicate_dropped" order=2 from_master=true
2026-11-25T11:07:42.000000Z ERROR diverged: an entry conflicts with the one this node holds at its order; it is refused event="diverged" order=2 held="b" offered="forged \"b\"" from_master=false
2026-11-25T11:07:43.000000Z  INFO starting secondary id=s1 event="recovered" last=2
"#;

    #[test]
    fn the_events_are_read_from_node_logs() {
        let master = NodeLog::parse("master", MASTER);
        assert_eq!(master.starts.len(), 2);
        assert_eq!(
            master.stored,
            vec![Stored {
                at_us: 1_795_604_861_000_001,
                first: 1,
                last: 1
            }]
        );
        // The prose `write acknowledged` line is not evidence: only the `event` field counts.
        assert_eq!(
            master.acknowledged,
            vec![Acknowledged {
                at_us: 1_795_604_861_000_100,
                order: 1,
                message_id: "a".to_owned(),
                w: 2,
                acks: 2
            }]
        );
        assert_eq!((master.events, master.unreadable), (5, 0));
        assert!(master.lost_across_restarts().is_empty());

        let secondary = NodeLog::parse("s1", SECONDARY);
        assert_eq!(secondary.stored.len(), 1);
        assert_eq!(secondary.starts.len(), 2);
        assert_eq!((secondary.events, secondary.unreadable), (5, 0));
        assert_eq!(
            secondary.diverged,
            vec![Diverged {
                at_us: 1_795_604_862_000_000,
                order: 2,
                held: "b".to_owned(),
                offered: "forged \"b\"".to_owned(),
            }]
        );
        let earliest = secondary.earliest_hold(4);
        assert_eq!(earliest[1], Some(1_795_604_861_000_050));
        assert_eq!(earliest[4], None);
        // Stored up to 3, restarted with 2: an entry was lost.
        let lost = secondary.lost_across_restarts();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].1, 3);
    }

    #[test]
    fn a_start_that_recovered_less_ends_the_holds_it_lost() {
        let log = NodeLog {
            name: "s2".into(),
            starts: vec![
                Started {
                    at_us: 0,
                    recovered: 0,
                },
                Started {
                    at_us: 500,
                    recovered: 1,
                },
            ],
            stored: vec![
                Stored {
                    at_us: 100,
                    first: 1,
                    last: 2,
                },
                Stored {
                    at_us: 700,
                    first: 2,
                    last: 3,
                },
            ],
            ..NodeLog::default()
        };
        let holds = log.current_holds(3);
        let open = |from_us| Hold {
            from_us,
            until_us: None,
        };
        assert_eq!(holds[1], vec![open(100)]);
        assert_eq!(
            holds[2],
            vec![
                Hold {
                    from_us: 100,
                    until_us: Some(500)
                },
                open(700)
            ]
        );
        assert_eq!(holds[3], vec![open(700)]);
        assert!(holds[2][0].covers(499) && !holds[2][0].covers(500));
        assert!(!holds[2].iter().any(|hold| hold.covers(600)));
    }

    #[test]
    fn quoted_values_are_unescaped() {
        let log = NodeLog::parse(
            "master",
            r#"2026-11-25T11:07:41.000100Z DEBUG event="acknowledged" order=7 message_id="a \"b\" c=d\n\\ \u{7f}" w=1 acks=1 duplicate=true"#,
        );
        assert_eq!(log.unreadable, 0);
        assert_eq!(log.acknowledged[0].message_id, "a \"b\" c=d\n\\ \u{7f}");
        assert_eq!(log.acknowledged[0].order, 7);
    }

    #[test]
    fn a_field_inside_a_quoted_value_or_the_message_does_not_count() {
        // `last=` inside the id, and `event=` in prose before the event's own fields.
        let log = NodeLog::parse(
            "master",
            r#"2026-11-25T11:07:41.000100Z  INFO note event=stored last=99 span{order=3}: event="recovered" message_id=" last=50" last=4"#,
        );
        assert_eq!(log.starts.len(), 1);
        assert_eq!(log.starts[0].recovered, 4);
    }

    #[test]
    fn broken_evidence_is_counted_not_skipped() {
        let text = r#"2026-11-25T11:07:41.000050Z DEBUG event="stored" first=1
2026-11-25T11:07:41.000060Z DEBUG event="stored" first=1 last=x
2026-11-25T11:07:41.000070Z DEBUG event="acknowledged" order=1 message_id="unterminated w=1 acks=1
2026-11-25T11:07:41.000080Z DEBUG event="something_else" order=1
not a tracing line event="stored" first=1 last=1
"#;
        let log = NodeLog::parse("s1", text);
        assert!(log.stored.is_empty() && log.acknowledged.is_empty());
        assert_eq!((log.events, log.unreadable), (0, 3));
    }

    #[test]
    fn every_event_name_is_understood() {
        for name in events::ALL {
            let line = format!(
                "2026-11-25T11:07:41.000050Z DEBUG event={name:?} order=1 first=1 last=1 message_id=\"a\" w=1 acks=1 held=\"a\" offered=\"b\""
            );
            let log = NodeLog::parse("node", &line);
            assert_eq!((log.events, log.unreadable), (1, 0), "{name}");
        }
    }
}
