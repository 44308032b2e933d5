//! A replog secondary.
//!
//! Module map:
//! - [`config`]: the flags.
//! - [`incoming`]: an entry on its way in, with how to settle it.
//! - [`consumer`]: consumes the secondary's queue (with the optional artificial delay).
//! - [`applier`]: carries out the apply engine (hold-back, dedup): store, then ack (or nack,
//!   with failure injection).
//! - [`catchup`]: fetches from the master what the queue cannot provide, when the gap watch
//!   says so.
//! - [`ack_publisher`]: publishes the cumulative position to the master.
//! - [`metrics`]: the Prometheus metrics' names, HELP texts and scrape-time gauges.
//! - [`http`]: `GET /messages`, `GET /health`, `GET /ready` and `GET /metrics`.
//! - [`startup`]: wiring and ordered shutdown.

pub mod ack_publisher;
pub mod applier;
pub mod catchup;
pub mod config;
pub mod consumer;
pub mod http;
pub mod incoming;
pub mod metrics;
pub mod startup;
