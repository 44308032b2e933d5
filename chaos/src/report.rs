//! The summary of a run: what was written, what was injected, what the evidence covered and
//! every violation, rendered as a plain-text table.

use crate::checker::{Check, EvidenceSummary, Violation};
use crate::faults::{FaultEvent, FaultKind};
use crate::history::{AttemptResult, Op, OpStatus};
use replog_common::wire::EntryMessage;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How many violations of one kind are printed in full.
const SHOWN_PER_CHECK: usize = 10;

/// The summary's account of what a passing run establishes, and what it does not.
const PROVEN: &[&str] = &[
    "proven from the final logs and the client history alone:",
    "  every node lists the same entries, orders 1..N, no gap, no id twice;",
    "  every acknowledged write (and every 504) is there once, at the order it was answered with;",
    "  nothing is there that no client sent; never-sent, 4xx and read-only (503) writes are absent;",
    "  a write whose answer was lost or timed out is there at most once; every ack has w <= acks <= 3.",
    "shown from the nodes' own logs (trusting their `sequenced`, `stored` and `recovered` events):",
    "  w nodes had stored each acknowledged entry before the master logged the acknowledgement,",
    "  and at least `acks` of them; no node restarted with fewer entries than it had stored;",
    "  no secondary was offered an entry conflicting with one it holds (`diverged`);",
    "  every `acknowledged` event had w nodes holding the entry in their current data (a copy",
    "  lost at a restart, e.g. a wiped data directory, no longer counts).",
    "shown from /health samples: no position went backwards; what the master reported a",
    "  secondary had acked, that secondary held at every later look; none said `diverged`.",
    "not proven: durability against power loss (SIGKILL keeps the OS page cache), that a node's",
    "  `stored` event means stable media, orderings closer than the clock's microsecond.",
];

/// What the writers did and were told.
#[derive(Debug, Clone, Default)]
pub struct WriteStats {
    /// Writes (distinct message_ids).
    pub writes: usize,
    /// HTTP requests, retries included.
    pub attempts: usize,
    /// Writes sent more than once.
    pub retried: usize,
    /// Writes carrying a `timeout_ms`.
    pub with_timeout_ms: usize,
    /// Writes acknowledged (`201`/`200`), by any attempt.
    pub acknowledged: usize,
    /// Acknowledged writes per `w`.
    pub acknowledged_by_w: BTreeMap<u64, usize>,
    /// Writes whose last word was a `504` (or `503` with an order): appended, not acknowledged.
    pub timed_out: usize,
    /// Writes whose fate the client never learned.
    pub indeterminate: usize,
    /// Of those, how many are in the final log (the rest are not).
    pub indeterminate_present: usize,
    /// Writes never sent (refused connections) or refused (4xx, read-only 503).
    pub failed: usize,
    /// Attempts answered `504`.
    pub answers_504: usize,
    /// Attempts with no answer (client timeout, lost connection).
    pub answers_lost: usize,
    /// Attempts refused at connect.
    pub answers_refused: usize,
    /// Attempts answered `503` by a stopping master.
    pub answers_503: usize,
    /// Attempts refused with a read-only `503` (no quorum, or a fenced log).
    pub answers_read_only: usize,
    /// Attempts answered with another 5xx.
    pub answers_5xx: usize,
}

