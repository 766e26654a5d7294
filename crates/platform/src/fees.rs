//! Fees as data: a schedule per product (rate in basis points, minimum,
//! maximum, and a free quota per party per period), kept in the platform's
//! state and changed by a journaled command.

use serde::{Deserialize, Serialize};

use crate::units::{Fen, PartyNumber};

/// What a fee is charged on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Product {
    Transfer,
    Withdrawal,
    MerchantTrade,
}

impl Product {
    pub fn name(self) -> &'static str {
        match self {
            Product::Transfer => "transfer",
            Product::Withdrawal => "withdrawal",
            Product::MerchantTrade => "merchant_trade",
        }
    }

    pub fn parse(name: &str) -> Option<Product> {
        [Product::Transfer, Product::Withdrawal, Product::MerchantTrade].into_iter().find(|p| p.name() == name)
    }
}

/// Over how long a free quota is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuotaPeriod {
    /// A calendar month in China Standard Time.
    Month,
    /// The party's whole life.
    Lifetime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FreeQuota {
    pub amount: Fen,
    pub period: QuotaPeriod,
}

/// A fee schedule. The fee on an amount is `rate_bps` of the part above the
/// free quota, rounded half up to the fen, then raised to `minimum` and
/// capped at `maximum` (the cap wins if it is below the minimum) — and zero
/// when nothing is above the quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeeSchedule {
    pub rate_bps: u32,
    pub minimum: Fen,
    /// `None`: no cap.
    pub maximum: Option<Fen>,
    pub free_quota: Option<FreeQuota>,
}

impl FeeSchedule {
    pub const FREE: FeeSchedule = FeeSchedule { rate_bps: 0, minimum: Fen::new(0), maximum: None, free_quota: None };

    /// December 2013, PC transfers: 0.1%, at least 0.5 yuan, at most 10 yuan.
    pub const TRANSFER_2013: FeeSchedule =
        FeeSchedule { rate_bps: 10, minimum: Fen::new(50), maximum: Some(Fen::new(1_000)), free_quota: None };

    /// 2016, withdrawals to a bank card: 20,000 yuan free per person for
    /// life, then 0.1%, at least 0.1 yuan.
    pub const WITHDRAWAL_2016: FeeSchedule = FeeSchedule {
        rate_bps: 10,
        minimum: Fen::new(10),
        maximum: None,
        free_quota: Some(FreeQuota { amount: Fen::new(2_000_000), period: QuotaPeriod::Lifetime }),
    };

    /// The fee on `amount` when `quota_used` of the free quota is used
    /// already; also how much of the quota this amount uses.
    pub fn fee(&self, amount: Fen, quota_used: Fen) -> Charge {
        let quota_left = self.free_quota.map_or(Fen::ZERO, |quota| quota.amount.saturating_sub(quota_used));
        let free = amount.min(quota_left);
        let chargeable = amount - free;
        if chargeable.is_zero() {
            return Charge { fee: Fen::ZERO, quota_used: free };
        }
        let proportional = (u128::from(chargeable) * u128::from(self.rate_bps) + 5_000) / 10_000;
        let proportional = Fen::try_from(proportional).unwrap_or(Fen::new(u64::MAX));
        let mut fee = proportional.max(self.minimum);
        if let Some(maximum) = self.maximum {
            fee = fee.min(maximum);
        }
        Charge { fee, quota_used: free }
    }
}

/// A fee and the free quota it consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    pub fee: Fen,
    pub quota_used: Fen,
}

/// Fee schedules by product, and the free quota each party has used.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Fees {
    schedules: std::collections::BTreeMap<Product, FeeSchedule>,
    /// Free quota used, by (party, product, period: month index or 0 for life).
    quota_used: std::collections::BTreeMap<QuotaKey, Fen>,
}

/// Whose free quota, of which product, in which period (month index, or 0 for life).
pub(crate) type QuotaKey = (PartyNumber, Product, u32);

impl Fees {
    /// The product's schedule (free if none was set).
    pub(crate) fn schedule(&self, product: Product) -> FeeSchedule {
        self.schedules.get(&product).copied().unwrap_or(FeeSchedule::FREE)
    }

    pub(crate) fn set_schedule(&mut self, product: Product, schedule: FeeSchedule) {
        self.schedules.insert(product, schedule);
    }

    pub(crate) fn quota_used(&self, key: &QuotaKey) -> Fen {
        self.quota_used.get(key).copied().unwrap_or_default()
    }

    /// Counts `amount` more of the free quota as used (the charge succeeded).
    pub(crate) fn use_quota(&mut self, key: QuotaKey, amount: Fen) {
        *self.quota_used.entry(key).or_default() += amount;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_2013_transfer_rule_has_a_minimum_and_a_cap() {
        let rule = FeeSchedule::TRANSFER_2013;
        assert_eq!(
            rule.fee(Fen::new(100), Fen::new(0)).fee,
            Fen::new(50),
            "0.1% of 1 yuan is below the 0.5 yuan minimum"
        );
        assert_eq!(rule.fee(Fen::new(200_000), Fen::new(0)).fee, Fen::new(200), "0.1% of 2,000 yuan");
        assert_eq!(rule.fee(Fen::new(100_000_000), Fen::new(0)).fee, Fen::new(1_000), "capped at 10 yuan");
        assert_eq!(rule.fee(Fen::new(12_345), Fen::new(0)).fee, Fen::new(50));
    }

    #[test]
    fn the_2016_withdrawal_rule_is_free_until_the_lifetime_quota_is_used() {
        let rule = FeeSchedule::WITHDRAWAL_2016;
        assert_eq!(
            rule.fee(Fen::new(1_500_000), Fen::new(0)),
            Charge { fee: Fen::new(0), quota_used: Fen::new(1_500_000) }
        );
        // 15,000 used; 10,000 more: 5,000 free, 5,000 at 0.1% = 5 yuan.
        assert_eq!(
            rule.fee(Fen::new(1_000_000), Fen::new(1_500_000)),
            Charge { fee: Fen::new(500), quota_used: Fen::new(500_000) }
        );
        // Quota gone: 10 yuan at 0.1% is 1 fen, raised to the 10-fen minimum.
        assert_eq!(
            rule.fee(Fen::new(1_000), Fen::new(2_000_000)),
            Charge { fee: Fen::new(10), quota_used: Fen::new(0) }
        );
    }

    #[test]
    fn rounding_is_half_up_to_the_fen() {
        let rule = FeeSchedule { rate_bps: 10, minimum: Fen::new(0), maximum: None, free_quota: None };
        assert_eq!(rule.fee(Fen::new(1_499), Fen::new(0)).fee, Fen::new(1), "1.499 fen");
        assert_eq!(rule.fee(Fen::new(1_500), Fen::new(0)).fee, Fen::new(2), "1.5 fen");
        assert_eq!(rule.fee(Fen::new(u64::MAX), Fen::new(0)).fee, Fen::new(18_446_744_073_709_552));
    }
}
