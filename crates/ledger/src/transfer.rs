//! Transfers: immutable movements of an amount from one account to another.

use crate::Amount;

bitflags::bitflags! {
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TransferFlags: u16 {
        /// This transfer and the next one in the batch succeed or fail together.
        const LINKED = 1 << 0;
        /// Phase one of a two-phase transfer: the amount is held (pending)
        /// until posted, voided or expired.
        const PENDING = 1 << 1;
        /// Phase two: post the pending transfer `pending_id`, in full or part.
        const POST_PENDING = 1 << 2;
        /// Phase two: release the pending transfer `pending_id`.
        const VOID_PENDING = 1 << 3;
        /// `amount` is a maximum, clamped to what the debit account can spend.
        const BALANCING_DEBIT = 1 << 4;
        /// `amount` is a maximum, clamped to what the credit account can take.
        const BALANCING_CREDIT = 1 << 5;
        /// Close the debit account while this (pending) transfer stands.
        const CLOSING_DEBIT = 1 << 6;
        /// Close the credit account while this (pending) transfer stands.
        const CLOSING_CREDIT = 1 << 7;
    }
}

impl TransferFlags {
    pub(crate) fn is_post_or_void(self) -> bool {
        self.intersects(TransferFlags::POST_PENDING | TransferFlags::VOID_PENDING)
    }

    pub(crate) fn is_balancing(self) -> bool {
        self.intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT)
    }

    pub(crate) fn is_closing(self) -> bool {
        self.intersects(TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT)
    }
}

/// A transfer, both as submitted and as stored. When stored, `timestamp` is
/// the ledger's, the amount is what actually moved (after balancing or a
/// partial post), and a post or void carries its pending transfer's accounts,
/// ledger and code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// Client-chosen, unique, neither 0 nor `u128::MAX`; makes retries safe.
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: Amount,
    /// For a post or void: the pending transfer it resolves. Otherwise 0.
    pub pending_id: u128,
    /// Opaque to the ledger (for example the trade this transfer belongs to).
    pub user_data: u128,
    /// For a pending transfer: seconds after which it expires (0: never).
    pub timeout_seconds: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    /// Assigned by the ledger; must be 0 when submitted.
    pub timestamp: u64,
}

/// Where a pending transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}
