//! Transfers that leave memory (an id horizon) stay readable from the
//! history file, across snapshots and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use journal::{Batch, Command, DurableLedger, Journal, JournalError, Options, Outcome};
use ledger::{CreateTransferResult, LedgerConfig, NewAccount, Transfer};

const SECOND: u64 = 1_000_000_000;
const HORIZON: u64 = 10 * SECOND;
/// Enough transfers to fill several of the ledger's eviction chunks.
const BATCHES: u64 = 12;
const PER_BATCH: u64 = 8_000;

fn options() -> Options {
    Options { snapshot_every_records: 5, ledger: LedgerConfig { id_horizon_ns: Some(HORIZON) }, ..Options::default() }
}

/// Batch `n` happens at `n × 20 s`: every batch is past the previous one's horizon.
fn batch(n: u64) -> Batch {
    let time = n * 20 * SECOND;
    let transfers = (0..PER_BATCH)
        .map(|i| Transfer {
            id: (u128::from(time) << 64) | u128::from(i),
            debit_account_id: 1,
            credit_account_id: 2 + u128::from(i % 3),
            amount: u128::from(n * 100_000 + i),
            ledger: 1,
            code: 1,
            ..Transfer::default()
        })
        .collect();
    Batch { timestamp: time, command: Command::CreateTransfers(transfers) }
}

fn write_all(directory: &std::path::Path) -> u64 {
    write_all_with(directory, options())
}

/// Writes the accounts and every batch; answers the state's digest.
fn write_all_with(directory: &std::path::Path, options: Options) -> u64 {
    let (store, _) = DurableLedger::open(directory, options).unwrap();
    let accounts = (1..=4).map(|id| NewAccount { id, ledger: 1, code: 1, ..NewAccount::default() }).collect();
    store.submit(Batch { timestamp: SECOND, command: Command::CreateAccounts(accounts) }).unwrap();
    for n in 1..=BATCHES {
        match store.submit(batch(n)).unwrap() {
            Outcome::Transfers(results) => assert!(results.iter().all(|r| r.is_ok())),
            other => panic!("{other:?}"),
        }
    }
    let digest = store.digest().unwrap();
    store.shutdown();
    digest
}

/// Every transfer that credited account 2, newest first, as written.
fn expected_history_of_account_2() -> Vec<u128> {
    let mut ids: Vec<u128> = (1..=BATCHES)
        .flat_map(|n| batch(n).command_transfers())
        .filter(|t| t.credit_account_id == 2)
        .map(|t| t.id)
        .collect();
    ids.reverse();
    ids
}

#[test]
fn evicted_transfers_are_read_back_from_the_history_file_after_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let _ = write_all(directory.path());
    let (store, report) = DurableLedger::open(directory.path(), options()).unwrap();
    assert!(report.snapshot_sequence.is_some(), "snapshots were taken: {report:?}");
    let (first_in_memory, count) = store.read(|l| (l.first_position_in_memory(), l.transfer_count()));
    assert!(first_in_memory > 0, "old transfers left memory");
    assert_eq!(count, BATCHES * PER_BATCH);

    // Position 0 is the first transfer of batch 1, from the history file.
    let first = store.stored_transfer(0).unwrap().expect("on disk");
    assert_eq!(first.transfer.id, batch(1).command_transfers()[0].id);
    assert!(store.read(|l| l.transfer(first.transfer.id).is_none()), "not in memory");

    // A statement walks from memory into the history file without a seam.
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.account_history(2, cursor, 1_000).unwrap();
        let Some(&(last_position, _)) = page.last() else {
            break;
        };
        ids.extend(page.iter().map(|(_, t)| t.id));
        cursor = Some(last_position);
    }
    assert_eq!(ids, expected_history_of_account_2());
    store.read(|l| l.check_conservation()).unwrap();
}

