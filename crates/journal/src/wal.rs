//! The write-ahead log: segment files of checksummed records.
//!
//! A record is a 32-byte header and a payload (one encoded batch):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `ZWL2` |
//! | 4..8 | payload length (u32 LE) |
//! | 8..16 | sequence number (u64 LE), contiguous from 1 |
//! | 16..24 | the sequence of its group's first record (u64 LE) |
//! | 24..28 | CRC-32C of the payload |
//! | 28..32 | CRC-32C of bytes 0..28 |
//!
//! Segments are named `wal-<first sequence, 20 digits>.log`. A group is one
//! write and one `fdatasync`, and is acknowledged only after both: a crash
//! during them can leave any of its pages on the disk and not others, so the
//! newest segment may end in a group with bad records and good ones in any
//! order. A bad record is a torn tail, cut off with everything after it, if
//! every valid record after it belongs to its group (their group's first
//! sequence is at or before it): that group was never acknowledged. A bad
//! record followed by another group's, or one in an older segment, is
//! damage to acknowledged data: recovery stops with the file and offset.
//!
//! [`FileLog`] is the log store of these files (see `log`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, DiskFile, Open};
use crate::error::{JournalError, io_error};

pub(crate) const MAGIC: [u8; 4] = *b"ZWL2";
/// The magic of the records before groups were marked (refused by name).
const MAGIC_VERSION_1: [u8; 4] = *b"ZWAL";
pub(crate) const HEADER_BYTES: usize = 32;
/// The largest payload a record may carry: a full batch of transfers is
/// about 1 MiB; anything claiming more is damage, not data.
pub(crate) const PAYLOAD_BYTES_MAX: usize = 4 << 20;
/// A segment is closed and a new one started past this size, so that
/// segments covered by a snapshot can be deleted whole.
pub(crate) const SEGMENT_BYTES_TARGET: u64 = 64 << 20;

// A record's length is a u32; a segment holds at least one whole record.
const _: () = assert!(PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!((PAYLOAD_BYTES_MAX + HEADER_BYTES) as u64 <= SEGMENT_BYTES_TARGET);

pub(crate) fn segment_name(first_sequence: u64) -> String {
    format!("wal-{first_sequence:020}.log")
}

/// Parses `wal-<digits>.log`.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
}

/// Frames record `sequence` of the group whose first record is `group_first`.
pub(crate) fn encode_record(sequence: u64, group_first: u64, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= PAYLOAD_BYTES_MAX, "a record payload is at most {PAYLOAD_BYTES_MAX} bytes");
    assert!(group_first <= sequence, "a group's first record comes first");
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&group_first.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[start..start + 28]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A record read back: its sequence, its group's first, and where its
/// payload lies in the file.
pub(crate) struct RecordSpan {
    pub sequence: u64,
    pub group_first: u64,
    pub payload_start: usize,
    pub payload_end: usize,
}

enum Parsed {
    Record(RecordSpan),
    Bad(&'static str),
}

fn parse_at(bytes: &[u8], offset: usize) -> Parsed {
    let Some(header) = bytes.get(offset..offset + HEADER_BYTES) else {
        return Parsed::Bad("header cut short");
    };
    if header[0..4] == MAGIC_VERSION_1 {
        return Parsed::Bad("a record of an older version of zhifu's log");
    }
    if header[0..4] != MAGIC {
        return Parsed::Bad("bad magic");
    }
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let long = |at: usize| u64::from(word(at)) | (u64::from(word(at + 4)) << 32);
    if crc32c::crc32c(&header[0..28]) != word(28) {
        return Parsed::Bad("header checksum mismatch");
    }
    let length = word(4) as usize;
    let (sequence, group_first) = (long(8), long(16));
    let payload_crc = word(24);
    if group_first > sequence {
        return Parsed::Bad("a record before its group's first");
    }
    if length > PAYLOAD_BYTES_MAX {
        return Parsed::Bad("payload length over the maximum");
    }
    let payload_start = offset + HEADER_BYTES;
    let Some(payload) = bytes.get(payload_start..payload_start + length) else {
        return Parsed::Bad("payload cut short");
    };
    if crc32c::crc32c(payload) != payload_crc {
        return Parsed::Bad("payload checksum mismatch");
    }
    Parsed::Record(RecordSpan { sequence, group_first, payload_start, payload_end: payload_start + length })
}

/// The intact record at `offset` of `bytes`, if there is one.
pub(crate) fn parse_record(bytes: &[u8], offset: usize) -> Option<RecordSpan> {
    match parse_at(bytes, offset) {
        Parsed::Record(span) => Some(span),
        Parsed::Bad(_) => None,
    }
}

/// Whether an intact record after `offset` belongs to a group other than
/// that of record `expected` (which is bad at `offset`): the test that
/// separates a torn tail (the last group, never acknowledged) from damage.
fn another_group_after(bytes: &[u8], offset: usize, expected: u64) -> bool {
    (offset + 1..bytes.len().saturating_sub(HEADER_BYTES - 1))
        .filter(|&at| bytes[at..at + 4] == MAGIC)
        .filter_map(|at| match parse_at(bytes, at) {
            Parsed::Record(span) => Some(span),
            Parsed::Bad(_) => None,
        })
        .any(|span| span.group_first > expected || span.sequence <= expected)
}

const READS_DISAGREE: &str = "two reads of the torn tail disagree (the disk returned wrong bytes)";

/// One segment read whole: its records, and the length of its valid prefix.
pub(crate) struct ScannedSegment {
    pub bytes: Vec<u8>,
    pub records: Vec<RecordSpan>,
    pub valid_length: u64,
    pub torn_bytes: u64,
}

/// Reads a segment whose first record is `first_sequence`. `is_newest`
/// allows a torn tail to be cut off.
pub(crate) fn scan_segment(
    disk: &dyn Disk,
    path: &Path,
    first_sequence: u64,
    is_newest: bool,
) -> Result<ScannedSegment, JournalError> {
    let bytes = disk.read(path).map_err(|source| io_error("read log segment", path, source))?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match parse_at(&bytes, offset) {
            Parsed::Record(span) => {
                offset = span.payload_end;
                records.push(span);
            }
            Parsed::Bad(reason) => {
                let expected = records.last().map_or(first_sequence, |last: &RecordSpan| last.sequence + 1);
                if is_newest && !another_group_after(&bytes, offset, expected) {
                    // Cut only what reads the same twice: a read that came
                    // back wrong once must not cut an acknowledged record.
                    let again = disk.read(path).map_err(|source| io_error("read log segment", path, source))?;
                    if again != bytes {
                        return Err(io_error("read log segment", path, std::io::Error::other(READS_DISAGREE)));
                    }
                    let torn_bytes = (bytes.len() - offset) as u64;
                    return Ok(ScannedSegment { bytes, records, valid_length: offset as u64, torn_bytes });
                }
                return Err(JournalError::Corrupt { path: path.to_path_buf(), offset: offset as u64, reason });
            }
        }
    }
    let valid_length = bytes.len() as u64;
    Ok(ScannedSegment { bytes, records, valid_length, torn_bytes: 0 })
}

