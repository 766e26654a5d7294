//! `Journal`: opens a data directory (lock, recovery), appends groups of
//! batches durably, and takes snapshots that let old log segments go.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use ledger::{Ledger, LedgerConfig};

use crate::archive::Archive;
use crate::error::{JournalError, io_error};
use crate::history::History;
use crate::log::{Lead, LogStore};
use crate::machine::StateMachine;
use crate::snapshot;
use crate::wal::{self, FileLog};

/// How the journal behaves; every limit is named here.
#[derive(Clone, Debug)]
pub struct Options {
    /// A snapshot is taken after this many log records, bounding the replay
    /// at start to about this many batches.
    pub snapshot_every_records: u64,
    /// A snapshot also waits until the log written since the last one is at
    /// least this percent of that snapshot's size, so that writing
    /// snapshots costs at most 100/percent times writing the log however
    /// large the state grows (a state of gigabytes written every few
    /// million records would cost more than the records). 0: no wait.
    pub snapshot_log_percent: u64,
    /// Batches waiting to be made durable; submitters block beyond it.
    pub queue_batches_max: usize,
    /// Batches that share one write and one fdatasync at most.
    pub group_batches_max: usize,
    /// Room reserved in the ledger at start (accounts, transfers), so that
    /// its indexes do not grow, and stall a batch, below these counts.
    pub accounts_capacity: usize,
    pub transfers_capacity: usize,
    /// The configuration of a new ledger (a snapshot carries its own).
    pub ledger: LedgerConfig,
    /// Record bytes an archive frame compresses (see `archive`).
    pub archive_frame_bytes: usize,
    /// Fault injection for tests of fail-stop: the writer panics just before
    /// it applies the record with this sequence (replay at start does not).
    pub panic_before_applying: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            snapshot_every_records: 4096,
            snapshot_log_percent: 0,
            queue_batches_max: 1024,
            group_batches_max: 64,
            accounts_capacity: 0,
            transfers_capacity: 0,
            ledger: LedgerConfig::default(),
            archive_frame_bytes: crate::archive::FRAME_BYTES_DEFAULT,
            panic_before_applying: None,
        }
    }
}

/// A snapshot recovery could not use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedSnapshot {
    pub path: PathBuf,
    pub reason: String,
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The log sequence of the snapshot loaded, if any.
    pub snapshot_sequence: Option<u64>,
    /// Newer snapshots that could not be read and were passed over.
    pub snapshots_skipped: Vec<SkippedSnapshot>,
    pub records_replayed: u64,
    /// Bytes of a torn record cut from the end of the newest segment.
    pub torn_bytes_cut: u64,
    /// The sequence of the last durable record (0: none).
    pub last_sequence: u64,
    /// The recovered machine's [`crate::digest`].
    pub digest: u64,
}

pub struct Journal<M: StateMachine> {
    directory: PathBuf,
    log: Box<dyn LogStore>,
    history: History,
    archive: Archive,
    next_sequence: u64,
    records_since_snapshot: u64,
    /// Log bytes written since the last snapshot, and that snapshot's size.
    log_bytes_since_snapshot: u64,
    snapshot_bytes: u64,
    options: Options,
    /// The encoded commands of the group being appended.
    payloads: Vec<Vec<u8>>,
    last_group_bytes: u64,
    machine: std::marker::PhantomData<fn() -> M>,
    /// Held for the journal's lifetime: the OS lock stops a second process.
    /// Last, so dropped last: the archive's compressor thread may still be
    /// writing until the archive is dropped.
    _lock: File,
}

const LOCK_FILE: &str = "LOCK";
/// `format <StateMachine::FORMAT>`: what the directory's log and snapshots mean.
const FORMAT_FILE: &str = "FORMAT";

impl<M: StateMachine> Journal<M> {
    /// Opens (creating if needed) a data directory whose log is its own
    /// segment files, and recovers the machine it holds.
    pub fn open(directory: &Path, options: Options) -> Result<(Journal<M>, M, RecoveryReport), JournalError> {
        create_private_directory(directory)?;
        let log = FileLog::open(directory)?;
        Journal::open_with(directory, Box::new(log), options)
    }

