//! `Journal`: opens a data directory (lock, recovery), appends groups of
//! batches durably, and takes snapshots that let old log segments go.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::{Ledger, LedgerConfig};

use crate::archive::Archive;
use crate::disk::{DirectoryLock, Disk, FileSystem, Open};
use crate::error::{JournalError, io_error};
use crate::format_record;
use crate::helpers::{self, Helpers};
use crate::history::History;
use crate::log::{Lead, LogStore};
use crate::machine::StateMachine;
use crate::replay::{Batches, Replay};
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
    /// A snapshot is also due (however little log there is, however few
    /// records: neither rule above applies) once the commands applied since
    /// the last one took this many times as long as writing it did (counted
    /// on every thread: the writer waits for less of it), and at least ten
    /// seconds: a log of few bytes can be minutes of work (a
    /// settlement's ticks), and a restart replays all of it, about twice as
    /// slowly as the run applied it (cold caches, a fresh heap). So the
    /// replay stays within about twice this many snapshot writes, and
    /// snapshots cost at most 1/this of the writer's time. 0: no such rule.
    pub snapshot_apply_multiple: u32,
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
    /// Where the files are: the machine's file system, or a simulated disk in tests.
    pub disk: Arc<dyn Disk>,
    /// The writer's work beside it on threads of their own (`true`): archive
    /// frames compressed and written, a group appended while the one before
    /// applies, records read ahead, a snapshot's parts encoded at once (see
    /// `Journal::uses_threads`). `false`: all on the writer's thread, for a
    /// deterministic simulation, whose disk must see one order of operations.
    pub background_threads: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            snapshot_every_records: 4096,
            snapshot_log_percent: 0,
            snapshot_apply_multiple: 0,
            queue_batches_max: 1024,
            group_batches_max: 64,
            accounts_capacity: 0,
            transfers_capacity: 0,
            ledger: LedgerConfig::default(),
            archive_frame_bytes: crate::archive::FRAME_BYTES_DEFAULT,
            panic_before_applying: None,
            disk: Arc::new(FileSystem),
            background_threads: true,
        }
    }
}

/// A snapshot recovery could not use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedSnapshot {
    pub path: PathBuf,
    pub reason: String,
}

/// Applies a command, then takes the transfers and records it made into the
/// history's and archive's buffers: the writer and replay alike.
pub(crate) fn apply_and_collect<M: StateMachine>(
    machine: &mut M,
    history: &mut History,
    archive: &mut Archive,
    command: &M::Command,
) -> Result<M::Outcome, JournalError> {
    let outcome = machine.apply(command, &*archive)?;
    history.collect(machine.ledger())?;
    machine.ledger_mut().set_eviction_floor(history.collected());
    archive.collect(machine)?;
    Ok(outcome)
}

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// The log sequence of the snapshot loaded, if any.
    pub snapshot_sequence: Option<u64>,
    /// Newer snapshots that could not be read and were passed over.
    pub snapshots_skipped: Vec<SkippedSnapshot>,
    pub records_replayed: u64,
    /// How long reading the snapshot took, then replaying the log after it.
    pub snapshot_read: Duration,
    pub replay: Duration,
    /// Bytes of a torn record cut from the end of the newest segment.
    pub torn_bytes_cut: u64,
    /// The sequence of the last durable record (0: none).
    pub last_sequence: u64,
    /// The ledger's configuration: the one the directory was written with,
    /// which may not be the options'.
    pub ledger: LedgerConfig,
}

pub struct Journal<M: StateMachine> {
    disk: Arc<dyn Disk>,
    directory: PathBuf,
    log: Box<dyn LogStore>,
    history: History,
    archive: Archive,
    next_sequence: u64,
    records_since_snapshot: u64,
    /// Log bytes written since the last snapshot, and that snapshot's size.
    log_bytes_since_snapshot: u64,
    snapshot_bytes: u64,
    /// Time spent applying commands since the last snapshot, and what
    /// writing (at start: reading) that snapshot took.
    apply_since_snapshot: Duration,
    snapshot_took: Duration,
    options: Options,
    /// The encoded commands of the group being appended.
    payloads: Vec<Vec<u8>>,
    last_group_bytes: u64,
    /// Threads for the writer's jobs aside (see `helpers`), where it may use threads.
    helpers: Option<Helpers>,
    machine: std::marker::PhantomData<fn() -> M>,
    /// Held for the journal's lifetime: the OS lock stops a second process.
    /// Last, so dropped last: the archive's compressor thread may still be
    /// writing until the archive is dropped.
    _lock: DirectoryLock,
}

