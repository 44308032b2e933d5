//! The master's confirm window: which published entries the broker has confirmed, how many more
//! may be published, and when everything unconfirmed must be published again.
//!
//! The master publishes entries in log order and the broker confirms each one (an ack), refuses
//! it (a nack), or returns it unroutable. Everything up to [`ConfirmWindow::confirmed`] is
//! confirmed; an ack beyond an unconfirmed publish is remembered but cannot advance past it. A
//! nack, a return, a lost channel or a confirm that does not come within the confirm timeout all
//! decide the same recovery: publish again everything after `confirmed`, on a fresh channel.
//! Secondaries drop the duplicates this may create.
//!
//! Time is passed in: [`ConfirmWindow::published`] and [`ConfirmWindow::tick`] take the caller's
//! `now`, and [`ConfirmWindow::deadline`] says when the next tick is worth making. The window
//! does no I/O; the master's publisher task carries out what it decides.

use crate::ids::Order;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the publisher must do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changes (a duplicate or out-of-order ack, a stale nack, a tick before any
    /// deadline).
    Nothing,
    /// Everything up to this order is now confirmed.
    Advance(Order),
    /// Give the channel up and publish again everything from this order on, in order, on a
    /// fresh channel. The window has forgotten what was in flight.
    Republish {
        /// The first unconfirmed order (`confirmed + 1`).
        from: Order,
    },
}

/// One publish waiting for its confirm: a run of consecutive entries ending at `last` (one
/// AMQP message, one confirm).
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// The last order of the run; the run starts right after the previous publish's `last`.
    last: Order,
    /// When it was published: its confirm is due `timeout` later.
    published_at: Instant,
    /// Whether the broker confirmed it while an earlier publish is still unconfirmed.
    acked: bool,
}

/// The publisher's confirm window.
#[derive(Debug)]
pub struct ConfirmWindow {
    /// Everything up to here is confirmed by the broker.
    confirmed: Order,
    /// Publishes after `confirmed`, in order, each a run ending at its `last`.
    in_flight: VecDeque<InFlight>,
    /// Most entries awaiting a confirm at once; bounds what a slow broker makes us hold.
    capacity: usize,
    /// Most publishes (runs) awaiting a confirm at once. While they wait, newly stored entries
    /// gather into the next run: under load the broker gets fewer, larger messages, and a
    /// write that finds nothing in flight still goes out at once.
    publishes: usize,
    /// How long a publish may stay unconfirmed before everything is published again.
    timeout: Duration,
}

impl ConfirmWindow {
    /// A window over a log whose entries up to `confirmed` are confirmed, allowing `capacity`
    /// publishes in flight and `timeout` for each confirm.
    pub fn new(confirmed: Order, capacity: usize, timeout: Duration) -> ConfirmWindow {
        ConfirmWindow {
            confirmed,
            in_flight: VecDeque::new(),
            capacity,
            publishes: usize::MAX,
            timeout,
        }
    }

    /// The same window, allowing at most `publishes` runs (at least one) awaiting a confirm.
    pub fn with_publish_limit(mut self, publishes: usize) -> ConfirmWindow {
        self.publishes = publishes.max(1);
        self
    }

    /// Everything up to here is confirmed.
    pub fn confirmed(&self) -> Order {
        self.confirmed
    }

    /// The order to publish next.
    pub fn next(&self) -> Order {
        self.in_flight
            .back()
            .map_or(self.confirmed, |publish| publish.last)
            .next()
    }

    /// How many entries await a confirm.
    pub fn in_flight(&self) -> usize {
        (self.next().get() - self.confirmed.get() - 1) as usize
    }

    /// How many more entries may be published before a confirm comes in: none while the
    /// publish limit is reached.
    pub fn room(&self) -> usize {
        if self.publishes_room() == 0 {
            return 0;
        }
        self.capacity.saturating_sub(self.in_flight())
    }

    /// How many more publishes (runs) may go out before a confirm comes in.
    pub fn publishes_room(&self) -> usize {
        self.publishes.saturating_sub(self.in_flight.len())
    }

