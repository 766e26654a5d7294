//! Micro-loans to merchants, priced by the day.
//!
//! Each loan has its own ledger account (`accounts::loan`), the receivable:
//! disbursing debits it and credits the merchant's wallet; each day's
//! interest (and, past due, penalty) debits it and credits `LOAN_INCOME`;
//! repayments debit the wallet and credit it. The account may never be
//! credited beyond its debits, so the ledger itself refuses an overpayment.
//!
//! Credit line (configuration below): `CREDIT_MULTIPLE_PERCENT` of the
//! merchant's average monthly settled trade volume over the current and the
//! two previous months, capped at `CREDIT_CAP`; zero without history. The
//! volume is net of the money the merchant sent back out in those months —
//! refunds after settlement and transfers to other parties — so that money
//! sent round in a circle (an accomplice pays, the merchant transfers it
//! back) earns no credit. Every transfer out counts, not only those to the
//! trade's own buyers: knowing who paid whom would take memory per pair of
//! parties, and a lender can afford to be stricter than needed.
//!
//! Order loans (advances on a paid escrow trade) take the same credit
//! line, and at most `ORDER_LOAN_SHARE_PERCENT` of what the trade will pay
//! the merchant; a refund of an advanced trade repays the advance first, by
//! as much as it refunds, in the same chain (so the trade's money left in
//! escrow always covers what is owed on it).
//!
//! Interest: for each full day since disbursement, ⌊outstanding principal ×
//! daily_rate_bps / 10,000⌋ fen (rounded down each day). Past the due date
//! the loan is `overdue` and each further day also adds ⌊outstanding
//! principal × PENALTY_DAILY_RATE_BPS / 10,000⌋ as a penalty. Days are
//! accrued when the clock passes them and before every repayment, so a
//! repayment lowers the principal from the next day on. Repayments go to
//! interest, then penalties, then principal.

use std::collections::BTreeMap;

use ledger::{AccountFlags, NewAccount};
use serde::{Deserialize, Serialize};

use crate::accounts::{self, LEDGER_CNY, Reference};
use crate::calendar::Date;
use crate::command::{Outcome, PartyKind, Rejection};
use crate::platform::{AMOUNT_MAX, Platform};
use crate::rejection::{Conflict, Invalid, Limit, Missing};
use crate::trades::EventData;
use crate::units::{Fen, LoanNumber, PartyNumber, Timestamp, TradeNumber};

/// The daily rate of new loans: 0.05% a day (Alibaba's small-loan pricing).
pub const DAILY_RATE_BPS: u32 = 5;
/// The extra daily rate past the due date.
pub const PENALTY_DAILY_RATE_BPS: u32 = 5;
/// The credit line: this share of the average monthly settled volume.
pub const CREDIT_MULTIPLE_PERCENT: u64 = 200;
/// Months of history the average covers (the current one included).
pub const CREDIT_MONTHS: u32 = 3;
/// No merchant's credit line exceeds this: 1,000,000 yuan.
pub const CREDIT_CAP: u64 = 100_000_000;
/// Loan terms, in days.
pub const TERM_DAYS_MAX: u32 = 365;
/// The highest daily rate (interest or penalty) terms may set: 1% a day.
pub const DAILY_RATE_BPS_MAX: u32 = 100;
/// The highest credit multiple terms may set: ten times the monthly volume.
pub const CREDIT_MULTIPLE_PERCENT_MAX: u64 = 1_000;

/// The lending terms the operator sets (defaults: the constants above). A
/// loan keeps the rates it was made with; the credit line follows the
/// terms of the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoanTerms {
    pub daily_rate_bps: u32,
    pub penalty_daily_rate_bps: u32,
    pub credit_multiple_percent: u64,
    pub credit_cap: Fen,
}

