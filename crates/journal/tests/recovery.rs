//! Recovery from what a crash or a bad disk leaves behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};

use journal::{Batch, Command, DurableLedger, Journal, JournalError, Options, Outcome};
use ledger::{AccountFlags, NewAccount, Transfer};

const SECOND: u64 = 1_000_000_000;

fn accounts_batch() -> Batch {
    let accounts = (1..=10u128)
        .map(|id| NewAccount {
            id,
            user_data: 0,
            ledger: 1,
            code: 1,
            flags: if id == 1 { AccountFlags::empty() } else { AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS },
        })
        .collect();
    Batch { timestamp: SECOND, command: Command::CreateAccounts(accounts) }
}

/// Batch `n` (from 1): 20 top-ups from the bank, ids unique across batches.
fn transfers_batch(n: u64) -> Batch {
    let transfers = (0..20u128)
        .map(|i| Transfer {
            id: u128::from(n) * 1000 + i,
            debit_account_id: 1,
            credit_account_id: 2 + i % 9,
            amount: 100 + i,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        })
        .collect();
    Batch { timestamp: (n + 1) * SECOND, command: Command::CreateTransfers(transfers) }
}

fn options(snapshot_every_records: u64) -> Options {
    Options { snapshot_every_records, ..Options::default() }
}

/// Writes `batches` transfer batches through a durable ledger; returns its digest.
fn write_history(directory: &Path, batches: u64, snapshot_every_records: u64) -> u64 {
    let (store, _) = DurableLedger::open(directory, options(snapshot_every_records)).unwrap();
    assert!(matches!(store.submit(accounts_batch()).unwrap(), Outcome::Accounts(_)));
    for n in 1..=batches {
        match store.submit(transfers_batch(n)).unwrap() {
            Outcome::Transfers(results) => assert!(results.iter().all(|r| r.is_ok())),
            other => panic!("unexpected {other:?}"),
        }
    }
    let digest = store.digest().unwrap();
    store.shutdown();
    digest
}

fn files(directory: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    found.sort();
    found
}

#[test]
fn an_empty_directory_opens_as_an_empty_ledger() {
    let directory = tempfile::tempdir().unwrap();
    let (_, ledger, report) =
        Journal::<ledger::Ledger>::open(&directory.path().join("new"), Options::default()).unwrap();
    assert_eq!(ledger.accounts().len(), 0);
    assert_eq!(report.last_sequence, 0);
}

#[test]
fn a_reopened_journal_has_exactly_the_state_it_had() {
    let directory = tempfile::tempdir().unwrap();
    let digest = write_history(directory.path(), 30, 1_000);
    let (_, ledger, report) = Journal::<ledger::Ledger>::open(directory.path(), options(1_000)).unwrap();
    assert_eq!(journal::digest(&ledger).unwrap(), digest);
    assert_eq!(report.records_replayed, 31);
    assert_eq!(ledger.stats().transfers, 600);
    ledger.check_conservation().unwrap();
}

#[test]
fn snapshots_bound_the_replay_and_truncate_the_log() {
    let directory = tempfile::tempdir().unwrap();
    let digest = write_history(directory.path(), 45, 10);
    assert_eq!(files(directory.path(), "snapshot-").len(), 1, "older snapshots are deleted");
    let (_, ledger, report) = Journal::<ledger::Ledger>::open(directory.path(), options(10)).unwrap();
    assert_eq!(journal::digest(&ledger).unwrap(), digest);
    assert_eq!(report.snapshot_sequence, Some(40), "46 records, a snapshot every 10");
    assert_eq!(report.records_replayed, 6);
    assert_eq!(ledger.stats().transfers, 900);
}

