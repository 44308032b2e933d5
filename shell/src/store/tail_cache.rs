//! A log store that also keeps its newest entries in memory.
//!
//! The master's publisher sends what the writer has just appended. Reading it back from the
//! disk took a blocking-pool hop, an open of the segment, a read and a decode: at one client,
//! 0.26 ms p50 from an entry's fsync to its publish, 0.16 ms without them
//! (`scripts/bench-stages`, docs/BENCHMARKS.md).
//! [`TailCachedLog`] keeps a copy of the newest entries after each successful append,
//! bounded by count and by bytes. [`TailCachedLog::read_cached`] serves a read that starts
//! among them without any I/O; any other read goes to the log underneath.
//!
//! The copy is made only after the inner append returned `Ok`, so it never holds an entry the
//! log does not.

use super::{LogStore, StoreError};
use replog_common::entry::Entry;
use replog_common::ids::Order;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// Most entries the master keeps in memory by default.
pub const DEFAULT_TAIL_ENTRIES: usize = 4096;

/// Most bytes (message ids and contents) the master keeps in memory by default.
pub const DEFAULT_TAIL_BYTES: usize = 4 * 1024 * 1024;

/// A [`LogStore`] over another one, with its newest entries also held in memory.
pub struct TailCachedLog {
    /// The log itself; every append goes here first.
    inner: Arc<dyn LogStore>,
    /// The newest entries, consecutive, ending at the log's end once anything was appended.
    tail: Mutex<Tail>,
}

/// The entries held in memory and their bounds.
#[derive(Debug)]
struct Tail {
    /// Consecutive entries, oldest first.
    entries: VecDeque<Entry>,
    /// Message id and content bytes of `entries`.
    bytes: usize,
    /// Most entries kept.
    max_entries: usize,
    /// Most bytes kept.
    max_bytes: usize,
}

/// What one entry counts against the byte bound.
fn size(entry: &Entry) -> usize {
    entry.message_id.as_str().len() + entry.content.len()
}

impl Tail {
    /// Adds entries just appended to the log; a batch that does not continue the held entries
    /// replaces them. The oldest go once a bound is passed. Only the newest entries of the
    /// batch that fit the bounds on their own are copied: a batch larger than the bounds is
    /// not copied whole only to be evicted.
    fn push(&mut self, appended: &[Entry]) {
        let Some(first) = appended.first() else {
            return;
        };
        let mut fitting_bytes = 0;
        let fitting = appended
            .iter()
            .rev()
            .take(self.max_entries)
            .take_while(|entry| {
                fitting_bytes += size(entry);
                fitting_bytes <= self.max_bytes
            })
            .count();
        // When part of the batch does not fit, nothing older does either.
        let continues = fitting == appended.len()
            && self
                .entries
                .back()
                .is_none_or(|last| last.order.next() == first.order);
        if !continues {
            self.entries.clear();
            self.bytes = 0;
        }
        for entry in &appended[appended.len() - fitting..] {
            self.bytes += size(entry);
            self.entries.push_back(entry.clone());
        }
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            match self.entries.pop_front() {
                Some(gone) => self.bytes -= size(&gone),
                None => break,
            }
        }
    }

    /// Up to `limit` entries from `from`, if `from` is held.
    fn read(&self, from: Order, limit: usize) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.order;
        let last = self.entries.back()?.order;
        if from < first || from > last {
            return None;
        }
        let skip = (from.get() - first.get()) as usize;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

impl TailCachedLog {
    /// `inner` with up to `max_entries` of its newest entries, and no more than `max_bytes` of
    /// their ids and contents, kept in memory from the next append on.
    pub fn new(inner: Arc<dyn LogStore>, max_entries: usize, max_bytes: usize) -> TailCachedLog {
        TailCachedLog {
            inner,
            tail: Mutex::new(Tail {
                entries: VecDeque::new(),
                bytes: 0,
                max_entries,
                max_bytes,
            }),
        }
    }

    /// Up to `limit` entries from `from`, from memory, if `from` is among the entries held.
    /// `None` means "ask the log": `from` is older than the held entries, beyond the log's
    /// end, or nothing was appended since this store was opened.
    pub fn read_cached(&self, from: Order, limit: usize) -> Option<Vec<Entry>> {
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(from, limit)
    }
}

