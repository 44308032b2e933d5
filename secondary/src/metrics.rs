//! The secondary's Prometheus metrics: their names, their HELP texts, and the gauges refreshed
//! from state when `GET /metrics` is scraped.
//!
//! Counters and the fsync histogram are recorded where things happen (the applier, the
//! catch-up task); gauges that mirror state (applied position, hold-back buffer, divergence)
//! are set from that state at scrape time.

use crate::http::AppState;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use replog_shell::metrics::PrometheusHandle;

/// The order of the last entry this secondary stored.
pub const APPLIED_ORDER: &str = "replog_applied_order";
/// Entries received beyond a gap, held back until it closes.
pub const HELD_BACK_ENTRIES: &str = "replog_held_back_entries";
/// Entries dropped because this node already held them.
pub const DUPLICATES_DROPPED_TOTAL: &str = "replog_duplicates_dropped_total";
/// Deliveries the broker marked as redelivered.
pub const REDELIVERIES_TOTAL: &str = "replog_redeliveries_total";
/// Pages fetched from the master's `GET /messages` by catch-up, by `outcome` (ok, error).
pub const CATCHUP_FETCHES_TOTAL: &str = "replog_catchup_fetches_total";
/// Seconds one durable append to the log took.
pub const FSYNC_SECONDS: &str = "replog_fsync_seconds";
/// 1 once this node found an entry that conflicts with one it holds.
pub const DIVERGED: &str = "replog_diverged";

/// Installs the recorder (once per process), describes every secondary metric and creates the
/// counters at 0, so a scrape shows them before anything happened.
pub fn install() -> PrometheusHandle {
    let handle = replog_shell::metrics::install();
    replog_shell::metrics::describe_shared();
    describe_gauge!(
        APPLIED_ORDER,
        "The order of the last entry this secondary stored (it holds every entry up to it)"
    );
    describe_gauge!(
        HELD_BACK_ENTRIES,
        "Entries received beyond a gap and held back until the gap closes"
    );
    describe_counter!(
        DUPLICATES_DROPPED_TOTAL,
        "Entries dropped because this node already held (or held back) them"
    );
    describe_counter!(
        REDELIVERIES_TOTAL,
        "Deliveries the broker marked as redelivered (a lost channel, a nack)"
    );
    describe_counter!(
        CATCHUP_FETCHES_TOTAL,
        "Pages fetched from the master's GET /messages to fill a gap or catch up, by outcome (ok, error)"
    );
    describe_histogram!(
        FSYNC_SECONDS,
        Unit::Seconds,
        "How long one durable append (write and fsync) of a batch of entries took"
    );
    describe_gauge!(
        DIVERGED,
        "1 once this node found an entry conflicting with one it holds (it applies nothing more), else 0"
    );
    counter!(DUPLICATES_DROPPED_TOTAL).absolute(0);
    counter!(REDELIVERIES_TOTAL).absolute(0);
    for outcome in ["ok", "error"] {
        counter!(CATCHUP_FETCHES_TOTAL, "outcome" => outcome).absolute(0);
    }
    handle
}

/// Sets the gauges that mirror state, just before a scrape renders them.
pub fn refresh(app: &AppState) {
    gauge!(APPLIED_ORDER).set(app.store.last_order().get() as f64);
    gauge!(HELD_BACK_ENTRIES).set(app.backlog.borrow().held_back as f64);
    let diverged = app.diverged.borrow().is_some();
    gauge!(DIVERGED).set(if diverged { 1.0 } else { 0.0 });
}
