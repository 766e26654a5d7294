//! Transfers that leave memory (an id horizon) stay readable from the
//! history file, across snapshots and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use journal::{Batch, Command, DurableLedger, Journal, JournalError, Options, Outcome};
use ledger::{LedgerConfig, NewAccount, Transfer};

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

fn write_all(directory: &std::path::Path) {
    let (store, _) = DurableLedger::open(directory, options()).unwrap();
    let accounts = (1..=4).map(|id| NewAccount { id, ledger: 1, code: 1, ..NewAccount::default() }).collect();
    store.submit(Batch { timestamp: SECOND, command: Command::CreateAccounts(accounts) }).unwrap();
    for n in 1..=BATCHES {
        match store.submit(batch(n)).unwrap() {
            Outcome::Transfers(results) => assert!(results.iter().all(|r| r.is_ok())),
            other => panic!("{other:?}"),
        }
    }
    store.shutdown();
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
    write_all(directory.path());
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

#[test]
fn a_history_file_shorter_than_the_snapshot_stops_the_start() {
    let directory = tempfile::tempdir().unwrap();
    write_all(directory.path());
    let path = directory.path().join("history.log");
    let length = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(length / 2).unwrap();
    let error = Journal::<ledger::Ledger>::open(directory.path(), options()).err().expect("must not open");
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("history.log"), "{error}");
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
