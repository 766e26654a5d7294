//! The history file: every transfer ever applied, at its position, so that
//! the ledger may drop old transfers from memory (see `LedgerConfig`'s id
//! horizon) and the log may be truncated after a snapshot.
//!
//! It grows by three or more transfers a payment, so it is the largest
//! thing a busy day writes but for the archive: its records are compact
//! (about 45 bytes for a platform transfer, against 132 as the ledger holds
//! it). `history.log` is a sequence of records `[payload length varint]
//! [CRC-32C u32][payload]`; a payload is the transfer in varints, its
//! timestamp as a difference from its block's first, an id's upper half
//! (the platform's time of day) as a difference from the timestamp, and the
//! positions of the previous transfers of its debit and credit accounts as
//! distances back from its own. Records come in blocks of
//! [`BLOCK_RECORDS`]; `history.idx` has one 16-byte entry a block: where it
//! starts in `history.log` and its first timestamp. Reading position `p`
//! reads entry `p / 64`, then walks at most 63 records' lengths.
//!
//! Both files are written after each group (no fdatasync of their own:
//! everything in them is also in the log until a snapshot), and synced
//! before a snapshot is written, so a snapshot never covers history that
//! is not on disk. At start both are cut back to the snapshot's transfer
//! count and the log replay appends the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger::{Ledger, NO_TRANSFER, StoredTransfer, Transfer, TransferFlags};

use crate::append_file::AppendFile;
use crate::codec::{DecodeError, Reader, Writer};
use crate::disk::{Disk, DiskFile, Open};
use crate::error::{JournalError, io_error};

pub(crate) const FILE_NAME: &str = "history.log";
pub(crate) const INDEX_FILE_NAME: &str = "history.idx";
/// Records a block: one index entry each, at most this many lengths walked a read.
pub(crate) const BLOCK_RECORDS: u64 = 64;
const INDEX_ENTRY_BYTES: u64 = 16;
/// The longest payload any transfer can take (every field at its widest: 165).
const PAYLOAD_BYTES_MAX: usize = 176;
/// The longest record: payload length (two bytes), checksum and payload.
const RECORD_BYTES_MAX: usize = 2 + 4 + PAYLOAD_BYTES_MAX;
/// The buffer is written out past this size.
const BUFFER_BYTES_MAX: usize = 8 << 20;
const LOST: &str = "history file is shorter than the snapshot says (transfers lost)";
const DAMAGED: &str = "history record checksum mismatch";
const CUT_SHORT: &str = "history record cut short";

pub(crate) struct History {
    log: AppendFile,
    index: AppendFile,
    /// Records in the file (written, not necessarily synced).
    written: u64,
    /// Records encoded in the buffer, not yet written.
    buffered: u64,
    /// The first timestamp of the block the next record joins, if it is
    /// not the first of a new one.
    block_base: u64,
    /// One payload being encoded (reused: no allocation a transfer).
    payload: Vec<u8>,
}

impl History {
    /// Opens the history files and cuts them back to `count` records (what
    /// the snapshot covers); fewer than that is lost history: an error.
    pub fn open(disk: &dyn Disk, directory: &Path, count: u64) -> Result<History, JournalError> {
        let blocks = count.div_ceil(BLOCK_RECORDS);
        let index = AppendFile::open(disk, directory, INDEX_FILE_NAME, blocks * INDEX_ENTRY_BYTES, LOST)?;
        let (length, block_base) = match blocks.checked_sub(1) {
            None => (0, 0),
            Some(last_block) => {
                let (start, base) = read_index_entry(index.handle(), &index.path, last_block)?;
                let path = directory.join(FILE_NAME);
                let file = disk.open(&path, Open::Read).map_err(|source| match source.kind() {
                    std::io::ErrorKind::NotFound => {
                        JournalError::Corrupt { path: path.clone(), offset: 0, reason: LOST }
                    }
                    _ => io_error("open", &path, source),
                })?;
                let in_block = (count - 1) % BLOCK_RECORDS + 1;
                let bytes = read_from(&*file, &path, start, in_block as usize * RECORD_BYTES_MAX)?;
                // Every record the snapshot keeps in this block must be whole and intact.
                let (at, last) = nth_record(&bytes, in_block as usize - 1, true).map_err(|(at, reason)| {
                    let reason = if reason == CUT_SHORT { LOST } else { reason };
                    JournalError::Corrupt { path: path.clone(), offset: start + at as u64, reason }
                })?;
                let at = at + last.length;
                (start + at as u64, base)
            }
        };
        let log = AppendFile::open(disk, directory, FILE_NAME, length, LOST)?;
        Ok(History {
            log,
            index,
            written: count,
            buffered: 0,
            block_base,
            payload: Vec::with_capacity(PAYLOAD_BYTES_MAX),
        })
    }

