//! Recovery on a disk that does what real disks may do (`SimulatedDisk`):
//! at thousands of seeded crash points — the power going at any write,
//! sync or rename of the log, a snapshot, the history or the archive —
//! writes not yet synced are lost or torn at any byte, names not yet synced
//! vanish, and on some seeds syncs fail, writes find the disk full and
//! reads flip a bit. Commands go in groups of one to eight (one write and
//! one sync each, as the writer makes them), so a crash can leave any of a
//! group's records on the disk and not others. After every crash the journal must come back with
//! every acknowledged command, as a prefix of what was submitted, to the
//! very state that prefix gives applied in memory, with every transfer in
//! its history and every record in its archive readable as written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use std::path::Path;
use std::sync::Arc;

use journal::archive::Outbox;
use journal::{
    ArchiveSource, Batch, Command, DecodeError, Faults, Journal, JournalError, Options, SimulatedDisk, StateMachine,
};
use ledger::{AccountFlags, Ledger, LedgerConfig, NewAccount, Transfer};

const SECOND: u64 = 1_000_000_000;
const SEEDS: u64 = 2_000;
/// Crashes (and starts after them) per seed.
const CRASHES_PER_SEED: usize = 3;
/// Commands one seed submits at most.
const COMMANDS: usize = 90;
const ACCOUNTS: u128 = 8;
const DIRECTORY: &str = "/data/node";
/// Starts in a row a fault or a power cut may spoil.
const STARTS_MAX: usize = 32;
/// Reads of one thing a flipped bit may spoil, at most.
const READS_MAX: usize = 16;
/// Commands in one group at most.
const GROUP_COMMANDS_MAX: u64 = 8;

/// The test's own choices, from the seed.
struct Choices(rand_pcg::Pcg64Mcg);

impl Choices {
    fn new(seed: u64) -> Choices {
        use rand::SeedableRng as _;
        Choices(rand_pcg::Pcg64Mcg::seed_from_u64(seed))
    }

    /// In `0..bound` (0 if `bound` is 0).
    fn below(&mut self, bound: u64) -> u64 {
        use rand::Rng as _;
        if bound == 0 { 0 } else { self.0.random_range(0..bound) }
    }
}

/// A ledger that also archives a record for every command and, applying
/// each, reads back an earlier one and checks it: the log, snapshots,
/// history and archive all in play, as the platform uses them.
struct Archiving {
    ledger: Ledger,
    /// Where each command's record starts in the archive.
    offsets: Vec<u64>,
    outbox: Outbox,
}

/// The record the `index`-th command archives: its number, and a body whose
/// length varies (records cross frame boundaries).
fn record_of(index: u64) -> Vec<u8> {
    let mut record = index.to_le_bytes().to_vec();
    record.extend(std::iter::repeat_n((index % 251) as u8, (index * 37 % 300) as usize));
    record
}

impl StateMachine for Archiving {
    type Command = Batch;
    type Outcome = journal::Outcome;
    const FORMAT: u32 = 1;
    const NAME: &'static str = "archiving-ledger";

