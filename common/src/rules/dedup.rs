//! What makes two writes the same entry ([`DedupMode`]), and the keys of the newest entries
//! held in memory ([`DedupIndex`]).
//!
//! The decision itself (which lookups run, in which order) is the
//! [`Sequencer`](super::sequencer::Sequencer)'s. It keeps a [`DedupIndex`] of its most recent
//! entries only (a second's worth at most); the master moves those keys to its on-disk index
//! about once a second, so memory does not grow with the log.
//!
//! Contents are keyed by a [`ContentDigest`], never by the content itself: a second's worth of
//! 1 MiB entries would otherwise be held twice. This crate does no hashing; the master passes
//! the digest function in ([`Digest`]), the one its on-disk index uses (BLAKE3).

use crate::entry::Entry;
use crate::ids::{MessageId, Order};
use std::collections::HashMap;

/// What makes two writes "the same entry".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupMode {
    /// Equal `message_id`s (client-chosen, or a fresh UUID when absent) are the same entry.
    Id,
    /// Equal `content` is the same entry too, as the earlier implementation deduplicated.
    /// A known `message_id` still counts, so a client's retry is always safe.
    Content,
}

impl DedupMode {
    /// Every mode, with its flag value, for command-line parsers.
    pub const ALL: [(&'static str, DedupMode); 2] =
        [("id", DedupMode::Id), ("content", DedupMode::Content)];

    /// The flag value of this mode (`id` or `content`).
    pub fn as_str(self) -> &'static str {
        match self {
            DedupMode::Id => "id",
            DedupMode::Content => "content",
        }
    }
}

impl std::str::FromStr for DedupMode {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        DedupMode::ALL
            .iter()
            .find(|(name, _)| *name == raw)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| format!("dedup mode must be `id` or `content`, got {raw:?}"))
    }
}

impl std::fmt::Display for DedupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fixed-size digest of an entry's content (the master's is BLAKE3-256): what content keys
/// are, in memory and on disk. Two different contents with one digest are not expected to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentDigest(pub [u8; 32]);

/// The function that digests a content; given by the node, since this crate does no hashing.
pub type Digest = fn(&str) -> ContentDigest;

/// Maps recent entries' message ids (and, with [`DedupMode::Content`], their contents' digests)
/// to their positions: the in-memory half of the sequencer's lookup, and the batch of keys the master
/// records on disk.
#[derive(Debug)]
pub struct DedupIndex {
    /// Whether content is a key too.
    mode: DedupMode,
    /// Message id to position: always kept, since message ids are unique in the log.
    by_id: HashMap<MessageId, Order>,
    /// Content digest to position, kept only with [`DedupMode::Content`].
    by_content: HashMap<ContentDigest, Order>,
    /// How a content becomes its key.
    digest: Digest,
}

impl DedupIndex {
    /// An empty index whose content keys (with [`DedupMode::Content`]) are made by `digest`.
    pub fn new(mode: DedupMode, digest: Digest) -> DedupIndex {
        DedupIndex {
            mode,
            by_id: HashMap::new(),
            by_content: HashMap::new(),
            digest,
        }
    }

    /// The digest of `content`, as this index keys it.
    pub fn digest(&self, content: &str) -> ContentDigest {
        (self.digest)(content)
    }

    /// What makes two writes the same entry for this index.
    pub fn mode(&self) -> DedupMode {
        self.mode
    }

    /// Where the entry with this message id stands, if it is here.
    pub fn find_id(&self, message_id: &MessageId) -> Option<Order> {
        self.by_id.get(message_id).copied()
    }

    /// Where the first entry whose content has this digest stands, if it is here and contents
    /// are keys ([`DedupMode::Content`]).
    pub fn find_content(&self, digest: &ContentDigest) -> Option<Order> {
        match self.mode {
            DedupMode::Id => None,
            DedupMode::Content => self.by_content.get(digest).copied(),
        }
    }

    /// Records an entry that was appended to the log.
    pub fn record(&mut self, entry: &Entry) {
        self.by_id
            .entry(entry.message_id.clone())
            .or_insert(entry.order);
        if self.mode == DedupMode::Content {
            self.by_content
                .entry(self.digest(&entry.content))
                .or_insert(entry.order);
        }
    }

