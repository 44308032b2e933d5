//! The checks: pure functions from what was recorded (the client history, the healed logs, the
//! nodes' log evidence, the `/health` samples) to violations. No I/O, so each rule is tested
//! on hand-made histories.
//!
//! # What is proven, and what is not
//!
//! Proven by the final logs and the history alone (no trust in the nodes' own reports):
//! - every node holds the same sequence: same message_ids, same orders, same contents, orders
//!   `1..=N` without gaps, no message_id twice;
//! - every write acknowledged (`201`/`200`) is in that sequence exactly once, at the order its
//!   answer named, with the content the client sent; every write the master said it appended
//!   (`504`, or `503` with an order) is there too, at that order;
//! - nothing is there that no client sent: every entry's message_id and content are a recorded
//!   write's; a write that was never sent (connection refused) or was refused (`4xx`, or a `503`
//!   read-only refusal: no quorum, or a fenced log) is absent;
//! - a write whose answer was lost or timed out is there at most once (ids are unique and every
//!   attempt reuses the write's id, so "twice" would show as a repeated id);
//! - every success answer has `w` as asked and `w <= acks <= 3`.
//!
//! Shown from the nodes' own logs (sound if the nodes' log lines tell the truth; see
//! [`crate::evidence`]): for each acknowledged write with `w = k`, at least `k` nodes (the master
//! included) had logged storing that order durably, or had recovered it at a start, *before* the
//! master logged the acknowledgement (or, if that line is missing, before the client received
//! it), and at least as many as the `acks` the master reported. Also: no node ever recovered
//! fewer entries at a restart than it had logged as stored before, and no secondary was ever
//! offered an entry that conflicts with one it holds (a `diverged` event: the master's history
//! and the node's forked, whatever came of it afterwards). And for every acknowledgement the
//! master logged (answers that were lost included), at least `w` nodes held the entry in their
//! *current* data at that moment: a store counts from its line until a later start of that node
//! recovered less (a wiped or cut data directory), so an acknowledgement that counted a copy a
//! node no longer had is caught. A node's loss can only show at its next start; while a node is
//! down its last store counts, as the master keeps counting a silent secondary's last report.
//!
//! Shown from `/health` samples (sound because a node's stored prefix may only grow): no node's
//! position ever went backwards, and whenever the master reported a secondary's acknowledged
//! position, every later look at that secondary showed at least that much; and no secondary
//! ever reported `diverged`.
//!
//! Not proven: that "stored" means on stable media (SIGKILL keeps the page cache; a power cut
//! is not simulated), that the entry a node held at an order before the end is the one it holds
//! at the end (it follows from append-only logs and the restart check, not from a snapshot at
//! acknowledgement time), and anything about timing that the wall clock cannot order (events
//! within the same microsecond).

use crate::evidence::{Acknowledged, Hold, NodeLog};
use crate::history::{clock, Attempt, AttemptResult, Op, OpStatus};
use crate::sampler::Sample;
use replog_common::wire::EntryMessage;
use replog_testkit::WriteAck;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The kinds of violation, each one a broken promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Check {
    /// The nodes did not reach the same log before the deadline.
    NoConvergence,
    /// A node process ended without being told to.
    NodeCrashed,
    /// A node could not be started again on its data directory.
    RestartFailed,
    /// A log has a gap, a repeated order or a repeated message_id.
    MalformedLog,
    /// Two nodes hold different sequences.
    Divergence,
    /// An acknowledged write is not in the log.
    AckedWriteMissing,
    /// A write is at another order than its answer named, or answers named different orders.
    OrderMismatch,
    /// A write the master said it appended (504/503 with an order) is not in the log.
    AppendedWriteMissing,
    /// A write that was never sent or was refused is in the log.
    FailedWriteApplied,
    /// An entry no client sent, or with content no client sent.
    UnknownEntry,
    /// The same write (content) appears more than once.
    Duplicate,
    /// A success answer that contradicts the request (`acks < w`, another content, ...).
    BadAckResponse,
    /// Fewer than `w` nodes had stored the entry when the master acknowledged it.
    WriteConcernNotMet,
    /// The master reported more holders than had stored the entry.
    AcksOverstated,
    /// A node restarted with fewer entries than it had stored.
    StoredEntriesLost,
    /// A node's `/health` position went down.
    PositionWentBack,
    /// The master reported a secondary position that the secondary did not hold.
    AckedBeyondHeld,
    /// A secondary was offered an entry conflicting with one it holds (its log says so).
    SecondaryDiverged,
    /// A secondary's `/health` said `diverged`.
    ReportedDiverged,
    /// A write refused with a read-only `503` (and never sent or refused otherwise) is in the
    /// log.
    ReadOnlyWriteApplied,
    /// The master acknowledged a write while fewer than `w` nodes held it in their current data.
    TooFewCurrentHolders,
}