#[test]
fn a_torn_tail_is_cut_off_and_everything_before_it_kept() {
    let directory = tempfile::tempdir().unwrap();
    let digest = write_history(directory.path(), 12, 1_000);
    let segment = files(directory.path(), "wal-").pop().unwrap();
    let intact = fs::metadata(&segment).unwrap().len();
    // Half of a 13th record, as a crash in the middle of a write leaves it.
    let mut bytes = fs::read(&segment).unwrap();
    let record_start = bytes.len() - 2400;
    let torn: Vec<u8> = bytes[record_start..record_start + 1000].to_vec();
    bytes.extend_from_slice(&torn);
    fs::write(&segment, &bytes).unwrap();

    let (mut journal, ledger, report) = Journal::<ledger::Ledger>::open(directory.path(), options(1_000)).unwrap();
    assert_eq!(journal::digest(&ledger).unwrap(), digest);
    assert_eq!(report.torn_bytes_cut, 1000);
    assert_eq!(fs::metadata(&segment).unwrap().len(), intact, "the tail is cut on disk too");
    // The journal appends after the cut and the result survives another start.
    journal.append(&[&transfers_batch(13)]).unwrap();
    drop((journal, ledger));
    let (_, ledger, _) = Journal::<ledger::Ledger>::open(directory.path(), options(1_000)).unwrap();
    assert_eq!(ledger.stats().transfers, 13 * 20);
}

#[test]
fn a_flipped_byte_in_the_middle_stops_the_start_naming_file_and_offset() {
    let directory = tempfile::tempdir().unwrap();
    write_history(directory.path(), 12, 1_000);
    let segment = files(directory.path(), "wal-").pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&segment, &bytes).unwrap();
    match Journal::<ledger::Ledger>::open(directory.path(), options(1_000)) {
        Err(JournalError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, segment);
            assert!(
                offset <= middle as u64 && middle as u64 - offset < 2500,
                "offset {offset} is the damaged record's"
            );
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a corrupt log must not open"),
    }
}

#[test]
fn a_missing_snapshot_whose_log_is_gone_is_an_error_not_an_empty_ledger() {
    let directory = tempfile::tempdir().unwrap();
    write_history(directory.path(), 25, 10);
    for snapshot in files(directory.path(), "snapshot-") {
        fs::remove_file(snapshot).unwrap();
    }
    let history = directory.path().join("history.log");
    let history_bytes = fs::metadata(&history).unwrap().len();
    assert!(history_bytes > 0);
    let error = Journal::<ledger::Ledger>::open(directory.path(), options(10)).err().expect("must not open");
    assert!(matches!(error, JournalError::Gap { .. }), "{error}");
    assert!(error.to_string().contains("expected record 1 next"), "{error}");
    assert_eq!(fs::metadata(&history).unwrap().len(), history_bytes, "the history is not cut before the gap is seen");
}

#[test]
fn a_damaged_snapshot_falls_back_to_the_log_when_the_log_still_covers_it() {
    let directory = tempfile::tempdir().unwrap();
    let digest = write_history(directory.path(), 5, 1_000);
    // Snapshot by hand, keeping the segments it would delete.
    let (mut journal, ledger, _) = Journal::<ledger::Ledger>::open(directory.path(), options(1_000)).unwrap();
    let saved: Vec<(PathBuf, Vec<u8>)> = files(directory.path(), "wal-")
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let snapshot = journal.snapshot(&ledger).unwrap();
    drop((journal, ledger));
    for (path, bytes) in saved {
        fs::write(path, bytes).unwrap();
    }
    let mut bytes = fs::read(&snapshot).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&snapshot, bytes).unwrap();
    let (_, ledger, report) = Journal::<ledger::Ledger>::open(directory.path(), options(1_000)).unwrap();
    assert_eq!(report.snapshots_skipped.len(), 1);
    assert_eq!(report.snapshots_skipped[0].path, snapshot);
    assert!(report.snapshots_skipped[0].reason.contains("digest mismatch"), "{:?}", report.snapshots_skipped);
    assert_eq!(journal::digest(&ledger).unwrap(), digest);
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let directory = tempfile::tempdir().unwrap();
    let (_journal, _, _) = Journal::<ledger::Ledger>::open(directory.path(), Options::default()).unwrap();
    let error = Journal::<ledger::Ledger>::open(directory.path(), Options::default()).err().expect("locked");
    assert!(matches!(error, JournalError::Locked { .. }), "{error}");
}

#[test]
fn a_directory_that_cannot_be_created_is_a_clear_error() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let error = Journal::<ledger::Ledger>::open(&file.join("data"), Options::default()).err().expect("cannot open");
    let message = error.to_string();
    assert!(message.contains("cannot create data directory") && message.contains("a-file"), "{message}");
}

