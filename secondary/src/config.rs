//! The secondary's flags, each with a `REPLOG_*` environment fallback.

use clap::Parser;
use replog_common::NodeId;
use replog_shell::config::{BrokerArgs, HttpArgs};
use replog_shell::http::ApiToken;
use std::net::SocketAddr;
use std::time::Duration;

/// Flags of the `secondary` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "secondary",
    version,
    about = "replog secondary: applies the master's entries in order, exactly once, and acks its position",
    // A flag given twice counts the last time, so wrappers (tests, scripts) may append.
    args_override_self = true
)]
pub struct SecondaryConfig {
    /// This secondary's id; it must be one of the master's `--secondaries`.
    #[arg(long, env = "REPLOG_ID")]
    pub id: NodeId,

    /// Address the HTTP API listens on. Port 0 picks a free port; the bound address is printed
    /// on stdout as `listening on http://ADDR`.
    #[arg(long, env = "REPLOG_LISTEN", default_value = "0.0.0.0:8001")]
    pub listen: SocketAddr,

    /// Broker connection and names.
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// The master's HTTP API, used to fetch entries the queue cannot provide (catch-up).
    #[arg(
        long,
        env = "REPLOG_MASTER_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub master_url: String,

    /// The master's broker user. When set, an entry counts only if the broker vouches that
    /// this user published it (its validated AMQP `user_id`); any other is rejected unread,
    /// logged and counted. Unset: every entry on the queue is believed (a trusted broker).
    #[arg(long, env = "REPLOG_MASTER_USER", value_parser = parse_broker_user)]
    pub master_user: Option<String>,

    /// Artificial latency: each entry becomes visible this many ms after it arrives (still in
    /// order), 0 to 86400000. Entries in flight are delayed side by side, so throughput is not
    /// capped.
    #[arg(long, env = "REPLOG_DELAY_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=DAY_MS))]
    pub delay_ms: u64,

    /// Failure injection: after storing an entry, nack it with requeue instead of acking it with
    /// this probability (0.0 to 1.0, below 1), as if the node crashed right after the write.
    #[arg(long, env = "REPLOG_FAIL_RATE", default_value_t = 0.0, value_parser = parse_fail_rate)]
    pub fail_rate: f64,

    /// How many unacknowledged deliveries the broker may push at once.
    #[arg(long, env = "REPLOG_PREFETCH", default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,

    /// How long a gap in the log may stay open before the missing entries are fetched from the
    /// master, 1 to 86400000 ms.
    #[arg(long, env = "REPLOG_CATCHUP_AFTER_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=DAY_MS))]
    pub catchup_after_ms: u64,

    /// Where the secondary keeps its log [default: data/<id>]. One process per directory.
    #[arg(long, env = "REPLOG_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// How often the secondary reports its position to the master when nothing changed: the
    /// heartbeat from which the master derives whether it is alive (keep it well below the
    /// master's --suspect-after-ms). `--ack-interval-ms` is a deprecated alias.
    #[arg(
        long,
        env = "REPLOG_HEARTBEAT_MS",
        alias = "ack-interval-ms",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=60_000)
    )]
    pub heartbeat_ms: u64,

    // -- HTTP access and bounds (see the README's "Security" section) --
    /// The API token (for this node's own reads) and the bounds of every HTTP connection.
    #[command(flatten)]
    pub http: HttpArgs,

    /// Token sent as `Authorization: Bearer` on catch-up fetches from the master
    /// [default: --api-token]. Never logged.
    #[arg(long, env = "REPLOG_MASTER_TOKEN", hide_env_values = true, value_parser = ApiToken::parse)]
    pub master_token: Option<ApiToken>,
}

fn parse_broker_user(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > 255 {
        Err("a broker user name is 1 to 255 characters".into())
    } else {
        Ok(raw.to_owned())
    }
}

/// The longest interval or timeout any flag accepts: a day, in ms.
pub const DAY_MS: u64 = 86_400_000;

fn parse_fail_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if (0.0..1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(
            "the fail rate must be at least 0 and below 1 (at 1 nothing would ever be acked)"
                .into(),
        )
    }
}

impl SecondaryConfig {
    /// The data directory, defaulting to `data/<id>`.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| std::path::Path::new("data").join(self.id.as_str()))
    }

    /// The artificial delay.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    /// The token for the master: its own, or else this node's API token.
    pub fn master_token(&self) -> Option<&ApiToken> {
        self.master_token.as_ref().or(self.http.api_token.as_ref())
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_required_and_checked() {
        assert!(SecondaryConfig::try_parse_from(["secondary"]).is_err());
        assert!(SecondaryConfig::try_parse_from(["secondary", "--id", "s.1"]).is_err());
        let config = SecondaryConfig::try_parse_from(["secondary", "--id", "s1"]).unwrap();
        assert_eq!(config.id.as_str(), "s1");
        assert_eq!(config.fail_rate, 0.0);
        assert_eq!(config.master_user, None);
        let config = SecondaryConfig::try_parse_from([
            "secondary",
            "--id",
            "s1",
            "--master-user",
            "replog-master",
        ])
        .unwrap();
        assert_eq!(config.master_user.as_deref(), Some("replog-master"));
        assert!(
            SecondaryConfig::try_parse_from(["secondary", "--id", "s1", "--master-user", ""])
                .is_err()
        );
    }

    #[test]
    fn heartbeat_is_bounded_and_keeps_its_old_name() {
        let parse = |args: &[&str]| {
            SecondaryConfig::try_parse_from(
                ["secondary", "--id", "s1"]
                    .iter()
                    .chain(args.iter())
                    .copied(),
            )
        };
        assert_eq!(parse(&[]).unwrap().heartbeat(), Duration::from_secs(1));
        assert_eq!(parse(&["--heartbeat-ms", "100"]).unwrap().heartbeat_ms, 100);
        assert_eq!(
            parse(&["--ack-interval-ms", "250"]).unwrap().heartbeat_ms,
            250
        );
        assert!(parse(&["--heartbeat-ms", "0"]).is_err());
        assert!(parse(&["--heartbeat-ms", "600000"]).is_err());
    }

    #[test]
    fn zero_and_absurd_intervals_are_refused_with_the_allowed_range() {
        for (flag, bad) in [
            ("--catchup-after-ms", "0"),
            ("--catchup-after-ms", "86400001"),
            ("--delay-ms", "86400001"),
            ("--prefetch", "0"),
            ("--heartbeat-ms", "0"),
            ("--ack-interval-ms", "0"),
            ("--shutdown-grace-ms", "0"),
        ] {
            let error = SecondaryConfig::try_parse_from(["secondary", "--id", "s1", flag, bad])
                .unwrap_err()
                .to_string();
            assert!(error.contains(".."), "{flag} {bad}: {error}");
        }
        let config = SecondaryConfig::try_parse_from([
            "secondary",
            "--id",
            "s1",
            "--api-token",
            "own-token-0123456789",
        ])
        .unwrap();
        assert_eq!(
            config.master_token().unwrap().expose(),
            "own-token-0123456789"
        );
    }

    #[test]
    fn fail_rate_must_leave_room_to_succeed() {
        for bad in ["1", "1.5", "-0.1", "x"] {
            assert!(
                SecondaryConfig::try_parse_from(["secondary", "--id", "s1", "--fail-rate", bad])
                    .is_err(),
                "{bad}"
            );
        }
        let config =
            SecondaryConfig::try_parse_from(["secondary", "--id", "s1", "--fail-rate", "0.3"])
                .unwrap();
        assert_eq!(config.fail_rate, 0.3);
    }
}
