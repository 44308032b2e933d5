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

use crate::incoming::{Incoming, Source};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Acker;
use rand::Rng;
use replog_common::rules::apply::{
    ApplyEngine, Backlog, DeliveryTag, Offer, Settle, Settlement, Verdict,
};
use replog_common::{events, Order};
use replog_shell::store::LogStore;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long acking or nacking one delivery may take before it is left to the broker to
/// redeliver.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most entries taken in one batch.
const MAX_BATCH: usize = 1024;

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
    ackers: HashMap<DeliveryTag, Acker>,
    /// The next delivery's tag.
    next_tag: u64,
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
            next_tag: 0,
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
        let offers: Vec<Offer> = batch
            .into_iter()
            .map(|incoming| self.offer(incoming))
            .collect();
        let plan = self.engine.on_batch(offers);
        for verdict in plan.verdicts {
            log_verdict(verdict);
        }
        self.backlog.send_replace(self.engine.backlog());
        let ready = plan.append;
        if !ready.is_empty() {
            let store = self.store.clone();
            let (first, last) = (ready[0].order, ready[ready.len() - 1].order);
            replog_shell::store::blocking(move || store.append(&ready)).await?;
            tracing::debug!(target: events::TARGET, event = events::STORED, first = first.get(), last = last.get());
            self.applied.send_replace(last);
        }
        for settlement in self.engine.on_stored() {
            let acker = self
                .ackers
                .remove(&settlement.tag)
                .expect("every settled tag was handed out with an acker");
            self.settle(acker, settlement).await;
        }
        Ok(())
    }

    /// Turns an incoming entry into an offer, keeping its acker under a fresh tag.
    fn offer(&mut self, incoming: Incoming) -> Offer {
        match incoming.source {
            Source::Queue { acker, redelivered } => {
                if redelivered {
                    tracing::debug!(order = %incoming.entry.order, "entry redelivered by the broker");
                }
                let tag = DeliveryTag(self.next_tag);
                self.next_tag += 1;
                self.ackers.insert(tag, acker);
                Offer::delivered(incoming.entry, tag)
            }
            Source::Master => Offer::fetched(incoming.entry),
        }
    }

    /// Acks a stored delivery, or with `--fail-rate` nacks a fresh one for redelivery.
    async fn settle(&self, acker: Acker, Settlement { order, settle, .. }: Settlement) {
        let fail = settle == Settle::Fresh
            && self.fail_rate > 0.0
            && rand::rng().random_bool(self.fail_rate);
        let settled = async {
            if fail {
                tracing::info!(%order, "failure injection: nacking a stored entry for redelivery");
                acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            } else {
                acker.ack(BasicAckOptions::default()).await
            }
        };
        // An ack on a channel whose connection died with its broker node was seen never to
        // return, which stopped the applier (and so catch-up) for good. Unsettled is safe: the
        // broker redelivers, and the redelivery is dropped as a duplicate.
        let Ok(result) = tokio::time::timeout(SETTLE_LIMIT, settled).await else {
            tracing::warn!(%order, limit = ?SETTLE_LIMIT, "settling the delivery did not finish in time; the broker will redeliver it");
            return;
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
            tracing::debug!(%order, from_master, "dropped duplicate of a held-back entry");
        }
        Verdict::Duplicate {
            order,
            fetched: from_master,
        } => {
            tracing::debug!(target: events::TARGET, event = events::DUPLICATE_DROPPED, order = order.get(), from_master);
        }
    }
}
