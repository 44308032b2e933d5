//! Typed HTTP requests against replog nodes, with every outcome a value rather than a panic.
//!
//! A checker has to tell apart "the write failed", "the write timed out waiting for its write
//! concern" and "nobody knows what happened" (the response was lost), so [`WriteOutcome`] and
//! [`RequestError`] keep those apart: [`RequestError::NotSent`] means the request provably never
//! reached the node, every other error leaves the write's fate open.

use replog_common::wire::http::{ErrorBody, ShuttingDown};
use replog_common::wire::{EntryMessage, MessagesPage};
use reqwest::StatusCode;
use std::time::Duration;

/// The bodies, declared once in `replog-common` for the nodes and every client.
pub use replog_common::wire::http::{
    BrokerHealth, EntryStatus, MasterHealth, NotYetApplied, QuorumHealth, Ready, SecondaryHealth,
    SecondaryStatus, WriteAck, WriteBody as Write, WriteTimedOut,
};

/// Every answer the master can give to a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// `201 Created`.
    Created(WriteAck),
    /// `200 OK`: the log already held this `message_id`.
    Duplicate(WriteAck),
    /// `504 Gateway Timeout`: appended, write concern not met in time.
    TimedOut(WriteTimedOut),
    /// `503 Service Unavailable`: the master is stopping. `order` is set when the write was
    /// appended before the stop.
    Unavailable {
        /// The entry's position, if it was appended.
        order: Option<u64>,
        /// The message.
        error: String,
    },
    /// Any other status, with the raw body.
    Status {
        /// The status code.
        status: u16,
        /// The body.
        body: String,
    },
}

/// A request whose answer never arrived, or arrived unreadable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// No connection could be made: the node never saw the request.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The client gave up waiting; the node may have acted on the request.
    #[error("no answer in time: {0}")]
    Timeout(String),
    /// The connection failed after the request went out; the node may have acted on it.
    #[error("answer lost: {0}")]
    Lost(String),
    /// An answer came but is not what the API promises.
    #[error("unexpected answer ({status}): {detail}")]
    BadBody {
        /// The status code.
        status: u16,
        /// What was wrong, with the body.
        detail: String,
    },
}

impl RequestError {
    fn from_reqwest(error: reqwest::Error) -> RequestError {
        // `is_connect` first: a connect timeout is still a request that never went out.
        let text = error_chain(&error);
        if error.is_connect() {
            RequestError::NotSent(text)
        } else if error.is_timeout() {
            RequestError::Timeout(text)
        } else {
            RequestError::Lost(text)
        }
    }
}

