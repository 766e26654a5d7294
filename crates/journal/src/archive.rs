//! The archive file: records a machine moved out of memory (its delivered
//! events, its finished trades), found again by the byte offset the machine
//! itself assigned when it made them.
//!
//! Offsets are part of the machine's state, so they must not depend on I/O:
//! the machine keeps an [`Outbox`], which frames each record and counts the
//! bytes ([`StateMachine::archive_len`]); the journal takes the outbox after
//! every command, in order, so a record's offset is the count of record
//! bytes before it. Records are `[length u32][CRC-32C u32][payload]`; only
//! this module knows it.
//!
//! A busy day's events are most of what the platform writes, and they are
//! alike (the same fields, subjects, times a few seconds apart), so on disk
//! the records are compressed (LZ4 HC) in frames of about
//! [`FRAME_BYTES_DEFAULT`]: `archive.log` is a sequence of frames
//! `[record bytes u32][stored bytes u32][CRC-32C of the stored bytes u32]
//! [stored bytes]`, and `archive.idx` has a 16-byte entry a frame: the
//! offset of its first record and where the frame starts in `archive.log`.
//! Records after the last frame (the tail) wait in memory until a frame
//! fills; readers find them there. Reading a record decompresses its frame
//! (a few recently read frames are kept).
//!
//! The journal writer hands each frame's records to a compressor thread,
//! which compresses and writes them (not synced: the log holds every
//! command) in order; a snapshot first closes the tail into a frame and
//! waits until every frame is written and synced, so a snapshot's archive
//! length is always a frame's end. At start the files are cut back to that
//! frame and the log replay appends the rest again.
//!
//! [`StateMachine::archive_len`]: crate::StateMachine::archive_len

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

use crate::append_file::AppendFile;
use crate::disk::{Disk, DiskFile, Open};
use crate::error::{JournalError, io_error};
use crate::frame_table::FrameTable;
use crate::helpers::Helpers;
use crate::machine::StateMachine;

pub(crate) const FILE_NAME: &str = "archive.log";
pub(crate) const INDEX_FILE_NAME: &str = "archive.idx";
/// Bytes before each record's payload: its length and checksum.
pub const RECORD_HEADER_BYTES: u64 = 8;
/// One record is at most this long (a trade with its refunds is a few KB).
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// Record bytes a frame: a read decompresses this much, and the compressor
/// finds most of what repeats within it. Buyers confirm trades archived
/// hours before, in any order, so the writer reads frames at random: 64 KB
/// frames of zstd (2.55 times smaller) cost it a third of its time, 16 KB
/// ones were no faster than 4 KB. A 4 KB frame of a day's events (encoded
/// relative, see the platform's `at_rest`) takes 2.9 times less in zstd and
/// 2.6 in LZ4 HC, which decodes it about 5 times faster: zstd's decoding
/// was a seventh of the writer's time in a full day.
pub const FRAME_BYTES_DEFAULT: usize = 4 << 10;
const FRAME_HEADER_BYTES: u64 = 12;
const INDEX_ENTRY_BYTES: u64 = 16;
/// LZ4 HC's levels 3–9 compress these frames alike (2.62–2.63) at about
/// the same speed; the fast mode takes 10% more.
const COMPRESSION_LEVEL: i32 = 4;
/// Decompressed frames kept for reads (settling parked trades reads them
/// in order; 256 KB).
const CACHED_FRAMES: usize = 64;
/// The compressor writes its buffer when no frame waits, or past this size
/// (until then readers find the records in the tail); it keeps at most
/// `BUFFER_BYTES_MAX`.
const WRITE_BYTES: usize = 64 << 10;
const BUFFER_BYTES_MAX: usize = 1 << 20;
/// A frame's records at most: it closes past `frame_bytes` (at most
/// `BUFFER_BYTES_MAX`), so it holds that and one record more.
const FRAME_RECORD_BYTES_MAX: usize = BUFFER_BYTES_MAX + RECORD_HEADER_BYTES as usize + RECORD_PAYLOAD_BYTES_MAX;
/// A frame in the file at most: its header and LZ4's bound for its records
/// (incompressible bytes grow by 1/255, and a little). Anything the index
/// claims past this is damage, never an allocation of that size.
const FRAME_FILE_BYTES_MAX: usize =
    FRAME_HEADER_BYTES as usize + FRAME_RECORD_BYTES_MAX + FRAME_RECORD_BYTES_MAX / 255 + 64;
/// Hand-overs (a group's frames each) not yet taken by the compressor; the
/// writer waits beyond.
const HAND_OVERS_QUEUED_MAX: usize = 64;
const COMPRESSOR_THREAD_NAME: &str = "archive-compressor";
/// The compressor's nice value, the highest (see `lower_this_threads_priority`).
const COMPRESSOR_NICE: i32 = 19;
/// Records not yet handed over are handed over past this size even within
/// a group (a replay collects a whole log before it writes).
const HAND_OVER_BYTES_MAX: u64 = 1 << 20;
const LOST: &str = "archive file is shorter than the snapshot says (records lost)";

// A record's length is a u32, and a frame holds at least one whole record;
// a frame's sizes fit its header's u32s and LZ4's i32.
const _: () = assert!(FRAME_FILE_BYTES_MAX < i32::MAX as usize);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_BYTES_DEFAULT <= BUFFER_BYTES_MAX);

/// Frames `payload` as one archive record at the end of `out`; returns the
/// bytes it took.
pub(crate) fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> u64 {
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

    /// What the machine made of the record at `offset` when it was read
    /// ahead (`StateMachine::decode_read_ahead`), taken: `None` if it was
    /// not read ahead or not decoded; then `read_record` has it.
    fn take_decoded(&self, _offset: u64) -> Option<Decoded> {
        None
    }

    /// Reads the records at `offsets` and decodes each with `decode` now,
    /// for `take_decoded` to find: a command about to read many (a tick's
    /// due trades) asks first, and a journal with helper threads reads and
    /// decodes them on those as well as on the caller's. Nothing is lost if
    /// it does nothing: each record is read when asked for.
    fn decode_ahead(&self, _offsets: &[u64], _decode: DecodeFn) {}

    /// Every record, in the order they were archived: its offset and
    /// payload. Reads each frame once, in file order (what a walk over
    /// everything wants: records by offset would read a frame per record).
    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> Result<(), JournalError>;
}

/// What [`ArchiveSource::for_each_record`] calls with each record.
pub type RecordVisitor<'a> = dyn FnMut(u64, &[u8]) -> Result<(), JournalError> + 'a;

/// Calls `visit` with each record of `bytes`, whose first is at `offset`;
/// at the first that is not whole and intact, the error `damaged` makes of
/// its offset.
pub(crate) fn for_each_record_in(
    bytes: &[u8],
    offset: u64,
    visit: &mut RecordVisitor<'_>,
    damaged: impl Fn(u64) -> JournalError,
) -> Result<(), JournalError> {
    let mut at = 0;
    while at < bytes.len() {
        let here = offset + at as u64;
        let payload = bytes.get(at..).and_then(decode_record).ok_or_else(|| damaged(here))?;
        visit(here, payload)?;
        at += RECORD_HEADER_BYTES as usize + payload.len();
    }
    Ok(())
}

/// A machine's archive records not yet taken by the journal, framed as the
/// journal stores them, and the offset the next one gets. A machine that
/// archives keeps one in its state: its length is part of the state (so a
/// record's offset needs no I/O), its records are what
/// [`StateMachine::take_archive`] hands over after each command. A machine
/// used without a journal keeps every record here, and reads them back.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    /// Bytes of every record made so far: the next record's offset.
    length: u64,
    /// Records not yet taken.
    pending: Vec<u8>,
}

