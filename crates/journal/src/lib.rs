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
pub mod journal;
mod snapshot;
mod wal;

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

use ledger::{BATCH_EVENTS_MAX, BatchError, CreateAccountResult, CreateTransferResult, Ledger};

pub use codec::{Batch, Command};
pub use error::JournalError;
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
}

impl DurableLedger {
    pub fn open(
        directory: &std::path::Path,
        options: Options,
    ) -> Result<(DurableLedger, RecoveryReport), JournalError> {
        let queue = options.queue_batches_max;
        let (journal, ledger, report) = Journal::open(directory, options)?;
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
        for request in &loggable {
            let outcome = journal::apply(&mut state, &request.batch);
            let _ = request.reply.send(Ok(outcome));
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
