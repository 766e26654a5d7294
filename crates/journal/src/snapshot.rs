//! Snapshots: the whole ledger as of a log sequence number, so that recovery
//! replays only the log after it.
//!
//! `snapshot-<sequence, 20 digits>.snap`: a 36-byte header (magic `ZSNP`,
//! version, sequence, body length, the body's digest, header CRC-32C) and a
//! body (ledger configuration, last timestamp, first position in memory,
//! accounts with their history heads, the transfers in memory with their
//! back-links, pending records with their transfers; then the machine's own
//! state). Written to a `.tmp` file, synced, renamed, and the directory
//! synced, so a snapshot either exists whole or not at all.
//!
//! The body is the machine's canonical encoding, so its digest is the
//! machine's [`digest`]: one hash both checks the bytes read back and proves
//! that the machine rebuilt from them encodes to the same bytes.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ledger::{Ledger, LedgerConfig, LedgerImage};

use crate::codec::{self, ACCOUNT_BYTES, PENDING_BYTES, Reader, STORED_BYTES, Writer};
use crate::disk::{Disk, FileReader, FileWriter, Open};
use crate::error::{JournalError, io_error};
use crate::machine::StateMachine;
use crate::wal::sync_directory;
use xxhash_rust::xxh3::Xxh3Default;

const MAGIC: [u8; 4] = *b"ZSNP";
/// 2: transfer windows, account history heads, pending bodies.
/// 3: machines with an archive (the platform's events and finished trades
/// left its state for `archive.log`).
/// 4: the machine's state is the rest of the body (streamed: no length first).
/// 5: the archive it counts on is in LZ4 frames (zstd before).
/// 6: the body's XXH3-64 digest instead of its CRC-32C and a `std` hash of
/// the rebuilt state.
const VERSION: u32 = 6;
const HEADER_BYTES: usize = 36;

pub(crate) fn snapshot_name(sequence: u64) -> String {
    format!("snapshot-{sequence:020}.snap")
}

pub(crate) fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?.strip_suffix(".snap")?.parse().ok()
}

/// Writes a snapshot of `ledger` as of log sequence `sequence`; returns its
/// path, and what writing it in order would have added to this thread's
/// time (see [`write_body_in_parts`]).
///
/// Streamed to the file: a large state (gigabytes after a busy day) is
/// never copied into memory whole; the header, whose length and digest
/// come last, is written over its placeholder at the end.
///
/// `parts_at_once`: the state's parts after the first are encoded on threads
/// of their own while this one writes the ledger and the first (see
/// [`write_body_in_parts`]); not in a deterministic simulation, whose disk
/// must see one order of operations.
pub(crate) fn write<M: StateMachine>(
    disk: &dyn Disk,
    directory: &Path,
    sequence: u64,
    machine: &M,
    parts_at_once: bool,
) -> Result<(PathBuf, Duration), JournalError> {
    let path = directory.join(snapshot_name(sequence));
    let temporary = path.with_extension("tmp");
    let file =
        disk.open(&temporary, Open::Truncate).map_err(|source| io_error("create snapshot", &temporary, source))?;
    let write_error = |source| io_error("write snapshot", &temporary, source);
    let mut out = BufWriter::with_capacity(1 << 20, FileWriter::new(file));
    out.write_all(&[0; HEADER_BYTES]).map_err(write_error)?;
    let mut body = DigestWriter::new(out);
    let added = if parts_at_once && M::STATE_PARTS > 1 {
        write_body_in_parts(disk, &path, machine, &mut body)?
    } else {
        write_body(machine, &mut body).map_err(write_error)?;
        Duration::ZERO
    };
    let (mut out, body_length, digest) = body.finish();

    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&sequence.to_le_bytes());
    header.extend_from_slice(&body_length.to_le_bytes());
    header.extend_from_slice(&digest.to_le_bytes());
    let header_crc = crc32c::crc32c(&header);
    header.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_BYTES);
    out.flush().map_err(write_error)?;
    let out = out.into_inner().map_err(|error| write_error(error.into_error()))?;
    let file = out.file();
    file.write_at(&header, 0).map_err(write_error)?;
    file.sync().map_err(|source| io_error("fsync snapshot", &temporary, source))?;
    disk.rename(&temporary, &path).map_err(|source| io_error("rename snapshot", &path, source))?;
    sync_directory(disk, directory)?;
    Ok((path, added))
}

