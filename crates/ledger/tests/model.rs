//! Property tests: random batches against a deliberately simple reference
//! model of the ledger (ordered maps, whole-state copies for linked chains,
//! no undo log, no indexes). After every batch the real ledger and the model
//! must agree on every result and every balance, and the invariants must hold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)] // tests: a panic is the failure report; the model indexes plainly

use std::collections::BTreeMap;

use ledger::{
    AMOUNT_PENDING_WHOLE, Account, AccountFlags, Amount, CreateAccountResult as AR, CreateTransferResult as TR, Ledger,
    NewAccount, PendingStatus, Transfer, TransferFlags,
};
use proptest::prelude::*;

#[derive(Clone, Default)]
struct Model {
    accounts: BTreeMap<u128, Account>,
    transfers: BTreeMap<u128, Transfer>,
    pending: BTreeMap<u128, (PendingStatus, u64)>,
    last_timestamp: u64,
}

impl Model {
    fn timestamps(&mut self, timestamp: u64, count: usize) -> u64 {
        let first = timestamp.max(self.last_timestamp + 1);
        if count > 0 {
            self.last_timestamp = first + count as u64 - 1;
        }
        first
    }

    fn create_accounts(&mut self, timestamp: u64, events: &[NewAccount]) -> Vec<AR> {
        let first = self.timestamps(timestamp, events.len());
        let linked: Vec<bool> = events.iter().map(|e| e.flags.contains(AccountFlags::LINKED)).collect();
        run_chains(
            self,
            &linked,
            AR::Ok,
            AR::LinkedEventFailed,
            AR::LinkedEventChainOpen,
            AR::is_ok_or_exists,
            |m, i| m.create_account(&events[i], first + i as u64),
        )
    }

