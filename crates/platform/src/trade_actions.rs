//! The trade actions of `Platform`: each checks the transition, moves the
//! money in one linked chain, and records the trade and its events in the
//! same command.

use std::collections::HashMap;
use std::sync::Arc;

use journal::{ArchiveSource, JournalError};
use ledger::Transfer;

use crate::accounts::{self, REVENUE, Reference};
use crate::at_rest::{ArchiveRecord, TradeAtRest};
use crate::bank::BankEntry;
use crate::command::{Action, NewTrade, Outcome, PartyKind, PaySource, Rejection};
use crate::fees::Product;
use crate::platform::{AMOUNT_MAX, Platform};
use crate::rejection::{Conflict, Invalid, Limit, Missing, conflict, invalid};
use crate::trades::{
    AUTO_CONFIRM_DAYS_DEFAULT, AUTO_CONFIRM_DAYS_MAX, EXPIRE_MINUTES_DEFAULT, EXPIRE_MINUTES_MAX, Event, EventData,
    Refund, Trade, TradeMode, TradeStatus,
};
use crate::units::{CampaignNumber, CouponNumber, EventNumber, Fen, LoanNumber, PartyNumber, Timestamp, TradeNumber};

use ledger::NANOS_PER_SECOND;
/// Merchant references (`out_trade_no`, `out_request_no`) are at most this long.
pub const REFERENCE_CHARS_MAX: usize = 64;
/// A notification URL is at most this long.
pub const URL_CHARS_MAX: usize = 2_048;
/// Alipay's bound on `passback_params`.
pub const PASSBACK_CHARS_MAX: usize = 512;
/// Payment codes are this many digits, as Alipay's.
pub const PAYMENT_CODE_DIGITS: usize = 18;
/// A trade's subject is at most this long.
pub const SUBJECT_CHARS_MAX: usize = 256;
/// A refund reason is at most this long.
pub const REASON_CHARS_MAX: usize = 256;
/// Refunds of one trade, at most (Alipay's limit): also bounds the size of
/// a trade's archive record, which holds them all.
pub const REFUNDS_PER_TRADE_MAX: usize = 50;

// The defaults a new trade takes pass the checks a given value must.
const _: () = assert!(AUTO_CONFIRM_DAYS_DEFAULT >= 1 && AUTO_CONFIRM_DAYS_DEFAULT <= AUTO_CONFIRM_DAYS_MAX);
const _: () = assert!(EXPIRE_MINUTES_DEFAULT >= 1 && EXPIRE_MINUTES_DEFAULT <= EXPIRE_MINUTES_MAX);
// A trade's refunds, each at most AMOUNT_MAX, sum without overflow.
const _: () = assert!(AMOUNT_MAX.checked_mul(REFUNDS_PER_TRADE_MAX as u64).is_some());

/// Trades: those live in memory, where every trade is, the `out_trade_no`
/// index, what falls due, and payment codes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TradeBook {
    /// Live trades: unpaid ones, and others only within the command that
    /// brought them back or changed them (then they go to the archive, see
    /// `TradeStatus::rests_in_archive`).
    pub(crate) live: std::collections::BTreeMap<TradeNumber, std::sync::Arc<Trade>>,
    /// Every trade, and where those that rest in the archive are.
    directory: crate::trade_directory::TradeDirectory,
    /// The `out_trade_no` index: the merchant's reference hashed (see
    /// `reference_key`) → trade numbers; a lookup compares the trades it
    /// finds with the reference. Refunds are filed here too, by their
    /// number (`refund_key`): refunds are few beside trades.
    by_reference: crate::reference_index::ReferenceIndex,
    /// (when, trade) of live trades: expiry of unpaid ones, auto-confirmation
    /// of shipped ones (entries of trades no longer live are stale).
    pub(crate) due: std::collections::BTreeSet<(Timestamp, TradeNumber)>,
    /// (when, trade): auto-confirmation of shipped trades parked in the
    /// archive; a tick brings those due back (`Platform::bring_back_trades`).
    parked_due: crate::due_queue::DueQueue,
    /// Payment codes not yet used: code → (user, expires_at).
    payment_codes: std::collections::BTreeMap<String, (PartyNumber, Timestamp)>,
    payment_codes_due: std::collections::BTreeSet<(Timestamp, String)>,
    /// Where the newest archive record of a paid trade that stays in
    /// memory (a disputed one) is: its next record links back to it.
    live_last_record: std::collections::BTreeMap<TradeNumber, u64>,
}

impl TradeBook {
    /// When the next live trade expires or auto-confirms, or a parked one auto-confirms.
    pub(crate) fn first_due(&self) -> Option<Timestamp> {
        let live = self.due.first().map(|&(at, _)| at);
        live.into_iter().chain(self.parked_due.first_due()).min()
    }

    /// How many parked trades auto-confirm by `now`, counting at most `limit`.
    pub(crate) fn parked_due_count(&self, now: Timestamp, limit: usize) -> usize {
        self.parked_due.count_due_up_to(now, limit)
    }

    /// When the first payment code expires (and waits to be forgotten), if any.
    pub(crate) fn first_code_due(&self) -> Option<Timestamp> {
        self.payment_codes_due.first().map(|(at, _)| *at)
    }

    /// Forgets payment codes expired by `now`, at most `budget` of them.
    pub(crate) fn forget_expired_codes(&mut self, now: Timestamp, budget: &mut u32) {
        while let Some((expires_at, code)) = self.payment_codes_due.first().cloned() {
            if expires_at > now || *budget == 0 {
                break;
            }
            *budget -= 1;
            self.payment_codes_due.pop_first();
            self.payment_codes.remove(&code);
        }
    }
}

/// What the command being applied did to trades.
#[derive(Default)]
pub(crate) struct Touched {
    /// Trades it created or changed.
    pub changed: Vec<TradeNumber>,
    /// Archived trades it brought back, with where they were.
    pub restored: Vec<(TradeNumber, u64)>,
    /// Events it archived that hold a trade: (trade, event's offset, the
    /// trade as the event holds it). Held, so that a later change within
    /// the command copies the record (and so differs from the event's).
    pub events: Vec<(TradeNumber, u64, Arc<Trade>)>,
    /// Each trade's newest record in the archive as the command goes (where
    /// it was brought back from, then each record written of it): the next
    /// record links back to it.
    pub last_record: HashMap<TradeNumber, u64>,
}

/// A list of [`Touched`] that grew past this many is let go, not reused.
const TOUCHED_KEPT_MAX: usize = 1 << 10;

impl Touched {
    /// Takes `used`'s lists, emptied, where its own are empty: each command
    /// made its own and grew them, an allocation or more a command. Not
    /// those a large command (a tick's) grew.
    fn reuse(&mut self, used: Touched) {
        let Touched { changed, restored, events, last_record } = used;
        reuse(&mut self.changed, changed);
        reuse(&mut self.restored, restored);
        reuse(&mut self.events, events);
        if self.last_record.is_empty() && last_record.capacity() <= TOUCHED_KEPT_MAX {
            let mut last_record = last_record;
            last_record.clear();
            self.last_record = last_record;
        }
    }
}

fn reuse<T>(slot: &mut Vec<T>, mut used: Vec<T>) {
    if slot.is_empty() && used.capacity() <= TOUCHED_KEPT_MAX {
        used.clear();
        *slot = used;
    }
}

fn not_found() -> Outcome {
    crate::rejection::not_found(Missing::Trade)
}

/// What a refund moves besides the buyer's money (see `Platform::refund_plan`).
struct RefundPlan {
    /// The merchant has the money (and paid the fee): after settlement, or an instant trade.
    settled: bool,
    fee_back: Fen,
    discount_back: Fen,
    /// Where the discount goes, and whether that is the running campaign.
    discount_to: Option<(u128, bool)>,
    /// An advance on the trade: the loan and what the refund repays of it.
    advance: Option<(LoanNumber, Fen)>,
}

/// Whether a new refund of `amount` may be made on `trade` (whose refunds
/// do not have `out_request_no` yet), and the account the buyer paid from,
/// where it goes.
fn check_refund(trade: &Trade, out_request_no: &str, amount: Fen, reason: &Option<String>) -> Result<u128, Outcome> {
    if !valid_reference(out_request_no) {
        return Err(invalid(Invalid::RefundRequestNo));
    }
    if reason.as_ref().is_some_and(|reason| crate::text::check_optional_text(reason, REASON_CHARS_MAX).is_err()) {
        return Err(invalid(Invalid::Reason));
    }
    if amount.is_zero() || amount.get() > AMOUNT_MAX {
        return Err(invalid(Invalid::Amount));
    }
    if trade.refunds.len() >= REFUNDS_PER_TRADE_MAX {
        return Err(Outcome::Rejected(Rejection::LimitExceeded(Limit::RefundsPerTrade)));
    }
    let Some(source) = trade.payer_account.filter(|_| trade.status != TradeStatus::WaitBuyerPay) else {
        return Err(conflict(Conflict::TradeNotPaid));
    };
    if trade.status == TradeStatus::TradeClosed {
        return Err(conflict(Conflict::TradeClosed));
    }
    if amount > trade.refundable() {
        return Err(Outcome::Rejected(Rejection::LimitExceeded(Limit::Refundable { left: trade.refundable() })));
    }
    Ok(source)
}

