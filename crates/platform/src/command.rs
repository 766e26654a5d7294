//! What the platform is asked to do and what it answers. Commands carry
//! everything that is not deterministic (the time, random key hashes), so
//! that applying them is.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::access::{AuditNote, StaffRole};
use crate::fees::{FeeSchedule, Product};
use crate::trades::{Refund, Trade, TradeMode};
use crate::units::{
    CampaignNumber, CouponNumber, EndpointNumber, EventNumber, Fen, LoanNumber, PartyNumber, RedPacketNumber,
    StaffNumber, Timestamp, TradeNumber,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PartyKind {
    User,
    Merchant,
}

/// Settings of the platform itself, changed only by a journaled command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlatformConfig {
    /// Clock time between a withdrawal and the bank's answer.
    pub withdrawal_settle_seconds: u64,
    /// Share of withdrawals the simulated bank fails, in basis points.
    pub bank_failure_bps: u32,
    /// Mixed into the bank's deterministic choice of which withdrawals fail.
    pub bank_seed: u64,
    /// Yu'e Bao redemptions to the wallet per user per business day, in fen.
    pub fund_redeem_daily_limit: Fen,
}

impl Default for PlatformConfig {
    fn default() -> PlatformConfig {
        // 50,000 yuan a day: Yu'e Bao's same-day redemption cap in 2014.
        PlatformConfig {
            withdrawal_settle_seconds: 3_600,
            bank_failure_bps: 0,
            bank_seed: 0,
            fund_redeem_daily_limit: Fen::new(5_000_000),
        }
    }
}

