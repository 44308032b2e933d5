//! The master's HTTP API: `POST /messages`, `GET /messages`, `GET /health` (liveness, with
//! the cluster as the master sees it), `GET /ready` (readiness: writable and connected),
//! `GET /messages/{message_id}` (an entry's status) and `GET /metrics` (Prometheus).

mod entry_status;
mod error;
mod handlers;

pub use error::{ApiError, MASTER_API};

use crate::availability::ReadOnly;
use crate::fence::Fence;
use crate::replication::Replication;
use crate::write_request::WriteLimits;
use crate::writer::LogWriter;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use replog_common::Order;
use replog_shell::metrics::PrometheusHandle;
use replog_shell::store::LogStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Appends writes.
    pub writer: LogWriter,
    /// Waits for write concerns.
    pub replication: Replication,
    /// Serves reads.
    pub store: Arc<dyn LogStore>,
    /// What a write is checked against.
    pub limits: WriteLimits,
    /// `--max-body-bytes`, for the 413 message.
    pub max_body_bytes: usize,
    /// Raised when the log is shorter than the evidence: no new entries then.
    pub fence: Arc<Fence>,
    /// How far the `confirmed` mark on disk goes: a replicated write waits for it.
    pub mark_written: watch::Receiver<Order>,
    /// Whether the ack consumer's channel is up (set by the ack consumer).
    pub broker_connected: Arc<AtomicBool>,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// Why the master takes no new entries now, if it does not: the fence first (it needs an
    /// operator), then a missing quorum (it heals by itself).
    pub fn read_only(&self) -> Option<ReadOnly> {
        if let Some(fenced) = self.fence.get() {
            return Some(ReadOnly::Fenced(fenced));
        }
        self.replication.quorum_lost().map(ReadOnly::NoQuorum)
    }

    /// Whether the master hears the broker now.
    pub fn broker_connected(&self) -> bool {
        self.broker_connected.load(Ordering::Acquire)
    }
}

/// The router with every route and the body limit.
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.max_body_bytes;
    Router::new()
        .route(
            "/messages",
            get(handlers::list_messages).post(handlers::post_message),
        )
        .route("/messages/{message_id}", get(entry_status::entry_status))
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
