//! The state machine: applies batches of account creations and transfers.

// `expect` here states invariants of the state machine (an undo record always
// has the object it undoes, a stored pending transfer always has its entry),
// in the manner of an assertion: breaking one is a bug, never bad input.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;

use hashbrown::HashMap;

use crate::account::{Account, AccountFlags, Balances, NewAccount};
use crate::account_index::AccountIndex;
use crate::image::{ImageError, PendingRecord};
use crate::result::{BatchError, CreateAccountResult, CreateTransferResult};
use crate::store::{NO_TRANSFER, StoredTransfer, TransferStore};
use crate::transfer::{PendingStatus, Transfer, TransferFlags};
use crate::{AMOUNT_PENDING_WHOLE, Amount, BATCH_EVENTS_MAX, NANOS_PER_SECOND};

/// Events whose index slots are brought into cache at a time: enough
/// independent loads to keep the memory system busy, few enough that the
/// lines are still in cache when the events are applied.
const WARM_WINDOW_EVENTS: usize = 512;

/// A pending transfer's state, with the rest of the transfer itself (an
/// open hold, an escrow, can outlive the window of transfers kept in
/// memory): its accounts by index, not id, and no `pending_id` (always 0
/// for a pending transfer) — 80 bytes instead of 144, for what can be tens
/// of millions of open holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingEntry {
    amount: Amount,
    user_data: u128,
    timestamp: u64,
    /// Ledger nanoseconds at which the hold is released; 0: never.
    expires_at: u64,
    debit_index: u32,
    credit_index: u32,
    timeout_seconds: u32,
    ledger: u32,
    code: u16,
    flags: TransferFlags,
    status: PendingStatus,
}

impl PendingEntry {
    /// An open hold of the stored pending `transfer`.
    fn open(transfer: &Transfer, debit_index: u32, credit_index: u32, expires_at: u64) -> PendingEntry {
        debug_assert_eq!(transfer.pending_id, 0, "a pending transfer resolves nothing");
        PendingEntry {
            amount: transfer.amount,
            user_data: transfer.user_data,
            timestamp: transfer.timestamp,
            expires_at,
            debit_index,
            credit_index,
            timeout_seconds: transfer.timeout_seconds,
            ledger: transfer.ledger,
            code: transfer.code,
            flags: transfer.flags,
            status: PendingStatus::Pending,
        }
    }

    /// The pending transfer `id` as it was stored.
    fn transfer(&self, id: u128, accounts: &[Account]) -> Transfer {
        Transfer {
            id,
            debit_account_id: accounts[self.debit_index as usize].id,
            credit_account_id: accounts[self.credit_index as usize].id,
            amount: self.amount,
            pending_id: 0,
            user_data: self.user_data,
            timeout_seconds: self.timeout_seconds,
            ledger: self.ledger,
            code: self.code,
            flags: self.flags,
            timestamp: self.timestamp,
        }
    }
}

/// How the ledger is set up; fixed for its lifetime (a snapshot records it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LedgerConfig {
    /// With a horizon, transfer ids carry their creation time (the high 64
    /// bits, in the ledger's nanoseconds), an id older than the horizon or
    /// newer than the event is refused, and transfers older than the horizon
    /// leave memory (the journal keeps them in its history file). Together
    /// these keep idempotency exact while memory holds only recent history:
    /// a retry of an evicted transfer is always refused as expired, never
    /// applied twice. `None`: every transfer stays in memory.
    pub id_horizon_ns: Option<u64>,
}

/// What must be put back when a linked chain fails part-way.
#[derive(Clone, Copy, Debug)]
enum Undo {
    AccountCreated,
    AccountBalances { index: u32, balances: Balances },
    TransferInserted,
    PendingInserted { id: u128 },
    PendingResolved { id: u128, previous: PendingStatus },
}

/// Counts of what the ledger holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerStats {
    pub accounts: u64,
    pub transfers: u64,
    pub pending_open: u64,
}

/// The ledger state machine. Single-threaded by design: one writer applies
/// batches in order; determinism makes replicas and recovery replays agree.
#[derive(Default)]
pub struct Ledger {
    config: LedgerConfig,
    accounts: Vec<Account>,
    account_index: AccountIndex,
    transfers: TransferStore,
    /// Per account (by index), the position of its newest transfer: the
    /// head of its history.
    account_last_transfer: Vec<u64>,
    /// Every pending transfer in the window, and every open one, by id:
    /// needed to refuse a second post or void after the first.
    pending: HashMap<u128, PendingEntry>,
    /// Open pending transfers with a timeout, ordered by when they expire.
    expiries: BTreeSet<(u64, u128)>,
    /// The timestamp given to the last event; event timestamps strictly grow.
    last_timestamp: u64,
    /// Scratch space for the chain being applied; empty between events.
    undo: Vec<Undo>,
    /// Transfers at this position and after stay in memory whatever their
    /// age: a journal sets it to what its history file has taken, so that a
    /// command spanning more than the horizon (a tick running hours of due
    /// work at their own times) cannot evict its own transfers before they
    /// are written. `None`: no floor.
    eviction_floor: Option<u64>,
}

/// What the chain driver needs to know of a result type.
trait ChainResult: Copy {
    const OK: Self;
    const LINKED_EVENT_FAILED: Self;
    const LINKED_EVENT_CHAIN_OPEN: Self;
    fn keeps_chain(self) -> bool;
}

