//! What one receiver saw of one publisher: each publisher numbers its
//! messages 1, 2, 3...; a receiver must see each number exactly once, in
//! order. Costs one comparison per message in the normal case; gaps are
//! kept as ranges, so a late arrival is told apart from a duplicate.

/// Delivery bookkeeping of one (receiver, publisher) pair.
#[derive(Clone, Debug, Default)]
pub struct Track {
    /// The highest counter seen (0: none yet).
    last: u64,
    /// Counters skipped so far, as half-open ranges `[from, to)`.
    missing: Vec<(u64, u64)>,
}

/// What an arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next one: `last + 1`.
    InOrder,
    /// New, but not `last + 1` (after a gap, or filling one late).
    OutOfOrder,
    /// Seen before.
    Duplicate,
}

impl Track {
    #[inline]
    pub fn arrive(&mut self, counter: u64) -> Arrival {
        if counter == self.last + 1 {
            self.last = counter;
            return Arrival::InOrder;
        }
        if counter > self.last {
            self.missing.push((self.last + 1, counter));
            self.last = counter;
            return Arrival::OutOfOrder;
        }
        // At or below the highest seen: new only if inside a gap.
        match self
            .missing
            .iter()
            .position(|&(from, to)| from <= counter && counter < to)
        {
            Some(i) => {
                let (from, to) = self.missing[i];
                self.missing.swap_remove(i);
                if from < counter {
                    self.missing.push((from, counter));
                }
                if counter + 1 < to {
                    self.missing.push((counter + 1, to));
                }
                Arrival::OutOfOrder
            }
            None => Arrival::Duplicate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Arrival::*, Track};

    #[test]
    fn in_order_gaps_late_arrivals_and_duplicates() {
        let mut t = Track::default();
        assert_eq!(t.arrive(1), InOrder);
        assert_eq!(t.arrive(2), InOrder);
        assert_eq!(t.arrive(2), Duplicate);
        assert_eq!(t.arrive(5), OutOfOrder); // 3, 4 missing
        assert_eq!(t.arrive(6), InOrder);
        assert_eq!(t.arrive(4), OutOfOrder); // late, new
        assert_eq!(t.arrive(4), Duplicate);
        assert_eq!(t.arrive(3), OutOfOrder);
        assert_eq!(t.arrive(3), Duplicate);
        assert_eq!(t.arrive(1), Duplicate);
        assert_eq!(t.arrive(7), InOrder);
    }

    #[test]
    fn first_message_missing() {
        let mut t = Track::default();
        assert_eq!(t.arrive(2), OutOfOrder);
        assert_eq!(t.arrive(1), OutOfOrder);
        assert_eq!(t.arrive(3), InOrder);
    }
}
