//! One room's numbered events delivered in their order, whatever order they
//! arrive in: the seqs of its messages, or the revisions of its edits and
//! deletions. With several servers writing one room (`--bus`), a server
//! learns of the room's events from its own writer and from the bus, and
//! the two can interleave out of order; a lost bus message leaves a gap.
//!
//! [`Order`] holds what arrived ahead of a gap until the gap is filled
//! (by the bus, late, or from the database by the hub). It does no I/O and
//! knows nothing of time: the hub decides when a gap has lasted long enough
//! to be filled from the store.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Range;

/// Events numbered from 1 with no gap, released in order.
#[derive(Debug)]
pub struct Order<T> {
    /// The number of the next event to release; `None` until the room's
    /// position is known ([`Order::start`]).
    next: Option<u64>,
    /// Events ahead of `next`, by number.
    pending: BTreeMap<u64, T>,
}

/// What an offered event does.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered<T> {
    /// Released now, with the events it made contiguous, in order.
    Released(Vec<T>),
    /// Held until the events before it arrive (or until the start).
    Held,
    /// Already released, or before the start: it comes back to the caller.
    Old(T),
}

impl<T> Default for Order<T> {
    fn default() -> Self {
        Order {
            next: None,
            pending: BTreeMap::new(),
        }
    }
}

impl<T> Order<T> {
    /// Whether the position is known.
    pub fn started(&self) -> bool {
        self.next.is_some()
    }

    /// The number of the next event to release.
    pub fn next(&self) -> Option<u64> {
        self.next
    }

    /// Events held, waiting for a gap or the start.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Sets the position: every event up to `last` is released already
    /// (the history holds it). Returns the held events that follow it,
    /// released, and those it makes old, in order.
    pub fn start(&mut self, last: u64) -> (Vec<T>, Vec<T>) {
        let next = last.saturating_add(1);
        self.next = Some(next);
        let later = self.pending.split_off(&next);
        let old = std::mem::replace(&mut self.pending, later)
            .into_values()
            .collect();
        (self.release(), old)
    }

    /// Offers event `n`. An event already held keeps its first copy (the
    /// local one, which may carry a confirmation), and `item` is dropped.
    pub fn offer(&mut self, n: u64, item: T) -> Offered<T> {
        match self.next {
            Some(next) if n < next => Offered::Old(item),
            Some(next) if n == next => {
                self.next = Some(next + 1);
                let mut released = vec![item];
                released.extend(self.release());
                Offered::Released(released)
            }
            _ => {
                if let Entry::Vacant(slot) = self.pending.entry(n) {
                    slot.insert(item);
                }
                Offered::Held
            }
        }
    }

    /// The numbers missing before the first held event, if any are.
    pub fn missing(&self) -> Option<Range<u64>> {
        let next = self.next?;
        let (&first, _) = self.pending.first_key_value()?;
        Some(next..first)
    }

    /// Forgets the position and everything held (to start again), returning
    /// what was held.
    pub fn reset(&mut self) -> Vec<T> {
        self.next = None;
        std::mem::take(&mut self.pending).into_values().collect()
    }

    /// Releases the held events that follow `next` without a gap.
    fn release(&mut self) -> Vec<T> {
        let mut released = Vec::new();
        while let Some(next) = self.next
            && let Some(item) = self.pending.remove(&next)
        {
            released.push(item);
            self.next = Some(next + 1);
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_held_until_the_start_and_released_after_it() {
        let mut order = Order::default();
        assert_eq!(order.offer(5, "e5"), Offered::Held);
        assert_eq!(order.offer(7, "e7"), Offered::Held);
        assert_eq!(order.offer(3, "e3"), Offered::Held);
        assert!(order.missing().is_none(), "no position, no gap");
        let (released, old) = order.start(4);
        assert_eq!(released, vec!["e5"]);
        assert_eq!(old, vec!["e3"]);
        assert_eq!(order.missing(), Some(6..7));
        assert_eq!(order.offer(6, "e6"), Offered::Released(vec!["e6", "e7"]));
        assert_eq!(order.next(), Some(8));
        assert_eq!(order.held(), 0);
    }

    #[test]
    fn out_of_order_events_come_out_in_order_and_repeats_are_old() {
        let mut order = Order::default();
        order.start(0);
        assert_eq!(order.offer(2, "b"), Offered::Held);
        assert_eq!(order.offer(3, "c"), Offered::Held);
        assert_eq!(order.missing(), Some(1..2));
        assert_eq!(order.offer(1, "a"), Offered::Released(vec!["a", "b", "c"]));
        assert_eq!(order.offer(2, "b again"), Offered::Old("b again"));
        assert!(order.missing().is_none());
    }

    #[test]
    fn the_first_copy_of_a_held_event_is_kept() {
        let mut order = Order::default();
        order.start(0);
        assert_eq!(order.offer(2, "local"), Offered::Held);
        assert_eq!(order.offer(2, "from the store"), Offered::Held);
        assert_eq!(order.offer(1, "a"), Offered::Released(vec!["a", "local"]));
    }

    #[test]
    fn a_reset_gives_back_what_was_held() {
        let mut order = Order::default();
        order.start(10);
        order.offer(13, "x");
        assert_eq!(order.reset(), vec!["x"]);
        assert!(!order.started());
        assert_eq!(order.offer(11, "y"), Offered::Held);
    }
}
