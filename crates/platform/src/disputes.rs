//! Disputes on escrow trades: a buyer whose goods did not come (or came
//! wrong) asks for money back before escrow pays the merchant.
//!
//! ```text
//!  open ──accept / 5 days unanswered──▶ accepted (refunds the amount)
//!   │
//!   └─reject─▶ rejected ──5 days, not escalated──▶ closed (nothing refunded)
//!                 │
//!                 └─escalate─▶ escalated ──admin decides──▶ decided (refunds what the admin says)
//! ```
//!
//! While a dispute is open its trade keeps its status, its auto-confirmation
//! waits (the time left is kept and resumes when the dispute ends) and the
//! buyer cannot confirm; the trade stays in memory, not in the archive, so
//! the clock can reach it. A dispute's refund is an ordinary refund of the
//! trade (`out_request_no` `dispute <number>`, which a merchant's cannot be,
//! and not counted among the merchant's refunds): never more than the buyer
//! paid less earlier refunds. A merchant's refund of everything left ends
//! an open dispute, accepted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{Outcome, Rejection};
use crate::platform::Platform;
use crate::rejection::{Conflict, Invalid, Limit, Missing};
use crate::trades::{EventData, TradeMode, TradeStatus};
use ledger::NANOS_PER_SECOND;

use crate::units::{Fen, PartyNumber, Timestamp, TradeNumber};

/// Days the merchant has to answer, and the buyer to escalate a rejection.
pub const DISPUTE_ANSWER_DAYS: u64 = 5;
/// Disputes one trade may have, one open at a time.
pub const DISPUTES_PER_TRADE_MAX: usize = 3;
/// A reason's or a note's length, in characters.
pub const DISPUTE_TEXT_CHARS_MAX: usize = 500;

const ANSWER_NANOS: u64 = DISPUTE_ANSWER_DAYS * 86_400 * NANOS_PER_SECOND;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DisputeStatus {
    /// Waiting for the merchant.
    Open,
    /// The merchant refused; the buyer may escalate.
    Rejected,
    /// Waiting for the operator's decision.
    Escalated,
    /// The merchant accepted (or did not answer in time): refunded.
    Accepted,
    /// The operator decided.
    Decided,
    /// A rejection the buyer let stand.
    Closed,
}

