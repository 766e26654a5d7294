//! The bank's side: withdrawals waiting for the bank's answer, and the
//! bank's statement of top-ups and withdrawals, by day.

use std::collections::{BTreeMap, BTreeSet};

use journal::{ArchiveSource, JournalError};
use ledger::{NANOS_PER_SECOND, Transfer, TransferFlags};
use serde::{Deserialize, Serialize};

use crate::accounts::{self, BANK_CLEARING, REVENUE, Reference};
use crate::calendar::Date;
use crate::command::Outcome;
use crate::fees::Product;
use crate::platform::{Platform, hash_of};
use crate::rejection::{Invalid, invalid};
use crate::units::{Fen, PartyNumber, Timestamp};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bank {
    withdrawals: BTreeMap<u64, Withdrawal>,
    /// (when the bank answers, withdrawal).
    due: BTreeSet<(Timestamp, u64)>,
    /// The statement: where each day's lines are in the archive (a Double
    /// Eleven's setup alone is millions of top-ups).
    statement: BTreeMap<Date, Vec<u64>>,
}

impl Bank {
    /// When the bank next answers a withdrawal.
    pub(crate) fn first_due(&self) -> Option<Timestamp> {
        self.due.first().map(|&(at, _)| at)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WithdrawalStatus {
    Pending,
    Succeeded,
    Failed,
}

impl WithdrawalStatus {
    pub fn name(self) -> &'static str {
        match self {
            WithdrawalStatus::Pending => "pending",
            WithdrawalStatus::Succeeded => "succeeded",
            WithdrawalStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Withdrawal {
    pub number: u64,
    pub party: PartyNumber,
    pub amount: Fen,
    pub fee: Fen,
    pub status: WithdrawalStatus,
    pub created_at: Timestamp,
    pub settle_at: Timestamp,
    /// The pending transfers holding the amount and the fee.
    pub hold_amount_id: u128,
    pub hold_fee_id: Option<u128>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BankEntryKind {
    TopUp,
    Withdrawal,
}

/// One line of the simulated bank channel's own statement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BankEntry {
    pub date: Date,
    pub kind: BankEntryKind,
    /// The top-up or withdrawal number.
    pub reference: u64,
    pub amount: Fen,
    /// The bank's view: paid (`true`) or refused/returned (`false`).
    pub succeeded: bool,
    /// The ledger transfer that moved the money through the clearing account
    /// (the top-up, or the posting of a withdrawal), when there is one, and
    /// its position (where to find it once it has left memory).
    pub ledger_transfer_id: Option<u128>,
    pub ledger_position: Option<u64>,
}

impl Platform {
    /// Every withdrawal, oldest first.
    pub fn withdrawals(&self) -> impl Iterator<Item = &Withdrawal> {
        self.state.bank.withdrawals.values()
    }

    pub fn withdrawal(&self, number: u64) -> Option<&Withdrawal> {
        self.state.bank.withdrawals.get(&number)
    }

    /// Where the bank's statement lines of one business day are in the
    /// archive, in the order they were made (read each with
    /// [`crate::read_archived_bank_entry`], with no lock on the state).
    pub fn bank_statement_at(&self, date: Date) -> Vec<u64> {
        self.state.bank.statement.get(&date).cloned().unwrap_or_default()
    }

    /// The bank's statement lines of one business day.
    pub fn bank_statement(&self, archive: &dyn ArchiveSource, date: Date) -> Result<Vec<BankEntry>, JournalError> {
        let offsets = self.state.bank.statement.get(&date).map_or(&[][..], Vec::as_slice);
        offsets
            .iter()
            .map(|&offset| {
                self.state.archive.read::<crate::at_rest::ArchiveRecord>(archive, offset)?.into_bank_entry(offset)
            })
            .collect()
    }

    pub(crate) fn record_bank_entry(&mut self, entry: BankEntry) {
        let offset =
            self.state.archive.append(&crate::at_rest::ArchiveRecord::BankEntry(std::borrow::Cow::Borrowed(&entry)));
        self.state.bank.statement.entry(entry.date).or_default().push(offset);
    }

    pub(crate) fn top_up(&mut self, now: Timestamp, party: PartyNumber, amount: Fen, bank: &str) -> Outcome {
        if let Err(rejection) = self.check_party_and_amount(party, amount) {
            return Outcome::Rejected(rejection);
        }
        if crate::text::check_display_text(bank, 32).is_err() {
            return invalid(Invalid::Bank);
        }
        let number = self.take_number();
        let transfer = self.new_transfer(
            now,
            BANK_CLEARING,
            accounts::wallet(party),
            amount,
            accounts::CODE_TOPUP,
            Reference::TopUp(number),
        );
        match self.apply_chain(now, &[transfer]) {
            Ok(()) => {
                self.book_merchant(party, i128::from(amount));
                let date = Date::of(now);
                let ledger_position = self.ledger.transfer_position(transfer.id);
                self.record_bank_entry(BankEntry {
                    date,
                    kind: BankEntryKind::TopUp,
                    reference: number,
                    amount,
                    succeeded: true,
                    ledger_transfer_id: Some(transfer.id),
                    ledger_position,
                });
                Outcome::ToppedUp { number, amount }
            }
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    pub(crate) fn withdraw(&mut self, now: Timestamp, party: PartyNumber, amount: Fen) -> Outcome {
        if let Err(rejection) = self.check_party_and_amount(party, amount) {
            return Outcome::Rejected(rejection);
        }
        let (fee, quota_key, quota_used) = self.charge(now, party, Product::Withdrawal, amount);
        let number = self.take_number();
        let reference = Reference::Withdrawal(number);
        let mut hold_amount = self.new_transfer(
            now,
            accounts::wallet(party),
            BANK_CLEARING,
            amount,
            accounts::CODE_WITHDRAWAL,
            reference,
        );
        hold_amount.flags = TransferFlags::PENDING;
        let mut chain = vec![hold_amount];
        if !fee.is_zero() {
            let mut hold_fee =
                self.new_transfer(now, accounts::wallet(party), REVENUE, fee, accounts::CODE_WITHDRAWAL_FEE, reference);
            hold_fee.flags = TransferFlags::PENDING;
            chain.push(hold_fee);
        }
        if let Err(rejection) = self.apply_chain(now, &chain) {
            return Outcome::Rejected(rejection);
        }
        self.state.fees.use_quota(quota_key, quota_used);
        self.book_merchant(party, -i128::from(amount + fee));
        let settle_at = now.plus_nanos(self.state.config.withdrawal_settle_seconds.saturating_mul(NANOS_PER_SECOND));
        self.state.bank.withdrawals.insert(
            number,
            Withdrawal {
                number,
                party,
                amount,
                fee,
                status: WithdrawalStatus::Pending,
                created_at: now,
                settle_at,
                hold_amount_id: chain[0].id,
                hold_fee_id: chain.get(1).map(|t| t.id),
            },
        );
        self.state.bank.due.insert((settle_at, number));
        Outcome::WithdrawalRequested { number, amount, fee }
    }

    /// Settles the withdrawals the bank has answered by `now`.
    pub(crate) fn run_withdrawals_due(&mut self, now: Timestamp, budget: &mut u32) -> (u32, u32) {
        let (mut settled, mut failed) = (0, 0);
        while let Some(&(settle_at, number)) = self.state.bank.due.first() {
            if settle_at > now || *budget == 0 {
                break;
            }
            *budget -= 1;
            self.state.bank.due.pop_first();
            if self.settle_withdrawal(now, number) {
                settled += 1;
            } else {
                failed += 1;
            }
        }
        (settled, failed)
    }

    /// The bank's answer to a withdrawal: posts the holds if it paid, voids
    /// them (money and fee back to the party) if it refused. Which ones fail
    /// is a deterministic function of the number, so replay agrees.
    fn settle_withdrawal(&mut self, now: Timestamp, number: u64) -> bool {
        let Some(withdrawal) = self.state.bank.withdrawals.get(&number).cloned() else { return false };
        let bank_pays = !self.bank_refuses(number);
        let flags = if bank_pays { TransferFlags::POST_PENDING } else { TransferFlags::VOID_PENDING };
        let amount = if bank_pays { ledger::AMOUNT_PENDING_WHOLE } else { 0 };
        let holds = [Some(withdrawal.hold_amount_id), withdrawal.hold_fee_id];
        let mut chain = Vec::new();
        for hold in holds.into_iter().flatten() {
            let id = self.next_transfer_id(now);
            let user_data = Reference::Withdrawal(number).encode();
            chain.push(Transfer { id, pending_id: hold, amount, flags, user_data, ..Transfer::default() });
        }
        let posted_id = chain[0].id;
        // Its own holds, open until now: posting or voiding them cannot be
        // refused, and a refusal would leave the money neither paid nor back.
        if let Err(refused) = self.apply_chain(now, &chain) {
            crate::invariant::broken(format_args!("withdrawal {number}'s holds did not settle: {refused:?}"));
        }
        let status = if bank_pays { WithdrawalStatus::Succeeded } else { WithdrawalStatus::Failed };
        if !bank_pays {
            self.book_merchant(withdrawal.party, i128::from(withdrawal.amount + withdrawal.fee));
        }
        if let Some(record) = self.state.bank.withdrawals.get_mut(&number) {
            record.status = status;
            let record = record.clone();
            let kind = if status == WithdrawalStatus::Succeeded { "withdrawal.succeeded" } else { "withdrawal.failed" };
            self.emit(now, record.party, kind, None, crate::trades::EventData::Withdrawal(record));
        }
        let succeeded = status == WithdrawalStatus::Succeeded;
        let ledger_position = succeeded.then(|| self.ledger.transfer_position(posted_id)).flatten();
        self.record_bank_entry(BankEntry {
            date: Date::of(now),
            kind: BankEntryKind::Withdrawal,
            reference: number,
            amount: withdrawal.amount,
            succeeded,
            ledger_transfer_id: succeeded.then_some(posted_id),
            ledger_position,
        });
        succeeded
    }

    fn bank_refuses(&self, number: u64) -> bool {
        (hash_of(&[self.state.config.bank_seed, number]) % 10_000) < u64::from(self.state.config.bank_failure_bps)
    }
}
