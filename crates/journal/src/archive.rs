//! The archive file: records a machine moved out of memory (its delivered
//! events, its finished trades), found again by the byte offset the machine
//! itself assigned when it made them.
//!
//! Offsets are part of the machine's state, so they must not depend on I/O:
//! the machine frames each record with [`encode_record`] into an outbox and
//! counts the bytes itself ([`StateMachine::archive_len`]); the journal moves
//! the outbox into `archive.log` after every command, in order, so a record's
//! offset is where it lands. Records are `[length u32][CRC-32C u32][payload]`.
//! Like the history file, `archive.log` is written (not synced) after each
//! command and synced before a snapshot; at start it is cut back to the
//! snapshot's length and the log replay appends the rest again.
//!
//! [`StateMachine::archive_len`]: crate::StateMachine::archive_len

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::append_file::AppendFile;
use crate::error::{JournalError, io_error};
use crate::machine::StateMachine;

pub(crate) const FILE_NAME: &str = "archive.log";
/// Bytes before each record's payload: its length and checksum.
pub const RECORD_HEADER_BYTES: u64 = 8;
/// One record is at most this long (a trade with its refunds is a few KB).
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// The buffer is written out past this size (a command can archive much).
const BUFFER_BYTES_MAX: usize = 8 << 20;

/// Frames `payload` as one archive record at the end of `out`; returns the
/// bytes it took.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> u64 {
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "archive record of {} bytes", payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    RECORD_HEADER_BYTES + payload.len() as u64
}

/// The payload of the record at the start of `bytes`, if it is whole and intact.
pub fn decode_record(bytes: &[u8]) -> Option<&[u8]> {
    let length = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8 + length)?;
    (length <= RECORD_PAYLOAD_BYTES_MAX && crc32c::crc32c(payload) == crc).then_some(payload)
}

/// Where archived records are read from: the file behind a journal, or
/// nothing (a machine used without one keeps its records in its outbox).
pub trait ArchiveSource {
    /// The payload of the record at `offset`.
    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError>;
}

/// For machines without a journal: every record is still in their outbox.
pub struct NoArchive;

impl ArchiveSource for NoArchive {
    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError> {
        Err(JournalError::Failed(format!("archive record at {offset} asked of a machine without an archive file")))
    }
}

pub(crate) struct Archive {
    file: AppendFile,
}

impl Archive {
    /// Opens the archive and cuts it back to `length` bytes (what the
    /// snapshot refers to); less than that is lost records: an error.
    pub fn open(directory: &Path, length: u64) -> Result<Archive, JournalError> {
        let lost = "archive file is shorter than the snapshot says (records lost)";
        Ok(Archive { file: AppendFile::open(directory, FILE_NAME, length, lost)? })
    }

    /// Takes the records the machine made since the last call. Called after
    /// every command, so the machine's outbox never grows past one command.
    pub fn collect<M: StateMachine>(&mut self, machine: &mut M) -> Result<(), JournalError> {
        machine.take_archive(&mut self.file.buffer);
        let expected = machine.archive_len();
        let have = self.file.length() + self.file.buffer.len() as u64;
        if have != expected {
            return Err(JournalError::Failed(format!(
                "archive out of step: the machine counts {expected} bytes, {} holds {have}",
                self.file.path.display()
            )));
        }
        if self.file.buffer.len() >= BUFFER_BYTES_MAX {
            self.write()?;
        }
        Ok(())
    }

    /// Writes what was collected; readers may find it from then on.
    pub fn write(&mut self) -> Result<(), JournalError> {
        self.file.write(BUFFER_BYTES_MAX)
    }

    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.write()?;
        self.file.sync()
    }

    pub fn length(&self) -> u64 {
        self.file.length()
    }

    pub fn reader(&self) -> Result<ArchiveReader, JournalError> {
        let (path, file) = self.file.reader()?;
        Ok(ArchiveReader { path, file })
    }
}

/// Reads archived records by offset, from any thread.
pub struct ArchiveReader {
    path: PathBuf,
    file: File,
}

impl ArchiveSource for ArchiveReader {
    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError> {
        read_record_at(&self.file, &self.path, offset)
    }
}

/// The writer's own reads (a command applied may read what earlier ones
/// archived): from the file, or from the buffer not written yet.
impl ArchiveSource for Archive {
    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError> {
        let written = self.file.length();
        if offset < written {
            return read_record_at(self.file.handle(), &self.file.path, offset);
        }
        let start = usize::try_from(offset - written).unwrap_or(usize::MAX);
        let record = self.file.buffer.get(start..).and_then(decode_record);
        let corrupt = || JournalError::Corrupt {
            path: self.file.path.clone(),
            offset,
            reason: "no archive record at this offset",
        };
        record.map(<[u8]>::to_vec).ok_or_else(corrupt)
    }
}

fn read_record_at(file: &File, path: &Path, offset: u64) -> Result<Vec<u8>, JournalError> {
    let corrupt = |reason| JournalError::Corrupt { path: path.to_path_buf(), offset, reason };
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, offset).map_err(|source| io_error("read archive file", path, source))?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length > RECORD_PAYLOAD_BYTES_MAX {
        return Err(corrupt("archive record longer than any record"));
    }
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut payload = vec![0u8; length];
    file.read_exact_at(&mut payload, offset + RECORD_HEADER_BYTES)
        .map_err(|source| io_error("read archive file", path, source))?;
    if crc32c::crc32c(&payload) != crc {
        return Err(corrupt("archive record checksum mismatch"));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_a_damaged_one_does_not() {
        let mut out = Vec::new();
        let first = encode_record(b"hello", &mut out);
        encode_record(b"", &mut out);
        assert_eq!(first, RECORD_HEADER_BYTES + 5);
        assert_eq!(decode_record(&out), Some(&b"hello"[..]));
        assert_eq!(decode_record(&out[first as usize..]), Some(&b""[..]));
        out[9] ^= 1;
        assert_eq!(decode_record(&out), None);
        assert_eq!(decode_record(&out[..6]), None);
    }
}