#[test]
fn an_oversized_batch_is_refused_before_it_reaches_the_log() {
    let directory = tempfile::tempdir().unwrap();
    let (store, _) = DurableLedger::open(directory.path(), Options::default()).unwrap();
    let too_many = vec![Transfer::default(); ledger::BATCH_EVENTS_MAX + 1];
    let outcome = store.submit(Batch { timestamp: 1, command: Command::CreateTransfers(too_many) }).unwrap();
    assert!(matches!(outcome, Outcome::Refused(_)));
    store.shutdown();
    let (_, _, report) = Journal::<ledger::Ledger>::open(directory.path(), Options::default()).unwrap();
    assert_eq!(report.last_sequence, 0);
}

#[test]
fn a_snapshot_waits_until_the_log_since_the_last_is_a_share_of_its_size() {
    use journal::{NoArchive, StateMachine};
    let directory = tempfile::tempdir().unwrap();
    let options = Options { snapshot_every_records: 2, snapshot_log_percent: 300, ..Options::default() };
    let (mut journal, mut ledger, _) = Journal::<ledger::Ledger>::open(directory.path(), options.clone()).unwrap();
    let append = |journal: &mut Journal<ledger::Ledger>, ledger: &mut ledger::Ledger, batch: Batch| {
        ledger.apply(&batch, &NoArchive).unwrap();
        journal.append(&[&batch]).unwrap();
        journal.collect_history(ledger).unwrap();
    };
    append(&mut journal, &mut ledger, accounts_batch());
    assert!(!journal.snapshot_due(), "one record of the two the count asks for");
    append(&mut journal, &mut ledger, transfers_batch(1));
    assert!(journal.snapshot_due(), "no snapshot yet: the record count alone decides");
    let snapshot_bytes = fs::metadata(journal.snapshot(&ledger).unwrap()).unwrap().len();
    let mut batches = 1;
    loop {
        batches += 1;
        append(&mut journal, &mut ledger, transfers_batch(batches));
        let logged = fs::metadata(files(directory.path(), "wal-").pop().unwrap()).unwrap().len();
        let enough = logged >= snapshot_bytes * 3;
        assert_eq!(journal.snapshot_due(), enough && batches >= 3, "{logged} log bytes, snapshot {snapshot_bytes}");
        if enough {
            break;
        }
    }
    assert!(batches > 3, "three times a snapshot of {snapshot_bytes} bytes outweighs two records");
    // A restart counts the log it replays.
    drop((journal, ledger));
    let (journal, _, report) = Journal::<ledger::Ledger>::open(directory.path(), options).unwrap();
    assert_eq!(report.records_replayed, batches - 1);
    assert!(journal.snapshot_due());
}

#[test]
fn a_snapshot_is_due_once_applying_took_a_multiple_of_writing_the_last() {
    use journal::{NoArchive, StateMachine};
    use std::time::Duration;
    let hour = Duration::from_secs(3_600);
    // The log rule never fires here (nor could the records rule, which the
    // rule by work does not wait for): only the work since the last snapshot can.
    let options = |multiple| Options {
        snapshot_every_records: u64::MAX,
        snapshot_log_percent: 1 << 40,
        snapshot_apply_multiple: multiple,
        ..Options::default()
    };
    for multiple in [0, 3] {
        let directory = tempfile::tempdir().unwrap();
        let (mut journal, mut ledger, _) =
            Journal::<ledger::Ledger>::open(directory.path(), options(multiple)).unwrap();
        for batch in [accounts_batch(), transfers_batch(1)] {
            ledger.apply(&batch, &NoArchive).unwrap();
            journal.append(&[&batch]).unwrap();
        }
        journal.collect_history(&mut ledger).unwrap();
        journal.snapshot(&ledger).unwrap();
        let batch = transfers_batch(2);
        ledger.apply(&batch, &NoArchive).unwrap();
        journal.append(&[&batch]).unwrap();
        journal.count_apply_time(Duration::from_nanos(1));
        assert!(!journal.snapshot_due(), "a nanosecond of work is less than {multiple} snapshot writes");
        journal.count_apply_time(Duration::from_secs(9));
        assert!(!journal.snapshot_due(), "nine seconds of work are not worth a snapshot");
        journal.count_apply_time(hour);
        assert_eq!(journal.snapshot_due(), multiple > 0, "an hour of work since, multiple {multiple}");
    }
}

