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

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ledger::{Ledger, StoredTransfer};

use crate::codec::{self, Reader, STORED_BYTES, Writer};
use crate::error::{JournalError, io_error};

pub(crate) const RECORD_BYTES: usize = 4 + STORED_BYTES;
pub(crate) const FILE_NAME: &str = "history.log";
/// The history buffer is written out past this size.
const BUFFER_BYTES_MAX: usize = 8 << 20;

pub(crate) struct History {
    path: PathBuf,
    file: File,
    /// Records in the file (written, not necessarily synced).
    count: u64,
    buffer: Vec<u8>,
    /// Records encoded in `buffer`, not yet written.
    buffered: u64,
}

impl History {
    /// Opens the history file and cuts it back to `count` records (what the
    /// snapshot covers); fewer than that is lost history: an error.
    pub fn open(directory: &Path, count: u64) -> Result<History, JournalError> {
        let path = directory.join(FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| io_error("open history file", &path, source))?;
        let length = file.metadata().map_err(|source| io_error("stat history file", &path, source))?.len();
        let wanted = count * RECORD_BYTES as u64;
        if length < wanted {
            return Err(JournalError::Corrupt {
                path,
                offset: length,
                reason: "history file is shorter than the snapshot says (transfers lost)",
            });
        }
        if length > wanted {
            file.set_len(wanted).map_err(|source| io_error("cut history file", &path, source))?;
        }
        Ok(History { path, file, count, buffer: Vec::new(), buffered: 0 })
    }

    /// Encodes the transfers the ledger stored since the last call. Called
    /// after every batch, before a later batch can evict them from memory.
    pub fn collect(&mut self, ledger: &Ledger) -> Result<(), JournalError> {
        let next = self.count + self.buffered;
        if ledger.first_position_in_memory() > next {
            return Err(JournalError::Failed(format!(
                "transfers from position {next} left memory before reaching {}",
                self.path.display()
            )));
        }
        for stored in ledger.stored_transfers_from(next) {
            let start = self.buffer.len();
            self.buffer.extend_from_slice(&[0; 4]);
            codec::write_stored(&mut Writer(&mut self.buffer), stored);
            let crc = crc32c::crc32c(&self.buffer[start + 4..]);
            self.buffer[start..start + 4].copy_from_slice(&crc.to_le_bytes());
            self.buffered += 1;
            // A command that stores millions of transfers (a day's yield)
            // is written out as it goes, so the buffer stays small.
            if self.buffer.len() >= BUFFER_BYTES_MAX {
                self.write()?;
            }
        }
        Ok(())
    }

    /// How many transfers have been taken (written or buffered).
    pub fn collected(&self) -> u64 {
        self.count + self.buffered
    }

    /// Writes what was collected (one write; durability comes with `sync`).
    pub fn write(&mut self) -> Result<(), JournalError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let offset = self.count * RECORD_BYTES as u64;
        self.file
            .write_all_at(&self.buffer, offset)
            .map_err(|source| io_error("write history file", &self.path, source))?;
        self.count += self.buffered;
        self.buffered = 0;
        self.buffer.clear();
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.write()?;
        self.file.sync_data().map_err(|source| io_error("fdatasync history file", &self.path, source))
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// A handle for reading from other threads.
    pub fn reader(&self) -> Result<HistoryReader, JournalError> {
        let file = self.file.try_clone().map_err(|source| io_error("reopen history file", &self.path, source))?;
        Ok(HistoryReader { path: self.path.clone(), file })
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
