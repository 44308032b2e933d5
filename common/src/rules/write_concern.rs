//! Write-concern accounting on the master.
//!
//! Entry `n` is held by the master (which appended it) and by every secondary whose cumulative
//! acked position is at least `n`. A write with concern `w` completes once `1 + that count >= w`.
//! Waiting is per write: each gets a [`Ticket`], and an ack releases exactly the tickets it
//! satisfies, so a `w=3` write waiting for a down node never delays a `w=2` write beside it.

use crate::ids::{NodeId, Order};
use std::collections::{BTreeMap, BTreeSet};

/// Identifies one waiting write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// The answer to registering a write.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// Enough nodes already hold the entry; `acks` is how many.
    Satisfied {
        /// Nodes holding the entry, the master included.
        acks: usize,
    },
    /// The write waits; [`WriteConcern::on_ack`] will name this ticket when it completes.
    Waiting(Ticket),
}

/// A write that an ack just completed.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// The ticket handed out at registration.
    pub ticket: Ticket,
    /// Nodes holding the entry when it completed, the master included.
    pub acks: usize,
}

/// Why an ack was not counted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// Only configured secondaries count toward `w`.
    #[error("ack from unknown secondary {0}")]
    UnknownSecondary(NodeId),
}

/// The master's view of who holds what, and which writes wait for it.
#[derive(Debug)]
pub struct WriteConcern {
    /// Each configured secondary's highest acknowledged position. Positions only grow: a
    /// secondary that restarts with less state still held those entries once.
    acked: BTreeMap<NodeId, Order>,
    /// Waiting writes, indexed by how many secondaries they still need (`w - 1`, at least 1),
    /// each sorted by order so an ack releases a prefix.
    waiting: BTreeMap<usize, BTreeSet<(Order, Ticket)>>,
    /// The next ticket number.
    next_ticket: u64,
}

impl WriteConcern {
    /// A tracker for these configured secondaries, none of which has acked anything.
    pub fn new(secondaries: impl IntoIterator<Item = NodeId>) -> WriteConcern {
        WriteConcern {
            acked: secondaries
                .into_iter()
                .map(|id| (id, Order::ZERO))
                .collect(),
            waiting: BTreeMap::new(),
            next_ticket: 0,
        }
    }

    /// The largest meaningful `w`: the master plus every configured secondary.
    pub fn max_w(&self) -> usize {
        1 + self.acked.len()
    }

    /// How many nodes hold entry `order`, the master included.
    pub fn holders(&self, order: Order) -> usize {
        1 + self.acked.values().filter(|&&acked| acked >= order).count()
    }

    /// Each configured secondary and its acknowledged position.
    pub fn positions(&self) -> impl Iterator<Item = (&NodeId, Order)> {
        self.acked.iter().map(|(id, order)| (id, *order))
    }

    /// How many writes are waiting.
    pub fn waiting_count(&self) -> usize {
        self.waiting.values().map(BTreeSet::len).sum()
    }

    /// Registers a write of entry `order` with concern `w` (clamped to `1..=max_w`).
    pub fn register(&mut self, order: Order, w: usize) -> Registered {
        let w = w.clamp(1, self.max_w());
        let acks = self.holders(order);
        if acks >= w {
            return Registered::Satisfied { acks };
        }
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.waiting
            .entry(w - 1)
            .or_default()
            .insert((order, ticket));
        Registered::Waiting(ticket)
    }

    /// Forgets a waiting write (its client timed out or went away). Unknown tickets are ignored.
    pub fn cancel(&mut self, order: Order, ticket: Ticket) {
        for waiters in self.waiting.values_mut() {
            if waiters.remove(&(order, ticket)) {
                break;
            }
        }
    }

    /// Replaces `node`'s position with `position`, even a lower one: the node is a new
    /// incarnation (its data directory was recreated) and no longer holds what the old one
    /// acked. Writes that wait keep waiting until enough current holders have the entry.
    /// Returns the writes this completes (when the new incarnation already holds more).
    pub fn replace(&mut self, node: &NodeId, position: Order) -> Result<Vec<Released>, AckError> {
        let current = self
            .acked
            .get_mut(node)
            .ok_or_else(|| AckError::UnknownSecondary(node.clone()))?;
        *current = Order::ZERO;
        self.on_ack(node, position)
    }

    /// Records that `node` durably holds everything up to `applied`; returns the writes this
    /// completes.
    pub fn on_ack(&mut self, node: &NodeId, applied: Order) -> Result<Vec<Released>, AckError> {
        let position = self
            .acked
            .get_mut(node)
            .ok_or_else(|| AckError::UnknownSecondary(node.clone()))?;
        if applied <= *position {
            return Ok(Vec::new());
        }
        *position = applied;

        let mut descending: Vec<Order> = self.acked.values().copied().collect();
        descending.sort_unstable_by(|a, b| b.cmp(a));
        let mut released = Vec::new();
        for (&needed, waiters) in self.waiting.iter_mut() {
            // The `needed`-th best position: every order up to it is held by `needed` secondaries.
            let Some(&threshold) = descending.get(needed - 1) else {
                continue;
            };
            while let Some(&(order, ticket)) = waiters.first() {
                if order > threshold {
                    break;
                }
                waiters.pop_first();
                let acks = 1 + descending.iter().filter(|&&p| p >= order).count();
                released.push(Released { ticket, acks });
            }
        }
        self.waiting.retain(|_, waiters| !waiters.is_empty());
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::parse(id).unwrap()
    }

    fn tracker() -> WriteConcern {
        WriteConcern::new([node("s1"), node("s2")])
    }

    fn ticket(registered: Registered) -> Ticket {
        match registered {
            Registered::Waiting(ticket) => ticket,
            other => panic!("expected to wait, got {other:?}"),
        }
    }