/// The segment being appended to.
pub(crate) struct ActiveSegment {
    pub path: PathBuf,
    file: Arc<dyn DiskFile>,
    pub length: u64,
}

impl ActiveSegment {
    /// Creates a new, empty segment and makes its name durable.
    pub fn create(disk: &dyn Disk, directory: &Path, first_sequence: u64) -> Result<ActiveSegment, JournalError> {
        let path = directory.join(segment_name(first_sequence));
        let file = disk.open(&path, Open::CreateNew).map_err(|source| io_error("create log segment", &path, source))?;
        sync_directory(disk, directory)?;
        Ok(ActiveSegment { path, file, length: 0 })
    }

    /// Reopens an existing segment for appending after its valid prefix,
    /// cutting off a torn tail durably first.
    pub fn reopen(disk: &dyn Disk, path: &Path, valid_length: u64) -> Result<ActiveSegment, JournalError> {
        let file = disk.open(path, Open::Write).map_err(|source| io_error("open log segment", path, source))?;
        let actual = file.size().map_err(|source| io_error("stat log segment", path, source))?;
        if actual != valid_length {
            file.set_len(valid_length).map_err(|source| io_error("cut torn tail of", path, source))?;
            file.sync().map_err(|source| io_error("sync log segment", path, source))?;
        }
        Ok(ActiveSegment { path: path.to_path_buf(), file, length: valid_length })
    }

    /// Appends bytes and waits until they are on disk. An error here is
    /// fatal for the journal: after a failed fdatasync the kernel may have
    /// dropped the dirty pages, so retrying could report lost data as durable.
    pub fn append_durably(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        self.file
            .write_at(bytes, self.length)
            .map_err(|source| io_error("append to log segment", &self.path, source))?;
        self.file.sync().map_err(|source| io_error("fdatasync log segment", &self.path, source))?;
        self.length += bytes.len() as u64;
        Ok(())
    }
}

/// The log as segment files in a data directory.
pub struct FileLog {
    disk: Arc<dyn Disk>,
    directory: PathBuf,
    /// Segments by their first sequence, oldest first, as found at open.
    segments: Vec<(u64, PathBuf)>,
    /// The segment appended to: the newest, once read to its end (or a new one).
    active: Option<ActiveSegment>,
    /// The last record read or appended.
    last: u64,
    torn_bytes_cut: u64,
    /// The group being appended, encoded: kept between groups, since a
    /// buffer of megabytes made afresh each group costs its pages' faults.
    encoded: Vec<u8>,
}

/// The most an idle [`FileLog::encoded`] keeps (a rare huge group's buffer
/// is let go).
const ENCODED_KEPT_BYTES_MAX: usize = 64 << 20;