pub(crate) fn valid_reference(text: &str) -> bool {
    !text.is_empty() && text.chars().count() <= REFERENCE_CHARS_MAX && text.chars().all(|c| c.is_ascii_graphic())
}

impl Platform {
    /// Trades in memory (unpaid) and in the archive (paid and waiting to
    /// ship or for the buyer, settled or closed).
    pub fn trade_counts(&self) -> (usize, usize) {
        (self.state.trades.live.len(), self.state.trades.directory.archived_len())
    }

    /// The trade with this number, live or archived.
    pub fn trade(&self, archive: &dyn ArchiveSource, number: TradeNumber) -> Result<Option<Trade>, JournalError> {
        if let Some(trade) = self.state.trades.live.get(&number) {
            return Ok(Some(Trade::clone(trade)));
        }
        match self.state.trades.directory.archived_at(number) {
            Some(offset) => self.archived_trade_at(archive, offset).map(Some),
            None => Ok(None),
        }
    }

    /// A merchant's trade by its own reference.
    pub fn trade_by_out_trade_no(
        &self,
        archive: &dyn ArchiveSource,
        merchant: PartyNumber,
        out_trade_no: &str,
    ) -> Result<Option<Trade>, JournalError> {
        for number in self.numbers_by_reference(merchant, out_trade_no) {
            let trade = self.trade(archive, number)?;
            if trade.as_ref().is_some_and(|trade| trade.merchant == merchant && trade.out_trade_no == out_trade_no) {
                return Ok(trade);
            }
        }
        Ok(None)
    }

    /// The trade a refund was made on, with the refund.
    pub fn trade_by_refund(
        &self,
        archive: &dyn ArchiveSource,
        refund: u64,
    ) -> Result<Option<(Trade, Refund)>, JournalError> {
        for number in self.state.trades.by_reference.candidates(refund_key(refund)) {
            let Some(trade) = self.trade(archive, TradeNumber::new(number))? else { continue };
            if let Some(found) = trade.refunds.iter().find(|r| r.number == refund).cloned() {
                return Ok(Some((trade, found)));
            }
        }
        Ok(None)
    }

    /// The trades of any merchant made with this reference, newest first, at
    /// most `limit`: each merchant's index is asked (no scan of the trades).
    pub fn trades_by_out_trade_no_of_anyone(
        &self,
        archive: &dyn ArchiveSource,
        out_trade_no: &str,
        limit: usize,
    ) -> Result<Vec<Trade>, JournalError> {
        let mut found = Vec::new();
        for &merchant in self.state.parties.merchants().iter().rev() {
            if found.len() >= limit {
                break;
            }
            found.extend(self.trade_by_out_trade_no(archive, merchant, out_trade_no)?);
        }
        found.sort_by_key(|trade| std::cmp::Reverse(trade.number));
        Ok(found)
    }

    /// The trades whose reference hashes as this one's (almost always the
    /// one trade with it, if any).
    fn numbers_by_reference(&self, merchant: PartyNumber, out_trade_no: &str) -> Vec<TradeNumber> {
        self.state.trades.by_reference.candidates(reference_key(merchant, out_trade_no)).map(TradeNumber::new).collect()
    }

    /// Where the trades below `before` (a trade number) are, newest first, at
    /// most `max`: for reading archived ones after the state's lock is let go
    /// (see [`list_trades_newest_first`]).
    pub fn trades_at_newest_first(&self, before: Option<TradeNumber>, max: usize) -> Vec<(TradeNumber, TradeAt)> {
        let upper = before.unwrap_or(TradeNumber::new(u64::MAX));
        let mut live = self.state.trades.live.range(..upper).rev().peekable();
        let mut archived = self.state.trades.directory.archived_newest_first(upper).peekable();
        let mut found = Vec::new();
        while found.len() < max {
            let take_live = match (live.peek(), archived.peek()) {
                (None, None) => break,
                (Some((live_number, _)), Some((archived_number, _))) => *live_number > archived_number,
                (live_next, _) => live_next.is_some(),
            };
            let next = if take_live {
                live.next().map(|(&number, trade)| (number, TradeAt::Memory(Arc::clone(trade))))
            } else {
                archived.next().map(|(number, offset)| (number, TradeAt::Archive(offset)))
            };
            found.extend(next);
        }
        found
    }

    /// Where the trade with this number is (for reading an archived one after
    /// the state's lock is let go).
    pub fn trade_at(&self, number: TradeNumber) -> Option<TradeAt> {
        if let Some(trade) = self.state.trades.live.get(&number) {
            return Some(TradeAt::Memory(Arc::clone(trade)));
        }
        self.state.trades.directory.archived_at(number).map(TradeAt::Archive)
    }

    /// The newest trade of a party's chain (see `Trade::previous_of_merchant`).
    pub fn last_trade_of(&self, party: PartyNumber) -> Option<TradeNumber> {
        self.state.parties.get(party)?.last_trade
    }

    /// How many trades the platform has made: no chain is longer.
    pub fn trades_made(&self) -> u64 {
        self.state.trades.directory.len()
    }

    /// Trades newest first, from below `before`, that pass `keep` (for a
    /// platform read in one go; a server uses [`list_trades_newest_first`]).
    pub fn trades_newest_first(
        &self,
        archive: &dyn ArchiveSource,
        before: Option<TradeNumber>,
        limit: usize,
        keep: impl Fn(&Trade) -> bool,
    ) -> Result<Vec<Trade>, JournalError> {
        list_trades_newest_first(
            |before, max| Ok(self.trades_at_newest_first(before, max)),
            |offset| self.archived_trade_at(archive, offset),
            before,
            limit,
            keep,
        )
    }

    /// The newest event of a party: where it is in the archive.
    /// Where a trade's newest record rests in the archive (`None`: it is
    /// live, in memory, and unpaid: it has no events yet).
    pub fn trade_record_at(&self, number: TradeNumber) -> Option<u64> {
        let trades = &self.state.trades;
        trades.directory.archived_at(number).or_else(|| trades.live_last_record.get(&number).copied())
    }

    /// The newest archive record of a trade as the command goes (one it
    /// wrote, else where it was brought back from or, staying in memory,
    /// last recorded).
    pub(crate) fn last_record_of(&self, number: TradeNumber) -> Option<u64> {
        let written = self.touched.last_record.get(&number).copied();
        written.or_else(|| self.state.trades.live_last_record.get(&number).copied())
    }

    pub fn last_event_at(&self, party: PartyNumber) -> Option<u64> {
        self.state.events.last_of_party(party)
    }

    /// Every trade, live and archived, in no particular order: the live ones,
    /// then the archived ones in the order they are in the archive (each
    /// frame read once: the archive holds every version of a trade, and a
    /// record is visited when it is the version the directory points to).
    pub fn for_each_trade(
        &self,
        archive: &dyn ArchiveSource,
        mut visit: impl FnMut(&Trade),
    ) -> Result<(), JournalError> {
        self.state.trades.live.values().for_each(|trade| visit(trade));
        let directory = &self.state.trades.directory;
        let mut archived = 0;
        let mut at_rest = |offset: u64, payload: &[u8]| -> Result<(), JournalError> {
            let record: ArchiveRecord = postcard::from_bytes(payload)
                .map_err(|_| JournalError::Failed(format!("archive record at {offset} is not a platform record")))?;
            if record.trade_number().is_some_and(|number| directory.archived_at(number) == Some(offset)) {
                visit(&record.into_trade(offset)?);
                archived += 1;
            }
            Ok(())
        };
        archive.for_each_record(&mut at_rest)?;
        self.state.archive.for_each_pending(&mut at_rest)?;
        if archived != directory.archived_len() {
            return Err(JournalError::Failed(format!(
                "the archive holds {archived} of the {} archived trades",
                directory.archived_len()
            )));
        }
        Ok(())
    }

    /// Brings back to memory, for the command applying `action`, the trades
    /// it names that wait in the archive (a tick: the shipped ones whose
    /// auto-confirmation is due). The command's end parks them again. The
    /// only reads apply does, and before anything changes.
    pub(crate) fn bring_back_trades(
        &mut self,
        now: Timestamp,
        action: &Action,
        archive: &dyn ArchiveSource,
    ) -> Result<(), JournalError> {
        let numbers = match named_trades(action) {
            // Most commands name one trade: no list for it.
            NamedTrades::Number(number) => return self.bring_back_trade(number, archive),
            NamedTrades::Reference(new) => self.numbers_by_reference(new.merchant, &new.out_trade_no),
            NamedTrades::DueOnes => {
                let due = self.state.trades.parked_due.due_up_to(now, crate::platform::TICK_ITEMS_MAX as usize);
                let directory = &self.state.trades.directory;
                let offsets: Vec<u64> = due.iter().filter_map(|&number| directory.archived_at(number)).collect();
                archive.decode_ahead(&offsets, <Platform as journal::StateMachine>::decode_read_ahead);
                due
            }
            NamedTrades::None => return Ok(()),
        };
        for number in numbers {
            self.bring_back_trade(number, archive)?;
        }
        Ok(())
    }