impl ChainResult for CreateAccountResult {
    const OK: Self = CreateAccountResult::Ok;
    const LINKED_EVENT_FAILED: Self = CreateAccountResult::LinkedEventFailed;
    const LINKED_EVENT_CHAIN_OPEN: Self = CreateAccountResult::LinkedEventChainOpen;
    fn keeps_chain(self) -> bool {
        self.is_ok_or_exists()
    }
}

impl ChainResult for CreateTransferResult {
    const OK: Self = CreateTransferResult::Ok;
    const LINKED_EVENT_FAILED: Self = CreateTransferResult::LinkedEventFailed;
    const LINKED_EVENT_CHAIN_OPEN: Self = CreateTransferResult::LinkedEventChainOpen;
    fn keeps_chain(self) -> bool {
        self.is_ok_or_exists()
    }
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// A ledger with room reserved for this many accounts and transfers, so
    /// that its indexes never rehash (and stall a batch) below those counts.
    pub fn with_capacity(accounts: usize, transfers: usize) -> Ledger {
        Ledger::with_config(LedgerConfig::default(), accounts, transfers)
    }

    /// A ledger with this configuration and room reserved (see `with_capacity`).
    pub fn with_config(config: LedgerConfig, accounts: usize, transfers: usize) -> Ledger {
        Ledger {
            config,
            accounts: Vec::with_capacity(accounts),
            account_index: AccountIndex::with_capacity(accounts),
            account_last_transfer: Vec::with_capacity(accounts),
            transfers: TransferStore::with_capacity(transfers),
            ..Ledger::default()
        }
    }

    /// Makes room for this many accounts and transfers in all (what is
    /// stored counts), so that nothing rehashes or reallocates below that.
    pub fn reserve(&mut self, accounts: usize, transfers: usize) {
        let more_accounts = accounts.saturating_sub(self.accounts.len());
        self.accounts.reserve(more_accounts);
        self.account_index.reserve(accounts.max(self.accounts.len()), &self.accounts);
        self.account_last_transfer.reserve(more_accounts);
        self.transfers.reserve(transfers);
    }

    /// Creates accounts. One result per event, in order.
    pub fn create_accounts(
        &mut self,
        timestamp: u64,
        events: &[NewAccount],
    ) -> Result<Vec<CreateAccountResult>, BatchError> {
        check_batch_size(events.len())?;
        let timestamp_first = self.reserve_timestamps(timestamp, events.len())?;
        Ok(self.apply_chains(
            events,
            timestamp_first,
            |event| event.flags.contains(AccountFlags::LINKED),
            |_, _| {},
            Ledger::create_account,
        ))
    }

    /// Applies transfers. First releases every pending transfer whose timeout
    /// has passed by the batch's time, so that expiry is part of the replayed
    /// history rather than a side effect of a clock. One result per event.
    pub fn create_transfers(
        &mut self,
        timestamp: u64,
        events: &[Transfer],
    ) -> Result<Vec<CreateTransferResult>, BatchError> {
        check_batch_size(events.len())?;
        let timestamp_first = self.reserve_timestamps(timestamp, events.len())?;
        let timestamp_last = timestamp_first + events.len().saturating_sub(1) as u64;
        self.expire_pending_transfers(timestamp_last);
        if let Some(horizon) = self.config.id_horizon_ns {
            self.evict_older_than(timestamp_first.saturating_sub(horizon));
        }
        Ok(self.apply_chains(
            events,
            timestamp_first,
            |event| event.flags.contains(TransferFlags::LINKED),
            |ledger, window| ledger.warm_transfer_ids(window),
            Ledger::create_transfer,
        ))
    }

    /// Releases the holds of pending transfers that expire at or before `now`
    /// and returns their ids in expiry order. Called by `create_transfers`;
    /// callers that need to know what expired (to notify someone) call it
    /// first with the batch's timestamp.
    pub fn expire_pending_transfers(&mut self, now: u64) -> Vec<u128> {
        let mut expired = Vec::new();
        while let Some(&(expires_at, id)) = self.expiries.first() {
            if expires_at > now {
                break;
            }
            self.expiries.pop_first();
            self.release_expired(id);
            expired.push(id);
        }
        expired
    }

    pub fn account(&self, id: u128) -> Option<&Account> {
        let index = self.account_index.get(id, &self.accounts)?;
        Some(&self.accounts[index as usize])
    }

    /// A transfer by id, if it is in memory (with an id horizon, older
    /// transfers are in the journal's history file).
    pub fn transfer(&self, id: u128) -> Option<&Transfer> {
        let position = self.transfers.position_of(id)?;
        Some(&self.transfers.get(position)?.transfer)
    }

    /// The position of a transfer in memory: its place among all transfers.
    pub fn transfer_position(&self, id: u128) -> Option<u64> {
        self.transfers.position_of(id)
    }

    pub fn config(&self) -> LedgerConfig {
        self.config
    }

