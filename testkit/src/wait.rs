//! Waiting on conditions with deadlines: poll, and say what was last seen when time runs out.

use std::future::Future;
use std::time::{Duration, Instant};

/// A condition did not hold before its deadline.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timed out after {after:?} waiting until {what}; last seen: {last_seen}")]
pub struct WaitTimeout {
    /// What was waited for.
    pub what: String,
    /// How long it was waited for.
    pub after: Duration,
    /// What the last probe reported.
    pub last_seen: String,
}

/// Calls `probe` every `poll` until it returns `Ok`, and returns that value; after `deadline`
/// fails with the last `Err`, which should say how far things got.
pub async fn wait_for<T, F, Fut>(
    deadline: Duration,
    poll: Duration,
    what: &str,
    mut probe: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(last_seen) if start.elapsed() >= deadline => {
                return Err(WaitTimeout {
                    what: what.to_owned(),
                    after: deadline,
                    last_seen,
                })
            }
            Err(_) => tokio::time::sleep(poll).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_first_ok_and_reports_the_last_err() {
        let calls = AtomicU32::new(0);
        let value = wait_for(
            Duration::from_secs(5),
            Duration::from_millis(1),
            "three",
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n >= 2 {
                        Ok(n)
                    } else {
                        Err(format!("n={n}"))
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(value, 2);

        let timeout = wait_for(
            Duration::ZERO,
            Duration::from_millis(1),
            "never",
            || async { Err::<(), _>("still no".to_owned()) },
        )
        .await
        .unwrap_err();
        assert_eq!(timeout.last_seen, "still no");
        assert!(timeout.to_string().contains("never"));
    }
}
