//! Shared code of the replog nodes.
//!
//! Module map:
//! - [`ids`]: newtypes that must not be mixed up (sequence numbers, node and message ids).
//! - [`entry`]: the domain type of one log entry.
//! - [`wire`]: the JSON messages that cross RabbitMQ and HTTP, with conversions to domain types.
//! - [`rules`]: the replication rules as pure types with no I/O: the secondary's hold-back
//!   buffer, the master's write-concern accounting and its deduplication index.
//! - [`store`]: the log store every node keeps its entries in.
//! - [`topology`]: broker names (exchange, queues) derived from a namespace, and queue types.
//! - [`amqp`]: connection pooling, reconnect backoff and topology declaration over lapin.
//! - [`config`]: command-line flags both binaries share.
//! - [`http`]: the JSON error shape and `GET /messages` paging both nodes serve.
//! - [`startup`]: the start-up error and listener binding both nodes share.
//! - [`telemetry`] and [`shutdown`]: tracing set up once, and one stop signal for every task.

pub mod amqp;
pub mod config;
pub mod entry;
pub mod http;
pub mod ids;
pub mod rules;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod topology;
pub mod wire;

pub use entry::Entry;
pub use ids::{MessageId, NodeId, Order};