    /// The status of a pending transfer, `None` if `id` is not one.
    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.pending.get(&id).map(|entry| entry.status)
    }

    /// An account's transfers in the order they were applied, starting after
    /// the transfer with timestamp `after_timestamp` (0: from the first), at
    /// most `limit` of them. Walks back from the newest: cheap for recent
    /// history, which is what statements read.
    pub fn account_transfers(&self, account_id: u128, after_timestamp: u64, limit: usize) -> Vec<Transfer> {
        let mut newer: Vec<Transfer> = self
            .history(account_id, self.last_transfer_of(account_id))
            .take_while(|transfer| transfer.timestamp > after_timestamp)
            .collect();
        newer.reverse();
        newer.truncate(limit);
        newer
    }

    /// An account's transfers newest first, starting after (older than) the
    /// transfer `before_id` (`None`: from the newest), at most `limit`.
    pub fn account_transfers_newest_first(
        &self,
        account_id: u128,
        before_id: Option<u128>,
        limit: usize,
    ) -> Vec<Transfer> {
        let start = match before_id {
            None => self.last_transfer_of(account_id),
            Some(id) => match self.transfers.position_of(id).and_then(|p| self.transfers.get(p)) {
                Some(stored) => {
                    let involved = stored.transfer.debit_account_id == account_id
                        || stored.transfer.credit_account_id == account_id;
                    if involved { stored.previous_of(account_id) } else { NO_TRANSFER }
                }
                None => NO_TRANSFER,
            },
        };
        self.history(account_id, start).take(limit).collect()
    }

    /// The position of an account's newest transfer (`NO_TRANSFER`: none).
    pub fn last_transfer_of(&self, account_id: u128) -> u64 {
        match self.account_index.get(account_id, &self.accounts) {
            Some(index) => self.account_last_transfer[index as usize],
            None => NO_TRANSFER,
        }
    }

    /// An account's transfers from the one at `start` back to its first,
    /// or to the oldest one still in memory.
    fn history(&self, account_id: u128, start: u64) -> impl Iterator<Item = Transfer> + '_ {
        let mut next = start;
        std::iter::from_fn(move || {
            let stored = self.transfers.get(next)?;
            next = stored.previous_of(account_id);
            Some(stored.transfer)
        })
    }

    /// The stored transfer at `position`, if it is in memory.
    pub fn stored_transfer(&self, position: u64) -> Option<&StoredTransfer> {
        self.transfers.get(position)
    }

    /// The stored transfers in memory from `position` on, oldest first.
    pub fn stored_transfers_from(&self, position: u64) -> impl Iterator<Item = &StoredTransfer> + '_ {
        self.transfers.iter_from(position)
    }

    /// Transfers ever stored: the position the next one will get.
    pub fn transfer_count(&self) -> u64 {
        self.transfers.len()
    }

    /// The oldest position still in memory.
    pub fn first_position_in_memory(&self) -> u64 {
        self.transfers.first()
    }

    /// Keeps transfers from `position` on in memory until the floor moves
    /// (see the field). Not part of the ledger's state: it changes only what
    /// is cached, never a result.
    pub fn set_eviction_floor(&mut self, position: u64) {
        self.eviction_floor = Some(position);
    }

    /// Drops from memory the chunks of transfers applied before `cutoff`;
    /// resolved pending transfers among them are forgotten, open ones keep
    /// their entry (which holds a copy of the transfer).
    fn evict_older_than(&mut self, cutoff: u64) {
        let pending = &mut self.pending;
        let floor = self.eviction_floor.unwrap_or(u64::MAX);
        while self.transfers.evict_oldest_chunk(cutoff, floor, |transfer| {
            if transfer.flags.contains(TransferFlags::PENDING)
                && pending.get(&transfer.id).is_some_and(|entry| entry.status != PendingStatus::Pending)
            {
                pending.remove(&transfer.id);
            }
        }) {}
    }

    /// All accounts, in creation order.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// All accounts in creation order, each with the position of its newest
    /// transfer (`NO_TRANSFER`: none): what a snapshot writes of each. Read
    /// side by side, not looked up by id: with tens of millions of accounts
    /// a lookup each missed the cache and was a third of a snapshot's time.
    pub fn accounts_with_last_transfer(&self) -> impl ExactSizeIterator<Item = (&Account, u64)> + '_ {
        assert_eq!(self.accounts.len(), self.account_last_transfer.len(), "an account without its last transfer");
        self.accounts.iter().zip(self.account_last_transfer.iter().copied())
    }

    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            accounts: self.accounts.len() as u64,
            transfers: self.transfers.len(),
            pending_open: self.pending.values().filter(|entry| entry.status == PendingStatus::Pending).count() as u64,
        }
    }

    /// Bytes the ledger has allocated (capacity, not just what is used):
    /// what a deployment must provision for its accounts and transfers.
    pub fn memory_bytes(&self) -> usize {
        // A hash-table entry: key, value, one control byte.
        let pending_entry = size_of::<(u128, PendingEntry)>() + 1;
        let expiry_entry = size_of::<(u64, u128)>();
        self.accounts.capacity() * size_of::<Account>()
            + self.account_index.memory_bytes()
            + self.account_last_transfer.capacity() * size_of::<u64>()
            + self.transfers.memory_bytes()
            + self.pending.capacity() * pending_entry
            + self.expiries.len() * expiry_entry
    }

    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    /// Every pending transfer's record, ordered by id (deterministic), made
    /// one at a time: only the ids are sorted, 16 bytes a transfer where
    /// whole records took 160 (half a GiB at a snapshot of a full day's
    /// open escrow, on top of the state).
    pub fn pending_records(&self) -> impl ExactSizeIterator<Item = PendingRecord> + '_ {
        let mut ids: Vec<u128> = self.pending.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| {
            let entry = self.pending.get(&id);
            let entry = entry.unwrap_or_else(|| unreachable!("pending transfer {id} was listed a moment ago"));
            PendingRecord {
                id,
                status: entry.status,
                expires_at: entry.expires_at,
                transfer: entry.transfer(id, &self.accounts),
            }
        })
    }

    pub(crate) fn set_last_timestamp(&mut self, timestamp: u64) {
        self.last_timestamp = timestamp;
    }

    pub(crate) fn restore_account(&mut self, account: Account, last_transfer: u64) -> Result<(), ImageError> {
        if account.id == 0 || account.id == u128::MAX {
            return Err(ImageError::InvalidId { id: account.id });
        }
        if self.account_index.get(account.id, &self.accounts).is_some() {
            return Err(ImageError::DuplicateAccount { id: account.id });
        }
        let index = u32::try_from(self.accounts.len()).expect("fewer than 2^32 accounts");
        self.account_index.insert(account.id, index, &self.accounts);
        self.accounts.push(account);
        self.account_last_transfer.push(last_transfer);
        Ok(())
    }

    pub(crate) fn restore_stored(&mut self, stored: StoredTransfer) -> Result<(), ImageError> {
        let transfer = stored.transfer;
        if transfer.id == 0 || transfer.id == u128::MAX {
            return Err(ImageError::InvalidId { id: transfer.id });
        }
        if self.transfers.position_of(transfer.id).is_some() {
            return Err(ImageError::DuplicateTransfer { id: transfer.id });
        }
        for account_id in [transfer.debit_account_id, transfer.credit_account_id] {
            if self.account_index.get(account_id, &self.accounts).is_none() {
                return Err(ImageError::TransferAccountMissing { transfer_id: transfer.id, account_id });
            }
        }
        self.transfers.push(stored);
        Ok(())
    }

    pub(crate) fn restore_pending(&mut self, record: PendingRecord) -> Result<(), ImageError> {
        let transfer = record.transfer;
        if transfer.id != record.id || !transfer.flags.contains(TransferFlags::PENDING) || transfer.pending_id != 0 {
            return Err(ImageError::PendingTransferMissing { id: record.id });
        }
        let index_of = |account_id| {
            self.account_index
                .get(account_id, &self.accounts)
                .ok_or(ImageError::TransferAccountMissing { transfer_id: record.id, account_id })
        };
        let (debit_index, credit_index) = (index_of(transfer.debit_account_id)?, index_of(transfer.credit_account_id)?);
        let entry = PendingEntry {
            status: record.status,
            ..PendingEntry::open(&transfer, debit_index, credit_index, record.expires_at)
        };
        self.pending.insert(record.id, entry);
        if record.status == PendingStatus::Pending && record.expires_at != 0 {
            self.expiries.insert((record.expires_at, record.id));
        }
        Ok(())
    }

    /// A ledger whose transfer window starts at `first_position`.
    pub(crate) fn empty_for_image(
        config: LedgerConfig,
        accounts: usize,
        first_position: u64,
        transfers: usize,
    ) -> Ledger {
        Ledger {
            config,
            accounts: Vec::with_capacity(accounts),
            account_index: AccountIndex::with_capacity(accounts),
            account_last_transfer: Vec::with_capacity(accounts),
            transfers: TransferStore::starting_at(first_position, transfers),
            ..Ledger::default()
        }
    }

    /// Event timestamps strictly increase even if the caller's clock does not,
    /// so that every stored object has a unique, ordered timestamp.
    /// A batch whose timestamps would pass `u64::MAX` is refused whole.
    fn reserve_timestamps(&mut self, timestamp: u64, count: usize) -> Result<u64, BatchError> {
        let overflow = BatchError::TimestampOverflow { timestamp };
        let first = timestamp.max(self.last_timestamp.checked_add(1).ok_or(overflow)?);
        if count > 0 {
            self.last_timestamp = first.checked_add(count as u64 - 1).ok_or(overflow)?;
        }
        Ok(first)
    }

    /// Ids are checked for existence and pending ids looked up: bring both
    /// index slots into cache ahead of use.
    fn warm_transfer_ids(&self, events: &[Transfer]) {
        let ids = events.iter().flat_map(|event| [event.id, event.pending_id]).filter(|&id| id != 0 && id != u128::MAX);
        self.transfers.warm(ids);
        // The accounts too: with millions of them (a fund's holders) each
        // lookup misses the cache; independent lookups in a row overlap.
        // Their index slots first, then the lookups, which read the account
        // (its id is checked there).
        let account_ids = || events.iter().flat_map(|event| [event.debit_account_id, event.credit_account_id]);
        self.account_index.warm(account_ids());
        let found = account_ids().filter_map(|id| self.account_index.get(id, &self.accounts)).fold(0, |a, b| a ^ b);
        std::hint::black_box(found);
    }

    /// Applies events one by one; a run of events joined by the linked flag
    /// is a chain that is undone as a whole if any of its events fails.
    fn apply_chains<E, R: ChainResult>(
        &mut self,
        events: &[E],
        timestamp_first: u64,
        is_linked: impl Fn(&E) -> bool,
        warm: impl Fn(&Ledger, &[E]),
        execute: impl Fn(&mut Ledger, &E, u64) -> R,
    ) -> Vec<R> {
        debug_assert!(self.undo.is_empty());
        let mut results = vec![R::OK; events.len()];
        let mut chain_start: Option<usize> = None;
        let mut chain_failed = false;
        for (index, event) in events.iter().enumerate() {
            if index % WARM_WINDOW_EVENTS == 0 {
                let window_end = (index + WARM_WINDOW_EVENTS).min(events.len());
                warm(self, &events[index..window_end]);
            }
            let linked = is_linked(event);
            if linked && chain_start.is_none() {
                chain_start = Some(index);
            }
            if linked && index + 1 == events.len() {
                // The chain never closes: nothing of it may apply.
                results[index] = R::LINKED_EVENT_CHAIN_OPEN;
                if let Some(start) = chain_start.filter(|_| !chain_failed) {
                    self.rollback_chain();
                    results[start..index].fill(R::LINKED_EVENT_FAILED);
                }
                break;
            }
            if chain_failed {
                results[index] = R::LINKED_EVENT_FAILED;
            } else {
                let timestamp = timestamp_first + index as u64;
                let result = execute(self, event, timestamp);
                results[index] = result;
                if !result.keeps_chain()
                    && let Some(start) = chain_start
                {
                    chain_failed = true;
                    self.rollback_chain();
                    results[start..index].fill(R::LINKED_EVENT_FAILED);
                }
            }
            if !linked {
                chain_start = None;
                chain_failed = false;
                self.undo.clear();
            }
        }
        self.undo.clear();
        results
    }

    fn rollback_chain(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::AccountCreated => {
                    let id = self.accounts.last().expect("undo: account was created").id;
                    self.account_index.remove(id, &self.accounts);
                    self.accounts.pop();
                    self.account_last_transfer.pop();
                }
                Undo::AccountBalances { index, balances } => {
                    self.accounts[index as usize].restore(balances);
                }
                Undo::TransferInserted => {
                    let stored = self.transfers.pop().expect("undo: transfer was inserted");
                    let index_of =
                        |id| self.account_index.get(id, &self.accounts).expect("undo: a transfer's accounts");
                    let debit_index = index_of(stored.transfer.debit_account_id);
                    let credit_index = index_of(stored.transfer.credit_account_id);
                    self.account_last_transfer[debit_index as usize] = stored.previous_of_debit;
                    self.account_last_transfer[credit_index as usize] = stored.previous_of_credit;
                }
                Undo::PendingInserted { id } => {
                    let entry = self.pending.remove(&id).expect("undo: pending was inserted");
                    self.expiries.remove(&(entry.expires_at, id));
                }
                Undo::PendingResolved { id, previous } => {
                    let entry = self.pending.get_mut(&id).expect("undo: a resolved transfer has its entry");
                    entry.status = previous;
                    if entry.expires_at != 0 {
                        self.expiries.insert((entry.expires_at, id));
                    }
                }
            }
        }
    }

    fn create_account(&mut self, event: &NewAccount, timestamp: u64) -> CreateAccountResult {
        use CreateAccountResult as R;
        if event.id == 0 {
            return R::IdMustNotBeZero;
        }
        if event.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if event
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            return R::FlagsAreMutuallyExclusive;
        }
        if event.flags.contains(AccountFlags::CLOSED) {
            return R::ClosedFlagIsSetByTransfers;
        }
        if event.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if event.code == 0 {
            return R::CodeMustNotBeZero;
        }
        if let Some(existing) = self.account(event.id) {
            return account_exists(event, existing);
        }
        let index = u32::try_from(self.accounts.len()).expect("fewer than 2^32 accounts");
        self.account_index.insert(event.id, index, &self.accounts);
        self.accounts.push(Account::new(event, timestamp));
        self.account_last_transfer.push(NO_TRANSFER);
        self.undo.push(Undo::AccountCreated);
        R::Ok
    }

    fn create_transfer(&mut self, event: &Transfer, timestamp: u64) -> CreateTransferResult {
        use CreateTransferResult as R;
        if event.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if event.id == 0 {
            return R::IdMustNotBeZero;
        }
        if event.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if let Some(horizon) = self.config.id_horizon_ns {
            let id_time = (event.id >> 64) as u64;
            if id_time > timestamp {
                return R::IdTimeInTheFuture;
            }
            if id_time.saturating_add(horizon) < timestamp {
                return R::IdExpired;
            }
        }
        if flags_are_mutually_exclusive(event.flags) {
            return R::FlagsAreMutuallyExclusive;
        }
        if event.flags.is_closing() && !event.flags.contains(TransferFlags::PENDING) {
            return R::ClosingTransferMustBePending;
        }
        if event.flags.is_post_or_void() {
            return self.post_or_void_pending(event, timestamp);
        }
        if let Some(existing) = self.transfer(event.id) {
            return transfer_exists(event, existing);
        }
        if let Err(result) = validate_new_transfer_fields(event) {
            return result;
        }
        let Some(debit_index) = self.account_index.get(event.debit_account_id, &self.accounts) else {
            return R::DebitAccountNotFound;
        };
        let Some(credit_index) = self.account_index.get(event.credit_account_id, &self.accounts) else {
            return R::CreditAccountNotFound;
        };
        let debit = self.accounts[debit_index as usize];
        let credit = self.accounts[credit_index as usize];
        if debit.ledger != credit.ledger {
            return R::AccountsMustHaveTheSameLedger;
        }
        if event.ledger != debit.ledger {
            return R::TransferMustHaveTheSameLedgerAsAccounts;
        }
        if debit.is_closed() {
            return R::DebitAccountAlreadyClosed;
        }
        if credit.is_closed() {
            return R::CreditAccountAlreadyClosed;
        }
        let amount = balanced_amount(event, &debit, &credit);
        let pending = event.flags.contains(TransferFlags::PENDING);
        if let Err(result) = check_new_transfer_balances(pending, amount, &debit, &credit) {
            return result;
        }
        let expires_at = match pending_expiry(event, timestamp) {
            Ok(expires_at) => expires_at,
            Err(result) => return result,
        };

        self.save_balances(debit_index);
        self.save_balances(credit_index);
        {
            let debit = &mut self.accounts[debit_index as usize];
            if pending {
                add(&mut debit.debits_pending, amount, "debits pending");
            } else {
                add(&mut debit.debits_posted, amount, "debits posted");
            }
            if event.flags.contains(TransferFlags::CLOSING_DEBIT) {
                debit.flags |= AccountFlags::CLOSED;
            }
        }
        {
            let credit = &mut self.accounts[credit_index as usize];
            if pending {
                add(&mut credit.credits_pending, amount, "credits pending");
            } else {
                add(&mut credit.credits_posted, amount, "credits posted");
            }
            if event.flags.contains(TransferFlags::CLOSING_CREDIT) {
                credit.flags |= AccountFlags::CLOSED;
            }
        }
        if pending {
            let entry =
                PendingEntry::open(&Transfer { amount, timestamp, ..*event }, debit_index, credit_index, expires_at);
            self.pending.insert(event.id, entry);
            if expires_at != 0 {
                self.expiries.insert((expires_at, event.id));
            }
            self.undo.push(Undo::PendingInserted { id: event.id });
        }
        let stored = Transfer { amount, timestamp, ..*event };
        self.insert_transfer(stored, debit_index, credit_index);
        R::Ok
    }

    fn post_or_void_pending(&mut self, event: &Transfer, timestamp: u64) -> CreateTransferResult {
        use CreateTransferResult as R;
        let post = event.flags.contains(TransferFlags::POST_PENDING);
        if event.pending_id == 0 {
            return R::PendingIdMustNotBeZero;
        }
        if event.pending_id == u128::MAX {
            return R::PendingIdMustNotBeIntMax;
        }
        if event.pending_id == event.id {
            return R::PendingIdMustBeDifferent;
        }
        if event.timeout_seconds != 0 {
            return R::TimeoutReservedForPendingTransfer;
        }
        if let Some(existing) = self.transfer(event.id) {
            return resolution_exists(event, existing);
        }
        let (pending, debit_index, credit_index) = match self.pending.get(&event.pending_id) {
            Some(entry) => (entry.transfer(event.pending_id, &self.accounts), entry.debit_index, entry.credit_index),
            None if self.transfer(event.pending_id).is_some() => {
                return R::PendingTransferNotPending;
            }
            None => return R::PendingTransferNotFound,
        };
        if let Err(result) = check_resolution_matches(event, &pending) {
            return result;
        }
        let amount = if post {
            match event.amount {
                AMOUNT_PENDING_WHOLE => pending.amount,
                0 => return R::AmountMustNotBeZero,
                amount if amount > pending.amount => return R::ExceedsPendingTransferAmount,
                amount => amount,
            }
        } else {
            if event.amount != 0 && event.amount != pending.amount {
                return R::PendingTransferHasDifferentAmount;
            }
            pending.amount
        };
        let entry = self.pending[&pending.id];
        match entry.status {
            PendingStatus::Pending => {}
            PendingStatus::Posted => return R::PendingTransferAlreadyPosted,
            PendingStatus::Voided => return R::PendingTransferAlreadyVoided,
            PendingStatus::Expired => return R::PendingTransferExpired,
        }
        let debit = self.accounts[debit_index as usize];
        let credit = self.accounts[credit_index as usize];
        if post {
            // A closed account takes no new postings, except the closing
            // transfer itself (posting it keeps the account closed).
            if debit.is_closed() && !pending.flags.contains(TransferFlags::CLOSING_DEBIT) {
                return R::DebitAccountAlreadyClosed;
            }
            if credit.is_closed() && !pending.flags.contains(TransferFlags::CLOSING_CREDIT) {
                return R::CreditAccountAlreadyClosed;
            }
            if debit.debits_posted.checked_add(amount).is_none() {
                return R::OverflowsDebitsPosted;
            }
            if credit.credits_posted.checked_add(amount).is_none() {
                return R::OverflowsCreditsPosted;
            }
        }

        self.save_balances(debit_index);
        self.save_balances(credit_index);
        let reopen = !post;
        {
            let debit = &mut self.accounts[debit_index as usize];
            subtract(&mut debit.debits_pending, pending.amount, "debits pending");
            if post {
                add(&mut debit.debits_posted, amount, "debits posted");
            }
            if reopen && pending.flags.contains(TransferFlags::CLOSING_DEBIT) {
                debit.flags -= AccountFlags::CLOSED;
            }
        }
        {
            let credit = &mut self.accounts[credit_index as usize];
            subtract(&mut credit.credits_pending, pending.amount, "credits pending");
            if post {
                add(&mut credit.credits_posted, amount, "credits posted");
            }
            if reopen && pending.flags.contains(TransferFlags::CLOSING_CREDIT) {
                credit.flags -= AccountFlags::CLOSED;
            }
        }
        let status = if post { PendingStatus::Posted } else { PendingStatus::Voided };
        self.resolve_pending(pending.id, status);
        let stored = Transfer {
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount,
            ledger: pending.ledger,
            code: pending.code,
            timestamp,
            ..*event
        };
        self.insert_transfer(stored, debit_index, credit_index);
        R::Ok
    }

    fn release_expired(&mut self, id: u128) {
        let hold = *self.pending.get(&id).expect("an expiring transfer has a pending entry");
        let debit = &mut self.accounts[hold.debit_index as usize];
        subtract(&mut debit.debits_pending, hold.amount, "debits pending");
        if hold.flags.contains(TransferFlags::CLOSING_DEBIT) {
            debit.flags -= AccountFlags::CLOSED;
        }
        let credit = &mut self.accounts[hold.credit_index as usize];
        subtract(&mut credit.credits_pending, hold.amount, "credits pending");
        if hold.flags.contains(TransferFlags::CLOSING_CREDIT) {
            credit.flags -= AccountFlags::CLOSED;
        }
        let entry = self.pending.get_mut(&id).expect("an expiring transfer has a pending entry");
        assert_eq!(entry.status, PendingStatus::Pending, "only open holds expire");
        entry.status = PendingStatus::Expired;
    }

    fn resolve_pending(&mut self, id: u128, status: PendingStatus) {
        let entry = self.pending.get_mut(&id).expect("a resolved transfer has a pending entry");
        let previous = entry.status;
        entry.status = status;
        if entry.expires_at != 0 {
            self.expiries.remove(&(entry.expires_at, id));
        }
        self.undo.push(Undo::PendingResolved { id, previous });
    }

    fn save_balances(&mut self, index: u32) {
        let balances = self.accounts[index as usize].balances();
        self.undo.push(Undo::AccountBalances { index, balances });
    }

    fn insert_transfer(&mut self, transfer: Transfer, debit_index: u32, credit_index: u32) {
        let stored = StoredTransfer {
            transfer,
            previous_of_debit: self.account_last_transfer[debit_index as usize],
            previous_of_credit: self.account_last_transfer[credit_index as usize],
        };
        let index = self.transfers.push(stored);
        self.account_last_transfer[debit_index as usize] = index;
        self.account_last_transfer[credit_index as usize] = index;
        self.undo.push(Undo::TransferInserted);
    }
}