/// An error and its sources on one line: reqwest's own message rarely says what broke.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Requests against one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    base: String,
    /// Connection pool with the per-request timeout.
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` on every request when set (a node's `--api-token`).
    token: Option<String>,
}

/// The page size used when reading a whole log.
pub const PAGE: u64 = 5_000;

impl NodeClient {
    /// A client for `base_url` whose requests give up after `timeout`; connecting gives up
    /// after a second (a node that is down refuses at once; a frozen one still accepts).
    pub fn new(base_url: &str, timeout: Duration) -> NodeClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(1).min(timeout))
            .build()
            .expect("the HTTP client builds");
        NodeClient::with_client(base_url, http)
    }

    /// A client for `base_url` sharing an existing connection pool.
    pub fn with_client(base_url: &str, http: reqwest::Client) -> NodeClient {
        NodeClient {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            token: None,
        }
    }

    /// The same client presenting `token` (a node's `--api-token`) on every request.
    pub fn with_token(mut self, token: impl Into<String>) -> NodeClient {
        self.token = Some(token.into());
        self
    }

    /// The same client presenting no token.
    pub fn without_token(mut self) -> NodeClient {
        self.token = None;
        self
    }

    /// A request to `url` with the token, if this client has one.
    fn request(
        &self,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `POST /messages`.
    pub async fn post_message(&self, write: &Write) -> Result<WriteOutcome, RequestError> {
        let response = self
            .request(reqwest::Method::POST, format!("{}/messages", self.base))
            .json(write)
            .send()
            .await
            .map_err(RequestError::from_reqwest)?;
        let status = response.status();
        let body = response.text().await.map_err(RequestError::from_reqwest)?;
        let bad = |detail: String| RequestError::BadBody {
            status: status.as_u16(),
            detail: format!("{detail}: {body:?}"),
        };
        Ok(match status {
            StatusCode::CREATED | StatusCode::OK => {
                let ack: WriteAck = serde_json::from_str(&body).map_err(|e| bad(e.to_string()))?;
                if status == StatusCode::OK {
                    WriteOutcome::Duplicate(ack)
                } else {
                    WriteOutcome::Created(ack)
                }
            }
            StatusCode::GATEWAY_TIMEOUT => {
                WriteOutcome::TimedOut(serde_json::from_str(&body).map_err(|e| bad(e.to_string()))?)
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let stopped: ShuttingDown =
                    serde_json::from_str(&body).map_err(|e| bad(e.to_string()))?;
                WriteOutcome::Unavailable {
                    order: stopped.order,
                    error: stopped.error,
                }
            }
            other => WriteOutcome::Status {
                status: other.as_u16(),
                body,
            },
        })
    }

    /// `GET /messages?from=&limit=`.
    pub async fn messages_page(
        &self,
        from: u64,
        limit: u64,
    ) -> Result<Vec<EntryMessage>, RequestError> {
        let page: MessagesPage = self
            .get_json(&format!("/messages?from={from}&limit={limit}"))
            .await?;
        Ok(page.messages)
    }

    /// The whole log, page by page until a page comes back empty (a node may end a page
    /// short of the limit to bound its bytes).
    pub async fn all_messages(&self) -> Result<Vec<EntryMessage>, RequestError> {
        let mut all = Vec::new();
        loop {
            let page = self.messages_page(all.len() as u64 + 1, PAGE).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// `GET /messages?min_order=&wait_ms=[&from=&limit=]`: the page once the node has applied
    /// through `min_order`, or its `504` saying how far it got. `page` is `(from, limit)`.
    pub async fn messages_after(
        &self,
        min_order: u64,
        wait_ms: u64,
        page: Option<(u64, u64)>,
    ) -> Result<Result<Vec<EntryMessage>, NotYetApplied>, RequestError> {
        let mut path = format!("/messages?min_order={min_order}&wait_ms={wait_ms}");
        if let Some((from, limit)) = page {
            path.push_str(&format!("&from={from}&limit={limit}"));
        }
        let raw = self.get_raw(&path).await?;
        let parse = |detail: String| RequestError::BadBody {
            status: raw.status,
            detail: format!("GET {path}: {detail}: {:?}", raw.body),
        };
        match raw.status {
            200 => serde_json::from_str::<MessagesPage>(&raw.body)
                .map(|page| Ok(page.messages))
                .map_err(|e| parse(e.to_string())),
            504 => serde_json::from_str::<NotYetApplied>(&raw.body)
                .map(Err)
                .map_err(|e| parse(e.to_string())),
            _ => Err(parse("not 200 or 504".into())),
        }
    }

    /// The master's `GET /messages/{message_id}`: the entry's status, or `None` on `404`.
    /// The id is percent-encoded into the path.
    pub async fn entry_status(
        &self,
        message_id: &str,
    ) -> Result<Option<EntryStatus>, RequestError> {
        let mut url = reqwest::Url::parse(&format!("{}/messages/", self.base))
            .map_err(|e| RequestError::NotSent(format!("bad URL {}: {e}", self.base)))?;
        url.path_segments_mut()
            .map_err(|_| RequestError::NotSent(format!("{} cannot take a path", self.base)))?
            .pop_if_empty()
            .push(message_id);
        let response = self
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .map_err(RequestError::from_reqwest)?;
        let status = response.status();
        let body = response.text().await.map_err(RequestError::from_reqwest)?;
        let bad = |detail: String| RequestError::BadBody {
            status: status.as_u16(),
            detail: format!("GET /messages/{message_id:?}: {detail}: {body:?}"),
        };
        match status {
            StatusCode::OK => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| bad(e.to_string())),
            StatusCode::NOT_FOUND => serde_json::from_str::<ErrorBody>(&body)
                .map(|_| None)
                .map_err(|e| bad(e.to_string())),
            _ => Err(bad("not 200 or 404".into())),
        }
    }

    /// `GET /ready`: `Ok(())` on `200`, `Err(why)` with the `503`'s error.
    pub async fn ready(&self) -> Result<Result<(), String>, RequestError> {
        let raw = self.get_raw("/ready").await?;
        match raw.status {
            200 => serde_json::from_str::<Ready>(&raw.body)
                .map(|_| Ok(()))
                .map_err(|e| RequestError::BadBody {
                    status: 200,
                    detail: format!("GET /ready: {e}: {:?}", raw.body),
                }),
            503 => serde_json::from_str::<ErrorBody>(&raw.body)
                .map(|body| Err(body.error))
                .map_err(|e| RequestError::BadBody {
                    status: 503,
                    detail: format!("GET /ready: {e}: {:?}", raw.body),
                }),
            status => Err(RequestError::BadBody {
                status,
                detail: format!("GET /ready: not 200 or 503: {:?}", raw.body),
            }),
        }
    }

    /// The master's `GET /health`.
    pub async fn master_health(&self) -> Result<MasterHealth, RequestError> {
        self.get_json("/health").await
    }

    /// A secondary's `GET /health`.
    pub async fn secondary_health(&self) -> Result<SecondaryHealth, RequestError> {
        self.get_json("/health").await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<T, RequestError> {
        let response = self
            .request(
                reqwest::Method::GET,
                format!("{}{path_and_query}", self.base),
            )
            .send()
            .await
            .map_err(RequestError::from_reqwest)?;
        let status = response.status();
        let body = response.text().await.map_err(RequestError::from_reqwest)?;
        if status != StatusCode::OK {
            return Err(RequestError::BadBody {
                status: status.as_u16(),
                detail: format!("GET {path_and_query}: {body:?}"),
            });
        }
        serde_json::from_str(&body).map_err(|e| RequestError::BadBody {
            status: status.as_u16(),
            detail: format!("GET {path_and_query}: {e}: {body:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        // A port we just proved free, so nothing listens there.
        let port = crate::ports::free_port().unwrap();
        let client = NodeClient::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(2));
        let write = Write {
            content: "x".into(),
            w: None,
            message_id: None,
            timeout_ms: None,
        };
        let error = client.post_message(&write).await.unwrap_err();
        assert!(matches!(error, RequestError::NotSent(_)), "{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Raw requests: for tests that must send what no typed request would (malformed bodies, odd
// content types, wrong methods) and read whatever comes back. Kept apart from the typed API
// above on purpose.
// ---------------------------------------------------------------------------------------------

/// An answer taken as it came: the status, the `Retry-After` header and the body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, if the answer has one (a read-only master's `503`).
    pub retry_after: Option<String>,
    /// The body, as text.
    pub body: String,
}

impl RawResponse {
    /// The body as JSON; every answer of replog's API, errors included, is JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.body).map_err(|error| {
            format!(
                "{} with a body that is not JSON ({error}): {:?}",
                self.status, self.body
            )
        })
    }
}

impl NodeClient {
    /// Any method on any path, with an optional body and `Content-Type`.
    pub async fn request_raw(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<String>,
        content_type: Option<&str>,
    ) -> Result<RawResponse, RequestError> {
        let mut request = self.request(method, format!("{}{path_and_query}", self.base));
        if let Some(body) = body {
            request = request.body(body);
        }
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        let response = request.send().await.map_err(RequestError::from_reqwest)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let body = response.text().await.map_err(RequestError::from_reqwest)?;
        Ok(RawResponse {
            status,
            retry_after,
            body,
        })
    }

    /// `POST /messages` with any body, under any (or no) `Content-Type`.
    pub async fn post_raw(
        &self,
        body: impl Into<String>,
        content_type: Option<&str>,
    ) -> Result<RawResponse, RequestError> {
        self.request_raw(
            reqwest::Method::POST,
            "/messages",
            Some(body.into()),
            content_type,
        )
        .await
    }

    /// `GET <path_and_query>`, whatever the answer.
    pub async fn get_raw(&self, path_and_query: &str) -> Result<RawResponse, RequestError> {
        self.request_raw(reqwest::Method::GET, path_and_query, None, None)
            .await
    }
}
