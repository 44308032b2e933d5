//! The replog master.
//!
//! Module map:
//! - [`config`]: flags and their checks.
//! - [`write_request`]: a validated `POST /messages` body.
//! - [`dedup_keys`]: the on-disk dedup index (redb), only the master keeps one.
//! - [`durability`]: what the master recovers from its data directory at start.
//! - [`availability`]: whether the master takes new entries now, and why not.
//! - [`fence`]: the master takes no new writes while its log is shorter than evidence says.
//! - [`refill`]: `--refill-from`, refilling a shortened log from a secondary at start.
//! - [`writer`]: the single thread that numbers, deduplicates and stores entries.
//! - [`publisher`]: publishes stored entries with confirms, republishing what is not confirmed.
//! - [`ack_consumer`]: reads secondaries' acks from the broker.
//! - [`replication`]: write-concern waiting around the pure tracker in `replog_common::rules`.
//! - [`metrics`]: the Prometheus metrics' names, HELP texts and scrape-time gauges.
//! - [`http`]: routes, handlers and the one error type.
//! - [`startup`]: builds the application and runs it until stopped.

pub mod ack_consumer;
pub mod availability;
pub mod config;
pub mod dedup_keys;
pub mod durability;
pub mod fence;
pub mod http;
pub mod metrics;
pub mod publisher;
pub mod refill;
pub mod replication;
pub mod startup;
pub mod write_request;
pub mod writer;
