//! The secondary's applier as an engine: which entries to append, which deliveries to settle
//! once they are stored, and whether this node's history has forked from the master's.
//!
//! The shell hands it a batch of [`Offer`]s (entries from the queue, each with an opaque
//! [`DeliveryTag`], or fetched from the master with none) and gets back an [`ApplyPlan`]: the
//! newly contiguous entries to append in one store call, and a [`Verdict`] per offer to log.
//! Once the append is on disk the shell calls [`ApplyEngine::on_stored`] and settles exactly the
//! [`Settlement`]s it returns. A delivery is settled only once its entry's order is stored, so
//! nothing is acked before it is on disk: a delivery held back beyond a gap (or delivered again
//! while held back) waits until the gap closes, and every delivery of such an order is settled
//! then, since which of them is still live with the broker is not known.
//!
//! # Divergence
//! An entry offered at an order this node already holds is a duplicate only if it carries the
//! same message id. With another id, the master's history and this node's have forked (the
//! master lost entries and numbered new writes over them, or someone published a forged
//! entry): the node has **diverged**. The engine refuses that entry (it is never stored and its
//! delivery is rejected, never acked, so it cannot loop through the queue either), records a
//! [`Divergence`] and from then on applies nothing: every later offer is [`Verdict::Refused`]
//! and its delivery left unsettled for the broker to hand to the rebuilt node. A diverged node
//! stays diverged until it is restarted on rebuilt data; what it stored before still stands.
//!
//! To compare, the engine needs the message id this node holds at the offered order. Held-back
//! entries are at hand; for applied ones it remembers the ids of the newest [`RECENT_IDS`]
//! orders. Older orders it cannot answer alone: before each batch the shell asks
//! [`ApplyEngine::lookups`] which stored orders it must read, reads their ids from its store and
//! passes them to [`ApplyEngine::on_batch`]. The engine itself never does I/O.

use crate::entry::Entry;
use crate::ids::{MessageId, Order};
use crate::rules::holdback::{HoldBack, Offered};
use std::collections::{BTreeMap, VecDeque};

/// How many of the newest applied orders' message ids the engine remembers, so that a
/// redelivery near the end of the log is checked without a store read. Above the default
/// prefetch: what the broker redelivers after a lost channel is within the last window.
pub const RECENT_IDS: usize = 4096;

/// The message ids this node holds at stored orders, read by the shell for the orders
/// [`ApplyEngine::lookups`] named.
pub type StoredIds = BTreeMap<Order, MessageId>;

/// Names one delivery for the shell, which maps it to whatever settles it with the broker.
///
/// Opaque to the engine and unique per delivery for the life of the engine: a broker's own
/// delivery tags restart with each channel, so the shell numbers deliveries itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryTag(pub u64);

/// One entry on its way into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The entry.
    pub entry: Entry,
    /// The delivery to settle once the entry is stored; `None` for an entry fetched from the
    /// master, which has nothing to settle.
    pub delivery: Option<DeliveryTag>,
}

impl Offer {
    /// An entry delivered by the queue as `tag`.
    pub fn delivered(entry: Entry, tag: DeliveryTag) -> Offer {
        Offer {
            entry,
            delivery: Some(tag),
        }
    }

    /// An entry fetched from the master.
    pub fn fetched(entry: Entry) -> Offer {
        Offer {
            entry,
            delivery: None,
        }
    }
}

/// Evidence that this node's history and the master's have forked: at `order` this node holds
/// `held`, and `offered` arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The order both claim.
    pub order: Order,
    /// The message id this node holds there (stored or held back).
    pub held: MessageId,
    /// The message id that was offered there.
    pub offered: MessageId,
    /// The offered entry came from the master rather than the queue.
    pub fetched: bool,
}

