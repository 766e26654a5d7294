//! `AccountIndex`: the map from account id to the account's place in the
//! ledger's array of accounts.
//!
//! Not a hash map of (id, place): a `u128` key aligns its entry to 32 bytes,
//! so a full day's 14 million accounts reserved took 0.55 GB of index. Here a
//! slot is 8 bytes, the place and 32 bits of the id's hash; the id itself is
//! read from the account, which every lookup reads next anyway, and only
//! when the 32 bits match (a false match is one in four billion).
//!
//! Open addressing with linear probing, at most seven eighths full: eight
//! slots to a cache line keep even a long probe run to a line or two, and
//! the 32 bits compared spare a read of the account for each slot passed
//! (a full day's 12.4 million accounts fill 16.8 million slots 74%, where
//! three quarters would have taken twice the slots). `EMPTY` marks an empty
//! slot: its place, `u32::MAX`, is never an account's. Removal (undoing a
//! failed chain) shifts later entries back, so no tombstones accumulate.

use crate::account::Account;
use crate::index::hash;

/// An empty slot (place `u32::MAX`).
const EMPTY: u64 = u64::MAX;
/// The smallest table: 1,024 slots.
const SLOTS_MIN: usize = 1 << 10;
/// A table is at most `LOAD_NUMERATOR / LOAD_DENOMINATOR` full.
const LOAD_NUMERATOR: usize = 7;
const LOAD_DENOMINATOR: usize = 8;

pub(crate) struct AccountIndex {
    slots: Vec<u64>,
    len: usize,
    mask: usize,
}

impl Default for AccountIndex {
    fn default() -> AccountIndex {
        AccountIndex::with_capacity(0)
    }
}

