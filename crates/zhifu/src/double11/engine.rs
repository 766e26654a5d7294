//! The in-process driver: the workload's operations become platform
//! commands submitted to the durable store (the code `zhifu serve` runs,
//! without HTTP), pipelined: the driver keeps submitting while the journal's
//! writer commits groups, and each answer is tallied as it arrives.
//!
//! Resuming after a crash: the command stream is a function of the seed (and
//! of state that only ever grows: a trade once paid stays paid), so the
//! driver regenerates it, skips the commands the journal already holds, and
//! goes on from the first one it lost. Which operations made those commands
//! (a follow-up of a trade never paid makes none) it learns from its last
//! checkpoint (`double11.progress`: operations and commands, written every
//! few seconds once those commands are durable): it skips that many
//! operations by count and works out only the few after it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use journal::{Durable, JournalError, Options, StateMachine, WriterStats};
use ledger::LedgerConfig;
use platform::accounts::{self, REVENUE};
use platform::calendar::Date;
use platform::{
    Action, CampaignNumber, Command, Fen, NewCampaign, NewTrade, Outcome, PartyKind, PartyNumber, PaySource, Platform,
    RedPacketNumber, Rejection, SplitMode, Timestamp, TradeMode, TradeStatus,
};
use sim::{Mode, Op, RefundShare, TimedOp, Workload};

use super::paid::{PaidTrade, PaidTrades};
use super::progress::Progress;
use super::replies::Replies;
use super::tally::{Stall, Tally};
use super::{DAY_START_NANOS, LedgerFigures, PlatformCheck, RunOutput};

/// Settlement ticks sent at once, without waiting for each one's answer:
/// 64 ticks do at most 262,144 items, about a second of the writer's work.
const TICKS_AT_ONCE_MAX: u32 = 64;

/// Commands waiting for the writer; bounds the latency of each.
const QUEUE_COMMANDS_MAX: usize = 8_192;
/// Commands in one group commit (one write, one fdatasync).
const GROUP_COMMANDS_MAX: usize = 2_048;
/// The platform state is large (every trade of the day) and a snapshot stops
/// the writer while it is written (seconds at this size), so snapshots are
/// rare: at least this many commands apart (a resumed run replays that many)...
const SNAPSHOT_EVERY_COMMANDS: u64 = 10_000_000;
/// ...and as the state grows, more: a snapshot waits until the log since the
/// last one is half its size, so snapshots cost at most twice the log (at
/// full scale the state is gigabytes, the log about 50 bytes a command).
const SNAPSHOT_LOG_PERCENT: u64 = 50;
/// ...or sooner where a little log is much work: once applying the commands
/// since the last snapshot took ten times as long as writing it (the
/// settlement's ticks, a few bytes each, re-archive millions of trades). A
/// resume replays that work about twice as slowly as the run applied it
/// (cold caches, a fresh heap): at twenty, the full day's replay took 7.6
/// minutes. The rule does not wait for `SNAPSHOT_EVERY_COMMANDS`.
const SNAPSHOT_APPLY_MULTIPLE: u32 = 10;
/// Transfers older than this (clock time) leave memory for the history file.
/// A cache size only (the platform makes transfer ids from the command's
/// time, so none is retried later), but longer than the ticks after the
/// day are apart (`sim::SETTLE_TICK_NANOS`): a tick settles what fell due
/// since the last one, with transfer ids of when each fell due. Short,
/// because at the midnight peak every minute of it is millions of transfers.
const MEMORY_HORIZON_NANOS: u64 = 7 * ledger::NANOS_PER_MINUTE;
const _: () = assert!(MEMORY_HORIZON_NANOS > sim::workload::SETTLE_TICK_NANOS);
/// The checkpoint a resumed run skips to (see the module).
pub(super) const CHECKPOINT_FILE: &str = "double11.progress";
/// How often a checkpoint is taken (`--checkpoint-every-ms`): a resumed
/// run works out at most this much of the day's operations again (a full
/// day's 415 M commands, worked out one by one, took half an hour to skip).
pub const CHECKPOINT_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);

pub struct EngineOptions<'a> {
    pub store: &'a server::StoreConfig,
    pub data_dir: &'a Path,
    /// The workload's seed: it also names the simulated parties' key hashes.
    pub seed: u64,
    /// Abort the process once this share of the payments has been submitted
    /// (by this process: a resumed run counts from where it resumed).
    pub checkpoint_every: Duration,
    /// Abort the process once this settlement tick is answered, before the
    /// ticks that finish it and its checkpoint (fault injection).
    pub crash_in_settlement: Option<u64>,
    pub crash_at_share: Option<f64>,
}

/// What a command was, for tallying its answer.
#[derive(Clone, Copy)]
enum Kind {
    Setup(&'static str),
    /// The simulation's trade, how many follow-ups will look it up, and
    /// whether a refund is among them.
    Pay {
        trade: u64,
        follow_ups: u8,
        refund_follows: bool,
    },
    Ship,
    Confirm,
    Refund {
        trade: u64,
    },
    Transfer,
    TopUp,
    FundSubscribe,
    Withdraw,
    SendRedPacket {
        packet: u64,
    },
    ClaimRedPacket,
    /// `quiet`: a settlement tick sent without waiting to see what the ticks
    /// before it left, as the state forecast nothing due by its time (see
    /// `Driver::quiet_before`): its answer must say nothing is left due.
    Tick {
        quiet: bool,
    },
    FundYield,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Setup(name) => name,
            Kind::Pay { .. } => "payment",
            Kind::Ship => "ship",
            Kind::Confirm => "confirm",
            Kind::Refund { .. } => "refund",
            Kind::Transfer => "transfer",
            Kind::TopUp => "top-up",
            Kind::FundSubscribe => "fund subscription",
            Kind::Withdraw => "withdrawal",
            Kind::SendRedPacket { .. } => "red packet",
            Kind::ClaimRedPacket => "red packet claim",
            Kind::Tick { .. } => "tick",
            Kind::FundYield => "fund yield",
        }
    }
}

