//! The AMQP shell shared by both nodes: one pooled connection per node, channels opened with
//! backoff, and the declarations of the cluster's exchange and queues.
//!
//! deadpool-lapin serves here as the connection factory and health check: each node keeps a pool
//! of one connection; `open_channel` takes it (the pool's recycle check drops a connection that
//! is no longer `connected()` and dials a new one) and opens a channel on it. Lapin's own
//! auto-recovery is left off, so the two never fight: when a channel or connection fails, the
//! task that owns the channel notices, logs it, and calls [`Broker::open_channel_with_retry`].

use crate::topology::{QueueType, Topology};
use deadpool_lapin::{Config, Pool, PoolConfig, Runtime, Timeouts};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ConnectionProperties, ExchangeKind};
use replog_common::ids::NodeId;
use std::fmt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long opening and preparing a channel may take before the attempt counts as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The URL does not parse.
    #[error("invalid AMQP URL: {0}")]
    BadUrl(String),
    /// The pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    /// No connection could be had from the pool.
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    /// A publish was nacked or not confirmed in time.
    #[error("publish not confirmed: {0}")]
    Unconfirmed(String),
    /// The broker refused or dropped an operation.
    #[error(transparent)]
    Lapin(#[from] lapin::Error),
}

/// An AMQP URL whose `Display` hides the password.
#[derive(Clone)]
pub struct AmqpUrl {
    /// The full URL, password included: only ever handed to lapin.
    full: String,
    /// The same URL with the password replaced, for logs.
    redacted: String,
}

impl AmqpUrl {
    /// The heartbeat added to URLs that do not set one, so a dead peer is noticed within ~20 s.
    pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

    /// Parses a URL and adds `heartbeat=10` when it has no heartbeat.
    pub fn parse(raw: &str) -> Result<AmqpUrl, AmqpError> {
        let mut url = url::Url::parse(raw).map_err(|e| AmqpError::BadUrl(e.to_string()))?;
        if url.scheme() != "amqp" && url.scheme() != "amqps" {
            return Err(AmqpError::BadUrl(format!(
                "scheme must be amqp or amqps, not {}",
                url.scheme()
            )));
        }
        if !url.query_pairs().any(|(key, _)| key == "heartbeat") {
            url.query_pairs_mut()
                .append_pair("heartbeat", &Self::DEFAULT_HEARTBEAT_SECS.to_string());
        }
        let full = url.to_string();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        Ok(AmqpUrl {
            full,
            redacted: url.to_string(),
        })
    }

    /// The URL with its password, for lapin only.
    pub fn expose(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUrl({})", self.redacted)
    }
}

/// Exponential backoff between reconnect attempts: 100 ms doubling up to 5 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The delay the next failure waits.
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// A fresh backoff.
    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// A node's handle on the broker.
#[derive(Clone)]
pub struct Broker {
    /// A pool of one connection, re-dialled when it is found broken.
    pool: Pool,
    /// For logs.
    url: AmqpUrl,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker").field("url", &self.url).finish()
    }
}

impl Broker {
    /// A broker handle; connects lazily. `connection_name` is what the management UI shows.
    pub fn new(url: AmqpUrl, connection_name: String) -> Result<Broker, AmqpError> {
        let mut pool_config = PoolConfig::new(1);
        pool_config.timeouts = Timeouts {
            wait: Some(Duration::from_secs(10)),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        };
        let config = Config {
            url: Some(url.expose().to_owned()),
            pool: Some(pool_config),
        };
        let pool = config
            .create_pool(
                move || {
                    ConnectionProperties::default()
                        .with_connection_name(connection_name.clone().into())
                },
                Runtime::Tokio1,
            )
            .map_err(|e| AmqpError::Pool(e.to_string()))?;
        Ok(Broker { pool, url })
    }

    /// The broker's URL, password hidden.
    pub fn url(&self) -> &AmqpUrl {
        &self.url
    }

    /// Opens a channel on the node's connection, dialling a new connection if the pooled one
    /// is gone.
    pub async fn open_channel(&self) -> Result<Channel, AmqpError> {
        let connection = self
            .pool
            .get()
            .await
            .map_err(|e| AmqpError::Connect(e.to_string()))?;
        Ok(connection.create_channel().await?)
    }

