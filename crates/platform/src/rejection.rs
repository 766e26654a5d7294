//! Why an action was refused, as codes: what the state machine answers and
//! what idempotency records keep. The words are the server's and the
//! gateway's (`server::error::describe`): rewording a message must not
//! change what a replay of the log produces.

use serde::{Deserialize, Serialize};

use crate::calendar::Date;
use crate::command::Outcome;
use crate::units::Fen;

/// The answer to an action refused for `what` input.
pub(crate) fn invalid(what: Invalid) -> Outcome {
    Outcome::Rejected(Rejection::Invalid(what))
}

/// The answer to an action the state of things does not allow.
pub(crate) fn conflict(why: Conflict) -> Outcome {
    Outcome::Rejected(Rejection::Conflict(why))
}

/// The answer to an action naming what does not exist.
pub(crate) fn not_found(what: Missing) -> Outcome {
    Outcome::Rejected(Rejection::NotFound(what))
}

/// Why an action was refused: nothing moved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rejection {
    InsufficientFunds,
    NotFound(Missing),
    Invalid(Invalid),
    Conflict(Conflict),
    LimitExceeded(Limit),
}

/// What an action named that does not exist (or is not the caller's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Missing {
    Party,
    User,
    Merchant,
    Buyer,
    Recipient,
    Sender,
    Sponsor,
    Trade,
    Campaign,
    Coupon,
    Loan,
    RedPacket,
    Endpoint,
    /// An API key (of the caller's party).
    Key,
    Event,
    Staff,
    Dispute,
    Freeze,
}

/// Which input is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Invalid {
    /// Of money moved: 1 fen to `AMOUNT_MAX`.
    Amount,
    OutTradeNo,
    /// A refund's request number.
    RefundRequestNo,
    /// A loan's request number.
    LoanRequestNo,
    /// A split's request number.
    SplitRequestNo,
    /// A split names 1 to `splits::PARTS_PER_SPLIT_MAX` receivers.
    SplitParts,
    /// Lending terms beyond their bounds (`loans::DAILY_RATE_BPS_MAX`, …).
    LoanTerms,
    Reason,
    Subject,
    NotifyUrl,
    PassbackParams,
    AutoConfirmDays,
    ExpireMinutes,
    /// A payment code's form (18 digits, an expiry in the future).
    PaymentCode,
    PaymentCodeUnknown,
    PaymentCodeExpired,
    /// Below the fund's smallest subscription.
    Subscription,
    AnnualRate,
    ImportCount,
    LoanAmountOrTerm,
    RedPacketCount,
    RedPacketTotal,
    Greeting,
    CampaignName,
    BudgetOrDiscount,
    MinSpendOrPerUserLimit,
    GatewayKey,
    FeeRate,
    PartyName,
    PartyFeeRate,
    WebhookUrl,
    Bank,
    /// A batch the ledger refused whole (more events than a batch holds).
    LedgerBatch,
    /// A fee schedule's minimum, maximum or free quota past `AMOUNT_MAX`
    /// (so that an amount and its fee never overflow).
    FeeAmount,
    /// A staff login (1 to 64 letters, digits, `.`, `_`, `-`, `@`).
    Login,
    PasswordHash,
    /// A webhook endpoint's event types.
    EventTypes,
    WebhookSecret,
    /// When a rolled key or secret stops working: at most 30 days ahead.
    KeyExpiry,
    AppPublicKey,
    /// A dispute's reason or note (1 to `disputes::DISPUTE_TEXT_CHARS_MAX` printable characters).
    DisputeText,
    /// A freeze's order or request number (1 to 64 visible ASCII characters) or title.
    Freeze,
    /// An audit note's texts (bounded, no control characters), or a nested one.
    AuditNote,
}

/// What the state of things does not allow now.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Conflict {
    TradeNotPaid,
    TradeClosed,
    TradeNotWaitingForPayment,
    TradeExpiredUnpaid,
    OnlyEscrowShips,
    TradeNotWaitingToShip,
    OnlyEscrowConfirms,
    TradeNotWaitingForConfirmation,
    OnlyUnpaidCloses,
    TradeHoldsNoMoney,
    /// The `out_trade_no` belongs to another trade.
    OutTradeNoUsed,
    /// The refund's request number belongs to a refund of another amount.
    RefundRequestNoUsed,
    PaymentCodeIssued,
    CouponUsed,
    CouponExpired,
    CouponOfAnotherMerchant,
    CouponWouldExpireFirst,
    /// A fund yield for a day that has not ended.
    DayNotEnded(Date),
    FundHoldingNotOpened,
    /// The loan's request number belongs to another loan.
    LoanRequestNoUsed,
    AdvanceNeedsEscrowTrade,
    AdvanceExists,
    LoanAccountNotOpened,
    LoanRepaid,
    RedPacketClaimedAlready,
    RedPacketExpired,
    RedPacketEmpty,
    CampaignDates,
    /// The campaign has ended (its budget went back).
    CampaignEnded,
    /// The split's request number belongs to another split of the trade.
    SplitRequestNoUsed,
    /// Profit sharing is for trades whose money reached the merchant.
    TradeNotSettled,
    /// A receiver the merchant has not bound (royalty relation).
    ReceiverNotBound,
    /// Disputes are on paid escrow trades waiting for shipping or confirmation.
    DisputeNeedsOpenEscrow,
    /// The trade has an open dispute.
    DisputeOpen,
    /// The dispute's status does not allow this step.
    DisputeStatus,
    /// The freeze's `out_order_no` belongs to another freeze request.
    FreezeOrderNoUsed,
    /// The request number was used for another operation on this freeze.
    FreezeRequestNoUsed,
    /// The freeze is finished or expired.
    FreezeNotOpen,
    SecretMadeOnce,
    GatewayKeyMadeOnce,
    KeyInUse,
    LoginInUse,
    WalletNotCreated,
    TransferToSelf,
    /// The ledger refused a transfer for a reason no product expects: its
    /// result's code (`CreateTransferResult::code`).
    LedgerRefused(String),
}

/// A limit the action would pass, with the room left where there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Limit {
    RefundsPerTrade,
    /// Refunds would exceed what the buyer paid: this much is left.
    Refundable {
        left: Fen,
    },
    TradeNumbers,
    /// The fund's daily redemption limit, and what is left of it today.
    Redemption {
        limit: Fen,
        left: Fen,
    },
    Credit {
        available: Fen,
    },
    Advance {
        most: Fen,
    },
    Owed {
        owed: Fen,
    },
    DiscountOverBudget,
    /// A party's keys at once (`access::KEYS_PER_PARTY_MAX`).
    Keys,
    /// A merchant's webhook endpoints (`access::ENDPOINTS_PER_MERCHANT_MAX`).
    Endpoints,
    /// Staff accounts (`access::STAFF_MAX`).
    Staff,
    /// A merchant's royalty relations (`splits::RELATIONS_PER_MERCHANT_MAX`).
    RoyaltyRelations,
    /// Split requests on one trade (`splits::SPLITS_PER_TRADE_MAX`).
    SplitsPerTrade,
    /// Splits would exceed what the trade left the merchant: this much is left.
    Splittable {
        left: Fen,
    },
    /// Disputes on one trade (`disputes::DISPUTES_PER_TRADE_MAX`).
    DisputesPerTrade,
    /// More than the freeze still holds: this much.
    Frozen {
        rest: Fen,
    },
    /// Operations on one freeze (`freezes::OPERATIONS_PER_FREEZE_MAX`).
    FreezeOperations,
}