fn check_batch_size(count: usize) -> Result<(), BatchError> {
    if count > BATCH_EVENTS_MAX {
        return Err(BatchError::TooManyEvents { count });
    }
    Ok(())
}

fn flags_are_mutually_exclusive(flags: TransferFlags) -> bool {
    let phases = [TransferFlags::PENDING, TransferFlags::POST_PENDING, TransferFlags::VOID_PENDING]
        .iter()
        .filter(|&&phase| flags.contains(phase))
        .count();
    phases > 1 || (flags.is_balancing() && flags.is_post_or_void())
}

fn account_exists(event: &NewAccount, existing: &Account) -> CreateAccountResult {
    use CreateAccountResult as R;
    // The stored flags may have gained CLOSED since; compare what was asked.
    let stored_flags = existing.flags - AccountFlags::CLOSED;
    if event.flags - AccountFlags::LINKED != stored_flags {
        return R::ExistsWithDifferentFlags;
    }
    if event.user_data != existing.user_data {
        return R::ExistsWithDifferentUserData;
    }
    if event.ledger != existing.ledger {
        return R::ExistsWithDifferentLedger;
    }
    if event.code != existing.code {
        return R::ExistsWithDifferentCode;
    }
    R::Exists
}

/// Compares a new, non-resolving transfer with the stored one of the same id.
fn transfer_exists(event: &Transfer, existing: &Transfer) -> CreateTransferResult {
    use CreateTransferResult as R;
    if event.flags != existing.flags {
        return R::ExistsWithDifferentFlags;
    }
    if event.debit_account_id != existing.debit_account_id {
        return R::ExistsWithDifferentDebitAccountId;
    }
    if event.credit_account_id != existing.credit_account_id {
        return R::ExistsWithDifferentCreditAccountId;
    }
    // A balancing transfer stores what actually moved, at most what was asked.
    let amount_differs =
        if event.flags.is_balancing() { event.amount < existing.amount } else { event.amount != existing.amount };
    if amount_differs {
        return R::ExistsWithDifferentAmount;
    }
    if event.pending_id != existing.pending_id {
        return R::ExistsWithDifferentPendingId;
    }
    if event.user_data != existing.user_data {
        return R::ExistsWithDifferentUserData;
    }
    if event.timeout_seconds != existing.timeout_seconds {
        return R::ExistsWithDifferentTimeout;
    }
    if event.ledger != existing.ledger {
        return R::ExistsWithDifferentLedger;
    }
    if event.code != existing.code {
        return R::ExistsWithDifferentCode;
    }
    R::Exists
}