    fn create_account(&mut self, e: &NewAccount, timestamp: u64) -> AR {
        if e.id == 0 {
            return AR::IdMustNotBeZero;
        }
        if e.id == u128::MAX {
            return AR::IdMustNotBeIntMax;
        }
        if e.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && e.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            return AR::FlagsAreMutuallyExclusive;
        }
        if e.flags.contains(AccountFlags::CLOSED) {
            return AR::ClosedFlagIsSetByTransfers;
        }
        if e.ledger == 0 {
            return AR::LedgerMustNotBeZero;
        }
        if e.code == 0 {
            return AR::CodeMustNotBeZero;
        }
        if let Some(a) = self.accounts.get(&e.id) {
            let asked = e.flags - AccountFlags::LINKED;
            return if asked != a.flags - AccountFlags::CLOSED {
                AR::ExistsWithDifferentFlags
            } else if e.user_data != a.user_data {
                AR::ExistsWithDifferentUserData
            } else if e.ledger != a.ledger {
                AR::ExistsWithDifferentLedger
            } else if e.code != a.code {
                AR::ExistsWithDifferentCode
            } else {
                AR::Exists
            };
        }
        let account = Account {
            id: e.id,
            user_data: e.user_data,
            ledger: e.ledger,
            code: e.code,
            flags: e.flags - AccountFlags::LINKED,
            timestamp,
            ..Account::default()
        };
        self.accounts.insert(e.id, account);
        AR::Ok
    }

    fn create_transfers(&mut self, timestamp: u64, events: &[Transfer]) -> Vec<TR> {
        let first = self.timestamps(timestamp, events.len());
        let last = first + events.len().saturating_sub(1) as u64;
        self.expire(last);
        let linked: Vec<bool> = events.iter().map(|e| e.flags.contains(TransferFlags::LINKED)).collect();
        run_chains(
            self,
            &linked,
            TR::Ok,
            TR::LinkedEventFailed,
            TR::LinkedEventChainOpen,
            TR::is_ok_or_exists,
            |m, i| m.create_transfer(&events[i], first + i as u64),
        )
    }

    fn expire(&mut self, now: u64) {
        let due: Vec<u128> = self
            .pending
            .iter()
            .filter(|(_, (status, expires_at))| {
                *status == PendingStatus::Pending && *expires_at != 0 && *expires_at <= now
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let t = self.transfers[&id];
            self.release(&t, false);
            self.pending.get_mut(&id).unwrap().0 = PendingStatus::Expired;
        }
    }

    /// Takes a pending amount off both accounts; reopens closed ones unless posting.
    fn release(&mut self, t: &Transfer, posting: bool) {
        let d = self.accounts.get_mut(&t.debit_account_id).unwrap();
        d.debits_pending -= t.amount;
        if !posting && t.flags.contains(TransferFlags::CLOSING_DEBIT) {
            d.flags.remove(AccountFlags::CLOSED);
        }
        let c = self.accounts.get_mut(&t.credit_account_id).unwrap();
        c.credits_pending -= t.amount;
        if !posting && t.flags.contains(TransferFlags::CLOSING_CREDIT) {
            c.flags.remove(AccountFlags::CLOSED);
        }
    }

    fn create_transfer(&mut self, e: &Transfer, timestamp: u64) -> TR {
        let f = e.flags;
        if e.timestamp != 0 {
            return TR::TimestampMustBeZero;
        }
        if e.id == 0 {
            return TR::IdMustNotBeZero;
        }
        if e.id == u128::MAX {
            return TR::IdMustNotBeIntMax;
        }
        let phases = [TransferFlags::PENDING, TransferFlags::POST_PENDING, TransferFlags::VOID_PENDING]
            .into_iter()
            .filter(|p| f.contains(*p))
            .count();
        let balancing = f.contains(TransferFlags::BALANCING_DEBIT) || f.contains(TransferFlags::BALANCING_CREDIT);
        let resolving = f.contains(TransferFlags::POST_PENDING) || f.contains(TransferFlags::VOID_PENDING);
        if phases > 1 || (balancing && resolving) {
            return TR::FlagsAreMutuallyExclusive;
        }
        let closing = f.contains(TransferFlags::CLOSING_DEBIT) || f.contains(TransferFlags::CLOSING_CREDIT);
        if closing && !f.contains(TransferFlags::PENDING) {
            return TR::ClosingTransferMustBePending;
        }
        if resolving {
            return self.resolve(e, timestamp);
        }
        if let Some(x) = self.transfers.get(&e.id) {
            let amount_differs = if balancing { e.amount < x.amount } else { e.amount != x.amount };
            return if e.flags != x.flags {
                TR::ExistsWithDifferentFlags
            } else if e.debit_account_id != x.debit_account_id {
                TR::ExistsWithDifferentDebitAccountId
            } else if e.credit_account_id != x.credit_account_id {
                TR::ExistsWithDifferentCreditAccountId
            } else if amount_differs {
                TR::ExistsWithDifferentAmount
            } else if e.pending_id != x.pending_id {
                TR::ExistsWithDifferentPendingId
            } else if e.user_data != x.user_data {
                TR::ExistsWithDifferentUserData
            } else if e.timeout_seconds != x.timeout_seconds {
                TR::ExistsWithDifferentTimeout
            } else if e.ledger != x.ledger {
                TR::ExistsWithDifferentLedger
            } else if e.code != x.code {
                TR::ExistsWithDifferentCode
            } else {
                TR::Exists
            };
        }
        if e.debit_account_id == 0 {
            return TR::DebitAccountIdMustNotBeZero;
        }
        if e.credit_account_id == 0 {
            return TR::CreditAccountIdMustNotBeZero;
        }
        if e.debit_account_id == e.credit_account_id {
            return TR::AccountsMustBeDifferent;
        }
        if e.pending_id != 0 {
            return TR::PendingIdMustBeZero;
        }
        if e.timeout_seconds != 0 && !f.contains(TransferFlags::PENDING) {
            return TR::TimeoutReservedForPendingTransfer;
        }
        if e.ledger == 0 {
            return TR::LedgerMustNotBeZero;
        }
        if e.code == 0 {
            return TR::CodeMustNotBeZero;
        }
        if e.amount == 0 && !balancing {
            return TR::AmountMustNotBeZero;
        }
        let Some(d) = self.accounts.get(&e.debit_account_id).copied() else {
            return TR::DebitAccountNotFound;
        };
        let Some(c) = self.accounts.get(&e.credit_account_id).copied() else {
            return TR::CreditAccountNotFound;
        };
        if d.ledger != c.ledger {
            return TR::AccountsMustHaveTheSameLedger;
        }
        if e.ledger != d.ledger {
            return TR::TransferMustHaveTheSameLedgerAsAccounts;
        }
        if d.flags.contains(AccountFlags::CLOSED) {
            return TR::DebitAccountAlreadyClosed;
        }
        if c.flags.contains(AccountFlags::CLOSED) {
            return TR::CreditAccountAlreadyClosed;
        }
        let mut amount = e.amount;
        if f.contains(TransferFlags::BALANCING_DEBIT) {
            let room = d.credits_posted.saturating_sub(d.debits_posted).saturating_sub(d.debits_pending);
            amount = amount.min(room);
        }
        if f.contains(TransferFlags::BALANCING_CREDIT) {
            let room = c.debits_posted.saturating_sub(c.credits_posted).saturating_sub(c.credits_pending);
            amount = amount.min(room);
        }
        let pending = f.contains(TransferFlags::PENDING);
        let fits = |x: Amount, y: Amount| x.checked_add(y).is_some();
        if pending {
            if !fits(d.debits_pending, amount) {
                return TR::OverflowsDebitsPending;
            }
            if !fits(c.credits_pending, amount) {
                return TR::OverflowsCreditsPending;
            }
        } else {
            if !fits(d.debits_posted, amount) {
                return TR::OverflowsDebitsPosted;
            }
            if !fits(c.credits_posted, amount) {
                return TR::OverflowsCreditsPosted;
            }
        }
        let sum3 = |a: Amount, b: Amount, x: Amount| a.checked_add(b).and_then(|s| s.checked_add(x));
        let Some(debits) = sum3(d.debits_pending, d.debits_posted, amount) else {
            return TR::OverflowsDebits;
        };
        let Some(credits) = sum3(c.credits_pending, c.credits_posted, amount) else {
            return TR::OverflowsCredits;
        };
        if d.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) && debits > d.credits_posted {
            return TR::ExceedsCredits;
        }
        if c.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) && credits > c.debits_posted {
            return TR::ExceedsDebits;
        }
        let expires_at = if e.timeout_seconds == 0 {
            0
        } else {
            match (e.timeout_seconds as u64).checked_mul(1_000_000_000).and_then(|t| timestamp.checked_add(t)) {
                Some(at) => at,
                None => return TR::OverflowsTimeout,
            }
        };
        let d = self.accounts.get_mut(&e.debit_account_id).unwrap();
        if pending {
            d.debits_pending += amount
        } else {
            d.debits_posted += amount
        }
        if f.contains(TransferFlags::CLOSING_DEBIT) {
            d.flags.insert(AccountFlags::CLOSED);
        }
        let c = self.accounts.get_mut(&e.credit_account_id).unwrap();
        if pending {
            c.credits_pending += amount
        } else {
            c.credits_posted += amount
        }
        if f.contains(TransferFlags::CLOSING_CREDIT) {
            c.flags.insert(AccountFlags::CLOSED);
        }
        if pending {
            self.pending.insert(e.id, (PendingStatus::Pending, expires_at));
        }
        self.transfers.insert(e.id, Transfer { amount, timestamp, ..*e });
        TR::Ok
    }

    fn resolve(&mut self, e: &Transfer, timestamp: u64) -> TR {
        let post = e.flags.contains(TransferFlags::POST_PENDING);
        if e.pending_id == 0 {
            return TR::PendingIdMustNotBeZero;
        }
        if e.pending_id == u128::MAX {
            return TR::PendingIdMustNotBeIntMax;
        }
        if e.pending_id == e.id {
            return TR::PendingIdMustBeDifferent;
        }
        if e.timeout_seconds != 0 {
            return TR::TimeoutReservedForPendingTransfer;
        }
        if let Some(x) = self.transfers.get(&e.id) {
            let amount_ok = if post {
                e.amount == AMOUNT_PENDING_WHOLE || e.amount == x.amount
            } else {
                e.amount == 0 || e.amount == x.amount
            };
            return if e.flags != x.flags {
                TR::ExistsWithDifferentFlags
            } else if e.pending_id != x.pending_id {
                TR::ExistsWithDifferentPendingId
            } else if e.debit_account_id != 0 && e.debit_account_id != x.debit_account_id {
                TR::ExistsWithDifferentDebitAccountId
            } else if e.credit_account_id != 0 && e.credit_account_id != x.credit_account_id {
                TR::ExistsWithDifferentCreditAccountId
            } else if !amount_ok {
                TR::ExistsWithDifferentAmount
            } else if e.user_data != x.user_data {
                TR::ExistsWithDifferentUserData
            } else if e.ledger != 0 && e.ledger != x.ledger {
                TR::ExistsWithDifferentLedger
            } else if e.code != 0 && e.code != x.code {
                TR::ExistsWithDifferentCode
            } else {
                TR::Exists
            };
        }
        let Some(p) = self.transfers.get(&e.pending_id).copied() else {
            return TR::PendingTransferNotFound;
        };
        if !p.flags.contains(TransferFlags::PENDING) {
            return TR::PendingTransferNotPending;
        }
        if e.debit_account_id != 0 && e.debit_account_id != p.debit_account_id {
            return TR::PendingTransferHasDifferentDebitAccountId;
        }
        if e.credit_account_id != 0 && e.credit_account_id != p.credit_account_id {
            return TR::PendingTransferHasDifferentCreditAccountId;
        }
        if e.ledger != 0 && e.ledger != p.ledger {
            return TR::PendingTransferHasDifferentLedger;
        }
        if e.code != 0 && e.code != p.code {
            return TR::PendingTransferHasDifferentCode;
        }
        let amount = if post {
            if e.amount == AMOUNT_PENDING_WHOLE {
                p.amount
            } else if e.amount == 0 {
                return TR::AmountMustNotBeZero;
            } else if e.amount > p.amount {
                return TR::ExceedsPendingTransferAmount;
            } else {
                e.amount
            }
        } else {
            if e.amount != 0 && e.amount != p.amount {
                return TR::PendingTransferHasDifferentAmount;
            }
            p.amount
        };
        match self.pending[&p.id].0 {
            PendingStatus::Pending => {}
            PendingStatus::Posted => return TR::PendingTransferAlreadyPosted,
            PendingStatus::Voided => return TR::PendingTransferAlreadyVoided,
            PendingStatus::Expired => return TR::PendingTransferExpired,
        }
        let d = self.accounts[&p.debit_account_id];
        let c = self.accounts[&p.credit_account_id];
        if post {
            if d.flags.contains(AccountFlags::CLOSED) && !p.flags.contains(TransferFlags::CLOSING_DEBIT) {
                return TR::DebitAccountAlreadyClosed;
            }
            if c.flags.contains(AccountFlags::CLOSED) && !p.flags.contains(TransferFlags::CLOSING_CREDIT) {
                return TR::CreditAccountAlreadyClosed;
            }
            if d.debits_posted.checked_add(amount).is_none() {
                return TR::OverflowsDebitsPosted;
            }
            if c.credits_posted.checked_add(amount).is_none() {
                return TR::OverflowsCreditsPosted;
            }
        }
        self.release(&p, post);
        if post {
            self.accounts.get_mut(&p.debit_account_id).unwrap().debits_posted += amount;
            self.accounts.get_mut(&p.credit_account_id).unwrap().credits_posted += amount;
        }
        self.pending.get_mut(&p.id).unwrap().0 = if post { PendingStatus::Posted } else { PendingStatus::Voided };
        let stored = Transfer {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            ledger: p.ledger,
            code: p.code,
            timestamp,
            ..*e
        };
        self.transfers.insert(e.id, stored);
        TR::Ok
    }
}