    /// Encodes the transfers the ledger stored since the last call. Called
    /// after every batch, before a later batch can evict them from memory.
    pub fn collect(&mut self, ledger: &Ledger) -> Result<(), JournalError> {
        let next = self.collected();
        if ledger.first_position_in_memory() > next {
            return Err(JournalError::Failed(format!(
                "transfers from position {next} left memory before reaching {}",
                self.log.path.display()
            )));
        }
        for (position, stored) in (next..).zip(ledger.stored_transfers_from(next)) {
            if position % BLOCK_RECORDS == 0 {
                let start = self.log.length() + self.log.buffer.len() as u64;
                self.block_base = stored.transfer.timestamp;
                self.index.buffer.extend_from_slice(&start.to_le_bytes());
                self.index.buffer.extend_from_slice(&self.block_base.to_le_bytes());
            }
            self.payload.clear();
            encode_payload(&mut Writer(&mut self.payload), position, self.block_base, stored);
            assert!(self.payload.len() <= PAYLOAD_BYTES_MAX, "history payload of {} bytes", self.payload.len());
            let buffer = &mut self.log.buffer;
            Writer(buffer).varint(self.payload.len() as u128);
            buffer.extend_from_slice(&crc32c::crc32c(&self.payload).to_le_bytes());
            buffer.extend_from_slice(&self.payload);
            self.buffered += 1;
            // A command that stores millions of transfers (a day's yield)
            // is written out as it goes, so the buffer stays small.
            if self.log.buffer.len() >= BUFFER_BYTES_MAX {
                self.write()?;
            }
        }
        Ok(())
    }

    /// How many transfers have been taken (written or buffered).
    pub fn collected(&self) -> u64 {
        self.written + self.buffered
    }

    /// Writes what was collected; the log before the index, so that a
    /// reader never finds a block that is not there yet (durability comes
    /// with `sync`).
    pub fn write(&mut self) -> Result<(), JournalError> {
        self.log.write(BUFFER_BYTES_MAX)?;
        self.index.write(BUFFER_BYTES_MAX)?;
        self.written += self.buffered;
        self.buffered = 0;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.write()?;
        self.log.sync()?;
        self.index.sync()
    }

    /// Records in the file (written, not necessarily synced).
    pub fn count(&self) -> u64 {
        self.written
    }

    /// A handle for reading from other threads.
    pub fn reader(&self) -> HistoryReader {
        let (log_path, log) = self.log.reader();
        let (index_path, index) = self.index.reader();
        HistoryReader { log_path, log, index_path, index }
    }
}

/// Reads transfers from the history file by position.
pub struct HistoryReader {
    log_path: PathBuf,
    log: Arc<dyn DiskFile>,
    index_path: PathBuf,
    index: Arc<dyn DiskFile>,
}

impl HistoryReader {
    /// The transfer at `position`; an error if it is not there or damaged.
    pub fn read(&self, position: u64) -> Result<StoredTransfer, JournalError> {
        let (start, base) = read_index_entry(&*self.index, &self.index_path, position / BLOCK_RECORDS)?;
        let before = (position % BLOCK_RECORDS) as usize;
        let bytes = read_from(&*self.log, &self.log_path, start, (before + 1) * RECORD_BYTES_MAX)?;
        let corrupt = |at: usize, reason| JournalError::Corrupt {
            path: self.log_path.clone(),
            offset: start + at as u64,
            reason,
        };
        let (at, record) = nth_record(&bytes, before, false).map_err(|(at, reason)| corrupt(at, reason))?;
        decode_payload(&mut Reader::new(record.payload, "history record"), position, base)
            .map_err(|_| corrupt(at, DAMAGED))
    }
}

/// Block `block`'s entry: where it starts and its first timestamp.
fn read_index_entry(file: &dyn DiskFile, path: &Path, block: u64) -> Result<(u64, u64), JournalError> {
    let mut entry = [0u8; INDEX_ENTRY_BYTES as usize];
    file.read_exact_at(&mut entry, block * INDEX_ENTRY_BYTES).map_err(|source| io_error("read", path, source))?;
    let (start, base) = entry.split_at(8);
    let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap_or_default());
    Ok((word(start), word(base)))
}

