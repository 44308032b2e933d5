//! The applier: the one task that turns deliveries into the secondary's log.
//!
//! The rules live in [`ApplyEngine`]; this task only carries out its decisions. It takes
//! whatever entries are waiting, lets the engine run them through the hold-back buffer (dropping
//! duplicates, holding back those beyond a gap), stores the newly contiguous run in one append,
//! and only then settles the deliveries the engine releases. A delivery held back beyond a gap
//! stays unsettled until the gap closes and it is stored: nothing is acked before it is on disk,
//! and the broker's prefetch window bounds how much a long-lasting gap holds in memory. With
//! `--fail-rate` some stored deliveries are nacked with requeue instead of acked, as if the node
//! crashed after the write: the redelivery is dropped as a duplicate. The coin is flipped here,
//! not in the engine, so the engine stays deterministic.
//!
//! For the heartbeat the applier also publishes ([`Liveness`]) that it is alive (a stamp each
//! turn of its loop, idle waits included, so a stuck applier stops the heartbeats) and which
//! master incarnation published the newest entry it stored.
//!
//! Divergence: before each batch the engine names the stored orders whose message ids it must
//! compare offers with; they are read here from the store. When an offer conflicts with what
//! this node holds, its delivery is rejected without requeue, the [`Divergence`] is published
//! for `/health` and `/ready`, and from then on the engine refuses every offer: deliveries are
//! dropped unsettled (the broker keeps them for the node once it is rebuilt) and nothing is
//! stored. The node keeps serving what it stored.