/// A group's records on their way into the log, with the log itself (see
/// [`Journal::lend_appender`]).
pub struct Appender {
    log: Box<dyn LogStore>,
    first: u64,
    /// The last group's encodings (kept for their capacity).
    payloads: Vec<Vec<u8>>,
}

impl Appender {
    /// Encodes `commands` and appends them durably (see
    /// [`LogStore::append`]). Encoding here, on the thread that appends,
    /// keeps it off the writer's, which the whole node waits for.
    pub fn append<M: StateMachine>(&mut self, commands: &[&M::Command]) -> Result<(), JournalError> {
        self.payloads.resize_with(commands.len(), Vec::new);
        for (payload, command) in self.payloads.iter_mut().zip(commands) {
            payload.clear();
            M::encode_command(command, payload);
        }
        let payloads: Vec<&[u8]> = self.payloads.iter().map(Vec::as_slice).collect();
        self.log.append(self.first, &payloads)
    }
}

/// Where the log is while an [`Appender`] has it: anything asked of it
/// meanwhile is a mistake of the writer's, answered as a failure.
struct LentLog;

impl LentLog {
    fn away() -> JournalError {
        JournalError::Failed("the log was asked for while a group was being appended".to_string())
    }
}

impl LogStore for LentLog {
    fn describe(&self) -> String {
        "the log (lent to an append)".to_string()
    }
    fn first_sequence(&mut self) -> Result<Option<u64>, JournalError> {
        Err(LentLog::away())
    }
    fn read_after(&mut self, _: u64, _: u64, _: &mut crate::log::Visit<'_>) -> Result<u64, JournalError> {
        Err(LentLog::away())
    }
    fn append(&mut self, _: u64, _: &[&[u8]]) -> Result<(), JournalError> {
        Err(LentLog::away())
    }
    fn committed(&mut self, _: u64, _: u64) -> Result<bool, JournalError> {
        Err(LentLog::away())
    }
    fn release(&mut self, _: u64) -> Result<(), JournalError> {
        Err(LentLog::away())
    }
    fn lead(&mut self) -> Result<Lead, JournalError> {
        Err(LentLog::away())
    }
}

const LOCK_FILE: &str = "LOCK";
/// Work after which the rule by work may take a snapshot, however quick to
/// write: a replay of less is not worth one (a small state's snapshot takes
/// milliseconds, and would otherwise come every few dozen of them).
const SNAPSHOT_WORK_FLOOR: Duration = Duration::from_secs(10);

