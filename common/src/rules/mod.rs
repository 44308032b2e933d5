//! The replication rules, as plain types with no I/O, no clocks and no async.
//!
//! The AMQP/HTTP shell feeds them events (a delivery arrived, an ack came in, a write was
//! requested) and carries out what they answer. Every rule is unit-tested deterministically,
//! including duplicated, reordered and missing deliveries.

pub mod apply;
pub mod dedup;
pub mod gap_watch;
pub mod holdback;
pub mod membership;
pub mod write_concern;
