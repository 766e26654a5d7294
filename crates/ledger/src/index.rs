//! `IdIndex`: the map from transfer id to where the transfer is stored.
//!
//! Written here rather than taken from a crate because it is the ledger's
//! hottest structure and a batch-level trick needs its layout: with 10 million
//! transfers the index is hundreds of MiB, so every lookup of a new id is a
//! cache miss. Before a batch is applied, [`IdIndex::warm`] reads the slot of
//! every id in the batch in one tight loop of independent loads, which the CPU
//! overlaps, so that applying the batch finds them in cache (`zhifu bench
//! ledger` shows the difference).
//!
//! Open addressing with linear probing over two parallel arrays (ids, then
//! values), at most half full. `EMPTY` (`u128::MAX`) marks an empty slot:
//! the ledger never stores that id. (Not 0: a table filled with a non-zero
//! value is written page by page when made, so its memory is mapped then and
//! not by page faults in the middle of batches.) Removal (undoing a failed chain) shifts later entries back so
//! that no tombstones accumulate.

/// The id of an empty slot.
const EMPTY: u128 = u128::MAX;

/// The smallest table: 1,024 slots.
const SLOTS_MIN: usize = 1 << 10;
/// A table at most an eighth full is rebuilt a quarter full (it grows when
/// half full): a window of transfers that held the midnight peak's millions
/// gives the memory back when the evening's are fewer, and one that hovers
/// near a size is not rebuilt back and forth.
const SPARSE_SLOTS_PER_ID: usize = 8;

pub(crate) struct IdIndex {
    ids: Vec<u128>,
    values: Vec<u64>,
    len: usize,
    mask: usize,
    /// Ids reserved for: the table never shrinks below room for them.
    reserved: usize,
}

impl Default for IdIndex {
    fn default() -> IdIndex {
        IdIndex::with_capacity(0)
    }
}

impl IdIndex {
    pub fn with_capacity(capacity: usize) -> IdIndex {
        let slots = capacity.saturating_mul(2).next_power_of_two().max(SLOTS_MIN);
        IdIndex { ids: vec![EMPTY; slots], values: vec![u64::MAX; slots], len: 0, mask: slots - 1, reserved: 0 }
    }

    /// Ids stored.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn memory_bytes(&self) -> usize {
        self.ids.len() * size_of::<u128>() + self.values.len() * size_of::<u64>()
    }

    /// The value stored for `id`; `None` for `u128::MAX`, which is never stored.
    pub fn get(&self, id: u128) -> Option<u64> {
        if id == EMPTY {
            return None;
        }
        let mut slot = self.home(id);
        loop {
            match self.ids[slot] {
                EMPTY => return None,
                found if found == id => return Some(self.values[slot]),
                _ => slot = (slot + 1) & self.mask,
            }
        }
    }

    /// Inserts an id that is not in the index.
    pub fn insert(&mut self, id: u128, value: u64) {
        assert_ne!(id, EMPTY, "u128::MAX marks empty slots");
        if (self.len + 1) * 2 > self.ids.len() {
            self.grow();
        }
        let mut slot = self.home(id);
        while self.ids[slot] != EMPTY {
            debug_assert_ne!(self.ids[slot], id, "inserted twice");
            slot = (slot + 1) & self.mask;
        }
        self.ids[slot] = id;
        self.values[slot] = value;
        self.len += 1;
    }

    pub fn remove(&mut self, id: u128) -> Option<u64> {
        let mut slot = self.home(id);
        loop {
            match self.ids[slot] {
                EMPTY => return None,
                found if found == id => break,
                _ => slot = (slot + 1) & self.mask,
            }
        }
        let value = self.values[slot];
        // Backward-shift deletion: move each later entry of the probe run
        // into the hole if its home is not between the hole and itself.
        let mut hole = slot;
        let mut next = (hole + 1) & self.mask;
        while self.ids[next] != EMPTY {
            let home = self.home(self.ids[next]);
            let distance_to_home = next.wrapping_sub(home) & self.mask;
            let distance_to_hole = next.wrapping_sub(hole) & self.mask;
            if distance_to_home >= distance_to_hole {
                self.ids[hole] = self.ids[next];
                self.values[hole] = self.values[next];
                hole = next;
            }
            next = (next + 1) & self.mask;
        }
        self.ids[hole] = EMPTY;
        self.len -= 1;
        Some(value)
    }

    /// Touches the home slot of every id so that the lookups that follow hit
    /// the cache: the loads are independent, so they overlap in the CPU.
    pub fn warm(&self, ids: impl Iterator<Item = u128>) -> u128 {
        let mut touched = 0u128;
        for id in ids {
            let slot = self.home(id);
            touched ^= self.ids[slot] ^ u128::from(self.values[slot]);
        }
        std::hint::black_box(touched)
    }

    fn home(&self, id: u128) -> usize {
        hash(id) as usize & self.mask
    }

    /// Makes room for `capacity` ids in all without growing again.
    pub fn reserve(&mut self, capacity: usize) {
        self.reserved = self.reserved.max(capacity);
        if capacity.saturating_mul(2) > self.ids.len() {
            self.rebuild(capacity);
        }
    }

    /// Rebuilds a table that has become sparse (see
    /// [`SPARSE_SLOTS_PER_ID`]) a quarter full, never below the room
    /// reserved. Called as transfers leave memory, not on removals that undo
    /// a chain.
    pub fn shrink_if_sparse(&mut self) {
        let sparse = self.len.max(self.reserved).saturating_mul(SPARSE_SLOTS_PER_ID) <= self.ids.len();
        if sparse && self.ids.len() > SLOTS_MIN {
            self.rebuild(self.len.saturating_mul(2).max(self.reserved));
        }
    }

    fn grow(&mut self) {
        self.rebuild(self.ids.len());
    }

    fn rebuild(&mut self, capacity: usize) {
        let mut rebuilt = IdIndex::with_capacity(capacity);
        rebuilt.reserved = self.reserved;
        for (slot, &id) in self.ids.iter().enumerate() {
            if id != EMPTY {
                rebuilt.insert(id, self.values[slot]);
            }
        }
        *self = rebuilt;
    }
}

