//! Publishing stored entries to the `<ns>.entries` fanout exchange.
//!
//! One task, one channel, publisher confirms on, pipelined: up to [`MAX_IN_FLIGHT`] publishes
//! await their confirms at once, in log order, with no round trip per entry. The publisher reads
//! what to publish from the log store (the writer only announces how far the log is stored), so
//! what it holds in memory is bounded by the pipeline, however long the broker is away. What
//! the writer has just stored comes from the store's in-memory tail ([`TailCachedLog`]), with
//! no disk read and no hop to the blocking pool.
//!
//! What each confirm means is the [`ConfirmWindow`]'s decision: everything up to `confirmed` is
//! confirmed by the broker; a nack, a confirm that does not come in time (a frozen broker never
//! confirms), an unroutable return or a lost channel all lead to the same recovery: a fresh
//! channel, the topology declared again, and every entry after `confirmed` published again in
//! order. Secondaries drop the duplicates this may create. This task only carries the decisions
//! out: it reads and publishes, keeps lapin's confirm futures in order, tells the window what
//! came of each (and what time it is), and follows its answer.

use futures_util::stream::{FuturesOrdered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use replog_common::rules::confirm_window::{ConfirmWindow, Decision};
use replog_common::rules::linger::{Linger, PublishTiming, Unpublished};
use replog_common::wire::run::{encode_run, RunLimits, RUN_TYPE};
use replog_common::{Entry, Incarnation, NodeId, Order};
use replog_shell::amqp::{self, close_channel, AmqpError, Backoff, Broker};
use replog_shell::store::{self, LogStore, StoreError, TailCachedLog};
use replog_shell::topology::{QueueType, Topology};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Publishes awaiting a confirm at once; bounds what a slow broker makes us hold.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Entries read from the store at a time.
const READ_BATCH: usize = 512;

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
    /// This master's data directory incarnation, stamped on every entry: a secondary reports
    /// it back, so that a position beyond the log is evidence only when this master published it.
    pub incarnation: Incarnation,
    /// How large one entries message may grow (`--run-entries`, `--run-bytes`).
    pub runs: RunLimits,
    /// Most entries messages awaiting a confirm at once (`--publishes-in-flight`).
    pub publishes_in_flight: usize,
    /// How long entries no write waits for may gather before they are published
    /// (`--linger-ms`); see [`replog_common::rules::linger`].
    pub linger: Duration,
    /// The broker user the master connects as, stamped on every entry as its AMQP `user_id`:
    /// the broker refuses a publish whose `user_id` is not the connection's user, so a
    /// secondary started with `--master-user` knows an entry came from the master.
    pub broker_user: String,
}

/// The outcome of one publish: its order and the broker's confirm. Timeouts are the
/// [`ConfirmWindow`]'s to decide.
type ConfirmFuture =
    Pin<Box<dyn Future<Output = (Order, Result<Confirmation, lapin::Error>)> + Send>>;

/// A stopping master's last work on its channel: it publishes what was stored when it was told
/// to stop (as the publish limit lets it), then only drains confirms, until one deadline.
struct Drain {
    /// The last entry stored when the stop came; nothing after it is published.
    flush_to: Order,
    /// When the publisher gives up on outstanding confirms.
    deadline: Instant,
}

impl Drain {
    /// A drain starting now, of everything stored up to `stored`.
    fn from(stored: Order) -> Self {
        Drain {
            flush_to: stored,
            deadline: Instant::now() + DRAIN_TIMEOUT,
        }
    }
}

/// Why the current channel was given up.
enum ChannelLost {
    /// The master is stopping.
    Stopped,
    /// Publish everything unconfirmed again on a fresh channel.
    Republish(String),
}

