//! The applier: the one task that turns deliveries into the secondary's log.
//!
//! It takes whatever entries are waiting, runs them through the hold-back buffer (dropping
//! duplicates, holding back those beyond a gap), stores the newly contiguous run in one append,
//! and only then settles each delivery with the broker. A delivery held back beyond a gap stays
//! unsettled until the gap closes and it is stored: nothing is acked before it is on disk, and
//! the broker's prefetch window bounds how much a long-lasting gap holds in memory. With
//! `--fail-rate` some stored deliveries are nacked with requeue instead of acked, as if the node
//! crashed after the write: the redelivery is dropped as a duplicate.

use crate::incoming::{Incoming, Source};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Acker;
use rand::Rng;
use replog_common::rules::holdback::{HoldBack, Offered};
use replog_common::{events, Entry, Order};
use replog_shell::store::LogStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Most entries taken in one batch.
const MAX_BATCH: usize = 1024;

/// How a delivery is settled after its batch is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Stored now: ack, unless failure injection says otherwise.
    Fresh,
    /// Already stored: ack and drop.
    Duplicate,
    /// Held back beyond a gap (or delivered again while held back): settled once stored.
    Deferred,
}

/// The applier's state.
pub struct Applier {
    /// The secondary's log; holds exactly the applied prefix.
    store: Arc<dyn LogStore>,
    /// Shared with the catch-up task, which reads the gap.
    holdback: Arc<Mutex<HoldBack>>,
    /// The applied position, for the ack publisher and `/health`.
    applied: watch::Sender<Order>,
    /// Probability of nacking a stored delivery.
    fail_rate: f64,
    /// Cancelled if the store fails: a secondary that cannot write must stop.
    fatal: CancellationToken,
    /// Deliveries of held-back entries, by order, waiting until their entry is stored. An
    /// order may have several (a republished duplicate, a redelivery after a lost channel):
    /// which of them is still live is not known, so all wait.
    deferred: BTreeMap<Order, Vec<Acker>>,
}

impl Applier {
    /// An applier over `store`, whose prefix `holdback` and `applied` already reflect.
    pub fn new(
        store: Arc<dyn LogStore>,
        holdback: Arc<Mutex<HoldBack>>,
        applied: watch::Sender<Order>,
        fail_rate: f64,
        fatal: CancellationToken,
    ) -> Applier {
        Applier {
            store,
            holdback,
            applied,
            fail_rate,
            fatal,
            deferred: BTreeMap::new(),
        }
    }

    /// Runs until every sender of `inbox` is gone, so nothing handed over is left unsettled.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<Incoming>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
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

    async fn apply(&mut self, batch: Vec<Incoming>) -> Result<(), replog_shell::store::StoreError> {
        let mut ready: Vec<Entry> = Vec::new();
        let mut settle = Vec::with_capacity(batch.len());
        {
            let mut holdback = self.holdback.lock().expect("hold-back lock poisoned");
            for incoming in batch {
                let order = incoming.entry.order;
                let from_master = matches!(incoming.source, Source::Master);
                if let Source::Queue {
                    redelivered: true, ..
                } = incoming.source
                {
                    tracing::debug!(%order, "entry redelivered by the broker");
                }
                let outcome = match holdback.offer(incoming.entry) {
                    Offered::Ready(entries) => {
                        ready.extend(entries);
                        Settle::Fresh
                    }
                    Offered::HeldBack => {
                        tracing::debug!(%order, applied = %holdback.applied(), "entry held back until the gap before it closes");
                        Settle::Deferred
                    }
                    Offered::Duplicate if order > holdback.applied() => {
                        // Delivered again while held back (the first delivery's channel may be
                        // gone): this delivery is the one to settle once the entry is stored.
                        tracing::debug!(%order, from_master, "dropped duplicate of a held-back entry");
                        Settle::Deferred
                    }
                    Offered::Duplicate => {
                        tracing::debug!(target: events::TARGET, event = events::DUPLICATE_DROPPED, order = order.get(), from_master);
                        Settle::Duplicate
                    }
                };
                settle.push((incoming.source, order, outcome));
            }
        }
        if !ready.is_empty() {
            let store = self.store.clone();
            let (first, last) = (ready[0].order, ready[ready.len() - 1].order);
            replog_shell::store::blocking(move || store.append(&ready)).await?;
            tracing::debug!(target: events::TARGET, event = events::STORED, first = first.get(), last = last.get());
            self.applied.send_replace(last);
        }
        let applied = *self.applied.borrow();
        let mut due = Vec::with_capacity(settle.len());
        for (source, order, outcome) in settle {
            let Source::Queue { acker, .. } = source else {
                continue;
            };
            match outcome {
                Settle::Deferred if order > applied => {
                    self.deferred.entry(order).or_default().push(acker);
                }
                Settle::Deferred => due.push((acker, order, Settle::Fresh)),
                other => due.push((acker, order, other)),
            }
        }
        let still_held = self.deferred.split_off(&applied.next());
        for (order, ackers) in std::mem::replace(&mut self.deferred, still_held) {
            due.extend(
                ackers
                    .into_iter()
                    .map(|acker| (acker, order, Settle::Fresh)),
            );
        }
        for (acker, order, outcome) in due {
            self.settle(acker, order, outcome).await;
        }
        Ok(())
    }

    /// Acks a stored delivery, or with `--fail-rate` nacks a fresh one for redelivery.
    async fn settle(&self, acker: Acker, order: Order, outcome: Settle) {
        let fail = outcome == Settle::Fresh
            && self.fail_rate > 0.0
            && rand::rng().random_bool(self.fail_rate);
        let result = if fail {
            tracing::info!(%order, "failure injection: nacking a stored entry for redelivery");
            acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        } else {
            acker.ack(BasicAckOptions::default()).await
        };
        match result {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(%order, "the delivery's channel is gone; the broker redelivers it")
            }
            Err(error) => {
                tracing::warn!(%order, %error, "cannot settle the delivery; the broker will redeliver it")
            }
        }
    }
}
