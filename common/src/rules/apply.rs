//! The secondary's applier as an engine: which entries to append, and which deliveries to settle
//! once they are stored.
//!
//! The shell hands it a batch of [`Offer`]s (entries from the queue, each with an opaque
//! [`DeliveryTag`], or fetched from the master with none) and gets back an [`ApplyPlan`]: the
//! newly contiguous entries to append in one store call, and a [`Verdict`] per offer to log.
//! Once the append is on disk the shell calls [`ApplyEngine::on_stored`] and settles exactly the
//! [`Settlement`]s it returns. A delivery is settled only once its entry's order is stored, so
//! nothing is acked before it is on disk: a delivery held back beyond a gap (or delivered again
//! while held back) waits until the gap closes, and every delivery of such an order is settled
//! then, since which of them is still live with the broker is not known.

use crate::entry::Entry;
use crate::ids::Order;
use crate::rules::holdback::{HoldBack, Offered};
use std::collections::BTreeMap;

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

/// What became of one offer, for the shell to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// The engine's answer to a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyPlan {
    /// Entries that newly extend the applied prefix, in order: append them in one store call,
    /// then call [`ApplyEngine::on_stored`]. Empty when the batch extended nothing.
    pub append: Vec<Entry>,
    /// One verdict per offer, in the order offered.
    pub verdicts: Vec<Verdict>,
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
}

/// The applier's rules: hold-back, dedup, and which deliveries are settled when.
#[derive(Debug, Default)]
pub struct ApplyEngine {
    /// Orders entries and drops duplicates.
    holdback: HoldBack,
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
            stored,
            waiting: BTreeMap::new(),
        }
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
        }
    }

    /// Runs a batch through the hold-back buffer. Settles nothing: the deliveries wait for
    /// [`ApplyEngine::on_stored`].
    pub fn on_batch(&mut self, offers: Vec<Offer>) -> ApplyPlan {
        let mut plan = ApplyPlan {
            append: Vec::new(),
            verdicts: Vec::with_capacity(offers.len()),
        };
        for offer in offers {
            let order = offer.entry.order;
            let fetched = offer.delivery.is_none();
            let (verdict, settle) = match self.holdback.offer(offer.entry) {
                Offered::Ready(entries) => {
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

    fn delivered(order: u64, tag: u64) -> Offer {
        Offer::delivered(Entry::sample(order), DeliveryTag(tag))
    }

    fn fetched(order: u64) -> Offer {
        Offer::fetched(Entry::sample(order))
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
        let plan = engine.on_batch(vec![delivered(1, 10), delivered(2, 11)]);
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
        let first = engine.on_batch(vec![delivered(1, 1), delivered(1, 2)]);
        let second = engine.on_batch(vec![delivered(2, 3), fetched(3)]);
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
        let plan = engine.on_batch(vec![delivered(3, 1), fetched(5), delivered(5, 2)]);
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
        let plan = engine.on_batch(vec![delivered(1, 1), delivered(1, 2)]);
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
        let plan = engine.on_batch(vec![delivered(3, 1), delivered(4, 2)]);
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
                held_back: 2
            }
        );

        let plan = engine.on_batch(vec![fetched(2)]);
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
                held_back: 0
            }
        );
    }

    #[test]
    fn every_delivery_of_a_held_back_order_is_settled_once_it_is_stored() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        engine.on_batch(vec![delivered(2, 1)]);
        engine.on_stored();
        // Delivered again (a redelivery after a lost channel) and fetched while held back.
        let plan = engine.on_batch(vec![delivered(2, 2), fetched(2), delivered(2, 3)]);
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

        let plan = engine.on_batch(vec![delivered(1, 4)]);
        assert_eq!(orders(&plan.append), vec![1, 2]);
        let settled = engine.on_stored();
        assert_eq!(tags(&settled), vec![1, 2, 3, 4]);
        assert!(settled.iter().all(|s| s.settle == Settle::Fresh));
        assert_eq!(engine.unsettled(), 0);
    }

    #[test]
    fn a_store_that_never_completes_settles_nothing() {
        let mut engine = ApplyEngine::new(Order::ZERO);
        let plan = engine.on_batch(vec![delivered(1, 1), delivered(3, 2)]);
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
            let plan = engine.on_batch(batch.to_vec());
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
}