/// The made-up key hash of a simulated party: these parties act only in
/// process, so no API key belongs to them; the hash finds them again after
/// a restart. Its bits spread evenly, as a real key's SHA-256 does (the
/// platform's key table counts on it): SplitMix64 words from the party's
/// kind and index, which the first word alone tells apart.
pub fn key_hash(kind: PartyKind, index: u32, seed: u64) -> [u8; 32] {
    let merchant = u64::from(kind == PartyKind::Merchant);
    let mut state = (u64::from(index) << 1 | merchant) ^ seed.rotate_left(33);
    let mut hash = [0u8; 32];
    for word in hash.chunks_exact_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        word.copy_from_slice(&(mixed ^ (mixed >> 31)).to_be_bytes());
    }
    hash
}

pub fn out_trade_no(trade: u64) -> String {
    format!("d11-{trade}")
}

fn packet_greeting(packet: u64) -> String {
    format!("d11-packet-{packet}")
}

struct Driver {
    store: Durable<Platform>,
    seed: u64,
    tally: Tally,
    /// What the writer's replies leave (each reply holds one reference).
    replies: Arc<Replies<Answer>>,
    /// The list the answers were tallied from, empty, to be swapped in next.
    answers_spare: Vec<Answer>,
    /// Commands whose answers are tallied.
    tallied: u64,
    /// The platform numbers of the simulation's red packets.
    packets: HashMap<u64, RedPacketNumber>,
    /// Paid trades with follow-ups still to come, by the simulation's serial.
    paid: PaidTrades,
    /// Trade serial → the sequence of the last refund submitted on it, while
    /// more follow-ups will come (a later refund waits for it: see
    /// `paid_trade`).
    last_refund: HashMap<u64, u64>,
    resume_after: u64,
    plan: sim::Plan,
    merchants: Vec<PartyNumber>,
    buyers: Vec<PartyNumber>,
    campaign: Option<CampaignNumber>,
    /// Commands generated so far (skipped ones included).
    generated: u64,
    submitted: u64,
    /// Payments with follow-ups, by trade serial, and red packets' sendings,
    /// by packet serial, perhaps not answered yet.
    payments: InFlight,
    packets_sent: InFlight,
    /// The workload time before which nothing falls due, as the state said
    /// when last read with nothing due at a settlement tick's time, while
    /// only settlement ticks have been sent since (any other command may make
    /// something due). Ticks before it go without a wait each: waiting would
    /// show nothing due after each and send the same commands (each answer
    /// proves it: `Kind::Tick { quiet }`), where a wait was a group commit
    /// and a checkpoint's two syncs for each of twelve days' empty tick times.
    quiet_before: Option<u64>,
    /// Quiet ticks were sent since the last checkpoint: before any other
    /// command they are waited for and a checkpoint written past them (see
    /// `Pass::resume_settlement_tick`).
    quiet_sent: bool,
    /// The workload time of the journal's last command, when the run began.
    journal_ends_at: u64,
}

/// A command's answer, as the writer filed it for the driver to tally.
struct Answer {
    sequence: u64,
    kind: Kind,
    /// The simulated minute of the day it was submitted in.
    minute: Option<usize>,
    submitted: Instant,
    answered: Instant,
    result: Result<Outcome, JournalError>,
}

/// Answers are tallied at the latest when this many wait (the driver
/// tallies them when it needs one, or every so often).
const ANSWERS_UNTALLIED_MAX: u64 = 4_096;

/// Which commands a later one waits for.
#[derive(Clone, Copy)]
enum Awaits {
    Payment,
    Packet,
}

/// Commands whose answers later commands need, by the simulation's serial:
/// each one's sequence, kept until its answer is tallied (those tallied are
/// forgotten as new ones come: at most a queue's worth and the answers not
/// yet tallied).
#[derive(Default)]
struct InFlight {
    sequence_of: HashMap<u64, u64>,
    in_order: VecDeque<(u64, u64)>,
}

impl InFlight {
    fn expect(&mut self, serial: u64, sequence: u64, tallied: u64) {
        while let Some(&(oldest, oldest_serial)) = self.in_order.front() {
            if oldest > tallied {
                break;
            }
            self.in_order.pop_front();
            // A serial comes once (a trade paid once, a packet sent once).
            self.sequence_of.remove(&oldest_serial);
        }
        self.in_order.push_back((sequence, serial));
        self.sequence_of.insert(serial, sequence);
    }

    fn sequence_of(&self, serial: u64) -> Option<u64> {
        self.sequence_of.get(&serial).copied()
    }
}

pub fn run(workload: Workload, options: &EngineOptions<'_>, progress: &Progress) -> anyhow::Result<RunOutput> {
    let plan = workload.plan().clone();
    let (store, recovery) = open_store(options, journal_options(&plan))?;
    let mut driver = Driver::new(store, options.seed, plan, recovery.last_sequence);
    if driver.resume_after > 0 {
        progress.note(&format!(
            "resuming: the journal holds {} commands of this run (the snapshot read in {:.1} s, then {} \
             commands replayed in {:.1} s); going on from there",
            driver.resume_after,
            recovery.snapshot_read.as_secs_f64(),
            recovery.records_replayed,
            recovery.replay.as_secs_f64(),
        ));
        driver.restore_packets();
    }
    let mut pass = Pass::new(options, driver.plan.payments);
    let mut workload = workload.into_iter();
    let skipped_operations = pass.skip_to_checkpoint(&mut workload, &mut driver, progress)?;
    for timed in workload {
        pass.step(&timed, &mut driver, progress)?;
    }
    driver.wait_for(driver.submitted, Stall::Everything)?;
    if pass.in_setup {
        bail!("the workload had no day");
    }
    driver.tick_until_nothing_due(pass.last_at)?;
    driver.tally.day_finished = Some(Instant::now());
    progress.finish();
    driver.finish(skipped_operations, pass.started)
}

