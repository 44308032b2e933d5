//! replog through its HTTP API: a cluster of release nodes started here with fresh data
//! directories and a namespace of its own (deleted from the broker afterwards), or a running
//! master given by URL.
//!
//! Replication lag is sampled every 100 ms while the load runs: the master's `last_order`
//! against each secondary's `applied` from its own `GET /health` (or, for a running master whose
//! secondaries are not given, the `acked` positions the master reports). After the load, the time
//! until every secondary holds the master's last entry is the catch-up time.

use crate::args::{Pace, QueueKind, Stop, Target, WSpec};
use crate::driver::{drive, Outcome, WriteFn};
use crate::stats::LagEntries;
use futures_util::future::join_all;
use futures_util::FutureExt;
use replog_common::wire::http::WriteBody;
use replog_testkit::{Binaries, Cluster, ClusterSpec, NamespaceGuard, NodeClient};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the lag is sampled.
pub const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// How long the warm-up write, and the catch-up after the load, may take.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// What one replog cell needs to know.
#[derive(Debug, Clone)]
pub struct ReplogSpec {
    /// Started here, or running.
    pub target: Target,
    /// The broker of a started cluster.
    pub amqp_url: String,
    /// The queue type of a started cluster.
    pub queue_type: QueueKind,
    /// Secondaries of a started cluster.
    pub secondaries: usize,
    /// Entry size in bytes.
    pub size: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// The writes' write concern.
    pub w: WSpec,
    /// Closed or open loop.
    pub pace: Pace,
    /// When to stop.
    pub stop: Stop,
    /// Per-write HTTP timeout.
    pub timeout: Duration,
}

/// One secondary's lag behind the master.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SecondaryLag {
    /// The secondary's id, or its URL.
    pub name: String,
    /// Entries behind the master's `last_order`, sampled every 100 ms.
    pub entries: LagEntries,
    /// Where the positions came from: `health` (the secondary's own) or `master` (its `acked`).
    pub source: &'static str,
}

/// What a replog cell measured.
#[derive(Debug)]
pub struct ReplogOutcome {
    /// Throughput and latency, as the clients saw them.
    pub outcome: Outcome,
    /// Each secondary's lag.
    pub lag: Vec<SecondaryLag>,
    /// From the last answer until every secondary held the master's last entry, if it did
    /// within a minute.
    pub catch_up: Option<Duration>,
}

/// Why a replog cell could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplogError {
    /// The cluster did not start.
    #[error("starting the cluster: {0}")]
    Start(String),
    /// The first write did not succeed.
    #[error("the warm-up write failed: {0}")]
    WarmUp(String),
}

/// Runs one cell; with [`Target::Start`], on a fresh cluster of `binaries` that is torn down
/// (nodes killed, broker names and data directories deleted) afterwards.
pub async fn run(
    spec: &ReplogSpec,
    binaries: Option<&Binaries>,
) -> Result<ReplogOutcome, ReplogError> {
    match &spec.target {
        Target::Running {
            master,
            secondaries,
        } => {
            let secondaries = secondaries
                .iter()
                .map(|url| (url.clone(), url.clone()))
                .collect();
            measure(spec, master, secondaries, 1).await
        }
        Target::Start => {
            let binaries =
                binaries.ok_or_else(|| ReplogError::Start("no node binaries were built".into()))?;
            let dir = tempfile::Builder::new()
                .prefix("replog-bench-")
                .tempdir()
                .map_err(|error| ReplogError::Start(format!("temporary directory: {error}")))?;
            let mut cluster_spec =
                ClusterSpec::new(dir.path().to_path_buf(), spec.amqp_url.clone());
            cluster_spec.namespace = replog_testkit::unique_namespace("bench");
            cluster_spec.secondaries = (1..=spec.secondaries).map(|i| format!("s{i}")).collect();
            cluster_spec.queue_type = Some(spec.queue_type.name().to_owned());
            // Armed before the first node starts, dropped after the last one is dead.
            let guard = NamespaceGuard::new(
                &cluster_spec.namespace,
                &spec.amqp_url,
                &cluster_spec.secondaries,
            );
            let outcome = match Cluster::start(&cluster_spec, binaries).await {
                Ok(mut cluster) => {
                    let master = cluster.master.url().to_owned();
                    let secondaries = cluster
                        .secondaries
                        .iter()
                        .map(|node| (node.name().to_owned(), node.url().to_owned()))
                        .collect();
                    let warm_up_w = spec.secondaries as u64 + 1;
                    let outcome = measure(spec, &master, secondaries, warm_up_w).await;
                    for node in cluster.secondaries.iter_mut() {
                        let _ = node.kill9().await;
                    }
                    let _ = cluster.master.kill9().await;
                    outcome
                }
                Err(error) => Err(ReplogError::Start(format!(
                    "{error} (node logs in {})",
                    dir.path().display()
                ))),
            };
            // The guard's drop talks to the broker from a thread of its own and waits for it.
            let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
            if outcome.is_err() {
                // Keep the logs of a cluster that failed, for the error message's sake.
                let _ = dir.keep();
            }
            outcome
        }
    }
}