impl WriteStats {
    /// Counts a history against the final log.
    pub fn from_history(ops: &[Op], final_log: &[EntryMessage]) -> WriteStats {
        let present: HashSet<&str> = final_log.iter().map(|e| e.message_id.as_str()).collect();
        let mut stats = WriteStats {
            writes: ops.len(),
            ..WriteStats::default()
        };
        for op in ops {
            stats.attempts += op.attempts.len();
            stats.retried += usize::from(op.attempts.len() > 1);
            stats.with_timeout_ms += usize::from(op.timeout_ms.is_some());
            match op.status() {
                OpStatus::Acknowledged => {
                    stats.acknowledged += 1;
                    *stats.acknowledged_by_w.entry(op.w).or_default() += 1;
                }
                OpStatus::Appended => stats.timed_out += 1,
                OpStatus::Indeterminate => {
                    stats.indeterminate += 1;
                    stats.indeterminate_present +=
                        usize::from(present.contains(op.message_id.as_str()));
                }
                OpStatus::Failed => stats.failed += 1,
            }
            for attempt in &op.attempts {
                match attempt.result {
                    AttemptResult::TimedOut { .. } => stats.answers_504 += 1,
                    AttemptResult::Unknown { .. } => stats.answers_lost += 1,
                    AttemptResult::NotSent { .. } => stats.answers_refused += 1,
                    AttemptResult::Unavailable { .. } => stats.answers_503 += 1,
                    AttemptResult::ReadOnly { .. } => stats.answers_read_only += 1,
                    AttemptResult::ServerError { .. } => stats.answers_5xx += 1,
                    AttemptResult::Acked(_) | AttemptResult::Rejected { .. } => {}
                }
            }
        }
        stats
    }
}