/// The journal's settings for a day of this plan.
fn journal_options(plan: &sim::Plan) -> Options {
    Options {
        // Every party's wallet and the Yu'e Bao holdings of three buyers in
        // four (two in five subscribe at the setup, more during the day: 54%
        // hold one by a full day's end), reserved at once so that the
        // accounts grow by copying only on a day far from its plan. Not every
        // buyer's: the account index is a hash table, whose room is touched
        // all over as it fills (room for 16 M accounts took 1.1 GB of a full
        // day, where 12.4 M are made and 0.55 GB holds them).
        accounts_capacity: (plan.merchants as usize + plan.buyers as usize * 7 / 4).saturating_add(1_024),
        snapshot_every_records: SNAPSHOT_EVERY_COMMANDS,
        snapshot_log_percent: SNAPSHOT_LOG_PERCENT,
        snapshot_apply_multiple: SNAPSHOT_APPLY_MULTIPLE,
        queue_batches_max: QUEUE_COMMANDS_MAX,
        group_batches_max: GROUP_COMMANDS_MAX,
        ledger: LedgerConfig { id_horizon_ns: Some(MEMORY_HORIZON_NANOS) },
        ..Options::default()
    }
}

/// One pass over the workload: where it is, and what it injects.
struct Pass<'a> {
    options: &'a EngineOptions<'a>,
    checkpoints: Checkpoints,
    /// Operations taken from the workload so far.
    operations: u64,
    in_setup: bool,
    last_at: u64,
    started: Instant,
    payments_submitted: u64,
    settlement_ticks: u64,
    crash_after_payments: Option<u64>,
    /// A resumed run that found no checkpoint to skip to.
    without_checkpoint: bool,
}

impl<'a> Pass<'a> {
    fn new(options: &'a EngineOptions<'a>, payments: u64) -> Pass<'a> {
        let crash_after_payments = options.crash_at_share.map(|share| (payments as f64 * share).ceil() as u64);
        Pass {
            options,
            checkpoints: Checkpoints::new(options.data_dir, options.checkpoint_every),
            operations: 0,
            in_setup: true,
            last_at: 0,
            started: Instant::now(),
            payments_submitted: 0,
            settlement_ticks: 0,
            crash_after_payments,
            without_checkpoint: false,
        }
    }

    /// On a resume, takes the operations up to the last checkpoint from
    /// the workload by count, without working them out; returns how many.
    fn skip_to_checkpoint(
        &mut self,
        workload: &mut impl Iterator<Item = TimedOp>,
        driver: &mut Driver,
        progress: &Progress,
    ) -> anyhow::Result<u64> {
        let Some(checkpoint) = self.checkpoints.read()? else {
            self.without_checkpoint = driver.resume_after > 0;
            return Ok(0);
        };
        if checkpoint.commands > driver.resume_after {
            bail!(
                "the checkpoint counts {} commands, the journal holds {}: the run cannot be resumed safely \
                 (--fresh starts it again)",
                checkpoint.commands,
                driver.resume_after
            );
        }
        progress.note(&format!(
            "skipping {} operations ({} commands) by count, to the last checkpoint",
            checkpoint.operations, checkpoint.commands
        ));
        for timed in workload.by_ref().take(usize::try_from(checkpoint.operations).unwrap_or(usize::MAX)) {
            if progress.advance(&timed, matches!(timed.op, Op::Pay(_))) {
                progress.show(&timed, &driver.tally);
            }
            self.in_setup = timed.setup;
            self.last_at = timed.at;
        }
        self.operations = checkpoint.operations;
        driver.generated = checkpoint.commands;
        if !self.in_setup {
            driver.resolve_campaign();
            driver.tally.day_started = Some(Instant::now());
        }
        Ok(checkpoint.operations)
    }

    /// One operation of the workload: its command worked out, and
    /// submitted unless the journal holds it already.
    fn step(&mut self, timed: &TimedOp, driver: &mut Driver, progress: &Progress) -> anyhow::Result<()> {
        self.last_at = timed.at;
        let (durable, failed) = (driver.replies.completed(), driver.replies.failed());
        self.checkpoints.at_operation(self.operations, driver.generated, durable, failed);
        self.operations += 1;
        if self.in_setup && !timed.setup {
            self.in_setup = false;
            driver.wait_for(driver.submitted, Stall::Everything)?;
            driver.resolve_campaign();
            driver.tally.day_started = Some(Instant::now());
            progress.setup_done(self.started.elapsed());
        }
        let Some((action, mut kind)) = driver.action(timed)? else { return Ok(()) };
        driver.generated += 1;
        let is_payment = matches!(kind, Kind::Pay { .. });
        if progress.advance(timed, is_payment) {
            progress.show(timed, &driver.tally);
        }
        // After the day the clock's ticks do the settling (ten days on, each
        // auto-confirms millions of escrow trades at full scale): one at a
        // time, so that progress shows how far the settling has got, and
        // each followed by more at the same time while more is due (a tick
        // does a bounded share), as the server's clock does. A tick before
        // anything falls due goes without a wait (`quiet_before`).
        let settling = timed.is_settlement_tick();
        let quiet = settling && driver.quiet_before.is_some_and(|before| timed.at < before);
        if quiet {
            kind = Kind::Tick { quiet: true };
        }
        if driver.generated <= driver.resume_after {
            if settling {
                self.resume_settlement_tick(timed.at, driver)?;
            }
            return Ok(());
        }
        if !settling && driver.quiet_sent {
            self.checkpoint_past_quiet_ticks(driver)?;
        }
        self.payments_submitted += u64::from(is_payment);
        driver.submit(timed, action, kind)?;
        driver.quiet_sent |= quiet;
        if settling {
            if !quiet {
                driver.wait_for(driver.submitted, Stall::Everything)?;
            }
            self.settlement_ticks += 1;
            self.crash_if_asked_in_settlement(driver, quiet)?;
            if !quiet {
                driver.settle_at(timed.at, self.operations, &mut self.checkpoints)?;
            }
        }
        if is_payment && self.crash_after_payments.is_some_and(|at| self.payments_submitted >= at) {
            let answered = driver.replies.completed();
            eprintln!(
                "double11: crashing on purpose after {} payments submitted; {answered} commands acknowledged",
                self.payments_submitted
            );
            std::process::abort();
        }
        Ok(())
    }

    /// Before a command other than a settlement tick, after quiet ticks:
    /// waits for them and writes a checkpoint past them (before this
    /// operation), so that a resume never meets a quiet tick followed by
    /// another command of its time (the day's fund yield comes with the
    /// last tick).
    fn checkpoint_past_quiet_ticks(&mut self, driver: &mut Driver) -> anyhow::Result<()> {
        driver.wait_for(driver.submitted, Stall::Everything)?;
        // This operation and its command are counted already: the checkpoint is before them.
        let checkpoint = Checkpoint { operations: self.operations - 1, commands: driver.generated - 1 };
        let path = self.checkpoints.path.display().to_string();
        self.checkpoints.write(checkpoint).with_context(|| format!("write {path}"))?;
        driver.quiet_sent = false;
        Ok(())
    }

    /// A settlement tick the journal holds, on a resume. A tick that waited
    /// was followed by nothing but its followers until the checkpoint after
    /// them, so with no checkpoint past it the journal's commands from here
    /// are this tick's. A quiet one (sent without a wait) had no followers,
    /// and what the journal holds after it before the next checkpoint is
    /// ticks of later times: with a command of a later time in the journal
    /// it is counted like any command. (The checkpoint is written after
    /// every tick that waited: without any, the journal's count cannot be
    /// trusted to mean this.)
    fn resume_settlement_tick(&mut self, at: u64, driver: &mut Driver) -> anyhow::Result<()> {
        if self.without_checkpoint {
            bail!(
                "the journal holds settlement ticks but the run left no checkpoint: it cannot be resumed safely (--fresh starts it again)"
            );
        }
        // A later command in the journal: this tick was quiet (one that
        // waited with a later command is behind the checkpoint past it).
        if at < driver.journal_ends_at {
            return Ok(());
        }
        driver.generated = driver.resume_after;
        driver.settle_at(at, self.operations, &mut self.checkpoints)
    }

    /// Aborts once the settlement tick asked for is durable, before the
    /// ticks that would follow it and its checkpoint.
    fn crash_if_asked_in_settlement(&self, driver: &mut Driver, quiet: bool) -> anyhow::Result<()> {
        if self.options.crash_in_settlement == Some(self.settlement_ticks) {
            driver.wait_for(driver.submitted, Stall::Everything)?;
            eprintln!(
                "double11: crashing on purpose after settlement tick {}{}",
                self.settlement_ticks,
                if quiet { " (sent without a wait)" } else { "" }
            );
            std::process::abort();
        }
        Ok(())
    }
}