    /// Runs `setup` on a fresh channel until it succeeds, backing off between attempts and
    /// logging each failure; `None` once `stop` is cancelled.
    pub async fn open_channel_with_retry<T, F, Fut>(
        &self,
        purpose: &str,
        stop: &CancellationToken,
        mut setup: F,
    ) -> Option<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, AmqpError>>,
    {
        let mut backoff = Backoff::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // A frozen broker accepts TCP but never answers: bound every attempt.
            let result = tokio::time::timeout(SETUP_TIMEOUT, async {
                setup(self.open_channel().await?).await
            });
            let outcome = tokio::select! {
                outcome = result => outcome.unwrap_or_else(|_| {
                    Err(AmqpError::Connect(format!("no answer within {SETUP_TIMEOUT:?}")))
                }),
                _ = stop.cancelled() => return None,
            };
            match outcome {
                Ok(value) => {
                    if attempt > 1 {
                        tracing::info!(purpose, attempt, broker = %self.url, "broker channel re-established");
                    }
                    return Some(value);
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(purpose, attempt, broker = %self.url, %error, ?delay, "broker unavailable, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return None,
                    }
                }
            }
        }
    }
}

/// Closes a channel, giving up after a few seconds: a blocked or frozen broker must not hold a
/// reconnect or a shutdown hostage.
pub async fn close_channel(channel: &Channel, reason: &str) {
    let close = channel.close(200, reason.into());
    if tokio::time::timeout(Duration::from_secs(5), close)
        .await
        .is_err()
    {
        tracing::warn!(reason, "the broker did not confirm a channel close in time");
    }
}

/// Declares the fanout exchange the master publishes entries to.
pub async fn declare_entries_exchange(
    channel: &Channel,
    topology: &Topology,
) -> Result<(), AmqpError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            topology.entries_exchange().into(),
            ExchangeKind::Fanout,
            options,
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares one secondary's durable queue and binds it to the entries exchange.
pub async fn declare_secondary_queue(
    channel: &Channel,
    topology: &Topology,
    id: &NodeId,
    queue_type: QueueType,
) -> Result<(), AmqpError> {
    declare_entries_exchange(channel, topology).await?;
    let queue = topology.secondary_queue(id);
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(queue.clone().into(), options, queue_type.arguments()).await.map_err(|error| {
        tracing::error!(
            %queue, ?queue_type, %error,
            "cannot declare the queue; if it exists with another type, delete it or pass the matching --queue-type"
        );
        error
    })?;
    channel
        .queue_bind(
            queue.into(),
            topology.entries_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Claims the role `who` (`master`, `secondary.s1`) in this namespace for this connection, by
/// declaring the exclusive queue `<ns>.lock.<who>`: the broker refuses a second connection the
/// same queue and deletes it when the holder's connection closes (a killed process included).
/// Exclusive consumers alone would not do: quorum queues accept several.
pub async fn claim_role(
    channel: &Channel,
    topology: &Topology,
    who: &str,
) -> Result<(), AmqpError> {
    let lock = format!("{}.lock.{who}", topology.namespace());
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel.queue_declare(lock.clone().into(), options, FieldTable::default()).await.map_err(|error| {
        tracing::error!(%lock, %error, "another process already runs as {who} in this namespace; waiting for it to go");
        AmqpError::from(error)
    })?;
    Ok(())
}

/// Declares the durable queue that carries secondaries' acks to the master.
pub async fn declare_acks_queue(channel: &Channel, topology: &Topology) -> Result<(), AmqpError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(
            topology.acks_queue().into(),
            options,
            QueueType::Classic.arguments(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let url = AmqpUrl::parse("amqp://guest:s3cret@localhost:5672/%2f").unwrap();
        assert!(!url.to_string().contains("s3cret"));
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(url.expose().contains("s3cret"));
    }

    #[test]
    fn amqps_urls_parse_for_a_tls_connection() {
        let url =
            AmqpUrl::parse("amqps://replog-master:s3cret@broker.example:5671/replog").unwrap();
        assert!(url.expose().starts_with("amqps://"), "{}", url.expose());
        assert!(!url.to_string().contains("s3cret"));
        let uri: lapin::uri::AMQPUri = url.expose().parse().unwrap();
        assert_eq!(uri.scheme, lapin::uri::AMQPScheme::AMQPS);
        assert_eq!(uri.authority.port, 5671);
        assert!(AmqpUrl::parse("http://broker.example").is_err());
    }

    #[test]
    fn a_heartbeat_is_added_unless_set() {
        let url = AmqpUrl::parse("amqp://guest:guest@localhost:5672/%2f").unwrap();
        assert!(url.expose().ends_with("?heartbeat=10"));
        let url = AmqpUrl::parse("amqp://localhost/%2f?heartbeat=30").unwrap();
        assert!(url.expose().ends_with("?heartbeat=30"));
        assert!(AmqpUrl::parse("http://localhost").is_err());
        assert!(AmqpUrl::parse("not a url").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
