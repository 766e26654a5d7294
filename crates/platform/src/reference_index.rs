//! The `out_trade_no` index: a merchant's reference (hashed) → the trades
//! made with it. A Double Eleven makes ~190 million trades, each looked up
//! by reference once as it is made (is it a retry?); an ordered set of
//! (hash, number) spent ~27 bytes on each, this spends ~8.5.
//!
//! A key is split: its top 16 bits pick one of 65,536 shards, the next 28
//! are kept as a fingerprint beside the trade number (36 bits) in one
//! `u64`. Each shard is a sorted `Vec` plus a few recent entries not yet
//! merged in, so an insertion moves a few hundred bytes, not a shard's
//! thousands of entries. A lookup answers every trade whose key shares the
//! 44 bits: callers compare the trades they find with the reference (at a
//! full day's 190 million trades, about one lookup in 90,000 finds a trade
//! of another reference, and reads it for nothing).

use serde::{Deserialize, Serialize};

const SHARD_BITS: u32 = 16;
const FINGERPRINT_BITS: u32 = 28;
const NUMBER_BITS: u32 = 64 - FINGERPRINT_BITS;
/// The largest trade number the index holds (6.8 × 10^10).
pub(crate) const NUMBER_MAX: u64 = (1 << NUMBER_BITS) - 1;
/// Entries a shard gathers before merging them into its sorted part.
const RECENT_MAX: usize = 32;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Shard {
    /// Entries (fingerprint << NUMBER_BITS | number), sorted.
    sorted: Vec<u64>,
    /// Entries not yet merged, in insertion order (at most `RECENT_MAX`).
    recent: Vec<u64>,
}

/// An insert-only multimap of 64-bit keys to trade numbers (1..=NUMBER_MAX).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ReferenceIndex {
    /// Empty until the first insertion, then `1 << SHARD_BITS` shards.
    shards: Vec<Shard>,
}

fn split(key: u64) -> (usize, u64) {
    let shard = (key >> (64 - SHARD_BITS)) as usize;
    let fingerprint = (key >> (64 - SHARD_BITS - FINGERPRINT_BITS)) & ((1 << FINGERPRINT_BITS) - 1);
    (shard, fingerprint)
}

impl ReferenceIndex {
    /// Files trade `number` under `key`. Numbers above [`NUMBER_MAX`] do not
    /// fit (a caller refuses to make such a trade).
    pub(crate) fn insert(&mut self, key: u64, number: u64) {
        assert!((1..=NUMBER_MAX).contains(&number), "trade number {number} does not fit the reference index");
        if self.shards.is_empty() {
            self.shards = vec![Shard::default(); 1 << SHARD_BITS];
        }
        let (shard, fingerprint) = split(key);
        let shard = &mut self.shards[shard];
        shard.recent.push(fingerprint << NUMBER_BITS | number);
        if shard.recent.len() == RECENT_MAX {
            shard.merge_recent();
        }
    }

    /// The trades filed under keys that share `key`'s 44 indexed bits, in
    /// no particular order (almost always none or the one).
    pub(crate) fn candidates(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        let (shard, fingerprint) = split(key);
        let shard = self.shards.get(shard);
        let sorted = shard.map_or(&[][..], |shard| {
            // Fingerprints are hash bits, spread evenly: a guess by proportion
            // is a few entries off, where bisecting a full day's shard is a
            // dozen cache misses. Equal ones are almost never more than one.
            let guess = search::proportional_guess(fingerprint, 0, 1 << FINGERPRINT_BITS, shard.sorted.len());
            let start = search::partition_point_near(&shard.sorted, guess, |&entry| entry >> NUMBER_BITS < fingerprint);
            let equal = shard.sorted[start..].iter().take_while(|&&entry| entry >> NUMBER_BITS == fingerprint).count();
            &shard.sorted[start..start + equal]
        });
        let recent = shard.map_or(&[][..], |shard| &shard.recent[..]);
        sorted
            .iter()
            .chain(recent.iter().filter(move |&&entry| entry >> NUMBER_BITS == fingerprint))
            .map(|&entry| entry & NUMBER_MAX)
    }
}

