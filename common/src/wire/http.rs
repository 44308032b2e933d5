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

impl ReadOnly {
    /// How every read-only refusal's `error` begins, whatever the cause: what a client (the
    /// chaos checker) tells it from a `503` of a stopping master by.
    pub const ERROR_PREFIX: &'static str = "read-only:";

    /// Whether a `503`'s `error` is a read-only refusal (nothing was appended).
    pub fn is_refusal(error: &str) -> bool {
        error.starts_with(Self::ERROR_PREFIX)
    }
}

/// The master's `GET /health`: its liveness probe, always answered `200`, with what it knows
/// of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterHealth {
    /// `ok` (writable, every secondary healthy), `degraded` (writable, some secondary is not
    /// healthy) or `read-only` (no quorum, or the log is fenced).
    pub status: String,
    /// `master`.
    pub role: String,
    /// Whether `POST /messages` takes new entries now.
    pub writable: bool,
    /// The end of its log.
    pub last_order: u64,
    /// The quorum as it stands.
    pub quorum: QuorumHealth,
    /// The master's link to the broker.
    pub broker: BrokerHealth,
    /// Each configured secondary as the master sees it.
    pub secondaries: Vec<SecondaryStatus>,
}

impl MasterHealth {
    /// `ok`: writable, every secondary healthy.
    pub const OK: &'static str = "ok";
    /// `degraded`: writable, but some secondary is suspected or unhealthy.
    pub const DEGRADED: &'static str = "degraded";
    /// `read-only`: no new entries are taken.
    pub const READ_ONLY: &'static str = "read-only";

    /// The status word for a master that is (or is not) `writable` with these secondaries.
    pub fn status_of(writable: bool, secondaries: &[SecondaryStatus]) -> &'static str {
        if !writable {
            Self::READ_ONLY
        } else if secondaries
            .iter()
            .any(|secondary| secondary.status != SecondaryStatus::HEALTHY)
        {
            Self::DEGRADED
        } else {
            Self::OK
        }
    }
}

/// How many nodes are healthy, of how many, and how many writes need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumHealth {
    /// The master plus every configured secondary.
    pub nodes: u64,
    /// How many must be healthy for the master to take writes (`0` with `--quorum off`).
    pub needed: u64,
    /// How many are: the master, and every secondary that is not `unhealthy`.
    pub healthy: u64,
}

/// A node's link to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHealth {
    /// Whether its channel to the broker is up now.
    pub connected: bool,
}

/// One secondary as the master sees it, in the master's `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryStatus {
    /// Its id.
    pub id: String,
    /// `healthy`, `suspected` or `unhealthy`.
    pub status: String,
    /// Everything up to here its current incarnation said it holds.
    pub acked: u64,
    /// Entries behind the master's `last_order`.
    pub lag: u64,
    /// Milliseconds since the master last heard from it; `null` when never (since the master
    /// started).
    pub last_seen_ms: Option<u64>,
    /// The incarnation of its data directory; `null` until it reported one.
    pub incarnation: Option<String>,
}

impl SecondaryStatus {
    /// Heard from within `--suspect-after-ms`.
    pub const HEALTHY: &'static str = "healthy";
    /// Silent for longer than `--suspect-after-ms`, or not heard from since the master started.
    pub const SUSPECTED: &'static str = "suspected";
    /// Silent for longer than `--unhealthy-after-ms`: no longer counts toward the quorum.
    pub const UNHEALTHY: &'static str = "unhealthy";
}

/// The `200` answer of `GET /ready`: the node can do its job. When it cannot, `/ready` answers
/// `503` with an [`ErrorBody`] saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// `ready`.
    pub status: String,
}

impl Default for Ready {
    /// The one ready answer: `{"status": "ready"}`.
    fn default() -> Ready {
        Ready {
            status: "ready".into(),
        }
    }
}

/// A secondary's `GET /health` (always `200`: it is the liveness probe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryHealth {
    /// `ok`, or `diverged` once it found an entry that conflicts with what it holds (see
    /// [`SecondaryHealth::DIVERGED`]).
    pub status: String,
    /// `secondary`.
    pub role: String,
    /// Its id.
    pub id: String,
    /// The end of its contiguous, stored prefix.
    pub applied: u64,
    /// Entries waiting beyond a gap.
    pub held_back: u64,
    /// The incarnation of its data directory.
    pub incarnation: String,
    /// The master as its last HTTP call saw it: `reachable`, `unreachable`, or `unknown` before
    /// the first call.
    pub master: String,
    /// Its connection to the broker.
    pub broker: BrokerHealth,
}