/// Compares a post or void with the stored transfer of the same id; fields a
/// resolution may leave 0 (accounts, ledger, code) match anything.
fn resolution_exists(event: &Transfer, existing: &Transfer) -> CreateTransferResult {
    use CreateTransferResult as R;
    if event.flags != existing.flags {
        return R::ExistsWithDifferentFlags;
    }
    if event.pending_id != existing.pending_id {
        return R::ExistsWithDifferentPendingId;
    }
    if event.debit_account_id != 0 && event.debit_account_id != existing.debit_account_id {
        return R::ExistsWithDifferentDebitAccountId;
    }
    if event.credit_account_id != 0 && event.credit_account_id != existing.credit_account_id {
        return R::ExistsWithDifferentCreditAccountId;
    }
    let amount_matches = if event.flags.contains(TransferFlags::POST_PENDING) {
        event.amount == AMOUNT_PENDING_WHOLE || event.amount == existing.amount
    } else {
        event.amount == 0 || event.amount == existing.amount
    };
    if !amount_matches {
        return R::ExistsWithDifferentAmount;
    }
    if event.user_data != existing.user_data {
        return R::ExistsWithDifferentUserData;
    }
    if event.ledger != 0 && event.ledger != existing.ledger {
        return R::ExistsWithDifferentLedger;
    }
    if event.code != 0 && event.code != existing.code {
        return R::ExistsWithDifferentCode;
    }
    R::Exists
}

