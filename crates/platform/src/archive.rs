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
pub(crate) struct Outbox(journal::archive::Outbox);

// By hand, not `into`: that would copy the outbox's records at every encoding.
impl Serialize for Outbox {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        OutboxState { length: self.0.length() }.serialize(serializer)
    }
}

#[derive(Serialize, Deserialize)]
struct OutboxState {
    /// Bytes of every record made so far: the next record's offset.
    length: u64,
}

impl From<OutboxState> for Outbox {
    fn from(state: OutboxState) -> Outbox {
        Outbox(journal::archive::Outbox::resume(state.length))
    }
}

impl PartialEq for Outbox {
    fn eq(&self, other: &Outbox) -> bool {
        self.0.length() == other.0.length()
    }
}
impl Eq for Outbox {}

impl Outbox {
    /// Archives a record; returns its offset.
    pub fn append(&mut self, record: &impl Serialize) -> u64 {
        // Encoding plain data into a Vec cannot fail: an empty record at a
        // real offset would be a hole in the books.
        let payload = postcard::to_allocvec(record).unwrap_or_else(|error| {
            crate::invariant::broken(format_args!("an archive record does not encode: {error}"))
        });
        self.0.push(&payload)
    }

    pub fn length(&self) -> u64 {
        self.0.length()
    }

    pub fn take(&mut self, out: &mut Vec<u8>) {
        self.0.take(out);
    }

    /// Calls `visit` with each record not yet taken (all of them for a
    /// platform without a journal), as [`ArchiveSource::for_each_record`].
    pub fn for_each_pending(&self, visit: &mut RecordVisitor<'_>) -> Result<(), JournalError> {
        self.0.for_each_pending(visit)
    }

    /// The record at `offset`: from the outbox if not taken yet, else from `source`.
    pub fn read<T: DeserializeOwned>(&self, source: &dyn ArchiveSource, offset: u64) -> Result<T, JournalError> {
        let payload = self.0.read(source, offset)?;
        postcard::from_bytes(&payload)
            .map_err(|_| JournalError::Failed(format!("archive record at {offset} is not a platform record")))
    }
}
