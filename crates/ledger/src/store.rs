//! Transfer storage inside the ledger: the window of recent transfers.
//!
//! Bodies sit in fixed-size chunks (growing never copies what is stored, so
//! a batch never stalls on a reallocation of gigabytes), found by id. An id
//! above every id stored before it (a platform's ids grow with its clock)
//! needs no index: such transfers are listed by position, which is also their
//! ids' order, and found by a binary search; only the others go in an
//! [`IdIndex`]. Every stored transfer has a position: its place in the order
//! of all transfers ever applied, from 0. An account's history is a chain of
//! back-links (positions) through its transfers. With an id horizon the
//! oldest chunks are evicted, so memory holds a window of positions
//! `first..len`; older transfers live on in the journal's history file, at
//! the same positions.

use std::collections::VecDeque;

use crate::index::IdIndex;
use crate::transfer::{Transfer, TransferFlags};

/// Transfers per chunk: 16,384 × 144 bytes ≈ 2.3 MiB, small enough that a
/// new chunk is cheap to allocate and map, and the unit of eviction.
pub(crate) const CHUNK_TRANSFERS: usize = 1 << 14;

/// "No transfer": the end of an account's back-links.
pub const NO_TRANSFER: u64 = u64::MAX;

/// A stored transfer and, for each of its two accounts, the position of the
/// account's previous transfer (so that an account's history is a linked
/// list through the transfers themselves instead of a growing list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoredTransfer {
    pub transfer: Transfer,
    pub previous_of_debit: u64,
    pub previous_of_credit: u64,
}

impl StoredTransfer {
    /// The position of the transfer before this one in `account_id`'s history.
    pub fn previous_of(&self, account_id: u128) -> u64 {
        if self.transfer.debit_account_id == account_id {
            self.previous_of_debit
        } else {
            debug_assert_eq!(self.transfer.credit_account_id, account_id);
            self.previous_of_credit
        }
    }
}

const EMPTY: StoredTransfer = StoredTransfer {
    transfer: Transfer {
        id: 0,
        debit_account_id: 0,
        credit_account_id: 0,
        amount: 0,
        pending_id: 0,
        user_data: 0,
        timeout_seconds: 0,
        ledger: 0,
        code: 0,
        flags: TransferFlags::empty(),
        timestamp: 0,
    },
    previous_of_debit: NO_TRANSFER,
    previous_of_credit: NO_TRANSFER,
};

/// Evicted chunks kept for reuse beyond the room reserved: enough for the
/// window's jitter, while one that shrinks (the midnight peak's millions of
/// transfers an hour later) gives the rest of its memory back.
const SPARE_CHUNKS_KEPT: usize = 4;

/// Chunks are allocated whole and written at once (`EMPTY` is not all
/// zeroes), so that their pages are mapped when the chunk is made, not by a
/// page fault in the middle of a batch; evicted chunks are kept for reuse
/// (up to [`SPARE_CHUNKS_KEPT`] beyond the room reserved).
fn new_chunk() -> Box<[StoredTransfer]> {
    vec![EMPTY; CHUNK_TRANSFERS].into_boxed_slice()
}

#[derive(Default)]
pub(crate) struct TransferStore {
    chunks: VecDeque<Box<[StoredTransfer]>>,
    /// Mapped chunks waiting to be used (reserved or evicted).
    spare: Vec<Box<[StoredTransfer]>>,
    /// Position of the first transfer in memory (a multiple of the chunk size).
    first: u64,
    /// Position the next transfer will get: transfers ever stored.
    len: u64,
    /// Where the transfers not in `ascending` are, by id.
    index: IdIndex,
    /// The positions, oldest first, of the transfers in memory whose id was
    /// above every id stored before it: their ids ascend with their
    /// positions. A new id above `ceiling` is therefore new without a look
    /// at the index: with tens of millions of transfers in memory, that look
    /// and the slot it took were cache misses of every transfer, and the
    /// index's rebuilds as the midnight peak's window shrank stopped the
    /// writer for seconds.
    ascending: VecDeque<u64>,
    /// The id of `ascending`'s oldest (`None`: it is empty): an id below it
    /// is not there, without a read of the list.
    lowest_ascending: Option<u128>,
    /// The highest id stored since the store began (`None`: none yet); never
    /// lowered, so at or above every id in memory.
    ceiling: Option<u128>,
    /// Transfers reserved for: chunks for them stay mapped.
    reserved: usize,
}