    /// Looks up what applying `action` looks up first, for nothing but the
    /// cache: where the trades it names are (a new trade's reference was
    /// the writer's costliest miss, 9% of its time), and for a payment the
    /// two wallets.
    pub(crate) fn warm_lookups(&self, action: &Action) {
        let found = match named_trades(action) {
            NamedTrades::Number(number) => self.state.trades.directory.archived_at(number).unwrap_or(0),
            NamedTrades::Reference(new) => {
                let key = reference_key(new.merchant, &new.out_trade_no);
                self.state.trades.by_reference.candidates(key).fold(0, |all, number| all ^ number)
            }
            NamedTrades::DueOnes | NamedTrades::None => 0,
        };
        let wallets = match action {
            Action::CreateAndPayTrade { trade, buyer, .. } => Some((*buyer, trade.merchant)),
            _ => None,
        };
        let balances = wallets.map_or(0, |(buyer, merchant)| {
            let balance =
                |party| self.ledger.account(accounts::wallet(party)).map_or(0, |account| account.credits_posted);
            balance(buyer) ^ balance(merchant)
        });
        std::hint::black_box((found, balances));
    }

    /// Adds the archive offsets of the trades `action` names by number
    /// (those `bring_back_trades` will read) to `out`. Not a tick's due ones:
    /// it reads them in the order they were archived, which the kernel's
    /// readahead serves. Not a new trade's namesakes: nearly every reference
    /// is new, and looking it up twice (here and when applied), each a miss
    /// in an index of every trade, was 3% of the writer's time; a retry of
    /// an archived trade reads it when applied.
    pub(crate) fn archived_trades_named(&self, action: &Action, out: &mut Vec<u64>) {
        if let NamedTrades::Number(number) = named_trades(action) {
            out.extend(self.state.trades.directory.archived_at(number));
        }
    }

    fn bring_back_trade(&mut self, number: TradeNumber, archive: &dyn ArchiveSource) -> Result<(), JournalError> {
        let Some(offset) = self.state.trades.directory.archived_at(number) else { return Ok(()) };
        // Decoded already where it was read ahead (`decode_read_ahead`).
        let trade = match archive.take_decoded(offset).and_then(|decoded| decoded.downcast::<Arc<Trade>>().ok()) {
            Some(trade) => *trade,
            None => Arc::new(self.archived_trade_at(archive, offset)?),
        };
        self.restore_archived_trade(trade, offset);
        Ok(())
    }

    fn archived_trade_at(&self, archive: &dyn ArchiveSource, offset: u64) -> Result<Trade, JournalError> {
        self.state.archive.read::<ArchiveRecord>(archive, offset)?.into_trade(offset)
    }

    /// A live trade for an action to change (an archived one the action
    /// names was brought back before it ran), an unknown one not found.
    pub(crate) fn live_trade(&self, number: TradeNumber) -> Result<Arc<Trade>, Outcome> {
        match self.state.trades.live.get(&number) {
            Some(trade) => Ok(Arc::clone(trade)),
            None if self.state.trades.directory.archived_at(number).is_some() => {
                crate::invariant::broken(format_args!("trade {number} was not brought back from the archive"))
            }
            None => Err(not_found()),
        }
    }

    pub(crate) fn live_trade_by_out_trade_no(
        &self,
        merchant: PartyNumber,
        out_trade_no: &str,
    ) -> Result<Option<Arc<Trade>>, Outcome> {
        self.live_trade_under(reference_key(merchant, out_trade_no), merchant, out_trade_no)
    }

    /// As [`Platform::live_trade_by_out_trade_no`], with the reference's key
    /// already made (a SHA-256: a new trade needs it twice).
    fn live_trade_under(
        &self,
        key: u64,
        merchant: PartyNumber,
        out_trade_no: &str,
    ) -> Result<Option<Arc<Trade>>, Outcome> {
        for number in self.state.trades.by_reference.candidates(key) {
            let trade = self.live_trade(TradeNumber::new(number))?;
            if trade.merchant == merchant && trade.out_trade_no == out_trade_no {
                return Ok(Some(trade));
            }
        }
        Ok(None)
    }

    /// Brings an archived trade (read at `offset`) back to memory for this
    /// command; a parked one's auto-confirmation goes back to the queue of
    /// live ones.
    fn restore_archived_trade(&mut self, trade: Arc<Trade>, offset: u64) {
        self.state.trades.directory.bring_back(trade.number);
        if let Some(due) = parked_due_of(&trade) {
            self.state.trades.parked_due.remove(due, trade.number);
            self.state.trades.due.insert((due, trade.number));
        }
        self.touched.restored.push((trade.number, offset));
        self.touched.last_record.insert(trade.number, offset);
        self.state.trades.live.insert(trade.number, trade);
    }

    /// After each command: trades it left with nothing to do but wait for a
    /// request or a timer go to the archive (as the event that reported the
    /// change, when one holds the trade as it is now, else as a record of
    /// their own); trades it brought back without changing go back to where
    /// they were.
    pub(crate) fn archive_touched_trades(&mut self) {
        let Touched { mut changed, restored, events, last_record } = std::mem::take(&mut self.touched);
        changed.sort_unstable();
        changed.dedup();
        // Only a trade's last event can hold it as it is now (a change after
        // an event copies the trade). A map where the list is long (a tick
        // settles a hundred thousand trades, each with its event), a search
        // of it where short (a map per command was 0.3% of the writer's time).
        let by_number: Option<HashMap<TradeNumber, (u64, &Arc<Trade>)>> = (events.len() > EVENTS_SEARCHED_MAX)
            .then(|| events.iter().map(|(number, offset, held)| (*number, (*offset, held))).collect());
        let last_event = |number: TradeNumber| match &by_number {
            Some(by_number) => by_number.get(&number).copied(),
            None => events.iter().rev().find(|event| event.0 == number).map(|(_, offset, held)| (*offset, held)),
        };
        for &(number, offset) in &restored {
            if changed.binary_search(&number).is_err() {
                self.park(number, offset);
            }
        }
        for &number in &changed {
            // A disputed trade stays in memory, where the dispute's clock reaches it.
            let disputed = self.state.disputes.is_open_on(number);
            let Some(trade) =
                self.state.trades.live.get(&number).filter(|trade| trade.status.rests_in_archive() && !disputed)
            else {
                // Staying in memory: remember its newest record for the next.
                if let Some(&offset) = last_record.get(&number) {
                    self.state.trades.live_last_record.insert(number, offset);
                }
                continue;
            };
            let reported = last_event(number).filter(|(_, held)| Arc::ptr_eq(held, trade));
            let offset = match reported {
                Some((offset, _)) => offset,
                None => {
                    let previous = last_record
                        .get(&number)
                        .copied()
                        .or_else(|| self.state.trades.live_last_record.get(&number).copied());
                    let at = self.state.archive.length();
                    self.state.archive.append(&ArchiveRecord::Trade(TradeAtRest::of(trade).after(previous, at)))
                }
            };
            self.park(number, offset);
        }
        self.touched.reuse(Touched { changed, restored, events, last_record });
    }

    /// Moves a live trade to the archive record at `offset` (a parked
    /// one's auto-confirmation to the queue of archived ones).
    fn park(&mut self, number: TradeNumber, offset: u64) {
        self.state.trades.live_last_record.remove(&number);
        let Some(trade) = self.state.trades.live.remove(&number) else { return };
        // The clock watches only live trades: a parked one's entries (a paid
        // trade's expiry, a settled one's auto-confirmation) go now rather
        // than when due, days later.
        self.state.trades.due.remove(&(trade.expire_at, number));
        if let Some(due) = trade.confirm_due_at {
            self.state.trades.due.remove(&(due, number));
        }
        if let Some(due) = parked_due_of(&trade) {
            self.state.trades.parked_due.insert(due, number);
        }
        self.state.trades.directory.archive(number, offset);
    }

    /// The event archived at `offset` (a delivery's).
    pub fn event_at(&self, archive: &dyn ArchiveSource, offset: u64) -> Result<Event, JournalError> {
        self.state.archive.read::<ArchiveRecord>(archive, offset)?.into_event(offset).map(|(event, _)| event)
    }

    /// A party's events newest first, from below `before` (an event number):
    /// a walk back along the party's chain in the archive.
    pub fn events_of(
        &self,
        archive: &dyn ArchiveSource,
        party: PartyNumber,
        before: Option<EventNumber>,
        limit: usize,
    ) -> Result<Vec<Event>, JournalError> {
        let read = |offset| self.state.archive.read::<ArchiveRecord>(archive, offset)?.into_event(offset);
        walk_events(self.last_event_at(party), read, before, limit)
    }

