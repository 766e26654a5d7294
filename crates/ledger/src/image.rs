//! The ledger's state as plain data, for snapshots: everything needed to
//! rebuild an identical ledger, and a digest to prove that it is identical.

use std::hash::{Hash, Hasher};

use crate::account::Account;
use crate::state::Ledger;
use crate::transfer::{PendingStatus, Transfer};

/// One pending transfer's status and expiry (0: never), by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingRecord {
    pub id: u128,
    pub status: PendingStatus,
    pub expires_at: u64,
}

/// Why an image cannot be a ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Ids 0 and `u128::MAX` are never stored.
    InvalidId {
        id: u128,
    },
    DuplicateAccount {
        id: u128,
    },
    DuplicateTransfer {
        id: u128,
    },
    TransferAccountMissing {
        transfer_id: u128,
        account_id: u128,
    },
    PendingTransferMissing {
        id: u128,
    },
    Unbalanced(String),
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::InvalidId { id } => {
                write!(f, "id {id} is not a valid account or transfer id")
            }
            ImageError::DuplicateAccount { id } => write!(f, "account {id} appears twice"),
            ImageError::DuplicateTransfer { id } => write!(f, "transfer {id} appears twice"),
            ImageError::TransferAccountMissing {
                transfer_id,
                account_id,
            } => {
                write!(
                    f,
                    "transfer {transfer_id} names account {account_id}, which is not in the image"
                )
            }
            ImageError::PendingTransferMissing { id } => {
                write!(
                    f,
                    "pending status for transfer {id}, which is not in the image"
                )
            }
            ImageError::Unbalanced(detail) => write!(f, "image is unbalanced: {detail}"),
        }
    }
}

impl std::error::Error for ImageError {}

impl Ledger {
    /// Every stored transfer, in the order applied.
    pub fn transfers_in_order(&self) -> impl Iterator<Item = &Transfer> + '_ {
        self.transfer_store().iter()
    }

    /// Every pending transfer's status, ordered by id (deterministic).
    pub fn pending_records(&self) -> Vec<PendingRecord> {
        let mut records = self.pending_entries();
        records.sort_unstable_by_key(|record| record.id);
        records
    }

    /// Rebuilds a ledger from the parts of an image. The result is checked:
    /// every reference resolves and debits equal credits.
    pub fn restore(
        accounts: Vec<Account>,
        transfers: impl ExactSizeIterator<Item = Transfer>,
        pending: Vec<PendingRecord>,
        last_timestamp: u64,
    ) -> Result<Ledger, ImageError> {
        let mut ledger = Ledger::with_capacity(accounts.len(), transfers.len());
        for account in accounts {
            ledger.restore_account(account)?;
        }
        for transfer in transfers {
            ledger.restore_transfer(transfer)?;
        }
        for record in pending {
            ledger.restore_pending(record)?;
        }
        ledger.set_last_timestamp(last_timestamp);
        ledger
            .check_conservation()
            .map_err(|error| ImageError::Unbalanced(error.to_string()))?;
        Ok(ledger)
    }

    /// A digest of the whole state: equal digests mean equal ledgers (for one
    /// build of zhifu; the hash function is not promised across versions).
    pub fn digest(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        self.last_timestamp().hash(&mut hasher);
        self.accounts().hash(&mut hasher);
        for transfer in self.transfers_in_order() {
            transfer.hash(&mut hasher);
        }
        self.pending_records().hash(&mut hasher);
        hasher.finish()
    }
}