/// Where a resumed run can skip to by count: this many of the workload's
/// operations made this many commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checkpoint {
    operations: u64,
    commands: u64,
}

/// Takes checkpoints as the run goes: one is noted every
/// `CHECKPOINT_INTERVAL` at an operation's start, and written once every
/// command up to it is durable (so a checkpoint never counts a command the
/// journal may not hold).
struct Checkpoints {
    path: std::path::PathBuf,
    every: Duration,
    noted_at: Instant,
    waiting: Option<Checkpoint>,
}

impl Checkpoints {
    fn new(data_dir: &Path, every: Duration) -> Checkpoints {
        Checkpoints { path: data_dir.join(CHECKPOINT_FILE), every, noted_at: Instant::now(), waiting: None }
    }

    /// The last checkpoint written, if one was (and reads whole).
    fn read(&self) -> anyhow::Result<Option<Checkpoint>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("read {}", self.path.display())),
        };
        let field = |name: &str| {
            text.split_whitespace().find_map(|part| part.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        match (field("operations"), field("commands")) {
            (Some(operations), Some(commands)) => Ok(Some(Checkpoint { operations, commands })),
            _ => {
                bail!("{} is damaged: the run cannot be resumed safely (--fresh starts it again)", self.path.display())
            }
        }
    }

    /// Before operation `operations` (0-based), with `commands` made so far
    /// and `durable` of them answered (`failed`: some answer was a failure,
    /// and no checkpoint is written past it).
    fn at_operation(&mut self, operations: u64, commands: u64, durable: u64, failed: bool) {
        if let Some(waiting) = self.waiting
            && waiting.commands <= durable
            && !failed
        {
            self.waiting = None;
            // A checkpoint that cannot be written costs a slower resume, nothing more.
            if let Err(error) = self.write(waiting) {
                eprintln!("double11: cannot write the checkpoint {}: {error}", self.path.display());
            }
        }
        if self.waiting.is_none() && self.noted_at.elapsed() >= self.every {
            self.waiting = Some(Checkpoint { operations, commands });
            self.noted_at = Instant::now();
        }
    }

    /// Replaces the checkpoint whole and durably (a new file, synced,
    /// renamed over the old).
    fn write(&mut self, checkpoint: Checkpoint) -> std::io::Result<()> {
        use std::io::Write as _;
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "operations={} commands={}", checkpoint.operations, checkpoint.commands)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        // The rename too: a resume that found an older checkpoint after a
        // settlement tick would count later commands as that tick's.
        if let Some(directory) = self.path.parent() {
            std::fs::File::open(directory)?.sync_all()?;
        }
        self.waiting = self.waiting.filter(|waiting| waiting.commands > checkpoint.commands);
        Ok(())
    }
}

/// The run's journal: on the data directory's files, or on PostgreSQL
/// (leading it: the run is its only writer).
fn open_store(
    options: &EngineOptions<'_>,
    journal_options: Options,
) -> anyhow::Result<(Durable<Platform>, journal::RecoveryReport)> {
    let directory = options.data_dir;
    let opened = match options.store {
        server::StoreConfig::Embedded => Durable::<Platform>::open(directory, journal_options),
        server::StoreConfig::Postgres { url } => {
            let log = journal::PostgresLog::connect(url, "zhifu double11", journal::postgres_lease_default())
                .context("connect to the store")?;
            Durable::<Platform>::open_with(directory, Box::new(log), journal_options).and_then(|(store, report)| {
                store.wait_to_lead(Duration::from_secs(60))?;
                Ok((store, report))
            })
        }
    };
    opened.with_context(|| format!("open the data directory {}", directory.display()))
}

