//! A merchant's takings by business day (CST): what its trades were paid
//! and refunded each day, for the portal's "today" and "the last days". A
//! figure of reporting, not of money (the ledger's history is the account
//! of that: bills read it); kept because adding it up from the history
//! would read every movement of a busy merchant's week (millions).
//!
//! Only the last [`TAKINGS_DAYS`] days are kept: a tick forgets older ones,
//! so the map holds at most that many days of each merchant that trades.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::calendar::CST_OFFSET_SECONDS;
use crate::platform::Platform;
use crate::units::{Fen, PartyNumber, Timestamp};

/// Days kept: today and the six before.
pub const TAKINGS_DAYS: u32 = 7;

const SECONDS_PER_DAY: u64 = 86_400;

/// A business day as a number: days since 1970-01-01 (CST).
pub fn day_number(moment: Timestamp) -> u32 {
    let seconds = moment.nanos() / ledger::NANOS_PER_SECOND + CST_OFFSET_SECONDS as u64;
    u32::try_from(seconds / SECONDS_PER_DAY).unwrap_or(u32::MAX)
}

/// The first moment of business day `day`.
pub fn day_start(day: u32) -> Timestamp {
    let seconds = (u64::from(day) * SECONDS_PER_DAY).saturating_sub(CST_OFFSET_SECONDS as u64);
    Timestamp::from_nanos(seconds.saturating_mul(ledger::NANOS_PER_SECOND))
}

/// One merchant's day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DayTakings {
    /// Trades paid this day, and their amounts (discounts included: what
    /// the merchant sold for).
    pub paid_count: u32,
    pub paid: Fen,
    /// Refunds made this day (of trades paid any day), and their amounts.
    pub refund_count: u32,
    pub refunded: Fen,
}

/// Takings by (day, merchant): the oldest day first, so forgetting one is
/// taking from the front.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Takings {
    days: BTreeMap<(u32, PartyNumber), DayTakings>,
}

impl Takings {
    fn day_mut(&mut self, now: Timestamp, merchant: PartyNumber) -> &mut DayTakings {
        self.days.entry((day_number(now), merchant)).or_default()
    }

    /// Forgets days before the kept ones, at most `budget` entries.
    pub(crate) fn forget_old_days(&mut self, now: Timestamp, budget: &mut u32) {
        let first_kept = day_number(now).saturating_sub(TAKINGS_DAYS - 1);
        while *budget > 0 && self.days.first_key_value().is_some_and(|(&(day, _), _)| day < first_kept) {
            self.days.pop_first();
            *budget -= 1;
        }
    }
}

impl Platform {
    pub(crate) fn record_paid(&mut self, now: Timestamp, merchant: PartyNumber, amount: Fen) {
        let day = self.state.takings.day_mut(now, merchant);
        day.paid_count = day.paid_count.saturating_add(1);
        day.paid = day.paid.checked_add(amount).unwrap_or(Fen::MAX);
    }

    pub(crate) fn record_refunded(&mut self, now: Timestamp, merchant: PartyNumber, amount: Fen) {
        let day = self.state.takings.day_mut(now, merchant);
        day.refund_count = day.refund_count.saturating_add(1);
        day.refunded = day.refunded.checked_add(amount).unwrap_or(Fen::MAX);
    }

    /// The merchant's last [`TAKINGS_DAYS`] business days up to `now`'s,
    /// newest first: (day, its takings), days without trades included.
    pub fn takings(&self, now: Timestamp, merchant: PartyNumber) -> Vec<(u32, DayTakings)> {
        let today = day_number(now);
        (0..TAKINGS_DAYS)
            .filter_map(|back| today.checked_sub(back))
            .map(|day| (day, self.state.takings.days.get(&(day, merchant)).copied().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_turn_at_midnight_in_beijing() {
        // 2013-11-10T16:00:00Z is 2013-11-11T00:00:00+08:00.
        let midnight = Timestamp::from_nanos(1_384_099_200 * ledger::NANOS_PER_SECOND);
        let before = Timestamp::from_nanos(midnight.nanos() - 1);
        assert_eq!(day_number(midnight), day_number(before) + 1);
        assert_eq!(day_start(day_number(midnight)), midnight);
        assert_eq!(day_start(day_number(before)).nanos(), midnight.nanos() - SECONDS_PER_DAY * 1_000_000_000);
    }

    #[test]
    fn old_days_are_forgotten_within_the_budget() {
        let mut takings = Takings::default();
        let day = |n: u64| Timestamp::from_nanos(n * SECONDS_PER_DAY * ledger::NANOS_PER_SECOND);
        for n in 0..10 {
            takings.day_mut(day(100 + n), PartyNumber::new(1)).paid_count += 1;
        }
        let mut budget = 2;
        takings.forget_old_days(day(109), &mut budget);
        assert_eq!((budget, takings.days.len()), (0, 8));
        let mut budget = 100;
        takings.forget_old_days(day(109), &mut budget);
        assert_eq!(takings.days.len(), TAKINGS_DAYS as usize);
        assert!(takings.days.keys().all(|&(d, _)| d >= day_number(day(109)) - (TAKINGS_DAYS - 1)));
    }
}
