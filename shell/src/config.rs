//! Command-line flags both binaries share, each with a `REPLOG_*` environment fallback.

use crate::amqp::BrokerUrls;
use crate::topology::{QueueType, Topology};
use clap::Args;

/// Where the broker is and how this cluster's names and queues look on it.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// AMQP URL of the RabbitMQ broker, or a comma-separated list of the URLs of one RabbitMQ
    /// cluster's nodes (`amqp://` or `amqps://`). With a list, each connection starts at a
    /// node picked from its name (so nodes spread) and moves on to the next node whenever it
    /// is lost. A `heartbeat` of 10 s is added to a URL that sets none. Passwords are never
    /// logged.
    #[arg(
        long,
        env = "REPLOG_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    #[arg(value_parser = parse_broker_urls)]
    pub amqp_url: BrokerUrls,

    /// Prefix of every exchange and queue name, so several clusters can share one broker.
    #[arg(long, env = "REPLOG_NAMESPACE", default_value = "replog", value_parser = parse_namespace)]
    pub namespace: String,

    /// Kind of queue that holds each secondary's entries. Master and secondaries must agree.
    #[arg(long, env = "REPLOG_QUEUE_TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
}

impl BrokerArgs {
    /// The broker names these flags describe.
    pub fn topology(&self) -> Topology {
        Topology::new(self.namespace.clone()).with_queue_type(self.queue_type)
    }
}

/// Refuses a malformed URL list at start, saying what is allowed. The parsed value's `Debug`
/// hides passwords, so printing the flags cannot leak one.
fn parse_broker_urls(raw: &str) -> Result<BrokerUrls, String> {
    BrokerUrls::parse(raw)
        .map_err(|error| format!("{error} (expected amqp[s]://user:password@host:port/vhost, or several separated by commas)"))
}

/// A namespace becomes part of every queue name, which AMQP caps at 255 bytes: keep it short
/// and readable.
fn parse_namespace(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 100
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("a namespace is 1 to 100 characters of letters, digits, '-', '_' or '.'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    #[test]
    fn amqp_url_takes_a_list_and_never_prints_a_password() {
        let flags = Flags::try_parse_from([
            "node",
            "--amqp-url",
            "amqp://u:s3cret@r1:5672/%2f,amqp://u:s3cret@r2:5673/%2f",
            "--queue-type",
            "quorum",
        ])
        .unwrap();
        assert_eq!(flags.broker.amqp_url.len(), 2);
        assert!(!format!("{flags:?}").contains("s3cret"));
        assert_eq!(flags.broker.topology().acks_queue_type(), QueueType::Quorum);
        let error = Flags::try_parse_from(["node", "--amqp-url", "amqp://r1,"]).unwrap_err();
        assert!(error.to_string().contains("comma"), "{error}");
    }

    #[test]
    fn namespaces_fit_queue_names() {
        assert!(parse_namespace("replog").is_ok());
        assert!(parse_namespace("test-5f1c.a_b").is_ok());
        assert!(parse_namespace("").is_err());
        assert!(parse_namespace("a b").is_err());
        assert!(parse_namespace(&"n".repeat(101)).is_err());
    }
}
