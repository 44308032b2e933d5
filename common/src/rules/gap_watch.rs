//! The secondary's gap watch as an engine: when to fetch from the master what the queue does not
//! deliver.
//!
//! Two rules. A gap in the hold-back buffer that stays open (the same first missing order) for
//! `after` is fetched; a gap that closes or moves in the meantime is not, and the watch re-arms.
//! And when nothing is held back but nothing was applied for [`STUCK_AFTER`] either, the master
//! is asked how far its log goes, and a longer log is fetched: that is the safety net for a tail
//! the queue lost. The shell samples the buffer on a timer, passes the time in as a value, and
//! only does the HTTP.

use crate::ids::Order;
use std::time::{Duration, Instant};

/// How long nothing may be applied while the master is ahead before its log is fetched.
pub const STUCK_AFTER: Duration = Duration::from_secs(3);

/// The shortest sampling period, however small `after` is.
const MIN_POLL: Duration = Duration::from_millis(50);

/// What the shell should do after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing for now.
    Wait,
    /// Fetch this inclusive range from the master and hand it to the applier.
    FetchRange {
        /// The first missing order.
        first: Order,
        /// The last missing order.
        last: Order,
    },
    /// Ask the master for the end of its log and pass it to [`GapWatch::master_end`]; then,
    /// whatever came of it, call [`GapWatch::stuck_check_done`].
    AskMasterEnd,
}

/// The gap watch's state.
#[derive(Debug, Clone)]
pub struct GapWatch {
    /// How long a gap may stay open before it is fetched.
    after: Duration,
    /// The first missing order of the gap being watched, and since when it has been open.
    open_gap: Option<(Order, Instant)>,
    /// The applied position last seen to change, and when: the clock of the stuck check.
    progress: (Order, Instant),
}

impl GapWatch {
    /// A watch fetching gaps open for `after`, starting at `applied` at `now`.
    pub fn new(after: Duration, applied: Order, now: Instant) -> GapWatch {
        GapWatch {
            after,
            open_gap: None,
            progress: (applied, now),
        }
    }

    /// How often the shell should observe: often enough to fetch a gap about `after` after it
    /// opened, never busier than every 50 ms.
    pub fn poll_interval(&self) -> Duration {
        (self.after / 2).max(MIN_POLL)
    }

    /// One sample of the hold-back buffer: its applied prefix and its gap, at `now`.
    pub fn observe(
        &mut self,
        applied: Order,
        gap: Option<(Order, Order)>,
        now: Instant,
    ) -> Decision {
        let Some((first, last)) = gap else {
            self.open_gap = None;
            return self.check_not_stuck(applied, now);
        };
        match self.open_gap {
            Some((start, since))
                if start == first && now.saturating_duration_since(since) >= self.after =>
            {
                // Fetched once; the next sample re-arms if the gap is somehow still open.
                self.open_gap = None;
                Decision::FetchRange { first, last }
            }
            Some((start, _)) if start == first => Decision::Wait,
            _ => {
                self.open_gap = Some((first, now));
                Decision::Wait
            }
        }
    }

    /// The stuck check, run only while nothing is held back (a gap has its own timer).
    fn check_not_stuck(&mut self, applied: Order, now: Instant) -> Decision {
        let (seen, since) = self.progress;
        if applied != seen {
            self.progress = (applied, now);
            return Decision::Wait;
        }
        if now.saturating_duration_since(since) < STUCK_AFTER {
            return Decision::Wait;
        }
        Decision::AskMasterEnd
    }

    /// The master's log ends at `end` while this node has applied up to `applied`: fetch the
    /// difference, if any.
    pub fn master_end(&self, end: Order, applied: Order) -> Decision {
        if end > applied {
            Decision::FetchRange {
                first: applied.next(),
                last: end,
            }
        } else {
            Decision::Wait
        }
    }