/// An `Idempotency-Key` and the request it came with: the same key and
/// request replay the stored outcome; the same key with another request is
/// refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyTag {
    /// The caller's party number (0: the admin).
    pub caller: PartyNumber,
    pub key: String,
    /// SHA-256 of the method, path and body.
    pub request_hash: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Configure(PlatformConfig),
    /// The operator's secret, made once (random, by the server: so it is in
    /// the command), from which the server derives public ids and the keys
    /// a retried request must get again; in the log, so every node and
    /// every replay derives the same.
    InitializeSecret {
        secret: [u8; 32],
    },
    /// The platform's signing key for the Alipay-compatible gateway (PKCS#8
    /// PEM), made once by the server on first use: in the log, so every
    /// node signs with the same key.
    InitializeGatewayKey {
        private_key_pem: String,
    },
    CreateParty {
        kind: PartyKind,
        name: String,
        /// SHA-256 of the party's API key (the key itself is never stored).
        key_hash: [u8; 32],
        fee_rate_bps: Option<u32>,
        webhook_url: Option<String>,
        webhook_secret: String,
        /// A merchant's RSA public key (PEM) for the Alipay-compatible gateway.
        app_public_key: Option<String>,
    },
    TopUp {
        party: PartyNumber,
        amount: Fen,
        bank: String,
    },
    Transfer {
        from: PartyNumber,
        to: PartyNumber,
        amount: Fen,
        memo: Option<String>,
    },
    Withdraw {
        party: PartyNumber,
        amount: Fen,
    },
    SetFeeSchedule {
        product: Product,
        schedule: FeeSchedule,
    },
    /// Runs what has fallen due by the command's time (bank settlements,
    /// unpaid trades closing, escrow auto-confirmation, expiry of
    /// idempotency records).
    Tick,
    CreateTrade(NewTrade),
    /// Creates a trade and pays it in one command (a payment at a till, or a
    /// checkout that already knows its buyer). A refused payment closes the
    /// new trade; a retry with the same `out_trade_no` gets the trade back.
    CreateAndPayTrade {
        trade: NewTrade,
        buyer: PartyNumber,
        source: PaySource,
        coupon: Option<CouponNumber>,
    },
    /// A one-time code for paying at a till (made by the server: the code
    /// is random, so it is in the command).
    IssuePaymentCode {
        user: PartyNumber,
        code: String,
        expires_at: Timestamp,
    },
    /// Creates a trade and charges the buyer whose payment code the till
    /// scanned; the code is used up whatever the outcome.
    PayWithCode {
        trade: NewTrade,
        code: String,
    },
    PayTrade {
        trade: TradeNumber,
        buyer: PartyNumber,
        source: PaySource,
        /// A coupon of the buyer's: its campaign's discount applies.
        coupon: Option<CouponNumber>,
    },
    /// A coupon of `campaign` for `user`, issued by the campaign's sponsor
    /// (`issuer`: the merchant, or `None` for the platform).
    IssueCoupon {
        campaign: CampaignNumber,
        issuer: Option<PartyNumber>,
        user: PartyNumber,
        expires_at: Option<Timestamp>,
    },
    FundSubscribe {
        party: PartyNumber,
        amount: Fen,
    },
    FundRedeem {
        party: PartyNumber,
        amount: Fen,
    },
    CreateRedPacket {
        sender: PartyNumber,
        total: Fen,
        count: u32,
        mode: crate::marketing::SplitMode,
        greeting: Option<String>,
    },
    ClaimRedPacket {
        packet: RedPacketNumber,
        user: PartyNumber,
    },
    CreateCampaign(NewCampaign),
    /// Brings in existing fund holders (a migration from another system, or
    /// a benchmark): `count` users, each with a wallet and a holding of
    /// `amount_of(i)` fen received through the bank channel, where
    /// `amount_of(i) = 100 + (i × 7,919 + seed) mod 1,000,000`. No API keys.
    ImportFundHolders {
        count: u32,
        seed: u64,
    },
    TakeLoan {
        merchant: PartyNumber,
        amount: Fen,
        term_days: u32,
        out_request_no: String,
    },
    RepayLoan {
        loan: LoanNumber,
        merchant: PartyNumber,
        amount: Fen,
    },
    /// An advance on a paid escrow trade, repaid from its settlement:
    /// `amount`, or (`None`) the most the credit line and the trade allow.
    TakeOrderLoan {
        merchant: PartyNumber,
        trade: TradeNumber,
        amount: Option<Fen>,
        out_request_no: String,
    },
    /// Credits one business day's yield at `annual_rate_bps` to every holder.
    FundYield {
        date: crate::calendar::Date,
        annual_rate_bps: u32,
    },
    ShipTrade {
        trade: TradeNumber,
        merchant: PartyNumber,
    },
    ConfirmTrade {
        trade: TradeNumber,
        buyer: PartyNumber,
    },
    CloseTrade {
        trade: TradeNumber,
        merchant: PartyNumber,
    },
    RefundTrade {
        trade: TradeNumber,
        merchant: PartyNumber,
        out_request_no: String,
        amount: Fen,
        reason: Option<String>,
    },
    /// The outcome of one attempt to deliver an event to one destination.
    RecordAttempt(DeliveryAttempt),
    /// Delivers an event again now (the server read it from the archive:
    /// where it is, whose, of what type and trade).
    ResendEvent {
        event: EventNumber,
        offset: u64,
        merchant: PartyNumber,
        kind: String,
        trade: Option<TradeNumber>,
        /// A gateway trade's event: it goes to the trade's `notify_url`.
        to_notify_url: bool,
    },
    /// An action of the admin key or of staff, or a change of keys, and the
    /// audit line that records it: one command, so neither exists without
    /// the other.
    Audited {
        note: AuditNote,
        action: Box<Action>,
    },
    /// A `CreateParty` whose party signs in with a login and password (the
    /// cashier's buyers, the portal's merchants): both or neither.
    WithLogin {
        login: String,
        /// Argon2id (PHC string), made by the server.
        password_hash: String,
        action: Box<Action>,
    },
    CreateStaff {
        login: String,
        /// Argon2id (PHC string), made by the server.
        password_hash: String,
        role: StaffRole,
    },
    /// Another key for `party` (the server made it: only its hash is here).
    AddKey {
        party: PartyNumber,
        key_hash: [u8; 32],
        read_only: bool,
    },
    /// A new key like `old`; `old` works until `old_expires_at`.
    RollKey {
        party: PartyNumber,
        old_key_hash: [u8; 32],
        new_key_hash: [u8; 32],
        old_expires_at: Timestamp,
    },
    /// Every key of `party` stops now; `new_key_hash` is its one key.
    RevokeKeys {
        party: PartyNumber,
        new_key_hash: [u8; 32],
    },
    SetAppPublicKey {
        merchant: PartyNumber,
        app_public_key: String,
    },
    CreateEndpoint {
        merchant: PartyNumber,
        url: String,
        events: Vec<String>,
        secret: String,
    },
    DeleteEndpoint {
        merchant: PartyNumber,
        endpoint: EndpointNumber,
    },
    RollEndpointSecret {
        merchant: PartyNumber,
        endpoint: EndpointNumber,
        secret: String,
        old_expires_at: Timestamp,
    },
    /// The operator's lending terms for new loans and credit lines.
    SetLoanTerms(crate::loans::LoanTerms),
    /// Lets `receiver` (a user or another merchant) receive `merchant`'s
    /// profit sharing (Alipay's royalty relation); `bound: false` ends it.
    BindRoyalty {
        merchant: PartyNumber,
        receiver: PartyNumber,
        bound: bool,
    },
    /// Moves parts of what a settled trade paid its merchant to bound
    /// receivers, in one chain; idempotent by `out_request_no`.
    SplitTrade {
        trade: TradeNumber,
        merchant: PartyNumber,
        out_request_no: String,
        parts: Vec<(PartyNumber, Fen)>,
    },
    /// A buyer disputes a paid escrow trade before it settles.
    OpenDispute {
        trade: TradeNumber,
        buyer: PartyNumber,
        amount: Fen,
        reason: String,
    },
    /// The merchant, the buyer or (`actor` None) the operator moves a dispute on.
    StepDispute {
        dispute: u64,
        actor: Option<PartyNumber>,
        step: crate::disputes::DisputeStep,
        note: Option<String>,
    },
    /// Freezes part of the balance of the buyer whose payment code the
    /// merchant scanned (pre-authorisation); idempotent by `out_order_no`.
    CreateFreeze {
        merchant: PartyNumber,
        code: String,
        out_order_no: String,
        out_request_no: String,
        amount: Fen,
        title: String,
    },
    /// Releases part or all of a freeze; idempotent by `out_request_no`.
    Unfreeze {
        freeze: u64,
        merchant: PartyNumber,
        out_request_no: String,
        amount: Fen,
    },
    /// Pays a new trade (for the freeze's buyer) with frozen money;
    /// `complete` releases the rest.
    PayFromFreeze {
        freeze: u64,
        merchant: PartyNumber,
        trade: NewTrade,
        complete: bool,
    },
    /// Stops (or restarts) a campaign's discounts; its sponsor (`None`: the
    /// platform) does it. Its budget stays where it is until its end.
    PauseCampaign {
        campaign: CampaignNumber,
        sponsor: Option<PartyNumber>,
        paused: bool,
    },
}

