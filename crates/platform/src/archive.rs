//! The platform's side of the journal's archive (see `journal::archive`):
//! records that leave memory go into the journal's `Outbox`, which frames
//! them and counts the offset each gets, so the offsets are part of the
//! state and need no I/O. The journal empties the outbox into `archive.log`
//! after every command; a platform used without a journal keeps them all in
//! its outbox, and reads them from there.

use journal::archive::RecordVisitor;
use journal::{ArchiveSource, JournalError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The journal's outbox, in the state as the length of what it archived (the
/// records themselves are the same wherever they are: outbox or file).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "OutboxState")]
pub(crate) struct Outbox {
    records: journal::archive::Outbox,
    /// Where a record is encoded before it is framed: kept, so encoding a
    /// record allocates nothing (a new `Vec` grew by copying five times for
    /// a trade's record, 3% of the writer's time).
    scratch: Vec<u8>,
}

// By hand, not `into`: that would copy the outbox's records at every encoding.
impl Serialize for Outbox {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        OutboxState { length: self.records.length() }.serialize(serializer)
    }
}

#[derive(Serialize, Deserialize)]
struct OutboxState {
    /// Bytes of every record made so far: the next record's offset.
    length: u64,
}

impl From<OutboxState> for Outbox {
    fn from(state: OutboxState) -> Outbox {
        Outbox { records: journal::archive::Outbox::resume(state.length), scratch: Vec::new() }
    }
}

impl PartialEq for Outbox {
    fn eq(&self, other: &Outbox) -> bool {
        self.records.length() == other.records.length()
    }
}
impl Eq for Outbox {}

/// The scratch buffer is let go after a record larger than this.
const SCRATCH_BYTES_KEPT: usize = 64 << 10;

impl Outbox {
    /// Archives a record; returns its offset.
    pub fn append(&mut self, record: &impl Serialize) -> u64 {
        // Encoding plain data into a Vec cannot fail: an empty record at a
        // real offset would be a hole in the books.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.scratch = crate::state_io::encode_into(record, scratch).unwrap_or_else(|error| {
            crate::invariant::broken(format_args!("an archive record does not encode: {error}"))
        });
        let offset = self.records.push(&self.scratch);
        if self.scratch.capacity() > SCRATCH_BYTES_KEPT {
            self.scratch = Vec::new();
        }
        offset
    }

    pub fn length(&self) -> u64 {
        self.records.length()
    }

    pub fn take(&mut self, out: &mut Vec<u8>) {
        self.records.take(out);
    }

    /// Calls `visit` with each record not yet taken (all of them for a
    /// platform without a journal), as [`ArchiveSource::for_each_record`].
    pub fn for_each_pending(&self, visit: &mut RecordVisitor<'_>) -> Result<(), JournalError> {
        self.records.for_each_pending(visit)
    }

    /// The record at `offset`: from the outbox if not taken yet, else from `source`.
    pub fn read<T: DeserializeOwned>(&self, source: &dyn ArchiveSource, offset: u64) -> Result<T, JournalError> {
        let payload = self.records.read(source, offset)?;
        postcard::from_bytes(&payload)
            .map_err(|_| JournalError::Failed(format!("archive record at {offset} is not a platform record")))
    }
}
