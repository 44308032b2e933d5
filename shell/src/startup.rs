//! What both nodes share while starting and stopping: the error that stops a start, binding the
//! HTTP listener, and the server loop with its bounds ([`ServeLimits`]).
//!
//! The loop is hyper's HTTP/1.1 connection driven by hand rather than `axum::serve`, because
//! `axum::serve` has no header read timeout, no bound on connections and a graceful shutdown
//! that waits for ever: a client reading a long `GET /messages` slowly would hold a stopping
//! node. Here a stop closes idle connections at once, lets requests in flight finish for
//! [`ServeLimits::shutdown_grace`], and then closes whatever is still open.

use crate::amqp::AmqpError;
use crate::store::StoreError;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag is wrong in a way clap cannot check.
    #[error("{0}")]
    Config(String),
    /// The broker settings are wrong.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    /// The data directory cannot be opened or the log recovered.
    #[error("cannot open the data directory: {0}")]
    Store(#[from] StoreError),
    /// A start-up step of one node failed (e.g. the master's refill from a secondary).
    #[error(transparent)]
    Node(Box<dyn std::error::Error + Send + Sync>),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// How long a client may hold the HTTP server, and how many may at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a client may take to send a request's headers; also how long an idle
    /// keep-alive connection waits for the next request (hyper uses one timer for both).
    pub header_timeout: Duration,
    /// How long a request body may stall between two pieces.
    pub body_timeout: Duration,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// At a stop, how long requests in flight may take before their connections are closed.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    /// The flags' defaults: 10 s for headers and bodies, 1024 connections, 5 s of grace.
    fn default() -> Self {
        ServeLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `stop` is cancelled, lets requests in
/// flight finish for the shutdown grace, then waits for every background task in `tasks` to
/// wind down.
pub async fn serve_until_stopped(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) -> std::io::Result<()> {
    let served = serve(listener, router, limits, stop).await;
    tasks.close();
    tasks.wait().await;
    served
}

/// The accept loop: one task per connection, at most `limits.max_connections` of them.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // A permit first: beyond the bound, connections wait in the kernel's backlog rather
        // than as tasks here.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "cannot accept an HTTP connection; retrying in a second");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            },
            _ = stop.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            let _permit = permit;
            if let Err(error) = connection.await {
                // Timeouts and clients that went away: theirs to notice, not an event here.
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = limits.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "HTTP requests still in flight after the shutdown grace; closing their connections"
        );
    }
    connections.shutdown().await;
    Ok(())
}
