//! How the platform lays its products onto the ledger: account ids, account
//! codes, transfer codes, and the reference each transfer carries.

/// The ledger of Chinese yuan, in fen.
pub const LEDGER_CNY: u32 = 1;

const KIND_WALLET: u128 = 1;
const KIND_SYSTEM: u128 = 2;

/// The bank channel's clearing account: debited when money comes in from
/// banks, credited when it goes out. Its debit balance is the money the
/// platform holds for its parties.
pub const BANK_CLEARING: u128 = (KIND_SYSTEM << 64) | 1;
/// The platform's revenue: fees are credited here.
pub const REVENUE: u128 = (KIND_SYSTEM << 64) | 2;

/// A party's wallet.
pub fn wallet(number: u64) -> u128 {
    (KIND_WALLET << 64) | u128::from(number)
}

/// Account codes.
pub const CODE_USER_WALLET: u16 = 10;
pub const CODE_MERCHANT_WALLET: u16 = 11;
pub const CODE_BANK_CLEARING: u16 = 20;
pub const CODE_REVENUE: u16 = 21;

/// Transfer codes: what a transfer is, as statements show it.
pub const CODE_TOPUP: u16 = 1;
pub const CODE_TRANSFER: u16 = 2;
pub const CODE_TRANSFER_FEE: u16 = 3;
pub const CODE_WITHDRAWAL: u16 = 4;
pub const CODE_WITHDRAWAL_FEE: u16 = 5;
pub const CODE_TRADE_PAYMENT: u16 = 6;
pub const CODE_TRADE_FEE: u16 = 7;
pub const CODE_TRADE_REFUND: u16 = 8;

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
    Trade(u64),
}

impl Reference {
    pub fn encode(self) -> u128 {
        let (kind, number) = match self {
            Reference::TopUp(number) => (1u128, number),
            Reference::Transfer(number) => (2, number),
            Reference::Withdrawal(number) => (3, number),
            Reference::Trade(number) => (4, number),
        };
        (kind << 64) | u128::from(number)
    }

    pub fn decode(user_data: u128) -> Option<Reference> {
        let number = user_data as u64;
        match user_data >> 64 {
            1 => Some(Reference::TopUp(number)),
            2 => Some(Reference::Transfer(number)),
            3 => Some(Reference::Withdrawal(number)),
            4 => Some(Reference::Trade(number)),
            _ => None,
        }
    }

    /// The public id: `top_12`, `trf_7`, `wdr_3`.
    pub fn public_id(self) -> String {
        match self {
            Reference::TopUp(number) => format!("top_{number}"),
            Reference::Transfer(number) => format!("trf_{number}"),
            Reference::Withdrawal(number) => format!("wdr_{number}"),
            Reference::Trade(number) => format!("trd_{number}"),
        }
    }
}