impl Driver {
    fn new(store: Durable<Platform>, seed: u64, plan: sim::Plan, resume_after: u64) -> Driver {
        let journal_ends_at = store.read(|platform| platform.last_command_at()).nanos().saturating_sub(DAY_START_NANOS);
        Driver {
            store,
            seed,
            tally: Tally::new(),
            replies: Arc::new(Replies::new(resume_after)),
            answers_spare: Vec::new(),
            tallied: resume_after,
            packets: HashMap::new(),
            paid: PaidTrades::default(),
            last_refund: HashMap::new(),
            resume_after,
            plan,
            merchants: Vec::new(),
            buyers: Vec::new(),
            campaign: None,
            generated: 0,
            submitted: resume_after,
            payments: InFlight::default(),
            packets_sent: InFlight::default(),
            quiet_before: None,
            quiet_sent: false,
            journal_ends_at,
        }
    }

    /// After a crash: the red packets sent before it, by the simulation's serial.
    fn restore_packets(&mut self) {
        let packets: HashMap<u64, RedPacketNumber> = self.store.read(|platform| {
            platform
                .red_packets()
                .filter_map(|packet| {
                    let serial = packet.greeting.as_deref()?.strip_prefix("d11-packet-")?.parse().ok()?;
                    Some((serial, packet.number))
                })
                .collect()
        });
        self.packets = packets;
    }

    /// The run's figures, checks and counters, once every command is answered.
    fn finish(self, skipped_operations: u64, started: Instant) -> anyhow::Result<RunOutput> {
        let figures = self.figures()?;
        let writer: WriterStats = self.store.stats();
        let digest = self.store.digest().context("digest the state")?;
        if self.tallied != self.submitted {
            bail!("{} commands submitted, {} answers tallied", self.submitted, self.tallied);
        }
        self.forecasts_held()?;
        self.store.shutdown();
        Ok(RunOutput {
            tally: self.tally,
            figures: Some(figures),
            digest: Some(digest),
            resumed_after_commands: self.resume_after,
            resume_skipped_operations: skipped_operations,
            writer,
            wall: started.elapsed(),
            server_check: None,
        })
    }

    /// Waits until `sequence` commands are answered and tallied; an error
    /// once any answer was a failure (checked first: what waits on an answer
    /// must not go on past a failed one, and a checkpoint must not count it).
    fn wait_for(&mut self, sequence: u64, why: Stall) -> anyhow::Result<()> {
        self.wait_answered(sequence, why)?;
        if self.tallied < sequence {
            self.tally_answers();
        }
        self.forecasts_held()
    }

    /// An error once a tick sent without a wait left something due.
    fn forecasts_held(&self) -> anyhow::Result<()> {
        match self.tally.quiet_ticks_left_due {
            0 => Ok(()),
            ticks => bail!(
                "{ticks} settlement ticks sent without waiting left something due at their time: the forecast \
                 of when anything falls due (Platform::first_due_of_anything) was wrong"
            ),
        }
    }

    /// Waits until `sequence` commands are answered (not tallied); a wait
    /// that stops the driver is counted under `why`.
    fn wait_answered(&mut self, sequence: u64, why: Stall) -> anyhow::Result<()> {
        if self.replies.completed() >= sequence && !self.replies.failed() {
            return Ok(());
        }
        let started = Instant::now();
        let waited = self.wait_until_answered(sequence);
        self.tally.stalls.record(why, started.elapsed());
        waited
    }

    fn wait_until_answered(&self, sequence: u64) -> anyhow::Result<()> {
        loop {
            // The count first: a failure is flagged before it is counted,
            // so the answers counted here cannot hide one.
            let completed = self.replies.completed();
            if self.replies.failed() {
                bail!("the journal failed; see the rejections above");
            }
            if completed >= sequence {
                return Ok(());
            }
            self.replies.sleep_until(sequence);
        }
    }

    /// A tick does a bounded share of what fell due (`TICK_ITEMS_MAX`):
    /// more ticks at the same time until nothing is due. As many as are
    /// certainly needed go at once (one group, applied back to back, where
    /// one at a time each waited for its own append and answer), then the
    /// state is asked again: the same ticks either way. Called with every
    /// command answered; notes when anything falls due next
    /// (`quiet_before`).
    fn tick_until_nothing_due(&mut self, at: u64) -> anyhow::Result<()> {
        let now = Timestamp::from_nanos(DAY_START_NANOS + at);
        loop {
            let ticks = self.store.read(|platform| {
                if platform.anything_due(now) {
                    Ok(platform.ticks_needed_at_least(now, TICKS_AT_ONCE_MAX).max(1))
                } else {
                    Err(platform.first_due_of_anything())
                }
            });
            let ticks = match ticks {
                Ok(ticks) => ticks,
                Err(first_due) => {
                    let workload_time = |due: Timestamp| due.nanos().saturating_sub(DAY_START_NANOS);
                    self.quiet_before = Some(first_due.map_or(u64::MAX, workload_time));
                    return Ok(());
                }
            };
            for _ in 0..ticks {
                let timed = TimedOp { at, op: Op::Tick, setup: false };
                self.generated += 1;
                self.submit(&timed, Action::Tick, Kind::Tick { quiet: false })?;
            }
            self.wait_for(self.submitted, Stall::Everything)?;
        }
    }

    /// After the settlement tick that is operation `operation` (one that
    /// waited): the ticks that finish what it left, then a checkpoint past
    /// them, written at once (a resumed run counts on finding one after
    /// every such tick whose followers all reached the journal).
    fn settle_at(&mut self, at: u64, operation: u64, checkpoints: &mut Checkpoints) -> anyhow::Result<()> {
        self.tick_until_nothing_due(at)?;
        let checkpoint = Checkpoint { operations: operation, commands: self.generated };
        checkpoints.write(checkpoint).with_context(|| format!("write {}", checkpoints.path.display()))?;
        self.quiet_sent = false;
        Ok(())
    }

    fn resolve_parties(&mut self) -> anyhow::Result<()> {
        let (seed, plan) = (self.seed, &self.plan);
        let (merchants, buyers) = self.store.read(|platform| {
            let find = |kind, index| platform.party_by_key_hash(&key_hash(kind, index, seed)).map(|p| p.number);
            let merchants: Option<Vec<PartyNumber>> =
                (0..plan.merchants).map(|i| find(PartyKind::Merchant, i)).collect();
            let buyers: Option<Vec<PartyNumber>> = (0..plan.buyers).map(|i| find(PartyKind::User, i)).collect();
            (merchants, buyers)
        });
        match (merchants, buyers) {
            (Some(merchants), Some(buyers)) => {
                self.merchants = merchants;
                self.buyers = buyers;
                Ok(())
            }
            _ => bail!("the setup did not create every party; is this data directory from another run?"),
        }
    }

