//! The master's knowledge of its secondaries: who is alive, which incarnation of each it talks
//! to, and whether enough nodes are healthy to take writes (quorum append).
//!
//! Events in: a report from a secondary (an ack or a heartbeat: id, incarnation, applied
//! position), and the passing of time ([`Membership::tick`]). Decisions out: whether a report
//! counts (and whether it replaces the secondary's position because its data is new), each
//! state change with its evidence, and each change of writability. Time is a value the caller
//! passes in; nothing here reads a clock.
//!
//! The states follow the usual failure-detector ladder (Cassandra's and Consul's `alive` /
//! `suspect` / `dead`): `healthy` while heard from within `suspect_after`, `suspected` until
//! `unhealthy_after`, `unhealthy` beyond. A secondary never heard from since the master started
//! is `suspected` until `unhealthy_after` has passed, so a master restart does not flap to
//! read-only while the heartbeats arrive.
//!
//! Incarnations are PostgreSQL's system identifier / MongoDB's replica-set member id applied to
//! a data directory: a secondary whose data directory was recreated reports a new incarnation,
//! and from then on the master believes the position the new incarnation reports, even though
//! it is lower, and ignores any late report of the retired incarnation.

use crate::ids::{Incarnation, NodeId, Order};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long silence may last before a secondary is suspected, then declared unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Silence up to this long is `healthy`.
    pub suspect_after: Duration,
    /// Silence beyond this is `unhealthy`; in between, `suspected`.
    pub unhealthy_after: Duration,
}

impl Default for HealthPolicy {
    /// 3 s and 10 s: three missed heartbeats at the default 1 s interval before suspicion.
    fn default() -> Self {
        HealthPolicy {
            suspect_after: Duration::from_secs(3),
            unhealthy_after: Duration::from_secs(10),
        }
    }
}

/// How many nodes (the master included) must be healthy for the master to take writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumRule {
    /// More than half of master + configured secondaries.
    Majority,
    /// Exactly this many nodes, the master included (1 ..= nodes).
    Nodes(usize),
    /// Always writable: quorum append is turned off.
    Off,
}

impl QuorumRule {
    /// How many healthy nodes this rule needs in a cluster of `nodes`.
    pub fn needed(self, nodes: usize) -> usize {
        match self {
            QuorumRule::Majority => nodes / 2 + 1,
            QuorumRule::Nodes(count) => count.min(nodes),
            QuorumRule::Off => 0,
        }
    }
}

impl std::str::FromStr for QuorumRule {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "majority" => Ok(QuorumRule::Majority),
            "off" => Ok(QuorumRule::Off),
            number => match number.parse::<usize>() {
                Ok(count) if count >= 1 => Ok(QuorumRule::Nodes(count)),
                _ => Err(format!(
                    "quorum must be `majority`, `off` or a number of nodes of at least 1, got {raw:?}"
                )),
            },
        }
    }
}

impl std::fmt::Display for QuorumRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuorumRule::Majority => f.write_str("majority"),
            QuorumRule::Nodes(count) => write!(f, "{count}"),
            QuorumRule::Off => f.write_str("off"),
        }
    }
}

/// A secondary's health as the master derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    /// Heard from within `suspect_after`.
    Healthy,
    /// Silent for longer than `suspect_after`, or never heard from since the master started.
    Suspected,
    /// Silent for longer than `unhealthy_after`.
    Unhealthy,
}

impl NodeState {
    /// The name used on `/health`, in logs and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Healthy => "healthy",
            NodeState::Suspected => "suspected",
            NodeState::Unhealthy => "unhealthy",
        }
    }
}

/// What the master knows of one secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The secondary's id.
    pub id: NodeId,
    /// Its state as of the last [`Membership::tick`] or report.
    pub state: NodeState,
    /// The position its current incarnation reported (the highest, for one incarnation).
    pub acked: Order,
    /// The incarnation whose position `acked` is, once one reported.
    pub incarnation: Option<Incarnation>,
    /// When it was last heard from, if ever since the master started.
    pub last_seen: Option<Instant>,
    /// Incarnations this secondary had before: their late reports must not count.
    retired: BTreeSet<Incarnation>,
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// The report counts: `position` is the secondary's position now. `replaced` says that
    /// the position was replaced rather than raised (a new incarnation), so a write-concern
    /// tracker must forget the old one.
    Counted {
        /// The secondary's position after this report.
        position: Order,
        /// A new incarnation: the position may be lower than before.
        replaced: bool,
    },
    /// The sender is not one of the configured secondaries.
    UnknownNode,
    /// A late report from an incarnation this secondary has since replaced.
    RetiredIncarnation,
    /// The position is beyond the master's log: no secondary can hold what the master never
    /// wrote, so the report is wrong (a forged or misrouted ack, or a master that lost data).
    BeyondLog {
        /// The master's last order.
        last_order: Order,
    },
}

