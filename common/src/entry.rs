//! The domain type of one log entry.

use crate::ids::{MessageId, Order};

/// One entry of the replicated log, identical on every node that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the one total order the master assigned.
    pub order: Order,
    /// Identity used for deduplication of client retries.
    pub message_id: MessageId,
    /// The client's payload.
    pub content: String,
}

#[cfg(any(test, feature = "testing"))]
impl Entry {
    /// A made-up entry at `order` with a fresh id and the content `m<order>`, for tests.
    pub fn sample(order: u64) -> Entry {
        Entry {
            order: Order(order),
            message_id: MessageId::random(),
            content: format!("m{order}"),
        }
    }

    /// An entry with the given order, message id and content, for tests.
    pub fn of(order: u64, message_id: &str, content: &str) -> Entry {
        Entry {
            order: Order(order),
            message_id: MessageId::parse(message_id).expect("a valid message id"),
            content: content.into(),
        }
    }
}
