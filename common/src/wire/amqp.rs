//! The AMQP payloads: entries on `<ns>.entries` and secondaries' reports on `<ns>.acks`.
//!
//! [`EntryMessage`] is also the shape of one entry in `GET /messages` (see
//! [`MessagesPage`](super::http::MessagesPage)); there it carries no master incarnation.
//!
//! [`AckMessage`] is both the cumulative ack and the heartbeat: one message says who is
//! speaking (id and the incarnation of its data directory), what it durably holds, when it
//! said so, and which master incarnation numbered the newest entry it holds.

use super::WireError;
use crate::entry::Entry;
use crate::ids::{Incarnation, MessageId, NodeId, Order};
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
    /// The incarnation of the master that numbered and published it; set on the entries
    /// exchange, absent from `GET /messages` (and from publishers older than incarnations).
    /// A secondary reports it back, so the master can tell evidence about its own log from
    /// positions numbered by a master whose data was replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_incarnation: Option<Incarnation>,
}

impl From<&Entry> for EntryMessage {
    fn from(entry: &Entry) -> Self {
        EntryMessage {
            message_id: entry.message_id.as_str().to_owned(),
            order: entry.order.get(),
            content: entry.content.clone(),
            master_incarnation: None,
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

/// An entry as it came off the entries exchange, with the master incarnation that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The entry.
    pub entry: Entry,
    /// The publishing master's incarnation, when it stamped one.
    pub master_incarnation: Option<Incarnation>,
}

impl EntryMessage {
    /// Decodes an AMQP payload into a domain entry (dropping the master incarnation).
    pub fn decode(payload: &[u8]) -> Result<Entry, WireError> {
        Self::decode_published(payload).map(|published| published.entry)
    }

    /// Decodes an AMQP payload into a domain entry and the master incarnation it carries.
    pub fn decode_published(payload: &[u8]) -> Result<Published, WireError> {
        let msg: EntryMessage =
            serde_json::from_slice(payload).map_err(|e| WireError::Malformed(e.to_string()))?;
        let master_incarnation = msg.master_incarnation;
        Ok(Published {
            entry: Entry::try_from(msg)?,
            master_incarnation,
        })
    }

    /// Encodes a domain entry as an AMQP payload, without a master incarnation.
    pub fn encode(entry: &Entry) -> Vec<u8> {
        serde_json::to_vec(&EntryMessage::from(entry)).expect("entry serialises")
    }

    /// Encodes a domain entry as the master `master` publishes it.
    pub fn encode_from(entry: &Entry, master: Incarnation) -> Vec<u8> {
        let message = EntryMessage {
            master_incarnation: Some(master),
            ..EntryMessage::from(entry)
        };
        serde_json::to_vec(&message).expect("entry serialises")
    }
}

/// A secondary's report, published to `<ns>.acks` on every change of its position (an ack)
/// and every `--heartbeat-ms` (a heartbeat): "I, `id` of data directory `incarnation`, durably
/// hold every entry up to and including `applied`, as of `sent_at_ms`".
///
/// A payload without `incarnation` (a secondary older than incarnations) does not decode: the
/// master cannot tell which life of the secondary holds the position, so it does not count it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessage {
    /// The secondary's `--id`.
    pub id: NodeId,
    /// The incarnation of its data directory.
    pub incarnation: Incarnation,
    /// The end of the contiguous prefix it holds.
    pub applied: u64,
    /// Its wall-clock time when it sent this, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The master incarnation that published the newest entry it applied from the queue
    /// (entries fetched by catch-up carry none; the last one known is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_incarnation: Option<Incarnation>,
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

    const MASTER: Incarnation = Incarnation::from_u128(0x4d);

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
        let published =
            EntryMessage::decode_published(&EntryMessage::encode_from(&entry, MASTER)).unwrap();
        assert_eq!(
            published,
            Published {
                entry: entry.clone(),
                master_incarnation: Some(MASTER)
            }
        );
        // An entry from a master older than incarnations still decodes.
        let old = br#"{"message_id":"a","order":1,"content":"x"}"#;
        assert_eq!(
            EntryMessage::decode_published(old)
                .unwrap()
                .master_incarnation,
            None
        );
        // GET /messages shows no incarnation.
        let page_entry = serde_json::to_value(EntryMessage::from(&entry)).unwrap();
        assert!(page_entry.get("master_incarnation").is_none());
    }

    #[test]
    fn reports_round_trip_and_old_acks_are_refused() {
        let report = AckMessage {
            id: NodeId::parse("s1").unwrap(),
            incarnation: Incarnation::from_u128(1),
            applied: 9,
            sent_at_ms: 1_700_000_000_000,
            master_incarnation: Some(MASTER),
        };
        assert_eq!(AckMessage::decode(&report.encode()).unwrap(), report);
        let without_master = AckMessage {
            master_incarnation: None,
            ..report
        };
        let text = String::from_utf8(without_master.encode()).unwrap();
        assert!(!text.contains("master_incarnation"), "{text}");
        assert_eq!(AckMessage::decode(text.as_bytes()).unwrap(), without_master);
        // An ack of a secondary older than incarnations: refused, not panicked on.
        let old = AckMessage::decode(br#"{"id":"s1","applied":3}"#).unwrap_err();
        assert!(old.to_string().contains("incarnation"), "{old}");
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
        let bad_incarnation = br#"{"id":"s1","incarnation":"nope","applied":1,"sent_at_ms":1}"#;
        assert!(AckMessage::decode(bad_incarnation).is_err());
    }
}