fn validate_new_transfer_fields(event: &Transfer) -> Result<(), CreateTransferResult> {
    use CreateTransferResult as R;
    if event.debit_account_id == 0 {
        return Err(R::DebitAccountIdMustNotBeZero);
    }
    if event.credit_account_id == 0 {
        return Err(R::CreditAccountIdMustNotBeZero);
    }
    if event.debit_account_id == event.credit_account_id {
        return Err(R::AccountsMustBeDifferent);
    }
    if event.pending_id != 0 {
        return Err(R::PendingIdMustBeZero);
    }
    if event.timeout_seconds != 0 && !event.flags.contains(TransferFlags::PENDING) {
        return Err(R::TimeoutReservedForPendingTransfer);
    }
    if event.ledger == 0 {
        return Err(R::LedgerMustNotBeZero);
    }
    if event.code == 0 {
        return Err(R::CodeMustNotBeZero);
    }
    if event.amount == 0 && !event.flags.is_balancing() {
        return Err(R::AmountMustNotBeZero);
    }
    Ok(())
}

fn check_resolution_matches(event: &Transfer, pending: &Transfer) -> Result<(), CreateTransferResult> {
    use CreateTransferResult as R;
    if event.debit_account_id != 0 && event.debit_account_id != pending.debit_account_id {
        return Err(R::PendingTransferHasDifferentDebitAccountId);
    }
    if event.credit_account_id != 0 && event.credit_account_id != pending.credit_account_id {
        return Err(R::PendingTransferHasDifferentCreditAccountId);
    }
    if event.ledger != 0 && event.ledger != pending.ledger {
        return Err(R::PendingTransferHasDifferentLedger);
    }
    if event.code != 0 && event.code != pending.code {
        return Err(R::PendingTransferHasDifferentCode);
    }
    Ok(())
}

