//! Bounded history rings with dropped counters.
//!
//! A ring is allocated to its full size and its memory touched when it is built, so a long
//! soak neither grows it nor pages it in gradually (the monitor's resident memory is flat from
//! the first sample); when the ring is full at insertion the oldest entry is evicted and the
//! dropped counter goes up.

use std::collections::VecDeque;

/// A fixed-capacity ring that evicts its oldest entry and counts the evictions.
#[derive(Debug, Clone)]
pub struct BoundedHistory<T> {
    ring: VecDeque<T>,
    limit: usize,
    dropped: u64,
}

impl<T: Copy + Default> BoundedHistory<T> {
    /// A ring holding at most `limit` entries (`limit` ≥ 1, validated by the caller's config).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        let mut ring = VecDeque::with_capacity(limit);
        ring.resize(limit, T::default());
        ring.clear();
        BoundedHistory {
            ring,
            limit,
            dropped: 0,
        }
    }
}

impl<T> BoundedHistory<T> {
    /// Adds an entry, evicting the oldest one when the ring is full.
    pub fn push(&mut self, value: T) {
        if self.ring.len() == self.limit {
            self.dropped += 1;
            self.ring.pop_front();
        }
        self.ring.push_back(value);
    }

    /// Entries kept.
    pub fn retained(&self) -> u64 {
        self.ring.len() as u64
    }

    /// Entries evicted so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The window size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Oldest to newest.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.ring.iter()
    }

    /// Newest entry.
    pub fn last(&self) -> Option<&T> {
        self.ring.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn retained_plus_dropped_equals_pushed(limit in 1usize..64, pushes in 0usize..500) {
            let mut h = BoundedHistory::new(limit);
            for i in 0..pushes {
                h.push(i);
            }
            prop_assert_eq!(h.retained() + h.dropped(), pushes as u64);
            prop_assert_eq!(h.retained(), pushes.min(limit) as u64);
            // The newest entries are the ones kept, in order.
            let kept: Vec<usize> = h.iter().copied().collect();
            let expected: Vec<usize> = (pushes.saturating_sub(limit)..pushes).collect();
            prop_assert_eq!(kept, expected);
        }
    }

    #[test]
    fn ring_never_reallocates_past_its_window() {
        let mut h = BoundedHistory::new(10);
        let cap = h.ring.capacity();
        for i in 0..1_000 {
            h.push(i);
        }
        assert_eq!(h.ring.capacity(), cap);
        assert_eq!(h.dropped(), 990);
        assert_eq!(h.last(), Some(&999));
    }
}
