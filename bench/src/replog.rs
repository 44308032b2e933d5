//! replog through its HTTP API: a cluster of release nodes started here with fresh data
//! directories and a namespace of its own (deleted from the broker afterwards), or a running
//! master given by URL. With `--partitions N`, N such clusters (independent logs) side by side
//! on the broker, each write sent to the log [`partition_of`] picks for a key of its own.
//!
//! Replication lag is sampled every 100 ms while the load runs: the master's `last_order`
//! against each secondary's `applied` from its own `GET /health` (or, for a running master whose
//! secondaries are not given, the `acked` positions the master reports). After the load, the time
//! until every secondary holds the master's last entry is the catch-up time.
//!
//! With `memory_every`, the resident memory of every node of a started cluster is sampled
//! during the load ([`crate::memory`]).

use crate::args::{Pace, QueueKind, Stop, Target, WSpec};
use crate::cpu::{self, CpuReading, ProcessCpu};
use crate::driver::{drive, Outcome, WriteFn};
use crate::http::Endpoint;
use crate::memory::{self, NodeMemory};
use crate::stats::LagEntries;
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::FutureExt;
use replog_common::partition::partition_of;
use replog_common::wire::http::WriteBody;
use replog_testkit::{Binaries, Cluster, ClusterSpec, NamespaceGuard, NodeClient};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Secondaries of a started cluster (0: a master alone).
    pub secondaries: usize,
    /// Independent logs started side by side (1 for a running master).
    pub partitions: usize,
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
    /// How often a started cluster's nodes' resident memory is sampled; `None`: never.
    pub memory_every: Option<Duration>,
    /// Extra flags for every master started here.
    pub master_flags: Vec<String>,
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
    /// Answered writes per log (partition), in partition order.
    pub per_partition: Vec<u64>,
    /// Each node's resident memory over the load (empty unless sampled).
    pub memory: Vec<NodeMemory>,
    /// CPU time per answered write of the broker (when local), the load generator and each
    /// started node, over the load.
    pub cpu: Vec<ProcessCpu>,
}

