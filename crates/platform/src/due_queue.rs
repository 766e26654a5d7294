//! (when, trade) pairs in time order, for the auto-confirmation of shipped
//! trades parked in the archive: after a Double Eleven, tens of millions.
//! Trades ship in clock order and wait the same days, so nearly every pair
//! comes after the last one: those are appended to sorted chunks (16 bytes
//! a pair, where an ordered set spends ~32), the rare one that does not (a
//! trade brought back and parked again) goes to a small ordered set. A
//! removed pair is marked, not moved, and dropped when the front passes it,
//! or sooner where a buyer's confirmation removed a quarter of a chunk (a
//! third of a day's escrow trades are confirmed before their time: 0.5 GB
//! held for days at a full day's end).

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::units::{Timestamp, TradeNumber};

/// Pairs a chunk: growing the queue never copies more than one chunk.
const CHUNK_PAIRS: usize = 1 << 16;
/// Marks a removed pair in its trade number (numbers stay far below).
const REMOVED: u64 = 1 << 63;
/// A removal at a position that is a multiple of this counts its chunk's
/// removed pairs (a function of the state alone, so a replay compacts the
/// same chunks as the run it replays)...
const COMPACT_CHECK_EVERY: usize = 1 << 10;
/// ...and drops them if they are at least 1/this of the chunk.
const COMPACT_SHARE: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Pair {
    due: u64,
    /// The trade number, with [`REMOVED`] set once removed.
    number: u64,
}

