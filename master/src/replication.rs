//! Who holds what, and who is alive: the shell around the pure [`WriteConcern`] tracker and
//! [`Membership`] view.
//!
//! Both live under one short lock (no I/O under it), because a report changes both at once: a
//! secondary that comes back as a new incarnation must stop counting toward `w` in the same
//! step in which the master learns its new data directory. Each waiting write holds a oneshot
//! receiver; reports from the ack consumer release exactly the writes they satisfy. A waiter
//! that gives up (timeout, client gone, shutdown) cancels its ticket on drop, so nothing
//! accumulates. [`watch_health`] passes time to the membership view and logs what changes.

use replog_common::rules::membership::{
    Changes, HealthPolicy, Membership, NodeState, Quorum, QuorumRule, Reported,
};
use replog_common::rules::write_concern::{Registered, Released, Ticket, WriteConcern};
use replog_common::{Incarnation, NodeId, Order};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
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

/// The tracker, the membership view and the senders of the writes waiting on them.
#[derive(Debug)]
struct State {
    /// Who holds what, and which tickets wait.
    tracker: WriteConcern,
    /// Who is alive, which incarnation of each the master talks to, and whether there is a
    /// quorum.
    membership: Membership,
    /// How to wake each waiting ticket with its final ack count.
    wakers: HashMap<Ticket, oneshot::Sender<usize>>,
}

impl State {
    /// Wakes the waiters of the writes `released` completes.
    fn wake(&mut self, released: Vec<Released>) {
        for released in released {
            if let Some(waker) = self.wakers.remove(&released.ticket) {
                let _ = waker.send(released.acks);
            }
        }
    }
}

/// What the master made of one report from a secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// Whether and how it counted.
    pub reported: Reported,
    /// The secondary's position before the report (what a new incarnation replaced).
    pub previous: Order,
    /// The incarnation the master knew before the report.
    pub previous_incarnation: Option<Incarnation>,
    /// State and writability changes the report caused.
    pub changes: Changes,
    /// The quorum after the report.
    pub quorum: Quorum,
}

/// One secondary as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its id.
    pub id: NodeId,
    /// Its state.
    pub state: NodeState,
    /// The position of its current incarnation.
    pub acked: Order,
    /// Its current incarnation, once it reported.
    pub incarnation: Option<Incarnation>,
    /// How long ago it was last heard from; `None` when never since the master started.
    pub silent_for: Option<Duration>,
}

/// The cluster as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The quorum as it stands.
    pub quorum: Quorum,
    /// Whether the quorum lets the master take writes.
    pub writable: bool,
    /// Every configured secondary, by id.
    pub members: Vec<MemberView>,
}

/// Shared by the HTTP handlers (which wait and ask), the ack consumer (which reports) and the
/// health task (which passes time).
#[derive(Debug, Clone)]
pub struct Replication {
    /// One short-held lock: no I/O happens under it.
    state: Arc<Mutex<State>>,
    /// The silence thresholds, also kept outside the lock for [`Replication::is_stale`].
    policy: HealthPolicy,
    /// Cancelled at shutdown, so that waiters answer instead of holding the server open.
    stop: CancellationToken,
    /// The highest order a write waits for replication of (`w >= 2`): the publisher publishes
    /// up to it at once instead of lingering (see [`replog_common::rules::linger`]).
    awaited: Arc<watch::Sender<Order>>,
}

impl Replication {
    /// Tracks these secondaries, none heard from yet as of `now` (the master's start).
    pub fn new(
        secondaries: Vec<NodeId>,
        policy: HealthPolicy,
        rule: QuorumRule,
        now: Instant,
        stop: CancellationToken,
    ) -> Replication {
        let state = State {
            tracker: WriteConcern::new(secondaries.iter().cloned()),
            membership: Membership::new(secondaries, policy, rule, now),
            wakers: HashMap::new(),
        };
        Replication {
            state: Arc::new(Mutex::new(state)),
            policy,
            stop,
            awaited: Arc::new(watch::Sender::new(Order::ZERO)),
        }
    }

