//! Values by number, for numbers handed out in increasing order from the
//! platform's one counter (which numbers parties, trades, events, top-ups
//! and the rest, so each kind's numbers have gaps). A Double Eleven has
//! ~190 million trades and 8 million buyers: an ordered map spends ~32 bytes
//! of nodes on each entry (they stay half full, as numbers only grow) and a
//! lookup walks a dozen levels, most of them cache misses. This keeps the
//! values in number order, in chunks, and a bitmap over all numbers telling
//! which have one; a value's place is its number's rank, counted from a
//! sample every 512 numbers and at most eight words' popcounts — two or
//! three cache lines a lookup.

use serde::{Deserialize, Serialize};

/// Values a chunk: growing never copies more than one chunk.
const CHUNK_ENTRIES: usize = 1 << 16;
/// Bitmap words a rank sample covers.
const WORDS_PER_RANK: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Numbered<T> {
    /// Bit `n % 64` of word `n / 64`: number `n` has a value.
    words: Vec<u64>,
    /// Values numbered below word `WORDS_PER_RANK * k`, for each `k`.
    ranks: Vec<u64>,
    /// The values in number order, in chunks of [`CHUNK_ENTRIES`] (the
    /// last one partly filled).
    chunks: Vec<Vec<T>>,
}

impl<T> Default for Numbered<T> {
    fn default() -> Numbered<T> {
        Numbered { words: Vec::new(), ranks: Vec::new(), chunks: Vec::new() }
    }
}

