//! One stop signal for the whole process.

use tokio_util::sync::CancellationToken;

/// Why a node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Ctrl-C.
    Interrupt,
    /// `kill` or `docker stop`.
    Terminate,
    /// Something inside asked the node to stop.
    Requested,
}

/// Waits for SIGINT or SIGTERM, or for `token` to be cancelled by someone else, then cancels
/// `token` so every task sees the stop, and says why.
pub async fn wait_for_stop(token: CancellationToken) -> StopReason {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    let reason = tokio::select! {
        _ = interrupt => StopReason::Interrupt,
        _ = terminate => StopReason::Terminate,
        _ = token.cancelled() => StopReason::Requested,
    };
    token.cancel();
    reason
}
