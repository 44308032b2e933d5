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
    #[arg(long, env = "REPLOG_NAMESPACE", default_value = "replog")]
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
