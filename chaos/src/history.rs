//! What the clients did and what they were told: one [`Op`] per logical write (one
//! `message_id`), with every HTTP attempt at it, timestamped on the wall clock so that it can be
//! compared with the nodes' own log timestamps.

use replog_common::wire::http::ReadOnly;
use replog_testkit::{RequestError, WriteAck, WriteOutcome};
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, the clock the nodes' log lines use too.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A wall-clock time as `HH:MM:SS.ffffffZ` (UTC), the way the nodes' log lines show it, so a
/// time in a violation can be found in the logs.
pub fn clock(us: u64) -> String {
    let seconds = us / 1_000_000;
    let day = seconds % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        day / 3_600,
        day % 3_600 / 60,
        day % 60,
        us % 1_000_000
    )
}

/// One logical write: a unique `message_id` and content, sent one or more times.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    /// Which writer sent it.
    pub writer: usize,
    /// Its number within the writer.
    pub seq: u64,
    /// The client-chosen id: every attempt reuses it, so a retry cannot append twice.
    pub message_id: String,
    /// The payload; encodes the run, the writer and the sequence number, so it is unique.
    pub content: String,
    /// The write concern asked for.
    pub w: u64,
    /// The `timeout_ms` sent, if any.
    pub timeout_ms: Option<u64>,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
}

/// One HTTP request for an op.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// When the request was sent (µs since the epoch).
    pub sent_us: u64,
    /// When its answer (or error) came back.
    pub done_us: u64,
    /// What came back.
    pub result: AttemptResult,
}

/// The outcome of one attempt, as far as the client can know it.
#[derive(Debug, Clone, Serialize)]
pub enum AttemptResult {
    /// `201` or `200`: acknowledged with the write concern met.
    Acked(WriteAck),
    /// `504`: appended at `order`, write concern not met in time.
    TimedOut {
        /// Where the master says the entry is.
        order: u64,
        /// Nodes holding it when the wait ended, by the master's count.
        acks: u64,
    },
    /// `503` while the master stops; `order` when it was appended first.
    Unavailable {
        /// Where the master says the entry is, if it was appended.
        order: Option<u64>,
    },
    /// `503` read-only (no quorum, or a fenced log): refused, nothing appended. A retry of a
    /// write the log already holds is answered as usual, never with this.
    ReadOnly {
        /// The master's reason.
        error: String,
    },
    /// Another 5xx: the master failed inside; the write may or may not be in the log.
    ServerError {
        /// The status.
        status: u16,
        /// The body.
        body: String,
    },
    /// A 4xx: the write was refused and is not in the log.
    Rejected {
        /// The status.
        status: u16,
        /// The body.
        body: String,
    },
    /// The connection was refused: the master never saw this attempt.
    NotSent {
        /// The error.
        error: String,
    },
    /// No answer (client timeout, connection lost, unreadable body): the write may or may not
    /// be in the log.
    Unknown {
        /// The error.
        error: String,
    },
}

impl AttemptResult {
    /// Classifies what the client got back.
    pub fn from_response(response: Result<WriteOutcome, RequestError>) -> AttemptResult {
        match response {
            Ok(WriteOutcome::Created(ack)) | Ok(WriteOutcome::Duplicate(ack)) => {
                AttemptResult::Acked(ack)
            }
            Ok(WriteOutcome::TimedOut(timed_out)) => AttemptResult::TimedOut {
                order: timed_out.order,
                acks: timed_out.acks,
            },
            Ok(WriteOutcome::Unavailable { order: None, error })
                if ReadOnly::is_refusal(&error) =>
            {
                AttemptResult::ReadOnly { error }
            }
            Ok(WriteOutcome::Unavailable { order, .. }) => AttemptResult::Unavailable { order },
            Ok(WriteOutcome::Status { status, body }) if (400..500).contains(&status) => {
                AttemptResult::Rejected { status, body }
            }
            Ok(WriteOutcome::Status { status, body }) => {
                AttemptResult::ServerError { status, body }
            }
            Err(RequestError::NotSent(error)) => AttemptResult::NotSent { error },
            Err(error) => AttemptResult::Unknown {
                error: error.to_string(),
            },
        }
    }

    /// Whether the client should try again (with the same `message_id`) to learn more.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            AttemptResult::Acked(_) | AttemptResult::Rejected { .. }
        )
    }

    /// The order the master named in this answer, if any.
    pub fn order(&self) -> Option<u64> {
        match self {
            AttemptResult::Acked(ack) => Some(ack.order),
            AttemptResult::TimedOut { order, .. } => Some(*order),
            AttemptResult::Unavailable { order } => *order,
            _ => None,
        }
    }
}

/// What is known about an op after all its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum OpStatus {
    /// At least one attempt was acknowledged: it must be in the log, once.
    Acknowledged,
    /// The master said it was appended (504, or 503 with an order) but never acknowledged it:
    /// it must be in the log, once, at that order.
    Appended,
    /// Nobody knows: it may be in the log, at most once.
    Indeterminate,
    /// Every attempt was refused (`4xx`, or `503` read-only) or never sent: it must not be in
    /// the log.
    Failed,
}

