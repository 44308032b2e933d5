//! Looking at every node's `GET /health` a few times a second for the whole run, so that the
//! checker can compare positions over time (see [`crate::checker`]).

use crate::history::now_us;
use replog_testkit::{NodeClient, SecondaryHealth};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often each node is looked at.
const EVERY: Duration = Duration::from_millis(200);

/// How long a look may take: a frozen node simply yields no sample.
const TIMEOUT: Duration = Duration::from_secs(1);

/// One answered `GET /health`.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// The node's index (0 = master).
    pub node: usize,
    /// When the request was sent (µs since the epoch).
    pub sent_us: u64,
    /// When the answer came.
    pub done_us: u64,
    /// The master's `last_order` or a secondary's `applied`: the end of its stored log.
    pub position: u64,
    /// The master only: each secondary's acknowledged position.
    pub acked: Vec<(String, u64)>,
    /// A secondary only: its `/health` said `diverged`.
    pub diverged: bool,
}

/// Samples every node until `stop`; returns what it saw.
pub async fn run(urls: Vec<String>, stop: CancellationToken) -> Vec<Sample> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> =
        urls.into_iter()
            .enumerate()
            .map(|(node, url)| {
                let samples = samples.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let client = NodeClient::new(&url, TIMEOUT);
                    let mut ticker = tokio::time::interval(EVERY);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = ticker.tick() => {}
                            _ = stop.cancelled() => return,
                        }
                        let sent_us = now_us();
                        let sample = if node == 0 {
                            client.master_health().await.map(|h| {
                                let acked =
                                    h.secondaries.into_iter().map(|s| (s.id, s.acked)).collect();
                                (h.last_order, acked, false)
                            })
                        } else {
                            client.secondary_health().await.map(|h| {
                                (h.applied, Vec::new(), h.status == SecondaryHealth::DIVERGED)
                            })
                        };
                        if let Ok((position, acked, diverged)) = sample {
                            let sample = Sample {
                                node,
                                sent_us,
                                done_us: now_us(),
                                position,
                                acked,
                                diverged,
                            };
                            samples
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(sample);
                        }
                    }
                })
            })
            .collect();
    for task in tasks {
        let _ = task.await;
    }
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner());
    samples.clone()
}
