//! The writer thread: the one place where the machine changes. As the
//! leader it gathers what submitters wait with into a group, appends the
//! group to the log in one go, applies it and answers each submitter (the
//! next group's append, on a helper thread, overlapping the apply); as a
//! follower (of a log other nodes share) it applies what the leader
//! appended, answers submitters `NotLeader`, and takes the lead when the
//! leader's lease runs out.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use parking_lot::{RwLock as StateLock, RwLockWriteGuard};

use crate::archive::{READ_AHEAD_RECORDS_MIN, ReadAhead};
use crate::error::JournalError;
use crate::helpers::{caught, read_ahead_aside};
use crate::journal::Journal;
use crate::log::Lead;
use crate::machine::StateMachine;
use crate::{Reply, Request, WriterStats};

/// Whether a group's apply may end with a snapshot: not while the next
/// group is being appended (a snapshot covers every record appended).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Snapshot {
    IfDue,
    Not,
}

/// A group in the log, not yet applied.
struct Durable<M: StateMachine> {
    loggable: Vec<Request<M>>,
    first_sequence: u64,
    append_us: u64,
    /// Its commands' bytes.
    bytes: u64,
}

/// Commands applied between chances for readers to take the state lock.
const APPLY_SLICE_COMMANDS: usize = 128;
/// A leader with nothing to append asks the log this often whether it still
/// leads (renewing its lease); well inside the lease.
const LEAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A follower looks for the leader's new records this often.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often a follower tells the shared log how far it has applied.
const POSITION_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Records a follower applies under one hold of the state's lock.
const FOLLOW_SLICE_RECORDS: u64 = 1_024;
/// After the store failed to answer, wait this long before asking again.
const STORE_RETRY_DELAY: Duration = Duration::from_millis(200);

/// How long the writer kept others waiting, within one group.
struct Waits {
    /// Since the writer last took the state's lock for itself.
    exclusive_since: Instant,
    /// The longest it held it (what a reader waited at most).
    exclusive_us_max: u64,
    /// The longest one command took to apply.
    command_us_max: u64,
}

impl Default for Waits {
    fn default() -> Waits {
        Waits { exclusive_since: Instant::now(), exclusive_us_max: 0, command_us_max: 0 }
    }
}

impl Waits {
    fn exclusive_starts(&mut self) {
        self.exclusive_since = Instant::now();
    }

    fn exclusive_ends(&mut self) {
        self.exclusive_us_max = self.exclusive_us_max.max(micros(self.exclusive_since));
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// What a node is doing, for `/healthz` and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub role: Lead,
    /// The last record applied here.
    pub last_applied: u64,
    /// Why this node stopped applying for good (a failed `fdatasync`, an
    /// unreadable archive, a panic-free refusal of a broken log): it must
    /// be restarted once the cause is gone.
    pub failure: Option<String>,
    /// Why the store cannot be reached now, while it cannot.
    pub store_problem: Option<String>,
    /// The store's replicas as the leader last saw them (empty elsewhere).
    pub replicas: Vec<Replica>,
    /// The other nodes following the log, as the leader last saw them.
    pub followers: Vec<Follower>,
}

/// A node following a shared log: how far it has applied, as it last said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follower {
    /// Its name in the lease (`--public-url`).
    pub node: String,
    pub applied: u64,
    /// How long ago it said so.
    pub seen_ms_ago: u64,
}

/// A replica of the store (a PostgreSQL standby) and its lag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Its `application_name`.
    pub name: String,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `sync`, `async`, `quorum`, `potential`.
    pub sync_state: String,
    /// How long ago the last change it replayed was made on the primary.
    pub replay_lag_ms: Option<u64>,
    /// WAL the primary has written that it has not replayed yet.
    pub behind_bytes: Option<u64>,
}

pub(crate) struct Writer<M: StateMachine> {
    pub journal: Journal<M>,
    pub machine: Arc<StateLock<M>>,
    pub stats: Arc<RwLock<WriterStats>>,
    pub health: Arc<Mutex<Health>>,
    pub receiver: Receiver<Request<M>>,
    /// When this node, following, last told the log how far it applied.
    pub position_reported_at: Option<Instant>,
    /// When this node, leading, last read the store's replicas and followers.
    pub store_figures_read_at: Option<Instant>,
}

