//! The platform's side of the journal's archive (see `journal::archive`):
//! records that leave memory are framed into an outbox and found again by
//! the offset counted here, so the offsets are part of the state and need
//! no I/O to compute. The journal empties the outbox into `archive.log`
//! after every command; a platform used without a journal keeps them all in
//! its outbox, and reads them from there.

use journal::{ArchiveSource, JournalError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const PENDING_CAPACITY_KEPT: usize = 1 << 20;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Outbox {
    /// Bytes of every record made so far: the next record's offset.
    length: u64,
    /// Records not yet taken by the journal (empty between its commands).
    #[serde(skip)]
    pending: Vec<u8>,
}

// The state is its length: the pending bytes are the same records, wherever they are.
impl PartialEq for Outbox {
    fn eq(&self, other: &Outbox) -> bool {
        self.length == other.length
    }
}
impl Eq for Outbox {}

impl Outbox {
    /// Archives a record; returns its offset.
    pub fn append(&mut self, record: &impl Serialize) -> u64 {
        let offset = self.length;
        // Encoding plain data into a Vec cannot fail: an empty record at a
        // real offset would be a hole in the books.
        let payload = postcard::to_allocvec(record).unwrap_or_else(|error| {
            crate::invariant::broken(format_args!("an archive record does not encode: {error}"))
        });
        self.length += journal::archive::encode_record(&payload, &mut self.pending);
        offset
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    pub fn take(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
        // A command that archived much (a busy tick) leaves no large buffer behind.
        if self.pending.capacity() > PENDING_CAPACITY_KEPT {
            self.pending = Vec::new();
        }
    }

    /// Calls `visit` with each record not yet taken (all of them for a
    /// platform without a journal), as [`ArchiveSource::for_each_record`].
    pub fn for_each_pending(&self, visit: &mut journal::archive::RecordVisitor<'_>) -> Result<(), JournalError> {
        let taken = self.length - self.pending.len() as u64;
        journal::archive::for_each_record_in(&self.pending, taken, visit, |offset| {
            JournalError::Failed(format!("archive record at {offset} in memory is damaged"))
        })
    }

    /// The record at `offset`: from the outbox if not taken yet, else from `source`.
    pub fn read<T: DeserializeOwned>(&self, source: &dyn ArchiveSource, offset: u64) -> Result<T, JournalError> {
        let taken = self.length - self.pending.len() as u64;
        let bad = || JournalError::Failed(format!("archive record at {offset} is not a platform record"));
        if offset >= self.length {
            return Err(bad());
        }
        let payload = if offset >= taken {
            let start = (offset - taken) as usize;
            journal::archive::decode_record(&self.pending[start..]).ok_or_else(bad)?.to_vec()
        } else {
            source.read_record(offset)?
        };
        postcard::from_bytes(&payload).map_err(|_| bad())
    }
}