/// The digest is part of the format (snapshots store it; a later build
/// checks against it): XXH3-64 of the snapshot's body, the same in every
/// build. The constant changes only with the encoding, and the snapshot
/// version with it.
#[test]
fn the_digest_is_the_snapshot_body_hash_and_fixed_across_builds() {
    let directory = tempfile::tempdir().unwrap();
    let digest = write_history(directory.path(), 3, 1_000);
    let (mut journal, ledger, _) = Journal::<ledger::Ledger>::open(directory.path(), options(1_000)).unwrap();
    assert_eq!(journal::digest(&ledger).unwrap(), digest);
    let snapshot = fs::read(journal.snapshot(&ledger).unwrap()).unwrap();
    assert_eq!(xxhash_rust::xxh3::xxh3_64(&snapshot[36..]), digest);
    assert_eq!(snapshot[24..32], digest.to_le_bytes(), "stored in the header");
    assert_eq!(digest, 0xbbca_bc6c_e7c9_ae2a);
}

/// A machine of another format (its commands may mean something else)
/// would replay the log to another state: the directory is refused by
/// name, and so is one with a log but no record of its format.
#[test]
fn a_directory_of_another_machine_format_is_refused_by_name() {
    let directory = tempfile::tempdir().unwrap();
    write_history(directory.path(), 2, 1_000);
    let format_file = directory.path().join("FORMAT");
    let record = fs::read_to_string(&format_file).unwrap();
    assert!(record.starts_with("format ledger 1\nledger no-id-horizon check "), "{record}");

    fs::write(&format_file, "format ledger 7\n").unwrap();
    let error = DurableLedger::open(directory.path(), options(1_000)).err().expect("refused");
    assert!(matches!(error, JournalError::OtherFormat { .. }), "{error}");
    assert!(error.to_string().contains("holds `ledger 7`, and this program reads `ledger 1`"), "{error}");

    fs::write(&format_file, "format platform 1\n").unwrap();
    let error = DurableLedger::open(directory.path(), options(1_000)).err().expect("another machine's");
    assert!(error.to_string().contains("holds `platform 1`"), "{error}");

    fs::write(&format_file, "garbage").unwrap();
    let error = DurableLedger::open(directory.path(), options(1_000)).err().expect("unreadable");
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");

    fs::remove_file(&format_file).unwrap();
    let error = DurableLedger::open(directory.path(), options(1_000)).err().expect("refused");
    assert!(matches!(error, JournalError::FormatUnrecorded { .. }), "{error}");
    assert!(error.to_string().contains("no FORMAT file"), "{error}");

    fs::write(&format_file, "format ledger 1\n").unwrap();
    let (store, report) = DurableLedger::open(directory.path(), options(1_000)).unwrap();
    assert_eq!(report.records_replayed, 3);
    store.shutdown();
}

/// A snapshot of another version says so (its header is laid out
/// otherwise), and recovery names it when no log covers it.
#[test]
fn a_snapshot_of_another_version_is_named_as_such() {
    let directory = tempfile::tempdir().unwrap();
    write_history(directory.path(), 3, 2);
    let snapshot = files(directory.path(), "snapshot-").pop().expect("a snapshot every 2 records");
    let mut bytes = fs::read(&snapshot).unwrap();
    bytes[4..8].copy_from_slice(&5u32.to_le_bytes());
    fs::write(&snapshot, bytes).unwrap();
    let error = DurableLedger::open(directory.path(), options(2)).err().expect("refused");
    let text = error.to_string();
    assert!(matches!(error, JournalError::Gap { .. }), "{text}");
    assert!(text.contains("passed over: ") && text.contains("byte 4: a snapshot of another version"), "{text}");
    assert!(!text.contains("acknowledged data may be damaged"), "the reason alone, not the file's error: {text}");
}