impl Check {
    /// A short description for the summary.
    pub fn describe(self) -> &'static str {
        match self {
            Check::NoConvergence => "nodes did not converge",
            Check::NodeCrashed => "node exited on its own",
            Check::RestartFailed => "node could not be started again",
            Check::MalformedLog => "gap, repeated order or repeated id in a log",
            Check::Divergence => "nodes hold different sequences",
            Check::AckedWriteMissing => "acknowledged write missing",
            Check::OrderMismatch => "write at another order than answered",
            Check::AppendedWriteMissing => "write answered 504/503-with-order missing",
            Check::FailedWriteApplied => "never-sent or refused write present",
            Check::UnknownEntry => "entry no client sent",
            Check::Duplicate => "write present more than once",
            Check::BadAckResponse => "success answer contradicts the request",
            Check::WriteConcernNotMet => "acknowledged before w nodes stored it",
            Check::AcksOverstated => "acks larger than the nodes that stored it",
            Check::StoredEntriesLost => "node recovered less than it had stored",
            Check::PositionWentBack => "node position went backwards",
            Check::AckedBeyondHeld => "master counted a position the secondary did not hold",
            Check::SecondaryDiverged => "secondary offered an entry conflicting with its log",
            Check::ReportedDiverged => "secondary reported diverged",
            Check::ReadOnlyWriteApplied => "write refused as read-only present",
            Check::TooFewCurrentHolders => "acknowledged with fewer than w current holders",
        }
    }
}

/// One broken promise, with the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// Which promise.
    pub check: Check,
    /// What was seen.
    pub detail: String,
}

/// Everything the checks look at.
#[derive(Debug, Clone, Copy)]
pub struct Observations<'a> {
    /// The client history.
    pub ops: &'a [Op],
    /// The nodes, master first.
    pub names: &'a [String],
    /// Each node's final log, in the order of `names`.
    pub final_logs: &'a [Vec<EntryMessage>],
    /// Each node's parsed log file, in the order of `names`.
    pub node_logs: &'a [NodeLog],
    /// `/health` samples of every node.
    pub samples: &'a [Sample],
}

/// What the write-concern evidence covered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvidenceSummary {
    /// Acknowledged answers checked against node logs.
    pub acks_checked: usize,
    /// Of those, how many were timed by the master's own `acknowledged` event (the others by
    /// the client's receive time, a later and so weaker bound).
    pub acks_timed_by_master_log: usize,
    /// Acknowledged answers per `w`.
    pub acks_by_w: BTreeMap<u64, usize>,
    /// Per `w`, the smallest gap seen between the `w`-th node storing an entry and its
    /// acknowledgement, in µs: how close the system came to a violation. (For `w = 1` the
    /// `w`-th node is the master itself, so the gap is only its own bookkeeping.)
    pub min_margin_us: BTreeMap<u64, u64>,
    /// The master's `acknowledged` events checked for `w` current holders.
    pub current_holder_acks_checked: usize,
    /// Those per `w`.
    pub current_holder_acks_by_w: BTreeMap<u64, usize>,
    /// Of those, how many had a node that once stored the entry but no longer held it.
    pub acks_with_a_lost_copy: usize,
    /// Spans of holding an entry that a node's restart ended (its data lost or cut).
    pub holds_ended_by_restarts: usize,
    /// Node restarts whose recovered log was compared with what they had stored.
    pub restarts_checked: usize,
    /// `/health` samples taken.
    pub samples: usize,
    /// Master-reported secondary positions compared with the secondary's own later answers.
    pub acked_positions_checked: usize,
    /// Evidence events read from the node logs, of every kind (see [`crate::evidence`]).
    pub events_read: usize,
    /// Evidence events with a missing or unparsable field: the nodes and the checker disagree
    /// about the log contract, and the checks above had less to go on.
    pub unreadable_events: usize,
}

/// The outcome of the checks.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// Every violation found.
    pub violations: Vec<Violation>,
    /// What the evidence covered.
    pub evidence: EvidenceSummary,
}

/// Runs every check: the healed logs agree, every entry was sent, every answered write is
/// where its answers said, the write concern held by the nodes' evidence, no restart lost
/// stored entries, and the `/health` samples never went back.
pub fn check(obs: Observations<'_>) -> Checked {
    let mut out = Checked::default();
    let healed = healed_sequence(obs);
    check_logs_agree(obs, healed, &mut out.violations);
    check_entries_were_sent(obs, &mut out.violations);
    check_writes_against_log(obs, healed, &mut out.violations);
    if obs.node_logs.len() == obs.names.len() {
        check_write_concern(obs, &mut out);
        check_current_holders(obs, &mut out);
        check_restarts(obs, &mut out);
    }
    count_evidence(obs, &mut out.evidence);
    check_samples(obs, &mut out);
    check_divergence(obs, &mut out.violations);
    out
}

