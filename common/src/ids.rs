//! Newtypes for identifiers that must never be confused with one another.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The 1-based position of an entry in the log. `Order(0)` means "nothing yet".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Order(pub u64);

impl Order {
    /// The position before the first entry: a log holding nothing has applied `Order::ZERO`.
    pub const ZERO: Order = Order(0);

    /// The position right after this one.
    pub fn next(self) -> Order {
        Order(self.0 + 1)
    }

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The identifier of a secondary node (`s1`, `s2`, ...), as given by `--id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl TryFrom<String> for NodeId {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        raw.parse()
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl NodeId {
    /// Wraps a node id; returns `None` unless it is 1..=64 characters of `[A-Za-z0-9_-]`, so
    /// that it reads well inside a queue name.
    pub fn parse(raw: &str) -> Option<NodeId> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        ok.then(|| NodeId(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::parse(s).ok_or_else(|| {
            format!("node id {s:?} must be 1 to 64 characters of letters, digits, '-' or '_'")
        })
    }
}

/// The client-visible identity of an entry: given by the client for safe retries, or a UUID v4.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// The longest message id a client may choose: it travels as the AMQP `message-id`
    /// property, a short string of at most 255 bytes.
    pub const MAX_LEN: usize = 255;

    /// A fresh random id.
    pub fn random() -> MessageId {
        MessageId(uuid::Uuid::new_v4().to_string())
    }

    /// Wraps a client-chosen id; `None` when empty or longer than [`MessageId::MAX_LEN`] bytes.
    pub fn parse(raw: &str) -> Option<MessageId> {
        (!raw.is_empty() && raw.len() <= Self::MAX_LEN).then(|| MessageId(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of one life of a node's data: chosen at random when its data directory is
/// created and kept with the log. A node that lost its data comes back with a new incarnation,
/// so that nobody keeps counting what the old one held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(uuid::Uuid);

impl Incarnation {
    /// A fresh random incarnation, for a data directory being created.
    pub fn random() -> Incarnation {
        Incarnation(uuid::Uuid::new_v4())
    }

    /// A fixed incarnation, for tests and for reading one back.
    pub const fn from_u128(raw: u128) -> Incarnation {
        Incarnation(uuid::Uuid::from_u128(raw))
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for Incarnation {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(raw.trim())
            .map(Incarnation)
            .map_err(|e| format!("an incarnation is a UUID, got {raw:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_must_fit_a_queue_name() {
        assert!(NodeId::parse("s1").is_some());
        assert!(NodeId::parse("east-2_b").is_some());
        assert!(NodeId::parse("").is_none());
        assert!(NodeId::parse("a.b").is_none());
        assert!(NodeId::parse(&"x".repeat(65)).is_none());
    }

    #[test]
    fn node_ids_from_the_wire_are_checked_too() {
        assert!(serde_json::from_str::<NodeId>(r#""s1""#).is_ok());
        assert!(serde_json::from_str::<NodeId>(r#""no spaces""#).is_err());
        assert_eq!(
            serde_json::to_string(&NodeId::parse("s1").unwrap()).unwrap(),
            r#""s1""#
        );
    }

    #[test]
    fn incarnations_round_trip_as_text() {
        let incarnation = Incarnation::random();
        assert_eq!(incarnation.to_string().parse(), Ok(incarnation));
        assert_ne!(Incarnation::random(), incarnation);
        assert!("not-a-uuid".parse::<Incarnation>().is_err());
    }

    #[test]
    fn message_ids_are_bounded() {
        assert!(MessageId::parse("").is_none());
        assert!(MessageId::parse(&"x".repeat(256)).is_none());
        assert!(MessageId::parse(&"x".repeat(255)).is_some());
        assert_eq!(MessageId::parse("abc").unwrap().as_str(), "abc");
        assert_ne!(MessageId::random(), MessageId::random());
    }
}
