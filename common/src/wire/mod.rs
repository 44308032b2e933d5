//! Every body that crosses RabbitMQ or HTTP, declared once for the nodes, testkit, chaos and
//! bench alike.
//!
//! The bodies are kept apart from the domain types so that the wire format can evolve without
//! the rules noticing; conversions are explicit.
//!
//! - [`amqp`]: the entries the master publishes and the acks the secondaries send back.
//! - [`http`]: the request and answer bodies of the nodes' HTTP APIs.

pub mod amqp;
pub mod http;

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
}