impl Pair {
    fn key(self) -> (u64, u64) {
        (self.due, self.number & !REMOVED)
    }
    fn is_removed(self) -> bool {
        self.number & REMOVED != 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct DueQueue {
    /// Sorted by key throughout; the first chunk from `head` on, the others whole.
    chunks: VecDeque<Vec<Pair>>,
    /// Each chunk's first key, side by side: finding the chunk touches one
    /// small array, not every chunk.
    firsts: VecDeque<(u64, u64)>,
    head: usize,
    out_of_order: BTreeSet<(u64, u64)>,
}

impl DueQueue {
    pub(crate) fn insert(&mut self, due: Timestamp, trade: TradeNumber) {
        let due = due.nanos();
        let number = trade.get();
        assert!(number < REMOVED, "trade number {number}");
        let last = self.chunks.back().and_then(|chunk| chunk.last()).map(|pair| pair.key());
        if last.is_some_and(|last| last >= (due, number)) {
            self.out_of_order.insert((due, number));
            return;
        }
        if self.chunks.back().is_none_or(|chunk| chunk.len() == CHUNK_PAIRS) {
            self.chunks.push_back(Vec::with_capacity(CHUNK_PAIRS));
            self.firsts.push_back((due, number));
        }
        if let Some(chunk) = self.chunks.back_mut() {
            chunk.push(Pair { due, number });
        }
    }

    /// Removes the pair if it is here.
    pub(crate) fn remove(&mut self, due: Timestamp, trade: TradeNumber) {
        let due = due.nanos();
        let number = trade.get();
        if self.out_of_order.remove(&(due, number)) {
            return;
        }
        let key = (due, number);
        // A tick removes the pairs it brings back in order, from the front:
        // no search for those (a guess by proportion misses where shipping
        // was bursty, and each probe is a cache miss).
        if let Some(front) = self.chunks.front_mut().and_then(|chunk| chunk.get_mut(self.head))
            && front.key() == key
        {
            front.number |= REMOVED;
            self.drop_removed_front();
            return;
        }
        let chunk = self.firsts.partition_point(|&first| first <= key);
        let Some(chunk) = chunk.checked_sub(1) else { return };
        let head = if chunk == 0 { self.head } else { 0 };
        let Some(pairs) = self.chunks.get_mut(chunk) else { return };
        if let Some(at) = search(&pairs[head..], key) {
            pairs[head + at].number |= REMOVED;
            let inner = chunk > 0 && chunk + 1 < self.chunks.len();
            if inner && (head + at) % COMPACT_CHECK_EVERY == 0 {
                self.compact(chunk);
            }
        }
        self.drop_removed_front();
    }

    /// Drops the removed pairs of an inner chunk (neither the front, read
    /// from `head`, nor the back, appended to) if they are many. Its first
    /// key in `firsts` may then be below its first pair: still a bound.
    fn compact(&mut self, chunk: usize) {
        let Some(pairs) = self.chunks.get_mut(chunk) else { return };
        let removed = pairs.iter().filter(|pair| pair.is_removed()).count();
        if removed * COMPACT_SHARE >= pairs.len() {
            pairs.retain(|pair| !pair.is_removed());
            pairs.shrink_to_fit();
        }
    }

    fn drop_removed_front(&mut self) {
        while let Some(first) = self.chunks.front() {
            match first.get(self.head) {
                Some(pair) if pair.is_removed() => self.head += 1,
                Some(_) => return,
                None => {
                    self.chunks.pop_front();
                    self.firsts.pop_front();
                    self.head = 0;
                }
            }
        }
    }

    /// The earliest due time.
    pub(crate) fn first_due(&self) -> Option<Timestamp> {
        let sorted = self.chunks.front().and_then(|chunk| chunk.get(self.head)).map(|pair| pair.due);
        let other = self.out_of_order.first().map(|&(due, _)| due);
        sorted.into_iter().chain(other).min().map(Timestamp::from_nanos)
    }

    /// The earliest (due, number) pair.
    pub(crate) fn first_key(&self) -> Option<(Timestamp, TradeNumber)> {
        let sorted = self.chunks.front().and_then(|chunk| chunk.get(self.head)).map(|pair| pair.key());
        let (due, number) = sorted.into_iter().chain(self.out_of_order.first().copied()).min()?;
        Some((Timestamp::from_nanos(due), TradeNumber::new(number)))
    }

    /// The sorted part's pairs not removed, due at or before `now` (nanoseconds), in order.
    fn sorted_due(&self, now: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .flat_map(|(at, chunk)| chunk[if at == 0 { self.head } else { 0 }..].iter())
            .take_while(move |pair| pair.due <= now)
            .filter(|pair| !pair.is_removed())
            .map(|pair| pair.key())
    }

    /// How many trades are due at or before `now`, counting at most `limit`.
    pub(crate) fn count_due_up_to(&self, now: Timestamp, limit: usize) -> usize {
        let now = now.nanos();
        let sorted = self.sorted_due(now).take(limit).count();
        let other = self.out_of_order.range(..=(now, u64::MAX)).take(limit).count();
        (sorted + other).min(limit)
    }

    /// The first `limit` trades due at or before `now`, in (due, number)
    /// order; they stay until removed.
    pub(crate) fn due_up_to(&self, now: Timestamp, limit: usize) -> Vec<TradeNumber> {
        let now = now.nanos();
        let mut sorted = self.sorted_due(now).peekable();
        let mut other = self.out_of_order.range(..=(now, u64::MAX)).copied().peekable();
        let mut due = Vec::new();
        loop {
            let next = match (sorted.peek(), other.peek()) {
                (Some(a), Some(b)) if a <= b => sorted.next(),
                (Some(_), Some(_)) | (None, Some(_)) => other.next(),
                (Some(_), None) => sorted.next(),
                (None, None) => return due,
            };
            due.extend(next.map(|(_, number)| TradeNumber::new(number)));
            if due.len() == limit {
                return due;
            }
        }
    }
}

/// Where `key` is in `pairs` (sorted by key). Due times are clock times
/// of shipping plus the same days, about as dense through a chunk as the
/// day's shipping: guesses by proportion close in on the pair, where a
/// binary search takes 16 steps through a megabyte (removals were 2.6% of
/// the writer's time with it) and one guess over the chunk, then a search
/// outward, two dozen (12% of the writer's time in the settlement).
fn search(pairs: &[Pair], key: (u64, u64)) -> Option<usize> {
    let at = search::partition_point_interpolated(pairs, key.0, |pair| pair.due, |pair| pair.key() < key);
    (pairs.get(at)?.key() == key).then_some(at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Insert(u64, u64),
        /// Remove the nth pair inserted (if still there).
        Remove(usize),
        /// Take what is due by this time out, as a tick does.
        Tick(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..500u64, 1..50u64).prop_map(|(due, number)| Step::Insert(due, number)),
            2 => any::<usize>().prop_map(Step::Remove),
            1 => (0..500u64).prop_map(Step::Tick),
        ]
    }

    proptest! {
        /// The queue answers as an ordered set of pairs does, whatever the
        /// order of inserts (mostly increasing, as in a day, or not).
        #[test]
        fn it_agrees_with_an_ordered_set(steps in proptest::collection::vec(step(), 0..300), rising in any::<bool>()) {
            let mut queue = DueQueue::default();
            let mut model = BTreeSet::new();
            let mut inserted = Vec::new();
            let mut clock = 0;
            for step in steps {
                match step {
                    Step::Insert(due, number) => {
                        let due = if rising { clock += due % 7; clock } else { due };
                        if model.insert((due, number)) {
                            queue.insert(Timestamp::from_nanos(due), TradeNumber::new(number));
                            inserted.push((due, number));
                        }
                    }
                    Step::Remove(nth) if !inserted.is_empty() => {
                        let (due, number) = inserted[nth % inserted.len()];
                        model.remove(&(due, number));
                        queue.remove(Timestamp::from_nanos(due), TradeNumber::new(number));
                    }
                    Step::Remove(_) => {}
                    Step::Tick(now) => {
                        let expected: Vec<TradeNumber> = model.range(..=(now, u64::MAX)).map(|&(_, n)| TradeNumber::new(n)).collect();
                        prop_assert_eq!(queue.due_up_to(Timestamp::from_nanos(now), usize::MAX), expected.clone());
                        // A limit takes the first ones, in order.
                        let limit = expected.len() / 2 + 1;
                        prop_assert_eq!(queue.count_due_up_to(Timestamp::from_nanos(now), usize::MAX), expected.len());
                        prop_assert_eq!(queue.count_due_up_to(Timestamp::from_nanos(now), limit), limit.min(expected.len()));
                        prop_assert_eq!(queue.due_up_to(Timestamp::from_nanos(now), limit), expected.iter().copied().take(limit).collect::<Vec<_>>());
                        let due: Vec<_> = model.range(..=(now, u64::MAX)).copied().collect();
                        for (due, number) in due {
                            model.remove(&(due, number));
                            queue.remove(Timestamp::from_nanos(due), TradeNumber::new(number));
                        }
                    }
                }
                prop_assert_eq!(queue.first_due(), model.first().map(|&(due, _)| Timestamp::from_nanos(due)));
                prop_assert_eq!(queue.first_key(), model.first().map(|&(due, n)| (Timestamp::from_nanos(due), TradeNumber::new(n))));
            }
            prop_assert_eq!(queue.due_up_to(Timestamp::MAX, usize::MAX), model.iter().map(|&(_, n)| TradeNumber::new(n)).collect::<Vec<_>>());
        }
    }

    proptest! {
        /// The search by proportion finds what a binary search finds, however
        /// uneven the due times (equal ones, jumps).
        #[test]
        fn search_agrees_with_binary_search(
            gaps in proptest::collection::vec(prop_oneof![3 => 0..3u64, 1 => 0..1_000_000u64], 0..300),
            probe in 0..2_000_000u64,
        ) {
            let mut due = 0;
            let pairs: Vec<Pair> = gaps.iter().enumerate().map(|(at, gap)| {
                due += gap;
                Pair { due, number: at as u64 + 1 }
            }).collect();
            for (at, pair) in pairs.iter().enumerate() {
                prop_assert_eq!(search(&pairs, pair.key()), Some(at));
                prop_assert_eq!(search(&pairs, (pair.due, 0)), None);
            }
            let expected = pairs.binary_search_by_key(&(probe, 1), |pair| pair.key()).ok();
            prop_assert_eq!(search(&pairs, (probe, 1)), expected);
        }
    }

    #[test]
    fn a_day_of_pairs_in_order_fills_chunks_and_empties_them() {
        let mut queue = DueQueue::default();
        let count = CHUNK_PAIRS as u64 * 2 + 5;
        for number in 1..=count {
            queue.insert(Timestamp::from_nanos(number / 3), TradeNumber::new(number));
        }
        assert_eq!(queue.chunks.len(), 3);
        assert!(queue.out_of_order.is_empty(), "in order: none beside the chunks");
        queue.insert(Timestamp::from_nanos(0), TradeNumber::new(count + 1));
        assert_eq!(queue.out_of_order.len(), 1, "behind the last: beside them");
        for number in 1..=count {
            queue.remove(Timestamp::from_nanos(number / 3), TradeNumber::new(number));
        }
        assert!(queue.chunks.is_empty(), "removed from the front: dropped");
        assert_eq!(queue.due_up_to(Timestamp::MAX, usize::MAX), vec![TradeNumber::new(count + 1)]);
        let bytes = postcard::to_allocvec(&queue).unwrap();
        assert_eq!(postcard::from_bytes::<DueQueue>(&bytes).unwrap(), queue);
    }

    #[test]
    fn an_inner_chunk_a_quarter_removed_lets_them_go() {
        let mut queue = DueQueue::default();
        let count = CHUNK_PAIRS as u64 * 3;
        for number in 1..=count {
            queue.insert(Timestamp::from_nanos(number * 10), TradeNumber::new(number));
        }
        // A third of the middle chunk's pairs, as buyers confirm.
        let middle = CHUNK_PAIRS as u64 + 1..=CHUNK_PAIRS as u64 * 2;
        for number in middle.clone().filter(|number| number % 3 == 0) {
            queue.remove(Timestamp::from_nanos(number * 10), TradeNumber::new(number));
        }
        let kept = middle.clone().filter(|number| number % 3 != 0).count();
        assert!(queue.chunks[1].len() < CHUNK_PAIRS, "compacted: {} pairs", queue.chunks[1].len());
        assert!(queue.chunks[1].len() - kept < CHUNK_PAIRS / COMPACT_SHARE, "most removed pairs gone");
        // The front and back chunks keep theirs until passed.
        for number in (1..=CHUNK_PAIRS as u64).filter(|number| number % 3 == 0) {
            queue.remove(Timestamp::from_nanos(number * 10), TradeNumber::new(number));
        }
        assert_eq!(queue.chunks[0].len(), CHUNK_PAIRS);
        // Every pair left is still found, in order, and can still be removed.
        let expected: Vec<_> = (1..=count)
            .filter(|number| number % 3 != 0 || *number > CHUNK_PAIRS as u64 * 2)
            .map(TradeNumber::new)
            .collect();
        assert_eq!(queue.due_up_to(Timestamp::MAX, usize::MAX), expected);
        for number in middle.filter(|number| number % 3 != 0) {
            queue.remove(Timestamp::from_nanos(number * 10), TradeNumber::new(number));
        }
        assert_eq!(queue.due_up_to(Timestamp::MAX, usize::MAX).len(), expected.len() - kept);
        let bytes = postcard::to_allocvec(&queue).unwrap();
        assert_eq!(postcard::from_bytes::<DueQueue>(&bytes).unwrap(), queue);
    }
}