/// No secondary logged a divergence, and none reported one on `/health` (the first sample
/// that did, per node).
fn check_divergence(obs: Observations<'_>, out: &mut Vec<Violation>) {
    for log in obs.node_logs {
        for diverged in &log.diverged {
            flag(
                out,
                Check::SecondaryDiverged,
                format!(
                    "{} at {}: at order {} it holds message_id {:?}, and was offered {:?}",
                    log.name,
                    clock(diverged.at_us),
                    diverged.order,
                    diverged.held,
                    diverged.offered
                ),
            );
        }
    }
    let mut reported = HashSet::new();
    let mut samples: Vec<&Sample> = obs.samples.iter().filter(|s| s.diverged).collect();
    samples.sort_by_key(|s| s.sent_us);
    for sample in samples {
        if reported.insert(sample.node) {
            let name = obs.names.get(sample.node).map_or("?", String::as_str);
            flag(
                out,
                Check::ReportedDiverged,
                format!(
                    "{name}'s /health said diverged at {} (applied={})",
                    clock(sample.done_us),
                    sample.position
                ),
            );
        }
    }
}

/// Records one broken promise.
fn flag(violations: &mut Vec<Violation>, check: Check, detail: String) {
    violations.push(Violation { check, detail });
}

/// The sequence every node must hold after healing: the master's final log (the other nodes
/// are compared with it by [`check_logs_agree`]).
fn healed_sequence<'a>(obs: Observations<'a>) -> &'a [EntryMessage] {
    obs.final_logs.first().map(Vec::as_slice).unwrap_or(&[])
}

/// Every log runs `1..=N` with each id once, and every node holds the healed sequence.
fn check_logs_agree(obs: Observations<'_>, healed: &[EntryMessage], out: &mut Vec<Violation>) {
    for (name, log) in obs.names.iter().zip(obs.final_logs) {
        if let Some(problem) = malformed(log) {
            flag(out, Check::MalformedLog, format!("{name}: {problem}"));
        }
    }
    for (name, log) in obs.names.iter().zip(obs.final_logs).skip(1) {
        if let Some(difference) = first_difference(healed, log) {
            flag(
                out,
                Check::Divergence,
                format!("{} vs {name}: {difference}", obs.names[0]),
            );
        }
    }
}

/// Every entry of every log against the history: a client sent it, with that content; it is
/// not a write that was never sent or was refused; and no content is there twice.
fn check_entries_were_sent(obs: Observations<'_>, out: &mut Vec<Violation>) {
    let by_id: HashMap<&str, &Op> = obs
        .ops
        .iter()
        .map(|op| (op.message_id.as_str(), op))
        .collect();
    for (name, log) in obs.names.iter().zip(obs.final_logs) {
        let mut contents: HashMap<&str, u64> = HashMap::new();
        for entry in log {
            match by_id.get(entry.message_id.as_str()) {
                None => flag(
                    out,
                    Check::UnknownEntry,
                    format!("{name}: entry {} has message_id {:?}, which no client sent", entry.order, entry.message_id),
                ),
                Some(op) if op.content != entry.content => flag(
                    out,
                    Check::UnknownEntry,
                    format!(
                        "{name}: entry {} ({}) holds {:?}, but the client sent {:?}",
                        entry.order, entry.message_id, entry.content, op.content
                    ),
                ),
                Some(op) if op.status() == OpStatus::Failed && op.was_refused_read_only() => flag(
                    out,
                    Check::ReadOnlyWriteApplied,
                    format!(
                        "{name}: entry {} ({}) is a write refused as read-only and never accepted: {}",
                        entry.order, entry.message_id, describe_attempts(op)
                    ),
                ),
                Some(op) if op.status() == OpStatus::Failed => flag(
                    out,
                    Check::FailedWriteApplied,
                    format!(
                        "{name}: entry {} ({}) is a write whose every attempt was never sent or refused: {:?}",
                        entry.order, entry.message_id, op.attempts.iter().map(|a| &a.result).collect::<Vec<_>>()
                    ),
                ),
                Some(_) => {}
            }
            if let Some(first) = contents.insert(entry.content.as_str(), entry.order) {
                flag(
                    out,
                    Check::Duplicate,
                    format!(
                        "{name}: content {:?} at orders {first} and {}",
                        entry.content, entry.order
                    ),
                );
            }
        }
    }
}

/// Every write against the healed sequence: where it must be, and what its answers said.
fn check_writes_against_log(
    obs: Observations<'_>,
    healed: &[EntryMessage],
    out: &mut Vec<Violation>,
) {
    let position: HashMap<&str, &EntryMessage> = healed
        .iter()
        .map(|entry| (entry.message_id.as_str(), entry))
        .collect();
    for op in obs.ops {
        check_answered_write_present(obs, &position, op, out);
        check_success_answers(obs, op, out);
    }
}