    /// Opens a data directory with its log in `log`, and recovers the
    /// machine: the newest readable snapshot of the directory, then every
    /// record of the log after it.
    pub fn open_with(
        directory: &Path,
        mut log: Box<dyn LogStore>,
        options: Options,
    ) -> Result<(Journal<M>, M, RecoveryReport), JournalError> {
        create_private_directory(directory)?;
        let lock = lock_directory(directory)?;
        let listing = list_directory(directory)?;
        check_format::<M>(directory, &listing)?;
        let mut report = RecoveryReport::default();

        let (snapshot_sequence, mut machine) =
            load_newest_snapshot::<M>(&listing.snapshots, options.ledger, &mut report);
        machine.ledger_mut().reserve(options.accounts_capacity, options.transfers_capacity);
        // The history and archive files are cut back to what the snapshot
        // relies on: first make sure the log can take it from there, or an
        // unreadable snapshot would cut them back to nothing.
        check_log_covers(&mut *log, directory, snapshot_sequence, &report.snapshots_skipped)?;
        let history = History::open(directory, machine.ledger().transfer_count())?;
        machine.ledger_mut().set_eviction_floor(history.collected());
        let archive = Archive::open(directory, machine.archive_len(), options.archive_frame_bytes)?;
        report.snapshot_sequence = (snapshot_sequence > 0).then_some(snapshot_sequence);
        let mut journal = Journal {
            directory: directory.to_path_buf(),
            log,
            history,
            archive,
            next_sequence: snapshot_sequence + 1,
            records_since_snapshot: 0,
            log_bytes_since_snapshot: 0,
            snapshot_bytes: snapshot_bytes(&listing.snapshots, snapshot_sequence),
            options,
            payloads: Vec::new(),
            last_group_bytes: 0,
            machine: std::marker::PhantomData,
            _lock: lock,
        };
        report.records_replayed = journal.catch_up(&mut machine, u64::MAX)?;
        journal.history.write()?;
        journal.archive.write()?;
        remove_temporary_files(&listing.temporary);
        report.torn_bytes_cut = journal.log.torn_bytes_cut();
        report.last_sequence = journal.next_sequence - 1;
        report.digest = crate::snapshot::digest(&machine)
            .map_err(|source| io_error("digest the recovered state of", directory, source))?;
        Ok((journal, machine, report))
    }

    /// Applies the log's records after the last one applied, at most
    /// `limit` (recovery; a follower as its leader appends): each as the
    /// writer applied it. Answers how many.
    pub fn catch_up(&mut self, machine: &mut M, limit: u64) -> Result<u64, JournalError> {
        let description = self.log.describe();
        let Journal { log, history, archive, next_sequence, records_since_snapshot, log_bytes_since_snapshot, .. } =
            self;
        let after = *next_sequence - 1;
        let mut apply = |sequence: u64, payload: &[u8]| -> Result<(), JournalError> {
            let command = M::decode_command(payload).map_err(|error| JournalError::Undecodable {
                path: PathBuf::from(&description),
                sequence,
                detail: error.to_string(),
            })?;
            machine.apply(&command, &*archive)?;
            history.collect(machine.ledger())?;
            machine.ledger_mut().set_eviction_floor(history.collected());
            archive.collect(machine)?;
            *next_sequence = sequence + 1;
            *records_since_snapshot += 1;
            *log_bytes_since_snapshot += (wal::HEADER_BYTES + payload.len()) as u64;
            Ok(())
        };
        log.read_after(after, limit, &mut apply)
    }

    /// Whether this node may append (see `LogStore::lead`).
    pub fn lead(&mut self) -> Result<Lead, JournalError> {
        self.log.lead()
    }

    /// Whether another node may be appending to the log.
    pub fn log_is_shared(&self) -> bool {
        self.log.is_shared()
    }

