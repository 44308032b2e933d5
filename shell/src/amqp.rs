//! The AMQP shell shared by both nodes: one pooled connection per node, channels opened with
//! backoff, and the declarations of the cluster's exchange and queues.
//!
//! A node is given one broker URL or a comma-separated list of the URLs of one RabbitMQ
//! cluster's nodes ([`BrokerUrls`]). deadpool-lapin serves as the connection factory and
//! health check: each [`Broker`] keeps a pool of one connection (deadpool's pool, the one
//! deadpool-lapin is built on), made by a manager ([`NodeRotator`]) that has deadpool-lapin's
//! manager dial the cluster's nodes in turn ([`Rotation`]): it starts
//! at an offset derived from the connection's name, so the nodes of a replog cluster spread over
//! the broker nodes, and every new connection goes to the next broker node in the list, so a
//! connection lost with its broker node is re-made on another one. `open_channel` takes the
//! pooled connection (the recycle check drops one that is no longer `connected()`, or that a
//! failed setup marked as suspect, e.g. on a frozen broker node) and opens a channel on it.
//! Lapin's own auto-recovery is left off, so the two never fight: when a channel or connection
//! fails, the task that owns the channel notices, logs it, and calls
//! [`Broker::open_channel_with_retry`].

use crate::topology::{QueueType, Topology};
use deadpool::managed;
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, ConnectionProperties, ExchangeKind};
use replog_common::ids::NodeId;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long opening and preparing a channel may take before the attempt counts as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The broker nodes a replog node may connect to: the URLs of one RabbitMQ cluster's nodes (or
/// of a single broker), in the order given. `Display` and `Debug` show them with passwords
/// hidden.
#[derive(Clone)]
pub struct BrokerUrls {
    /// At least one URL, none twice.
    urls: Vec<AmqpUrl>,
}

impl BrokerUrls {
    /// Parses one URL or a comma-separated list of them (spaces around commas allowed); each
    /// gets `heartbeat=10` when it sets none. Empty items and duplicates are refused.
    pub fn parse(raw: &str) -> Result<BrokerUrls, AmqpError> {
        let mut urls: Vec<AmqpUrl> = Vec::new();
        for (index, item) in raw.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                return Err(AmqpError::BadUrl(format!(
                    "broker URL #{} of the list is empty; give one URL or a comma-separated list",
                    index + 1
                )));
            }
            let url = AmqpUrl::parse(item).map_err(|error| {
                AmqpError::BadUrl(format!("broker URL #{}: {error}", index + 1))
            })?;
            if urls.iter().any(|seen| seen.expose() == url.expose()) {
                return Err(AmqpError::BadUrl(format!(
                    "broker URL #{} ({url}) is listed twice",
                    index + 1
                )));
            }
            urls.push(url);
        }
        Ok(BrokerUrls { urls })
    }

    /// The URLs, in the order given.
    pub fn urls(&self) -> &[AmqpUrl] {
        &self.urls
    }

    /// How many broker nodes are listed (at least one).
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Always false: a list holds at least one URL.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }
}

impl From<AmqpUrl> for BrokerUrls {
    fn from(url: AmqpUrl) -> Self {
        BrokerUrls { urls: vec![url] }
    }
}

impl fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, url) in self.urls.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            fmt::Display::fmt(url, f)?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.urls.iter()).finish()
    }
}

/// The order one connection tries the broker nodes in: from an offset derived from the
/// connection's name (so replog nodes given the same list spread over the broker nodes, and a
/// node goes back to the same broker node after a restart), then one step further at every new
/// connection, wrapping around. Pure: no I/O, no clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// How many broker nodes there are (at least one).
    len: usize,
    /// The index the next connection dials.
    next: usize,
}

