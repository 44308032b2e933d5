//! Consuming secondaries' reports (acks and heartbeats) from `<ns>.acks` and feeding them to
//! the membership view and the write-concern tracker.
//!
//! Reports are consumed without broker acknowledgement: each one restates a secondary's whole
//! position and secondaries repeat it every heartbeat, so a lost report heals itself. Whether
//! the consumer's channel is up is what the master's `/health` and `/ready` call
//! `broker.connected`.
//!
//! What a report means is [`Replication::on_report`]'s decision; this task carries it out and
//! logs it: a new incarnation replaces the old position, a late report of a retired incarnation
//! is ignored, a position beyond the log is ignored — unless the secondary says this very
//! master incarnation published what it holds, which proves the log lost entries and raises the
//! [fence](crate::fence).
//!
//! With broker users in `--secondaries` (`s1=replog-s1`), a report counts only when its AMQP
//! `user_id` is that secondary's user. The broker refuses a publish whose `user_id` is not the
//! connection's user, so the field is the broker's word on who sent it; a report without it or
//! with another user's is forged (or misconfigured): ignored, counted in
//! `replog_forged_reports_total{secondary}` and warned about at most every [`WARN_EVERY`].

use crate::fence::{Evidence, Fence, Fenced};
use crate::replication::{log_changes, Heard, Replication};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use replog_common::rules::membership::Reported;
use replog_common::wire::AckMessage;
use replog_common::{Incarnation, NodeId, Order};
use replog_shell::amqp::{self, AmqpError, Broker};
use replog_shell::store::LogStore;
use replog_shell::topology::Topology;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The least time between two warnings of one kind (per secondary where it names one).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Everything the ack consumer reads and changes.
#[derive(Clone)]
pub struct AckConsumer {
    /// Connection source.
    pub broker: Broker,
    /// Broker names.
    pub topology: Topology,
    /// The membership view and the write-concern tracker.
    pub replication: Replication,
    /// The master's log: a report is checked against its last order.
    pub store: Arc<dyn LogStore>,
    /// Raised when a secondary of this master's incarnation holds more than the log.
    pub fence: Arc<Fence>,
    /// This master's data directory incarnation, which its publisher stamps on every entry.
    pub incarnation: Incarnation,
    /// Set while the consumer's channel is up.
    pub connected: Arc<AtomicBool>,
    /// Where the log ended when this master started: a follower of this master's incarnation
    /// holds the same entries up to here (what the master appended since may differ from what
    /// a follower holds beyond this log's end).
    pub recovered_end: Order,
    /// Each secondary's broker user, from `--secondaries ID=USER`: only its reports count.
    /// `None`: every report is believed (a trusted broker).
    pub secondary_users: Option<Arc<HashMap<NodeId, String>>>,
}

/// Which warnings were given, so that each is given once (or once per [`WARN_EVERY`]).
#[derive(Default)]
struct Warned {
    /// Secondaries not in `--secondaries` that reported: warned once each.
    unknown: HashSet<NodeId>,
    /// When a position beyond the log was last warned about, per secondary.
    beyond_log: HashMap<NodeId, Instant>,
    /// When a malformed report was last warned about.
    malformed: Option<Instant>,
    /// Secondaries whose reports arrived too old to show they are alive: warned once each.
    stale: HashSet<NodeId>,
    /// When a forged report (not sent by the secondary's broker user) was last warned about,
    /// per secondary it named.
    forged: HashMap<NodeId, Instant>,
}

/// Whether a warning last given at `last` may be given again at `now` (and if so, notes it).
fn due(last: &mut Option<Instant>, now: Instant) -> bool {
    let due = last.is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY);
    if due {
        *last = Some(now);
    }
    due
}

