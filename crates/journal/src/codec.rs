//! The byte layout of ledger batches and ledger images: fixed-size,
//! little-endian fields, no padding. Decoding never panics on bad bytes.

use ledger::{
    Account, AccountFlags, NewAccount, PendingRecord, PendingStatus, StoredTransfer, Transfer, TransferFlags,
};

/// What a batch asks of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateAccounts(Vec<NewAccount>),
    CreateTransfers(Vec<Transfer>),
}

/// A command with the timestamp it is applied at: the unit of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub timestamp: u64,
    pub command: Command,
}

const KIND_ACCOUNTS: u8 = 1;
const KIND_TRANSFERS: u8 = 2;
pub(crate) const NEW_ACCOUNT_BYTES: usize = 16 + 8 + 4 + 2 + 2;
pub(crate) const TRANSFER_BYTES: usize = 16 * 6 + 4 + 4 + 2 + 2 + 8;
pub(crate) const ACCOUNT_BYTES: usize = 16 * 5 + 8 + 8 + 4 + 2 + 2;
pub(crate) const PENDING_BYTES: usize = 16 + 1 + 8 + TRANSFER_BYTES;
pub(crate) const STORED_BYTES: usize = TRANSFER_BYTES + 8 + 8;

/// A decoding failure: what was being read when the bytes ran out or made no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}")]
pub struct DecodeError {
    pub what: &'static str,
}

