//! The master's deduplication keys on disk: every entry's message id (and, with
//! `--dedup content`, a BLAKE3 digest of its content) mapped to its order, in a redb database
//! beside the log. The index costs disk, not memory, however long the log grows; redb's page
//! cache is bounded ([`CACHE_BYTES`]).
//!
//! The log is the source of truth and the index trails it: the master's sequencer keeps the keys
//! of its newest stored entries in memory ([`DedupIndex`]) and looks up older ones here through a
//! [`Snapshot`] ([`KnownKeys`]); [`DedupKeys::record`] moves the recent keys here in
//! one durable transaction, sorted, about once a second (one transaction per batch of the log
//! made random B-tree page copies the bottleneck: `w=1` throughput fell by half). At start
//! [`DedupKeys::catch_up`] indexes whatever the log holds beyond what the index recorded (or
//! rebuilds the index when it cannot be trusted), so a crash costs a short re-scan, never a
//! missed duplicate.

use replog_shell::store::{LogStore, StoreError};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use replog_common::ids::{MessageId, Order};
use replog_common::rules::dedup::{ContentDigest, DedupIndex, DedupMode};
use replog_common::rules::sequencer::KnownKeys;
use std::path::Path;

/// Key bytes to order.
const KEYS: TableDefinition<&[u8], u64> = TableDefinition::new("keys");

/// Bookkeeping: how far the index goes and which mode built it.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The last order whose keys are recorded.
const INDEXED_UP_TO: &str = "indexed_up_to";

/// 1 when content keys are recorded too.
const WITH_CONTENT: &str = "with_content";

/// redb's page cache: what the index may hold in memory.
pub const CACHE_BYTES: usize = 32 << 20;

/// Most entries read from the log at a time while indexing.
const SCAN_PAGE: usize = 4096;

/// About how many bytes of entries one read holds while indexing: the number of entries per
/// read follows the sizes seen so far, so 1 MiB entries are read a few at a time.
const SCAN_BYTES: usize = 4 << 20;

/// Entries read first while indexing, before anything is known of their sizes.
const FIRST_SCAN_PAGE: usize = 4;

/// The digest content keys are made of, in memory and on disk: BLAKE3-256.
pub fn digest(content: &str) -> ContentDigest {
    ContentDigest(*blake3::hash(content.as_bytes()).as_bytes())
}

/// Prefix of a message-id key.
const ID_KEY: u8 = b'i';

/// Prefix of a content-digest key.
const CONTENT_KEY: u8 = b'c';

/// The on-disk dedup index.
pub struct DedupKeys {
    db: Database,
    mode: DedupMode,
}

/// A read-only view of the index as of one moment: the master's writer takes one per batch,
/// since the index only changes between batches.
pub struct Snapshot {
    keys: redb::ReadOnlyTable<&'static [u8], u64>,
    mode: DedupMode,
}

impl Snapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Order>, StoreError> {
        let order = self.keys.get(key).map_err(index_error)?;
        Ok(order.map(|order| Order(order.value())))
    }
}

impl KnownKeys for Snapshot {
    type Error = StoreError;

    /// Where the entry with this message id stands, if the index has it.
    fn find_id(&self, message_id: &MessageId) -> Result<Option<Order>, StoreError> {
        self.get(&id_key(message_id))
    }

    /// Where the first entry whose content has this digest stands, if contents are keys
    /// ([`DedupMode::Content`]) and the index has it. Contents are matched by BLAKE3-256
    /// digest ([`digest`]): two different contents with one digest are not expected to exist.
    fn find_content(&self, digest: &ContentDigest) -> Result<Option<Order>, StoreError> {
        match self.mode {
            DedupMode::Id => Ok(None),
            DedupMode::Content => self.get(&content_key(digest)),
        }
    }
}

/// What [`DedupKeys::catch_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Entries indexed from the log.
    pub indexed: u64,
    /// Whether the old index was thrown away (another dedup mode, or ahead of the log).
    pub rebuilt: bool,
}

fn index_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Corrupt(format!("dedup index: {}", error.into()))
}

fn id_key(message_id: &MessageId) -> Vec<u8> {
    let id = message_id.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(ID_KEY);
    key.extend_from_slice(id);
    key
}

fn content_key(digest: &ContentDigest) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = CONTENT_KEY;
    key[1..].copy_from_slice(&digest.0);
    key
}

