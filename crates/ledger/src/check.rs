//! The conservation invariant: per ledger, the sum of all debits equals the
//! sum of all credits, for posted and for pending amounts.

use std::collections::BTreeMap;

use crate::state::Ledger;

/// A sum of amounts that cannot overflow: 128 low bits plus a carry count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WideSum {
    pub carries: u64,
    pub low: u128,
}

impl WideSum {
    fn add(&mut self, amount: u128) {
        let (low, carried) = self.low.overflowing_add(amount);
        self.low = low;
        self.carries += u64::from(carried);
    }

    /// The sum as `u128`, if it fits.
    pub fn to_u128(self) -> Option<u128> {
        (self.carries == 0).then_some(self.low)
    }
}

impl std::fmt::Display for WideSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_u128() {
            Some(value) => write!(f, "{value}"),
            None => write!(f, "{}*2^128+{}", self.carries, self.low),
        }
    }
}

/// The four sums of one ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    pub debits_pending: WideSum,
    pub debits_posted: WideSum,
    pub credits_pending: WideSum,
    pub credits_posted: WideSum,
}

/// The ledger (currency or asset) whose debits and credits disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConservationError {
    pub ledger: u32,
    pub totals: Box<LedgerTotals>,
}

impl std::fmt::Display for ConservationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.totals;
        write!(
            f,
            "ledger {} is unbalanced: posted debits {} vs credits {}, pending debits {} vs credits {}",
            self.ledger, t.debits_posted, t.credits_posted, t.debits_pending, t.credits_pending
        )
    }
}

impl std::error::Error for ConservationError {}

impl Ledger {
    /// The four sums for every ledger that has accounts.
    pub fn totals(&self) -> BTreeMap<u32, LedgerTotals> {
        let mut totals: BTreeMap<u32, LedgerTotals> = BTreeMap::new();
        for account in self.accounts() {
            let sums = totals.entry(account.ledger).or_default();
            sums.debits_pending.add(account.debits_pending);
            sums.debits_posted.add(account.debits_posted);
            sums.credits_pending.add(account.credits_pending);
            sums.credits_posted.add(account.credits_posted);
        }
        totals
    }

    /// Checks conservation for every ledger; the first unbalanced one is the error.
    pub fn check_conservation(&self) -> Result<BTreeMap<u32, LedgerTotals>, ConservationError> {
        let totals = self.totals();
        for (&ledger, sums) in &totals {
            if sums.debits_posted != sums.credits_posted || sums.debits_pending != sums.credits_pending {
                return Err(ConservationError { ledger, totals: Box::new(*sums) });
            }
        }
        Ok(totals)
    }
}
