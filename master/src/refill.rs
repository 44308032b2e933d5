//! Refilling a master's log from a secondary (`--refill-from`): the way out of the fence.
//!
//! At start, before any write is taken, the master pages through the secondary's
//! `GET /messages?from=` beyond its own log's end and appends what it gets, checked:
//! - the secondary must hold the master's last entry with the same message id (the two logs
//!   share their history up to there; a secondary of another lineage is refused);
//! - every page must continue exactly where the log ends (no gap, no overlap, no reordering).
//!
//! Nothing is renumbered: the entries keep the orders every other node already has.

use replog_common::wire::MessagesPage;
use replog_common::{Entry, Order};
use replog_shell::http::ApiToken;
use replog_shell::store::{self, LogStore, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Entries asked for per page.
const PAGE: u64 = 1000;

/// How long one page may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a refill stopped.
#[derive(Debug, thiserror::Error)]
pub enum RefillError {
    /// The source could not be asked.
    #[error("cannot fetch from {url}: {source}")]
    Http {
        /// What was asked.
        url: String,
        /// Why it failed.
        source: reqwest::Error,
    },
    /// The source answered with an error status.
    #[error("{url} answered {status}")]
    Status {
        /// What was asked.
        url: String,
        /// Its status.
        status: reqwest::StatusCode,
    },
    /// The source does not share this log's history.
    #[error("the source does not hold this master's last entry {order} ({expected}); it holds {found}; refusing to refill from another lineage")]
    Lineage {
        /// The master's last order.
        order: Order,
        /// The master's message id there.
        expected: String,
        /// What the source holds there (`nothing` when it is shorter).
        found: String,
    },
    /// A page did not continue the log.
    #[error("the source sent entry {got} where {expected} was due")]
    NotContiguous {
        /// The order due.
        expected: Order,
        /// The order received.
        got: Order,
    },
    /// The source sent something that is not an entry.
    #[error("the source sent a bad entry: {0}")]
    Wire(#[from] replog_common::wire::WireError),
    /// The master's own store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a refill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refilled {
    /// Where the log ended before.
    pub from: Order,
    /// Where it ends now.
    pub to: Order,
}

/// Appends to `log` every entry `source` (a node's base URL) holds beyond the log's end,
/// presenting `token` when given. Pages may end short of the limit asked for (a node bounds
/// its pages by bytes too): it asks on until a page comes back empty.
pub async fn refill(
    log: Arc<dyn LogStore>,
    source: &str,
    token: Option<&ApiToken>,
) -> Result<Refilled, RefillError> {
    let source = source.trim_end_matches('/');
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .expect("a validated token is a valid header value");
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
    }
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers)
        .build()
        .map_err(|source_error| RefillError::Http {
            url: source.to_owned(),
            source: source_error,
        })?;
    let start = log.last_order();
    if start > Order::ZERO {
        check_lineage(&client, source, &log, start).await?;
    }
    let mut next = start.next();
    loop {
        let page = fetch(&client, source, next, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for entry in &page {
            if entry.order != next {
                return Err(RefillError::NotContiguous {
                    expected: next,
                    got: entry.order,
                });
            }
            next = next.next();
        }
        let writer = log.clone();
        store::blocking(move || writer.append(&page)).await?;
        tracing::info!(to = %log.last_order(), source = %source, "refilled entries");
    }
    Ok(Refilled {
        from: start,
        to: log.last_order(),
    })
}

/// Checks that `source` holds the log's last entry under the same message id.
async fn check_lineage(
    client: &reqwest::Client,
    source: &str,
    log: &Arc<dyn LogStore>,
    last: Order,
) -> Result<(), RefillError> {
    let reader = log.clone();
    let ours = store::blocking(move || reader.read(last, 1)).await?;
    let expected = ours
        .first()
        .map(|entry| entry.message_id.as_str().to_owned())
        .unwrap_or_default();
    let theirs = fetch(client, source, last, 1).await?;
    match theirs.first() {
        Some(entry) if entry.order == last && entry.message_id.as_str() == expected => Ok(()),
        other => Err(RefillError::Lineage {
            order: last,
            expected,
            found: other.map_or_else(
                || "nothing".to_owned(),
                |entry| format!("{:?} at {}", entry.message_id.as_str(), entry.order),
            ),
        }),
    }
}

/// One page of `source`'s log from `from`.
async fn fetch(
    client: &reqwest::Client,
    source: &str,
    from: Order,
    limit: u64,
) -> Result<Vec<Entry>, RefillError> {
    let url = format!("{source}/messages?from={from}&limit={limit}");
    let http = |source_error| RefillError::Http {
        url: url.clone(),
        source: source_error,
    };
    let response = client.get(&url).send().await.map_err(http)?;
    if !response.status().is_success() {
        return Err(RefillError::Status {
            url: url.clone(),
            status: response.status(),
        });
    }
    let page: MessagesPage = response.json().await.map_err(http)?;
    Ok(page
        .messages
        .into_iter()
        .map(Entry::try_from)
        .collect::<Result<Vec<_>, _>>()?)
}
