//! The secondary's HTTP API: `GET /messages` (the applied prefix) and `GET /health`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use replog_common::rules::apply::Backlog;
use replog_common::wire::http::SecondaryHealth;
use replog_common::NodeId;
use replog_shell::http::{serve_page, HttpError, NodeApi, PageQuery};
use replog_shell::store::LogStore;
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

/// How a secondary names itself and its routes in its errors: it is read-only, so the help
/// points writers to the master.
pub static SECONDARY_API: NodeApi = NodeApi {
    role: "secondary",
    not_found: "no such endpoint; try GET /messages or GET /health (writes go to the master)",
    method_not_allowed: "method not allowed; a secondary serves GET /messages and GET /health, writes go to the master",
};

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/messages", get(list_messages))
        .route("/health", get(health))
        .fallback(|| async { HttpError::NotFound(&SECONDARY_API) })
        .method_not_allowed_fallback(|| async { HttpError::MethodNotAllowed(&SECONDARY_API) })
        .with_state(state)
}

async fn list_messages(
    State(app): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    serve_page(app.store.clone(), query)
        .await
        .map_err(|error| error.into_http(&SECONDARY_API))
}

async fn health(State(app): State<AppState>) -> Json<SecondaryHealth> {
    let held_back = app.backlog.borrow().held_back;
    Json(SecondaryHealth::ok(
        app.id.as_str().to_owned(),
        app.store.last_order().get(),
        held_back as u64,
    ))
}