/// The amount a transfer moves: as asked, or for a balancing transfer at most
/// what the limited side can take.
fn balanced_amount(event: &Transfer, debit: &Account, credit: &Account) -> Amount {
    let mut amount = event.amount;
    if event.flags.contains(TransferFlags::BALANCING_DEBIT) {
        amount = amount.min(debit.debit_headroom());
    }
    if event.flags.contains(TransferFlags::BALANCING_CREDIT) {
        amount = amount.min(credit.credit_headroom());
    }
    amount
}

fn check_new_transfer_balances(
    pending: bool,
    amount: Amount,
    debit: &Account,
    credit: &Account,
) -> Result<(), CreateTransferResult> {
    use CreateTransferResult as R;
    if pending {
        if debit.debits_pending.checked_add(amount).is_none() {
            return Err(R::OverflowsDebitsPending);
        }
        if credit.credits_pending.checked_add(amount).is_none() {
            return Err(R::OverflowsCreditsPending);
        }
    } else {
        if debit.debits_posted.checked_add(amount).is_none() {
            return Err(R::OverflowsDebitsPosted);
        }
        if credit.credits_posted.checked_add(amount).is_none() {
            return Err(R::OverflowsCreditsPosted);
        }
    }
    let debits_total =
        debit.debits_pending.checked_add(debit.debits_posted).and_then(|total| total.checked_add(amount));
    let Some(debits_total) = debits_total else {
        return Err(R::OverflowsDebits);
    };
    let credits_total =
        credit.credits_pending.checked_add(credit.credits_posted).and_then(|total| total.checked_add(amount));
    let Some(credits_total) = credits_total else {
        return Err(R::OverflowsCredits);
    };
    if debit.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) && debits_total > debit.credits_posted {
        return Err(R::ExceedsCredits);
    }
    if credit.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) && credits_total > credit.debits_posted {
        return Err(R::ExceedsDebits);
    }
    Ok(())
}