/// Linked chains in the model: copy the whole state before a chain, put the
/// copy back if the chain fails.
fn run_chains<R: Copy>(
    model: &mut Model,
    linked: &[bool],
    ok: R,
    failed: R,
    open: R,
    keeps_chain: fn(R) -> bool,
    mut execute: impl FnMut(&mut Model, usize) -> R,
) -> Vec<R> {
    let n = linked.len();
    let mut results = vec![ok; n];
    let mut i = 0;
    while i < n {
        let mut end = i;
        while end < n && linked[end] {
            end += 1;
        }
        // Events i..=end form a chain (end == n means the chain never closes).
        if end == n {
            let before = model.clone();
            let mut failed_at = None;
            for j in i..n - 1 {
                let r = execute(model, j);
                results[j] = r;
                if !keeps_chain(r) {
                    failed_at = Some(j);
                    break;
                }
            }
            *model = before;
            match failed_at {
                Some(j) => {
                    results[i..j].fill(failed);
                    results[j + 1..n].fill(failed);
                }
                None => results[i..n - 1].fill(failed),
            }
            results[n - 1] = open;
            break;
        }
        if end == i {
            results[i] = execute(model, i);
            i += 1;
            continue;
        }
        let before = model.clone();
        for j in i..=end {
            let r = execute(model, j);
            results[j] = r;
            if !keeps_chain(r) {
                *model = before;
                results[i..j].fill(failed);
                results[j + 1..=end].fill(failed);
                break;
            }
        }
        i = end + 1;
    }
    results
}

