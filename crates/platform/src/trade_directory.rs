//! Where every trade is: live in memory, or resting at an offset in the
//! archive. A Double Eleven leaves ~190 million trades, nearly all at rest;
//! an ordered map of number → offset spends ~32 bytes on each (its nodes
//! stay half full, as numbers only grow), this spends 16: trades are
//! numbered in the order they are made, so their entries, appended in that
//! order, stay sorted and a number is found by binary search.

use serde::{Deserialize, Serialize};

/// Entries a chunk: growing the directory never copies more than one chunk.
const CHUNK_ENTRIES: usize = 1 << 16;
/// The offset of a trade that is live (in memory, not in the archive).
const LIVE: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Entry {
    number: u64,
    offset: u64,
}

/// Every trade by number, in chunks of [`CHUNK_ENTRIES`] (the last one
/// partly filled), numbers strictly increasing throughout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct TradeDirectory {
    chunks: Vec<Vec<Entry>>,
    /// Each chunk's first number, side by side: finding the chunk touches
    /// one small array, not every chunk.
    firsts: Vec<u64>,
    archived: usize,
}

impl TradeDirectory {
    /// A new trade, live; its number is above every number before it.
    pub(crate) fn add_live(&mut self, number: u64) {
        let last = self.chunks.last().and_then(|chunk| chunk.last());
        assert!(last.is_none_or(|last| last.number < number), "trade {number} numbered out of order");
        if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK_ENTRIES) {
            self.chunks.push(Vec::with_capacity(CHUNK_ENTRIES));
            self.firsts.push(number);
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(Entry { number, offset: LIVE });
        }
    }

    /// Where the trade's entry is: (chunk, index in it).
    fn find(&self, number: u64) -> Option<(usize, usize)> {
        let chunk = self.firsts.partition_point(|&first| first <= number).checked_sub(1)?;
        let at = interpolation_search(self.chunks.get(chunk)?, number)?;
        Some((chunk, at))
    }

    fn entry(&self, number: u64) -> Option<&Entry> {
        self.find(number).map(|(chunk, at)| &self.chunks[chunk][at])
    }

    fn entry_mut(&mut self, number: u64) -> Option<&mut Entry> {
        self.find(number).map(|(chunk, at)| &mut self.chunks[chunk][at])
    }

    /// Where the trade rests in the archive (`None`: live, or no such trade).
    pub(crate) fn archived_at(&self, number: u64) -> Option<u64> {
        self.entry(number).map(|entry| entry.offset).filter(|&offset| offset != LIVE)
    }

    /// The trade (live now) rests at `offset` from now on.
    pub(crate) fn archive(&mut self, number: u64, offset: u64) {
        assert_ne!(offset, LIVE, "archive offset of trade {number}");
        let entry = self.entry_mut(number).unwrap_or_else(|| panic!("trade {number} is not in the directory"));
        assert_eq!(entry.offset, LIVE, "trade {number} archived twice");
        entry.offset = offset;
        self.archived += 1;
    }

    /// The archived trade is live again (brought back for a command).
    pub(crate) fn bring_back(&mut self, number: u64) {
        let entry = self.entry_mut(number).unwrap_or_else(|| panic!("trade {number} is not in the directory"));
        assert_ne!(entry.offset, LIVE, "trade {number} brought back but live");
        entry.offset = LIVE;
        self.archived -= 1;
    }

    pub(crate) fn archived_len(&self) -> usize {
        self.archived
    }

    /// Archived trades numbered below `before`, newest first: (number, offset).
    /// Starts where `before` would be (a list's next page costs a search,
    /// not a walk over every newer trade).
    pub(crate) fn archived_newest_first(&self, before: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let chunks = self.firsts.partition_point(|&first| first < before);
        let last = chunks.checked_sub(1).and_then(|chunk| self.chunks.get(chunk));
        let in_last =
            last.map_or(&[][..], |entries| &entries[..entries.partition_point(|entry| entry.number < before)]);
        in_last
            .iter()
            .rev()
            .chain(self.chunks[..chunks.saturating_sub(1)].iter().rev().flat_map(|chunk| chunk.iter().rev()))
            .filter(|entry| entry.offset != LIVE)
            .map(|entry| (entry.number, entry.offset))
    }

    /// The offsets of every archived trade, by trade number.
    pub(crate) fn archived_offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks.iter().flatten().map(|entry| entry.offset).filter(|&offset| offset != LIVE)
    }
}

