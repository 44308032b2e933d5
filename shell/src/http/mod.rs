//! HTTP pieces both nodes serve the same way: the one error type with its JSON body
//! ([`error`]) and `GET /messages` paging (here, with the streamed body in `page_body`),
//! including read-your-writes (`min_order` and `wait_ms`, see [`ReadAfter`]), and the API
//! token check ([`auth`]).

pub mod auth;
mod error;
mod page_body;

pub use auth::{require_token, ApiToken};
pub use error::{error_response, HttpError, NodeApi};
pub use page_body::{ChunkError, CHUNK_BYTES, PAGE_BYTES};

use crate::store::LogStore;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use replog_common::ids::Order;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The most entries one `GET /messages` page returns when the client asks for more.
pub const MAX_PAGE: usize = 10_000;

/// The longest `wait_ms` a `GET /messages?min_order=` may ask for.
pub const MAX_WAIT_MS: u64 = 60_000;

/// The raw query of `GET /messages`, validated by [`PageRequest::parse`] so that bad numbers
/// get our error shape rather than the framework's.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// First order to return, inclusive.
    pub from: Option<String>,
    /// Most entries to return.
    pub limit: Option<String>,
    /// Answer only once the node has applied through this order.
    pub min_order: Option<String>,
    /// How long to wait for `min_order`, in ms.
    pub wait_ms: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// First order to return, inclusive.
    pub from: Order,
    /// Most entries to return.
    pub limit: usize,
}

impl PageRequest {
    /// Validates `from` (an integer >= 1, default 1) and `limit` (an integer >= 1, default and
    /// maximum: everything; see [`MAX_PAGE`] for an explicit limit).
    pub fn parse(query: &PageQuery) -> Result<PageRequest, BadPageQuery> {
        let from = match query.from.as_deref() {
            None => Order(1),
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|&from| from >= 1)
                .map(Order)
                .ok_or_else(|| BadPageQuery::From(raw.to_owned()))?,
        };
        let limit = match query.limit.as_deref() {
            None => usize::MAX,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|&limit| limit >= 1)
                .map(|limit| limit.min(MAX_PAGE))
                .ok_or_else(|| BadPageQuery::Limit(raw.to_owned()))?,
        };
        Ok(PageRequest { from, limit })
    }

    /// The last order of this page in a log that ends at `log_end`, or `None` if the page is
    /// empty.
    pub fn last_in(&self, log_end: Order) -> Option<Order> {
        if self.from > log_end || self.limit == 0 {
            return None;
        }
        let room = u64::try_from(self.limit).unwrap_or(u64::MAX);
        let last = self.from.get().saturating_add(room - 1).min(log_end.get());
        Some(Order(last))
    }
}

/// Read-your-writes: a client that wrote entry `N` asks any node for `min_order=N`, and the
/// node answers the page only once it has applied through `N`, waiting up to `wait_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAfter {
    /// The order the node must have applied before answering.
    pub min_order: Order,
    /// How long it may wait for that.
    pub wait: Duration,
}

impl ReadAfter {
    /// Validates `min_order` (an integer >= 0; none means no condition) and `wait_ms` (an
    /// integer from 0 to [`MAX_WAIT_MS`], default 0: answer at once or not at all).
    pub fn parse(query: &PageQuery) -> Result<Option<ReadAfter>, BadPageQuery> {
        let wait_ms = match query.wait_ms.as_deref() {
            None => 0,
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms <= MAX_WAIT_MS)
                .ok_or_else(|| BadPageQuery::WaitMs(raw.to_owned()))?,
        };
        let Some(raw) = query.min_order.as_deref() else {
            return Ok(None);
        };
        let min_order = raw
            .parse::<u64>()
            .map(Order)
            .map_err(|_| BadPageQuery::MinOrder(raw.to_owned()))?;
        Ok(Some(ReadAfter {
            min_order,
            wait: Duration::from_millis(wait_ms),
        }))
    }
}

