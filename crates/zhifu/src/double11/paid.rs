//! The driver's paid trades that follow-ups will still refer to: tens of
//! millions wait at once by a full day's end (each trade's ship, confirm and
//! refunds come up to fifteen hours after its payment).
//!
//! Every follow-up needs the trade's number; only a refund needs what the
//! buyer paid and what was refunded. So a trade is one 64-bit word (its
//! serial, its number and the follow-ups left, packed), and only the few
//! with a refund to come (3%) keep their amounts beside. A full day's serials
//! and numbers fit the word's fields; one that does not waits in a second
//! table of (serial, word) pairs. A word a bucket halves the table a
//! `HashMap<u64, u64>` was (17 bytes a bucket, over 1 GiB of the peak).

use std::collections::HashMap;

use hashbrown::HashTable;
use platform::TradeNumber;

/// Bits of a packed word that hold the serial, the number and the count of
/// follow-ups left, from the low end. A full day's serials are its
/// payments (188 M < 2^28); trade numbers share the platform's one counter
/// with events, refunds and parties (about 3.5 a payment: 2^33 leaves ten
/// times that); a trade has at most four follow-ups.
const SERIAL_BITS: u32 = 28;
const NUMBER_BITS: u32 = 33;
const LEFT_BITS: u32 = 3;
const _: () = assert!(SERIAL_BITS + NUMBER_BITS + LEFT_BITS == 64);
const _: () = assert!(sim::day::PAYMENTS_2013 < 1 << SERIAL_BITS);
/// Bits of a wide entry's word that count follow-ups left.
const WIDE_LEFT_BITS: u32 = 8;

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
    /// Serial, number and follow-ups left in one word (`pack`).
    packed: HashTable<u64>,
    /// Trades whose serial, number or count does not fit a packed word:
    /// serial → number << `WIDE_LEFT_BITS` | follow-ups left.
    wide: HashMap<u64, u64>,
    /// Serial → (paid by the buyer, refunded), for trades a refund follows.
    amounts: HashMap<u64, (u64, u64)>,
}

fn field(word: u64, shift: u32, bits: u32) -> u64 {
    word >> shift & ((1 << bits) - 1)
}

fn serial_of(word: u64) -> u64 {
    field(word, 0, SERIAL_BITS)
}

fn pack(serial: u64, number: u64, left: u8) -> Option<u64> {
    let fits = serial < 1 << SERIAL_BITS && number < 1 << NUMBER_BITS && u64::from(left) < 1 << LEFT_BITS;
    fits.then(|| serial | number << SERIAL_BITS | u64::from(left) << (SERIAL_BITS + NUMBER_BITS))
}

/// A serial's place in the packed table: serials come in order, so they
/// are mixed (a multiply by an odd constant, its high half folded down).
fn hash(serial: u64) -> u64 {
    let product = u128::from(serial) * 0x9e37_79b9_7f4a_7c15;
    (product >> 64) as u64 ^ product as u64
}

impl PaidTrades {
    /// Trade `number`, paid, with `follow_ups` (at least one) still to
    /// refer to it; `amounts` (paid by the buyer, refunded) only if a
    /// refund is among them.
    pub fn insert(&mut self, serial: u64, number: TradeNumber, follow_ups: u8, amounts: Option<(u64, u64)>) {
        // The platform makes no trade numbers beyond 2^36 (its reference index).
        assert!(number.get() < 1 << (64 - WIDE_LEFT_BITS), "trade number {number} does not fit");
        assert!(follow_ups > 0, "a trade no follow-up refers to is not kept");
        // (A serial is paid once: the workload makes one payment of each.)
        match pack(serial, number.get(), follow_ups) {
            Some(word) => {
                self.packed.insert_unique(hash(serial), word, |&word| hash(serial_of(word)));
            }
            None => {
                self.wide.insert(serial, number.get() << WIDE_LEFT_BITS | u64::from(follow_ups));
            }
        }
        if let Some(amounts) = amounts {
            self.amounts.insert(serial, amounts);
        }
    }

