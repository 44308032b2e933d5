//! The secondary's hold-back buffer: total order and exactly-once on top of a delivery stream
//! that may duplicate, reorder and drop.
//!
//! A secondary holding 1, 2 and 4 shows only 1 and 2 until 3 arrives; an entry it already has is
//! dropped; a gap that the queue cannot fill is reported so the shell can fetch it from the master.

use crate::entry::Entry;
use crate::ids::Order;
use std::collections::BTreeMap;

/// What became of an offered entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// The entry (and any held-back entries it made contiguous) extend the applied prefix, in
    /// order. The caller must store them before acknowledging anything.
    Ready(Vec<Entry>),
    /// The entry is ahead of a gap; it waits for the missing ones.
    HeldBack,
    /// The entry is already applied or already held back: drop it.
    Duplicate,
}

/// The hold-back buffer of one secondary.
#[derive(Debug, Default)]
pub struct HoldBack {
    /// The end of the contiguous prefix handed out as ready: everything up to here is applied.
    applied: Order,
    /// Entries beyond a gap, keyed by order, waiting for the gap to close.
    held: BTreeMap<Order, Entry>,
}

impl HoldBack {
    /// A buffer for a node whose log already holds everything up to `applied`.
    pub fn new(applied: Order) -> HoldBack {
        HoldBack {
            applied,
            held: BTreeMap::new(),
        }
    }

    /// The end of the contiguous prefix.
    pub fn applied(&self) -> Order {
        self.applied
    }

    /// How many entries wait behind a gap.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// The entry held back at `order`, if any: what a later offer of that order is compared
    /// with.
    pub fn held(&self, order: Order) -> Option<&Entry> {
        self.held.get(&order)
    }

    /// Offers one delivered entry.
    pub fn offer(&mut self, entry: Entry) -> Offered {
        if entry.order <= self.applied || self.held.contains_key(&entry.order) {
            return Offered::Duplicate;
        }
        if entry.order != self.applied.next() {
            self.held.insert(entry.order, entry);
            return Offered::HeldBack;
        }
        self.applied = entry.order;
        let mut ready = vec![entry];
        while let Some(next) = self.held.remove(&self.applied.next()) {
            self.applied = next.order;
            ready.push(next);
        }
        Offered::Ready(ready)
    }

    /// The missing range `(first, last)`, inclusive, between the applied prefix and the first
    /// held-back entry; `None` when nothing is held back.
    pub fn gap(&self) -> Option<(Order, Order)> {
        let (&first_held, _) = self.held.first_key_value()?;
        Some((self.applied.next(), Order(first_held.get() - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(order: u64) -> Entry {
        Entry::sample(order)
    }

    fn orders(offered: Offered) -> Vec<u64> {
        match offered {
            Offered::Ready(entries) => entries.iter().map(|e| e.order.get()).collect(),
            other => panic!("expected ready entries, got {other:?}"),
        }
    }

    #[test]
    fn in_order_deliveries_apply_one_by_one() {
        let mut buffer = HoldBack::new(Order::ZERO);
        assert_eq!(orders(buffer.offer(entry(1))), vec![1]);
        assert_eq!(orders(buffer.offer(entry(2))), vec![2]);
        assert_eq!(buffer.applied(), Order(2));
        assert_eq!(buffer.gap(), None);
    }

    #[test]
    fn holding_1_2_4_shows_1_2_until_3_arrives() {
        let mut buffer = HoldBack::new(Order::ZERO);
        buffer.offer(entry(1));
        buffer.offer(entry(2));
        assert_eq!(buffer.offer(entry(4)), Offered::HeldBack);
        assert_eq!(buffer.applied(), Order(2));
        assert_eq!(buffer.gap(), Some((Order(3), Order(3))));
        assert_eq!(orders(buffer.offer(entry(3))), vec![3, 4]);
        assert_eq!(buffer.applied(), Order(4));
        assert_eq!(buffer.held_count(), 0);
    }

    #[test]
    fn duplicates_of_applied_and_held_entries_are_dropped() {
        let mut buffer = HoldBack::new(Order::ZERO);
        buffer.offer(entry(1));
        buffer.offer(entry(3));
        assert_eq!(buffer.offer(entry(1)), Offered::Duplicate);
        assert_eq!(buffer.offer(entry(3)), Offered::Duplicate);
        assert_eq!(orders(buffer.offer(entry(2))), vec![2, 3]);
        assert_eq!(buffer.offer(entry(2)), Offered::Duplicate);
        assert_eq!(buffer.offer(entry(3)), Offered::Duplicate);
    }

    #[test]
    fn reversed_delivery_applies_everything_at_once() {
        let mut buffer = HoldBack::new(Order::ZERO);
        for order in (2..=5).rev() {
            assert_eq!(buffer.offer(entry(order)), Offered::HeldBack);
        }
        assert_eq!(buffer.gap(), Some((Order(1), Order(1))));
        assert_eq!(orders(buffer.offer(entry(1))), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_restarted_node_continues_after_its_stored_prefix() {
        let mut buffer = HoldBack::new(Order(10));
        assert_eq!(buffer.offer(entry(10)), Offered::Duplicate);
        assert_eq!(buffer.offer(entry(13)), Offered::HeldBack);
        assert_eq!(buffer.gap(), Some((Order(11), Order(12))));
        assert_eq!(orders(buffer.offer(entry(11))), vec![11]);
        assert_eq!(buffer.gap(), Some((Order(12), Order(12))));
    }

    #[test]
    fn shuffled_duplicated_stream_yields_each_entry_once_in_order() {
        // A deterministic shuffle with duplicates: every order 1..=200 appears 1-3 times.
        let mut stream: Vec<u64> = Vec::new();
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for order in 1..=200u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for _ in 0..=(x % 3) {
                stream.push(order);
            }
        }
        for i in (1..stream.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            stream.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut buffer = HoldBack::new(Order::ZERO);
        let mut applied = Vec::new();
        for order in stream {
            if let Offered::Ready(entries) = buffer.offer(entry(order)) {
                applied.extend(entries.iter().map(|e| e.order.get()));
            }
        }
        assert_eq!(applied, (1..=200).collect::<Vec<_>>());
        assert_eq!(buffer.gap(), None);
    }
}
