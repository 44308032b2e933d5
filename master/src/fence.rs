//! The divergence fence: a master whose log is shorter than the evidence says it was takes no
//! new writes, so it never numbers a new entry into a range other nodes already hold.
//!
//! Evidence is either the `confirmed` mark beside the log (the broker confirmed entries up to
//! there, so they were published and may be held anywhere), or a secondary that follows this
//! master's incarnation and reports a position beyond the log's end. Either means acknowledged
//! entries are missing from the master (a damaged segment cut at start, an older backup
//! restored). Numbering on would give different entries the same orders on different nodes.
//! The fence stays until the range is refilled (`--refill-from`, see `refill`), which happens
//! at start, before any write is taken.

use replog_common::{NodeId, Order};
use std::sync::RwLock;

/// What showed that the log lost entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// The `confirmed` mark in the data directory.
    ConfirmedMark,
    /// A secondary of this master's incarnation reported holding more.
    Secondary(NodeId),
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Evidence::ConfirmedMark => f.write_str("the confirmed mark"),
            Evidence::Secondary(id) => write!(f, "secondary {id}"),
        }
    }
}

/// A log found shorter than the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    /// Where the master's log ends.
    pub log_end: Order,
    /// How far the evidence says it went.
    pub evidence_end: Order,
    /// What the evidence is.
    pub evidence: Evidence,
}

impl Fenced {
    /// The fence `evidence` ending at `evidence_end` calls for, if the log (ending at
    /// `log_end`) is shorter.
    pub fn check(log_end: Order, evidence_end: Order, evidence: Evidence) -> Option<Fenced> {
        (evidence_end > log_end).then_some(Fenced {
            log_end,
            evidence_end,
            evidence,
        })
    }
}

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read-only: the log ends at {} but {} shows entries up to {}: orders {}..={} are missing \
             and no new entry may be numbered over them; restart the master with \
             --refill-from <URL of a secondary that holds them> (README: \"Refilling a master\")",
            self.log_end,
            self.evidence,
            self.evidence_end,
            self.log_end.next(),
            self.evidence_end
        )
    }
}

/// The master's fence, shared by the HTTP handlers (which refuse new writes while it stands)
/// and the ack consumer (which raises it on a secondary's evidence).
#[derive(Debug, Default)]
pub struct Fence {
    /// The first evidence found; later evidence only widens the gap it names.
    raised: RwLock<Option<Fenced>>,
}

impl Fence {
    /// No fence.
    pub fn new() -> Fence {
        Fence::default()
    }

    /// Raises the fence (or widens its gap). Returns `true` the first time, so the caller logs
    /// it once.
    pub fn raise(&self, fenced: Fenced) -> bool {
        let mut raised = self.raised.write().expect("fence lock poisoned");
        match raised.as_mut() {
            None => {
                *raised = Some(fenced);
                true
            }
            Some(current) => {
                if fenced.evidence_end > current.evidence_end {
                    *current = fenced;
                }
                false
            }
        }
    }

    /// The fence, if raised.
    pub fn get(&self) -> Option<Fenced> {
        self.raised.read().expect("fence lock poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_shorter_log_is_fenced() {
        assert_eq!(
            Fenced::check(Order(50), Order(50), Evidence::ConfirmedMark),
            None
        );
        assert_eq!(
            Fenced::check(Order(60), Order(50), Evidence::ConfirmedMark),
            None
        );
        let fenced = Fenced::check(Order(50), Order(100), Evidence::ConfirmedMark).unwrap();
        let message = fenced.to_string();
        assert!(
            message.starts_with("read-only: the log ends at 50"),
            "{message}"
        );
        assert!(message.contains("orders 51..=100 are missing"), "{message}");
        assert!(message.contains("--refill-from"), "{message}");
    }

    #[test]
    fn the_fence_is_raised_once_and_keeps_the_widest_gap() {
        let fence = Fence::new();
        assert_eq!(fence.get(), None);
        let s1 = NodeId::parse("s1").unwrap();
        assert!(fence.raise(Fenced::check(Order(5), Order(8), Evidence::ConfirmedMark).unwrap()));
        assert!(!fence
            .raise(Fenced::check(Order(5), Order(9), Evidence::Secondary(s1.clone())).unwrap()));
        assert!(!fence.raise(Fenced::check(Order(5), Order(7), Evidence::ConfirmedMark).unwrap()));
        let fenced = fence.get().unwrap();
        assert_eq!(
            (fenced.evidence_end, fenced.evidence),
            (Order(9), Evidence::Secondary(s1))
        );
    }
}
