//! zhifu's durability: batches become durable in a write-ahead log before the
//! ledger applies them, and the ledger is rebuilt from snapshot and log.
//!
//! Layout:
//! - [`codec`]: the byte layout of batches and ledger images.
//! - `wal`: segment files of checksummed records; torn-tail handling.
//! - `snapshot`: whole-ledger snapshots written atomically.
//! - [`journal`]: [`Journal`], a data directory's lock, recovery, appends, snapshots.
//! - [`DurableLedger`]: the one writer thread with group commit, which the
//!   rest of zhifu submits batches to.
//!
//! The ledger stays the single writer of state; this crate only decides when
//! a batch is durable. A PostgreSQL backend would implement the same
//! contract (append a group of batches durably, load what was appended).

pub mod codec;
mod error;
mod history;
pub mod journal;
mod snapshot;
mod wal;

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

use ledger::{BATCH_EVENTS_MAX, BatchError, CreateAccountResult, CreateTransferResult, Ledger};

pub use codec::{Batch, Command};
pub use error::JournalError;
pub use history::HistoryReader;
pub use journal::{Journal, Options, RecoveryReport};

/// The answer to one batch, given once it is durable and applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accounts(Vec<CreateAccountResult>),
    Transfers(Vec<CreateTransferResult>),
    /// Refused whole before it was logged (too many events).
    Refused(BatchError),
}

/// Counters of the writer, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub batches: u64,
    pub groups: u64,
    pub snapshots: u64,
    /// The slowest append (write + fdatasync) so far, and the slowest apply.
    pub append_us_max: u64,
    pub apply_us_max: u64,
}

struct Request {
    batch: Batch,
    reply: SyncSender<Result<Outcome, JournalError>>,
}

/// A ledger made durable by a journal. Any thread may submit; one writer
/// thread gathers what is waiting into a group, appends it with one
/// fdatasync, applies it, and answers each submitter.
pub struct DurableLedger {
    sender: Option<SyncSender<Request>>,
    ledger: Arc<RwLock<Ledger>>,
    stats: Arc<RwLock<WriterStats>>,
    writer: Option<JoinHandle<()>>,
    history: HistoryReader,
}

impl DurableLedger {
    pub fn open(
        directory: &std::path::Path,
        options: Options,
    ) -> Result<(DurableLedger, RecoveryReport), JournalError> {
        let queue = options.queue_batches_max;
        let (journal, ledger, report) = Journal::open(directory, options)?;
        let history = journal.history_reader()?;
        let ledger = Arc::new(RwLock::new(ledger));
        let stats = Arc::new(RwLock::new(WriterStats::default()));
        let (sender, receiver) = sync_channel(queue);
        let writer_ledger = Arc::clone(&ledger);
        let writer_stats = Arc::clone(&stats);
        let writer = std::thread::Builder::new()
            .name("journal-writer".to_string())
            .spawn(move || write_loop(journal, &writer_ledger, &writer_stats, &receiver))
            .map_err(|source| JournalError::Io {
                action: "start writer thread for",
                path: directory.to_path_buf(),
                source,
            })?;
        Ok((
            DurableLedger {
                sender: Some(sender),
                ledger,
                stats,
                writer: Some(writer),
                history,
            },
            report,
        ))
    }

    /// Submits a batch and waits until it is durable and applied.
    pub fn submit(&self, batch: Batch) -> Result<Outcome, JournalError> {
        let sender = self.sender.as_ref().ok_or(JournalError::Closed)?;
        let (reply, answer) = sync_channel(1);
        sender
            .send(Request { batch, reply })
            .map_err(|_| JournalError::Closed)?;
        answer.recv().map_err(|_| JournalError::Closed)?
    }

    /// Reads the ledger (between batches: never a half-applied one).
    pub fn read<R>(&self, read: impl FnOnce(&Ledger) -> R) -> R {
        let ledger = self.ledger.read().unwrap_or_else(PoisonError::into_inner);
        read(&ledger)
    }

    /// The transfer at `position` (its place among all transfers ever
    /// applied): from memory if it is still there, else from the history file.
    pub fn stored_transfer(
        &self,
        position: u64,
    ) -> Result<Option<ledger::StoredTransfer>, JournalError> {
        let (in_memory, count) = self.read(|ledger| {
            (
                ledger.stored_transfer(position).copied(),
                ledger.transfer_count(),
            )
        });
        match in_memory {
            Some(stored) => Ok(Some(stored)),
            None if position < count => self.history.read(position).map(Some),
            None => Ok(None),
        }
    }

