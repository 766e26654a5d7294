//! Where every trade is: live in memory, or resting at an offset in the
//! archive. A Double Eleven leaves ~190 million trades, nearly all at rest;
//! an ordered map of number → offset spends ~32 bytes on each, this spends
//! ~6.2: the offsets by trade number in a [`Numbered`] (a lookup is a rank in
//! a bitmap over all numbers: two or three cache lines, where a search
//! through megabytes of sorted numbers missed the cache a dozen times and
//! was 6% of the writer's time), six bytes an offset (an archive of up to
//! 256 TiB; a full day's is 39 GB).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::numbered::Numbered;
use crate::units::TradeNumber;

/// The offset of a trade that is live (in memory, not in the archive).
const LIVE: u64 = u64::MAX;
/// Offsets are below this (it stands for `LIVE` in six bytes).
const OFFSET_END: u64 = (1 << 48) - 1;

/// An offset or `LIVE` in six bytes. Serialized as the `u64` it stands
/// for, so the state's bytes are those of a directory of `u64`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Offset48([u8; 6]);

impl Offset48 {
    fn new(offset: u64) -> Offset48 {
        let offset = if offset == LIVE { OFFSET_END } else { offset };
        assert!(offset <= OFFSET_END, "archive offset {offset} beyond six bytes");
        let bytes = offset.to_le_bytes();
        Offset48([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]])
    }

    fn get(self) -> u64 {
        let [a, b, c, d, e, f] = self.0;
        let offset = u64::from_le_bytes([a, b, c, d, e, f, 0, 0]);
        if offset == OFFSET_END { LIVE } else { offset }
    }
}

impl Serialize for Offset48 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Offset48 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Offset48, D::Error> {
        let offset = u64::deserialize(deserializer)?;
        if offset != LIVE && offset >= OFFSET_END {
            return Err(serde::de::Error::custom(format!("archive offset {offset} beyond six bytes")));
        }
        Ok(Offset48::new(offset))
    }
}

/// Every trade by number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct TradeDirectory {
    /// Each trade's offset, or `LIVE`.
    offsets: Numbered<Offset48>,
    archived: usize,
}

impl TradeDirectory {
    /// A new trade, live; its number is above every number before it.
    pub(crate) fn add_live(&mut self, number: TradeNumber) {
        self.offsets.push(number.get(), Offset48::new(LIVE));
    }

    /// Where the trade rests in the archive (`None`: live, or no such trade).
    pub(crate) fn archived_at(&self, number: TradeNumber) -> Option<u64> {
        self.offsets.get(number.get()).map(|offset| offset.get()).filter(|&offset| offset != LIVE)
    }

    /// The trade (live now) rests at `offset` from now on.
    pub(crate) fn archive(&mut self, number: TradeNumber, offset: u64) {
        assert!(offset < OFFSET_END, "archive offset {offset} of trade {number}");
        let entry =
            self.offsets.get_mut(number.get()).unwrap_or_else(|| panic!("trade {number} is not in the directory"));
        assert_eq!(entry.get(), LIVE, "trade {number} archived twice");
        *entry = Offset48::new(offset);
        self.archived += 1;
    }

    /// The archived trade is live again (brought back for a command).
    pub(crate) fn bring_back(&mut self, number: TradeNumber) {
        let entry =
            self.offsets.get_mut(number.get()).unwrap_or_else(|| panic!("trade {number} is not in the directory"));
        assert_ne!(entry.get(), LIVE, "trade {number} brought back but live");
        *entry = Offset48::new(LIVE);
        self.archived -= 1;
    }

    pub(crate) fn archived_len(&self) -> usize {
        self.archived
    }

    /// Every trade, live and archived.
    pub(crate) fn len(&self) -> u64 {
        self.offsets.len()
    }

