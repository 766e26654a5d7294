//! The driver's paid trades that follow-ups will still refer to: tens of
//! millions wait at once by a full day's end (each trade's ship, confirm and
//! refunds come up to fifteen hours after its payment).
//!
//! Every follow-up needs the trade's number; only a refund needs what the
//! buyer paid and what was refunded. So a trade is 16 bytes (serial, then
//! its number and follow-ups left in one word), and only the few with a
//! refund to come (3%) keep their amounts beside: one table of 40-byte
//! entries held 1.4–2.8 GB of a full day's peak.

use std::collections::HashMap;

use platform::TradeNumber;

/// Bits of the packed word that count follow-ups left.
const LEFT_BITS: u32 = 8;

/// A paid trade, as its follow-ups need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PaidTrade {
    pub number: TradeNumber,
    /// 0: unknown (read back from the state after a resume).
    pub follow_ups_left: u8,
    /// (paid by the buyer, refunded so far), in fen: kept only for trades
    /// with a refund to come, or read back from the state.
    pub amounts: Option<(u64, u64)>,
}

/// Paid trades by the simulation's serial, until their last follow-up.
#[derive(Default)]
pub(super) struct PaidTrades {
    /// Serial → the trade's number << `LEFT_BITS` | follow-ups left.
    numbers: HashMap<u64, u64>,
    /// Serial → (paid by the buyer, refunded), for trades a refund follows.
    amounts: HashMap<u64, (u64, u64)>,
}

impl PaidTrades {
    /// Trade `number`, paid, with `follow_ups` (at least one) still to
    /// refer to it; `amounts` (paid by the buyer, refunded) only if a
    /// refund is among them.
    pub fn insert(&mut self, serial: u64, number: TradeNumber, follow_ups: u8, amounts: Option<(u64, u64)>) {
        // The platform makes no trade numbers beyond 2^36 (its reference index).
        assert!(number.get() < 1 << (64 - LEFT_BITS), "trade number {number} does not fit");
        assert!(follow_ups > 0, "a trade no follow-up refers to is not kept");
        self.numbers.insert(serial, number.get() << LEFT_BITS | u64::from(follow_ups));
        if let Some(amounts) = amounts {
            self.amounts.insert(serial, amounts);
        }
    }

    /// The trade for its next follow-up, which is counted: after its last
    /// one the trade is forgotten.
    pub fn take_follow_up(&mut self, serial: u64) -> Option<PaidTrade> {
        let packed = self.numbers.get_mut(&serial)?;
        let left = (*packed & ((1 << LEFT_BITS) - 1)) as u8;
        let trade = PaidTrade {
            number: TradeNumber::new(*packed >> LEFT_BITS),
            follow_ups_left: left,
            amounts: self.amounts.get(&serial).copied(),
        };
        if left <= 1 {
            self.numbers.remove(&serial);
            self.amounts.remove(&serial);
        } else {
            *packed -= 1;
        }
        Some(trade)
    }

    /// A refund of `amount` fen made on the trade.
    pub fn refunded(&mut self, serial: u64, amount: u64) {
        if let Some((_, refunded)) = self.amounts.get_mut(&serial) {
            *refunded += amount;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    fn paid(number: u64, left: u8, amounts: Option<(u64, u64)>) -> PaidTrade {
        PaidTrade { number: TradeNumber::new(number), follow_ups_left: left, amounts }
    }

    #[test]
    fn a_trade_is_kept_until_its_last_follow_up_with_amounts_only_where_a_refund_follows() {
        let mut trades = PaidTrades::default();
        trades.insert(7, TradeNumber::new(1_000), 2, None);
        trades.insert(8, TradeNumber::new(1_001), 3, Some((900, 0)));
        assert_eq!(trades.take_follow_up(7), Some(paid(1_000, 2, None)));
        assert_eq!(trades.take_follow_up(7), Some(paid(1_000, 1, None)));
        assert_eq!(trades.take_follow_up(7), None, "forgotten after its last follow-up");
        trades.refunded(8, 450);
        assert_eq!(trades.take_follow_up(8), Some(paid(1_001, 3, Some((900, 450)))));
        trades.refunded(8, 100);
        assert_eq!(trades.take_follow_up(8), Some(paid(1_001, 2, Some((900, 550)))));
        assert_eq!(trades.take_follow_up(8), Some(paid(1_001, 1, Some((900, 550)))));
        assert_eq!(trades.take_follow_up(8), None);
        assert!(trades.numbers.is_empty() && trades.amounts.is_empty());
    }

    #[test]
    fn the_largest_number_and_the_most_follow_ups_keep_apart() {
        let mut trades = PaidTrades::default();
        let largest = (1 << (64 - LEFT_BITS)) - 1;
        trades.insert(2, TradeNumber::new(largest), u8::MAX, None);
        assert_eq!(trades.take_follow_up(2), Some(paid(largest, u8::MAX, None)));
        assert_eq!(trades.take_follow_up(2), Some(paid(largest, u8::MAX - 1, None)));
    }
}
