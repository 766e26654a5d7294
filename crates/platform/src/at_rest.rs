//! How the platform's records look in the archive. A day's archive is
//! mostly events that report a trade's change with the trade as it left it —
//! three or four of them for each trade — so they are written compactly:
//! a time as its distance from the time before it (a nanosecond timestamp
//! is a 9-byte varint; the wait from payment to shipping, or the constant
//! 30 minutes to expiry, is a few bytes, and compresses), the event's own
//! number, party and time relative to its trade, and the party's previous
//! event as a distance back. At scale 0.02 that made the archive's records
//! a third smaller after compression (BENCHMARKS.md, "Records at rest").
//!
//! Records are only appended, and a distance is always taken between two
//! values of the same record (or from the record's own offset), with
//! wrapping arithmetic: any values round-trip, however unusual.

use std::borrow::Cow;
use std::sync::Arc;

use journal::JournalError;
use serde::{Deserialize, Serialize};

use crate::access::AuditEntry;
use crate::bank::BankEntry;
use crate::command::DeliveryAttempt;
use crate::trades::{Event, EventData, Refund, Trade, TradeMode, TradeStatus};
use crate::units::{CampaignNumber, EventNumber, Fen, PartyNumber, Timestamp, TradeNumber};

/// A record of the archive. Borrowed when written, owned when read.
#[derive(Serialize, Deserialize)]
pub(crate) enum ArchiveRecord<'a> {
    /// An event that holds a trade (a change of the trade, or a refund).
    TradeEvent(TradeEventAtRest<'a>),
    /// Any other event (withdrawals, loans), with where the same party's
    /// previous event is.
    Event { event: Cow<'a, Event>, previous_of_party: Option<u64> },
    /// A trade that rests with no event holding it as it is.
    Trade(TradeAtRest<'a>),
    /// A line of the bank's statement.
    BankEntry(Cow<'a, BankEntry>),
    /// An attempt to deliver an event, its time, and where the same
    /// merchant's previous attempt is.
    Attempt { attempt: Cow<'a, DeliveryAttempt>, at: Timestamp, previous_of_party: Option<u64> },
    /// A line of the audit log, and where the line before it is.
    Audit { entry: Cow<'a, AuditEntry>, previous: Option<u64> },
}

impl<'a> ArchiveRecord<'a> {
    pub(crate) fn attempt(attempt: &'a DeliveryAttempt, at: Timestamp, previous_of_party: Option<u64>) -> Self {
        ArchiveRecord::Attempt { attempt: Cow::Borrowed(attempt), at, previous_of_party }
    }

    pub(crate) fn audit(entry: &'a AuditEntry, previous: Option<u64>) -> Self {
        ArchiveRecord::Audit { entry: Cow::Borrowed(entry), previous }
    }
}

/// `at` as a distance from `base`, and back.
fn since(base: u64, at: u64) -> i64 {
    at.wrapping_sub(base) as i64
}

fn from(base: u64, since: i64) -> u64 {
    base.wrapping_add(since as u64)
}

fn since_time(base: Timestamp, at: Timestamp) -> i64 {
    since(base.nanos(), at.nanos())
}

fn from_time(base: Timestamp, since: i64) -> Timestamp {
    Timestamp::from_nanos(from(base.nanos(), since))
}

/// A trade with each time relative to the step before it.
#[derive(Serialize, Deserialize)]
pub(crate) struct TradeAtRest<'a> {
    number: TradeNumber,
    merchant: PartyNumber,
    out_trade_no: Cow<'a, str>,
    amount: Fen,
    subject: Cow<'a, str>,
    mode: TradeMode,
    buyer: Option<PartyNumber>,
    status: TradeStatus,
    auto_confirm_days: u32,
    created_at: Timestamp,
    /// From `created_at`.
    expire_after: i64,
    /// From `created_at`.
    paid_after: Option<i64>,
    payer: Option<PartyNumber>,
    payer_account: Option<u128>,
    /// From payment (or creation).
    shipped_after: Option<i64>,
    /// From shipping (or creation).
    confirm_due_after: Option<i64>,
    /// From shipping, else payment, else creation (the first of them the trade has).
    settled_after: Option<i64>,
    fee: Fen,
    refunded: Fen,
    refunds: Cow<'a, [Refund]>,
    campaign: Option<CampaignNumber>,
    discount: Fen,
    discount_returned: Fen,
    discount_campaign: Option<CampaignNumber>,
    discount_note: Option<Cow<'a, str>>,
    notify_url: Option<Cow<'a, str>>,
    passback_params: Option<Cow<'a, str>>,
    split: Fen,
    splits: Cow<'a, [crate::trades::Split]>,
    /// From `number`, back.
    previous_of_merchant_back: Option<i64>,
    /// From `number`, back.
    previous_of_buyer_back: Option<i64>,
    /// Back from this record's offset to the trade's previous record (its
    /// events and versions form a chain, newest first); `None` for its first.
    previous_record_back: Option<i64>,
}

impl<'a> TradeAtRest<'a> {
    pub(crate) fn of(trade: &'a Trade) -> TradeAtRest<'a> {
        let created = trade.created_at;
        let paid = trade.paid_at.unwrap_or(created);
        let shipped = trade.shipped_at.unwrap_or(created);
        let before_settled = trade.shipped_at.or(trade.paid_at).unwrap_or(created);
        TradeAtRest {
            number: trade.number,
            merchant: trade.merchant,
            out_trade_no: Cow::Borrowed(&trade.out_trade_no),
            amount: trade.amount,
            subject: Cow::Borrowed(&trade.subject),
            mode: trade.mode,
            buyer: trade.buyer,
            status: trade.status,
            auto_confirm_days: trade.auto_confirm_days,
            created_at: created,
            expire_after: since_time(created, trade.expire_at),
            paid_after: trade.paid_at.map(|at| since_time(created, at)),
            payer: trade.payer,
            payer_account: trade.payer_account,
            shipped_after: trade.shipped_at.map(|at| since_time(paid, at)),
            confirm_due_after: trade.confirm_due_at.map(|at| since_time(shipped, at)),
            settled_after: trade.settled_at.map(|at| since_time(before_settled, at)),
            fee: trade.fee,
            refunded: trade.refunded,
            refunds: Cow::Borrowed(&trade.refunds),
            campaign: trade.campaign,
            discount: trade.discount,
            discount_returned: trade.discount_returned,
            discount_campaign: trade.discount_campaign,
            discount_note: trade.discount_note.as_deref().map(Cow::Borrowed),
            notify_url: trade.notify_url.as_deref().map(Cow::Borrowed),
            passback_params: trade.passback_params.as_deref().map(Cow::Borrowed),
            split: trade.split,
            splits: Cow::Borrowed(&trade.splits),
            previous_of_merchant_back: trade
                .previous_of_merchant
                .map(|previous| since(previous.get(), trade.number.get())),
            previous_of_buyer_back: trade.previous_of_buyer.map(|previous| since(previous.get(), trade.number.get())),
            previous_record_back: None,
        }
    }

    /// The same, to be written at `offset`, after the trade's record at `previous`.
    pub(crate) fn after(mut self, previous: Option<u64>, offset: u64) -> TradeAtRest<'a> {
        self.previous_record_back = previous.map(|previous| since(previous, offset));
        self
    }

    pub(crate) fn into_trade(self) -> Trade {
        let created = self.created_at;
        let paid_at = self.paid_after.map(|after| from_time(created, after));
        let shipped_at = self.shipped_after.map(|after| from_time(paid_at.unwrap_or(created), after));
        let before_settled = shipped_at.or(paid_at).unwrap_or(created);
        Trade {
            number: self.number,
            merchant: self.merchant,
            out_trade_no: self.out_trade_no.into_owned(),
            amount: self.amount,
            subject: self.subject.into_owned(),
            mode: self.mode,
            buyer: self.buyer,
            status: self.status,
            auto_confirm_days: self.auto_confirm_days,
            expire_at: from_time(created, self.expire_after),
            created_at: created,
            paid_at,
            payer: self.payer,
            payer_account: self.payer_account,
            shipped_at,
            confirm_due_at: self.confirm_due_after.map(|after| from_time(shipped_at.unwrap_or(created), after)),
            settled_at: self.settled_after.map(|after| from_time(before_settled, after)),
            fee: self.fee,
            refunded: self.refunded,
            refunds: self.refunds.into_owned(),
            campaign: self.campaign,
            discount: self.discount,
            discount_returned: self.discount_returned,
            discount_campaign: self.discount_campaign,
            discount_note: self.discount_note.map(Cow::into_owned),
            notify_url: self.notify_url.map(Cow::into_owned),
            passback_params: self.passback_params.map(Cow::into_owned),
            split: self.split,
            splits: self.splits.into_owned(),
            previous_of_merchant: self
                .previous_of_merchant_back
                .map(|back| TradeNumber::new(self.number.get().wrapping_sub(back as u64))),
            previous_of_buyer: self
                .previous_of_buyer_back
                .map(|back| TradeNumber::new(self.number.get().wrapping_sub(back as u64))),
        }
    }
}

/// The latest time a trade records: an event about it is made then, or
/// (an expiry) a fixed while after.
fn last_time_of(trade: &Trade) -> Timestamp {
    let refunded_at = trade.refunds.last().map(|refund| refund.created_at);
    [Some(trade.created_at), trade.paid_at, trade.shipped_at, trade.settled_at, refunded_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(trade.created_at)
}

/// An event that holds its trade, told relative to the trade.
#[derive(Serialize, Deserialize)]
pub(crate) struct TradeEventAtRest<'a> {
    /// Events and trades are numbered from one counter: a trade's events
    /// come soon after it.
    number_after_trade: i64,
    /// From the trade's merchant (the party of nearly every trade event).
    party_after_merchant: i64,
    kind: Cow<'a, str>,
    /// From the trade's latest time.
    created_after_trade: i64,
    /// From the trade's number.
    trade_after_trade: Option<i64>,
    /// From this record's own offset, back.
    previous_of_party_back: Option<u64>,
    trade: TradeAtRest<'a>,
    refund: Option<Cow<'a, Refund>>,
}

impl<'a> ArchiveRecord<'a> {
    /// The record of `event`, to be archived at `offset`.
    pub(crate) fn of_event(
        event: &'a Event,
        offset: u64,
        previous_of_party: Option<u64>,
        previous_of_trade: Option<u64>,
    ) -> ArchiveRecord<'a> {
        let (trade, refund) = match &event.data {
            EventData::Trade(trade) => (trade, None),
            EventData::Refund { trade, refund } => (trade, Some(Cow::Borrowed(refund))),
            EventData::Withdrawal(_) | EventData::Loan(_) | EventData::Dispute(_) => {
                return ArchiveRecord::Event { event: Cow::Borrowed(event), previous_of_party };
            }
        };
        ArchiveRecord::TradeEvent(TradeEventAtRest {
            number_after_trade: since(trade.number.get(), event.number.get()),
            party_after_merchant: since(trade.merchant.get(), event.party.get()),
            kind: Cow::Borrowed(&event.kind),
            created_after_trade: since_time(last_time_of(trade), event.created_at),
            trade_after_trade: event.trade.map(|number| since(trade.number.get(), number.get())),
            previous_of_party_back: previous_of_party.map(|previous| offset.wrapping_sub(previous)),
            trade: TradeAtRest::of(trade).after(previous_of_trade, offset),
            refund,
        })
    }
}

impl ArchiveRecord<'static> {
    /// The record at `offset` as read back.
    pub(crate) fn decode(payload: &[u8], offset: u64) -> Result<ArchiveRecord<'static>, JournalError> {
        postcard::from_bytes(payload)
            .map_err(|_| JournalError::Failed(format!("archive record at {offset} is not a platform record")))
    }

    /// A trade's record: its own, or the event that reported its last change.
    /// The number of the trade the record holds, if it holds one.
    pub(crate) fn trade_number(&self) -> Option<TradeNumber> {
        match self {
            ArchiveRecord::Trade(trade) | ArchiveRecord::TradeEvent(TradeEventAtRest { trade, .. }) => {
                Some(trade.number)
            }
            _ => None,
        }
    }

    /// Where the trade's record before this one is (a trade's records).
    pub(crate) fn previous_of_trade(&self, offset: u64) -> Option<u64> {
        match self {
            ArchiveRecord::Trade(trade) | ArchiveRecord::TradeEvent(TradeEventAtRest { trade, .. }) => {
                trade.previous_record_back.map(|back| from(offset, -back))
            }
            _ => None,
        }
    }

    pub(crate) fn into_trade(self, offset: u64) -> Result<Trade, JournalError> {
        match self {
            ArchiveRecord::Trade(trade) | ArchiveRecord::TradeEvent(TradeEventAtRest { trade, .. }) => {
                Ok(trade.into_trade())
            }
            _ => Err(JournalError::Failed(format!("archive record at {offset} is not a trade"))),
        }
    }

    /// The event and where its party's previous one is.
    pub(crate) fn into_event(self, offset: u64) -> Result<(Event, Option<u64>), JournalError> {
        match self {
            ArchiveRecord::Event { event, previous_of_party } => Ok((event.into_owned(), previous_of_party)),
            ArchiveRecord::TradeEvent(at_rest) => {
                let trade = at_rest.trade.into_trade();
                let event = Event {
                    number: EventNumber::new(from(trade.number.get(), at_rest.number_after_trade)),
                    party: PartyNumber::new(from(trade.merchant.get(), at_rest.party_after_merchant)),
                    kind: at_rest.kind.into_owned(),
                    created_at: from_time(last_time_of(&trade), at_rest.created_after_trade),
                    trade: at_rest.trade_after_trade.map(|after| TradeNumber::new(from(trade.number.get(), after))),
                    data: match at_rest.refund {
                        Some(refund) => EventData::Refund { trade: Arc::new(trade), refund: refund.into_owned() },
                        None => EventData::Trade(Arc::new(trade)),
                    },
                };
                Ok((event, at_rest.previous_of_party_back.map(|back| offset.wrapping_sub(back))))
            }
            _ => Err(JournalError::Failed(format!("archive record at {offset} is not an event"))),
        }
    }

    pub(crate) fn into_bank_entry(self, offset: u64) -> Result<BankEntry, JournalError> {
        match self {
            ArchiveRecord::BankEntry(entry) => Ok(entry.into_owned()),
            _ => Err(JournalError::Failed(format!("archive record at {offset} is not a bank statement line"))),
        }
    }

    /// A delivery attempt, its time, and where its merchant's previous one is.
    pub(crate) fn into_attempt(self, offset: u64) -> Result<(DeliveryAttempt, Timestamp, Option<u64>), JournalError> {
        match self {
            ArchiveRecord::Attempt { attempt, at, previous_of_party } => {
                Ok((attempt.into_owned(), at, previous_of_party))
            }
            _ => Err(JournalError::Failed(format!("archive record at {offset} is not a delivery attempt"))),
        }
    }

    /// An audit line and where the one before it is.
    pub(crate) fn into_audit(self, offset: u64) -> Result<(AuditEntry, Option<u64>), JournalError> {
        match self {
            ArchiveRecord::Audit { entry, previous } => Ok((entry.into_owned(), previous)),
            _ => Err(JournalError::Failed(format!("archive record at {offset} is not an audit line"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use proptest::prelude::*;

    use super::*;

    /// Times near each other (as a day's are) or anywhere at all.
    fn time() -> impl Strategy<Value = Timestamp> {
        prop_oneof![3 => 1_700_000_000_000_000_000..1_700_000_900_000_000_000u64, 1 => any::<u64>()]
            .prop_map(Timestamp::from_nanos)
    }

    fn refund() -> impl Strategy<Value = Refund> {
        (any::<u64>(), "[a-z0-9-]{0,12}", any::<u64>(), proptest::option::of("[a-z ]{0,8}"), time()).prop_map(
            |(number, out_request_no, amount, reason, created_at)| Refund {
                number,
                out_request_no,
                amount: Fen::new(amount),
                reason,
                created_at,
            },
        )
    }

    prop_compose! {
        fn trade()(
            (number, merchant, amount, buyer, payer) in (any::<u64>(), any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>())),
            (out_trade_no, subject, escrow, status, auto_confirm_days) in ("[a-z0-9-]{0,16}", "[A-Za-z ]{0,20}", any::<bool>(), 0..5usize, any::<u32>()),
            (expire_at, created_at, paid_at, shipped_at, confirm_due_at, settled_at) in (time(), time(), proptest::option::of(time()), proptest::option::of(time()), proptest::option::of(time()), proptest::option::of(time())),
            (payer_account, fee, refunded, refunds) in (proptest::option::of(any::<u128>()), any::<u64>(), any::<u64>(), proptest::collection::vec(refund(), 0..3)),
            (campaign, discount, discount_note, notify_url, passback_params) in (proptest::option::of(any::<u64>()), any::<u64>(), proptest::option::of("[a-z ]{0,10}"), proptest::option::of("https://[a-z]{1,8}/n"), proptest::option::of("[a-z=&%0-9]{0,12}")),
            (discount_returned, discount_campaign, previous_of_merchant, previous_of_buyer) in (any::<u64>(), proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>())),
        ) -> Trade {
            let statuses = [TradeStatus::WaitBuyerPay, TradeStatus::WaitSellerSend, TradeStatus::WaitBuyerConfirm, TradeStatus::TradeSuccess, TradeStatus::TradeClosed];
            Trade {
                number: TradeNumber::new(number), merchant: PartyNumber::new(merchant), out_trade_no, amount: Fen::new(amount), subject,
                mode: if escrow { TradeMode::Escrow } else { TradeMode::Instant },
                buyer: buyer.map(PartyNumber::new), status: statuses[status], auto_confirm_days, expire_at, created_at, paid_at, payer: payer.map(PartyNumber::new), payer_account,
                shipped_at, confirm_due_at, settled_at, fee: Fen::new(fee), refunded: Fen::new(refunded), refunds, campaign: campaign.map(CampaignNumber::new),
                discount: Fen::new(discount), discount_returned: Fen::new(discount_returned),
                discount_campaign: discount_campaign.map(CampaignNumber::new), discount_note, notify_url, passback_params, split: Fen::ZERO, splits: Vec::new(),
                previous_of_merchant: previous_of_merchant.map(TradeNumber::new), previous_of_buyer: previous_of_buyer.map(TradeNumber::new),
            }
        }
    }

    fn round_trip(record: &ArchiveRecord<'_>, offset: u64) -> ArchiveRecord<'static> {
        ArchiveRecord::decode(&postcard::to_allocvec(record).unwrap(), offset).unwrap()
    }

    /// What the platform makes of a record read ahead (on another thread).
    fn decoded_ahead(record: &ArchiveRecord<'_>, offset: u64) -> Option<Trade> {
        let bytes = postcard::to_allocvec(record).unwrap();
        let decoded = <crate::platform::Platform as journal::StateMachine>::decode_read_ahead(offset, &bytes)?;
        Some(Trade::clone(&decoded.downcast::<Arc<Trade>>().unwrap()))
    }

    proptest! {
        /// A trade comes back as it went in, whatever its times and numbers,
        /// and decoded ahead the same.
        #[test]
        fn a_trade_round_trips(trade in trade(), offset in any::<u64>()) {
            let record = ArchiveRecord::Trade(TradeAtRest::of(&trade));
            let back = round_trip(&record, offset).into_trade(offset).unwrap();
            prop_assert_eq!(decoded_ahead(&record, offset), Some(back.clone()));
            prop_assert_eq!(back, trade);
        }

        /// So does an event that holds a trade (and the trade, read from
        /// it), with the party's previous event before or after it.
        #[test]
        fn a_trade_event_round_trips(
            trade in trade(),
            refund in proptest::option::of(refund()),
            (number, party, created_at, names_trade) in (any::<u64>(), any::<u64>(), time(), any::<bool>()),
            (offset, previous_of_party) in (any::<u64>(), proptest::option::of(any::<u64>())),
        ) {
            let trade = Arc::new(trade);
            let data = match refund {
                Some(refund) => EventData::Refund { trade: Arc::clone(&trade), refund },
                None => EventData::Trade(Arc::clone(&trade)),
            };
            let kind = "trade.paid".to_string();
            let event = Event { number: EventNumber::new(number), party: PartyNumber::new(party), kind, created_at, trade: names_trade.then_some(trade.number), data };
            let record = ArchiveRecord::of_event(&event, offset, previous_of_party, None);
            prop_assert!(matches!(record, ArchiveRecord::TradeEvent(_)));
            prop_assert_eq!(round_trip(&record, offset).into_event(offset).unwrap(), (event.clone(), previous_of_party));
            prop_assert_eq!(round_trip(&record, offset).into_trade(offset).unwrap(), Trade::clone(&trade));
            prop_assert_eq!(decoded_ahead(&record, offset), Some(Trade::clone(&trade)));
        }
    }

    #[test]
    fn a_record_that_holds_no_trade_is_left_undecoded_ahead() {
        let entry = crate::bank::BankEntry {
            date: crate::calendar::Date { year: 2013, month: 11, day: 11 },
            kind: crate::bank::BankEntryKind::TopUp,
            reference: 42,
            amount: Fen::new(10_000),
            succeeded: true,
            ledger_transfer_id: Some(7),
            ledger_position: Some(3),
        };
        assert_eq!(decoded_ahead(&ArchiveRecord::BankEntry(Cow::Borrowed(&entry)), 7), None);
        assert!(<crate::platform::Platform as journal::StateMachine>::decode_read_ahead(7, b"not a record").is_none());
    }

    #[test]
    fn a_days_trade_event_is_smaller_than_its_full_encoding() {
        let created_at = Timestamp::from_nanos(1_731_254_400_123_456_789);
        let trade = Arc::new(Trade {
            number: TradeNumber::new(123_456_789),
            merchant: PartyNumber::new(4_321),
            out_trade_no: "d11-123456".to_string(),
            amount: Fen::new(19_990),
            subject: "Double Eleven order".to_string(),
            mode: TradeMode::Escrow,
            buyer: None,
            status: TradeStatus::TradeSuccess,
            auto_confirm_days: 10,
            expire_at: created_at.plus_nanos(30 * 60 * 1_000_000_000),
            created_at,
            paid_at: Some(created_at.plus_nanos(12_345_678)),
            payer: Some(PartyNumber::new(7_654_321)),
            payer_account: Some(7_654_321 << 16 | 1),
            shipped_at: Some(created_at.plus_nanos(3_600_000_000_000)),
            confirm_due_at: Some(created_at.plus_nanos(3_600_000_000_000 + 10 * 86_400_000_000_000)),
            settled_at: Some(created_at.plus_nanos(7_200_000_000_000)),
            fee: Fen::new(120),
            refunded: Fen::ZERO,
            refunds: Vec::new(),
            campaign: None,
            discount: Fen::ZERO,
            discount_returned: Fen::ZERO,
            discount_campaign: None,
            discount_note: None,
            notify_url: None,
            passback_params: None,
            split: Fen::ZERO,
            splits: Vec::new(),
            previous_of_merchant: Some(TradeNumber::new(123_456_700)),
            previous_of_buyer: Some(TradeNumber::new(123_400_000)),
        });
        let event = Event {
            number: EventNumber::new(trade.number.get() + 1_000),
            party: trade.merchant,
            kind: "trade.succeeded".to_string(),
            created_at: trade.settled_at.unwrap(),
            trade: Some(trade.number),
            data: EventData::Trade(Arc::clone(&trade)),
        };
        let offset = 50_000_000_000;
        let compact =
            postcard::to_allocvec(&ArchiveRecord::of_event(&event, offset, Some(offset - 900), Some(offset - 300)))
                .unwrap();
        let full = postcard::to_allocvec(&(&event, Some(offset - 900))).unwrap();
        // Before compression (which takes the constant waits, 30 minutes to
        // expiry and 10 days to confirmation, almost for nothing).
        assert!(compact.len() * 100 <= full.len() * 85, "{} bytes against {}", compact.len(), full.len());
    }
}
