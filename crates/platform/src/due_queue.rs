//! (when, trade) pairs in time order, for the auto-confirmation of shipped
//! trades parked in the archive: after a Double Eleven, tens of millions.
//! Trades ship in clock order and wait the same days, so nearly every pair
//! comes after the last one: those are appended to sorted chunks, the rare
//! one that does not (a trade brought back and parked again) goes to a
//! small ordered set. A removed pair is marked, not moved, and dropped when
//! the front passes it, or sooner where a buyer's confirmation removed a
//! quarter of a chunk (a third of a day's escrow trades are confirmed
//! before their time: 0.5 GB held for days at a full day's end).
//!
//! A pair takes 8 bytes (an ordered set spends ~32): its due time as 27
//! bits from its chunk's first (a chunk ends after 134 ms of due times or
//! 65,536 pairs), the trade number's 36 bits (all a trade may have) and
//! the removed mark. A chunk serializes as the (due, number) pairs it
//! stands for, each number with bit 63 set once removed.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::reference_index::NUMBER_MAX;
use crate::units::{Timestamp, TradeNumber};

/// Pairs a chunk: growing the queue never copies more than one chunk.
const CHUNK_PAIRS: usize = 1 << 16;
/// Bits of a pair's due time after its chunk's first.
const DUE_BITS: u32 = 27;
/// Where the due time starts in a packed pair (the number and the mark below).
const DUE_SHIFT: u32 = 64 - DUE_BITS;
/// The removed mark: a packed pair's lowest bit.
const REMOVED_BIT: u64 = 1;
/// The removed mark in a serialized pair's number (numbers stay far below).
const REMOVED: u64 = 1 << 63;
/// A removal at a position that is a multiple of this counts its chunk's
/// removed pairs (a function of the state alone, so a replay compacts the
/// same chunks as the run it replays)...
const COMPACT_CHECK_EVERY: usize = 1 << 10;
/// ...and drops them if they are at least 1/this of the chunk.
const COMPACT_SHARE: usize = 4;

/// A pair as serialized: (due, number), the number with [`REMOVED`] set
/// once removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Pair {
    due: u64,
    number: u64,
}

/// Sorted pairs due within 2^27 ns of the first's. Equal chunks hold the
/// same pairs, whatever their bases (a chunk read back from its encoding
/// has its first pair's due time as base, which may be later than the one
/// it was made with).
#[derive(Clone, Debug, Default)]
struct Chunk {
    /// The first pair's due time, when the chunk was made.
    base_due: u64,
    /// (due − base_due) << DUE_SHIFT | number << 1 | removed, sorted.
    pairs: Vec<u64>,
}

impl Chunk {
    /// The pair packed, if it fits this chunk.
    fn pack(&self, due: u64, number: u64) -> Option<u64> {
        let since = due.checked_sub(self.base_due).filter(|&since| since < 1 << DUE_BITS)?;
        (number <= NUMBER_MAX).then_some(since << DUE_SHIFT | number << 1)
    }

    fn key(&self, packed: u64) -> (u64, u64) {
        (self.base_due + (packed >> DUE_SHIFT), (packed >> 1) & NUMBER_MAX)
    }

    /// The pairs as encoded.
    fn encoded(&self) -> impl Iterator<Item = Pair> + '_ {
        self.pairs.iter().map(|&packed| {
            let (due, number) = self.key(packed);
            Pair { due, number: if is_removed(packed) { number | REMOVED } else { number } }
        })
    }

    fn last_key(&self) -> Option<(u64, u64)> {
        self.pairs.last().map(|&packed| self.key(packed))
    }

    /// Where `key` is among the pairs from `from` on, if there.
    fn find(&self, from: usize, key: (u64, u64)) -> Option<usize> {
        let target = self.pack(key.0, key.1)? >> 1;
        let pairs = self.pairs.get(from..)?;
        let at = search(pairs, target);
        (pairs.get(at)? >> 1 == target).then_some(from + at)
    }

    fn from_pairs(pairs: &[Pair]) -> Option<Chunk> {
        let mut chunk = Chunk { base_due: pairs.first().map_or(0, |pair| pair.due), pairs: Vec::new() };
        chunk.pairs.reserve_exact(pairs.len());
        for pair in pairs {
            let packed = chunk.pack(pair.due, pair.number & !REMOVED)?;
            let removed = if pair.number & REMOVED != 0 { REMOVED_BIT } else { 0 };
            chunk.pairs.push(packed | removed);
        }
        chunk.pairs.is_sorted().then_some(chunk)
    }
}

