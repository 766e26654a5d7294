//! Merchant trades (instant and escrow), refunds, timeouts, and the events
//! merchants are notified of.
//!
//! Escrow ("guaranteed trade") moves the buyer's payment into the platform's
//! escrow account; confirmation (the buyer's, or the automatic one after the
//! trade's days) moves what is left of it to the merchant with the merchant's
//! fee, in one linked chain, and a refund before then comes back out of
//! escrow. Not a pending ledger transfer: a hold would keep ledger memory per
//! trade for the ten days most wait, while the escrow account's one balance
//! and the trade's record (what it was paid, what was refunded) say the same.
//! Instant trades move the money and take the fee at payment.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::units::{CampaignNumber, EndpointNumber, EventNumber, Fen, PartyNumber, Timestamp, TradeNumber};

/// How a trade's money moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TradeMode {
    Instant,
    Escrow,
}

impl TradeMode {
    pub fn name(self) -> &'static str {
        match self {
            TradeMode::Instant => "instant",
            TradeMode::Escrow => "escrow",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TradeStatus {
    WaitBuyerPay,
    WaitSellerSend,
    WaitBuyerConfirm,
    TradeSuccess,
    TradeClosed,
}

impl TradeStatus {
    /// As Alipay names them.
    pub fn name(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::WaitSellerSend => "WAIT_SELLER_SEND",
            TradeStatus::WaitBuyerConfirm => "WAIT_BUYER_CONFIRM",
            TradeStatus::TradeSuccess => "TRADE_SUCCESS",
            TradeStatus::TradeClosed => "TRADE_CLOSED",
        }
    }

    pub fn parse(name: &str) -> Option<TradeStatus> {
        [
            TradeStatus::WaitBuyerPay,
            TradeStatus::WaitSellerSend,
            TradeStatus::WaitBuyerConfirm,
            TradeStatus::TradeSuccess,
            TradeStatus::TradeClosed,
        ]
        .into_iter()
        .find(|status| status.name() == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Refund {
    pub number: u64,
    pub out_request_no: String,
    pub amount: Fen,
    pub reason: Option<String>,
    pub created_at: Timestamp,
}

/// One profit-sharing request on a trade (分账): parts of what the trade
/// paid the merchant, moved to receivers the merchant bound.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Split {
    /// Its settle number, unique platform-wide.
    pub number: u64,
    pub out_request_no: String,
    /// (receiver, amount), in the order asked.
    pub parts: Vec<(PartyNumber, Fen)>,
    pub created_at: Timestamp,
}

impl Split {
    pub fn total(&self) -> Fen {
        self.parts.iter().map(|(_, amount)| *amount).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Trade {
    pub number: TradeNumber,
    pub merchant: PartyNumber,
    pub out_trade_no: String,
    pub amount: Fen,
    pub subject: String,
    pub mode: TradeMode,
    /// Only this user may pay, when set.
    pub buyer: Option<PartyNumber>,
    pub status: TradeStatus,
    pub auto_confirm_days: u32,
    pub expire_at: Timestamp,
    pub created_at: Timestamp,
    pub paid_at: Option<Timestamp>,
    /// Who paid (the buyer, once paid).
    pub payer: Option<PartyNumber>,
    /// The ledger account the payment came from (wallet or fund holding).
    pub payer_account: Option<u128>,
    pub shipped_at: Option<Timestamp>,
    pub confirm_due_at: Option<Timestamp>,
    pub settled_at: Option<Timestamp>,
    /// The merchant's fee, taken at settlement, less what refunds returned
    /// of it (a refund returns the fee's share of what it gives back).
    pub fee: Fen,
    pub refunded: Fen,
    pub refunds: Vec<Refund>,
    pub campaign: Option<CampaignNumber>,
    /// Paid by the campaign, not the buyer.
    pub discount: Fen,
    /// Of the discount, what refunds gave back to the campaign (or its
    /// sponsor): a refund of `r` of what the buyer paid returns its share.
    pub discount_returned: Fen,
    /// The campaign that paid the discount (the trade's, or a coupon's).
    pub discount_campaign: Option<CampaignNumber>,
    /// Why a campaign gave no discount (budget used up, limit reached...).
    pub discount_note: Option<String>,
    /// Where Alipay-style notifications of this trade go, if anywhere.
    pub notify_url: Option<String>,
    /// The gateway's `passback_params`: the merchant's own text, handed back
    /// unchanged in the trade's notifications.
    pub passback_params: Option<String>,
    /// What profit sharing moved from the merchant to receivers.
    pub split: Fen,
    pub splits: Vec<Split>,
    /// The merchant's trade before this one: a party's trades are a chain
    /// walked back from its newest (`Party::last_trade`), so listing them
    /// reads only theirs.
    pub previous_of_merchant: Option<TradeNumber>,
    /// The buyer's trade before this one (set when the trade became the
    /// buyer's: at creation for a trade made for one buyer, else at payment).
    pub previous_of_buyer: Option<TradeNumber>,
}

impl Trade {
    /// What the buyer paid and has not had back.
    pub fn refundable(&self) -> Fen {
        if self.paid_at.is_some() { self.amount - self.discount - self.refunded } else { Fen::ZERO }
    }

    /// What the buyer paid.
    pub fn paid_by_buyer(&self) -> Fen {
        self.amount - self.discount
    }

    /// What the escrow account holds for this trade: from payment until it
    /// settles or closes, what the buyer paid less refunds.
    pub fn in_escrow(&self) -> Fen {
        let waiting = matches!(self.status, TradeStatus::WaitSellerSend | TradeStatus::WaitBuyerConfirm);
        if self.mode == TradeMode::Escrow && waiting { self.refundable() } else { Fen::ZERO }
    }
}

/// Defaults from Alipay's practice: express goods auto-confirm 10 days
/// after shipping; an unpaid trade closes after this many minutes.
pub const AUTO_CONFIRM_DAYS_DEFAULT: u32 = 10;
pub const EXPIRE_MINUTES_DEFAULT: u32 = 30;
/// Bounds of the per-trade settings.
pub const AUTO_CONFIRM_DAYS_MAX: u32 = 365;
pub const EXPIRE_MINUTES_MAX: u32 = 30 * 24 * 60;

/// What an event tells a merchant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventData {
    /// The trade as the event left it (shared with the live record while the
    /// event is encoded into the archive, so it costs no copy).
    Trade(Arc<Trade>),
    Refund {
        trade: Arc<Trade>,
        refund: Refund,
    },
    Withdrawal(crate::bank::Withdrawal),
    Loan(Box<crate::loans::Loan>),
    Dispute(Box<crate::disputes::Dispute>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    pub number: EventNumber,
    /// The merchant (or party) it is for.
    pub party: PartyNumber,
    /// `trade.paid`, `trade.shipped`, `trade.succeeded`, `trade.closed`,
    /// `refund.succeeded`, `withdrawal.succeeded`, `withdrawal.failed`.
    pub kind: String,
    pub created_at: Timestamp,
    /// Events of one trade are delivered in order.
    pub trade: Option<TradeNumber>,
    pub data: EventData,
}

impl TradeStatus {
    /// Settled or closed.
    pub fn is_finished(self) -> bool {
        matches!(self, TradeStatus::TradeSuccess | TradeStatus::TradeClosed)
    }

    /// Nothing happens to it but on a request or a timer: finished, paid
    /// and waiting for its seller to ship (hours), or shipped and waiting for
    /// its buyer (days): nearly all of a busy day's trades. Such a trade
    /// waits in the archive between commands; a command that names it reads
    /// it back (`Platform::bring_back_trades`). Only unpaid ones, whose
    /// expiry the clock watches, stay in memory.
    pub fn rests_in_archive(self) -> bool {
        self.is_finished() || matches!(self, TradeStatus::WaitSellerSend | TradeStatus::WaitBuyerConfirm)
    }
}

/// Where the delivery of one event to one destination stands.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Delivery {
    pub event: EventNumber,
    /// The merchant's endpoint, or `command::NOTIFY_URL` for a gateway trade's.
    pub endpoint: EndpointNumber,
    pub merchant: PartyNumber,
    /// Where the event is archived.
    pub offset: u64,
    /// Its trade: a trade's events reach each endpoint in order.
    pub trade: Option<TradeNumber>,
    pub attempts: u32,
    /// When it was queued (its event's time, or a resend's).
    pub queued_at: Timestamp,
    /// When the next attempt is due; `None` once the schedule has given up
    /// (still undelivered: a resend tries again).
    pub next_attempt_at: Option<Timestamp>,
}

/// Waits after each failed attempt, as Alipay's notifications: 4 m, 10 m,
/// 10 m, 1 h, 2 h, 6 h, 15 h — eight tries over about 24.5 hours.
pub const RETRY_DELAYS_SECONDS: [u64; 7] = [240, 600, 600, 3_600, 7_200, 21_600, 54_000];
pub const DELIVERY_ATTEMPTS_MAX: u32 = RETRY_DELAYS_SECONDS.len() as u32 + 1;
