//! Entry points for the fuzzers in `fuzz/` (cargo fuzz): each way the
//! journal reads bytes back from its files, given any bytes. None may
//! panic, loop, or allocate much past its input; each ends in a value or an
//! error. The files are put on a [`SimulatedDisk`], so the journal's own
//! code reads them as it reads a data directory.

use std::path::Path;

use crate::archive::{Archive, ArchiveSource};
use crate::disk::{Disk, Open, SimulatedDisk};
use crate::error::JournalError;
use crate::history::History;
use crate::machine::StateMachine;

const DIRECTORY: &str = "/fuzz";

fn disk_with(files: &[(&str, &[u8])]) -> Result<SimulatedDisk, JournalError> {
    let disk = SimulatedDisk::new(0);
    let directory = Path::new(DIRECTORY);
    let failed = |source| crate::error::io_error("write", directory, source);
    disk.create_directory(directory).map_err(failed)?;
    for (name, bytes) in files {
        let file = disk.open(&directory.join(name), Open::CreateNew).map_err(failed)?;
        file.write_at(bytes, 0).map_err(failed)?;
    }
    Ok(disk)
}

/// A log segment: the records it holds (up to a torn tail), or why not.
pub fn log_segment(bytes: &[u8]) -> Result<usize, JournalError> {
    let name = crate::wal::segment_name(1);
    let disk = disk_with(&[(&name, bytes)])?;
    let scanned = crate::wal::scan_segment(&disk, &Path::new(DIRECTORY).join(name), 1, true)?;
    Ok(scanned.records.len())
}

/// A snapshot's body (past its header and checksums, which random bytes
/// never pass): the machine it rebuilds, or why not.
pub fn snapshot_body<M: StateMachine>(bytes: &[u8]) -> Result<M, String> {
    crate::snapshot::decode_body(bytes)
}

/// The history file and its index, opened as holding `count` transfers,
/// then every one of them read back: how many read.
pub fn history(log: &[u8], index: &[u8], count: u64) -> Result<u64, JournalError> {
    let disk = disk_with(&[(crate::history::FILE_NAME, log), (crate::history::INDEX_FILE_NAME, index)])?;
    let history = History::open(&disk, Path::new(DIRECTORY), count)?;
    let reader = history.reader();
    let readable = (0..count.min(1 << 12)).filter(|&position| reader.read(position).is_ok()).count();
    Ok(readable as u64)
}

/// The archive and its index, opened as holding `length` bytes of records,
/// then every record walked and each read again by its offset: how many.
pub fn archive(log: &[u8], index: &[u8], length: u64) -> Result<u64, JournalError> {
    let disk = disk_with(&[(crate::archive::FILE_NAME, log), (crate::archive::INDEX_FILE_NAME, index)])?;
    let archive = Archive::open(&disk, Path::new(DIRECTORY), length, crate::archive::FRAME_BYTES_DEFAULT, false)?;
    let mut offsets = Vec::new();
    archive.for_each_record(&mut |offset, _| {
        offsets.push(offset);
        Ok(())
    })?;
    for &offset in &offsets {
        archive.read_record(offset)?;
    }
    Ok(offsets.len() as u64)
}