    fn resolve_campaign(&mut self) {
        self.campaign =
            self.store.read(|platform| platform.campaigns().find(|c| c.name == "Double Eleven").map(|c| c.number));
    }

    /// A paid trade a follow-up refers to. Payments answered in this process
    /// left it in `paid` (so the driver never waits for the state's lock);
    /// one paid before a crash is read from the state, where a paid trade
    /// stays paid: either way the answer is the same on every run.
    fn paid_trade(&mut self, merchant: u32, trade: u64, refund: bool) -> anyhow::Result<Option<PaidTrade>> {
        // The payment's answer, and for a refund the last refund on this
        // trade, however recent: whether it was paid and what it refunded
        // are then known the same on every run. Only a refund reads what
        // was refunded, and only refunds change it: nothing else waits for
        // a trade's follow-ups (a wait empties the writer's queue).
        if let Some(sequence) = self.payments.sequence_of(trade) {
            self.wait_for(sequence, Stall::Payment)?;
        }
        if refund && let Some(&sequence) = self.last_refund.get(&trade) {
            self.wait_for(sequence, Stall::Refund)?;
        }
        if let Some(found) = self.paid.take_follow_up(trade) {
            return Ok(Some(found));
        }
        if self.resume_after == 0 {
            return Ok(None);
        }
        let merchant = self.merchants[merchant as usize];
        let out_trade_no = out_trade_no(trade);
        let found = self
            .store
            .read_with_archive(|platform, archive| platform.trade_by_out_trade_no(archive, merchant, &out_trade_no))?;
        Ok(found.filter(|t| t.paid_at.is_some()).map(|t| PaidTrade {
            number: t.number,
            follow_ups_left: 0,
            amounts: Some((t.paid_by_buyer().get(), t.refunded.get())),
        }))
    }

    /// The command an operation makes, if any (a follow-up of a trade never
    /// paid, or a claim of a packet never sent, makes none).
    fn action(&mut self, timed: &TimedOp) -> anyhow::Result<Option<(Action, Kind)>> {
        if !matches!(timed.op, Op::CreateMerchant { .. } | Op::CreateBuyer { .. }) && self.buyers.is_empty() {
            // Everything after the parties refers to them by number.
            self.wait_for(self.submitted, Stall::Everything)?;
            self.resolve_parties()?;
        }
        Ok(Some(match timed.op {
            Op::CreateMerchant { .. } | Op::CreateBuyer { .. } | Op::CreateCampaign { .. } => self.setup_action(timed),
            Op::TopUp { buyer, amount } => {
                let party = self.buyer_number(buyer)?;
                let kind = if timed.setup { Kind::Setup("top-up") } else { Kind::TopUp };
                (Action::TopUp { party, amount: Fen::new(amount), bank: "ICBC".to_string() }, kind)
            }
            Op::FundSubscribe { buyer, amount } => {
                let party = self.buyer_number(buyer)?;
                let kind = if timed.setup { Kind::Setup("fund subscription") } else { Kind::FundSubscribe };
                (Action::FundSubscribe { party, amount: Fen::new(amount) }, kind)
            }
            Op::Pay(payment) => {
                if payment.follow_ups > 0 {
                    self.expect_answer(Awaits::Payment, payment.trade);
                }
                self.pay_action(&payment)
            }
            Op::Ship { .. } | Op::Confirm { .. } | Op::Refund { .. } => match self.follow_up_action(timed)? {
                Some(made) => made,
                None => return Ok(None),
            },
            Op::Transfer { from, to, amount } => (
                Action::Transfer {
                    from: self.buyers[from as usize],
                    to: self.buyers[to as usize],
                    amount: Fen::new(amount),
                    memo: None,
                },
                Kind::Transfer,
            ),
            Op::Withdraw { merchant, amount } => (
                Action::Withdraw { party: self.merchants[merchant as usize], amount: Fen::new(amount) },
                Kind::Withdraw,
            ),
            Op::SendRedPacket { sender, packet, total, count } => {
                self.expect_answer(Awaits::Packet, packet);
                (
                    Action::CreateRedPacket {
                        sender: self.buyers[sender as usize],
                        total: Fen::new(total),
                        count,
                        mode: SplitMode::Random,
                        greeting: Some(packet_greeting(packet)),
                    },
                    Kind::SendRedPacket { packet },
                )
            }
            Op::ClaimRedPacket { packet, claimer } => {
                // The packet's sending answered: its number is then known the same on every run.
                if let Some(sequence) = self.packets_sent.sequence_of(packet) {
                    self.wait_for(sequence, Stall::Packet)?;
                }
                let Some(number) = self.packets.get(&packet).copied() else { return Ok(None) };
                (Action::ClaimRedPacket { packet: number, user: self.buyers[claimer as usize] }, Kind::ClaimRedPacket)
            }
            Op::Tick => (Action::Tick, Kind::Tick { quiet: false }),
            Op::FundYield { annual_rate_bps } => {
                (Action::FundYield { date: Date::of_nanos(DAY_START_NANOS), annual_rate_bps }, Kind::FundYield)
            }
        }))
    }

    /// The parties and the day's campaign.
    fn setup_action(&self, timed: &TimedOp) -> (Action, Kind) {
        let party = |kind, index: u32, name: String| Action::CreateParty {
            kind,
            name,
            key_hash: key_hash(kind, index, self.seed),
            fee_rate_bps: None,
            webhook_url: None,
            webhook_secret: String::new(),
            app_public_key: None,
        };
        match timed.op {
            Op::CreateMerchant { merchant } => {
                (party(PartyKind::Merchant, merchant, format!("shop {merchant}")), Kind::Setup("merchant"))
            }
            Op::CreateBuyer { buyer } => {
                (party(PartyKind::User, buyer, format!("buyer {buyer}")), Kind::Setup("buyer"))
            }
            Op::CreateCampaign { budget, discount, min_spend, per_user_limit } => (
                Action::CreateCampaign(NewCampaign {
                    sponsor: None,
                    name: "Double Eleven".to_string(),
                    budget: Fen::new(budget),
                    discount: Fen::new(discount),
                    min_spend: Fen::new(min_spend),
                    per_user_limit,
                    starts_at: Timestamp::from_nanos(DAY_START_NANOS),
                    ends_at: Timestamp::from_nanos(DAY_START_NANOS + sim::DAY_NANOS),
                }),
                Kind::Setup("campaign"),
            ),
            _ => unreachable!("setup_action is given setup operations only"),
        }
    }