/// One write's answers named one order, and a write acknowledged or said to be appended is in
/// the healed sequence at that order.
fn check_answered_write_present(
    obs: Observations<'_>,
    position: &HashMap<&str, &EntryMessage>,
    op: &Op,
    out: &mut Vec<Violation>,
) {
    let named: HashSet<u64> = op
        .attempts
        .iter()
        .filter_map(|a| a.result.order())
        .collect();
    if named.len() > 1 {
        flag(
            out,
            Check::OrderMismatch,
            format!(
                "{}: answers named different orders {named:?}",
                op.message_id
            ),
        );
    }
    let missing = match op.status() {
        OpStatus::Acknowledged => Check::AckedWriteMissing,
        OpStatus::Appended => Check::AppendedWriteMissing,
        OpStatus::Indeterminate | OpStatus::Failed => return,
    };
    match position.get(op.message_id.as_str()) {
        None => flag(
            out,
            missing,
            format!(
                "{} (w={}, orders named {named:?}) is not in {}'s final log; attempts: {}",
                op.message_id,
                op.w,
                obs.names
                    .first()
                    .map(String::as_str)
                    .unwrap_or("the master"),
                describe_attempts(op)
            ),
        ),
        Some(entry) if !named.contains(&entry.order) => flag(
            out,
            Check::OrderMismatch,
            format!(
                "{} is at order {} but answers named {named:?}",
                op.message_id, entry.order
            ),
        ),
        Some(_) => {}
    }
}

/// Every success answer repeats the request (id, content, `w`) and has `w <= acks <= nodes`.
fn check_success_answers(obs: Observations<'_>, op: &Op, out: &mut Vec<Violation>) {
    for (_, ack) in op.acks() {
        let mut wrong = Vec::new();
        if ack.message_id != op.message_id {
            wrong.push(format!("message_id {:?}", ack.message_id));
        }
        if ack.content != op.content {
            wrong.push(format!("content {:?}", ack.content));
        }
        if ack.w != op.w {
            wrong.push(format!("w {} (asked {})", ack.w, op.w));
        }
        if ack.acks < op.w || ack.acks > obs.names.len() as u64 {
            wrong.push(format!(
                "acks {} outside {}..={}",
                ack.acks,
                op.w,
                obs.names.len()
            ));
        }
        if !wrong.is_empty() {
            flag(
                out,
                Check::BadAckResponse,
                format!("{} answered with {}", op.message_id, wrong.join(", ")),
            );
        }
    }
}

/// The durability evidence: for every acknowledged answer, at least `w` nodes (and at least
/// the `acks` the master reported) had logged holding the entry by the time the master logged
/// the acknowledgement, or, without that line, by the time the client got the answer.
fn check_write_concern(obs: Observations<'_>, out: &mut Checked) {
    // Orders as far as anything names them: acknowledged orders beyond the end of the
    // final log must still be looked up (and then found missing), not skipped.
    let len = obs
        .final_logs
        .iter()
        .map(|log| log.len() as u64)
        .chain(
            obs.ops
                .iter()
                .flat_map(|op| op.attempts.iter().filter_map(|a| a.result.order())),
        )
        .max()
        .unwrap_or(0);
    let holds: Vec<Vec<Option<u64>>> = obs
        .node_logs
        .iter()
        .map(|log| log.earliest_hold(len))
        .collect();
    let master_acks: HashMap<&str, Vec<&Acknowledged>> =
        obs.node_logs[0]
            .acknowledged
            .iter()
            .fold(HashMap::new(), |mut map, line| {
                map.entry(line.message_id.as_str()).or_default().push(line);
                map
            });
    for op in obs.ops {
        for (attempt, ack) in op.acks() {
            let line = master_acks.get(op.message_id.as_str()).and_then(|lines| {
                lines
                    .iter()
                    .filter(|line| line.at_us >= attempt.sent_us && line.at_us <= attempt.done_us)
                    .max_by_key(|line| line.at_us)
            });
            check_acknowledgement(obs, &holds, op, attempt, ack, line.copied(), out);
        }
    }
}