    /// When the oldest unconfirmed publish times out, if anything is in flight: the caller
    /// ticks at (or after) this moment.
    pub fn deadline(&self) -> Option<Instant> {
        self.in_flight
            .front()
            .map(|publish| publish.published_at + self.timeout)
    }

    /// Records that `order` alone was published at `now` (a run of one).
    pub fn published(&mut self, order: Order, now: Instant) {
        self.published_run(order, order, now);
    }

    /// Records that the run `first..=last` was published as one message at `now`. Runs are
    /// published in sequence: `first` must be [`ConfirmWindow::next`], and
    /// [`ConfirmWindow::room`] must not be zero. Its confirm is named by `last`.
    pub fn published_run(&mut self, first: Order, last: Order, now: Instant) {
        debug_assert_eq!(first, self.next(), "entries are published in order");
        debug_assert!(last >= first, "a run holds at least one entry");
        debug_assert!(self.room() > 0, "the window is full");
        self.in_flight.push_back(InFlight {
            last,
            published_at: now,
            acked: false,
        });
    }

    /// The broker confirmed the publish whose run ends at `order`. Advances when it closes the
    /// confirmed prefix; an ack of something already confirmed or never published changes
    /// nothing.
    pub fn acked(&mut self, order: Order) -> Decision {
        let Some(publish) = self.slot(order) else {
            return Decision::Nothing;
        };
        publish.acked = true;
        let before = self.confirmed;
        while let Some(publish) = self.in_flight.front().filter(|publish| publish.acked) {
            self.confirmed = publish.last;
            self.in_flight.pop_front();
        }
        if self.confirmed > before {
            Decision::Advance(self.confirmed)
        } else {
            Decision::Nothing
        }
    }

    /// The broker refused `order`.
    pub fn nacked(&mut self, order: Order) -> Decision {
        self.refused(order)
    }

    /// The broker returned `order` as unroutable (a queue is missing: declare again).
    pub fn returned(&mut self, order: Order) -> Decision {
        self.refused(order)
    }

    /// The channel failed: nothing in flight will be confirmed on it.
    pub fn channel_lost(&mut self) -> Decision {
        self.republish()
    }

