//! Pre-authorisation (预授权): a merchant (a hotel, a car rental) freezes
//! part of a buyer's balance, later turns some of it into payments and
//! releases the rest; left alone, a freeze expires after 30 days and the
//! money returns.
//!
//! The frozen money is one pending ledger transfer (buyer's wallet →
//! `FROZEN`) with a timeout a day past the freeze's expiry (the clock's tick
//! voids it at the expiry; the timeout is the backstop): it stays in the
//! buyer's wallet, unspendable. A partial release or a payment voids the
//! hold and, in the same chain, holds what is left again until the same
//! expiry; a payment is then an ordinary payment of a new trade from the
//! wallet the void just freed. `check_invariants` proves the `FROZEN`
//! account's pending credits equal what open freezes hold.

use std::collections::{BTreeMap, BTreeSet};

use ledger::{NANOS_PER_SECOND, PendingStatus, Transfer, TransferFlags};
use serde::{Deserialize, Serialize};

use crate::PartyKind;
use crate::accounts::{self, Reference};
use crate::command::{NewTrade, Outcome, PaySource, Rejection};
use crate::platform::Platform;
use crate::rejection::{Conflict, Invalid, Limit, Missing};
use crate::trades::{TradeMode, TradeStatus};
use crate::units::{Fen, PartyNumber, Timestamp, TradeNumber};

/// Days a freeze holds money unless released or paid.
pub const FREEZE_DAYS: u64 = 30;
/// Operations (freeze, releases, payments) on one freeze.
pub const OPERATIONS_PER_FREEZE_MAX: usize = 100;
/// A freeze's title, in characters.
pub const TITLE_CHARS_MAX: usize = 256;

const FREEZE_NANOS: u64 = FREEZE_DAYS * 86_400 * NANOS_PER_SECOND;
/// How long after a freeze's expiry the ledger releases its hold by itself.
const HOLD_BACKSTOP_NANOS: u64 = 86_400 * NANOS_PER_SECOND;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FreezeStatus {
    /// Holds money.
    Authorized,
    /// Everything paid or released.
    Finished,
    /// Expired: what was left went back.
    Closed,
}

