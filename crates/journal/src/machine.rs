//! `StateMachine`: what the journal makes durable. The ledger is one; the
//! platform (ledger plus products) is another. The journal logs a machine's
//! commands, replays them at start, and snapshots its state; the machine
//! applies commands deterministically and owns a ledger, whose transfers the
//! journal keeps in the history file.

use ledger::{Ledger, LedgerConfig};

use crate::archive::{ArchiveSource, Decoded};
use crate::codec::{self, Batch, Command, DecodeError};
use crate::error::JournalError;

pub trait StateMachine: Send + Sync + Sized + 'static {
    /// `Sync`: the thread that appends a group encodes it, while the
    /// writer applies the group before it.
    type Command: Send + Sync + 'static;
    type Outcome: Send + 'static;
    /// What the machine's log and snapshots mean: raised with any change to
    /// what a command does (a replayed log must reach the same state) or to
    /// how the state is encoded. The data directory records it, and a
    /// directory of another format is refused by name.
    const FORMAT: u32;
    /// Which machine this is, recorded with its format: a directory another
    /// machine wrote is refused even where their numbers agree.
    const NAME: &'static str;

    /// A machine with nothing applied yet.
    fn create(config: LedgerConfig) -> Self;
    fn ledger(&self) -> &Ledger;
    fn ledger_mut(&mut self) -> &mut Ledger;

    fn encode_command(command: &Self::Command, out: &mut Vec<u8>);
    fn decode_command(bytes: &[u8]) -> Result<Self::Command, DecodeError>;
    /// An answer given without logging or applying the command (one that
    /// can never apply, such as an oversized batch), or `None` to go on.
    fn refuse(command: &Self::Command) -> Option<Self::Outcome>;
    /// Applies a command: deterministic, so that replay rebuilds the state.
    /// It may read records it archived earlier from `archive` (records
    /// never change, and replay finds the same ones at the same offsets);
    /// an error reading them is an error of the store, not an answer.
    fn apply(&mut self, command: &Self::Command, archive: &dyn ArchiveSource) -> Result<Self::Outcome, JournalError>;

    /// The parts the state's encoding comes in (see `encode_state`).
    const STATE_PARTS: usize = 1;

    /// Writes part `part` (`0..STATE_PARTS`) of the machine's state beyond
    /// its ledger, for snapshots (streamed: it may be far larger than what
    /// is worth copying). The parts one after another are the state's
    /// encoding; a snapshot may encode them at once, each on a thread of
    /// its own (the writer waits for it). The encoding is canonical, since
    /// the digest is its hash: equal states give equal bytes (nothing of
    /// capacity or hash order enters), and `restore` then `encode_state`
    /// gives back the bytes restored from.
    fn encode_state(&self, part: usize, out: &mut dyn std::io::Write) -> std::io::Result<()>;
    /// Rebuilds a machine from its ledger and the bytes of `encode_state`'s
    /// parts, read as it goes (a snapshot is not read into memory whole). It
    /// may read past them (the platform reads in chunks): they are the last
    /// part of a snapshot's body, which is hashed whole however it is read.
    fn restore(ledger: Ledger, state: &mut dyn std::io::Read) -> Result<Self, DecodeError>;

    /// Bytes of archive records this state refers to, including those not
    /// yet taken (see [`crate::archive`]). Machines that archive nothing: 0.
    fn archive_len(&self) -> u64 {
        0
    }
    /// Moves the archive records made since the last call to the end of `out`.
    fn take_archive(&mut self, _out: &mut Vec<u8>) {}

    /// Adds to `out` the offsets of archive records that applying `commands`
    /// will read, as far as the state before them tells. A hint: the writer
    /// asks the disk for them all while it logs the group, so that apply
    /// finds them in memory instead of waiting on one read after another
    /// (once a day's archive outgrows the page cache, the writer spent most
    /// of its time so).
    fn archive_records_needed(&self, _commands: &[&Self::Command], _out: &mut Vec<u64>) {}

    /// Decodes the archived record at `offset`, read ahead for a group, on
    /// the thread that read it, into what applying the group will take back
    /// with `ArchiveSource::take_decoded` (the writer's own thread is the
    /// one the whole node waits for). `None`: left as its payload.
    fn decode_read_ahead(_offset: u64, _record: &[u8]) -> Option<Decoded> {
        None
    }

    /// Touches what applying `command` looks up first (a hint, changing
    /// nothing). The writer calls it for a slice of commands before they
    /// apply, so that their cache misses, independent of one another,
    /// overlap in the CPU instead of each command waiting for its own.
    fn warm(&self, _command: &Self::Command) {}
}

/// The answer to one ledger batch, given once it is durable and applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accounts(Vec<ledger::CreateAccountResult>),
    Transfers(Vec<ledger::CreateTransferResult>),
    /// Refused whole before it was logged or applied.
    Refused(ledger::BatchError),
}

/// The bare ledger as a state machine: commands are ledger batches.
impl StateMachine for Ledger {
    type Command = Batch;
    type Outcome = Outcome;
    const FORMAT: u32 = 1;
    const NAME: &'static str = "ledger";

    fn create(config: LedgerConfig) -> Ledger {
        Ledger::with_config(config, 0, 0)
    }

    fn ledger(&self) -> &Ledger {
        self
    }

    fn ledger_mut(&mut self) -> &mut Ledger {
        self
    }

    fn encode_command(command: &Batch, out: &mut Vec<u8>) {
        codec::encode_batch(command, out);
    }

    fn decode_command(bytes: &[u8]) -> Result<Batch, DecodeError> {
        codec::decode_batch(bytes)
    }

    fn refuse(command: &Batch) -> Option<Outcome> {
        let count = match &command.command {
            Command::CreateAccounts(events) => events.len(),
            Command::CreateTransfers(events) => events.len(),
        };
        (count > ledger::BATCH_EVENTS_MAX).then_some(Outcome::Refused(ledger::BatchError::TooManyEvents { count }))
    }

    fn apply(&mut self, batch: &Batch, _archive: &dyn ArchiveSource) -> Result<Outcome, JournalError> {
        let applied = match &batch.command {
            Command::CreateAccounts(events) => self.create_accounts(batch.timestamp, events).map(Outcome::Accounts),
            Command::CreateTransfers(events) => self.create_transfers(batch.timestamp, events).map(Outcome::Transfers),
        };
        Ok(applied.unwrap_or_else(Outcome::Refused))
    }

    fn encode_state(&self, part: usize, _out: &mut dyn std::io::Write) -> std::io::Result<()> {
        debug_assert_eq!(part, 0, "the ledger's state is one part");
        Ok(())
    }

    fn restore(ledger: Ledger, state: &mut dyn std::io::Read) -> Result<Ledger, DecodeError> {
        let mut probe = [0u8; 1];
        match state.read(&mut probe) {
            Ok(0) => Ok(ledger),
            _ => Err(DecodeError { what: "ledger machine state (expected none)" }),
        }
    }
}
