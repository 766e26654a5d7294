//! Transfer storage inside the ledger: bodies in fixed-size chunks (growing

//! never copies what is stored, so a batch never stalls on a reallocation of
//! gigabytes), an id index, and per-account history as back-links.

use crate::index::IdIndex;

use crate::transfer::Transfer;

/// Transfers per chunk: 16,384 × 144 bytes ≈ 2.3 MiB, small enough that a
/// new chunk is cheap to allocate and map, large enough that the chunk table
/// stays tiny (7,000 entries for 100 million transfers).
const CHUNK_TRANSFERS: usize = 1 << 14;

/// "No transfer": the end of an account's back-links.
pub(crate) const NO_TRANSFER: u32 = u32::MAX;

/// A stored transfer and, for each of its two accounts, the account's
/// previous transfer (so that an account's history is a linked list through
/// the transfers themselves instead of a growing list per account).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredTransfer {
    pub transfer: Transfer,
    pub previous_of_debit: u32,
    pub previous_of_credit: u32,
}

impl StoredTransfer {
    /// The transfer before this one in `account_id`'s history.
    pub fn previous_of(&self, account_id: u128) -> u32 {
        if self.transfer.debit_account_id == account_id {
            self.previous_of_debit
        } else {
            debug_assert_eq!(self.transfer.credit_account_id, account_id);
            self.previous_of_credit
        }
    }
}

/// Chunks are allocated whole and written at once, so that their pages are
/// mapped when the chunk is made (with `with_capacity`: at start), not by a
/// page fault in the middle of a batch.
#[derive(Default)]
pub(crate) struct TransferStore {
    chunks: Vec<Box<[StoredTransfer]>>,
    len: u32,
    index: IdIndex,
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
        flags: crate::TransferFlags::empty(),
        timestamp: 0,
    },
    previous_of_debit: NO_TRANSFER,
    previous_of_credit: NO_TRANSFER,
};

fn new_chunk() -> Box<[StoredTransfer]> {
    vec![EMPTY; CHUNK_TRANSFERS].into_boxed_slice()
}

impl TransferStore {
    pub fn with_capacity(transfers: usize) -> TransferStore {
        let chunks = (0..transfers.div_ceil(CHUNK_TRANSFERS))
            .map(|_| new_chunk())
            .collect();
        TransferStore {
            chunks,
            len: 0,
            index: IdIndex::with_capacity(transfers),
        }
    }

    /// Makes room for `transfers` in all (pre-mapped, see `with_capacity`).
    pub fn reserve(&mut self, transfers: usize) {
        self.index.reserve(transfers);
        while self.chunks.len() < transfers.div_ceil(CHUNK_TRANSFERS) {
            self.chunks.push(new_chunk());
        }
    }

    /// Bytes allocated for bodies and index.
    pub fn memory_bytes(&self) -> usize {
        self.chunks.len() * CHUNK_TRANSFERS * size_of::<StoredTransfer>()
            + self.index.memory_bytes()
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn get(&self, index: u32) -> &StoredTransfer {
        let index = index as usize;
        &self.chunks[index / CHUNK_TRANSFERS][index % CHUNK_TRANSFERS]
    }

    pub fn index_of(&self, id: u128) -> Option<u32> {
        self.index.get(id)
    }

    pub fn push(&mut self, stored: StoredTransfer) -> u32 {
        let index = self.len;
        assert!(
            index < NO_TRANSFER,
            "fewer than 2^32 - 1 transfers in memory"
        );
        let (chunk, offset) = (
            index as usize / CHUNK_TRANSFERS,
            index as usize % CHUNK_TRANSFERS,
        );
        if chunk == self.chunks.len() {
            self.chunks.push(new_chunk());
        }
        self.chunks[chunk][offset] = stored;
        self.index.insert(stored.transfer.id, index);
        self.len += 1;
        index
    }

    /// Every stored transfer, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Transfer> + '_ {
        (0..self.len).map(|index| &self.get(index).transfer)
    }

    /// Brings the index slots of these ids into cache (see [`IdIndex::warm`]).
    pub fn warm(&self, ids: impl Iterator<Item = u128>) {
        self.index.warm(ids);
    }

    /// Removes the newest transfer (undoing a failed linked chain).
    pub fn pop(&mut self) -> Option<StoredTransfer> {
        let index = self.len.checked_sub(1)?;
        let stored = *self.get(index);
        self.index.remove(stored.transfer.id);
        self.len = index;
        Some(stored)
    }
}