impl AccountIndex {
    pub fn with_capacity(capacity: usize) -> AccountIndex {
        let slots = slots_for(capacity);
        // Filled with a non-zero value, so written page by page now and not
        // mapped by page faults in the middle of batches.
        AccountIndex { slots: vec![EMPTY; slots], len: 0, mask: slots - 1 }
    }

    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * size_of::<u64>()
    }

    /// The place of the account with this id, given the accounts the places
    /// index.
    pub fn get(&self, id: u128, accounts: &[Account]) -> Option<u32> {
        self.find(id, accounts).map(|(_, place)| place)
    }

    /// Inserts an account that is not in the index; `accounts` holds every
    /// account already indexed.
    pub fn insert(&mut self, id: u128, place: u32, accounts: &[Account]) {
        assert_ne!(place, u32::MAX, "fewer than 2^32 - 1 accounts");
        if (self.len + 1) * LOAD_DENOMINATOR > self.slots.len() * LOAD_NUMERATOR {
            self.rebuild(self.slots.len() * 2, accounts);
        }
        self.put(hash(id), place);
        self.len += 1;
    }

    /// Removes the account with this id, while `accounts` still holds it.
    pub fn remove(&mut self, id: u128, accounts: &[Account]) -> Option<u32> {
        let (mut hole, place) = self.find(id, accounts)?;
        // Backward-shift deletion: move each later entry of the probe run
        // into the hole if its home is not between the hole and itself.
        let mut next = (hole + 1) & self.mask;
        while self.slots[next] != EMPTY {
            let home = self.home_of(self.slots[next], accounts);
            let distance_to_home = next.wrapping_sub(home) & self.mask;
            let distance_to_hole = next.wrapping_sub(hole) & self.mask;
            if distance_to_home >= distance_to_hole {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
            next = (next + 1) & self.mask;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        Some(place)
    }

    /// Makes room for `capacity` accounts in all without growing again.
    pub fn reserve(&mut self, capacity: usize, accounts: &[Account]) {
        if slots_for(capacity) > self.slots.len() {
            self.rebuild(slots_for(capacity), accounts);
        }
    }

    /// Touches the home slot of every id so that the lookups that follow hit
    /// the cache: the loads are independent, so they overlap in the CPU.
    pub fn warm(&self, ids: impl Iterator<Item = u128>) -> u64 {
        let touched = ids.fold(0, |touched, id| touched ^ self.slots[hash(id) as usize & self.mask]);
        std::hint::black_box(touched)
    }

    /// The slot and place of the account with this id.
    fn find(&self, id: u128, accounts: &[Account]) -> Option<(usize, u32)> {
        let hash = hash(id);
        let tag = tag_of(hash);
        let mut slot = hash as usize & self.mask;
        loop {
            let entry = self.slots[slot];
            if entry == EMPTY {
                return None;
            }
            let place = entry as u32;
            if entry >> 32 == tag && accounts.get(place as usize).is_some_and(|account| account.id == id) {
                return Some((slot, place));
            }
            slot = (slot + 1) & self.mask;
        }
    }

    fn put(&mut self, hash: u64, place: u32) {
        let mut slot = hash as usize & self.mask;
        while self.slots[slot] != EMPTY {
            slot = (slot + 1) & self.mask;
        }
        self.slots[slot] = tag_of(hash) << 32 | u64::from(place);
    }

    fn home_of(&self, entry: u64, accounts: &[Account]) -> usize {
        let account = &accounts[entry as u32 as usize];
        hash(account.id) as usize & self.mask
    }

    fn rebuild(&mut self, slots: usize, accounts: &[Account]) {
        let mut rebuilt = AccountIndex::with_capacity(0);
        rebuilt.slots = vec![EMPTY; slots];
        rebuilt.mask = slots - 1;
        for &entry in self.slots.iter().filter(|&&entry| entry != EMPTY) {
            rebuilt.put(hash(accounts[entry as u32 as usize].id), entry as u32);
        }
        rebuilt.len = self.len;
        *self = rebuilt;
    }
}

/// Slots for `capacity` accounts at most seven eighths full: a power of two.
fn slots_for(capacity: usize) -> usize {
    capacity.saturating_mul(LOAD_DENOMINATOR).div_ceil(LOAD_NUMERATOR).next_power_of_two().max(SLOTS_MIN)
}

/// The hash's high 32 bits (the home slot comes from its low bits).
fn tag_of(hash: u64) -> u64 {
    hash >> 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn account(id: u128) -> Account {
        Account { id, ..Account::default() }
    }

    proptest! {
        /// The index behaves as a map under inserts, removals of the newest
        /// account (the only removal the ledger makes: undoing a chain) and
        /// growth, with ids crowded into few home slots.
        #[test]
        fn behaves_like_a_map(operations in prop::collection::vec((any::<bool>(), 1u128..3000), 1..3000)) {
            let mut index = AccountIndex::with_capacity(4);
            let mut accounts: Vec<Account> = Vec::new();
            let mut model: HashMap<u128, u32> = HashMap::new();
            for (insert, id) in operations {
                let id = id << 100 | id;
                if insert && !model.contains_key(&id) {
                    let place = accounts.len() as u32;
                    index.insert(id, place, &accounts);
                    accounts.push(account(id));
                    model.insert(id, place);
                } else if let Some(newest) = accounts.last().map(|account| account.id) {
                    prop_assert_eq!(index.remove(newest, &accounts), model.remove(&newest));
                    accounts.pop();
                }
                prop_assert_eq!(index.get(id, &accounts), model.get(&id).copied());
                prop_assert_eq!(index.len, model.len());
            }
            for (&id, &place) in &model {
                prop_assert_eq!(index.get(id, &accounts), Some(place));
            }
        }
    }

    #[test]
    fn room_reserved_is_not_grown_past_and_a_slot_is_eight_bytes() {
        let mut index = AccountIndex::default();
        let mut accounts = Vec::new();
        index.reserve(3_000, &accounts);
        let reserved = index.memory_bytes();
        assert_eq!(reserved, 4_096 * 8, "3,000 accounts at most seven eighths of 4,096 slots");
        for id in 1..=3_584u128 {
            index.insert(id, accounts.len() as u32, &accounts);
            accounts.push(account(id));
        }
        assert_eq!(index.memory_bytes(), reserved, "seven eighths full, not grown");
        index.insert(3_585, 3_584, &accounts);
        accounts.push(account(3_585));
        assert_eq!(index.memory_bytes(), reserved * 2, "past seven eighths it doubles");
        assert!((1..=3_585u128).all(|id| index.get(id, &accounts) == Some(id as u32 - 1)));
        assert_eq!(index.get(3_586, &accounts), None);
    }
}