impl TransferStore {
    pub fn with_capacity(transfers: usize) -> TransferStore {
        let mut store = TransferStore::default();
        store.reserve(transfers);
        store
    }

    /// A store whose window starts at `first`, with room for the image's
    /// `transfers` (restoring from an image). Room, not a reservation: the
    /// window shrinks below it as its transfers leave.
    pub fn starting_at(first: u64, transfers: usize) -> TransferStore {
        assert_eq!(first % CHUNK_TRANSFERS as u64, 0, "windows start at a chunk boundary");
        // The index grows as it needs: most ids of a platform's image ascend
        // and take no slot.
        let mut store = TransferStore { first, len: first, ..Default::default() };
        store.map_chunks_for(transfers);
        store
    }

    /// Makes room for `transfers` in memory (pre-mapped), kept however few
    /// the window holds: for their bodies, and in the index for ids in any
    /// order.
    pub fn reserve(&mut self, transfers: usize) {
        self.reserved = self.reserved.max(transfers);
        self.index.reserve(transfers);
        self.ascending.reserve(transfers.saturating_sub(self.ascending.len()));
        self.map_chunks_for(transfers);
    }

    fn map_chunks_for(&mut self, transfers: usize) {
        while (self.chunks.len() + self.spare.len()) * CHUNK_TRANSFERS < transfers {
            self.spare.push(new_chunk());
        }
    }

    /// Bytes allocated for bodies and index.
    pub fn memory_bytes(&self) -> usize {
        (self.chunks.len() + self.spare.len()) * CHUNK_TRANSFERS * size_of::<StoredTransfer>()
            + self.index.memory_bytes()
            + self.ascending.capacity() * size_of::<u64>()
    }

    /// Transfers ever stored (the next position).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The first position still in memory.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The transfer at `position`, if it is in memory.
    pub fn get(&self, position: u64) -> Option<&StoredTransfer> {
        if position < self.first || position >= self.len {
            return None;
        }
        let offset = (position - self.first) as usize;
        Some(&self.chunks[offset / CHUNK_TRANSFERS][offset % CHUNK_TRANSFERS])
    }

    pub fn position_of(&self, id: u128) -> Option<u64> {
        if self.ascends(id) {
            return None;
        }
        if let Some(position) = self.index.get(id) {
            return Some(position);
        }
        if self.lowest_ascending.is_none_or(|lowest| id < lowest) {
            return None;
        }
        self.ascending_position_of(id)
    }

    fn id_at(&self, position: u64) -> u128 {
        self.get(position).map_or(0, |stored| stored.transfer.id)
    }

    /// The position of `id` among the ascending ids, by a binary search
    /// (the newest first: a caller that just stored a transfer asks for it).
    fn ascending_position_of(&self, id: u128) -> Option<u64> {
        let newest = *self.ascending.back()?;
        if self.id_at(newest) == id {
            return Some(newest);
        }
        let found = self.ascending.binary_search_by(|&position| self.id_at(position).cmp(&id)).ok()?;
        self.ascending.get(found).copied()
    }

    /// Whether `id` would be listed in `ascending` if stored now.
    fn ascends(&self, id: u128) -> bool {
        self.ceiling.is_none_or(|ceiling| id > ceiling)
    }

    pub fn push(&mut self, stored: StoredTransfer) -> u64 {
        let position = self.len;
        let offset = (position - self.first) as usize;
        let (chunk, slot) = (offset / CHUNK_TRANSFERS, offset % CHUNK_TRANSFERS);
        if chunk == self.chunks.len() {
            let fresh = self.spare.pop().unwrap_or_else(new_chunk);
            self.chunks.push_back(fresh);
        }
        self.chunks[chunk][slot] = stored;
        let id = stored.transfer.id;
        if self.ascends(id) {
            self.ascending.push_back(position);
            self.lowest_ascending = self.lowest_ascending.or(Some(id));
            self.ceiling = Some(id);
        } else {
            self.index.insert(id, position);
        }
        self.len += 1;
        position
    }