impl Default for LoanTerms {
    fn default() -> LoanTerms {
        LoanTerms {
            daily_rate_bps: DAILY_RATE_BPS,
            penalty_daily_rate_bps: PENALTY_DAILY_RATE_BPS,
            credit_multiple_percent: CREDIT_MULTIPLE_PERCENT,
            credit_cap: Fen::new(CREDIT_CAP),
        }
    }
}
/// An advance is at most this share of what its trade will pay the merchant
/// (what escrow holds for it less the fee): the rest absorbs the interest.
pub const ORDER_LOAN_SHARE_PERCENT: u64 = 80;
const DAY_NANOS: u64 = ledger::NANOS_PER_DAY;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoanStatus {
    Active,
    Overdue,
    Repaid,
}

impl LoanStatus {
    pub fn name(self) -> &'static str {
        match self {
            LoanStatus::Active => "active",
            LoanStatus::Overdue => "overdue",
            LoanStatus::Repaid => "repaid",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Loan {
    pub number: LoanNumber,
    pub merchant: PartyNumber,
    pub out_request_no: String,
    /// What was lent.
    pub principal: Fen,
    /// What is still owed of it.
    pub outstanding_principal: Fen,
    /// Interest and penalties accrued and not yet repaid.
    pub interest: Fen,
    pub penalties: Fen,
    pub interest_accrued_total: Fen,
    pub penalties_accrued_total: Fen,
    pub repaid_total: Fen,
    pub daily_rate_bps: u32,
    /// The extra daily rate past the due date, as agreed.
    pub penalty_daily_rate_bps: u32,
    pub term_days: u32,
    pub disbursed_at: Timestamp,
    pub due_at: Timestamp,
    /// Full days accrued so far.
    pub days_accrued: u64,
    pub status: LoanStatus,
    /// For an order loan: the escrow trade whose settlement repays it.
    pub trade: Option<TradeNumber>,
}

impl Loan {
    pub fn owed(&self) -> Fen {
        self.outstanding_principal + self.interest + self.penalties
    }
}

/// The admin's view of all loans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Portfolio {
    pub loans_active: u64,
    pub loans_overdue: u64,
    pub loans_repaid: u64,
    pub outstanding_principal: Fen,
    pub outstanding_interest: Fen,
    pub outstanding_penalties: Fen,
    pub interest_earned: Fen,
    pub penalties_earned: Fen,
    /// Overdue principal by days past due: 1–30, 31–60, 61–90, over 90.
    pub overdue_by_age: [Fen; 4],
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct LoanBook {
    loans: BTreeMap<LoanNumber, Loan>,
    /// Loans not yet repaid.
    open: std::collections::BTreeSet<LoanNumber>,
    by_request: BTreeMap<(PartyNumber, String), LoanNumber>,
    /// Settled trade volume by (merchant, month index).
    settled: BTreeMap<(PartyNumber, u32), Fen>,
    /// Money the merchant sent back out by (merchant, month index): refunds
    /// after settlement, transfers to other parties.
    sent_back: BTreeMap<(PartyNumber, u32), Fen>,
    /// Open order loans by the trade they advance.
    by_trade: BTreeMap<TradeNumber, LoanNumber>,
    /// Open loans by (merchant, loan): a merchant's loans without a scan of all.
    open_by_merchant: std::collections::BTreeSet<(PartyNumber, LoanNumber)>,
    terms: LoanTerms,
}

impl LoanBook {
    /// What every open loan owes (principal, interest, penalties).
    pub(crate) fn owed_total(&self) -> i128 {
        self.loans.values().map(|loan| i128::from(loan.owed())).sum()
    }
}

/// The term of an order loan: the trade should settle well within it.
pub const ORDER_LOAN_TERM_DAYS: u32 = 30;

/// A merchant's credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credit {
    pub limit: Fen,
    pub used: Fen,
    pub available: Fen,
    pub daily_rate_bps: u32,
}

impl Platform {
    pub fn loan(&self, number: LoanNumber) -> Option<&Loan> {
        self.state.loans.loans.get(&number)
    }