/// Everything a run established.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed of every random choice.
    pub seed: u64,
    /// Seconds of writing and faults.
    pub seconds: u64,
    /// Concurrent writers.
    pub writers: usize,
    /// `classic` or `quorum`.
    pub queue_type: String,
    /// Whether the nodes were release builds.
    pub binaries: String,
    /// The deliberate damage of a checker self-test, if any.
    pub sabotage: Option<String>,
    /// Node logs, broker log, history.
    pub run_dir: PathBuf,
    /// Whether `run_dir` was kept.
    pub kept: bool,
    /// How long the private broker's first start took.
    pub broker_start: Duration,
    /// The writers' side.
    pub writes: WriteStats,
    /// Every fault.
    pub faults: Vec<FaultEvent>,
    /// How long the healed cluster took to converge, if it did.
    pub converged_after: Option<Duration>,
    /// Entries in the master's final log.
    pub final_len: usize,
    /// What the evidence covered.
    pub evidence: EvidenceSummary,
    /// Every violation.
    pub violations: Vec<Violation>,
    /// The whole run, setup and checks included.
    pub elapsed: Duration,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Faults per kind and target.
    pub fn fault_counts(&self) -> BTreeMap<(FaultKind, String), usize> {
        let mut counts = BTreeMap::new();
        for event in &self.faults {
            *counts
                .entry((event.kind, event.target.clone()))
                .or_default() += 1;
        }
        counts
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.writes;
        writeln!(f, "== replog chaos run ==")?;
        writeln!(
            f,
            "seed {}  |  {} s, {} writers, {} queues, {} nodes  |  total {:.1} s",
            self.seed,
            self.seconds,
            self.writers,
            self.queue_type,
            self.binaries,
            self.elapsed.as_secs_f64()
        )?;
        if let Some(sabotage) = &self.sabotage {
            writeln!(
                f,
                "SABOTAGE: {sabotage} (a self-test of the checker: violations expected)"
            )?;
        }
        writeln!(f, "\nwrites")?;
        let by_w: Vec<String> = w
            .acknowledged_by_w
            .iter()
            .map(|(k, n)| format!("w={k}: {n}"))
            .collect();
        let row = |f: &mut fmt::Formatter<'_>, label: &str, value: String| {
            writeln!(f, "  {label:<38} {value}")
        };
        row(
            f,
            "sent (distinct message_ids)",
            format!(
                "{}  ({} requests, {} retried, {} with timeout_ms)",
                w.writes, w.attempts, w.retried, w.with_timeout_ms
            ),
        )?;
        row(
            f,
            "acknowledged (201/200)",
            format!("{}  ({})", w.acknowledged, by_w.join(", ")),
        )?;
        row(
            f,
            "timed out (504, never acknowledged)",
            w.timed_out.to_string(),
        )?;
        row(
            f,
            "indeterminate (no answer / 5xx)",
            format!(
                "{}  ({} in the final log, {} not)",
                w.indeterminate,
                w.indeterminate_present,
                w.indeterminate - w.indeterminate_present
            ),
        )?;
        row(
            f,
            "failed (refused / 4xx / read-only)",
            w.failed.to_string(),
        )?;
        row(
            f,
            "answers per request",
            format!(
                "504: {}, lost/timeout: {}, refused: {}, 503 read-only: {}, 503 stopping: {}, other 5xx: {}",
                w.answers_504,
                w.answers_lost,
                w.answers_refused,
                w.answers_read_only,
                w.answers_503,
                w.answers_5xx
            ),
        )?;
        writeln!(f, "\nfaults ({} injected)", self.faults.len())?;
        let counts = self.fault_counts();
        let mut kinds: BTreeMap<FaultKind, Vec<String>> = BTreeMap::new();
        for ((kind, target), n) in &counts {
            kinds
                .entry(*kind)
                .or_default()
                .push(format!("{target} {n}"));
        }
        for (kind, targets) in &kinds {
            row(f, kind.label(), targets.join(", "))?;
        }
        let failed: Vec<&FaultEvent> = self.faults.iter().filter(|e| e.error.is_some()).collect();
        if !failed.is_empty() {
            row(f, "faults that did not complete", failed.len().to_string())?;
            for event in failed.iter().take(5) {
                writeln!(
                    f,
                    "    {:?} {}: {}",
                    event.kind,
                    event.target,
                    event.error.as_deref().unwrap_or("")
                )?;
            }
        }
        row(
            f,
            "private broker first start",
            format!("{:.1} s", self.broker_start.as_secs_f64()),
        )?;
        writeln!(f, "\nend state")?;
        match self.converged_after {
            Some(after) => row(
                f,
                "converged after healing",
                format!(
                    "{:.1} s, {} entries on every node",
                    after.as_secs_f64(),
                    self.final_len
                ),
            )?,
            None => row(
                f,
                "converged after healing",
                format!("NO ({} entries on the master)", self.final_len),
            )?,
        }
        let e = &self.evidence;
        writeln!(f, "\nevidence")?;
        row(
            f,
            "evidence events read from node logs",
            format!("{} ({} unreadable)", e.events_read, e.unreadable_events),
        )?;
        row(
            f,
            "acks checked against node logs",
            format!(
                "{} ({} timed by the master's log line)",
                e.acks_checked, e.acks_timed_by_master_log
            ),
        )?;
        let margins: Vec<String> = e
            .min_margin_us
            .iter()
            .map(|(w, us)| format!("w={w}: {us} µs"))
            .collect();
        row(f, "closest w-th store before an ack", margins.join(", "))?;
        let by_w: Vec<String> = e
            .current_holder_acks_by_w
            .iter()
            .map(|(w, n)| format!("w={w}: {n}"))
            .collect();
        row(
            f,
            "acks checked for w current holders",
            format!(
                "{} ({}); {} with a copy lost at a restart; {} holds ended by restarts",
                e.current_holder_acks_checked,
                by_w.join(", "),
                e.acks_with_a_lost_copy,
                e.holds_ended_by_restarts
            ),
        )?;
        row(
            f,
            "node restarts checked for lost entries",
            e.restarts_checked.to_string(),
        )?;
        row(
            f,
            "/health samples",
            format!(
                "{} ({} master-reported positions compared)",
                e.samples, e.acked_positions_checked
            ),
        )?;
        writeln!(f, "\nwhat the checks prove (see chaos::checker)")?;
        for line in PROVEN {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "\nviolations: {}", self.violations.len())?;
        let mut by_check: BTreeMap<Check, Vec<&Violation>> = BTreeMap::new();
        for violation in &self.violations {
            by_check.entry(violation.check).or_default().push(violation);
        }
        for (check, found) in &by_check {
            writeln!(f, "  {:?} ({}): {}", check, check.describe(), found.len())?;
            for violation in found.iter().take(SHOWN_PER_CHECK) {
                writeln!(f, "    - {}", violation.detail)?;
            }
        }
        writeln!(
            f,
            "\nrun directory: {}{}",
            self.run_dir.display(),
            if self.kept {
                ""
            } else {
                " (removed; --keep keeps it)"
            }
        )?;
        write!(
            f,
            "{}",
            if self.passed() {
                "RESULT: PASS"
            } else {
                "RESULT: FAIL"
            }
        )
    }
}
