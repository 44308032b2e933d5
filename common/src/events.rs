//! The names of the evidence events: a contract between the nodes and the chaos checker.
//!
//! A node logs each of these with a structured `event` field (`event = events::STORED`), never
//! as prose the checker would have to match. Rewording a log message cannot break the checker;
//! renaming a constant here breaks the build of both sides at once.
//!
//! Per-write events are logged at `debug` under the [`TARGET`] target, so a production log at
//! the default `info` level stays quiet; the checker turns them on with
//! `RUST_LOG=info,replog::evidence=debug`.

/// The tracing target every evidence event is logged under.
pub const TARGET: &str = "replog::evidence";

/// The `RUST_LOG` directive that turns evidence events on.
pub const ENABLE_DIRECTIVE: &str = "replog::evidence=debug";

/// Master: an entry was given its order and stored (fields `order`, `message_id`).
pub const SEQUENCED: &str = "sequenced";

/// Master: a write was answered as already in the log (fields `order`, `message_id`).
pub const DEDUPLICATED: &str = "deduplicated";

/// Master: a write reached its write concern and was answered success (fields `order`,
/// `message_id`, `w`, `acks`).
pub const ACKNOWLEDGED: &str = "acknowledged";

/// Secondary: a contiguous run of entries was stored (fields `first`, `last`).
pub const STORED: &str = "stored";

/// Secondary: a delivery of an entry this node already holds was dropped (field `order`).
pub const DUPLICATE_DROPPED: &str = "duplicate_dropped";

/// Either node, at every start: what it recovered from its data directory (field `last`, the
/// last stored order). Logged at `info`: it is one line per start, not per write.
pub const RECOVERED: &str = "recovered";

/// Secondary: an entry arrived at an order this node holds (stored or held back) with another
/// message id, so its history and the master's have forked (fields `order`, `held`, the id this
/// node holds, and `offered`, the id that arrived). Logged at `error`: the node refuses the
/// entry, stops applying and stays diverged until it is rebuilt.
pub const DIVERGED: &str = "diverged";

/// Every event name, for checkers that want to validate what they read.
pub const ALL: [&str; 7] = [
    SEQUENCED,
    DEDUPLICATED,
    ACKNOWLEDGED,
    STORED,
    DUPLICATE_DROPPED,
    RECOVERED,
    DIVERGED,
];