    pub fn credit(&self, merchant: PartyNumber, now: Timestamp) -> Credit {
        let month = Date::of(now).month_index();
        let months = || (0..CREDIT_MONTHS).filter_map(|back| month.checked_sub(back));
        let total = |book: &BTreeMap<(PartyNumber, u32), Fen>| -> u128 {
            months().map(|m| u128::from(book.get(&(merchant, m)).copied().unwrap_or_default())).sum()
        };
        let volume = total(&self.state.loans.settled).saturating_sub(total(&self.state.loans.sent_back));
        let average = u64::try_from(volume / u128::from(CREDIT_MONTHS)).unwrap_or(u64::MAX);
        let terms = self.state.loans.terms;
        let limit = Fen::new(
            (u128::from(average) * u128::from(terms.credit_multiple_percent) / 100).min(u128::from(terms.credit_cap))
                as u64,
        );
        let used: Fen = self.open_loans_of(merchant).map(|loan| loan.outstanding_principal).sum();
        Credit { limit, used, available: limit.saturating_sub(used), daily_rate_bps: terms.daily_rate_bps }
    }

    pub fn loan_terms(&self) -> LoanTerms {
        self.state.loans.terms
    }

    /// New lending terms, within bounds.
    pub(crate) fn set_loan_terms(&mut self, terms: LoanTerms) -> Outcome {
        let within = terms.daily_rate_bps <= DAILY_RATE_BPS_MAX
            && terms.penalty_daily_rate_bps <= DAILY_RATE_BPS_MAX
            && terms.credit_multiple_percent <= CREDIT_MULTIPLE_PERCENT_MAX
            && terms.credit_cap.get() <= AMOUNT_MAX;
        if !within {
            return Outcome::Rejected(Rejection::Invalid(Invalid::LoanTerms));
        }
        self.state.loans.terms = terms;
        Outcome::Configured
    }

    /// What a merchant owes on all its loans (principal, interest, penalties).
    pub fn loans_owed(&self, merchant: PartyNumber) -> Fen {
        self.open_loans_of(merchant).map(Loan::owed).sum()
    }

    fn open_loans_of(&self, merchant: PartyNumber) -> impl Iterator<Item = &Loan> + '_ {
        self.state
            .loans
            .open_by_merchant
            .range((merchant, LoanNumber::new(0))..=(merchant, LoanNumber::new(u64::MAX)))
            .filter_map(|(_, number)| self.state.loans.loans.get(number))
    }

    pub fn portfolio(&self, now: Timestamp) -> Portfolio {
        let mut portfolio = Portfolio::default();
        for loan in self.state.loans.loans.values() {
            portfolio.interest_earned += loan.interest_accrued_total;
            portfolio.penalties_earned += loan.penalties_accrued_total;
            match loan.status {
                LoanStatus::Repaid => portfolio.loans_repaid += 1,
                status => {
                    portfolio.outstanding_principal += loan.outstanding_principal;
                    portfolio.outstanding_interest += loan.interest;
                    portfolio.outstanding_penalties += loan.penalties;
                    if status == LoanStatus::Overdue {
                        portfolio.loans_overdue += 1;
                        let days = now.nanos_since(loan.due_at) / DAY_NANOS;
                        let bucket = match days {
                            0..=30 => 0,
                            31..=60 => 1,
                            61..=90 => 2,
                            _ => 3,
                        };
                        portfolio.overdue_by_age[bucket] += loan.outstanding_principal;
                    } else {
                        portfolio.loans_active += 1;
                    }
                }
            }
        }
        portfolio
    }

    /// Counts a trade's settled amount toward its merchant's credit line.
    pub(crate) fn record_settlement(&mut self, now: Timestamp, merchant: PartyNumber, amount: Fen) {
        let month = (merchant, Date::of(now).month_index());
        let settled = self.state.loans.settled.entry(month).or_default();
        *settled = settled.checked_add(amount).unwrap_or(Fen::MAX);
    }

