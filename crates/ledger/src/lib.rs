//! zhifu's ledger: a pure, deterministic, double-entry state machine.
//!
//! Layout:
//! - [`account`]: accounts, their flags and balances.
//! - [`transfer`]: transfers, their flags, and the pending-transfer lifecycle.
//! - [`result`]: one machine-readable result per event in a batch.
//! - [`state`]: [`Ledger`], which applies batches and answers lookups.
//! - [`check`]: the conservation invariant (debits equal credits, per ledger).
//! - [`image`]: the state as plain data (for snapshots).
//!
//! The ledger knows nothing of disks, clocks, threads, HTTP or JSON. It is
//! handed batches together with a timestamp and returns one result per event;
//! the same batches in the same order always produce the same state, which is
//! what makes recovery a replay of the journal.
//!
//! ```
//! use ledger::{AccountFlags, CreateTransferResult, Ledger, NewAccount, Transfer};
//!
//! let mut ledger = Ledger::new();
//! let wallet = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
//! ledger.create_accounts(1, &[
//!     NewAccount { id: 1, ledger: 1, code: 1, ..Default::default() }, // bank clearing
//!     NewAccount { id: 2, ledger: 1, code: 2, flags: wallet, ..Default::default() }, // a wallet
//! ])?;
//! let top_up = Transfer {
//!     id: 10, debit_account_id: 1, credit_account_id: 2, amount: 8_800, ledger: 1, code: 1,
//!     ..Default::default()
//! };
//! let overspend = Transfer { id: 11, debit_account_id: 2, credit_account_id: 1, amount: 9_000, ..top_up };
//! let results = ledger.create_transfers(2, &[top_up, overspend])?;
//! assert_eq!(results, [CreateTransferResult::Ok, CreateTransferResult::ExceedsCredits]);
//! assert_eq!(ledger.account(2).map(|a| a.credits_posted), Some(8_800));
//! ledger.check_conservation()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod account;
mod account_index;
pub mod check;
pub mod image;
mod index;
pub mod result;
pub mod state;
mod store;
pub mod transfer;

pub use account::{Account, AccountFlags, NewAccount};
pub use check::{ConservationError, LedgerTotals};
pub use image::{ImageError, LedgerImage, PendingRecord};
pub use result::{BatchError, CreateAccountResult, CreateTransferResult};
pub use state::{Ledger, LedgerConfig, LedgerStats};
pub use store::{NO_TRANSFER, StoredTransfer};
pub use transfer::{PendingStatus, Transfer, TransferFlags};

/// The most events one batch may carry. TigerBeetle's limit (what fits a 1 MiB
/// message of 128-byte events); large enough to amortise one durable commit
/// over thousands of transfers, small enough to bound a batch's latency.
pub const BATCH_EVENTS_MAX: usize = 8189;

/// An amount in minor units (fen for CNY, a thousandth of a unit for fund
/// shares). `u128` so that balances, which are sums of amounts, cannot
/// realistically overflow; overflow is still checked and reported.
pub type Amount = u128;

/// Posting a pending transfer with this amount posts whatever is pending.
pub const AMOUNT_PENDING_WHOLE: Amount = u128::MAX;

/// Nanoseconds in a second: pending timeouts are given in seconds, the ledger
/// counts time in nanoseconds. zhifu's one home for time constants: every
/// crate counts time as nanoseconds since the Unix epoch.
pub const NANOS_PER_SECOND: u64 = 1_000_000_000;
pub const NANOS_PER_MINUTE: u64 = 60 * NANOS_PER_SECOND;
pub const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MINUTE;
pub const NANOS_PER_DAY: u64 = 24 * NANOS_PER_HOUR;
