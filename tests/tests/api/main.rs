//! Black-box tests of replog: each test starts a real master and real secondaries as child
//! processes on port 0, in a broker namespace of its own, and talks to them over HTTP only.
//!
//! Module map:
//! - [`helpers`]: building and starting nodes, typed requests, waiting on conditions, clean-up.
//! - [`validation`]: every kind of bad input is refused with a JSON error and adds nothing.
//! - [`iteration1`]: blocking replication: the default write concern waits for every node.
//! - [`iteration2`]: write concern, visible temporary inconsistency, deduplication, total order.
//! - [`iteration3`]: the self-check scenario, redeliveries, crashes and catch-up, timeouts, and
//!   clients that never wait on one another.
//! - [`durability`]: nodes killed with SIGKILL come back with what they stored.
//! - [`recovery`]: torn and corrupt records in a node's log are cut at start-up, never served.
//! - [`broker`]: a private broker is stopped or killed and started again; every node recovers.
//! - [`paging`]: `GET /messages?from=&limit=`.
//! - [`startup`]: the one stdout line every node prints once bound.
//!
//! The broker is `REPLOG_AMQP_URL` (default the local RabbitMQ, guest/guest);
//! `REPLOG_TEST_LOGS=1` shows node logs live instead of only the tail of a failed test's.

mod broker;
mod durability;
mod helpers;
mod iteration1;
mod iteration2;
mod iteration3;
mod paging;
mod recovery;
mod startup;
mod validation;