impl SecondaryHealth {
    /// The `status` of a secondary working normally.
    pub const OK: &'static str = "ok";
    /// The `status` of a secondary that found its history forked from the master's.
    pub const DIVERGED: &'static str = "diverged";
    /// `master`: the last call to the master got an answer.
    pub const MASTER_REACHABLE: &'static str = "reachable";
    /// `master`: the last call to the master got no answer.
    pub const MASTER_UNREACHABLE: &'static str = "unreachable";
    /// `master`: the master was not asked yet.
    pub const MASTER_UNKNOWN: &'static str = "unknown";
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

/// The `504` answer of `GET /messages?min_order=N&wait_ms=T`: the node had not applied through
/// `N` when the wait ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotYetApplied {
    /// The explanation.
    pub error: String,
    /// How far the node had applied (the end of its log) when it gave up.
    pub applied: u64,
}

/// The master's `GET /messages/{message_id}`: where an entry stands and who holds it. Resolves
/// a write whose answer was lost or timed out without sending its content again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryStatus {
    /// The entry's id.
    pub message_id: String,
    /// Its position.
    pub order: u64,
    /// Its content.
    pub content: String,
    /// How many nodes hold it (the length of `held_by`).
    pub acks: u64,
    /// The nodes holding it: `master` first, then each secondary whose acknowledged position
    /// covers it.
    pub held_by: Vec<String>,
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
        let secondaries = vec![SecondaryStatus {
            id: "s1".into(),
            status: SecondaryStatus::SUSPECTED.into(),
            acked: 5,
            lag: 2,
            last_seen_ms: None,
            incarnation: None,
        }];
        let health = MasterHealth {
            status: MasterHealth::status_of(true, &secondaries).into(),
            role: "master".into(),
            writable: true,
            last_order: 7,
            quorum: QuorumHealth {
                nodes: 2,
                needed: 2,
                healthy: 2,
            },
            broker: BrokerHealth { connected: true },
            secondaries,
        };
        assert_eq!(
            as_json(&health),
            json!({"status": "degraded", "role": "master", "writable": true, "last_order": 7,
                   "quorum": {"nodes": 2, "needed": 2, "healthy": 2},
                   "broker": {"connected": true},
                   "secondaries": [{"id": "s1", "status": "suspected", "acked": 5, "lag": 2,
                                    "last_seen_ms": null, "incarnation": null}]})
        );
        let secondary = SecondaryHealth {
            status: SecondaryHealth::OK.into(),
            role: "secondary".into(),
            id: "s1".into(),
            applied: 5,
            held_back: 2,
            incarnation: "00000000-0000-0000-0000-000000000007".into(),
            master: SecondaryHealth::MASTER_REACHABLE.into(),
            broker: BrokerHealth { connected: true },
        };
        assert_eq!(
            MasterHealth::status_of(false, &health.secondaries),
            "read-only"
        );
        assert_eq!(MasterHealth::status_of(true, &[]), "ok");
        assert_eq!(as_json(&Ready::default()), json!({"status": "ready"}));
        assert_eq!(
            as_json(&secondary),
            json!({"status": "ok", "role": "secondary", "id": "s1", "applied": 5, "held_back": 2,
                   "incarnation": "00000000-0000-0000-0000-000000000007", "master": "reachable",
                   "broker": {"connected": true}})
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

    #[test]
    fn status_and_wait_answers_keep_their_field_names() {
        let status = EntryStatus {
            message_id: "a".into(),
            order: 3,
            content: "hi".into(),
            acks: 2,
            held_by: vec!["master".into(), "s1".into()],
        };
        assert_eq!(
            as_json(&status),
            json!({"message_id": "a", "order": 3, "content": "hi", "acks": 2, "held_by": ["master", "s1"]})
        );
        let late = NotYetApplied {
            error: "late".into(),
            applied: 4,
        };
        assert_eq!(as_json(&late), json!({"error": "late", "applied": 4}));
        assert_eq!(as_json(&Ready::default()), json!({"status": "ready"}));
    }
}
