//! Request handlers: thin adapters from HTTP to the writer, the replication tracker and the store.

use super::{ApiError, AppState, MASTER_API};
use crate::replication::WaitFailed;
use crate::write_request::WriteRequest;
use crate::writer::{Admission, AppendError, Appended};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use replog_common::events;
use replog_common::wire::http::{MasterHealth, SecondaryPosition, WriteAck};
use replog_shell::http::{serve_page, HttpError, PageQuery};

/// `POST /messages`: append (or find) the entry, then wait for its write concern.
pub async fn post_message(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
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
    let acks = app
        .replication
        .wait_for(entry.order, write.w, write.timeout)
        .await
        .map_err(|failed| match failed {
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

/// `GET /health`: role, log end and each secondary's acknowledged position.
pub async fn health(State(app): State<AppState>) -> Json<MasterHealth> {
    let secondaries = app
        .replication
        .positions()
        .into_iter()
        .map(|(id, acked)| SecondaryPosition {
            id: id.into(),
            acked: acked.get(),
        })
        .collect();
    Json(MasterHealth::ok(app.store.last_order().get(), secondaries))
}

/// Any other path.
pub async fn not_found() -> HttpError {
    HttpError::NotFound(&MASTER_API)
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> HttpError {
    HttpError::MethodNotAllowed(&MASTER_API)
}
