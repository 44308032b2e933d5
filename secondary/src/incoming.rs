//! An entry on its way into the secondary's log, and how to settle it with its source.

use lapin::Acker;
use replog_common::Entry;

/// Where an entry came from.
#[derive(Debug)]
pub enum Source {
    /// A delivery from this secondary's queue, to be acked (or nacked) once stored.
    Queue {
        /// Settles the delivery with the broker.
        acker: Acker,
        /// The broker says it delivered this before.
        redelivered: bool,
    },
    /// Fetched from the master's HTTP API to fill a gap; nothing to settle.
    Master,
}

/// One entry for the applier.
#[derive(Debug)]
pub struct Incoming {
    /// The entry.
    pub entry: Entry,
    /// Its source.
    pub source: Source,
}