/// When a pending transfer's hold is released: 0 for never.
fn pending_expiry(event: &Transfer, timestamp: u64) -> Result<u64, CreateTransferResult> {
    if event.timeout_seconds == 0 {
        return Ok(0);
    }
    u64::from(event.timeout_seconds)
        .checked_mul(NANOS_PER_SECOND)
        .and_then(|timeout| timestamp.checked_add(timeout))
        .ok_or(CreateTransferResult::OverflowsTimeout)
}

/// Adds to a balance that the checks before it showed has room: an
/// overflow here is a broken invariant (the checks and the change
/// disagree), and carrying on with a wrapped balance would create money.
#[allow(clippy::panic)]
fn add(balance: &mut u128, amount: u128, what: &str) {
    *balance = balance
        .checked_add(amount)
        .unwrap_or_else(|| panic!("broken invariant: {what} {balance} cannot take {amount} more"));
}

/// Takes from a balance that holds at least `amount` (a hold's amount is in
/// its pending balances until it is posted, voided or expired).
#[allow(clippy::panic)]
fn subtract(balance: &mut u128, amount: u128, what: &str) {
    *balance = balance
        .checked_sub(amount)
        .unwrap_or_else(|| panic!("broken invariant: {what} {balance} hold less than the {amount} released"));
}