/// The publishing task.
pub struct Publisher {
    /// Connection source.
    broker: Broker,
    /// Cluster names and settings.
    settings: PublisherSettings,
    /// Where the entries are read from: the newest from memory, older ones from the disk.
    store: Arc<TailCachedLog>,
    /// How far the log is stored, announced by the writer.
    stored: watch::Receiver<Order>,
    /// The highest order a write waits for replication of: up to there, publish at once.
    awaited: watch::Receiver<Order>,
    /// When entries nobody waits for go out.
    linger: Linger,
    /// Everything up to here is confirmed by the broker; published for persistence and health.
    confirmed: watch::Sender<Order>,
    /// What is published and confirmed, and what each confirm (or its absence) means.
    window: ConfirmWindow,
    /// The highest order this process published: a publish at or below it is a republish.
    published_through: Order,
}

impl Publisher {
    /// A publisher that starts after `confirmed` (everything after it, if stored, is published
    /// again), follows `stored`, and publishes at once up to `awaited`.
    pub fn new(
        broker: Broker,
        settings: PublisherSettings,
        store: Arc<TailCachedLog>,
        stored: watch::Receiver<Order>,
        awaited: watch::Receiver<Order>,
        confirmed: watch::Sender<Order>,
    ) -> Publisher {
        let start = *confirmed.borrow();
        let window = ConfirmWindow::new(start, MAX_IN_FLIGHT, settings.confirm_timeout)
            .with_publish_limit(settings.publishes_in_flight);
        let linger = Linger::new(settings.linger, settings.runs.entries as u64);
        Publisher {
            broker,
            settings,
            store,
            stored,
            awaited,
            linger,
            published_through: start,
            confirmed,
            window,
        }
    }

    /// Declares everything the cluster needs and enables confirms on a fresh channel.
    async fn prepare(
        broker: &Broker,
        settings: &PublisherSettings,
        channel: Channel,
    ) -> Result<Channel, AmqpError> {
        // Two masters numbering entries into one namespace would make the nodes diverge: only
        // the holder of the master role publishes.
        amqp::claim_role(&channel, &settings.topology, "master").await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        amqp::declare_entries_exchange(&channel, &settings.topology).await?;
        for id in &settings.secondaries {
            amqp::declare_secondary_queue(&channel, &settings.topology, id, settings.queue_type)
                .await?;
        }
        amqp::declare_acks_route_replacing(broker, &channel, &settings.topology).await?;
        Ok(channel)
    }

