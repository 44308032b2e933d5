//! The one HTTP error type both nodes answer with, mapped to status + JSON in one place.
//!
//! Every error body is [`ErrorBody`] (`{"error": "..."}`), framework rejections included. A
//! 5xx is logged here, once, with its cause; the client only learns where to look.
//!
//! The master extends [`HttpError`] with its write-specific answers (413, 503, 504) by wrapping
//! it; the secondary answers with it as it is.

use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use replog_common::ids::Order;
use replog_common::wire::http::{ErrorBody, NotYetApplied};
use std::error::Error;

/// How a node names itself and its routes in the errors both nodes share, so that a client
/// that took a wrong turn is told which API this node has.
#[derive(Debug)]
pub struct NodeApi {
    /// The node's role, as in "see the master's log".
    pub role: &'static str,
    /// The whole message for an unknown path: which routes exist.
    pub not_found: &'static str,
    /// The whole message for a known path with the wrong method.
    pub method_not_allowed: &'static str,
}

/// Every way a request can fail that both nodes share.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request is wrong; the message says how (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such route (404).
    #[error("{}", .0.not_found)]
    NotFound(&'static NodeApi),
    /// Something the client named does not exist here, e.g. an entry by its id (404); the
    /// message says what.
    #[error("{0}")]
    ResourceNotFound(String),
    /// A known path with the wrong method (405).
    #[error("{}", .0.method_not_allowed)]
    MethodNotAllowed(&'static NodeApi),
    /// A read asked for an order the node had not applied in time (504).
    #[error("{message}")]
    NotYetApplied {
        /// The whole message for the client.
        message: String,
        /// How far the node had applied.
        applied: Order,
    },
    /// Something broke inside (500); the client sees no details.
    #[error("internal error: {source}")]
    Internal {
        /// The node, named in the client's message.
        api: &'static NodeApi,
        /// What broke; logged, never sent.
        source: Box<dyn Error + Send + Sync>,
    },
}

impl HttpError {
    /// An internal error of the node `api`, caused by `source`.
    pub fn internal(
        api: &'static NodeApi,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        HttpError::Internal {
            api,
            source: source.into(),
        }
    }
}

/// A query string the framework could not even split into fields gets our error shape.
impl From<QueryRejection> for HttpError {
    fn from(rejection: QueryRejection) -> Self {
        HttpError::BadRequest(rejection.body_text())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            HttpError::BadRequest(_) => error_response(StatusCode::BAD_REQUEST, message),
            HttpError::NotFound(_) | HttpError::ResourceNotFound(_) => {
                error_response(StatusCode::NOT_FOUND, message)
            }
            HttpError::MethodNotAllowed(_) => {
                error_response(StatusCode::METHOD_NOT_ALLOWED, message)
            }
            HttpError::NotYetApplied { applied, .. } => {
                let body = NotYetApplied {
                    error: message,
                    applied: applied.get(),
                };
                (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
            }
            HttpError::Internal { api, source } => {
                tracing::error!(detail = %source, "request failed with an internal error");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error; see the {}'s log", api.role),
                )
            }
        }
    }
}

/// Builds the one error shape every endpoint uses: `{"error": "..."}`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    static API: NodeApi = NodeApi {
        role: "tester",
        not_found: "no such endpoint here",
        method_not_allowed: "not with that method",
    };

    async fn answer(error: HttpError) -> (StatusCode, ErrorBody) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).expect("an error body"),
        )
    }

    #[tokio::test]
    async fn each_error_has_its_status_and_the_one_body_shape() {
        let cases = [
            (
                HttpError::BadRequest("bad `from`".into()),
                StatusCode::BAD_REQUEST,
                "bad `from`",
            ),
            (
                HttpError::NotFound(&API),
                StatusCode::NOT_FOUND,
                "no such endpoint here",
            ),
            (
                HttpError::ResourceNotFound("no entry with message_id \"x\"".into()),
                StatusCode::NOT_FOUND,
                "no entry with message_id \"x\"",
            ),
            (
                HttpError::MethodNotAllowed(&API),
                StatusCode::METHOD_NOT_ALLOWED,
                "not with that method",
            ),
        ];
        for (error, status, message) in cases {
            assert_eq!(
                answer(error).await,
                (
                    status,
                    ErrorBody {
                        error: message.into()
                    }
                )
            );
        }
    }

    #[tokio::test]
    async fn internal_details_stay_in_the_log() {
        let cause = std::io::Error::other("disk on fire");
        let (status, body) = answer(HttpError::internal(&API, cause)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body.error, "internal error; see the tester's log");
    }
}