/// What became of one offer, for the shell to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The entry extended the applied prefix (with any held-back entries it made contiguous).
    Ready {
        /// The offered entry's order.
        order: Order,
    },
    /// The entry is ahead of a gap; it waits for the missing ones.
    HeldBack {
        /// The offered entry's order.
        order: Order,
        /// The end of the applied prefix when it was held back.
        applied: Order,
    },
    /// Offered again while held back (the first delivery's channel may be gone): dropped, and
    /// this delivery too is settled once the entry is stored.
    HeldAgain {
        /// The offered entry's order.
        order: Order,
        /// It came from the master rather than the queue.
        fetched: bool,
    },
    /// The entry is already applied: dropped, its delivery acked once the batch is stored.
    Duplicate {
        /// The offered entry's order.
        order: Order,
        /// It came from the master rather than the queue.
        fetched: bool,
    },
    /// The entry conflicts with the one this node holds at its order: the node has diverged.
    /// The entry is dropped and its delivery rejected without requeue ([`ApplyPlan::reject`]).
    Diverged(Divergence),
    /// The node diverged earlier: nothing is applied any more. The entry is dropped and its
    /// delivery left unsettled ([`ApplyPlan::abandon`]).
    Refused {
        /// The offered entry's order.
        order: Order,
        /// It came from the master rather than the queue.
        fetched: bool,
    },
}

/// The engine's answer to a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyPlan {
    /// Entries that newly extend the applied prefix, in order: append them in one store call,
    /// then call [`ApplyEngine::on_stored`]. Empty when the batch extended nothing.
    pub append: Vec<Entry>,
    /// One verdict per offer, in the order offered.
    pub verdicts: Vec<Verdict>,
    /// Deliveries of conflicting entries: reject them without requeue now (nothing is stored
    /// for them, and a requeue would only bring them back).
    pub reject: Vec<DeliveryTag>,
    /// Deliveries offered after the node diverged: drop them unsettled, so the broker keeps
    /// them for the node once it is rebuilt (and the prefetch window stops further deliveries).
    pub abandon: Vec<DeliveryTag>,
}

/// How a stored delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// This node stored the entry for this delivery (now or after holding it back): ack it, or,
    /// under failure injection, nack it for redelivery as if the node crashed after the write.
    Fresh,
    /// The entry was already applied when it arrived: ack it, always.
    Duplicate,
}

/// One delivery the shell may settle now, because its entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// The delivery.
    pub tag: DeliveryTag,
    /// Its entry's order, for the log.
    pub order: Order,
    /// Ack, or possibly nack under failure injection.
    pub settle: Settle,
}

/// The hold-back buffer as other tasks see it: published by the shell after each batch for the
/// catch-up task (which fetches gaps) and `/health`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// The end of the contiguous prefix handed out for storing.
    pub applied: Order,
    /// The missing range before the first held-back entry, if any.
    pub gap: Option<(Order, Order)>,
    /// How many entries wait behind the gap.
    pub held_back: usize,
    /// The node diverged: it applies nothing more, so there is nothing worth fetching.
    pub diverged: bool,
}

/// The message ids of the newest applied orders, a contiguous window ending at the applied
/// position.
#[derive(Debug, Default)]
struct RecentIds {
    /// The order of the first id in `ids`.
    first: Order,
    /// Ids of `first`, `first + 1`, ...: at most [`RECENT_IDS`].
    ids: VecDeque<MessageId>,
}

impl RecentIds {
    /// An empty window whose next order is `applied + 1`.
    fn after(applied: Order) -> RecentIds {
        RecentIds {
            first: applied.next(),
            ids: VecDeque::new(),
        }
    }

    /// Remembers the id at `order`, the next applied order; forgets the oldest beyond the bound.
    fn push(&mut self, order: Order, id: MessageId) {
        let next = Order(self.first.get() + self.ids.len() as u64);
        if order != next {
            // Not contiguous (cannot happen: ready entries come in order): start over here.
            self.first = order;
            self.ids.clear();
        }
        self.ids.push_back(id);
        if self.ids.len() > RECENT_IDS {
            self.ids.pop_front();
            self.first = self.first.next();
        }
    }

    /// The id at `order`, if it is within the window.
    fn get(&self, order: Order) -> Option<&MessageId> {
        let index = order.get().checked_sub(self.first.get())?;
        self.ids.get(usize::try_from(index).ok()?)
    }
}

/// The applier's rules: hold-back, dedup, divergence, and which deliveries are settled when.
#[derive(Debug, Default)]
pub struct ApplyEngine {
    /// Orders entries and drops duplicates.
    holdback: HoldBack,
    /// Ids of the newest applied orders, to tell a duplicate from a conflict without the store.
    recent: RecentIds,
    /// Set once an offer conflicted with what this node holds: nothing is applied after it.
    diverged: Option<Divergence>,
    /// The end of what the shell reported stored; deliveries up to here may be settled.
    stored: Order,
    /// Deliveries by their entry's order, waiting for it to be stored. An order may have several
    /// (a republished duplicate, a redelivery after a lost channel): which of them is still live
    /// is not known, so all wait and all are settled.
    waiting: BTreeMap<Order, Vec<(DeliveryTag, Settle)>>,
}