impl<M: StateMachine> Journal<M> {
    /// Opens (creating if needed) a data directory whose log is its own
    /// segment files, and recovers the machine it holds.
    pub fn open(directory: &Path, options: Options) -> Result<(Journal<M>, M, RecoveryReport), JournalError> {
        create_private_directory(&*options.disk, directory)?;
        let log = FileLog::open(Arc::clone(&options.disk), directory)?;
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
        let disk = Arc::clone(&options.disk);
        create_private_directory(&*disk, directory)?;
        let lock = lock_with(&*disk, directory)?;
        let listing = list_directory(&*disk, directory)?;
        let has_contents = !listing.segments.is_empty() || !listing.snapshots.is_empty();
        let local = format_record::read_file::<M>(&*disk, directory, has_contents)?;
        let shared = shared_format_record::<M>(&mut *log)?;
        let mut report = RecoveryReport::default();

        let reading = Instant::now();
        // A directory replays its log as the configuration that wrote it,
        // whatever this start's options say.
        let config = shared.or(local).unwrap_or(options.ledger);
        let (snapshot_sequence, mut machine) =
            load_newest_snapshot::<M>(&*disk, &listing.snapshots, config, &mut report);
        report.ledger = machine.ledger().config();
        check_recorded_config(directory, &*log, local, shared, report.ledger, snapshot_sequence)?;
        machine.ledger_mut().reserve(options.accounts_capacity, options.transfers_capacity);
        // The history and archive files are cut back to what the snapshot
        // relies on: first make sure the log can take it from there, or an
        // unreadable snapshot would cut them back to nothing.
        check_log_covers(&mut *log, directory, snapshot_sequence, &report.snapshots_skipped)?;
        set_aside(&*disk, directory, &report.snapshots_skipped)?;
        let history = History::open(&*disk, directory, machine.ledger().transfer_count())?;
        machine.ledger_mut().set_eviction_floor(history.collected());
        let mut archive = Archive::open(
            &*disk,
            directory,
            machine.archive_len(),
            options.archive_frame_bytes,
            options.background_threads,
        )?;
        report.snapshot_sequence = (snapshot_sequence > 0).then_some(snapshot_sequence);
        let snapshot_bytes = snapshot_bytes(&*disk, &listing.snapshots, snapshot_sequence);
        let helpers = options.background_threads.then(|| helpers::start(directory)).transpose()?;
        archive.decode_with(helpers.clone());
        let mut journal = Journal {
            disk,
            directory: directory.to_path_buf(),
            log,
            history,
            archive,
            next_sequence: snapshot_sequence + 1,
            records_since_snapshot: 0,
            log_bytes_since_snapshot: 0,
            snapshot_bytes,
            apply_since_snapshot: Duration::ZERO,
            snapshot_took: Duration::ZERO,
            options,
            payloads: Vec::new(),
            last_group_bytes: 0,
            helpers,
            machine: std::marker::PhantomData,
            _lock: lock,
        };
        report.snapshot_read = reading.elapsed();
        let replaying = Instant::now();
        report.records_replayed = journal.catch_up(&mut machine, u64::MAX)?;
        report.replay = replaying.elapsed();
        // Reading the snapshot is the best guess of what writing the next takes.
        journal.snapshot_took = report.snapshot_read;
        check_not_ahead(&mut *journal.log, snapshot_sequence)?;
        // Recorded only once known: from a record, a snapshot, or the
        // options of a log that is new. (A log an older version wrote, with
        // neither, replays under the options, as it did, and stays unrecorded.)
        let known = local.is_some() || shared.is_some() || snapshot_sequence > 0 || journal.next_sequence == 1;
        if known {
            let Journal { disk, log, .. } = &mut journal;
            record_missing_config::<M>(&**disk, directory, &mut **log, local, shared, report.ledger)?;
        }
        journal.history.write()?;
        journal.archive.write()?;
        remove_temporary_files(&*journal.disk, &listing.temporary);
        report.torn_bytes_cut = journal.log.torn_bytes_cut();
        report.last_sequence = journal.next_sequence - 1;
        Ok((journal, machine, report))
    }

    /// Applies the log's records after the last one applied, at most
    /// `limit` (recovery; a follower as its leader appends): each as the
    /// writer applied it. Answers how many.
    pub fn catch_up(&mut self, machine: &mut M, limit: u64) -> Result<u64, JournalError> {
        let started = Instant::now();
        let replayed = self.replay_after_applied(machine, limit);
        self.count_apply_time(started.elapsed());
        replayed
    }

    fn replay_after_applied(&mut self, machine: &mut M, limit: u64) -> Result<u64, JournalError> {
        let description = self.log.describe();
        let helpers = self.helpers();
        let Journal { log, history, archive, next_sequence, records_since_snapshot, log_bytes_since_snapshot, .. } =
            self;
        let after = *next_sequence - 1;
        let mut batches = Batches::new(Replay {
            machine,
            history,
            archive,
            next_sequence,
            records_since_snapshot,
            log_bytes_since_snapshot,
            description,
            helpers,
        });
        let replayed = log.read_after(after, limit, &mut |sequence, payload| batches.push(sequence, payload))?;
        batches.finish()?;
        Ok(replayed)
    }

    /// Whether this node may append (see `LogStore::lead`).
    pub fn lead(&mut self) -> Result<Lead, JournalError> {
        self.log.lead()
    }

    /// The store's replicas (see `LogStore::replicas`).
    pub fn replicas(&mut self) -> Vec<crate::Replica> {
        self.log.replicas()
    }

    /// The nodes following the log (see `LogStore::followers`).
    pub fn followers(&mut self) -> Vec<crate::Follower> {
        self.log.followers()
    }

    /// Tells the log how far this follower has applied.
    pub fn report_applied(&mut self, applied: u64) {
        self.log.report_applied(applied);
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
        let mut appender = self.lend_appender();
        let appended = appender.append::<M>(commands);
        self.return_appender(appender, appended.is_ok());
        appended
    }

