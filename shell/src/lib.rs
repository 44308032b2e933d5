//! The I/O shell both replog nodes share, around the pure rules of `replog-common`.
//!
//! Module map:
//! - [`store`]: the log store every node keeps its entries in (segmented, CRC-framed files).
//! - [`topology`]: broker names (exchange, queues) derived from a namespace, and queue types.
//! - [`amqp`]: connection pooling, reconnect backoff and topology declaration over lapin.
//! - [`config`]: command-line flags both binaries share.
//! - [`http`]: the JSON error type and `GET /messages` paging both nodes serve.
//! - [`metrics`]: the Prometheus recorder and `GET /metrics`.
//! - [`startup`]: the start-up error and listener binding both nodes share.
//! - [`telemetry`] and [`shutdown`]: tracing set up once, and one stop signal for every task.

pub mod amqp;
pub mod config;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod topology;