impl DedupKeys {
    /// Opens (or creates) the index at `path` for `mode`.
    pub fn open(path: &Path, mode: DedupMode) -> Result<DedupKeys, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(index_error)?;
        let keys = DedupKeys { db, mode };
        let txn = keys.write_txn()?;
        txn.open_table(KEYS).map_err(index_error)?;
        txn.open_table(META).map_err(index_error)?;
        txn.commit().map_err(index_error)?;
        Ok(keys)
    }

    /// What makes two writes the same entry for this index.
    pub fn mode(&self) -> DedupMode {
        self.mode
    }

    /// A write transaction whose commit also saves what a restart after a crash needs, so
    /// that reopening is quick rather than a walk over the whole index.
    fn write_txn(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(index_error)?;
        txn.set_quick_repair(true);
        Ok(txn)
    }

    /// The last order whose keys are recorded.
    pub fn indexed_up_to(&self) -> Result<Order, StoreError> {
        Ok(Order(self.meta(INDEXED_UP_TO)?.unwrap_or(0)))
    }

    fn meta(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(index_error)?;
        let table = txn.open_table(META).map_err(index_error)?;
        Ok(table.get(name).map_err(index_error)?.map(|v| v.value()))
    }

    /// Where a write with this id, or else (with [`DedupMode::Content`]) this content, stands.
    pub fn find(&self, message_id: &MessageId, content: &str) -> Result<Option<Order>, StoreError> {
        let snapshot = self.snapshot()?;
        match snapshot.find_id(message_id)? {
            Some(order) => Ok(Some(order)),
            None => snapshot.find_content(&digest(content)),
        }
    }

    /// A consistent view of the index for many lookups (one read transaction).
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(index_error)?;
        Ok(Snapshot {
            keys: txn.open_table(KEYS).map_err(index_error)?,
            mode: self.mode,
        })
    }

    /// Records the keys `recent` holds (entries already stored in the log, up to `up_to`) in
    /// one durable transaction. A key the index has already keeps its order.
    pub fn record(&self, recent: &DedupIndex, up_to: Order) -> Result<(), StoreError> {
        let mut pairs: Vec<(Vec<u8>, u64)> = recent
            .ids()
            .map(|(id, order)| (id_key(id), order.get()))
            .collect();
        if self.mode == DedupMode::Content {
            pairs.extend(
                recent
                    .contents()
                    .map(|(digest, order)| (content_key(digest).to_vec(), order.get())),
            );
        }
        // Sorted keys touch each B-tree page once.
        pairs.sort_unstable();
        let mut txn = self.write_txn()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut keys = txn.open_table(KEYS).map_err(index_error)?;
            for (key, order) in &pairs {
                if keys.get(key.as_slice()).map_err(index_error)?.is_none() {
                    keys.insert(key.as_slice(), *order).map_err(index_error)?;
                }
            }
            let mut meta = txn.open_table(META).map_err(index_error)?;
            meta.insert(INDEXED_UP_TO, up_to.get())
                .map_err(index_error)?;
        }
        txn.commit().map_err(index_error)
    }

    /// Brings the index up to `log`'s end: indexes the entries it has not recorded, or
    /// rebuilds it from the first entry when it was built for another mode or records more
    /// than the log holds (the log lost a torn tail).
    pub fn catch_up(&self, log: &dyn LogStore) -> Result<CatchUp, StoreError> {
        let last = log.last_order();
        let with_content = u64::from(self.mode == DedupMode::Content);
        let stale = self
            .meta(WITH_CONTENT)?
            .is_some_and(|built| built != with_content)
            || self.indexed_up_to()? > last;
        // One transaction empties a stale index and marks which mode the index is built for.
        let txn = self.write_txn()?;
        if stale {
            txn.delete_table(KEYS).map_err(index_error)?;
            txn.delete_table(META).map_err(index_error)?;
            txn.open_table(KEYS).map_err(index_error)?;
        }
        txn.open_table(META)
            .map_err(index_error)?
            .insert(WITH_CONTENT, with_content)
            .map_err(index_error)?;
        txn.commit().map_err(index_error)?;
        let mut from = self.indexed_up_to()?.next();
        let mut indexed = 0;
        let mut recent = DedupIndex::new(self.mode, digest);
        let mut page_len = FIRST_SCAN_PAGE;
        while from <= last {
            let page = log.read(from, page_len)?;
            let Some(end) = page.last().map(|entry| entry.order) else {
                break;
            };
            page.iter().for_each(|entry| recent.record(entry));
            indexed += page.len() as u64;
            from = end.next();
            page_len = scan_page_len(&page);
            // One transaction per page: a page of about SCAN_BYTES is all that is held.
            self.record(&recent, end)?;
            recent.clear();
        }
        Ok(CatchUp {
            indexed,
            rebuilt: stale,
        })
    }
}