impl<M: StateMachine> Writer<M> {
    /// Runs until every submitter has gone.
    pub fn run(mut self) {
        loop {
            let role = self.health().role.clone();
            let open = match role {
                Lead::Leader => self.lead(),
                Lead::Follower { .. } => self.follow(),
            };
            if !open {
                return;
            }
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_role(&self, role: Lead) {
        let mut health = self.health();
        if role != Lead::Leader {
            // Only the leader watches the store's replicas and the followers.
            health.replicas.clear();
            health.followers.clear();
        }
        health.role = role;
    }

    fn set_store_problem(&self, problem: Option<String>) {
        self.health().store_problem = problem;
    }

    /// Stops applying for good: the state may no longer be what the log
    /// replays to, or the log can no longer be trusted to hold what it says.
    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the journal failed: no more writes on this node until it is restarted");
        self.health().failure = Some(reason);
    }

    fn failure(&self) -> Option<String> {
        self.health().failure.clone()
    }

    /// As the leader: group, append, apply, answer — a group's append (the
    /// disk's wait, or PostgreSQL's round trip) overlapping the apply of the
    /// group before it, which is already durable. Returns when it no longer
    /// leads (true) or every submitter has gone (false); nothing appended is
    /// left unapplied then.
    fn lead(&mut self) -> bool {
        let group_max = self.journal.options().group_batches_max.max(1);
        let mut pending: Option<Durable<M>> = None;
        loop {
            let group = match pending {
                // Whatever waits goes with the durable group's apply (nothing: it applies alone).
                Some(_) => self.waiting(group_max, None),
                None => match self.receiver.recv_timeout(LEAD_CHECK_INTERVAL) {
                    Ok(first) => self.waiting(group_max, Some(first)),
                    Err(RecvTimeoutError::Timeout) => {
                        if !self.still_leads() {
                            return true;
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return false,
                },
            };
            pending = self.write_group(group, pending.take());
            if self.health().role != Lead::Leader {
                assert!(pending.is_none(), "a group was appended by a node that no longer leads");
                return true;
            }
            // A busy leader renews its lease with each group, and reads the
            // store's figures here (an idle one in `still_leads`).
            self.read_store_figures();
        }
    }

    /// `first` and the requests waiting behind it, at most `group_max`.
    fn waiting(&self, group_max: usize, first: Option<Request<M>>) -> Vec<Request<M>> {
        let mut group: Vec<Request<M>> = Vec::with_capacity(group_max);
        group.extend(first);
        while group.len() < group_max {
            match self.receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        group
    }

    /// Whether this node still leads (a shared log renews its lease).
    fn still_leads(&mut self) -> bool {
        if !self.journal.log_is_shared() {
            return true;
        }
        match self.journal.lead() {
            Ok(Lead::Leader) => {
                self.set_store_problem(None);
                self.read_store_figures();
                true
            }
            Ok(follower) => {
                tracing::warn!(log = %self.journal.describe_log(), "another node leads now: following it");
                self.set_role(follower);
                false
            }
            Err(error) => {
                self.set_store_problem(Some(error.to_string()));
                true
            }
        }
    }

    /// Appends `group` while `previous` (durable) applies, and returns the
    /// group if it is now durable, to apply next. A snapshot (which covers
    /// every record appended) is taken only with nothing pending.
    fn write_group(&mut self, group: Vec<Request<M>>, previous: Option<Durable<M>>) -> Option<Durable<M>> {
        if let Some(reason) = self.failure() {
            // A durable group is never applied on a state that failed (its
            // outcomes could differ from the replay's): the log replays it
            // after a restart. The new group never reached the log.
            if let Some(durable) = previous {
                answer_all(durable.loggable, || JournalError::LoggedNotApplied(reason.clone()));
            }
            answer_all(group, || JournalError::Failed(reason.clone()));
            return None;
        }
        let previous = match previous {
            Some(durable) if self.journal.snapshot_due() => {
                self.apply_group(durable, Snapshot::IfDue);
                None
            }
            other => other,
        };
        if previous.is_none() {
            self.snapshot_if_due();
        }
        let Some(reason) = self.failure() else { return self.write_loggable(group, previous) };
        answer_all(group, || JournalError::Failed(reason.clone()));
        None
    }

    /// `write_group` once the node is known not to have failed (the group
    /// before, if any, still pending).
    fn write_loggable(&mut self, group: Vec<Request<M>>, previous: Option<Durable<M>>) -> Option<Durable<M>> {
        // Commands that can never apply are answered before they reach the log.
        let mut loggable = Vec::with_capacity(group.len());
        for request in group {
            match M::refuse(&request.command) {
                Some(outcome) => (request.reply)(Ok(outcome)),
                None => loggable.push(request),
            }
        }
        if loggable.is_empty() {
            if let Some(durable) = previous {
                self.apply_group(durable, Snapshot::IfDue);
            }
            return None;
        }
        let first_sequence = self.journal.next_sequence();
        let commands: Vec<&M::Command> = loggable.iter().map(|request| &request.command).collect();
        let mut needed = Vec::new();
        self.machine.read().archive_records_needed(&commands, &mut needed);
        let (appended, read, append_us) = self.append_while_applying(&commands, &needed, previous);
        let bytes = self.journal.last_group_bytes();
        drop(commands);
        match appended {
            Ok(true) => {
                self.set_store_problem(None);
                self.journal.set_archive_read_ahead(read);
                let durable = Durable { loggable, first_sequence, append_us, bytes };
                if self.journal.uses_threads() {
                    return Some(durable);
                }
                // One thread, one order of disk operations: applied at once.
                self.apply_group(durable, Snapshot::IfDue);
            }
            Ok(false) => answer_all(loggable, || JournalError::Unavailable("the group was not committed".to_string())),
            Err(JournalError::NotLeader { leader }) => {
                tracing::warn!(?leader, "another node leads now: following it");
                self.set_role(Lead::Follower { leader: leader.clone() });
                answer_all(loggable, || JournalError::NotLeader { leader: leader.clone() });
            }
            Err(JournalError::Unavailable(why)) => {
                self.set_store_problem(Some(why.clone()));
                answer_all(loggable, || JournalError::Unavailable(why.clone()));
            }
            Err(error) => {
                let reason = error.to_string();
                self.fail(reason.clone());
                answer_all(loggable, || JournalError::Failed(reason.clone()));
            }
        }
        None
    }

    /// Appends `commands` and, meanwhile on this thread, applies `previous`;
    /// on another, reads the archived records the group `needed` (unless
    /// few). Answers whether the group is in the log, what was read, and
    /// how long the append took (µs).
    fn append_while_applying(
        &mut self,
        commands: &[&M::Command],
        needed: &[u64],
        previous: Option<Durable<M>>,
    ) -> (Result<bool, JournalError>, ReadAhead, u64) {
        let helpers = self.journal.helpers();
        let read_ahead = needed.len() >= READ_AHEAD_RECORDS_MIN && helpers.is_some();
        if !read_ahead {
            self.journal.prefetch_archive(needed);
        }
        let helpers = match helpers {
            Some(helpers) if read_ahead || previous.is_some() => helpers,
            // Nothing to do aside, or no thread to do it on: one after the other.
            _ => {
                if let Some(durable) = previous {
                    self.apply_group(durable, Snapshot::Not);
                }
                let started = Instant::now();
                return (self.append_group(commands), Vec::new(), micros(started));
            }
        };
        let reader = self.journal.archive_reader();
        let mut appender = self.journal.lend_appender();
        let timed_append = |appender: &mut crate::journal::Appender| {
            let started = Instant::now();
            (appender.append::<M>(commands), micros(started))
        };
        let mut read = ReadAhead::default();
        let mut appended_aside = None;
        let appended_here = helpers.in_place_scope(|scope| {
            if read_ahead {
                read_ahead_aside::<M>(scope, &reader, needed, &mut read);
            }
            match previous {
                Some(durable) => {
                    let (appended, appender) = (&mut appended_aside, &mut appender);
                    scope.spawn(move |_| *appended = caught(|| timed_append(appender)));
                    self.apply_group(durable, Snapshot::Not);
                    None
                }
                None => Some(timed_append(&mut appender)),
            }
        });
        // An append that panicked is perhaps in the log already: what was
        // applied is not in doubt, but this group is.
        let panicked = || (Err(JournalError::Failed("the log's append panicked".to_string())), 0);
        let (appended, append_us) = appended_here.or(appended_aside).unwrap_or_else(panicked);
        self.journal.return_appender(appender, appended.is_ok());
        let appended = match appended {
            Err(JournalError::Ambiguous(why)) => self.resolve(commands, &why),
            other => other.map(|()| true),
        };
        (appended, read, append_us)
    }

    /// Appends the group; `false` if it is known not to be in the log.
    fn append_group(&mut self, commands: &[&M::Command]) -> Result<bool, JournalError> {
        match self.journal.append(commands) {
            Err(JournalError::Ambiguous(why)) => self.resolve(commands, &why),
            other => other.map(|()| true),
        }
    }

    /// After an append whose outcome is unknown: asks the log (until it can
    /// answer) whether the group is in it. No answer goes out meanwhile.
    fn resolve(&mut self, commands: &[&M::Command], why: &str) -> Result<bool, JournalError> {
        tracing::warn!(why, "the store went away while committing a group: asking it whether the group is there");
        loop {
            match self.journal.resolve(commands) {
                Err(JournalError::Unavailable(problem)) | Err(JournalError::Ambiguous(problem)) => {
                    self.set_store_problem(Some(problem));
                    std::thread::sleep(STORE_RETRY_DELAY);
                }
                settled => return settled,
            }
        }
    }

    /// Applies a durable group and answers each submitter, then takes a
    /// snapshot if one is due and `snapshot` allows (nothing else is
    /// appended). Readers wait only while commands apply: from the answers
    /// on they read (the snapshot too, under the same read lock, so that
    /// whoever waits for the writer to be idle finds the snapshot done).
    fn apply_group(&mut self, durable: Durable<M>, snapshot: Snapshot) {
        let Durable { loggable, first_sequence, append_us, bytes } = durable;
        let apply_started = Instant::now();
        let machine = Arc::clone(&self.machine);
        let mut state = machine.write();
        let mut waits = Waits::default();
        let (answers, mut broken) = self.apply_commands(&mut state, loggable, first_sequence, &mut waits);
        self.journal.clear_archive_read_ahead();
        // Before readers see the state: the records it points to are in the file.
        if let Err(error) = self.journal.write_archive() {
            broken.get_or_insert(error.to_string());
        }
        waits.exclusive_ends();
        let state = RwLockWriteGuard::downgrade(state);
        if let Err(error) = self.journal.write_history() {
            broken.get_or_insert(error.to_string());
        }
        let applied = answers.len() as u64;
        self.health().last_applied = first_sequence + applied - 1;
        if let Some(reason) = &broken {
            // Every command is still in the log; stop before a snapshot could
            // let the log go while the history or archive is not on disk.
            // (Before the answers: whoever hears of it finds the node failed.)
            self.fail(format!("history or archive file failed: {reason}"));
        }
        for (reply, outcome) in answers {
            reply(outcome);
        }
        if broken.is_some() {
            return;
        }
        let apply_us = micros(apply_started);
        self.journal.count_apply_time(apply_started.elapsed());
        if snapshot == Snapshot::IfDue {
            self.snapshot_under(&state);
        }
        drop(state);
        let mut counters = self.stats.write().unwrap_or_else(PoisonError::into_inner);
        counters.command_bytes += bytes;
        counters.batches += applied;
        counters.groups += 1;
        counters.append_us_max = counters.append_us_max.max(append_us);
        counters.apply_us_max = counters.apply_us_max.max(apply_us);
        counters.command_us_max = counters.command_us_max.max(waits.command_us_max);
        counters.exclusive_us_max = counters.exclusive_us_max.max(waits.exclusive_us_max);
    }

    /// Takes a snapshot if one is due (with every appended group applied),
    /// unless the node has failed.
    fn snapshot_if_due(&mut self) {
        if self.failure().is_some() || !self.journal.snapshot_due() {
            return;
        }
        let machine = Arc::clone(&self.machine);
        let state = machine.read();
        self.snapshot_under(&state);
    }

    /// A snapshot of `state` (read-locked by the caller) if one is due.
    fn snapshot_under(&mut self, state: &M) {
        if self.failure().is_some() || !self.journal.snapshot_due() {
            return;
        }
        let started = Instant::now();
        if self.snapshot(state) {
            let mut counters = self.stats.write().unwrap_or_else(PoisonError::into_inner);
            counters.snapshots += 1;
            counters.snapshot_us_max = counters.snapshot_us_max.max(micros(started));
        }
    }

    /// Applies the group's commands under the state's write lock, letting
    /// readers in every `APPLY_SLICE_COMMANDS` (every command is durable
    /// already; each is applied whole). After a command fails (an
    /// unreadable archive: the state may now differ from what the log
    /// replays to) nothing more is applied. Returns each submitter's answer
    /// and the first failure.
    fn apply_commands(
        &mut self,
        state: &mut RwLockWriteGuard<'_, M>,
        loggable: Vec<Request<M>>,
        first_sequence: u64,
        waits: &mut Waits,
    ) -> (Vec<Answer<M>>, Option<String>) {
        let mut broken: Option<String> = None;
        let mut answers: Vec<Answer<M>> = Vec::with_capacity(loggable.len());
        let mut requests = loggable.into_iter();
        let mut taken = 0;
        while let Some(request) = requests.next() {
            let index = taken;
            taken += 1;
            if index > 0 && index % APPLY_SLICE_COMMANDS == 0 {
                if let Err(error) = self.journal.write_archive().and_then(|()| self.journal.write_history()) {
                    broken.get_or_insert(error.to_string());
                }
                waits.exclusive_ends();
                RwLockWriteGuard::bump(state);
                waits.exclusive_starts();
            }
            if index % APPLY_SLICE_COMMANDS == 0 {
                let slice = std::iter::once(&request).chain(requests.as_slice().iter().take(APPLY_SLICE_COMMANDS - 1));
                slice.for_each(|upcoming| state.warm(&upcoming.command));
            }
            // Every command of the group is in the log: one not applied here
            // is applied at the next start, so its answer is "not known yet",
            // never "nothing was done".
            if let Some(reason) = &broken {
                answers.push((request.reply, Err(JournalError::LoggedNotApplied(reason.clone()))));
                continue;
            }
            inject_panic(self.journal.options().panic_before_applying, first_sequence + index as u64);
            let command_started = Instant::now();
            let applied = self.journal.apply(state, &request.command);
            waits.command_us_max = waits.command_us_max.max(micros(command_started));
            match applied {
                Ok(outcome) => answers.push((request.reply, Ok(outcome))),
                Err(error) => {
                    let reason = error.to_string();
                    answers.push((request.reply, Err(JournalError::LoggedNotApplied(reason.clone()))));
                    broken = Some(reason);
                }
            }
        }
        (answers, broken)
    }

    /// Takes a snapshot. A failure stops the writer: a snapshot first syncs
    /// the history and archive, and after a failed sync their unwritten
    /// pages may be gone while a later sync reports success, so a later
    /// snapshot could count on records no longer on the disk and let go of
    /// the log that holds them. The restart rebuilds both from the log.
    fn snapshot(&mut self, state: &M) -> bool {
        match self.journal.snapshot(state) {
            Ok(_) => true,
            Err(error) => {
                self.fail(format!("snapshot failed: {error}"));
                false
            }
        }
    }

    /// As a follower: applies what the leader appends, answers submitters
    /// that it does not lead, and takes the lead when it can. Returns when
    /// it leads (true) or every submitter has gone (false).
    fn follow(&mut self) -> bool {
        loop {
            let mut behind = false;
            if self.failure().is_none() {
                match self.catch_up_slice() {
                    Ok(read) => {
                        behind = read == FOLLOW_SLICE_RECORDS;
                        self.set_store_problem(None);
                    }
                    Err(JournalError::Unavailable(problem)) => self.set_store_problem(Some(problem)),
                    Err(error) => self.fail(format!("cannot follow the log: {error}")),
                }
                if !behind && self.failure().is_none() && self.try_to_lead() {
                    return true;
                }
                if !behind {
                    self.report_position();
                }
            }
            let wait = if behind { Duration::ZERO } else { FOLLOW_POLL_INTERVAL };
            let deadline = Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.receiver.recv_timeout(left) {
                    Ok(request) => {
                        let error = match self.failure() {
                            Some(reason) => JournalError::Failed(reason),
                            None => JournalError::NotLeader { leader: self.leader_name() },
                        };
                        (request.reply)(Err(error));
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            }
        }
    }

    /// The store's replicas and followers as the leader sees them, read
    /// once a second at most (figures only).
    fn read_store_figures(&mut self) {
        if !self.journal.log_is_shared()
            || self.store_figures_read_at.is_some_and(|at| at.elapsed() < POSITION_REPORT_INTERVAL)
        {
            return;
        }
        self.store_figures_read_at = Some(Instant::now());
        let (replicas, followers) = (self.journal.replicas(), self.journal.followers());
        let mut health = self.health();
        (health.replicas, health.followers) = (replicas, followers);
    }

    /// Tells the shared log how far this node has applied, once a second
    /// at most (the leader shows it; a failure to say so changes nothing).
    fn report_position(&mut self) {
        if self.position_reported_at.is_some_and(|at| at.elapsed() < POSITION_REPORT_INTERVAL) {
            return;
        }
        self.position_reported_at = Some(Instant::now());
        let applied = self.health().last_applied;
        self.journal.report_applied(applied);
    }

    fn leader_name(&self) -> Option<String> {
        match &self.health().role {
            Lead::Follower { leader } => leader.clone(),
            Lead::Leader => None,
        }
    }

    /// Applies up to a slice of the leader's new records under one hold of
    /// the state's lock; answers how many.
    fn catch_up_slice(&mut self) -> Result<u64, JournalError> {
        let machine = Arc::clone(&self.machine);
        let mut state = machine.write();
        let read = self.journal.catch_up(&mut state, FOLLOW_SLICE_RECORDS);
        self.journal.write_archive()?;
        self.journal.write_history()?;
        let read = read?;
        self.health().last_applied = self.journal.next_sequence() - 1;
        if read > 0 && self.journal.snapshot_due() {
            self.snapshot(&state);
        }
        Ok(read)
    }

    /// Takes the lead if the leader's lease has run out, then applies every
    /// record the old leader appended before starting to append.
    fn try_to_lead(&mut self) -> bool {
        match self.journal.lead() {
            Ok(Lead::Leader) => loop {
                match self.catch_up_slice() {
                    Ok(read) if read < FOLLOW_SLICE_RECORDS => {
                        tracing::warn!(log = %self.journal.describe_log(), "this node leads now");
                        self.set_role(Lead::Leader);
                        return true;
                    }
                    Ok(_) => {}
                    Err(JournalError::Unavailable(problem)) => {
                        self.set_store_problem(Some(problem));
                        std::thread::sleep(STORE_RETRY_DELAY);
                    }
                    Err(error) => {
                        self.fail(format!("cannot read the log after taking the lead: {error}"));
                        return false;
                    }
                }
            },
            Ok(follower) => {
                self.set_role(follower);
                false
            }
            Err(error) => {
                self.set_store_problem(Some(error.to_string()));
                false
            }
        }
    }
}

/// A submitter and the answer it will get.
type Answer<M> = (Reply<M>, Result<<M as StateMachine>::Outcome, JournalError>);

fn answer_all<M: StateMachine>(requests: Vec<Request<M>>, error: impl Fn() -> JournalError) {
    for request in requests {
        (request.reply)(Err(error()));
    }
}

/// Fault injection (`Options::panic_before_applying`): a bug in `apply`, as
/// tests of fail-stop need one.
#[allow(clippy::panic)]
fn inject_panic(at: Option<u64>, sequence: u64) {
    if at == Some(sequence) {
        panic!("fault injected: a panic before applying record {sequence}");
    }
}