pub(crate) struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    pub fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    pub fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    pub fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    pub fn u128(&mut self, value: u128) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    /// LEB128: seven bits a byte, small values in few bytes.
    pub fn varint(&mut self, mut value: u128) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, what }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.bytes.split_first_chunk::<N>().ok_or(DecodeError { what: self.what })?;
        self.bytes = rest;
        Ok(*head)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.take()?))
    }
    /// A LEB128 value (see `Writer::varint`); longer than a `u128` is an error.
    pub fn varint(&mut self) -> Result<u128, DecodeError> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = self.u8()?;
            let bits = u128::from(byte & 0x7f);
            if shift == 126 && bits > 0b11 {
                break;
            }
            value |= bits << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError { what: self.what })
    }
    /// A varint that must fit in 64 bits.
    pub fn varint_u64(&mut self) -> Result<u64, DecodeError> {
        u64::try_from(self.varint()?).map_err(|_| DecodeError { what: self.what })
    }
    /// A count of items of `item_bytes` each, refused if the bytes left
    /// cannot hold that many (so a corrupt count never allocates wildly).
    pub fn count(&mut self, item_bytes: usize) -> Result<usize, DecodeError> {
        let count = usize::try_from(self.u64()?).map_err(|_| DecodeError { what: self.what })?;
        if count.checked_mul(item_bytes).is_none_or(|bytes| bytes > self.bytes.len()) {
            return Err(DecodeError { what: self.what });
        }
        Ok(count)
    }
    /// The next `count` bytes as they are.
    pub fn take_bytes(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.bytes.split_at_checked(count).ok_or(DecodeError { what: self.what })?;
        self.bytes = rest;
        Ok(head)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

pub fn encode_batch(batch: &Batch, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u64(batch.timestamp);
    match &batch.command {
        Command::CreateAccounts(events) => {
            w.u8(KIND_ACCOUNTS);
            w.u64(events.len() as u64);
            for event in events {
                w.u128(event.id);
                w.u64(event.user_data);
                w.u32(event.ledger);
                w.u16(event.code);
                w.u16(event.flags.bits());
            }
        }
        Command::CreateTransfers(events) => {
            w.u8(KIND_TRANSFERS);
            w.u64(events.len() as u64);
            for event in events {
                write_transfer(&mut w, event);
            }
        }
    }
}

pub fn decode_batch(bytes: &[u8]) -> Result<Batch, DecodeError> {
    let mut r = Reader::new(bytes, "batch");
    let timestamp = r.u64()?;
    let command = match r.u8()? {
        KIND_ACCOUNTS => {
            let count = r.count(NEW_ACCOUNT_BYTES)?;
            let mut events = Vec::with_capacity(count);
            for _ in 0..count {
                events.push(NewAccount {
                    id: r.u128()?,
                    user_data: r.u64()?,
                    ledger: r.u32()?,
                    code: r.u16()?,
                    flags: AccountFlags::from_bits_retain(r.u16()?),
                });
            }
            Command::CreateAccounts(events)
        }
        KIND_TRANSFERS => {
            let count = r.count(TRANSFER_BYTES)?;
            let mut events = Vec::with_capacity(count);
            for _ in 0..count {
                events.push(read_transfer(&mut r)?);
            }
            Command::CreateTransfers(events)
        }
        _ => return Err(DecodeError { what: "batch kind" }),
    };
    if !r.is_empty() {
        return Err(DecodeError { what: "batch (trailing bytes)" });
    }
    Ok(Batch { timestamp, command })
}

pub(crate) fn write_transfer(w: &mut Writer<'_>, t: &Transfer) {
    w.u128(t.id);
    w.u128(t.debit_account_id);
    w.u128(t.credit_account_id);
    w.u128(t.amount);
    w.u128(t.pending_id);
    w.u128(t.user_data);
    w.u32(t.timeout_seconds);
    w.u32(t.ledger);
    w.u16(t.code);
    w.u16(t.flags.bits());
    w.u64(t.timestamp);
}

pub(crate) fn read_transfer(r: &mut Reader<'_>) -> Result<Transfer, DecodeError> {
    Ok(Transfer {
        id: r.u128()?,
        debit_account_id: r.u128()?,
        credit_account_id: r.u128()?,
        amount: r.u128()?,
        pending_id: r.u128()?,
        user_data: r.u128()?,
        timeout_seconds: r.u32()?,
        ledger: r.u32()?,
        code: r.u16()?,
        flags: TransferFlags::from_bits_retain(r.u16()?),
        timestamp: r.u64()?,
    })
}

pub(crate) fn write_account(w: &mut Writer<'_>, a: &Account) {
    w.u128(a.id);
    w.u128(a.debits_pending);
    w.u128(a.debits_posted);
    w.u128(a.credits_pending);
    w.u128(a.credits_posted);
    w.u64(a.user_data);
    w.u64(a.timestamp);
    w.u32(a.ledger);
    w.u16(a.code);
    w.u16(a.flags.bits());
}

pub(crate) fn read_account(r: &mut Reader<'_>) -> Result<Account, DecodeError> {
    Ok(Account {
        id: r.u128()?,
        debits_pending: r.u128()?,
        debits_posted: r.u128()?,
        credits_pending: r.u128()?,
        credits_posted: r.u128()?,
        user_data: r.u64()?,
        timestamp: r.u64()?,
        ledger: r.u32()?,
        code: r.u16()?,
        flags: AccountFlags::from_bits_retain(r.u16()?),
    })
}

pub(crate) fn write_pending(w: &mut Writer<'_>, p: &PendingRecord) {
    w.u128(p.id);
    w.u8(match p.status {
        PendingStatus::Pending => 0,
        PendingStatus::Posted => 1,
        PendingStatus::Voided => 2,
        PendingStatus::Expired => 3,
    });
    w.u64(p.expires_at);
    write_transfer(w, &p.transfer);
}

pub(crate) fn write_stored(w: &mut Writer<'_>, stored: &StoredTransfer) {
    write_transfer(w, &stored.transfer);
    w.u64(stored.previous_of_debit);
    w.u64(stored.previous_of_credit);
}

pub(crate) fn read_stored(r: &mut Reader<'_>) -> Result<StoredTransfer, DecodeError> {
    Ok(StoredTransfer { transfer: read_transfer(r)?, previous_of_debit: r.u64()?, previous_of_credit: r.u64()? })
}

pub(crate) fn read_pending(r: &mut Reader<'_>) -> Result<PendingRecord, DecodeError> {
    let id = r.u128()?;
    let status = match r.u8()? {
        0 => PendingStatus::Pending,
        1 => PendingStatus::Posted,
        2 => PendingStatus::Voided,
        3 => PendingStatus::Expired,
        _ => {
            return Err(DecodeError { what: "pending status" });
        }
    };
    let expires_at = r.u64()?;
    Ok(PendingRecord { id, status, expires_at, transfer: read_transfer(r)? })
}
