//! The secondary's HTTP API: `GET /messages` (the applied prefix) and `GET /health`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use replog_common::rules::apply::Backlog;
use replog_common::NodeId;
use replog_shell::http::{error_response, serve_page, PageError, PageQuery};
use replog_shell::store::LogStore;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::watch;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// This secondary's id.
    pub id: NodeId,
    /// The applied prefix.
    pub store: Arc<dyn LogStore>,
    /// The applier's hold-back buffer, for the count of held-back entries in `/health`.
    pub backlog: watch::Receiver<Backlog>,
}

/// Every way a request to a secondary can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad paging parameters.
    #[error("{0}")]
    BadRequest(String),
    /// No such route.
    #[error("no such endpoint; try GET /messages or GET /health (writes go to the master)")]
    NotFound,
    /// Secondaries are read-only.
    #[error("method not allowed; a secondary serves GET /messages and GET /health, writes go to the master")]
    MethodNotAllowed,
    /// The store failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PageError> for ApiError {
    fn from(error: PageError) -> Self {
        match error {
            PageError::BadRequest(message) => ApiError::BadRequest(message),
            PageError::Store(message) => ApiError::Internal(message),
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
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed with an internal error");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the secondary's log",
                )
            }
        }
    }
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/messages", get(list_messages))
        .route("/health", get(health))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

async fn list_messages(
    State(app): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    Ok(serve_page(app.store.clone(), query).await?)
}

async fn health(State(app): State<AppState>) -> Json<serde_json::Value> {
    let held_back = app.backlog.borrow().held_back;
    Json(json!({
        "status": "ok",
        "role": "secondary",
        "id": app.id,
        "applied": app.store.last_order(),
        "held_back": held_back,
    }))
}
