//! HTTP pieces both nodes serve the same way: the JSON error body and `GET /messages` paging.

mod page_body;

use crate::store::LogStore;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use replog_common::ids::Order;
use serde::Deserialize;
use std::sync::Arc;

/// The most entries one `GET /messages` page returns when the client asks for more.
pub const MAX_PAGE: usize = 10_000;

/// Builds the one error shape every endpoint uses: `{"error": "..."}`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

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
    pub fn parse(query: &PageQuery) -> Result<PageRequest, String> {
        let from = match query.from.as_deref() {
            None => Order(1),
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|&from| from >= 1)
                .map(Order)
                .ok_or_else(|| {
                    format!("`from` must be an integer of at least 1 (an order), got {raw:?}")
                })?,
        };
        let limit = match query.limit.as_deref() {
            None => usize::MAX,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|&limit| limit >= 1)
                .map(|limit| limit.min(MAX_PAGE))
                .ok_or_else(|| {
                    format!("`limit` must be an integer from 1 to {MAX_PAGE}, got {raw:?}")
                })?,
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

/// Why a `GET /messages` could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Bad `from` or `limit`: the client's fault (400).
    #[error("{0}")]
    BadRequest(String),
    /// The store failed (500).
    #[error("cannot read the log: {0}")]
    Store(String),
}

/// Serves `GET /messages[?from=&limit=]` from `store`: `{"messages": [...]}` up to the end the
/// log had when the request came. The first chunk is read before answering, so a failing store
/// gets a 500; the rest is streamed.
pub async fn serve_page(
    store: Arc<dyn LogStore>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query.map_err(|rejection| PageError::BadRequest(rejection.body_text()))?;
    let page = PageRequest::parse(&query).map_err(PageError::BadRequest)?;
    let last = page.last_in(store.last_order()).unwrap_or(Order::ZERO);
    let first_chunk = page_body::read_chunk(&store, page.from, last)
        .await
        .map_err(PageError::Store)?;
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
