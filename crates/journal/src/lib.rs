//! zhifu's durability: commands become durable in a write-ahead log before
//! the state machine applies them, and the machine is rebuilt from snapshot
//! and log.
//!
//! Layout:
//! - [`machine`]: [`StateMachine`], what the journal makes durable (the bare
//!   ledger is one, with ledger batches as commands).
//! - [`codec`]: the byte layout of ledger batches and ledger images.
//! - `wal`: segment files of checksummed records; torn-tail handling.
//! - `snapshot`: snapshots of a machine, written atomically.
//! - `history`: the file of every transfer ever applied, by position.
//! - [`archive`]: the file of records the machine moved out of memory, by offset.
//! - [`journal`]: [`Journal`], a data directory's lock, recovery, appends, snapshots.
//! - [`Durable`]: the one writer thread with group commit, which the rest of
//!   zhifu submits commands to.
//!
//! The machine stays the single writer of state; this crate only decides
//! when a command is durable. A PostgreSQL backend would implement the same
//! contract (append a group of commands durably, load what was appended).

mod append_file;
pub mod archive;
pub mod codec;
mod error;
mod history;
pub mod journal;
pub mod machine;
pub mod search;
mod snapshot;
mod wal;

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, PoisonError, RwLock};

use parking_lot::{RwLock as StateLock, RwLockWriteGuard};
use std::thread::JoinHandle;

use ledger::Ledger;

pub use archive::{ArchiveReader, ArchiveSource, NoArchive};
pub use codec::{Batch, Command, DecodeError};
pub use error::JournalError;
pub use history::HistoryReader;
pub use journal::{Journal, Options, RecoveryReport, SkippedSnapshot, lock_directory};
pub use machine::{Outcome, StateMachine};
pub use snapshot::digest;

/// The bare ledger made durable.
pub type DurableLedger = Durable<Ledger>;

/// Counters of the writer, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Commands logged and applied.
    pub batches: u64,
    /// Groups: each one write and one fdatasync.
    pub groups: u64,
    pub snapshots: u64,
    /// The slowest append (write + fdatasync) so far, and the slowest apply.
    pub append_us_max: u64,
    pub apply_us_max: u64,
}

/// Where the answer to a command goes.
type Reply<M> = Box<dyn FnOnce(Result<<M as StateMachine>::Outcome, JournalError>) + Send>;

struct Request<M: StateMachine> {
    command: M::Command,
    reply: Reply<M>,
}

/// A state machine made durable by a journal. Any thread may submit; one
/// writer thread gathers what is waiting into a group, appends it with one
/// fdatasync, applies it, and answers each submitter.
pub struct Durable<M: StateMachine> {
    sender: Option<SyncSender<Request<M>>>,
    machine: Arc<StateLock<M>>,
    stats: Arc<RwLock<WriterStats>>,
    writer: Option<JoinHandle<()>>,
    history: HistoryReader,
    archive: ArchiveReader,
}

impl<M: StateMachine> Durable<M> {
    pub fn open(directory: &std::path::Path, options: Options) -> Result<(Durable<M>, RecoveryReport), JournalError> {
        let queue = options.queue_batches_max;
        let (journal, machine, report) = Journal::<M>::open(directory, options)?;
        let history = journal.history_reader()?;
        let archive = journal.archive_reader()?;
        let machine = Arc::new(StateLock::new(machine));
        let stats = Arc::new(RwLock::new(WriterStats::default()));
        let (sender, receiver) = sync_channel(queue);
        let writer_machine = Arc::clone(&machine);
        let writer_stats = Arc::clone(&stats);
        let writer = std::thread::Builder::new()
            .name("journal-writer".to_string())
            .spawn(move || write_loop(journal, &writer_machine, &writer_stats, &receiver))
            .map_err(|source| JournalError::Io {
                action: "start writer thread for",
                path: directory.to_path_buf(),
                source,
            })?;
        Ok((Durable { sender: Some(sender), machine, stats, writer: Some(writer), history, archive }, report))
    }