    /// Runs until `stop`, then waits briefly for outstanding confirms.
    pub async fn run(mut self, stop: CancellationToken) {
        if self.settings.secondaries.is_empty() {
            self.alone(&stop).await;
            return;
        }
        // Backs off between republishes that make no progress, so a broker that keeps refusing
        // (a queue without its quorum, an entry it will not take) is not hammered.
        let mut backoff = Backoff::new();
        loop {
            let settings = self.settings.clone();
            let broker = self.broker.clone();
            let Some(channel) = self
                .broker
                .open_channel_with_retry("publish entries", &stop, |channel| {
                    Self::prepare(&broker, &settings, channel)
                })
                .await
            else {
                break;
            };
            let confirmed = *self.confirmed.borrow();
            tracing::info!(
                exchange = %self.settings.topology.entries_exchange(),
                %confirmed,
                stored = %*self.stored.borrow(),
                "publisher ready; publishing everything after the last confirmed entry"
            );
            match self.publish_on(&channel, &stop).await {
                ChannelLost::Stopped => {
                    close_channel(&channel, "master stopping").await;
                    break;
                }
                ChannelLost::Republish(reason) => {
                    if *self.confirmed.borrow() > confirmed {
                        backoff = Backoff::new();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(%reason, confirmed = %*self.confirmed.borrow(), ?delay, "publishing unconfirmed entries again on a fresh channel");
                    close_channel(&channel, "republishing").await;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        }
        let (confirmed, stored) = (*self.confirmed.borrow(), *self.stored.borrow());
        if confirmed < stored {
            tracing::warn!(%confirmed, %stored, "stopped before the broker confirmed every entry; they are in the log and are published again at the next start");
        }
    }

    /// A master with no secondaries (`--secondaries ""`) publishes nothing: no queue is bound
    /// to the exchange, so every mandatory publish would come back unroutable and be retried
    /// for ever. Its log is the whole replica set: what is stored counts as confirmed.
    async fn alone(&mut self, stop: &CancellationToken) {
        tracing::info!(
            "no secondaries: publishing nothing, every stored entry counts as confirmed"
        );
        loop {
            let stored = *self.stored.borrow_and_update();
            if stored > *self.confirmed.borrow() {
                self.confirmed.send_replace(stored);
            }
            tokio::select! {
                changed = self.stored.changed() => if changed.is_err() { break },
                _ = stop.cancelled() => break,
            }
        }
    }

    async fn publish_on(&mut self, channel: &Channel, stop: &CancellationToken) -> ChannelLost {
        // Every way off a channel goes through the window, which forgets what was in flight.
        debug_assert_eq!(self.window.in_flight(), 0, "a fresh channel starts empty");
        let mut confirms: FuturesOrdered<ConfirmFuture> = FuturesOrdered::new();
        // Once a drain's entries are out, nothing is left up to its `flush_to`, and the linger
        // answers `Idle`.
        let mut drain: Option<Drain> = None;
        let mut awaited_open = true;
        loop {
            let draining = drain.is_some();
            let stored = match &drain {
                Some(drain) => drain.flush_to,
                None => *self.stored.borrow_and_update(),
            };
            let mut linger_until = None;
            let mut publish_now = false;
            match self.timing(stored, draining) {
                PublishTiming::Idle => {}
                PublishTiming::Now => publish_now = true,
                PublishTiming::At(when) => linger_until = Some(when),
            }
            while publish_now && self.window.next() <= stored && self.window.room() > 0 {
                let next = self.window.next();
                // No more than the runs the publish limit lets out now: what is read beyond
                // them would be dropped and read again after the next confirm.
                let runs = self.window.publishes_room();
                let room = self
                    .window
                    .room()
                    .min(READ_BATCH)
                    .min(runs.saturating_mul(self.settings.runs.entries.max(1)));
                let entries = match self.read(next, room).await {
                    Ok(entries) if !entries.is_empty() => entries,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::error!(%error, %next, "cannot read entries to publish; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                            _ = stop.cancelled() => return ChannelLost::Stopped,
                        }
                    }
                };
                // Whatever is stored and unpublished goes out now, in runs of up to the limits,
                // as long as the window has room: a lone write travels alone, a burst shares
                // few messages, and what the publish limit holds back is read again once a
                // confirm makes room.
                let mut rest = &entries[..];
                while !rest.is_empty() && self.window.room() > 0 {
                    let (run, after) = rest.split_at(self.settings.runs.take(rest));
                    rest = after;
                    let again = run
                        .iter()
                        .filter(|entry| entry.order <= self.published_through)
                        .count();
                    if again > 0 {
                        metrics::counter!(crate::metrics::REPUBLISHED_TOTAL)
                            .increment(again as u64);
                    }
                    self.published_through = self.published_through.max(run[run.len() - 1].order);
                    match self.publish(channel, run).await {
                        Ok(confirm) => {
                            confirms.push_back(confirm);
                            let (first, last) = (run[0].order, run[run.len() - 1].order);
                            self.window.published_run(first, last, Instant::now());
                        }
                        Err(error) => {
                            self.window.channel_lost();
                            return ChannelLost::Republish(format!("publish failed: {error}"));
                        }
                    }
                }
            }
            if publish_now {
                self.linger.published(self.window.next() > stored);
            }
            if draining && confirms.is_empty() {
                return ChannelLost::Stopped;
            }
            let deadline = self.window.deadline();
            tokio::select! {
                changed = self.stored.changed(), if !draining => {
                    if changed.is_err() {
                        drain = Some(Drain::from(*self.stored.borrow()));
                    }
                }
                changed = self.awaited.changed(), if linger_until.is_some() && awaited_open => {
                    awaited_open = changed.is_ok();
                }
                _ = until(linger_until), if linger_until.is_some() => {}
                Some((order, outcome)) = confirms.next(), if !confirms.is_empty() => {
                    let (decision, reason) = match outcome {
                        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
                            tracing::debug!(%order, "entry confirmed by the broker");
                            (self.window.acked(order), String::new())
                        }
                        Ok(Confirmation::Ack(Some(_))) => (
                            self.window.returned(order),
                            format!("entry {order} was unroutable (a queue is missing); declaring again"),
                        ),
                        Ok(Confirmation::Nack(_)) => (
                            self.window.nacked(order),
                            format!("the broker nacked entry {order}"),
                        ),
                        Err(error) => (
                            self.window.channel_lost(),
                            format!("confirm of entry {order} failed: {error}"),
                        ),
                    };
                    if let Some(lost) = self.carry_out(decision, reason) {
                        return lost;
                    }
                }
                _ = until(deadline), if deadline.is_some() => {
                    let decision = self.window.tick(Instant::now());
                    let reason = match decision {
                        Decision::Republish { from } => format!(
                            "no confirm for entry {from} within {:?}",
                            self.settings.confirm_timeout
                        ),
                        _ => String::new(),
                    };
                    if let Some(lost) = self.carry_out(decision, reason) {
                        return lost;
                    }
                }
                _ = stop.cancelled(), if !draining => {
                    drain = Some(Drain::from(*self.stored.borrow_and_update()));
                    tracing::info!(in_flight = confirms.len(), "publisher draining outstanding confirms");
                }
                _ = until(drain.as_ref().map(|drain| drain.deadline)), if draining => return ChannelLost::Stopped,
            }
        }
    }

    /// Whether to publish what is stored now: at once when a write waits for it, when it is
    /// published again, or when the master stops; otherwise once a full run gathered or the
    /// linger ran out.
    fn timing(&mut self, stored: Order, draining: bool) -> PublishTiming {
        let next = self.window.next();
        let entries = (stored.get() + 1).saturating_sub(next.get());
        let awaited = *self.awaited.borrow_and_update();
        let urgent = draining || next <= self.published_through || awaited >= next;
        self.linger
            .decide(Unpublished { entries, urgent }, Instant::now())
    }

    /// Carries out the window's decision: publishes how far the log is confirmed, or gives the
    /// channel up (for `reason`) so that everything unconfirmed is published again.
    fn carry_out(&self, decision: Decision, reason: String) -> Option<ChannelLost> {
        match decision {
            Decision::Nothing => None,
            Decision::Advance(to) => {
                self.confirmed.send_replace(to);
                None
            }
            Decision::Republish { .. } => Some(ChannelLost::Republish(reason)),
        }
    }

    /// Up to `limit` entries from `from`: what the writer just stored comes from memory, with
    /// no hop to the blocking pool; anything older (a republish, a start) from the disk.
    async fn read(&self, from: Order, limit: usize) -> Result<Vec<Entry>, StoreError> {
        if let Some(entries) = self.store.read_cached(from, limit) {
            return Ok(entries);
        }
        let store = self.store.clone();
        store::blocking(move || store.read(from, limit)).await
    }

    /// Publishes `run` (consecutive stored entries) as one message; its confirm is named by
    /// the run's last order.
    async fn publish(
        &self,
        channel: &Channel,
        run: &[Entry],
    ) -> Result<ConfirmFuture, lapin::Error> {
        let payload = encode_run(run, Some(self.settings.incarnation));
        let (first, last) = (run[0].order, run[run.len() - 1].order);
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(RUN_TYPE.into())
            // Names the run in the management UI's "get messages": its orders.
            .with_message_id(format!("{first}-{last}").into())
            .with_user_id(self.settings.broker_user.as_str().into());
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
        tracing::trace!(%first, %last, "run published");
        let published = Instant::now();
        Ok(Box::pin(async move {
            let outcome = confirm.await;
            metrics::histogram!(crate::metrics::PUBLISH_CONFIRM_SECONDS)
                .record(published.elapsed());
            (last, outcome)
        }))
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
