//! The secondary's HTTP API: `GET /messages` (the applied prefix, with read-your-writes through
//! `min_order` and `wait_ms`), `GET /health` (liveness: always `200`, with what the node knows)
//! `GET /ready` (readiness: `200` only when it can do its job) and `GET /metrics` (Prometheus).

use crate::catchup::MasterView;
use crate::consumer::Connected;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use replog_common::rules::apply::{Backlog, Divergence};
use replog_common::wire::http::{BrokerHealth, Ready, SecondaryHealth};
use replog_common::{Incarnation, NodeId, Order};
use replog_shell::http::{error_response, serve_page_after, HttpError, NodeApi, PageQuery};
use replog_shell::metrics::PrometheusHandle;
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
    /// The stored position: what `min_order` waits on.
    pub applied: watch::Receiver<Order>,
    /// The data directory's incarnation, for `/health`.
    pub incarnation: Incarnation,
    /// Whether the entry consumer is subscribed, for `/health` and `/ready`.
    pub connected: Connected,
    /// What the catch-up task's calls showed of the master, for `/health` and `/ready`.
    pub master: watch::Receiver<MasterView>,
    /// Set once the applier found a conflicting entry.
    pub diverged: watch::Receiver<Option<Divergence>>,
    /// `--prefetch`: how far behind the master's end a ready node may be.
    pub prefetch: u16,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
}

/// How a secondary names itself and its routes in its errors: it is read-only, so the help
/// points writers to the master.
pub static SECONDARY_API: NodeApi = NodeApi {
    role: "secondary",
    not_found: "no such endpoint; try GET /messages, GET /health, GET /ready or GET /metrics (writes and GET /messages/{message_id} go to the master)",
    method_not_allowed: "method not allowed; a secondary serves GET /messages, GET /health, GET /ready and GET /metrics; writes go to the master",
};

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/messages", get(list_messages))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { HttpError::NotFound(&SECONDARY_API) })
        .method_not_allowed_fallback(|| async { HttpError::MethodNotAllowed(&SECONDARY_API) })
        .with_state(state)
}

async fn list_messages(
    State(app): State<AppState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    serve_page_after(app.store.clone(), app.applied.clone(), query)
        .await
        .map_err(|error| error.into_http(&SECONDARY_API))
}

async fn health(State(app): State<AppState>) -> Json<SecondaryHealth> {
    let held_back = app.backlog.borrow().held_back as u64;
    let status = match *app.diverged.borrow() {
        Some(_) => SecondaryHealth::DIVERGED,
        None => SecondaryHealth::OK,
    };
    let master = match app.master.borrow().reachable {
        Some(true) => SecondaryHealth::MASTER_REACHABLE,
        Some(false) => SecondaryHealth::MASTER_UNREACHABLE,
        None => SecondaryHealth::MASTER_UNKNOWN,
    };
    Json(SecondaryHealth {
        status: status.into(),
        role: "secondary".into(),
        id: app.id.as_str().to_owned(),
        applied: app.store.last_order().get(),
        held_back,
        incarnation: app.incarnation.to_string(),
        master: master.into(),
        broker: BrokerHealth {
            connected: app.connected.get(),
        },
    })
}

async fn ready(State(app): State<AppState>) -> Response {
    let readiness = Readiness {
        diverged: app.diverged.borrow().clone(),
        connected: app.connected.get(),
        applied: app.store.last_order(),
        master_end: app.master.borrow().last_order,
        prefetch: app.prefetch,
    };
    match readiness.why_not() {
        None => Json(Ready::default()).into_response(),
        Some(why) => error_response(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// `GET /metrics`: the secondary's metrics in the Prometheus text format, the gauges that
/// mirror state refreshed first.
async fn metrics(State(app): State<AppState>) -> Response {
    crate::metrics::refresh(&app);
    replog_shell::metrics::render(&app.metrics)
}

/// What decides whether a secondary is ready: a plain value, so the rule is tested without a
/// server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Readiness {
    /// The divergence, if the node found one.
    diverged: Option<Divergence>,
    /// Whether the entry consumer is subscribed.
    connected: bool,
    /// The end of the stored prefix.
    applied: Order,
    /// The master's log end as last learned, if ever.
    master_end: Option<Order>,
    /// How far behind the master's end a ready node may be: what the broker may have in flight.
    prefetch: u16,
}

impl Readiness {
    /// Why the node is not ready, or `None` when it is: not diverged, consuming, and within
    /// its prefetch of the master's last known end (ready once consuming if that was never
    /// learned).
    fn why_not(&self) -> Option<String> {
        if let Some(divergence) = &self.diverged {
            return Some(format!(
                "diverged: at order {} this node holds message_id {:?} but was offered {:?}; it applies nothing more until its data is rebuilt",
                divergence.order,
                divergence.held.as_str(),
                divergence.offered.as_str()
            ));
        }
        if !self.connected {
            return Some("not consuming: no subscription to the broker".into());
        }
        let end = self.master_end?;
        let behind = end.get().saturating_sub(self.applied.get());
        (behind > u64::from(self.prefetch)).then(|| {
            format!(
                "catching up: applied {} of the master's {} ({behind} behind, more than the prefetch of {})",
                self.applied, end, self.prefetch
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_common::MessageId;

    fn caught_up() -> Readiness {
        Readiness {
            diverged: None,
            connected: true,
            applied: Order(100),
            master_end: Some(Order(100)),
            prefetch: 10,
        }
    }

    #[test]
    fn a_consuming_node_within_its_prefetch_is_ready() {
        assert_eq!(caught_up().why_not(), None);
        let within = Readiness {
            applied: Order(90),
            ..caught_up()
        };
        assert_eq!(within.why_not(), None);
        let never_asked = Readiness {
            master_end: None,
            applied: Order::ZERO,
            ..caught_up()
        };
        assert_eq!(never_asked.why_not(), None);
    }

    #[test]
    fn each_reason_not_to_be_ready_is_named() {
        let behind = Readiness {
            applied: Order(89),
            ..caught_up()
        };
        assert_eq!(
            behind.why_not().as_deref(),
            Some("catching up: applied 89 of the master's 100 (11 behind, more than the prefetch of 10)")
        );
        let disconnected = Readiness {
            connected: false,
            ..caught_up()
        };
        assert_eq!(
            disconnected.why_not().as_deref(),
            Some("not consuming: no subscription to the broker")
        );
        let diverged = Readiness {
            diverged: Some(Divergence {
                order: Order(7),
                held: MessageId::parse("a").unwrap(),
                offered: MessageId::parse("b\"").unwrap(),
                fetched: false,
            }),
            ..caught_up()
        };
        assert_eq!(
            diverged.why_not().as_deref(),
            Some(
                r#"diverged: at order 7 this node holds message_id "a" but was offered "b\""; it applies nothing more until its data is rebuilt"#
            )
        );
    }
}