    /// What the log is, for messages.
    pub fn describe_log(&self) -> String {
        self.log.describe()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Appends commands as consecutive records, durably in one go (one
    /// write and one fdatasync; one PostgreSQL transaction). On `Ok` they
    /// survive a crash; on `Ambiguous` call [`Journal::resolve`] before
    /// anything else.
    pub fn append(&mut self, commands: &[&M::Command]) -> Result<(), JournalError> {
        self.payloads.resize_with(commands.len(), Vec::new);
        for (payload, command) in self.payloads.iter_mut().zip(commands) {
            payload.clear();
            M::encode_command(command, payload);
        }
        let payloads: Vec<&[u8]> = self.payloads[..commands.len()].iter().map(Vec::as_slice).collect();
        self.log.append(self.next_sequence, &payloads)?;
        self.count_appended(commands.len());
        Ok(())
    }

    /// After an ambiguous append of `commands`: whether the log holds them
    /// (then they count as appended), asked of the log until it can say.
    pub fn resolve(&mut self, commands: &[&M::Command]) -> Result<bool, JournalError> {
        let last = self.log.last_sequence()?;
        let group_last = self.next_sequence + commands.len() as u64 - 1;
        if last >= group_last {
            if last > group_last {
                return Err(JournalError::Failed(format!(
                    "{} holds records up to {last}, past the {group_last} this node appended: another node wrote to it",
                    self.log.describe()
                )));
            }
            self.count_appended(commands.len());
            return Ok(true);
        }
        if last >= self.next_sequence {
            return Err(JournalError::Failed(format!(
                "{} holds part of a group ({last} of {}..={group_last}): a group is appended whole",
                self.log.describe(),
                self.next_sequence
            )));
        }
        Ok(false)
    }

    /// Counts the first `records` of `payloads` as appended.
    fn count_appended(&mut self, records: usize) {
        let bytes: usize = self.payloads[..records].iter().map(|payload| wal::HEADER_BYTES + payload.len()).sum();
        self.last_group_bytes = (bytes - records * wal::HEADER_BYTES) as u64;
        self.next_sequence += records as u64;
        self.records_since_snapshot += records as u64;
        self.log_bytes_since_snapshot += bytes as u64;
    }

    /// Bytes of the commands of the last group appended.
    pub fn last_group_bytes(&self) -> u64 {
        self.last_group_bytes
    }

    /// The sequence the next appended record gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Applies a command just appended (or read back), as recovery does:
    /// the machine, then the transfers and records it made into the
    /// history's and archive's buffers.
    pub fn apply(&mut self, machine: &mut M, command: &M::Command) -> Result<M::Outcome, JournalError> {
        let outcome = machine.apply(command, &self.archive)?;
        self.collect_history(machine.ledger_mut())?;
        self.collect_archive(machine)?;
        Ok(outcome)
    }

    /// Takes the transfers a just-applied batch stored into the history
    /// file's buffer; call after every batch, before the next one.
    pub fn collect_history(&mut self, ledger: &mut Ledger) -> Result<(), JournalError> {
        self.history.collect(ledger)?;
        ledger.set_eviction_floor(self.history.collected());
        Ok(())
    }

    /// Writes the collected history (after each group).
    pub fn write_history(&mut self) -> Result<(), JournalError> {
        self.history.write()
    }

    /// A reader of the history file for other threads.
    pub fn history_reader(&self) -> Result<crate::HistoryReader, JournalError> {
        self.history.reader()
    }

    /// Takes the archive records a just-applied command made; call after
    /// every command, before the next one.
    pub fn collect_archive(&mut self, machine: &mut M) -> Result<(), JournalError> {
        self.archive.collect(machine)
    }

    /// The archive as the writer reads it (written records and the buffer).
    pub fn archive(&self) -> &dyn crate::ArchiveSource {
        &self.archive
    }

    /// Asks the disk for the frames holding these records, without waiting
    /// (see `StateMachine::archive_records_needed`).
    pub fn prefetch_archive(&self, offsets: &[u64]) {
        self.archive.prefetch(offsets);
    }

    /// Writes the collected archive records (after each group, before
    /// readers may look for them).
    pub fn write_archive(&mut self) -> Result<(), JournalError> {
        self.archive.write()
    }

    pub fn archive_reader(&self) -> Result<crate::ArchiveReader, JournalError> {
        self.archive.reader()
    }

    pub fn snapshot_due(&self) -> bool {
        let log_share = u128::from(self.log_bytes_since_snapshot) * 100;
        self.records_since_snapshot >= self.options.snapshot_every_records
            && log_share >= u128::from(self.snapshot_bytes) * u128::from(self.options.snapshot_log_percent)
    }

    /// Snapshots `ledger`, which must reflect every appended record, then
    /// deletes the snapshots and log segments it makes unnecessary.
    pub fn snapshot(&mut self, machine: &M) -> Result<PathBuf, JournalError> {
        let ledger = machine.ledger();
        let sequence = self.next_sequence - 1;
        // History first: a snapshot must never cover transfers that are
        // only in the log segments it lets us delete.
        self.history.collect(ledger)?;
        self.history.sync()?;
        assert_eq!(self.history.count(), ledger.transfer_count(), "history holds every transfer");
        self.archive.sync()?;
        assert_eq!(self.archive.length(), machine.archive_len(), "the archive holds every record");
        let path = snapshot::write(&self.directory, sequence, machine)?;
        self.log.release(sequence)?;
        self.records_since_snapshot = 0;
        self.log_bytes_since_snapshot = 0;
        self.snapshot_bytes = fs::metadata(&path).map_err(|source| io_error("read the size of", &path, source))?.len();
        let listing = list_directory(&self.directory)?;
        for (snapshot_sequence, old) in &listing.snapshots {
            if *snapshot_sequence < sequence {
                remove_file(old)?;
            }
        }
        wal::sync_directory(&self.directory)?;
        Ok(path)
    }

    pub fn last_sequence(&self) -> u64 {
        self.next_sequence - 1
    }
}

/// `; passed over: <path>: <why>, …` (nothing if none was).
fn skipped_list(skipped: &[SkippedSnapshot]) -> String {
    skipped.iter().enumerate().fold(String::new(), |mut text, (index, skipped)| {
        text.push_str(if index == 0 { "; passed over: " } else { ", " });
        text.push_str(&format!("{}: {}", skipped.path.display(), skipped.reason));
        text
    })
}

/// Whether the log holds what follows the snapshot at `snapshot_sequence`
/// (checked before the history and archive are cut back to the snapshot).
fn check_log_covers(
    log: &mut dyn LogStore,
    directory: &Path,
    snapshot_sequence: u64,
    skipped: &[SkippedSnapshot],
) -> Result<(), JournalError> {
    match log.first_sequence()? {
        Some(first) if first > snapshot_sequence + 1 => {
            let mut error = wal::gap(&directory.join(wal::segment_name(first)), snapshot_sequence + 1, first);
            if let JournalError::Gap { detail, path } = &mut error {
                if log.is_shared() {
                    *path = PathBuf::from(log.describe());
                }
                detail.push_str(&skipped_list(skipped));
            }
            Err(error)
        }
        None if !skipped.is_empty() => Err(JournalError::Gap {
            path: directory.to_path_buf(),
            detail: format!("no snapshot could be read and no log covers them{}", skipped_list(skipped)),
        }),
        _ => Ok(()),
    }
}

/// Refuses a directory whose log and snapshots another machine, or another
/// format of this one, wrote (replayed here, its commands could reach
/// another state); gives a directory without any this machine's format.
fn check_format<M: StateMachine>(directory: &Path, listing: &Listing) -> Result<(), JournalError> {
    let path = directory.join(FORMAT_FILE);
    let expected = format!("{} {}", M::NAME, M::FORMAT);
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim().strip_prefix("format ") {
            Some(found) if found == expected => Ok(()),
            Some(found) if !found.is_empty() && found.len() <= 64 => {
                Err(JournalError::OtherFormat { path, found: found.to_string(), expected })
            }
            _ => Err(JournalError::Corrupt { path, offset: 0, reason: "not a format record (`format <machine> <n>`)" }),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if !listing.segments.is_empty() || !listing.snapshots.is_empty() {
                return Err(JournalError::FormatUnrecorded { path: directory.to_path_buf(), expected });
            }
            let temporary = path.with_extension("tmp");
            let write_error = |source| io_error("write", &temporary, source);
            let mut file = create_private(&temporary).map_err(write_error)?;
            file.write_all(format!("format {expected}\n").as_bytes()).map_err(write_error)?;
            file.sync_all().map_err(write_error)?;
            fs::rename(&temporary, &path).map_err(|source| io_error("rename", &path, source))?;
            wal::sync_directory(directory)
        }
        Err(source) => Err(io_error("read", &path, source)),
    }
}

/// A data directory holds the platform's records and secrets: its owner's
/// alone (0700; an existing one is made so too).
fn create_private_directory(directory: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
        .map_err(|source| io_error("create data directory", directory, source))?;
    fs::set_permissions(directory, fs::Permissions::from_mode(0o700))
        .map_err(|source| io_error("make private the data directory", directory, source))
}

/// Options for the journal's files: readable and writable by the owner only (0600).
pub(crate) fn private_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

/// Creates (or truncates) a file of the journal's, the owner's only.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    private_options().write(true).create(true).truncate(true).open(path)
}

