//! HTTP pieces both nodes serve the same way: the one error type with its JSON body
//! ([`error`]) and `GET /messages` paging (here, with the streamed body in `page_body`).

mod error;
mod page_body;

pub use error::{error_response, HttpError, NodeApi};
pub use page_body::ChunkError;

use crate::store::LogStore;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use replog_common::ids::Order;
use serde::Deserialize;
use std::sync::Arc;

/// The most entries one `GET /messages` page returns when the client asks for more.
pub const MAX_PAGE: usize = 10_000;

/// The raw query of `GET /messages`, validated by [`PageRequest::parse`] so that bad numbers
/// get our error shape rather than the framework's.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// First order to return, inclusive.
    pub from: Option<String>,
    /// Most entries to return.
    pub limit: Option<String>,
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

/// What is wrong with the `from` or `limit` of a `GET /messages`, phrased for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPageQuery {
    /// `from`, as given, is not an order.
    #[error("`from` must be an integer of at least 1 (an order), got {0:?}")]
    From(String),
    /// `limit`, as given, is not a page size.
    #[error("`limit` must be an integer from 1 to {max}, got {0:?}", max = MAX_PAGE)]
    Limit(String),
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
}

impl PageError {
    /// The answer of the node `api`: 400 for the client's mistakes, 500 for the store's.
    pub fn into_http(self, api: &'static NodeApi) -> HttpError {
        match self {
            PageError::Query(rejection) => HttpError::from(rejection),
            PageError::BadQuery(bad) => HttpError::BadRequest(bad.to_string()),
            PageError::Store(_) => HttpError::internal(api, self),
        }
    }
}

/// Serves `GET /messages[?from=&limit=]` from `store`: `{"messages": [...]}` up to the end the
/// log had when the request came. The first chunk is read before answering, so a failing store
/// gets a 500; the rest is streamed.
pub async fn serve_page(
    store: Arc<dyn LogStore>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query?;
    let page = PageRequest::parse(&query)?;
    let last = page.last_in(store.last_order()).unwrap_or(Order::ZERO);
    let first_chunk = page_body::read_chunk(&store, page.from, last).await?;
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
        }
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
}