impl PartialEq for Chunk {
    fn eq(&self, other: &Chunk) -> bool {
        self.pairs.len() == other.pairs.len() && self.encoded().eq(other.encoded())
    }
}

impl Eq for Chunk {}

impl std::hash::Hash for Chunk {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pairs.len().hash(state);
        self.encoded().for_each(|pair| pair.hash(state));
    }
}

fn is_removed(packed: u64) -> bool {
    packed & REMOVED_BIT != 0
}

impl Serialize for Chunk {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.encoded())
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Chunk, D::Error> {
        let pairs = Vec::<Pair>::deserialize(deserializer)?;
        // The first pair's due time is the chunk's base again: the same as
        // when made for the last chunk (the only one that grows; pairs leave
        // an inner chunk only), a bound for the others.
        Chunk::from_pairs(&pairs)
            .ok_or_else(|| serde::de::Error::custom("a due-queue chunk beyond 2^27 ns or unsorted"))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct DueQueue {
    /// Sorted by key throughout; the first chunk from `head` on, the others whole.
    chunks: VecDeque<Chunk>,
    /// Each chunk's first key, side by side: finding the chunk touches one
    /// small array, not every chunk.
    firsts: VecDeque<(u64, u64)>,
    head: usize,
    out_of_order: BTreeSet<(u64, u64)>,
}

impl DueQueue {
    pub(crate) fn insert(&mut self, due: Timestamp, trade: TradeNumber) {
        let key = (due.nanos(), trade.get());
        let last = self.chunks.back().and_then(Chunk::last_key);
        if last.is_some_and(|last| last >= key) || key.1 > NUMBER_MAX {
            self.out_of_order.insert(key);
            return;
        }
        let back = self.chunks.back_mut().filter(|chunk| chunk.pairs.len() < CHUNK_PAIRS);
        if let Some((back, packed)) = back.and_then(|chunk| chunk.pack(key.0, key.1).map(|packed| (chunk, packed))) {
            back.pairs.push(packed);
            return;
        }
        if let Some(full) = self.chunks.back_mut() {
            full.pairs.shrink_to_fit();
        }
        let chunk = Chunk { base_due: key.0, pairs: vec![key.1 << 1] };
        self.chunks.push_back(chunk);
        self.firsts.push_back(key);
    }

    /// Removes the pair if it is here.
    pub(crate) fn remove(&mut self, due: Timestamp, trade: TradeNumber) {
        let key = (due.nanos(), trade.get());
        if self.out_of_order.remove(&key) {
            return;
        }
        // A tick removes the pairs it brings back in order, from the front:
        // no search for those (a guess by proportion misses where shipping
        // was bursty, and each probe is a cache miss).
        if let Some(front) = self.chunks.front_mut()
            && front.pairs.get(self.head).is_some_and(|&packed| front.key(packed) == key)
        {
            front.pairs[self.head] |= REMOVED_BIT;
            self.drop_removed_front();
            return;
        }
        let Some(chunk) = chunk_of(&self.firsts, key) else { return };
        let head = if chunk == 0 { self.head } else { 0 };
        let Some(pairs) = self.chunks.get_mut(chunk) else { return };
        if let Some(at) = pairs.find(head, key) {
            pairs.pairs[at] |= REMOVED_BIT;
            let inner = chunk > 0 && chunk + 1 < self.chunks.len();
            if inner && at % COMPACT_CHECK_EVERY == 0 {
                self.compact(chunk);
            }
        }
        self.drop_removed_front();
    }

    /// Drops the removed pairs of an inner chunk (neither the front, read
    /// from `head`, nor the back, appended to) if they are many. Its first
    /// key in `firsts` may then be below its first pair: still a bound.
    fn compact(&mut self, chunk: usize) {
        let Some(chunk) = self.chunks.get_mut(chunk) else { return };
        let removed = chunk.pairs.iter().filter(|&&packed| is_removed(packed)).count();
        if removed * COMPACT_SHARE >= chunk.pairs.len() {
            chunk.pairs.retain(|&packed| !is_removed(packed));
            chunk.pairs.shrink_to_fit();
        }
    }

    fn drop_removed_front(&mut self) {
        while let Some(first) = self.chunks.front() {
            match first.pairs.get(self.head) {
                Some(&packed) if is_removed(packed) => self.head += 1,
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
        self.first_key().map(|(due, _)| due)
    }

    /// The earliest (due, number) pair.
    pub(crate) fn first_key(&self) -> Option<(Timestamp, TradeNumber)> {
        let front = self.chunks.front();
        let sorted = front.and_then(|chunk| chunk.pairs.get(self.head).map(|&packed| chunk.key(packed)));
        let (due, number) = sorted.into_iter().chain(self.out_of_order.first().copied()).min()?;
        Some((Timestamp::from_nanos(due), TradeNumber::new(number)))
    }

    /// The sorted part's pairs not removed, due at or before `now` (nanoseconds), in order.
    fn sorted_due(&self, now: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .flat_map(|(at, chunk)| {
                let from = if at == 0 { self.head } else { 0 };
                chunk.pairs[from..].iter().map(move |&packed| (chunk.key(packed), is_removed(packed)))
            })
            .take_while(move |&((due, _), _)| due <= now)
            .filter(|&(_, removed)| !removed)
            .map(|(key, _)| key)
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

/// The chunk that would hold `key`: the last whose first key is at or
/// before it. Chunks span at most 134 ms of due times, so a day's parked
/// trades fill hundreds of thousands of them (a handful of pairs each at a
/// tenth of the day's size): a binary search over their first keys took a
/// dozen cache misses a removal, a guess by due time takes a few.
fn chunk_of(firsts: &VecDeque<(u64, u64)>, key: (u64, u64)) -> Option<usize> {
    let (front, back) = firsts.as_slices();
    let search = |firsts: &[(u64, u64)]| {
        search::partition_point_interpolated(firsts, key.0, |&(due, _)| due, |&first| first <= key)
    };
    let after = match back.first() {
        Some(&first) if first <= key => front.len() + search(back),
        _ => search(front),
    };
    after.checked_sub(1)
}

/// Where the pair packed as `target << 1` is, or would go, among `pairs`
/// (packed, sorted). Due times are clock times of shipping plus the same
/// days, about as dense through a chunk as the day's shipping: guesses by
/// proportion close in on the pair, where a binary search takes 16 steps
/// through a chunk (removals were 2.6% of the writer's time with it) and
/// one guess over the chunk, then a search outward, two dozen (12% of the
/// writer's time in the settlement).
fn search(pairs: &[u64], target: u64) -> usize {
    search::partition_point_interpolated(
        pairs,
        target >> (DUE_SHIFT - 1),
        |&packed| packed >> DUE_SHIFT,
        |&packed| packed >> 1 < target,
    )
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
            let mut chunk = Chunk { base_due: 7, pairs: Vec::new() };
            let mut due = 7;
            for (at, gap) in gaps.iter().enumerate() {
                due += gap;
                chunk.pairs.push(chunk.pack(due, at as u64 + 1).unwrap());
            }
            for (at, &packed) in chunk.pairs.iter().enumerate() {
                let (due, number) = chunk.key(packed);
                prop_assert_eq!(chunk.find(0, (due, number)), Some(at));
                prop_assert_eq!(chunk.find(at, (due, number)), Some(at));
                prop_assert_eq!(chunk.find(0, (due, 0)), None);
            }
            let expected = chunk.pairs.binary_search_by_key(&(probe, 1), |&packed| chunk.key(packed)).ok();
            prop_assert_eq!(chunk.find(0, (probe, 1)), expected);
        }
    }

    proptest! {
        /// The chunk found by due time is the one a binary search over the
        /// first keys finds, where the deque wraps around its buffer or not.
        #[test]
        fn the_chunk_found_is_the_binary_searchs(
            gaps in proptest::collection::vec(prop_oneof![3 => 0..3u64, 1 => 0..1_000_000u64], 1..200),
            kept in 1..100usize,
            probe in (0..100_000_000u64, 0..4u64),
        ) {
            let mut due = 0;
            let keys: Vec<(u64, u64)> = gaps.iter().map(|gap| { due += gap; (due, gap % 3) }).collect();
            let mut keys = keys.into_iter().collect::<BTreeSet<_>>().into_iter();
            let kept = kept.min(keys.len());
            let mut firsts = VecDeque::with_capacity(kept);
            firsts.extend(keys.by_ref().take(kept));
            // Past its capacity, what is pushed goes to the buffer's front.
            for key in keys {
                firsts.pop_front();
                firsts.push_back(key);
            }
            let expected = firsts.partition_point(|&first| first <= probe).checked_sub(1);
            prop_assert_eq!(chunk_of(&firsts, probe), expected);
        }
    }

    #[test]
    fn a_pair_takes_eight_bytes_and_a_chunk_ends_after_2_27_nanoseconds() {
        let mut queue = DueQueue::default();
        let base = 1_000_000_000_000;
        let span = 1u64 << DUE_BITS;
        for (due, number) in [(base, 5), (base + span - 1, NUMBER_MAX), (base + span, 6), (base + span, NUMBER_MAX + 1)]
        {
            queue.insert(Timestamp::from_nanos(due), TradeNumber::new(number));
        }
        assert_eq!(queue.chunks.len(), 2, "the third pair is 2^27 ns past the first");
        assert_eq!(queue.chunks[0].pairs.len(), 2);
        assert_eq!(queue.out_of_order.len(), 1, "a number beyond 36 bits goes beside");
        assert_eq!(queue.chunks[0].pairs.capacity(), 2, "a chunk ended gives its spare room back");
        assert_eq!(size_of_val(&queue.chunks[0].pairs[0]), 8);
        let expected = [5, NUMBER_MAX, 6, NUMBER_MAX + 1].map(TradeNumber::new);
        assert_eq!(queue.due_up_to(Timestamp::MAX, usize::MAX), expected);
    }

    #[test]
    fn a_chunk_encodes_as_its_pairs() {
        let mut chunk = Chunk { base_due: 100, pairs: Vec::new() };
        chunk.pairs.extend([chunk.pack(100, 3).unwrap(), chunk.pack(150, 2).unwrap() | REMOVED_BIT]);
        let pairs = [Pair { due: 100, number: 3 }, Pair { due: 150, number: 2 | REMOVED }];
        let bytes = postcard::to_allocvec(&chunk).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&pairs.to_vec()).unwrap());
        assert_eq!(postcard::from_bytes::<Chunk>(&bytes).unwrap(), chunk);
        let too_wide = [Pair { due: 100, number: 3 }, Pair { due: 100 + (1 << DUE_BITS), number: 2 }];
        assert!(postcard::from_bytes::<Chunk>(&postcard::to_allocvec(&too_wide.to_vec()).unwrap()).is_err());
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
        assert!(queue.chunks[1].pairs.len() < CHUNK_PAIRS, "compacted: {} pairs", queue.chunks[1].pairs.len());
        assert!(queue.chunks[1].pairs.len() - kept < CHUNK_PAIRS / COMPACT_SHARE, "most removed pairs gone");
        // The front and back chunks keep theirs until passed.
        for number in (1..=CHUNK_PAIRS as u64).filter(|number| number % 3 == 0) {
            queue.remove(Timestamp::from_nanos(number * 10), TradeNumber::new(number));
        }
        assert_eq!(queue.chunks[0].pairs.len(), CHUNK_PAIRS);
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
