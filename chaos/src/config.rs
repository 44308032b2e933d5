//! The checker's flags.

use crate::faults::Sabotage;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// The kind of queue the cluster uses, passed to every node as `--queue-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueKind {
    /// Classic durable queues.
    Classic,
    /// Raft-replicated quorum queues (a single member on a one-node broker).
    Quorum,
}

impl QueueKind {
    /// The value of `--queue-type`.
    pub fn as_arg(self) -> &'static str {
        match self {
            QueueKind::Classic => "classic",
            QueueKind::Quorum => "quorum",
        }
    }
}

/// Flags of the `chaos` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chaos",
    version,
    about = "Jepsen-style checker for replog: writes under crashes, freezes and restarts of every node and of a private broker, then checks the healed logs against every recorded outcome",
    long_about = None
)]
pub struct ChaosConfig {
    /// How long writers write and faults are injected, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,

    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,

    /// Seed of every random choice (w, timeouts, retries, fault kinds, targets and pauses).
    /// Printed at the start; the same seed replays the same choices, not the same timing
    /// [default: random].
    #[arg(long)]
    pub seed: Option<u64>,

    /// Mean time between the starts of two faults, in ms (exponentially distributed). Faults on
    /// different targets overlap; a target has one fault at a time.
    #[arg(long, default_value_t = 2500)]
    pub fault_interval_ms: u64,

    /// Multiplies every fault's pause (node down 0.2-3 s, frozen 0.3-4 s, broker down 0-2 s
    /// plus its restart, broker frozen 0.5-7 s). From about 6 on, freezes outlast the 10 s AMQP
    /// heartbeats, so the broker drops frozen nodes' connections (and vice versa).
    #[arg(long, default_value_t = 1.0)]
    pub pause_scale: f64,

    /// Leave the broker alone: faults only on master and secondaries.
    #[arg(long)]
    pub no_broker_faults: bool,

    /// No faults at all: a baseline run of the same checks.
    #[arg(long)]
    pub no_faults: bool,

    /// Keep the run directory (node logs, broker log, history) even when the run passes. It is
    /// always kept when a run fails.
    #[arg(long)]
    pub keep: bool,

    /// Queue type of the cluster.
    #[arg(long, value_enum, default_value_t = QueueKind::Classic)]
    pub queue_type: QueueKind,

    /// RabbitMQ nodes: 1 (a private node) or 3 (a private cluster, every replog node given all
    /// three URLs; use `--queue-type quorum` so queues survive a node). Broker faults then hit
    /// one node at a time, so the cluster never loses its majority for longer than one pause.
    #[arg(long, default_value_t = 1, value_parser = parse_broker_nodes)]
    pub broker_nodes: usize,

    /// Directory holding the `master` and `secondary` binaries [default: built with the
    /// checker's own profile: `cargo run --release -p chaos` drives release nodes].
    #[arg(long, env = "REPLOG_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// Where the run directory is created [default: the system's temporary directory].
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// How long a client waits for an answer before counting the write as indeterminate, in ms.
    #[arg(long, default_value_t = 5000)]
    pub client_timeout_ms: u64,

    /// Share of writes that carry a `timeout_ms` (200 to 2000 ms), from 0 to 1.
    #[arg(long, default_value_t = 0.3)]
    pub timeout_share: f64,

    /// Share of writes a client retries with the same message_id, up to 4 more times, when an
    /// attempt leaves its fate open (no answer, 5xx, refused connection, 504), from 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    pub retry_share: f64,

    /// Mean pause of each writer between two writes, in ms: keeps two cores for the nodes and
    /// the broker.
    #[arg(long, default_value_t = 20)]
    pub think_ms: u64,

    /// Self-test of the checker: damage no correct system survives, so the run must report
    /// violations. `wipe-secondary` deletes a secondary's data directory whenever it is killed,
    /// `wipe-master` the master's; `diverge` publishes an entry the master never wrote at an
    /// order the secondaries hold, which they must refuse and report as `diverged`.
    #[arg(long, value_enum, default_value_t = Sabotage::None)]
    pub sabotage: Sabotage,

    /// How long the healed cluster may take to converge before that counts as a violation, in
    /// seconds.
    #[arg(long, default_value_t = 120)]
    pub converge_timeout_secs: u64,
}

/// One node, or the three of [`replog_testkit::BrokerCluster`].
fn parse_broker_nodes(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(1) => Ok(1),
        Ok(n) if n == replog_testkit::CLUSTER_SIZE => Ok(n),
        _ => Err(format!(
            "1 (one broker node) or {} (a cluster)",
            replog_testkit::CLUSTER_SIZE
        )),
    }
}

impl ChaosConfig {
    /// The defaults, as if no flag were given.
    pub fn defaults() -> ChaosConfig {
        ChaosConfig::parse_from(["chaos"])
    }
}