/// Up to `length` bytes from `offset` (fewer at the end of the file).
fn read_from(file: &dyn DiskFile, path: &Path, offset: u64, length: usize) -> Result<Vec<u8>, JournalError> {
    let mut bytes = vec![0u8; length];
    let mut filled = 0;
    while filled < length {
        match file.read_at(&mut bytes[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(io_error("read", path, source)),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

struct Record<'a> {
    crc: u32,
    payload: &'a [u8],
    /// Bytes of the whole record.
    length: usize,
}

impl Record<'_> {
    fn intact(&self) -> bool {
        crc32c::crc32c(self.payload) == self.crc
    }
}

/// Record `number` of a block whose bytes start `bytes`, whole and intact
/// (`check_all`: the ones before it too), and where it starts; else where
/// and why not.
fn nth_record(bytes: &[u8], number: usize, check_all: bool) -> Result<(usize, Record<'_>), (usize, &'static str)> {
    let mut at = 0;
    for _ in 0..number {
        let record = split_record(&bytes[at..]).ok_or((at, CUT_SHORT))?;
        if check_all && !record.intact() {
            return Err((at, DAMAGED));
        }
        at += record.length;
    }
    let record = split_record(&bytes[at..]).ok_or((at, CUT_SHORT))?;
    if !record.intact() {
        return Err((at, DAMAGED));
    }
    Ok((at, record))
}

/// The record at the start of `bytes`, if it is whole (not checked).
fn split_record(bytes: &[u8]) -> Option<Record<'_>> {
    let mut reader = Reader::new(bytes, "history record");
    let payload_length = usize::try_from(reader.varint().ok()?).ok().filter(|&n| n <= PAYLOAD_BYTES_MAX)?;
    let crc = reader.u32().ok()?;
    let payload = reader.take_bytes(payload_length).ok()?;
    let length = bytes.len() - reader.remaining();
    Some(Record { crc, payload, length })
}

fn encode_payload(w: &mut Writer<'_>, position: u64, block_base: u64, stored: &StoredTransfer) {
    let t = &stored.transfer;
    w.varint(t.flags.bits().into());
    w.varint(t.code.into());
    w.varint(t.ledger.into());
    w.varint(t.timeout_seconds.into());
    w.varint(zigzag(i128::from(t.timestamp) - i128::from(block_base)));
    write_id(w, t.id, t.timestamp);
    write_halves(w, t.debit_account_id);
    write_halves(w, t.credit_account_id);
    w.varint(t.amount);
    if t.pending_id == 0 {
        w.varint(0);
    } else {
        w.varint(1);
        write_id(w, t.pending_id, t.timestamp);
    }
    w.varint(t.user_data);
    w.varint(distance_back(position, stored.previous_of_debit).into());
    w.varint(distance_back(position, stored.previous_of_credit).into());
}

fn decode_payload(r: &mut Reader<'_>, position: u64, block_base: u64) -> Result<StoredTransfer, DecodeError> {
    let invalid = || DecodeError { what: "history record" };
    let flags = TransferFlags::from_bits_retain(u16::try_from(r.varint()?).map_err(|_| invalid())?);
    let code = u16::try_from(r.varint()?).map_err(|_| invalid())?;
    let ledger = u32::try_from(r.varint()?).map_err(|_| invalid())?;
    let timeout_seconds = u32::try_from(r.varint()?).map_err(|_| invalid())?;
    let timestamp = u64::try_from(i128::from(block_base) + unzigzag(r.varint()?)).map_err(|_| invalid())?;
    let id = read_id(r, timestamp)?;
    let debit_account_id = read_halves(r)?;
    let credit_account_id = read_halves(r)?;
    let amount = r.varint()?;
    let pending_id = match r.varint()? {
        0 => 0,
        1 => read_id(r, timestamp)?,
        _ => return Err(invalid()),
    };
    let user_data = r.varint()?;
    let previous_of_debit = from_distance_back(position, r.varint_u64()?);
    let previous_of_credit = from_distance_back(position, r.varint_u64()?);
    if !r.is_empty() {
        return Err(invalid());
    }
    let transfer = Transfer {
        id,
        debit_account_id,
        credit_account_id,
        amount,
        pending_id,
        user_data,
        timeout_seconds,
        ledger,
        code,
        flags,
        timestamp,
    };
    Ok(StoredTransfer { transfer, previous_of_debit, previous_of_credit })
}

/// Ids whose upper half is a time (the platform's): that half as a
/// difference from the transfer's timestamp, a few bytes; any other id
/// still round-trips, in up to 20.
fn write_id(w: &mut Writer<'_>, id: u128, timestamp: u64) {
    let upper = (id >> 64) as u64;
    w.varint(zigzag(i128::from(upper) - i128::from(timestamp)));
    w.varint(u128::from(id as u64));
}

fn read_id(r: &mut Reader<'_>, timestamp: u64) -> Result<u128, DecodeError> {
    let upper = u64::try_from(i128::from(timestamp) + unzigzag(r.varint()?))
        .map_err(|_| DecodeError { what: "history record" })?;
    Ok((u128::from(upper) << 64) | u128::from(r.varint_u64()?))
}

/// Account ids are a small kind over a number: each half as its own varint.
fn write_halves(w: &mut Writer<'_>, value: u128) {
    w.varint(value >> 64);
    w.varint(u128::from(value as u64));
}

fn read_halves(r: &mut Reader<'_>) -> Result<u128, DecodeError> {
    let upper = r.varint_u64()?;
    Ok((u128::from(upper) << 64) | u128::from(r.varint_u64()?))
}

fn zigzag(value: i128) -> u128 {
    ((value << 1) ^ (value >> 127)) as u128
}

fn unzigzag(value: u128) -> i128 {
    ((value >> 1) as i128) ^ -((value & 1) as i128)
}

/// 0 for none; otherwise how far back (a previous transfer is always earlier).
fn distance_back(position: u64, previous: u64) -> u64 {
    if previous == NO_TRANSFER {
        return 0;
    }
    assert_ne!(previous, position, "a transfer is not its own previous");
    position.wrapping_sub(previous)
}

fn from_distance_back(position: u64, distance: u64) -> u64 {
    if distance == 0 { NO_TRANSFER } else { position.wrapping_sub(distance) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;
    use proptest::prelude::*;

    fn stored() -> impl Strategy<Value = (u64, u64, StoredTransfer)> {
        let ids = (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>(), prop_oneof![Just(0u128), any::<u128>()]);
        let small = (any::<u128>(), any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), any::<u64>());
        let positions = (any::<u64>(), any::<u64>(), prop_oneof![Just(NO_TRANSFER), any::<u64>()], any::<u64>());
        (ids, small, positions).prop_filter_map(
            "a previous transfer is not the transfer itself",
            |(
                (id, debit, credit, user_data, pending_id),
                (amount, timeout, ledger, code, flags, timestamp),
                positions,
            )| {
                let (position, base, previous_of_debit, previous_of_credit) = positions;
                if previous_of_debit == position || previous_of_credit == position {
                    return None;
                }
                let transfer = Transfer {
                    id,
                    debit_account_id: debit,
                    credit_account_id: credit,
                    amount,
                    pending_id,
                    user_data,
                    timeout_seconds: timeout,
                    ledger,
                    code,
                    flags: TransferFlags::from_bits_retain(flags),
                    timestamp,
                };
                Some((position, base, StoredTransfer { transfer, previous_of_debit, previous_of_credit }))
            },
        )
    }

    proptest! {
        #[test]
        fn any_transfer_round_trips_within_the_longest_payload((position, base, stored) in stored()) {
            let mut payload = Vec::new();
            encode_payload(&mut Writer(&mut payload), position, base, &stored);
            prop_assert!(payload.len() <= PAYLOAD_BYTES_MAX, "{} bytes", payload.len());
            let decoded = decode_payload(&mut Reader::new(&payload, "test"), position, base).unwrap();
            prop_assert_eq!(decoded, stored);
        }
    }

    #[test]
    fn a_platform_transfer_takes_under_fifty_bytes() {
        let now = 1_384_099_200_000_000_000u64; // 2013-11-11 00:00 in ns
        let wallet = |number: u128| (1u128 << 64) | number;
        let transfer = Transfer {
            id: (u128::from(now) << 64) | 123_456_789,
            debit_account_id: wallet(12_000_000),
            credit_account_id: (8u128 << 64) | 8,
            amount: 18_800,
            user_data: 150_000_000,
            ledger: 156,
            code: 21,
            timestamp: now + 3_000,
            ..Transfer::default()
        };
        let position = 500_000_000;
        let stored =
            StoredTransfer { transfer, previous_of_debit: position - 9_000_000, previous_of_credit: position - 3 };
        let mut payload = Vec::new();
        encode_payload(&mut Writer(&mut payload), position, now, &stored);
        assert!(payload.len() + 1 + 4 < 50, "{} bytes", payload.len());
        assert_eq!(decode_payload(&mut Reader::new(&payload, "test"), position, now).unwrap(), stored);
    }
}