    fn create(config: LedgerConfig) -> Archiving {
        Archiving { ledger: <Ledger as StateMachine>::create(config), offsets: Vec::new(), outbox: Outbox::default() }
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    fn encode_command(command: &Batch, out: &mut Vec<u8>) {
        Ledger::encode_command(command, out);
    }

    fn decode_command(bytes: &[u8]) -> Result<Batch, DecodeError> {
        Ledger::decode_command(bytes)
    }

    fn refuse(command: &Batch) -> Option<journal::Outcome> {
        Ledger::refuse(command)
    }

    fn apply(&mut self, command: &Batch, archive: &dyn ArchiveSource) -> Result<journal::Outcome, JournalError> {
        let index = self.offsets.len() as u64;
        if index > 0 {
            let earlier = index / 2;
            let read = archive.read_record(self.offsets[earlier as usize])?;
            assert_eq!(read, record_of(earlier), "archive record {earlier} reads back as written");
        }
        let outcome = StateMachine::apply(&mut self.ledger, command, archive)?;
        self.offsets.push(self.outbox.push(&record_of(index)));
        Ok(outcome)
    }

    fn encode_state(&self, part: usize, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        assert_eq!(part, 0, "one part");
        out.write_all(&(self.offsets.len() as u64).to_le_bytes())?;
        for offset in &self.offsets {
            out.write_all(&offset.to_le_bytes())?;
        }
        out.write_all(&self.outbox.length().to_le_bytes())
    }

    fn restore(ledger: Ledger, state: &mut dyn std::io::Read) -> Result<Archiving, DecodeError> {
        let mut word = [0u8; 8];
        let mut next = |state: &mut dyn std::io::Read| {
            state
                .read_exact(&mut word)
                .map(|()| u64::from_le_bytes(word))
                .map_err(|_| DecodeError { what: "archiving machine state" })
        };
        let count = next(state)?;
        let offsets = (0..count).map(|_| next(state)).collect::<Result<Vec<u64>, _>>()?;
        let archive_len = next(state)?;
        Ok(Archiving { ledger, offsets, outbox: Outbox::resume(archive_len) })
    }

    fn archive_len(&self) -> u64 {
        self.outbox.length()
    }

    fn take_archive(&mut self, out: &mut Vec<u8>) {
        self.outbox.take(out);
    }
}

/// The archive of a machine used without a journal: its records in memory.
#[derive(Default)]
struct InMemory(Vec<u8>);

impl ArchiveSource for InMemory {
    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError> {
        let bytes = self.0.get(offset as usize..).unwrap_or_default();
        Ok(journal::archive::decode_record(bytes).expect("a record the machine made").to_vec())
    }

    fn for_each_record(&self, _visit: &mut journal::archive::RecordVisitor<'_>) -> Result<(), JournalError> {
        unreachable!("the machine reads records by offset")
    }
}

fn commands(choices: &mut Choices) -> Vec<Batch> {
    let accounts = (1..=ACCOUNTS)
        .map(|id| NewAccount {
            id,
            user_data: 0,
            ledger: 1,
            code: 1,
            flags: if id == 1 { AccountFlags::empty() } else { AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS },
        })
        .collect();
    let mut all = vec![Batch { timestamp: SECOND, command: Command::CreateAccounts(accounts) }];
    for n in 1..COMMANDS as u64 {
        let timestamp = (n + 1) * SECOND;
        let transfers = (0..1 + choices.below(6))
            .map(|i| {
                let debit = if choices.below(3) == 0 { 1 } else { 2 + u128::from(choices.below(ACCOUNTS as u64 - 1)) };
                let credit = 2 + u128::from(choices.below(ACCOUNTS as u64 - 1));
                Transfer {
                    // Ids carry their time: the ledger's horizon sends old transfers to the history file.
                    id: (u128::from(timestamp) << 64) | u128::from(i),
                    debit_account_id: debit,
                    credit_account_id: if credit == debit { 1 } else { credit },
                    amount: 1 + u128::from(choices.below(5_000)),
                    ledger: 1,
                    code: 1,
                    ..Transfer::default()
                }
            })
            .collect();
        all.push(Batch { timestamp, command: Command::CreateTransfers(transfers) });
    }
    all
}

fn options(disk: &SimulatedDisk) -> Options {
    Options {
        snapshot_every_records: 7,
        // Transfers older than 5 s leave memory: reads of them go to the history file.
        ledger: LedgerConfig { id_horizon_ns: Some(5 * SECOND) },
        archive_frame_bytes: 256,
        background_threads: false,
        disk: Arc::new(disk.clone()),
        ..Options::default()
    }
}

/// The machine the first `count` commands make, applied in memory as the
/// journal applies them (transfers leave memory once past the horizon and
/// collected), and every transfer they stored.
fn reference(commands: &[Batch], count: usize) -> (Archiving, Vec<Transfer>) {
    let mut machine = Archiving::create(LedgerConfig { id_horizon_ns: Some(5 * SECOND) });
    machine.ledger.set_eviction_floor(0);
    let mut archive = InMemory::default();
    let mut transfers = Vec::new();
    for command in &commands[..count] {
        machine.apply(command, &archive).unwrap();
        machine.take_archive(&mut archive.0);
        let stored = machine.ledger.stored_transfers_from(transfers.len() as u64);
        transfers.extend(stored.map(|stored| stored.transfer));
        machine.ledger.set_eviction_floor(machine.ledger.transfer_count());
    }
    (machine, transfers)
}

/// The node: the journal and its machine, driven as the writer drives them
/// (a group appended in one write and sync, then applied), on one thread so
/// that a seed's groups and crash points are always the same.
struct Node {
    journal: Journal<Archiving>,
    machine: Archiving,
}

impl Node {
    /// Appends `group` as one group, applies it, writes the history and
    /// archive and takes a snapshot when due; `false` when it stopped (the
    /// append's outcome is then unknown: it is not acknowledged).
    fn commit(&mut self, group: &[Batch]) -> bool {
        let commands: Vec<&Batch> = group.iter().collect();
        if self.journal.append(&commands).is_err() {
            return false;
        }
        for command in group {
            if self.journal.apply(&mut self.machine, command).is_err() {
                return false;
            }
        }
        let written = self.journal.write_archive().and_then(|()| self.journal.write_history());
        written.is_ok() && (!self.journal.snapshot_due() || self.journal.snapshot(&self.machine).is_ok())
    }

