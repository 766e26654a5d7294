//! Accounts: where balances live.

use crate::Amount;

bitflags::bitflags! {
    /// What an account allows. Stored with the account and fixed at creation,
    /// except `CLOSED`, which only closing transfers set and clear.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AccountFlags: u16 {
        /// This account and the next one in the batch succeed or fail together.
        const LINKED = 1 << 0;
        /// A wallet: it may not spend more than it received
        /// (`debits_pending + debits_posted <= credits_posted`).
        const DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1;
        /// The mirror image, for accounts that represent money owed to us
        /// (`credits_pending + credits_posted <= debits_posted`).
        const CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2;
        /// No new transfers; set by a pending transfer with a closing flag and
        /// cleared again if that transfer is voided or expires.
        const CLOSED = 1 << 3;
    }
}

/// A request to create an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NewAccount {
    /// Client-chosen, unique, neither 0 nor `u128::MAX`.
    pub id: u128,
    /// Opaque to the ledger (for example the owning party).
    pub user_data: u64,
    /// The currency or asset: transfers only move amounts between accounts of
    /// the same ledger. Not 0.
    pub ledger: u32,
    /// What kind of account this is (wallet, escrow, revenue...). Not 0.
    pub code: u16,
    pub flags: AccountFlags,
}

/// An account as the ledger keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Account {
    pub id: u128,
    pub debits_pending: Amount,
    pub debits_posted: Amount,
    pub credits_pending: Amount,
    pub credits_posted: Amount,
    pub user_data: u64,
    /// When the account was created, in ledger nanoseconds.
    pub timestamp: u64,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
}

impl Account {
    pub(crate) fn new(spec: &NewAccount, timestamp: u64) -> Account {
        Account {
            id: spec.id,
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            user_data: spec.user_data,
            timestamp,
            ledger: spec.ledger,
            code: spec.code,
            flags: spec.flags - AccountFlags::LINKED,
        }
    }

    /// What a debit-limited account (a wallet) can still spend: posted credits
    /// less everything debited or held. Zero when nothing is left.
    pub fn debit_headroom(&self) -> Amount {
        self.credits_posted.saturating_sub(self.debits_posted).saturating_sub(self.debits_pending)
    }

    /// What a credit-limited account can still be credited.
    pub fn credit_headroom(&self) -> Amount {
        self.debits_posted.saturating_sub(self.credits_posted).saturating_sub(self.credits_pending)
    }

    pub fn is_closed(&self) -> bool {
        self.flags.contains(AccountFlags::CLOSED)
    }

    /// The balances only: what an undo record must restore.
    pub(crate) fn balances(&self) -> Balances {
        Balances {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
            flags: self.flags,
        }
    }

    pub(crate) fn restore(&mut self, balances: Balances) {
        self.debits_pending = balances.debits_pending;
        self.debits_posted = balances.debits_posted;
        self.credits_pending = balances.credits_pending;
        self.credits_posted = balances.credits_posted;
        self.flags = balances.flags;
    }
}

/// The mutable part of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Balances {
    pub debits_pending: Amount,
    pub debits_posted: Amount,
    pub credits_pending: Amount,
    pub credits_posted: Amount,
    pub flags: AccountFlags,
}