    /// The stuck check that [`Decision::AskMasterEnd`] started is over (whether the master
    /// answered, and whatever was fetched): the clock restarts from `applied` at `now`.
    pub fn stuck_check_done(&mut self, applied: Order, now: Instant) {
        self.progress = (applied, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_millis(1000);

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn gap(first: u64, last: u64) -> Option<(Order, Order)> {
        Some((Order(first), Order(last)))
    }

    fn fetch(first: u64, last: u64) -> Decision {
        Decision::FetchRange {
            first: Order(first),
            last: Order(last),
        }
    }

    #[test]
    fn poll_interval_is_half_of_after_but_at_least_50ms() {
        let t0 = Instant::now();
        assert_eq!(
            GapWatch::new(AFTER, Order::ZERO, t0).poll_interval(),
            ms(500)
        );
        assert_eq!(
            GapWatch::new(ms(20), Order::ZERO, t0).poll_interval(),
            ms(50)
        );
    }

    #[test]
    fn a_gap_that_closes_by_itself_is_not_fetched() {
        let t0 = Instant::now();
        let mut watch = GapWatch::new(AFTER, Order(2), t0);
        assert_eq!(watch.observe(Order(2), gap(3, 3), t0), Decision::Wait);
        assert_eq!(
            watch.observe(Order(2), gap(3, 3), t0 + ms(500)),
            Decision::Wait
        );
        assert_eq!(watch.observe(Order(4), None, t0 + ms(900)), Decision::Wait);
        assert_eq!(watch.observe(Order(4), None, t0 + ms(1500)), Decision::Wait);
        assert_eq!(watch.observe(Order(4), None, t0 + ms(2500)), Decision::Wait);
    }

    #[test]
    fn a_gap_open_longer_than_after_is_fetched_once_then_rearmed() {
        let t0 = Instant::now();
        let mut watch = GapWatch::new(AFTER, Order(2), t0);
        assert_eq!(watch.observe(Order(2), gap(3, 5), t0), Decision::Wait);
        assert_eq!(
            watch.observe(Order(2), gap(3, 5), t0 + ms(999)),
            Decision::Wait
        );
        assert_eq!(
            watch.observe(Order(2), gap(3, 5), t0 + ms(1000)),
            fetch(3, 5)
        );
        // A duplicated sample at the same time does not fetch twice: the watch re-armed.
        assert_eq!(
            watch.observe(Order(2), gap(3, 5), t0 + ms(1000)),
            Decision::Wait
        );
        assert_eq!(
            watch.observe(Order(2), gap(3, 5), t0 + ms(1500)),
            Decision::Wait
        );
        assert_eq!(
            watch.observe(Order(2), gap(3, 5), t0 + ms(2000)),
            fetch(3, 5)
        );
    }

    #[test]
    fn a_moving_gap_rearms() {
        let t0 = Instant::now();
        let mut watch = GapWatch::new(AFTER, Order(2), t0);
        assert_eq!(watch.observe(Order(2), gap(3, 3), t0), Decision::Wait);
        // 3 arrived, but now 5..=6 is missing: a new gap with a timer of its own.
        assert_eq!(
            watch.observe(Order(4), gap(5, 6), t0 + ms(900)),
            Decision::Wait
        );
        assert_eq!(
            watch.observe(Order(4), gap(5, 6), t0 + ms(1100)),
            Decision::Wait
        );
        assert_eq!(
            watch.observe(Order(4), gap(5, 6), t0 + ms(1899)),
            Decision::Wait
        );
        // The gap's end moving does not re-arm it: only its first missing order counts.
        assert_eq!(
            watch.observe(Order(4), gap(5, 8), t0 + ms(1900)),
            fetch(5, 8)
        );
    }

    #[test]
    fn a_sample_from_the_past_neither_fetches_nor_panics() {
        let t0 = Instant::now();
        let mut watch = GapWatch::new(AFTER, Order(2), t0 + ms(5000));
        assert_eq!(
            watch.observe(Order(2), gap(3, 3), t0 + ms(5000)),
            Decision::Wait
        );
        assert_eq!(watch.observe(Order(2), gap(3, 3), t0), Decision::Wait);
        assert_eq!(watch.observe(Order(2), None, t0), Decision::Wait);
    }

    #[test]
    fn stuck_only_after_stuck_after_without_progress() {
        let t0 = Instant::now();
        let mut watch = GapWatch::new(AFTER, Order(5), t0);
        assert_eq!(watch.observe(Order(5), None, t0 + ms(1000)), Decision::Wait);
        // Progress restarts the clock.
        assert_eq!(watch.observe(Order(6), None, t0 + ms(2000)), Decision::Wait);
        assert_eq!(watch.observe(Order(6), None, t0 + ms(4999)), Decision::Wait);
        assert_eq!(
            watch.observe(Order(6), None, t0 + ms(2000) + STUCK_AFTER),
            Decision::AskMasterEnd
        );
        assert_eq!(watch.master_end(Order(9), Order(6)), fetch(7, 9));
        assert_eq!(watch.master_end(Order(6), Order(6)), Decision::Wait);
        watch.stuck_check_done(Order(6), t0 + ms(6000));
        assert_eq!(watch.observe(Order(6), None, t0 + ms(8999)), Decision::Wait);
        assert_eq!(
            watch.observe(Order(6), None, t0 + ms(9000)),
            Decision::AskMasterEnd
        );
    }

    #[test]
    fn an_open_gap_suspends_the_stuck_check() {
        let t0 = Instant::now();
        let mut watch = GapWatch::new(ms(60_000), Order(5), t0);
        assert_eq!(watch.observe(Order(5), gap(6, 6), t0), Decision::Wait);
        assert_eq!(
            watch.observe(Order(5), gap(6, 6), t0 + STUCK_AFTER * 2),
            Decision::Wait
        );
        // Once the gap closes, the progress it made restarts the clock.
        assert_eq!(
            watch.observe(Order(8), None, t0 + STUCK_AFTER * 3),
            Decision::Wait
        );
        assert_eq!(
            watch.observe(Order(8), None, t0 + STUCK_AFTER * 4),
            Decision::AskMasterEnd
        );
    }
}