/// A secondary changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Which secondary.
    pub id: NodeId,
    /// Its state before.
    pub from: NodeState,
    /// Its state now.
    pub to: NodeState,
    /// How long it had been silent, `None` when never heard from.
    pub silent_for: Option<Duration>,
    /// Its last reported position.
    pub acked: Order,
}

/// The quorum as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    /// Master + configured secondaries.
    pub nodes: usize,
    /// How many of them must be healthy.
    pub needed: usize,
    /// How many are: the master, and every secondary that is not `unhealthy`.
    pub healthy: usize,
}

impl Quorum {
    /// Whether the master may take writes.
    pub fn writable(&self) -> bool {
        self.healthy >= self.needed
    }
}

/// What changed on a tick or report, for the shell to log and act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Secondaries whose state changed.
    pub transitions: Vec<Transition>,
    /// `Some(writable)` when writability changed.
    pub writable: Option<bool>,
}

/// The master's view of its secondaries' liveness, incarnations and positions.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The silence thresholds.
    policy: HealthPolicy,
    /// How many healthy nodes writes need.
    rule: QuorumRule,
    /// When the master started: a secondary never heard from is only `suspected` until
    /// `unhealthy_after` from here.
    started: Instant,
    /// Every configured secondary.
    members: BTreeMap<NodeId, Member>,
    /// Writability as last reported, so that only changes are reported.
    writable: bool,
}

impl Membership {
    /// A view of `secondaries`, none heard from yet, as of `now` (the master's start).
    pub fn new(
        secondaries: impl IntoIterator<Item = NodeId>,
        policy: HealthPolicy,
        rule: QuorumRule,
        now: Instant,
    ) -> Membership {
        let members = secondaries
            .into_iter()
            .map(|id| {
                let member = Member {
                    id: id.clone(),
                    state: NodeState::Suspected,
                    acked: Order::ZERO,
                    incarnation: None,
                    last_seen: None,
                    retired: BTreeSet::new(),
                };
                (id, member)
            })
            .collect();
        let mut membership = Membership {
            policy,
            rule,
            started: now,
            members,
            writable: true,
        };
        membership.writable = membership.quorum().writable();
        membership
    }

    /// Every configured secondary, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One secondary, if configured.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// The quorum as of the last tick or report.
    pub fn quorum(&self) -> Quorum {
        let nodes = 1 + self.members.len();
        let healthy = 1 + self
            .members
            .values()
            .filter(|member| member.state != NodeState::Unhealthy)
            .count();
        Quorum {
            nodes,
            needed: self.rule.needed(nodes),
            healthy,
        }
    }

    /// Whether the master may take writes, as of the last tick or report.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// A secondary reported `applied` from `incarnation`, received at `now` and sent `age`
    /// before that by the sender's clock (zero when its clock runs ahead); the master's log
    /// ends at `last_order`. Returns whether (and how) the report counts, and what changed.
    ///
    /// A report older than `unhealthy_after` waited in the queue (the master was down, or the
    /// sender's clock is far behind): its position counts, but it is no sign of life now.
    pub fn on_report(
        &mut self,
        id: &NodeId,
        incarnation: Incarnation,
        applied: Order,
        age: Duration,
        last_order: Order,
        now: Instant,
    ) -> (Reported, Changes) {
        let Some(member) = self.members.get_mut(id) else {
            return (Reported::UnknownNode, Changes::default());
        };
        if member.retired.contains(&incarnation) {
            return (Reported::RetiredIncarnation, Changes::default());
        }
        // Heard from, whatever the position says: a node that speaks is alive.
        if !self.policy.is_stale(age) {
            member.last_seen = Some(now);
        }
        let reported = if applied > last_order {
            Reported::BeyondLog { last_order }
        } else {
            match member.incarnation {
                Some(current) if current == incarnation => {
                    member.acked = member.acked.max(applied);
                    Reported::Counted {
                        position: member.acked,
                        replaced: false,
                    }
                }
                previous => {
                    if let Some(previous) = previous {
                        member.retired.insert(previous);
                    }
                    let replaced = previous.is_some() || applied < member.acked;
                    member.incarnation = Some(incarnation);
                    member.acked = applied;
                    Reported::Counted {
                        position: applied,
                        replaced,
                    }
                }
            }
        };
        (reported, self.tick(now))
    }

