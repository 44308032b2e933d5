//! The master's one HTTP error type: the errors both nodes share ([`HttpError`]) plus the
//! answers only a write can get, mapped to status + JSON in one place.

use crate::availability::ReadOnly as ReadOnlyReason;
use crate::writer::AppendError;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use replog_common::wire::http::{ReadOnly, ShuttingDown, WriteTimedOut};
use replog_common::{MessageId, Order};
use replog_shell::http::{error_response, HttpError, NodeApi, PageError};

/// How the master names itself and its routes in the errors it shares with the secondary.
pub static MASTER_API: NodeApi = NodeApi {
    role: "master",
    not_found: "no such endpoint; try POST /messages, GET /messages, GET /messages/{message_id}, GET /health, GET /ready or GET /metrics",
    method_not_allowed: "method not allowed; the API is POST /messages, GET /messages, GET /messages/{message_id}, GET /health, GET /ready and GET /metrics",
};

/// Every way a request to the master can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A failure any node can have: bad request, unknown route or method, internal error.
    #[error(transparent)]
    Http(#[from] HttpError),
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
    /// The master takes no new entries now; nothing was appended.
    #[error("{0}")]
    ReadOnly(ReadOnlyReason),
    /// The master is stopping; the entry, if any, is in the log.
    #[error("the master is shutting down; retry with the same message_id once it is back")]
    ShuttingDown {
        /// The entry, when the write was appended before the stop.
        entry: Option<(MessageId, Order, usize)>,
    },
}

impl ApiError {
    /// A request the client got wrong; `message` says how.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::Http(HttpError::BadRequest(message.into()))
    }

    /// Builds the error for a body that could not be read.
    pub fn from_body_rejection(rejection: BytesRejection, limit: usize) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::bad_request(format!("cannot read the body: {rejection}"))
        }
    }
}

impl From<PageError> for ApiError {
    fn from(error: PageError) -> Self {
        ApiError::Http(error.into_http(&MASTER_API))
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Stopped => ApiError::ShuttingDown { entry: None },
            // The handler maps a refusal to its reason; one that gets here had none to give.
            AppendError::Storage(_) | AppendError::IndexedButMissing(_) | AppendError::ReadOnly => {
                ApiError::Http(HttpError::internal(&MASTER_API, error))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ApiError::Http(error) => error.into_response(),
            ApiError::PayloadTooLarge { .. } => {
                error_response(StatusCode::PAYLOAD_TOO_LARGE, message)
            }
            ApiError::WriteConcernTimeout {
                message_id,
                order,
                acks,
                ..
            } => {
                tracing::info!(message_id = message_id.as_str(), %order, acks, "write concern timed out");
                let body = WriteTimedOut {
                    error: message,
                    message_id: message_id.as_str().to_owned(),
                    order: order.get(),
                    acks: acks as u64,
                };
                (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
            }
            ApiError::ReadOnly(reason) => {
                let (healthy, needed) = match &reason {
                    ReadOnlyReason::NoQuorum(quorum) => {
                        (Some(quorum.healthy as u64), Some(quorum.needed as u64))
                    }
                    ReadOnlyReason::Fenced(_) => (None, None),
                };
                let body = ReadOnly {
                    error: message,
                    healthy,
                    needed,
                };
                let retry_after = reason.retry_after_secs().to_string();
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, retry_after)],
                    Json(body),
                )
                    .into_response()
            }
            ApiError::ShuttingDown { entry } => {
                let (message_id, order, acks) = match entry {
                    Some((message_id, order, acks)) => (
                        Some(message_id.as_str().to_owned()),
                        Some(order.get()),
                        Some(acks as u64),
                    ),
                    None => (None, None, None),
                };
                let body = ShuttingDown {
                    error: message,
                    message_id,
                    order,
                    acks,
                };
                (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    async fn answer(error: impl Into<ApiError>) -> (StatusCode, Value) {
        let response = error.into().into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }

    #[tokio::test]
    async fn shared_errors_name_the_masters_routes() {
        assert_eq!(
            answer(HttpError::NotFound(&MASTER_API)).await,
            (
                StatusCode::NOT_FOUND,
                json!({"error": "no such endpoint; try POST /messages, GET /messages, GET /messages/{message_id}, GET /health, GET /ready or GET /metrics"})
            )
        );
        assert_eq!(
            answer(HttpError::MethodNotAllowed(&MASTER_API)).await,
            (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed; the API is POST /messages, GET /messages, GET /messages/{message_id}, GET /health, GET /ready and GET /metrics"})
            )
        );
        assert_eq!(
            answer(AppendError::IndexedButMissing(Order(4))).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal error; see the master's log"})
            )
        );
    }

    #[tokio::test]
    async fn every_read_only_refusal_is_recognisable_by_its_prefix() {
        // Clients (the chaos checker) tell a refusal from a stopping master's 503 by it.
        let no_quorum = ReadOnlyReason::NoQuorum(replog_common::rules::membership::Quorum {
            nodes: 3,
            needed: 2,
            healthy: 1,
        });
        let fenced = ReadOnlyReason::Fenced(crate::fence::Fenced {
            log_end: Order(50),
            evidence_end: Order(100),
            evidence: crate::fence::Evidence::ConfirmedMark,
        });
        for reason in [no_quorum, fenced] {
            let (status, body) = answer(ApiError::ReadOnly(reason)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            let error = body["error"].as_str().unwrap();
            assert!(ReadOnly::is_refusal(error), "{error}");
        }
        let (_, stopping) = answer(ApiError::ShuttingDown { entry: None }).await;
        assert!(!ReadOnly::is_refusal(stopping["error"].as_str().unwrap()));
    }

    #[tokio::test]
    async fn a_write_that_waited_in_vain_says_where_its_entry_is() {
        let id = MessageId::parse("m-1").unwrap();
        let (status, body) = answer(ApiError::WriteConcernTimeout {
            message_id: id.clone(),
            order: Order(7),
            acks: 1,
            w: 3,
            timeout_ms: 200,
        })
        .await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            body,
            json!({
                "error": "write concern w=3 not reached within 200 ms: 1 of 3 nodes hold the entry; it stays in the log and keeps replicating, so retry with the same message_id to wait again",
                "message_id": "m-1", "order": 7, "acks": 1,
            })
        );
        let stopping =
            "the master is shutting down; retry with the same message_id once it is back";
        assert_eq!(
            answer(ApiError::ShuttingDown { entry: None }).await,
            (StatusCode::SERVICE_UNAVAILABLE, json!({"error": stopping}))
        );
        assert_eq!(
            answer(ApiError::ShuttingDown {
                entry: Some((id, Order(7), 2))
            })
            .await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": stopping, "message_id": "m-1", "order": 7, "acks": 2})
            )
        );
        assert_eq!(
            answer(AppendError::Stopped).await,
            (StatusCode::SERVICE_UNAVAILABLE, json!({"error": stopping}))
        );
    }
}
