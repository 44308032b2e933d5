//! Request handlers: thin adapters from HTTP to the writer, the replication tracker and the store.

use super::{ApiError, AppState, MASTER_API};
use crate::metrics::{self, WriteOutcome};
use crate::replication::WaitFailed;
use crate::write_request::WriteRequest;
use crate::writer::{Admission, AppendError, Appended};
use ::metrics::histogram;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use replog_common::events;
use replog_common::wire::http::{
    BrokerHealth, ErrorBody, MasterHealth, QuorumHealth, Ready, SecondaryStatus, WriteAck,
};
use replog_shell::http::{serve_page, HttpError, PageQuery};
use std::time::Instant;

/// `POST /messages`: append (or find) the entry, then wait for its write concern. Every
/// answer is counted by outcome.
pub async fn post_message(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let answer = write(app, body).await;
    let outcome = match &answer {
        Ok(response) if response.status() == StatusCode::CREATED => WriteOutcome::Created,
        Ok(_) => WriteOutcome::Duplicate,
        Err(ApiError::WriteConcernTimeout { .. }) => WriteOutcome::Timeout,
        Err(ApiError::ReadOnly(_)) => WriteOutcome::ReadOnly,
        Err(ApiError::ShuttingDown { .. }) => WriteOutcome::ShuttingDown,
        Err(ApiError::PayloadTooLarge { .. }) => WriteOutcome::Rejected,
        Err(ApiError::Http(HttpError::Internal { .. })) => WriteOutcome::Error,
        Err(ApiError::Http(_)) => WriteOutcome::Rejected,
    };
    outcome.record();
    answer
}

/// The write itself, answered by [`post_message`].
async fn write(app: AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::from_body_rejection(rejection, app.max_body_bytes))?;
    let write = WriteRequest::parse(&body, app.limits)
        .map_err(|invalid| ApiError::bad_request(invalid.0))?;
    // Read-only: a retry of a write the log holds is still answered; nothing new is appended.
    let read_only = app.read_only();
    let admission = match read_only {
        Some(_) => Admission::ExistingOnly,
        None => Admission::Any,
    };
    let appended = app
        .writer
        .submit(write.message_id, write.content, admission)
        .await
        .map_err(|error| match (error, read_only) {
            (AppendError::ReadOnly, Some(reason)) => ApiError::ReadOnly(reason),
            (error, _) => error.into(),
        })?;
    let entry = appended.entry();
    let waiting = Instant::now();
    let waited = app
        .replication
        .wait_for(entry.order, write.w, write.timeout)
        .await;
    histogram!(metrics::WRITE_CONCERN_WAIT_SECONDS, "w" => write.w.to_string())
        .record(waiting.elapsed());
    let acks = waited.map_err(|failed| match failed {
        WaitFailed::TimedOut { acks } => ApiError::WriteConcernTimeout {
            message_id: entry.message_id.clone(),
            order: entry.order,
            acks,
            w: write.w,
            timeout_ms: write.timeout.unwrap_or_default().as_millis(),
        },
        WaitFailed::ShuttingDown { acks } => ApiError::ShuttingDown {
            entry: Some((entry.message_id.clone(), entry.order, acks)),
        },
    })?;
    if acks >= 2 {
        await_mark(&app, entry.order).await;
    }
    let (status, duplicate) = match appended {
        Appended::New(_) => (StatusCode::CREATED, false),
        Appended::Existing(_) => (StatusCode::OK, true),
    };
    tracing::debug!(target: events::TARGET, event = events::ACKNOWLEDGED, order = entry.order.get(), message_id = entry.message_id.as_str(), w = write.w, acks, duplicate);
    let body = WriteAck::of(entry, write.w as u64, acks as u64, duplicate);
    Ok((status, Json(body)).into_response())
}

/// `GET /messages[?from=&limit=]`: the log in order.
pub async fn list_messages(
    State(app): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    Ok(serve_page(app.store.clone(), query).await?)
}

/// `GET /health`: the liveness probe, always `200`: whether the master takes writes, its log
/// end, the quorum, its broker link and each secondary as it sees it.
pub async fn health(State(app): State<AppState>) -> Json<MasterHealth> {
    let last_order = app.store.last_order();
    let view = app.replication.view(Instant::now());
    let secondaries: Vec<SecondaryStatus> = view
        .members
        .iter()
        .map(|member| SecondaryStatus {
            id: member.id.as_str().to_owned(),
            status: member.state.as_str().to_owned(),
            acked: member.acked.get(),
            lag: last_order.get().saturating_sub(member.acked.get()),
            last_seen_ms: member.silent_for.map(|silence| silence.as_millis() as u64),
            incarnation: member
                .incarnation
                .map(|incarnation| incarnation.to_string()),
        })
        .collect();
    let writable = view.writable && app.fence.get().is_none();
    Json(MasterHealth {
        status: MasterHealth::status_of(writable, &secondaries).to_owned(),
        role: "master".into(),
        writable,
        last_order: last_order.get(),
        quorum: QuorumHealth {
            nodes: view.quorum.nodes as u64,
            needed: view.quorum.needed as u64,
            healthy: view.quorum.healthy as u64,
        },
        broker: BrokerHealth {
            connected: app.broker_connected(),
        },
        secondaries,
    })
}

/// `GET /ready`: the readiness probe. `200` while the master takes writes and hears the
/// broker; `503` with the reason otherwise.
pub async fn ready(State(app): State<AppState>) -> Response {
    let why_not = match app.read_only() {
        Some(reason) => Some(reason.to_string()),
        None if !app.broker_connected() => Some(
            "not connected to the broker: acks cannot arrive, so writes cannot meet their write concern"
                .to_owned(),
        ),
        None => None,
    };
    match why_not {
        None => (StatusCode::OK, Json(Ready::default())).into_response(),
        Some(error) => (StatusCode::SERVICE_UNAVAILABLE, Json(ErrorBody { error })).into_response(),
    }
}

/// `GET /metrics`: the master's metrics in the Prometheus text format, the gauges that mirror
/// state refreshed first.
pub async fn metrics(State(app): State<AppState>) -> Response {
    metrics::refresh(&app);
    replog_shell::metrics::render(&app.metrics)
}

/// Any other path.
pub async fn not_found() -> HttpError {
    HttpError::NotFound(&MASTER_API)
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> HttpError {
    HttpError::MethodNotAllowed(&MASTER_API)
}

/// How long a replicated write waits for the `confirmed` mark to cover it before it is answered
/// anyway (a disk too slow to write a few bytes is logged, never a client left hanging).
const MARK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until the `confirmed` mark on disk covers `order`: once a write is acknowledged by
/// other nodes, a master that restarts with a damaged log must see that it held the entry (the
/// fence), however soon after the answer it crashed. The broker confirmed the entry before any
/// secondary could hold it, so the mark is written already or right now.
async fn await_mark(app: &AppState, order: replog_common::Order) {
    let mut written = app.mark_written.clone();
    if *written.borrow() < order {
        // Secondaries may hold an entry the master has not published yet (fetched by their
        // catch-up): its confirm must not wait for the linger.
        app.replication.expedite(order);
    }
    let covered = tokio::time::timeout(MARK_WAIT, written.wait_for(|mark| *mark >= order)).await;
    if !matches!(covered, Ok(Ok(_))) {
        tracing::warn!(%order, "the confirmed mark does not cover an acknowledged entry yet; answering anyway");
    }
}
