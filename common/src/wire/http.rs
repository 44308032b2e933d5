//! The bodies of the nodes' HTTP APIs, as the nodes send them and as clients (testkit, chaos,
//! bench) read them.
//!
//! Each struct is the whole JSON object of one answer, in both directions (`Serialize` for the
//! node, `Deserialize` for the client), so a field renamed here is renamed on both ends at once.
//! Numbers and ids are plain `u64` and `String` on the wire; the nodes convert from their domain
//! types ([`Entry`], [`Order`](crate::ids::Order), [`MessageId`](crate::ids::MessageId)) when
//! they build a body.
//!
//! No body denies unknown fields: the master ignores fields of `POST /messages` it does not
//! know, and a client reading an answer should survive a field added later.

use super::amqp::EntryMessage;
use crate::entry::Entry;
use serde::{Deserialize, Serialize};

/// The body of `POST /messages` as a client sends it.
///
/// This is the well-formed shape only. The master does not deserialise into it: it checks the
/// raw JSON field by field (`master/src/write_request.rs`) so that each mistake gets a message
/// naming the field and what it allows, then works with its own validated `WriteRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBody {
    /// The payload.
    pub content: String,
    /// Nodes that must hold the entry before the answer; the master's default when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<u64>,
    /// The client's id, which makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// How long the master may wait for `w`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The answer to a write the master acknowledged: `201` for a new entry, `200` for one it
/// already held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAck {
    /// The entry's id.
    pub message_id: String,
    /// Its position.
    pub order: u64,
    /// Its content, as stored.
    pub content: String,
    /// The write concern that was met.
    pub w: u64,
    /// How many nodes held it when the master answered, by the master's count.
    pub acks: u64,
    /// Whether the log already held this write.
    #[serde(default)]
    pub duplicate: bool,
}

impl WriteAck {
    /// The answer for `entry`, held by `acks` nodes of the `w` asked for.
    pub fn of(entry: &Entry, w: u64, acks: u64, duplicate: bool) -> WriteAck {
        WriteAck {
            message_id: entry.message_id.as_str().to_owned(),
            order: entry.order.get(),
            content: entry.content.clone(),
            w,
            acks,
            duplicate,
        }
    }
}

/// The body of every error answer without more to say: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, phrased for the client.
    pub error: String,
}

/// The `504` answer to a write: the entry is in the master's log at `order`, but its write
/// concern was not met in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteTimedOut {
    /// The explanation.
    pub error: String,
    /// The entry's id.
    pub message_id: String,
    /// Its position.
    pub order: u64,
    /// How many nodes held it when the wait ended.
    pub acks: u64,
}

/// The `503` answer to a write while the master stops. The entry fields are set together, and
/// only when the write was appended before the stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShuttingDown {
    /// The explanation.
    pub error: String,
    /// The entry's id, if it was appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Its position, if it was appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u64>,
    /// How many nodes held it when the master stopped waiting, if it was appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<u64>,
}

/// The `503` body of a write refused because the master is read-only: no quorum of healthy
/// nodes, or a log shorter than the evidence says (the fence). Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOnly {
    /// Why, and what to do.
    pub error: String,
    /// Healthy nodes (the master included), when the cause is the quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<u64>,
    /// Healthy nodes needed, when the cause is the quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<u64>,
}

/// The master's `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterHealth {
    /// `ok`.
    pub status: String,
    /// `master`.
    pub role: String,
    /// The end of its log.
    pub last_order: u64,
    /// Each configured secondary's acknowledged position.
    pub secondaries: Vec<SecondaryPosition>,
}

impl MasterHealth {
    /// A healthy master whose log ends at `last_order`.
    pub fn ok(last_order: u64, secondaries: Vec<SecondaryPosition>) -> MasterHealth {
        MasterHealth {
            status: "ok".into(),
            role: "master".into(),
            last_order,
            secondaries,
        }
    }
}

/// One secondary's position as the master knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryPosition {
    /// Its id.
    pub id: String,
    /// Everything up to here it said it holds.
    pub acked: u64,
}

/// A secondary's `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryHealth {
    /// `ok`.
    pub status: String,
    /// `secondary`.
    pub role: String,
    /// Its id.
    pub id: String,
    /// The end of its contiguous, stored prefix.
    pub applied: u64,
    /// Entries waiting beyond a gap.
    pub held_back: u64,
}

impl SecondaryHealth {
    /// A healthy secondary `id` holding everything up to `applied`, with `held_back` entries
    /// waiting beyond a gap.
    pub fn ok(id: String, applied: u64, held_back: u64) -> SecondaryHealth {
        SecondaryHealth {
            status: "ok".into(),
            role: "secondary".into(),
            id,
            applied,
            held_back,
        }
    }
}

/// The body of `GET /messages` on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesPage {
    /// Entries in log order.
    pub messages: Vec<EntryMessage>,
}

impl MessagesPage {
    /// Builds a page from domain entries.
    pub fn from_entries(entries: &[Entry]) -> MessagesPage {
        MessagesPage {
            messages: entries.iter().map(EntryMessage::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn as_json(body: &impl Serialize) -> Value {
        serde_json::to_value(body).unwrap()
    }

    #[test]
    fn a_write_leaves_out_what_it_does_not_set() {
        let write = WriteBody {
            content: "x".into(),
            w: Some(2),
            message_id: None,
            timeout_ms: None,
        };
        assert_eq!(
            serde_json::to_string(&write).unwrap(),
            r#"{"content":"x","w":2}"#
        );
        let back: WriteBody = serde_json::from_str(r#"{"content":"x","w":2}"#).unwrap();
        assert_eq!(back, write);
    }

    #[test]
    fn answers_keep_their_field_names() {
        let ack = WriteAck::of(&Entry::of(3, "a", "hi"), 2, 3, true);
        assert_eq!(
            as_json(&ack),
            json!({"message_id": "a", "order": 3, "content": "hi", "w": 2, "acks": 3, "duplicate": true})
        );
        let timed_out = WriteTimedOut {
            error: "late".into(),
            message_id: "a".into(),
            order: 3,
            acks: 1,
        };
        assert_eq!(
            as_json(&timed_out),
            json!({"error": "late", "message_id": "a", "order": 3, "acks": 1})
        );
        assert_eq!(
            as_json(&ErrorBody { error: "no".into() }),
            json!({"error": "no"})
        );
        let health = MasterHealth::ok(
            7,
            vec![SecondaryPosition {
                id: "s1".into(),
                acked: 5,
            }],
        );
        assert_eq!(
            as_json(&health),
            json!({"status": "ok", "role": "master", "last_order": 7, "secondaries": [{"id": "s1", "acked": 5}]})
        );
        assert_eq!(
            as_json(&SecondaryHealth::ok("s1".into(), 5, 2)),
            json!({"status": "ok", "role": "secondary", "id": "s1", "applied": 5, "held_back": 2})
        );
    }

    #[test]
    fn a_stop_before_the_append_names_no_entry() {
        let before = ShuttingDown {
            error: "stopping".into(),
            message_id: None,
            order: None,
            acks: None,
        };
        assert_eq!(as_json(&before), json!({"error": "stopping"}));
        let after = ShuttingDown {
            message_id: Some("a".into()),
            order: Some(3),
            acks: Some(1),
            ..before
        };
        assert_eq!(
            as_json(&after),
            json!({"error": "stopping", "message_id": "a", "order": 3, "acks": 1})
        );
        let back: ShuttingDown = serde_json::from_str(r#"{"error":"stopping"}"#).unwrap();
        assert_eq!(back.order, None);
    }
}
