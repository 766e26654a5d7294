//! Yu'e Bao: a money-market fund fed from the wallet.
//!
//! Design (documented as the equivalent of fund units): a holder's shares
//! are a CNY account of its own (`accounts::fund`), since the unit value of
//! a money-market fund stays at 1 and yield is paid as more units. Buying
//! moves wallet → holding; redeeming (T+0, within a daily limit) moves it
//! back; a day's yield moves `FUND_INCOME` → every holding.
//!
//! Yield of one business day at an annual rate `r` (basis points): the day's
//! income is `floor((V × r + carry) / 3,650,000)` fen, where `V` is the sum
//! of all holdings and `carry` the sub-fen remainder of earlier days (so no
//! fraction of a fen is ever lost over time). Each holder gets
//! `floor(v × income / V)`; the fen left over (fewer than the holders) go one
//! each to the holders with the largest remainders (ties to the older
//! holder), so the day pays exactly its income.

use std::collections::{BTreeMap, BTreeSet};

use ledger::{AccountFlags, NewAccount, Transfer};
use serde::{Deserialize, Serialize};

use crate::accounts::{self, FUND_INCOME, LEDGER_CNY, Reference};
use crate::calendar::Date;
use crate::command::{Outcome, PartyKind, Rejection};
use crate::platform::Platform;
use crate::rejection::{Conflict, Invalid, Limit, Missing};
use crate::units::{Fen, PartyNumber, Timestamp};

/// Holders one import command brings in at most (it is applied as one
/// command, so it is bounded like a batch is).
pub const IMPORT_HOLDERS_MAX: u32 = 1_000_000;
/// The smallest subscription: 1 yuan.
pub const SUBSCRIPTION_MIN: Fen = Fen::new(100);
/// Basis points × days in a year: the divisor of one day's yield.
const DAILY_DIVISOR: u128 = 10_000 * 365;

/// What one business day's yield paid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct YieldDay {
    pub date: Date,
    pub annual_rate_bps: u32,
    /// The day's income, all of it paid to holders.
    pub income: Fen,
    pub holders_paid: u64,
    /// The fund's value before the yield.
    pub fund_value: Fen,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HolderYield {
    pub last_date: Option<Date>,
    pub last_amount: Fen,
    pub total: Fen,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FundState {
    /// Everyone who ever bought, by party number.
    holders: BTreeMap<PartyNumber, HolderYield>,
    days: BTreeMap<Date, YieldDay>,
    /// Sub-fen income carried to the next day, in fen × 3,650,000.
    carry: u128,
    redeemed: BTreeMap<(PartyNumber, Date), Fen>,
    /// (holder, date) redemption records older than the latest date are dropped.
    redeemed_dates: BTreeSet<Date>,
}

/// A holder's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FundPosition {
    pub value: Fen,
    pub yesterday_yield: Fen,
    pub total_yield: Fen,
}

impl Platform {
    pub fn fund_position(&self, party: PartyNumber) -> FundPosition {
        let value = self
            .ledger
            .account(accounts::fund(party))
            .map_or(Fen::ZERO, |a| Fen::try_from(a.debit_headroom()).unwrap_or(Fen::MAX));
        let holder = self.state.fund.holders.get(&party).copied().unwrap_or_default();
        let latest = self.state.fund.days.keys().next_back().copied();
        let yesterday_yield =
            if holder.last_date.is_some() && holder.last_date == latest { holder.last_amount } else { Fen::ZERO };
        FundPosition { value, yesterday_yield, total_yield: holder.total }
    }

    pub fn fund_yield_day(&self, date: Date) -> Option<&YieldDay> {
        self.state.fund.days.get(&date)
    }