    /// The transfer at `position`: from memory, else from the history file.
    fn transfer(&self, position: u64) -> Result<Option<Transfer>, JournalError> {
        match self.machine.ledger.stored_transfer(position) {
            Some(stored) => Ok(Some(stored.transfer)),
            None => self.journal.history_reader().read(position).map(|stored| Some(stored.transfer)),
        }
    }
}

/// Opens the node as a supervisor restarts it: a start a fault or a power
/// cut spoiled is followed by a crash and another start.
fn start(disk: &SimulatedDisk, seed: u64) -> (Node, journal::RecoveryReport) {
    let mut failures = Vec::new();
    for _ in 0..STARTS_MAX {
        let faults_before = disk.faults_injected();
        match Journal::<Archiving>::open(Path::new(DIRECTORY), options(disk)) {
            Ok((journal, machine, report)) => return (Node { journal, machine }, report),
            Err(error) if disk.faults_injected() > faults_before || disk.powered_off() => {
                failures.push(error.to_string());
                disk.crash();
            }
            Err(error) => panic!("seed {seed}: recovery failed with no fault to blame: {error}\n{:?}", disk.events()),
        }
    }
    panic!("seed {seed}: {STARTS_MAX} starts in a row failed: {failures:?}")
}

/// Starts the node and checks what it recovered. A read a fault spoiled
/// during the start (a flipped bit of an index it keeps) may fail later
/// reads of what that index points to, as a bad read at boot does on a
/// real machine: the answer is another start, never a wrong value.
fn start_checked(disk: &SimulatedDisk, seed: u64, commands: &[Batch], acknowledged: usize) -> (Node, usize) {
    let mut problems = Vec::new();
    for _ in 0..STARTS_MAX {
        let faults_before = disk.faults_injected();
        let (node, report) = start(disk, seed);
        let logged = usize::try_from(report.last_sequence).unwrap();
        assert!(logged >= acknowledged, "seed {seed}: {acknowledged} acknowledged, {logged} recovered");
        match check_recovered(&node, commands, logged, seed) {
            Ok(()) => return (node, logged),
            Err(problem) if disk.faults_injected() > faults_before => {
                problems.push(problem);
                drop(node);
                disk.crash();
            }
            Err(problem) => panic!("seed {seed}: {problem} with no fault to blame ({:?})", disk.events()),
        }
    }
    panic!("seed {seed}: {STARTS_MAX} starts in a row could not read what they recovered: {problems:?}")
}

/// The recovered node holds exactly what the first `count` commands make:
/// the same digest, every transfer from the history file, every record.
/// (`Err`: a read failed however often it was tried.)
fn check_recovered(node: &Node, commands: &[Batch], count: usize, seed: u64) -> Result<(), String> {
    let (expected, transfers) = reference(commands, count);
    assert_eq!(
        journal::digest(&node.machine).unwrap(),
        journal::digest(&expected).unwrap(),
        "seed {seed}: the state after {count} commands"
    );
    assert_eq!(node.machine.ledger.transfer_count(), transfers.len() as u64);
    for (position, want) in transfers.iter().enumerate() {
        let position = position as u64;
        // A flipped bit on the way is caught by the checksum: read again.
        let stored = read_again(|| node.transfer(position), || format!("transfer {position}"))?;
        assert_eq!(stored.as_ref(), Some(want), "seed {seed}: transfer {position}");
    }
    let archive = node.journal.archive_reader();
    for (index, &offset) in node.machine.offsets.iter().enumerate() {
        let read = read_again(|| archive.read_record(offset), || format!("archive record {index}"))?;
        assert_eq!(read, record_of(index as u64), "seed {seed}: archive record {index}");
    }
    Ok(())
}

/// A read whose flipped bits the checksums catch, until one reads right.
fn read_again<T>(read: impl Fn() -> Result<T, JournalError>, what: impl Fn() -> String) -> Result<T, String> {
    let mut errors = Vec::new();
    for _ in 0..READS_MAX {
        match read() {
            Ok(value) => return Ok(value),
            Err(error @ JournalError::Corrupt { .. }) => errors.push(error.to_string()),
            Err(error) => return Err(format!("{}: {error}", what())),
        }
    }
    Err(format!("{}: {READS_MAX} reads failed: {errors:?}", what()))
}

/// One seed: submit groups of commands, crash at a chosen change, recover
/// and check, again.
fn run_seed(seed: u64) -> (usize, usize) {
    let mut choices = Choices::new(seed);
    let disk = SimulatedDisk::new(seed ^ 0xd15c);
    if choices.below(3) == 0 {
        disk.set_faults(Faults { sync_fails_bps: 100, write_full_bps: 100, read_flips_bps: 100 });
    }
    let commands = commands(&mut choices);
    let mut acknowledged = 0usize;
    let mut crashes = 0;
    for _ in 0..CRASHES_PER_SEED {
        let (mut node, logged) = start_checked(&disk, seed, &commands, acknowledged);
        acknowledged = logged;
        // The power goes within the next changes (or a fault stops the writer first).
        disk.cut_power_after(choices.below(150));
        while acknowledged < commands.len() {
            // Groups of one to eight commands: one write and one sync each.
            let end = (acknowledged + 1 + choices.below(GROUP_COMMANDS_MAX) as usize).min(commands.len());
            if !node.commit(&commands[acknowledged..end]) {
                break;
            }
            acknowledged = end;
        }
        drop(node);
        disk.crash();
        crashes += 1;
    }
    let (_node, logged) = start_checked(&disk, seed, &commands, acknowledged);
    (crashes, logged)
}

#[test]
fn every_acknowledged_command_survives_every_crash_point() {
    let mut crash_points = 0;
    let mut recovered = 0;
    // More seeds for a long hunt: `SIMULATED_CRASH_SEEDS=100000`.
    let seeds = std::env::var("SIMULATED_CRASH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SEEDS);
    for seed in 0..seeds {
        let (crashes, logged) = run_seed(seed);
        crash_points += crashes;
        recovered += logged;
    }
    eprintln!("{crash_points} crash points over {seeds} seeds; {recovered} commands recovered in the end");
    assert!(crash_points as u64 >= seeds * CRASHES_PER_SEED as u64);
    // The power cuts leave room to work: most seeds get well into their commands.
    assert!(recovered as u64 > seeds * COMMANDS as u64 / 3, "{recovered} commands recovered");
}

/// A command logged but not applied — its apply met a read the disk
/// spoiled — is answered as not known yet, never as not done: the next
/// start applies it.
#[test]
fn a_command_logged_but_not_applied_is_answered_as_unknown_and_applied_at_the_next_start() {
    let disk = SimulatedDisk::new(7);
    let commands = commands(&mut Choices::new(7));
    let options = Options { snapshot_every_records: u64::MAX, ..options(&disk) };
    let (store, _) = journal::Durable::<Archiving>::open(Path::new(DIRECTORY), options.clone()).unwrap();
    // Command n reads record n / 2 back: the first 80 read records 0..40,
    // so the 81st reads record 40 from the disk, not from the frames cached.
    for command in &commands[..80] {
        store.submit(command.clone()).unwrap();
    }
    store.wait_until_idle();
    disk.set_faults(Faults { read_flips_bps: 10_000, ..Faults::default() });
    let answer = store.submit(commands[80].clone());
    assert!(matches!(answer, Err(JournalError::LoggedNotApplied(_))), "{answer:?}");
    assert!(matches!(store.submit(commands[81].clone()), Err(JournalError::Failed(_))), "the node stopped");
    drop(store);
    disk.set_faults(Faults::default());
    let (store, report) = journal::Durable::<Archiving>::open(Path::new(DIRECTORY), options).unwrap();
    assert_eq!(report.last_sequence, 81, "the command the node could not apply is in the log");
    let (expected, _) = reference(&commands, 81);
    assert_eq!(store.digest().unwrap(), journal::digest(&expected).unwrap());
}
