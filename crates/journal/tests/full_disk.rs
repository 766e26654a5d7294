//! A full disk: writes fail with a clear error, never a panic, nothing
//! acknowledged is lost, and the directory recovers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use journal::{Batch, Command, DurableLedger, Journal, Options, Outcome};
use ledger::{NewAccount, Transfer};

/// A tiny tmpfs, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// `None` where this process may not mount (not root): the test says so.
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let path = std::env::temp_dir().join(format!("zhifu-full-disk-{}", std::process::id()));
        std::fs::create_dir_all(&path).ok()?;
        let status = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { path })
    }
}

impl SmallDisk {
    fn grow(&self, bytes: u64) {
        let status =
            Process::new("mount").args(["-o", &format!("remount,size={bytes}")]).arg(&self.path).status().unwrap();
        assert!(status.success(), "remount to a larger size");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn batch(n: u64) -> Batch {
    let transfers = (0..20u128)
        .map(|i| Transfer {
            id: u128::from(n) * 100 + i,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 1,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        })
        .collect();
    Batch { timestamp: n + 10, command: Command::CreateTransfers(transfers) }
}

fn fill_until_full(directory: &Path) -> u64 {
    let (store, _) = DurableLedger::open(directory, Options::default()).unwrap();
    let accounts = (1..=2).map(|id| NewAccount { id, ledger: 1, code: 1, ..NewAccount::default() }).collect();
    store.submit(Batch { timestamp: 1, command: Command::CreateAccounts(accounts) }).unwrap();
    let mut acknowledged = 0;
    for n in 1..100_000 {
        match store.submit(batch(n)) {
            Ok(Outcome::Transfers(results)) => {
                assert!(results.iter().all(|r| r.is_ok()));
                acknowledged = n;
            }
            Ok(other) => panic!("{other:?}"),
            Err(error) => {
                let message = error.to_string();
                assert!(message.contains("No space left") || message.contains("failed earlier"), "{message}");
                // Once failed, the journal refuses everything after.
                assert!(store.submit(batch(n + 1)).is_err());
                break;
            }
        }
    }
    store.shutdown();
    acknowledged
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing_acknowledged() {
    let Some(disk) = SmallDisk::mount(512 * 1024) else {
        // CI runs as root: there a missing tmpfs is a failure, never a skip.
        assert!(std::env::var("CI").is_err(), "CI runs as root and must be able to mount a tmpfs");
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let directory = disk.path.join("data");
    let acknowledged = fill_until_full(&directory);
    assert!(acknowledged > 10, "some batches fit before the disk filled: {acknowledged}");
    // Recovery needs room too (it rewrites the history the log holds): on
    // the full disk it stops with a clear error; given room, it recovers.
    if let Err(error) = Journal::<ledger::Ledger>::open(&directory, Options::default()) {
        assert!(error.to_string().contains("No space left"), "{error}");
    }
    disk.grow(4 * 1024 * 1024);
    let (_, ledger, report) = Journal::<ledger::Ledger>::open(&directory, Options::default()).unwrap();
    assert!(ledger.stats().transfers >= acknowledged * 20, "{report:?}");
    for n in 1..=acknowledged {
        assert!(ledger.transfer(u128::from(n) * 100 + 19).is_some(), "acknowledged batch {n} is there");
    }
    ledger.check_conservation().unwrap();
}