/// Where an event is delivered: one of its merchant's endpoints, or a
/// gateway trade's `notify_url` (`EndpointNumber` 0).
pub const NOTIFY_URL: EndpointNumber = EndpointNumber::new(0);

/// One attempt to deliver an event, as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub event: EventNumber,
    pub endpoint: EndpointNumber,
    /// Whose event it is (attempts are chained per merchant in the archive).
    pub merchant: PartyNumber,
    /// The HTTP status of the answer, if one came.
    pub status_code: Option<u16>,
    /// Why it failed, in the server's words (bounded).
    pub error: Option<String>,
    pub duration_ms: u32,
    pub delivered: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NewCampaign {
    /// The merchant paying, or `None` for the platform.
    pub sponsor: Option<PartyNumber>,
    pub name: String,
    pub budget: Fen,
    pub discount: Fen,
    pub min_spend: Fen,
    pub per_user_limit: u32,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
}

/// Where a payment's money comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaySource {
    Balance,
    /// The buyer's Yu'e Bao holding.
    Fund,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NewTrade {
    pub merchant: PartyNumber,
    pub out_trade_no: String,
    pub amount: Fen,
    pub subject: String,
    pub mode: TradeMode,
    pub buyer: Option<PartyNumber>,
    pub auto_confirm_days: Option<u32>,
    pub expire_minutes: Option<u32>,
    /// A campaign whose discount the payment may get.
    pub campaign: Option<CampaignNumber>,
    /// Alipay-style notifications of this trade go here (a trade made
    /// through the gateway with `notify_url`), instead of the merchant's
    /// webhook.
    pub notify_url: Option<String>,
    /// Handed back in the trade's Alipay-style notifications (at most
    /// `PASSBACK_CHARS_MAX`).
    pub passback_params: Option<String>,
}