/// Loads `master`, sampling the lag of `secondaries` (`(name, url)`; none: the master's view).
async fn measure(
    spec: &ReplogSpec,
    master: &str,
    secondaries: Vec<(String, String)>,
    warm_up_w: u64,
) -> Result<ReplogOutcome, ReplogError> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(spec.clients)
        .timeout(spec.timeout)
        .build()
        .map_err(|error| ReplogError::Start(format!("HTTP client: {error}")))?;
    let url: Arc<str> = format!("{master}/messages").into();
    let content: Arc<str> = "x".repeat(spec.size).into();
    let write: WriteFn = {
        let (http, url, content) = (http.clone(), url.clone(), content.clone());
        Arc::new(move |w| {
            let (http, url, content) = (http.clone(), url.clone(), content.clone());
            async move { post(&http, &url, &content, w, None).await }.boxed()
        })
    };
    let warm_up = tokio::time::timeout(
        SETTLE_LIMIT,
        post(&http, &url, &content, warm_up_w, Some(SETTLE_LIMIT)),
    )
    .await
    .map_err(|_| ReplogError::WarmUp(format!("no answer within {SETTLE_LIMIT:?}")))?;
    warm_up.map_err(ReplogError::WarmUp)?;

    let health = NodeClient::new(master, Duration::from_secs(5));
    let secondary_clients: Vec<(String, NodeClient)> = secondaries
        .into_iter()
        .map(|(name, url)| (name, NodeClient::new(&url, Duration::from_secs(5))))
        .collect();
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample_lag(
        health.clone(),
        secondary_clients.clone(),
        stop.clone(),
    ));
    let outcome = drive(write, spec.clients, &spec.w, spec.pace, spec.stop).await;
    let finished = Instant::now();
    stop.cancel();
    let lag = sampler.await.unwrap_or_default();
    let catch_up = catch_up(&health, &secondary_clients)
        .await
        .then(|| finished.elapsed());
    Ok(ReplogOutcome {
        outcome,
        lag,
        catch_up,
    })
}

/// One `POST /messages`; `Ok` on 201 (or 200, a duplicate).
async fn post(
    http: &reqwest::Client,
    url: &str,
    content: &str,
    w: u64,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let body = WriteBody {
        content: content.to_owned(),
        w: Some(w),
        message_id: None,
        timeout_ms: timeout.map(|timeout| timeout.as_millis() as u64),
    };
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|error| format!("POST {url}: {error}"))?;
    let status = response.status();
    // Read the body to the end, so that the connection goes back to the pool.
    let text = response
        .text()
        .await
        .map_err(|error| format!("POST {url}: reading the answer: {error}"))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: {status}: {text}"))
    }
}

/// The positions at one instant: the master's last order and each secondary's.
async fn positions(
    master: &NodeClient,
    secondaries: &[(String, NodeClient)],
) -> Option<(u64, Vec<Option<u64>>)> {
    let health = master.master_health().await.ok()?;
    if secondaries.is_empty() {
        return Some((
            health.last_order,
            health
                .secondaries
                .iter()
                .map(|position| Some(position.acked))
                .collect(),
        ));
    }
    let applied =
        join_all(secondaries.iter().map(|(_, client)| async move {
            client.secondary_health().await.ok().map(|h| h.applied)
        }))
        .await;
    Some((health.last_order, applied))
}

/// Every 100 ms until `stop`: entries behind the master, per secondary.
async fn sample_lag(
    master: NodeClient,
    secondaries: Vec<(String, NodeClient)>,
    stop: CancellationToken,
) -> Vec<SecondaryLag> {
    let mut names: Vec<String> = secondaries.iter().map(|(name, _)| name.clone()).collect();
    let source = if secondaries.is_empty() {
        "master"
    } else {
        "health"
    };
    if secondaries.is_empty() {
        if let Ok(health) = master.master_health().await {
            names = health.secondaries.iter().map(|p| p.id.clone()).collect();
        }
    }
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    let mut tick = tokio::time::interval(LAG_SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some((last, applied)) = positions(&master, &secondaries).await {
            for (at, position) in applied.into_iter().enumerate() {
                if let (Some(position), Some(samples)) = (position, samples.get_mut(at)) {
                    samples.push(last.saturating_sub(position));
                }
            }
        }
    }
    names
        .into_iter()
        .zip(samples)
        .map(|(name, samples)| SecondaryLag {
            name,
            entries: LagEntries::of(&samples),
            source,
        })
        .collect()
}

/// Waits (up to a minute) until every secondary holds the master's last entry.
async fn catch_up(master: &NodeClient, secondaries: &[(String, NodeClient)]) -> bool {
    let deadline = Instant::now() + SETTLE_LIMIT;
    while Instant::now() < deadline {
        if let Some((last, applied)) = positions(master, secondaries).await {
            if applied
                .iter()
                .all(|position| position.is_some_and(|p| p >= last))
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