/// An outbox keeps no more spare capacity than this once emptied (a busy
/// tick archives megabytes; the next command, a few hundred bytes).
const OUTBOX_CAPACITY_KEPT: usize = 1 << 20;

impl Outbox {
    /// The outbox of a machine restored with `length` bytes of records behind it.
    pub fn resume(length: u64) -> Outbox {
        Outbox { length, pending: Vec::new() }
    }

    /// Archives a record; returns its offset.
    pub fn push(&mut self, payload: &[u8]) -> u64 {
        let offset = self.length;
        self.length += encode_record(payload, &mut self.pending);
        offset
    }

    /// Bytes of every record made so far ([`StateMachine::archive_len`]).
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Moves the records not yet taken to the end of `out`.
    pub fn take(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
        if self.pending.capacity() > OUTBOX_CAPACITY_KEPT {
            self.pending = Vec::new();
        }
    }

    /// The payload of the record at `offset`: from the outbox if it is not
    /// taken yet, else from `source`.
    pub fn read(&self, source: &dyn ArchiveSource, offset: u64) -> Result<Vec<u8>, JournalError> {
        let taken = self.length - self.pending.len() as u64;
        if offset >= self.length {
            return Err(JournalError::Failed(format!(
                "no archive record at {offset}: the archive has {}",
                self.length
            )));
        }
        if offset < taken {
            return source.read_record(offset);
        }
        let start = usize::try_from(offset - taken).unwrap_or(usize::MAX);
        let payload = self.pending.get(start..).and_then(decode_record);
        payload
            .map(<[u8]>::to_vec)
            .ok_or_else(|| JournalError::Failed(format!("archive record at {offset} in memory is damaged")))
    }

    /// Calls `visit` with each record not yet taken, as [`ArchiveSource::for_each_record`].
    pub fn for_each_pending(&self, visit: &mut RecordVisitor<'_>) -> Result<(), JournalError> {
        let taken = self.length - self.pending.len() as u64;
        for_each_record_in(&self.pending, taken, visit, |offset| {
            JournalError::Failed(format!("archive record at {offset} in memory is damaged"))
        })
    }
}

/// For machines without a journal: every record is still in their outbox.
pub struct NoArchive;

impl ArchiveSource for NoArchive {
    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError> {
        Err(JournalError::Failed(format!("archive record at {offset} asked of a machine without an archive file")))
    }

    fn for_each_record(&self, _visit: &mut RecordVisitor<'_>) -> Result<(), JournalError> {
        Ok(())
    }
}

pub(crate) struct Archive {
    shared: Arc<Shared>,
    path: PathBuf,
    /// The offset up to which records were handed to the compressor.
    handed_end: u64,
    frame_bytes: usize,
    compressor: Option<Compressing>,
    /// Records read by another thread for the group being applied (see
    /// `Writer::write_group`), or by `decode_ahead` for the command being
    /// applied: offset → the record, taken as it is asked
    /// for. A record's bytes at an offset never change while the archive is
    /// open, so a record read ahead is the record the writer would read.
    read_ahead: Mutex<HashMap<u64, ReadAheadRecord>>,
    /// Threads that share `decode_ahead`'s work with the writer's (none in
    /// a deterministic simulation).
    helpers: Option<Helpers>,
}

/// Where frames are compressed and written.
enum Compressing {
    /// On the compressor's own thread, while the writer goes on.
    Background { to_compressor: SyncSender<ToCompressor>, thread: JoinHandle<()> },
    /// On the writer's thread, before it goes on: every disk operation in
    /// one order, which a deterministic simulation needs.
    Inline(Box<Compressor>),
}

enum ToCompressor {
    /// Whole records from offset `start`, one frame each `frames` bytes.
    Frames { start: u64, records: Vec<u8>, frames: Vec<usize> },
    /// Write and sync every frame handed over before it, then answer.
    Sync(SyncSender<Result<(), JournalError>>),
}

/// Compresses and writes frames on a thread of its own (it would take a
/// tenth of the journal writer's time), in the order they were handed over.
struct Compressor {
    log: AppendFile,
    index: AppendFile,
    shared: Arc<Shared>,
    /// Frames encoded into the buffers, not yet written: (first record's
    /// offset, where the frame starts).
    unwritten: Vec<(u64, u64)>,
    /// The offset up to which records are in frames (written or not).
    framed_end: u64,
    /// A frame as compressed (kept: no allocation a frame).
    stored: Vec<u8>,
}

/// What readers on any thread share with the writer and the compressor.
struct Shared {
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    frames: RwLock<Frames>,
    tail: RwLock<Tail>,
    cache: Mutex<VecDeque<(usize, Arc<Vec<u8>>)>>,
    /// Why the compressor stopped, if it did: the writer stops too.
    failure: Mutex<Option<String>>,
}

/// The frames written to the file.
struct Frames {
    /// (first record's offset, where the frame starts in the file), by offset.
    starts: FrameTable,
    /// Record bytes in written frames, and the file's length.
    records_end: u64,
    file_end: u64,
}

/// Records not yet in a written frame, from offset `start`.
struct Tail {
    start: u64,
    bytes: Vec<u8>,
}

/// One frame's place: its records' offsets and its bytes in the file.
#[derive(Clone, Copy)]
struct FrameAt {
    number: usize,
    records_start: u64,
    records_end: u64,
    file_start: u64,
    file_end: u64,
}

/// How many of the index's entries the archive keeps at start, and where
/// the last kept frame ends in the file: the frames up to `length` (what
/// the snapshot counts on). Their entries were synced before the snapshot;
/// the entries after them may be anything a crash left (lost, torn, zeros
/// where a later write landed and an earlier one did not), so the last
/// kept frame is found by its header: the latest one, among the leading
/// entries in order (a frame has its header at least) below `length`,
/// that ends at `length`. None is lost records.
fn frames_kept(
    disk: &dyn Disk,
    path: &Path,
    entries: &[(u64, u64)],
    length: u64,
) -> Result<(usize, u64), JournalError> {
    if length == 0 {
        return Ok((0, 0));
    }
    let lost = |offset| JournalError::Corrupt { path: path.to_path_buf(), offset, reason: LOST };
    // (The entries are read from a file bits may rot in: no arithmetic on them may overflow.)
    let in_order =
        |pair: &[(u64, u64)]| pair[0].0 < pair[1].0 && pair[0].1.saturating_add(FRAME_HEADER_BYTES) <= pair[1].1;
    let ordered = entries.len().min(1 + entries.windows(2).take_while(|pair| in_order(pair)).count());
    let below = entries[..ordered].partition_point(|&(records_start, _)| records_start < length);
    let file = disk.open(path, Open::Read).map_err(|_| lost(0))?;
    // Usually the first one looked at; after a crash, past the entries it tore.
    for last in (0..below).rev() {
        let (records_start, file_start) = entries[last];
        let mut header = [0u8; FRAME_HEADER_BYTES as usize];
        if file.read_exact_at(&mut header, file_start).is_err() {
            continue;
        }
        let (records, stored) = (u64::from(le_u32(&header[..4])), u64::from(le_u32(&header[4..8])));
        // The frame is read whole and checked: the files are cut where it
        // ends, and a header a crash tore (or a read that flipped a bit of
        // its length) would cut into frames the snapshot counts on.
        let frame_end = file_start.checked_add(FRAME_HEADER_BYTES + stored);
        if records_start.checked_add(records) == Some(length)
            && let Some(frame_end) = frame_end
            && frame_intact(&*file, file_start, &header, stored)
        {
            return Ok((last + 1, frame_end));
        }
    }
    Err(JournalError::Corrupt {
        path: path.to_path_buf(),
        offset: entries.get(below.saturating_sub(1)).map_or(0, |&(_, file_start)| file_start),
        reason: "no archive frame ends where the snapshot says (records lost)",
    })
}

