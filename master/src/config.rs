//! The master's flags, each with a `REPLOG_*` environment fallback.

use clap::builder::TypedValueParser as _;
use clap::Parser;
use replog_common::rules::dedup::DedupMode;
use replog_common::rules::membership::{HealthPolicy, QuorumRule};
use replog_common::NodeId;
use replog_shell::config::BrokerArgs;
use std::net::SocketAddr;
use std::time::Duration;

/// Flags of the `master` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "master",
    version,
    about = "replog master: takes writes over HTTP, sequences them and replicates them through RabbitMQ"
)]
pub struct MasterConfig {
    /// Address the HTTP API listens on. Port 0 picks a free port; the bound address is printed
    /// on stdout as `listening on http://ADDR`.
    #[arg(long, env = "REPLOG_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,

    /// Broker connection and names.
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// Ids of the secondaries, comma-separated. Their queues are declared at start, so entries
    /// wait for a secondary that is down or not started yet. An empty list (`""`) runs a master
    /// alone: every write is `w=1`, durable on the master only (a baseline to measure against).
    // `std::vec::Vec` spelled out: clap then parses the whole value with `parse_secondaries`
    // instead of one item per comma, so that `""` can mean "none" (an item cannot be empty).
    #[arg(
        long,
        env = "REPLOG_SECONDARIES",
        default_value = "s1,s2",
        value_parser = parse_secondaries
    )]
    pub secondaries: std::vec::Vec<NodeId>,

    /// Write concern of a write that sets no `w` [default: all nodes, 1 + secondaries].
    #[arg(long, env = "REPLOG_DEFAULT_W")]
    pub default_w: Option<usize>,

    /// How long a write waits for its write concern when it sets no `timeout_ms`
    /// [default: for ever].
    #[arg(long, env = "REPLOG_WC_TIMEOUT_MS")]
    pub wc_timeout_ms: Option<u64>,

    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(long, env = "REPLOG_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// What makes two writes the same entry: `id` (the message_id) or `content`.
    #[arg(long, env = "REPLOG_DEDUP", default_value_t = DedupMode::Id, value_parser = clap::builder::PossibleValuesParser::new(["id", "content"]).map(|raw| raw.parse::<DedupMode>().expect("a listed value")))]
    pub dedup: DedupMode,

    /// How long the broker may take to confirm a publish before the master publishes the
    /// unconfirmed entries again on a fresh channel.
    #[arg(long, env = "REPLOG_CONFIRM_TIMEOUT_MS", default_value_t = 5000)]
    pub confirm_timeout_ms: u64,

    /// Most entries in one entries message: whatever is stored and not yet published goes out
    /// at once, in runs of up to this many (1 publishes one message per entry).
    #[arg(long, env = "REPLOG_RUN_ENTRIES", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub run_entries: u64,

    /// Most bytes of ids and contents in one entries message (a larger single entry still goes,
    /// alone).
    #[arg(long, env = "REPLOG_RUN_BYTES", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub run_bytes: u64,

    /// Base URL of a secondary to refill the log from at start (`GET /messages?from=`): every
    /// entry it holds beyond this log's end is appended, after checking that it holds this
    /// log's last entry under the same message id. The way out of the divergence fence (a log
    /// shorter than its `confirmed` mark or than a secondary's position); see the README.
    #[arg(long, env = "REPLOG_REFILL_FROM")]
    pub refill_from: Option<String>,

    /// How many nodes (the master included) must be healthy for the master to take writes:
    /// `majority` (of master + secondaries), a number of nodes, or `off`. Without that many the
    /// master is read-only: writes get 503 with a `Retry-After`, reads keep working.
    #[arg(long, env = "REPLOG_QUORUM", default_value = "majority")]
    pub quorum: QuorumRule,

    /// A secondary not heard from (no ack, no heartbeat) for this long is `suspected`; it
    /// still counts toward the quorum.
    #[arg(long, env = "REPLOG_SUSPECT_AFTER_MS", default_value_t = 3000)]
    pub suspect_after_ms: u64,

    /// A secondary not heard from for this long is `unhealthy` and no longer counts toward the
    /// quorum. Also how long a secondary never heard from since the master started stays
    /// `suspected`. Must be more than --suspect-after-ms.
    #[arg(long, env = "REPLOG_UNHEALTHY_AFTER_MS", default_value_t = 10000)]
    pub unhealthy_after_ms: u64,

    /// Where the master keeps its log (`log/`) and its last confirmed order. One process per
    /// directory: a second master on the same directory refuses to start.
    #[arg(long, env = "REPLOG_DATA_DIR", default_value = "data/master")]
    pub data_dir: std::path::PathBuf,
}

