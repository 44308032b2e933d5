//! The master's sequencing rule: whether a write is new (and then which order it gets) or
//! already in the log (and then where).
//!
//! [`Sequencer::admit`] decides for one write at a time, in the order the writer takes them. A
//! client-chosen message id is looked up first, in the recent keys held here and then in the
//! keys the master keeps on disk ([`KnownKeys`]); only then, with [`DedupMode::Content`], equal
//! content, in memory and then on disk. So a client's retry always finds its own entry, even
//! when another entry with equal content is newer. A fresh id (the master made it up because the
//! client gave none) cannot be in the log, so it is never looked up. A new write gets the next
//! order and its keys are remembered at once, so a duplicate later in the same batch resolves to
//! the earlier entry before either is stored.
//!
//! The sequencer also decides when its recent keys are due to move to disk
//! ([`Sequencer::flush_due`]), with the time passed in. It does no I/O: the master's writer thread
//! takes a snapshot of the on-disk keys, admits each write of a batch, appends the new entries,
//! answers, and records the recent keys when told to.

use crate::entry::Entry;
use crate::ids::{MessageId, Order};
use crate::rules::dedup::{ContentDigest, DedupIndex, DedupMode, Digest};
use std::time::{Duration, Instant};

/// The keys of entries the sequencer no longer holds in memory (the master's on-disk index).
///
/// Lookups may fail (a disk read); the error is the implementation's own and the sequencer
/// hands it back unchanged.
pub trait KnownKeys {
    /// Why a lookup failed.
    type Error;

    /// Where the entry with this message id stands, if it is known.
    fn find_id(&self, message_id: &MessageId) -> Result<Option<Order>, Self::Error>;

    /// Where the first entry whose content has this digest stands, if contents are keys and
    /// it is known.
    fn find_content(&self, digest: &ContentDigest) -> Result<Option<Order>, Self::Error>;
}

/// One write to admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The entry's identity: the client's, or a fresh one the master made up.
    pub message_id: MessageId,
    /// Whether the client chose `message_id` (and so may be retrying a write the log holds).
    pub client_chosen: bool,
    /// The payload.
    pub content: String,
}

impl Write {
    /// A write whose message id the client chose.
    pub fn with_client_id(message_id: MessageId, content: String) -> Write {
        Write {
            message_id,
            client_chosen: true,
            content,
        }
    }

    /// A write the client gave no id: `fresh` must be one no entry has (a random UUID).
    pub fn with_fresh_id(fresh: MessageId, content: String) -> Write {
        Write {
            message_id: fresh,
            client_chosen: false,
            content,
        }
    }
}

/// What the sequencer decided for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A new entry, with the next order: the caller appends it to the log.
    New(Entry),
    /// The log (or the batch being built) already holds this write at `order`.
    Existing {
        /// Where the write already stands.
        order: Order,
        /// The id the duplicate came with, for the evidence log.
        message_id: MessageId,
    },
}

/// When the recent keys move from memory to the on-disk index. The index trails the log; what
/// it has not recorded at a crash is re-indexed from the log at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupFlush {
    /// At least this often while writes come in.
    pub interval: Duration,
    /// And whenever this many entries' keys are in memory.
    pub entries: usize,
}

impl DedupFlush {
    /// Most entries whose keys are held in memory by default.
    pub const DEFAULT_ENTRIES: usize = 100_000;
}

impl Default for DedupFlush {
    /// Once a second, or at [`DedupFlush::DEFAULT_ENTRIES`] entries.
    fn default() -> Self {
        DedupFlush {
            interval: Duration::from_secs(1),
            entries: Self::DEFAULT_ENTRIES,
        }
    }
}

/// The master's sequencer: numbers new writes and finds the ones the log already holds.
#[derive(Debug)]
pub struct Sequencer {
    /// The order the next new entry gets.
    next: Order,
    /// Keys of the entries admitted since the last flush (stored or in the batch being built).
    recent: DedupIndex,
    /// When `recent` is due to move to disk.
    flush: DedupFlush,
    /// When `recent` last moved to disk (or the sequencer started).
    flushed_at: Instant,
}

