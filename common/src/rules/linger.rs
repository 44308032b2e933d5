//! When the master publishes what is stored: at once when somebody waits for it, otherwise
//! after a short linger that lets a full run gather.
//!
//! A write with `w >= 2` waits for secondaries, so the entries up to it go to the broker the
//! moment they are stored: a lone replicated write never waits for company. Entries nobody
//! waits for (`w = 1` writes, answered as soon as the master stored them) may linger up to
//! `--linger-ms` while more gather, so that under load the broker and the secondaries handle
//! one message, one append and one fsync per full run instead of per handful of entries. That
//! is Kafka's `linger.ms` with one difference: the linger ends early for any waiting write, so
//! it only ever delays replication lag, never an answer.
//!
//! The rule is a clock with no I/O: the publisher says what is unpublished and whether anybody
//! waits, with the time, and follows the answer.

use std::time::{Duration, Instant};

/// What the publisher knows about the unpublished part of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpublished {
    /// Entries stored and not yet published in this process.
    pub entries: u64,
    /// Whether a write waits for replication of one of them (`w >= 2`), or they are published
    /// again (a republish after a lost channel or a nack) or the master is stopping.
    pub urgent: bool,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishTiming {
    /// Nothing is unpublished.
    Idle,
    /// Publish what is stored.
    Now,
    /// Wait for more until this instant (or until something changes), then ask again.
    At(Instant),
}

/// The linger clock: how long the oldest unpublished entries have waited.
#[derive(Debug, Clone)]
pub struct Linger {
    /// The longest entries nobody waits for may wait (`--linger-ms`); zero publishes at once.
    max_wait: Duration,
    /// A run this long goes at once: waiting longer only delays it.
    full_run: u64,
    /// Since when entries have been unpublished; `None` while nothing is.
    since: Option<Instant>,
}

impl Linger {
    /// A clock that lets entries wait up to `max_wait` for a run of `full_run` entries.
    pub fn new(max_wait: Duration, full_run: u64) -> Linger {
        Linger {
            max_wait,
            full_run: full_run.max(1),
            since: None,
        }
    }

    /// Whether to publish `unpublished` now, at `now`.
    pub fn decide(&mut self, unpublished: Unpublished, now: Instant) -> PublishTiming {
        if unpublished.entries == 0 {
            self.since = None;
            return PublishTiming::Idle;
        }
        let since = *self.since.get_or_insert(now);
        let deadline = since + self.max_wait;
        if unpublished.urgent || unpublished.entries >= self.full_run || now >= deadline {
            PublishTiming::Now
        } else {
            PublishTiming::At(deadline)
        }
    }

    /// Everything unpublished was just published: the next entry starts a new wait. What a
    /// publish limit held back keeps its wait (and goes as soon as there is room).
    pub fn published(&mut self, nothing_left: bool) {
        if nothing_left {
            self.since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(20);

    fn calm(entries: u64) -> Unpublished {
        Unpublished {
            entries,
            urgent: false,
        }
    }

    #[test]
    fn nothing_unpublished_is_idle_and_resets_the_clock() {
        let start = Instant::now();
        let mut linger = Linger::new(WAIT, 256);
        assert_eq!(
            linger.decide(calm(1), start),
            PublishTiming::At(start + WAIT)
        );
        assert_eq!(linger.decide(calm(0), start + WAIT), PublishTiming::Idle);
        let later = start + WAIT * 3;
        assert_eq!(
            linger.decide(calm(1), later),
            PublishTiming::At(later + WAIT)
        );
    }

    #[test]
    fn entries_nobody_waits_for_linger_until_the_deadline_from_the_first_of_them() {
        let start = Instant::now();
        let mut linger = Linger::new(WAIT, 256);
        assert_eq!(
            linger.decide(calm(1), start),
            PublishTiming::At(start + WAIT)
        );
        // More arriving does not push the deadline back.
        let mid = start + WAIT / 2;
        assert_eq!(
            linger.decide(calm(40), mid),
            PublishTiming::At(start + WAIT)
        );
        assert_eq!(linger.decide(calm(41), start + WAIT), PublishTiming::Now);
    }

    #[test]
    fn a_waiting_write_publishes_at_once() {
        let start = Instant::now();
        let mut linger = Linger::new(WAIT, 256);
        assert_eq!(
            linger.decide(calm(3), start),
            PublishTiming::At(start + WAIT)
        );
        let urgent = Unpublished {
            entries: 4,
            urgent: true,
        };
        assert_eq!(linger.decide(urgent, start), PublishTiming::Now);
    }

    #[test]
    fn a_full_run_goes_at_once() {
        let start = Instant::now();
        let mut linger = Linger::new(WAIT, 8);
        assert_eq!(
            linger.decide(calm(7), start),
            PublishTiming::At(start + WAIT)
        );
        assert_eq!(linger.decide(calm(8), start), PublishTiming::Now);
    }

    #[test]
    fn no_linger_publishes_everything_at_once() {
        let start = Instant::now();
        let mut linger = Linger::new(Duration::ZERO, 256);
        assert_eq!(linger.decide(calm(1), start), PublishTiming::Now);
    }

    #[test]
    fn what_a_publish_limit_held_back_keeps_its_wait() {
        let start = Instant::now();
        let mut linger = Linger::new(WAIT, 256);
        assert_eq!(
            linger.decide(calm(1), start),
            PublishTiming::At(start + WAIT)
        );
        let due = start + WAIT;
        assert_eq!(linger.decide(calm(300), due), PublishTiming::Now);
        // The limit let one run out; the rest has waited since `start` already.
        linger.published(false);
        assert_eq!(linger.decide(calm(44), due), PublishTiming::Now);
        // Everything out: the next entry waits afresh.
        linger.published(true);
        let next = due + Duration::from_millis(1);
        assert_eq!(linger.decide(calm(1), next), PublishTiming::At(next + WAIT));
    }
}
