//! Publishing this secondary's reports to `<ns>.acks-in` (bound to `<ns>.acks`): one message that is both the
//! cumulative ack and the heartbeat (id, data directory incarnation, applied position, the
//! time, and the master incarnation of the newest entry it stored).
//!
//! Acks are coalesced: whatever the applied position is when the previous publish was
//! confirmed is what goes next, so a burst of entries costs a handful of acks. When nothing
//! changed for `--heartbeat-ms`, the position is repeated as a heartbeat: the master derives
//! from the heartbeats whether this secondary is alive, and a lost ack heals with the next one.
//! At shutdown the last position is published and confirmed.
//!
//! Silence is meaningful, so the reporter stays silent whenever this process cannot vouch for
//! the secondary: while it does not hold the role `secondary.<id>` (a second process started
//! with the same id, or a consuming connection that is gone), and while the applier has not
//! turned its loop for [`STUCK_AFTER`] heartbeats (a stuck disk). A frozen process is silent by
//! itself. `--delay-ms` delays entries, never reports.
//!
//! Every report carries the AMQP `user_id` of this connection's broker user; the broker
//! refuses it otherwise, so the master can tell (with `--secondaries ID=USER`) that the report
//! came from this secondary's user. Reports go through the exchange `<ns>.acks-in`, declared by
//! the master, so the secondary's user needs write permission on that exchange only.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel};
use replog_common::wire::AckMessage;
use replog_common::{Incarnation, NodeId, Order};
use replog_shell::amqp::{self, AmqpError, Broker};
use replog_shell::topology::Topology;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a single report may wait for its confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// How many heartbeat intervals the applier may go without a turn of its loop before the
/// reporter stops vouching for it.
pub const STUCK_AFTER: u32 = 3;

/// Everything the reporter reads.
#[derive(Debug)]
pub struct Reporter {
    /// Connection source (a connection of its own, see `startup`).
    pub broker: Broker,
    /// Broker names.
    pub topology: Topology,
    /// This secondary.
    pub id: NodeId,
    /// Its data directory's incarnation.
    pub incarnation: Incarnation,
    /// The stored position, from the applier.
    pub applied: watch::Receiver<Order>,
    /// The master incarnation of the newest stored entry that carried one, from the applier.
    pub master_incarnation: watch::Receiver<Option<Incarnation>>,
    /// When the applier last turned its loop.
    pub alive: watch::Receiver<Instant>,
    /// Whether this process holds the role `secondary.<id>`, from the consumer.
    pub role: watch::Receiver<bool>,
    /// `--heartbeat-ms`.
    pub heartbeat: Duration,
    /// The broker user of this connection, stamped on every report as its `user_id`.
    pub user: String,
}

/// Why the reporter is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silent {
    /// This process does not hold the role (yet, or any more).
    NoRole,
    /// The applier has not turned its loop for a while.
    ApplierStuck,
}

impl Reporter {
    /// Why the reporter may not speak now, if it may not.
    fn silent(&self) -> Option<Silent> {
        if !*self.role.borrow() {
            Some(Silent::NoRole)
        } else if self.alive.borrow().elapsed() > self.heartbeat * STUCK_AFTER {
            Some(Silent::ApplierStuck)
        } else {
            None
        }
    }

    /// Logs the change from `was` (`None` before the first look) to `now`, once.
    fn log_silence(&self, was: Option<Option<Silent>>, now: Option<Silent>) {
        if was == Some(now) {
            return;
        }
        match now {
            Some(Silent::NoRole) => tracing::info!(
                id = %self.id,
                "not reporting: this process does not hold the role secondary.{} (still \
                 connecting, or another process runs with this id)",
                self.id
            ),
            Some(Silent::ApplierStuck) => tracing::warn!(
                id = %self.id,
                stuck_ms = self.alive.borrow().elapsed().as_millis() as u64,
                "heartbeats stopped: the applier has not turned its loop for {} ms",
                self.alive.borrow().elapsed().as_millis()
            ),
            None => {
                tracing::info!(id = %self.id, incarnation = %self.incarnation, "reporting position and heartbeats to the master")
            }
        }
    }

    /// The report of this instant.
    fn report(&self) -> AckMessage {
        AckMessage {
            id: self.id.clone(),
            incarnation: self.incarnation,
            applied: self.applied.borrow().get(),
            sent_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
            master_incarnation: *self.master_incarnation.borrow(),
        }
    }