    /// A payment: the trade made and paid in one command.
    fn pay_action(&self, payment: &sim::Payment) -> (Action, Kind) {
        let trade = NewTrade {
            merchant: self.merchants[payment.merchant as usize],
            out_trade_no: out_trade_no(payment.trade),
            amount: Fen::new(payment.amount),
            subject: "Double Eleven order".to_string(),
            mode: if payment.mode == Mode::Escrow { TradeMode::Escrow } else { TradeMode::Instant },
            buyer: None,
            auto_confirm_days: None,
            expire_minutes: None,
            campaign: if payment.campaign { self.campaign } else { None },
            notify_url: None,
            passback_params: None,
        };
        let source = if payment.from_fund { PaySource::Fund } else { PaySource::Balance };
        let buyer = self.buyers[payment.buyer as usize];
        let kind =
            Kind::Pay { trade: payment.trade, follow_ups: payment.follow_ups, refund_follows: payment.refund_follows };
        (Action::CreateAndPayTrade { trade, buyer, source, coupon: None }, kind)
    }

    /// Notes, before it is submitted, that the next command (a payment, a
    /// red packet's sending) is one whose answer later commands need (its
    /// follow-ups, the packet's claims): they wait for it alone, not for
    /// everything submitted before them.
    fn expect_answer(&mut self, awaits: Awaits, serial: u64) {
        // A command skipped on resume is applied already: nothing to wait for.
        if self.generated < self.resume_after {
            return;
        }
        // Tallied, not merely answered: a follow-up finds its trade in
        // `paid` only once the payment's answer is tallied.
        let (tallied, sequence) = (self.tallied, self.submitted + 1);
        match awaits {
            Awaits::Payment => self.payments.expect(serial, sequence, tallied),
            Awaits::Packet => self.packets_sent.expect(serial, sequence, tallied),
        }
    }

    /// A ship, confirmation or refund of a paid trade (`None`: it was not paid).
    fn follow_up_action(&mut self, timed: &TimedOp) -> anyhow::Result<Option<(Action, Kind)>> {
        let (Op::Ship { merchant, trade } | Op::Confirm { merchant, trade, .. } | Op::Refund { merchant, trade, .. }) =
            timed.op
        else {
            return Ok(None);
        };
        let refund = matches!(timed.op, Op::Refund { .. });
        let Some(found) = self.paid_trade(merchant, trade, refund)? else { return Ok(None) };
        self.following_up(trade, &found, refund);
        let merchant_number = self.merchants[merchant as usize];
        Ok(Some(match timed.op {
            Op::Confirm { buyer, .. } => {
                (Action::ConfirmTrade { trade: found.number, buyer: self.buyers[buyer as usize] }, Kind::Confirm)
            }
            Op::Refund { refund, share, .. } => {
                let (paid_by_buyer, refunded) =
                    found.amounts.context("a refund of a trade paid without a refund to follow")?;
                let amount = match share {
                    RefundShare::Full => paid_by_buyer - refunded,
                    RefundShare::Half => (paid_by_buyer / 2).max(1),
                };
                let action = Action::RefundTrade {
                    trade: found.number,
                    merchant: merchant_number,
                    out_request_no: format!("d11-{trade}-refund-{refund}"),
                    amount: Fen::new(amount),
                    reason: Some("changed my mind".to_string()),
                };
                (action, Kind::Refund { trade })
            }
            _ => (Action::ShipTrade { trade: found.number, merchant: merchant_number }, Kind::Ship),
        }))
    }

    /// Notes that the next command submitted is a follow-up of trade
    /// `serial`, a refund if `refund` (a later refund waits for it, until
    /// the trade's last follow-up).
    fn following_up(&mut self, serial: u64, found: &PaidTrade, refund: bool) {
        // A command skipped on resume is applied already: nothing to wait for.
        let skipped = self.generated < self.resume_after;
        // 0: read from the store after a resume, how many follow-ups remain
        // is unknown, so keep waiting on it.
        let more_to_come = found.follow_ups_left != 1;
        if !more_to_come || skipped {
            self.last_refund.remove(&serial);
        } else if refund {
            self.last_refund.insert(serial, self.submitted + 1);
        }
    }

    fn buyer_number(&self, buyer: u32) -> anyhow::Result<PartyNumber> {
        self.buyers.get(buyer as usize).copied().context("a buyer outside the plan")
    }

    fn submit(&mut self, timed: &TimedOp, action: Action, kind: Kind) -> anyhow::Result<()> {
        if !matches!(kind, Kind::Tick { .. }) {
            self.quiet_before = None;
        }
        let command = Command { now: Timestamp::from_nanos(DAY_START_NANOS + timed.at), idempotency: None, action };
        let minute = (!timed.setup && timed.at < sim::DAY_NANOS).then_some((timed.at / 60_000_000_000) as usize);
        let replies = Arc::clone(&self.replies);
        let (sequence, submitted) = (self.submitted + 1, Instant::now());
        let reply = move |result: Result<Outcome, JournalError>| {
            let answered = Instant::now();
            let is_failure = result.is_err();
            replies.file(Answer { sequence, kind, minute, submitted, answered, result }, is_failure);
        };
        // Only this driver submits: with fewer than a queue's worth in
        // flight, the queue has room. (Waiting for room for a group's worth
        // instead, so as to wake less often, measured no faster.)
        self.wait_answered(self.submitted.saturating_sub(QUEUE_COMMANDS_MAX as u64 - 1), Stall::QueueFull)?;
        self.store.submit_with(command, reply)?;
        self.submitted += 1;
        if self.replies.completed() >= self.tallied + ANSWERS_UNTALLIED_MAX {
            self.tally_answers();
        }
        Ok(())
    }