impl ApplyEngine {
    /// An engine for a node whose log already holds everything up to `stored`.
    pub fn new(stored: Order) -> ApplyEngine {
        ApplyEngine {
            holdback: HoldBack::new(stored),
            recent: RecentIds::after(stored),
            diverged: None,
            stored,
            waiting: BTreeMap::new(),
        }
    }

    /// The divergence this node found, if it found one: then it applies nothing any more.
    pub fn diverged(&self) -> Option<&Divergence> {
        self.diverged.as_ref()
    }

    /// The applied orders among `offers` whose message id the engine does not remember: read
    /// them from the store and pass them to [`ApplyEngine::on_batch`] with the same offers.
    /// Sorted, each once; empty once the node diverged (nothing is compared then).
    pub fn lookups(&self, offers: &[Offer]) -> Vec<Order> {
        if self.diverged.is_some() {
            return Vec::new();
        }
        let applied = self.holdback.applied();
        let mut orders: Vec<Order> = offers
            .iter()
            .map(|offer| offer.entry.order)
            .filter(|&order| order <= applied && self.recent.get(order).is_none())
            .collect();
        orders.sort_unstable();
        orders.dedup();
        orders
    }

    /// The id this node holds at `order`, if it holds one and knows it: held back, among the
    /// recent ids, or read by the shell.
    fn held_id<'a>(&'a self, order: Order, stored: &'a StoredIds) -> Option<&'a MessageId> {
        if order > self.holdback.applied() {
            return self.holdback.held(order).map(|entry| &entry.message_id);
        }
        self.recent.get(order).or_else(|| stored.get(&order))
    }

    /// The end of the contiguous prefix handed out for storing (stored or about to be).
    pub fn applied(&self) -> Order {
        self.holdback.applied()
    }

    /// The end of what the shell reported stored.
    pub fn stored(&self) -> Order {
        self.stored
    }

    /// How many deliveries wait for their entry to be stored.
    pub fn unsettled(&self) -> usize {
        self.waiting.values().map(Vec::len).sum()
    }

    /// The hold-back buffer's outline, for other tasks.
    pub fn backlog(&self) -> Backlog {
        Backlog {
            applied: self.holdback.applied(),
            gap: self.holdback.gap(),
            held_back: self.holdback.held_count(),
            diverged: self.diverged.is_some(),
        }
    }

    /// Runs a batch through the hold-back buffer. `stored` holds the ids the shell read for the
    /// orders [`ApplyEngine::lookups`] named for these offers (an order it could not tell is
    /// taken as a duplicate). Settles nothing: the deliveries wait for
    /// [`ApplyEngine::on_stored`], except conflicting ones ([`ApplyPlan::reject`]) and those
    /// refused after a divergence ([`ApplyPlan::abandon`]).
    pub fn on_batch(&mut self, offers: Vec<Offer>, stored: &StoredIds) -> ApplyPlan {
        let mut plan = ApplyPlan {
            verdicts: Vec::with_capacity(offers.len()),
            ..ApplyPlan::default()
        };
        for offer in offers {
            let order = offer.entry.order;
            let fetched = offer.delivery.is_none();
            if self.diverged.is_some() {
                plan.abandon.extend(offer.delivery);
                plan.verdicts.push(Verdict::Refused { order, fetched });
                continue;
            }
            if let Some(held) = self.held_id(order, stored) {
                if *held != offer.entry.message_id {
                    let divergence = Divergence {
                        order,
                        held: held.clone(),
                        offered: offer.entry.message_id,
                        fetched,
                    };
                    self.diverged = Some(divergence.clone());
                    plan.reject.extend(offer.delivery);
                    plan.verdicts.push(Verdict::Diverged(divergence));
                    continue;
                }
            }
            let (verdict, settle) = match self.holdback.offer(offer.entry) {
                Offered::Ready(entries) => {
                    for entry in &entries {
                        self.recent.push(entry.order, entry.message_id.clone());
                    }
                    plan.append.extend(entries);
                    (Verdict::Ready { order }, Settle::Fresh)
                }
                Offered::HeldBack => {
                    let applied = self.holdback.applied();
                    (Verdict::HeldBack { order, applied }, Settle::Fresh)
                }
                Offered::Duplicate if order > self.holdback.applied() => {
                    (Verdict::HeldAgain { order, fetched }, Settle::Fresh)
                }
                Offered::Duplicate => (Verdict::Duplicate { order, fetched }, Settle::Duplicate),
            };
            if let Some(tag) = offer.delivery {
                self.waiting.entry(order).or_default().push((tag, settle));
            }
            plan.verdicts.push(verdict);
        }
        plan
    }