impl Sequencer {
    /// A sequencer for a log that ends at `last` (its keys all on disk already), deduplicating
    /// by `mode` (contents keyed by `digest`), starting its flush interval at `now`.
    pub fn new(
        mode: DedupMode,
        digest: Digest,
        last: Order,
        flush: DedupFlush,
        now: Instant,
    ) -> Sequencer {
        Sequencer {
            next: last.next(),
            recent: DedupIndex::new(mode, digest),
            flush,
            flushed_at: now,
        }
    }

    /// The order the next new entry gets.
    pub fn next_order(&self) -> Order {
        self.next
    }

    /// The keys admitted since the last flush: what the caller records on disk.
    pub fn recent(&self) -> &DedupIndex {
        &self.recent
    }

    /// Decides whether `write` is new or already held, looking in `known` for keys no longer in
    /// memory. A failed lookup leaves the sequencer as it was and returns the error.
    pub fn admit<K: KnownKeys>(&mut self, write: Write, known: &K) -> Result<Admitted, K::Error> {
        if let Some(order) = self.find(&write, known)? {
            return Ok(Admitted::Existing {
                order,
                message_id: write.message_id,
            });
        }
        let entry = Entry {
            order: self.next,
            message_id: write.message_id,
            content: write.content,
        };
        self.recent.record(&entry);
        self.next = self.next.next();
        Ok(Admitted::New(entry))
    }

    /// Where the log already holds this write, without admitting it: what a master that takes
    /// no new entries (read-only) answers a retry with.
    pub fn lookup<K: KnownKeys>(
        &self,
        write: &Write,
        known: &K,
    ) -> Result<Option<Order>, K::Error> {
        self.find(write, known)
    }

    /// Where the log already holds this write: a known message id first, in memory then on
    /// disk, and only then equal content, in memory then on disk.
    fn find<K: KnownKeys>(&self, write: &Write, known: &K) -> Result<Option<Order>, K::Error> {
        if write.client_chosen {
            if let Some(order) = self.recent.find_id(&write.message_id) {
                return Ok(Some(order));
            }
            if let Some(order) = known.find_id(&write.message_id)? {
                return Ok(Some(order));
            }
        }
        match self.recent.mode() {
            DedupMode::Id => Ok(None),
            DedupMode::Content => {
                // Digested once per write, for both lookups.
                let digest = self.recent.digest(&write.content);
                if let Some(order) = self.recent.find_content(&digest) {
                    return Ok(Some(order));
                }
                known.find_content(&digest)
            }
        }
    }

    /// Whether the recent keys are due to move to disk at `now`: there are some, and the flush
    /// interval has passed or there are too many of them. Only meaningful between batches, when
    /// every admitted entry is stored.
    pub fn flush_due(&self, now: Instant) -> bool {
        !self.recent.is_empty()
            && (now.saturating_duration_since(self.flushed_at) >= self.flush.interval
                || self.recent.len() >= self.flush.entries)
    }

