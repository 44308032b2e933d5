//! The write path's HTTP client: for one URL, a pool of keep-alive HTTP/1.1 connections
//! (hyper's bare client connections over `TCP_NODELAY` sockets), one checked out per write and
//! put back once its answer has been read to the end. A request is a prepared body and a few
//! cloned headers: no URL parsing, JSON, redirect, proxy or pool-by-host logic per write.
//!
//! Why not reqwest: the load generator shares a small machine with the system it measures, and
//! every microsecond of its CPU is taken from the nodes; through reqwest a write cost the load
//! process about 63 µs of CPU.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

/// Why a `POST` did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host[:port]/path`.
    #[error("{url}: not an http:// URL with a host ({why})")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// No TCP connection (or no HTTP/1.1 handshake on it).
    #[error("POST {url}: connecting: {message}")]
    Connect {
        /// The request's URL.
        url: Arc<str>,
        /// The socket's or hyper's error.
        message: String,
    },
    /// The request failed on its connection before an answer came.
    #[error("POST {url}: {error}")]
    Send {
        /// The request's URL.
        url: Arc<str>,
        /// hyper's error.
        error: hyper::Error,
    },
    /// The answer's body could not be read.
    #[error("POST {url}: reading the answer: {error}")]
    Body {
        /// The request's URL.
        url: Arc<str>,
        /// hyper's error.
        error: hyper::Error,
    },
    /// An answer other than 200 or 201.
    #[error("POST {url}: {status}: {body}")]
    Status {
        /// The request's URL.
        url: Arc<str>,
        /// The answer's status.
        status: StatusCode,
        /// The answer's body, as text.
        body: String,
    },
}

/// One URL to `POST` to, with its pool of idle connections.
#[derive(Debug)]
pub struct Endpoint {
    /// The URL, for messages.
    url: Arc<str>,
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: HeaderValue,
    /// The request target: path and query.
    target: Uri,
    /// Connections between writes; at most one per concurrent writer.
    idle: Mutex<Vec<Conn>>,
}

/// One connection; its background task ends with it.
#[derive(Debug)]
struct Conn {
    /// Sends requests over the connection.
    sender: SendRequest<Full<Bytes>>,
    /// The task driving the connection's I/O.
    task: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A connection dropped mid-request (a timeout) would otherwise stay open until the
        // server answers; the pool's end would wait for idle connections to notice.
        self.task.abort();
    }
}

/// Why a request went unanswered: with the request back when it was never sent.
type Unsent = (Option<Request<Full<Bytes>>>, hyper::Error);

impl Conn {
    /// Sends `request` once the connection can take it.
    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, Unsent> {
        if let Err(error) = self.sender.ready().await {
            return Err((Some(request), error));
        }
        self.sender
            .try_send_request(request)
            .await
            .map_err(|mut error| (error.take_message(), error.into_error()))
    }
}