    /// Follows the highest order a write waits for replication of.
    pub fn awaited(&self) -> watch::Receiver<Order> {
        self.awaited.subscribe()
    }

    /// Somebody waits for `order` to reach secondaries, or for the broker's confirm of it: the
    /// publisher publishes everything up to it at once instead of lingering.
    pub fn expedite(&self, order: Order) {
        self.awaited.send_if_modified(|awaited| {
            let later = order > *awaited;
            *awaited = (*awaited).max(order);
            later
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("replication state poisoned")
    }

    /// A report from secondary `id` (data directory `incarnation`) that it holds everything up
    /// to `applied`, sent `age` ago, received at `now`, while the master's log ends at
    /// `last_order`. Counts it toward `w` if the membership view says it counts, replacing the
    /// old position when the secondary is a new incarnation, and wakes the writes it completes.
    pub fn on_report(
        &self,
        id: &NodeId,
        incarnation: Incarnation,
        applied: Order,
        age: Duration,
        last_order: Order,
        now: Instant,
    ) -> Heard {
        let mut state = self.lock();
        let (previous, previous_incarnation) = state
            .membership
            .member(id)
            .map_or((Order::ZERO, None), |member| {
                (member.acked, member.incarnation)
            });
        let (reported, changes) =
            state
                .membership
                .on_report(id, incarnation, applied, age, last_order, now);
        let released = match reported {
            Reported::Counted {
                position,
                replaced: false,
            } => state.tracker.on_ack(id, position),
            Reported::Counted {
                position,
                replaced: true,
            } => state.tracker.replace(id, position),
            _ => Ok(Vec::new()),
        };
        // The membership view knows exactly the tracker's secondaries: a counted report is
        // never from an unknown one.
        let released = released.expect("membership and tracker know the same secondaries");
        state.wake(released);
        Heard {
            reported,
            previous,
            previous_incarnation,
            changes,
            quorum: state.membership.quorum(),
        }
    }

    /// Whether a report sent `age` ago is too old to show that its sender is alive now.
    pub fn is_stale(&self, age: Duration) -> bool {
        self.policy.is_stale(age)
    }

    /// Re-derives every secondary's state as of `now`; returns what changed and the quorum
    /// after the change.
    pub fn tick(&self, now: Instant) -> (Changes, Quorum) {
        let mut state = self.lock();
        let changes = state.membership.tick(now);
        (changes, state.membership.quorum())
    }

    /// The quorum, when it does not let the master take writes.
    pub fn quorum_lost(&self) -> Option<Quorum> {
        let state = self.lock();
        (!state.membership.writable()).then(|| state.membership.quorum())
    }

    /// The cluster as of `now`, for `/health`.
    pub fn view(&self, now: Instant) -> ClusterView {
        let state = self.lock();
        let members = state
            .membership
            .members()
            .map(|member| MemberView {
                id: member.id.clone(),
                state: member.state,
                acked: member.acked,
                incarnation: member.incarnation,
                silent_for: member
                    .last_seen
                    .map(|seen| now.saturating_duration_since(seen)),
            })
            .collect();
        ClusterView {
            quorum: state.membership.quorum(),
            writable: state.membership.writable(),
            members,
        }
    }

    /// Each secondary's position as counted for write concerns: what its current incarnation
    /// reported (a secondary that lost its data counts from what it holds again).
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
        if w >= 2 {
            self.expedite(order);
        }
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

/// Passes time to the membership view every `period` until `stop`, logging each state change.
pub async fn watch_health(replication: Replication, period: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let (changes, quorum) = replication.tick(Instant::now());
                log_changes(&changes, quorum);
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// Logs each state transition once, with its evidence, and each change of writability
/// (`quorum` is the quorum after the change).
pub fn log_changes(changes: &Changes, quorum: Quorum) {
    for transition in &changes.transitions {
        let last_seen_ms = transition
            .silent_for
            .map(|silence| silence.as_millis() as u64);
        let (secondary, from, to, acked) = (
            transition.id.as_str(),
            transition.from.as_str(),
            transition.to.as_str(),
            transition.acked.get(),
        );
        match transition.to {
            NodeState::Healthy => tracing::info!(
                secondary,
                from,
                to,
                acked,
                last_seen_ms,
                "secondary {secondary} is healthy again (was {from})"
            ),
            NodeState::Suspected | NodeState::Unhealthy => tracing::warn!(
                secondary,
                from,
                to,
                acked,
                last_seen_ms,
                "secondary {secondary} is {to} (was {from}): {}",
                match last_seen_ms {
                    Some(ms) => format!("silent for {ms} ms, last acked {acked}"),
                    None => format!("not heard from since the master started, last acked {acked}"),
                }
            ),
        }
    }
    match changes.writable {
        Some(false) => tracing::warn!(
            healthy = quorum.healthy,
            needed = quorum.needed,
            nodes = quorum.nodes,
            "read-only: no quorum ({} of {} nodes healthy, {} needed); new writes are refused with 503 until heartbeats return",
            quorum.healthy, quorum.nodes, quorum.needed
        ),
        Some(true) => tracing::info!(
            healthy = quorum.healthy,
            needed = quorum.needed,
            nodes = quorum.nodes,
            "writable again: {} of {} nodes healthy, {} needed",
            quorum.healthy, quorum.nodes, quorum.needed
        ),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> NodeId {
        NodeId::parse(raw).unwrap()
    }

    const OLD: Incarnation = Incarnation::from_u128(1);
    const NEW: Incarnation = Incarnation::from_u128(2);

    fn replication() -> (Replication, Instant) {
        let now = Instant::now();
        let replication = Replication::new(
            vec![id("s1"), id("s2")],
            HealthPolicy::default(),
            QuorumRule::Majority,
            now,
            CancellationToken::new(),
        );
        (replication, now)
    }

    #[tokio::test]
    async fn a_new_incarnation_stops_counting_and_its_rebuild_releases_the_retry() {
        let (replication, now) = replication();
        let zero = Duration::ZERO;
        replication.on_report(&id("s1"), OLD, Order(1), zero, Order(1), now);
        replication.on_report(&id("s2"), OLD, Order(1), zero, Order(1), now);
        assert_eq!(replication.holders(Order(1)), 3);

        let heard = replication.on_report(&id("s2"), NEW, Order::ZERO, zero, Order(1), now);
        assert_eq!(
            (heard.reported, heard.previous, heard.previous_incarnation),
            (
                Reported::Counted {
                    position: Order::ZERO,
                    replaced: true
                },
                Order(1),
                Some(OLD)
            )
        );
        assert_eq!(replication.holders(Order(1)), 2);
        let timed_out = replication
            .wait_for(Order(1), 3, Some(Duration::from_millis(10)))
            .await;
        assert_eq!(timed_out, Err(WaitFailed::TimedOut { acks: 2 }));

        let waiting = {
            let replication = replication.clone();
            tokio::spawn(async move { replication.wait_for(Order(1), 3, None).await })
        };
        tokio::task::yield_now().await;
        // A late report of the old incarnation changes nothing; the rebuilt one releases.
        let late = replication.on_report(&id("s2"), OLD, Order(1), zero, Order(1), now);
        assert_eq!(late.reported, Reported::RetiredIncarnation);
        replication.on_report(&id("s2"), NEW, Order(1), zero, Order(1), now);
        assert_eq!(waiting.await.unwrap(), Ok(3));
    }

    #[tokio::test]
    async fn positions_beyond_the_log_do_not_count() {
        let (replication, now) = replication();
        let heard = replication.on_report(&id("s1"), OLD, Order(99), Duration::ZERO, Order(3), now);
        assert_eq!(
            heard.reported,
            Reported::BeyondLog {
                last_order: Order(3)
            }
        );
        assert_eq!(replication.holders(Order(1)), 1);
        let view = replication.view(now);
        assert_eq!(view.members[0].acked, Order::ZERO);
        assert!(view.writable);
        assert_eq!(replication.quorum_lost(), None);
        let (_, quorum) = replication.tick(now + Duration::from_secs(60));
        assert_eq!(replication.quorum_lost(), Some(quorum));
    }
}
