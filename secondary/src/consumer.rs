//! Consuming this secondary's queue and handing entries to the applier.
//!
//! The queue is consumed exclusively (a second process with the same `--id` is refused rather
//! than silently splitting the stream) with a bounded prefetch. With `--delay-ms`, each delivery
//! waits in a task of its own, so entries in flight are delayed side by side.
//!
//! With `--master-user`, an entry counts only when its AMQP `user_id` is the master's broker
//! user: the broker refuses a publish whose `user_id` is not the publishing connection's user,
//! so this is the broker's word that the master sent it. Any other entry (a forged one
//! published by whoever may write to the entries exchange) is rejected without requeue before
//! it is even decoded, counted in `replog_forged_entries_total` and warned about at most every
//! [`WARN_EVERY`]: the master's real entry at that order is then applied as usual.

use crate::incoming::{hand_over, Incoming, Source};
use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use replog_common::wire::run::decode_run;
use replog_common::wire::WireError;
use replog_common::NodeId;
use replog_shell::amqp::{self, AmqpError, Broker};
use replog_shell::topology::{QueueType, Topology};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long a stopping secondary waits for the applier before closing its channel anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The least time between two warnings about entries not sent by the master.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Whether the entry consumer is subscribed to its queue right now: set once the queue is
/// consumed, cleared while it reconnects and once it stops. Read by `/health` and `/ready`.
#[derive(Debug, Clone, Default)]
pub struct Connected(Arc<AtomicBool>);

impl Connected {
    /// Whether the consumer is subscribed now.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, connected: bool) {
        self.0.store(connected, Ordering::Relaxed);
    }
}

/// What the consumer needs.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Broker names.
    pub topology: Topology,
    /// This secondary.
    pub id: NodeId,
    /// Must match the master's.
    pub queue_type: QueueType,
    /// Unacked deliveries in flight.
    pub prefetch: u16,
    /// Artificial latency before an entry reaches the applier.
    pub delay: Duration,
    /// Kept up to date with the subscription.
    pub connected: Connected,
    /// `--master-user`: only entries the broker validated as published by this user count.
    /// `None`: every entry on the queue is believed (a trusted broker).
    pub master_user: Option<String>,
}

/// Whether an entry published with `user_id` is to be believed under `--master-user`.
fn from_master(master_user: Option<&str>, user_id: Option<&str>) -> bool {
    master_user.is_none_or(|master| user_id == Some(master))
}

/// Consumes until `stop`; then cancels the consumer, lets the applier settle what it holds
/// (`applier_done`), and closes the channel. `subscribed` is cancelled once the queue is
/// declared, bound and consumed for the first time. `role` is `true` while this process holds
/// the role `secondary.<id>` (claimed on the consuming connection) and consumes: the ack
/// publisher reports only then, so a second process started with the same id, which cannot
/// claim the role, publishes nothing.
pub async fn run(
    broker: Broker,
    settings: ConsumerSettings,
    inbox: mpsc::Sender<Incoming>,
    subscribed: CancellationToken,
    role: watch::Sender<bool>,
    stop: CancellationToken,
    applier_done: CancellationToken,
) {
    let queue = settings.topology.secondary_queue(&settings.id);
    let mut last_channel = None;
    // Numbers the channels this consumer opens: the broker's delivery tags restart with each
    // one, and a `multiple=true` ack only means something on the channel it is sent on.
    let mut channel_number = 0u64;
    let mut forged_warned: Option<Instant> = None;
    'connect: loop {
        channel_number += 1;
        settings.connected.set(false);
        let setup = settings.clone();
        let Some((channel, mut consumer)) = broker
            .open_channel_with_retry("consume entries", &stop, |channel| {
                subscribe(broker.clone(), channel, setup.clone())
            })
            .await
        else {
            break;
        };
        tracing::info!(%queue, prefetch = settings.prefetch, "consuming entries");
        settings.connected.set(true);
        subscribed.cancel();
        role.send_replace(true);
        loop {
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                _ = stop.cancelled() => {
                    let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
                    let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await;
                    last_channel = Some(channel);
                    break 'connect;
                }
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => {
                    tracing::warn!(%error, "entry consumer failed; reconnecting");
                    role.send_replace(false);
                    continue 'connect;
                }
                None => {
                    tracing::warn!("entry consumer was cancelled by the broker; reconnecting");
                    role.send_replace(false);
                    continue 'connect;
                }
            };
            let user_id = delivery.properties.user_id().as_ref().map(|u| u.as_str());
            if !from_master(settings.master_user.as_deref(), user_id) {
                metrics::counter!("replog_forged_entries_total").increment(1);
                let now = Instant::now();
                if forged_warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
                    forged_warned = Some(now);
                    tracing::warn!(
                        user_id = user_id.unwrap_or(""),
                        master_user = settings.master_user.as_deref().unwrap_or(""),
                        "rejecting a message on the entries queue not published by the master's \
                         broker user ({}): forged, or the master runs as another user; further \
                         ones are not logged for {WARN_EVERY:?}",
                        user_id
                            .map_or_else(|| "no user_id".to_owned(), |u| format!("user_id {u:?}"))
                    );
                }
                let _ = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
                continue;
            }
            let published = match decode_run(&delivery.data) {
                Ok(published) => published,
                Err(error @ WireError::UnsupportedVersion { .. }) => {
                    // Not ours to guess at, nor to drop: leave it in the queue for a node that
                    // reads it, and stop, so that an operator upgrades this one.
                    tracing::error!(%error, "stopping: the master publishes a format this secondary does not read");
                    settings.connected.set(false);
                    stop.cancel();
                    last_channel = Some(channel);
                    break 'connect;
                }
                Err(error) => {
                    tracing::error!(%error, "rejecting a message that is not a replog entry");
                    let _ = delivery
                        .acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await;
                    continue;
                }
            };
            tracing::trace!(first = %published.entries[0].order, count = published.entries.len(), "entries delivered");
            let incoming = Incoming {
                entries: published.entries,
                source: Source::Queue {
                    acker: delivery.acker,
                    channel: channel_number,
                    delivery_tag: delivery.delivery_tag,
                    redelivered: delivery.redelivered,
                    master_incarnation: published.master_incarnation,
                },
            };
            hand_over(&inbox, incoming, settings.delay).await;
        }
    }
    settings.connected.set(false);
    drop(inbox);
    if tokio::time::timeout(SETTLE_TIMEOUT, applier_done.cancelled())
        .await
        .is_err()
    {
        tracing::warn!("applier did not finish in time; unsettled deliveries will be redelivered");
    }
    if let Some(channel) = last_channel {
        amqp::close_channel(&channel, "secondary stopping").await;
    }
}

async fn subscribe(
    broker: Broker,
    channel: Channel,
    settings: ConsumerSettings,
) -> Result<(Channel, Consumer), AmqpError> {
    let role = format!("secondary.{}", settings.id);
    amqp::claim_role(&channel, &settings.topology, &role).await?;
    amqp::declare_own_secondary_queue(
        &broker,
        &channel,
        &settings.topology,
        &settings.id,
        settings.queue_type,
    )
    .await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            settings.topology.secondary_queue(&settings.id).into(),
            format!("replog secondary {}", settings.id).into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_a_master_user_only_its_entries_count() {
        assert!(from_master(None, None));
        assert!(from_master(None, Some("anyone")));
        assert!(from_master(Some("replog-master"), Some("replog-master")));
        assert!(!from_master(Some("replog-master"), None));
        assert!(!from_master(Some("replog-master"), Some("guest")));
    }
}
