//! Broker names and queue settings, all derived from one namespace so that several clusters (and
//! parallel tests) share a broker and read well in the management UI.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use replog_common::ids::NodeId;

/// The kind of RabbitMQ queue that holds each secondary's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Raft-replicated queue; redelivers a requeued message after later ones.
    Quorum,
    /// The classic durable queue.
    Classic,
}

impl QueueType {
    /// The declare arguments for this queue type. Deliberately no `x-max-length`, no
    /// `x-message-ttl` and no `x-delivery-limit`: nothing may ever drop an entry.
    ///
    /// No `x-quorum-initial-group-size` either: RabbitMQ places a quorum queue on every cluster
    /// node by default (3.10's rule; later versions let the operator cap it with
    /// `quorum_queue.initial_cluster_size`), so a three-node cluster gives three replicas, and
    /// queues declared before this version keep matching (a changed argument would make every
    /// redeclaration fail with `PRECONDITION_FAILED`).
    ///
    /// And no `x-delivery-limit: -1`, although RabbitMQ 4.x gives quorum queues a default limit
    /// of 20 deliveries after which a message is dead-lettered or dropped: on 3.x the argument
    /// does not mean "unlimited", and it would conflict with queues declared without it. On 4.x
    /// the limit is lifted by the policy `{"delivery-limit": -1}` (see the README); a secondary
    /// that still misses an entry fetches it from the master (catch-up), so nothing is lost,
    /// only late.
    pub fn arguments(self) -> FieldTable {
        let mut args = FieldTable::default();
        let kind = match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(kind.into()),
        );
        args
    }
}

/// The names of one cluster's exchange and queues, and the type of its shared acks queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The prefix of every name.
    namespace: String,
    /// The type of the acks queue: quorum when the secondaries' queues are, so that on a
    /// RabbitMQ cluster the loss of one broker node (a classic queue's only home) does not stop
    /// the acks, and with them every write with `w` > 1.
    acks_queue_type: QueueType,
}

impl Topology {
    /// Names for the cluster called `namespace`, with a classic acks queue.
    pub fn new(namespace: impl Into<String>) -> Topology {
        Topology {
            namespace: namespace.into(),
            acks_queue_type: QueueType::Classic,
        }
    }

    /// The same names, with the acks queue of the given type (the `--queue-type`).
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Topology {
        self.acks_queue_type = queue_type;
        self
    }

    /// The type of the acks queue.
    pub fn acks_queue_type(&self) -> QueueType {
        self.acks_queue_type
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The fanout exchange the master publishes sequenced entries to.
    pub fn entries_exchange(&self) -> String {
        format!("{}.entries", self.namespace)
    }

    /// The durable queue holding entries for one secondary.
    pub fn secondary_queue(&self, id: &NodeId) -> String {
        format!("{}.secondary.{}", self.namespace, id)
    }

    /// The durable queue the master consumes secondaries' reports (acks and heartbeats) from.
    pub fn acks_queue(&self) -> String {
        format!("{}.acks", self.namespace)
    }

    /// The fanout exchange secondaries publish their reports to, bound to [`Self::acks_queue`]
    /// by the master. Reports go through an exchange of their own, not the default one, so that
    /// a secondary's broker user needs write permission on this name only: write on
    /// `amq.default` would let it publish into any queue, another secondary's entries included.
    /// The name differs from the queue's because RabbitMQ's permission regexes match exchange
    /// and queue names alike: `<ns>.acks-in` can be writable by secondaries while `<ns>.acks`
    /// stays readable by the master alone.
    pub fn acks_exchange(&self) -> String {
        format!("{}.acks-in", self.namespace)
    }
}

/// How many reports the acks queue keeps: beyond this the oldest are dropped. Each report
/// restates a secondary's whole position and secondaries repeat it every heartbeat, so an old
/// report is worth nothing once a newer one is queued; a master that was down for a day finds
/// at most this many, not millions.
pub const ACKS_MAX_LENGTH: i64 = 10_000;

/// The declare arguments of the acks queue: a queue of `kind` (quorum on a broker cluster) of
/// at most [`ACKS_MAX_LENGTH`]
/// reports that drops its oldest (`drop-head`) when full. Unlike entries, reports may be lost.
pub fn acks_queue_arguments(kind: QueueType) -> FieldTable {
    let mut args = kind.arguments();
    args.insert(
        ShortString::from("x-max-length"),
        AMQPValue::LongLongInt(ACKS_MAX_LENGTH),
    );
    args.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString("drop-head".into()),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_namespace() {
        let topology = Topology::new("replog");
        let s1 = NodeId::parse("s1").unwrap();
        assert_eq!(topology.entries_exchange(), "replog.entries");
        assert_eq!(topology.secondary_queue(&s1), "replog.secondary.s1");
        assert_eq!(topology.acks_queue(), "replog.acks");
        assert_eq!(topology.acks_exchange(), "replog.acks-in");
    }

    #[test]
    fn the_acks_queue_follows_the_queue_type() {
        assert_eq!(Topology::new("r").acks_queue_type(), QueueType::Classic);
        let quorum = Topology::new("r").with_queue_type(QueueType::Quorum);
        assert_eq!(quorum.acks_queue_type(), QueueType::Quorum);
        assert_eq!(quorum.acks_queue(), "r.acks");
    }

    #[test]
    fn queue_arguments_never_limit_the_queue() {
        for kind in [QueueType::Quorum, QueueType::Classic] {
            let args = kind.arguments();
            let keys: Vec<String> = args.inner().keys().map(|k| k.to_string()).collect();
            assert_eq!(keys, vec!["x-queue-type".to_string()]);
        }
    }

    #[test]
    fn the_acks_queue_is_bounded_and_drops_its_oldest() {
        let args = acks_queue_arguments(QueueType::Classic);
        let inner = args.inner();
        assert_eq!(
            inner.get("x-max-length"),
            Some(&AMQPValue::LongLongInt(ACKS_MAX_LENGTH))
        );
        assert_eq!(
            inner.get("x-overflow"),
            Some(&AMQPValue::LongString("drop-head".into()))
        );
    }
}