/// Where `number` is in `entries` (sorted by number). Numbers come from
/// one counter the whole platform shares, so a chunk's are spread about
/// evenly: a guess by proportion lands at or next to the entry, where a
/// binary search would take 16 steps through a megabyte — the directory's
/// lookups were 6% of the writer's time with it. A few guesses, then binary
/// search, so uneven numbers cost no more than before.
fn interpolation_search(entries: &[Entry], number: u64) -> Option<usize> {
    const GUESSES: usize = 3;
    let (mut low, mut high) = (0, entries.len().checked_sub(1)?);
    for _ in 0..GUESSES {
        let (low_number, high_number) = (entries[low].number, entries[high].number);
        if number < low_number || number > high_number {
            return None;
        }
        if high_number == low_number {
            return (low_number == number).then_some(low);
        }
        let share = u128::from(number - low_number) * (high - low) as u128 / u128::from(high_number - low_number);
        let guess = low + share as usize;
        match entries[guess].number.cmp(&number) {
            std::cmp::Ordering::Equal => return Some(guess),
            std::cmp::Ordering::Less => low = guess + 1,
            std::cmp::Ordering::Greater => high = guess.checked_sub(1)?,
        }
        if low > high {
            return None;
        }
    }
    let found = entries[low..=high].binary_search_by_key(&number, |entry| entry.number).ok()?;
    Some(low + found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        /// A new trade, this much above the last number.
        Add(u64),
        /// Archive (or bring back, if archived) the nth trade made, at this offset.
        Toggle(usize, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            // Mostly even gaps, with jumps: the search guesses by proportion.
            4 => (1..5u64).prop_map(Step::Add),
            1 => (1_000..1_000_000u64).prop_map(Step::Add),
            4 => (any::<usize>(), 0..1_000_000u64).prop_map(|(n, o)| Step::Toggle(n, o)),
        ]
    }

    proptest! {
        /// The directory answers as an ordered map of archived trades does.
        #[test]
        fn it_agrees_with_an_ordered_map(steps in proptest::collection::vec(step(), 0..400), probe in 0..30_000_000u64) {
            let mut directory = TradeDirectory::default();
            let mut model = BTreeMap::new();
            let mut numbers = Vec::new();
            for step in steps {
                match step {
                    Step::Add(gap) => {
                        let number = numbers.last().copied().unwrap_or(0) + gap;
                        directory.add_live(number);
                        numbers.push(number);
                    }
                    Step::Toggle(nth, offset) if !numbers.is_empty() => {
                        let number = numbers[nth % numbers.len()];
                        if model.remove(&number).is_some() {
                            directory.bring_back(number);
                        } else {
                            directory.archive(number, offset);
                            model.insert(number, offset);
                        }
                    }
                    Step::Toggle(..) => {}
                }
            }
            prop_assert_eq!(directory.archived_len(), model.len());
            for number in numbers.iter().copied().chain([0, probe, u64::MAX]) {
                prop_assert_eq!(directory.archived_at(number), model.get(&number).copied());
            }
            let newest: Vec<_> = directory.archived_newest_first(probe).collect();
            let expected: Vec<_> = model.range(..probe).rev().map(|(&n, &o)| (n, o)).collect();
            prop_assert_eq!(newest, expected);
            prop_assert!(directory.archived_offsets().eq(model.values().copied()));
        }
    }

    #[test]
    fn many_chunks_find_every_trade() {
        let mut directory = TradeDirectory::default();
        let count = CHUNK_ENTRIES as u64 * 3 + 17;
        for number in 1..=count {
            directory.add_live(number * 3);
            if number % 2 == 0 {
                directory.archive(number * 3, number);
            }
        }
        assert_eq!(directory.chunks.len(), 4);
        for number in 1..=count {
            let expected = (number % 2 == 0).then_some(number);
            assert_eq!(directory.archived_at(number * 3), expected, "trade {}", number * 3);
            assert_eq!(directory.archived_at(number * 3 + 1), None);
        }
        assert_eq!(directory.archived_len() as u64, count / 2);
        let chunk = CHUNK_ENTRIES as u64;
        for before in [0, 3, 7, chunk * 3 + 1, chunk * 3 + 3, chunk * 6 + 7, count * 3, u64::MAX] {
            let expected = (1..=count).rev().filter(|n| n % 2 == 0 && n * 3 < before).map(|n| (n * 3, n));
            assert!(directory.archived_newest_first(before).eq(expected), "before {before}");
        }
        let bytes = postcard::to_allocvec(&directory).unwrap();
        assert_eq!(postcard::from_bytes::<TradeDirectory>(&bytes).unwrap(), directory);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn a_number_below_the_last_is_refused() {
        let mut directory = TradeDirectory::default();
        directory.add_live(5);
        directory.add_live(5);
    }
}