    /// An account's transfers, newest first, from memory and then from the
    /// history file: at most `limit`, older than position `before` (`None`:
    /// from the newest). Each with its position, the cursor for the next page.
    pub fn account_history(
        &self,
        account_id: u128,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, ledger::Transfer)>, JournalError> {
        let mut next = match before {
            None => self.read(|ledger| ledger.last_transfer_of(account_id)),
            Some(position) => match self.stored_transfer(position)? {
                Some(stored) if involves(&stored.transfer, account_id) => {
                    stored.previous_of(account_id)
                }
                _ => ledger::NO_TRANSFER,
            },
        };
        let mut found = Vec::new();
        while next != ledger::NO_TRANSFER && found.len() < limit {
            let Some(stored) = self.stored_transfer(next)? else {
                break;
            };
            if !involves(&stored.transfer, account_id) {
                break;
            }
            found.push((next, stored.transfer));
            next = stored.previous_of(account_id);
        }
        Ok(found)
    }

    pub fn stats(&self) -> WriterStats {
        *self.stats.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Finishes every batch already submitted, then stops the writer.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.sender = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for DurableLedger {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_loop(
    mut journal: Journal,
    ledger: &RwLock<Ledger>,
    stats: &RwLock<WriterStats>,
    receiver: &Receiver<Request>,
) {
    let group_max = journal.options().group_batches_max.max(1);
    let mut failure: Option<String> = None;
    let mut group: Vec<Request> = Vec::with_capacity(group_max);
    while let Ok(first) = receiver.recv() {
        group.clear();
        group.push(first);
        while group.len() < group_max {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        if let Some(reason) = &failure {
            for request in group.drain(..) {
                let _ = request
                    .reply
                    .send(Err(JournalError::Failed(reason.clone())));
            }
            continue;
        }
        // Oversized batches are refused before they reach the log.
        let (loggable, refused): (Vec<Request>, Vec<Request>) = group
            .drain(..)
            .partition(|r| batch_len(&r.batch) <= BATCH_EVENTS_MAX);
        for request in refused {
            let count = batch_len(&request.batch);
            let _ = request
                .reply
                .send(Ok(Outcome::Refused(BatchError::TooManyEvents { count })));
        }
        if loggable.is_empty() {
            continue;
        }
        let batches: Vec<&Batch> = loggable.iter().map(|r| &r.batch).collect();
        let append_started = std::time::Instant::now();
        let appended = journal.append(&batches);
        let append_us = append_started.elapsed().as_micros() as u64;
        if let Err(error) = appended {
            let reason = error.to_string();
            for request in loggable {
                let _ = request
                    .reply
                    .send(Err(JournalError::Failed(reason.clone())));
            }
            failure = Some(reason);
            continue;
        }
        let apply_started = std::time::Instant::now();
        let mut state = ledger.write().unwrap_or_else(PoisonError::into_inner);
        let mut history_failure = None;
        for request in &loggable {
            let outcome = journal::apply(&mut state, &request.batch);
            if let Err(error) = journal.collect_history(&state) {
                history_failure = Some(error.to_string());
            }
            let _ = request.reply.send(Ok(outcome));
        }
        if let Err(error) = journal.write_history() {
            history_failure = Some(error.to_string());
        }
        if let Some(reason) = history_failure {
            // Every batch is still in the log; stop before a snapshot could
            // let the log go while the history is not on disk.
            eprintln!("zhifu journal: history file failed, no more writes: {reason}");
            failure = Some(reason);
            continue;
        }
        let apply_us = apply_started.elapsed().as_micros() as u64;
        let mut snapshots = 0;
        if journal.snapshot_due() {
            match journal.snapshot(&state) {
                Ok(_) => snapshots = 1,
                // The log still holds everything: a failed snapshot costs
                // replay time at the next start, not data.
                Err(error) => eprintln!("zhifu journal: snapshot failed: {error}"),
            }
        }
        drop(state);
        let mut counters = stats.write().unwrap_or_else(PoisonError::into_inner);
        counters.batches += loggable.len() as u64;
        counters.groups += 1;
        counters.snapshots += snapshots;
        counters.append_us_max = counters.append_us_max.max(append_us);
        counters.apply_us_max = counters.apply_us_max.max(apply_us);
    }
}

fn batch_len(batch: &Batch) -> usize {
    match &batch.command {
        Command::CreateAccounts(events) => events.len(),
        Command::CreateTransfers(events) => events.len(),
    }
}

fn involves(transfer: &ledger::Transfer, account_id: u128) -> bool {
    transfer.debit_account_id == account_id || transfer.credit_account_id == account_id
}