    /// Time passed: republish when the oldest unconfirmed publish is older than the timeout.
    pub fn tick(&mut self, now: Instant) -> Decision {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.republish(),
            _ => Decision::Nothing,
        }
    }

    /// A nack or a return: republish when it is about a publish still in flight; a stale one
    /// (already confirmed, or from before a republish) changes nothing.
    fn refused(&mut self, order: Order) -> Decision {
        if self.slot(order).is_none() {
            return Decision::Nothing;
        }
        self.republish()
    }

    fn republish(&mut self) -> Decision {
        self.in_flight.clear();
        Decision::Republish {
            from: self.confirmed.next(),
        }
    }

    /// The in-flight publish whose run ends at `order`, if there is one.
    fn slot(&mut self, order: Order) -> Option<&mut InFlight> {
        let at = self
            .in_flight
            .binary_search_by_key(&order, |publish| publish.last)
            .ok()?;
        self.in_flight.get_mut(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A window after `confirmed` with orders `confirmed+1..=last` published at `at`.
    fn window_with(confirmed: u64, last: u64, at: Instant) -> ConfirmWindow {
        let mut window = ConfirmWindow::new(Order(confirmed), 8, TIMEOUT);
        for order in confirmed + 1..=last {
            window.published(Order(order), at);
        }
        window
    }

    #[test]
    fn runs_are_confirmed_by_their_last_order() {
        let at = Instant::now();
        let mut window = ConfirmWindow::new(Order(0), 100, TIMEOUT);
        window.published_run(Order(1), Order(4), at);
        window.published_run(Order(5), Order(5), at);
        window.published_run(Order(6), Order(9), at);
        assert_eq!(
            (window.next(), window.in_flight(), window.room()),
            (Order(10), 9, 91)
        );
        // An ack naming an order inside a run is no ack of this window's.
        assert_eq!(window.acked(Order(2)), Decision::Nothing);
        assert_eq!(
            window.acked(Order(9)),
            Decision::Nothing,
            "an earlier run is unconfirmed"
        );
        assert_eq!(window.acked(Order(4)), Decision::Advance(Order(4)));
        assert_eq!(window.acked(Order(5)), Decision::Advance(Order(9)));
        assert_eq!((window.confirmed(), window.in_flight()), (Order(9), 0));
        window.published_run(Order(10), Order(20), at);
        assert_eq!(
            window.nacked(Order(20)),
            Decision::Republish { from: Order(10) }
        );
        assert_eq!(window.next(), Order(10));
    }

    #[test]
    fn in_order_acks_advance() {
        let mut window = window_with(4, 7, Instant::now());
        assert_eq!(window.next(), Order(8));
        assert_eq!(window.acked(Order(5)), Decision::Advance(Order(5)));
        assert_eq!(window.acked(Order(6)), Decision::Advance(Order(6)));
        assert_eq!(window.acked(Order(7)), Decision::Advance(Order(7)));
        assert_eq!(window.confirmed(), Order(7));
        assert_eq!(window.in_flight(), 0);
        assert_eq!(window.deadline(), None);
    }

    #[test]
    fn an_out_of_order_ack_cannot_pass_an_unconfirmed_publish() {
        let mut window = window_with(0, 4, Instant::now());
        assert_eq!(window.acked(Order(3)), Decision::Nothing);
        assert_eq!(window.acked(Order(2)), Decision::Nothing);
        assert_eq!(window.confirmed(), Order(0));
        // 1 closes the gap: everything acked behind it is confirmed at once.
        assert_eq!(window.acked(Order(1)), Decision::Advance(Order(3)));
        assert_eq!(window.in_flight(), 1);
        assert_eq!(window.next(), Order(5));
    }

    #[test]
    fn duplicate_and_unknown_acks_are_ignored() {
        let mut window = window_with(0, 3, Instant::now());
        assert_eq!(window.acked(Order(1)), Decision::Advance(Order(1)));
        assert_eq!(window.acked(Order(1)), Decision::Nothing);
        assert_eq!(window.acked(Order(3)), Decision::Nothing);
        assert_eq!(window.acked(Order(3)), Decision::Nothing);
        assert_eq!(window.acked(Order(0)), Decision::Nothing);
        assert_eq!(window.acked(Order(9)), Decision::Nothing, "never published");
        assert_eq!(window.acked(Order(2)), Decision::Advance(Order(3)));
        assert_eq!(window.acked(Order(2)), Decision::Nothing);
        assert_eq!(window.confirmed(), Order(3));
    }

    #[test]
    fn a_nack_or_a_return_republishes_after_the_confirmed_prefix() {
        let now = Instant::now();
        let mut window = window_with(0, 5, now);
        window.acked(Order(1));
        window.acked(Order(3));
        assert_eq!(
            window.nacked(Order(4)),
            Decision::Republish { from: Order(2) }
        );
        assert_eq!(window.in_flight(), 0);
        assert_eq!(
            window.next(),
            Order(2),
            "3 was acked but is published again"
        );
        // A nack from the old channel for an order not in flight any more changes nothing.
        assert_eq!(window.nacked(Order(5)), Decision::Nothing);

        for order in 2..=4 {
            window.published(Order(order), now);
        }
        assert_eq!(
            window.returned(Order(3)),
            Decision::Republish { from: Order(2) }
        );
        assert_eq!(window.returned(Order(1)), Decision::Nothing, "confirmed");
    }

    #[test]
    fn a_lost_channel_republishes_even_with_nothing_in_flight() {
        let mut window = window_with(2, 4, Instant::now());
        assert_eq!(
            window.channel_lost(),
            Decision::Republish { from: Order(3) }
        );
        assert_eq!(
            window.channel_lost(),
            Decision::Republish { from: Order(3) }
        );
    }

    #[test]
    fn a_confirm_that_does_not_come_in_time_republishes() {
        let start = Instant::now();
        let mut window = window_with(0, 1, start);
        window.published(Order(2), start + Duration::from_secs(4));
        assert_eq!(window.deadline(), Some(start + TIMEOUT));
        assert_eq!(
            window.tick(start + Duration::from_secs(9)),
            Decision::Nothing
        );
        // 1 is confirmed: the deadline moves to 2's.
        window.acked(Order(1));
        assert_eq!(window.deadline(), Some(start + Duration::from_secs(14)));
        assert_eq!(window.tick(start + TIMEOUT), Decision::Nothing);
        assert_eq!(
            window.tick(start + Duration::from_secs(14)),
            Decision::Republish { from: Order(2) }
        );
        assert_eq!(window.deadline(), None);
        assert_eq!(
            window.tick(start + Duration::from_secs(60)),
            Decision::Nothing,
            "nothing in flight, nothing to time out"
        );
    }

    #[test]
    fn an_acked_publish_behind_a_late_one_still_times_out() {
        let start = Instant::now();
        let mut window = window_with(0, 2, start);
        assert_eq!(window.acked(Order(2)), Decision::Nothing);
        assert_eq!(
            window.tick(start + TIMEOUT),
            Decision::Republish { from: Order(1) }
        );
    }

    #[test]
    fn the_window_limits_what_is_in_flight() {
        let now = Instant::now();
        let mut window = ConfirmWindow::new(Order(0), 3, TIMEOUT);
        assert_eq!(window.room(), 3);
        for order in 1..=3 {
            window.published(Order(order), now);
        }
        assert_eq!(window.room(), 0);
        // An ack behind an unconfirmed publish frees nothing.
        window.acked(Order(2));
        assert_eq!(window.room(), 0);
        window.acked(Order(1));
        assert_eq!(window.room(), 2);
        assert_eq!(window.next(), Order(4));
        window.channel_lost();
        assert_eq!(window.room(), 3);
        assert_eq!(window.next(), Order(3));
    }

    #[test]
    fn a_shuffled_duplicated_ack_stream_confirms_exactly_the_prefix() {
        let now = Instant::now();
        let mut window = ConfirmWindow::new(Order(0), 64, TIMEOUT);
        for order in 1..=20 {
            window.published(Order(order), now);
        }
        // Every order but 13 is acked, some twice, out of order.
        let acks = [
            5, 1, 2, 2, 9, 3, 4, 4, 20, 6, 7, 8, 10, 12, 11, 14, 19, 15, 16, 17, 18, 1, 5,
        ];
        let mut advanced = Vec::new();
        for ack in acks {
            if let Decision::Advance(to) = window.acked(Order(ack)) {
                advanced.push(to.get());
            }
        }
        assert_eq!(window.confirmed(), Order(12));
        assert!(advanced.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(window.acked(Order(13)), Decision::Advance(Order(20)));
    }

    #[test]
    fn the_publish_limit_holds_new_entries_until_a_confirm_comes() {
        let at = Instant::now();
        let mut window = ConfirmWindow::new(Order(0), 100, TIMEOUT).with_publish_limit(2);
        assert_eq!(
            window.room(),
            100,
            "nothing in flight: a lone write goes at once"
        );
        window.published_run(Order(1), Order(3), at);
        assert_eq!(window.room(), 97);
        assert_eq!(window.publishes_room(), 1);
        window.published(Order(4), at);
        assert_eq!(window.room(), 0, "two runs await their confirms");
        assert_eq!(window.publishes_room(), 0);
        assert_eq!(window.acked(Order(3)), Decision::Advance(Order(3)));
        assert_eq!(window.room(), 99, "one confirm frees room for the next run");
        window.published_run(Order(5), Order(40), at);
        assert_eq!(window.room(), 0);
        assert_eq!(
            window.channel_lost(),
            Decision::Republish { from: Order(4) }
        );
        assert_eq!(window.room(), 100, "a fresh channel starts empty");
        assert_eq!(
            ConfirmWindow::new(Order(0), 100, TIMEOUT)
                .with_publish_limit(0)
                .publishes,
            1,
            "at least one publish may be in flight"
        );
    }
}
