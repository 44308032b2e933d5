//! The master's flags, each with a `REPLOG_*` environment fallback.

use clap::builder::TypedValueParser as _;
use clap::Parser;
use replog_common::rules::dedup::DedupMode;
use replog_common::rules::membership::{HealthPolicy, QuorumRule};
use replog_common::NodeId;
use replog_shell::config::{BrokerArgs, HttpArgs};
use replog_shell::http::ApiToken;
use std::net::SocketAddr;
use std::time::Duration;

/// Flags of the `master` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "master",
    version,
    about = "replog master: takes writes over HTTP, sequences them and replicates them through RabbitMQ",
    // A flag given twice counts the last time, so wrappers (tests, scripts) may append.
    args_override_self = true
)]
pub struct MasterConfig {
    /// Address the HTTP API listens on. Port 0 picks a free port; the bound address is printed
    /// on stdout as `listening on http://ADDR`.
    #[arg(long, env = "REPLOG_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,

    /// Broker connection and names.
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// The secondaries, comma-separated: `ID` or `ID=BROKER_USER`. Their queues are declared
    /// at start, so entries wait for a secondary that is down or not started yet. With broker
    /// users (`s1=replog-s1,s2=replog-s2`, all or none) a report counts only when the broker
    /// vouches that this secondary's user sent it (its validated AMQP `user_id`); without them
    /// every report on the acks queue is believed (a trusted broker). An empty list (`""`) runs
    /// a master alone: every write is `w=1`, durable on the master only (a baseline to measure
    /// against).
    // `std::vec::Vec` spelled out: clap then parses the whole value with `parse_secondaries`
    // instead of one item per comma, so that `""` can mean "none" (an item cannot be empty).
    // Given twice, the last one counts, like every other flag.
    #[arg(
        long,
        env = "REPLOG_SECONDARIES",
        default_value = "s1,s2",
        value_parser = parse_secondaries
    )]
    pub secondaries: std::vec::Vec<SecondarySpec>,

    /// Write concern of a write that sets no `w` [default: all nodes, 1 + secondaries].
    #[arg(long, env = "REPLOG_DEFAULT_W")]
    pub default_w: Option<usize>,

    /// How long a write waits for its write concern when it sets no `timeout_ms`
    /// [default: for ever].
    #[arg(long, env = "REPLOG_WC_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..=DAY_MS))]
    pub wc_timeout_ms: Option<u64>,

    /// Largest accepted request body, in bytes (1 KiB to 64 MiB); larger ones get 413.
    #[arg(long, env = "REPLOG_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=64 << 20))]
    pub max_body_bytes: usize,

    /// What makes two writes the same entry: `id` (the message_id) or `content`.
    #[arg(long, env = "REPLOG_DEDUP", default_value_t = DedupMode::Id, value_parser = clap::builder::PossibleValuesParser::new(["id", "content"]).map(|raw| raw.parse::<DedupMode>().expect("a listed value")))]
    pub dedup: DedupMode,

    /// How long the broker may take to confirm a publish before the master publishes the
    /// unconfirmed entries again on a fresh channel.
    #[arg(long, env = "REPLOG_CONFIRM_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=DAY_MS))]
    pub confirm_timeout_ms: u64,

    /// Most entries in one entries message: what is stored and not yet published goes out in
    /// runs of up to this many (1 publishes one message per entry); a run this long also ends
    /// the linger (`--linger-ms`).
    #[arg(long, env = "REPLOG_RUN_ENTRIES", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub run_entries: u64,

    /// Most bytes of ids and contents in one entries message (a larger single entry still goes,
    /// alone).
    #[arg(long, env = "REPLOG_RUN_BYTES", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub run_bytes: u64,

    /// Most entries messages awaiting the broker's confirm at once. While they wait, entries
    /// stored meanwhile gather into the next message, so under load the broker handles fewer,
    /// larger messages; a write that finds fewer in flight goes out at once.
    #[arg(long, env = "REPLOG_PUBLISHES_IN_FLIGHT", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub publishes_in_flight: u64,

    /// How long stored entries that no write waits for (`w=1` writes) may gather before they
    /// are published, in milliseconds, like Kafka's `linger.ms`: under load the broker and the
    /// secondaries then handle one message and one fsync per full run (`--run-entries`). A
    /// write with `w >= 2` publishes everything up to it at once, and so does a full run or a
    /// stop, so the linger only ever adds to the secondaries' lag, never to an answer. 0
    /// publishes whatever is stored at once. Keep it far below the secondaries' 3 s stuck check
    /// (a secondary then fetches from the master what its queue did not bring); the master warns
    /// at start above 1000 ms.
    #[arg(long, env = "REPLOG_LINGER_MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub linger_ms: u64,

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
    #[arg(long, env = "REPLOG_SUSPECT_AFTER_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=DAY_MS))]
    pub suspect_after_ms: u64,

    /// A secondary not heard from for this long is `unhealthy` and no longer counts toward the
    /// quorum. Also how long a secondary never heard from since the master started stays
    /// `suspected`. Must be more than --suspect-after-ms.
    #[arg(long, env = "REPLOG_UNHEALTHY_AFTER_MS", default_value_t = 10000, value_parser = clap::value_parser!(u64).range(1..=DAY_MS))]
    pub unhealthy_after_ms: u64,

    /// Where the master keeps its log (`log/`) and its last confirmed order. One process per
    /// directory: a second master on the same directory refuses to start.
    #[arg(long, env = "REPLOG_DATA_DIR", default_value = "data/master")]
    pub data_dir: std::path::PathBuf,

    // -- HTTP access and bounds (see the README's "Security" section) --
    /// The API token and the bounds of every HTTP connection.
    #[command(flatten)]
    pub http: HttpArgs,

    /// Token sent as `Authorization: Bearer` to the `--refill-from` node
    /// [default: --api-token]. Never logged.
    #[arg(long, env = "REPLOG_REFILL_TOKEN", hide_env_values = true, value_parser = ApiToken::parse)]
    pub refill_token: Option<ApiToken>,
}

