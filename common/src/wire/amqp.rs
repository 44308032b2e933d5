//! The AMQP payloads: entries on `<ns>.entries` and cumulative acks on `<ns>.acks`.
//!
//! [`EntryMessage`] is also the shape of one entry in `GET /messages` (see
//! [`MessagesPage`](super::http::MessagesPage)).

use super::WireError;
use crate::entry::Entry;
use crate::ids::{MessageId, NodeId, Order};
use serde::{Deserialize, Serialize};

/// An entry as published on the `<ns>.entries` exchange and served by `GET /messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMessage {
    /// The client-visible id.
    pub message_id: String,
    /// The 1-based position in the log.
    pub order: u64,
    /// The payload.
    pub content: String,
}

impl From<&Entry> for EntryMessage {
    fn from(entry: &Entry) -> Self {
        EntryMessage {
            message_id: entry.message_id.as_str().to_owned(),
            order: entry.order.get(),
            content: entry.content.clone(),
        }
    }
}

impl TryFrom<EntryMessage> for Entry {
    type Error = WireError;

    fn try_from(msg: EntryMessage) -> Result<Self, Self::Error> {
        if msg.order == 0 {
            return Err(WireError::ZeroOrder);
        }
        let message_id = MessageId::parse(&msg.message_id).ok_or(WireError::BadMessageId)?;
        Ok(Entry {
            order: Order(msg.order),
            message_id,
            content: msg.content,
        })
    }
}

impl EntryMessage {
    /// Decodes an AMQP payload into a domain entry.
    pub fn decode(payload: &[u8]) -> Result<Entry, WireError> {
        let msg: EntryMessage =
            serde_json::from_slice(payload).map_err(|e| WireError::Malformed(e.to_string()))?;
        Entry::try_from(msg)
    }

    /// Encodes a domain entry as an AMQP payload.
    pub fn encode(entry: &Entry) -> Vec<u8> {
        serde_json::to_vec(&EntryMessage::from(entry)).expect("entry serialises")
    }
}

/// A secondary's cumulative acknowledgement, published to `<ns>.acks`: "I durably hold every
/// entry up to and including `applied`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessage {
    /// The secondary's `--id`.
    pub id: NodeId,
    /// The end of the contiguous prefix it holds.
    pub applied: u64,
}

impl AckMessage {
    /// Decodes an AMQP payload.
    pub fn decode(payload: &[u8]) -> Result<AckMessage, WireError> {
        serde_json::from_slice(payload).map_err(|e| WireError::Malformed(e.to_string()))
    }

    /// Encodes for publishing.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ack serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_through_the_wire() {
        let entry = Entry {
            order: Order(7),
            message_id: MessageId::random(),
            content: "hé".into(),
        };
        assert_eq!(
            EntryMessage::decode(&EntryMessage::encode(&entry)).unwrap(),
            entry
        );
    }

    #[test]
    fn bad_payloads_are_rejected_not_panicked_on() {
        assert!(matches!(
            EntryMessage::decode(b"nope"),
            Err(WireError::Malformed(_))
        ));
        let zero = br#"{"message_id":"a","order":0,"content":"x"}"#;
        assert_eq!(EntryMessage::decode(zero), Err(WireError::ZeroOrder));
        let no_id = br#"{"message_id":"","order":1,"content":"x"}"#;
        assert_eq!(EntryMessage::decode(no_id), Err(WireError::BadMessageId));
        assert!(AckMessage::decode(br#"{"id":"s1"}"#).is_err());
    }
}