/// A digest of the whole machine: XXH3-64 of its canonical encoding (a
/// snapshot's body). Equal digests mean equal machines, in any build on any
/// machine, unlike `std`'s hashes, which are not promised across releases.
/// Costs an encoding of the whole state (no copy of it). An error is the
/// machine's encoder's (the sink takes anything).
pub fn digest<M: StateMachine>(machine: &M) -> std::io::Result<u64> {
    let mut sink = DigestWriter::new(std::io::sink());
    write_body(machine, &mut sink)?;
    Ok(sink.finish().2)
}

/// The body of a snapshot: the ledger, then the machine's own state.
fn write_body<M: StateMachine>(machine: &M, out: &mut impl Write) -> std::io::Result<()> {
    write_ledger(machine.ledger(), out)?;
    // One buffer for all the parts: a simulated disk sees the writes it saw
    // before the state came in parts.
    let mut state = BufWriter::with_capacity(1 << 16, out);
    (0..M::STATE_PARTS).try_for_each(|part| machine.encode_state(part, &mut state))?;
    state.flush()
}

/// One part of the machine's state, in pieces: an encoder writes field by field.
fn write_state_part<M: StateMachine>(machine: &M, part: usize, out: impl Write) -> std::io::Result<()> {
    let mut state = BufWriter::with_capacity(1 << 16, out);
    machine.encode_state(part, &mut state)?;
    state.flush()
}

/// The body as [`write_body`] writes it, in less time: the state's parts
/// after the first are encoded at once, each on a thread of its own into a
/// file beside the snapshot, while this thread writes the ledger and the
/// first part; then their files are copied in after it, in order. A
/// snapshot stops the writer, and the threads that work beside it wait
/// with it, so the other cores are free; a copy from the page cache costs
/// a small part of an encoding. The bytes, and so the digest, are the same.
/// A part whose file could not be made (a full disk), or that found no
/// thread, is encoded in order into the body instead: the parts' files are
/// extra room, never a reason for a snapshot to fail.
///
/// Returns about what encoding in order would have added to this thread's
/// time: the CPU time the threads spent encoding, beyond the wall time this
/// one took for it and for the copies.
fn write_body_in_parts<M: StateMachine>(
    disk: &dyn Disk,
    snapshot: &Path,
    machine: &M,
    body: &mut impl Write,
) -> Result<Duration, JournalError> {
    let files: Vec<PathBuf> =
        (1..M::STATE_PARTS).map(|part| snapshot.with_extension(format!("part{part}.tmp"))).collect();
    let (started, cpu_before) = (Instant::now(), thread_cpu_time());
    let encoded = std::thread::scope(|scope| {
        let threads: Vec<_> = (1..M::STATE_PARTS)
            .zip(&files)
            .map(|(part, file)| {
                let thread = std::thread::Builder::new().name(format!("snapshot-part{part}"));
                let encode = move || encode_part_to_file(disk, file, machine, part).map(|()| thread_cpu_time());
                (part, thread.spawn_scoped(scope, encode))
            })
            .collect();
        let first = write_ledger(machine.ledger(), &mut *body)
            .and_then(|()| write_state_part(machine, 0, &mut *body))
            .map_err(|source| io_error("write snapshot", snapshot, source));
        // Every thread joined before an error is answered.
        let others: Vec<_> = threads
            .into_iter()
            .map(|(part, thread)| match thread {
                Ok(thread) => (part, thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))),
                Err(_) => (part, Err(JournalError::Failed("no thread for a snapshot part".into()))),
            })
            .collect();
        first.map(|()| others)
    });
    let copied = encoded.and_then(|others| {
        let mut cpu = thread_cpu_time().saturating_sub(cpu_before);
        for (part, encoded) in others {
            match encoded {
                Ok(part_cpu) => {
                    cpu += part_cpu;
                    copy_part(disk, &files[part - 1], &mut *body)?;
                }
                // In order, then; an error now is the part's own.
                Err(_) => write_state_part(machine, part, &mut *body)
                    .map_err(|source| io_error("write snapshot", snapshot, source))?,
            }
        }
        Ok(cpu.saturating_sub(started.elapsed()))
    });
    for file in &files {
        // Left behind only if this fails; a `.tmp` file is removed at the next start anyway.
        let _ = disk.remove(file);
    }
    copied
}

