//! Publishing this secondary's cumulative position to `<ns>.acks`.
//!
//! Acks are coalesced: whatever the applied position is when the previous publish was
//! confirmed is what goes next, so a burst of entries costs a handful of acks. The position is
//! also repeated every `interval`, because an unconfirmed publish right before a connection
//! closes can vanish; and at shutdown the last position is published and confirmed.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel};
use replog_common::wire::AckMessage;
use replog_common::{NodeId, Order};
use replog_shell::amqp::{self, AmqpError, Broker};
use replog_shell::topology::Topology;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a single ack may wait for its confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes acks until `applier_done`, then publishes the final position once more.
pub async fn run(
    broker: Broker,
    topology: Topology,
    id: NodeId,
    mut applied: watch::Receiver<Order>,
    interval: Duration,
    applier_done: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let setup_topology = topology.clone();
        let Some(channel) = broker
            .open_channel_with_retry("publish acks", &applier_done, |channel| {
                prepare(channel, setup_topology.clone())
            })
            .await
        else {
            break;
        };
        loop {
            let position = *applied.borrow_and_update();
            if let Err(error) = publish(&channel, &topology, &id, position).await {
                tracing::warn!(%error, "ack publish failed; reconnecting");
                break;
            }
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        applier_done.cancelled().await;
                    }
                }
                _ = ticker.tick() => {}
                _ = applier_done.cancelled() => break,
            }
        }
        if applier_done.is_cancelled() {
            break;
        }
    }
    // The applier has settled everything: confirm the final position on a fresh channel if need be.
    let position = *applied.borrow();
    let final_ack = async {
        let channel = prepare(broker.open_channel().await?, topology.clone()).await?;
        publish(&channel, &topology, &id, position).await?;
        amqp::close_channel(&channel, "secondary stopping").await;
        Ok::<_, AmqpError>(())
    };
    match tokio::time::timeout(CONFIRM_TIMEOUT, final_ack).await {
        Ok(Ok(())) => tracing::info!(applied = %position, "final position acked"),
        Ok(Err(error)) => {
            tracing::warn!(%error, applied = %position, "could not ack the final position")
        }
        Err(_) => tracing::warn!(applied = %position, "final ack was not confirmed in time"),
    }
}

async fn prepare(channel: Channel, topology: Topology) -> Result<Channel, AmqpError> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    amqp::declare_acks_queue(&channel, &topology).await?;
    Ok(channel)
}

async fn publish(
    channel: &Channel,
    topology: &Topology,
    id: &NodeId,
    applied: Order,
) -> Result<(), AmqpError> {
    let payload = AckMessage {
        id: id.clone(),
        applied: applied.get(),
    }
    .encode();
    let confirm = channel
        .basic_publish(
            "".into(),
            topology.acks_queue().into(),
            BasicPublishOptions::default(),
            &payload,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await?;
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Ok(Ok(confirmation)) if confirmation.is_ack() => {
            tracing::trace!(%applied, "position acked to the master");
            Ok(())
        }
        Ok(Ok(_)) => Err(AmqpError::Unconfirmed("the broker nacked the ack".into())),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(AmqpError::Unconfirmed(
            "no confirm for the ack in time".into(),
        )),
    }
}