    /// Records that the recent keys are on disk as of `now`: they are forgotten here.
    pub fn flushed(&mut self, now: Instant) {
        self.recent.clear();
        self.flushed_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    use crate::rules::dedup::test_digest;

    /// Keys "on disk": a map, a log of the lookups made, and an optional failure.
    #[derive(Default)]
    struct Disk {
        ids: HashMap<String, Order>,
        /// Content digests, with the content they stand for (for the lookup log).
        contents: HashMap<ContentDigest, (String, Order)>,
        /// Contents named in the lookup log though not on disk.
        names: HashMap<ContentDigest, String>,
        looked_up: RefCell<Vec<String>>,
        broken: bool,
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Broken;

    impl Disk {
        fn with_id(mut self, id: &str, order: u64) -> Disk {
            self.ids.insert(id.into(), Order(order));
            self
        }

        /// Names a content in the lookup log without putting it on disk.
        fn naming(mut self, content: &str) -> Disk {
            self.names.insert(test_digest(content), content.into());
            self
        }

        fn with_content(mut self, content: &str, order: u64) -> Disk {
            self.contents
                .insert(test_digest(content), (content.into(), Order(order)));
            self
        }
    }

    impl KnownKeys for Disk {
        type Error = Broken;

        fn find_id(&self, message_id: &MessageId) -> Result<Option<Order>, Broken> {
            self.looked_up
                .borrow_mut()
                .push(format!("id:{}", message_id.as_str()));
            if self.broken {
                return Err(Broken);
            }
            Ok(self.ids.get(message_id.as_str()).copied())
        }

        fn find_content(&self, digest: &ContentDigest) -> Result<Option<Order>, Broken> {
            let known = self.contents.get(digest);
            let name = known
                .map(|(content, _)| content.as_str())
                .or(self.names.get(digest).map(String::as_str))
                .unwrap_or("<unknown>");
            self.looked_up.borrow_mut().push(format!("content:{name}"));
            if self.broken {
                return Err(Broken);
            }
            Ok(known.map(|(_, order)| *order))
        }
    }

    fn id(raw: &str) -> MessageId {
        MessageId::parse(raw).unwrap()
    }

    fn client(raw: &str, content: &str) -> Write {
        Write::with_client_id(id(raw), content.into())
    }

    fn fresh(content: &str) -> Write {
        Write::with_fresh_id(MessageId::random(), content.into())
    }

    fn sequencer(mode: DedupMode, last: u64) -> Sequencer {
        Sequencer::new(
            mode,
            test_digest,
            Order(last),
            DedupFlush::default(),
            Instant::now(),
        )
    }

    fn order(admitted: Admitted) -> (bool, Order) {
        match admitted {
            Admitted::New(entry) => (true, entry.order),
            Admitted::Existing { order, .. } => (false, order),
        }
    }

    #[test]
    fn a_lookup_finds_held_writes_and_admits_nothing() {
        let mut seq = sequencer(DedupMode::Id, 4);
        let disk = Disk::default().with_id("old", 2);
        seq.admit(client("a", "x"), &disk).unwrap();
        assert_eq!(seq.lookup(&client("a", "y"), &disk), Ok(Some(Order(5))));
        assert_eq!(seq.lookup(&client("old", "y"), &disk), Ok(Some(Order(2))));
        assert_eq!(seq.lookup(&client("new", "y"), &disk), Ok(None));
        assert_eq!(seq.next_order(), Order(6), "a lookup numbers nothing");
        assert_eq!(seq.recent().len(), 1);
    }

    #[test]
    fn new_writes_get_consecutive_orders_after_the_log_end() {
        let mut seq = sequencer(DedupMode::Id, 7);
        let disk = Disk::default();
        let first = seq.admit(client("a", "x"), &disk).unwrap();
        assert_eq!(first, Admitted::New(Entry::of(8, "a", "x")));
        assert_eq!(
            order(seq.admit(fresh("x"), &disk).unwrap()),
            (true, Order(9))
        );
        assert_eq!(seq.next_order(), Order(10));
        assert_eq!(seq.recent().len(), 2);
    }

    #[test]
    fn a_retried_id_finds_its_entry_in_memory_or_on_disk_whatever_its_content() {
        let mut seq = sequencer(DedupMode::Id, 10);
        let disk = Disk::default().with_id("old", 3);
        seq.admit(client("a", "x"), &disk).unwrap();
        let retry = seq.admit(client("a", "other"), &disk).unwrap();
        assert_eq!(
            retry,
            Admitted::Existing {
                order: Order(11),
                message_id: id("a")
            }
        );
        assert_eq!(
            order(seq.admit(client("old", "y"), &disk).unwrap()),
            (false, Order(3))
        );
        assert_eq!(seq.next_order(), Order(12), "no order used by a retry");
    }

    #[test]
    fn id_mode_never_matches_on_content() {
        let mut seq = sequencer(DedupMode::Id, 0);
        let disk = Disk::default().with_content("x", 1);
        seq.admit(client("a", "x"), &disk).unwrap();
        assert_eq!(
            order(seq.admit(client("b", "x"), &disk).unwrap()),
            (true, Order(2))
        );
        assert_eq!(
            order(seq.admit(fresh("x"), &disk).unwrap()),
            (true, Order(3))
        );
        assert!(
            disk.looked_up.borrow().iter().all(|l| l.starts_with("id:")),
            "content is never looked up in id mode"
        );
    }

    #[test]
    fn content_mode_matches_equal_content_in_memory_or_on_disk() {
        let mut seq = sequencer(DedupMode::Content, 5);
        let disk = Disk::default().with_content("on disk", 2);
        seq.admit(fresh("in memory"), &disk).unwrap();
        assert_eq!(
            order(seq.admit(fresh("in memory"), &disk).unwrap()),
            (false, Order(6))
        );
        assert_eq!(
            order(seq.admit(client("c", "in memory"), &disk).unwrap()),
            (false, Order(6))
        );
        assert_eq!(
            order(seq.admit(fresh("on disk"), &disk).unwrap()),
            (false, Order(2))
        );
        assert_eq!(
            order(seq.admit(fresh("new"), &disk).unwrap()),
            (true, Order(7))
        );
    }

    #[test]
    fn a_known_id_on_disk_beats_equal_content_in_memory() {
        let mut seq = sequencer(DedupMode::Content, 9);
        let disk = Disk::default().with_id("a", 1);
        seq.admit(fresh("y"), &disk).unwrap();
        // A retry of `a` whose content equals the in-memory entry's is still `a`.
        let retry = seq.admit(client("a", "y"), &disk).unwrap();
        assert_eq!(order(retry), (false, Order(1)));
    }

    #[test]
    fn duplicates_within_one_batch_resolve_to_the_earlier_entry() {
        // Nothing is flushed or stored between these: they are one batch.
        let mut seq = sequencer(DedupMode::Content, 0);
        let disk = Disk::default();
        let batch = [
            client("a", "1"),
            client("a", "2"),
            fresh("3"),
            fresh("3"),
            client("b", "1"),
        ];
        let outcomes: Vec<(bool, Order)> = batch
            .into_iter()
            .map(|write| order(seq.admit(write, &disk).unwrap()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (true, Order(1)),
                (false, Order(1)),
                (true, Order(2)),
                (false, Order(2)),
                (false, Order(1)),
            ]
        );
    }

    #[test]
    fn fresh_ids_are_never_looked_up() {
        let mut seq = sequencer(DedupMode::Content, 0);
        // Known to the lookup log by name only; neither is on disk.
        let disk = Disk::default().naming("x").naming("y");
        let write = fresh("x");
        let fresh_id = write.message_id.clone();
        seq.admit(write, &disk).unwrap();
        seq.admit(client("c", "y"), &disk).unwrap();
        assert_eq!(
            *disk.looked_up.borrow(),
            [
                "content:x".to_owned(),
                "id:c".to_owned(),
                "content:y".to_owned()
            ]
        );
        assert!(!disk
            .looked_up
            .borrow()
            .contains(&format!("id:{}", fresh_id.as_str())));
    }

    #[test]
    fn a_failed_lookup_is_returned_and_changes_nothing() {
        let mut seq = sequencer(DedupMode::Content, 4);
        let broken = Disk {
            broken: true,
            ..Disk::default()
        };
        assert_eq!(seq.admit(client("a", "x"), &broken), Err(Broken));
        assert_eq!(seq.admit(fresh("x"), &broken), Err(Broken));
        assert_eq!(seq.next_order(), Order(5));
        assert!(seq.recent().is_empty());
        // What memory answers needs no lookup on disk, so it cannot fail.
        seq.admit(client("b", "y"), &Disk::default()).unwrap();
        assert_eq!(
            order(seq.admit(client("b", "z"), &broken).unwrap()),
            (false, Order(5))
        );
    }

    #[test]
    fn flushes_fall_due_by_interval_or_by_count_and_only_with_keys_to_move() {
        let start = Instant::now();
        let flush = DedupFlush {
            interval: Duration::from_secs(1),
            entries: 3,
        };
        let mut seq = Sequencer::new(DedupMode::Id, test_digest, Order::ZERO, flush, start);
        let disk = Disk::default();
        let later = start + Duration::from_secs(5);
        assert!(!seq.flush_due(later), "nothing to move");

        seq.admit(fresh("a"), &disk).unwrap();
        assert!(!seq.flush_due(start + Duration::from_millis(999)));
        assert!(seq.flush_due(start + Duration::from_secs(1)));

        seq.admit(fresh("b"), &disk).unwrap();
        seq.admit(fresh("c"), &disk).unwrap();
        assert!(seq.flush_due(start), "three entries are enough");

        seq.flushed(later);
        assert!(seq.recent().is_empty());
        seq.admit(fresh("d"), &disk).unwrap();
        assert!(!seq.flush_due(later + Duration::from_millis(500)));
        assert!(seq.flush_due(later + Duration::from_secs(1)));
        assert_eq!(seq.next_order(), Order(5), "orders go on after a flush");
    }
}
