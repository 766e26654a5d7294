//! `zhifu bench recovery`: stores many transfers durably with an id horizon
//! (so that old transfers leave memory for the history file), reports the
//! peak resident memory, then restarts from the data directory and reports
//! how long recovery took and whether the recovered ledger is identical.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use journal::{Batch, Command, DurableLedger, Options, Outcome};
use ledger::{BATCH_EVENTS_MAX, LedgerConfig, NANOS_PER_SECOND};

use super::workload::{self, Payments, Shape};

#[derive(clap::Args)]
pub struct RecoveryBenchArgs {
    /// Transfers to store before the restart.
    #[arg(long, default_value_t = 100_000_000)]
    transfers: u64,
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Ledger time between batches, in microseconds (the simulated clock).
    #[arg(long, default_value_t = 1_000)]
    batch_interval_us: u64,
    /// The id horizon: transfers older than this (ledger time) leave memory.
    #[arg(long, default_value_t = 250)]
    horizon_ms: u64,
    /// A snapshot every this many log records (batches): bounds the replay.
    #[arg(long, default_value_t = 1024)]
    snapshot_every: u64,
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    #[arg(long, default_value = "./zhifu-bench-data")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(args: &RecoveryBenchArgs) -> anyhow::Result<()> {
    ensure!(args.accounts > 10, "--accounts must be more than 10");
    let directory = args.data_dir.join("bench-recovery");
    if directory.exists() {
        std::fs::remove_dir_all(&directory).with_context(|| format!("clear {}", directory.display()))?;
    }
    let horizon_ns = args.horizon_ms * 1_000_000;
    let options = Options {
        snapshot_every_records: args.snapshot_every.max(1),
        ledger: LedgerConfig { id_horizon_ns: Some(horizon_ns) },
        ..Options::default()
    };
    println!("zhifu bench recovery: store, restart, compare");
    println!("machine: {}", super::machine_line());
    println!(
        "{} transfers over {} accounts in batches of {BATCH_EVENTS_MAX}, a batch every {} us of ledger time, \
         id horizon {} ms, a snapshot every {} batches, data in {}\n",
        args.transfers,
        args.accounts,
        args.batch_interval_us,
        args.horizon_ms,
        args.snapshot_every,
        directory.display()
    );
    let started = Instant::now();
    let (store, _) = DurableLedger::open(&directory, options.clone())?;
    let clock = AtomicU64::new(NANOS_PER_SECOND + 1_000_000);
    for chunk in workload::accounts(args.accounts).chunks(BATCH_EVENTS_MAX) {
        let outcome = store.submit(Batch { timestamp: 1, command: Command::CreateAccounts(chunk.to_vec()) })?;
        ensure!(matches!(&outcome, Outcome::Accounts(r) if r.iter().all(|r| r.is_ok())), "accounts: {outcome:?}");
    }
    for chunk in workload::opening_topups(args.accounts).chunks(BATCH_EVENTS_MAX) {
        // Opening top-ups carry ids of their own time (the start of the run).
        let topups: Vec<_> = chunk
            .iter()
            .map(|t| ledger::Transfer {
                id: (u128::from(NANOS_PER_SECOND) << 64) | (t.id & u128::from(u64::MAX)),
                ..*t
            })
            .collect();
        let outcome = store.submit(Batch { timestamp: NANOS_PER_SECOND, command: Command::CreateTransfers(topups) })?;
        ensure!(matches!(&outcome, Outcome::Transfers(r) if r.iter().all(|r| r.is_ok())), "top-ups failed");
    }
    let per_submitter = args.transfers / args.submitters.max(1) as u64;
    let bar = super::progress_bar(per_submitter * args.submitters as u64, "storing");
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for submitter in 0..args.submitters.max(1) {
            let (store, clock, bar) = (&store, &clock, &bar);
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut payments = Payments::new(args.seed + submitter as u64, Shape::Hot, args.accounts);
                let mut batch = Vec::with_capacity(BATCH_EVENTS_MAX);
                let mut serial = 0u128;
                let mut sent = 0;
                while sent < per_submitter {
                    let count = (per_submitter - sent).min(BATCH_EVENTS_MAX as u64) as usize;
                    let time = clock.fetch_add(args.batch_interval_us * 1_000, Ordering::Relaxed);
                    payments.fill(&mut batch, count);
                    for transfer in &mut batch {
                        // Ids carry their time; the submitter and a serial make them unique.
                        transfer.id = (u128::from(time) << 64) | (u128::from(submitter as u64) << 48) | serial;
                        serial += 1;
                    }
                    let outcome =
                        store.submit(Batch { timestamp: time, command: Command::CreateTransfers(batch.clone()) })?;
                    match outcome {
                        Outcome::Transfers(results) if results.iter().all(|r| r.is_ok()) => {}
                        Outcome::Transfers(results) => {
                            let failed = results.iter().find(|r| !r.is_ok());
                            bail!("a benchmark transfer failed: {failed:?}")
                        }
                        other => bail!("a benchmark batch failed: {other:?}"),
                    }
                    sent += count as u64;
                    bar.inc(count as u64);
                }
                Ok(())
            }));
        }
        for handle in handles {
            handle.join().map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let storing = started.elapsed();
    let digest = store.digest().context("digest the ledger")?;
    let (stored, in_memory) = store.read(|l| (l.transfer_count(), l.transfer_count() - l.first_position_in_memory()));
    let peak_while_storing = peak_resident_bytes();
    store.shutdown();
    println!(
        "stored {stored} transfers in {:.1} s ({:.0}/s durable); {in_memory} still in memory",
        storing.as_secs_f64(),
        stored as f64 / storing.as_secs_f64()
    );
    println!("peak resident memory while storing: {:.2} GiB", gib(peak_while_storing));

    let restart = Instant::now();
    let (store, report) = DurableLedger::open(&directory, options)?;
    let recovery = restart.elapsed();
    let recovered = store.digest().context("digest the recovered ledger")?;
    ensure!(recovered == digest, "the recovered ledger differs from the one before the restart");
    let oldest = store.stored_transfer(0)?.context("position 0 is in the history file")?;
    store.read(|l| l.check_conservation()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "restart: recovered in {:.2} s (snapshot at record {:?}, {} records replayed), same digest; \
         resident memory after recovery {:.2} GiB",
        recovery.as_secs_f64(),
        report.snapshot_sequence,
        report.records_replayed,
        gib(current_resident_bytes())
    );
    println!("oldest transfer read back from the history file: id {:#x}", oldest.transfer.id);
    store.shutdown();
    std::fs::remove_dir_all(&directory).with_context(|| format!("remove {}", directory.display()))?;
    Ok(())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// VmHWM: the most memory this process has had resident.
fn peak_resident_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn current_resident_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}
