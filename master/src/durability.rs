//! What the master reads back at start and keeps on disk beside its log.
//!
//! At start: lock the data directory, open (and repair) the log, bring the on-disk dedup index
//! up to the log's end so client `message_id`s still deduplicate, and read the last order the
//! broker confirmed,
//! so that everything after it is published again. While running: rewrite that order in place
//! in the `confirmed` mark each time the broker's confirms advance. The mark is not fsynced; a
//! mark lagging after a machine crash only means more entries are published again, and
//! secondaries drop the duplicates.

use crate::dedup_keys::DedupKeys;
use replog_common::rules::dedup::DedupMode;
use replog_common::{events, Order};
use replog_shell::store::{self, DataDir, LogStore, Mark, StoreError};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// The name of the mark holding the last order the broker confirmed.
const CONFIRMED_MARK: &str = "confirmed";

/// The dedup index's file in the data directory.
const DEDUP_FILE: &str = "dedup.redb";

/// Everything the master gets back from its data directory.
pub struct Recovered {
    /// The locked directory.
    pub data_dir: Arc<DataDir>,
    /// The log.
    pub store: Arc<dyn LogStore>,
    /// The dedup index of every entry in the log.
    pub dedup: DedupKeys,
    /// The last order known confirmed by the broker, at most the log's end; everything after
    /// it is published again.
    pub confirmed: Order,
    /// The `confirmed` mark as written, which may be beyond the log's end when the log lost
    /// entries (evidence for the fence).
    pub confirmed_mark: Order,
}

/// Opens the data directory and recovers the log, the dedup index and the confirmed mark.
/// Blocking: checks the log's records and indexes what the dedup index had not recorded.
pub fn recover(path: &Path, mode: DedupMode) -> Result<Recovered, StoreError> {
    let data_dir = DataDir::open(path)?;
    let (log, recovery) = data_dir.open_log()?;
    let last = recovery.last_order;
    let dedup_path = data_dir.path().join(DEDUP_FILE);
    let dedup = match DedupKeys::open(&dedup_path, mode) {
        Ok(keys) => keys,
        Err(error) => {
            // The index is derived from the log: one that cannot be read is rebuilt.
            tracing::warn!(%error, path = %dedup_path.display(), "the dedup index cannot be opened; rebuilding it from the log");
            std::fs::remove_file(&dedup_path)?;
            DedupKeys::open(&dedup_path, mode)?
        }
    };
    let caught_up = dedup.catch_up(&log)?;
    if caught_up.rebuilt {
        tracing::info!(
            indexed = caught_up.indexed,
            ?mode,
            "dedup index rebuilt from the log (another dedup mode, or the log lost a torn tail)"
        );
    } else if caught_up.indexed > 0 {
        tracing::info!(
            indexed = caught_up.indexed,
            "dedup index caught up with the log"
        );
    }
    let confirmed_mark = data_dir.read_mark(CONFIRMED_MARK)?.unwrap_or(Order::ZERO);
    let confirmed = confirmed_mark.min(last);
    tracing::info!(
        data_dir = %path.display(),
        entries = recovery.records,
        segments = recovery.segments,
        event = events::RECOVERED,
        last = last.get(),
        %confirmed,
        torn_tail_cut = recovery.cut.is_some(),
        "log recovered; numbering continues after the last entry"
    );
    if confirmed < last {
        tracing::info!(from = %confirmed.next(), to = %last, "entries without a known broker confirm will be published again");
    }
    Ok(Recovered {
        data_dir: Arc::new(data_dir),
        store: Arc::new(log),
        dedup,
        confirmed,
        confirmed_mark,
    })
}

/// Writes the confirmed order to the data directory as soon as it changes (coalescing what
/// changed meanwhile), and announces each order written on `written`. A replicated write is
/// answered only once `written` covers it, so that the mark is evidence of every write
/// acknowledged with `w >= 2` (see the fence). The mark is not fsynced: it survives a process
/// crash, the case the fence is for; a machine crash that loses it also loses nothing fsynced.
/// When it cannot be written, the order is announced anyway (the secondaries' reports remain
/// as evidence) and the failure is logged.
pub async fn keep_confirmed_mark(
    data_dir: Arc<DataDir>,
    mut confirmed: watch::Receiver<Order>,
    written: watch::Sender<Order>,
) {
    let mut on_disk = *confirmed.borrow();
    // Opened at the first write and kept open; opened again after a failed write.
    let mut mark: Option<Mark> = None;
    loop {
        let open = confirmed.changed().await.is_ok();
        let current = *confirmed.borrow_and_update();
        if current != on_disk {
            let (dir, held) = (data_dir.clone(), mark.take());
            let written_now = store::blocking(move || {
                let opened = match held {
                    Some(opened) => opened,
                    None => dir.open_mark(CONFIRMED_MARK)?,
                };
                opened.write(current)?;
                Ok::<_, StoreError>(opened)
            })
            .await;
            match written_now {
                Ok(opened) => {
                    mark = Some(opened);
                    on_disk = current;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot record the confirmed order; more entries will be republished after a restart, and only the secondaries' reports show what a damaged log lost")
                }
            }
            written.send_if_modified(|known| {
                let advanced = current > *known;
                *known = (*known).max(current);
                advanced
            });
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_common::{Entry, MessageId};

    fn entry(order: u64, id: &str) -> Entry {
        Entry {
            order: Order(order),
            message_id: MessageId::parse(id).unwrap(),
            content: format!("c{order}"),
        }
    }

    /// Where the recovered dedup index puts a message id.
    fn found(recovered: &Recovered, id: &str) -> Option<Order> {
        recovered
            .dedup
            .find(&MessageId::parse(id).unwrap(), "")
            .unwrap()
    }

    #[test]
    fn a_restart_recovers_numbering_dedup_and_the_confirmed_mark() {
        let dir = tempfile::tempdir().unwrap();
        {
            let recovered = recover(dir.path(), DedupMode::Id).unwrap();
            assert_eq!(recovered.store.last_order(), Order::ZERO);
            recovered
                .store
                .append(&[entry(1, "a"), entry(2, "b"), entry(3, "c")])
                .unwrap();
            recovered
                .data_dir
                .write_mark(CONFIRMED_MARK, Order(2))
                .unwrap();
        }
        let recovered = recover(dir.path(), DedupMode::Id).unwrap();
        assert_eq!(recovered.store.last_order(), Order(3));
        assert_eq!(recovered.confirmed, Order(2));
        assert_eq!(found(&recovered, "b"), Some(Order(2)));
        assert_eq!(found(&recovered, "z"), None);
    }

    #[test]
    fn a_mark_beyond_the_log_is_clamped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let recovered = recover(dir.path(), DedupMode::Id).unwrap();
            recovered.store.append(&[entry(1, "a")]).unwrap();
            recovered
                .data_dir
                .write_mark(CONFIRMED_MARK, Order(9))
                .unwrap();
        }
        assert_eq!(
            recover(dir.path(), DedupMode::Id).unwrap().confirmed,
            Order(1)
        );
    }

    #[test]
    fn an_unreadable_dedup_index_is_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let recovered = recover(dir.path(), DedupMode::Id).unwrap();
            recovered
                .store
                .append(&[entry(1, "a"), entry(2, "b")])
                .unwrap();
        }
        std::fs::write(dir.path().join(DEDUP_FILE), b"not a database").unwrap();
        let recovered = recover(dir.path(), DedupMode::Id).unwrap();
        assert_eq!(found(&recovered, "b"), Some(Order(2)));
    }
}