/// Takes a data directory's lock (its `LOCK` file, held while the file is
/// open), or says that another process holds it. The journal holds it while
/// open; whoever removes a directory's files takes it first.
pub fn lock_directory(directory: &Path) -> Result<File, JournalError> {
    let path = directory.join(LOCK_FILE);
    let file = private_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| io_error("open lock file", &path, source))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(JournalError::Locked { path: directory.to_path_buf() }),
        Err(TryLockError::Error(source)) => Err(io_error("lock", &path, source)),
    }
}

struct Listing {
    snapshots: Vec<(u64, PathBuf)>,
    segments: Vec<(u64, PathBuf)>,
    temporary: Vec<PathBuf>,
}

fn list_directory(directory: &Path) -> Result<Listing, JournalError> {
    let mut listing = Listing { snapshots: Vec::new(), segments: Vec::new(), temporary: Vec::new() };
    let entries = fs::read_dir(directory).map_err(|source| io_error("list data directory", directory, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io_error("list data directory", directory, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(sequence) = snapshot::parse_snapshot_name(&name) {
            listing.snapshots.push((sequence, entry.path()));
        } else if let Some(sequence) = wal::parse_segment_name(&name) {
            listing.segments.push((sequence, entry.path()));
        } else if name.ends_with(".tmp") {
            listing.temporary.push(entry.path());
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    Ok(listing)
}

/// The size of the snapshot at `sequence` (0: none, or unreadable: the next
/// snapshot is then due by the record count alone).
fn snapshot_bytes(snapshots: &[(u64, PathBuf)], sequence: u64) -> u64 {
    let path = snapshots.iter().find(|(at, _)| *at == sequence).map(|(_, path)| path);
    path.and_then(|path| fs::metadata(path).ok()).map_or(0, |metadata| metadata.len())
}

/// The newest snapshot that reads back whole, or an empty ledger at 0.
fn load_newest_snapshot<M: StateMachine>(
    snapshots: &[(u64, PathBuf)],
    config: LedgerConfig,
    report: &mut RecoveryReport,
) -> (u64, M) {
    for (_, path) in snapshots.iter().rev() {
        match snapshot::read::<M>(path) {
            Ok(loaded) => return loaded,
            Err(error) => {
                report.snapshots_skipped.push(SkippedSnapshot { path: path.clone(), reason: problem(&error) })
            }
        }
    }
    (0, M::create(config))
}

fn remove_file(path: &Path) -> Result<(), JournalError> {
    fs::remove_file(path).map_err(|source| io_error("remove", path, source))
}

/// What is wrong with a file, without the file's name or the verdict on
/// starting (recovery may well start without it).
fn problem(error: &JournalError) -> String {
    match error {
        JournalError::Corrupt { offset, reason, .. } => format!("byte {offset}: {reason}"),
        JournalError::BadSnapshot { detail, .. } => detail.clone(),
        JournalError::Io { action, source, .. } => format!("cannot {action}: {source}"),
        other => other.to_string(),
    }
}

/// A `.tmp` file is a snapshot (or `FORMAT`) that was being written when
/// the process stopped: never renamed, so never relied on.
fn remove_temporary_files(paths: &[PathBuf]) {
    for path in paths {
        let _ = fs::remove_file(path);
    }
}