/// The horizon decides which retries are refused as expired, so a log is
/// replayed under the horizon that wrote it, whatever the reopening asks:
/// the directory records it before its first snapshot.
#[test]
fn a_log_without_a_snapshot_replays_under_the_horizon_that_wrote_it() {
    let directory = tempfile::tempdir().unwrap();
    let digest = write_all_with(directory.path(), Options { snapshot_every_records: u64::MAX, ..options() });
    let format = std::fs::read_to_string(directory.path().join("FORMAT")).unwrap();
    assert_eq!(format, format_record(&format!("ledger id-horizon-ns {HORIZON}")));

    let (store, report) = DurableLedger::open(directory.path(), Options::default()).unwrap();
    assert_eq!(report.snapshot_sequence, None);
    assert_eq!(report.ledger, LedgerConfig { id_horizon_ns: Some(HORIZON) }, "not the options' none");
    assert_eq!(store.digest().unwrap(), digest, "the same state as written");
    // Batch 1's transfers are far past the horizon: a retry is refused, not applied again.
    let retry = Batch { command: Command::CreateTransfers(batch(1).command_transfers()), ..batch(BATCHES + 1) };
    match store.submit(retry).unwrap() {
        Outcome::Transfers(results) => {
            assert!(results.iter().all(|r| *r == CreateTransferResult::IdExpired), "{:?}", &results[..2])
        }
        other => panic!("{other:?}"),
    }
    store.shutdown();
}

/// A directory whose record and snapshot disagree is refused by name; a
/// record of an older version, without the configuration, takes the
/// snapshot's and is completed.
#[test]
fn a_recorded_configuration_that_is_not_the_snapshots_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let digest = write_all(directory.path());
    let format_file = directory.path().join("FORMAT");

    std::fs::write(&format_file, format_record("ledger id-horizon-ns 5")).unwrap();
    let error = Journal::<ledger::Ledger>::open(directory.path(), options()).err().expect("refused");
    assert!(matches!(error, JournalError::OtherLedgerConfig { .. }), "{error}");
    assert!(error.to_string().contains("records a ledger of `id-horizon-ns 5`, and snapshot"), "{error}");

    // A flipped digit fails the line's check; a line that is no configuration is refused too.
    let flipped =
        format_record(&format!("ledger id-horizon-ns {HORIZON}")).replacen("id-horizon-ns 1", "id-horizon-ns 3", 1);
    for damaged in [flipped, format_record("ledger sideways")] {
        std::fs::write(&format_file, &damaged).unwrap();
        let error = Journal::<ledger::Ledger>::open(directory.path(), options()).err().expect("unreadable");
        assert!(matches!(error, JournalError::Corrupt { .. }), "{damaged}: {error}");
    }

    std::fs::write(&format_file, "format ledger 1\n").unwrap();
    let (store, report) = DurableLedger::open(directory.path(), Options::default()).unwrap();
    assert_eq!(report.ledger, LedgerConfig { id_horizon_ns: Some(HORIZON) });
    assert_eq!(store.digest().unwrap(), digest);
    store.shutdown();
    let format = std::fs::read_to_string(&format_file).unwrap();
    assert_eq!(format, format_record(&format!("ledger id-horizon-ns {HORIZON}")));
}

/// A log an older version wrote, with neither a recorded configuration nor
/// a snapshot, replays under the options as it did, and nothing is recorded
/// from a guess.
#[test]
fn an_unrecorded_log_without_a_snapshot_replays_under_the_options_and_stays_unrecorded() {
    let directory = tempfile::tempdir().unwrap();
    let digest = write_all_with(directory.path(), Options { snapshot_every_records: u64::MAX, ..options() });
    let format_file = directory.path().join("FORMAT");
    std::fs::write(&format_file, "format ledger 1\n").unwrap();
    let (store, report) = DurableLedger::open(directory.path(), options()).unwrap();
    assert_eq!((report.snapshot_sequence, report.ledger), (None, options().ledger));
    assert_eq!(store.digest().unwrap(), digest);
    store.shutdown();
    assert_eq!(std::fs::read_to_string(&format_file).unwrap(), "format ledger 1\n");
}

/// A ledger machine's FORMAT with `ledger_line` and its check.
fn format_record(ledger_line: &str) -> String {
    let checked = format!("format ledger 1\n{ledger_line}");
    format!("{checked} check {:08x}\n", crc32c::crc32c(checked.as_bytes()))
}

#[test]
fn a_history_file_shorter_than_the_snapshot_stops_the_start() {
    let directory = tempfile::tempdir().unwrap();
    let _ = write_all(directory.path());
    let path = directory.path().join("history.log");
    let length = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(length / 2).unwrap();
    let error = Journal::<ledger::Ledger>::open(directory.path(), options()).err().expect("must not open");
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("history.log"), "{error}");
}

