//! A cluster's names on a shared broker, and their removal.
//!
//! Every replog node derives its queue and exchange names from its `--namespace` (see
//! `replog_shell::topology`). Durable queues outlive the nodes that declared them, so a test on a
//! shared broker must delete its own when it ends or they pile up: [`NamespaceGuard`] does that
//! on drop. [`delete_queues_and_exchanges`] is also what a test uses to take one queue away on
//! purpose (an operator tidying up), and [`publish_raw_entry`] what it uses to put a message on
//! the entries exchange that no master sent (a forged or conflicting entry).

use replog_common::NodeId;
use replog_shell::topology::Topology;
use std::time::Duration;

/// How long a clean-up may take before it is abandoned.
const CLEANUP_LIMIT: Duration = Duration::from_secs(15);

/// Deletes every queue and exchange of one namespace from the broker when dropped. Arm it
/// before the first node starts, so that names go even if a node never comes up; drop it after
/// the nodes are dead, or a node could declare them again.
#[derive(Debug)]
pub struct NamespaceGuard {
    /// The namespace.
    namespace: String,
    /// Where to delete the names.
    amqp_url: String,
    /// The master's `--secondaries`: one queue each.
    secondaries: Vec<String>,
}

impl NamespaceGuard {
    /// Guards `namespace` on the broker at `amqp_url`, whose master lists `secondaries`.
    pub fn new(namespace: &str, amqp_url: &str, secondaries: &[String]) -> NamespaceGuard {
        NamespaceGuard {
            namespace: namespace.to_owned(),
            amqp_url: amqp_url.to_owned(),
            secondaries: secondaries.to_vec(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let topology = Topology::new(self.namespace.clone());
        let mut queues: Vec<String> = self
            .secondaries
            .iter()
            .filter_map(|id| NodeId::parse(id))
            .map(|id| topology.secondary_queue(&id))
            .collect();
        queues.push(topology.acks_queue());
        let exchanges = vec![topology.entries_exchange(), topology.acks_exchange()];
        let amqp_url = self.amqp_url.clone();
        // `Drop` cannot await, and may run inside a runtime: a thread with a runtime of its own.
        let work = move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(delete_queues_and_exchanges(&amqp_url, &queues, &exchanges))
        };
        let outcome = std::thread::spawn(work)
            .join()
            .unwrap_or_else(|_| Err("the clean-up thread panicked".to_owned()));
        if let Err(error) = outcome {
            eprintln!(
                "warning: could not delete namespace {} from the broker: {error}",
                self.namespace
            );
        }
    }
}

/// The queue of secondary `id` in `namespace`.
pub fn secondary_queue(namespace: &str, id: &str) -> Option<String> {
    let id = NodeId::parse(id)?;
    Some(Topology::new(namespace.to_owned()).secondary_queue(&id))
}

/// Deletes queues and exchanges over AMQP; a name that does not exist counts as deleted. Gives
/// up after 15 s. The error lists every name that could not be deleted.
pub async fn delete_queues_and_exchanges(
    amqp_url: &str,
    queues: &[String],
    exchanges: &[String],
) -> Result<(), String> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let cleanup = async {
        let connection = connect_any(amqp_url).await?;
        let mut failures = Vec::new();
        // A failed delete closes its channel, so each one gets a fresh channel.
        for queue in queues {
            let outcome = async {
                let channel = connection.create_channel().await?;
                channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await?;
                channel.close(200, "done".into()).await
            };
            if let Err(error) = outcome.await {
                failures.push(format!("queue {queue}: {error}"));
            }
        }
        for exchange in exchanges {
            let outcome = async {
                let channel = connection.create_channel().await?;
                channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await?;
                channel.close(200, "done".into()).await
            };
            if let Err(error) = outcome.await {
                failures.push(format!("exchange {exchange}: {error}"));
            }
        }
        let _ = connection.close(200, "done".into()).await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    };
    tokio::time::timeout(CLEANUP_LIMIT, cleanup)
        .await
        .map_err(|_| format!("timed out after {CLEANUP_LIMIT:?}"))?
}

/// How long a forged publish may take before it is abandoned.
const PUBLISH_LIMIT: Duration = Duration::from_secs(15);

/// Publishes `payload` on `namespace`'s entries exchange as a master would (persistent, JSON,
/// with publisher confirms), without being one: every secondary's queue gets it. For tests of
/// what a secondary does with an entry the master never numbered, or numbered differently.
pub async fn publish_raw_entry(
    amqp_url: &str,
    namespace: &str,
    payload: &[u8],
) -> Result<(), String> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::BasicProperties;
    let exchange = Topology::new(namespace.to_owned()).entries_exchange();
    let publish = async {
        let connection = connect_any(amqp_url).await?;
        let outcome = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    payload,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await?
                .await?;
            channel.close(200, "done".into()).await?;
            Ok::<_, lapin::Error>(confirm.is_ack())
        }
        .await;
        let _ = connection.close(200, "done".into()).await;
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("the broker nacked the publish to {exchange}")),
            Err(error) => Err(format!("publish to {exchange}: {error}")),
        }
    };
    tokio::time::timeout(PUBLISH_LIMIT, publish)
        .await
        .map_err(|_| format!("timed out after {PUBLISH_LIMIT:?}"))?
}

/// Connects to the first broker node that answers: `amqp_url` may list a broker cluster's
/// nodes, comma-separated.
async fn connect_any(amqp_url: &str) -> Result<lapin::Connection, String> {
    let mut connected = Err("no broker URL".to_owned());
    for url in amqp_url.split(',').map(str::trim) {
        let connect = lapin::Connection::connect(url, lapin::ConnectionProperties::default());
        match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) => connected = Err(format!("connect: {error}")),
            Err(_) => connected = Err("connect: no answer within 3 s".to_owned()),
        }
    }
    connected
}