    /// The trade for its next follow-up, which is counted: after its last
    /// one the trade is forgotten.
    pub fn take_follow_up(&mut self, serial: u64) -> Option<PaidTrade> {
        let (number, left) = match self.packed.find_entry(hash(serial), |&word| serial_of(word) == serial) {
            Ok(entry) => {
                let word = *entry.get();
                let left = field(word, SERIAL_BITS + NUMBER_BITS, LEFT_BITS) as u8;
                if left <= 1 {
                    entry.remove();
                } else {
                    *entry.into_mut() -= 1 << (SERIAL_BITS + NUMBER_BITS);
                }
                (field(word, SERIAL_BITS, NUMBER_BITS), left)
            }
            Err(_) => {
                let word = *self.wide.get(&serial)?;
                let left = field(word, 0, WIDE_LEFT_BITS) as u8;
                if left <= 1 {
                    self.wide.remove(&serial);
                } else if let Some(word) = self.wide.get_mut(&serial) {
                    *word -= 1;
                }
                (word >> WIDE_LEFT_BITS, left)
            }
        };
        let amounts = if left <= 1 { self.amounts.remove(&serial) } else { self.amounts.get(&serial).copied() };
        Some(PaidTrade { number: TradeNumber::new(number), follow_ups_left: left, amounts })
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
        assert!(trades.packed.is_empty() && trades.wide.is_empty() && trades.amounts.is_empty());
    }

    #[test]
    fn the_largest_number_and_the_most_follow_ups_keep_apart() {
        let mut trades = PaidTrades::default();
        let largest = (1 << (64 - WIDE_LEFT_BITS)) - 1;
        trades.insert(2, TradeNumber::new(largest), u8::MAX, None);
        assert_eq!(trades.take_follow_up(2), Some(paid(largest, u8::MAX, None)));
        assert_eq!(trades.take_follow_up(2), Some(paid(largest, u8::MAX - 1, None)));
        assert_eq!(trades.wide.len(), 1, "a number past the packed field waits in the wide table");
    }

    #[test]
    fn the_packed_fields_keep_apart_at_their_largest_and_spill_over_beyond() {
        let mut trades = PaidTrades::default();
        let (serial, number) = ((1 << SERIAL_BITS) - 1, (1 << NUMBER_BITS) - 1);
        trades.insert(serial, TradeNumber::new(number), 7, None);
        trades.insert(serial + 1, TradeNumber::new(number + 1), 8, None);
        trades.insert(5, TradeNumber::new(6), 16, None);
        assert_eq!((trades.packed.len(), trades.wide.len()), (1, 2));
        for left in (1..=7).rev() {
            assert_eq!(trades.take_follow_up(serial), Some(paid(number, left, None)));
        }
        assert_eq!(trades.take_follow_up(serial), None);
        assert_eq!(trades.take_follow_up(serial + 1), Some(paid(number + 1, 8, None)));
        assert_eq!(trades.take_follow_up(5), Some(paid(6, 16, None)));
        assert_eq!(trades.take_follow_up(5), Some(paid(6, 15, None)));
    }

    proptest::proptest! {
        /// The tables answer what a plain map of the same trades answers.
        #[test]
        fn the_tables_behave_like_a_map(
            operations in proptest::collection::vec((0u64..64, proptest::bool::ANY, 1u8..12), 1..400),
        ) {
            let mut trades = PaidTrades::default();
            let mut model: HashMap<u64, (u64, u8)> = HashMap::new();
            for (index, (key, insert, follow_ups)) in operations.into_iter().enumerate() {
                // Serials near the packed field's end, numbers on both sides of it.
                let serial = (1 << SERIAL_BITS) - 32 + key;
                let number = (1 << NUMBER_BITS) - 200 + index as u64;
                if insert && !model.contains_key(&serial) {
                    trades.insert(serial, TradeNumber::new(number), follow_ups, None);
                    model.insert(serial, (number, follow_ups));
                } else {
                    let expected = model.get(&serial).copied();
                    let got = trades.take_follow_up(serial);
                    proptest::prop_assert_eq!(got, expected.map(|(number, left)| paid(number, left, None)));
                    match expected {
                        Some((_, 1)) => { model.remove(&serial); }
                        Some((number, left)) => { model.insert(serial, (number, left - 1)); }
                        None => {}
                    }
                }
            }
        }
    }
}