    pub(crate) fn fund_subscribe(&mut self, now: Timestamp, party: PartyNumber, amount: Fen) -> Outcome {
        if let Err(rejection) = self.check_user(party, amount) {
            return Outcome::Rejected(rejection);
        }
        if amount < SUBSCRIPTION_MIN {
            return Outcome::Rejected(Rejection::Invalid(Invalid::Subscription));
        }
        if let Err(rejection) = self.open_holding(now, party) {
            return Outcome::Rejected(rejection);
        }
        let number = self.take_number();
        let transfer = self.new_transfer(
            now,
            accounts::wallet(party),
            accounts::fund(party),
            amount,
            accounts::CODE_FUND_SUBSCRIPTION,
            Reference::Fund(number),
        );
        match self.apply_chain(now, &[transfer]) {
            Ok(()) => {
                self.book_fund(amount, Fen::ZERO);
                Outcome::FundMoved { number, amount }
            }
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    pub(crate) fn fund_redeem(&mut self, now: Timestamp, party: PartyNumber, amount: Fen) -> Outcome {
        if let Err(rejection) = self.check_user(party, amount) {
            return Outcome::Rejected(rejection);
        }
        let today = Date::of(now);
        let used = self.state.fund.redeemed.get(&(party, today)).copied().unwrap_or_default();
        let limit = self.state.config.fund_redeem_daily_limit;
        if used.checked_add(amount).is_none_or(|total| total > limit) {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::Redemption {
                limit,
                left: limit.saturating_sub(used),
            }));
        }
        if self.ledger.account(accounts::fund(party)).is_none() {
            return Outcome::Rejected(Rejection::InsufficientFunds);
        }
        let number = self.take_number();
        let transfer = self.new_transfer(
            now,
            accounts::fund(party),
            accounts::wallet(party),
            amount,
            accounts::CODE_FUND_REDEMPTION,
            Reference::Fund(number),
        );
        if let Err(rejection) = self.apply_chain(now, &[transfer]) {
            return Outcome::Rejected(rejection);
        }
        self.book_fund(Fen::ZERO, amount);
        // Only today's use matters: older days are forgotten.
        if self.state.fund.redeemed_dates.insert(today) {
            let old: Vec<Date> = self.state.fund.redeemed_dates.range(..today).copied().collect();
            for date in old {
                self.state.fund.redeemed_dates.remove(&date);
                self.state.fund.redeemed.retain(|(_, day), _| *day != date);
            }
        }
        *self.state.fund.redeemed.entry((party, today)).or_default() += amount;
        Outcome::FundMoved { number, amount }
    }

    pub(crate) fn fund_yield(&mut self, now: Timestamp, date: Date, annual_rate_bps: u32) -> Outcome {
        if let Some(day) = self.state.fund.days.get(&date) {
            return Outcome::FundYieldPaid(day.clone());
        }
        if date >= Date::of(now) {
            return Outcome::Rejected(Rejection::Conflict(Conflict::DayNotEnded(date)));
        }
        if annual_rate_bps > 10_000 {
            return Outcome::Rejected(Rejection::Invalid(Invalid::AnnualRate));
        }
        // One pass over the accounts in creation order (sequential memory)
        // rather than a hash lookup per holder; sorted by party afterwards.
        let mut holdings: Vec<(PartyNumber, u128)> = self
            .ledger
            .accounts()
            .iter()
            .filter(|account| account.code == accounts::CODE_FUND_HOLDING)
            .map(|account| (PartyNumber::new(account.user_data), account.debit_headroom()))
            .filter(|&(_, value)| value > 0)
            .collect();
        holdings.sort_unstable_by_key(|&(party, _)| party);
        let fund_value: u128 = holdings.iter().map(|(_, value)| value).sum();
        let numerator = fund_value * u128::from(annual_rate_bps) + self.state.fund.carry;
        let income = numerator / DAILY_DIVISOR;
        let carry = numerator % DAILY_DIVISOR;
        let shares = split_income(&holdings, fund_value, income);
        let paid: u128 = shares.iter().map(|(_, share)| u128::from(*share)).sum();
        crate::invariant::check(paid == income, format_args!("a day's yield pays {paid} of its income {income}"));
        let reference =
            Reference::Fund(u64::from(date.year as u32) * 10_000 + u64::from(date.month) * 100 + u64::from(date.day));
        let mut batch = Vec::with_capacity(ledger::BATCH_EVENTS_MAX);
        let mut paid = 0u64;
        for &(party, share) in &shares {
            if share == 0 {
                continue;
            }
            let share = Fen::new(share);
            let transfer =
                self.new_transfer(now, FUND_INCOME, accounts::fund(party), share, accounts::CODE_FUND_YIELD, reference);
            batch.push(transfer);
            if batch.len() == ledger::BATCH_EVENTS_MAX {
                paid += self.apply_independent(now, &mut batch);
            }
        }
        paid += self.apply_independent(now, &mut batch);
        self.book_fund(Fen::try_from(income).unwrap_or(Fen::MAX), Fen::ZERO);
        // Both are in party order: walk them together instead of looking
        // every holder up again.
        let mut shares_in_order = shares.iter().peekable();
        for (party, holder) in self.state.fund.holders.iter_mut() {
            if let Some(&&(paid_party, share)) = shares_in_order.peek()
                && paid_party == *party
            {
                shares_in_order.next();
                holder.last_date = Some(date);
                holder.last_amount = Fen::new(share);
                holder.total += Fen::new(share);
            }
        }
        self.state.fund.carry = carry;
        let day = YieldDay {
            date,
            annual_rate_bps,
            income: Fen::try_from(income).unwrap_or(Fen::MAX),
            holders_paid: paid,
            fund_value: Fen::try_from(fund_value).unwrap_or(Fen::MAX),
        };
        self.state.fund.days.insert(date, day.clone());
        Outcome::FundYieldPaid(day)
    }

