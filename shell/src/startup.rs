//! What both nodes share while starting: the error that stops a start, and binding the
//! HTTP listener.

use crate::amqp::AmqpError;
use crate::store::StoreError;
use std::net::SocketAddr;
use tokio::net::TcpListener;

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

/// Serves `router` on `listener` until `stop` is cancelled, letting requests in flight finish,
/// then waits for every background task in `tasks` to wind down.
pub async fn serve_until_stopped(
    listener: TcpListener,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    tasks.close();
    tasks.wait().await;
    served
}
