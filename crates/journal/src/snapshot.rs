//! Snapshots: the whole ledger as of a log sequence number, so that recovery
//! replays only the log after it.
//!
//! `snapshot-<sequence, 20 digits>.snap`: a 40-byte header (magic `ZSNP`,
//! version, sequence, body length, body CRC-32C, ledger digest, header
//! CRC-32C) and a body (ledger configuration, last timestamp, first position
//! in memory, accounts with their history heads, the transfers in memory
//! with their back-links, pending records with their transfers). Written to a `.tmp` file, synced, renamed, and the
//! directory synced, so a snapshot either exists whole or not at all.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ledger::{Ledger, LedgerConfig, LedgerImage};

use crate::codec::{self, ACCOUNT_BYTES, PENDING_BYTES, Reader, STORED_BYTES, Writer};
use crate::error::{JournalError, io_error};
use crate::machine::StateMachine;
use crate::wal::sync_directory;

const MAGIC: [u8; 4] = *b"ZSNP";
/// 2: transfer windows, account history heads, pending bodies.
/// 3: machines with an archive (the platform's events and finished trades
/// left its state for `archive.log`).
/// 4: the machine's state is the rest of the body (streamed: no length first).
/// 5: the archive it counts on is in LZ4 frames (zstd before).
const VERSION: u32 = 5;
const HEADER_BYTES: usize = 40;

pub(crate) fn snapshot_name(sequence: u64) -> String {
    format!("snapshot-{sequence:020}.snap")
}

pub(crate) fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?.strip_suffix(".snap")?.parse().ok()
}

/// Writes a snapshot of `ledger` as of log sequence `sequence`; returns its path.
///
/// Streamed to the file: a large state (gigabytes after a busy day) is
/// never copied into memory whole; the header, whose length and checksum
/// come last, is written over its placeholder at the end.
pub(crate) fn write<M: StateMachine>(directory: &Path, sequence: u64, machine: &M) -> Result<PathBuf, JournalError> {
    let path = directory.join(snapshot_name(sequence));
    let temporary = path.with_extension("tmp");
    let file = File::create(&temporary).map_err(|source| io_error("create snapshot", &temporary, source))?;
    let write_error = |source| io_error("write snapshot", &temporary, source);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0; HEADER_BYTES]).map_err(write_error)?;
    let mut body = ChecksumWriter { inner: out, crc: 0, length: 0 };
    write_ledger(machine.ledger(), &mut body).map_err(write_error)?;
    // In pieces: an encoder writes field by field.
    let mut state = BufWriter::with_capacity(1 << 16, &mut body);
    machine.encode_state(&mut state).and_then(|()| state.flush()).map_err(write_error)?;
    drop(state);
    let ChecksumWriter { inner: mut out, crc: body_crc, length: body_length } = body;

    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&sequence.to_le_bytes());
    header.extend_from_slice(&body_length.to_le_bytes());
    header.extend_from_slice(&body_crc.to_le_bytes());
    header.extend_from_slice(&machine.digest().to_le_bytes());
    let header_crc = crc32c::crc32c(&header);
    header.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_BYTES);
    out.flush().map_err(write_error)?;
    let file = out.into_inner().map_err(|error| write_error(error.into_error()))?;
    file.write_all_at(&header, 0).map_err(write_error)?;
    file.sync_all().map_err(|source| io_error("fsync snapshot", &temporary, source))?;
    fs::rename(&temporary, &path).map_err(|source| io_error("rename snapshot", &path, source))?;
    sync_directory(directory)?;
    Ok(path)
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
    w.u64(ledger.accounts().len() as u64);
    for account in ledger.accounts() {
        let mut w = Writer(&mut piece);
        codec::write_account(&mut w, account);
        w.u64(ledger.last_transfer_of(account.id));
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
    for record in &pending {
        codec::write_pending(&mut Writer(&mut piece), record);
        flush(&mut piece, out, PIECE_BYTES)?;
    }
    flush(&mut piece, out, 0)
}

/// Counts and checksums what goes through it.
struct ChecksumWriter<W> {
    inner: W,
    crc: u32,
    length: u64,
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes[..written]);
        self.length += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads and rebuilds a snapshot; checks both checksums and the digest.
pub(crate) fn read<M: StateMachine>(path: &Path) -> Result<(u64, M), JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|source| io_error("read snapshot", path, source))?;
    let corrupt =
        |offset: u64, reason: &'static str| JournalError::Corrupt { path: path.to_path_buf(), offset, reason };
    let Some((header, body)) = bytes.split_at_checked(HEADER_BYTES) else {
        return Err(corrupt(0, "snapshot header cut short"));
    };
    let header_crc = u32::from_le_bytes([header[36], header[37], header[38], header[39]]);
    if header[0..4] != MAGIC || crc32c::crc32c(&header[..36]) != header_crc {
        return Err(corrupt(0, "snapshot header checksum mismatch"));
    }
    let mut r = Reader::new(&header[4..36], "snapshot header");
    let bad_header = |_| corrupt(0, "snapshot header");
    let version = r.u32().map_err(bad_header)?;
    let sequence = r.u64().map_err(bad_header)?;
    let body_length = r.u64().map_err(bad_header)?;
    let body_crc = r.u32().map_err(bad_header)?;
    let digest = r.u64().map_err(bad_header)?;
    if version != VERSION {
        return Err(corrupt(4, "unknown snapshot version"));
    }
    if body_length != body.len() as u64 || crc32c::crc32c(body) != body_crc {
        return Err(corrupt(HEADER_BYTES as u64, "snapshot body checksum mismatch"));
    }
    let bad = |detail: String| JournalError::BadSnapshot { path: path.to_path_buf(), detail };
    let (image, state) = read_image(body).map_err(|error| bad(error.to_string()))?;
    let ledger = Ledger::restore(image).map_err(|error| bad(error.to_string()))?;
    let machine = M::restore(ledger, state).map_err(|error| bad(error.to_string()))?;
    if machine.digest() != digest {
        return Err(bad("the rebuilt ledger's digest differs from the one recorded".to_string()));
    }
    Ok((sequence, machine))
}

/// The ledger image and the machine's own state bytes.
fn read_image(body: &[u8]) -> Result<(LedgerImage, &[u8]), codec::DecodeError> {
    let mut r = Reader::new(body, "snapshot body");
    let has_horizon = r.u8()? == 1;
    let horizon = r.u64()?;
    let config = LedgerConfig { id_horizon_ns: has_horizon.then_some(horizon) };
    let last_timestamp = r.u64()?;
    let first_position = r.u64()?;
    let account_count = r.count(ACCOUNT_BYTES + 8)?;
    let mut accounts = Vec::with_capacity(account_count);
    for _ in 0..account_count {
        let account = codec::read_account(&mut r)?;
        accounts.push((account, r.u64()?));
    }
    let transfer_count = r.count(STORED_BYTES)?;
    let mut transfers = Vec::with_capacity(transfer_count);
    for _ in 0..transfer_count {
        transfers.push(codec::read_stored(&mut r)?);
    }
    let pending_count = r.count(PENDING_BYTES)?;
    let mut pending = Vec::with_capacity(pending_count);
    for _ in 0..pending_count {
        pending.push(codec::read_pending(&mut r)?);
    }
    // The machine's state is the rest of the body.
    let state = r.take_bytes(r.remaining())?;
    Ok((LedgerImage { config, last_timestamp, accounts, first_position, transfers, pending }, state))
}