impl LogStore for TailCachedLog {
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.inner.append(entries)?;
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entries);
        Ok(())
    }

    fn last_order(&self) -> Order {
        self.inner.last_order()
    }

    fn read(&self, from: Order, limit: usize) -> Result<Vec<Entry>, StoreError> {
        match self.read_cached(from, limit) {
            Some(entries) => Ok(entries),
            None => self.inner.read(from, limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryLog;
    use replog_common::MessageId;

    fn entries(orders: std::ops::RangeInclusive<u64>, content: &str) -> Vec<Entry> {
        orders
            .map(|order| Entry {
                order: Order(order),
                message_id: MessageId::parse(&format!("id-{order}")).unwrap(),
                content: content.to_owned(),
            })
            .collect()
    }

    fn orders(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.order.get()).collect()
    }

    #[test]
    fn appended_entries_are_read_from_memory_and_equal_the_log() {
        let log = Arc::new(MemoryLog::new());
        let cached = TailCachedLog::new(log.clone(), 100, 1 << 20);
        assert_eq!(
            cached.read_cached(Order(1), 10),
            None,
            "nothing appended yet"
        );
        cached.append(&entries(1..=5, "a")).unwrap();
        cached.append(&entries(6..=8, "b")).unwrap();
        let from_memory = cached.read_cached(Order(3), 4).unwrap();
        assert_eq!(orders(&from_memory), [3, 4, 5, 6]);
        assert_eq!(from_memory, log.read(Order(3), 4).unwrap());
        assert_eq!(orders(&cached.read_cached(Order(7), 100).unwrap()), [7, 8]);
        assert_eq!(
            cached.read_cached(Order(9), 1),
            None,
            "beyond the end: the log says"
        );
        assert_eq!(cached.last_order(), Order(8));
    }

    #[test]
    fn the_oldest_entries_go_once_a_bound_is_passed() {
        let log = Arc::new(MemoryLog::new());
        // Each entry is 4 bytes of id ("id-N") and 10 of content: 14 bytes.
        let by_count = TailCachedLog::new(log.clone(), 3, 1 << 20);
        by_count.append(&entries(1..=5, "0123456789")).unwrap();
        assert_eq!(by_count.read_cached(Order(2), 10), None, "evicted");
        assert_eq!(
            orders(&by_count.read_cached(Order(3), 10).unwrap()),
            [3, 4, 5]
        );
        // The log underneath still answers for evicted entries.
        assert_eq!(orders(&by_count.read(Order(1), 2).unwrap()), [1, 2]);

        let by_bytes = TailCachedLog::new(Arc::new(MemoryLog::new()), 100, 30);
        by_bytes.append(&entries(1..=5, "0123456789")).unwrap();
        assert_eq!(by_bytes.read_cached(Order(3), 10), None);
        assert_eq!(orders(&by_bytes.read_cached(Order(4), 10).unwrap()), [4, 5]);
    }

    #[test]
    fn an_entry_larger_than_the_byte_bound_is_not_kept() {
        let cached = TailCachedLog::new(Arc::new(MemoryLog::new()), 100, 10);
        cached
            .append(&entries(1..=1, "far more than ten bytes"))
            .unwrap();
        assert_eq!(cached.read_cached(Order(1), 1), None);
        assert_eq!(orders(&cached.read(Order(1), 1).unwrap()), [1]);
    }

    #[test]
    fn a_failed_append_leaves_nothing_in_memory() {
        let log = Arc::new(MemoryLog::new());
        let cached = TailCachedLog::new(log.clone(), 100, 1 << 20);
        cached.append(&entries(1..=2, "a")).unwrap();
        let gap = entries(4..=4, "a");
        assert!(cached.append(&gap).is_err(), "4 does not continue 2");
        assert_eq!(cached.read_cached(Order(4), 1), None);
        assert_eq!(orders(&cached.read_cached(Order(1), 10).unwrap()), [1, 2]);
    }

    #[test]
    fn a_batch_that_does_not_continue_the_held_entries_replaces_them() {
        // Appends to a store always continue it; this only guards the cache's own invariant
        // (consecutive entries) should the log underneath be replaced by a longer one.
        let mut tail = Tail {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries: 100,
            max_bytes: 1 << 20,
        };
        tail.push(&entries(1..=3, "a"));
        tail.push(&entries(10..=11, "a"));
        assert_eq!(tail.read(Order(1), 10), None);
        assert_eq!(orders(&tail.read(Order(10), 10).unwrap()), [10, 11]);
        assert_eq!(tail.bytes, 2 * (5 + 1));
    }
}
