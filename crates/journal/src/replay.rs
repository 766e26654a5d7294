//! Replaying the log into a machine (at open, and as a follower catches
//! up): in batches, so that the archived records a batch will read are read
//! and decompressed on another thread while the batch before it applies —
//! as the writer reads ahead during an append. A full day's recovery
//! replays tens of millions of commands, a third of whose time went to
//! reading archived trades one at a time.

use std::path::PathBuf;

use crate::archive::{Archive, READ_AHEAD_RECORDS_MIN, ReadAhead};
use crate::error::JournalError;
use crate::helpers::{Helpers, read_ahead_aside};
use crate::history::History;
use crate::journal::apply_and_collect;
use crate::machine::StateMachine;
use crate::wal;

/// Records decoded and applied together, at most...
const REPLAY_BATCH_RECORDS: usize = 1_024;
/// ...and at most this many of their bytes (a ledger's batch of thousands
/// of transfers is a megabyte: two batches of them in memory stay small).
const REPLAY_BATCH_BYTES: u64 = 8 << 20;

/// Where replayed commands go, and what the journal counts of them.
pub(crate) struct Replay<'a, M: StateMachine> {
    pub machine: &'a mut M,
    pub history: &'a mut History,
    pub archive: &'a mut Archive,
    pub next_sequence: &'a mut u64,
    pub records_since_snapshot: &'a mut u64,
    pub log_bytes_since_snapshot: &'a mut u64,
    /// The log, for messages.
    pub description: String,
    /// Where reads ahead go, if anywhere (not on a simulated disk, whose
    /// order of operations must be one).
    pub helpers: Option<Helpers>,
}

/// A decoded record waiting to apply.
struct Pending<C> {
    sequence: u64,
    command: C,
    bytes: u64,
}

/// Records read so far, and the batch read ahead for.
pub(crate) struct Batches<'a, M: StateMachine> {
    replay: Replay<'a, M>,
    incoming: Vec<Pending<M::Command>>,
    incoming_bytes: u64,
    ready: Option<(Vec<Pending<M::Command>>, ReadAhead)>,
}

impl<'a, M: StateMachine> Batches<'a, M> {
    pub(crate) fn new(replay: Replay<'a, M>) -> Batches<'a, M> {
        Batches { replay, incoming: Vec::with_capacity(REPLAY_BATCH_RECORDS), incoming_bytes: 0, ready: None }
    }

    /// Takes the next record of the log.
    pub(crate) fn push(&mut self, sequence: u64, payload: &[u8]) -> Result<(), JournalError> {
        let command = M::decode_command(payload).map_err(|error| JournalError::Undecodable {
            path: PathBuf::from(&self.replay.description),
            sequence,
            detail: error.to_string(),
        })?;
        let bytes = (wal::HEADER_BYTES + payload.len()) as u64;
        self.incoming.push(Pending { sequence, command, bytes });
        self.incoming_bytes += bytes;
        if self.incoming.len() >= REPLAY_BATCH_RECORDS || self.incoming_bytes >= REPLAY_BATCH_BYTES {
            self.turn()?;
        }
        Ok(())
    }

    /// Applies every record taken.
    pub(crate) fn finish(mut self) -> Result<(), JournalError> {
        self.turn()?;
        match self.ready.take() {
            Some((batch, read)) => self.replay.apply(batch, read),
            None => Ok(()),
        }
    }

    /// Reads ahead for the batch just taken while the one before it applies.
    fn turn(&mut self) -> Result<(), JournalError> {
        let batch = std::mem::replace(&mut self.incoming, Vec::with_capacity(REPLAY_BATCH_RECORDS));
        self.incoming_bytes = 0;
        let mut needed = Vec::new();
        if self.replay.helpers.is_some() {
            let commands: Vec<&M::Command> = batch.iter().map(|pending| &pending.command).collect();
            self.replay.machine.archive_records_needed(&commands, &mut needed);
        }
        let previous = self.ready.take();
        let helpers = self.replay.helpers.clone().filter(|_| needed.len() >= READ_AHEAD_RECORDS_MIN);
        let read = if let Some(helpers) = helpers {
            let reader = self.replay.archive.reader();
            let replay = &mut self.replay;
            let mut read = ReadAhead::default();
            let applied = helpers.in_place_scope(|scope| {
                read_ahead_aside::<M>(scope, &reader, &needed, &mut read);
                previous.map_or(Ok(()), |(previous, read)| replay.apply(previous, read))
            });
            applied.map(|()| read)?
        } else {
            if let Some((previous, read)) = previous {
                self.replay.apply(previous, read)?;
            }
            Vec::new()
        };
        if !batch.is_empty() {
            self.ready = Some((batch, read));
        }
        Ok(())
    }
}

impl<M: StateMachine> Replay<'_, M> {
    fn apply(&mut self, batch: Vec<Pending<M::Command>>, read: ReadAhead) -> Result<(), JournalError> {
        self.archive.set_read_ahead(read);
        for Pending { sequence, command, bytes } in batch {
            apply_and_collect(self.machine, self.history, self.archive, &command)?;
            *self.next_sequence = sequence + 1;
            *self.records_since_snapshot += 1;
            *self.log_bytes_since_snapshot += bytes;
        }
        self.archive.clear_read_ahead();
        Ok(())
    }
}