    /// Reports until `applier_done`, then publishes the final position once more (if this
    /// process still holds the role).
    pub async fn run(mut self, applier_done: CancellationToken) {
        let mut ticker = tokio::time::interval(self.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut silent = None;
        let mut role_open = true;
        loop {
            let setup_topology = self.topology.clone();
            let broker = self.broker.clone();
            let Some(channel) = self
                .broker
                .open_channel_with_retry("publish acks", &applier_done, |channel| {
                    prepare(broker.clone(), channel, setup_topology.clone())
                })
                .await
            else {
                break;
            };
            loop {
                self.applied.borrow_and_update();
                let now_silent = self.silent();
                self.log_silence(silent, now_silent);
                silent = Some(now_silent);
                if now_silent.is_none() {
                    let report = self.report();
                    if let Err(error) = publish(&channel, &self.topology, &self.user, &report).await
                    {
                        tracing::warn!(%error, "report publish failed; reconnecting");
                        break;
                    }
                    // The next heartbeat is due a whole interval after this report.
                    ticker.reset();
                }
                tokio::select! {
                    changed = self.applied.changed() => {
                        if changed.is_err() {
                            applier_done.cancelled().await;
                        }
                    }
                    changed = self.role.changed(), if role_open => {
                        role_open = changed.is_ok();
                    }
                    _ = ticker.tick() => {}
                    _ = applier_done.cancelled() => break,
                }
            }
            if applier_done.is_cancelled() {
                break;
            }
        }
        if !*self.role.borrow() {
            tracing::info!("stopping without a final report: this process does not hold the role");
            return;
        }
        // The applier has settled everything: confirm the final position on a fresh channel.
        let report = self.report();
        let final_ack = async {
            let channel = prepare(
                self.broker.clone(),
                self.broker.open_channel().await?,
                self.topology.clone(),
            )
            .await?;
            publish(&channel, &self.topology, &self.user, &report).await?;
            amqp::close_channel(&channel, "secondary stopping").await;
            Ok::<_, AmqpError>(())
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, final_ack).await {
            Ok(Ok(())) => tracing::info!(applied = report.applied, "final position acked"),
            Ok(Err(error)) => {
                tracing::warn!(%error, applied = report.applied, "could not ack the final position")
            }
            Err(_) => tracing::warn!(
                applied = report.applied,
                "final ack was not confirmed in time"
            ),
        }
    }
}

async fn prepare(
    broker: Broker,
    channel: Channel,
    topology: Topology,
) -> Result<Channel, AmqpError> {
    amqp::ensure_acks_route(&broker, &channel, &topology).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

async fn publish(
    channel: &Channel,
    topology: &Topology,
    user: &str,
    report: &AckMessage,
) -> Result<(), AmqpError> {
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_user_id(user.into());
    let confirm = channel
        .basic_publish(
            topology.acks_exchange().into(),
            "".into(),
            BasicPublishOptions::default(),
            &report.encode(),
            properties,
        )
        .await?;
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Ok(Ok(confirmation)) if confirmation.is_ack() => {
            tracing::trace!(applied = report.applied, "position reported to the master");
            Ok(())
        }
        Ok(Ok(_)) => Err(AmqpError::Unconfirmed(
            "the broker nacked the report".into(),
        )),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(AmqpError::Unconfirmed(
            "no confirm for the report in time".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_shell::amqp::AmqpUrl;

    fn reporter(role: bool, alive: Instant) -> Reporter {
        let url = AmqpUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        Reporter {
            broker: Broker::new(url, "test".into()).unwrap(),
            topology: Topology::new("test"),
            id: NodeId::parse("s1").unwrap(),
            incarnation: Incarnation::from_u128(7),
            applied: watch::channel(Order(3)).1,
            master_incarnation: watch::channel(None).1,
            alive: watch::channel(alive).1,
            role: watch::channel(role).1,
            heartbeat: Duration::from_millis(100),
            user: "guest".into(),
        }
    }

    #[tokio::test]
    async fn silent_without_the_role_or_with_a_stuck_applier() {
        let now = Instant::now();
        assert_eq!(reporter(true, now).silent(), None);
        assert_eq!(reporter(false, now).silent(), Some(Silent::NoRole));
        let stuck = now - Duration::from_millis(100 * u64::from(STUCK_AFTER) + 50);
        assert_eq!(reporter(true, stuck).silent(), Some(Silent::ApplierStuck));
        let report = reporter(true, now).report();
        assert_eq!(
            (
                report.applied,
                report.incarnation,
                report.master_incarnation
            ),
            (3, Incarnation::from_u128(7), None)
        );
    }
}