    /// The transfers in memory, oldest first, from `position` on.
    pub fn iter_from(&self, position: u64) -> impl Iterator<Item = &StoredTransfer> + '_ {
        (position.max(self.first)..self.len).filter_map(|position| self.get(position))
    }

    /// Brings the index slots of these ids into cache (see [`IdIndex::warm`]):
    /// not for ids above every stored one, which are found new without it.
    pub fn warm(&self, ids: impl Iterator<Item = u128>) {
        self.index.warm(ids.filter(|&id| !self.ascends(id)));
    }

    /// Forgets where the transfer at `position` is (it leaves memory).
    fn unlist(&mut self, position: u64, id: u128) {
        let listed = |entry: Option<&u64>| entry == Some(&position);
        // Only eviction takes the oldest of several, and sets the lowest id
        // once the window has moved (mid-eviction, positions do not resolve).
        if listed(self.ascending.front()) {
            self.ascending.pop_front();
        } else if listed(self.ascending.back()) {
            self.ascending.pop_back();
        } else {
            let removed = self.index.remove(id);
            assert_eq!(removed, Some(position), "transfer {id} listed at {position}");
        }
        if self.ascending.is_empty() {
            self.lowest_ascending = None;
        }
    }

    /// Removes the newest transfer (undoing a failed linked chain).
    pub fn pop(&mut self) -> Option<StoredTransfer> {
        if self.len == self.first {
            return None;
        }
        let stored = *self.get(self.len - 1)?;
        self.unlist(self.len - 1, stored.transfer.id);
        self.len -= 1;
        if ((self.len - self.first) as usize).is_multiple_of(CHUNK_TRANSFERS)
            && let Some(emptied) = self.chunks.pop_back()
        {
            self.keep_or_free(emptied);
        }
        Some(stored)
    }

    /// Evicts the oldest chunk if it is full and its newest transfer is
    /// older than `cutoff`; calls `evicted` for each transfer it drops.
    pub fn evict_oldest_chunk(&mut self, cutoff: u64, floor: u64, mut evicted: impl FnMut(&Transfer)) -> bool {
        let full = self.len - self.first >= CHUNK_TRANSFERS as u64 && self.first + CHUNK_TRANSFERS as u64 <= floor;
        let Some(oldest) = self.chunks.front() else {
            return false;
        };
        if !full || oldest[CHUNK_TRANSFERS - 1].transfer.timestamp >= cutoff {
            return false;
        }
        let Some(chunk) = self.chunks.pop_front() else {
            return false;
        };
        for (position, stored) in (self.first..).zip(chunk.iter()) {
            self.unlist(position, stored.transfer.id);
            evicted(&stored.transfer);
        }
        self.first += CHUNK_TRANSFERS as u64;
        self.lowest_ascending = self.ascending.front().map(|&oldest| self.id_at(oldest));
        self.keep_or_free(chunk);
        self.index.shrink_if_sparse();
        // Gives the midnight peak's room back as the index does (the same
        // proportions: rebuilt a quarter full when an eighth full).
        if self.ascending.len().max(self.reserved).max(CHUNK_TRANSFERS) * 8 <= self.ascending.capacity() {
            self.ascending.shrink_to((self.ascending.len() * 4).max(self.reserved));
        }
        true
    }

    /// Keeps an emptied chunk for reuse if the room reserved or the spare
    /// chunks kept need it; frees it otherwise.
    fn keep_or_free(&mut self, chunk: Box<[StoredTransfer]>) {
        let mapped_transfers = (self.chunks.len() + self.spare.len()) * CHUNK_TRANSFERS;
        if mapped_transfers < self.reserved || self.spare.len() < SPARE_CHUNKS_KEPT {
            self.spare.push(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn stored(id: u128) -> StoredTransfer {
        StoredTransfer { transfer: Transfer { id, ..Transfer::default() }, ..EMPTY }
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Ids above every one so far, this many.
        Rising(u16),
        /// An id anywhere below the rising ones (skipped if in memory: the
        /// ledger never stores an id twice).
        Anywhere(u32),
        /// Undo the newest (a failed chain).
        Pop,
        /// Store again the id popped last (a failed chain retried), if any.
        Retry,
        /// Evict the oldest chunk if it is full.
        Evict,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (1u16..6_000).prop_map(Step::Rising),
            3 => any::<u32>().prop_map(Step::Anywhere),
            1 => Just(Step::Pop),
            1 => Just(Step::Retry),
            1 => Just(Step::Evict),
        ]
    }

    /// The store against a plain map of what is in memory: every id found
    /// where it was stored, ids not in memory not found, whichever way each
    /// was listed (ascending or in the index).
    fn run(steps: Vec<Step>) {
        let mut store = TransferStore::default();
        let mut model: BTreeMap<u128, u64> = BTreeMap::new();
        let mut order: VecDeque<u128> = VecDeque::new();
        let mut rising = 1u128 << 40;
        let mut gone: Vec<u128> = Vec::new();
        for step in steps {
            match step {
                Step::Rising(count) => {
                    for _ in 0..count {
                        rising += 3;
                        model.insert(rising, store.push(stored(rising)));
                        order.push_back(rising);
                    }
                }
                Step::Anywhere(id) => {
                    let id = u128::from(id) + 1;
                    if let std::collections::btree_map::Entry::Vacant(entry) = model.entry(id) {
                        entry.insert(store.push(stored(id)));
                        order.push_back(id);
                    }
                }
                Step::Pop => {
                    let popped = store.pop().map(|stored| stored.transfer.id);
                    assert_eq!(popped, order.pop_back());
                    if let Some(id) = popped {
                        model.remove(&id);
                        gone.push(id);
                    }
                }
                Step::Retry => {
                    if let Some(id) = gone.pop().filter(|id| !model.contains_key(id)) {
                        model.insert(id, store.push(stored(id)));
                        order.push_back(id);
                    }
                }
                Step::Evict => {
                    let mut evicted = Vec::new();
                    if store.evict_oldest_chunk(u64::MAX, u64::MAX, |transfer| evicted.push(transfer.id)) {
                        for id in evicted {
                            assert_eq!(order.pop_front(), Some(id));
                            model.remove(&id);
                            gone.push(id);
                        }
                    }
                }
            }
            let recent = order.iter().rev().take(64);
            let probes = recent.chain(model.keys().step_by(model.len() / 64 + 1));
            for &id in probes {
                assert_eq!(store.position_of(id), model.get(&id).copied(), "id {id}");
            }
            let absent = [0, 2, rising + 1, rising + 2, u128::MAX - 1];
            for &absent in gone.iter().rev().take(64).chain(&absent) {
                assert_eq!(store.position_of(absent), model.get(&absent).copied(), "id {absent}");
            }
        }
        for (&id, &position) in &model {
            assert_eq!(store.position_of(id), Some(position), "id {id}");
            assert_eq!(store.get(position).map(|stored| stored.transfer.id), Some(id));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn ids_are_found_where_stored_however_they_came(steps in prop::collection::vec(step(), 1..40)) {
            run(steps);
        }
    }

    #[test]
    fn ascending_ids_take_no_slot_in_the_index() {
        let mut store = TransferStore::default();
        for id in 1..=100_000u128 {
            store.push(stored(id * 2));
        }
        assert_eq!(store.index.len(), 0);
        assert_eq!(store.position_of(2 * 77_777), Some(77_776));
        assert_eq!(store.position_of(2 * 77_777 + 1), None);
        // One below the ceiling goes to the index, and is found there.
        store.push(stored(3));
        assert_eq!(store.index.len(), 1);
        assert_eq!(store.position_of(3), Some(100_000));
        assert_eq!(store.pop().map(|stored| stored.transfer.id), Some(3));
        assert_eq!((store.index.len(), store.position_of(3)), (0, None));
    }
}