/// One entry of `--secondaries`: a secondary's id and, optionally, the broker user it
/// publishes its reports as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondarySpec {
    /// The secondary's id.
    pub id: NodeId,
    /// The broker user whose reports for this secondary count; `None` believes any.
    pub user: Option<String>,
}

impl std::str::FromStr for SecondarySpec {
    type Err = String;

    fn from_str(raw: &str) -> Result<SecondarySpec, String> {
        let (id, user) = match raw.split_once('=') {
            Some((id, user)) => (id, Some(user)),
            None => (raw, None),
        };
        let id = NodeId::parse(id).ok_or_else(|| {
            format!("{id:?} is not a secondary id (1 to 64 letters, digits, '-' or '_')")
        })?;
        let user = match user {
            None => None,
            Some(user) if !user.is_empty() && user.len() <= 255 && !user.contains('=') => {
                Some(user.to_owned())
            }
            Some(user) => {
                return Err(format!(
                    "{user:?} is not a broker user name (1 to 255 characters, no '=' or ',')"
                ))
            }
        };
        Ok(SecondarySpec { id, user })
    }
}

/// The longest interval or timeout any flag accepts: a day, in ms.
pub const DAY_MS: u64 = 86_400_000;

/// Parses `--secondaries`: comma-separated `ID` or `ID=USER` items, or nothing at all (a master
/// alone). An empty item (`s1,,s2`, `s1,`) is refused.
fn parse_secondaries(text: &str) -> Result<Vec<SecondarySpec>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',').map(|item| item.trim().parse()).collect()
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
    /// Some secondaries name a broker user and others do not.
    #[error("--secondaries must name a broker user for every secondary (ID=USER) or for none; {0} has none")]
    MixedUsers(NodeId),
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
    /// The ids of `--secondaries`, in order.
    pub fn secondary_ids(&self) -> Vec<NodeId> {
        self.secondaries
            .iter()
            .map(|spec| spec.id.clone())
            .collect()
    }

    /// The broker user of each secondary, when `--secondaries` names them: only reports the
    /// broker validated as sent by that user count. `None`: the broker is trusted.
    pub fn secondary_users(&self) -> Option<std::collections::HashMap<NodeId, String>> {
        self.secondaries
            .iter()
            .map(|spec| Some((spec.id.clone(), spec.user.clone()?)))
            .collect()
    }

    /// The largest meaningful `w`.
    pub fn max_w(&self) -> usize {
        1 + self.secondaries.len()
    }

    /// Checks what clap cannot, and resolves the default `w`.
    pub fn validate(&self) -> Result<usize, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for spec in &self.secondaries {
            if !seen.insert(&spec.id) {
                return Err(ConfigError::DuplicateSecondary(spec.id.clone()));
            }
        }
        if self.secondaries.iter().any(|spec| spec.user.is_some()) {
            if let Some(bare) = self.secondaries.iter().find(|spec| spec.user.is_none()) {
                return Err(ConfigError::MixedUsers(bare.id.clone()));
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

    /// The token for `--refill-from`: its own, or else the API token.
    pub fn refill_token(&self) -> Option<&ApiToken> {
        self.refill_token.as_ref().or(self.http.api_token.as_ref())
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
    fn secondaries_may_name_their_broker_users() {
        let plain = parse(&["--secondaries", "s1,s2"]);
        assert_eq!(plain.secondary_users(), None);
        assert_eq!(plain.secondary_ids()[1].as_str(), "s2");
        let users = parse(&["--secondaries", "s1=replog-s1,s2=replog-s2"]);
        assert!(users.validate().is_ok());
        let users = users.secondary_users().expect("users are named");
        assert_eq!(users[&NodeId::parse("s2").unwrap()], "replog-s2");
        let mixed = parse(&["--secondaries", "s1=replog-s1,s2"]).validate();
        assert!(matches!(mixed, Err(ConfigError::MixedUsers(id)) if id.as_str() == "s2"));
        for bad in ["s1=", "s.1=u", "s1=a=b"] {
            assert!(
                MasterConfig::try_parse_from(["master", "--secondaries", bad]).is_err(),
                "{bad}"
            );
        }
        // A single-valued flag given twice counts the last time (wrappers append flags).
        let twice = parse(&["--amqp-url", "amqp://a@h/v", "--amqp-url", "amqp://b@h/v"]);
        assert!(twice.broker.amqp_url.urls()[0]
            .expose()
            .starts_with("amqp://b@h/v"));
        let twice = parse(&["--secondaries", "a", "--secondaries", "b=u,c=v"]);
        assert_eq!(twice.secondary_ids().len(), 2);
        assert!(twice.validate().is_ok());
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
        let ids: Vec<&str> = listed
            .secondaries
            .iter()
            .map(|spec| spec.id.as_str())
            .collect();
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
        assert!(MasterConfig::try_parse_from(["master", "--suspect-after-ms", "0"]).is_err());
        assert!(parse(&["--suspect-after-ms", "10000"]).validate().is_err());
        let short = parse(&["--suspect-after-ms", "100", "--unhealthy-after-ms", "300"]);
        assert!(short.validate().is_ok());
        assert_eq!(short.health_tick(), Duration::from_millis(25));
    }

    #[test]
    fn zero_and_absurd_durations_and_sizes_are_refused_with_the_allowed_range() {
        for (flag, bad) in [
            ("--wc-timeout-ms", "0"),
            ("--wc-timeout-ms", "86400001"),
            ("--confirm-timeout-ms", "0"),
            ("--confirm-timeout-ms", "86400001"),
            ("--suspect-after-ms", "0"),
            ("--unhealthy-after-ms", "0"),
            ("--unhealthy-after-ms", "99999999999"),
            ("--max-body-bytes", "0"),
            ("--max-body-bytes", "1000000000000"),
            ("--http-header-timeout-ms", "0"),
        ] {
            let error = MasterConfig::try_parse_from(["master", flag, bad])
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(flag) && error.contains("..="),
                "{flag} {bad}: {error}"
            );
        }
        assert_eq!(
            parse(&["--wc-timeout-ms", "86400000"]).wc_timeout(),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn the_refill_token_defaults_to_the_api_token() {
        assert!(parse(&[]).refill_token().is_none());
        let api = parse(&["--api-token", "api-token-0123456789"]);
        assert_eq!(api.refill_token().unwrap().expose(), "api-token-0123456789");
        let both = parse(&[
            "--api-token",
            "api-token-0123456789",
            "--refill-token",
            "refill-token-0123456789",
        ]);
        assert_eq!(
            both.refill_token().unwrap().expose(),
            "refill-token-0123456789"
        );
    }
}
