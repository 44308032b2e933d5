//! The load itself, the same for both systems: C clients calling one `write` function, in a
//! closed loop (a client's next write waits for its previous answer) or an open loop (writes due
//! on a fixed schedule, latency counted from when a write was due, so that a stall shows up in
//! the percentiles instead of silently slowing the schedule down).

use crate::args::{Pace, Stop, WSpec};
use crate::stats::micros;
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One write with write concern `w`; `Ok` once the system under test answered it as done.
pub type WriteFn = Arc<dyn Fn(u64) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What a cell measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of every answered write, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Writes that failed.
    pub failed: u64,
    /// The first failure, to show why.
    pub first_error: Option<String>,
    /// From the first write to the last answer.
    pub elapsed: Duration,
}

impl Outcome {
    /// Answered writes per second.
    pub fn throughput(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.latencies_us.len() as f64 / seconds
        } else {
            0.0
        }
    }
}

/// How many failures are printed per cell; the rest are only counted.
const PRINTED_FAILURES: u64 = 3;

/// Runs `clients` clients against `write` until `stop`, at `pace`, each write's `w` drawn from
/// `w`.
pub async fn drive(write: WriteFn, clients: usize, w: &WSpec, pace: Pace, stop: Stop) -> Outcome {
    let started = Instant::now();
    let deadline = match stop {
        Stop::After(duration) => Some(started + duration),
        Stop::Writes(_) => None,
    };
    let limit = match stop {
        Stop::Writes(writes) => writes,
        Stop::After(_) => u64::MAX,
    };
    // Closed loop: how many writes were started. Open loop: the next slot of the schedule.
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (write, next, failures, w) =
                (write.clone(), next.clone(), failures.clone(), w.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut first_error = None;
                loop {
                    let slot = next.fetch_add(1, Ordering::Relaxed);
                    if slot >= limit {
                        break;
                    }
                    let due = match pace {
                        Pace::Closed => Instant::now(),
                        Pace::Open { rate } => {
                            started + Duration::from_secs_f64(slot as f64 / rate)
                        }
                    };
                    if deadline.is_some_and(|deadline| due >= deadline) {
                        break;
                    }
                    if let Pace::Open { .. } = pace {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let w = w.pick(rand::random::<f64>());
                    match write(w).await {
                        Ok(()) => latencies.push(micros(due.elapsed())),
                        Err(error) => {
                            let count = failures.fetch_add(1, Ordering::Relaxed);
                            if count < PRINTED_FAILURES {
                                eprintln!("write failed: {error}");
                            }
                            first_error.get_or_insert(error);
                        }
                    }
                }
                (latencies, first_error)
            })
        })
        .collect();
    let mut outcome = Outcome::default();
    for task in tasks {
        match task.await {
            Ok((latencies, first_error)) => {
                outcome.latencies_us.extend(latencies);
                if outcome.first_error.is_none() {
                    outcome.first_error = first_error;
                }
            }
            Err(error) => {
                outcome.first_error = Some(format!("a client task failed: {error}"));
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.failed = failures.load(Ordering::Relaxed);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant_write() -> WriteFn {
        Arc::new(|_w| Box::pin(async { Ok(()) }))
    }

    #[tokio::test]
    async fn a_write_limit_is_exact_across_clients() {
        let outcome = drive(
            instant_write(),
            8,
            &WSpec::Fixed(1),
            Pace::Closed,
            Stop::Writes(1000),
        )
        .await;
        assert_eq!(outcome.latencies_us.len(), 1000);
        assert_eq!(outcome.failed, 0);
        assert!(outcome.throughput() > 0.0);
    }

    #[tokio::test]
    async fn failures_are_counted_not_timed() {
        let write: WriteFn = Arc::new(|w| {
            Box::pin(async move {
                if w == 2 {
                    Err("refused".to_owned())
                } else {
                    Ok(())
                }
            })
        });
        let mix = WSpec::Mix(vec![(1, 0.5), (2, 0.5)]);
        let outcome = drive(write, 4, &mix, Pace::Closed, Stop::Writes(400)).await;
        assert_eq!(outcome.latencies_us.len() as u64 + outcome.failed, 400);
        assert!(outcome.failed > 0 && !outcome.latencies_us.is_empty());
        assert_eq!(outcome.first_error.as_deref(), Some("refused"));
    }

    #[tokio::test]
    async fn open_loop_keeps_its_schedule() {
        // 200/s for 250 ms: slots 0..50 are due inside the window.
        let outcome = drive(
            instant_write(),
            4,
            &WSpec::Fixed(1),
            Pace::Open { rate: 200.0 },
            Stop::After(Duration::from_millis(250)),
        )
        .await;
        assert_eq!(outcome.latencies_us.len(), 50);
    }
}
