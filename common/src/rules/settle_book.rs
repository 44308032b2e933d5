//! Batched settles: which deliveries of one channel one `basic.ack` with `multiple=true` may
//! settle at once.
//!
//! The broker numbers a channel's deliveries 1, 2, 3, ... and an ack with `multiple=true` of tag
//! `T` settles every unsettled delivery up to `T`. That is safe only for a prefix in which every
//! delivery is due: a delivery held back beyond a gap must stay unacked until its entry is
//! stored. The book keeps the channel's unsettled tags and which of them are due, and answers
//! with one multiple ack for the longest due prefix and single acks for the due ones after it.

use std::collections::BTreeMap;

/// What to send for the deliveries due now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acks {
    /// One `basic.ack` with `multiple=true` of this tag: every delivery up to it is due.
    pub multiple_up_to: Option<u64>,
    /// Single acks of these tags (due, but after a delivery that is not).
    pub single: Vec<u64>,
}

/// The unsettled deliveries of one channel, by the broker's delivery tag.
#[derive(Debug, Default, Clone)]
pub struct SettleBook {
    /// Unsettled tags; `true` once due for an ack.
    unsettled: BTreeMap<u64, bool>,
}

impl SettleBook {
    /// An empty book, for a fresh channel.
    pub fn new() -> SettleBook {
        SettleBook::default()
    }

    /// A delivery arrived.
    pub fn delivered(&mut self, tag: u64) {
        self.unsettled.insert(tag, false);
    }

    /// A delivery may be acked (its entries are stored).
    pub fn due(&mut self, tag: u64) {
        if let Some(due) = self.unsettled.get_mut(&tag) {
            *due = true;
        }
    }

    /// A delivery was settled some other way (nacked, rejected) and must not be covered by a
    /// multiple ack.
    pub fn settled_alone(&mut self, tag: u64) {
        self.unsettled.remove(&tag);
    }

    /// How many deliveries are unsettled.
    pub fn unsettled(&self) -> usize {
        self.unsettled.len()
    }

    /// The acks that settle every due delivery, and forgets them.
    pub fn take_acks(&mut self) -> Acks {
        let mut acks = Acks::default();
        let prefix: Vec<u64> = self
            .unsettled
            .iter()
            .take_while(|(_, due)| **due)
            .map(|(tag, _)| *tag)
            .collect();
        match prefix.as_slice() {
            [] => {}
            [only] => acks.single.push(*only),
            [.., last] => acks.multiple_up_to = Some(*last),
        }
        for tag in &prefix {
            self.unsettled.remove(tag);
        }
        let rest: Vec<u64> = self
            .unsettled
            .iter()
            .filter(|(_, due)| **due)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in rest {
            self.unsettled.remove(&tag);
            acks.single.push(tag);
        }
        acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(tags: std::ops::RangeInclusive<u64>) -> SettleBook {
        let mut book = SettleBook::new();
        for tag in tags {
            book.delivered(tag);
        }
        book
    }

    #[test]
    fn a_due_prefix_is_one_multiple_ack() {
        let mut book = book(1..=5);
        for tag in 1..=5 {
            book.due(tag);
        }
        assert_eq!(
            book.take_acks(),
            Acks {
                multiple_up_to: Some(5),
                single: vec![]
            }
        );
        assert_eq!(book.unsettled(), 0);
        assert_eq!(book.take_acks(), Acks::default());
    }

    #[test]
    fn a_held_back_delivery_is_never_covered() {
        let mut book = book(1..=6);
        // 3 is held back beyond a gap; 4..=6 are duplicates, due at once.
        for tag in [1, 2, 4, 5, 6] {
            book.due(tag);
        }
        assert_eq!(
            book.take_acks(),
            Acks {
                multiple_up_to: Some(2),
                single: vec![4, 5, 6]
            }
        );
        assert_eq!(book.unsettled(), 1);
        // The gap closes: 3 alone is due.
        book.due(3);
        assert_eq!(
            book.take_acks(),
            Acks {
                multiple_up_to: None,
                single: vec![3]
            }
        );
    }

    #[test]
    fn deliveries_settled_alone_are_left_out_and_unknown_tags_ignored() {
        let mut book = book(1..=4);
        book.settled_alone(2); // nacked for redelivery
        book.due(99);
        for tag in [1, 3, 4] {
            book.due(tag);
        }
        assert_eq!(
            book.take_acks(),
            Acks {
                multiple_up_to: Some(4),
                single: vec![]
            }
        );
    }

    #[test]
    fn nothing_due_sends_nothing() {
        let mut book = book(1..=3);
        assert_eq!(book.take_acks(), Acks::default());
        assert_eq!(book.unsettled(), 3);
    }
}
