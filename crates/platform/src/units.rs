//! Typed numbers: each kind of id, money and time is its own type, so that a
//! party's number cannot be passed where a trade's is meant, nor fen where
//! nanoseconds are.
//!
//! Every type is a `u64` underneath and serializes as one
//! (`#[serde(transparent)]`): the log, the snapshots and the wire formats
//! are the same as with bare numbers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Defines an id type: a number handed out in order, compared and hashed,
/// with no arithmetic (an id plus an id means nothing).
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(number: u64) -> $name {
                $name(number)
            }

            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(formatter)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    };
}

id_type!(
    /// A party's number (users and merchants share one sequence). The
    /// admin, who is not a party, is 0 where a caller is named.
    PartyNumber
);

id_type!(
    /// A merchant trade's number.
    TradeNumber
);

id_type!(
    /// A loan's number (a credit-line loan or an advance on a trade).
    LoanNumber
);

id_type!(
    /// A marketing campaign's number.
    CampaignNumber
);

id_type!(
    /// A coupon's number.
    CouponNumber
);

id_type!(
    /// A red packet's number.
    RedPacketNumber
);

id_type!(
    /// An event's number (what a webhook delivers).
    EventNumber
);

id_type!(
    /// A staff account's number.
    StaffNumber
);

id_type!(
    /// A merchant's webhook endpoint's number.
    EndpointNumber
);

id_type!(
    /// A line of the audit log: its place in it, from 1.
    AuditNumber
);

/// A moment: nanoseconds since the Unix epoch, from the platform's clock
/// (a command's `now`, and every time a record keeps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// `nanos` later; the end of time if that is past it (a far expiry
    /// never wraps into the past).
    pub const fn plus_nanos(self, nanos: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(nanos))
    }

    /// `nanos` earlier; the epoch if that is before it.
    pub const fn minus_nanos(self, nanos: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(nanos))
    }

    /// Nanoseconds from `earlier` to this moment; 0 if `earlier` is later.
    pub const fn nanos_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// Money in fen (0.01 yuan), the unit of every balance the platform keeps.
/// Arithmetic never wraps: `checked_*` says `None`, and the operators stop
/// the process (a broken invariant: every amount is bounded far below
/// `u64::MAX`, and no product takes more than it holds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fen(u64);

impl Fen {
    pub const ZERO: Fen = Fen(0);
    pub const MAX: Fen = Fen(u64::MAX);

    pub const fn new(fen: u64) -> Fen {
        Fen(fen)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// As the ledger counts amounts.
    pub const fn as_amount(self) -> ledger::Amount {
        self.0 as ledger::Amount
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).map(Fen)
    }

    pub fn saturating_sub(self, other: Fen) -> Fen {
        Fen(self.0.saturating_sub(other.0))
    }
}

impl std::ops::Add for Fen {
    type Output = Fen;

    #[track_caller]
    fn add(self, other: Fen) -> Fen {
        self.checked_add(other)
            .unwrap_or_else(|| crate::invariant::broken(format_args!("{self} + {other} fen overflows")))
    }
}

impl std::ops::Sub for Fen {
    type Output = Fen;

    #[track_caller]
    fn sub(self, other: Fen) -> Fen {
        self.checked_sub(other)
            .unwrap_or_else(|| crate::invariant::broken(format_args!("{self} - {other} fen is below zero")))
    }
}

impl std::ops::AddAssign for Fen {
    #[track_caller]
    fn add_assign(&mut self, other: Fen) {
        *self = *self + other;
    }
}

impl std::ops::SubAssign for Fen {
    #[track_caller]
    fn sub_assign(&mut self, other: Fen) {
        *self = *self - other;
    }
}

impl std::iter::Sum for Fen {
    #[track_caller]
    fn sum<I: Iterator<Item = Fen>>(amounts: I) -> Fen {
        amounts.fold(Fen::ZERO, |total, amount| total + amount)
    }
}

impl fmt::Display for Fen {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl From<Fen> for u64 {
    fn from(fen: Fen) -> u64 {
        fen.0
    }
}

impl From<Fen> for u128 {
    fn from(fen: Fen) -> u128 {
        u128::from(fen.0)
    }
}

impl From<Fen> for i128 {
    fn from(fen: Fen) -> i128 {
        i128::from(fen.0)
    }
}

impl TryFrom<u128> for Fen {
    type Error = std::num::TryFromIntError;

    fn try_from(fen: u128) -> Result<Fen, Self::Error> {
        u64::try_from(fen).map(Fen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_numbers_encode_as_bare_numbers() {
        // The log and snapshots were written with bare u64s: the types must
        // not change a byte.
        for number in [0, 7, 300, u64::MAX] {
            assert_eq!(
                postcard::to_allocvec(&Timestamp::from_nanos(number)).unwrap(),
                postcard::to_allocvec(&number).unwrap()
            );
            let bare = postcard::to_allocvec(&number).unwrap();
            assert_eq!(postcard::to_allocvec(&PartyNumber::new(number)).unwrap(), bare);
            assert_eq!(postcard::to_allocvec(&TradeNumber::new(number)).unwrap(), bare);
            assert_eq!(postcard::to_allocvec(&Fen::new(number)).unwrap(), bare);
            assert_eq!(postcard::from_bytes::<PartyNumber>(&bare).unwrap(), PartyNumber::new(number));
        }
    }

    #[test]
    fn money_arithmetic_never_wraps() {
        assert_eq!(Fen::new(u64::MAX).checked_add(Fen::new(1)), None);
        assert_eq!(Fen::new(1).checked_sub(Fen::new(2)), None);
        assert_eq!(Fen::new(1).saturating_sub(Fen::new(2)), Fen::ZERO);
        assert_eq!(Fen::new(5).checked_add(Fen::new(2)), Some(Fen::new(7)));
        assert_eq!(Fen::new(5) - Fen::new(2), Fen::new(3));
        assert_eq!([Fen::new(1), Fen::new(2)].into_iter().sum::<Fen>(), Fen::new(3));
    }

    #[test]
    #[should_panic(expected = "broken invariant: 1 - 2 fen is below zero")]
    fn money_below_zero_stops() {
        let _ = Fen::new(1) - Fen::new(2);
    }
}
