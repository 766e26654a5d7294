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
//! - `log`: [`LogStore`], where the log is kept — `wal`'s [`FileLog`] (segment
//!   files in the data directory) or `postgres`' [`PostgresLog`] (a table that
//!   several nodes share, one leading).
//! - `writer`: the one writer thread with group commit (leading), or
//!   applying what the leader appends (following).
//! - [`Durable`]: what the rest of zhifu submits commands to and reads from.
//!
//! The machine stays the single writer of state; this crate only decides
//! when a command is durable.

mod append_file;
pub mod archive;
pub mod codec;
pub mod disk;
mod error;
mod format_record;
mod frame_table;
#[doc(hidden)]
pub mod fuzzing;
mod helpers;
mod history;
pub mod journal;
mod log;
pub mod machine;
mod postgres;
mod replay;
mod snapshot;
mod wal;
mod writer;

use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use parking_lot::RwLock as StateLock;
use std::thread::JoinHandle;

use ledger::Ledger;

pub use archive::{ArchiveReader, ArchiveSource, NoArchive};
pub use codec::{Batch, Command, DecodeError};
pub use disk::{Access, Disk, Faults, FileSystem, SimulatedDisk};
pub use error::JournalError;
pub use history::HistoryReader;
pub use journal::{Journal, Options, RecoveryReport, SkippedSnapshot, lock_directory};
pub use log::{Lead, LogStore};
pub use machine::{Outcome, StateMachine};
pub use postgres::PostgresLog;
pub use snapshot::digest;

/// How long a node's lead of a PostgreSQL store lasts past each renewal, unless configured.
pub fn postgres_lease_default() -> std::time::Duration {
    postgres::LEASE_DEFAULT
}
pub use wal::FileLog;
pub use writer::{Follower, Health, Replica};

/// The bare ledger made durable.
pub type DurableLedger = Durable<Ledger>;

/// Counters of the writer, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Commands logged and applied.
    pub batches: u64,
    /// Groups: each one write and one fdatasync (one transaction on PostgreSQL).
    pub groups: u64,
    /// Bytes of the commands logged (their encodings, without framing).
    pub command_bytes: u64,
    pub snapshots: u64,
    /// The slowest append (write + fdatasync) so far, and the slowest apply
    /// of a group.
    pub append_us_max: u64,
    pub apply_us_max: u64,
    /// The slowest single command's apply.
    pub command_us_max: u64,
    /// The longest the writer held the state's lock for itself: the longest
    /// a reader waited for it.
    pub exclusive_us_max: u64,
    /// The slowest snapshot (written while readers read on).
    pub snapshot_us_max: u64,
}

/// Where the answer to a command goes.
pub(crate) type Reply<M> = Box<dyn FnOnce(Result<<M as StateMachine>::Outcome, JournalError>) + Send>;

pub(crate) struct Request<M: StateMachine> {
    pub command: M::Command,
    pub reply: Reply<M>,
}

/// A state machine made durable by a journal. Any thread may submit; one
/// writer thread gathers what is waiting into a group, appends it with one
/// fdatasync, applies it, and answers each submitter.
pub struct Durable<M: StateMachine> {
    sender: Option<SyncSender<Request<M>>>,
    machine: Arc<StateLock<M>>,
    stats: Arc<RwLock<WriterStats>>,
    health: Arc<Mutex<Health>>,
    writer: Option<JoinHandle<()>>,
    history: HistoryReader,
    archive: ArchiveReader,
}

impl<M: StateMachine> Durable<M> {
    /// A machine made durable by the log files of `directory`.
    pub fn open(directory: &std::path::Path, options: Options) -> Result<(Durable<M>, RecoveryReport), JournalError> {
        let (journal, machine, report) = Journal::<M>::open(directory, options)?;
        Durable::start(directory, journal, machine, report)
    }

    /// A machine made durable by `log`, with its snapshots, history and
    /// archive in `directory`. With a log other nodes share, this node
    /// starts as a follower and takes the lead when it can.
    pub fn open_with(
        directory: &std::path::Path,
        log: Box<dyn LogStore>,
        options: Options,
    ) -> Result<(Durable<M>, RecoveryReport), JournalError> {
        let (journal, machine, report) = Journal::<M>::open_with(directory, log, options)?;
        Durable::start(directory, journal, machine, report)
    }

    fn start(
        directory: &std::path::Path,
        journal: Journal<M>,
        machine: M,
        report: RecoveryReport,
    ) -> Result<(Durable<M>, RecoveryReport), JournalError> {
        let queue = journal.options().queue_batches_max;
        let history = journal.history_reader();
        let archive = journal.archive_reader();
        let role = if journal.log_is_shared() { Lead::Follower { leader: None } } else { Lead::Leader };
        let health = Health {
            role,
            last_applied: report.last_sequence,
            failure: None,
            store_problem: None,
            replicas: Vec::new(),
            followers: Vec::new(),
        };
        let health = Arc::new(Mutex::new(health));
        let machine = Arc::new(StateLock::new(machine));
        let stats = Arc::new(RwLock::new(WriterStats::default()));
        let (sender, receiver) = sync_channel(queue);
        let writer = writer::Writer {
            journal,
            machine: Arc::clone(&machine),
            stats: Arc::clone(&stats),
            health: Arc::clone(&health),
            receiver,
            position_reported_at: None,
            store_figures_read_at: None,
        };
        let writer =
            std::thread::Builder::new().name("journal-writer".to_string()).spawn(move || writer.run()).map_err(
                |source| JournalError::Io { action: "start writer thread for", path: directory.to_path_buf(), source },
            )?;
        let durable = Durable { sender: Some(sender), machine, stats, health, writer: Some(writer), history, archive };
        Ok((durable, report))
    }

    /// Waits until this node leads (a shared store's follower takes the
    /// lead once the last leader's lease has run out).
    pub fn wait_to_lead(&self, within: std::time::Duration) -> Result<(), JournalError> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let health = self.health();
            if let Some(reason) = health.failure {
                return Err(JournalError::Failed(reason));
            }
            if health.role == Lead::Leader {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(JournalError::NotLeader {
                    leader: match health.role {
                        Lead::Follower { leader } => leader,
                        Lead::Leader => None,
                    },
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// What this node is doing: leading or following, the last record
    /// applied, a failure that stopped it, a store it cannot reach.
    pub fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(PoisonError::into_inner).clone()
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

    /// Waits until the writer has done what it does after answering a
    /// group (a snapshot): a deterministic simulation then sees every disk
    /// operation in one order.
    pub fn wait_until_idle(&self) {
        drop(self.machine.write());
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

fn involves(transfer: &ledger::Transfer, account_id: u128) -> bool {
    transfer.debit_account_id == account_id || transfer.credit_account_id == account_id
}