/// The CPU time the calling thread has used: what a part's thread cost,
/// however long it waited for a core (three threads share two cores).
/// (A thread's clock starts with the thread.)
fn thread_cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(time.tv_sec).unwrap_or(0), u32::try_from(time.tv_nsec).unwrap_or(0))
}

fn encode_part_to_file<M: StateMachine>(
    disk: &dyn Disk,
    path: &Path,
    machine: &M,
    part: usize,
) -> Result<(), JournalError> {
    let file = disk.open(path, Open::Truncate).map_err(|source| io_error("create snapshot part", path, source))?;
    write_state_part(machine, part, BufWriter::with_capacity(1 << 20, FileWriter::new(file)))
        .map_err(|source| io_error("write snapshot part", path, source))
}

fn copy_part(disk: &dyn Disk, path: &Path, body: &mut impl Write) -> Result<(), JournalError> {
    let read_error = |source| io_error("read snapshot part", path, source);
    let file = disk.open(path, Open::Read).map_err(read_error)?;
    let mut part = BufReader::with_capacity(1 << 20, FileReader::new(file));
    std::io::copy(&mut part, body).map_err(|source| io_error("copy snapshot part", path, source))?;
    Ok(())
}

/// The ledger part of a snapshot body, encoded a piece at a time.
fn write_ledger(ledger: &Ledger, out: &mut impl Write) -> std::io::Result<()> {
    const PIECE_BYTES: usize = 1 << 16;
    let mut piece = Vec::with_capacity(PIECE_BYTES + 1024);
    fn flush(piece: &mut Vec<u8>, out: &mut impl Write, at_least: usize) -> std::io::Result<()> {
        if piece.len() >= at_least {
            out.write_all(piece)?;
            piece.clear();
        }
        Ok(())
    }
    let mut w = Writer(&mut piece);
    let config = ledger.config();
    w.u8(u8::from(config.id_horizon_ns.is_some()));
    w.u64(config.id_horizon_ns.unwrap_or(0));
    w.u64(ledger.last_timestamp());
    w.u64(ledger.first_position_in_memory());
    let accounts = ledger.accounts_with_last_transfer();
    w.u64(accounts.len() as u64);
    for (account, last_transfer) in accounts {
        let mut w = Writer(&mut piece);
        codec::write_account(&mut w, account);
        w.u64(last_transfer);
        flush(&mut piece, out, PIECE_BYTES)?;
    }
    let in_memory = ledger.transfer_count() - ledger.first_position_in_memory();
    Writer(&mut piece).u64(in_memory);
    for stored in ledger.stored_transfers_from(0) {
        codec::write_stored(&mut Writer(&mut piece), stored);
        flush(&mut piece, out, PIECE_BYTES)?;
    }
    let pending = ledger.pending_records();
    Writer(&mut piece).u64(pending.len() as u64);
    for record in pending {
        codec::write_pending(&mut Writer(&mut piece), &record);
        flush(&mut piece, out, PIECE_BYTES)?;
    }
    flush(&mut piece, out, 0)
}

/// Counts and digests what goes through it.
struct DigestWriter<W> {
    inner: W,
    hasher: Xxh3Default,
    length: u64,
}

impl<W: Write> DigestWriter<W> {
    fn new(inner: W) -> DigestWriter<W> {
        DigestWriter { inner, hasher: Xxh3Default::new(), length: 0 }
    }