    /// The log, lent out so that another thread encodes and appends the
    /// next group while the writer applies the group before it (the rest
    /// of the journal stays here; the log is back with
    /// [`Journal::return_appender`] before anything else asks for it).
    pub fn lend_appender(&mut self) -> Appender {
        let payloads = std::mem::take(&mut self.payloads);
        let log = std::mem::replace(&mut self.log, Box::new(LentLog));
        Appender { log, first: self.next_sequence, payloads }
    }

    /// The log back from an append; `appended`: its records count as appended.
    pub fn return_appender(&mut self, appender: Appender, appended: bool) {
        let Appender { log, payloads, .. } = appender;
        self.log = log;
        self.payloads = payloads;
        if appended {
            self.count_appended(self.payloads.len());
        }
    }

    /// After an ambiguous append of `commands`: whether the log holds them
    /// as this node appended them (then they count as appended), asked of
    /// the log until it can say.
    pub fn resolve(&mut self, commands: &[&M::Command]) -> Result<bool, JournalError> {
        let committed = self.log.committed(self.next_sequence, commands.len() as u64)?;
        if committed {
            self.count_appended(commands.len());
        }
        Ok(committed)
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
        apply_and_collect(machine, &mut self.history, &mut self.archive, command)
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
    pub fn history_reader(&self) -> crate::HistoryReader {
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

    /// Records read ahead (by `archive_reader().read_ahead`) for the commands
    /// about to apply; forgotten by `clear_archive_read_ahead`.
    pub(crate) fn set_archive_read_ahead(&self, records: crate::archive::ReadAhead) {
        self.archive.set_read_ahead(records);
    }

    /// Whether the writer may work on other threads — read records ahead,
    /// append a group while the one before applies, encode a snapshot's
    /// parts at once (not in a deterministic simulation, whose disk must see
    /// one order of operations).
    pub fn uses_threads(&self) -> bool {
        self.helpers.is_some()
    }

    /// The helper threads, where the writer may use threads.
    pub(crate) fn helpers(&self) -> Option<Helpers> {
        self.helpers.clone()
    }

    pub fn clear_archive_read_ahead(&self) {
        self.archive.clear_read_ahead();
    }

    /// Writes the collected archive records (after each group, before
    /// readers may look for them).
    pub fn write_archive(&mut self) -> Result<(), JournalError> {
        self.archive.write()
    }

    pub fn archive_reader(&self) -> crate::ArchiveReader {
        self.archive.reader()
    }

    pub fn snapshot_due(&self) -> bool {
        // By work, however few the records: a few heavy commands (a
        // settlement's ticks) can be minutes of replay.
        let multiple = self.options.snapshot_apply_multiple;
        let work_due = self.snapshot_took.saturating_mul(multiple).max(SNAPSHOT_WORK_FLOOR);
        if multiple > 0 && !self.snapshot_took.is_zero() && self.apply_since_snapshot >= work_due {
            return true;
        }
        if self.records_since_snapshot < self.options.snapshot_every_records {
            return false;
        }
        let log_share = u128::from(self.log_bytes_since_snapshot) * 100;
        log_share >= u128::from(self.snapshot_bytes) * u128::from(self.options.snapshot_log_percent)
    }

    /// Counts time the writer spent applying commands (see
    /// `Options::snapshot_apply_multiple`).
    pub fn count_apply_time(&mut self, applying: Duration) {
        self.apply_since_snapshot = self.apply_since_snapshot.saturating_add(applying);
    }

    /// Snapshots `ledger`, which must reflect every appended record, then
    /// deletes the snapshots and log segments it makes unnecessary.
    pub fn snapshot(&mut self, machine: &M) -> Result<PathBuf, JournalError> {
        let started = Instant::now();
        let ledger = machine.ledger();
        let sequence = self.next_sequence - 1;
        // History first: a snapshot must never cover transfers that are
        // only in the log segments it lets us delete.
        self.history.collect(ledger)?;
        self.history.sync()?;
        assert_eq!(self.history.count(), ledger.transfer_count(), "history holds every transfer");
        self.archive.sync()?;
        assert_eq!(self.archive.length(), machine.archive_len(), "the archive holds every record");
        let (path, in_order_added) =
            snapshot::write(&*self.disk, &self.directory, sequence, machine, self.uses_threads())?;
        self.log.release(sequence)?;
        self.records_since_snapshot = 0;
        self.log_bytes_since_snapshot = 0;
        self.snapshot_bytes = file_length(&*self.disk, &path)?;
        self.apply_since_snapshot = Duration::ZERO;
        // As long as it would have taken in order: with parts encoded beside
        // it the writer waits less, while the work between snapshots (the
        // replay at a restart) stays what it was.
        self.snapshot_took = started.elapsed() + in_order_added;
        let listing = list_directory(&*self.disk, &self.directory)?;
        for (snapshot_sequence, old) in &listing.snapshots {
            if *snapshot_sequence < sequence {
                remove_file(&*self.disk, old)?;
            }
        }
        wal::sync_directory(&*self.disk, &self.directory)?;
        Ok(path)
    }

    pub fn last_sequence(&self) -> u64 {
        self.next_sequence - 1
    }
}

/// Renames the newer snapshots recovery passed over to `<name>.unreadable`
/// (durably) before the history and archive are cut back to an older one:
/// a later start must not take up a newer snapshot (its read may have
/// failed only once) whose history was cut away meanwhile.
fn set_aside(disk: &dyn Disk, directory: &Path, skipped: &[SkippedSnapshot]) -> Result<(), JournalError> {
    if skipped.is_empty() {
        return Ok(());
    }
    for snapshot in skipped {
        let mut aside = snapshot.path.clone().into_os_string();
        aside.push(".unreadable");
        disk.rename(&snapshot.path, Path::new(&aside))
            .map_err(|source| io_error("set aside the unreadable snapshot", &snapshot.path, source))?;
        tracing::warn!(path = %snapshot.path.display(), reason = %snapshot.reason, "set aside an unreadable snapshot");
    }
    wal::sync_directory(disk, directory)
}

/// `; passed over: <path>: <why>, …` (nothing if none was).
fn skipped_list(skipped: &[SkippedSnapshot]) -> String {
    skipped.iter().enumerate().fold(String::new(), |mut text, (index, skipped)| {
        text.push_str(if index == 0 { "; passed over: " } else { ", " });
        text.push_str(&format!("{}: {}", skipped.path.display(), skipped.reason));
        text
    })
}

/// A snapshot past the end of a shared log belongs to another store (or one
/// restored from an older backup): following from it would diverge.
fn check_not_ahead(log: &mut dyn LogStore, snapshot_sequence: u64) -> Result<(), JournalError> {
    if snapshot_sequence == 0 || !log.is_shared() {
        return Ok(());
    }
    let holds_it = log.read_after(snapshot_sequence - 1, 1, &mut |_, _| Ok(()))? == 1;
    if holds_it {
        return Ok(());
    }
    Err(JournalError::Gap {
        path: PathBuf::from(log.describe()),
        detail: format!(
            "the data directory's snapshot is at record {snapshot_sequence}, past the end of this store's log: \
             it belongs to another store (give this node an empty data directory)"
        ),
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

/// The ledger configuration a shared log records, if it records one (of
/// this machine's format: another's is refused).
fn shared_format_record<M: StateMachine>(log: &mut dyn LogStore) -> Result<Option<LedgerConfig>, JournalError> {
    match log.format_record()? {
        Some(text) => Ok(format_record::parse::<M>(&text, Path::new(&log.describe()))?),
        None => Ok(None),
    }
}

/// Refuses a state rebuilt under another configuration than the directory's
/// record or the shared log's.
fn check_recorded_config(
    directory: &Path,
    log: &dyn LogStore,
    local: Option<LedgerConfig>,
    shared: Option<LedgerConfig>,
    config: LedgerConfig,
    snapshot_sequence: u64,
) -> Result<(), JournalError> {
    // With no snapshot, the configuration is the shared log's (when the
    // directory's record disagrees with it).
    let source = match snapshot_sequence {
        0 => log.describe(),
        sequence => format!("snapshot {sequence}"),
    };
    format_record::check_config(local, &directory.join(format_record::FORMAT_FILE), config, &source)?;
    format_record::check_config(shared, Path::new(&log.describe()), config, &source)
}

/// Records `config` where the directory or the shared log has no record,
/// once the open has succeeded.
fn record_missing_config<M: StateMachine>(
    disk: &dyn Disk,
    directory: &Path,
    log: &mut dyn LogStore,
    local: Option<LedgerConfig>,
    shared: Option<LedgerConfig>,
    config: LedgerConfig,
) -> Result<(), JournalError> {
    if log.is_shared() && shared.is_none() {
        log.set_format_record(&format_record::record_text::<M>(config))?;
        // Another node may have recorded its own first.
        let now_recorded = shared_format_record::<M>(log)?;
        format_record::check_config(now_recorded, Path::new(&log.describe()), config, "this node's options")?;
    }
    if local.is_none() {
        format_record::write_file::<M>(disk, directory, config)?;
    }
    Ok(())
}

/// A data directory holds the platform's records and secrets: its owner's
/// alone (0700; an existing one is made so too).
fn create_private_directory(disk: &dyn Disk, directory: &Path) -> Result<(), JournalError> {
    disk.create_directory(directory).map_err(|source| io_error("create data directory", directory, source))
}

/// Takes a data directory's lock (its `LOCK` file, held while the file is
/// open), or says that another process holds it. The journal holds it while
/// open; whoever removes a directory's files takes it first.
pub fn lock_directory(directory: &Path) -> Result<DirectoryLock, JournalError> {
    lock_with(&FileSystem, directory)
}

fn lock_with(disk: &dyn Disk, directory: &Path) -> Result<DirectoryLock, JournalError> {
    match disk.lock(directory) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(JournalError::Locked { path: directory.to_path_buf() }),
        Err(source) => Err(io_error("lock", &directory.join(LOCK_FILE), source)),
    }
}

struct Listing {
    snapshots: Vec<(u64, PathBuf)>,
    segments: Vec<(u64, PathBuf)>,
    temporary: Vec<PathBuf>,
}

fn list_directory(disk: &dyn Disk, directory: &Path) -> Result<Listing, JournalError> {
    let mut listing = Listing { snapshots: Vec::new(), segments: Vec::new(), temporary: Vec::new() };
    let names = disk.list(directory).map_err(|source| io_error("list data directory", directory, source))?;
    for name in names {
        let path = directory.join(&name);
        if let Some(sequence) = snapshot::parse_snapshot_name(&name) {
            listing.snapshots.push((sequence, path));
        } else if let Some(sequence) = wal::parse_segment_name(&name) {
            listing.segments.push((sequence, path));
        } else if name.ends_with(".tmp") {
            listing.temporary.push(path);
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    Ok(listing)
}

/// The size of the snapshot at `sequence` (0: none, or unreadable: the next
/// snapshot is then due by the record count alone).
fn snapshot_bytes(disk: &dyn Disk, snapshots: &[(u64, PathBuf)], sequence: u64) -> u64 {
    let path = snapshots.iter().find(|(at, _)| *at == sequence).map(|(_, path)| path);
    path.and_then(|path| file_length(disk, path).ok()).unwrap_or(0)
}

fn file_length(disk: &dyn Disk, path: &Path) -> Result<u64, JournalError> {
    disk.open(path, Open::Read)
        .and_then(|file| file.size())
        .map_err(|source| io_error("read the size of", path, source))
}

/// The newest snapshot that reads back whole, or an empty ledger at 0.
fn load_newest_snapshot<M: StateMachine>(
    disk: &dyn Disk,
    snapshots: &[(u64, PathBuf)],
    config: LedgerConfig,
    report: &mut RecoveryReport,
) -> (u64, M) {
    for (_, path) in snapshots.iter().rev() {
        match snapshot::read::<M>(disk, path) {
            Ok(loaded) => return loaded,
            Err(error) => {
                report.snapshots_skipped.push(SkippedSnapshot { path: path.clone(), reason: problem(&error) })
            }
        }
    }
    (0, M::create(config))
}

fn remove_file(disk: &dyn Disk, path: &Path) -> Result<(), JournalError> {
    disk.remove(path).map_err(|source| io_error("remove", path, source))
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

/// A `.tmp` file is a snapshot, a snapshot's part, or `FORMAT`, that was
/// being written when the process stopped: never renamed, so never relied on.
fn remove_temporary_files(disk: &dyn Disk, paths: &[PathBuf]) {
    for path in paths {
        let _ = disk.remove(path);
    }
}
