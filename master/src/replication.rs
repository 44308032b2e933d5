//! Waiting for write concerns: the shell around the pure [`WriteConcern`] tracker.
//!
//! Each waiting write holds a oneshot receiver; acks from the ack consumer release exactly the
//! writes they satisfy. A waiter that gives up (timeout, client gone, shutdown) cancels its
//! ticket on drop, so nothing accumulates.

use replog_common::rules::write_concern::{AckError, Registered, Ticket, WriteConcern};
use replog_common::{NodeId, Order};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Why a wait ended without the write concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFailed {
    /// The timeout passed; `acks` nodes held the entry then.
    TimedOut {
        /// Nodes holding the entry, the master included.
        acks: usize,
    },
    /// The master is stopping; `acks` nodes held the entry then.
    ShuttingDown {
        /// Nodes holding the entry, the master included.
        acks: usize,
    },
}

/// The tracker and the senders of the writes waiting on it.
#[derive(Debug)]
struct State {
    /// Who holds what, and which tickets wait.
    tracker: WriteConcern,
    /// How to wake each waiting ticket with its final ack count.
    wakers: HashMap<Ticket, oneshot::Sender<usize>>,
}

/// Shared by the HTTP handlers (which wait) and the ack consumer (which releases).
#[derive(Debug, Clone)]
pub struct Replication {
    /// One short-held lock: no I/O happens under it.
    state: Arc<Mutex<State>>,
    /// Cancelled at shutdown, so that waiters answer instead of holding the server open.
    stop: CancellationToken,
}

impl Replication {
    /// Tracks these secondaries.
    pub fn new(secondaries: Vec<NodeId>, stop: CancellationToken) -> Replication {
        let state = State {
            tracker: WriteConcern::new(secondaries),
            wakers: HashMap::new(),
        };
        Replication {
            state: Arc::new(Mutex::new(state)),
            stop,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("replication state poisoned")
    }

    /// Records a secondary's cumulative ack and wakes the writes it completes.
    pub fn on_ack(&self, node: &NodeId, applied: Order) -> Result<(), AckError> {
        let mut state = self.lock();
        for released in state.tracker.on_ack(node, applied)? {
            if let Some(waker) = state.wakers.remove(&released.ticket) {
                let _ = waker.send(released.acks);
            }
        }
        Ok(())
    }

    /// Each configured secondary and its acknowledged position.
    pub fn positions(&self) -> Vec<(NodeId, Order)> {
        self.lock()
            .tracker
            .positions()
            .map(|(id, order)| (id.clone(), order))
            .collect()
    }

    /// How many nodes hold `order` now.
    pub fn holders(&self, order: Order) -> usize {
        self.lock().tracker.holders(order)
    }

    /// Waits until `w` nodes hold entry `order`; returns how many do.
    pub async fn wait_for(
        &self,
        order: Order,
        w: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, WaitFailed> {
        let (ticket, woken) = {
            let mut state = self.lock();
            match state.tracker.register(order, w) {
                Registered::Satisfied { acks } => return Ok(acks),
                Registered::Waiting(ticket) => {
                    let (waker, woken) = oneshot::channel();
                    state.wakers.insert(ticket, waker);
                    (ticket, woken)
                }
            }
        };
        let _guard = CancelOnDrop {
            replication: self,
            order,
            ticket,
        };
        let deadline = async {
            match timeout {
                Some(timeout) => tokio::time::sleep(timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            acks = woken => Ok(acks.unwrap_or_else(|_| self.holders(order))),
            _ = deadline => {
                // The wake-up and the deadline can fire together: never answer 504 for a write
                // that is in fact held by enough nodes.
                let acks = self.holders(order);
                if acks >= w { Ok(acks) } else { Err(WaitFailed::TimedOut { acks }) }
            }
            _ = self.stop.cancelled() => Err(WaitFailed::ShuttingDown { acks: self.holders(order) }),
        }
    }
}

/// Forgets a ticket when its waiter goes away for any reason.
struct CancelOnDrop<'a> {
    replication: &'a Replication,
    order: Order,
    ticket: Ticket,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        let mut state = self.replication.lock();
        state.tracker.cancel(self.order, self.ticket);
        state.wakers.remove(&self.ticket);
    }
}