    pub(crate) fn import_fund_holders(&mut self, now: Timestamp, count: u32, seed: u64) -> Outcome {
        if count == 0 || count > IMPORT_HOLDERS_MAX {
            return Outcome::Rejected(Rejection::Invalid(Invalid::ImportCount));
        }
        let first = self.state.next_number;
        let mut accounts_batch = Vec::with_capacity(ledger::BATCH_EVENTS_MAX);
        let mut numbers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let number = PartyNumber::new(self.take_number());
            numbers.push(number);
            for (id, code) in [
                (accounts::wallet(number), accounts::CODE_USER_WALLET),
                (accounts::fund(number), accounts::CODE_FUND_HOLDING),
            ] {
                accounts_batch.push(NewAccount {
                    id,
                    user_data: number.get(),
                    ledger: LEDGER_CNY,
                    code,
                    flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                });
                if accounts_batch.len() >= ledger::BATCH_EVENTS_MAX - 1 {
                    self.create_accounts_that_cannot_fail(now, &accounts_batch);
                    accounts_batch.clear();
                }
            }
            let party = crate::platform::Party {
                number,
                kind: PartyKind::User,
                name: format!("holder {number}"),
                fee_rate_bps: 0,
                app_public_key: None,
                created_at: now,
                last_trade: None,
            };
            self.state.parties.push(party);
            self.state.fund.holders.insert(number, HolderYield::default());
        }
        if !accounts_batch.is_empty() {
            self.create_accounts_that_cannot_fail(now, &accounts_batch);
        }
        let mut batch = Vec::with_capacity(ledger::BATCH_EVENTS_MAX);
        let mut value = Fen::ZERO;
        for (index, &number) in numbers.iter().enumerate() {
            let amount = Fen::new(100 + (index as u64 * 7_919 + seed) % 1_000_000);
            value += amount;
            batch.push(self.new_transfer(
                now,
                accounts::BANK_CLEARING,
                accounts::fund(number),
                amount,
                accounts::CODE_FUND_SUBSCRIPTION,
                Reference::Fund(number.get()),
            ));
            if batch.len() == ledger::BATCH_EVENTS_MAX {
                self.apply_independent(now, &mut batch);
            }
        }
        self.apply_independent(now, &mut batch);
        self.book_fund(value, Fen::ZERO);
        Outcome::HoldersImported { first: PartyNumber::new(first), count, value }
    }

    /// Applies transfers that stand alone (not a chain); returns how many did.
    fn apply_independent(&mut self, now: Timestamp, batch: &mut Vec<Transfer>) -> u64 {
        if batch.is_empty() {
            return 0;
        }
        let applied = match self.ledger.create_transfers(now.nanos(), batch) {
            Ok(results) => results.iter().filter(|result| result.is_ok()).count() as u64,
            Err(_) => 0,
        };
        // From an account without limits to accounts just made: nothing can refuse them.
        crate::invariant::check(
            applied == batch.len() as u64,
            format_args!("{} of {} fund transfers were refused", batch.len() as u64 - applied, batch.len()),
        );
        batch.clear();
        applied
    }

    /// Accounts of new parties the platform numbered itself: none can exist.
    fn create_accounts_that_cannot_fail(&mut self, now: Timestamp, accounts: &[ledger::NewAccount]) {
        let created = self.ledger.create_accounts(now.nanos(), accounts);
        let all = created.as_ref().is_ok_and(|results| results.iter().all(|result| result.is_ok()));
        crate::invariant::check(all, format_args!("importing holders: accounts were refused: {created:?}"));
    }

    fn open_holding(&mut self, now: Timestamp, party: PartyNumber) -> Result<(), Rejection> {
        if self.state.fund.holders.contains_key(&party) {
            return Ok(());
        }
        let holding = NewAccount {
            id: accounts::fund(party),
            user_data: party.get(),
            ledger: LEDGER_CNY,
            code: accounts::CODE_FUND_HOLDING,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        };
        match self.ledger.create_accounts(now.nanos(), &[holding]) {
            Ok(results) if results.iter().all(|r| r.is_ok_or_exists()) => {
                self.state.fund.holders.insert(party, HolderYield::default());
                Ok(())
            }
            _ => Err(Rejection::Conflict(Conflict::FundHoldingNotOpened)),
        }
    }

    fn check_user(&self, party: PartyNumber, amount: Fen) -> Result<(), Rejection> {
        self.check_party_and_amount(party, amount)?;
        match self.state.parties.get(party) {
            Some(p) if p.kind == PartyKind::User => Ok(()),
            _ => Err(Rejection::NotFound(Missing::User)),
        }
    }
}

