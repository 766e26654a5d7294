//! What the history and the archive files share: a file that grows by a
//! buffer written after each command group (no fdatasync of its own:
//! everything in it is also in the log until a snapshot), is synced before
//! every snapshot, and at start is cut back to the length the snapshot
//! relies on — the log replay then appends the rest again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, DiskFile, Open};
use crate::error::{JournalError, io_error};

pub(crate) struct AppendFile {
    pub path: PathBuf,
    file: Arc<dyn DiskFile>,
    /// Bytes in the file (written, not necessarily synced).
    length: u64,
    /// Encoded, not yet written.
    pub buffer: Vec<u8>,
}

impl AppendFile {
    /// Opens `name` and cuts it to `length` bytes; shorter than that is data
    /// the snapshot relies on and lost: an error saying `lost`.
    pub fn open(
        disk: &dyn Disk,
        directory: &Path,
        name: &str,
        length: u64,
        lost: &'static str,
    ) -> Result<AppendFile, JournalError> {
        let path = directory.join(name);
        let file = disk.open(&path, Open::Create).map_err(|source| io_error("open", &path, source))?;
        let found = file.size().map_err(|source| io_error("stat", &path, source))?;
        if found < length {
            return Err(JournalError::Corrupt { path, offset: found, reason: lost });
        }
        if found > length {
            file.set_len(length).map_err(|source| io_error("cut", &path, source))?;
        }
        Ok(AppendFile { path, file, length, buffer: Vec::new() })
    }

    /// Writes the buffer at the end (one write; durability comes with `sync`).
    pub fn write(&mut self, buffer_capacity_kept: usize) -> Result<(), JournalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.file.write_at(&self.buffer, self.length).map_err(|source| io_error("write", &self.path, source))?;
        self.length += self.buffer.len() as u64;
        self.buffer.clear();
        self.buffer.shrink_to(buffer_capacity_kept);
        Ok(())
    }

    /// Syncs what was written (call `write` first).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync().map_err(|source| io_error("fdatasync", &self.path, source))
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    /// The file, for reading what was written.
    pub fn handle(&self) -> &dyn DiskFile {
        &*self.file
    }

    /// A handle for reading from other threads.
    pub fn reader(&self) -> (PathBuf, Arc<dyn DiskFile>) {
        (self.path.clone(), Arc::clone(&self.file))
    }
}