impl Endpoint {
    /// An endpoint for `url` (`http://host[:port]/path`); no connection is made yet.
    pub fn new(url: &str) -> Result<Endpoint, HttpError> {
        let bad = |why: &str| HttpError::BadUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|error: hyper::http::uri::InvalidUri| bad(&error.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http://"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not supported"));
        }
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|error| bad(&error.to_string()))?;
        let target = match uri.path_and_query() {
            Some(path) => Uri::from(path.clone()),
            None => Uri::from_static("/"),
        };
        Ok(Endpoint {
            url: Arc::from(url),
            addr,
            host,
            target,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `POST`s `body` as JSON; `Ok` on 200 or 201. On a pooled connection the server closed
    /// while it was idle, the request is sent once more on a new connection if it was not sent
    /// at all; a request that may have reached the server is never repeated.
    pub async fn post(&self, body: Bytes) -> Result<(), HttpError> {
        let mut request = self.request(body);
        let mut pooled = self.checkout();
        let (conn, response) = loop {
            let (mut conn, reused) = match pooled.take() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            match conn.send(request).await {
                Ok(response) => break (conn, response),
                Err((Some(unsent), _)) if reused => request = unsent,
                Err((_, error)) => {
                    return Err(HttpError::Send {
                        url: self.url.clone(),
                        error,
                    })
                }
            }
        };
        let status = response.status();
        // Read to the end, so that the connection can take the next request.
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| HttpError::Body {
                url: self.url.clone(),
                error,
            })?
            .to_bytes();
        self.checkin(conn);
        if status == StatusCode::OK || status == StatusCode::CREATED {
            Ok(())
        } else {
            Err(HttpError::Status {
                url: self.url.clone(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
    }

    /// The request, its headers cloned from the prepared ones (`Content-Length` is hyper's).
    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.target.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request
    }

    /// The most recently used idle connection that is still open, if any.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// Puts a connection whose answer was read to the end back for the next write.
    fn checkin(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(conn);
    }

    /// A new connection, its I/O driven by a task of its own.
    async fn connect(&self) -> Result<Conn, HttpError> {
        let failed = |message: String| HttpError::Connect {
            url: self.url.clone(),
            message,
        };
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|error| failed(format!("{}: {error}", self.addr)))?;
        // A request is one small write; Nagle would hold it for the previous answer's ACK.
        stream
            .set_nodelay(true)
            .map_err(|error| failed(format!("TCP_NODELAY: {error}")))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| failed(error.to_string()))?;
        let task = tokio::spawn(async move {
            // Its error also reaches the request in flight, which reports it.
            let _ = connection.await;
        })
        .abort_handle();
        Ok(Conn { sender, task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_an_address_a_host_and_a_target() {
        let endpoint = Endpoint::new("http://127.0.0.1:8000/messages").unwrap();
        assert_eq!(endpoint.addr, "127.0.0.1:8000");
        assert_eq!(endpoint.host, "127.0.0.1:8000");
        assert_eq!(endpoint.target, "/messages");
        let endpoint = Endpoint::new("http://replog.local/api/messages?x=1").unwrap();
        assert_eq!(endpoint.addr, "replog.local:80");
        assert_eq!(endpoint.target, "/api/messages?x=1");
    }

    #[test]
    fn other_urls_are_refused() {
        for url in [
            "https://m/messages",
            "m:8000/messages",
            "http://u:p@m/messages",
            "not a url",
        ] {
            assert!(
                matches!(Endpoint::new(url), Err(HttpError::BadUrl { .. })),
                "{url}"
            );
        }
    }

    /// A loopback server answering each request with 201, or 500 `no` when its body holds
    /// `fail`; with `close`, it closes each connection after one answer. Counts connections.
    async fn server(close: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/messages", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(read) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..read]);
                        let text = String::from_utf8_lossy(&buffer).into_owned();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if buffer.len() < end + 4 + length {
                            continue;
                        }
                        let body = &text[end + 4..end + 4 + length];
                        let answer = if body.contains("fail") {
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\nno"
                        } else {
                            "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"
                        };
                        buffer.drain(..end + 4 + length);
                        if socket.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn one_connection_is_kept_alive_across_writes() {
        let (url, accepted) = server(false).await;
        let endpoint = Endpoint::new(&url).unwrap();
        for _ in 0..5 {
            endpoint
                .post(Bytes::from_static(b"{\"w\":1}"))
                .await
                .unwrap();
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn another_status_is_an_error_with_the_body() {
        let (url, _) = server(false).await;
        let endpoint = Endpoint::new(&url).unwrap();
        let error = endpoint
            .post(Bytes::from_static(b"fail"))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, HttpError::Status { status, body, .. } if status.as_u16() == 500 && body == "no"),
            "{error}"
        );
        // The connection survives an error answer.
        endpoint.post(Bytes::from_static(b"{}")).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (url, accepted) = server(true).await;
        let endpoint = Endpoint::new(&url).unwrap();
        for _ in 0..3 {
            endpoint.post(Bytes::from_static(b"{}")).await.unwrap();
            // Let the closed socket's end reach the idle connection.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        let endpoint = Endpoint::new("http://127.0.0.1:9/messages").unwrap();
        let error = endpoint.post(Bytes::from_static(b"{}")).await.unwrap_err();
        assert!(matches!(error, HttpError::Connect { .. }), "{error}");
    }
}