/// Splits `income` over holdings in proportion, exactly (see the module docs).
fn split_income(holdings: &[(PartyNumber, u128)], total: u128, income: u128) -> Vec<(PartyNumber, u64)> {
    if total == 0 {
        return Vec::new();
    }
    let mut shares: Vec<(PartyNumber, u64)> = Vec::with_capacity(holdings.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(holdings.len());
    let mut distributed = 0u128;
    // 64-bit division when everything fits (always, at realistic sizes): a
    // 128-bit division costs several times more, ten million times a day.
    let narrow = total <= u128::from(u64::MAX)
        && holdings.iter().all(|&(_, value)| value.checked_mul(income).is_some_and(|p| p <= u128::from(u64::MAX)));
    for (index, &(party, value)) in holdings.iter().enumerate() {
        let product = value * income;
        let (share, remainder) = if narrow {
            let (product, total) = (product as u64, total as u64);
            (u128::from(product / total), u128::from(product % total))
        } else {
            (product / total, product % total)
        };
        distributed += share;
        shares.push((party, u64::try_from(share).unwrap_or(u64::MAX)));
        remainders.push((remainder, index));
    }
    let leftover = usize::try_from(income - distributed).unwrap_or(usize::MAX).min(holdings.len());
    if leftover > 0 {
        // Largest remainders first; among equals, the older holder (lower index).
        let by_claim = |a: &(u128, usize), b: &(u128, usize)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        if leftover < remainders.len() {
            remainders.select_nth_unstable_by(leftover - 1, by_claim);
        }
        for &(_, index) in &remainders[..leftover] {
            shares[index].1 += 1;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_pays_exactly_the_income_and_favours_largest_remainders() {
        let party = PartyNumber::new;
        let holdings = [(party(1), 1u128), (party(2), 1), (party(3), 1)];
        // 2 fen over three equal holders: the two oldest get one each.
        assert_eq!(split_income(&holdings, 3, 2), vec![(party(1), 1), (party(2), 1), (party(3), 0)]);
        let holdings = [(party(1), 333u128), (party(2), 333), (party(3), 334)];
        let shares = split_income(&holdings, 1_000, 10);
        assert_eq!(shares.iter().map(|s| s.1).sum::<u64>(), 10);
        assert_eq!(shares, vec![(party(1), 3), (party(2), 3), (party(3), 4)]);
        assert!(split_income(&[], 0, 5).is_empty());
    }
}