impl Rotation {
    /// A rotation over `len` broker nodes (at least one) for the connection called `name`.
    pub fn new(len: usize, name: &str) -> Rotation {
        let len = len.max(1);
        // FNV-1a: stable across Rust versions and runs, unlike `DefaultHasher`.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Rotation {
            len,
            next: (hash % len as u64) as usize,
        }
    }

    /// The index the next connection dials, without moving on.
    pub fn peek(&self) -> usize {
        self.next
    }

    /// The index to dial now; the next call gives the one after it.
    pub fn advance(&mut self) -> usize {
        let index = self.next;
        self.next = (index + 1) % self.len;
        index
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

/// The connection factory behind a [`Broker`]'s pool: each new connection goes to the next
/// broker node of the [`Rotation`], and a connection is recycled only while it is connected and
/// no failed setup marked it as suspect.
pub struct NodeRotator {
    /// The broker nodes.
    urls: BrokerUrls,
    /// What the broker's connection list shows.
    connection_name: String,
    /// Which node the next connection dials.
    rotation: Mutex<Rotation>,
    /// The index of the node the current connection goes to, for logging a loss once.
    current: Mutex<Option<usize>>,
    /// Set when a channel could not be set up on the pooled connection (a frozen broker node
    /// keeps its TCP connections open and answers nothing): the next recycle check drops the
    /// connection so the next attempt dials another node.
    suspect: AtomicBool,
}

impl fmt::Debug for NodeRotator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRotator")
            .field("urls", &self.urls)
            .field("connection_name", &self.connection_name)
            .finish_non_exhaustive()
    }
}

impl NodeRotator {
    /// A factory for the connection called `connection_name`, starting at its offset.
    pub fn new(urls: BrokerUrls, connection_name: String) -> NodeRotator {
        let rotation = Rotation::new(urls.len(), &connection_name);
        NodeRotator {
            urls,
            connection_name,
            rotation: Mutex::new(rotation),
            current: Mutex::new(None),
            suspect: AtomicBool::new(false),
        }
    }

    /// Marks the pooled connection as suspect: the next `open_channel` dials the next node.
    fn mark_suspect(&self) {
        self.suspect.store(true, Ordering::SeqCst);
    }
}

impl managed::Manager for NodeRotator {
    type Type = lapin::Connection;
    type Error = lapin::Error;

    async fn create(&self) -> Result<lapin::Connection, lapin::Error> {
        let index = lock(&self.rotation).advance();
        let url = &self.urls.urls()[index];
        let name = self.connection_name.clone();
        // deadpool-lapin's own manager dials the chosen node (on this tokio runtime); this
        // manager only chooses which node, and when to give a connection up.
        let node = deadpool_lapin::Manager::new(
            url.expose(),
            move || ConnectionProperties::default().with_connection_name(name.clone().into()),
            async_rs::Runtime::tokio_current(),
        );
        match managed::Manager::create(&node).await {
            Ok(connection) => {
                self.suspect.store(false, Ordering::SeqCst);
                *lock(&self.current) = Some(index);
                tracing::info!(
                    connection = %self.connection_name,
                    broker = %url,
                    broker_node = index + 1,
                    broker_nodes = self.urls.len(),
                    "connected to broker node"
                );
                Ok(connection)
            }
            Err(error) => {
                tracing::warn!(
                    connection = %self.connection_name,
                    broker = %url,
                    broker_node = index + 1,
                    broker_nodes = self.urls.len(),
                    %error,
                    "broker node did not answer; the next attempt tries the next one"
                );
                Err(error)
            }
        }
    }

    async fn recycle(
        &self,
        connection: &mut lapin::Connection,
        _: &managed::Metrics,
    ) -> managed::RecycleResult<lapin::Error> {
        let suspect = self.suspect.swap(false, Ordering::SeqCst);
        if connection.status().connected() && !suspect {
            return Ok(());
        }
        let lost = lock(&self.current).take();
        let broker = lost.map(|index| self.urls.urls()[index].to_string());
        let why = if suspect {
            "a channel could not be set up on it"
        } else {
            "it is no longer connected"
        };
        tracing::warn!(
            connection = %self.connection_name,
            broker = broker.as_deref().unwrap_or("?"),
            next_broker = %self.urls.urls()[lock(&self.rotation).peek()],
            why,
            "dropping the broker connection; moving on to the next broker node"
        );
        if suspect {
            // Channels left on it (another task's consumer) would keep their unacked
            // deliveries; close it, but briefly: a frozen node never answers the close.
            let close = connection.close(320, "replog moves to another broker node".into());
            let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
        }
        Err(managed::RecycleError::message(why))
    }
}

