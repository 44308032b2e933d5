//! Publishing sequenced entries to the `<ns>.entries` fanout exchange.
//!
//! One task, one channel, publisher confirms on, pipelined: up to [`MAX_IN_FLIGHT`] publishes
//! await their confirms at once, in log order. An entry leaves the pending queue only when the
//! broker confirmed it. A nack, a confirm that does not come in time (a frozen broker never
//! confirms), an unroutable return or a lost channel all lead to the same recovery: a fresh
//! channel, the topology declared again, and every unconfirmed entry published again in order.
//! Secondaries drop the duplicates this may create.

use futures_util::stream::{FuturesOrdered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use replog_common::amqp::{self, AmqpError, Broker};
use replog_common::topology::{QueueType, Topology};
use replog_common::wire::EntryMessage;
use replog_common::{Entry, NodeId, Order};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Publishes awaiting a confirm at once; bounds what a slow broker makes us hold.
pub const MAX_IN_FLIGHT: usize = 4096;

/// How long a stopping master waits for outstanding confirms.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the publisher needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// Broker names.
    pub topology: Topology,
    /// Every configured secondary: their queues are declared on each (re)connect.
    pub secondaries: Vec<NodeId>,
    /// The kind of the secondaries' queues.
    pub queue_type: QueueType,
    /// How long a publish may stay unconfirmed before it is published again.
    pub confirm_timeout: Duration,
}

type ConfirmFuture = Pin<
    Box<
        dyn Future<Output = Result<Result<Confirmation, lapin::Error>, tokio::time::error::Elapsed>>
            + Send,
    >,
>;

/// Why the current channel was given up.
enum ChannelLost {
    /// The master is stopping.
    Stopped,
    /// Republish everything unconfirmed on a fresh channel.
    Republish(String),
}

/// The publishing task.
pub struct Publisher {
    /// Connection source.
    broker: Broker,
    /// Cluster names and settings.
    settings: PublisherSettings,
    /// New entries from the log writer, in order.
    incoming: mpsc::UnboundedReceiver<Vec<Entry>>,
    /// Entries not yet confirmed, in order; the first `published` went out on this channel.
    pending: VecDeque<Entry>,
    /// Every entry up to here is confirmed by the broker.
    confirmed: watch::Sender<Order>,
}

impl Publisher {
    /// A publisher that starts with `unconfirmed` (entries stored but not known to be
    /// confirmed) and then takes new entries from `incoming`.
    pub fn new(
        broker: Broker,
        settings: PublisherSettings,
        incoming: mpsc::UnboundedReceiver<Vec<Entry>>,
        unconfirmed: Vec<Entry>,
        confirmed: watch::Sender<Order>,
    ) -> Publisher {
        Publisher {
            broker,
            settings,
            incoming,
            pending: unconfirmed.into(),
            confirmed,
        }
    }

    /// Declares everything the cluster needs and enables confirms on a fresh channel.
    async fn prepare(settings: &PublisherSettings, channel: Channel) -> Result<Channel, AmqpError> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        amqp::declare_entries_exchange(&channel, &settings.topology).await?;
        for id in &settings.secondaries {
            amqp::declare_secondary_queue(&channel, &settings.topology, id, settings.queue_type)
                .await?;
        }
        amqp::declare_acks_queue(&channel, &settings.topology).await?;
        Ok(channel)
    }

    /// Runs until `stop`, then waits briefly for outstanding confirms.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let settings = self.settings.clone();
            let Some(channel) = self
                .broker
                .open_channel_with_retry("publish entries", &stop, |channel| {
                    Self::prepare(&settings, channel)
                })
                .await
            else {
                break;
            };
            tracing::info!(
                exchange = %self.settings.topology.entries_exchange(),
                republishing = self.pending.len(),
                "publisher ready"
            );
            match self.publish_on(&channel, &stop).await {
                ChannelLost::Stopped => {
                    let _ = channel.close(200, "master stopping".into()).await;
                    break;
                }
                ChannelLost::Republish(reason) => {
                    tracing::warn!(%reason, unconfirmed = self.pending.len(), "publishing again on a fresh channel");
                    let _ = channel.close(200, "republishing".into()).await;
                }
            }
        }
        if !self.pending.is_empty() {
            tracing::warn!(
                unconfirmed = self.pending.len(),
                "stopped with unconfirmed entries; they are in the log"
            );
        }
    }

    async fn publish_on(&mut self, channel: &Channel, stop: &CancellationToken) -> ChannelLost {
        let mut confirms: FuturesOrdered<ConfirmFuture> = FuturesOrdered::new();
        let mut published = 0usize;
        let mut draining = false;
        loop {
            while published < self.pending.len() && confirms.len() < MAX_IN_FLIGHT && !draining {
                let entry = &self.pending[published];
                match self.publish(channel, entry).await {
                    Ok(confirm) => {
                        confirms.push_back(confirm);
                        published += 1;
                    }
                    Err(error) => {
                        return ChannelLost::Republish(format!("publish failed: {error}"))
                    }
                }
            }
            if draining && confirms.is_empty() {
                return ChannelLost::Stopped;
            }
            tokio::select! {
                batch = self.incoming.recv(), if !draining => match batch {
                    Some(batch) => self.pending.extend(batch),
                    None => draining = true,
                },
                Some(outcome) = confirms.next(), if !confirms.is_empty() => {
                    let order = self.pending.front().map(|entry| entry.order).unwrap_or_default();
                    match outcome {
                        Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => {
                            self.pending.pop_front();
                            published -= 1;
                            tracing::debug!(%order, "entry confirmed by the broker");
                            self.confirmed.send_replace(order);
                        }
                        Ok(Ok(Confirmation::Ack(Some(_)))) => {
                            return ChannelLost::Republish(format!("entry {order} was unroutable (a queue is missing); declaring again"));
                        }
                        Ok(Ok(Confirmation::Nack(_))) => {
                            return ChannelLost::Republish(format!("the broker nacked entry {order}"));
                        }
                        Ok(Err(error)) => return ChannelLost::Republish(format!("confirm of entry {order} failed: {error}")),
                        Err(_) => return ChannelLost::Republish(format!(
                            "no confirm for entry {order} within {:?}", self.settings.confirm_timeout
                        )),
                    }
                }
                _ = stop.cancelled(), if !draining => {
                    draining = true;
                    tracing::info!(in_flight = confirms.len(), "publisher draining outstanding confirms");
                }
                _ = tokio::time::sleep(DRAIN_TIMEOUT), if draining => return ChannelLost::Stopped,
            }
        }
    }

    async fn publish(
        &self,
        channel: &Channel,
        entry: &Entry,
    ) -> Result<ConfirmFuture, lapin::Error> {
        let payload = EntryMessage::encode(entry);
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(entry.message_id.as_str().into());
        let confirm = channel
            .basic_publish(
                self.settings.topology.entries_exchange().into(),
                "".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &payload,
                properties,
            )
            .await?;
        tracing::trace!(order = %entry.order, "entry published");
        Ok(Box::pin(tokio::time::timeout(
            self.settings.confirm_timeout,
            confirm,
        )))
    }
}
