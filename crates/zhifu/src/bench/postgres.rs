//! The baseline most teams start with: a ledger in PostgreSQL, one SQL
//! transaction per transfer that updates both balances (with a balance check
//! on the payer) and inserts the transfer, at PostgreSQL's default durable
//! settings, from several client connections.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use postgres::{Client, NoTls};

use super::workload::{Payments, Shape};

pub struct BaselineReport {
    pub transfers: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

/// Opening balance of every wallet, as in the zhifu run.
const OPENING_BALANCE_FEN: i64 = 1 << 40;

pub fn run(
    url: &str,
    accounts: u64,
    transfers: u64,
    shape: Shape,
    clients: usize,
    seed: u64,
) -> anyhow::Result<BaselineReport> {
    let mut setup = Client::connect(url, NoTls).context("connect to PostgreSQL")?;
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS zhifu_baseline_transfers, zhifu_baseline_accounts;
             CREATE TABLE zhifu_baseline_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE zhifu_baseline_transfers (
                 id bigint PRIMARY KEY, debit_account_id bigint NOT NULL,
                 credit_account_id bigint NOT NULL, amount bigint NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now());",
        )
        .context("create the baseline tables")?;
    setup
        .execute(
            "INSERT INTO zhifu_baseline_accounts SELECT g, $1 FROM generate_series(1, $2::bigint) g",
            &[&OPENING_BALANCE_FEN, &(accounts as i64)],
        )
        .context("create the baseline accounts")?;
    let latency_us = Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?);
    let per_client = transfers / clients as u64;
    let bar = super::progress_bar(per_client * clients as u64, "postgres");
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for client_index in 0..clients {
            let (latency_us, bar) = (&latency_us, &bar);
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut client = Client::connect(url, NoTls).context("connect to PostgreSQL")?;
                let first_id = 1 + u128::from(client_index as u64) * (1 << 40);
                let mut payments = Payments::starting_at(seed + client_index as u64, shape, accounts, first_id);
                for _ in 0..per_client {
                    let transfer = payments.next_transfer();
                    let started = Instant::now();
                    transfer_once(&mut client, &transfer)?;
                    if let Ok(mut histogram) = latency_us.lock() {
                        histogram.saturating_record(started.elapsed().as_micros() as u64);
                    }
                    bar.inc(1);
                }
                Ok(())
            }));
        }
        for handle in handles {
            handle.join().map_err(|_| anyhow::anyhow!("a baseline client panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let total: i64 = setup.query_one("SELECT sum(balance)::bigint FROM zhifu_baseline_accounts", &[])?.get(0);
    if total != OPENING_BALANCE_FEN * accounts as i64 {
        bail!("the baseline ledger is unbalanced: {total}");
    }
    setup.batch_execute("DROP TABLE zhifu_baseline_transfers, zhifu_baseline_accounts")?;
    let latency_us = latency_us.into_inner().map_err(|_| anyhow::anyhow!("latency lock poisoned"))?;
    Ok(BaselineReport { transfers: per_client * clients as u64, elapsed, latency_us })
}

/// One transfer, one transaction. Rows are locked in account-id order so
/// that two opposite transfers cannot deadlock; a deadlock or serialization
/// failure would still be retried. The workload never runs a wallet dry, so
/// a failed balance check is an error of the benchmark.
fn transfer_once(client: &mut Client, transfer: &ledger::Transfer) -> anyhow::Result<()> {
    let amount = i64::try_from(transfer.amount)?;
    let debit = i64::try_from(transfer.debit_account_id)?;
    let credit = i64::try_from(transfer.credit_account_id)?;
    let id = i64::try_from(transfer.id)?;
    for _attempt in 0..10 {
        let mut tx = client.transaction()?;
        let mut moved = true;
        for account in if debit < credit { [debit, credit] } else { [credit, debit] } {
            let changed = if account == debit {
                tx.execute(
                    "UPDATE zhifu_baseline_accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1",
                    &[&amount, &debit],
                )
            } else {
                tx.execute(
                    "UPDATE zhifu_baseline_accounts SET balance = balance + $1 WHERE id = $2",
                    &[&amount, &credit],
                )
            };
            match changed {
                Ok(1) => {}
                Ok(_) => bail!("transfer {id}: account {account} is missing or short of funds"),
                Err(error) if is_retryable(&error) => {
                    moved = false;
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
        if !moved {
            tx.rollback()?;
            continue;
        }
        tx.execute(
            "INSERT INTO zhifu_baseline_transfers (id, debit_account_id, credit_account_id, amount) VALUES ($1, $2, $3, $4)",
            &[&id, &debit, &credit, &amount],
        )?;
        tx.commit()?;
        return Ok(());
    }
    bail!("transfer {id} failed ten times in PostgreSQL")
}

fn is_retryable(error: &postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || *code == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
    })
}