    /// The shell stored every plan's `append` (call it after each batch, even when `append` was
    /// empty): returns the deliveries that may be settled now, those whose order is stored.
    pub fn on_stored(&mut self) -> Vec<Settlement> {
        self.stored = self.holdback.applied();
        let still_waiting = self.waiting.split_off(&self.stored.next());
        std::mem::replace(&mut self.waiting, still_waiting)
            .into_iter()
            .flat_map(|(order, deliveries)| {
                deliveries
                    .into_iter()
                    .map(move |(tag, settle)| Settlement { tag, order, settle })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The master's entry at `order`: every delivery of it carries the same id.
    fn entry(order: u64) -> Entry {
        Entry::of(order, &format!("id-{order}"), &format!("m{order}"))
    }

    /// An entry at `order` that is not the master's: another id.
    fn forged(order: u64) -> Entry {
        Entry::of(order, &format!("forged-{order}"), "forged")
    }

    fn delivered(order: u64, tag: u64) -> Offer {
        Offer::delivered(entry(order), DeliveryTag(tag))
    }

    fn fetched(order: u64) -> Offer {
        Offer::fetched(entry(order))
    }

    /// Runs a batch as the shell does: the lookups the engine asks for are answered from a log
    /// that holds the master's entries.
    fn run(engine: &mut ApplyEngine, offers: Vec<Offer>) -> ApplyPlan {
        let stored: StoredIds = engine
            .lookups(&offers)
            .into_iter()
            .map(|order| (order, entry(order.get()).message_id))
            .collect();
        engine.on_batch(offers, &stored)
    }

    fn orders(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.order.get()).collect()
    }

    fn tags(settlements: &[Settlement]) -> Vec<u64> {
        let mut tags: Vec<u64> = settlements.iter().map(|s| s.tag.0).collect();
        tags.sort_unstable();
        tags
    }

    #[test]
    fn in_order_deliveries_are_appended_then_acked() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        let plan = run(&mut engine, vec![delivered(1, 10), delivered(2, 11)]);
        assert_eq!(orders(&plan.append), vec![1, 2]);
        assert_eq!(
            plan.verdicts,
            vec![
                Verdict::Ready { order: Order(1) },
                Verdict::Ready { order: Order(2) }
            ]
        );
        assert_eq!(engine.stored(), Order::ZERO);
        let settled = engine.on_stored();
        assert_eq!(
            settled,
            vec![
                Settlement {
                    tag: DeliveryTag(10),
                    order: Order(1),
                    settle: Settle::Fresh
                },
                Settlement {
                    tag: DeliveryTag(11),
                    order: Order(2),
                    settle: Settle::Fresh
                },
            ]
        );
        assert_eq!(engine.stored(), Order(2));
        assert_eq!(engine.unsettled(), 0);
    }

    #[test]
    fn nothing_is_settled_before_the_append_is_reported_stored() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        let first = run(&mut engine, vec![delivered(1, 1), delivered(1, 2)]);
        let second = run(&mut engine, vec![delivered(2, 3), fetched(3)]);
        // on_batch hands out entries to append, never settlements: everything waits.
        assert_eq!(orders(&first.append), vec![1]);
        assert_eq!(orders(&second.append), vec![2, 3]);
        assert_eq!(engine.unsettled(), 3);
        assert_eq!(engine.stored(), Order::ZERO);
        assert_eq!(tags(&engine.on_stored()), vec![1, 2, 3]);
        assert_eq!(engine.on_stored(), vec![]);
    }