    #[test]
    fn a_replaced_position_stops_counting_what_the_old_incarnation_held() {
        let mut wc = tracker();
        wc.on_ack(&node("s1"), Order(10)).unwrap();
        wc.on_ack(&node("s2"), Order(10)).unwrap();
        assert_eq!(wc.register(Order(7), 3), Registered::Satisfied { acks: 3 });
        // s2 lost its data and came back empty.
        assert!(wc.replace(&node("s2"), Order::ZERO).unwrap().is_empty());
        assert_eq!(wc.holders(Order(7)), 2);
        let retry = ticket(wc.register(Order(7), 3));
        // It rebuilds: a later ack of the new incarnation releases the retry.
        assert_eq!(
            wc.on_ack(&node("s2"), Order(7)).unwrap(),
            vec![Released {
                ticket: retry,
                acks: 3
            }]
        );
        assert!(wc.replace(&node("s9"), Order(1)).is_err());
    }

    #[test]
    fn w1_is_satisfied_by_the_master_alone() {
        let mut wc = tracker();
        assert_eq!(wc.register(Order(1), 1), Registered::Satisfied { acks: 1 });
        assert_eq!(wc.max_w(), 3);
    }

    #[test]
    fn an_ack_releases_exactly_the_writes_it_satisfies() {
        let mut wc = tracker();
        let w2 = ticket(wc.register(Order(2), 2));
        let w3 = ticket(wc.register(Order(3), 3));
        let later = ticket(wc.register(Order(5), 2));

        let released = wc.on_ack(&node("s1"), Order(3)).unwrap();
        assert_eq!(
            released,
            vec![Released {
                ticket: w2,
                acks: 2
            }]
        );
        assert_eq!(wc.waiting_count(), 2);

        let released = wc.on_ack(&node("s2"), Order(4)).unwrap();
        assert_eq!(
            released,
            vec![Released {
                ticket: w3,
                acks: 3
            }]
        );

        let released = wc.on_ack(&node("s2"), Order(5)).unwrap();
        assert_eq!(
            released,
            vec![Released {
                ticket: later,
                acks: 2
            }]
        );
        assert_eq!(wc.waiting_count(), 0);
    }

    #[test]
    fn self_check_w3_waits_while_w1_and_w2_pass() {
        let mut wc = tracker();
        assert_eq!(wc.register(Order(1), 1), Registered::Satisfied { acks: 1 });
        let msg2 = ticket(wc.register(Order(2), 2));
        assert_eq!(
            wc.on_ack(&node("s1"), Order(2)).unwrap(),
            vec![Released {
                ticket: msg2,
                acks: 2
            }]
        );
        let msg3 = ticket(wc.register(Order(3), 3));
        assert!(wc.on_ack(&node("s1"), Order(3)).unwrap().is_empty());
        assert_eq!(wc.register(Order(4), 1), Registered::Satisfied { acks: 1 });
        assert!(wc.on_ack(&node("s1"), Order(4)).unwrap().is_empty());
        // S2 joins late and catches up on everything.
        assert_eq!(
            wc.on_ack(&node("s2"), Order(4)).unwrap(),
            vec![Released {
                ticket: msg3,
                acks: 3
            }]
        );
    }

    #[test]
    fn stale_and_repeated_acks_change_nothing() {
        let mut wc = tracker();
        wc.on_ack(&node("s1"), Order(5)).unwrap();
        let waiting = ticket(wc.register(Order(6), 2));
        assert!(wc.on_ack(&node("s1"), Order(5)).unwrap().is_empty());
        assert!(wc.on_ack(&node("s1"), Order(3)).unwrap().is_empty());
        assert_eq!(wc.holders(Order(5)), 2);
        assert_eq!(
            wc.on_ack(&node("s1"), Order(6)).unwrap(),
            vec![Released {
                ticket: waiting,
                acks: 2
            }]
        );
    }

    #[test]
    fn already_held_entries_are_satisfied_at_registration() {
        let mut wc = tracker();
        wc.on_ack(&node("s1"), Order(9)).unwrap();
        wc.on_ack(&node("s2"), Order(4)).unwrap();
        assert_eq!(wc.register(Order(4), 3), Registered::Satisfied { acks: 3 });
        assert_eq!(wc.register(Order(8), 2), Registered::Satisfied { acks: 2 });
        assert!(matches!(wc.register(Order(8), 3), Registered::Waiting(_)));
    }

    #[test]
    fn cancelled_tickets_are_never_released() {
        let mut wc = tracker();
        let gone = ticket(wc.register(Order(1), 2));
        wc.cancel(Order(1), gone);
        assert!(wc.on_ack(&node("s1"), Order(1)).unwrap().is_empty());
        assert_eq!(wc.waiting_count(), 0);
    }

    #[test]
    fn unknown_secondaries_do_not_count() {
        let mut wc = tracker();
        let waiting = ticket(wc.register(Order(1), 2));
        assert_eq!(
            wc.on_ack(&node("s9"), Order(1)),
            Err(AckError::UnknownSecondary(node("s9")))
        );
        assert_eq!(wc.waiting_count(), 1);
        assert_eq!(
            wc.on_ack(&node("s2"), Order(1)).unwrap(),
            vec![Released {
                ticket: waiting,
                acks: 2
            }]
        );
    }

    #[test]
    fn w_above_the_cluster_is_clamped() {
        let mut wc = WriteConcern::new([node("s1")]);
        let waiting = ticket(wc.register(Order(1), 9));
        assert_eq!(
            wc.on_ack(&node("s1"), Order(1)).unwrap(),
            vec![Released {
                ticket: waiting,
                acks: 2
            }]
        );
    }
}
