//! zhifu's products as one journaled state machine over the ledger.
//!
//! Layout:
//! - [`accounts`]: how products map onto ledger accounts and transfer codes.
//! - `archive`: records moved out of memory into the journal's archive file (events).
//! - `at_rest`: how those records are encoded (compactly: times and numbers as distances).
//! - `numbered`: values by ascending number (parties, the trade directory) in a ranked bitmap.
//! - [`calendar`]: business dates in China Standard Time.
//! - [`command`]: commands (with their time and idempotency tag) and outcomes.
//! - [`fees`]: fee schedules as data.
//! - [`platform`]: [`Platform`], the state machine the journal makes durable.
//! - [`trades`] and `trade_actions`: merchant trades, refunds, events, deliveries.
//! - [`text`]: which texts from strangers are shown to others.
//!
//! The platform never touches a balance: every movement is a ledger transfer
//! or a linked chain of them, applied in the same command as the records it
//! changes. It knows nothing of HTTP or JSON.

pub mod access;
pub mod accounts;
mod archive;
mod at_rest;
mod bank;
mod books;
pub mod calendar;
pub mod command;
mod deliveries;
pub mod disputes;
mod due_queue;
pub mod faults;
pub mod fees;
pub mod freezes;
pub mod fund;
mod idempotency;
mod invariant;
mod key_table;
pub mod loans;
pub mod marketing;
mod numbered;
pub mod platform;
mod reference_index;
pub mod rejection;
pub mod splits;
mod state_io;
pub mod takings;
pub mod text;
mod trade_actions;
mod trade_directory;
pub mod trades;
pub mod units;

pub use access::{
    Actor, AuditEntry, AuditNote, Endpoint, KeyGrant, Staff, StaffRole, Target, audit_lines, read_archived_audit,
};
pub use bank::{BankEntry, BankEntryKind, Withdrawal, WithdrawalStatus};
pub use books::Invariant;
pub use command::{
    Action, Command, DeliveryAttempt, IdempotencyTag, NOTIFY_URL, NewCampaign, NewTrade, Outcome, PartyKind, PaySource,
    PlatformConfig, Rejection,
};
pub use deliveries::{ATTEMPTS_SCANNED_MAX, QueueFigures, attempts_of_event, read_archived_attempt};
pub use fees::{FeeSchedule, FreeQuota, Product, QuotaPeriod};
pub use fund::{FundPosition, YieldDay};
pub use idempotency::{IDEMPOTENCY_RETENTION_NANOS, REMEMBERED_REFUSALS_PER_CALLER_MAX};
pub use loans::{Credit, Loan, LoanStatus, Portfolio};
pub use marketing::{Campaign, Coupon, RedPacket, SplitMode};
pub use platform::{AMOUNT_MAX, Balance, Party, Platform, TICK_ITEMS_MAX};
pub use trade_actions::{
    PartyTrades, REFUNDS_PER_TRADE_MAX, TradeAt, list_trades_newest_first, read_archived_bank_entry,
    read_archived_event, read_archived_trade, walk_events, walk_party_trades, walk_trade_events,
};
pub use trades::{Delivery, Event, EventData, Refund, Trade, TradeMode, TradeStatus};
pub use units::{
    AuditNumber, CampaignNumber, CouponNumber, EndpointNumber, EventNumber, Fen, LoanNumber, PartyNumber,
    RedPacketNumber, StaffNumber, Timestamp, TradeNumber,
};
