//! The master's flags, each with a `REPLOG_*` environment fallback.

use clap::builder::TypedValueParser as _;
use clap::Parser;
use replog_common::rules::dedup::DedupMode;
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
    /// wait for a secondary that is down or not started yet.
    #[arg(
        long,
        env = "REPLOG_SECONDARIES",
        value_delimiter = ',',
        default_value = "s1,s2"
    )]
    pub secondaries: Vec<NodeId>,

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

    /// Base URL of a secondary to refill the log from at start (`GET /messages?from=`): every
    /// entry it holds beyond this log's end is appended, after checking that it holds this
    /// log's last entry under the same message id. The way out of the divergence fence (a log
    /// shorter than its `confirmed` mark or than a secondary's position); see the README.
    #[arg(long, env = "REPLOG_REFILL_FROM")]
    pub refill_from: Option<String>,

    /// Where the master keeps its log (`log/`) and its last confirmed order. One process per
    /// directory: a second master on the same directory refuses to start.
    #[arg(long, env = "REPLOG_DATA_DIR", default_value = "data/master")]
    pub data_dir: std::path::PathBuf,
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
}