    /// The writer, the bytes written and their digest.
    fn finish(self) -> (W, u64, u64) {
        (self.inner, self.length, self.hasher.digest())
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.length += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads and rebuilds a snapshot; checks the header's checksum, the body's
/// digest, and that the rebuilt machine has the same digest.
///
/// Streamed from the file: a full day's snapshot (≈ 10 GB) read whole
/// beside the state it rebuilds (≈ 17 GB) would not fit the machine it was
/// written on. The body is hashed as it is read and checked at its end; a
/// body that does not decode is reported as damage if its digest is wrong.
pub(crate) fn read<M: StateMachine>(disk: &dyn Disk, path: &Path) -> Result<(u64, M), JournalError> {
    let read_error = |source| io_error("read snapshot", path, source);
    let file = disk.open(path, Open::Read).map_err(read_error)?;
    let file_length = file.size().map_err(read_error)?;
    let mut file = FileReader::new(file);
    let corrupt =
        |offset: u64, reason: &'static str| JournalError::Corrupt { path: path.to_path_buf(), offset, reason };
    let mut header = [0u8; HEADER_BYTES];
    if file_length < HEADER_BYTES as u64 {
        return Err(corrupt(0, "snapshot header cut short"));
    }
    file.read_exact(&mut header).map_err(read_error)?;
    // The version first: where the rest of the header lies depends on it.
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if header[0..4] != MAGIC {
        return Err(corrupt(0, "not a snapshot (magic)"));
    }
    if version != VERSION {
        return Err(corrupt(4, "a snapshot of another version of zhifu (or a damaged header)"));
    }
    let header_crc = u32::from_le_bytes([header[32], header[33], header[34], header[35]]);
    if crc32c::crc32c(&header[..32]) != header_crc {
        return Err(corrupt(0, "snapshot header checksum mismatch"));
    }
    let mut r = Reader::new(&header[8..32], "snapshot header");
    let bad_header = |_| corrupt(0, "snapshot header");
    let sequence = r.u64().map_err(bad_header)?;
    let body_length = r.u64().map_err(bad_header)?;
    let digest = r.u64().map_err(bad_header)?;
    if body_length != file_length - HEADER_BYTES as u64 {
        return Err(corrupt(HEADER_BYTES as u64, "snapshot body length mismatch"));
    }
    let mut body = BodyReader { inner: BufReader::with_capacity(1 << 20, file), hasher: Xxh3Default::new(), read: 0 };
    let bad = |detail: String| JournalError::BadSnapshot { path: path.to_path_buf(), detail };
    let rebuilt = read_image(&mut body, body_length)
        .map_err(|error| error.to_string())
        .and_then(|image| Ledger::restore(image).map_err(|error| error.to_string()))
        .and_then(|ledger| M::restore(ledger, &mut body).map_err(|error| error.to_string()));
    // Whatever the machine left unread is hashed too: the digest covers the body.
    std::io::copy(&mut body, &mut std::io::sink()).map_err(read_error)?;
    if body.read != body_length || body.hasher.digest() != digest {
        return Err(corrupt(HEADER_BYTES as u64, "snapshot body digest mismatch"));
    }
    let machine = rebuilt.map_err(bad)?;
    // In order, not in parts at once: the parts' files cost more than the
    // second core saves where nothing is written anyway (3.6 s against
    // 4.6 and 5.0 s for a `--scale 0.1` day's snapshot).
    let encoded =
        self::digest(&machine).map_err(|error| bad(format!("the rebuilt machine does not encode: {error}")))?;
    if encoded != digest {
        return Err(bad("the rebuilt machine encodes to other bytes than it was rebuilt from".to_string()));
    }
    Ok((sequence, machine))
}

/// Rebuilds a machine from a snapshot's body alone (no header, no digest
/// check): what a damaged body that passed its checksums would meet.
pub(crate) fn decode_body<M: StateMachine>(bytes: &[u8]) -> Result<M, String> {
    let body_length = bytes.len() as u64;
    let mut body = BodyReader { inner: bytes, hasher: Xxh3Default::new(), read: 0 };
    let image = read_image(&mut body, body_length).map_err(|error| error.to_string())?;
    let ledger = Ledger::restore(image).map_err(|error| error.to_string())?;
    M::restore(ledger, &mut body).map_err(|error| error.to_string())
}

/// A snapshot's body as it is read: hashed and counted.
struct BodyReader<R> {
    inner: R,
    hasher: Xxh3Default,
    read: u64,
}

impl<R: Read> Read for BodyReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..count]);
        self.read += count as u64;
        Ok(count)
    }
}

