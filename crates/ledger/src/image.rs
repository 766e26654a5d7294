//! The ledger's state as plain data, for snapshots: everything needed to
//! rebuild an identical ledger.

use crate::account::Account;
use crate::state::{Ledger, LedgerConfig};
use crate::store::StoredTransfer;
use crate::transfer::{PendingStatus, Transfer};

/// One pending transfer's status and expiry (0: never), by id, with the
/// pending transfer itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingRecord {
    pub id: u128,
    pub status: PendingStatus,
    pub expires_at: u64,
    pub transfer: Transfer,
}

/// The whole state of a ledger as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerImage {
    pub config: LedgerConfig,
    pub last_timestamp: u64,
    /// Accounts in creation order, each with the position of its newest transfer.
    pub accounts: Vec<(Account, u64)>,
    /// The position of the first transfer in memory (a chunk boundary).
    pub first_position: u64,
    /// The transfers in memory, in position order from `first_position`.
    pub transfers: Vec<StoredTransfer>,
    /// Pending transfers by id, in id order.
    pub pending: Vec<PendingRecord>,
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
    /// The transfers in memory start mid-chunk: windows start at a chunk's first.
    WindowStart {
        first_position: u64,
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
            ImageError::TransferAccountMissing { transfer_id, account_id } => {
                write!(f, "transfer {transfer_id} names account {account_id}, which is not in the image")
            }
            ImageError::PendingTransferMissing { id } => {
                write!(f, "pending status for transfer {id}, which is not in the image")
            }
            ImageError::WindowStart { first_position } => {
                write!(f, "the transfers in memory start at {first_position}, not at a chunk's first")
            }
            ImageError::Unbalanced(detail) => write!(f, "image is unbalanced: {detail}"),
        }
    }
}

impl std::error::Error for ImageError {}

impl Ledger {
    /// The ledger's state as plain data (copies the transfers in memory).
    pub fn image(&self) -> LedgerImage {
        LedgerImage {
            config: self.config(),
            last_timestamp: self.last_timestamp(),
            accounts: self.accounts_with_last_transfer().map(|(account, last)| (*account, last)).collect(),
            first_position: self.first_position_in_memory(),
            transfers: self.stored_transfers_from(0).copied().collect(),
            pending: self.pending_records().collect(),
        }
    }

    /// Rebuilds a ledger from an image. The result is checked: every
    /// reference resolves and debits equal credits.
    pub fn restore(image: LedgerImage) -> Result<Ledger, ImageError> {
        // A snapshot's body is decoded before its digest is checked: a
        // damaged one must come back as an error, never stop the process.
        if !image.first_position.is_multiple_of(crate::store::CHUNK_TRANSFERS as u64) {
            return Err(ImageError::WindowStart { first_position: image.first_position });
        }
        let mut ledger =
            Ledger::empty_for_image(image.config, image.accounts.len(), image.first_position, image.transfers.len());
        for (account, last_transfer) in image.accounts {
            ledger.restore_account(account, last_transfer)?;
        }
        for stored in image.transfers {
            ledger.restore_stored(stored)?;
        }
        for record in image.pending {
            ledger.restore_pending(record)?;
        }
        ledger.set_last_timestamp(image.last_timestamp);
        ledger.check_conservation().map_err(|error| ImageError::Unbalanced(error.to_string()))?;
        Ok(ledger)
    }
}