    /// Submits a command and waits until it is durable and applied.
    pub fn submit(&self, command: M::Command) -> Result<M::Outcome, JournalError> {
        let sender = self.sender.as_ref().ok_or(JournalError::Closed)?;
        let (reply, answer) = sync_channel(1);
        let reply: Reply<M> = Box::new(move |outcome| {
            let _ = reply.send(outcome);
        });
        sender.send(Request { command, reply }).map_err(|_| JournalError::Closed)?;
        answer.recv().map_err(|_| JournalError::Closed)?
    }

    /// Submits a command without waiting: `reply` is called (on the writer
    /// thread, so it must be quick) once the command is durable and
    /// applied. A full queue is refused at once with `JournalError::Busy`
    /// rather than blocking the caller.
    pub fn submit_with(
        &self,
        command: M::Command,
        reply: impl FnOnce(Result<M::Outcome, JournalError>) + Send + 'static,
    ) -> Result<(), JournalError> {
        let sender = self.sender.as_ref().ok_or(JournalError::Closed)?;
        sender.try_send(Request { command, reply: Box::new(reply) }).map_err(|error| match error {
            std::sync::mpsc::TrySendError::Full(_) => JournalError::Busy,
            std::sync::mpsc::TrySendError::Disconnected(_) => JournalError::Closed,
        })
    }

    /// Reads the machine (between commands: never a half-applied one).
    pub fn read<R>(&self, read: impl FnOnce(&M) -> R) -> R {
        let machine = self.machine.read();
        read(&machine)
    }

    /// The machine's [`digest`] (an encoding of the whole state: seconds
    /// for a full day's, with writes waiting).
    pub fn digest(&self) -> std::io::Result<u64> {
        self.read(digest)
    }

    /// The archive file, to read records found in the machine once its lock
    /// is let go (records below the file's length never change).
    pub fn archive(&self) -> &ArchiveReader {
        &self.archive
    }

    /// Reads the machine together with its archive file, for records it
    /// moved out of memory. Keep the reads few: the writer waits for them.
    pub fn read_with_archive<R>(&self, read: impl FnOnce(&M, &ArchiveReader) -> R) -> R {
        let machine = self.machine.read();
        read(&machine, &self.archive)
    }