impl<T> Numbered<T> {
    /// Adds a value under `number`, which must be above every number before it.
    pub(crate) fn push(&mut self, number: u64, value: T) {
        let count = self.len();
        assert!(
            self.index_of(number).is_none() && self.count_below(number) == count,
            "number {number} given out of order"
        );
        let word = usize::try_from(number / 64).unwrap_or_else(|_| panic!("number {number} beyond the address space"));
        while self.words.len() <= word {
            if self.words.len().is_multiple_of(WORDS_PER_RANK) {
                // Every value so far is numbered below this new word.
                self.ranks.push(count);
            }
            self.words.push(0);
        }
        self.words[word] |= 1 << (number % 64);
        if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK_ENTRIES) {
            self.chunks.push(Vec::with_capacity(CHUNK_ENTRIES));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(value);
        }
    }

    /// How many values there are.
    pub(crate) fn len(&self) -> u64 {
        let whole = self.chunks.len().saturating_sub(1) * CHUNK_ENTRIES;
        (whole + self.chunks.last().map_or(0, Vec::len)) as u64
    }

    /// How many values are numbered below `number`.
    pub(crate) fn count_below(&self, number: u64) -> u64 {
        let Some(word) = usize::try_from(number / 64).ok().filter(|&word| word < self.words.len()) else {
            return self.len();
        };
        let sample = word / WORDS_PER_RANK;
        let whole: u32 = self.words[sample * WORDS_PER_RANK..word].iter().map(|w| w.count_ones()).sum();
        let part = (self.words[word] & ((1 << (number % 64)) - 1)).count_ones();
        self.ranks[sample] + u64::from(whole + part)
    }

    /// The value's place in number order (`None`: no such number).
    fn index_of(&self, number: u64) -> Option<usize> {
        let word = *self.words.get(usize::try_from(number / 64).ok()?)?;
        if word >> (number % 64) & 1 == 0 {
            return None;
        }
        usize::try_from(self.count_below(number)).ok()
    }

    pub(crate) fn contains(&self, number: u64) -> bool {
        self.index_of(number).is_some()
    }

    pub(crate) fn get(&self, number: u64) -> Option<&T> {
        self.index_of(number).map(|index| &self.chunks[index / CHUNK_ENTRIES][index % CHUNK_ENTRIES])
    }

    pub(crate) fn get_mut(&mut self, number: u64) -> Option<&mut T> {
        let index = self.index_of(number)?;
        Some(&mut self.chunks[index / CHUNK_ENTRIES][index % CHUNK_ENTRIES])
    }

    /// Values numbered below `before`, newest first, with their numbers.
    /// Starts where `before` would be (a list's next page costs a rank, not
    /// a walk over every newer value).
    pub(crate) fn newest_first(&self, before: u64) -> impl Iterator<Item = (u64, &T)> + '_ {
        let mut index = self.count_below(before) as usize;
        let (mut word, mut bits) = match usize::try_from(before / 64).ok().filter(|&word| word < self.words.len()) {
            Some(word) => (word, self.words[word] & ((1 << (before % 64)) - 1)),
            None => (self.words.len(), 0),
        };
        std::iter::from_fn(move || {
            while bits == 0 {
                word = word.checked_sub(1)?;
                bits = self.words[word];
            }
            let top = 63 - u64::from(bits.leading_zeros());
            bits &= !(1 << top);
            index -= 1;
            Some((word as u64 * 64 + top, &self.chunks[index / CHUNK_ENTRIES][index % CHUNK_ENTRIES]))
        })
    }

    /// Every value, in number order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// It answers as an ordered map does, for numbers close together or
        /// far apart.
        #[test]
        fn it_agrees_with_an_ordered_map(
            gaps in proptest::collection::vec(prop_oneof![4 => 1..5u64, 1 => 1_000..1_000_000u64], 0..400),
            changes in proptest::collection::vec((any::<usize>(), any::<u32>()), 0..50),
            probe in 0..30_000_000u64,
        ) {
            let mut numbered = Numbered::default();
            let mut model = BTreeMap::new();
            let mut number = 0;
            for (value, gap) in gaps.iter().enumerate() {
                number += gap;
                numbered.push(number, value as u32);
                model.insert(number, value as u32);
            }
            let numbers: Vec<u64> = model.keys().copied().collect();
            for (nth, value) in changes {
                if let Some(&number) = numbers.get(nth % numbers.len().max(1)) {
                    *numbered.get_mut(number).unwrap() = value;
                    model.insert(number, value);
                }
            }
            prop_assert_eq!(numbered.len(), model.len() as u64);
            for number in numbers.iter().copied().chain([0, probe, u64::MAX]) {
                prop_assert_eq!(numbered.get(number), model.get(&number));
                prop_assert_eq!(numbered.contains(number), model.contains_key(&number));
                prop_assert_eq!(numbered.count_below(number), model.range(..number).count() as u64);
            }
            let newest: Vec<_> = numbered.newest_first(probe).map(|(n, &v)| (n, v)).collect();
            let expected: Vec<_> = model.range(..probe).rev().map(|(&n, &v)| (n, v)).collect();
            prop_assert_eq!(newest, expected);
            prop_assert!(numbered.values().eq(model.values()));
        }
    }

    #[test]
    fn many_chunks_find_every_value() {
        let mut numbered = Numbered::default();
        let count = CHUNK_ENTRIES as u64 * 3 + 17;
        for number in 1..=count {
            numbered.push(number * 3, number);
        }
        assert_eq!(numbered.chunks.len(), 4);
        for number in 1..=count {
            assert_eq!(numbered.get(number * 3), Some(&number), "value {}", number * 3);
            assert_eq!(numbered.get(number * 3 + 1), None);
        }
        let chunk = CHUNK_ENTRIES as u64;
        for before in [0, 3, 7, chunk * 3 + 1, chunk * 3 + 3, chunk * 6 + 7, count * 3, u64::MAX] {
            let expected: Vec<_> = (1..=count).rev().filter(|n| n * 3 < before).map(|n| (n * 3, n)).collect();
            let newest: Vec<_> = numbered.newest_first(before).map(|(n, &v)| (n, v)).collect();
            assert_eq!(newest, expected, "before {before}");
        }
        let bytes = postcard::to_allocvec(&numbered).unwrap();
        assert_eq!(postcard::from_bytes::<Numbered<u64>>(&bytes).unwrap(), numbered);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn a_number_below_the_last_is_refused() {
        let mut numbered = Numbered::default();
        numbered.push(5, ());
        numbered.push(5, ());
    }
}
