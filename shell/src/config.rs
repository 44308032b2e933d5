//! Command-line flags both binaries share, each with a `REPLOG_*` environment fallback.

use crate::topology::{QueueType, Topology};
use clap::Args;

/// Where the broker is and how this cluster's names and queues look on it.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// AMQP URL of the RabbitMQ broker. A `heartbeat` of 10 s is added when the URL sets none.
    /// The password is never logged.
    #[arg(
        long,
        env = "REPLOG_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

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
        Topology::new(self.namespace.clone())
    }
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

    #[test]
    fn namespaces_fit_queue_names() {
        assert!(parse_namespace("replog").is_ok());
        assert!(parse_namespace("test-5f1c.a_b").is_ok());
        assert!(parse_namespace("").is_err());
        assert!(parse_namespace("a b").is_err());
        assert!(parse_namespace(&"n".repeat(101)).is_err());
    }
}