/// What is wrong with the query of a `GET /messages`, phrased for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPageQuery {
    /// `from`, as given, is not an order.
    #[error("`from` must be an integer of at least 1 (an order), got {0:?}")]
    From(String),
    /// `limit`, as given, is not a page size.
    #[error("`limit` must be an integer from 1 to {max}, got {0:?}", max = MAX_PAGE)]
    Limit(String),
    /// `min_order`, as given, is not an order.
    #[error("`min_order` must be an integer of at least 0 (the order you wrote), got {0:?}")]
    MinOrder(String),
    /// `wait_ms`, as given, is not a wait the node allows.
    #[error("`wait_ms` must be an integer from 0 to {max} (ms), got {0:?}", max = MAX_WAIT_MS)]
    WaitMs(String),
}

/// Why a `GET /messages` could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The query string could not be split into fields: the client's fault (400).
    #[error("{}", .0.body_text())]
    Query(#[from] QueryRejection),
    /// Bad `from` or `limit`: the client's fault (400).
    #[error(transparent)]
    BadQuery(#[from] BadPageQuery),
    /// The store failed (500).
    #[error("cannot read the log: {0}")]
    Store(#[from] ChunkError),
    /// `min_order` was not applied within `wait_ms` (504).
    #[error("this node has applied up to order {applied}, not yet through {min_order} (waited {waited_ms} ms); retry, wait longer, or read from the master")]
    NotYetApplied {
        /// What the client asked for.
        min_order: Order,
        /// How far the node had applied when it gave up.
        applied: Order,
        /// How long it waited.
        waited_ms: u64,
    },
}

impl PageError {
    /// The answer of the node `api`: 400 for the client's mistakes, 500 for the store's.
    pub fn into_http(self, api: &'static NodeApi) -> HttpError {
        match self {
            PageError::Query(rejection) => HttpError::from(rejection),
            PageError::BadQuery(bad) => HttpError::BadRequest(bad.to_string()),
            PageError::NotYetApplied { applied, .. } => HttpError::NotYetApplied {
                message: self.to_string(),
                applied,
            },
            PageError::Store(_) => HttpError::internal(api, self),
        }
    }
}

/// Serves `GET /messages[?from=&limit=][&min_order=&wait_ms=]` from `store`: `{"messages":
/// [...]}` up to the end the log had when the request came. The first chunk is read before
/// answering, so a failing store gets a 500; the rest is streamed.
///
/// This is the master's form: a node that numbers entries itself holds every order it ever
/// handed out, so `min_order` is answered at once when the log reaches it. Beyond the log's
/// end it can only be a write still being appended (or a client's mistake): the log is looked
/// at once more after `wait_ms`, then a `504`.
pub async fn serve_page(
    store: Arc<dyn LogStore>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query?;
    let page = PageRequest::parse(&query)?;
    if let Some(after) = ReadAfter::parse(&query)? {
        if store.last_order() < after.min_order {
            tokio::time::sleep(after.wait).await;
        }
        check_reached(after, store.last_order())?;
    }
    respond(store, page).await
}

/// Like [`serve_page`], for a node that applies what another numbered: with `min_order`, waits
/// (up to `wait_ms`) until `applied`, the end of its stored prefix, reaches it. It wakes on
/// each change of `applied`, never on a timer.
pub async fn serve_page_after(
    store: Arc<dyn LogStore>,
    mut applied: watch::Receiver<Order>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query?;
    let page = PageRequest::parse(&query)?;
    if let Some(after) = ReadAfter::parse(&query)? {
        let reached = applied.wait_for(|&end| end >= after.min_order);
        // A closed channel (the applier stopped) is as good as a timeout: nothing comes.
        let _ = tokio::time::timeout(after.wait, reached).await;
        let end = *applied.borrow();
        check_reached(after, end)?;
    }
    respond(store, page).await
}

/// A `504` unless `end` reaches what the client asked for.
fn check_reached(after: ReadAfter, end: Order) -> Result<(), PageError> {
    if end >= after.min_order {
        return Ok(());
    }
    Err(PageError::NotYetApplied {
        min_order: after.min_order,
        applied: end,
        waited_ms: u64::try_from(after.wait.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Reads the first chunk and streams the page.
async fn respond(store: Arc<dyn LogStore>, page: PageRequest) -> Result<Response, PageError> {
    let last = page.last_in(store.last_order()).unwrap_or(Order::ZERO);
    let first_chunk =
        page_body::read_chunk(&store, page.from, last, page_body::FIRST_CHUNK_ENTRIES).await?;
    let body = page_body::PageBody::new(store, page.from, last, first_chunk).into_body();
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: Option<&str>, limit: Option<&str>) -> PageQuery {
        PageQuery {
            from: from.map(Into::into),
            limit: limit.map(Into::into),
            ..PageQuery::default()
        }
    }

    fn after(min_order: Option<&str>, wait_ms: Option<&str>) -> PageQuery {
        PageQuery {
            min_order: min_order.map(Into::into),
            wait_ms: wait_ms.map(Into::into),
            ..PageQuery::default()
        }
    }

    #[test]
    fn min_order_and_wait_ms_are_validated() {
        assert_eq!(ReadAfter::parse(&after(None, None)), Ok(None));
        assert_eq!(
            ReadAfter::parse(&after(Some("7"), None)),
            Ok(Some(ReadAfter {
                min_order: Order(7),
                wait: Duration::ZERO
            }))
        );
        assert_eq!(
            ReadAfter::parse(&after(Some("0"), Some("60000"))),
            Ok(Some(ReadAfter {
                min_order: Order(0),
                wait: Duration::from_secs(60)
            }))
        );
        assert_eq!(
            ReadAfter::parse(&after(Some("x"), None)),
            Err(BadPageQuery::MinOrder("x".into()))
        );
        for bad in ["60001", "-1", "1.5", "soon"] {
            assert_eq!(
                ReadAfter::parse(&after(Some("1"), Some(bad))),
                Err(BadPageQuery::WaitMs(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            BadPageQuery::WaitMs("60001".into()).to_string(),
            r#"`wait_ms` must be an integer from 0 to 60000 (ms), got "60001""#
        );
    }

    #[test]
    fn defaults_are_the_whole_log() {
        assert_eq!(
            PageRequest::parse(&query(None, None)).unwrap(),
            PageRequest {
                from: Order(1),
                limit: usize::MAX
            }
        );
    }

    #[test]
    fn limits_are_clamped_and_bad_numbers_rejected() {
        assert_eq!(
            PageRequest::parse(&query(Some("5"), Some("99999")))
                .unwrap()
                .limit,
            MAX_PAGE
        );
        for (from, limit) in [
            (Some("0"), None),
            (Some("-1"), None),
            (Some("x"), None),
            (None, Some("0")),
            (None, Some("1.5")),
        ] {
            assert!(
                PageRequest::parse(&query(from, limit)).is_err(),
                "{from:?} {limit:?}"
            );
        }
    }

    #[test]
    fn bad_numbers_are_explained_to_the_client() {
        let from = PageRequest::parse(&query(Some("0"), None)).unwrap_err();
        let limit = PageRequest::parse(&query(None, Some("x"))).unwrap_err();
        static API: NodeApi = NodeApi {
            role: "tester",
            not_found: "",
            method_not_allowed: "",
        };
        assert!(matches!(
            PageError::from(from).into_http(&API),
            HttpError::BadRequest(message)
                if message == r#"`from` must be an integer of at least 1 (an order), got "0""#
        ));
        assert!(matches!(
            PageError::from(limit).into_http(&API),
            HttpError::BadRequest(message)
                if message == r#"`limit` must be an integer from 1 to 10000, got "x""#
        ));
    }

    #[test]
    fn the_last_order_of_a_page_stays_within_the_log() {
        let page = |from, limit| PageRequest {
            from: Order(from),
            limit,
        };
        assert_eq!(page(1, usize::MAX).last_in(Order(10)), Some(Order(10)));
        assert_eq!(page(3, 5).last_in(Order(10)), Some(Order(7)));
        assert_eq!(page(8, 5).last_in(Order(10)), Some(Order(10)));
        assert_eq!(page(11, 5).last_in(Order(10)), None);
        assert_eq!(page(1, 0).last_in(Order(10)), None);
        assert_eq!(
            page(u64::MAX, usize::MAX).last_in(Order(u64::MAX)),
            Some(Order(u64::MAX))
        );
    }

    mod read_after {
        use super::*;
        use crate::store::MemoryLog;
        use replog_common::Entry;

        fn log_of(len: u64) -> Arc<MemoryLog> {
            let store = Arc::new(MemoryLog::new());
            let entries: Vec<Entry> = (1..=len).map(Entry::sample).collect();
            store.append(&entries).unwrap();
            store
        }

        fn ask(min_order: u64, wait_ms: u64) -> Result<Query<PageQuery>, QueryRejection> {
            Ok(Query(PageQuery {
                min_order: Some(min_order.to_string()),
                wait_ms: Some(wait_ms.to_string()),
                ..PageQuery::default()
            }))
        }

        async fn orders(response: Response) -> Vec<u64> {
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let page: replog_common::wire::MessagesPage = serde_json::from_slice(&bytes).unwrap();
            page.messages.iter().map(|m| m.order).collect()
        }

        #[tokio::test(start_paused = true)]
        async fn a_secondary_answers_once_it_has_applied_through_min_order() {
            let store = log_of(2);
            let (applied_tx, applied) = watch::channel(Order(2));
            let answer = tokio::spawn(serve_page_after(
                store.clone(),
                applied.clone(),
                ask(3, 5_000),
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!answer.is_finished(), "answered before 3 was applied");
            store.append(&[Entry::sample(3)]).unwrap();
            applied_tx.send_replace(Order(3));
            let response = answer.await.unwrap().unwrap();
            assert_eq!(orders(response).await, vec![1, 2, 3]);
        }

        #[tokio::test(start_paused = true)]
        async fn a_secondary_that_does_not_get_there_in_time_says_how_far_it_got() {
            let store = log_of(2);
            let (_applied_tx, applied) = watch::channel(Order(2));
            let started = tokio::time::Instant::now();
            let result = serve_page_after(store, applied, ask(3, 250)).await;
            assert_eq!(started.elapsed(), Duration::from_millis(250));
            assert!(matches!(
                result,
                Err(PageError::NotYetApplied {
                    min_order: Order(3),
                    applied: Order(2),
                    waited_ms: 250
                })
            ));
        }

        #[tokio::test(start_paused = true)]
        async fn from_and_limit_work_alongside_min_order() {
            let store = log_of(5);
            let (_applied_tx, applied) = watch::channel(Order(5));
            let query = Ok(Query(PageQuery {
                from: Some("2".into()),
                limit: Some("2".into()),
                min_order: Some("4".into()),
                wait_ms: None,
            }));
            let response = serve_page_after(store, applied, query).await.unwrap();
            assert_eq!(orders(response).await, vec![2, 3]);
        }

        #[tokio::test(start_paused = true)]
        async fn the_master_answers_at_once_what_it_holds_and_504_beyond() {
            let store = log_of(3);
            let started = tokio::time::Instant::now();
            let response = serve_page(store.clone(), ask(3, 10_000)).await.unwrap();
            assert_eq!(started.elapsed(), Duration::ZERO);
            assert_eq!(orders(response).await, vec![1, 2, 3]);
            let result = serve_page(store, ask(4, 300)).await;
            assert_eq!(started.elapsed(), Duration::from_millis(300));
            assert!(matches!(
                result,
                Err(PageError::NotYetApplied {
                    applied: Order(3),
                    ..
                })
            ));
        }

        #[tokio::test]
        async fn a_late_read_is_a_504_with_the_applied_position() {
            let error = PageError::NotYetApplied {
                min_order: Order(9),
                applied: Order(4),
                waited_ms: 100,
            };
            static API: NodeApi = NodeApi {
                role: "tester",
                not_found: "",
                method_not_allowed: "",
            };
            let response = error.into_http(&API).into_response();
            assert_eq!(response.status(), axum::http::StatusCode::GATEWAY_TIMEOUT);
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: replog_common::wire::http::NotYetApplied =
                serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body.applied, 4);
            assert!(body.error.contains("not yet through 9"), "{}", body.error);
        }
    }
}
