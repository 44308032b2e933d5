//! The master's deduplication index: which log position already holds a given write.

use crate::entry::Entry;
use crate::ids::{MessageId, Order};
use std::collections::HashMap;

/// What makes two writes "the same entry".
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DedupMode {
    /// Equal `message_id`s (client-chosen, or a fresh UUID when absent) are the same entry.
    Id,
    /// Equal `content` is the same entry, as the earlier implementation deduplicated.
    Content,
}

/// Maps the dedup key of every entry in the log to its position.
#[derive(Debug)]
pub struct DedupIndex {
    /// Which field is the key.
    mode: DedupMode,
    /// Key to position; the key is the message id or the content, per `mode`.
    positions: HashMap<String, Order>,
}

impl DedupIndex {
    /// An empty index.
    pub fn new(mode: DedupMode) -> DedupIndex {
        DedupIndex {
            mode,
            positions: HashMap::new(),
        }
    }

    fn key<'a>(&self, message_id: &'a MessageId, content: &'a str) -> &'a str {
        match self.mode {
            DedupMode::Id => message_id.as_str(),
            DedupMode::Content => content,
        }
    }

    /// Where a write with this id and content already stands, if anywhere.
    pub fn find(&self, message_id: &MessageId, content: &str) -> Option<Order> {
        self.positions.get(self.key(message_id, content)).copied()
    }

    /// Records an entry that was appended to the log.
    pub fn record(&mut self, entry: &Entry) {
        let key = self.key(&entry.message_id, &entry.content).to_owned();
        self.positions.entry(key).or_insert(entry.order);
    }

    /// How many distinct keys are indexed.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(order: u64, id: &str, content: &str) -> Entry {
        Entry {
            order: Order(order),
            message_id: MessageId::parse(id).unwrap(),
            content: content.into(),
        }
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
    fn content_mode_matches_on_content_only() {
        let mut index = DedupIndex::new(DedupMode::Content);
        index.record(&entry(1, "a", "hello"));
        let b = MessageId::parse("b").unwrap();
        assert_eq!(index.find(&b, "hello"), Some(Order(1)));
        assert_eq!(index.find(&b, "hello!"), None);
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
        assert_eq!(index.len(), 1);
    }
}
