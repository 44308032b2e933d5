//! Every body that crosses RabbitMQ or HTTP, declared once for the nodes, testkit, chaos and
//! bench alike.
//!
//! The bodies are kept apart from the domain types so that the wire format can evolve without
//! the rules noticing; conversions are explicit.
//!
//! - [`amqp`]: the entries the master publishes and the acks the secondaries send back.
//! - [`http`]: the request and answer bodies of the nodes' HTTP APIs.
//! - [`run`]: the versioned format of an entries message: a run of consecutive entries.

pub mod amqp;
pub mod http;
pub mod run;

pub use amqp::{AckMessage, EntryMessage, Published};
pub use http::MessagesPage;

/// Why a wire message could not become a domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The payload is not the JSON we expect.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Orders start at 1.
    #[error("order must be at least 1")]
    ZeroOrder,
    /// The message id is empty or too long.
    #[error("invalid message id")]
    BadMessageId,
    /// An entries message of a format version this build does not know.
    #[error("entries message of wire version {got}; this build reads version {supported} (and single entries of earlier builds): upgrade this node")]
    UnsupportedVersion {
        /// The version the message says it is.
        got: u32,
        /// The version this build writes and reads.
        supported: u32,
    },
    /// A run message with no entries.
    #[error("a run message holds no entries")]
    EmptyRun,
    /// A run whose orders are not consecutive.
    #[error("a run message skips or reorders entries: {expected} was due, got {got}")]
    NotConsecutive {
        /// The order due.
        expected: u64,
        /// The order found.
        got: u64,
    },
}