#[test]
fn a_damaged_history_record_reads_as_an_error_never_as_another_transfer() {
    let directory = tempfile::tempdir().unwrap();
    let _ = write_all(directory.path());
    let path = directory.path().join("history.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let (store, _) = DurableLedger::open(directory.path(), options()).unwrap();
    let expected: Vec<u128> = (1..=BATCHES).flat_map(|n| batch(n).command_transfers()).map(|t| t.id).collect();
    let mut damaged = 0;
    for (position, id) in (0..).zip(&expected) {
        match store.stored_transfer(position) {
            Ok(Some(stored)) => assert_eq!(stored.transfer.id, *id, "position {position}"),
            Ok(None) => panic!("position {position} is missing"),
            Err(error) => {
                assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
                assert!(error.to_string().contains("history.log"), "{error}");
                damaged += 1;
            }
        }
    }
    assert!((1..=64).contains(&damaged), "one block at most is unreadable, found {damaged} records");
}

/// Restarts at counts that cut the history mid-block (snapshots every
/// three batches of odd sizes, replays of the rest): every transfer reads
/// back at its position, with its accounts' previous transfers.
#[test]
fn restarts_mid_block_keep_every_transfer_at_its_position() {
    let directory = tempfile::tempdir().unwrap();
    let options = Options { snapshot_every_records: 3, ..options() };
    let mut written: Vec<Transfer> = Vec::new();
    let mut time = SECOND;
    for round in 0..6u64 {
        let (store, _) = DurableLedger::open(directory.path(), options.clone()).unwrap();
        if round == 0 {
            let accounts = (1..=4).map(|id| NewAccount { id, ledger: 1, code: 1, ..NewAccount::default() }).collect();
            store.submit(Batch { timestamp: time, command: Command::CreateAccounts(accounts) }).unwrap();
        }
        for size in [37 + round * 11, 5, 64, 129 + round, 1] {
            time += 20 * SECOND;
            let transfers: Vec<Transfer> = (0..size)
                .map(|i| Transfer {
                    id: (u128::from(time) << 64) | u128::from(i + 1),
                    debit_account_id: 1,
                    credit_account_id: 2 + u128::from(i % 3),
                    amount: u128::from(time / SECOND + i),
                    user_data: u128::from(i) << 70,
                    ledger: 1,
                    code: 1 + (i % 5) as u16,
                    ..Transfer::default()
                })
                .collect();
            match store.submit(Batch { timestamp: time, command: Command::CreateTransfers(transfers.clone()) }).unwrap()
            {
                Outcome::Transfers(results) => assert!(results.iter().all(|r| r.is_ok())),
                other => panic!("{other:?}"),
            }
            written.extend(transfers);
        }
        store.shutdown();
    }
    // Straight from the file, whatever is still in memory.
    let (journal, ledger, _) = Journal::<ledger::Ledger>::open(directory.path(), options).unwrap();
    assert_eq!(ledger.transfer_count(), written.len() as u64);
    let history = journal.history_reader();
    let mut previous_of_credit = [ledger::NO_TRANSFER; 3];
    for (position, expected) in (0..).zip(&written) {
        let stored = history.read(position).unwrap();
        let t = stored.transfer;
        assert_eq!(
            (t.id, t.debit_account_id, t.credit_account_id, t.amount, t.user_data, t.code),
            (expected.id, 1, expected.credit_account_id, expected.amount, expected.user_data, expected.code),
            "position {position}"
        );
        assert_eq!(stored.previous_of_debit, position.checked_sub(1).unwrap_or(ledger::NO_TRANSFER));
        let credited = (expected.credit_account_id - 2) as usize;
        assert_eq!(stored.previous_of_credit, previous_of_credit[credited], "position {position}");
        previous_of_credit[credited] = position;
    }
    assert!(history.read(written.len() as u64).is_err(), "nothing past the end");
}

trait BatchTransfers {
    fn command_transfers(&self) -> Vec<Transfer>;
}

impl BatchTransfers for Batch {
    fn command_transfers(&self) -> Vec<Transfer> {
        match &self.command {
            Command::CreateTransfers(transfers) => transfers.clone(),
            Command::CreateAccounts(_) => Vec::new(),
        }
    }
}
