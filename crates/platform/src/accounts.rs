//! How the platform lays its products onto the ledger: account ids, account
//! codes, transfer codes, and the reference each transfer carries.

use crate::units::{CampaignNumber, LoanNumber, PartyNumber, RedPacketNumber, TradeNumber};

/// The ledger of Chinese yuan, in fen.
pub const LEDGER_CNY: u32 = 1;

const KIND_WALLET: u128 = 1;
const KIND_SYSTEM: u128 = 2;
const KIND_FUND: u128 = 3;
const KIND_LOAN: u128 = 4;

/// The bank channel's clearing account: debited when money comes in from
/// banks, credited when it goes out. Its debit balance is the money the
/// platform holds for its parties.
pub const BANK_CLEARING: u128 = (KIND_SYSTEM << 64) | 1;
/// The platform's revenue: fees are credited here.
pub const REVENUE: u128 = (KIND_SYSTEM << 64) | 2;

/// Where Yu'e Bao's daily yield comes from: the fund's investment income
/// (money entering the platform from outside, as the bank channel's does).
pub const FUND_INCOME: u128 = (KIND_SYSTEM << 64) | 3;
/// The platform's own marketing spending (campaigns the platform sponsors).
pub const MARKETING: u128 = (KIND_SYSTEM << 64) | 4;
/// Budgets of running campaigns.
pub const CAMPAIGNS: u128 = (KIND_SYSTEM << 64) | 5;
/// Money of red packets not yet claimed.
pub const RED_PACKETS: u128 = (KIND_SYSTEM << 64) | 6;

/// Interest and penalties on loans are credited here.
pub const LOAN_INCOME: u128 = (KIND_SYSTEM << 64) | 7;

/// Money of paid escrow trades waiting for the buyer's confirmation: it
/// leaves the buyer at payment and reaches the merchant at settlement. Its
/// balance is the sum of what open escrow trades hold (the trades say whose),
/// so the ledger keeps nothing per trade while it waits — days, for most.
pub const ESCROW: u128 = (KIND_SYSTEM << 64) | 8;

/// Pre-authorised money: the credit side of each freeze's pending
/// transfer, so its pending credits are what open freezes hold.
pub const FROZEN: u128 = (KIND_SYSTEM << 64) | 9;

/// A loan's receivable: what the merchant owes on it.
pub fn loan(number: LoanNumber) -> u128 {
    (KIND_LOAN << 64) | u128::from(number.get())
}

/// A party's Yu'e Bao holding. The fund's unit value is fixed at 1 fen, as a
/// money-market fund's is, so a holding is an amount of fen and yield is
/// paid as more of them.
pub fn fund(party: PartyNumber) -> u128 {
    (KIND_FUND << 64) | u128::from(party.get())
}

/// A party's wallet.
pub fn wallet(party: PartyNumber) -> u128 {
    (KIND_WALLET << 64) | u128::from(party.get())
}

/// Account codes.
pub const CODE_USER_WALLET: u16 = 10;
pub const CODE_MERCHANT_WALLET: u16 = 11;
pub const CODE_BANK_CLEARING: u16 = 20;
pub const CODE_REVENUE: u16 = 21;
pub const CODE_FUND_HOLDING: u16 = 12;
pub const CODE_FUND_INCOME: u16 = 22;
pub const CODE_MARKETING: u16 = 23;
pub const CODE_CAMPAIGNS: u16 = 24;
pub const CODE_RED_PACKETS: u16 = 25;
pub const CODE_LOAN: u16 = 26;
pub const CODE_LOAN_INCOME: u16 = 27;
pub const CODE_ESCROW: u16 = 28;
pub const CODE_FROZEN: u16 = 29;