/// Whether the `stored` bytes after a frame's `header` match its checksum.
fn frame_intact(file: &dyn DiskFile, file_start: u64, header: &[u8], stored: u64) -> bool {
    let Ok(length) = usize::try_from(stored) else { return false };
    if length > FRAME_FILE_BYTES_MAX {
        return false;
    }
    let mut bytes = vec![0u8; length];
    file.read_exact_at(&mut bytes, file_start + FRAME_HEADER_BYTES).is_ok()
        && crc32c::crc32c(&bytes) == le_u32(&header[8..12])
}

impl Archive {
    /// Opens the archive and cuts it back to `length` bytes of records
    /// (what the snapshot refers to: a frame's end); less than that is
    /// lost records, an error.
    pub fn open(
        disk: &dyn Disk,
        directory: &Path,
        length: u64,
        frame_bytes: usize,
        background: bool,
    ) -> Result<Archive, JournalError> {
        let index_path = directory.join(INDEX_FILE_NAME);
        let entries = match disk.read(&index_path) {
            Ok(bytes) => bytes
                .chunks_exact(INDEX_ENTRY_BYTES as usize)
                .map(|entry| (le_u64(&entry[..8]), le_u64(&entry[8..])))
                .collect::<Vec<_>>(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(io_error("read", &index_path, source)),
        };
        if length > 0 && entries.first().is_some_and(|&first| first != (0, 0)) {
            return Err(JournalError::Corrupt { path: index_path, offset: 0, reason: "archive index out of order" });
        }
        let path = directory.join(FILE_NAME);
        let (kept, file_end) = frames_kept(disk, &path, &entries, length)?;
        let index = AppendFile::open(disk, directory, INDEX_FILE_NAME, kept as u64 * INDEX_ENTRY_BYTES, LOST)?;
        let log = AppendFile::open(disk, directory, FILE_NAME, file_end, LOST)?;
        let (path, file) = log.reader();
        // (`frames_kept` keeps only entries in order, as `push` asserts.)
        let mut starts = FrameTable::default();
        entries[..kept].iter().for_each(|&(records_start, file_start)| starts.push(records_start, file_start));
        drop(entries);
        let frames = Frames { starts, records_end: length, file_end };
        let shared = Arc::new(Shared {
            path: path.clone(),
            file,
            frames: RwLock::new(frames),
            tail: RwLock::new(Tail { start: length, bytes: Vec::new() }),
            cache: Mutex::new(VecDeque::with_capacity(CACHED_FRAMES)),
            failure: Mutex::new(None),
        });
        let compressor = Compressor {
            log,
            index,
            shared: Arc::clone(&shared),
            unwritten: Vec::new(),
            framed_end: length,
            stored: Vec::new(),
        };
        let compressing = if background {
            let (to_compressor, inbox) = mpsc::sync_channel(HAND_OVERS_QUEUED_MAX);
            let thread = std::thread::Builder::new()
                .name(COMPRESSOR_THREAD_NAME.to_string())
                .spawn(move || {
                    lower_this_threads_priority(&compressor.log.path);
                    compressor.run(&inbox)
                })
                .map_err(|source| io_error("start the compressor of", &path, source))?;
            Compressing::Background { to_compressor, thread }
        } else {
            Compressing::Inline(Box::new(compressor))
        };
        Ok(Archive {
            shared,
            path,
            handed_end: length,
            frame_bytes: frame_bytes.clamp(1, BUFFER_BYTES_MAX),
            compressor: Some(compressing),
            read_ahead: Mutex::new(HashMap::new()),
            helpers: None,
        })
    }

    /// Lets `decode_ahead` share its work with `helpers`.
    pub(crate) fn decode_with(&mut self, helpers: Option<Helpers>) {
        self.helpers = helpers;
    }

    /// Takes the records the machine made since the last call. Called after
    /// every command, so the machine's outbox never grows past one command.
    pub fn collect<M: StateMachine>(&mut self, machine: &mut M) -> Result<(), JournalError> {
        let have = {
            let mut tail = self.shared.tail.write();
            machine.take_archive(&mut tail.bytes);
            tail.start + tail.bytes.len() as u64
        };
        let expected = machine.archive_len();
        if have != expected {
            return Err(JournalError::Failed(format!(
                "archive out of step: the machine counts {expected} bytes, {} holds {have}",
                self.path.display()
            )));
        }
        // Once a group, but a replay or a huge command would fill memory.
        if have - self.handed_end >= HAND_OVER_BYTES_MAX { self.hand_over(false) } else { Ok(()) }
    }

    /// Hands the tail's records not yet handed over to the compressor, cut
    /// into frames of about `frame_bytes` (`all`: the last one shorter, so
    /// that no record is left out), as one message: one wake-up a group.
    fn hand_over(&mut self, all: bool) -> Result<(), JournalError> {
        let start = self.handed_end;
        let mut frames = Vec::new();
        let records = {
            let tail = self.shared.tail.read();
            let first = usize::try_from(self.handed_end - tail.start).unwrap_or(usize::MAX);
            let mut from = first;
            loop {
                let records = &tail.bytes[from..];
                // Whole records only: cut at the first record end past the frame size.
                let mut cut = 0;
                while cut < records.len() && cut < self.frame_bytes {
                    let length = records.get(cut..cut + 4).map_or(0, le_u32) as usize;
                    cut += RECORD_HEADER_BYTES as usize + length;
                }
                let cut = cut.min(records.len());
                if cut == 0 || (cut < self.frame_bytes && !all) {
                    break;
                }
                frames.push(cut);
                self.handed_end += cut as u64;
                from += cut;
            }
            tail.bytes[first..from].to_vec()
        };
        // Not under the tail's lock: the compressor takes it to let records go.
        if !frames.is_empty() {
            self.send(ToCompressor::Frames { start, records, frames })?;
        }
        self.check()
    }

    fn send(&mut self, message: ToCompressor) -> Result<(), JournalError> {
        let sent = match &mut self.compressor {
            Some(Compressing::Background { to_compressor, .. }) => to_compressor.send(message).is_ok(),
            Some(Compressing::Inline(compressor)) => {
                compressor.handle(message);
                compressor.write_or_fail();
                true
            }
            None => false,
        };
        if sent { Ok(()) } else { Err(self.check().err().unwrap_or_else(|| self.stopped())) }
    }

    fn stopped(&self) -> JournalError {
        JournalError::Failed(format!("the compressor of {} stopped", self.path.display()))
    }

    /// Fails once the compressor has (it cannot write the file).
    fn check(&self) -> Result<(), JournalError> {
        match &*self.shared.failure.lock() {
            Some(reason) => Err(JournalError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// After each command group: hands the whole frames made to the
    /// compressor, which writes them on its own.
    pub fn write(&mut self) -> Result<(), JournalError> {
        self.hand_over(false)
    }

    /// Closes the tail into a frame and waits until every frame is written
    /// and synced (before a snapshot).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.hand_over(true)?;
        let (answer, synced) = mpsc::sync_channel(1);
        self.send(ToCompressor::Sync(answer))?;
        synced.recv().map_err(|_| self.stopped())??;
        assert_eq!(self.length(), self.handed_end, "a sync writes every record handed over");
        Ok(())
    }

    /// Record bytes in written frames.
    pub fn length(&self) -> u64 {
        self.shared.frames.read().records_end
    }

    pub fn reader(&self) -> ArchiveReader {
        ArchiveReader { shared: Arc::clone(&self.shared) }
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        // The compressor writes what it was handed (not synced: the log
        // holds every command) and stops; the journal's directory lock is
        // let go only after this.
        match self.compressor.take() {
            Some(Compressing::Background { to_compressor, thread }) => {
                drop(to_compressor);
                let _ = thread.join();
            }
            Some(Compressing::Inline(mut compressor)) => compressor.write_or_fail(),
            None => {}
        }
    }
}

impl Compressor {
    fn run(mut self, inbox: &Receiver<ToCompressor>) {
        loop {
            // Frames queue up while the writer is busy and are written
            // together; when none wait, what is made is written at once.
            let message = match inbox.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    self.write_or_fail();
                    match inbox.recv() {
                        Ok(message) => message,
                        Err(_) => return, // the archive was dropped, and all it handed over is written
                    }
                }
            };
            self.handle(message);
        }
    }

    fn handle(&mut self, message: ToCompressor) {
        let failed = self.shared.failure.lock().clone();
        match (message, failed) {
            (ToCompressor::Frames { start, records, frames }, None) => {
                let mut at = 0;
                for length in frames {
                    let framed = match records.get(at..at + length) {
                        Some(frame) => self.frame(start + at as u64, frame),
                        None => Err(JournalError::Failed("archive frames past the records handed over".into())),
                    };
                    at += length;
                    match framed {
                        Ok(()) if self.log.buffer.len() >= WRITE_BYTES => self.write_or_fail(),
                        Ok(()) => {}
                        Err(error) => {
                            // The frames after it would not start where the file ends.
                            self.fail(&error);
                            break;
                        }
                    }
                }
            }
            (ToCompressor::Frames { .. }, Some(_)) => {}
            (ToCompressor::Sync(answer), failed) => {
                let synced = match failed {
                    Some(reason) => Err(JournalError::Failed(reason)),
                    None => self.write().and_then(|()| self.log.sync()).and_then(|()| self.index.sync()),
                };
                if let Err(error) = &synced {
                    self.fail(error);
                }
                let _ = answer.send(synced);
            }
        }
    }

    fn write_or_fail(&mut self) {
        if self.shared.failure.lock().is_some() {
            return;
        }
        if let Err(error) = self.write() {
            self.fail(&error);
        }
    }

    /// Keeps the first failure for the writer to report; nothing more is written.
    fn fail(&self, error: &JournalError) {
        self.shared.failure.lock().get_or_insert_with(|| error.to_string());
    }

    fn frame(&mut self, start: u64, records: &[u8]) -> Result<(), JournalError> {
        assert_eq!(start, self.framed_end, "archive frames in order");
        let stored = &mut self.stored;
        stored.clear();
        lzzzz::lz4_hc::compress_to_vec(records, stored, COMPRESSION_LEVEL)
            .map_err(|error| io_error("compress a frame of", &self.log.path, std::io::Error::other(error)))?;
        let file_start = self.log.length() + self.log.buffer.len() as u64;
        let (buffer, stored) = (&mut self.log.buffer, &self.stored);
        buffer.extend_from_slice(&(records.len() as u32).to_le_bytes());
        buffer.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        buffer.extend_from_slice(&crc32c::crc32c(stored).to_le_bytes());
        buffer.extend_from_slice(stored);
        self.index.buffer.extend_from_slice(&start.to_le_bytes());
        self.index.buffer.extend_from_slice(&file_start.to_le_bytes());
        self.unwritten.push((start, file_start));
        self.framed_end += records.len() as u64;
        Ok(())
    }

    /// Writes the frames made so far; readers find their records in the
    /// file from then on, and the tail lets them go.
    fn write(&mut self) -> Result<(), JournalError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        self.log.write(BUFFER_BYTES_MAX)?;
        self.index.write(BUFFER_BYTES_MAX)?;
        // Frames first, then the tail: a reader looks in that order, and
        // looks again if a record moved between its two looks.
        {
            let mut frames = self.shared.frames.write();
            self.unwritten
                .drain(..)
                .for_each(|(records_start, file_start)| frames.starts.push(records_start, file_start));
            frames.records_end = self.framed_end;
            frames.file_end = self.log.length();
        }
        let mut tail = self.shared.tail.write();
        let framed = usize::try_from(self.framed_end - tail.start).unwrap_or(usize::MAX);
        tail.bytes.drain(..framed);
        tail.start = self.framed_end;
        Ok(())
    }
}