impl DisputeStatus {
    pub fn name(self) -> &'static str {
        match self {
            DisputeStatus::Open => "open",
            DisputeStatus::Rejected => "rejected",
            DisputeStatus::Escalated => "escalated",
            DisputeStatus::Accepted => "accepted",
            DisputeStatus::Decided => "decided",
            DisputeStatus::Closed => "closed",
        }
    }

    pub fn is_over(self) -> bool {
        matches!(self, DisputeStatus::Accepted | DisputeStatus::Decided | DisputeStatus::Closed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dispute {
    pub number: u64,
    pub trade: TradeNumber,
    pub buyer: PartyNumber,
    pub merchant: PartyNumber,
    /// What the buyer asks back.
    pub amount: Fen,
    pub reason: String,
    pub status: DisputeStatus,
    /// The merchant's answer to a rejection.
    pub note: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the clock acts: an open dispute is accepted, a rejected one closed.
    pub due_at: Option<Timestamp>,
    /// The trade's auto-confirmation time left when the dispute paused it.
    pub confirm_left_nanos: Option<u64>,
    /// What the outcome refunded, and the refund's number.
    pub refunded: Fen,
    pub refund: Option<u64>,
    /// The clock, not a person, decided the outcome.
    pub by_clock: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Disputes {
    by_number: BTreeMap<u64, Dispute>,
    /// Each trade's disputes, oldest first.
    by_trade: BTreeMap<TradeNumber, Vec<u64>>,
    /// The one open dispute of a trade.
    open_on: BTreeMap<TradeNumber, u64>,
    /// Each party's disputes (as buyer and as merchant), by number.
    by_party: BTreeSet<(PartyNumber, u64)>,
    due: BTreeSet<(Timestamp, u64)>,
}

impl Disputes {
    pub(crate) fn is_open_on(&self, trade: TradeNumber) -> bool {
        self.open_on.contains_key(&trade)
    }

    pub(crate) fn first_due(&self) -> Option<Timestamp> {
        self.due.first().map(|&(at, _)| at)
    }

    fn schedule(&mut self, dispute: &mut Dispute, due_at: Option<Timestamp>) {
        if let Some(old) = dispute.due_at {
            self.due.remove(&(old, dispute.number));
        }
        dispute.due_at = due_at;
        if let Some(due_at) = due_at {
            self.due.insert((due_at, dispute.number));
        }
    }

    /// Every open dispute's trade is listed as open once, and only those;
    /// every scheduled one is due once.
    pub(crate) fn index_holds(&self) -> bool {
        let open: Vec<_> = self.by_number.values().filter(|d| !d.status.is_over()).collect();
        let due = self.by_number.values().filter(|d| d.due_at.is_some()).count();
        open.len() == self.open_on.len()
            && open.iter().all(|d| self.open_on.get(&d.trade) == Some(&d.number))
            && due == self.due.len()
            && self.due.iter().all(|(at, n)| self.by_number.get(n).is_some_and(|d| d.due_at == Some(*at)))
    }
}

fn refused(rejection: Rejection) -> Outcome {
    Outcome::Rejected(rejection)
}

/// Who acts on a dispute, and how it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DisputeStep {
    /// The merchant refunds the amount asked.
    Accept,
    /// The merchant refuses, with a note.
    Reject,
    /// The buyer takes a rejection to the operator.
    Escalate,
    /// The operator refunds `refund` (0: nothing).
    Decide { refund: Fen },
}

impl Platform {
    pub fn dispute(&self, number: u64) -> Option<&Dispute> {
        self.state.disputes.by_number.get(&number)
    }

    /// A trade's disputes, oldest first.
    pub fn disputes_of_trade(&self, trade: TradeNumber) -> Vec<&Dispute> {
        let numbers = self.state.disputes.by_trade.get(&trade).map_or(&[][..], Vec::as_slice);
        numbers.iter().filter_map(|number| self.dispute(*number)).collect()
    }

    /// Disputes not over, oldest first, after `after`: the operator's queue
    /// (as many as trades with an open dispute, which stay in memory).
    pub fn disputes_open(&self, after: Option<u64>) -> impl Iterator<Item = &Dispute> + '_ {
        let mut open: Vec<u64> = self.state.disputes.open_on.values().copied().collect();
        open.sort_unstable();
        let start = open.partition_point(|&number| after.is_some_and(|after| number <= after));
        open.into_iter().skip(start).filter_map(|number| self.dispute(number))
    }

    /// Disputes a party is buyer or merchant of, newest first, before `before`.
    pub fn disputes_of_party(&self, party: PartyNumber, before: Option<u64>) -> impl Iterator<Item = &Dispute> + '_ {
        let end = (party, before.unwrap_or(u64::MAX));
        let numbers = self.state.disputes.by_party.range((party, 0)..end).rev();
        numbers.filter_map(|&(_, number)| self.dispute(number))
    }

    pub(crate) fn open_dispute(
        &mut self,
        now: Timestamp,
        number: TradeNumber,
        buyer: PartyNumber,
        amount: Fen,
        reason: &str,
    ) -> Outcome {
        let trade = match self.live_trade(number) {
            Ok(trade) if trade.payer == Some(buyer) => trade,
            Ok(_) => return refused(Rejection::NotFound(Missing::Trade)),
            Err(outcome) => return outcome,
        };
        // The rule the API states for a `reason` (`text::OPTIONAL_TEXT_PATTERN`), not empty.
        if reason.is_empty() || crate::text::check_optional_text(reason, DISPUTE_TEXT_CHARS_MAX).is_err() {
            return refused(Rejection::Invalid(Invalid::DisputeText));
        }
        if amount.is_zero() || amount.get() > crate::AMOUNT_MAX {
            return refused(Rejection::Invalid(Invalid::Amount));
        }
        let waiting = matches!(trade.status, TradeStatus::WaitSellerSend | TradeStatus::WaitBuyerConfirm);
        // Past its confirmation time the trade is the merchant's (a tick running late settles it).
        let due = trade.confirm_due_at.is_some_and(|due| due <= now);
        if trade.mode != TradeMode::Escrow || !waiting || due {
            return refused(Rejection::Conflict(Conflict::DisputeNeedsOpenEscrow));
        }
        if self.state.disputes.is_open_on(number) {
            return refused(Rejection::Conflict(Conflict::DisputeOpen));
        }
        if self.state.disputes.by_trade.get(&number).is_some_and(|list| list.len() >= DISPUTES_PER_TRADE_MAX) {
            return refused(Rejection::LimitExceeded(Limit::DisputesPerTrade));
        }
        if amount > trade.refundable() {
            return refused(Rejection::LimitExceeded(Limit::Refundable { left: trade.refundable() }));
        }
        let confirm_left_nanos = trade.confirm_due_at.map(|due| due.nanos().saturating_sub(now.nanos()));
        if let Some(due) = trade.confirm_due_at {
            self.state.trades.due.remove(&(due, number));
        }
        let merchant = trade.merchant;
        drop(trade);
        self.update_trade(number, |trade| trade.confirm_due_at = None);
        let mut dispute = Dispute {
            number: self.take_number(),
            trade: number,
            buyer,
            merchant,
            amount,
            reason: reason.to_string(),
            status: DisputeStatus::Open,
            note: None,
            created_at: now,
            updated_at: now,
            due_at: None,
            confirm_left_nanos,
            refunded: Fen::ZERO,
            refund: None,
            by_clock: false,
        };
        let disputes = &mut self.state.disputes;
        disputes.schedule(&mut dispute, Some(now.plus_nanos(ANSWER_NANOS)));
        disputes.by_trade.entry(number).or_default().push(dispute.number);
        disputes.open_on.insert(number, dispute.number);
        disputes.by_party.insert((buyer, dispute.number));
        disputes.by_party.insert((merchant, dispute.number));
        disputes.by_number.insert(dispute.number, dispute.clone());
        self.emit_dispute(now, "dispute.opened", &dispute);
        Outcome::DisputeUpdated(Box::new(dispute))
    }

    /// A step by the merchant (`Accept`, `Reject`), the buyer (`Escalate`)
    /// or the operator (`Decide`, `actor` None).
    pub(crate) fn step_dispute(
        &mut self,
        now: Timestamp,
        number: u64,
        actor: Option<PartyNumber>,
        step: DisputeStep,
        note: &Option<String>,
    ) -> Outcome {
        let Some(dispute) = self.dispute(number).cloned() else {
            return refused(Rejection::NotFound(Missing::Dispute));
        };
        let whose = match step {
            DisputeStep::Accept | DisputeStep::Reject => actor == Some(dispute.merchant),
            DisputeStep::Escalate => actor == Some(dispute.buyer),
            DisputeStep::Decide { .. } => actor.is_none(),
        };
        if !whose {
            return refused(Rejection::NotFound(Missing::Dispute));
        }
        if note.as_ref().is_some_and(|note| crate::text::check_optional_text(note, DISPUTE_TEXT_CHARS_MAX).is_err()) {
            return refused(Rejection::Invalid(Invalid::DisputeText));
        }
        let allowed = match step {
            DisputeStep::Accept => !dispute.status.is_over(),
            DisputeStep::Reject => dispute.status == DisputeStatus::Open,
            DisputeStep::Escalate => dispute.status == DisputeStatus::Rejected,
            DisputeStep::Decide { .. } => dispute.status == DisputeStatus::Escalated,
        };
        if !allowed {
            return refused(Rejection::Conflict(Conflict::DisputeStatus));
        }
        match step {
            DisputeStep::Accept => self.end_dispute(now, dispute, DisputeStatus::Accepted, dispute_refund_asked),
            DisputeStep::Decide { refund } => {
                if refund > dispute.amount {
                    return refused(Rejection::LimitExceeded(Limit::Refundable { left: dispute.amount }));
                }
                self.end_dispute(now, dispute, DisputeStatus::Decided, |_| refund)
            }
            DisputeStep::Reject => {
                let mut dispute = dispute;
                dispute.note = note.clone();
                self.move_dispute(now, dispute, DisputeStatus::Rejected, Some(now.plus_nanos(ANSWER_NANOS)))
            }
            DisputeStep::Escalate => self.move_dispute(now, dispute, DisputeStatus::Escalated, None),
        }
    }

    /// A step that keeps the dispute open.
    fn move_dispute(
        &mut self,
        now: Timestamp,
        mut dispute: Dispute,
        status: DisputeStatus,
        due_at: Option<Timestamp>,
    ) -> Outcome {
        dispute.status = status;
        dispute.updated_at = now;
        self.state.disputes.schedule(&mut dispute, due_at);
        self.state.disputes.by_number.insert(dispute.number, dispute.clone());
        let kind = if status == DisputeStatus::Rejected { "dispute.rejected" } else { "dispute.escalated" };
        self.emit_dispute(now, kind, &dispute);
        Outcome::DisputeUpdated(Box::new(dispute))
    }

    /// Ends a dispute: refunds `refund_of(dispute)` (at most what the buyer
    /// still has paid), resumes the trade's auto-confirmation.
    fn end_dispute(
        &mut self,
        now: Timestamp,
        mut dispute: Dispute,
        status: DisputeStatus,
        refund_of: impl FnOnce(&Dispute) -> Fen,
    ) -> Outcome {
        let refundable = match self.live_trade(dispute.trade) {
            Ok(trade) => trade.refundable(),
            Err(outcome) => return outcome,
        };
        let amount = refund_of(&dispute).min(refundable);
        if !amount.is_zero() {
            match self.refund_for_dispute(now, dispute.trade, dispute.number, amount) {
                Outcome::RefundCreated { refund, .. } => {
                    dispute.refunded = amount;
                    dispute.refund = Some(refund.number);
                }
                Outcome::Rejected(rejection) => return refused(rejection),
                other => crate::invariant::broken(format_args!("a dispute's refund answered {other:?}")),
            }
        }
        dispute.status = status;
        dispute.updated_at = now;
        self.state.disputes.schedule(&mut dispute, None);
        self.state.disputes.open_on.remove(&dispute.trade);
        self.state.disputes.by_number.insert(dispute.number, dispute.clone());
        self.resume_confirmation(now, &dispute);
        let kind = match status {
            DisputeStatus::Accepted => "dispute.accepted",
            DisputeStatus::Decided => "dispute.decided",
            _ => "dispute.closed",
        };
        self.emit_dispute(now, kind, &dispute);
        Outcome::DisputeUpdated(Box::new(dispute))
    }

    /// The trade's auto-confirmation goes on with the time it had left (a
    /// trade shipped during the dispute: its whole wait).
    fn resume_confirmation(&mut self, now: Timestamp, dispute: &Dispute) {
        let Ok(trade) = self.live_trade(dispute.trade) else { return };
        let waits = trade.status == TradeStatus::WaitBuyerConfirm;
        let full = u64::from(trade.auto_confirm_days) * 86_400 * NANOS_PER_SECOND;
        drop(trade);
        let due = waits.then(|| now.plus_nanos(dispute.confirm_left_nanos.unwrap_or(full)));
        self.update_trade(dispute.trade, |trade| trade.confirm_due_at = due);
        if let Some(due) = due {
            self.state.trades.due.insert((due, dispute.trade));
        }
    }

    /// A trade the merchant refunded in full while disputed: the dispute
    /// ends, accepted (the refund was the merchant's own, not the dispute's).
    pub(crate) fn end_dispute_of_closed_trade(&mut self, now: Timestamp, trade: TradeNumber) {
        let Some(number) = self.state.disputes.open_on.get(&trade).copied() else { return };
        let Some(dispute) = self.dispute(number).cloned() else { return };
        if let Outcome::Rejected(rejection) = self.end_dispute(now, dispute, DisputeStatus::Accepted, |_| Fen::ZERO) {
            crate::invariant::broken(format_args!("dispute {number} did not end with its trade: {rejection:?}"));
        }
    }

    /// A trade shipped while disputed waits for the dispute's end to start
    /// its auto-confirmation: whether it must.
    pub(crate) fn confirmation_waits_for_dispute(&self, trade: TradeNumber) -> bool {
        self.state.disputes.is_open_on(trade)
    }

    /// The clock's part: an open dispute unanswered for 5 days is accepted;
    /// a rejection not escalated in 5 days closes the dispute.
    pub(crate) fn run_disputes_due(&mut self, now: Timestamp, budget: &mut u32) {
        while let Some(&(due_at, number)) = self.state.disputes.due.first() {
            if due_at > now || *budget == 0 {
                return;
            }
            *budget -= 1;
            let Some(mut dispute) = self.dispute(number).cloned() else {
                crate::invariant::broken(format_args!("dispute {number} is due but unknown"))
            };
            dispute.by_clock = true;
            let outcome = match dispute.status {
                DisputeStatus::Open => {
                    self.end_dispute(now, dispute.clone(), DisputeStatus::Accepted, dispute_refund_asked)
                }
                DisputeStatus::Rejected => self.end_dispute(now, dispute.clone(), DisputeStatus::Closed, |_| Fen::ZERO),
                _ => crate::invariant::broken(format_args!("dispute {number} is due in status {:?}", dispute.status)),
            };
            if let Outcome::Rejected(_) = outcome {
                // The refund could not be made (the trade's refunds are used
                // up): the operator decides instead.
                self.move_dispute(now, dispute, DisputeStatus::Escalated, None);
            }
        }
    }

    fn emit_dispute(&mut self, now: Timestamp, kind: &str, dispute: &Dispute) {
        let data = EventData::Dispute(Box::new(dispute.clone()));
        self.emit(now, dispute.merchant, kind, Some(dispute.trade), data);
    }
}

fn dispute_refund_asked(dispute: &Dispute) -> Fen {
    dispute.amount
}

impl Platform {
    /// The disputes' indexes agree with their records, and every open
    /// dispute's trade is in memory with its auto-confirmation paused.
    pub(crate) fn disputes_hold(&self) -> bool {
        let disputes = &self.state.disputes;
        disputes.index_holds()
            && disputes
                .open_on
                .keys()
                .all(|trade| self.state.trades.live.get(trade).is_some_and(|trade| trade.confirm_due_at.is_none()))
    }
}