/// Transfer codes: what a transfer is, as statements show it.
pub const CODE_TOPUP: u16 = 1;
pub const CODE_TRANSFER: u16 = 2;
pub const CODE_TRANSFER_FEE: u16 = 3;
pub const CODE_WITHDRAWAL: u16 = 4;
pub const CODE_WITHDRAWAL_FEE: u16 = 5;
pub const CODE_TRADE_PAYMENT: u16 = 6;
pub const CODE_TRADE_FEE: u16 = 7;
pub const CODE_TRADE_REFUND: u16 = 8;
pub const CODE_FUND_SUBSCRIPTION: u16 = 9;
pub const CODE_FUND_REDEMPTION: u16 = 10;
pub const CODE_FUND_YIELD: u16 = 11;
pub const CODE_CAMPAIGN_BUDGET: u16 = 12;
pub const CODE_CAMPAIGN_DISCOUNT: u16 = 13;
pub const CODE_CAMPAIGN_RETURN: u16 = 14;
pub const CODE_RED_PACKET: u16 = 15;
pub const CODE_RED_PACKET_CLAIM: u16 = 16;
pub const CODE_RED_PACKET_RETURN: u16 = 17;
pub const CODE_LOAN_DISBURSEMENT: u16 = 18;
pub const CODE_LOAN_INTEREST: u16 = 19;
pub const CODE_LOAN_PENALTY: u16 = 20;
pub const CODE_LOAN_REPAYMENT: u16 = 21;
/// An escrow trade's money, out of escrow to the merchant.
pub const CODE_TRADE_SETTLEMENT: u16 = 22;
/// A refund's share of the merchant's fee, back to the merchant.
pub const CODE_TRADE_FEE_RETURN: u16 = 23;
/// A refund's share of a campaign's discount, back to the campaign (or,
/// once it has ended, its sponsor).
pub const CODE_CAMPAIGN_DISCOUNT_RETURN: u16 = 24;
/// Part of a trade's proceeds, from the merchant to a receiver it bound (分账).
pub const CODE_TRADE_SPLIT: u16 = 25;
/// A pre-authorisation's hold on a buyer's wallet (pending until paid,
/// released or expired).
pub const CODE_PREAUTH_HOLD: u16 = 26;

pub fn transfer_code_name(code: u16) -> &'static str {
    match code {
        CODE_TOPUP => "topup",
        CODE_TRANSFER => "transfer",
        CODE_TRANSFER_FEE => "transfer_fee",
        CODE_WITHDRAWAL => "withdrawal",
        CODE_WITHDRAWAL_FEE => "withdrawal_fee",
        CODE_TRADE_PAYMENT => "trade_payment",
        CODE_TRADE_FEE => "trade_fee",
        CODE_TRADE_REFUND => "trade_refund",
        CODE_TRADE_SETTLEMENT => "trade_settlement",
        CODE_TRADE_FEE_RETURN => "trade_fee_return",
        CODE_CAMPAIGN_DISCOUNT_RETURN => "campaign_discount_return",
        CODE_TRADE_SPLIT => "trade_split",
        CODE_PREAUTH_HOLD => "preauth_hold",
        CODE_FUND_SUBSCRIPTION => "fund_subscription",
        CODE_FUND_REDEMPTION => "fund_redemption",
        CODE_FUND_YIELD => "fund_yield",
        CODE_CAMPAIGN_BUDGET => "campaign_budget",
        CODE_CAMPAIGN_DISCOUNT => "campaign_discount",
        CODE_CAMPAIGN_RETURN => "campaign_return",
        CODE_RED_PACKET => "red_packet",
        CODE_RED_PACKET_CLAIM => "red_packet_claim",
        CODE_RED_PACKET_RETURN => "red_packet_return",
        CODE_LOAN_DISBURSEMENT => "loan_disbursement",
        CODE_LOAN_INTEREST => "loan_interest",
        CODE_LOAN_PENALTY => "loan_penalty",
        CODE_LOAN_REPAYMENT => "loan_repayment",
        _ => "other",
    }
}

/// What a ledger transfer's `user_data` names: the public object it belongs
/// to (`top_…`, `trf_…`, `wdr_…`, `trd_…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    TopUp(u64),
    Transfer(u64),
    Withdrawal(u64),
    Trade(TradeNumber),
    Fund(u64),
    Campaign(CampaignNumber),
    RedPacket(RedPacketNumber),
    Loan(LoanNumber),
    /// A pre-authorisation (`auth_no`).
    Freeze(u64),
}

impl Reference {
    pub fn encode(self) -> u128 {
        let (kind, number) = match self {
            Reference::TopUp(number) => (1u128, number),
            Reference::Transfer(number) => (2, number),
            Reference::Withdrawal(number) => (3, number),
            Reference::Trade(number) => (4, number.get()),
            Reference::Fund(number) => (5, number),
            Reference::Campaign(number) => (6, number.get()),
            Reference::RedPacket(number) => (7, number.get()),
            Reference::Loan(number) => (8, number.get()),
            Reference::Freeze(number) => (9, number),
        };
        (kind << 64) | u128::from(number)
    }

    pub fn decode(user_data: u128) -> Option<Reference> {
        let number = user_data as u64;
        match user_data >> 64 {
            1 => Some(Reference::TopUp(number)),
            2 => Some(Reference::Transfer(number)),
            3 => Some(Reference::Withdrawal(number)),
            4 => Some(Reference::Trade(TradeNumber::new(number))),
            5 => Some(Reference::Fund(number)),
            6 => Some(Reference::Campaign(CampaignNumber::new(number))),
            7 => Some(Reference::RedPacket(RedPacketNumber::new(number))),
            8 => Some(Reference::Loan(LoanNumber::new(number))),
            9 => Some(Reference::Freeze(number)),
            _ => None,
        }
    }
}