impl FileLog {
    /// The segments of `directory` (read by `read_after`, appended after).
    pub fn open(disk: Arc<dyn Disk>, directory: &Path) -> Result<FileLog, JournalError> {
        let names = disk.list(directory).map_err(|source| io_error("list data directory", directory, source))?;
        let mut segments: Vec<(u64, PathBuf)> = names
            .iter()
            .filter_map(|name| parse_segment_name(name).map(|sequence| (sequence, directory.join(name))))
            .collect();
        segments.sort();
        Ok(FileLog {
            disk,
            directory: directory.to_path_buf(),
            segments,
            active: None,
            last: 0,
            torn_bytes_cut: 0,
            encoded: Vec::new(),
        })
    }

    /// Whether the directory holds any log segment.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Records missing between `expected` and `found`, where `path` says.
pub(crate) fn gap(path: &Path, expected: u64, found: u64) -> JournalError {
    JournalError::Gap {
        path: path.to_path_buf(),
        detail: format!("expected record {expected} next, found {found}; a snapshot or segment is missing"),
    }
}

impl crate::log::LogStore for FileLog {
    fn describe(&self) -> String {
        format!("the log in {}", self.directory.display())
    }

    fn first_sequence(&mut self) -> Result<Option<u64>, JournalError> {
        Ok(self.segments.first().map(|(first, _)| *first))
    }

    /// Reads the segments in order (each whole: at most 64 MiB), cutting a
    /// torn tail off the newest, which is then appended to.
    fn read_after(&mut self, after: u64, limit: u64, visit: &mut crate::log::Visit<'_>) -> Result<u64, JournalError> {
        let mut next = after + 1;
        let mut read = 0;
        let count = self.segments.len();
        for position in 0..count {
            let (first_sequence, path) = self.segments[position].clone();
            let is_newest = position + 1 == count;
            if !is_newest && self.segments[position + 1].0 <= next {
                continue; // every record of it is at or before `after`
            }
            let scanned = scan_segment(&*self.disk, &path, first_sequence, is_newest)?;
            if scanned.records.is_empty() && first_sequence > next {
                return Err(gap(&path, next, first_sequence));
            }
            for record in &scanned.records {
                if record.sequence < next {
                    continue;
                }
                if record.sequence != next {
                    return Err(gap(&path, next, record.sequence));
                }
                if read == limit {
                    return Ok(read);
                }
                visit(record.sequence, &scanned.bytes[record.payload_start..record.payload_end])?;
                self.last = record.sequence;
                next += 1;
                read += 1;
            }
            if is_newest && self.active.is_none() {
                self.torn_bytes_cut = scanned.torn_bytes;
                self.active = Some(ActiveSegment::reopen(&*self.disk, &path, scanned.valid_length)?);
            }
        }
        Ok(read)
    }

    fn append(&mut self, first: u64, payloads: &[&[u8]]) -> Result<(), JournalError> {
        let active = match self.active.take() {
            Some(active) if active.length < SEGMENT_BYTES_TARGET => active,
            _ => ActiveSegment::create(&*self.disk, &self.directory, first)?,
        };
        let active = self.active.insert(active);
        let encoded = &mut self.encoded;
        encoded.clear();
        encoded.reserve(payloads.iter().map(|payload| HEADER_BYTES + payload.len()).sum());
        for (offset, payload) in payloads.iter().enumerate() {
            encode_record(first + offset as u64, first, payload, encoded);
        }
        let appended = active.append_durably(encoded);
        if encoded.capacity() > ENCODED_KEPT_BYTES_MAX {
            *encoded = Vec::new();
        }
        appended?;
        self.last = first + payloads.len() as u64 - 1;
        Ok(())
    }

    /// Only this process appends, and an append returns only once durable
    /// or failed for good: never ambiguous.
    fn committed(&mut self, first: u64, count: u64) -> Result<bool, JournalError> {
        Ok(self.last >= first + count - 1)
    }

    /// New records go to a fresh segment, so that every older one is
    /// covered by the snapshot and deleted whole.
    fn release(&mut self, sequence: u64) -> Result<(), JournalError> {
        let fresh = self.active.as_ref().is_some_and(|active| {
            active.length == 0 && active.path.file_name() == Some(segment_name(sequence + 1).as_ref())
        });
        if !fresh {
            self.active = Some(ActiveSegment::create(&*self.disk, &self.directory, sequence + 1)?);
        }
        let names = self
            .disk
            .list(&self.directory)
            .map_err(|source| io_error("list data directory", &self.directory, source))?;
        for name in names {
            if parse_segment_name(&name).is_some_and(|first| first <= sequence) {
                let path = self.directory.join(&name);
                self.disk.remove(&path).map_err(|source| io_error("remove", &path, source))?;
            }
        }
        self.segments.retain(|(first, _)| *first > sequence);
        sync_directory(&*self.disk, &self.directory)
    }

    fn torn_bytes_cut(&self) -> u64 {
        self.torn_bytes_cut
    }
}

/// Makes a new or renamed file's name durable.
pub(crate) fn sync_directory(disk: &dyn Disk, directory: &Path) -> Result<(), JournalError> {
    disk.sync_directory(directory).map_err(|source| io_error("fsync directory", directory, source))
}