impl<R: Read> BodyReader<R> {
    /// The next `length` bytes, to decode with a `Reader`.
    fn next<'b>(&mut self, buffer: &'b mut Vec<u8>, length: usize) -> Result<Reader<'b>, codec::DecodeError> {
        buffer.resize(length, 0);
        self.read_exact(buffer).map_err(|_| codec::DecodeError { what: "snapshot body cut short" })?;
        Ok(Reader::new(buffer, "snapshot body"))
    }

    /// A count of items of `item_bytes` each, refused if the rest of the
    /// body cannot hold that many (a corrupt count never allocates wildly).
    fn count(
        &mut self,
        buffer: &mut Vec<u8>,
        item_bytes: usize,
        body_length: u64,
    ) -> Result<usize, codec::DecodeError> {
        let count = self.next(buffer, 8)?.u64()?;
        let left = body_length.saturating_sub(self.read);
        match count.checked_mul(item_bytes as u64) {
            Some(bytes) if bytes <= left => {
                usize::try_from(count).map_err(|_| codec::DecodeError { what: "snapshot body" })
            }
            _ => Err(codec::DecodeError { what: "snapshot body (a count larger than the body)" }),
        }
    }
}

/// The ledger image, read from the start of a body; the machine's own state
/// is the rest.
fn read_image<R: Read>(body: &mut BodyReader<R>, body_length: u64) -> Result<LedgerImage, codec::DecodeError> {
    let mut buffer = Vec::with_capacity(PENDING_BYTES.max(STORED_BYTES).max(ACCOUNT_BYTES + 8));
    let mut r = body.next(&mut buffer, 1 + 8 * 3)?;
    let has_horizon = r.u8()? == 1;
    let horizon = r.u64()?;
    let config = LedgerConfig { id_horizon_ns: has_horizon.then_some(horizon) };
    let last_timestamp = r.u64()?;
    let first_position = r.u64()?;
    let account_count = body.count(&mut buffer, ACCOUNT_BYTES + 8, body_length)?;
    let mut accounts = Vec::with_capacity(account_count);
    for _ in 0..account_count {
        let mut r = body.next(&mut buffer, ACCOUNT_BYTES + 8)?;
        let account = codec::read_account(&mut r)?;
        accounts.push((account, r.u64()?));
    }
    let transfer_count = body.count(&mut buffer, STORED_BYTES, body_length)?;
    let mut transfers = Vec::with_capacity(transfer_count);
    for _ in 0..transfer_count {
        transfers.push(codec::read_stored(&mut body.next(&mut buffer, STORED_BYTES)?)?);
    }
    let pending_count = body.count(&mut buffer, PENDING_BYTES, body_length)?;
    let mut pending = Vec::with_capacity(pending_count);
    for _ in 0..pending_count {
        pending.push(codec::read_pending(&mut body.next(&mut buffer, PENDING_BYTES)?)?);
    }
    Ok(LedgerImage { config, last_timestamp, accounts, first_position, transfers, pending })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ArchiveSource;
    use crate::codec::DecodeError;
    use crate::disk::FileSystem;

    /// A machine whose state is three parts of bytes (a part of `failing`
    /// fails to encode).
    struct Parts {
        ledger: Ledger,
        parts: [Vec<u8>; 3],
        failing: Option<usize>,
    }

    impl StateMachine for Parts {
        type Command = ();
        type Outcome = ();
        const FORMAT: u32 = 1;
        const NAME: &'static str = "parts";
        const STATE_PARTS: usize = 3;
        fn create(config: LedgerConfig) -> Parts {
            Parts { ledger: Ledger::with_config(config, 0, 0), parts: Default::default(), failing: None }
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
        fn encode_state(&self, part: usize, out: &mut dyn Write) -> std::io::Result<()> {
            if self.failing == Some(part) {
                return Err(std::io::Error::other("a part that does not encode"));
            }
            out.write_all(&(self.parts[part].len() as u64).to_le_bytes())?;
            out.write_all(&self.parts[part])
        }
        fn restore(ledger: Ledger, state: &mut dyn Read) -> Result<Parts, DecodeError> {
            let mut parts: [Vec<u8>; 3] = Default::default();
            for part in &mut parts {
                let mut length = [0; 8];
                state.read_exact(&mut length).map_err(|_| DecodeError { what: "a part's length" })?;
                part.resize(u64::from_le_bytes(length) as usize, 0);
                state.read_exact(part).map_err(|_| DecodeError { what: "a part" })?;
            }
            Ok(Parts { ledger, parts, failing: None })
        }
    }

    fn machine() -> Parts {
        let mut machine = Parts::create(LedgerConfig::default());
        // Parts of several reads' and writes' buffers, and one empty.
        let bytes = |length: usize, seed: u64| (0..length as u64).map(|i| ((i * seed) >> 3) as u8).collect::<Vec<u8>>();
        machine.parts = [bytes(100, 3), bytes((3 << 20) + 17, 5), Vec::new()];
        machine
    }

    fn names(directory: &Path) -> Vec<String> {
        FileSystem.list(directory).unwrap()
    }

    /// Parts encoded at once, each into a file of its own and copied in,
    /// give a snapshot byte for byte the same as parts encoded in order;
    /// no part's file is left behind, and the snapshot reads back.
    #[test]
    fn parts_encoded_at_once_give_the_same_snapshot() {
        let (at_once, in_order) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let machine = machine();
        let (written, _) = write(&FileSystem, at_once.path(), 9, &machine, true).unwrap();
        let (expected, added) = write(&FileSystem, in_order.path(), 9, &machine, false).unwrap();
        assert_eq!(added, Duration::ZERO, "in order, nothing is added");
        assert_eq!(std::fs::read(&written).unwrap(), std::fs::read(&expected).unwrap());
        assert_eq!(names(at_once.path()), [snapshot_name(9)]);
        let (sequence, read) = read::<Parts>(&FileSystem, &written).unwrap();
        assert_eq!((sequence, &read.parts), (9, &machine.parts));
    }

    /// A part whose file cannot be made (here a directory holds its name)
    /// is encoded in order instead: the snapshot is the same.
    #[test]
    fn a_part_without_its_file_is_encoded_in_order() {
        let (at_once, in_order) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let machine = machine();
        std::fs::create_dir(at_once.path().join(snapshot_name(9)).with_extension("part1.tmp")).unwrap();
        let (written, _) = write(&FileSystem, at_once.path(), 9, &machine, true).unwrap();
        let (expected, _) = write(&FileSystem, in_order.path(), 9, &machine, false).unwrap();
        assert_eq!(std::fs::read(&written).unwrap(), std::fs::read(&expected).unwrap());
        assert!(!names(at_once.path()).iter().any(|name| name.contains("part2")));
    }

    /// A part that fails to encode, on this thread or another, fails the
    /// snapshot: no snapshot, and no part's file left.
    #[test]
    fn a_part_that_fails_fails_the_snapshot() {
        for failing in 0..3 {
            let directory = tempfile::tempdir().unwrap();
            let machine = Parts { failing: Some(failing), ..machine() };
            let error = write(&FileSystem, directory.path(), 9, &machine, true).unwrap_err();
            assert!(error.to_string().contains("does not encode"), "part {failing}: {error}");
            let names = names(directory.path());
            assert!(names.iter().all(|name| !name.contains("part") && !name.ends_with(".snap")), "{names:?}");
        }
    }
}