/// Archived records read for commands before they apply: (offset, record).
pub(crate) type ReadAhead = Vec<(u64, ReadAheadRecord)>;

/// What a machine makes of a record on the thread that reads it ahead: a
/// value of its own, which it downcasts when it takes it back.
pub type Decoded = Box<dyn std::any::Any + Send>;

/// How a machine decodes a record read ahead (`StateMachine::decode_read_ahead`).
pub type DecodeFn = fn(u64, &[u8]) -> Option<Decoded>;

/// `decode_ahead` shares no fewer records than this with other threads
/// (fewer are read as they are asked for), in chunks of
/// `DECODE_AHEAD_CHUNK_RECORDS` (a chunk's records share frames).
const DECODE_AHEAD_RECORDS_MIN: usize = 512;
const DECODE_AHEAD_CHUNK_RECORDS: usize = 256;

/// A record read ahead: as decoded on the reading thread, or its payload
/// where the machine did not decode it.
pub(crate) enum ReadAheadRecord {
    Payload(Vec<u8>),
    Decoded(Decoded),
}

/// Archived records a group must need before they are read on another
/// thread (fewer: a hint to the kernel, and the writer reads them; a thread
/// costs tens of microseconds).
pub(crate) const READ_AHEAD_RECORDS_MIN: usize = 16;

/// Reads archived records by offset, from any thread.
pub struct ArchiveReader {
    shared: Arc<Shared>,
}

impl ArchiveSource for ArchiveReader {
    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError> {
        self.shared.read_record(offset)
    }

    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> Result<(), JournalError> {
        self.shared.for_each_record(visit)
    }
}

impl ArchiveReader {
    /// The records at `offsets` that read well (one that does not is left
    /// for whoever asks for it next to meet the error).
    pub(crate) fn read_many(&self, offsets: &[u64]) -> Vec<(u64, Vec<u8>)> {
        self.shared.read_many(offsets)
    }

    /// [`ArchiveReader::read_many`], each record then decoded by `decode`
    /// where it can, on this thread (the writer's is the busiest).
    pub(crate) fn read_ahead(&self, offsets: &[u64], decode: DecodeFn) -> ReadAhead {
        let records = self.read_many(offsets).into_iter();
        records
            .map(|(offset, payload)| match decode(offset, &payload) {
                Some(decoded) => (offset, ReadAheadRecord::Decoded(decoded)),
                None => (offset, ReadAheadRecord::Payload(payload)),
            })
            .collect()
    }
}

/// The writer's own reads (a command applied may read what earlier ones archived).
impl ArchiveSource for Archive {
    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError> {
        // A decoded record stays for `take_decoded`: its payload is read again.
        match self.take_read_ahead(offset, |record| matches!(record, ReadAheadRecord::Payload(_))) {
            Some(ReadAheadRecord::Payload(payload)) => Ok(payload),
            _ => self.shared.read_record(offset),
        }
    }

    fn take_decoded(&self, offset: u64) -> Option<Decoded> {
        match self.take_read_ahead(offset, |record| matches!(record, ReadAheadRecord::Decoded(_)))? {
            ReadAheadRecord::Decoded(decoded) => Some(decoded),
            ReadAheadRecord::Payload(_) => None,
        }
    }

