//! Whether the master takes new entries now, and if not, why: the one place the write path asks.
//!
//! Two causes make the master read-only (reads and retries of writes the log already holds keep
//! working): the [fence](crate::fence) (its log is shorter than evidence says it was) and a
//! missing quorum of healthy nodes (Redis's `min-replicas-to-write`, answered like its
//! `NOREPLICAS` error, but with a `Retry-After`).

use crate::fence::Fenced;
use replog_common::rules::membership::Quorum;

/// Why the master refuses new entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOnly {
    /// The log is shorter than the evidence: see [`Fenced`].
    Fenced(Fenced),
    /// Too few nodes are healthy.
    NoQuorum(Quorum),
}

impl ReadOnly {
    /// How long a client should wait before retrying, in seconds: a quorum may come back with
    /// the next heartbeat; a fence needs an operator.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            ReadOnly::Fenced(_) => 30,
            ReadOnly::NoQuorum(_) => 1,
        }
    }
}

impl std::fmt::Display for ReadOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadOnly::Fenced(fenced) => fenced.fmt(f),
            ReadOnly::NoQuorum(quorum) => write!(
                f,
                "read-only: no quorum ({} of {} nodes healthy, {} needed)",
                quorum.healthy, quorum.nodes, quorum.needed
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_quorum_message_names_the_counts() {
        let read_only = ReadOnly::NoQuorum(Quorum {
            nodes: 3,
            needed: 2,
            healthy: 1,
        });
        assert_eq!(
            read_only.to_string(),
            "read-only: no quorum (1 of 3 nodes healthy, 2 needed)"
        );
        assert_eq!(read_only.retry_after_secs(), 1);
    }
}
