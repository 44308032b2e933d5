//! The master's one HTTP error type, mapped to status + JSON in one place.

use crate::writer::AppendError;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use replog_common::{MessageId, Order};
use replog_shell::http::{error_response, PageError};

/// Every way a request to the master can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than `--max-body-bytes`.
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The entry is in the log but fewer than `w` nodes held it in time.
    #[error("write concern w={w} not reached within {timeout_ms} ms: {acks} of {w} nodes hold the entry; it stays in the log and keeps replicating, so retry with the same message_id to wait again")]
    WriteConcernTimeout {
        /// The entry's id.
        message_id: MessageId,
        /// The entry's position.
        order: Order,
        /// Nodes holding it when the wait ended.
        acks: usize,
        /// What was asked for.
        w: usize,
        /// How long the write waited.
        timeout_ms: u128,
    },
    /// The master is stopping; the entry, if any, is in the log.
    #[error("the master is shutting down; retry with the same message_id once it is back")]
    ShuttingDown {
        /// The entry, when the write was appended before the stop.
        entry: Option<(MessageId, Order, usize)>,
    },
    /// No such route.
    #[error("no such endpoint; try POST /messages, GET /messages or GET /health")]
    NotFound,
    /// A known path with the wrong method.
    #[error("method not allowed; the API is POST /messages, GET /messages and GET /health")]
    MethodNotAllowed,
    /// Something broke inside; the client sees no details.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Builds the error for a body that could not be read.
    pub fn from_body_rejection(rejection: BytesRejection, limit: usize) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest(format!("cannot read the body: {rejection}"))
        }
    }
}

impl From<PageError> for ApiError {
    fn from(error: PageError) -> Self {
        match error {
            PageError::BadRequest(message) => ApiError::BadRequest(message),
            PageError::Store(message) => ApiError::Internal(message),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Stopped => ApiError::ShuttingDown { entry: None },
            AppendError::Storage(message) => ApiError::Internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ApiError::BadRequest(_) => error_response(StatusCode::BAD_REQUEST, message),
            ApiError::NotFound => error_response(StatusCode::NOT_FOUND, message),
            ApiError::MethodNotAllowed => error_response(StatusCode::METHOD_NOT_ALLOWED, message),
            ApiError::PayloadTooLarge { .. } => {
                error_response(StatusCode::PAYLOAD_TOO_LARGE, message)
            }
            ApiError::WriteConcernTimeout {
                message_id,
                order,
                acks,
                ..
            } => {
                tracing::info!(%message_id, %order, acks, "write concern timed out");
                let body = serde_json::json!({
                    "error": message, "message_id": message_id, "order": order, "acks": acks,
                });
                (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
            }
            ApiError::ShuttingDown { entry } => {
                let mut body = serde_json::json!({ "error": message });
                if let Some((message_id, order, acks)) = entry {
                    body["message_id"] = serde_json::json!(message_id);
                    body["order"] = serde_json::json!(order);
                    body["acks"] = serde_json::json!(acks);
                }
                (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed with an internal error");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the master's log",
                )
            }
        }
    }
}
