//! `chaos`: a Jepsen-style checker for replog.
//!
//! A run starts a private RabbitMQ node and a master with two secondaries (each with its own
//! data directory, on ports fixed for the whole run), then for `--seconds`:
//! - concurrent writers ([`writers`]) send writes with random `w` and, some, a `timeout_ms`,
//!   remembering every request and its outcome ([`history`]);
//! - the fault scheduler ([`faults`]) kills (SIGKILL), terminates (SIGTERM), freezes
//!   (SIGSTOP/SIGCONT) and restarts the master, the secondaries and the broker at random; with
//!   `--broker-nodes 3` the broker is a private three-node cluster ([`brokers`]) and broker
//!   faults hit one of its nodes at a time;
//! - a sampler ([`sampler`]) reads every node's `/health` a few times a second.
//!
//! Then it heals everything, waits for the nodes to converge, reads every node's log over HTTP
//! and its log file ([`evidence`]), and checks ([`checker`], where what is and is not proven is
//! spelled out). The [`report::Report`] lists writes, faults, evidence and violations.
//!
//! ```text
//! cargo run --release -p chaos -- --seconds 60           # one minute, random seed
//! cargo run --release -p chaos -- --seconds 600 --seed 7  # longer, replaying seed 7's choices
//! cargo run --release -p chaos -- --broker-nodes 3 --queue-type quorum  # on a RabbitMQ cluster
//! ```

#![warn(missing_docs)]

pub mod brokers;
pub mod checker;
pub mod config;
pub mod evidence;
pub mod faults;
pub mod history;
pub mod report;
pub mod sampler;
pub mod writers;

