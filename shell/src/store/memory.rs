//! A log kept in memory: fast, and forgotten when the process ends.

use super::{check_continues, LogStore, StoreError};
use replog_common::entry::Entry;
use replog_common::ids::Order;
use std::sync::RwLock;

/// A [`LogStore`] held in a vector; entry `n` sits at index `n - 1`.
#[derive(Debug, Default)]
pub struct MemoryLog {
    /// The entries, readers share them while the single writer appends.
    entries: RwLock<Vec<Entry>>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }
}

impl LogStore for MemoryLog {
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut log = self.entries.write().expect("log lock poisoned");
        check_continues(Order(log.len() as u64), entries)?;
        log.extend_from_slice(entries);
        Ok(())
    }

    fn last_order(&self) -> Order {
        Order(self.entries.read().expect("log lock poisoned").len() as u64)
    }

    fn read(&self, from: Order, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let log = self.entries.read().expect("log lock poisoned");
        let start = (from.get().max(1) - 1) as usize;
        Ok(log.iter().skip(start).take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(order: u64) -> Entry {
        Entry::sample(order)
    }

    #[test]
    fn appends_must_continue_the_log() {
        let log = MemoryLog::new();
        log.append(&[entry(1), entry(2)]).unwrap();
        assert!(matches!(
            log.append(&[entry(4)]),
            Err(StoreError::OutOfOrder { .. })
        ));
        assert!(matches!(
            log.append(&[entry(3), entry(5)]),
            Err(StoreError::OutOfOrder { .. })
        ));
        assert_eq!(log.last_order(), Order(2));
    }

    #[test]
    fn reads_page_through_the_log() {
        let log = MemoryLog::new();
        log.append(&(1..=10).map(entry).collect::<Vec<_>>())
            .unwrap();
        let page: Vec<u64> = log
            .read(Order(4), 3)
            .unwrap()
            .iter()
            .map(|e| e.order.get())
            .collect();
        assert_eq!(page, vec![4, 5, 6]);
        assert!(log.read(Order(11), 5).unwrap().is_empty());
        assert_eq!(log.read(Order(0), 2).unwrap()[0].order, Order(1));
    }
}