impl Op {
    /// The strongest thing any attempt established.
    pub fn status(&self) -> OpStatus {
        let any = |f: fn(&AttemptResult) -> bool| self.attempts.iter().any(|a| f(&a.result));
        if any(|r| matches!(r, AttemptResult::Acked(_))) {
            OpStatus::Acknowledged
        } else if any(|r| r.order().is_some()) {
            OpStatus::Appended
        } else if any(|r| {
            matches!(
                r,
                AttemptResult::Unknown { .. }
                    | AttemptResult::ServerError { .. }
                    | AttemptResult::Unavailable { order: None }
            )
        }) {
            OpStatus::Indeterminate
        } else {
            OpStatus::Failed
        }
    }

    /// The acknowledged attempts.
    pub fn acks(&self) -> impl Iterator<Item = (&Attempt, &WriteAck)> {
        self.attempts
            .iter()
            .filter_map(|attempt| match &attempt.result {
                AttemptResult::Acked(ack) => Some((attempt, ack)),
                _ => None,
            })
    }

    /// Whether any attempt ended with no answer at all (lost response or client timeout).
    pub fn had_unknown_attempt(&self) -> bool {
        self.attempts
            .iter()
            .any(|a| matches!(a.result, AttemptResult::Unknown { .. }))
    }

    /// Whether any attempt was refused with a read-only `503`.
    pub fn was_refused_read_only(&self) -> bool {
        self.attempts
            .iter()
            .any(|a| matches!(a.result, AttemptResult::ReadOnly { .. }))
    }

    /// Whether any attempt was a 504.
    pub fn had_timeout(&self) -> bool {
        self.attempts
            .iter()
            .any(|a| matches!(a.result, AttemptResult::TimedOut { .. }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn op(message_id: &str, w: u64, results: Vec<AttemptResult>) -> Op {
        Op {
            writer: 0,
            seq: 0,
            message_id: message_id.to_owned(),
            content: format!("content of {message_id}"),
            w,
            timeout_ms: None,
            attempts: results
                .into_iter()
                .enumerate()
                .map(|(i, result)| Attempt {
                    sent_us: 1_000 * i as u64,
                    done_us: 1_000 * i as u64 + 500,
                    result,
                })
                .collect(),
        }
    }

    pub(crate) fn acked(message_id: &str, order: u64, w: u64, acks: u64) -> AttemptResult {
        AttemptResult::Acked(WriteAck {
            message_id: message_id.to_owned(),
            order,
            content: format!("content of {message_id}"),
            w,
            acks,
            duplicate: false,
        })
    }

    pub(crate) fn unknown() -> AttemptResult {
        AttemptResult::Unknown {
            error: "timed out".into(),
        }
    }

    #[test]
    fn clock_times_read_like_log_timestamps() {
        assert_eq!(clock(1_795_604_860_681_578), "11:07:40.681578Z");
    }

    #[test]
    fn the_strongest_attempt_decides_the_status() {
        let not_sent = || AttemptResult::NotSent {
            error: "refused".into(),
        };
        assert_eq!(op("a", 1, vec![not_sent()]).status(), OpStatus::Failed);
        assert_eq!(
            op("a", 1, vec![not_sent(), unknown()]).status(),
            OpStatus::Indeterminate
        );
        let timed_out = AttemptResult::TimedOut { order: 3, acks: 1 };
        assert_eq!(
            op("a", 2, vec![unknown(), timed_out.clone()]).status(),
            OpStatus::Appended
        );
        assert_eq!(
            op("a", 2, vec![timed_out, unknown(), acked("a", 3, 2, 2)]).status(),
            OpStatus::Acknowledged
        );
        assert_eq!(
            op("a", 1, vec![AttemptResult::Unavailable { order: None }]).status(),
            OpStatus::Indeterminate
        );
        let read_only = || AttemptResult::ReadOnly {
            error: "read-only: no quorum (1 of 3 nodes healthy, 2 needed)".into(),
        };
        assert_eq!(
            op("a", 1, vec![read_only(), not_sent(), read_only()]).status(),
            OpStatus::Failed
        );
        assert_eq!(
            op("a", 1, vec![read_only(), acked("a", 1, 1, 1)]).status(),
            OpStatus::Acknowledged
        );
        assert_eq!(
            op("a", 1, vec![unknown(), read_only()]).status(),
            OpStatus::Indeterminate
        );
    }

    #[test]
    fn a_read_only_503_is_a_refusal_and_a_stopping_one_is_not() {
        let answer = |error: &str, order: Option<u64>| {
            AttemptResult::from_response(Ok(WriteOutcome::Unavailable {
                order,
                error: error.into(),
            }))
        };
        let refused = answer(
            "read-only: no quorum (1 of 3 nodes healthy, 2 needed)",
            None,
        );
        assert!(
            matches!(refused, AttemptResult::ReadOnly { .. }),
            "{refused:?}"
        );
        assert!(refused.is_retryable());
        let fenced = answer("read-only: the log ends at 50 but ...", None);
        assert!(
            matches!(fenced, AttemptResult::ReadOnly { .. }),
            "{fenced:?}"
        );
        let stopping = answer("the master is shutting down; retry ...", None);
        assert!(
            matches!(stopping, AttemptResult::Unavailable { order: None }),
            "{stopping:?}"
        );
    }
}