use crate::incoming::{Incoming, Source};
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::Acker;
use rand::Rng;
use replog_common::rules::apply::{
    ApplyEngine, Backlog, DeliveryTag, Divergence, Offer, Settle, Settlement, StoredIds, Verdict,
};
use replog_common::rules::settle_book::SettleBook;
use replog_common::{events, Incarnation, Order};
use replog_shell::store::{LogStore, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long acking or nacking may take before the delivery is left to the broker to redeliver.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most deliveries (each a run of up to `--run-entries` entries) or fetched entries taken in
/// one batch.
const MAX_BATCH: usize = 256;

/// The applier's state.
pub struct Applier {
    /// The secondary's log; holds exactly the applied prefix.
    store: Arc<dyn LogStore>,
    /// The rules: what to append, which deliveries to settle when.
    engine: ApplyEngine,
    /// The hold-back buffer's outline, for the catch-up task (the gap) and `/health`.
    backlog: watch::Sender<Backlog>,
    /// The stored position, for the ack publisher and `/health`.
    applied: watch::Sender<Order>,
    /// Probability of nacking a stored delivery.
    fail_rate: f64,
    /// Cancelled if the store fails: a secondary that cannot write must stop.
    fatal: CancellationToken,
    /// What settles each delivery the engine names by tag. The broker's own delivery tags
    /// restart with every channel, so deliveries are numbered here.
    ackers: HashMap<DeliveryTag, Delivery>,
    /// The unsettled deliveries of the consumer's current channel, for batched acks.
    book: SettleBook,
    /// Which channel `book` is about.
    book_channel: u64,
    /// Ackers of `book`'s due deliveries, by the broker's tag, until their ack is sent.
    due: HashMap<u64, Acker>,
    /// The next delivery's tag.
    next_tag: u64,
    /// Set once the engine found a conflicting entry, for `/health` and `/ready`.
    diverged: watch::Sender<Option<Divergence>>,
    /// Where liveness and the master incarnation go, when the heartbeat wants them.
    liveness: Option<Liveness>,
    /// The master incarnation stamped on each delivered entry not stored yet, by order.
    stamped: BTreeMap<Order, Incarnation>,
}

/// What the applier tells the heartbeat.
#[derive(Debug)]
pub struct Liveness {
    /// Stamped with the time at each turn of the applier's loop.
    pub alive: watch::Sender<Instant>,
    /// The master incarnation of the newest stored entry that carried one (entries fetched by
    /// catch-up carry none: the last one known stays).
    pub master_incarnation: watch::Sender<Option<Incarnation>>,
    /// The longest the applier waits idle before stamping again.
    pub wake_every: Duration,
}

impl Applier {
    /// An applier over `store`, whose prefix `engine`, `backlog` and `applied` already reflect.
    pub fn new(
        store: Arc<dyn LogStore>,
        engine: ApplyEngine,
        backlog: watch::Sender<Backlog>,
        applied: watch::Sender<Order>,
        fail_rate: f64,
        fatal: CancellationToken,
    ) -> Applier {
        Applier {
            store,
            engine,
            backlog,
            applied,
            fail_rate,
            fatal,
            ackers: HashMap::new(),
            book: SettleBook::new(),
            book_channel: 0,
            due: HashMap::new(),
            next_tag: 0,
            liveness: None,
            diverged: watch::Sender::new(None),
            stamped: BTreeMap::new(),
        }
    }

    /// Also reports liveness and the master incarnation to the heartbeat.
    pub fn with_liveness(mut self, liveness: Liveness) -> Applier {
        self.liveness = Some(liveness);
        self
    }

    /// Waits for entries; `None` once every sender is gone. Wakes (with an empty batch) at
    /// least every `wake_every` to stamp liveness.
    async fn receive(
        &self,
        inbox: &mut mpsc::Receiver<Incoming>,
        batch: &mut Vec<Incoming>,
    ) -> Option<()> {
        let Some(liveness) = &self.liveness else {
            return (inbox.recv_many(batch, MAX_BATCH).await > 0).then_some(());
        };
        liveness.alive.send_replace(Instant::now());
        // `recv_many` is cancel safe: a timeout loses nothing.
        match tokio::time::timeout(liveness.wake_every, inbox.recv_many(batch, MAX_BATCH)).await {
            Err(_idle) => Some(()),
            Ok(0) => None,
            Ok(_) => Some(()),
        }
    }

    /// Follows the node's divergence: `None` until an entry conflicts with what it holds, then
    /// the evidence, for good.
    pub fn divergence(&self) -> watch::Receiver<Option<Divergence>> {
        self.diverged.subscribe()
    }

    /// Runs until every sender of `inbox` is gone, so nothing handed over is left unsettled.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<Incoming>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while self.receive(&mut inbox, &mut batch).await.is_some() {
            if batch.is_empty() {
                continue;
            }
            if let Err(error) = self.apply(std::mem::take(&mut batch)).await {
                tracing::error!(%error, "cannot store entries; stopping the secondary");
                self.fatal.cancel();
                // Keep draining without storing or acking, so senders never block; the broker
                // redelivers everything unacked to the next run.
                while inbox.recv().await.is_some() {}
                return;
            }
        }
        tracing::debug!("applier stopped");
    }

    async fn apply(&mut self, batch: Vec<Incoming>) -> Result<(), StoreError> {
        let mut offers: Vec<Offer> = Vec::with_capacity(batch.len());
        for incoming in batch {
            self.offer(incoming, &mut offers);
        }
        let lookups = self.engine.lookups(&offers);
        let stored_ids = if lookups.is_empty() {
            StoredIds::new()
        } else {
            let store = self.store.clone();
            replog_shell::store::blocking(move || stored_ids(store.as_ref(), &lookups)).await?
        };
        let plan = self.engine.on_batch(offers, &stored_ids);
        for verdict in plan.verdicts {
            log_verdict(verdict);
        }
        if let Some(divergence) = self.engine.diverged() {
            if self.diverged.borrow().is_none() {
                self.diverged.send_replace(Some(divergence.clone()));
            }
        }
        for tag in plan.reject {
            let delivery = self
                .ackers
                .remove(&tag)
                .expect("every rejected tag was handed out with an acker");
            self.settled_alone(&delivery);
            let acker = delivery.acker;
            // Without requeue: the entry would only come back and conflict again.
            if let Err(error) = acker.reject(BasicRejectOptions { requeue: false }).await {
                tracing::warn!(%error, "cannot reject the conflicting delivery");
            }
        }
        for tag in plan.abandon {
            // Dropped unsettled: the broker keeps it for the rebuilt node.
            self.ackers.remove(&tag);
        }
        self.backlog.send_replace(self.engine.backlog());
        let ready = plan.append;
        if !ready.is_empty() {
            let store = self.store.clone();
            let (first, last) = (ready[0].order, ready[ready.len() - 1].order);
            let appending = Instant::now();
            replog_shell::store::blocking(move || store.append(&ready)).await?;
            metrics::histogram!(crate::metrics::FSYNC_SECONDS).record(appending.elapsed());
            tracing::debug!(target: events::TARGET, event = events::STORED, first = first.get(), last = last.get());
            // Before `applied`: a report of `last` then names the master that published it.
            self.note_master_incarnation(last);
            self.applied.send_replace(last);
        }
        for settlement in self.engine.on_stored() {
            let delivery = self
                .ackers
                .remove(&settlement.tag)
                .expect("every settled tag was handed out with an acker");
            self.settle(delivery, settlement).await;
        }
        self.send_acks().await;
        Ok(())
    }

    /// A delivery settled on its own (nacked, rejected): no multiple ack may cover it.
    fn settled_alone(&mut self, delivery: &Delivery) {
        if delivery.channel == self.book_channel {
            self.book.settled_alone(delivery.broker_tag);
        }
    }

    /// Sends the acks of every due delivery of the current channel: one `multiple=true` ack
    /// for the longest prefix of due deliveries, single acks after a held-back one.
    async fn send_acks(&mut self) {
        let acks = self.book.take_acks();
        if let Some(up_to) = acks.multiple_up_to {
            // The other due ackers at or below `up_to` are covered by this one ack: dropped
            // unused (acking them too would be an unknown-tag error on the channel).
            let acker = self.due.remove(&up_to);
            self.due.retain(|tag, _| *tag > up_to);
            if let Some(acker) = acker {
                let options = BasicAckOptions { multiple: true };
                report_settle(
                    acker.ack(options),
                    format!("ack of every delivery up to tag {up_to}"),
                )
                .await;
            }
        }
        for tag in acks.single {
            if let Some(acker) = self.due.remove(&tag) {
                report_settle(
                    acker.ack(BasicAckOptions::default()),
                    format!("ack of delivery tag {tag}"),
                )
                .await;
            }
        }
    }

    /// Turns incoming entries into offers; a delivery's acker is kept under one fresh tag that
    /// all of its entries share (the engine settles it once, when the last is stored).
    fn offer(&mut self, incoming: Incoming, offers: &mut Vec<Offer>) {
        match incoming.source {
            Source::Queue {
                acker,
                channel,
                delivery_tag,
                redelivered,
                master_incarnation,
            } => {
                if channel != self.book_channel {
                    // A fresh channel: its tags start again, and nothing of the old one can be
                    // settled by an ack on it.
                    self.book = SettleBook::new();
                    self.book_channel = channel;
                    self.due.clear();
                }
                self.book.delivered(delivery_tag);
                let last = incoming.entries[incoming.entries.len() - 1].order;
                // Only entries not applied yet: a duplicate says nothing of what is stored.
                if let Some(master) = master_incarnation {
                    if last > *self.applied.borrow() {
                        self.stamped.insert(last, master);
                    }
                }
                if redelivered {
                    metrics::counter!(crate::metrics::REDELIVERIES_TOTAL).increment(1);
                    tracing::debug!(first = %incoming.entries[0].order, %last, "entries redelivered by the broker");
                }
                let tag = DeliveryTag(self.next_tag);
                self.next_tag += 1;
                self.ackers.insert(
                    tag,
                    Delivery {
                        acker,
                        channel,
                        broker_tag: delivery_tag,
                    },
                );
                offers.extend(
                    incoming
                        .entries
                        .into_iter()
                        .map(|entry| Offer::delivered(entry, tag)),
                );
            }
            Source::Master => offers.extend(incoming.entries.into_iter().map(Offer::fetched)),
        }
    }

    /// Entries up to `last` are stored: the newest of them that carried a master incarnation
    /// names the master the heartbeat reports.
    fn note_master_incarnation(&mut self, last: Order) {
        let newer = self.stamped.split_off(&last.next());
        let stored = std::mem::replace(&mut self.stamped, newer);
        if let (Some(liveness), Some((_, &master))) = (&self.liveness, stored.last_key_value()) {
            liveness.master_incarnation.send_if_modified(|known| {
                let changed = *known != Some(master);
                *known = Some(master);
                changed
            });
        }
    }

    /// Settles a stored delivery: due for a (batched) ack, or with `--fail-rate` nacked at
    /// once for redelivery. A delivery of an earlier channel is acked on its own (it fails
    /// harmlessly: the broker redelivers it on the new channel, where it is a duplicate).
    async fn settle(&mut self, delivery: Delivery, Settlement { order, settle, .. }: Settlement) {
        let fail = settle == Settle::Fresh
            && self.fail_rate > 0.0
            && rand::rng().random_bool(self.fail_rate);
        if fail {
            tracing::info!(%order, "failure injection: nacking a stored entry for redelivery");
            self.settled_alone(&delivery);
            let options = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            report_settle(
                delivery.acker.nack(options),
                format!("nack of order {order}"),
            )
            .await;
        } else if delivery.channel == self.book_channel {
            self.book.due(delivery.broker_tag);
            self.due.insert(delivery.broker_tag, delivery.acker);
        } else {
            let acked = delivery.acker.ack(BasicAckOptions::default());
            report_settle(acked, format!("ack of order {order}")).await;
        }
    }
}