    /// Tallies the answers filed so far, in the order they came.
    fn tally_answers(&mut self) {
        // Swapped with a spare, so the writer never grows the list from nothing.
        let mut answers = std::mem::take(&mut self.answers_spare);
        self.replies.take_answers(&mut answers);
        for Answer { sequence, kind, minute, submitted, answered, result } in answers.drain(..) {
            // What waits on an answer is forgotten by the count tallied
            // (`InFlight`): that count must be the first commands, in order.
            assert_eq!(sequence, self.tallied + 1, "answers filed out of order");
            self.tallied = sequence;
            let payment = match result {
                Ok(outcome) => tally_outcome(&mut self.tally, kind, outcome, &mut self.packets, &mut self.paid),
                Err(error) => {
                    self.tally.reject(kind.name(), &error.to_string());
                    None
                }
            };
            self.tally.answered(minute, submitted, answered, payment);
        }
        self.answers_spare = answers;
    }

    fn figures(&self) -> anyhow::Result<LedgerFigures> {
        self.store.read_with_archive(|platform, archive| {
            let mut figures = LedgerFigures::default();
            let deep = platform.check_trades(archive, |trade| {
                if trade.paid_at.is_none() {
                    return;
                }
                figures.paid_trades += 1;
                figures.gmv_paid += u128::from(trade.amount);
                figures.discounts += u128::from(trade.discount);
                figures.refunded += u128::from(trade.refunded);
                figures.trade_fees += u128::from(trade.fee);
                if trade.settled_at.is_some() {
                    figures.gmv_settled += u128::from(trade.amount);
                } else if trade.status == TradeStatus::TradeClosed {
                    figures.closed_unsettled += u128::from(trade.amount);
                } else {
                    figures.unsettled_trades += 1;
                }
            })?;
            figures.platform_checks = platform
                .check_invariants()
                .into_iter()
                .chain(deep)
                .map(|check| PlatformCheck { name: check.name, ok: check.ok, detail: check.detail })
                .collect();
            let ledger = platform.ledger();
            if let Some(revenue) = ledger.account(REVENUE) {
                figures.revenue = revenue.credits_posted - revenue.debits_posted;
            }
            if let Some(escrow) = ledger.account(accounts::ESCROW) {
                figures.escrow_balance = escrow.credits_posted.saturating_sub(escrow.debits_posted);
            }
            match ledger.check_conservation() {
                Ok(totals) => {
                    for total in totals.values() {
                        figures.debits_posted += total.debits_posted.to_u128().unwrap_or(u128::MAX);
                        figures.credits_posted += total.credits_posted.to_u128().unwrap_or(u128::MAX);
                    }
                    figures.conserved = true;
                }
                Err(_) => figures.conserved = false,
            }
            Ok(figures)
        })
    }
}

/// Counts an answer; returns the amount if it was a payment made.
fn tally_outcome(
    tally: &mut Tally,
    kind: Kind,
    outcome: Outcome,
    packets: &mut HashMap<u64, RedPacketNumber>,
    paid: &mut PaidTrades,
) -> Option<u64> {
    let mut payment = None;
    let acknowledged = &mut tally.acknowledged;
    match (kind, outcome) {
        (Kind::Pay { trade: serial, follow_ups, refund_follows }, Outcome::TradeUpdated(trade))
            if trade.paid_at.is_some() =>
        {
            acknowledged.payments += 1;
            acknowledged.gmv += trade.amount.get();
            acknowledged.discounts += trade.discount.get();
            payment = Some(trade.amount.get());
            if follow_ups > 0 {
                let amounts = refund_follows.then(|| (trade.paid_by_buyer().get(), 0));
                paid.insert(serial, trade.number, follow_ups, amounts);
            }
        }
        (Kind::Pay { .. }, Outcome::Rejected(Rejection::InsufficientFunds)) => acknowledged.declined += 1,
        (Kind::Refund { trade: serial }, Outcome::RefundCreated { refund, .. }) => {
            acknowledged.refunds += 1;
            acknowledged.refunded += refund.amount.get();
            paid.refunded(serial, refund.amount.get());
        }
        (Kind::Transfer, Outcome::Transferred { fee, .. }) => {
            acknowledged.transfers += 1;
            acknowledged.transfer_fees += fee.get();
        }
        (Kind::TopUp, Outcome::ToppedUp { amount, .. }) => {
            acknowledged.top_ups += 1;
            acknowledged.topped_up += amount.get();
        }
        (Kind::FundSubscribe, Outcome::FundMoved { .. }) => acknowledged.fund_subscriptions += 1,
        (Kind::Withdraw, Outcome::WithdrawalRequested { amount, fee, .. }) => {
            acknowledged.withdrawals += 1;
            acknowledged.withdrawn += amount.get();
            acknowledged.withdrawal_fees += fee.get();
        }
        (Kind::SendRedPacket { packet }, Outcome::RedPacketCreated { number, .. }) => {
            acknowledged.red_packets += 1;
            packets.insert(packet, number);
        }
        (Kind::ClaimRedPacket, Outcome::RedPacketClaimed { .. }) => acknowledged.red_packet_claims += 1,
        (Kind::FundYield, Outcome::FundYieldPaid(day)) => acknowledged.fund_yield += day.income.get(),
        (Kind::Ship | Kind::Confirm, Outcome::TradeUpdated(_)) => {}
        (Kind::Tick { quiet }, Outcome::Ticked { trades_settled, more_due, .. }) => {
            acknowledged.auto_confirmed += u64::from(trades_settled);
            tally.quiet_ticks_left_due += u64::from(quiet && more_due);
        }
        (_, Outcome::Rejected(rejection)) => {
            tally.reject(kind.name(), &server::error::describe(&rejection));
        }
        (Kind::Setup(_), _) => {}
        (_, other) => tally.reject(kind.name(), &format!("unexpected answer {}", short(&other))),
    }
    payment
}

fn short(outcome: &Outcome) -> String {
    let text = format!("{outcome:?}");
    text.chars().take(60).collect()
}