    /// The message ids it holds, with their orders.
    pub fn ids(&self) -> impl Iterator<Item = (&MessageId, Order)> {
        self.by_id.iter().map(|(id, order)| (id, *order))
    }

    /// The content digests it holds (only with [`DedupMode::Content`]), with their orders.
    pub fn contents(&self) -> impl Iterator<Item = (&ContentDigest, Order)> {
        self.by_content
            .iter()
            .map(|(digest, order)| (digest, *order))
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.by_id.clear();
        self.by_content.clear();
    }

    /// How many entries are indexed.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// A digest for tests of the rules (this crate does no cryptographic hashing): four salted
/// runs of the standard library's hasher. Not collision-resistant against an adversary, so
/// never used by a node.
#[cfg(any(test, feature = "testing"))]
pub fn test_digest(content: &str) -> ContentDigest {
    use std::hash::{Hash, Hasher};
    let mut digest = [0u8; 32];
    for (salt, lane) in digest.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (salt, content).hash(&mut hasher);
        lane.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    ContentDigest(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(order: u64, id: &str, content: &str) -> Entry {
        Entry::of(order, id, content)
    }

    fn id(raw: &str) -> MessageId {
        MessageId::parse(raw).unwrap()
    }

    /// The index of `mode` with the tests' digest.
    fn index(mode: DedupMode) -> DedupIndex {
        DedupIndex::new(mode, test_digest)
    }

    fn d(content: &str) -> ContentDigest {
        test_digest(content)
    }

    #[test]
    fn contents_are_held_as_digests_not_as_themselves() {
        let mut index = index(DedupMode::Content);
        let big = "x".repeat(1 << 20);
        index.record(&entry(1, "a", &big));
        assert_eq!(index.find_content(&d(&big)), Some(Order(1)));
        let held: Vec<_> = index.contents().collect();
        assert_eq!(held, [(&d(&big), Order(1))]);
        assert_eq!(std::mem::size_of_val(held[0].0), 32);
    }

    #[test]
    fn id_mode_keys_message_ids_only() {
        let mut index = index(DedupMode::Id);
        index.record(&entry(1, "a", "hello"));
        assert_eq!(index.find_id(&id("a")), Some(Order(1)));
        assert_eq!(index.find_id(&id("b")), None);
        assert_eq!(index.find_content(&d("hello")), None, "content is no key");
        assert_eq!(index.contents().count(), 0);
    }

    #[test]
    fn content_mode_keys_contents_too() {
        let mut index = index(DedupMode::Content);
        index.record(&entry(1, "a", "hello"));
        assert_eq!(index.find_content(&d("hello")), Some(Order(1)));
        assert_eq!(index.find_content(&d("hello!")), None);
        assert_eq!(index.find_id(&id("a")), Some(Order(1)));
    }

    #[test]
    fn the_first_position_wins() {
        let mut index = index(DedupMode::Content);
        index.record(&entry(1, "a", "x"));
        index.record(&entry(2, "b", "x"));
        assert_eq!(index.find_content(&d("x")), Some(Order(1)));
        assert_eq!(index.len(), 2, "both entries stay findable by id");
    }

    #[test]
    fn it_lists_its_keys_and_forgets_them_on_clear() {
        let mut index = index(DedupMode::Content);
        index.record(&entry(1, "a", "x"));
        index.record(&entry(2, "b", "x"));
        let ids: Vec<(String, Order)> = index
            .ids()
            .map(|(id, order)| (id.as_str().to_owned(), order))
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&("b".to_owned(), Order(2))));
        // The first entry keeps a content key.
        assert_eq!(index.contents().collect::<Vec<_>>(), [(&d("x"), Order(1))]);
        index.clear();
        assert!(index.is_empty());
        assert_eq!(index.find_id(&id("a")), None);
        assert_eq!(index.find_content(&d("x")), None);
    }

    #[test]
    fn modes_parse_from_their_flag_values() {
        for (name, mode) in DedupMode::ALL {
            assert_eq!(name.parse::<DedupMode>(), Ok(mode));
            assert_eq!(mode.to_string(), name);
        }
        assert!("ids".parse::<DedupMode>().is_err());
    }
}