/// `--secondaries`: ids separated by commas, or nothing at all for a master alone. An empty
/// item between commas (`s1,,s2`) is refused: it is a typo, not a request for fewer nodes.
fn parse_secondaries(text: &str) -> Result<Vec<NodeId>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',').map(|id| id.trim().parse()).collect()
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--default-w` outside `1..=1 + secondaries`.
    #[error("--default-w must be from 1 to {max} (the master plus {secondaries} secondaries), got {got}")]
    DefaultW {
        /// The largest allowed.
        max: usize,
        /// How many secondaries are configured.
        secondaries: usize,
        /// What was given.
        got: usize,
    },
    /// The same secondary named twice.
    #[error("--secondaries names {0} twice")]
    DuplicateSecondary(NodeId),
    /// `--quorum N` with more nodes than the cluster has.
    #[error("--quorum must be `majority`, `off` or a number of nodes from 1 to {nodes} (the master plus {secondaries} secondaries), got {got}")]
    Quorum {
        /// Master plus secondaries.
        nodes: usize,
        /// How many secondaries are configured.
        secondaries: usize,
        /// What was given.
        got: usize,
    },
    /// A zero silence threshold, or thresholds in the wrong order.
    #[error("--suspect-after-ms ({suspect} ms) must be above 0 and below --unhealthy-after-ms ({unhealthy} ms)")]
    HealthThresholds {
        /// `--suspect-after-ms`.
        suspect: u64,
        /// `--unhealthy-after-ms`.
        unhealthy: u64,
    },
}

impl MasterConfig {
    /// The largest meaningful `w`.
    pub fn max_w(&self) -> usize {
        1 + self.secondaries.len()
    }

    /// Checks what clap cannot, and resolves the default `w`.
    pub fn validate(&self) -> Result<usize, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for id in &self.secondaries {
            if !seen.insert(id) {
                return Err(ConfigError::DuplicateSecondary(id.clone()));
            }
        }
        let max = self.max_w();
        if let QuorumRule::Nodes(got) = self.quorum {
            if got > max {
                return Err(ConfigError::Quorum {
                    nodes: max,
                    secondaries: self.secondaries.len(),
                    got,
                });
            }
        }
        if self.suspect_after_ms == 0 || self.suspect_after_ms >= self.unhealthy_after_ms {
            return Err(ConfigError::HealthThresholds {
                suspect: self.suspect_after_ms,
                unhealthy: self.unhealthy_after_ms,
            });
        }
        match self.default_w {
            None => Ok(max),
            Some(w) if (1..=max).contains(&w) => Ok(w),
            Some(got) => Err(ConfigError::DefaultW {
                max,
                secondaries: self.secondaries.len(),
                got,
            }),
        }
    }

    /// The silence thresholds of `--suspect-after-ms` and `--unhealthy-after-ms`.
    pub fn health_policy(&self) -> HealthPolicy {
        HealthPolicy {
            suspect_after: Duration::from_millis(self.suspect_after_ms),
            unhealthy_after: Duration::from_millis(self.unhealthy_after_ms),
        }
    }

    /// How often the master re-derives its secondaries' states: a quarter of
    /// `--suspect-after-ms`, at most every 250 ms, so a state changes within that of its
    /// threshold.
    pub fn health_tick(&self) -> Duration {
        Duration::from_millis((self.suspect_after_ms / 4).clamp(1, 250))
    }

    /// The default write-concern timeout, if any.
    pub fn wc_timeout(&self) -> Option<Duration> {
        self.wc_timeout_ms.map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> MasterConfig {
        MasterConfig::try_parse_from(std::iter::once("master").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_block_on_every_node() {
        let config = parse(&[]);
        assert_eq!(config.secondaries.len(), 2);
        assert_eq!(config.validate().unwrap(), 3);
        assert_eq!(config.max_body_bytes, 1 << 20);
    }

    #[test]
    fn default_w_must_fit_the_cluster() {
        assert_eq!(parse(&["--default-w", "1"]).validate().unwrap(), 1);
        assert!(parse(&["--default-w", "4"]).validate().is_err());
        assert!(parse(&["--default-w", "0"]).validate().is_err());
        assert!(parse(&["--secondaries", "a,a"]).validate().is_err());
        assert!(MasterConfig::try_parse_from(["master", "--secondaries", "a.b"]).is_err());
    }

    #[test]
    fn an_empty_list_of_secondaries_is_a_master_alone() {
        let alone = parse(&["--secondaries", ""]);
        assert!(alone.secondaries.is_empty());
        assert_eq!(alone.max_w(), 1);
        assert_eq!(alone.validate().unwrap(), 1);
        assert!(parse(&["--secondaries", "", "--default-w", "2"])
            .validate()
            .is_err());
        assert!(parse(&["--secondaries", "", "--quorum", "1"])
            .validate()
            .is_ok());
        assert!(parse(&["--secondaries", "", "--quorum", "2"])
            .validate()
            .is_err());
        let listed = parse(&["--secondaries", "s1, s2,s3"]);
        let ids: Vec<&str> = listed.secondaries.iter().map(NodeId::as_str).collect();
        assert_eq!(ids, ["s1", "s2", "s3"]);
        assert!(MasterConfig::try_parse_from(["master", "--secondaries", "s1,,s2"]).is_err());
        assert!(MasterConfig::try_parse_from(["master", "--secondaries", "s1,"]).is_err());
    }

    #[test]
    fn quorum_and_health_thresholds_are_checked() {
        let defaults = parse(&[]);
        assert_eq!(defaults.quorum, QuorumRule::Majority);
        assert_eq!(defaults.health_policy(), HealthPolicy::default());
        assert_eq!(defaults.health_tick(), Duration::from_millis(250));
        assert_eq!(parse(&["--quorum", "off"]).quorum, QuorumRule::Off);
        assert!(parse(&["--quorum", "3"]).validate().is_ok());
        let too_many = parse(&["--quorum", "4"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(too_many.contains("from 1 to 3"), "{too_many}");
        assert!(MasterConfig::try_parse_from(["master", "--quorum", "0"]).is_err());
        assert!(MasterConfig::try_parse_from(["master", "--quorum", "most"]).is_err());
        assert!(parse(&["--suspect-after-ms", "0"]).validate().is_err());
        assert!(parse(&["--suspect-after-ms", "10000"]).validate().is_err());
        let short = parse(&["--suspect-after-ms", "100", "--unhealthy-after-ms", "300"]);
        assert!(short.validate().is_ok());
        assert_eq!(short.health_tick(), Duration::from_millis(25));
    }
}
