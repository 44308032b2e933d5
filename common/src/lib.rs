//! The pure core of replog: everything the nodes agree on, with no I/O.
//!
//! The crate's `Cargo.toml` allows serde, serde_json, thiserror and uuid only, so the compiler
//! guards the boundary: nothing here opens a socket, touches a disk, reads a clock or spawns a
//! task. The I/O shell (`replog-shell`, the `master` and `secondary` binaries) feeds these types
//! events and carries out the decisions they return.
//!
//! Module map:
//! - [`ids`]: newtypes that must not be mixed up (sequence numbers, node and message ids).
//! - [`entry`]: the domain type of one log entry.
//! - [`wire`]: every body that crosses RabbitMQ or HTTP, with conversions to domain types.
//! - [`events`]: the names of the structured evidence events the nodes log and the chaos
//!   checker reads.
//! - [`partition`]: which of `n` logs a key belongs to, when one keyspace is split.
//! - [`rules`]: the replication rules as engines: plain state, events in, decisions out.

pub mod entry;
pub mod events;
pub mod ids;
pub mod partition;
pub mod rules;
pub mod wire;

pub use entry::Entry;
pub use ids::{Incarnation, MessageId, NodeId, Order};
