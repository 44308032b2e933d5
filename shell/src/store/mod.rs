//! The log store each node keeps its entries in.
//!
//! Every node's log sits behind [`LogStore`], so the in-memory store can be swapped for a
//! disk-backed one without touching the replication pipeline. Appends come from one writer at a
//! time and are batched by the caller, so a durable store can sync once per batch.

mod data_dir;
mod memory;
mod segmented;
mod tail_cache;

pub use data_dir::{DataDir, Mark};
pub use memory::MemoryLog;
pub use segmented::{CutTail, Recovery, SegmentedLog, SegmentedLogOptions, TailDamage};
pub use tail_cache::{TailCachedLog, DEFAULT_TAIL_BYTES, DEFAULT_TAIL_ENTRIES};

use replog_common::entry::Entry;
use replog_common::ids::Order;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process (its LOCK file is held)")]
    Locked(std::path::PathBuf),
    /// An append did not continue the log at `last_order + 1`.
    #[error("append out of order: the log ends at {last}, got entry {got}")]
    OutOfOrder {
        /// Where the log ends.
        last: Order,
        /// The order that was offered.
        got: Order,
    },
    /// The disk said no.
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// An entry too large for the store's record format.
    #[error("entry {order} is too large to store ({bytes} bytes)")]
    EntryTooLarge {
        /// The entry's order.
        order: Order,
        /// Its message id and content, in bytes.
        bytes: usize,
    },
    /// The blocking task that ran a store call panicked or was cancelled.
    #[error("the store task failed: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
    /// An earlier write failed, so the store refuses appends until it is reopened and has
    /// re-read what actually reached the disk.
    #[error("the store refuses appends after an earlier write failed; reopen it")]
    Halted,
}

/// Runs a blocking store call (disk reads, appends with their fsync, recovery) on tokio's
/// blocking pool, so no async worker waits on the disk. A panicking or cancelled task comes
/// back as [`StoreError::TaskFailed`], never as a corrupt record.
pub async fn blocking<T, E>(call: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(outcome) => outcome,
        Err(join) => Err(E::from(StoreError::TaskFailed(join))),
    }
}

/// An append-only log of entries numbered 1, 2, 3, ... without gaps.
pub trait LogStore: Send + Sync + 'static {
    /// Appends `entries`, which must continue the log in order. When it returns `Ok`, the
    /// entries are as durable as this store makes them.
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError>;

    /// The order of the last entry, or [`Order::ZERO`] for an empty log.
    fn last_order(&self) -> Order;

    /// Up to `limit` entries starting at `from` (inclusive), in order.
    fn read(&self, from: Order, limit: usize) -> Result<Vec<Entry>, StoreError>;
}

/// Checks that `entries` continue a log ending at `last`.
pub(crate) fn check_continues(last: Order, entries: &[Entry]) -> Result<(), StoreError> {
    let mut expected = last.next();
    for entry in entries {
        if entry.order != expected {
            return Err(StoreError::OutOfOrder {
                last: Order(expected.get() - 1),
                got: entry.order,
            });
        }
        expected = expected.next();
    }
    Ok(())
}
