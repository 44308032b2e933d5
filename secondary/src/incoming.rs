//! An entry on its way into the secondary's log, and how to settle it with its source.

use lapin::Acker;
use replog_common::{Entry, Incarnation};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where an entry came from.
#[derive(Debug)]
pub enum Source {
    /// A delivery from this secondary's queue, to be acked (or nacked) once stored.
    Queue {
        /// Settles the delivery with the broker.
        acker: Acker,
        /// The broker says it delivered this before.
        redelivered: bool,
        /// The incarnation of the master that published it, if it stamped one.
        master_incarnation: Option<Incarnation>,
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

/// Hands an entry to the applier after the artificial `delay` (`--delay-ms`), however it
/// arrived. With no delay the caller waits for room in the inbox (back-pressure); with one,
/// the entry waits in a task of its own so entries in flight are delayed side by side.
pub async fn hand_over(inbox: &mpsc::Sender<Incoming>, incoming: Incoming, delay: Duration) {
    if delay.is_zero() {
        let _ = inbox.send(incoming).await;
        return;
    }
    let inbox = inbox.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = inbox.send(incoming).await;
    });
}