impl AckConsumer {
    /// Runs until `stop`, reconnecting whenever the broker goes away.
    pub async fn run(self, stop: CancellationToken) {
        let mut warned = Warned::default();
        loop {
            let consumer_topology = self.topology.clone();
            let broker = self.broker.clone();
            let Some((channel, mut consumer)) = self
                .broker
                .open_channel_with_retry("consume acks", &stop, |channel| {
                    consume(broker.clone(), channel, consumer_topology.clone())
                })
                .await
            else {
                return;
            };
            tracing::info!(queue = %self.topology.acks_queue(), "consuming acks and heartbeats");
            self.connected.store(true, Ordering::Release);
            loop {
                let delivery = tokio::select! {
                    delivery = consumer.next() => delivery,
                    _ = stop.cancelled() => {
                        amqp::close_channel(&channel, "master stopping").await;
                        return;
                    }
                };
                match delivery {
                    Some(Ok(delivery)) => {
                        let user = delivery.properties.user_id().as_ref().map(|u| u.as_str());
                        self.on_payload(&delivery.data, user, &mut warned)
                    }
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
            self.connected.store(false, Ordering::Release);
        }
    }

    /// Decodes one report, sent by the broker user `user` (the broker-validated `user_id`, if
    /// the publisher set one), and carries out what it means.
    fn on_payload(&self, payload: &[u8], user: Option<&str>, warned: &mut Warned) {
        let now = Instant::now();
        let report = match AckMessage::decode(payload) {
            Ok(report) => report,
            Err(error) => {
                if due(&mut warned.malformed, now) {
                    tracing::warn!(
                        %error,
                        "dropping a malformed ack (a secondary older than this master sends no \
                         incarnation: upgrade it); further ones are not logged for {WARN_EVERY:?}"
                    );
                }
                return;
            }
        };
        if self.forged(&report, user, warned, now) {
            return;
        }
        let age = Duration::from_millis(wall_clock_ms().saturating_sub(report.sent_at_ms));
        let last_order = self.store.last_order();
        let applied = Order(report.applied);
        tracing::trace!(secondary = %report.id, %applied, incarnation = %report.incarnation, ?age, "report received");
        let heard = self.replication.on_report(
            &report.id,
            report.incarnation,
            applied,
            age,
            last_order,
            now,
        );
        let fenced_follower = matches!(heard.reported, Reported::BeyondLog { .. })
            && report.master_incarnation == Some(self.incarnation);
        self.carry_out(&report, age, heard, warned, now);
        if fenced_follower {
            // It follows this very master, so it holds what this (shortened) log held when the
            // master started: count that much toward write concerns, so that retries of writes
            // the log kept are answered while the fence stands. Not beyond: an entry appended
            // since may differ from the one the follower holds at its order.
            let kept = self.recovered_end.min(last_order);
            let capped = self.replication.on_report(
                &report.id,
                report.incarnation,
                kept,
                age,
                last_order,
                now,
            );
            log_changes(&capped.changes, capped.quorum);
        }
    }

    /// Whether `report` must be ignored because the broker did not vouch that the secondary
    /// it names sent it: with broker users configured, its `user_id` must be that secondary's
    /// user. Counts and (rate-limited) warns about each one. A report naming an unknown
    /// secondary passes here and is ignored as unknown.
    fn forged(
        &self,
        report: &AckMessage,
        user: Option<&str>,
        warned: &mut Warned,
        now: Instant,
    ) -> bool {
        let Some(expected) = self
            .secondary_users
            .as_ref()
            .and_then(|users| users.get(&report.id))
        else {
            return false;
        };
        if user == Some(expected.as_str()) {
            return false;
        }
        let secondary = report.id.as_str();
        metrics::counter!("replog_forged_reports_total", "secondary" => secondary.to_owned())
            .increment(1);
        let mut last = warned.forged.get(&report.id).copied();
        if due(&mut last, now) {
            warned.forged.insert(report.id.clone(), now);
            let sender = user.map_or_else(
                || "no user_id".to_owned(),
                |user| format!("user_id {user:?}"),
            );
            tracing::warn!(
                secondary,
                user_id = user.unwrap_or(""),
                expected_user = %expected,
                applied = report.applied,
                "ignoring a report for {secondary} sent with {sender}, not by its broker user \
                 {expected:?}: forged, or that secondary runs with another broker user; further \
                 ones are not logged for {WARN_EVERY:?}"
            );
        }
        true
    }

    /// Logs what a report meant and raises the fence when it proves the log lost entries.
    fn carry_out(
        &self,
        report: &AckMessage,
        age: Duration,
        heard: Heard,
        warned: &mut Warned,
        now: Instant,
    ) {
        let secondary = report.id.as_str();
        let applied = report.applied;
        match heard.reported {
            Reported::Counted {
                replaced: true,
                position,
            } => match heard.previous_incarnation {
                Some(old) => tracing::warn!(
                    secondary,
                    incarnation = %report.incarnation,
                    previous_incarnation = %old,
                    previous = heard.previous.get(),
                    position = position.get(),
                    "secondary {secondary} is a new incarnation ({}, was {old}): its data \
                     directory was replaced; forgetting its old position {} and counting {} \
                     from now on",
                    report.incarnation, heard.previous, position
                ),
                None => tracing::warn!(
                    secondary,
                    incarnation = %report.incarnation,
                    previous = heard.previous.get(),
                    position = position.get(),
                    "secondary {secondary} reports a lower position than before; forgetting its \
                     old position {}",
                    heard.previous
                ),
            },
            Reported::Counted { .. } => {
                if self.replication.is_stale(age) && warned.stale.insert(report.id.clone()) {
                    tracing::warn!(
                        secondary,
                        age_ms = age.as_millis() as u64,
                        "a report of secondary {secondary} was sent {} ms ago by its clock: it \
                         waited in the queue, or that clock is behind; its position counts, but \
                         not as a sign of life",
                        age.as_millis()
                    );
                }
            }
            Reported::RetiredIncarnation => tracing::debug!(
                secondary,
                incarnation = %report.incarnation,
                applied,
                "ignoring a late report of a retired incarnation"
            ),
            Reported::BeyondLog { last_order } => {
                self.beyond_log(report, last_order, warned, now);
            }
            Reported::UnknownNode => {
                if warned.unknown.insert(report.id.clone()) {
                    tracing::warn!(
                        secondary,
                        "ignoring acks and heartbeats of {secondary}: it is not in --secondaries"
                    );
                }
            }
        }
        log_changes(&heard.changes, heard.quorum);
    }

    /// A report of a position the log does not reach.
    fn beyond_log(
        &self,
        report: &AckMessage,
        last_order: Order,
        warned: &mut Warned,
        now: Instant,
    ) {
        let secondary = report.id.as_str();
        let applied = Order(report.applied);
        if report.master_incarnation == Some(self.incarnation) {
            // This very master published what the secondary holds: the log lost entries.
            let evidence = Evidence::Secondary(report.id.clone());
            if let Some(fenced) = Fenced::check(last_order, applied, evidence) {
                let log_end = fenced.log_end;
                let evidence_end = fenced.evidence_end;
                let message = fenced.to_string();
                if self.fence.raise(fenced) {
                    tracing::error!(
                        secondary,
                        log_end = %log_end,
                        evidence_end = %evidence_end,
                        "{message}"
                    );
                }
            }
            return;
        }
        let mut last = warned.beyond_log.get(&report.id).copied();
        if due(&mut last, now) {
            warned.beyond_log.insert(report.id.clone(), now);
            let numbered_by = report.master_incarnation.map_or_else(
                || "no master incarnation".to_owned(),
                |i| format!("master incarnation {i}"),
            );
            tracing::warn!(
                secondary,
                applied = applied.get(),
                last_order = last_order.get(),
                "ignoring a report of {secondary} at {applied}, beyond the log's end {last_order}: \
                 its entries carry {numbered_by}, not this master's ({}), so it is no evidence \
                 that this log lost entries; further ones are not logged for {WARN_EVERY:?}",
                self.incarnation
            );
        }
    }
}

/// Milliseconds since the Unix epoch by this machine's clock.
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

async fn consume(
    broker: Broker,
    channel: Channel,
    topology: Topology,
) -> Result<(Channel, lapin::Consumer), AmqpError> {
    amqp::claim_role(&channel, &topology, "master").await?;
    amqp::declare_acks_route_replacing(&broker, &channel, &topology).await?;
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
