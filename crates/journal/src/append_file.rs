//! What the history and the archive files share: a file that grows by a
//! buffer written after each command group (no fdatasync of its own:
//! everything in it is also in the log until a snapshot), is synced before
//! every snapshot, and at start is cut back to the length the snapshot
//! relies on — the log replay then appends the rest again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{JournalError, io_error};

pub(crate) struct AppendFile {
    pub path: PathBuf,
    file: File,
    /// Bytes in the file (written, not necessarily synced).
    length: u64,
    /// Encoded, not yet written.
    pub buffer: Vec<u8>,
}

impl AppendFile {
    /// Opens `name` and cuts it to `length` bytes; shorter than that is data
    /// the snapshot relies on and lost: an error saying `lost`.
    pub fn open(directory: &Path, name: &str, length: u64, lost: &'static str) -> Result<AppendFile, JournalError> {
        let path = directory.join(name);
        let file = crate::journal::private_options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| io_error("open", &path, source))?;
        let found = file.metadata().map_err(|source| io_error("stat", &path, source))?.len();
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
        self.file.write_all_at(&self.buffer, self.length).map_err(|source| io_error("write", &self.path, source))?;
        self.length += self.buffer.len() as u64;
        self.buffer.clear();
        self.buffer.shrink_to(buffer_capacity_kept);
        Ok(())
    }

    /// Syncs what was written (call `write` first).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|source| io_error("fdatasync", &self.path, source))
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    /// The file, for reading what was written.
    pub fn handle(&self) -> &File {
        &self.file
    }

    /// A handle for reading from other threads.
    pub fn reader(&self) -> Result<(PathBuf, File), JournalError> {
        let file = self.file.try_clone().map_err(|source| io_error("reopen", &self.path, source))?;
        Ok((self.path.clone(), file))
    }
}