/// One acknowledged answer (`attempt` got `ack`) against the nodes' holds (`holds[node][order]`, the earliest time
/// each node held each order), timed by the master's `line` for it if there is one.
fn check_acknowledgement(
    obs: Observations<'_>,
    holds: &[Vec<Option<u64>>],
    op: &Op,
    attempt: &Attempt,
    ack: &WriteAck,
    line: Option<&Acknowledged>,
    out: &mut Checked,
) {
    let at = line.map_or(attempt.done_us, |line| line.at_us);
    out.evidence.acks_checked += 1;
    out.evidence.acks_timed_by_master_log += usize::from(line.is_some());
    *out.evidence.acks_by_w.entry(ack.w).or_default() += 1;
    let mut times: Vec<u64> = holds
        .iter()
        .filter_map(|node| node.get(ack.order as usize).copied().flatten())
        .filter(|stored| *stored <= at)
        .collect();
    times.sort_unstable();
    let holders = times.len() as u64;
    let who: Vec<&str> = obs
        .names
        .iter()
        .zip(holds)
        .filter(|(_, node)| {
            node.get(ack.order as usize)
                .copied()
                .flatten()
                .is_some_and(|t| t <= at)
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let when = if line.is_some() {
        "the master logged the acknowledgement"
    } else {
        "the client got the answer"
    };
    if holders < op.w {
        flag(
            &mut out.violations,
            Check::WriteConcernNotMet,
            format!(
                "{} (order {}, w={}, acks={}) was acknowledged at {} but only {who:?} had stored it by then ({when}); later stores: {}",
                op.message_id, ack.order, op.w, ack.acks, clock(at), later_stores(obs.names, holds, ack.order, at)
            ),
        );
        return;
    }
    if holders < ack.acks {
        flag(
            &mut out.violations,
            Check::AcksOverstated,
            format!(
                "{} (order {}, w={}) answered acks={} but only {who:?} had stored it by {} ({when})",
                op.message_id, ack.order, op.w, ack.acks, clock(at)
            ),
        );
    }
    let kth = times[op.w as usize - 1];
    let margin = at - kth;
    let closest = out.evidence.min_margin_us.entry(op.w).or_insert(margin);
    *closest = (*closest).min(margin);
}

/// Every acknowledgement the master logged against the nodes' current data: at that moment at
/// least `w` nodes (the master included, so at least `w - 1` secondaries) held the entry, a
/// copy lost at a restart no longer counting.
fn check_current_holders(obs: Observations<'_>, out: &mut Checked) {
    let acknowledged = &obs.node_logs[0].acknowledged;
    let len = obs
        .final_logs
        .iter()
        .map(|log| log.len() as u64)
        .chain(acknowledged.iter().map(|line| line.order))
        .max()
        .unwrap_or(0);
    let holds: Vec<Vec<Vec<Hold>>> = obs
        .node_logs
        .iter()
        .map(|log| log.current_holds(len))
        .collect();
    out.evidence.holds_ended_by_restarts += holds
        .iter()
        .flatten()
        .flatten()
        .filter(|hold| hold.until_us.is_some())
        .count();
    for line in acknowledged {
        out.evidence.current_holder_acks_checked += 1;
        *out.evidence
            .current_holder_acks_by_w
            .entry(line.w)
            .or_default() += 1;
        let (mut holders, mut lost) = (Vec::new(), Vec::new());
        for (name, node) in obs.names.iter().zip(&holds) {
            let spans = node
                .get(line.order as usize)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if spans.iter().any(|hold| hold.covers(line.at_us)) {
                holders.push(name.as_str());
            } else if spans.iter().any(|hold| hold.from_us <= line.at_us) {
                lost.push(name.as_str());
            }
        }
        out.evidence.acks_with_a_lost_copy += usize::from(!lost.is_empty());
        if (holders.len() as u64) < line.w {
            flag(
                &mut out.violations,
                Check::TooFewCurrentHolders,
                format!(
                    "the master acknowledged {} (order {}, w={}, acks={}) at {}, when only {holders:?} held it in their current data{}",
                    line.message_id,
                    line.order,
                    line.w,
                    line.acks,
                    clock(line.at_us),
                    if lost.is_empty() {
                        String::new()
                    } else {
                        format!(" ({lost:?} had stored it and lost it at a restart)")
                    }
                ),
            );
        }
    }
}

/// No node recovered fewer entries at a start than it had logged as stored before it.
fn check_restarts(obs: Observations<'_>, out: &mut Checked) {
    for log in obs.node_logs {
        out.evidence.restarts_checked += log.starts.len().saturating_sub(1);
        for (start, stored) in log.lost_across_restarts() {
            flag(
                &mut out.violations,
                Check::StoredEntriesLost,
                format!(
                    "{} started at {} with {} entries after logging {} as stored",
                    log.name,
                    clock(start.at_us),
                    start.recovered,
                    stored
                ),
            );
        }
    }
}

/// How much evidence the node logs held, so that a report shows whether the checks built on
/// them had anything to go on.
fn count_evidence(obs: Observations<'_>, evidence: &mut EvidenceSummary) {
    for log in obs.node_logs {
        evidence.events_read += log.events;
        evidence.unreadable_events += log.unreadable;
    }
}

/// Positions only grow; and what the master says a secondary acked, the secondary holds.
fn check_samples(obs: Observations<'_>, out: &mut Checked) {
    out.evidence.samples = obs.samples.len();
    let mut per_node: BTreeMap<usize, Vec<&Sample>> = BTreeMap::new();
    for sample in obs.samples {
        per_node.entry(sample.node).or_default().push(sample);
    }
    for samples in per_node.values_mut() {
        samples.sort_by_key(|s| s.sent_us);
    }
    for (node, samples) in &per_node {
        let name = obs.names.get(*node).map(String::as_str).unwrap_or("?");
        // One task samples each node, waiting for each answer: consecutive samples of a node
        // never overlap in time, so each must show at least what the one before showed.
        for pair in samples.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            if after.position < before.position && before.done_us < after.sent_us {
                out.violations.push(Violation {
                    check: Check::PositionWentBack,
                    detail: format!(
                        "{name} reported {} at {}, then {} at {}",
                        before.position,
                        clock(before.done_us),
                        after.position,
                        clock(after.sent_us)
                    ),
                });
            }
        }
    }
    // The master's claims about each secondary, against the secondary's later answers.
    let Some(master_samples) = per_node.get(&0) else {
        return;
    };
    for (node, name) in obs.names.iter().enumerate().skip(1) {
        let Some(samples) = per_node.get(&node) else {
            continue;
        };
        let mut claims = master_samples
            .iter()
            .filter_map(|m| {
                m.acked
                    .iter()
                    .find(|(id, _)| id == name)
                    .map(|(_, acked)| (m.done_us, *acked))
            })
            .collect::<Vec<_>>();
        claims.sort_unstable();
        let mut claimed: Option<(u64, u64)> = None;
        let mut reported = HashSet::new();
        let mut next = 0;
        for sample in samples {
            while next < claims.len() && claims[next].0 < sample.sent_us {
                if claimed.is_none_or(|(_, acked)| claims[next].1 > acked) {
                    claimed = Some(claims[next]);
                }
                next += 1;
            }
            if let Some((at, acked)) = claimed {
                out.evidence.acked_positions_checked += 1;
                if sample.position < acked && reported.insert(acked) {
                    out.violations.push(Violation {
                        check: Check::AckedBeyondHeld,
                        detail: format!(
                            "the master reported {name} acked {acked} at {}, but {name} reported applied={} at {}",
                            clock(at), sample.position, clock(sample.sent_us)
                        ),
                    });
                }
            }
        }
    }
}

/// Where each node stored `order` after `at`, for a violation message.
fn later_stores(names: &[String], holds: &[Vec<Option<u64>>], order: u64, at: u64) -> String {
    names
        .iter()
        .zip(holds)
        .map(
            |(name, node)| match node.get(order as usize).copied().flatten() {
                Some(t) if t <= at => format!("{name}: before"),
                Some(t) => format!("{name}: {} µs after", t - at),
                None => format!("{name}: no record"),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_attempts(op: &Op) -> String {
    op.attempts
        .iter()
        .map(|a| match &a.result {
            AttemptResult::Acked(ack) => format!(
                "[{} .. {}] acked order={} acks={}",
                clock(a.sent_us),
                clock(a.done_us),
                ack.order,
                ack.acks
            ),
            other => format!("[{} .. {}] {other:?}", clock(a.sent_us), clock(a.done_us)),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first way a log breaks "orders 1..=N, each id once".
fn malformed(log: &[EntryMessage]) -> Option<String> {
    let mut ids = HashSet::new();
    for (index, entry) in log.iter().enumerate() {
        let expected = index as u64 + 1;
        if entry.order != expected {
            return Some(format!("entry #{expected} has order {}", entry.order));
        }
        if !ids.insert(entry.message_id.as_str()) {
            return Some(format!(
                "message_id {} appears again at order {}",
                entry.message_id, entry.order
            ));
        }
    }
    None
}

/// Where two logs first differ, if they do.
fn first_difference(a: &[EntryMessage], b: &[EntryMessage]) -> Option<String> {
    for (index, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            return Some(format!("entry #{} differs: {x:?} vs {y:?}", index + 1));
        }
    }
    (a.len() != b.len()).then(|| format!("{} entries vs {}", a.len(), b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{Diverged, Started, Stored};
    use crate::history::tests::{acked, op, unknown};

    fn entry(order: u64, id: &str) -> EntryMessage {
        EntryMessage {
            message_id: id.to_owned(),
            order,
            content: format!("content of {id}"),
            master_incarnation: None,
        }
    }

    fn names() -> Vec<String> {
        vec!["master".into(), "s1".into(), "s2".into()]
    }

    fn checks(
        ops: &[Op],
        logs: &[Vec<EntryMessage>],
        node_logs: &[NodeLog],
        samples: &[Sample],
    ) -> Vec<Check> {
        let names = names();
        let mut found: Vec<Check> = check(Observations {
            ops,
            names: &names,
            final_logs: logs,
            node_logs,
            samples,
        })
        .violations
        .into_iter()
        .map(|v| v.check)
        .collect();
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn a_clean_history_passes() {
        let ops = vec![
            op("a", 1, vec![acked("a", 1, 1, 1)]),
            op("b", 2, vec![unknown()]),
            op("c", 3, vec![unknown(), unknown()]),
        ];
        let log = vec![entry(1, "a"), entry(2, "b")];
        assert_eq!(
            checks(&ops, &[log.clone(), log.clone(), log], &[], &[]),
            vec![]
        );
    }

    #[test]
    fn lost_moved_foreign_and_repeated_entries_are_caught() {
        let ops = vec![
            op("a", 1, vec![acked("a", 1, 1, 1)]),
            op("b", 1, vec![AttemptResult::TimedOut { order: 2, acks: 1 }]),
            op(
                "f",
                1,
                vec![AttemptResult::NotSent {
                    error: "refused".into(),
                }],
            ),
        ];
        // `a` lost, `b` lost.
        let empty: Vec<EntryMessage> = vec![];
        assert_eq!(
            checks(&ops, &[empty.clone(), empty.clone(), empty], &[], &[]),
            vec![Check::AckedWriteMissing, Check::AppendedWriteMissing]
        );
        // `a` at another order, a foreign entry, a never-sent write present, a gap.
        let log = vec![entry(1, "x"), entry(2, "a"), entry(3, "b"), entry(4, "f")];
        let found = checks(&ops, &[log.clone(), log.clone(), log], &[], &[]);
        assert_eq!(
            found,
            vec![
                Check::OrderMismatch,
                Check::FailedWriteApplied,
                Check::UnknownEntry
            ]
        );
        // A repeated id is malformed; a shorter secondary diverges.
        let twice = vec![entry(1, "a"), entry(2, "a")];
        let found = checks(&ops, &[twice.clone(), vec![entry(1, "a")], twice], &[], &[]);
        assert!(found.contains(&Check::MalformedLog), "{found:?}");
        assert!(found.contains(&Check::Divergence), "{found:?}");
        assert!(found.contains(&Check::Duplicate), "{found:?}");
    }

    #[test]
    fn success_answers_must_match_the_request() {
        let ops = vec![op("a", 3, vec![acked("a", 1, 3, 2)])];
        let log = vec![entry(1, "a")];
        assert_eq!(
            checks(&ops, &[log.clone(), log.clone(), log], &[], &[]),
            vec![Check::BadAckResponse]
        );
    }

    fn node_log(
        name: &str,
        stored: &[(u64, u64)],
        acknowledged: &[(u64, &str, u64, u64)],
    ) -> NodeLog {
        NodeLog {
            name: name.into(),
            stored: stored
                .iter()
                .map(|&(at_us, order)| Stored {
                    at_us,
                    first: order,
                    last: order,
                })
                .collect(),
            acknowledged: acknowledged
                .iter()
                .map(|&(at_us, id, w, acks)| Acknowledged {
                    at_us,
                    order: 1,
                    message_id: id.into(),
                    w,
                    acks,
                })
                .collect(),
            starts: vec![Started {
                at_us: 0,
                recovered: 0,
            }],
            ..NodeLog::default()
        }
    }

    #[test]
    fn the_write_concern_is_checked_at_acknowledgement_time() {
        // Attempt 0 of `a` runs from 0 to 500 µs; w=2 acknowledged at 400 µs.
        let ops = vec![op("a", 2, vec![acked("a", 1, 2, 2)])];
        let log = vec![entry(1, "a")];
        let logs = [log.clone(), log.clone(), log];
        let master = node_log("master", &[(100, 1)], &[(400, "a", 2, 2)]);
        let in_time = [
            master.clone(),
            node_log("s1", &[(300, 1)], &[]),
            node_log("s2", &[(900, 1)], &[]),
        ];
        assert_eq!(checks(&ops, &logs, &in_time, &[]), vec![]);
        let too_late = [
            master.clone(),
            node_log("s1", &[(450, 1)], &[]),
            node_log("s2", &[(900, 1)], &[]),
        ];
        assert_eq!(
            checks(&ops, &logs, &too_late, &[]),
            vec![Check::WriteConcernNotMet, Check::TooFewCurrentHolders]
        );
        // acks=3 claimed while two nodes held it.
        let ops = vec![op("a", 2, vec![acked("a", 1, 2, 3)])];
        assert_eq!(
            checks(&ops, &logs, &in_time, &[]),
            vec![Check::AcksOverstated]
        );
    }

    #[test]
    fn a_copy_lost_before_the_acknowledgement_does_not_count() {
        // Issue 7's first scenario: s2 stored order 1, then started again on a wiped data
        // directory, and the master still acknowledged a retry with w=3 and acks=3.
        let ops = vec![op(
            "a",
            3,
            vec![unknown(), acked("a", 1, 3, 3), acked("a", 1, 3, 3)],
        )];
        let log = vec![entry(1, "a")];
        let logs = [log.clone(), log.clone(), log];
        let master = node_log(
            "master",
            &[(100, 1)],
            &[(1_300, "a", 3, 3), (2_300, "a", 3, 3)],
        );
        let s1 = node_log("s1", &[(200, 1)], &[]);
        let mut wiped = node_log("s2", &[(300, 1)], &[]);
        wiped.starts.push(Started {
            at_us: 1_100,
            recovered: 0,
        });
        let nodes = [master.clone(), s1.clone(), wiped.clone()];
        let names = names();
        let checked = check(Observations {
            ops: &ops,
            names: &names,
            final_logs: &logs,
            node_logs: &nodes,
            samples: &[],
        });
        // The older check, by earliest stores, cannot see it; this one does, for both acks
        // (and the restart check sees the wipe itself).
        let found: Vec<Check> = checked.violations.iter().map(|v| v.check).collect();
        assert_eq!(
            found,
            vec![
                Check::TooFewCurrentHolders,
                Check::TooFewCurrentHolders,
                Check::StoredEntriesLost
            ],
            "{checked:?}"
        );
        assert!(
            checked.violations[0]
                .detail
                .contains(r#"only ["master", "s1"] held it"#),
            "{checked:?}"
        );
        assert_eq!(checked.evidence.current_holder_acks_checked, 2);
        assert_eq!(checked.evidence.acks_with_a_lost_copy, 2);
        assert_eq!(checked.evidence.holds_ended_by_restarts, 1);
        // Once s2 has stored it again (its catch-up), the later acknowledgement is sound.
        let mut rebuilt = wiped;
        rebuilt.stored.push(Stored {
            at_us: 2_000,
            first: 1,
            last: 1,
        });
        let checked = check(Observations {
            ops: &ops,
            names: &names,
            final_logs: &logs,
            node_logs: &[master, s1, rebuilt],
            samples: &[],
        });
        let late: Vec<&str> = checked
            .violations
            .iter()
            .filter(|v| v.check == Check::TooFewCurrentHolders)
            .map(|v| v.detail.as_str())
            .collect();
        assert_eq!(late.len(), 1, "{late:?}");
        assert!(late[0].contains("at 00:00:00.001300Z"), "{late:?}");
    }

    #[test]
    fn a_write_refused_as_read_only_must_be_absent() {
        let read_only = || AttemptResult::ReadOnly {
            error: "read-only: no quorum (1 of 3 nodes healthy, 2 needed)".into(),
        };
        let ops = vec![
            op("a", 1, vec![acked("a", 1, 1, 1)]),
            op("r", 1, vec![read_only(), read_only()]),
            op("later", 1, vec![read_only(), acked("later", 2, 1, 1)]),
        ];
        let log = vec![entry(1, "a"), entry(2, "later")];
        assert_eq!(
            checks(&ops, &[log.clone(), log.clone(), log], &[], &[]),
            vec![]
        );
        let log = vec![entry(1, "a"), entry(2, "later"), entry(3, "r")];
        assert_eq!(
            checks(&ops, &[log.clone(), log.clone(), log], &[], &[]),
            vec![Check::ReadOnlyWriteApplied]
        );
    }

    #[test]
    fn a_restart_that_recovers_less_than_was_stored_is_caught() {
        let mut s1 = node_log("s1", &[(100, 1), (200, 2)], &[]);
        s1.starts.push(Started {
            at_us: 300,
            recovered: 1,
        });
        let ops = vec![
            op("a", 1, vec![acked("a", 1, 1, 1)]),
            op("b", 1, vec![acked("b", 2, 1, 1)]),
        ];
        let log = vec![entry(1, "a"), entry(2, "b")];
        let logs = [log.clone(), log.clone(), log];
        let master = node_log("master", &[(10, 1), (20, 2)], &[]);
        let found = checks(&ops, &logs, &[master, s1, node_log("s2", &[], &[])], &[]);
        assert_eq!(found, vec![Check::StoredEntriesLost]);
    }

    fn sample(node: usize, at: u64, position: u64, acked: &[(&str, u64)]) -> Sample {
        Sample {
            node,
            sent_us: at,
            done_us: at + 10,
            position,
            acked: acked.iter().map(|(id, a)| (id.to_string(), *a)).collect(),
            diverged: false,
        }
    }

    #[test]
    fn a_divergence_logged_or_reported_is_a_violation() {
        let log = vec![entry(1, "a")];
        let logs = [log.clone(), log.clone(), log];
        let ops = vec![op("a", 1, vec![acked("a", 1, 1, 1)])];
        let mut s1 = node_log("s1", &[(100, 1)], &[]);
        s1.diverged.push(Diverged {
            at_us: 200,
            order: 1,
            held: "a".into(),
            offered: "forged".into(),
        });
        let master = node_log("master", &[(10, 1)], &[]);
        let quiet = [
            master.clone(),
            node_log("s1", &[(100, 1)], &[]),
            node_log("s2", &[(100, 1)], &[]),
        ];
        assert_eq!(checks(&ops, &logs, &quiet, &[]), vec![]);
        let forked = [master, s1, node_log("s2", &[(100, 1)], &[])];
        assert_eq!(
            checks(&ops, &logs, &forked, &[]),
            vec![Check::SecondaryDiverged]
        );
        let said = vec![
            sample(2, 100, 1, &[]),
            Sample {
                diverged: true,
                ..sample(2, 200, 1, &[])
            },
            Sample {
                diverged: true,
                ..sample(2, 300, 1, &[])
            },
        ];
        let names = names();
        let found = check(Observations {
            ops: &ops,
            names: &names,
            final_logs: &logs,
            node_logs: &quiet,
            samples: &said,
        })
        .violations;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].check, Check::ReportedDiverged);
        assert!(
            found[0].detail.starts_with("s2's /health said diverged"),
            "{found:?}"
        );
    }

    #[test]
    fn health_samples_must_never_go_back_or_claim_too_much() {
        let good = vec![
            sample(0, 100, 5, &[("s1", 3), ("s2", 0)]),
            sample(1, 200, 4, &[]),
            sample(1, 300, 5, &[]),
        ];
        assert_eq!(checks(&[], &[vec![], vec![], vec![]], &[], &good), vec![]);
        let back = vec![sample(1, 100, 5, &[]), sample(1, 300, 4, &[])];
        assert_eq!(
            checks(&[], &[vec![], vec![], vec![]], &[], &back),
            vec![Check::PositionWentBack]
        );
        let beyond = vec![sample(0, 100, 5, &[("s1", 5)]), sample(1, 200, 4, &[])];
        assert_eq!(
            checks(&[], &[vec![], vec![], vec![]], &[], &beyond),
            vec![Check::AckedBeyondHeld]
        );
    }
}