    /// Counts money a merchant sent back out (a refund after settlement, a
    /// transfer) against its credit line; other parties have none.
    pub(crate) fn record_money_sent_back(&mut self, now: Timestamp, party: PartyNumber, amount: Fen) {
        if !self.state.parties.is(party, PartyKind::Merchant) {
            return;
        }
        let month = (party, Date::of(now).month_index());
        let sent_back = self.state.loans.sent_back.entry(month).or_default();
        *sent_back = sent_back.checked_add(amount).unwrap_or(Fen::MAX);
    }

    pub(crate) fn take_loan(
        &mut self,
        now: Timestamp,
        merchant: PartyNumber,
        amount: Fen,
        term_days: u32,
        out_request_no: &str,
    ) -> Outcome {
        if let Some(&number) = self.state.loans.by_request.get(&(merchant, out_request_no.to_string())) {
            let loan = &self.state.loans.loans[&number];
            return if loan.principal == amount && loan.term_days == term_days {
                Outcome::LoanUpdated(Box::new(loan.clone()))
            } else {
                Outcome::Rejected(Rejection::Conflict(Conflict::LoanRequestNoUsed))
            };
        }
        if !self.state.parties.is(merchant, PartyKind::Merchant) {
            return Outcome::Rejected(Rejection::NotFound(Missing::Merchant));
        }
        if amount.is_zero() || amount.get() > AMOUNT_MAX || term_days == 0 || term_days > TERM_DAYS_MAX {
            return Outcome::Rejected(Rejection::Invalid(Invalid::LoanAmountOrTerm));
        }
        if out_request_no.is_empty() || out_request_no.chars().count() > 64 {
            return Outcome::Rejected(Rejection::Invalid(Invalid::LoanRequestNo));
        }
        let credit = self.credit(merchant, now);
        if amount > credit.available {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::Credit { available: credit.available }));
        }
        self.open_loan(now, merchant, amount, term_days, out_request_no, None)
    }

    /// An advance on a paid escrow trade: part of what the trade will
    /// pay, lent now within the credit line, repaid from the settlement.
    pub(crate) fn take_order_loan(
        &mut self,
        now: Timestamp,
        merchant: PartyNumber,
        trade: TradeNumber,
        amount: Option<Fen>,
        out_request_no: &str,
    ) -> Outcome {
        if let Some(&number) = self.state.loans.by_request.get(&(merchant, out_request_no.to_string())) {
            let loan = &self.state.loans.loans[&number];
            return if loan.trade == Some(trade) && amount.is_none_or(|amount| amount == loan.principal) {
                Outcome::LoanUpdated(Box::new(loan.clone()))
            } else {
                Outcome::Rejected(Rejection::Conflict(Conflict::LoanRequestNoUsed))
            };
        }
        let found = match self.live_trade(trade) {
            Ok(found) if found.merchant == merchant => found,
            Ok(_) => return Outcome::Rejected(Rejection::NotFound(Missing::Trade)),
            Err(outcome) => return outcome,
        };
        if found.in_escrow().is_zero() {
            return Outcome::Rejected(Rejection::Conflict(Conflict::AdvanceNeedsEscrowTrade));
        }
        if self.state.loans.by_trade.contains_key(&trade) {
            return Outcome::Rejected(Rejection::Conflict(Conflict::AdvanceExists));
        }
        if out_request_no.is_empty() || out_request_no.chars().count() > 64 {
            return Outcome::Rejected(Rejection::Invalid(Invalid::LoanRequestNo));
        }
        let limit = self.order_loan_limit(now, merchant, &found);
        let amount = amount.unwrap_or(limit);
        if amount.is_zero() || amount > limit {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::Advance { most: limit }));
        }
        let outcome = self.open_loan(now, merchant, amount, ORDER_LOAN_TERM_DAYS, out_request_no, Some(trade));
        if let Outcome::LoanUpdated(loan) = &outcome {
            self.state.loans.by_trade.insert(trade, loan.number);
        }
        outcome
    }

    /// The most a merchant may borrow against a trade now: its credit
    /// available, and a share of what the trade will pay it.
    fn order_loan_limit(&self, now: Timestamp, merchant: PartyNumber, trade: &crate::trades::Trade) -> Fen {
        let held = trade.in_escrow();
        let will_pay = held.saturating_sub(self.merchant_fee(merchant, held));
        let share =
            Fen::try_from(u128::from(will_pay) * u128::from(ORDER_LOAN_SHARE_PERCENT) / 100).unwrap_or(Fen::ZERO);
        share.min(self.credit(merchant, now).available)
    }

    /// What a refund of `refunded` fen of an advanced trade repays of the
    /// advance first (accrued to now): as much as it refunds, up to what is owed.
    pub(crate) fn order_loan_repayment_for_refund(
        &mut self,
        now: Timestamp,
        trade: TradeNumber,
        refunded: Fen,
    ) -> Option<(LoanNumber, Fen)> {
        let number = *self.state.loans.by_trade.get(&trade)?;
        self.accrue_loan(now, number);
        let repayment = self.state.loans.loans.get(&number)?.owed().min(refunded);
        (!repayment.is_zero()).then_some((number, repayment))
    }

    /// The open order loan on a settling trade, accrued to now, and what its
    /// settlement (`available` after the fee) repays of it.
    pub(crate) fn order_loan_repayment(
        &mut self,
        now: Timestamp,
        trade: TradeNumber,
        available: Fen,
    ) -> Option<(LoanNumber, Fen)> {
        let number = *self.state.loans.by_trade.get(&trade)?;
        self.accrue_loan(now, number);
        let owed = self.state.loans.loans.get(&number)?.owed();
        let repayment = owed.min(available);
        (!repayment.is_zero()).then_some((number, repayment))
    }

    fn open_loan(
        &mut self,
        now: Timestamp,
        merchant: PartyNumber,
        amount: Fen,
        term_days: u32,
        out_request_no: &str,
        trade: Option<TradeNumber>,
    ) -> Outcome {
        let number = LoanNumber::new(self.take_number());
        let account = NewAccount {
            id: accounts::loan(number),
            user_data: merchant.get(),
            ledger: LEDGER_CNY,
            code: accounts::CODE_LOAN,
            flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        };
        if !self.ledger.create_accounts(now.nanos(), &[account]).is_ok_and(|r| r.iter().all(|r| r.is_ok())) {
            return Outcome::Rejected(Rejection::Conflict(Conflict::LoanAccountNotOpened));
        }
        let disbursement = self.new_transfer(
            now,
            accounts::loan(number),
            accounts::wallet(merchant),
            amount,
            accounts::CODE_LOAN_DISBURSEMENT,
            Reference::Loan(number),
        );
        if let Err(rejection) = self.apply_chain(now, &[disbursement]) {
            return Outcome::Rejected(rejection);
        }
        self.book_merchant(merchant, i128::from(amount));
        let loan = Loan {
            number,
            merchant,
            out_request_no: out_request_no.to_string(),
            principal: amount,
            outstanding_principal: amount,
            interest: Fen::ZERO,
            penalties: Fen::ZERO,
            interest_accrued_total: Fen::ZERO,
            penalties_accrued_total: Fen::ZERO,
            repaid_total: Fen::ZERO,
            daily_rate_bps: self.state.loans.terms.daily_rate_bps,
            penalty_daily_rate_bps: self.state.loans.terms.penalty_daily_rate_bps,
            term_days,
            disbursed_at: now,
            due_at: now.plus_nanos(u64::from(term_days) * DAY_NANOS),
            days_accrued: 0,
            status: LoanStatus::Active,
            trade,
        };
        self.state.loans.loans.insert(number, loan.clone());
        self.state.loans.open.insert(number);
        self.state.loans.open_by_merchant.insert((merchant, number));
        self.state.loans.by_request.insert((merchant, out_request_no.to_string()), number);
        self.emit(now, merchant, "loan.disbursed", None, EventData::Loan(Box::new(loan.clone())));
        Outcome::LoanUpdated(Box::new(loan))
    }

    pub(crate) fn repay_loan(
        &mut self,
        now: Timestamp,
        number: LoanNumber,
        merchant: PartyNumber,
        amount: Fen,
    ) -> Outcome {
        if self.state.loans.loans.get(&number).is_none_or(|loan| loan.merchant != merchant) {
            return Outcome::Rejected(Rejection::NotFound(Missing::Loan));
        }
        if amount.is_zero() || amount.get() > AMOUNT_MAX {
            return Outcome::Rejected(Rejection::Invalid(Invalid::Amount));
        }
        self.accrue_loan(now, number);
        let loan = self.state.loans.loans[&number].clone();
        if loan.status == LoanStatus::Repaid {
            return Outcome::Rejected(Rejection::Conflict(Conflict::LoanRepaid));
        }
        if amount > loan.owed() {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::Owed { owed: loan.owed() }));
        }
        let repayment = self.new_transfer(
            now,
            accounts::wallet(merchant),
            accounts::loan(number),
            amount,
            accounts::CODE_LOAN_REPAYMENT,
            Reference::Loan(number),
        );
        if let Err(rejection) = self.apply_chain(now, &[repayment]) {
            return Outcome::Rejected(rejection);
        }
        self.book_merchant(merchant, -i128::from(amount));
        self.allocate_repayment(number, amount);
        Outcome::LoanUpdated(Box::new(self.state.loans.loans[&number].clone()))
    }

    /// Books a repayment that the ledger has taken: interest first, then
    /// penalties, then principal.
    pub(crate) fn allocate_repayment(&mut self, number: LoanNumber, amount: Fen) {
        let Some(loan) = self.state.loans.loans.get_mut(&number) else { return };
        let mut left = amount;
        let to_interest = left.min(loan.interest);
        loan.interest -= to_interest;
        left -= to_interest;
        let to_penalties = left.min(loan.penalties);
        loan.penalties -= to_penalties;
        left -= to_penalties;
        loan.outstanding_principal -= left;
        loan.repaid_total += amount;
        if loan.owed().is_zero() {
            loan.status = LoanStatus::Repaid;
            let (trade, merchant) = (loan.trade, loan.merchant);
            self.state.loans.open.remove(&number);
            self.state.loans.open_by_merchant.remove(&(merchant, number));
            if let Some(trade) = trade {
                self.state.loans.by_trade.remove(&trade);
            }
        }
    }

    /// Accrues every open loan's full days up to `now`, in ledger batches
    /// across loans (each loan's accrual stands alone), so that a day over a
    /// million loans costs about what a million transfers cost.
    pub(crate) fn accrue_loans(&mut self, now: Timestamp) {
        let open: Vec<LoanNumber> = self.state.loans.open.iter().copied().collect();
        let mut pending: Vec<(LoanNumber, Accrual)> = Vec::new();
        let mut batch: Vec<ledger::Transfer> = Vec::with_capacity(ledger::BATCH_EVENTS_MAX);
        for number in open {
            let Some(accrual) = self.accrual_of(now, number) else { continue };
            self.push_accrual_transfers(now, number, accrual, &mut batch);
            pending.push((number, accrual));
            if batch.len() + 2 > ledger::BATCH_EVENTS_MAX {
                self.apply_accruals(now, &mut batch, &mut pending);
            }
        }
        self.apply_accruals(now, &mut batch, &mut pending);
    }

    /// Applies a batch of accrual transfers and books them (they cannot
    /// fail: neither side is limited).
    fn apply_accruals(
        &mut self,
        now: Timestamp,
        batch: &mut Vec<ledger::Transfer>,
        pending: &mut Vec<(LoanNumber, Accrual)>,
    ) {
        if !batch.is_empty() {
            let results = self.ledger.create_transfers(now.nanos(), batch);
            let refused = match &results {
                Ok(results) => results.iter().filter(|result| !result.is_ok()).count(),
                Err(_) => batch.len(),
            };
            // Neither side of an accrual is limited: nothing can refuse it, and
            // booking interest the ledger did not charge would split the books.
            crate::invariant::check(refused == 0, format_args!("{refused} loan accruals were refused: {results:?}"));
        }
        for (number, accrual) in pending.drain(..) {
            self.book_accrual(now, number, accrual);
        }
        batch.clear();
    }

    /// Accrues one loan (before a repayment or a settlement), as one chain.
    pub(crate) fn accrue_loan(&mut self, now: Timestamp, number: LoanNumber) {
        let Some(accrual) = self.accrual_of(now, number) else { return };
        let mut chain = Vec::new();
        self.push_accrual_transfers(now, number, accrual, &mut chain);
        if !chain.is_empty()
            && let Err(refused) = self.apply_chain(now, &chain)
        {
            crate::invariant::broken(format_args!("loan {number}'s accrual was refused: {refused:?}"));
        }
        self.book_accrual(now, number, accrual);
    }

    /// The transfers of an accrual: interest and penalty, loan → `LOAN_INCOME`.
    fn push_accrual_transfers(
        &mut self,
        now: Timestamp,
        number: LoanNumber,
        accrual: Accrual,
        out: &mut Vec<ledger::Transfer>,
    ) {
        let reference = Reference::Loan(number);
        for (amount, code) in
            [(accrual.interest, accounts::CODE_LOAN_INTEREST), (accrual.penalties, accounts::CODE_LOAN_PENALTY)]
        {
            if !amount.is_zero() {
                out.push(self.new_transfer(
                    now,
                    accounts::loan(number),
                    accounts::LOAN_INCOME,
                    amount,
                    code,
                    reference,
                ));
            }
        }
    }

    /// What a loan accrues by `now`: each full day since disbursement not
    /// yet accrued; `None` when nothing changes.
    fn accrual_of(&self, now: Timestamp, number: LoanNumber) -> Option<Accrual> {
        let loan = self.state.loans.loans.get(&number)?;
        if loan.status == LoanStatus::Repaid {
            return None;
        }
        let days = now.nanos_since(loan.disbursed_at) / DAY_NANOS;
        let (mut interest, mut penalties) = (Fen::ZERO, Fen::ZERO);
        for day in loan.days_accrued + 1..=days {
            interest += daily(loan.outstanding_principal, loan.daily_rate_bps);
            if day > u64::from(loan.term_days) {
                penalties += daily(loan.outstanding_principal, loan.penalty_daily_rate_bps);
            }
        }
        let became_overdue = loan.status == LoanStatus::Active && now >= loan.due_at;
        (days > loan.days_accrued || became_overdue).then_some(Accrual { days, interest, penalties, became_overdue })
    }

    fn book_accrual(&mut self, now: Timestamp, number: LoanNumber, accrual: Accrual) {
        if let Some(loan) = self.state.loans.loans.get_mut(&number) {
            loan.days_accrued = loan.days_accrued.max(accrual.days);
            loan.interest += accrual.interest;
            loan.penalties += accrual.penalties;
            loan.interest_accrued_total += accrual.interest;
            loan.penalties_accrued_total += accrual.penalties;
            if accrual.became_overdue {
                loan.status = LoanStatus::Overdue;
            }
        }
        if accrual.became_overdue {
            let loan = self.state.loans.loans[&number].clone();
            self.emit(now, loan.merchant, "loan.overdue", None, EventData::Loan(Box::new(loan)));
        }
    }
}

/// What one loan accrues at one moment.
#[derive(Clone, Copy, Debug)]
struct Accrual {
    days: u64,
    interest: Fen,
    penalties: Fen,
    became_overdue: bool,
}

/// One day's interest on a principal, rounded down to the fen.
pub fn daily(principal: Fen, rate_bps: u32) -> Fen {
    Fen::new((u128::from(principal) * u128::from(rate_bps) / 10_000) as u64)
}