// ---- generators ----

const ACCOUNT_IDS: u128 = 8;

fn account_flags() -> impl Strategy<Value = AccountFlags> {
    prop_oneof![
        3 => Just(AccountFlags::empty()),
        3 => Just(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        1 => Just(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        1 => Just(AccountFlags::LINKED),
        1 => Just(AccountFlags::LINKED | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        1 => (0u16..16).prop_map(AccountFlags::from_bits_truncate),
    ]
}

fn new_account() -> impl Strategy<Value = NewAccount> {
    (
        0..=ACCOUNT_IDS,
        0u64..2,
        prop_oneof![8 => Just(1u32), 1 => Just(2u32), 1 => Just(0u32)],
        prop_oneof![9 => Just(1u16), 1 => Just(0u16)],
        account_flags(),
    )
        .prop_map(|(id, user_data, ledger, code, flags)| NewAccount { id, user_data, ledger, code, flags })
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        6 => 1u128..200,
        1 => Just(0u128),
        1 => Just(AMOUNT_PENDING_WHOLE),
        1 => (0u128..3).prop_map(|d| u128::MAX / 2 - d),
        1 => (0u128..3).prop_map(|d| u64::MAX as u128 + d),
    ]
}

fn transfer_flags() -> impl Strategy<Value = TransferFlags> {
    prop_oneof![
        8 => Just(TransferFlags::empty()),
        3 => Just(TransferFlags::LINKED),
        3 => Just(TransferFlags::PENDING),
        3 => Just(TransferFlags::POST_PENDING),
        2 => Just(TransferFlags::VOID_PENDING),
        2 => Just(TransferFlags::BALANCING_DEBIT),
        1 => Just(TransferFlags::BALANCING_CREDIT),
        1 => Just(TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT),
        1 => Just(TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT),
        1 => Just(TransferFlags::LINKED | TransferFlags::PENDING),
        1 => Just(TransferFlags::LINKED | TransferFlags::POST_PENDING),
        2 => (0u16..256).prop_map(TransferFlags::from_bits_truncate),
    ]
}

fn transfer() -> impl Strategy<Value = Transfer> {
    (
        (0u128..24, 0..=ACCOUNT_IDS + 1, 0..=ACCOUNT_IDS + 1, amount()),
        (
            prop_oneof![3 => Just(0u128), 2 => 1u128..24],
            0u128..2,
            prop_oneof![4 => Just(0u32), 1 => Just(1u32), 1 => Just(30u32), 1 => Just(u32::MAX)],
        ),
        (
            prop_oneof![10 => Just(1u32), 1 => Just(2u32), 1 => Just(0u32)],
            prop_oneof![10 => Just(1u16), 1 => Just(0u16), 1 => Just(2u16)],
            transfer_flags(),
            prop_oneof![30 => Just(0u64), 1 => Just(7u64)],
        ),
    )
        .prop_map(
            |(
                (id, debit, credit, amount),
                (pending_id, user_data, timeout_seconds),
                (ledger, code, flags, timestamp),
            )| Transfer {
                id,
                debit_account_id: debit,
                credit_account_id: credit,
                amount,
                pending_id,
                user_data,
                timeout_seconds,
                ledger,
                code,
                flags,
                timestamp,
            },
        )
}

#[derive(Clone, Debug)]
enum Batch {
    Accounts(Vec<NewAccount>),
    Transfers(Vec<Transfer>),
    /// Transfers, then the same transfers again: the retry of a client that
    /// never saw the first answer.
    Replayed(Vec<Transfer>),
}

fn batch() -> impl Strategy<Value = (u64, Batch)> {
    let step = prop_oneof![3 => 1u64..1_000, 1 => Just(20_000_000_000u64), 1 => Just(45_000_000_000u64)];
    let batch = prop_oneof![
        1 => prop::collection::vec(new_account(), 0..8).prop_map(Batch::Accounts),
        4 => prop::collection::vec(transfer(), 0..16).prop_map(Batch::Transfers),
        1 => prop::collection::vec(transfer(), 1..8).prop_map(Batch::Replayed),
    ];
    (step, batch)
}

/// Accounts every history starts with, so that most transfers find accounts:
/// 1..=4 are unlimited (they can fund the others), 5..=8 are wallets.
fn seed_accounts() -> Vec<NewAccount> {
    (1..=ACCOUNT_IDS)
        .map(|id| NewAccount {
            id,
            user_data: 0,
            ledger: 1,
            code: 1,
            flags: if id > 4 { AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS } else { AccountFlags::empty() },
        })
        .collect()
}

fn assert_same_state(ledger: &Ledger, model: &Model) {
    assert_eq!(ledger.accounts().len(), model.accounts.len(), "account count");
    for account in ledger.accounts() {
        assert_eq!(Some(account), model.accounts.get(&account.id), "account {}", account.id);
    }
    assert_eq!(ledger.stats().transfers as usize, model.transfers.len(), "transfer count");
    for (id, transfer) in &model.transfers {
        assert_eq!(ledger.transfer(*id), Some(transfer), "transfer {id}");
    }
    for (id, (status, _)) in &model.pending {
        assert_eq!(ledger.pending_status(*id), Some(*status), "pending status of {id}");
    }
}

fn assert_invariants(ledger: &Ledger) {
    ledger.check_conservation().expect("debits equal credits");
    for a in ledger.accounts() {
        if a.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
            assert!(a.debits_pending + a.debits_posted <= a.credits_posted, "account {} spent more than it has", a.id);
        }
        if a.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
            assert!(
                a.credits_pending + a.credits_posted <= a.debits_posted,
                "account {} took more credit than allowed",
                a.id
            );
        }
    }
}