/// One log under load: its master and the secondaries whose lag is sampled.
#[derive(Debug, Clone)]
struct Log {
    /// The master's base URL.
    master: String,
    /// `(name, url)` of each secondary; empty: the master's view of them.
    secondaries: Vec<(String, String)>,
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

/// Runs one cell; with [`Target::Start`], on fresh clusters of `binaries` (one per partition)
/// that are torn down (nodes killed, broker names and data directories deleted) afterwards.
pub async fn run(
    spec: &ReplogSpec,
    binaries: Option<&Binaries>,
) -> Result<ReplogOutcome, ReplogError> {
    match &spec.target {
        Target::Running {
            master,
            secondaries,
        } => {
            let log = Log {
                master: master.clone(),
                secondaries: secondaries
                    .iter()
                    .map(|url| (url.clone(), url.clone()))
                    .collect(),
            };
            measure(spec, vec![log], 1, Vec::new()).await
        }
        Target::Start => {
            let binaries =
                binaries.ok_or_else(|| ReplogError::Start("no node binaries were built".into()))?;
            let dir = tempfile::Builder::new()
                .prefix("replog-bench-")
                .tempdir()
                .map_err(|error| ReplogError::Start(format!("temporary directory: {error}")))?;
            let mut guards = Vec::new();
            let mut clusters = Vec::new();
            let mut started = Ok(());
            for partition in 0..spec.partitions {
                let cluster_dir = if spec.partitions == 1 {
                    dir.path().to_path_buf()
                } else {
                    dir.path().join(format!("p{partition}"))
                };
                if let Err(error) = std::fs::create_dir_all(&cluster_dir) {
                    started = Err(ReplogError::Start(format!(
                        "{}: {error}",
                        cluster_dir.display()
                    )));
                    break;
                }
                let mut cluster_spec = ClusterSpec::new(cluster_dir, spec.amqp_url.clone());
                cluster_spec.namespace = replog_testkit::unique_namespace("bench");
                cluster_spec.secondaries =
                    (1..=spec.secondaries).map(|i| format!("s{i}")).collect();
                cluster_spec.queue_type = Some(spec.queue_type.name().to_owned());
                cluster_spec
                    .master_args
                    .extend(spec.master_flags.iter().cloned());
                // Armed before the first node starts, dropped after the last one is dead.
                guards.push(NamespaceGuard::new(
                    &cluster_spec.namespace,
                    &spec.amqp_url,
                    &cluster_spec.secondaries,
                ));
                match Cluster::start(&cluster_spec, binaries).await {
                    Ok(cluster) => clusters.push(cluster),
                    Err(error) => {
                        started = Err(ReplogError::Start(format!(
                            "{error} (node logs in {})",
                            dir.path().display()
                        )));
                        break;
                    }
                }
            }
            let outcome = match started {
                Ok(()) => {
                    let logs = clusters
                        .iter()
                        .enumerate()
                        .map(|(partition, cluster)| Log {
                            master: cluster.master.url().to_owned(),
                            secondaries: cluster
                                .secondaries
                                .iter()
                                .map(|node| {
                                    let name = if spec.partitions == 1 {
                                        node.name().to_owned()
                                    } else {
                                        format!("p{partition}/{}", node.name())
                                    };
                                    (name, node.url().to_owned())
                                })
                                .collect(),
                        })
                        .collect();
                    let warm_up_w = spec.secondaries as u64 + 1;
                    measure(spec, logs, warm_up_w, processes(&clusters, spec.partitions)).await
                }
                Err(error) => Err(error),
            };
            for cluster in clusters.iter_mut() {
                for node in cluster.secondaries.iter_mut() {
                    let _ = node.kill9().await;
                }
                let _ = cluster.master.kill9().await;
            }
            // The guards' drop talks to the broker from a thread of its own and waits for it.
            let _ = tokio::task::spawn_blocking(move || drop(guards)).await;
            if outcome.is_err() {
                // Keep the logs of a cluster that failed, for the error message's sake.
                let _ = dir.keep();
            }
            outcome
        }
    }
}

/// `(name, pid)` of every running node of `clusters`: `master`, `s1`, ... (`p0/master`, ...
/// with more than one partition).
fn processes(clusters: &[Cluster], partitions: usize) -> Vec<(String, u32)> {
    let mut processes = Vec::new();
    for (partition, cluster) in clusters.iter().enumerate() {
        for node in std::iter::once(&cluster.master).chain(&cluster.secondaries) {
            let name = if partitions == 1 {
                node.name().to_owned()
            } else {
                format!("p{partition}/{}", node.name())
            };
            if let Some(pid) = node.pid() {
                processes.push((name, pid));
            }
        }
    }
    processes
}

/// Loads the masters of `logs`, each write to the one its key's partition names, sampling
/// every log's lag, and with `spec.memory_every` the resident memory of `processes`
/// (`(name, pid)`).
async fn measure(
    spec: &ReplogSpec,
    logs: Vec<Log>,
    warm_up_w: u64,
    processes: Vec<(String, u32)>,
) -> Result<ReplogOutcome, ReplogError> {
    // The warm-up and the load go through the lean client, one pool per master.
    let urls: Vec<String> = logs
        .iter()
        .map(|log| format!("{}/messages", log.master))
        .collect();
    let endpoints: Arc<[Endpoint]> = urls
        .iter()
        .map(|url| Endpoint::new(url))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ReplogError::Start(error.to_string()))?
        .into();
    let answered: Arc<[AtomicU64]> = logs.iter().map(|_| AtomicU64::new(0)).collect();
    let keys = Arc::new(AtomicU64::new(0));
    let content = "x".repeat(spec.size);
    let bodies: Vec<(u64, Bytes)> = w_values(&spec.w)
        .into_iter()
        .map(|w| (w, write_body(&content, w, None)))
        .collect();
    let timeout = spec.timeout;
    let write: WriteFn = {
        let (endpoints, answered, keys) = (endpoints.clone(), answered.clone(), keys.clone());
        let content: Arc<str> = content.clone().into();
        Arc::new(move |w| {
            let (endpoints, answered) = (endpoints.clone(), answered.clone());
            // A key of its own per write; with one log the hash is skipped.
            let partition = if endpoints.len() == 1 {
                0
            } else {
                let key = format!("key-{}", keys.fetch_add(1, Ordering::Relaxed));
                partition_of(key, endpoints.len())
            };
            // The same bytes for every write of this `w`: a reference count, not a copy.
            let body = match bodies.iter().find(|(of, _)| *of == w) {
                Some((_, body)) => body.clone(),
                None => write_body(&content, w, None),
            };
            async move {
                let endpoint = &endpoints[partition];
                match tokio::time::timeout(timeout, endpoint.post(body)).await {
                    Ok(answer) => answer.map_err(|error| error.to_string())?,
                    Err(_) => {
                        return Err(format!(
                            "POST {}: no answer within {timeout:?}",
                            endpoint.url()
                        ))
                    }
                }
                answered[partition].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            .boxed()
        })
    };
    let warm_up_body = write_body(&content, warm_up_w, Some(SETTLE_LIMIT));
    for endpoint in endpoints.iter() {
        let warm_up = tokio::time::timeout(SETTLE_LIMIT, endpoint.post(warm_up_body.clone()))
            .await
            .map_err(|_| ReplogError::WarmUp(format!("no answer within {SETTLE_LIMIT:?}")))?;
        warm_up.map_err(|error| ReplogError::WarmUp(error.to_string()))?;
    }

    let watched: Vec<(NodeClient, Vec<(String, NodeClient)>)> = logs
        .into_iter()
        .map(|log| {
            let master = NodeClient::new(&log.master, Duration::from_secs(5));
            let secondaries = log
                .secondaries
                .into_iter()
                .map(|(name, url)| (name, NodeClient::new(&url, Duration::from_secs(5))))
                .collect();
            (master, secondaries)
        })
        .collect();
    let stop = CancellationToken::new();
    let samplers: Vec<_> = watched
        .iter()
        .map(|(master, secondaries)| {
            tokio::spawn(sample_lag(
                master.clone(),
                secondaries.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut measured = cpu::own_processes(&spec.amqp_url);
    measured.extend(processes.iter().cloned());
    let cpu_before = CpuReading::take(&measured);
    // From the first write on: warm-up and growth are measured over the load itself.
    let memory = spec
        .memory_every
        .filter(|_| !processes.is_empty())
        .map(|every| tokio::spawn(memory::sample(processes, every, stop.clone())));
    let outcome = drive(write, spec.clients, &spec.w, spec.pace, spec.stop).await;
    let cpu = cpu_before.since(outcome.latencies_us.len() as u64);
    let finished = Instant::now();
    stop.cancel();
    let memory = match memory {
        Some(sampler) => sampler.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut lag = Vec::new();
    for sampler in samplers {
        lag.extend(sampler.await.unwrap_or_default());
    }
    let mut caught_up = true;
    for (master, secondaries) in &watched {
        caught_up &= catch_up(master, secondaries).await;
    }
    Ok(ReplogOutcome {
        outcome,
        lag,
        catch_up: caught_up.then(|| finished.elapsed()),
        per_partition: answered
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect(),
        memory,
        cpu,
    })
}

/// Every `w` a write of the cell may ask for (`all` unresolved asks for 1).
fn w_values(w: &WSpec) -> Vec<u64> {
    match w {
        WSpec::Fixed(w) => vec![*w],
        WSpec::All => vec![1],
        WSpec::Mix(weights) => weights.iter().map(|(w, _)| *w).collect(),
    }
}

/// The JSON body of a write of `content` with write concern `w`.
fn write_body(content: &str, w: u64, timeout: Option<Duration>) -> Bytes {
    let body = WriteBody {
        content: content.to_owned(),
        w: Some(w),
        message_id: None,
        timeout_ms: timeout.map(|timeout| timeout.as_millis() as u64),
    };
    // A struct of strings and numbers always serialises.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_per_w_is_the_json_the_master_reads() {
        assert_eq!(
            write_body("xx", 3, None),
            Bytes::from_static(br#"{"content":"xx","w":3}"#)
        );
        assert_eq!(
            write_body("x", 1, Some(Duration::from_secs(60))),
            Bytes::from_static(br#"{"content":"x","w":1,"timeout_ms":60000}"#)
        );
        assert_eq!(w_values(&WSpec::Fixed(2)), vec![2]);
        assert_eq!(w_values(&WSpec::Mix(vec![(1, 0.5), (3, 0.5)])), vec![1, 3]);
    }
}