    /// Archived trades numbered below `before`, newest first: (number, offset).
    pub(crate) fn archived_newest_first(&self, before: TradeNumber) -> impl Iterator<Item = (TradeNumber, u64)> + '_ {
        self.offsets
            .newest_first(before.get())
            .map(|(number, offset)| (TradeNumber::new(number), offset.get()))
            .filter(|&(_, offset)| offset != LIVE)
    }

    /// The offsets of every archived trade, by trade number.
    #[cfg(test)]
    pub(crate) fn archived_offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.offsets.values().map(|offset| offset.get()).filter(|&offset| offset != LIVE)
    }
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
                        directory.add_live(TradeNumber::new(number));
                        numbers.push(number);
                    }
                    Step::Toggle(nth, offset) if !numbers.is_empty() => {
                        let number = numbers[nth % numbers.len()];
                        if model.remove(&number).is_some() {
                            directory.bring_back(TradeNumber::new(number));
                        } else {
                            directory.archive(TradeNumber::new(number), offset);
                            model.insert(number, offset);
                        }
                    }
                    Step::Toggle(..) => {}
                }
            }
            prop_assert_eq!(directory.archived_len(), model.len());
            for number in numbers.iter().copied().chain([0, probe, u64::MAX]) {
                prop_assert_eq!(directory.archived_at(TradeNumber::new(number)), model.get(&number).copied());
            }
            let newest: Vec<_> = directory.archived_newest_first(TradeNumber::new(probe)).collect();
            let expected: Vec<_> = model.range(..probe).rev().map(|(&n, &o)| (TradeNumber::new(n), o)).collect();
            prop_assert_eq!(newest, expected);
            prop_assert!(directory.archived_offsets().eq(model.values().copied()));
        }
    }

    #[test]
    fn many_chunks_find_every_trade() {
        let mut directory = TradeDirectory::default();
        let count = (1u64 << 16) * 3 + 17;
        for number in 1..=count {
            directory.add_live(TradeNumber::new(number * 3));
            if number % 2 == 0 {
                directory.archive(TradeNumber::new(number * 3), number);
            }
        }
        for number in 1..=count {
            let expected = (number % 2 == 0).then_some(number);
            assert_eq!(directory.archived_at(TradeNumber::new(number * 3)), expected, "trade {}", number * 3);
            assert_eq!(directory.archived_at(TradeNumber::new(number * 3 + 1)), None);
        }
        assert_eq!(directory.archived_len() as u64, count / 2);
        let chunk = 1u64 << 16;
        for before in [0, 3, 7, chunk * 3 + 1, chunk * 3 + 3, chunk * 6 + 7, count * 3, u64::MAX] {
            let expected =
                (1..=count).rev().filter(|n| n % 2 == 0 && n * 3 < before).map(|n| (TradeNumber::new(n * 3), n));
            assert!(directory.archived_newest_first(TradeNumber::new(before)).eq(expected), "before {before}");
        }
        let bytes = postcard::to_allocvec(&directory).unwrap();
        assert_eq!(postcard::from_bytes::<TradeDirectory>(&bytes).unwrap(), directory);
    }

    #[test]
    fn an_offset_takes_six_bytes_and_encodes_as_the_u64_it_stands_for() {
        assert_eq!(size_of::<Offset48>(), 6);
        for offset in [0, 1, 300, OFFSET_END - 1, LIVE] {
            assert_eq!(Offset48::new(offset).get(), offset);
            let bytes = postcard::to_allocvec(&Offset48::new(offset)).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&offset).unwrap());
            assert_eq!(postcard::from_bytes::<Offset48>(&bytes).unwrap(), Offset48::new(offset));
        }
        let beyond = postcard::to_allocvec(&OFFSET_END).unwrap();
        assert!(postcard::from_bytes::<Offset48>(&beyond).is_err());
    }

    #[test]
    #[should_panic(expected = "beyond six bytes")]
    fn an_offset_beyond_six_bytes_is_refused() {
        Offset48::new(OFFSET_END + 1);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn a_number_below_the_last_is_refused() {
        let mut directory = TradeDirectory::default();
        directory.add_live(TradeNumber::new(5));
        directory.add_live(TradeNumber::new(5));
    }
}
