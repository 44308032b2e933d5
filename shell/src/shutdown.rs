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

/// Wraps a background task so that a panic in it stops the whole node instead of leaving it
/// running without the task (a master without its publisher would answer `/health` as if all
/// were well). The panic is logged with the task's name, and `stop` is cancelled.
pub async fn supervised<F>(name: &'static str, stop: CancellationToken, task: F)
where
    F: std::future::Future<Output = ()>,
{
    use futures_util::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        tracing::error!(task = name, %message, "a background task panicked; stopping the node");
        stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_stops_the_node() {
        let stop = CancellationToken::new();
        supervised("test", stop.clone(), async { panic!("boom") }).await;
        assert!(stop.is_cancelled());
    }

    #[tokio::test]
    async fn a_task_that_ends_normally_does_not() {
        let stop = CancellationToken::new();
        supervised("test", stop.clone(), async {}).await;
        assert!(!stop.is_cancelled());
    }
}
