//! `zhifu load-journal`: writes batches to a durable ledger until stopped and
//! prints `acked <n>` as soon as batch `n` is durable. The crash test kills it
//! at random moments and checks the data directory against what it printed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use journal::{Batch, Command, DurableLedger, Options, Outcome};
use ledger::{AccountFlags, NewAccount, Transfer, TransferFlags};

/// Wallets the load moves money between; account 1 is the bank.
const WALLETS: u128 = 100;
/// Linked pairs per batch: a payment and its fee, which must land together.
pub const PAIRS_PER_BATCH: u64 = 50;
/// Account that collects the fees.
const REVENUE: u128 = WALLETS + 2;

#[derive(clap::Args)]
pub struct LoadArgs {
    /// The data directory (created if missing, recovered if not).
    #[arg(long, default_value = "./zhifu-data")]
    data_dir: PathBuf,
    /// Stop after this many new batches.
    #[arg(long, default_value_t = u64::MAX)]
    batches: u64,
    /// Take a snapshot after this many log records.
    #[arg(long, default_value_t = 64)]
    snapshot_every: u64,
}

/// The transfers of batch `n`: pairs of (top-up from the bank, fee to
/// revenue) linked so that both or neither apply. Ids encode the batch.
pub fn batch_transfers(n: u64) -> Vec<Transfer> {
    let mut transfers = Vec::with_capacity(2 * PAIRS_PER_BATCH as usize);
    for pair in 0..u128::from(PAIRS_PER_BATCH) {
        let base = u128::from(n) * 1_000 + pair * 2;
        let wallet = 2 + (u128::from(n) + pair) % WALLETS;
        let common = Transfer { ledger: 1, code: 1, ..Transfer::default() };
        transfers.push(Transfer {
            id: base,
            debit_account_id: 1,
            credit_account_id: wallet,
            amount: 1_000,
            flags: TransferFlags::LINKED,
            ..common
        });
        transfers.push(Transfer {
            id: base + 1,
            debit_account_id: wallet,
            credit_account_id: REVENUE,
            amount: 1,
            ..common
        });
    }
    transfers
}

pub fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let options = Options { snapshot_every_records: args.snapshot_every.max(1), ..Options::default() };
    let (store, report) = DurableLedger::open(&args.data_dir, options).context("open the data directory")?;
    eprintln!("recovered: {report:?}");
    let accounts: Vec<NewAccount> = (1..=REVENUE)
        .map(|id| NewAccount {
            id,
            user_data: 0,
            ledger: 1,
            code: 1,
            flags: if id == 1 { AccountFlags::empty() } else { AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS },
        })
        .collect();
    let timestamp = store.read(|ledger| ledger.last_timestamp()) + 1;
    store.submit(Batch { timestamp, command: Command::CreateAccounts(accounts) })?;
    // Batches are all-or-nothing records, so the count of transfers tells
    // how many batches are already durable.
    let done = store.read(|ledger| ledger.stats().transfers) / (2 * PAIRS_PER_BATCH);
    let mut stdout = std::io::stdout().lock();
    for n in done + 1..=done.saturating_add(args.batches) {
        let timestamp = store.read(|ledger| ledger.last_timestamp()) + 1;
        let outcome = store.submit(Batch { timestamp, command: Command::CreateTransfers(batch_transfers(n)) })?;
        match outcome {
            Outcome::Transfers(results) if results.iter().all(|r| r.is_ok()) => {}
            other => bail!("batch {n} failed: {other:?}"),
        }
        writeln!(stdout, "acked {n}")?;
        stdout.flush()?;
    }
    store.shutdown();
    Ok(())
}