/// How many entries to read next, given the last page read: about [`SCAN_BYTES`] of them,
/// from 1 to [`SCAN_PAGE`].
fn scan_page_len(page: &[replog_common::Entry]) -> usize {
    let bytes: usize = page
        .iter()
        .map(|entry| entry.content.len() + entry.message_id.as_str().len())
        .sum();
    let per_entry = (bytes / page.len().max(1)).max(1);
    (SCAN_BYTES / per_entry).clamp(1, SCAN_PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_common::entry::Entry;
    use replog_shell::store::MemoryLog;

    fn entry(order: u64, id: &str, content: &str) -> Entry {
        Entry::of(order, id, content)
    }

    fn id(raw: &str) -> MessageId {
        MessageId::parse(raw).unwrap()
    }

    fn recent(mode: DedupMode, entries: &[Entry]) -> DedupIndex {
        let mut index = DedupIndex::new(mode, digest);
        entries.iter().for_each(|entry| index.record(entry));
        index
    }

    fn log_of(entries: &[Entry]) -> MemoryLog {
        let log = MemoryLog::new();
        log.append(entries).unwrap();
        log
    }

    #[test]
    fn recorded_ids_are_found_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedup.redb");
        {
            let keys = DedupKeys::open(&path, DedupMode::Id).unwrap();
            let stored = [entry(1, "a", "x"), entry(2, "b", "x")];
            keys.record(&recent(DedupMode::Id, &stored), Order(2))
                .unwrap();
            assert_eq!(keys.find(&id("b"), "").unwrap(), Some(Order(2)));
            assert_eq!(keys.find(&id("c"), "x").unwrap(), None, "content is no key");
            assert_eq!(keys.indexed_up_to().unwrap(), Order(2));
        }
        let keys = DedupKeys::open(&path, DedupMode::Id).unwrap();
        assert_eq!(keys.find(&id("a"), "").unwrap(), Some(Order(1)));
    }

    #[test]
    fn content_mode_finds_equal_content_and_the_first_entry_keeps_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DedupKeys::open(&dir.path().join("d"), DedupMode::Content).unwrap();
        let stored = [entry(1, "a", "same"), entry(2, "b", "same")];
        keys.record(&recent(DedupMode::Content, &stored), Order(2))
            .unwrap();
        assert_eq!(keys.find(&id("z"), "same").unwrap(), Some(Order(1)));
        assert_eq!(keys.find(&id("b"), "other").unwrap(), Some(Order(2)));
        assert_eq!(keys.find(&id("z"), "other").unwrap(), None);
    }

    #[test]
    fn catch_up_indexes_what_the_log_holds_beyond_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DedupKeys::open(&dir.path().join("d"), DedupMode::Id).unwrap();
        let entries: Vec<Entry> = (1..=10_000)
            .map(|n| entry(n, &format!("id-{n}"), "c"))
            .collect();
        keys.record(&recent(DedupMode::Id, &entries[..3]), Order(3))
            .unwrap();
        let log = log_of(&entries);
        let done = keys.catch_up(&log).unwrap();
        assert_eq!(
            done,
            CatchUp {
                indexed: 9_997,
                rebuilt: false
            }
        );
        assert_eq!(keys.find(&id("id-9999"), "").unwrap(), Some(Order(9_999)));
        assert_eq!(keys.catch_up(&log).unwrap().indexed, 0);
    }

    #[test]
    fn indexing_reads_large_entries_a_few_at_a_time() {
        let big = |n: u64| entry(n, &format!("id-{n}"), &"x".repeat(1 << 20));
        assert_eq!(scan_page_len(&[big(1), big(2)]), 3);
        assert_eq!(scan_page_len(&[entry(1, "a", "small")]), SCAN_PAGE);
        let dir = tempfile::tempdir().unwrap();
        let keys = DedupKeys::open(&dir.path().join("d"), DedupMode::Content).unwrap();
        let entries: Vec<Entry> = (1..=12).map(big).collect();
        assert_eq!(keys.catch_up(&log_of(&entries)).unwrap().indexed, 12);
        assert_eq!(
            keys.find(&id("zz"), &"x".repeat(1 << 20)).unwrap(),
            Some(Order(1))
        );
    }

    #[test]
    fn an_index_ahead_of_the_log_or_of_another_mode_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let stored = [entry(1, "a", "x"), entry(2, "b", "y")];
        {
            let keys = DedupKeys::open(&path, DedupMode::Id).unwrap();
            keys.catch_up(&log_of(&stored)).unwrap();
            let torn = [entry(3, "torn", "z")];
            keys.record(&recent(DedupMode::Id, &torn), Order(3))
                .unwrap();
        }
        // The log lost entry 3 (a torn tail): its key must not answer for a write any more.
        let keys = DedupKeys::open(&path, DedupMode::Id).unwrap();
        assert!(keys.catch_up(&log_of(&stored)).unwrap().rebuilt);
        assert_eq!(keys.find(&id("torn"), "").unwrap(), None);
        assert_eq!(keys.find(&id("b"), "").unwrap(), Some(Order(2)));
        drop(keys);
        // Content keys appear when the mode changes to content.
        let keys = DedupKeys::open(&path, DedupMode::Content).unwrap();
        assert_eq!(
            keys.catch_up(&log_of(&stored)).unwrap(),
            CatchUp {
                indexed: 2,
                rebuilt: true
            }
        );
        assert_eq!(keys.find(&id("zz"), "y").unwrap(), Some(Order(2)));
    }
}