    /// Re-derives every state as of `now`; returns what changed.
    pub fn tick(&mut self, now: Instant) -> Changes {
        let mut changes = Changes::default();
        for member in self.members.values_mut() {
            let silent_for = member
                .last_seen
                .map(|seen| now.saturating_duration_since(seen));
            let state = self
                .policy
                .state(silent_for, now.saturating_duration_since(self.started));
            if state != member.state {
                changes.transitions.push(Transition {
                    id: member.id.clone(),
                    from: member.state,
                    to: state,
                    silent_for,
                    acked: member.acked,
                });
                member.state = state;
            }
        }
        let writable = self.quorum().writable();
        if writable != self.writable {
            self.writable = writable;
            changes.writable = Some(writable);
        }
        changes
    }
}

impl HealthPolicy {
    /// Whether a report sent `age` ago is too old to show that its sender is alive now.
    pub fn is_stale(&self, age: Duration) -> bool {
        age >= self.unhealthy_after
    }

    /// The state of a secondary silent for `silent_for` (`None`: never heard from) when the
    /// master has been up for `uptime`.
    pub fn state(&self, silent_for: Option<Duration>, uptime: Duration) -> NodeState {
        let silence = match silent_for {
            Some(silence) => silence,
            // Never heard from: suspected while it may still be starting, then unhealthy.
            None if uptime < self.unhealthy_after => return NodeState::Suspected,
            None => return NodeState::Unhealthy,
        };
        if silence < self.suspect_after {
            NodeState::Healthy
        } else if silence < self.unhealthy_after {
            NodeState::Suspected
        } else {
            NodeState::Unhealthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> NodeId {
        NodeId::parse(raw).unwrap()
    }

    fn membership(rule: QuorumRule, start: Instant) -> Membership {
        Membership::new([id("s1"), id("s2")], HealthPolicy::default(), rule, start)
    }

    const INC_A: Incarnation = Incarnation::from_u128(0xA);
    const INC_B: Incarnation = Incarnation::from_u128(0xB);

    #[test]
    fn unseen_secondaries_are_suspected_then_unhealthy() {
        let t0 = Instant::now();
        let mut view = membership(QuorumRule::Majority, t0);
        assert!(view.members().all(|m| m.state == NodeState::Suspected));
        assert!(view.writable(), "suspected still counts toward the quorum");
        assert_eq!(view.tick(t0 + Duration::from_secs(9)), Changes::default());
        let changes = view.tick(t0 + Duration::from_secs(10));
        assert_eq!(changes.transitions.len(), 2);
        assert!(changes
            .transitions
            .iter()
            .all(|t| t.to == NodeState::Unhealthy && t.silent_for.is_none()));
        assert_eq!(changes.writable, Some(false));
        assert_eq!(
            view.quorum(),
            Quorum {
                nodes: 3,
                needed: 2,
                healthy: 1
            }
        );
    }

    #[test]
    fn silence_walks_the_ladder_and_a_report_brings_it_back() {
        let t0 = Instant::now();
        let mut view = membership(QuorumRule::Majority, t0);
        let (_, changes) = view.on_report(&id("s1"), INC_A, Order(3), Duration::ZERO, Order(5), t0);
        assert_eq!(changes.transitions[0].to, NodeState::Healthy);
        assert!(view
            .tick(t0 + Duration::from_millis(2999))
            .transitions
            .is_empty());
        let suspected = view.tick(t0 + Duration::from_secs(3));
        assert_eq!(suspected.transitions[0].to, NodeState::Suspected);
        assert_eq!(
            suspected.transitions[0].silent_for,
            Some(Duration::from_secs(3))
        );
        let unhealthy = view.tick(t0 + Duration::from_secs(10));
        let s1 = unhealthy
            .transitions
            .iter()
            .find(|t| t.id == id("s1"))
            .unwrap();
        assert_eq!(
            (s1.from, s1.to, s1.acked),
            (NodeState::Suspected, NodeState::Unhealthy, Order(3))
        );
        assert_eq!(unhealthy.writable, Some(false));
        let (_, back) = view.on_report(
            &id("s1"),
            INC_A,
            Order(3),
            Duration::ZERO,
            Order(5),
            t0 + Duration::from_secs(11),
        );
        assert_eq!(back.transitions[0].to, NodeState::Healthy);
        assert_eq!(back.writable, Some(true));
        assert_eq!(
            view.member(&id("s1")).unwrap().acked,
            Order(3),
            "a down node keeps its position"
        );
    }

    #[test]
    fn positions_only_grow_within_one_incarnation() {
        let t0 = Instant::now();
        let mut view = membership(QuorumRule::Majority, t0);
        view.on_report(&id("s1"), INC_A, Order(5), Duration::ZERO, Order(9), t0);
        // A reordered, older ack of the same incarnation.
        let (reported, _) =
            view.on_report(&id("s1"), INC_A, Order(2), Duration::ZERO, Order(9), t0);
        assert_eq!(
            reported,
            Reported::Counted {
                position: Order(5),
                replaced: false
            }
        );
    }

    #[test]
    fn a_new_incarnation_replaces_the_position_and_retires_the_old_one() {
        let t0 = Instant::now();
        let mut view = membership(QuorumRule::Majority, t0);
        view.on_report(&id("s2"), INC_A, Order(100), Duration::ZERO, Order(100), t0);
        let (reported, _) =
            view.on_report(&id("s2"), INC_B, Order(0), Duration::ZERO, Order(100), t0);
        assert_eq!(
            reported,
            Reported::Counted {
                position: Order::ZERO,
                replaced: true
            }
        );
        let member = view.member(&id("s2")).unwrap();
        assert_eq!(
            (member.acked, member.incarnation),
            (Order::ZERO, Some(INC_B))
        );
        // A stale ack of the old incarnation, still in the queue, must not count.
        let (late, _) =
            view.on_report(&id("s2"), INC_A, Order(100), Duration::ZERO, Order(100), t0);
        assert_eq!(late, Reported::RetiredIncarnation);
        assert_eq!(view.member(&id("s2")).unwrap().acked, Order::ZERO);
    }

    #[test]
    fn positions_beyond_the_log_and_unknown_nodes_are_ignored() {
        let t0 = Instant::now();
        let mut view = membership(QuorumRule::Majority, t0);
        let (reported, _) = view.on_report(
            &id("s1"),
            INC_A,
            Order(1_000_000_000),
            Duration::ZERO,
            Order(4),
            t0,
        );
        assert_eq!(
            reported,
            Reported::BeyondLog {
                last_order: Order(4)
            }
        );
        assert_eq!(view.member(&id("s1")).unwrap().acked, Order::ZERO);
        let (unknown, changes) =
            view.on_report(&id("s9"), INC_A, Order(1), Duration::ZERO, Order(4), t0);
        assert_eq!(
            (unknown, changes),
            (Reported::UnknownNode, Changes::default())
        );
    }

    #[test]
    fn a_report_that_waited_in_the_queue_counts_its_position_but_not_as_a_sign_of_life() {
        let t0 = Instant::now();
        let mut view = membership(QuorumRule::Majority, t0);
        // Sent before the master started, while nobody consumed the acks queue.
        let (reported, changes) = view.on_report(
            &id("s1"),
            INC_A,
            Order(4),
            Duration::from_secs(60),
            Order(9),
            t0,
        );
        assert_eq!(
            reported,
            Reported::Counted {
                position: Order(4),
                replaced: false
            }
        );
        assert!(changes.transitions.is_empty(), "{changes:?}");
        let s1 = view.member(&id("s1")).unwrap();
        assert_eq!((s1.state, s1.last_seen), (NodeState::Suspected, None));
        // A fresh one does.
        let (_, changes) = view.on_report(
            &id("s1"),
            INC_A,
            Order(4),
            Duration::from_millis(20),
            Order(9),
            t0,
        );
        assert_eq!(changes.transitions[0].to, NodeState::Healthy);
    }

    #[test]
    fn quorum_rules() {
        assert_eq!(QuorumRule::Majority.needed(3), 2);
        assert_eq!(QuorumRule::Majority.needed(4), 3);
        assert_eq!(QuorumRule::Majority.needed(1), 1);
        assert_eq!(QuorumRule::Nodes(3).needed(3), 3);
        assert_eq!(QuorumRule::Off.needed(3), 0);
        assert_eq!("majority".parse(), Ok(QuorumRule::Majority));
        assert_eq!("2".parse(), Ok(QuorumRule::Nodes(2)));
        assert_eq!("off".parse(), Ok(QuorumRule::Off));
        assert!("0".parse::<QuorumRule>().is_err());
        assert!("most".parse::<QuorumRule>().is_err());
        let t0 = Instant::now();
        let mut off = membership(QuorumRule::Off, t0);
        let changes = off.tick(t0 + Duration::from_secs(60));
        assert_eq!(changes.writable, None);
        assert!(off.writable());
    }
}
