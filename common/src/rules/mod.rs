//! The replication rules, as plain types with no I/O, no clocks and no async.
//!
//! The AMQP/HTTP shell feeds them events (a delivery arrived, an ack came in, a write was
//! requested) and carries out what they answer. Every rule is unit-tested deterministically,
//! including duplicated, reordered and missing deliveries.
//!
//! The master's rules:
//! - [`sequencer`]: admits each write, as a new entry with the next order or as one the log
//!   already holds (by message id, then by content), and says when its keys move to disk.
//! - [`confirm_window`]: the broker's publisher confirms: how far the log is confirmed, how
//!   many publishes may be in flight, when everything unconfirmed is published again.
//! - [`linger`]: when stored entries are published: at once for a waiting write, otherwise
//!   after a short linger that lets a full run gather.
//! - [`write_concern`]: which waiting writes the secondaries' acks satisfy.
//! - [`dedup`]: what makes two writes the same entry, and the sequencer's recent keys.
//! - [`membership`]: each secondary's state from its heartbeats (healthy, suspected,
//!   unhealthy), its incarnation, and whether enough nodes are healthy to take writes.
//!
//! The secondary's rules:
//! - [`holdback`]: total order and exactly-once on top of a delivery stream.
//! - [`apply`]: the applier over delivery tags: what to append, which deliveries to settle
//!   once stored, which to defer until a gap closes.
//! - [`settle_book`]: which deliveries one `multiple=true` ack may settle at once.
//! - [`gap_watch`]: when a gap (or a stalled queue) is fetched from the master instead.

pub mod apply;
pub mod confirm_window;
pub mod dedup;
pub mod gap_watch;
pub mod holdback;
pub mod linger;
pub mod membership;
pub mod sequencer;
pub mod settle_book;
pub mod write_concern;
