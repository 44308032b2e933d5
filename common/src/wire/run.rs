//! A run of consecutive entries in one AMQP message: the versioned entry wire format.
//!
//! The broker's per-message work is what bounds replication throughput on one machine, so the
//! master publishes what is stored and unpublished as one message of up to
//! [`RunLimits::entries`] entries and [`RunLimits::bytes`] bytes. A write that waits for
//! secondaries never waits for company: a lone one travels alone; only entries nobody waits for
//! may linger for a full run (see [`crate::rules::linger`]). The message says what it is and which version it is, so that a
//! node meeting a format it does not know refuses it with a clear error instead of guessing:
//!
//! ```json
//! {"v": 1, "master_incarnation": "…", "entries": [{"message_id": "a", "order": 7, "content": "..."}, ...]}
//! ```
//!
//! The AMQP `type` property carries [`RUN_TYPE`] too, for people reading queues in the
//! management UI.

use super::amqp::EntryMessage;
use super::WireError;
use crate::entry::Entry;
use crate::ids::{Incarnation, Order};
use serde::{Deserialize, Serialize};

/// The version of the run format this build writes and reads.
pub const RUN_VERSION: u32 = 1;

/// The AMQP `type` property of a run message.
pub const RUN_TYPE: &str = "replog.entries.v1";

/// How large one run message may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Most entries in one message.
    pub entries: usize,
    /// Most bytes of message ids and contents in one message (a single larger entry still
    /// travels, alone).
    pub bytes: usize,
}

impl Default for RunLimits {
    /// 512 entries or 256 KiB: large enough that the broker's per-message cost is spread thin
    /// (a full run under `w=1` load is about 85 KiB of 100-byte entries), small enough that a
    /// redelivery or a prefetch window stays cheap.
    fn default() -> Self {
        RunLimits {
            entries: 512,
            bytes: 256 * 1024,
        }
    }
}

impl RunLimits {
    /// How many of `entries` (a stored, consecutive stretch of the log) go in the next
    /// message: at least one, then as many as fit.
    pub fn take(&self, entries: &[Entry]) -> usize {
        let mut bytes = 0usize;
        let mut count = 0usize;
        for entry in entries.iter().take(self.entries.max(1)) {
            bytes += entry.message_id.as_str().len() + entry.content.len();
            if count > 0 && bytes > self.bytes {
                break;
            }
            count += 1;
        }
        count
    }
}

/// Only the version, read first so that an unknown format is named as such.
#[derive(Deserialize)]
struct Version {
    /// Absent in the single-entry messages of earlier builds.
    v: Option<u32>,
}

/// The envelope of a run message.
#[derive(Debug, Serialize, Deserialize)]
struct RunMessage {
    /// [`RUN_VERSION`].
    v: u32,
    /// The publishing master's data-directory incarnation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    master_incarnation: Option<Incarnation>,
    /// Consecutive entries, in order.
    entries: Vec<EntryMessage>,
}

/// A decoded entries message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedRun {
    /// Consecutive entries, in order, at least one.
    pub entries: Vec<Entry>,
    /// The publishing master's incarnation, when it stamped one.
    pub master_incarnation: Option<Incarnation>,
}

/// Encodes `entries` (consecutive, non-empty) as one run message from the master `master`.
pub fn encode_run(entries: &[Entry], master: Option<Incarnation>) -> Vec<u8> {
    debug_assert!(!entries.is_empty(), "a run holds at least one entry");
    let message = RunMessage {
        v: RUN_VERSION,
        master_incarnation: master,
        entries: entries.iter().map(EntryMessage::from).collect(),
    };
    serde_json::to_vec(&message).expect("a run serialises")
}

/// Decodes a message from `<ns>.entries`: a run of this version, or a single entry of an
/// earlier build (no `v`). A newer version is refused with [`WireError::UnsupportedVersion`].
pub fn decode_run(payload: &[u8]) -> Result<PublishedRun, WireError> {
    let malformed = |e: serde_json::Error| WireError::Malformed(e.to_string());
    let version: Version = serde_json::from_slice(payload).map_err(malformed)?;
    let run = match version.v {
        None => {
            let single = EntryMessage::decode_published(payload)?;
            PublishedRun {
                entries: vec![single.entry],
                master_incarnation: single.master_incarnation,
            }
        }
        Some(RUN_VERSION) => {
            let run: RunMessage = serde_json::from_slice(payload).map_err(malformed)?;
            PublishedRun {
                entries: run
                    .entries
                    .into_iter()
                    .map(Entry::try_from)
                    .collect::<Result<Vec<_>, _>>()?,
                master_incarnation: run.master_incarnation,
            }
        }
        Some(other) => {
            return Err(WireError::UnsupportedVersion {
                got: other,
                supported: RUN_VERSION,
            })
        }
    };
    check_consecutive(&run.entries)?;
    Ok(run)
}

/// A run must hold at least one entry, in consecutive orders.
fn check_consecutive(entries: &[Entry]) -> Result<(), WireError> {
    let first = entries.first().ok_or(WireError::EmptyRun)?.order;
    for (offset, entry) in entries.iter().enumerate() {
        let expected = Order(first.get() + offset as u64);
        if entry.order != expected {
            return Err(WireError::NotConsecutive {
                expected: expected.get(),
                got: entry.order.get(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_round_trips() {
        let run: Vec<Entry> = (5..=9).map(Entry::sample).collect();
        let master = Incarnation::from_u128(7);
        let payload = encode_run(&run, Some(master));
        assert!(payload.starts_with(br#"{"v":1,"master_incarnation":"#));
        let decoded = decode_run(&payload).unwrap();
        assert_eq!(decoded.entries, run);
        assert_eq!(decoded.master_incarnation, Some(master));
    }

    #[test]
    fn a_single_entry_of_an_earlier_build_is_still_read() {
        let entry = Entry::sample(3);
        assert_eq!(
            decode_run(&EntryMessage::encode(&entry)).unwrap().entries,
            vec![entry]
        );
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let newer = br#"{"v":2,"entries":[],"something":"new"}"#;
        assert_eq!(
            decode_run(newer),
            Err(WireError::UnsupportedVersion {
                got: 2,
                supported: 1
            })
        );
        let message = decode_run(newer).unwrap_err().to_string();
        assert!(message.contains("version 2"), "{message}");
    }

    #[test]
    fn gaps_reorderings_and_empty_runs_are_refused() {
        let mut run: Vec<Entry> = (1..=3).map(Entry::sample).collect();
        run.swap(1, 2);
        assert_eq!(
            decode_run(&encode_run(&run, None)),
            Err(WireError::NotConsecutive {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            decode_run(br#"{"v":1,"entries":[]}"#),
            Err(WireError::EmptyRun)
        );
        assert!(matches!(
            decode_run(b"not json"),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn limits_take_at_least_one_then_what_fits() {
        let run: Vec<Entry> = (1..=10)
            .map(|o| Entry::of(o, "id", &"x".repeat(98)))
            .collect();
        let limits = RunLimits {
            entries: 4,
            bytes: 1000,
        };
        assert_eq!(limits.take(&run), 4, "the entry count binds");
        let limits = RunLimits {
            entries: 100,
            bytes: 250,
        };
        assert_eq!(
            limits.take(&run),
            2,
            "the byte count binds (100 bytes each)"
        );
        let huge = vec![Entry::of(1, "id", &"x".repeat(10_000))];
        assert_eq!(limits.take(&huge), 1, "a large entry still travels, alone");
        assert_eq!(limits.take(&[]), 0);
    }
}
