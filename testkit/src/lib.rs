//! Process control for replog's tests and its chaos checker.
//!
//! Everything here drives real processes from the outside, the way an operator (or a crash)
//! would: no node code is linked in, only the wire types of `replog-common`.
//!
//! - [`broker`]: [`PrivateBroker`], a RabbitMQ node of its own on free ports, which can be
//!   stopped, started again on the same data, killed with SIGKILL, frozen and thawed. It never
//!   touches the machine's shared broker.
//! - [`broker_cluster`]: [`BrokerCluster`], three private RabbitMQ nodes sharing one cookie,
//!   joined into one cluster; one node at a time can be killed, stopped, frozen and started.
//! - [`binaries`]: builds `master` and `secondary` once per process and finds them.
//! - [`node`]: [`Node`], one `master` or `secondary` process: spawned, read for its
//!   `listening on` line with a deadline, killed, frozen, terminated and restarted with the same
//!   command line.
//! - [`cluster`]: a master and its secondaries on ports fixed up front (or port 0), so that URLs
//!   (and the secondaries' `--master-url`) stay valid across restarts; secondaries may start
//!   later than the master.
//! - [`test_cluster`]: [`TestCluster`], a cluster for one integration test: a namespace of its
//!   own, deleted from the broker on drop, and the nodes' log tails printed when the test fails.
//! - [`namespace`]: a namespace's queues and exchange on the broker, and their deletion.
//! - [`client`]: typed `POST /messages`, `GET /messages` and `GET /health`, and raw requests for
//!   tests that must send malformed ones.
//! - [`ports`]: free ports outside the kernel's ephemeral range, safe to reuse after a restart.
//! - [`wait`]: polling a condition until a deadline, never a bare sleep.

#![warn(missing_docs)]

pub mod binaries;
pub mod broker;
pub mod broker_cluster;
pub mod client;
pub mod cluster;
pub mod namespace;
pub mod node;
pub mod ports;
mod signal;
pub mod test_cluster;
pub mod wait;

pub use binaries::{Binaries, BinaryError, Profile};
pub use broker::{declare_plain_queue, publish_as, BrokerError, BrokerOptions, PrivateBroker};
pub use broker_cluster::{BrokerCluster, Rejoined, AUTOHEAL_GRACE, CLUSTER_SIZE};
pub use client::{
    BrokerHealth, EntryStatus, MasterHealth, NodeClient, NotYetApplied, QuorumHealth, RawResponse,
    RequestError, SecondaryHealth, SecondaryStatus, Write, WriteAck, WriteOutcome, WriteTimedOut,
};
pub use cluster::{unique_namespace, Cluster, ClusterSpec, Ports};
pub use namespace::{publish_raw_entry, NamespaceGuard};
pub use node::{Node, NodeError, NodeSpec};
pub use ports::{free_port, PortError};
pub use test_cluster::{
    amqp_url_from_env, describe_log, TestCluster, TestClusterBuilder, FAST_HEARTBEAT_MS,
    FAST_SUSPECT_AFTER_MS, FAST_UNHEALTHY_AFTER_MS,
};
pub use wait::{wait_for, WaitTimeout};
