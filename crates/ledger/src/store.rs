//! Transfer storage inside the ledger: the window of recent transfers.
//!
//! Bodies sit in fixed-size chunks (growing never copies what is stored, so
//! a batch never stalls on a reallocation of gigabytes), found by id through
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
    index: IdIndex,
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
        let mut store =
            TransferStore { first, len: first, index: IdIndex::with_capacity(transfers), ..Default::default() };
        store.map_chunks_for(transfers);
        store
    }

    /// Makes room for `transfers` in memory (pre-mapped), kept however few
    /// the window holds.
    pub fn reserve(&mut self, transfers: usize) {
        self.reserved = self.reserved.max(transfers);
        self.index.reserve(transfers);
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
        self.index.get(id)
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
        self.index.insert(stored.transfer.id, position);
        self.len += 1;
        position
    }

    /// The transfers in memory, oldest first, from `position` on.
    pub fn iter_from(&self, position: u64) -> impl Iterator<Item = &StoredTransfer> + '_ {
        (position.max(self.first)..self.len).filter_map(|position| self.get(position))
    }

    /// Brings the index slots of these ids into cache (see [`IdIndex::warm`]).
    pub fn warm(&self, ids: impl Iterator<Item = u128>) {
        self.index.warm(ids);
    }

    /// Removes the newest transfer (undoing a failed linked chain).
    pub fn pop(&mut self) -> Option<StoredTransfer> {
        if self.len == self.first {
            return None;
        }
        let stored = *self.get(self.len - 1)?;
        self.index.remove(stored.transfer.id);
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
        for stored in chunk.iter() {
            self.index.remove(stored.transfer.id);
            evicted(&stored.transfer);
        }
        self.first += CHUNK_TRANSFERS as u64;
        self.keep_or_free(chunk);
        self.index.shrink_if_sparse();
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