/// Linked chains are all or nothing: a chain with any failed event has no
/// event that applied.
fn assert_chains_atomic(flags: &[TransferFlags], results: &[TR]) {
    let mut start = 0;
    for i in 0..flags.len() {
        if flags[i].contains(TransferFlags::LINKED) && i + 1 < flags.len() {
            continue;
        }
        let chain = &results[start..=i];
        if chain.iter().any(|r| !r.is_ok_or_exists()) {
            assert!(!chain.contains(&TR::Ok), "chain {start}..={i} partly applied: {chain:?}");
        }
        start = i + 1;
    }
}

fn run_history(batches: Vec<(u64, Batch)>) {
    let mut ledger = Ledger::new();
    let mut model = Model::default();
    let mut now = 1_000_000_000u64;
    let seed = seed_accounts();
    assert_eq!(ledger.create_accounts(now, &seed).unwrap(), model.create_accounts(now, &seed));
    for (step, batch) in batches {
        now += step;
        match batch {
            Batch::Accounts(events) => {
                let results = ledger.create_accounts(now, &events).unwrap();
                assert_eq!(results, model.create_accounts(now, &events));
            }
            Batch::Transfers(events) => {
                let results = ledger.create_transfers(now, &events).unwrap();
                assert_eq!(results, model.create_transfers(now, &events), "batch {events:?}");
                let flags: Vec<_> = events.iter().map(|e| e.flags).collect();
                assert_chains_atomic(&flags, &results);
            }
            Batch::Replayed(events) => {
                let first = ledger.create_transfers(now, &events).unwrap();
                assert_eq!(first, model.create_transfers(now, &events));
                assert_same_state(&ledger, &model);
                let before: Vec<Account> = ledger.accounts().to_vec();
                let transfers_before = ledger.stats().transfers;
                let again = ledger.create_transfers(now, &events).unwrap();
                assert_eq!(again, model.create_transfers(now, &events));
                for (index, (a, b)) in first.iter().zip(&again).enumerate() {
                    if a.is_ok_or_exists() {
                        assert_eq!(*b, TR::Exists, "event {index} applied twice");
                    }
                }
                if first.iter().all(|r| r.is_ok_or_exists()) {
                    assert_eq!(ledger.accounts(), &before[..], "a replay moved money");
                    assert_eq!(ledger.stats().transfers, transfers_before);
                }
            }
        }
        assert_same_state(&ledger, &model);
        assert_invariants(&ledger);
    }
    assert_image_round_trips(ledger);
}

/// A ledger rebuilt from its image is the same ledger: same image, and it
/// answers the next batch the same way.
fn assert_image_round_trips(mut ledger: Ledger) {
    let mut restored = Ledger::restore(ledger.image()).expect("an image restores");
    assert_eq!(restored.image(), ledger.image());
    let next: Vec<Transfer> = (1..=8u128)
        .map(|id| Transfer {
            id: 100 + id,
            debit_account_id: id,
            credit_account_id: id % 8 + 1,
            amount: 7,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        })
        .chain((1..24).map(|pending_id| Transfer {
            id: 200 + pending_id,
            pending_id,
            flags: TransferFlags::POST_PENDING,
            amount: AMOUNT_PENDING_WHOLE,
            ..Transfer::default()
        }))
        .collect();
    let later = ledger.last_timestamp() + 60_000_000_000;
    assert_eq!(restored.create_transfers(later, &next), ledger.create_transfers(later, &next));
    assert_eq!(restored.image(), ledger.image());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn ledger_agrees_with_the_reference_model(batches in prop::collection::vec(batch(), 1..24)) {
        run_history(batches);
    }
}
