//! The history file: every transfer ever applied, at its position, so that
//! the ledger may drop old transfers from memory (see `LedgerConfig`'s id
//! horizon) and the log may be truncated after a snapshot.
//!
//! `history.log` is an array of fixed 136-byte records: CRC-32C (4 bytes) of
//! the rest, the transfer (116), and the positions of the previous transfer
//! of its debit and of its credit account (8 + 8). Record `p` is at byte
//! `p × 136`. It is written after each group (no fdatasync of its own:
//! everything in it is also in the log until a snapshot), and synced before
//! a snapshot is written, so a snapshot never covers history that is not on
//! disk. At start it is cut back to the snapshot's transfer count and the
//! log replay appends the rest.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ledger::{Ledger, StoredTransfer};

use crate::append_file::AppendFile;
use crate::codec::{self, Reader, STORED_BYTES, Writer};
use crate::error::{JournalError, io_error};

pub(crate) const RECORD_BYTES: usize = 4 + STORED_BYTES;
pub(crate) const FILE_NAME: &str = "history.log";
/// The history buffer is written out past this size.
const BUFFER_BYTES_MAX: usize = 8 << 20;

pub(crate) struct History {
    file: AppendFile,
    /// Records encoded in the buffer, not yet written.
    buffered: u64,
}

impl History {
    /// Opens the history file and cuts it back to `count` records (what the
    /// snapshot covers); fewer than that is lost history: an error.
    pub fn open(directory: &Path, count: u64) -> Result<History, JournalError> {
        let lost = "history file is shorter than the snapshot says (transfers lost)";
        let file = AppendFile::open(directory, FILE_NAME, count * RECORD_BYTES as u64, lost)?;
        Ok(History { file, buffered: 0 })
    }

    /// Encodes the transfers the ledger stored since the last call. Called
    /// after every batch, before a later batch can evict them from memory.
    pub fn collect(&mut self, ledger: &Ledger) -> Result<(), JournalError> {
        let next = self.collected();
        if ledger.first_position_in_memory() > next {
            return Err(JournalError::Failed(format!(
                "transfers from position {next} left memory before reaching {}",
                self.file.path.display()
            )));
        }
        for stored in ledger.stored_transfers_from(next) {
            let buffer = &mut self.file.buffer;
            let start = buffer.len();
            buffer.extend_from_slice(&[0; 4]);
            codec::write_stored(&mut Writer(buffer), stored);
            let crc = crc32c::crc32c(&buffer[start + 4..]);
            buffer[start..start + 4].copy_from_slice(&crc.to_le_bytes());
            self.buffered += 1;
            // A command that stores millions of transfers (a day's yield)
            // is written out as it goes, so the buffer stays small.
            if self.file.buffer.len() >= BUFFER_BYTES_MAX {
                self.write()?;
            }
        }
        Ok(())
    }

    /// How many transfers have been taken (written or buffered).
    pub fn collected(&self) -> u64 {
        self.count() + self.buffered
    }

    /// Writes what was collected (one write; durability comes with `sync`).
    pub fn write(&mut self) -> Result<(), JournalError> {
        self.file.write(BUFFER_BYTES_MAX)?;
        self.buffered = 0;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.write()?;
        self.file.sync()
    }

    /// Records in the file (written, not necessarily synced).
    pub fn count(&self) -> u64 {
        self.file.length() / RECORD_BYTES as u64
    }

    /// A handle for reading from other threads.
    pub fn reader(&self) -> Result<HistoryReader, JournalError> {
        let (path, file) = self.file.reader()?;
        Ok(HistoryReader { path, file })
    }
}

/// Reads transfers from the history file by position.
pub struct HistoryReader {
    path: PathBuf,
    file: File,
}

impl HistoryReader {
    /// The transfer at `position`; an error if it is not there or damaged.
    pub fn read(&self, position: u64) -> Result<StoredTransfer, JournalError> {
        let mut record = [0u8; RECORD_BYTES];
        let offset = position * RECORD_BYTES as u64;
        self.file
            .read_exact_at(&mut record, offset)
            .map_err(|source| io_error("read history file", &self.path, source))?;
        let corrupt =
            JournalError::Corrupt { path: self.path.clone(), offset, reason: "history record checksum mismatch" };
        let crc = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
        if crc32c::crc32c(&record[4..]) != crc {
            return Err(corrupt);
        }
        codec::read_stored(&mut Reader::new(&record[4..], "history record")).map_err(|_| corrupt)
    }
}
