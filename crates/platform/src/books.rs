//! The platform's own books, checked against the ledger.
//!
//! Each product keeps, beside its records, what it says some ledger
//! accounts hold — the escrow account what open escrow trades hold, the
//! fund's holdings what subscriptions, yields and payments left in them,
//! merchants' wallets what their trades, loans and transfers left them —
//! updated where the product changes its records, not from the chains it
//! applies. [`Platform::check_invariants`] compares each with the ledger: a
//! product that moved money its records do not say (or said what it did
//! not move: a leg left out of a chain) shows there, by name.

use serde::{Deserialize, Serialize};

use crate::accounts;
use crate::bank::WithdrawalStatus;
use crate::command::PartyKind;
use crate::platform::Platform;
use crate::units::{Fen, PartyNumber};

/// What the products say their accounts hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Books {
    /// Open escrow trades: paid, less refunds, until settled or closed.
    pub escrow: u128,
    /// Yu'e Bao's holdings: subscribed, imported, earned and refunded,
    /// less redeemed and spent.
    pub fund: u128,
    /// What merchants can spend: settlements and money in, less fees,
    /// refunds, repayments, budgets and money out (withdrawals under way
    /// included).
    pub merchants: i128,
}

/// One of the platform's books against the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invariant {
    /// `ledger`, `escrow`, `fund`, `loans`, `campaigns`, `red_packets`,
    /// `withdrawals`, `merchant_balances`.
    pub name: &'static str,
    pub ok: bool,
    /// What each side holds, in fen.
    pub detail: String,
}

fn compare(name: &'static str, books: i128, ledger: i128, what: &str) -> Invariant {
    Invariant { name, ok: books == ledger, detail: format!("{what}: the books say {books}, the ledger holds {ledger}") }
}

impl Platform {
    /// Every product's books against the ledger, each named (see the module).
    pub fn check_invariants(&self) -> Vec<Invariant> {
        let ledger = &self.ledger;
        let posted = |id: u128| {
            ledger.account(id).map_or(0, |account| account.credits_posted as i128 - account.debits_posted as i128)
        };
        let conservation = ledger.check_conservation();
        let mut checks = vec![Invariant {
            name: "ledger",
            ok: conservation.is_ok(),
            detail: match &conservation {
                Ok(_) => "debits equal credits, posted and pending, in every ledger".to_string(),
                Err(error) => error.to_string(),
            },
        }];
        checks.push(compare("escrow", self.state.books.escrow as i128, posted(accounts::ESCROW), "open escrow trades"));
        let holdings: i128 = ledger
            .accounts()
            .iter()
            .filter(|account| account.code == accounts::CODE_FUND_HOLDING)
            .map(|account| account.credits_posted as i128 - account.debits_posted as i128)
            .sum();
        checks.push(compare("fund", self.state.books.fund as i128, holdings, "Yu'e Bao holdings"));
        let owed = self.state.loans.owed_total();
        let receivable: i128 = ledger
            .accounts()
            .iter()
            .filter(|account| account.code == accounts::CODE_LOAN)
            .map(|account| account.debits_posted as i128 - account.credits_posted as i128)
            .sum();
        checks.push(compare("loans", owed, receivable, "owed on loans (principal, interest, penalties)"));
        let budgets = self.state.marketing.budgets_left();
        checks.push(compare("campaigns", budgets, posted(accounts::CAMPAIGNS), "campaign budgets left"));
        let unclaimed = self.state.marketing.shares_left();
        checks.push(compare("red_packets", unclaimed, posted(accounts::RED_PACKETS), "red packets unclaimed"));
        checks.push(self.check_withdrawals());
        let merchants: i128 = self
            .state
            .parties
            .all()
            .filter(|party| party.kind == PartyKind::Merchant)
            .filter_map(|party| ledger.account(accounts::wallet(party.number)))
            .map(|account| {
                account.credits_posted as i128 - account.debits_posted as i128 - account.debits_pending as i128
            })
            .sum();
        checks.push(compare("merchant_balances", self.state.books.merchants, merchants, "merchants' spendable money"));
        checks.push(Invariant {
            name: "coupon_index",
            ok: self.state.marketing.coupon_index_holds(),
            detail: "every coupon is listed under its user, and nothing else is".to_string(),
        });
        let (freezes_ok, freezes_detail) = self.freezes_hold();
        checks.push(Invariant { name: "freezes", ok: freezes_ok, detail: freezes_detail });
        checks.push(Invariant {
            name: "disputes",
            ok: self.disputes_hold(),
            detail: "each open dispute's trade is in memory, listed once, its clock set once".to_string(),
        });
        checks
    }

    /// The checks that read every trade (the archive's too: minutes for a
    /// full day's, so not part of `check_invariants`): the escrow account
    /// holds exactly what open escrow trades hold, by their own records.
    /// `visit` sees every trade on the way (one walk for a caller's own figures).
    pub fn check_trades(
        &self,
        archive: &dyn journal::ArchiveSource,
        mut visit: impl FnMut(&crate::trades::Trade),
    ) -> Result<Vec<Invariant>, journal::JournalError> {
        let mut held = 0i128;
        let mut splits_wrong = 0u64;
        self.for_each_trade(archive, |trade| {
            held += i128::from(trade.in_escrow());
            let listed: Fen = trade.splits.iter().map(crate::trades::Split::total).sum();
            if listed != trade.split || trade.split > trade.amount {
                splits_wrong += 1;
            }
            visit(trade);
        })?;
        let escrow = self
            .ledger
            .account(accounts::ESCROW)
            .map_or(0, |account| account.credits_posted as i128 - account.debits_posted as i128);
        let splits = Invariant {
            name: "splits",
            ok: splits_wrong == 0,
            detail: format!("{splits_wrong} trades whose splits do not add up, or exceed the trade"),
        };
        Ok(vec![compare("escrow_of_trades", held, escrow, "what open escrow trades say they hold"), splits])
    }

    /// Withdrawals under way hold their amount toward the bank's clearing
    /// account and their fee toward revenue, and nothing else is pending there.
    fn check_withdrawals(&self) -> Invariant {
        let pending = self.withdrawals().filter(|withdrawal| withdrawal.status == WithdrawalStatus::Pending);
        let (amounts, fees) = pending.fold((0u128, 0u128), |(amounts, fees), withdrawal| {
            (amounts + u128::from(withdrawal.amount), fees + u128::from(withdrawal.fee))
        });
        let pending_of = |id| self.ledger.account(id).map_or(0, |account| account.credits_pending);
        let (clearing, revenue) = (pending_of(accounts::BANK_CLEARING), pending_of(accounts::REVENUE));
        Invariant {
            name: "withdrawals",
            ok: amounts == clearing && fees == revenue,
            detail: format!(
                "withdrawals under way: {amounts} to the bank and {fees} in fees; the ledger holds {clearing} and {revenue}"
            ),
        }
    }

    pub(crate) fn book_escrow(&mut self, paid: Fen, released: Fen) {
        let books = &mut self.state.books;
        books.escrow = books.escrow + u128::from(paid) - u128::from(released);
    }

    pub(crate) fn book_fund(&mut self, added: Fen, taken: Fen) {
        let books = &mut self.state.books;
        books.fund = books.fund + u128::from(added) - u128::from(taken);
    }

    /// A change of what a party can spend, counted if the party is a merchant.
    pub(crate) fn book_merchant(&mut self, party: PartyNumber, change: i128) {
        if self.state.parties.is(party, PartyKind::Merchant) {
            self.state.books.merchants += change;
        }
    }
}