/// Locks a mutex that no code path can poison (nothing panics while holding it).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A node's handle on the broker.
#[derive(Clone)]
pub struct Broker {
    /// A pool of one connection, re-dialled (to the next broker node) when found broken.
    pool: managed::Pool<NodeRotator>,
    /// For logs.
    urls: BrokerUrls,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker").field("urls", &self.urls).finish()
    }
}

impl Broker {
    /// A broker handle; connects lazily. `connection_name` is what the management UI shows,
    /// and picks the broker node it starts at.
    pub fn new(urls: impl Into<BrokerUrls>, connection_name: String) -> Result<Broker, AmqpError> {
        let urls = urls.into();
        let mut pool_config = managed::PoolConfig::new(1);
        pool_config.timeouts = managed::Timeouts {
            wait: Some(Duration::from_secs(10)),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        };
        let pool = managed::Pool::builder(NodeRotator::new(urls.clone(), connection_name))
            .config(pool_config)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| AmqpError::Pool(e.to_string()))?;
        crate::metrics::broker_created();
        Ok(Broker { pool, urls })
    }

    /// The broker nodes' URLs, passwords hidden.
    pub fn url(&self) -> &BrokerUrls {
        &self.urls
    }

    /// Opens a channel on the node's connection, dialling a new connection (to the next broker
    /// node) if the pooled one is gone.
    pub async fn open_channel(&self) -> Result<Channel, AmqpError> {
        let connection = self
            .pool
            .get()
            .await
            .map_err(|e| AmqpError::Connect(e.to_string()))?;
        if managed::Object::metrics(&connection).recycle_count == 0 {
            crate::metrics::broker_connection_opened(); // fresh until recycled once
        }
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
                        tracing::info!(purpose, attempt, broker = %self.urls, "broker channel re-established");
                    }
                    return Some(value);
                }
                Err(error) => {
                    // Whatever failed, the next attempt gets a fresh connection to the next
                    // broker node: the pooled one may sit on a frozen or failing node.
                    self.pool.manager().mark_suspect();
                    let delay = backoff.next_delay();
                    tracing::warn!(purpose, attempt, broker = %self.urls, %error, ?delay, "broker unavailable, retrying");
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

/// Declares one secondary's durable queue and binds it to the entries exchange, declaring the
/// exchange too.
pub async fn declare_secondary_queue(
    channel: &Channel,
    topology: &Topology,
    id: &NodeId,
    queue_type: QueueType,
) -> Result<(), AmqpError> {
    declare_entries_exchange(channel, topology).await?;
    bind_secondary_queue(channel, topology, id, queue_type).await
}

/// Declares one secondary's durable queue and binds it to the (existing) entries exchange.
async fn bind_secondary_queue(
    channel: &Channel,
    topology: &Topology,
    id: &NodeId,
    queue_type: QueueType,
) -> Result<(), AmqpError> {
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

/// The broker user a URL logs in as: its user name, percent-decoded as lapin decodes it, or
/// `guest` when it names none. Acks and entries carry it as their AMQP `user_id`, which the
/// broker checks against the connection's user, so that their readers know who sent them.
pub fn url_user(raw: &str) -> Result<String, AmqpError> {
    let uri: lapin::uri::AMQPUri = raw.parse().map_err(AmqpError::BadUrl)?;
    Ok(uri.authority.userinfo.username)
}

/// Whether `error` is the broker's channel-level `code` (e.g. `NOT_FOUND`, `ACCESS_REFUSED`).
pub fn is_soft_error(error: &AmqpError, code: AMQPSoftError) -> bool {
    match error {
        AmqpError::Lapin(error) => matches!(
            error.kind(),
            lapin::ErrorKind::ProtocolError(amqp) if *amqp.kind() == AMQPErrorKind::Soft(code)
        ),
        _ => false,
    }
}

/// Whether the exchange `name` exists, asked with a passive declare on a channel of its own: a
/// passive declare needs no permission, and the broker closes the channel of one that fails.
async fn exchange_exists(broker: &Broker, name: &str) -> Result<bool, AmqpError> {
    let channel = broker.open_channel().await?;
    let options = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Fanout,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::from);
    match declared {
        Ok(()) => {
            close_channel(&channel, "exchange checked").await;
            Ok(true)
        }
        Err(error) if is_soft_error(&error, AMQPSoftError::NOTFOUND) => Ok(false),
        Err(error) => Err(error),
    }
}

/// The secondary's declaration of its own queue: when the entries exchange exists (the master
/// declared it), only the queue is declared and bound, which a least-privileged secondary user
/// may do (configure and write on its queue, read on the exchange). Only when the exchange is
/// missing does the secondary declare it too; a user without configure permission on it is
/// refused (`ACCESS_REFUSED`) and the caller retries until the master has declared it.
pub async fn declare_own_secondary_queue(
    broker: &Broker,
    channel: &Channel,
    topology: &Topology,
    id: &NodeId,
    queue_type: QueueType,
) -> Result<(), AmqpError> {
    if exchange_exists(broker, &topology.entries_exchange()).await? {
        bind_secondary_queue(channel, topology, id, queue_type).await
    } else {
        tracing::info!(
            exchange = %topology.entries_exchange(),
            "the entries exchange does not exist yet (no master has run in this namespace): declaring it"
        );
        declare_secondary_queue(channel, topology, id, queue_type).await
    }
}

/// Declares the route of secondaries' reports: the fanout exchange `<ns>.acks-in`, the bounded
/// queue `<ns>.acks` (see [`crate::topology::acks_queue_arguments`]) and the binding between
/// them. An acks queue declared by an older replog without the bound makes the declare fail
/// with `PRECONDITION_FAILED`; [`declare_acks_route_replacing`] handles that.
pub async fn declare_acks_route(channel: &Channel, topology: &Topology) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            topology.acks_exchange().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(
            topology.acks_queue().into(),
            options,
            crate::topology::acks_queue_arguments(topology.acks_queue_type()),
        )
        .await?;
    channel
        .queue_bind(
            topology.acks_queue().into(),
            topology.acks_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// The master's [`declare_acks_route`]: the master owns the acks queue, so when it exists with
/// other arguments (declared by an older replog, unbounded) it is deleted, on a channel of its
/// own, and the error returned so that the caller's retry declares it afresh. Nothing of value
/// is lost: reports restate whole positions and secondaries repeat them every heartbeat.
pub async fn declare_acks_route_replacing(
    broker: &Broker,
    channel: &Channel,
    topology: &Topology,
) -> Result<(), AmqpError> {
    let error = match declare_acks_route(channel, topology).await {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    if is_soft_error(&error, AMQPSoftError::PRECONDITIONFAILED) {
        let queue = topology.acks_queue();
        tracing::warn!(
            %queue, %error,
            "the acks queue exists with other arguments (an older replog declared it without \
             its length bound): deleting it and declaring it again; old reports are worth nothing"
        );
        let delete = async {
            let channel = broker.open_channel().await?;
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
            close_channel(&channel, "outdated acks queue deleted").await;
            Ok::<_, AmqpError>(())
        };
        if let Err(error) = delete.await {
            tracing::error!(%queue, %error, "cannot delete the outdated acks queue");
        }
    }
    Err(error)
}

/// The secondary's side of the acks route: nothing to do when `<ns>.acks-in` exists (the
/// master declared it), which a least-privileged secondary user needs (it may only write to
/// that exchange). Only when it is missing does the secondary declare the route itself; a user
/// without configure permission is refused and the caller retries until the master has run.
pub async fn ensure_acks_route(
    broker: &Broker,
    channel: &Channel,
    topology: &Topology,
) -> Result<(), AmqpError> {
    if exchange_exists(broker, &topology.acks_exchange()).await? {
        return Ok(());
    }
    tracing::info!(
        exchange = %topology.acks_exchange(),
        "the acks exchange does not exist yet (no master has run in this namespace): declaring it"
    );
    declare_acks_route(channel, topology).await
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
    fn amqps_urls_parse() {
        let url = AmqpUrl::parse("amqps://app:pw@rabbit-1.example:5671/prod").unwrap();
        assert_eq!(
            url.to_string(),
            "amqps://app:***@rabbit-1.example:5671/prod?heartbeat=10"
        );
    }

    #[test]
    fn a_list_of_urls_parses_in_order_with_passwords_hidden() {
        let urls = BrokerUrls::parse(
            "amqp://u:s3cret@r1:5672/%2f, amqps://u:s3cret@r2:5671/%2f,amqp://r3/%2f?heartbeat=5",
        )
        .unwrap();
        assert_eq!(urls.len(), 3);
        let shown = urls.to_string();
        assert_eq!(
            shown,
            "amqp://u:***@r1:5672/%2f?heartbeat=10,amqps://u:***@r2:5671/%2f?heartbeat=10,amqp://r3/%2f?heartbeat=5"
        );
        assert!(!format!("{urls:?}").contains("s3cret"));
        assert!(urls.urls()[1].expose().contains("s3cret"));
        assert_eq!(BrokerUrls::parse("amqp://r1/%2f").unwrap().len(), 1);
    }

    #[test]
    fn bad_lists_are_refused_saying_which_item() {
        for (raw, says) in [
            ("", "#1"),
            ("amqp://r1,", "#2"),
            ("amqp://r1,,amqp://r2", "#2"),
            ("amqp://r1,http://r2", "#2"),
            ("amqp://r1/%2f,amqp://r1/%2f", "listed twice"),
        ] {
            let error = BrokerUrls::parse(raw).unwrap_err().to_string();
            assert!(error.contains(says), "{raw:?}: {error}");
        }
        // A refused URL's password does not show in the error either.
        let error = BrokerUrls::parse("amqp://u:s3cret@r1/%2f,amqp://u:s3cret@r1/%2f")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn a_rotation_visits_every_node_once_per_round_from_its_offset() {
        let mut rotation = Rotation::new(3, "replog master (prod)");
        let start = rotation.peek();
        let order: Vec<usize> = (0..6).map(|_| rotation.advance()).collect();
        let expected: Vec<usize> = (0..6).map(|step| (start + step) % 3).collect();
        assert_eq!(order, expected);
        // The same name starts at the same node, run after run.
        assert_eq!(Rotation::new(3, "replog master (prod)").peek(), start);
        // One node: always that one.
        let mut single = Rotation::new(1, "anything");
        assert_eq!((single.advance(), single.advance()), (0, 0));
    }

    #[test]
    fn different_connections_spread_over_the_nodes() {
        let names = [
            "replog master (replog)",
            "replog secondary s1 (replog) entries",
            "replog secondary s1 (replog) acks",
            "replog secondary s2 (replog) entries",
            "replog secondary s2 (replog) acks",
            "replog secondary s3 (replog) entries",
        ];
        let mut used = [0usize; 3];
        for name in names {
            used[Rotation::new(3, name).peek()] += 1;
        }
        assert!(
            used.iter().filter(|&&n| n > 0).count() >= 2,
            "all connections start on one node: {used:?}"
        );
    }

    #[test]
    fn the_user_of_a_url_is_decoded_and_defaults_to_guest() {
        let user = |raw| url_user(raw).unwrap();
        assert_eq!(
            user("amqp://replog-s1:pw@localhost:5672/replog"),
            "replog-s1"
        );
        assert_eq!(user("amqps://a%40b:pw@broker.example/%2f"), "a@b");
        assert_eq!(user("amqp://localhost/%2f"), "guest");
        assert!(url_user("not a url").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