impl FreezeStatus {
    /// Alipay's `order_status`.
    pub fn name(self) -> &'static str {
        match self {
            FreezeStatus::Authorized => "AUTHORIZED",
            FreezeStatus::Finished => "FINISH",
            FreezeStatus::Closed => "CLOSED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationKind {
    Freeze,
    Unfreeze,
    Pay,
    /// The clock released the rest.
    Expire,
}

impl OperationKind {
    /// Alipay's `operation_type`.
    pub fn name(self) -> &'static str {
        match self {
            OperationKind::Freeze => "FREEZE",
            OperationKind::Unfreeze | OperationKind::Expire => "UNFREEZE",
            OperationKind::Pay => "PAY",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FreezeOperation {
    /// Alipay's `operation_id`.
    pub number: u64,
    pub kind: OperationKind,
    /// The merchant's request number (the clock's: `expire`).
    pub out_request_no: String,
    pub amount: Fen,
    pub at: Timestamp,
    /// A payment's trade.
    pub trade: Option<TradeNumber>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Freeze {
    /// Alipay's `auth_no`.
    pub number: u64,
    pub merchant: PartyNumber,
    pub payer: PartyNumber,
    pub out_order_no: String,
    pub title: String,
    pub status: FreezeStatus,
    pub frozen: Fen,
    /// Still held.
    pub rest: Fen,
    pub paid: Fen,
    pub released: Fen,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The pending transfer holding `rest` (while it is above 0).
    pub hold: Option<u128>,
    pub operations: Vec<FreezeOperation>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Freezes {
    by_number: BTreeMap<u64, Freeze>,
    /// (merchant, out_order_no) → freeze.
    by_order: BTreeMap<(PartyNumber, String), u64>,
    /// Open freezes by expiry.
    due: BTreeSet<(Timestamp, u64)>,
    /// Each merchant's freezes, by number.
    by_merchant: BTreeSet<(PartyNumber, u64)>,
}

impl Freezes {
    pub(crate) fn first_due(&self) -> Option<Timestamp> {
        self.due.first().map(|&(at, _)| at)
    }
}

/// A payment from a freeze: the trade it makes, how much, whether the rest goes back.
pub struct FreezePayment<'a> {
    pub freeze: u64,
    pub merchant: PartyNumber,
    pub trade: &'a NewTrade,
    /// `COMPLETE`: the rest is released with the payment.
    pub complete: bool,
}

fn refused(rejection: Rejection) -> Outcome {
    Outcome::Rejected(rejection)
}

impl Platform {
    pub fn freeze(&self, number: u64) -> Option<&Freeze> {
        self.state.freezes.by_number.get(&number)
    }

    /// A merchant's freezes, newest first, before `before`.
    pub fn freezes_of(&self, merchant: PartyNumber, before: Option<u64>) -> impl Iterator<Item = &Freeze> + '_ {
        let end = (merchant, before.unwrap_or(u64::MAX));
        let numbers = self.state.freezes.by_merchant.range((merchant, 0)..end).rev();
        numbers.filter_map(|&(_, number)| self.freeze(number))
    }

    pub fn freeze_by_order(&self, merchant: PartyNumber, out_order_no: &str) -> Option<&Freeze> {
        let number = self.state.freezes.by_order.get(&(merchant, out_order_no.to_string()))?;
        self.freeze(*number)
    }

    /// Freezes `amount` of the balance of the buyer whose payment code the
    /// merchant scanned (the code is used up). Idempotent by `out_order_no`.
    pub(crate) fn create_freeze(
        &mut self,
        now: Timestamp,
        merchant: PartyNumber,
        code: &str,
        (out_order_no, out_request_no): (&str, &str),
        amount: Fen,
        title: &str,
    ) -> Outcome {
        if let Some(existing) = self.freeze_by_order(merchant, out_order_no) {
            let first = existing.operations.first();
            let same = first.is_some_and(|op| op.out_request_no == out_request_no && op.amount == amount);
            return if same {
                Outcome::FreezeUpdated(Box::new(existing.clone()))
            } else {
                refused(Rejection::Conflict(Conflict::FreezeOrderNoUsed))
            };
        }
        if !self.state.parties.is(merchant, PartyKind::Merchant) {
            return refused(Rejection::NotFound(Missing::Merchant));
        }
        let valid = crate::trade_actions::valid_reference(out_order_no)
            && crate::trade_actions::valid_reference(out_request_no)
            && crate::text::check_display_text(title, TITLE_CHARS_MAX).is_ok();
        if !valid {
            return refused(Rejection::Invalid(Invalid::Freeze));
        }
        if amount.is_zero() || amount.get() > crate::AMOUNT_MAX {
            return refused(Rejection::Invalid(Invalid::Amount));
        }
        let payer = match self.use_payment_code(now, code) {
            Ok(payer) => payer,
            Err(rejection) => return refused(rejection),
        };
        let number = self.take_number();
        let expires_at = now.plus_nanos(FREEZE_NANOS);
        let hold = self.hold_transfer(now, payer, number, amount, expires_at);
        if let Err(rejection) = self.apply_chain(now, &[hold]) {
            return refused(rejection);
        }
        self.spend_payment_code(code);
        let freeze = Freeze {
            number,
            merchant,
            payer,
            out_order_no: out_order_no.to_string(),
            title: title.to_string(),
            status: FreezeStatus::Authorized,
            frozen: amount,
            rest: amount,
            paid: Fen::ZERO,
            released: Fen::ZERO,
            created_at: now,
            expires_at,
            hold: Some(hold.id),
            operations: vec![FreezeOperation {
                number: self.take_number(),
                kind: OperationKind::Freeze,
                out_request_no: out_request_no.to_string(),
                amount,
                at: now,
                trade: None,
            }],
        };
        let freezes = &mut self.state.freezes;
        freezes.by_order.insert((merchant, out_order_no.to_string()), number);
        freezes.due.insert((expires_at, number));
        freezes.by_merchant.insert((merchant, number));
        freezes.by_number.insert(number, freeze.clone());
        Outcome::FreezeUpdated(Box::new(freeze))
    }

    /// Releases `amount` of a freeze back to its buyer. Idempotent by `out_request_no`.
    pub(crate) fn unfreeze(
        &mut self,
        now: Timestamp,
        number: u64,
        merchant: PartyNumber,
        out_request_no: &str,
        amount: Fen,
    ) -> Outcome {
        let freeze = match self.open_freeze(now, number, merchant, (OperationKind::Unfreeze, out_request_no), amount) {
            Ok(freeze) => freeze,
            Err(outcome) => return outcome,
        };
        if amount > freeze.rest {
            return refused(Rejection::LimitExceeded(Limit::Frozen { rest: freeze.rest }));
        }
        if let Err(rejection) = self.rehold(now, &freeze, freeze.rest - amount) {
            return refused(rejection);
        }
        let operation = self.operation(now, OperationKind::Unfreeze, out_request_no, amount, None);
        let updated = self.change_freeze(number, |freeze| {
            freeze.released += amount;
            freeze.operations.push(operation);
        });
        Outcome::FreezeUpdated(Box::new(updated))
    }

    /// Pays a new trade with frozen money (Alipay's `trade.pay` with
    /// `auth_no`). A retry with the trade's `out_trade_no` gets it back.
    pub(crate) fn pay_from_freeze(&mut self, now: Timestamp, payment: &FreezePayment<'_>) -> Outcome {
        let FreezePayment { freeze: number, merchant, trade: new, complete } = *payment;
        let Some(payer) = self.freeze(number).filter(|freeze| freeze.merchant == merchant).map(|freeze| freeze.payer)
        else {
            return refused(Rejection::NotFound(Missing::Freeze));
        };
        // The trade is the buyer's alone, and instant: the merchant has the money at once.
        let only_buyer = NewTrade { buyer: Some(payer), mode: TradeMode::Instant, ..new.clone() };
        match self.live_trade_by_out_trade_no(merchant, &new.out_trade_no) {
            Ok(Some(_)) => return self.create_trade(now, &only_buyer),
            Ok(None) => {}
            Err(outcome) => return outcome,
        }
        let freeze = match self.open_freeze(now, number, merchant, (OperationKind::Pay, &new.out_trade_no), new.amount)
        {
            Ok(freeze) => freeze,
            Err(outcome) => return outcome,
        };
        if new.amount > freeze.rest {
            return refused(Rejection::LimitExceeded(Limit::Frozen { rest: freeze.rest }));
        }
        let created = self.create_trade(now, &only_buyer);
        let trade = match &created {
            Outcome::TradeUpdated(trade) if trade.status == TradeStatus::WaitBuyerPay => trade.number,
            _ => return created,
        };
        let rest = if complete { Fen::ZERO } else { freeze.rest - new.amount };
        if let Err(rejection) = self.rehold(now, &freeze, rest) {
            self.close_unpaid(now, trade);
            return refused(rejection);
        }
        let paid = self.pay_trade(now, trade, freeze.payer, PaySource::Balance, None);
        if !matches!(&paid, Outcome::TradeUpdated(_)) {
            // Nothing moved but the hold: it goes back as it was.
            let now_held = self.freeze(number).cloned().unwrap_or(freeze.clone());
            if let Err(rejection) = self.rehold(now, &now_held, freeze.rest) {
                crate::invariant::broken(format_args!("freeze {number} could not be held again: {rejection:?}"));
            }
            self.close_unpaid(now, trade);
            return paid;
        }
        let operation = self.operation(now, OperationKind::Pay, &new.out_trade_no, new.amount, Some(trade));
        let released = freeze.rest - new.amount - rest;
        self.change_freeze(number, |freeze| {
            freeze.paid += new.amount;
            freeze.released += released;
            freeze.operations.push(operation);
        });
        paid
    }

    /// The clock's part: freezes past their expiry release what they hold.
    pub(crate) fn run_freezes_due(&mut self, now: Timestamp, budget: &mut u32) {
        while let Some(&(expires_at, number)) = self.state.freezes.due.first() {
            if expires_at > now || *budget == 0 {
                return;
            }
            *budget -= 1;
            let Some(freeze) = self.freeze(number).cloned() else {
                crate::invariant::broken(format_args!("freeze {number} is due but unknown"))
            };
            // A tick a day late finds the hold released by the ledger's
            // backstop timeout (done now, before anything else); else it is voided.
            self.ledger.expire_pending_transfers(now.nanos());
            if let Some(hold) = freeze.hold
                && self.ledger.pending_status(hold) == Some(PendingStatus::Pending)
            {
                let void = self.void_transfer(now, hold, number);
                if let Err(rejection) = self.apply_chain(now, &[void]) {
                    crate::invariant::broken(format_args!("freeze {number}'s hold did not release: {rejection:?}"));
                }
            }
            let operation = self.operation(now, OperationKind::Expire, "expire", freeze.rest, None);
            self.state.freezes.due.remove(&(expires_at, number));
            self.change_freeze(number, |freeze| {
                freeze.released += freeze.rest;
                freeze.rest = Fen::ZERO;
                freeze.hold = None;
                freeze.status = FreezeStatus::Closed;
                freeze.operations.push(operation);
            });
        }
    }

    /// A freeze the merchant may operate on now, unless the request was
    /// made before (then its answer).
    fn open_freeze(
        &mut self,
        now: Timestamp,
        number: u64,
        merchant: PartyNumber,
        (kind, out_request_no): (OperationKind, &str),
        amount: Fen,
    ) -> Result<Freeze, Outcome> {
        let Some(freeze) = self.freeze(number).filter(|freeze| freeze.merchant == merchant).cloned() else {
            return Err(refused(Rejection::NotFound(Missing::Freeze)));
        };
        // A release asked again is answered again; a payment's retry finds its trade before this.
        if let Some(op) = freeze.operations.iter().find(|op| op.out_request_no == out_request_no) {
            return Err(if op.amount == amount && op.kind == kind && kind == OperationKind::Unfreeze {
                Outcome::FreezeUpdated(Box::new(freeze))
            } else {
                refused(Rejection::Conflict(Conflict::FreezeRequestNoUsed))
            });
        }
        if !crate::trade_actions::valid_reference(out_request_no) {
            return Err(refused(Rejection::Invalid(Invalid::Freeze)));
        }
        if amount.is_zero() || amount.get() > crate::AMOUNT_MAX {
            return Err(refused(Rejection::Invalid(Invalid::Amount)));
        }
        if freeze.status != FreezeStatus::Authorized || freeze.expires_at <= now {
            return Err(refused(Rejection::Conflict(Conflict::FreezeNotOpen)));
        }
        if freeze.operations.len() >= OPERATIONS_PER_FREEZE_MAX {
            return Err(refused(Rejection::LimitExceeded(Limit::FreezeOperations)));
        }
        Ok(freeze)
    }

    /// Voids the freeze's hold and holds `rest` again until the same expiry,
    /// in one chain; a freeze holding nothing is finished.
    fn rehold(&mut self, now: Timestamp, freeze: &Freeze, rest: Fen) -> Result<(), Rejection> {
        let mut chain = Vec::with_capacity(2);
        if let Some(hold) = freeze.hold {
            chain.push(self.void_transfer(now, hold, freeze.number));
        }
        let new_hold =
            (!rest.is_zero()).then(|| self.hold_transfer(now, freeze.payer, freeze.number, rest, freeze.expires_at));
        chain.extend(new_hold);
        self.apply_chain(now, &chain)?;
        self.change_freeze(freeze.number, |freeze| {
            freeze.rest = rest;
            freeze.hold = new_hold.map(|hold| hold.id);
            freeze.status = if rest.is_zero() { FreezeStatus::Finished } else { FreezeStatus::Authorized };
        });
        let due = (freeze.expires_at, freeze.number);
        if rest.is_zero() {
            self.state.freezes.due.remove(&due);
        } else {
            self.state.freezes.due.insert(due);
        }
        Ok(())
    }

    fn hold_transfer(
        &mut self,
        now: Timestamp,
        payer: PartyNumber,
        freeze: u64,
        amount: Fen,
        expires_at: Timestamp,
    ) -> Transfer {
        let code = accounts::CODE_PREAUTH_HOLD;
        let mut hold =
            self.new_transfer(now, accounts::wallet(payer), accounts::FROZEN, amount, code, Reference::Freeze(freeze));
        hold.flags = TransferFlags::PENDING;
        // The clock's tick releases the hold at the freeze's expiry; the
        // ledger's timeout, a day later, is the backstop should ticks stop
        // (and never comes first, so the freeze and the balance agree).
        let left = expires_at.nanos().saturating_sub(now.nanos()) + HOLD_BACKSTOP_NANOS;
        hold.timeout_seconds = u32::try_from(left.div_ceil(NANOS_PER_SECOND)).unwrap_or(u32::MAX).max(1);
        hold
    }

    fn void_transfer(&mut self, now: Timestamp, hold: u128, freeze: u64) -> Transfer {
        let id = self.next_transfer_id(now);
        let user_data = Reference::Freeze(freeze).encode();
        Transfer { id, pending_id: hold, flags: TransferFlags::VOID_PENDING, user_data, ..Transfer::default() }
    }

    fn operation(
        &mut self,
        now: Timestamp,
        kind: OperationKind,
        out_request_no: &str,
        amount: Fen,
        trade: Option<TradeNumber>,
    ) -> FreezeOperation {
        FreezeOperation {
            number: self.take_number(),
            kind,
            out_request_no: out_request_no.to_string(),
            amount,
            at: now,
            trade,
        }
    }

    fn change_freeze(&mut self, number: u64, change: impl FnOnce(&mut Freeze)) -> Freeze {
        match self.state.freezes.by_number.get_mut(&number) {
            Some(freeze) => {
                change(freeze);
                freeze.clone()
            }
            None => crate::invariant::broken(format_args!("freeze {number} vanished")),
        }
    }

    /// What open freezes hold equals the pending credits of `FROZEN`, each
    /// by a pending transfer of its own (or, a day past its expiry, released
    /// by the ledger's backstop before the clock's tick reached it).
    pub(crate) fn freezes_hold(&self) -> (bool, String) {
        let mut held = 0u128;
        let mut wrong = 0u64;
        for freeze in self.state.freezes.by_number.values() {
            // (The ledger keeps a pending transfer's status however old it
            // is; the transfer itself may have left its memory.)
            let status = freeze.hold.and_then(|hold| self.ledger.pending_status(hold));
            match (freeze.status, status) {
                (FreezeStatus::Authorized, Some(PendingStatus::Pending)) => held += u128::from(freeze.rest),
                (FreezeStatus::Authorized, Some(PendingStatus::Expired)) => {}
                (FreezeStatus::Finished | FreezeStatus::Closed, None) if freeze.rest.is_zero() => {}
                _ => wrong += 1,
            }
        }
        let pending = self.ledger.account(accounts::FROZEN).map_or(0, |account| account.credits_pending);
        let detail = format!("open freezes hold {held} fen, FROZEN's pending credits {pending}; {wrong} freezes wrong");
        (held == pending && wrong == 0, detail)
    }
}
