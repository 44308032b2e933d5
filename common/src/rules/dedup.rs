//! The master's deduplication rule: which log position already holds a given write.
//!
//! [`DedupIndex`] holds its keys in memory. The master uses it for its most recent entries only
//! (a second's worth at most) and moves their keys to disk ([`crate::store::DedupKeys`]) in one
//! transaction a second, so memory does not grow with the log.

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

/// Maps every entry's message id (and, with [`DedupMode::Content`], its content) to its
/// position, so that a write the log already holds is answered with the existing entry.
#[derive(Debug)]
pub struct DedupIndex {
    /// Whether content is a key too.
    mode: DedupMode,
    /// Message id to position: always kept, since message ids are unique in the log.
    by_id: HashMap<MessageId, Order>,
    /// Content to position, kept only with [`DedupMode::Content`].
    by_content: HashMap<String, Order>,
}

impl DedupIndex {
    /// An empty index.
    pub fn new(mode: DedupMode) -> DedupIndex {
        DedupIndex {
            mode,
            by_id: HashMap::new(),
            by_content: HashMap::new(),
        }
    }

    /// Where a write with this id and content already stands, if anywhere.
    pub fn find(&self, message_id: &MessageId, content: &str) -> Option<Order> {
        self.find_id(message_id)
            .or_else(|| self.find_content(content))
    }

    /// Where the entry with this message id stands, if it is here.
    pub fn find_id(&self, message_id: &MessageId) -> Option<Order> {
        self.by_id.get(message_id).copied()
    }

    /// Where the first entry with this content stands, if it is here and contents are keys
    /// ([`DedupMode::Content`]).
    pub fn find_content(&self, content: &str) -> Option<Order> {
        match self.mode {
            DedupMode::Id => None,
            DedupMode::Content => self.by_content.get(content).copied(),
        }
    }

    /// Records an entry that was appended to the log.
    pub fn record(&mut self, entry: &Entry) {
        self.by_id
            .entry(entry.message_id.clone())
            .or_insert(entry.order);
        if self.mode == DedupMode::Content {
            self.by_content
                .entry(entry.content.clone())
                .or_insert(entry.order);
        }
    }

    /// The message ids it holds, with their orders.
    pub fn ids(&self) -> impl Iterator<Item = (&MessageId, Order)> {
        self.by_id.iter().map(|(id, order)| (id, *order))
    }

    /// The contents it holds (only with [`DedupMode::Content`]), with their orders.
    pub fn contents(&self) -> impl Iterator<Item = (&str, Order)> {
        self.by_content
            .iter()
            .map(|(content, order)| (content.as_str(), *order))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(order: u64, id: &str, content: &str) -> Entry {
        Entry::of(order, id, content)
    }

    #[test]
    fn id_mode_matches_on_message_id_only() {
        let mut index = DedupIndex::new(DedupMode::Id);
        index.record(&entry(1, "a", "hello"));
        let a = MessageId::parse("a").unwrap();
        let b = MessageId::parse("b").unwrap();
        assert_eq!(index.find(&a, "other"), Some(Order(1)));
        assert_eq!(index.find(&b, "hello"), None);
    }

    #[test]
    fn content_mode_matches_on_content_or_id() {
        let mut index = DedupIndex::new(DedupMode::Content);
        index.record(&entry(1, "a", "hello"));
        let a = MessageId::parse("a").unwrap();
        let b = MessageId::parse("b").unwrap();
        assert_eq!(index.find(&b, "hello"), Some(Order(1)));
        assert_eq!(index.find(&b, "hello!"), None);
        assert_eq!(index.find(&a, "a retry with other content"), Some(Order(1)));
    }

    #[test]
    fn the_first_position_wins() {
        let mut index = DedupIndex::new(DedupMode::Content);
        index.record(&entry(1, "a", "x"));
        index.record(&entry(2, "b", "x"));
        assert_eq!(
            index.find(&MessageId::parse("c").unwrap(), "x"),
            Some(Order(1))
        );
        assert_eq!(index.len(), 2, "both entries stay findable by id");
    }

    #[test]
    fn it_lists_its_keys_and_forgets_them_on_clear() {
        let mut index = DedupIndex::new(DedupMode::Content);
        index.record(&entry(1, "a", "x"));
        index.record(&entry(2, "b", "x"));
        let ids: Vec<(String, Order)> = index
            .ids()
            .map(|(id, order)| (id.as_str().to_owned(), order))
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&("b".to_owned(), Order(2))));
        // The first entry keeps a content key.
        assert_eq!(index.contents().collect::<Vec<_>>(), [("x", Order(1))]);
        index.clear();
        assert!(index.is_empty());
        assert_eq!(index.find(&MessageId::parse("a").unwrap(), "x"), None);
    }
}