    pub(crate) fn create_trade(&mut self, now: Timestamp, new: &NewTrade) -> Outcome {
        if !self.state.parties.is(new.merchant, PartyKind::Merchant) {
            return Outcome::Rejected(Rejection::NotFound(Missing::Merchant));
        }
        let key = reference_key(new.merchant, &new.out_trade_no);
        let existing = match self.live_trade_under(key, new.merchant, &new.out_trade_no) {
            Ok(existing) => existing,
            Err(outcome) => return outcome,
        };
        if let Some(existing) = existing {
            // The same out_trade_no is the same trade: a retry gets it back,
            // a different request under it is refused.
            let same = existing.amount == new.amount
                && existing.campaign == new.campaign
                && existing.subject == new.subject
                && existing.mode == new.mode
                && existing.buyer == new.buyer;
            return if same { Outcome::TradeUpdated(existing) } else { conflict(Conflict::OutTradeNoUsed) };
        }
        if let Err(refused) = self.check_new_trade(new) {
            return refused;
        }
        if self.state.next_number > crate::reference_index::NUMBER_MAX {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::TradeNumbers));
        }
        let auto_confirm_days = new.auto_confirm_days.unwrap_or(AUTO_CONFIRM_DAYS_DEFAULT);
        let expire_minutes = new.expire_minutes.unwrap_or(EXPIRE_MINUTES_DEFAULT);
        let number = TradeNumber::new(self.take_number());
        let expire_at = now.plus_nanos(u64::from(expire_minutes) * 60 * NANOS_PER_SECOND);
        let previous_of_merchant = self.link_trade(new.merchant, number);
        let previous_of_buyer = new.buyer.and_then(|buyer| self.link_trade(buyer, number));
        let trade = Trade {
            number,
            merchant: new.merchant,
            out_trade_no: new.out_trade_no.clone(),
            amount: new.amount,
            subject: new.subject.clone(),
            mode: new.mode,
            buyer: new.buyer,
            status: TradeStatus::WaitBuyerPay,
            auto_confirm_days,
            expire_at,
            created_at: now,
            paid_at: None,
            payer: None,
            payer_account: None,
            shipped_at: None,
            confirm_due_at: None,
            settled_at: None,
            fee: Fen::ZERO,
            refunded: Fen::ZERO,
            refunds: Vec::new(),
            campaign: new.campaign,
            discount: Fen::ZERO,
            discount_returned: Fen::ZERO,
            discount_campaign: None,
            discount_note: None,
            notify_url: new.notify_url.clone(),
            passback_params: new.passback_params.clone(),
            split: Fen::ZERO,
            splits: Vec::new(),
            previous_of_merchant,
            previous_of_buyer,
        };
        self.state.trades.by_reference.insert(key, number.get());
        self.state.trades.due.insert((expire_at, number));
        self.state.trades.directory.add_live(number);
        let trade = Arc::new(trade);
        self.state.trades.live.insert(number, Arc::clone(&trade));
        self.touched.changed.push(number);
        Outcome::TradeUpdated(trade)
    }

    /// Why a new trade cannot be made (its texts, amount, limits, buyer
    /// and campaign), or `Ok`.
    fn check_new_trade(&self, new: &NewTrade) -> Result<(), Outcome> {
        if !valid_reference(&new.out_trade_no) {
            return Err(invalid(Invalid::OutTradeNo));
        }
        if new.amount.is_zero() || new.amount.get() > AMOUNT_MAX {
            return Err(invalid(Invalid::Amount));
        }
        if new.notify_url.as_ref().is_some_and(|url| !crate::text::is_web_url(url, URL_CHARS_MAX)) {
            return Err(invalid(Invalid::NotifyUrl));
        }
        if new
            .passback_params
            .as_ref()
            .is_some_and(|text| crate::text::check_display_text(text, PASSBACK_CHARS_MAX).is_err())
        {
            return Err(invalid(Invalid::PassbackParams));
        }
        if crate::text::check_display_text(&new.subject, SUBJECT_CHARS_MAX).is_err() {
            return Err(invalid(Invalid::Subject));
        }
        if new.auto_confirm_days.is_some_and(|days| days == 0 || days > AUTO_CONFIRM_DAYS_MAX) {
            return Err(invalid(Invalid::AutoConfirmDays));
        }
        if new.expire_minutes.is_some_and(|minutes| minutes == 0 || minutes > EXPIRE_MINUTES_MAX) {
            return Err(invalid(Invalid::ExpireMinutes));
        }
        if let Some(buyer) = new.buyer
            && !self.state.parties.is(buyer, PartyKind::User)
        {
            return Err(Outcome::Rejected(Rejection::NotFound(Missing::Buyer)));
        }
        if let Some(campaign) = new.campaign
            && self.state.marketing.campaign(campaign).is_none_or(|c| c.sponsor.is_some_and(|s| s != new.merchant))
        {
            return Err(Outcome::Rejected(Rejection::NotFound(Missing::Campaign)));
        }
        Ok(())
    }

    pub(crate) fn issue_payment_code(
        &mut self,
        now: Timestamp,
        user: PartyNumber,
        code: &str,
        expires_at: Timestamp,
    ) -> Outcome {
        if !self.state.parties.is(user, PartyKind::User) {
            return Outcome::Rejected(Rejection::NotFound(Missing::User));
        }
        if code.len() != PAYMENT_CODE_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) || expires_at <= now {
            return invalid(Invalid::PaymentCode);
        }
        if self.state.trades.payment_codes.contains_key(code) {
            return conflict(Conflict::PaymentCodeIssued);
        }
        self.state.trades.payment_codes.insert(code.to_string(), (user, expires_at));
        self.state.trades.payment_codes_due.insert((expires_at, code.to_string()));
        Outcome::PaymentCodeIssued { code: code.to_string(), expires_at }
    }

    pub(crate) fn pay_with_code(&mut self, now: Timestamp, new: &NewTrade, code: &str) -> Outcome {
        // A retry of a till payment that went through gets its trade back
        // (the code is spent by then).
        match self.live_trade_by_out_trade_no(new.merchant, &new.out_trade_no) {
            Err(outcome) => return outcome,
            Ok(Some(existing)) if existing.paid_at.is_some() => return self.create_trade(now, new),
            Ok(_) => {}
        }
        let user = match self.use_payment_code(now, code) {
            Ok(user) => user,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        let outcome = self.create_and_pay_trade(now, new, user, PaySource::Balance, None);
        // Spent only by a payment: a refused one (no money, a bad request)
        // leaves the code for another try until it expires.
        if matches!(&outcome, Outcome::TradeUpdated(trade) if trade.paid_at == Some(now) && trade.payer == Some(user)) {
            self.spend_payment_code(code);
        }
        outcome
    }

    /// The user a payment code names, if it is valid now (an expired one is forgotten).
    pub(crate) fn use_payment_code(&mut self, now: Timestamp, code: &str) -> Result<PartyNumber, Rejection> {
        let Some((user, expires_at)) = self.state.trades.payment_codes.get(code).copied() else {
            return Err(Rejection::Invalid(Invalid::PaymentCodeUnknown));
        };
        if expires_at <= now {
            self.spend_payment_code(code);
            return Err(Rejection::Invalid(Invalid::PaymentCodeExpired));
        }
        Ok(user)
    }

    /// A payment code used (or expired): never valid again.
    pub(crate) fn spend_payment_code(&mut self, code: &str) {
        if let Some((_, expires_at)) = self.state.trades.payment_codes.remove(code) {
            self.state.trades.payment_codes_due.remove(&(expires_at, code.to_string()));
        }
    }

    pub(crate) fn create_and_pay_trade(
        &mut self,
        now: Timestamp,
        new: &NewTrade,
        buyer: PartyNumber,
        source: PaySource,
        coupon: Option<CouponNumber>,
    ) -> Outcome {
        let numbers_before = self.state.next_number;
        let created = self.create_trade(now, new);
        // A trade found by its reference took no number (one made took one).
        let existed = self.state.next_number == numbers_before;
        let number = match &created {
            Outcome::TradeUpdated(trade) if trade.status == TradeStatus::WaitBuyerPay && trade.paid_at.is_none() => {
                trade.number
            }
            _ => return created,
        };
        // The answer shares the record: without it, paying changes it in place.
        drop(created);
        let paid = self.pay_trade(now, number, buyer, source, coupon);
        // Only the trade this call made is closed: an order the merchant
        // opened before stays open for another payment.
        if matches!(paid, Outcome::Rejected(_)) && !existed {
            self.close_unpaid(now, number);
        }
        paid
    }

    pub(crate) fn pay_trade(
        &mut self,
        now: Timestamp,
        number: TradeNumber,
        buyer: PartyNumber,
        source: PaySource,
        coupon: Option<CouponNumber>,
    ) -> Outcome {
        let trade = match self.payable_trade(now, number, buyer) {
            Ok(trade) => trade,
            Err(outcome) => return outcome,
        };
        let payer_account = match source {
            PaySource::Balance => accounts::wallet(buyer),
            PaySource::Fund => accounts::fund(buyer),
        };
        if self.ledger.account(payer_account).is_none() {
            return Outcome::Rejected(Rejection::InsufficientFunds);
        }
        // (Its id is taken before the coupon is checked, as it always was:
        // a replay must number transfers as the log's first run did.)
        let reference = Reference::Trade(number);
        let to = accounts::wallet(trade.merchant);
        let payment = self.new_transfer(now, payer_account, to, trade.amount, accounts::CODE_TRADE_PAYMENT, reference);
        let campaign = match coupon {
            None => trade.campaign,
            Some(coupon) => match self.usable_coupon(now, coupon, buyer, trade.merchant) {
                Ok(campaign) => Some(campaign),
                Err(outcome) => return outcome,
            },
        };
        let (discount, discount_note) = self.campaign_discount(now, &trade, buyer, campaign);
        let (chain, status, fee) = self.payment_chain(now, &trade, payment, discount);
        if let Err(rejection) = self.apply_chain(now, &chain) {
            return Outcome::Rejected(rejection);
        }
        self.book_payment(&trade, source, fee, discount);
        if !discount.is_zero() {
            self.use_discount(buyer, number, campaign, coupon, discount);
        }
        // A trade made for anyone becomes the buyer's when paid.
        let previous_of_buyer =
            if trade.buyer.is_none() { self.link_trade(buyer, number) } else { trade.previous_of_buyer };
        // The only other holder of the record: without it the change needs no copy.
        drop(trade);
        let updated = self.update_trade(number, |trade| {
            trade.status = status;
            trade.discount = discount;
            trade.discount_campaign = campaign.filter(|_| !discount.is_zero());
            trade.previous_of_buyer = previous_of_buyer;
            trade.discount_note = discount_note;
            trade.paid_at = Some(now);
            trade.payer = Some(buyer);
            trade.payer_account = Some(payer_account);
            trade.fee = fee;
            if trade.mode == TradeMode::Instant {
                trade.settled_at = Some(now);
            }
        });
        self.record_paid(now, updated.merchant, updated.amount);
        self.emit_trade(now, "trade.paid", &updated);
        if updated.status == TradeStatus::TradeSuccess {
            self.record_settlement(now, updated.merchant, updated.amount);
            self.emit_trade(now, "trade.succeeded", &updated);
        }
        Outcome::TradeUpdated(updated)
    }

    /// The trade, if `buyer` may pay it now (an expired one is closed on the way).
    fn payable_trade(
        &mut self,
        now: Timestamp,
        number: TradeNumber,
        buyer: PartyNumber,
    ) -> Result<Arc<Trade>, Outcome> {
        let trade = self.live_trade(number)?;
        if trade.buyer.is_some_and(|only| only != buyer) {
            return Err(not_found());
        }
        if trade.status != TradeStatus::WaitBuyerPay {
            return Err(conflict(Conflict::TradeNotWaitingForPayment));
        }
        if trade.expire_at <= now {
            self.close_unpaid(now, number);
            return Err(conflict(Conflict::TradeExpiredUnpaid));
        }
        Ok(trade)
    }

    /// A payment's chain from its `payment` transfer, the trade's status
    /// after it, and the fee: an instant trade pays the merchant (the
    /// campaign paying the discount) and its fee at once; an escrow trade
    /// pays into escrow.
    fn payment_chain(
        &mut self,
        now: Timestamp,
        trade: &Trade,
        mut payment: Transfer,
        discount: Fen,
    ) -> (Vec<Transfer>, TradeStatus, Fen) {
        let reference = Reference::Trade(trade.number);
        let merchant_wallet = accounts::wallet(trade.merchant);
        if trade.mode == TradeMode::Escrow {
            payment.credit_account_id = accounts::ESCROW;
            return (vec![payment], TradeStatus::WaitSellerSend, Fen::ZERO);
        }
        let fee = self.merchant_fee(trade.merchant, trade.amount);
        payment.amount -= u128::from(discount);
        let mut chain = vec![payment];
        if !discount.is_zero() {
            let code = accounts::CODE_CAMPAIGN_DISCOUNT;
            chain.push(self.new_transfer(now, accounts::CAMPAIGNS, merchant_wallet, discount, code, reference));
        }
        if !fee.is_zero() {
            chain.push(self.fee_transfer(now, trade.merchant, fee, reference));
        }
        (chain, TradeStatus::TradeSuccess, fee)
    }

    /// The books after a payment went through.
    fn book_payment(&mut self, trade: &Trade, source: PaySource, fee: Fen, discount: Fen) {
        let paid = trade.amount - discount;
        match trade.mode {
            // The merchant has the buyer's part and the campaign's, less its fee.
            TradeMode::Instant => self.book_merchant(trade.merchant, i128::from(trade.amount) - i128::from(fee)),
            TradeMode::Escrow => self.book_escrow(paid, Fen::ZERO),
        }
        if source == PaySource::Fund {
            self.book_fund(Fen::ZERO, paid);
        }
    }

    /// A campaign's discount given on trade `number`: its budget spent, the
    /// buyer's use counted, the coupon used.
    fn use_discount(
        &mut self,
        buyer: PartyNumber,
        number: TradeNumber,
        campaign: Option<CampaignNumber>,
        coupon: Option<CouponNumber>,
        discount: Fen,
    ) {
        let Some(campaign) = campaign.and_then(|campaign| self.state.marketing.campaign_mut(campaign)) else {
            return;
        };
        campaign.spent += discount;
        *campaign.uses.entry(buyer).or_default() += 1;
        if let Some(coupon) = coupon.and_then(|coupon| self.state.marketing.coupon_mut(coupon)) {
            coupon.used_on = Some(number);
        }
    }

    pub(crate) fn ship_trade(&mut self, now: Timestamp, number: TradeNumber, merchant: PartyNumber) -> Outcome {
        let trade = match self.live_trade(number) {
            Ok(trade) if trade.merchant == merchant => trade,
            Ok(_) => return not_found(),
            Err(outcome) => return outcome,
        };
        if trade.mode != TradeMode::Escrow {
            return conflict(Conflict::OnlyEscrowShips);
        }
        if trade.status != TradeStatus::WaitSellerSend {
            return conflict(Conflict::TradeNotWaitingToShip);
        }
        // A disputed trade's auto-confirmation starts when the dispute ends.
        let due = (!self.confirmation_waits_for_dispute(number))
            .then(|| now.plus_nanos(u64::from(trade.auto_confirm_days) * 86_400 * NANOS_PER_SECOND));
        drop(trade);
        let updated = self.update_trade(number, |trade| {
            trade.status = TradeStatus::WaitBuyerConfirm;
            trade.shipped_at = Some(now);
            trade.confirm_due_at = due;
        });
        if let Some(due) = due {
            self.state.trades.due.insert((due, number));
        }
        self.emit_trade(now, "trade.shipped", &updated);
        Outcome::TradeUpdated(updated)
    }

    pub(crate) fn confirm_trade(&mut self, now: Timestamp, number: TradeNumber, buyer: PartyNumber) -> Outcome {
        let trade = match self.live_trade(number) {
            Ok(trade) if trade.payer == Some(buyer) => trade,
            Ok(_) => return not_found(),
            Err(outcome) => return outcome,
        };
        if trade.mode != TradeMode::Escrow {
            return conflict(Conflict::OnlyEscrowConfirms);
        }
        if trade.status != TradeStatus::WaitBuyerConfirm {
            return conflict(Conflict::TradeNotWaitingForConfirmation);
        }
        if self.state.disputes.is_open_on(number) {
            return conflict(Conflict::DisputeOpen);
        }
        drop(trade);
        match self.settle_escrow(now, number) {
            Ok(updated) => Outcome::TradeUpdated(updated),
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    pub(crate) fn close_trade(&mut self, now: Timestamp, number: TradeNumber, merchant: PartyNumber) -> Outcome {
        let trade = match self.live_trade(number) {
            Ok(trade) if trade.merchant == merchant => trade,
            Ok(_) => return not_found(),
            Err(outcome) => return outcome,
        };
        if trade.status != TradeStatus::WaitBuyerPay {
            return conflict(Conflict::OnlyUnpaidCloses);
        }
        drop(trade);
        Outcome::TradeUpdated(self.close_unpaid(now, number))
    }

    pub(crate) fn refund_trade(
        &mut self,
        now: Timestamp,
        number: TradeNumber,
        merchant: PartyNumber,
        out_request_no: &str,
        amount: Fen,
        reason: &Option<String>,
    ) -> Outcome {
        let trade = match self.live_trade(number) {
            Ok(trade) if trade.merchant == merchant => trade,
            Ok(_) => return not_found(),
            Err(outcome) => return outcome,
        };
        if let Some(existing) = trade.refunds.iter().find(|r| r.out_request_no == out_request_no) {
            return if existing.amount == amount {
                Outcome::RefundCreated { trade: Arc::clone(&trade), refund: existing.clone() }
            } else {
                conflict(Conflict::RefundRequestNoUsed)
            };
        }
        let source = match check_refund(&trade, out_request_no, amount, reason) {
            Ok(source) => source,
            Err(refused) => return refused,
        };
        let outcome = self.apply_refund(now, trade, source, (out_request_no, amount, reason));
        // A refund of everything left ends the trade's open dispute: nothing is left to claim.
        if let Outcome::RefundCreated { trade, .. } = &outcome
            && trade.status == TradeStatus::TradeClosed
        {
            self.end_dispute_of_closed_trade(now, number);
        }
        outcome
    }

    /// A dispute's refund: not one of the merchant's (it neither counts
    /// toward the merchant's refunds nor shares their request numbers, which
    /// cannot hold a space), of at most what the buyer still has paid.
    pub(crate) fn refund_for_dispute(
        &mut self,
        now: Timestamp,
        number: TradeNumber,
        dispute: u64,
        amount: Fen,
    ) -> Outcome {
        let trade = match self.live_trade(number) {
            Ok(trade) => trade,
            Err(outcome) => return outcome,
        };
        let paid = trade.status != TradeStatus::WaitBuyerPay && trade.status != TradeStatus::TradeClosed;
        let Some(source) = trade.payer_account.filter(|_| paid && amount <= trade.refundable()) else {
            return conflict(Conflict::TradeNotPaid);
        };
        let out_request_no = format!("dispute {dispute}");
        let reason = Some(format!("dispute {dispute}"));
        self.apply_refund(now, trade, source, (&out_request_no, amount, &reason))
    }

    /// A checked refund of `trade` to `source`: its chain, records and events.
    fn apply_refund(
        &mut self,
        now: Timestamp,
        trade: Arc<Trade>,
        source: u128,
        (out_request_no, amount, reason): (&str, Fen, &Option<String>),
    ) -> Outcome {
        let (number, merchant) = (trade.number, trade.merchant);
        let plan = self.refund_plan(now, &trade, amount);
        let chain = self.refund_chain(now, &trade, (source, amount), &plan);
        if let Err(rejection) = self.apply_chain(now, &chain) {
            return Outcome::Rejected(rejection);
        }
        self.book_refund(now, &trade, amount, &plan);
        let refund = Refund {
            number: self.take_number(),
            out_request_no: out_request_no.to_string(),
            amount,
            reason: reason.clone(),
            created_at: now,
        };
        drop(trade);
        self.state.trades.by_reference.insert(refund_key(refund.number), number.get());
        self.record_refunded(now, merchant, amount);
        let updated = self.update_trade(number, |trade| {
            trade.refunded += amount;
            trade.fee -= plan.fee_back;
            trade.discount_returned += plan.discount_back;
            trade.refunds.push(refund.clone());
            if trade.refunded == trade.paid_by_buyer() {
                trade.status = TradeStatus::TradeClosed;
            }
        });
        self.emit(
            now,
            merchant,
            "refund.succeeded",
            Some(number),
            EventData::Refund { trade: Arc::clone(&updated), refund: refund.clone() },
        );
        if updated.status == TradeStatus::TradeClosed {
            self.emit_trade(now, "trade.closed", &updated);
        }
        Outcome::RefundCreated { trade: updated, refund }
    }

    /// What a refund of `amount` moves besides the buyer's money. Each share
    /// is of what is left, in proportion to the part of the buyer's payment
    /// not yet refunded, so the last refund takes back exactly the rest.
    fn refund_plan(&mut self, now: Timestamp, trade: &Trade, amount: Fen) -> RefundPlan {
        let refundable = trade.refundable();
        let share = |of: Fen| Fen::try_from(u128::from(of) * u128::from(amount) / u128::from(refundable)).unwrap_or(of);
        // Before settlement no fee was taken and escrow still has the money.
        let settled = trade.in_escrow().is_zero();
        let discount_left = trade.discount - trade.discount_returned;
        let discount_back = if settled { share(discount_left) } else { Fen::ZERO };
        let discount_to = trade.discount_campaign.and_then(|campaign| self.discount_return_target(campaign));
        RefundPlan {
            settled,
            fee_back: if settled { share(trade.fee) } else { Fen::ZERO },
            // A sponsor that is the merchant itself, its campaign over: nothing moves.
            discount_back: if discount_to.is_some_and(|(account, _)| account == accounts::wallet(trade.merchant)) {
                Fen::ZERO
            } else {
                discount_back
            },
            discount_to,
            advance: self.order_loan_repayment_for_refund(now, trade.number, amount),
        }
    }

    /// Where a returned discount goes: the campaign while it runs, its
    /// sponsor once it has ended (its budget already went back).
    fn discount_return_target(&self, campaign: CampaignNumber) -> Option<(u128, bool)> {
        let found = self.state.marketing.campaign(campaign)?;
        if found.returned.is_none() {
            return Some((accounts::CAMPAIGNS, true));
        }
        Some((found.sponsor.map_or(accounts::MARKETING, accounts::wallet), false))
    }

    /// The refund's chain: the fee's share back to the merchant, the advance
    /// repaid first, the buyer's money to where it came from, the discount's
    /// share back to the campaign.
    fn refund_chain(&mut self, now: Timestamp, trade: &Trade, back: (u128, Fen), plan: &RefundPlan) -> Vec<Transfer> {
        let (source, amount) = back;
        let reference = Reference::Trade(trade.number);
        let wallet = accounts::wallet(trade.merchant);
        let mut chain = Vec::with_capacity(4);
        if !plan.fee_back.is_zero() && !crate::faults::refund_forgets_fee() {
            chain.push(self.new_transfer(
                now,
                REVENUE,
                wallet,
                plan.fee_back,
                accounts::CODE_TRADE_FEE_RETURN,
                reference,
            ));
        }
        if let Some((loan, repayment)) = plan.advance {
            let code = accounts::CODE_LOAN_REPAYMENT;
            chain.push(self.new_transfer(now, wallet, accounts::loan(loan), repayment, code, Reference::Loan(loan)));
        }
        let from = if plan.settled { wallet } else { accounts::ESCROW };
        chain.push(self.new_transfer(now, from, source, amount, accounts::CODE_TRADE_REFUND, reference));
        if let Some((target, _)) = plan.discount_to.filter(|_| !plan.discount_back.is_zero()) {
            let code = accounts::CODE_CAMPAIGN_DISCOUNT_RETURN;
            chain.push(self.new_transfer(now, wallet, target, plan.discount_back, code, reference));
        }
        chain
    }

    /// The records of a refund whose chain went through.
    fn book_refund(&mut self, now: Timestamp, trade: &Trade, amount: Fen, plan: &RefundPlan) {
        let repaid = plan.advance.map_or(Fen::ZERO, |(_, repayment)| repayment);
        if plan.settled {
            let back = i128::from(plan.fee_back) - i128::from(amount) - i128::from(plan.discount_back);
            self.book_merchant(trade.merchant, back - i128::from(repaid));
        } else {
            self.book_escrow(Fen::ZERO, amount);
            self.book_merchant(trade.merchant, -i128::from(repaid));
        }
        if trade.payer.is_some_and(|payer| trade.payer_account == Some(accounts::fund(payer))) {
            self.book_fund(amount, Fen::ZERO);
        }
        if let Some((loan, repayment)) = plan.advance {
            self.allocate_repayment(loan, repayment);
        }
        if let Some((_, true)) = plan.discount_to
            && let Some(campaign) = trade.discount_campaign.and_then(|number| self.state.marketing.campaign_mut(number))
        {
            campaign.spent -= plan.discount_back;
        }
        if plan.settled {
            self.record_money_sent_back(now, trade.merchant, amount);
        }
    }

    /// Closes unpaid trades past their expiry and confirms shipped escrow
    /// trades past their auto-confirmation time, in (time, number) order:
    /// up to the first due trade still parked in the archive (the tick
    /// brought back as many as it may do; the next tick does the rest).
    pub(crate) fn run_trades_due(&mut self, now: Timestamp, budget: &mut u32) -> (u32, u32) {
        let (mut closed, mut settled) = (0, 0);
        let parked_first = self.state.trades.parked_due.first_key();
        while let Some(&(due_at, number)) = self.state.trades.due.first() {
            if due_at > now || *budget == 0 || parked_first.is_some_and(|parked| parked < (due_at, number)) {
                break;
            }
            *budget -= 1;
            self.state.trades.due.pop_first();
            let Some((status, expire_at, confirm_due_at)) =
                self.state.trades.live.get(&number).map(|trade| (trade.status, trade.expire_at, trade.confirm_due_at))
            else {
                continue;
            };
            // What fell due is done now, at the tick's time: the ledger
            // refuses transfer ids older than its horizon, and a tick after
            // an outage comes long after the due time.
            match status {
                TradeStatus::WaitBuyerPay if expire_at <= due_at => {
                    self.close_unpaid(now, number);
                    closed += 1;
                }
                TradeStatus::WaitBuyerConfirm if confirm_due_at.is_some_and(|at| at <= due_at) => {
                    match self.settle_escrow(now, number) {
                        Ok(_) => settled += 1,
                        // Escrow pays the merchant and nothing limits its wallet:
                        // a refusal means the books are wrong (a trade refunded in
                        // full is closed, never waiting for confirmation).
                        Err(refused) => crate::invariant::broken(format_args!(
                            "trade {number}'s settlement was refused: {refused:?}"
                        )),
                    }
                }
                // Paid, shipped, closed or refunded since it was queued: nothing is due.
                _ => {}
            }
        }
        (closed, settled)
    }

    /// Pays what escrow holds for a trade to the merchant with the merchant's fee, in one chain.
    fn settle_escrow(&mut self, now: Timestamp, number: TradeNumber) -> Result<Arc<Trade>, Rejection> {
        // Only the tick and a confirmation settle, and only open (live) trades.
        let trade = self.state.trades.live.get(&number).cloned().ok_or(Rejection::NotFound(Missing::Trade))?;
        let settled_amount = trade.in_escrow();
        if settled_amount.is_zero() {
            // A trade refunded in full is closed, never confirmed.
            return Err(Rejection::Conflict(Conflict::TradeHoldsNoMoney));
        }
        let fee = self.merchant_fee(trade.merchant, settled_amount);
        let reference = Reference::Trade(number);
        let mut chain = vec![self.new_transfer(
            now,
            accounts::ESCROW,
            accounts::wallet(trade.merchant),
            settled_amount,
            accounts::CODE_TRADE_SETTLEMENT,
            reference,
        )];
        if !fee.is_zero() {
            chain.push(self.fee_transfer(now, trade.merchant, fee, reference));
        }
        // An advance on this trade is repaid from its settlement first, in the same chain
        // (from what the fee leaves: a schedule's minimum can take more than a small trade settles).
        let advance = self.order_loan_repayment(now, number, settled_amount.saturating_sub(fee));
        if let Some((loan, repayment)) = advance {
            chain.push(self.new_transfer(
                now,
                accounts::wallet(trade.merchant),
                accounts::loan(loan),
                repayment,
                accounts::CODE_LOAN_REPAYMENT,
                Reference::Loan(loan),
            ));
        }
        self.apply_chain(now, &chain)?;
        let repaid = advance.map_or(Fen::ZERO, |(_, repayment)| repayment);
        self.book_escrow(Fen::ZERO, settled_amount);
        self.book_merchant(trade.merchant, i128::from(settled_amount) - i128::from(fee) - i128::from(repaid));
        if let Some((loan, repayment)) = advance {
            self.allocate_repayment(loan, repayment);
        }
        drop(trade);
        let updated = self.update_trade(number, |trade| {
            trade.status = TradeStatus::TradeSuccess;
            trade.settled_at = Some(now);
            trade.fee = fee;
        });
        self.record_settlement(now, updated.merchant, settled_amount);
        self.emit_trade(now, "trade.succeeded", &updated);
        Ok(updated)
    }

    pub(crate) fn close_unpaid(&mut self, now: Timestamp, number: TradeNumber) -> Arc<Trade> {
        let updated = self.update_trade(number, |trade| trade.status = TradeStatus::TradeClosed);
        self.emit_trade(now, "trade.closed", &updated);
        updated
    }

    /// The campaign of a coupon the buyer may use on this merchant's trade now.
    fn usable_coupon(
        &self,
        now: Timestamp,
        coupon: CouponNumber,
        buyer: PartyNumber,
        merchant: PartyNumber,
    ) -> Result<CampaignNumber, Outcome> {
        let Some(coupon) = self.state.marketing.coupon(coupon).filter(|c| c.user == buyer) else {
            return Err(Outcome::Rejected(Rejection::NotFound(Missing::Coupon)));
        };
        if coupon.used_on.is_some() {
            return Err(conflict(Conflict::CouponUsed));
        }
        if coupon.expires_at <= now {
            return Err(conflict(Conflict::CouponExpired));
        }
        let sponsor = self.state.marketing.campaign(coupon.campaign).and_then(|c| c.sponsor);
        if sponsor.is_some_and(|sponsor| sponsor != merchant) {
            return Err(conflict(Conflict::CouponOfAnotherMerchant));
        }
        Ok(coupon.campaign)
    }

    /// What `coupon` would take off `buyer`'s payment of `trade` now, if
    /// it is theirs, usable there, and its campaign gives a discount.
    pub fn coupon_discount(
        &self,
        now: Timestamp,
        trade: &Trade,
        buyer: PartyNumber,
        coupon: CouponNumber,
    ) -> Option<Fen> {
        let campaign = self.usable_coupon(now, coupon, buyer, trade.merchant).ok()?;
        let (discount, _) = self.campaign_discount(now, trade, buyer, Some(campaign));
        (!discount.is_zero()).then_some(discount)
    }

    /// The discount a payment gets from the trade's campaign, or why none.
    fn campaign_discount(
        &self,
        now: Timestamp,
        trade: &Trade,
        buyer: PartyNumber,
        campaign: Option<CampaignNumber>,
    ) -> (Fen, Option<String>) {
        let Some(campaign) = campaign.and_then(|number| self.state.marketing.campaign(number)) else {
            return (Fen::ZERO, None);
        };
        let none = |why: &str| (Fen::ZERO, Some(why.to_string()));
        if trade.mode != TradeMode::Instant {
            return none("campaign discounts apply to instant trades");
        }
        if now < campaign.starts_at || now >= campaign.ends_at || campaign.returned.is_some() {
            return none("the campaign is not running");
        }
        if campaign.paused {
            return none("the campaign is paused");
        }
        if trade.amount < campaign.min_spend || trade.amount <= campaign.discount {
            return none("the trade is below the campaign's minimum spend");
        }
        if campaign.uses.get(&buyer).copied().unwrap_or(0) >= campaign.per_user_limit {
            return none("you have used this campaign as often as it allows");
        }
        if campaign.remaining() < campaign.discount {
            return none("budget_exhausted: the campaign's budget is used up; full price");
        }
        (campaign.discount, None)
    }

    /// The merchant's fee on a settled amount: its own rate, with the
    /// merchant-trade schedule's minimum, maximum and free quota — and never
    /// more than the amount itself (a schedule's minimum above a small trade
    /// would otherwise take money the trade never paid the merchant, and an
    /// escrow settlement with nothing else in the wallet could not be paid).
    pub(crate) fn merchant_fee(&self, merchant: PartyNumber, amount: Fen) -> Fen {
        let rate = self.state.parties.get(merchant).map_or(0, |party| party.fee_rate_bps);
        let schedule = crate::fees::FeeSchedule { rate_bps: rate, ..self.fee_schedule(Product::MerchantTrade) };
        schedule.fee(amount, Fen::ZERO).fee.min(amount)
    }

    fn fee_transfer(&mut self, now: Timestamp, merchant: PartyNumber, fee: Fen, reference: Reference) -> Transfer {
        self.new_transfer(now, accounts::wallet(merchant), REVENUE, fee, accounts::CODE_TRADE_FEE, reference)
    }

    /// Makes `trade` the newest of `party`'s chain of trades; answers the
    /// one before it.
    fn link_trade(&mut self, party: PartyNumber, trade: TradeNumber) -> Option<TradeNumber> {
        self.state.parties.get_mut(party)?.last_trade.replace(trade)
    }

    /// Changes the live record (copying it first only if someone still
    /// holds the old version) and returns it, shared; the command's end
    /// archives it if this finished it.
    pub(crate) fn update_trade(&mut self, number: TradeNumber, change: impl FnOnce(&mut Trade)) -> Arc<Trade> {
        self.touched.changed.push(number);
        match self.state.trades.live.get_mut(&number) {
            Some(trade) => {
                change(Arc::make_mut(trade));
                Arc::clone(trade)
            }
            None => unreachable_trade(number),
        }
    }

    fn emit_trade(&mut self, now: Timestamp, kind: &str, trade: &Arc<Trade>) {
        self.emit(now, trade.merchant, kind, Some(trade.number), EventData::Trade(Arc::clone(trade)));
    }

    /// Records an event for a merchant and queues its deliveries. Events
    /// for users are not kept (they have no webhooks).
    pub(crate) fn emit(
        &mut self,
        now: Timestamp,
        party: PartyNumber,
        kind: &str,
        trade: Option<TradeNumber>,
        data: EventData,
    ) {
        let holds_trade = match &data {
            EventData::Trade(record) | EventData::Refund { trade: record, .. } => Some(Arc::clone(record)),
            _ => None,
        };
        let Some(recipient) = self.state.parties.get(party) else { return };
        if recipient.kind != PartyKind::Merchant {
            return;
        }
        let number = EventNumber::new(self.take_number());
        let event = Event { number, party, kind: kind.to_string(), created_at: now, trade, data };
        let offset = self.archive_event(&event);
        if let Some(record) = holds_trade {
            self.touched.events.push((record.number, offset, record));
        }
        self.queue_deliveries(now, &event, offset);
    }
}

/// A command's events searched one by one for a trade's last, at most
/// (more: a map of them).
const EVENTS_SEARCHED_MAX: usize = 16;

/// Where a trade is: for reading the archived ones without the state's lock.
pub enum TradeAt {
    Memory(Arc<Trade>),
    /// Its record's offset in the archive file (records there never change).
    Archive(u64),
}

/// How many trades' places are taken per visit to the state.
const TRADES_AT_PER_VISIT: usize = 256;

/// Trades newest first, from below `before`, that pass `keep`, at most
/// `limit`: `places` gives where the next ones are (a brief visit to the
/// state) and `read` reads an archived one (the file, with no lock held).
/// A filter that keeps few reads many: an index by party would help.
pub fn list_trades_newest_first(
    places: impl Fn(Option<TradeNumber>, usize) -> Result<Vec<(TradeNumber, TradeAt)>, JournalError>,
    read: impl Fn(u64) -> Result<Trade, JournalError>,
    before: Option<TradeNumber>,
    limit: usize,
    keep: impl Fn(&Trade) -> bool,
) -> Result<Vec<Trade>, JournalError> {
    let mut found = Vec::new();
    let mut below = before;
    while found.len() < limit {
        let batch = places(below, TRADES_AT_PER_VISIT)?;
        let Some(&(last, _)) = batch.last() else { break };
        below = Some(last);
        for (_, place) in batch {
            let trade = match place {
                TradeAt::Memory(trade) => Trade::clone(&trade),
                TradeAt::Archive(offset) => read(offset)?,
            };
            if keep(&trade) {
                found.push(trade);
                if found.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(found)
}

/// One party's trades, newest first along its chain (see
/// `Trade::previous_of_merchant`), that pass `keep`, at most `limit`.
pub struct PartyTrades<'a> {
    pub party: PartyNumber,
    pub kind: crate::command::PartyKind,
    /// The chain's newest trade (`Platform::last_trade_of`).
    pub head: Option<TradeNumber>,
    /// A trade of the chain: list those after it.
    pub starting_after: Option<TradeNumber>,
    pub limit: usize,
    /// No chain is longer than this (`Platform::trades_made`): a damaged
    /// record that loops the chain ends the walk as an error.
    pub steps_max: u64,
    pub keep: &'a dyn Fn(&Trade) -> bool,
}

/// Walks a party's trades: `locate` finds where a trade is (a brief visit to
/// the state), `read` reads an archived one (the file, with no lock held).
/// Reads only the party's own trades, however many the platform has.
pub fn walk_party_trades(
    walk: PartyTrades<'_>,
    locate: impl Fn(TradeNumber) -> Result<Option<TradeAt>, JournalError>,
    read: impl Fn(u64) -> Result<Trade, JournalError>,
) -> Result<Vec<Trade>, JournalError> {
    let fetch = |number: TradeNumber| -> Result<Option<Trade>, JournalError> {
        Ok(match locate(number)? {
            Some(TradeAt::Memory(trade)) => Some(Trade::clone(&trade)),
            Some(TradeAt::Archive(offset)) => Some(read(offset)?),
            None => None,
        })
    };
    let previous = |trade: &Trade| match walk.kind {
        crate::command::PartyKind::Merchant => trade.previous_of_merchant,
        crate::command::PartyKind::User => trade.previous_of_buyer,
    };
    let belongs = |trade: &Trade| match walk.kind {
        crate::command::PartyKind::Merchant => trade.merchant == walk.party,
        crate::command::PartyKind::User => trade.payer == Some(walk.party) || trade.buyer == Some(walk.party),
    };
    let mut next = match walk.starting_after {
        None => walk.head,
        Some(after) => match fetch(after)?.filter(|trade| belongs(trade)) {
            Some(trade) => previous(&trade),
            None => return Ok(Vec::new()),
        },
    };
    let mut found = Vec::new();
    let mut steps = 0;
    while let Some(number) = next
        && found.len() < walk.limit
    {
        steps += 1;
        let trade = fetch(number)?.filter(|trade| belongs(trade) && steps <= walk.steps_max);
        let Some(trade) = trade else {
            return Err(JournalError::Failed(format!("the trade chain of party {} is broken at {number}", walk.party)));
        };
        next = previous(&trade);
        if (walk.keep)(&trade) {
            found.push(trade);
        }
    }
    Ok(found)
}

/// A party's events newest first along its chain from `head`, below
/// `before` (an event number), at most `limit`; `read` gives an archived
/// event and where the party's previous one is.
pub fn walk_events(
    head: Option<u64>,
    read: impl Fn(u64) -> Result<(Event, Option<u64>), JournalError>,
    before: Option<EventNumber>,
    limit: usize,
) -> Result<Vec<Event>, JournalError> {
    let before = before.unwrap_or(EventNumber::new(u64::MAX));
    let mut found = Vec::new();
    let mut next = head;
    while let Some(offset) = next
        && found.len() < limit
    {
        let (event, previous) = read(offset)?;
        if event.number < before {
            found.push(event);
        }
        // A party's chain only goes back: anything else is a damaged record,
        // and would send the walk round in circles.
        if previous.is_some_and(|previous| previous >= offset) {
            return Err(JournalError::Failed(format!(
                "archive record at {offset} points forward to its party's previous event"
            )));
        }
        next = previous;
    }
    Ok(found)
}

/// An archived record read from the file alone: between commands a
/// journaled platform's outbox is empty, so every record is there.
pub fn read_archived_trade(archive: &dyn ArchiveSource, offset: u64) -> Result<Trade, JournalError> {
    decode_archived(archive, offset)?.into_trade(offset)
}

/// An archived event and where its party's previous one is (see `read_archived_trade`).
pub fn read_archived_event(archive: &dyn ArchiveSource, offset: u64) -> Result<(Event, Option<u64>), JournalError> {
    decode_archived(archive, offset)?.into_event(offset)
}

/// An archived line of the bank's statement (see `Platform::bank_statement_at`).
pub fn read_archived_bank_entry(archive: &dyn ArchiveSource, offset: u64) -> Result<BankEntry, JournalError> {
    decode_archived(archive, offset)?.into_bank_entry(offset)
}

/// A trade's events, newest first, with their offsets: read along the
/// trade's chain of records from its newest (`head`, see
/// [`Platform::trade_record_at`]), at most `records_max` records; and
/// whether that bound stopped the walk before the trade's first record.
pub fn walk_trade_events(
    archive: &dyn ArchiveSource,
    head: Option<u64>,
    records_max: usize,
) -> Result<(Vec<(Event, u64)>, bool), JournalError> {
    let mut found = Vec::new();
    let mut next = head;
    for _ in 0..records_max {
        let Some(offset) = next else { return Ok((found, false)) };
        let record = decode_archived(archive, offset)?;
        let previous = record.previous_of_trade(offset);
        // A trade's chain only goes back: anything else is a damaged record.
        if previous.is_some_and(|previous| previous >= offset) {
            return Err(JournalError::Failed(format!(
                "archive record at {offset} points forward to its trade's previous record"
            )));
        }
        if matches!(record, ArchiveRecord::TradeEvent(_)) {
            found.push((record.into_event(offset)?.0, offset));
        }
        next = previous;
    }
    Ok((found, next.is_some()))
}

pub(crate) fn decode_archived(
    archive: &dyn ArchiveSource,
    offset: u64,
) -> Result<ArchiveRecord<'static>, JournalError> {
    ArchiveRecord::decode(&archive.read_record(offset)?, offset)
}

/// The trades an action names, which apply brings back from the archive first.
enum NamedTrades<'a> {
    Number(TradeNumber),
    /// Those with this trade's `out_trade_no` (a create, or a retried payment).
    Reference(&'a NewTrade),
    /// A tick's: the parked ones whose auto-confirmation is due.
    DueOnes,
    None,
}

fn named_trades(action: &Action) -> NamedTrades<'_> {
    match action {
        Action::PayTrade { trade, .. }
        | Action::ShipTrade { trade, .. }
        | Action::ConfirmTrade { trade, .. }
        | Action::CloseTrade { trade, .. }
        | Action::RefundTrade { trade, .. }
        | Action::SplitTrade { trade, .. }
        | Action::OpenDispute { trade, .. }
        | Action::TakeOrderLoan { trade, .. } => NamedTrades::Number(*trade),
        Action::CreateTrade(new)
        | Action::CreateAndPayTrade { trade: new, .. }
        | Action::PayWithCode { trade: new, .. }
        | Action::PayFromFreeze { trade: new, .. } => NamedTrades::Reference(new),
        Action::Tick => NamedTrades::DueOnes,
        Action::Audited { action, .. } => named_trades(action),
        _ => NamedTrades::None,
    }
}

/// A merchant's reference as the index keys it: the first 8 bytes of a
/// SHA-256 (stable across builds, as the snapshot needs; hard to collide
/// on purpose, and a collision costs a lookup one more trade).
fn reference_key(merchant: PartyNumber, out_trade_no: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest =
        Sha256::new().chain_update(merchant.get().to_le_bytes()).chain_update(out_trade_no.as_bytes()).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A refund's number as the trades' index keys it (beside references:
/// a lookup compares what it finds, so the two never mix up).
fn refund_key(refund: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new().chain_update(b"refund").chain_update(refund.to_le_bytes()).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// When a trade parked in the archive auto-confirms, if it does.
fn parked_due_of(trade: &Trade) -> Option<Timestamp> {
    if trade.status == TradeStatus::WaitBuyerConfirm { trade.confirm_due_at } else { None }
}

/// Callers look a trade up before changing it; reaching here is a bug.
#[allow(clippy::panic)]
fn unreachable_trade(number: TradeNumber) -> ! {
    panic!("trade {number} was looked up and then vanished")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(number: u64) -> Event {
        let data = EventData::Withdrawal(crate::bank::Withdrawal {
            number,
            party: PartyNumber::new(7),
            amount: Fen::new(100),
            fee: Fen::ZERO,
            status: crate::bank::WithdrawalStatus::Succeeded,
            created_at: Timestamp::from_nanos(number),
            settle_at: Timestamp::from_nanos(number),
            hold_amount_id: 1,
            hold_fee_id: None,
        });
        Event {
            number: EventNumber::new(number),
            party: PartyNumber::new(7),
            kind: "withdrawal.succeeded".to_string(),
            created_at: Timestamp::from_nanos(number),
            trade: None,
            data,
        }
    }

    #[test]
    fn a_walk_follows_the_chain_back_and_refuses_a_link_forward() {
        // Offsets 300 → 200 → 100, events 3, 2, 1.
        let chain = |offset: u64| Ok((event(offset / 100), (offset > 100).then(|| offset - 100)));
        let numbers = |found: Vec<Event>| found.iter().map(|event| event.number.get()).collect::<Vec<_>>();
        assert_eq!(numbers(walk_events(Some(300), chain, None, 10).unwrap_or_default()), [3, 2, 1]);
        assert_eq!(numbers(walk_events(Some(300), chain, Some(EventNumber::new(3)), 1).unwrap_or_default()), [2]);
        let circle = |offset: u64| Ok((event(1), Some(offset)));
        assert!(
            walk_events(Some(300), circle, Some(EventNumber::new(1)), 10).is_err(),
            "a link to itself ends the walk"
        );
    }
}
