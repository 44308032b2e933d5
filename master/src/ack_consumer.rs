//! Consuming secondaries' cumulative acks from `<ns>.acks` and feeding them to the write-concern
//! tracker.
//!
//! Acks are consumed without broker acknowledgement: each one restates a secondary's whole
//! position and secondaries repeat it now and then, so a lost ack heals itself.

use crate::replication::Replication;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use replog_common::wire::AckMessage;
use replog_common::Order;
use replog_shell::amqp::{self, AmqpError, Broker};
use replog_shell::topology::Topology;
use std::collections::HashSet;
use tokio_util::sync::CancellationToken;

/// Runs until `stop`, reconnecting whenever the broker goes away.
pub async fn run(
    broker: Broker,
    topology: Topology,
    replication: Replication,
    stop: CancellationToken,
) {
    let mut unknown_reported = HashSet::new();
    loop {
        let consumer_topology = topology.clone();
        let Some((channel, mut consumer)) = broker
            .open_channel_with_retry("consume acks", &stop, |channel| {
                consume(channel, consumer_topology.clone())
            })
            .await
        else {
            return;
        };
        tracing::info!(queue = %topology.acks_queue(), "consuming acks");
        loop {
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                _ = stop.cancelled() => {
                    amqp::close_channel(&channel, "master stopping").await;
                    return;
                }
            };
            match delivery {
                Some(Ok(delivery)) => match AckMessage::decode(&delivery.data) {
                    Ok(ack) => {
                        tracing::trace!(secondary = %ack.id, applied = ack.applied, "ack received");
                        if let Err(error) = replication.on_ack(&ack.id, Order(ack.applied)) {
                            if unknown_reported.insert(ack.id.clone()) {
                                tracing::warn!(%error, "ignoring acks of a secondary not in --secondaries");
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "dropping a malformed ack"),
                },
                Some(Err(error)) => {
                    tracing::warn!(%error, "ack consumer failed; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("ack consumer was cancelled by the broker; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn consume(
    channel: Channel,
    topology: Topology,
) -> Result<(Channel, lapin::Consumer), AmqpError> {
    amqp::claim_role(&channel, &topology, "master").await?;
    amqp::declare_acks_queue(&channel, &topology).await?;
    channel.basic_qos(1024, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            topology.acks_queue().into(),
            format!("{}.master", topology.namespace()).into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}
