//! The record of what wrote a data directory (its `FORMAT` file) and a
//! shared log: the machine, its format, and the ledger's configuration.
//!
//! The configuration is part of what a replay means: the id horizon decides
//! which transfer ids are refused as expired, so a log replayed under
//! another horizon can reach another state. A snapshot carries the
//! configuration it was taken with; the record carries it for the log
//! before the first snapshot, and for a node that joins a shared log.

use std::path::Path;

use ledger::LedgerConfig;

use crate::disk::{Disk, Open};
use crate::error::{JournalError, io_error};
use crate::machine::StateMachine;
use crate::wal;

/// `format <machine> <n>\n` then `ledger <configuration> check <crc>\n`.
pub(crate) const FORMAT_FILE: &str = "FORMAT";
/// Longest record: two short lines.
const RECORD_BYTES_MAX: usize = 256;

/// The record's text for this machine and `config`. A flipped digit in the
/// horizon would read as another horizon, so the line carries a CRC-32C of
/// the record before it.
pub(crate) fn record_text<M: StateMachine>(config: LedgerConfig) -> String {
    let checked = format!("format {}\nledger {}", machine_format::<M>(), config_text(config));
    format!("{checked} check {:08x}\n", crc32c::crc32c(checked.as_bytes()))
}

/// `<machine> <n>`: what a record's first line names.
pub(crate) fn machine_format<M: StateMachine>() -> String {
    format!("{} {}", M::NAME, M::FORMAT)
}

/// `id-horizon-ns <n>` or `no-id-horizon`: a configuration in words and
/// numbers, as records and messages show it.
pub(crate) fn config_text(config: LedgerConfig) -> String {
    match config.id_horizon_ns {
        Some(horizon) => format!("id-horizon-ns {horizon}"),
        None => "no-id-horizon".to_string(),
    }
}

/// Reads a record of this machine's format written at `path` (a file, or
/// the log a shared store describes): another machine's or format's is
/// refused by name. Answers its ledger configuration, `None` in a record
/// an older version wrote (before the configuration was recorded).
pub(crate) fn parse<M: StateMachine>(text: &str, path: &Path) -> Result<Option<LedgerConfig>, JournalError> {
    let corrupt = |reason| JournalError::Corrupt { path: path.to_path_buf(), offset: 0, reason };
    if text.len() > RECORD_BYTES_MAX {
        return Err(corrupt("longer than a format record"));
    }
    let mut lines = text.lines();
    let expected = machine_format::<M>();
    match lines.next().and_then(|line| line.trim().strip_prefix("format ")) {
        Some(found) if found == expected => {}
        Some(found) if !found.is_empty() && found.len() <= 64 => {
            return Err(JournalError::OtherFormat { path: path.to_path_buf(), found: found.to_string(), expected });
        }
        _ => return Err(corrupt("not a format record (`format <machine> <n>`)")),
    }
    let ledger = match lines.next().map(str::trim) {
        None | Some("") => None,
        Some(line) => {
            let (checked, check) =
                line.rsplit_once(" check ").ok_or_else(|| corrupt("a ledger line without its check"))?;
            let first_line = format!("format {expected}\n{checked}");
            if u32::from_str_radix(check, 16).ok() != Some(crc32c::crc32c(first_line.as_bytes())) {
                return Err(corrupt("the ledger configuration does not match its check"));
            }
            Some(parse_config(checked).ok_or_else(|| corrupt("not a ledger configuration (`ledger …`)"))?)
        }
    };
    if lines.any(|line| !line.trim().is_empty()) {
        return Err(corrupt("more than a format record's two lines"));
    }
    Ok(ledger)
}

fn parse_config(line: &str) -> Option<LedgerConfig> {
    let words = line.strip_prefix("ledger ")?.trim();
    if words == "no-id-horizon" {
        return Some(LedgerConfig { id_horizon_ns: None });
    }
    let horizon = words.strip_prefix("id-horizon-ns ")?.parse::<u64>().ok()?;
    Some(LedgerConfig { id_horizon_ns: Some(horizon) })
}

/// The ledger configuration the directory's record holds: `None` for a
/// record without one or a directory without a record (a new directory;
/// one with a log or snapshots but no record is refused, since a version
/// from before formats were recorded wrote it).
pub(crate) fn read_file<M: StateMachine>(
    disk: &dyn Disk,
    directory: &Path,
    has_contents: bool,
) -> Result<Option<LedgerConfig>, JournalError> {
    let path = directory.join(FORMAT_FILE);
    match disk.read(&path) {
        Ok(bytes) => parse::<M>(&String::from_utf8_lossy(&bytes), &path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if has_contents {
                return Err(JournalError::FormatUnrecorded {
                    path: directory.to_path_buf(),
                    expected: machine_format::<M>(),
                });
            }
            Ok(None)
        }
        Err(source) => Err(io_error("read", &path, source)),
    }
}

/// Writes the directory's record, atomically (a `.tmp` file synced, then
/// renamed, then the directory synced).
pub(crate) fn write_file<M: StateMachine>(
    disk: &dyn Disk,
    directory: &Path,
    config: LedgerConfig,
) -> Result<(), JournalError> {
    let path = directory.join(FORMAT_FILE);
    let temporary = path.with_extension("tmp");
    let write_error = |source| io_error("write", &temporary, source);
    let file = disk.open(&temporary, Open::Truncate).map_err(write_error)?;
    file.write_at(record_text::<M>(config).as_bytes(), 0).map_err(write_error)?;
    file.sync().map_err(write_error)?;
    disk.rename(&temporary, &path).map_err(|source| io_error("rename", &path, source))?;
    wal::sync_directory(disk, directory)
}

/// Refuses a configuration that is not the one recorded (`recorded_at`
/// says where): replaying under it could reach another state.
pub(crate) fn check_config(
    recorded: Option<LedgerConfig>,
    recorded_at: &Path,
    found: LedgerConfig,
    found_in: &str,
) -> Result<(), JournalError> {
    match recorded {
        Some(recorded) if recorded != found => Err(JournalError::OtherLedgerConfig {
            path: recorded_at.to_path_buf(),
            recorded: config_text(recorded),
            found: config_text(found),
            found_in: found_in.to_string(),
        }),
        _ => Ok(()),
    }
}