    #[test]
    fn duplicates_of_stored_entries_are_acked_with_the_next_batch() {
        let mut engine = ApplyEngine::new(Order(5));
        let plan = run(
            &mut engine,
            vec![delivered(3, 1), fetched(5), delivered(5, 2)],
        );
        assert!(plan.append.is_empty());
        assert_eq!(
            plan.verdicts,
            vec![
                Verdict::Duplicate {
                    order: Order(3),
                    fetched: false
                },
                Verdict::Duplicate {
                    order: Order(5),
                    fetched: true
                },
                Verdict::Duplicate {
                    order: Order(5),
                    fetched: false
                },
            ]
        );
        let settled = engine.on_stored();
        assert_eq!(tags(&settled), vec![1, 2]);
        assert!(settled.iter().all(|s| s.settle == Settle::Duplicate));
    }

    #[test]
    fn a_duplicate_within_one_batch_is_acked_as_a_duplicate_after_the_append() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        let plan = run(&mut engine, vec![delivered(1, 1), delivered(1, 2)]);
        assert_eq!(orders(&plan.append), vec![1]);
        let settled = engine.on_stored();
        assert_eq!(
            settled,
            vec![
                Settlement {
                    tag: DeliveryTag(1),
                    order: Order(1),
                    settle: Settle::Fresh
                },
                Settlement {
                    tag: DeliveryTag(2),
                    order: Order(1),
                    settle: Settle::Duplicate
                },
            ]
        );
    }

    #[test]
    fn a_gap_is_held_until_a_fetched_entry_fills_it() {
        let mut engine = ApplyEngine::new(Order(1));
        let plan = run(&mut engine, vec![delivered(3, 1), delivered(4, 2)]);
        assert!(plan.append.is_empty());
        assert_eq!(
            plan.verdicts[0],
            Verdict::HeldBack {
                order: Order(3),
                applied: Order(1)
            }
        );
        assert_eq!(engine.on_stored(), vec![]);
        assert_eq!(
            engine.backlog(),
            Backlog {
                applied: Order(1),
                gap: Some((Order(2), Order(2))),
                held_back: 2,
                diverged: false,
            }
        );

        let plan = run(&mut engine, vec![fetched(2)]);
        assert_eq!(orders(&plan.append), vec![2, 3, 4]);
        assert_eq!(plan.verdicts, vec![Verdict::Ready { order: Order(2) }]);
        let settled = engine.on_stored();
        assert_eq!(tags(&settled), vec![1, 2]);
        assert!(settled.iter().all(|s| s.settle == Settle::Fresh));
        assert_eq!(
            engine.backlog(),
            Backlog {
                applied: Order(4),
                gap: None,
                held_back: 0,
                diverged: false,
            }
        );
    }

    #[test]
    fn every_delivery_of_a_held_back_order_is_settled_once_it_is_stored() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        run(&mut engine, vec![delivered(2, 1)]);
        engine.on_stored();
        // Delivered again (a redelivery after a lost channel) and fetched while held back.
        let plan = run(
            &mut engine,
            vec![delivered(2, 2), fetched(2), delivered(2, 3)],
        );
        assert_eq!(
            plan.verdicts,
            vec![
                Verdict::HeldAgain {
                    order: Order(2),
                    fetched: false
                },
                Verdict::HeldAgain {
                    order: Order(2),
                    fetched: true
                },
                Verdict::HeldAgain {
                    order: Order(2),
                    fetched: false
                },
            ]
        );
        assert_eq!(engine.on_stored(), vec![]);
        assert_eq!(engine.unsettled(), 3);

        let plan = run(&mut engine, vec![delivered(1, 4)]);
        assert_eq!(orders(&plan.append), vec![1, 2]);
        let settled = engine.on_stored();
        assert_eq!(tags(&settled), vec![1, 2, 3, 4]);
        assert!(settled.iter().all(|s| s.settle == Settle::Fresh));
        assert_eq!(engine.unsettled(), 0);
    }

    #[test]
    fn a_store_that_never_completes_settles_nothing() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        let plan = run(&mut engine, vec![delivered(1, 1), delivered(3, 2)]);
        assert_eq!(orders(&plan.append), vec![1]);
        // The shell's append failed: it stops without calling on_stored, and the broker
        // redelivers everything to the next run.
        assert_eq!(engine.unsettled(), 2);
        assert_eq!(engine.stored(), Order::ZERO);
    }

    #[test]
    fn shuffled_duplicated_stream_stores_each_entry_once_and_settles_every_delivery() {
        // A deterministic shuffle with duplicates: every order 1..=200 is delivered 1-3 times;
        // order 77's deliveries are all lost and it is fetched from the master at the end.
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut step = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut stream: Vec<u64> = Vec::new();
        for order in (1..=200u64).filter(|&o| o != 77) {
            for _ in 0..=(step() % 3) {
                stream.push(order);
            }
        }
        for i in (1..stream.len()).rev() {
            stream.swap(i, (step() % (i as u64 + 1)) as usize);
        }
        let deliveries = stream.len();
        let mut offers: Vec<Offer> = stream
            .into_iter()
            .enumerate()
            .map(|(tag, order)| delivered(order, tag as u64))
            .collect();
        offers.push(fetched(77));

        let mut engine = ApplyEngine::new(Order::ZERO);
        let mut stored: Vec<u64> = Vec::new();
        let mut settled: Vec<Settlement> = Vec::new();
        let mut rest = offers.as_slice();
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at((step() % 17 + 1).min(rest.len() as u64) as usize);
            rest = tail;
            let plan = run(&mut engine, batch.to_vec());
            stored.extend(orders(&plan.append));
            let now = engine.on_stored();
            // Every settled delivery's entry is stored.
            assert!(now.iter().all(|s| s.order.get() <= stored.len() as u64));
            settled.extend(now);
        }
        assert_eq!(stored, (1..=200).collect::<Vec<_>>());
        assert_eq!(tags(&settled), (0..deliveries as u64).collect::<Vec<_>>());
        assert_eq!(engine.unsettled(), 0);
        assert_eq!(engine.backlog().gap, None);
    }

    fn divergence(order: u64, fetched: bool) -> Divergence {
        Divergence {
            order: Order(order),
            held: entry(order).message_id,
            offered: forged(order).message_id,
            fetched,
        }
    }

    #[test]
    fn an_entry_at_an_applied_order_with_another_id_is_a_divergence() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        run(&mut engine, vec![delivered(1, 1), delivered(2, 2)]);
        engine.on_stored();
        // A redelivery with the same id is a duplicate; another id at the same order is not.
        let plan = run(
            &mut engine,
            vec![delivered(2, 3), Offer::delivered(forged(1), DeliveryTag(4))],
        );
        assert!(plan.append.is_empty());
        assert_eq!(
            plan.verdicts,
            vec![
                Verdict::Duplicate {
                    order: Order(2),
                    fetched: false
                },
                Verdict::Diverged(divergence(1, false)),
            ]
        );
        assert_eq!(plan.reject, vec![DeliveryTag(4)]);
        assert_eq!(engine.diverged(), Some(&divergence(1, false)));
        // The duplicate is still acked; the conflicting delivery is never settled as stored.
        let settled = engine.on_stored();
        assert_eq!(tags(&settled), vec![3]);
        assert_eq!(engine.unsettled(), 0);
    }

    #[test]
    fn a_diverged_node_applies_nothing_more_and_leaves_deliveries_unsettled() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        run(&mut engine, vec![delivered(1, 1)]);
        engine.on_stored();
        // In one batch: 2 extends the log before the conflict is seen; 3 comes after it.
        let plan = run(
            &mut engine,
            vec![
                delivered(2, 2),
                Offer::fetched(forged(1)),
                delivered(3, 3),
                fetched(4),
            ],
        );
        assert_eq!(orders(&plan.append), vec![2]);
        assert_eq!(
            plan.verdicts[1..],
            [
                Verdict::Diverged(divergence(1, true)),
                Verdict::Refused {
                    order: Order(3),
                    fetched: false
                },
                Verdict::Refused {
                    order: Order(4),
                    fetched: true
                },
            ]
        );
        assert_eq!(plan.reject, vec![], "a fetched entry has no delivery");
        assert_eq!(plan.abandon, vec![DeliveryTag(3)]);
        // What was handed out before the divergence is stored and settled as usual.
        assert_eq!(tags(&engine.on_stored()), vec![2]);

        // Later batches, even of the master's own entries, are refused.
        let plan = run(&mut engine, vec![delivered(3, 4), delivered(2, 5)]);
        assert!(plan.append.is_empty());
        assert_eq!(plan.abandon, vec![DeliveryTag(4), DeliveryTag(5)]);
        assert!(plan
            .verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Refused { .. })));
        assert_eq!(engine.on_stored(), vec![]);
        assert_eq!(engine.stored(), Order(2));
        assert_eq!(engine.diverged(), Some(&divergence(1, true)));
    }

    #[test]
    fn an_entry_conflicting_with_a_held_back_one_is_a_divergence() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        run(&mut engine, vec![delivered(3, 1)]);
        let plan = run(
            &mut engine,
            vec![delivered(3, 2), Offer::delivered(forged(3), DeliveryTag(3))],
        );
        assert_eq!(
            plan.verdicts,
            vec![
                Verdict::HeldAgain {
                    order: Order(3),
                    fetched: false
                },
                Verdict::Diverged(divergence(3, false)),
            ]
        );
        assert_eq!(plan.reject, vec![DeliveryTag(3)]);
        // The gap closing no longer helps: nothing is applied after the divergence.
        let plan = run(&mut engine, vec![fetched(1), fetched(2)]);
        assert!(plan.append.is_empty());
        assert_eq!(engine.backlog().applied, Order::ZERO);
        assert!(engine.backlog().diverged);
    }

    #[test]
    fn a_conflict_within_one_batch_is_found_before_anything_is_stored() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        let plan = run(
            &mut engine,
            vec![delivered(1, 1), Offer::delivered(forged(1), DeliveryTag(2))],
        );
        assert_eq!(orders(&plan.append), vec![1]);
        assert_eq!(plan.verdicts[1], Verdict::Diverged(divergence(1, false)));
        assert_eq!(plan.reject, vec![DeliveryTag(2)]);
    }

    #[test]
    fn old_stored_orders_are_looked_up_in_the_store_and_recent_ones_are_not() {
        // Restarted with 10 stored: the engine knows none of their ids.
        let mut engine = ApplyEngine::new(Order(10));
        let offers = vec![
            delivered(4, 1),
            delivered(9, 2),
            delivered(4, 3),
            delivered(11, 4),
        ];
        assert_eq!(engine.lookups(&offers), vec![Order(4), Order(9)]);
        run(&mut engine, offers);
        engine.on_stored();
        // 11 was applied here: its id is remembered, 10 still is not.
        assert_eq!(
            engine.lookups(&[delivered(11, 5), delivered(10, 6)]),
            vec![Order(10)]
        );

        // The store says 4 holds another id than the one offered: divergence.
        let stored: StoredIds = [(Order(4), forged(4).message_id)].into();
        let plan = engine.on_batch(vec![delivered(4, 7)], &stored);
        assert_eq!(
            plan.verdicts,
            vec![Verdict::Diverged(Divergence {
                order: Order(4),
                held: forged(4).message_id,
                offered: entry(4).message_id,
                fetched: false,
            })]
        );
        assert!(engine.lookups(&[delivered(1, 8)]).is_empty());
    }

    #[test]
    fn the_recent_ids_are_bounded_and_older_ones_are_looked_up() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        let total = RECENT_IDS as u64 + 10;
        let offers: Vec<Offer> = (1..=total).map(fetched).collect();
        run(&mut engine, offers);
        engine.on_stored();
        assert_eq!(
            engine.lookups(&[fetched(1), fetched(10), fetched(11), fetched(total)]),
            vec![Order(1), Order(10)]
        );
    }

    #[test]
    fn reordered_duplicated_and_conflicting_stream_diverges_at_the_first_conflict_only() {
        // Orders 1..=50 delivered twice each, reversed, with one forged 30 after the real one
        // was stored: everything before the forgery is stored once, nothing after it.
        let mut engine = ApplyEngine::new(Order::ZERO);
        let mut tag = 0;
        let mut next_tag = || {
            tag += 1;
            DeliveryTag(tag)
        };
        let first: Vec<Offer> = (1..=40)
            .rev()
            .flat_map(|order| [order, order])
            .map(|order| Offer::delivered(entry(order), next_tag()))
            .collect();
        let plan = run(&mut engine, first);
        assert_eq!(orders(&plan.append), (1..=40).collect::<Vec<_>>());
        assert!(plan.reject.is_empty());
        assert_eq!(engine.on_stored().len(), 80);
        let plan = run(
            &mut engine,
            vec![
                Offer::delivered(entry(41), next_tag()),
                Offer::delivered(forged(30), next_tag()),
                Offer::delivered(entry(42), next_tag()),
            ],
        );
        assert_eq!(orders(&plan.append), vec![41]);
        assert_eq!(plan.reject.len(), 1);
        assert_eq!(plan.abandon.len(), 1);
        assert_eq!(engine.diverged().map(|d| d.order), Some(Order(30)));
    }
}
