//! zhifu's ledger: a pure, deterministic, double-entry state machine.
//!
//! Layout:
//! - [`account`]: accounts, their flags and balances.
//! - [`transfer`]: transfers, their flags, and the pending-transfer lifecycle.
//! - [`result`]: one machine-readable result per event in a batch.
//! - [`state`]: [`Ledger`], which applies batches and answers lookups.
//! - [`check`]: the conservation invariant (debits equal credits, per ledger).
//!
//! The ledger knows nothing of disks, clocks, threads, HTTP or JSON. It is
//! handed batches together with a timestamp and returns one result per event;
//! the same batches in the same order always produce the same state, which is
//! what makes recovery a replay of the journal.

pub mod account;
pub mod check;
pub mod result;
pub mod state;
pub mod transfer;

pub use account::{Account, AccountFlags, NewAccount};
pub use check::{ConservationError, LedgerTotals};
pub use result::{BatchError, CreateAccountResult, CreateTransferResult};
pub use state::{Ledger, LedgerStats};
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
pub const AMOUNT_MAX: Amount = u128::MAX;

/// Nanoseconds in a second: pending timeouts are given in seconds, the ledger
/// counts time in nanoseconds.
pub const NANOS_PER_SECOND: u64 = 1_000_000_000;
