//! The master's Prometheus metrics: their names, their HELP texts, and the gauges refreshed
//! from state when `GET /metrics` is scraped.
//!
//! Counters and histograms are recorded where things happen (the write handler, the
//! publisher, the shared broker handle). Gauges that merely mirror state (positions, lag, node
//! states, read-only) are set from that state at scrape time: they are never stale and need no
//! loop of their own.

use crate::http::AppState;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use replog_common::rules::membership::NodeState;
use replog_shell::metrics::PrometheusHandle;
use std::time::Instant;

/// Writes answered, by `outcome` ([`WriteOutcome`]).
pub const WRITES_TOTAL: &str = "replog_writes_total";
/// Seconds a write waited for its write concern, by `w`.
pub const WRITE_CONCERN_WAIT_SECONDS: &str = "replog_write_concern_wait_seconds";
/// Each secondary's position as counted for write concerns, by `secondary`.
pub const SECONDARY_ACKED_ORDER: &str = "replog_secondary_acked_order";
/// Entries each secondary is behind the master's last order, by `secondary`.
pub const SECONDARY_LAG_ENTRIES: &str = "replog_secondary_lag_entries";
/// Each secondary's state (2 healthy, 1 suspected, 0 unhealthy), by `secondary`.
pub const SECONDARY_STATE: &str = "replog_secondary_state";
/// 1 while a secondary is not unhealthy (it counts toward the quorum), by `secondary`.
pub const SECONDARY_UP: &str = "replog_secondary_up";
/// 1 while the master refuses new writes (no quorum, or fenced).
pub const READ_ONLY: &str = "replog_read_only";
/// The order of the master's last entry.
pub const LAST_ORDER: &str = "replog_last_order";
/// Seconds from publishing an entry to the broker's confirm.
pub const PUBLISH_CONFIRM_SECONDS: &str = "replog_publish_confirm_seconds";
/// Entries published again (after a nack, a missing confirm or a lost channel).
pub const REPUBLISHED_TOTAL: &str = "replog_republished_total";

/// How a `POST /messages` was answered: the `outcome` label of [`WRITES_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// `201`: a new entry, its write concern met.
    Created,
    /// `200`: a retry of an entry the log holds, its write concern met.
    Duplicate,
    /// `504`: the write concern was not met in time (the entry stays in the log).
    Timeout,
    /// `503`: refused because the master is read-only; nothing appended.
    ReadOnly,
    /// `4xx`: the request was wrong (bad body, too large).
    Rejected,
    /// `500`: an internal error.
    Error,
    /// `503`: the master is stopping.
    ShuttingDown,
}

impl WriteOutcome {
    /// Every outcome, so each series exists (at 0) from the start.
    pub const ALL: [WriteOutcome; 7] = [
        WriteOutcome::Created,
        WriteOutcome::Duplicate,
        WriteOutcome::Timeout,
        WriteOutcome::ReadOnly,
        WriteOutcome::Rejected,
        WriteOutcome::Error,
        WriteOutcome::ShuttingDown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOutcome::Created => "created",
            WriteOutcome::Duplicate => "duplicate",
            WriteOutcome::Timeout => "timeout",
            WriteOutcome::ReadOnly => "read_only",
            WriteOutcome::Rejected => "rejected",
            WriteOutcome::Error => "error",
            WriteOutcome::ShuttingDown => "shutting_down",
        }
    }

    /// Counts one write answered this way.
    pub fn record(self) {
        counter!(WRITES_TOTAL, "outcome" => self.as_str()).increment(1);
    }
}

/// The value of [`SECONDARY_STATE`] for `state`: higher is better, so a dashboard threshold
/// reads naturally.
pub fn state_value(state: NodeState) -> f64 {
    match state {
        NodeState::Healthy => 2.0,
        NodeState::Suspected => 1.0,
        NodeState::Unhealthy => 0.0,
    }
}

/// Installs the recorder (once per process), describes every master metric and creates the
/// counters at 0, so a scrape shows them before anything happened.
pub fn install() -> PrometheusHandle {
    let handle = replog_shell::metrics::install();
    replog_shell::metrics::describe_shared();
    describe_counter!(
        WRITES_TOTAL,
        "POST /messages answered, by outcome: created (201), duplicate (200), timeout (504), read_only (503), rejected (4xx), error (500), shutting_down (503)"
    );
    describe_histogram!(
        WRITE_CONCERN_WAIT_SECONDS,
        Unit::Seconds,
        "How long a write waited for its write concern, by w (timeouts included)"
    );
    describe_gauge!(
        SECONDARY_ACKED_ORDER,
        "The position each secondary's current incarnation reported holding"
    );
    describe_gauge!(
        SECONDARY_LAG_ENTRIES,
        "Entries each secondary is behind the master's last order"
    );
    describe_gauge!(
        SECONDARY_STATE,
        "Each secondary's state as the master derives it from heartbeats: 2 healthy, 1 suspected, 0 unhealthy"
    );
    describe_gauge!(
        SECONDARY_UP,
        "1 while a secondary is not unhealthy (it counts toward the quorum), else 0"
    );
    describe_gauge!(
        READ_ONLY,
        "1 while the master refuses new writes (no quorum, or its log is fenced), else 0"
    );
    describe_gauge!(LAST_ORDER, "The order of the master's last entry");
    describe_histogram!(
        PUBLISH_CONFIRM_SECONDS,
        Unit::Seconds,
        "From publishing an entry to the broker's confirm of it"
    );
    describe_counter!(
        REPUBLISHED_TOTAL,
        "Entries published again after a nack, a missing confirm or a lost channel"
    );
    for outcome in WriteOutcome::ALL {
        counter!(WRITES_TOTAL, "outcome" => outcome.as_str()).absolute(0);
    }
    counter!(REPUBLISHED_TOTAL).absolute(0);
    handle
}

/// Sets the gauges that mirror state, just before a scrape renders them.
pub fn refresh(app: &AppState) {
    let last_order = app.store.last_order().get();
    gauge!(LAST_ORDER).set(last_order as f64);
    gauge!(READ_ONLY).set(if app.read_only().is_some() { 1.0 } else { 0.0 });
    for member in app.replication.view(Instant::now()).members {
        let secondary = member.id.as_str().to_owned();
        let acked = member.acked.get();
        gauge!(SECONDARY_ACKED_ORDER, "secondary" => secondary.clone()).set(acked as f64);
        gauge!(SECONDARY_LAG_ENTRIES, "secondary" => secondary.clone())
            .set(last_order.saturating_sub(acked) as f64);
        gauge!(SECONDARY_STATE, "secondary" => secondary.clone()).set(state_value(member.state));
        let up = member.state != NodeState::Unhealthy;
        gauge!(SECONDARY_UP, "secondary" => secondary).set(if up { 1.0 } else { 0.0 });
    }
}