    /// In chunks in file order, taken by the writer and whichever helpers
    /// are free: a tick settling 4,096 parked trades spent a third of its
    /// time reading and decoding them, with the other core idle.
    fn decode_ahead(&self, offsets: &[u64], decode: DecodeFn) {
        let Some(helpers) = self.helpers.as_ref().filter(|_| offsets.len() >= DECODE_AHEAD_RECORDS_MIN) else {
            return;
        };
        let mut offsets = offsets.to_vec();
        offsets.sort_unstable();
        let offsets: Arc<[u64]> = offsets.into();
        let chunks = offsets.len().div_ceil(DECODE_AHEAD_CHUNK_RECORDS);
        let reader = self.reader();
        let read = crate::helpers::share(helpers, chunks, move |chunk| {
            let start = chunk * DECODE_AHEAD_CHUNK_RECORDS;
            let end = (start + DECODE_AHEAD_CHUNK_RECORDS).min(offsets.len());
            offsets.get(start..end).map(|part| reader.read_ahead(part, decode)).unwrap_or_default()
        });
        let mut kept = self.read_ahead.lock();
        for records in read.into_iter().flatten() {
            kept.extend(records);
        }
    }

    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> Result<(), JournalError> {
        self.shared.for_each_record(visit)
    }
}

impl Archive {
    /// Keeps records read ahead for the next reads (replacing any left).
    pub(crate) fn set_read_ahead(&self, records: ReadAhead) {
        let mut kept = self.read_ahead.lock();
        kept.clear();
        kept.extend(records);
    }

    /// The record read ahead at `offset`, taken if `wanted`.
    fn take_read_ahead(&self, offset: u64, wanted: impl Fn(&ReadAheadRecord) -> bool) -> Option<ReadAheadRecord> {
        let mut read_ahead = self.read_ahead.lock();
        if !wanted(read_ahead.get(&offset)?) {
            return None;
        }
        read_ahead.remove(&offset)
    }

    /// Forgets records read ahead and not asked for.
    pub(crate) fn clear_read_ahead(&self) {
        self.read_ahead.lock().clear();
    }

    /// Asks the kernel to read the frames holding the records at `offsets`
    /// into its cache, and returns at once (`POSIX_FADV_WILLNEED`): a
    /// group's reads then overlap on the disk instead of queueing one
    /// behind another in the writer. Records still in memory need nothing;
    /// a failed hint costs nothing but the wait it meant to save.
    pub(crate) fn prefetch(&self, offsets: &[u64]) {
        self.shared.will_need(offsets);
    }
}

impl Shared {
    /// See [`ArchiveReader::read_many`]. Frames kept decompressed, or whose
    /// bytes the page cache holds, give their records at once; the frames
    /// left must come from the disk, and are asked of it together before
    /// any is read, so that their reads overlap (one after another, each
    /// would wait its turn: a full day's archive is larger than the page
    /// cache). Asking the disk for every frame would cost a system call a
    /// frame even when all are in memory, as most of the time they are.
    fn read_many(&self, offsets: &[u64]) -> Vec<(u64, Vec<u8>)> {
        let mut read = Vec::with_capacity(offsets.len());
        let mut framed = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            match self.frame_of(offset) {
                Some(frame) => framed.push((frame, offset)),
                None => read.extend(self.read_record(offset).ok().map(|record| (offset, record))),
            }
        }
        framed.sort_unstable_by_key(|&(frame, offset)| (frame.number, offset));
        let mut from_disk = Vec::new();
        for same_frame in framed.chunk_by(|(one, _), (other, _)| one.number == other.number) {
            let frame = same_frame[0].0;
            match self.cached(frame.number).map(Ok).or_else(|| self.read_frame_if_in_memory(frame)) {
                Some(records) => read.extend(records_at(records, same_frame)),
                None => from_disk.extend_from_slice(same_frame),
            }
        }
        self.hint(from_disk.iter().map(|&(frame, _)| frame));
        for same_frame in from_disk.chunk_by(|(one, _), (other, _)| one.number == other.number) {
            read.extend(records_at(self.frame_records(same_frame[0].0), same_frame));
        }
        read.sort_unstable_by_key(|&(offset, _)| offset);
        read
    }

    /// See [`Archive::prefetch`].
    fn will_need(&self, offsets: &[u64]) {
        let mut frames: Vec<FrameAt> = offsets.iter().filter_map(|&offset| self.frame_of(offset)).collect();
        frames.sort_unstable_by_key(|frame| frame.number);
        frames.dedup_by_key(|frame| frame.number);
        self.hint(frames.into_iter().filter(|frame| self.cached(frame.number).is_none()));
    }

    /// Asks the disk for these frames (in file order), one hint for each
    /// run of frames side by side in the file: a group's records lie in
    /// many of the same frames, and a hint is a system call.
    fn hint(&self, frames: impl Iterator<Item = FrameAt>) {
        let mut run: Option<(u64, u64)> = None;
        for frame in frames {
            run = match run {
                Some((start, end)) if frame.file_start <= end => Some((start, end.max(frame.file_end))),
                Some((start, end)) => {
                    self.file.will_need(start, end.saturating_sub(start));
                    Some((frame.file_start, frame.file_end))
                }
                None => Some((frame.file_start, frame.file_end)),
            };
        }
        if let Some((start, end)) = run {
            self.file.will_need(start, end.saturating_sub(start));
        }
    }

    /// A frame's records if they are among those kept decompressed.
    fn cached(&self, frame: usize) -> Option<Arc<Vec<u8>>> {
        self.cache.lock().iter().find(|(number, _)| *number == frame).map(|(_, records)| Arc::clone(records))
    }

    fn read_record(&self, offset: u64) -> Result<Vec<u8>, JournalError> {
        let corrupt = |offset, reason| JournalError::Corrupt { path: self.path.clone(), offset, reason };
        // Twice at most: the writer may move the record from the tail to a
        // frame between the two looks, never back.
        for _ in 0..2 {
            if let Some(frame) = self.frame_of(offset) {
                let records = self.frame_records(frame)?;
                let at = usize::try_from(offset - frame.records_start).unwrap_or(usize::MAX);
                let record = records.get(at..).and_then(decode_record);
                return record
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| corrupt(frame.file_start, "no archive record at this offset"));
            }
            let tail = self.tail.read();
            if offset >= tail.start {
                let at = usize::try_from(offset - tail.start).unwrap_or(usize::MAX);
                let record = tail.bytes.get(at..).and_then(decode_record);
                return record.map(<[u8]>::to_vec).ok_or_else(|| corrupt(offset, "no archive record at this offset"));
            }
        }
        Err(corrupt(offset, "no archive record at this offset"))
    }

    /// Frame by frame from the first, then the tail. Records the writer
    /// archives meanwhile are visited or not; none twice, none skipped
    /// before them (the walk goes on from where the last record ended,
    /// wherever that record is now).
    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> Result<(), JournalError> {
        let corrupt = |offset, reason| JournalError::Corrupt { path: self.path.clone(), offset, reason };
        let mut next = 0;
        loop {
            if let Some(frame) = self.frame_of(next) {
                if frame.records_start != next {
                    return Err(corrupt(frame.file_start, "archive index out of order"));
                }
                let records = self.read_frame(frame)?;
                for_each_record_in(&records, frame.records_start, visit, |_| {
                    corrupt(frame.file_start, "archive frame holds a damaged record")
                })?;
                next = frame.records_end;
                continue;
            }
            let tail = self.tail.read();
            if next < tail.start {
                continue; // framed between the two looks
            }
            let from = usize::try_from(next - tail.start).unwrap_or(usize::MAX);
            // A copy: the visitor may read records (taking the lock again).
            let bytes = tail.bytes.get(from..).unwrap_or_default().to_vec();
            drop(tail);
            return for_each_record_in(&bytes, next, visit, |offset| {
                corrupt(offset, "no archive record at this offset")
            });
        }
    }

    fn frame_of(&self, offset: u64) -> Option<FrameAt> {
        let frames = self.frames.read();
        if offset >= frames.records_end {
            return None;
        }
        let found = frames.starts.find(offset, frames.records_end)?;
        let (number, (records_start, file_start)) = (found.number, found.start);
        let (records_end, file_end) = found.next.unwrap_or((frames.records_end, frames.file_end));
        Some(FrameAt { number, records_start, records_end, file_start, file_end })
    }

    /// A frame's records, decompressed (or from the cache).
    fn frame_records(&self, frame: FrameAt) -> Result<Arc<Vec<u8>>, JournalError> {
        if let Some(records) = self.cached(frame.number) {
            return Ok(records);
        }
        self.read_frame(frame).map(|records| self.keep(frame.number, records))
    }

    /// A frame's records, read from the file and decompressed.
    fn read_frame(&self, frame: FrameAt) -> Result<Vec<u8>, JournalError> {
        let mut bytes = vec![0u8; self.frame_length(frame)?];
        self.file.read_exact_at(&mut bytes, frame.file_start).map_err(|source| io_error("read", &self.path, source))?;
        self.decode_frame(frame, &bytes)
    }

    /// A frame's records if the page cache holds its bytes (read without
    /// waiting for the disk); `None` if it does not, or cannot tell.
    fn read_frame_if_in_memory(&self, frame: FrameAt) -> Option<Result<Arc<Vec<u8>>, JournalError>> {
        let length = match self.frame_length(frame) {
            Ok(length) => length,
            Err(error) => return Some(Err(error)),
        };
        let mut bytes = vec![0u8; length];
        if !self.file.read_if_in_memory(&mut bytes, frame.file_start) {
            return None;
        }
        Some(self.decode_frame(frame, &bytes).map(|records| self.keep(frame.number, records)))
    }

    /// Keeps a frame's records decompressed, in place of the oldest kept.
    fn keep(&self, number: usize, records: Vec<u8>) -> Arc<Vec<u8>> {
        let records = Arc::new(records);
        let mut cache = self.cache.lock();
        if cache.len() == CACHED_FRAMES {
            cache.pop_front();
        }
        cache.push_back((number, Arc::clone(&records)));
        records
    }

    /// The frame's length in the file, where the index (which bits may rot)
    /// places it, bounded before anything is allocated for it.
    fn frame_length(&self, frame: FrameAt) -> Result<usize, JournalError> {
        let corrupt = |reason| JournalError::Corrupt { path: self.path.clone(), offset: frame.file_start, reason };
        let length = frame.file_end.checked_sub(frame.file_start).and_then(|length| usize::try_from(length).ok());
        let records_length = frame.records_end.checked_sub(frame.records_start);
        let records_length = records_length.and_then(|length| usize::try_from(length).ok());
        let (Some(length), Some(records_length)) = (length, records_length) else {
            return Err(corrupt("archive index out of order"));
        };
        if length > FRAME_FILE_BYTES_MAX || records_length > FRAME_RECORD_BYTES_MAX {
            return Err(corrupt("archive index places a frame larger than any frame"));
        }
        Ok(length)
    }

    /// A frame's records from its bytes as read from the file (of the
    /// length `frame_length` gave), checked and decompressed.
    fn decode_frame(&self, frame: FrameAt, bytes: &[u8]) -> Result<Vec<u8>, JournalError> {
        let corrupt = |reason| JournalError::Corrupt { path: self.path.clone(), offset: frame.file_start, reason };
        let records_length = usize::try_from(frame.records_end.saturating_sub(frame.records_start));
        let records_length = records_length.unwrap_or(usize::MAX);
        let Some((header, stored)) = bytes.split_at_checked(FRAME_HEADER_BYTES as usize) else {
            return Err(corrupt("archive frame shorter than its header"));
        };
        let whole = le_u32(&header[..4]) as usize == records_length && le_u32(&header[4..8]) as usize == stored.len();
        if !whole || crc32c::crc32c(stored) != le_u32(&header[8..12]) {
            return Err(corrupt("archive frame checksum mismatch"));
        }
        let mut records = vec![0; records_length];
        let decompressed = lzzzz::lz4::decompress(stored, &mut records).ok();
        if decompressed != Some(records_length) {
            return Err(corrupt("archive frame does not decompress"));
        }
        Ok(records)
    }
}