    /// The transfer at `position` (its place among all transfers ever
    /// applied): from memory if it is still there, else from the history file.
    pub fn stored_transfer(&self, position: u64) -> Result<Option<ledger::StoredTransfer>, JournalError> {
        let (in_memory, count) = self.read(|machine| {
            let ledger = machine.ledger();
            (ledger.stored_transfer(position).copied(), ledger.transfer_count())
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
            None => self.read(|machine| machine.ledger().last_transfer_of(account_id)),
            Some(position) => match self.stored_transfer(position)? {
                Some(stored) if involves(&stored.transfer, account_id) => stored.previous_of(account_id),
                _ => ledger::NO_TRANSFER,
            },
        };
        let mut found = Vec::new();
        while next != ledger::NO_TRANSFER && found.len() < limit {
            let Some(stored) = self.stored_transfer(next)? else { break };
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

    /// Finishes every command already submitted, then stops the writer.
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

impl<M: StateMachine> Drop for Durable<M> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Commands applied between chances for readers to take the state lock.
const APPLY_SLICE_COMMANDS: usize = 128;

fn write_loop<M: StateMachine>(
    mut journal: Journal<M>,
    machine: &StateLock<M>,
    stats: &RwLock<WriterStats>,
    receiver: &Receiver<Request<M>>,
) {
    let group_max = journal.options().group_batches_max.max(1);
    let mut failure: Option<String> = None;
    let mut group: Vec<Request<M>> = Vec::with_capacity(group_max);
    let mut needed = Vec::new();
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
                (request.reply)(Err(JournalError::Failed(reason.clone())));
            }
            continue;
        }
        // Commands that can never apply are answered before they reach the log.
        let mut loggable = Vec::with_capacity(group.len());
        for request in group.drain(..) {
            match M::refuse(&request.command) {
                Some(outcome) => (request.reply)(Ok(outcome)),
                None => loggable.push(request),
            }
        }
        if loggable.is_empty() {
            continue;
        }
        let commands: Vec<&M::Command> = loggable.iter().map(|r| &r.command).collect();
        needed.clear();
        machine.read().archive_records_needed(&commands, &mut needed);
        journal.prefetch_archive(&needed);
        let append_started = std::time::Instant::now();
        let appended = journal.append(&commands);
        let append_us = append_started.elapsed().as_micros() as u64;
        if let Err(error) = appended {
            let reason = error.to_string();
            for request in loggable {
                (request.reply)(Err(JournalError::Failed(reason.clone())));
            }
            failure = Some(reason);
            continue;
        }
        let apply_started = std::time::Instant::now();
        let mut state = machine.write();
        let mut history_failure = None;
        let mut answers = Vec::with_capacity(loggable.len());
        for (index, request) in loggable.into_iter().enumerate() {
            // Readers wait for one slice of a group, not the whole group
            // (every command is durable already; each is applied whole).
            if index > 0 && index % APPLY_SLICE_COMMANDS == 0 {
                if let Err(error) = journal.write_archive().and_then(|()| journal.write_history()) {
                    history_failure = Some(error.to_string());
                }
                RwLockWriteGuard::bump(&mut state);
            }
            if history_failure.is_some() {
                answers.push((request.reply, Err(JournalError::Failed("an earlier command failed".to_string()))));
                continue;
            }
            let outcome = match state.apply(&request.command, journal.archive()) {
                Ok(outcome) => outcome,
                Err(error) => {
                    // An unreadable archive: the state may now differ from
                    // what the log replays to, so nothing more is applied.
                    history_failure = Some(error.to_string());
                    answers.push((request.reply, Err(error)));
                    continue;
                }
            };
            if let Err(error) = journal.collect_history(state.ledger_mut()) {
                history_failure = Some(error.to_string());
            }
            if let Err(error) = journal.collect_archive(&mut *state) {
                history_failure = Some(error.to_string());
            }
            answers.push((request.reply, Ok(outcome)));
        }
        // Before readers see the state: the records it points to are in the file.
        if let Err(error) = journal.write_archive() {
            history_failure = Some(error.to_string());
        }
        let applied = answers.len() as u64;
        let snapshot_due = journal.snapshot_due();
        // Readers wait for the lock; the history write and the answers do not need it.
        let state = if snapshot_due { Some(state) } else { None };
        if let Err(error) = journal.write_history() {
            history_failure = Some(error.to_string());
        }
        for (reply, outcome) in answers {
            reply(outcome);
        }
        if let Some(reason) = history_failure {
            // Every command is still in the log; stop before a snapshot could
            // let the log go while the history or archive is not on disk.
            eprintln!("zhifu journal: history or archive file failed, no more writes: {reason}");
            failure = Some(reason);
            continue;
        }
        let apply_us = apply_started.elapsed().as_micros() as u64;
        let mut snapshots = 0;
        if let Some(state) = state {
            match journal.snapshot(&state) {
                Ok(_) => snapshots = 1,
                // The log still holds everything: a failed snapshot costs
                // replay time at the next start, not data.
                Err(error) => eprintln!("zhifu journal: snapshot failed: {error}"),
            }
        }
        let mut counters = stats.write().unwrap_or_else(PoisonError::into_inner);
        counters.batches += applied;
        counters.groups += 1;
        counters.snapshots += snapshots;
        counters.append_us_max = counters.append_us_max.max(append_us);
        counters.apply_us_max = counters.apply_us_max.max(apply_us);
    }
}

fn involves(transfer: &ledger::Transfer, account_id: u128) -> bool {
    transfer.debit_account_id == account_id || transfer.credit_account_id == account_id
}
