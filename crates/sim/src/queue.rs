//! The workload's follow-ups, waiting for their time: a calendar of
//! one-second buckets, each sorted when its turn comes.
//!
//! A binary heap of a full day's waiting follow-ups (tens of millions at
//! midnight) missed the cache at every level of every pop: a tenth of all
//! the CPU time of a `double11` day, on the core the writer shares. Here a
//! push appends to its second's bucket and a pop reads the open bucket in
//! order; a bucket is sorted once, when it opens (a few thousand entries).
//!
//! An entry keeps its time within its bucket's second (32 bits: the
//! bucket's place gives the rest), so that with an item of 32-bit words
//! (the workload's follow-ups) it takes 20 bytes, not 24.
//!
//! Order is by time, then by push (a stable sort keeps pushes to a bucket in
//! their order, and a push into the open bucket goes after the entries due
//! at the same time): the same as a heap ordered by (time, push serial).

use std::collections::VecDeque;

/// The width of a bucket: a second of simulated time.
pub const BUCKET_NANOS: u64 = 1_000_000_000;
const _: () = assert!(BUCKET_NANOS <= 1 << 32, "a time within a bucket fits 32 bits");
/// How far ahead of the open bucket a push may be (a hundred days): the
/// buckets between are allocated, so a time far off is a bug, not a wait.
pub const HORIZON_BUCKETS: u64 = 100 * 24 * 3_600;

/// Entries ordered by time, then by push; `T` is what waits.
pub struct TimeQueue<T> {
    /// Bucket `first + i` holds the entries due in its second, each with
    /// its nanoseconds into that second.
    buckets: VecDeque<Vec<(u32, T)>>,
    first: u64,
    /// Whether the front bucket is sorted (it is open: reading from `next`).
    front_sorted: bool,
    next: usize,
    len: usize,
}

impl<T: Copy> Default for TimeQueue<T> {
    fn default() -> Self {
        TimeQueue { buckets: VecDeque::new(), first: 0, front_sorted: false, next: 0, len: 0 }
    }
}

impl<T: Copy> TimeQueue<T> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, at: u64, item: T) {
        let bucket = at / BUCKET_NANOS;
        if self.len == 0 {
            // Whatever was read is done with: the calendar starts again here.
            self.buckets.clear();
            (self.first, self.front_sorted, self.next) = (bucket, false, 0);
        }
        self.len += 1;
        if bucket < self.first {
            self.extend_back_to(bucket);
        }
        let index = bucket - self.first;
        assert!(index < HORIZON_BUCKETS, "a follow-up {index} seconds after the next one waiting");
        let index = index as usize;
        let offset = (at % BUCKET_NANOS) as u32;
        if index == 0 && self.front_sorted {
            // Into the open bucket, after everything due no later (rare:
            // only when nothing waits for the next minute).
            let front = &mut self.buckets[0];
            let place = self.next + front[self.next..].partition_point(|&(due, _)| due <= offset);
            front.insert(place, (offset, item));
            return;
        }
        if self.buckets.len() <= index {
            self.buckets.resize_with(index + 1, Vec::new);
        }
        self.buckets[index].push((offset, item));
    }

    /// Adds empty buckets before the first, down to `bucket` (the calendar
    /// began at a later second than this one); the open bucket, if any,
    /// becomes a closed one holding what was not read of it.
    fn extend_back_to(&mut self, bucket: u64) {
        assert!(
            self.first - bucket < HORIZON_BUCKETS,
            "a follow-up {} seconds before the next one",
            self.first - bucket
        );
        if self.front_sorted {
            if let Some(front) = self.buckets.front_mut() {
                front.drain(..self.next);
            }
            (self.front_sorted, self.next) = (false, 0);
        }
        for _ in bucket..self.first {
            self.buckets.push_front(Vec::new());
        }
        self.first = bucket;
    }

    /// The time of the first entry.
    pub fn peek_at(&mut self) -> Option<u64> {
        self.open().map(|(at, _)| at)
    }

    pub fn pop(&mut self) -> Option<(u64, T)> {
        let first = self.open()?;
        self.next += 1;
        self.len -= 1;
        Some(first)
    }

    /// The first entry, its bucket opened (sorted) if it was not.
    fn open(&mut self) -> Option<(u64, T)> {
        loop {
            let front = self.buckets.front_mut()?;
            if self.next < front.len() {
                if !self.front_sorted {
                    // Stable: entries due at the same time stay in push order.
                    front.sort_by_key(|&(offset, _)| offset);
                    self.front_sorted = true;
                }
                let (offset, item) = front[self.next];
                return Some((self.first * BUCKET_NANOS + u64::from(offset), item));
            }
            self.buckets.pop_front();
            self.first += 1;
            self.front_sorted = false;
            self.next = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        /// Push this far from the last time popped (negative: earlier).
        Push(i64),
        Pop,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            // Ties, the same bucket, the next ones, far off; now and then earlier.
            3 => (0..3i64).prop_map(Step::Push),
            3 => (0..3 * BUCKET_NANOS as i64).prop_map(Step::Push),
            1 => (0..1_000 * BUCKET_NANOS as i64).prop_map(Step::Push),
            1 => (-2 * BUCKET_NANOS as i64..0).prop_map(Step::Push),
            4 => Just(Step::Pop),
        ]
    }

    proptest! {
        /// The queue gives what a heap ordered by (time, push) gives.
        #[test]
        fn it_agrees_with_a_heap(start in 0..10 * BUCKET_NANOS, steps in prop::collection::vec(step(), 0..400)) {
            let mut queue = TimeQueue::default();
            let mut model = BinaryHeap::new();
            let mut now = start;
            for (serial, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Push(offset) => {
                        let at = now.saturating_add_signed(offset);
                        queue.push(at, serial);
                        model.push(Reverse((at, serial)));
                    }
                    Step::Pop => {
                        let expected = model.pop().map(|Reverse(entry)| entry);
                        prop_assert_eq!(queue.peek_at(), expected.map(|(at, _)| at));
                        prop_assert_eq!(queue.pop(), expected);
                        if let Some((at, _)) = expected {
                            now = at;
                        }
                    }
                }
                prop_assert_eq!(queue.len(), model.len());
            }
            while let Some(Reverse(expected)) = model.pop() {
                prop_assert_eq!(queue.pop(), Some(expected));
            }
            prop_assert!(queue.pop().is_none() && queue.is_empty());
        }
    }

    /// A push before the first second waiting extends the calendar back:
    /// a day whose first follow-up is hours off does not pile the ones
    /// before it into one bucket (each push there was a copy of it).
    #[test]
    fn earlier_pushes_get_buckets_of_their_own() {
        let mut queue = TimeQueue::default();
        for second in (0..1_000u64).rev() {
            queue.push(second * BUCKET_NANOS + 7, second);
            // The open bucket too: peeking opens it.
            assert_eq!(queue.peek_at(), Some(second * BUCKET_NANOS + 7));
        }
        assert_eq!(queue.buckets.iter().map(Vec::len).max(), Some(1));
        for second in 0..1_000u64 {
            assert_eq!(queue.pop(), Some((second * BUCKET_NANOS + 7, second)));
        }
    }

    #[test]
    #[should_panic(expected = "seconds after the next one waiting")]
    fn a_time_beyond_the_horizon_is_a_bug() {
        let mut queue = TimeQueue::default();
        queue.push(0, ());
        queue.push(HORIZON_BUCKETS * BUCKET_NANOS, ());
    }
}
