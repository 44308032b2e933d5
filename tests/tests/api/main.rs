//! Black-box tests of replog: each test starts a real master and real secondaries as child
//! processes through testkit's [`replog_testkit::TestCluster`], in a broker namespace of its own
//! (deleted when the test ends), and talks to them over HTTP only.
//!
//! Module map:
//! - [`helpers`]: assertions on answers and logs, request fixtures, waits with the suite's
//!   deadline. Starting, stopping and talking to nodes is testkit's.
//! - [`write_concern`]: a write returns once `w` nodes hold it and not before; the default,
//!   `--default-w`, timeouts (`504`) and `--wc-timeout-ms`.
//! - [`ordering`]: one total order on every node, delayed entries shown side by side and in
//!   order, hold-back bounded by the prefetch, a rival master publishing nothing.
//! - [`dedup`]: retries by `message_id`, `--dedup content`, racing retries, and redeliveries on
//!   the secondaries (`--fail-rate`).
//! - [`catch_up`]: late, killed, wiped and queue-less secondaries get every entry they missed.
//! - [`concurrency`]: clients are never blocked by a write that waits.
//! - [`self_check`]: the assignment's self-check scenario, step by step.
//! - [`validation`]: every kind of bad input is refused with a JSON error and adds nothing; what
//!   is accepted replicates unchanged.
//! - [`fence`]: a master whose log lost acknowledged entries takes no new ones until refilled.
//! - [`durability`]: nodes killed with SIGKILL come back with what they stored.
//! - [`recovery`]: torn and corrupt records in a node's log are cut at start-up, never served.
//! - [`broker`]: a private broker is stopped or killed and started again; every node recovers.
//! - [`linger`]: `--linger-ms` delays only entries nobody waits for; a replicated write, a full
//!   run and a stop publish at once.
//! - [`wire_format`]: runs of entries in one versioned message; unknown versions refused.
//! - [`broker_cluster`]: on a private three-node RabbitMQ cluster with quorum queues, the broker
//!   node the master uses is killed, stopped or frozen mid-stream; nothing acknowledged is lost.
//!   And an entry requeued many times is still delivered.
//! - [`broker_security`]: least-privileged broker users; forged reports and entries are
//!   ignored, and the broker refuses what a user may not publish.
//! - [`paging`]: `GET /messages?from=&limit=`.
//! - [`startup`]: the one stdout line every node prints once bound, and health reports.
//! - [`membership`]: heartbeats and node states on the master's `/health`, quorum read-only
//!   and back, `/ready`, incarnations (a secondary that lost its data no longer counts), and
//!   reports the master must not believe.
//! - [`divergence`]: a conflicting entry makes a secondary refuse it and report `diverged`; a
//!   secondary's `/health` and `/ready`.
//! - [`read_your_writes`]: `GET /messages?min_order=&wait_ms=`.
//! - [`entry_status`]: the master's `GET /messages/{message_id}`.
//! - [`metrics`]: `GET /metrics` on every node, and the Grafana dashboard that reads them.
//! - [`security_http`]: the API token on both nodes and for catch-up; ids that cannot forge
//!   log lines.
//! - [`shutdown`]: a stop is not held by a client reading a large page slowly.
//! - [`scale`]: eight secondaries: `w=9` from concurrent clients, and `w=2` beside a slow one.
//! - [`partitions`]: two logs on one broker as partitions of one keyspace, routed by key hash.
//!
//! The broker is `REPLOG_AMQP_URL` (default the local RabbitMQ, guest/guest). A failed test
//! prints the tail of every node's log and keeps the logs (the path is printed).

mod broker;
mod broker_cluster;
mod broker_security;
mod catch_up;
mod concurrency;
mod dedup;
mod divergence;
mod durability;
mod entry_status;
mod fence;
mod helpers;
mod linger;
mod membership;
mod metrics;
mod ordering;
mod paging;
mod partitions;
mod read_your_writes;
mod recovery;
mod scale;
mod security_http;
mod self_check;
mod shutdown;
mod startup;
mod validation;
mod wire_format;
mod write_concern;
