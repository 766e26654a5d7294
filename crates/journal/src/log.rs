//! Where a journal's log of commands is kept: the storage boundary. Two
//! stores implement [`LogStore`]: [`crate::FileLog`], segment files in the
//! data directory (the default: nothing to install), and
//! [`crate::PostgresLog`], a table in PostgreSQL that several nodes share,
//! replicated and failed over by PostgreSQL. Recovery, the writer's group
//! commit, snapshots and following a leader are the same code over either:
//! the journal sees records (a sequence number and its payload), never files
//! or rows.

use crate::error::JournalError;

/// A visitor of records read back: `(sequence, payload)`.
pub type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<(), JournalError> + 'a;

pub trait LogStore: Send + 'static {
    /// What the store is, for messages and the path of its errors (the data
    /// directory, or the database without its password).
    fn describe(&self) -> String;

    /// The first sequence the store holds, if any: recovery checks it
    /// against the snapshot before it cuts back the files the snapshot
    /// relies on.
    fn first_sequence(&mut self) -> Result<Option<u64>, JournalError>;

    /// Reads the records after `after`, in order, at most `limit`, handing
    /// each to `visit`; answers how many. The first must be `after + 1` (a
    /// store that has let it go answers `JournalError::Gap`).
    fn read_after(&mut self, after: u64, limit: u64, visit: &mut Visit<'_>) -> Result<u64, JournalError>;

    /// Makes records `first, first + 1, …` durable: `Ok` only once they
    /// survive any crash (of this process, of the machine, of the store's
    /// primary). `Unavailable`: certainly not appended; `Ambiguous`: perhaps
    /// appended (ask [`LogStore::committed`] before anything else);
    /// `NotLeader`: another node leads, nothing appended; anything else is
    /// fatal (a failed `fdatasync`).
    fn append(&mut self, first: u64, payloads: &[&[u8]]) -> Result<(), JournalError>;

    /// After an ambiguous append of `count` records from `first`: whether
    /// they are in the log as this node appended them (not another node's
    /// records at the same place). It answers only once no append of this
    /// node can still commit, so its answer is final.
    fn committed(&mut self, first: u64, count: u64) -> Result<bool, JournalError>;

    /// A snapshot covers every record up to `sequence`: the store may let
    /// them go (the file store deletes whole segments; the PostgreSQL store
    /// keeps its log, from which a new node catches up).
    fn release(&mut self, sequence: u64) -> Result<(), JournalError>;

    /// What a shared log records of the machine that writes it (the text of
    /// a data directory's `FORMAT` file), if anything: a node that joins the
    /// log replays it as that machine and configuration. A store of one
    /// directory has that directory's file alone: `None`.
    fn format_record(&mut self) -> Result<Option<String>, JournalError> {
        Ok(None)
    }

    /// Records `text` as [`LogStore::format_record`] unless the log holds
    /// one already (a node that got there first keeps its record).
    fn set_format_record(&mut self, _text: &str) -> Result<(), JournalError> {
        Ok(())
    }

    /// Whether this node may append now. A store shared by several nodes
    /// renews this node's lease when it leads and takes the lead when the
    /// leader's lease has run out; a store of one node always leads.
    fn lead(&mut self) -> Result<Lead, JournalError> {
        Ok(Lead::Leader)
    }

    /// Whether other nodes may append to this store (so a follower must
    /// keep reading it).
    fn is_shared(&self) -> bool {
        false
    }

    /// The store's own replicas and how far behind each is (PostgreSQL's
    /// standbys, as its primary sees them); none for a store of one disk.
    fn replicas(&mut self) -> Vec<crate::Replica> {
        Vec::new()
    }

    /// The other nodes following a shared log, as each last reported.
    fn followers(&mut self) -> Vec<crate::Follower> {
        Vec::new()
    }

    /// A follower's report of how far it has applied (figures only: a
    /// store that cannot take it now loses nothing).
    fn report_applied(&mut self, _applied: u64) {}

    /// Bytes of a torn record cut from the log's end at recovery.
    fn torn_bytes_cut(&self) -> u64 {
        0
    }
}

/// Who may append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lead {
    Leader,
    /// Another node leads; its name (`--public-url`) when known.
    Follower {
        leader: Option<String>,
    },
}
