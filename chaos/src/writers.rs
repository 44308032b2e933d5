//! The clients: concurrent writers that record every request and what came of it.
//!
//! Each write gets a fresh, client-chosen `message_id` and a content naming the run, the writer
//! and the sequence number, so outcomes are attributable and retries are safe. `w` is drawn from
//! `1..=3`; a share of writes carries a `timeout_ms`. A share of writes is retried with the same
//! id when an attempt leaves the outcome open, the way a careful client behaves; the rest are
//! left indeterminate on purpose, so that both kinds are checked.

use crate::history::{now_us, Attempt, AttemptResult, Op};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replog_testkit::{NodeClient, Write};
use std::time::{Duration, Instant};

/// The most attempts one write gets.
const MAX_ATTEMPTS: usize = 5;

/// What every writer shares.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// The master.
    pub client: NodeClient,
    /// Distinguishes this run's ids and contents from any other's.
    pub run_tag: String,
    /// When to stop starting writes (and retries).
    pub until: Instant,
    /// Share of writes with a `timeout_ms`.
    pub timeout_share: f64,
    /// Share of writes retried when their fate is open.
    pub retry_share: f64,
    /// Mean pause between writes.
    pub think: Duration,
    /// The largest `w` (the number of nodes).
    pub max_w: u64,
}

/// Writes until `settings.until`; returns every write it made.
pub async fn run(index: usize, seed: u64, settings: WriterSettings) -> Vec<Op> {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut ops = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < settings.until {
        seq += 1;
        let w = rng.random_range(1..=settings.max_w);
        let timeout_ms = rng
            .random_bool(settings.timeout_share.clamp(0.0, 1.0))
            .then(|| rng.random_range(200..=2000));
        let retry = rng.random_bool(settings.retry_share.clamp(0.0, 1.0));
        // Some padding, so entries differ in size.
        let padding = "x".repeat(rng.random_range(0..64));
        let message_id = format!("{}-w{index}-{seq}", settings.run_tag);
        let content = format!(
            "{} writer={index} seq={seq} w={w} {padding}",
            settings.run_tag
        );
        let write = Write {
            content: content.clone(),
            w: Some(w),
            message_id: Some(message_id.clone()),
            timeout_ms,
        };
        let mut op = Op {
            writer: index,
            seq,
            message_id,
            content,
            w,
            timeout_ms,
            attempts: Vec::new(),
        };
        loop {
            let sent_us = now_us();
            let result = AttemptResult::from_response(settings.client.post_message(&write).await);
            let done_us = now_us();
            let again = retry
                && result.is_retryable()
                && op.attempts.len() + 1 < MAX_ATTEMPTS
                && Instant::now() < settings.until;
            let refused = matches!(result, AttemptResult::NotSent { .. });
            op.attempts.push(Attempt {
                sent_us,
                done_us,
                result,
            });
            if !again {
                // A master that refuses connections is down: do not spin against it.
                if refused {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(100..=300))).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..=1000))).await;
        }
        ops.push(op);
        let think = settings.think.as_millis() as u64;
        if think > 0 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..=2 * think))).await;
        }
    }
    ops
}