impl Shard {
    /// Merges the recent entries into the sorted part from its end, growing
    /// it by an eighth at a time (not double: the shards together are
    /// gigabytes at a full day's size).
    fn merge_recent(&mut self) {
        self.recent.sort_unstable();
        let old_len = self.sorted.len();
        let added = self.recent.len();
        if self.sorted.capacity() < old_len + added {
            self.sorted.reserve_exact((old_len / 8).max(added));
        }
        self.sorted.resize(old_len + added, 0);
        let (mut read, mut write) = (old_len, old_len + added);
        while let Some(&newest) = self.recent.last() {
            write -= 1;
            if read > 0 && self.sorted[read - 1] > newest {
                read -= 1;
                self.sorted[write] = self.sorted[read];
            } else {
                self.sorted[write] = newest;
                self.recent.pop();
            }
        }
        debug_assert!(self.sorted.is_sorted());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn candidates(index: &ReferenceIndex, key: u64) -> BTreeSet<u64> {
        index.candidates(key).collect()
    }

    proptest! {
        /// Every number filed under a key is found under it; a number found is
        /// one filed under a key with the same indexed bits.
        #[test]
        fn finds_what_was_filed(
            // Few distinct shards and fingerprints, so that keys collide.
            entries in prop::collection::vec((0u64..4, 0u64..4, any::<u32>(), 1..=NUMBER_MAX), 0..600),
            probes in prop::collection::vec((0u64..4, 0u64..4, any::<u32>()), 0..50),
        ) {
            let key = |shard: u64, fingerprint: u64, low: u32| {
                shard << (64 - SHARD_BITS) | fingerprint << (64 - SHARD_BITS - FINGERPRINT_BITS) | u64::from(low)
            };
            let mut index = ReferenceIndex::default();
            let mut model: Vec<(u64, u64)> = Vec::new();
            for &(shard, fingerprint, low, number) in &entries {
                index.insert(key(shard, fingerprint, low), number);
                model.push((key(shard, fingerprint, low), number));
            }
            let filed: usize = index.shards.iter().map(|shard| shard.sorted.len() + shard.recent.len()).sum();
            prop_assert_eq!(filed, entries.len());
            let indexed = |key: u64| key >> (64 - SHARD_BITS - FINGERPRINT_BITS);
            for (shard, fingerprint, low) in probes.iter().copied().chain(entries.iter().map(|&(s, f, l, _)| (s, f, l))) {
                let probe = key(shard, fingerprint, low);
                let expected: BTreeSet<u64> =
                    model.iter().filter(|(k, _)| indexed(*k) == indexed(probe)).map(|&(_, n)| n).collect();
                prop_assert_eq!(candidates(&index, probe), expected);
            }
            for shard in &index.shards {
                prop_assert!(shard.sorted.is_sorted() && shard.recent.len() < RECENT_MAX);
            }
        }
    }

    #[test]
    fn a_shard_grows_by_merging_and_survives_a_round_trip() {
        let mut index = ReferenceIndex::default();
        // One shard, keys in descending order: every merge puts the recent
        // entries before all the sorted ones.
        let key = |fingerprint: u64| fingerprint << (64 - SHARD_BITS - FINGERPRINT_BITS);
        for number in (1..=10_000u64).rev() {
            index.insert(key(number), number);
        }
        assert!(index.shards[0].sorted.len() >= 10_000 - RECENT_MAX);
        assert_eq!(candidates(&index, key(77)), BTreeSet::from([77]));
        assert_eq!(candidates(&index, key(10_000)), BTreeSet::from([10_000]));
        assert!(candidates(&index, key(10_001)).is_empty());
        let bytes = postcard::to_allocvec(&index).unwrap();
        assert_eq!(postcard::from_bytes::<ReferenceIndex>(&bytes).unwrap(), index);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_number_too_large_is_refused() {
        ReferenceIndex::default().insert(1, NUMBER_MAX + 1);
    }
}