/// The records at these offsets, all in one frame whose records are
/// `records`; none if the frame did not read well (whoever asks for them
/// next meets the error), and none that does not decode.
fn records_at(
    records: Result<Arc<Vec<u8>>, JournalError>,
    offsets: &[(FrameAt, u64)],
) -> impl Iterator<Item = (u64, Vec<u8>)> + '_ {
    let records = records.ok();
    offsets.iter().filter_map(move |&(frame, offset)| {
        let at = usize::try_from(offset.checked_sub(frame.records_start)?).ok()?;
        Some((offset, decode_record(records.as_ref()?.get(at..)?)?.to_vec()))
    })
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().unwrap_or_default())
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or_default())
}

/// Puts the calling thread (the compressor) at `COMPRESSOR_NICE`. On two
/// cores it took the writer's core from it hundreds of times a second
/// (5,643 times in 10 s, BENCHMARKS.md), and every command waits for the
/// writer, while the compressor's work can wait: the writer hands it at
/// most `HAND_OVERS_QUEUED_MAX` hand-overs, then waits itself, and so does
/// a snapshot's `sync`; a writer waiting leaves the compressor its core.
/// Without privilege the thread cannot be raised back. Failing to lower
/// it changes only the speed: a warning, not an error.
fn lower_this_threads_priority(path: &Path) {
    // Linux keeps a nice value per thread, and `None` (who = 0) names the
    // calling thread alone.
    if let Err(error) = rustix::process::setpriority_process(None, COMPRESSOR_NICE) {
        tracing::warn!("the compressor of {} keeps its priority: {error}", path.display());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use super::*;
    use crate::codec::DecodeError;
    use ledger::{Ledger, LedgerConfig};

    /// A machine that only archives: each command is a record's payload.
    struct Recorder {
        ledger: Ledger,
        outbox: Outbox,
    }

    impl Recorder {
        fn at(length: u64) -> Recorder {
            Recorder { ledger: Ledger::with_config(LedgerConfig::default(), 0, 0), outbox: Outbox::resume(length) }
        }
        fn archive(&mut self, payload: &[u8]) -> u64 {
            self.outbox.push(payload)
        }
    }

    impl StateMachine for Recorder {
        type Command = ();
        type Outcome = ();
        const FORMAT: u32 = 1;
        const NAME: &'static str = "recorder";
        fn create(_: LedgerConfig) -> Recorder {
            Recorder::at(0)
        }
        fn ledger(&self) -> &Ledger {
            &self.ledger
        }
        fn ledger_mut(&mut self) -> &mut Ledger {
            &mut self.ledger
        }
        fn encode_command(_: &(), _: &mut Vec<u8>) {}
        fn decode_command(_: &[u8]) -> Result<(), DecodeError> {
            Ok(())
        }
        fn refuse(_: &()) -> Option<()> {
            None
        }
        fn apply(&mut self, _: &(), _: &dyn ArchiveSource) -> Result<(), JournalError> {
            Ok(())
        }
        fn encode_state(&self, _: usize, _: &mut dyn std::io::Write) -> std::io::Result<()> {
            Ok(())
        }
        fn restore(_: Ledger, _: &mut dyn std::io::Read) -> Result<Recorder, DecodeError> {
            Ok(Recorder::at(0))
        }
        fn archive_len(&self) -> u64 {
            self.outbox.length()
        }
        fn take_archive(&mut self, out: &mut Vec<u8>) {
            self.outbox.take(out);
        }
    }

    /// Payload `n`: alike enough to compress, of sizes from 0 to 300 bytes.
    fn payload(n: u64) -> Vec<u8> {
        format!("record {n} ").repeat((n % 23) as usize).into_bytes()
    }

    /// The nice value of each of this process's threads named `name`
    /// (`/proc/self/task/*/stat`: the 19th field, the 17th after the name).
    fn nice_values_of_threads(name: &str) -> Vec<i32> {
        // The kernel keeps a thread's first 15 bytes of name.
        let name = &name[..name.len().min(15)];
        let mut values = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            // A thread may end between the listing and the reads.
            let (Ok(comm), Ok(stat)) =
                (std::fs::read_to_string(task.join("comm")), std::fs::read_to_string(task.join("stat")))
            else {
                continue;
            };
            if comm.trim_end() == name {
                let after_name = &stat[stat.rfind(')').unwrap() + 1..];
                values.push(after_name.split_whitespace().nth(16).unwrap().parse().unwrap());
            }
        }
        values
    }

    #[test]
    fn the_compressor_alone_is_lowered() {
        let opener_nice = rustix::process::getpriority_process(None).unwrap();
        assert!(opener_nice < COMPRESSOR_NICE, "run the tests below nice {COMPRESSOR_NICE}: nothing to lower");
        let directory = tempfile::tempdir().unwrap();
        let archive = Archive::open(&crate::disk::FileSystem, directory.path(), 0, 200, true).unwrap();
        // Other tests' compressors may be starting: each lowers itself first thing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let values = loop {
            let values = nice_values_of_threads(COMPRESSOR_THREAD_NAME);
            let all_lowered = !values.is_empty() && values.iter().all(|&nice| nice == COMPRESSOR_NICE);
            if all_lowered || std::time::Instant::now() > deadline {
                break values;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(!values.is_empty(), "no compressor thread");
        assert!(values.iter().all(|&nice| nice == COMPRESSOR_NICE), "the compressors' nice values: {values:?}");
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), opener_nice, "the opener keeps its own");
        drop(archive);
    }

    #[test]
    fn records_read_back_from_frames_and_tail_and_a_restart_keeps_what_was_synced() {
        let directory = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(&crate::disk::FileSystem, directory.path(), 0, 200, true).unwrap();
        let reader = archive.reader();
        let mut machine = Recorder::at(0);
        let mut offsets = Vec::new();
        let mut synced = (0, 0);
        for n in 0..2_000u64 {
            offsets.push(machine.archive(&payload(n)));
            archive.collect(&mut machine).unwrap();
            if n % 7 == 0 {
                archive.write().unwrap();
            }
            if n == 1_234 {
                archive.sync().unwrap();
                assert_eq!(archive.length(), machine.archive_len(), "a sync leaves nothing in the tail");
                synced = (n + 1, machine.archive_len());
            }
            // Any record, from the writer and from another reader, wherever it is now.
            for m in [n, n / 2, n * 7 / 8] {
                assert_eq!(archive.read_record(offsets[m as usize]).unwrap(), payload(m), "record {m} after {n}");
                assert_eq!(reader.read_record(offsets[m as usize]).unwrap(), payload(m));
            }
        }
        archive.sync().unwrap();
        let written = std::fs::metadata(directory.path().join(FILE_NAME)).unwrap().len();
        assert!(written * 3 < machine.archive_len(), "{written} bytes on disk for {}", machine.archive_len());
        drop(archive);

        // A restart at the snapshot's length cuts what follows, keeps the rest.
        let (kept, length) = synced;
        let archive = Archive::open(&crate::disk::FileSystem, directory.path(), length, 200, true).unwrap();
        assert_eq!(archive.length(), length);
        for m in 0..kept {
            assert_eq!(archive.read_record(offsets[m as usize]).unwrap(), payload(m));
        }
        assert!(archive.read_record(offsets[kept as usize]).is_err(), "cut");
        drop(archive);
        let error = Archive::open(&crate::disk::FileSystem, directory.path(), length + 1, 200, true)
            .err()
            .expect("past the file");
        assert!(error.to_string().contains("archive.log"), "{error}");
        let error =
            Archive::open(&crate::disk::FileSystem, directory.path(), offsets[kept as usize / 2] + 1, 200, true)
                .err()
                .expect("mid-record");
        assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
    }

    /// A walk over everything sees each record once, in order, from the
    /// frames and from the tail alike; a visitor's error stops it.
    #[test]
    fn a_walk_visits_every_record_once_in_order() {
        let directory = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(&crate::disk::FileSystem, directory.path(), 0, 200, true).unwrap();
        let reader = archive.reader();
        let mut machine = Recorder::at(0);
        let mut offsets = Vec::new();
        let walk = |source: &dyn ArchiveSource| {
            let mut seen = Vec::new();
            source
                .for_each_record(&mut |offset, payload| {
                    seen.push((offset, payload.to_vec()));
                    Ok(())
                })
                .unwrap();
            seen
        };
        for n in 0..500u64 {
            offsets.push(machine.archive(&payload(n)));
            archive.collect(&mut machine).unwrap();
            if n % 11 == 0 {
                archive.write().unwrap();
            }
            if n % 97 == 0 {
                let expected: Vec<_> = (0..=n).map(|m| (offsets[m as usize], payload(m))).collect();
                assert_eq!(walk(&reader), expected, "after {n}");
                assert_eq!(walk(&archive), expected);
            }
        }
        archive.sync().unwrap();
        assert_eq!(walk(&reader).len(), 500, "all framed");
        let mut visited = 0;
        let stopped = reader.for_each_record(&mut |_, _| {
            visited += 1;
            if visited == 3 { Err(JournalError::Failed("enough".into())) } else { Ok(()) }
        });
        assert!(matches!(stopped, Err(JournalError::Failed(reason)) if reason == "enough"));
        assert_eq!(visited, 3);
        assert!(walk(&NoArchive).is_empty());
    }

    /// `count` records archived in frames of 200 bytes on a simulated disk,
    /// synced, the archive closed; the records' offsets.
    fn archived_on_a_simulated_disk(directory: &Path, count: u64) -> (crate::disk::SimulatedDisk, Recorder, Vec<u64>) {
        use crate::disk::Disk as _;
        let disk = crate::disk::SimulatedDisk::default();
        disk.create_directory(directory).unwrap();
        let mut archive = Archive::open(&disk, directory, 0, 200, false).unwrap();
        let mut machine = Recorder::at(0);
        let offsets: Vec<u64> = (0..count).map(|n| machine.archive(&payload(n))).collect();
        archive.collect(&mut machine).unwrap();
        archive.sync().unwrap();
        drop(archive);
        (disk, machine, offsets)
    }

    /// A reader given many records not in memory (this disk cannot say
    /// what is) asks the disk for every frame they lie in before it reads
    /// the first, so that a disk can serve the reads
    /// together (one after another, each would wait its turn).
    #[test]
    fn reading_many_asks_for_every_frame_before_reading_one() {
        use crate::disk::Access;
        let directory = Path::new("/data");
        let (disk, machine, offsets) = archived_on_a_simulated_disk(directory, 400);
        // Reopened: no frame is kept decompressed.
        let archive = Archive::open(&disk, directory, machine.archive_len(), 200, false).unwrap();
        let wanted: Vec<(u64, u64)> = (0..400).step_by(37).map(|n| (n, offsets[n as usize])).collect();
        let wanted_offsets: Vec<u64> = wanted.iter().map(|&(_, offset)| offset).collect();
        disk.record_accesses();
        let read = archive.reader().read_many(&wanted_offsets);
        assert_eq!(read, wanted.iter().map(|&(n, offset)| (offset, payload(n))).collect::<Vec<_>>());
        let file = directory.join(FILE_NAME);
        let accesses: Vec<Access> =
            disk.accesses().into_iter().filter(|(path, _)| *path == file).map(|(_, access)| access).collect();
        let first_read = accesses.iter().position(|access| matches!(access, Access::Read { .. })).expect("reads");
        let hinted: Vec<(u64, u64)> = accesses[..first_read]
            .iter()
            .map(|access| match *access {
                Access::WillNeed { offset, length } => (offset, offset + length),
                other => unreachable!("{other:?} before the first read"),
            })
            .collect();
        assert!(hinted.len() >= 5, "one hint a frame: {hinted:?}");
        for access in &accesses[first_read..] {
            let Access::Read { offset, length } = *access else { panic!("a hint after the first read: {access:?}") };
            assert!(
                hinted.iter().any(|&(start, end)| start <= offset && offset + length <= end),
                "a read at {offset} of {length} bytes outside every hinted frame: {hinted:?}"
            );
        }
    }

    /// Records read ahead are taken once, as the machine decoded them or as
    /// their payload; a decoded one's payload is read again from the file.
    #[test]
    fn records_read_ahead_are_taken_once_decoded_or_as_read() {
        let directory = Path::new("/data");
        let (disk, machine, offsets) = archived_on_a_simulated_disk(directory, 100);
        let archive = Archive::open(&disk, directory, machine.archive_len(), 200, false).unwrap();
        // Even-numbered records decode (into their length), odd ones do not.
        fn decode(_offset: u64, record: &[u8]) -> Option<Decoded> {
            record.len().is_multiple_of(2).then(|| Box::new(record.len()) as Decoded)
        }
        let wanted: Vec<u64> = (0..100).step_by(7).collect();
        let wanted_offsets: Vec<u64> = wanted.iter().map(|&n| offsets[n as usize]).collect();
        archive.set_read_ahead(archive.reader().read_ahead(&wanted_offsets, decode));
        for &n in &wanted {
            let offset = offsets[n as usize];
            let record = payload(n);
            match archive.take_decoded(offset) {
                Some(decoded) => {
                    assert_eq!(record.len() % 2, 0, "record {n}");
                    assert_eq!(*decoded.downcast::<usize>().unwrap(), record.len());
                    assert!(archive.take_decoded(offset).is_none(), "taken once");
                }
                None => assert_eq!(record.len() % 2, 1, "record {n}"),
            }
            assert_eq!(archive.read_record(offset).unwrap(), record);
        }
        archive.clear_read_ahead();
    }

    /// Many records asked for at once are read and decoded by the writer and
    /// the helpers together, each left for `take_decoded` (in any order);
    /// a few, or an archive without helpers, are left to be read when asked.
    #[test]
    fn records_decoded_ahead_in_chunks_are_each_there_to_take() {
        let directory = Path::new("/data");
        let (disk, machine, offsets) = archived_on_a_simulated_disk(directory, 3_000);
        let mut archive = Archive::open(&disk, directory, machine.archive_len(), 200, false).unwrap();
        fn decode(offset: u64, record: &[u8]) -> Option<Decoded> {
            Some(Box::new((offset, record.to_vec())) as Decoded)
        }
        let wanted: Vec<u64> = (0..3_000).rev().step_by(2).collect();
        let wanted_offsets: Vec<u64> = wanted.iter().map(|&n| offsets[n as usize]).collect();
        archive.decode_ahead(&wanted_offsets, decode);
        assert!(archive.take_decoded(wanted_offsets[0]).is_none(), "no helpers: nothing read ahead");
        archive.decode_with(Some(crate::helpers::start(directory).unwrap()));
        archive.decode_ahead(&wanted_offsets[..DECODE_AHEAD_RECORDS_MIN - 1], decode);
        assert!(archive.take_decoded(wanted_offsets[0]).is_none(), "too few to share");
        archive.decode_ahead(&wanted_offsets, decode);
        for &n in &wanted {
            let offset = offsets[n as usize];
            let decoded = archive.take_decoded(offset).unwrap_or_else(|| panic!("record {n} decoded ahead"));
            assert_eq!(*decoded.downcast::<(u64, Vec<u8>)>().unwrap(), (offset, payload(n)));
        }
        assert!(archive.take_decoded(offsets[1]).is_none(), "only those asked for");
    }

    #[test]
    fn frames_in_the_page_cache_are_read_at_once_and_only_the_others_asked_of_the_disk() {
        use crate::disk::Access;
        let directory = Path::new("/data");
        let (disk, machine, offsets) = archived_on_a_simulated_disk(directory, 4000);
        let file = directory.join(FILE_NAME);
        let accesses = || -> Vec<Access> {
            disk.accesses().into_iter().filter(|(path, _)| *path == file).map(|(_, access)| access).collect()
        };
        let expected = |numbers: &[u64]| -> Vec<(u64, Vec<u8>)> {
            numbers.iter().map(|&n| (offsets[n as usize], payload(n))).collect()
        };
        let first_half: Vec<u64> = (0..2000).step_by(97).collect();
        let all: Vec<u64> = (0..4000).step_by(97).collect();
        let offsets_of = |numbers: &[u64]| -> Vec<u64> { numbers.iter().map(|&n| offsets[n as usize]).collect() };

        // The cache dropped: the first half's frames come from the disk.
        disk.track_page_cache();
        let archive = Archive::open(&disk, directory, machine.archive_len(), 200, false).unwrap();
        disk.record_accesses();
        assert_eq!(archive.reader().read_many(&offsets_of(&first_half)), expected(&first_half));
        let from_disk: Vec<(u64, u64)> = accesses()
            .into_iter()
            .filter_map(|access| match access {
                Access::Read { offset, length } => Some((offset, offset + length)),
                _ => None,
            })
            .collect();
        assert!(!from_disk.is_empty());
        drop(archive);

        // Reopened (nothing kept decompressed): those frames are in the page
        // cache, and only the second half's are asked of the disk.
        let archive = Archive::open(&disk, directory, machine.archive_len(), 200, false).unwrap();
        disk.record_accesses();
        assert_eq!(archive.reader().read_many(&offsets_of(&all)), expected(&all));
        let seen = accesses();
        let first_read = seen.iter().position(|access| matches!(access, Access::Read { .. })).expect("reads");
        let mut hinted = Vec::new();
        let mut in_memory = Vec::new();
        for access in &seen[..first_read] {
            match *access {
                Access::WillNeed { offset, length } => hinted.push((offset, offset + length)),
                Access::ReadInMemory { offset, length } => in_memory.push((offset, offset + length)),
                Access::Read { .. } => unreachable!("before the first read"),
            }
        }
        assert!(!hinted.is_empty(), "the second half's frames are asked for");
        for &(start, end) in &from_disk {
            assert!(in_memory.contains(&(start, end)), "a frame read before is read again from memory: {start}");
            let overlaps = |&(from, to): &(u64, u64)| from < end && start < to;
            assert!(!hinted.iter().any(overlaps), "a frame in memory asked of the disk: {start}");
        }
        for access in &seen[first_read..] {
            let Access::Read { offset, length } = *access else { panic!("{access:?} after the first read") };
            assert!(!from_disk.contains(&(offset, offset + length)), "a frame in memory read again: {offset}");
            assert!(hinted.iter().any(|&(start, end)| start <= offset && offset + length <= end));
        }
    }

    #[test]
    fn a_damaged_frame_is_an_error_not_another_record() {
        let directory = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(&crate::disk::FileSystem, directory.path(), 0, 500, false).unwrap();
        let mut machine = Recorder::at(0);
        let offsets: Vec<u64> = (0..200).map(|n| machine.archive(&payload(n))).collect();
        archive.collect(&mut machine).unwrap();
        archive.sync().unwrap();
        drop(archive);
        let path = directory.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let archive =
            Archive::open(&crate::disk::FileSystem, directory.path(), machine.archive_len(), 500, false).unwrap();
        let mut damaged = 0;
        for (n, offset) in (0..).zip(offsets) {
            match archive.read_record(offset) {
                Ok(read) => assert_eq!(read, payload(n)),
                Err(error) => {
                    assert!(error.to_string().contains("archive frame"), "{error}");
                    damaged += 1;
                }
            }
        }
        assert!(damaged > 0 && damaged < 100, "one frame's records: {damaged}");
    }

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