/// Mixes all 128 bits of an id into 64 (a multiply-fold: fast, and clients'
/// sequential or time-ordered ids spread evenly).
pub(crate) fn hash(id: u128) -> u64 {
    const K0: u64 = 0x9e37_79b9_7f4a_7c15;
    const K1: u64 = 0xd6e8_feb8_6659_fd93;
    let low = id as u64 ^ K0;
    let high = (id >> 64) as u64 ^ K1;
    let folded = u128::from(low) * u128::from(high.rotate_left(23) | 1);
    let mixed = (folded as u64) ^ ((folded >> 64) as u64);
    let mixed = (mixed ^ (mixed >> 32)).wrapping_mul(K0);
    mixed ^ (mixed >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// The index behaves as a map under inserts and removals, including
        /// removals in the middle of probe runs and growth.
        #[test]
        fn behaves_like_a_map(operations in prop::collection::vec((any::<bool>(), 1u128..3000), 1..3000)) {
            let mut index = IdIndex::with_capacity(4);
            let mut model: HashMap<u128, u64> = HashMap::new();
            for (step, (insert, id)) in operations.into_iter().enumerate() {
                // Crowd ids into few home slots to get long probe runs.
                let id = id << 100 | id;
                if insert && !model.contains_key(&id) {
                    index.insert(id, step as u64);
                    model.insert(id, step as u64);
                } else {
                    prop_assert_eq!(index.remove(id), model.remove(&id));
                }
                prop_assert_eq!(index.len, model.len());
            }
            for (&id, &value) in &model {
                prop_assert_eq!(index.get(id), Some(value));
            }
        }
    }

    #[test]
    fn a_sparse_table_shrinks_but_not_below_its_reservation() {
        let mut index = IdIndex::with_capacity(0);
        index.reserve(5_000);
        for id in 1..=100_000u128 {
            index.insert(id, id as u64);
        }
        let full = index.memory_bytes();
        for id in 1..=99_000u128 {
            assert_eq!(index.remove(id), Some(id as u64));
        }
        index.shrink_if_sparse();
        let shrunk = index.memory_bytes();
        assert!(shrunk * 8 < full, "{shrunk} bytes left of {full}");
        assert_eq!(index.ids.len(), 16_384, "room for the 5,000 reserved, at most half full");
        for id in 99_001..=100_000u128 {
            assert_eq!(index.get(id), Some(id as u64));
        }
        assert_eq!(index.get(5), None);
        for id in 99_001..=100_000u128 {
            index.remove(id);
        }
        index.shrink_if_sparse();
        assert_eq!(index.memory_bytes(), shrunk, "the reservation holds");
    }
}