use brokers::Brokers;
use checker::{Check, Observations, Violation};
use config::ChaosConfig;
use evidence::NodeLog;
use faults::Targets;
use history::Op;
use replog_common::wire::EntryMessage;
use replog_testkit::binaries::BinaryError;
use replog_testkit::cluster::ClusterError;
use replog_testkit::{Binaries, BrokerError, Cluster, ClusterSpec, NodeClient, Profile};
use report::{Report, WriteStats};
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A run that could not be carried out (as opposed to one that found violations).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The node binaries cannot be had.
    #[error(transparent)]
    Binaries(#[from] BinaryError),
    /// The private broker did not start.
    #[error("the private broker did not start: {0}")]
    Broker(#[from] BrokerError),
    /// The cluster did not start.
    #[error("the cluster did not start: {0}")]
    Cluster(#[from] ClusterError),
    /// A file could not be written.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The private broker could not be brought back at the end (logs kept).
    #[error("the private broker could not be started again: {0}")]
    Heal(String),
    /// A task panicked.
    #[error("a task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the whole experiment and returns its report. Violations are in the report; an `Err`
/// means the experiment itself could not run.
pub async fn run(config: ChaosConfig) -> Result<Report, ChaosError> {
    let began = Instant::now();
    let seed = config.seed.unwrap_or_else(rand::random);
    tracing::info!(
        seed,
        seconds = config.seconds,
        writers = config.writers,
        "chaos run starting"
    );

    let binaries = match &config.bin_dir {
        Some(dir) => Binaries::in_dir(dir)?,
        None => tokio::task::spawn_blocking(|| Binaries::get(Profile::of_this_build())).await??,
    };
    let parent = config.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let run_dir = tempfile::Builder::new()
        .prefix("replog-chaos-")
        .tempdir_in(&parent)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let run_tag = format!("c{}", &id[..8]);
    tracing::info!(dir = %run_dir.path().display(), master = %binaries.master.display(), "starting the private broker");

    let broker_began = Instant::now();
    let broker = Brokers::start(config.broker_nodes, run_dir.path()).await?;
    let broker_start = broker_began.elapsed();
    let amqp_url = broker.amqp_url();
    tracing::info!(nodes = broker.len(), dir = %broker.dir().display(), took = ?broker_start, "private broker up; starting the cluster");

    let mut spec = ClusterSpec::new(run_dir.path().to_path_buf(), broker.amqp_url());
    spec.namespace = format!("chaos-{id}");
    spec.queue_type = Some(config.queue_type.as_arg().to_owned());
    spec.master_env = vec![("RUST_LOG".into(), evidence::log_filter())];
    spec.secondary_env = vec![("RUST_LOG".into(), evidence::log_filter())];
    let cluster = Cluster::start(&spec, &binaries).await?;
    let mut urls = vec![cluster.master.url().to_owned()];
    urls.extend(cluster.secondaries.iter().map(|n| n.url().to_owned()));
    let mut nodes = vec![cluster.master];
    nodes.extend(cluster.secondaries);
    let names: Vec<String> = nodes.iter().map(|n| n.name().to_owned()).collect();
    let log_paths: Vec<_> = nodes.iter().map(|n| n.log_path().to_path_buf()).collect();
    // Progress messages count from here, where writing starts.
    let targets = Arc::new(Targets::new(nodes, broker, Instant::now(), config.sabotage));

    let stop_sampling = CancellationToken::new();
    let sampler = tokio::spawn(sampler::run(urls.clone(), stop_sampling.clone()));
    let stop_watchdog = CancellationToken::new();
    let watchdog = tokio::spawn(targets.clone().watchdog(stop_watchdog.clone()));

    let until = Instant::now() + Duration::from_secs(config.seconds);
    tracing::info!(?urls, "cluster up; writing and injecting faults");
    let forger = (config.sabotage == faults::Sabotage::Diverge).then(|| {
        tokio::spawn(forge_conflicting_entry(
            urls.clone(),
            amqp_url.clone(),
            spec.namespace.clone(),
            until,
        ))
    });
    let faults = (!config.no_faults).then(|| {
        tokio::spawn(targets.clone().schedule(faults::Schedule {
            seed,
            mean: Duration::from_millis(config.fault_interval_ms.max(1)),
            until,
            broker_faults: !config.no_broker_faults,
            pause_scale: config.pause_scale,
        }))
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.client_timeout_ms))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("the HTTP client builds");
    let settings = writers::WriterSettings {
        client: NodeClient::with_client(&urls[0], http),
        run_tag: run_tag.clone(),
        until,
        timeout_share: config.timeout_share,
        retry_share: config.retry_share,
        think: Duration::from_millis(config.think_ms),
        max_w: names.len() as u64,
    };
    let writer_tasks: Vec<_> = (0..config.writers)
        .map(|index| tokio::spawn(writers::run(index, seed, settings.clone())))
        .collect();
    let mut ops: Vec<Op> = Vec::new();
    for task in writer_tasks {
        ops.extend(task.await?);
    }
    tracing::info!(
        writes = ops.len(),
        "writers done; waiting for the last faults to heal"
    );
    if let Some(faults) = faults {
        faults.await?;
    }
    if let Some(forger) = forger {
        forger.await?;
    }
    stop_watchdog.cancel();
    watchdog.await?;

    let healed_at = Instant::now();
    let mut heal_failure = None;
    for _ in 0..3 {
        match targets.heal().await {
            Ok(()) => {
                heal_failure = None;
                break;
            }
            Err(failure) => heal_failure = Some(failure),
        }
    }
    if let Some(broker) = heal_failure.as_ref().and_then(|f| f.broker.clone()) {
        for node in &targets.nodes {
            let _ = node.lock().await.kill9().await;
        }
        let _ = run_dir.keep();
        return Err(ChaosError::Heal(broker));
    }
    tracing::info!("everything healed; waiting for convergence");
    let clients: Vec<NodeClient> = urls
        .iter()
        .map(|url| NodeClient::new(url, Duration::from_secs(10)))
        .collect();
    let converged = converge(&clients, Duration::from_secs(config.converge_timeout_secs)).await;
    let converged_after = converged.as_ref().ok().map(|_| healed_at.elapsed());
    let final_logs: Vec<Vec<EntryMessage>> = match &converged {
        Ok(logs) => logs.clone(),
        Err(_) => {
            let mut logs = Vec::new();
            for client in &clients {
                logs.push(client.all_messages().await.unwrap_or_default());
            }
            logs
        }
    };
    stop_sampling.cancel();
    let samples = sampler.await?;

    let node_logs: Vec<NodeLog> = names
        .iter()
        .zip(&log_paths)
        .map(|(name, path)| {
            NodeLog::read(name, path).unwrap_or_else(|_| NodeLog {
                name: name.clone(),
                ..NodeLog::default()
            })
        })
        .collect();
    let mut checked = checker::check(Observations {
        ops: &ops,
        names: &names,
        final_logs: &final_logs,
        node_logs: &node_logs,
        samples: &samples,
    });
    if let Err(last_seen) = &converged {
        checked.violations.insert(
            0,
            Violation {
                check: Check::NoConvergence,
                detail: format!(
                    "within {} s after healing: {last_seen}",
                    config.converge_timeout_secs
                ),
            },
        );
    }
    for problem in heal_failure.map(|f| f.nodes).unwrap_or_default() {
        checked.violations.insert(
            0,
            Violation {
                check: Check::RestartFailed,
                detail: problem,
            },
        );
    }
    for crash in targets.crashes() {
        checked.violations.push(Violation {
            check: Check::NodeCrashed,
            detail: format!(
                "{} at {}: {}",
                crash.target,
                history::clock(crash.at_us),
                crash.detail
            ),
        });
    }

    // Tear down: the data is no longer needed, so no graceful stops.
    for node in &targets.nodes {
        let _ = node.lock().await.kill9().await;
    }
    targets.broker.lock().await.kill_all().await;

    let faults = targets.events();
    let final_log: &[EntryMessage] = final_logs.first().map(Vec::as_slice).unwrap_or(&[]);
    let mut report = Report {
        seed,
        seconds: config.seconds,
        writers: config.writers,
        queue_type: config.queue_type.as_arg().to_owned(),
        binaries: binaries
            .master
            .parent()
            .and_then(Path::file_name)
            .map_or_else(|| "?".to_owned(), |d| d.to_string_lossy().into_owned()),
        sabotage: (config.sabotage != faults::Sabotage::None)
            .then(|| format!("{:?}", config.sabotage)),
        run_dir: run_dir.path().to_path_buf(),
        kept: false,
        broker_start,
        writes: WriteStats::from_history(&ops, final_log),
        faults,
        converged_after,
        final_len: final_log.len(),
        evidence: checked.evidence,
        violations: checked.violations,
        elapsed: began.elapsed(),
    };
    write_artifacts(run_dir.path(), &ops, &report, &samples)?;
    if config.keep || !report.passed() {
        report.kept = true;
        let _ = run_dir.keep();
        // Refresh the saved summary: it now says the directory is kept.
        std::fs::write(report.run_dir.join("report.txt"), report.to_string())?;
    }
    Ok(report)
}

/// The `diverge` sabotage: once every secondary holds order 1, publishes an entry the master
/// never wrote at order 1 on the entries exchange, as the broker's user (retrying while the
/// broker is down), before `until`. Every secondary must refuse it and report `diverged`.
async fn forge_conflicting_entry(
    urls: Vec<String>,
    amqp_url: String,
    namespace: String,
    until: Instant,
) {
    let left = || until.saturating_duration_since(Instant::now());
    let secondaries: Vec<NodeClient> = urls[1..]
        .iter()
        .map(|url| NodeClient::new(url, Duration::from_secs(1)))
        .collect();
    let held = replog_testkit::wait_for(
        left(),
        Duration::from_millis(200),
        "every secondary holds order 1",
        || async {
            for client in &secondaries {
                let health = client.secondary_health().await.map_err(|e| e.to_string())?;
                if health.applied < 1 {
                    return Err(format!("{} applied={}", health.id, health.applied));
                }
            }
            Ok(())
        },
    )
    .await;
    if let Err(timeout) = held {
        tracing::warn!(%timeout, "sabotage: publishing the forged entry anyway");
    }
    let forged = EntryMessage {
        message_id: "sabotage-forged-1".into(),
        order: 1,
        content: "forged by the chaos checker".into(),
        master_incarnation: None,
    };
    let payload = serde_json::to_vec(&forged).expect("an entry encodes");
    let published = replog_testkit::wait_for(
        left().max(Duration::from_secs(1)),
        Duration::from_millis(500),
        "the forged entry is published",
        || replog_testkit::publish_raw_entry(&amqp_url, &namespace, &payload),
    )
    .await;
    match published {
        Ok(()) => tracing::warn!("sabotage: published a forged entry at order 1"),
        Err(timeout) => tracing::error!(%timeout, "sabotage: could not publish the forged entry"),
    }
}

/// Waits until every node reports the same position and nothing held back, and their logs
/// (read over HTTP) have that length; returns the logs, master first.
async fn converge(
    clients: &[NodeClient],
    deadline: Duration,
) -> Result<Vec<Vec<EntryMessage>>, String> {
    replog_testkit::wait_for(
        deadline,
        Duration::from_millis(250),
        "every node holds the master's log",
        || async {
            let master = clients[0]
                .master_health()
                .await
                .map_err(|e| format!("master: {e}"))?;
            let target = master.last_order;
            let mut seen = vec![format!(
                "master last_order={target} acked={:?}",
                master.secondaries
            )];
            let mut caught_up = true;
            for client in &clients[1..] {
                let health = client
                    .secondary_health()
                    .await
                    .map_err(|e| format!("{}: {e}", client.url()))?;
                caught_up &= health.applied == target && health.held_back == 0;
                seen.push(format!(
                    "{} applied={} held_back={}",
                    health.id, health.applied, health.held_back
                ));
            }
            if !caught_up {
                return Err(seen.join(", "));
            }
            let mut logs = Vec::new();
            for client in clients {
                let log = client
                    .all_messages()
                    .await
                    .map_err(|e| format!("{}: {e}", client.url()))?;
                if log.len() as u64 != target {
                    return Err(format!(
                        "{} lists {} entries, expected {target}",
                        client.url(),
                        log.len()
                    ));
                }
                logs.push(log);
            }
            Ok(logs)
        },
    )
    .await
    .map_err(|timeout| timeout.last_seen)
}

/// Saves the history, faults, samples and summary beside the node logs.
fn write_artifacts(
    dir: &Path,
    ops: &[Op],
    report: &Report,
    samples: &[sampler::Sample],
) -> std::io::Result<()> {
    let lines = |name: &str, items: Vec<serde_json::Value>| -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        for item in items {
            writeln!(file, "{item}")?;
        }
        file.flush()
    };
    let json = |value: serde_json::Result<serde_json::Value>| value.unwrap_or_default();
    lines(
        "history.jsonl",
        ops.iter()
            .map(|op| json(serde_json::to_value(op)))
            .collect(),
    )?;
    lines(
        "faults.jsonl",
        report
            .faults
            .iter()
            .map(|e| json(serde_json::to_value(e)))
            .collect(),
    )?;
    lines(
        "samples.jsonl",
        samples
            .iter()
            .map(|s| json(serde_json::to_value(s)))
            .collect(),
    )?;
    lines(
        "violations.jsonl",
        report
            .violations
            .iter()
            .map(|v| json(serde_json::to_value(v)))
            .collect(),
    )?;
    std::fs::write(dir.join("report.txt"), report.to_string())
}