impl NewTrade {
    /// An instant trade with nothing else set: anyone may pay it, the
    /// usual expiry, no campaign, no notification.
    pub fn instant(merchant: PartyNumber, out_trade_no: String, amount: Fen, subject: String) -> NewTrade {
        NewTrade {
            merchant,
            out_trade_no,
            amount,
            subject,
            mode: TradeMode::Instant,
            buyer: None,
            auto_confirm_days: None,
            expire_minutes: None,
            campaign: None,
            notify_url: None,
            passback_params: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Nanoseconds since the Unix epoch, from the platform's clock.
    pub now: Timestamp,
    pub idempotency: Option<IdempotencyTag>,
    pub action: Action,
}

pub use crate::rejection::Rejection;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Configured,
    PartyCreated {
        number: PartyNumber,
        kind: PartyKind,
    },
    ToppedUp {
        number: u64,
        amount: Fen,
    },
    Transferred {
        number: u64,
        amount: Fen,
        fee: Fen,
    },
    WithdrawalRequested {
        number: u64,
        amount: Fen,
        fee: Fen,
    },
    FeeScheduleSet,
    Ticked {
        withdrawals_settled: u32,
        withdrawals_failed: u32,
        trades_closed: u32,
        trades_settled: u32,
        /// More fell due than one tick does: tick again.
        more_due: bool,
    },
    /// A trade as the action left it (shared with the state until changed:
    /// an answer costs no copy of the record).
    TradeUpdated(Arc<Trade>),
    RefundCreated {
        trade: Arc<Trade>,
        refund: Refund,
    },
    DeliveryRecorded,
    /// Deliveries an event was queued for again.
    EventResent {
        deliveries: u32,
    },
    StaffCreated {
        number: StaffNumber,
    },
    KeysChanged,
    EndpointUpdated(Box<crate::access::Endpoint>),
    EndpointDeleted,
    FundMoved {
        number: u64,
        amount: Fen,
    },
    FundYieldPaid(crate::fund::YieldDay),
    RedPacketCreated {
        number: RedPacketNumber,
        total: Fen,
        count: u32,
    },
    RedPacketClaimed {
        number: RedPacketNumber,
        amount: Fen,
    },
    CampaignCreated(Box<crate::marketing::Campaign>),
    /// A royalty relation made or ended.
    RoyaltyChanged,
    /// A split made (or found again by its `out_request_no`).
    SplitCreated {
        trade: Arc<Trade>,
        split: crate::trades::Split,
    },
    DisputeUpdated(Box<crate::disputes::Dispute>),
    FreezeUpdated(Box<crate::freezes::Freeze>),
    HoldersImported {
        first: PartyNumber,
        count: u32,
        value: Fen,
    },
    CouponIssued(crate::marketing::Coupon),
    PaymentCodeIssued {
        code: String,
        expires_at: Timestamp,
    },
    LoanUpdated(Box<crate::loans::Loan>),
    Rejected(Rejection),
    /// The idempotency key was used before with another request.
    IdempotencyMismatch,
}