/// A delivery the applier holds until it may settle it.
struct Delivery {
    /// Settles it with the broker.
    acker: Acker,
    /// Which of the consumer's channels delivered it.
    channel: u64,
    /// The broker's tag of it on that channel.
    broker_tag: u64,
}

/// Sends a settle (`what`, e.g. "ack of order 7") and logs what became of it. An ack on a
/// channel whose connection died with its broker node was seen never to return, which stopped
/// the applier (and so catch-up) for good: after [`SETTLE_LIMIT`] the delivery is left to the
/// broker, which redelivers it, and the redelivery is dropped as a duplicate.
async fn report_settle(
    settle: impl std::future::Future<Output = lapin::Result<bool>>,
    what: String,
) {
    let Ok(result) = tokio::time::timeout(SETTLE_LIMIT, settle).await else {
        tracing::warn!(limit = ?SETTLE_LIMIT, "{what}: did not finish in time; the broker will redeliver");
        return;
    };
    match result {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!("{what}: the delivery's channel is gone; the broker redelivers it")
        }
        Err(error) => {
            tracing::warn!(%error, "{what}: cannot settle; the broker will redeliver it")
        }
    }
}

/// Reads the message ids this node stores at `orders` (sorted), one read per run of
/// consecutive orders. An order the store does not return is left out.
fn stored_ids(store: &dyn LogStore, orders: &[Order]) -> Result<StoredIds, StoreError> {
    let mut ids = StoredIds::new();
    let mut rest = orders;
    while let Some(&first) = rest.first() {
        let run = rest
            .windows(2)
            .take_while(|pair| pair[1].get() == pair[0].get() + 1)
            .count()
            + 1;
        for entry in store.read(first, run)? {
            ids.insert(entry.order, entry.message_id);
        }
        rest = &rest[run..];
    }
    Ok(ids)
}

/// Logs what the engine made of one offer.
fn log_verdict(verdict: Verdict) {
    match verdict {
        Verdict::Ready { .. } => {}
        Verdict::HeldBack { order, applied } => {
            tracing::debug!(%order, %applied, "entry held back until the gap before it closes");
        }
        Verdict::HeldAgain {
            order,
            fetched: from_master,
        } => {
            // Delivered again while held back (the first delivery's channel may be gone): this
            // delivery too is settled once the entry is stored.
            metrics::counter!(crate::metrics::DUPLICATES_DROPPED_TOTAL).increment(1);
            tracing::debug!(%order, from_master, "dropped duplicate of a held-back entry");
        }
        Verdict::Duplicate {
            order,
            fetched: from_master,
        } => {
            metrics::counter!(crate::metrics::DUPLICATES_DROPPED_TOTAL).increment(1);
            tracing::debug!(target: events::TARGET, event = events::DUPLICATE_DROPPED, order = order.get(), from_master);
        }
        Verdict::Diverged(Divergence {
            order,
            held,
            offered,
            fetched: from_master,
        }) => {
            // Evidence for the checker and the one error an operator must see: the ids are
            // fields (quoted and escaped by the formatter), never part of the message.
            tracing::error!(
                target: events::TARGET,
                event = events::DIVERGED,
                order = order.get(),
                held = held.as_str(),
                offered = offered.as_str(),
                from_master,
                "diverged: an entry conflicts with the one this node holds at its order; it is refused, and this node applies nothing more until its data is rebuilt"
            );
        }
        Verdict::Refused {
            order,
            fetched: from_master,
        } => {
            tracing::debug!(%order, from_master, "entry refused: this node has diverged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_common::{Entry, MessageId};
    use replog_shell::store::MemoryLog;

    #[test]
    fn stored_ids_are_read_in_runs_of_consecutive_orders() {
        let log = MemoryLog::new();
        let entries: Vec<Entry> = (1..=10)
            .map(|order| Entry {
                order: Order(order),
                message_id: MessageId::random(),
                content: String::new(),
            })
            .collect();
        log.append(&entries).unwrap();
        let orders = [Order(2), Order(3), Order(4), Order(7), Order(9), Order(10)];
        let ids = stored_ids(&log, &orders).unwrap();
        assert_eq!(ids.keys().copied().collect::<Vec<_>>(), orders);
        for order in orders {
            assert_eq!(ids[&order], entries[order.get() as usize - 1].message_id);
        }
        assert!(stored_ids(&log, &[Order(11)]).unwrap().is_empty());
    }
}
