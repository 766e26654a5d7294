//! `zhifu bench ledger`: transfers per second applied by the in-memory state
//! machine on one core, uniform and hot-account workloads side by side.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use ledger::{BATCH_EVENTS_MAX, Ledger, NANOS_PER_SECOND};

use super::workload::{self, Payments, Shape};

#[derive(clap::Args, Clone)]
pub struct LedgerBenchArgs {
    /// Wallet accounts the transfers move between.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Transfers to apply per workload.
    #[arg(long, default_value_t = 10_000_000)]
    transfers: u64,
    /// Transfers per batch (at most 8,189).
    #[arg(long, default_value_t = BATCH_EVENTS_MAX)]
    batch: usize,
    /// Which workloads to run; both by default, uniform first as the baseline.
    #[arg(long, value_enum)]
    workload: Vec<Shape>,
    /// Accounts created to measure the memory an account takes.
    #[arg(long, default_value_t = 1_000_000)]
    memory_accounts: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The payments' transfer ids (without --durable).
    #[arg(long, value_enum, default_value = "below")]
    ids: IdOrder,
    /// Make every batch durable through the journal (write-ahead log with
    /// group commit) before applying it.
    #[arg(long)]
    durable: bool,
    /// With --durable: threads submitting batches concurrently.
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    /// With --durable: where the journal is written (a real disk, not tmpfs).
    #[arg(long, default_value = "./zhifu-bench-data")]
    data_dir: std::path::PathBuf,
    /// With --durable: the PostgreSQL for the naive baseline (a libpq URL or
    /// key=value string); without it a local server is started if installed.
    #[arg(long)]
    postgres: Option<String>,
    /// With --durable: transfers per workload for the baseline (it is slow).
    #[arg(long, default_value_t = 50_000)]
    postgres_transfers: u64,
    /// With --durable: baseline client connections (pgbench's usual 8).
    #[arg(long, default_value_t = 8)]
    postgres_clients: usize,
    /// With --durable: where the journal's log is kept, one run each:
    /// `embedded` (files), `postgres` (a local PostgreSQL started here),
    /// `postgres-sync` (the same with a synchronous standby), or a
    /// PostgreSQL URL (its zhifu tables are dropped first).
    #[arg(long, value_delimiter = ',', default_value = "embedded")]
    store: Vec<String>,
}

/// In what order the payments' ids come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum IdOrder {
    /// Counting up from 1, below the opening top-ups' ids: each goes in the
    /// ledger's id index, as a client's own ids do.
    Below,
    /// Counting up above every earlier id, as the platform's do (they grow
    /// with its clock): found new without a look at the index.
    Rising,
}

struct RunReport {
    shape: Shape,
    transfers: u64,
    applying: Duration,
    batch_latency_us: Histogram<u64>,
    /// The ledger's allocation divided by its transfers (10,000 accounts are
    /// a rounding error beside 10 million transfers).
    bytes_per_transfer: f64,
}

pub fn run(args: &LedgerBenchArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.batch > BATCH_EVENTS_MAX {
        bail!("--batch must be between 1 and {BATCH_EVENTS_MAX}");
    }
    if args.accounts <= 10 {
        bail!("--accounts must be more than 10 (the hot set)");
    }
    let shapes = if args.workload.is_empty() { vec![Shape::Uniform, Shape::Hot] } else { args.workload.clone() };
    if args.durable {
        return super::durable::run(&super::durable::DurableArgs {
            accounts: args.accounts,
            transfers: args.transfers,
            batch: args.batch,
            shapes,
            seed: args.seed,
            submitters: args.submitters.max(1),
            data_dir: args.data_dir.clone(),
            postgres: args.postgres.clone(),
            postgres_transfers: args.postgres_transfers,
            postgres_clients: args.postgres_clients.max(1),
            stores: args
                .store
                .iter()
                .map(|store| super::durable::StoreChoice::parse(store))
                .collect::<anyhow::Result<_>>()?,
        });
    }
    println!("zhifu bench ledger: the in-memory state machine on one core");
    println!("machine: {}", super::machine_line());
    println!(
        "{} transfers per workload over {} wallet accounts, batches of {}, seed {}, ids {:?}\n",
        args.transfers, args.accounts, args.batch, args.seed, args.ids
    );
    // The first run in a fresh process pays for the allocator and the kernel
    // setting up its address space (long batch tails in the first seconds);
    // a short unreported warm-up run keeps that out of the comparison.
    let warm_up = LedgerBenchArgs { transfers: args.transfers.div_ceil(10), ..args.clone() };
    run_workload(&warm_up, shapes[0])?;
    let mut reports = Vec::new();
    for shape in shapes {
        reports.push(run_workload(args, shape)?);
    }
    print_reports(&reports);
    let per_account = account_memory(args.memory_accounts)?;
    println!(
        "memory per account: {per_account:.0} bytes (allocated by the ledger for {} accounts)",
        args.memory_accounts
    );
    println!(
        "bytes/transfer: the ledger's allocation (bodies, id index at most half full, back-links) per stored transfer"
    );
    Ok(())
}

fn run_workload(args: &LedgerBenchArgs, shape: Shape) -> anyhow::Result<RunReport> {
    // Room for everything the run stores, as a production ledger would be
    // sized for its day, so that no index rehashes in the middle of a batch.
    let capacity = (args.transfers + args.accounts) as usize;
    let mut ledger = Ledger::with_capacity(args.accounts as usize + 1, capacity);
    let mut now = NANOS_PER_SECOND;
    let accounts = workload::accounts(args.accounts);
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        let results = ledger.create_accounts(now, chunk)?;
        anyhow::ensure!(results.iter().all(|r| r.is_ok()), "account creation failed");
        now += NANOS_PER_SECOND;
    }
    for chunk in workload::opening_topups(args.accounts).chunks(BATCH_EVENTS_MAX) {
        let results = ledger.create_transfers(now, chunk)?;
        anyhow::ensure!(results.iter().all(|r| r.is_ok()), "opening top-ups failed");
        now += NANOS_PER_SECOND;
    }

    let first_id = match args.ids {
        IdOrder::Below => 1,
        IdOrder::Rising => workload::TOPUP_IDS_ABOVE + u128::from(args.accounts) + 1,
    };
    let mut payments = Payments::starting_at(args.seed, shape, args.accounts, first_id);
    let mut batch = Vec::with_capacity(args.batch);
    // Up to a minute per batch, to three significant digits.
    let mut batch_latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let mut applying = Duration::ZERO;
    let bar = super::progress_bar(args.transfers, shape.name().split(' ').next().unwrap_or("run"));
    let mut applied = 0u64;
    while applied < args.transfers {
        let count = (args.transfers - applied).min(args.batch as u64) as usize;
        payments.fill(&mut batch, count);
        let started = Instant::now();
        let results = ledger.create_transfers(now, &batch)?;
        let elapsed = started.elapsed();
        applying += elapsed;
        batch_latency_us.saturating_record(elapsed.as_micros() as u64);
        if let Some((index, result)) = results.iter().enumerate().find(|(_, r)| !r.is_ok()) {
            bail!("transfer {} failed: {result}", batch[index].id);
        }
        applied += count as u64;
        now += NANOS_PER_SECOND / 1000;
        bar.set_position(applied);
    }
    bar.finish_and_clear();
    ledger.check_conservation().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(RunReport {
        shape,
        transfers: applied,
        applying,
        batch_latency_us,
        bytes_per_transfer: ledger.memory_bytes() as f64 / applied.max(1) as f64,
    })
}

fn print_reports(reports: &[RunReport]) {
    println!(
        "{:<26} {:>12} {:>14} {:>10} {:>10} {:>10} {:>14}",
        "workload", "transfers", "transfers/s", "batch p50", "batch p99", "batch max", "bytes/transfer"
    );
    let baseline = reports.first().map(rate);
    for report in reports {
        let h = &report.batch_latency_us;
        println!(
            "{:<26} {:>12} {:>14.0} {:>8}us {:>8}us {:>8}us {:>14.0}",
            report.shape.name(),
            report.transfers,
            rate(report),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            report.bytes_per_transfer,
        );
    }
    if let (Some(baseline), Some(last)) = (baseline, reports.last())
        && reports.len() > 1
    {
        {
            println!("{} / {}: {:.2}x", last.shape.name(), reports[0].shape.name(), rate(last) / baseline);
        }
    }
    println!(
        "(rate = transfers / time inside Ledger::create_transfers; the ledger was checked balanced after each run)\n"
    );
}

fn rate(report: &RunReport) -> f64 {
    report.transfers as f64 / report.applying.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn account_memory(count: u64) -> anyhow::Result<f64> {
    let mut ledger = Ledger::new();
    let empty = ledger.memory_bytes();
    let accounts = workload::accounts(count);
    for (index, chunk) in accounts.chunks(BATCH_EVENTS_MAX).enumerate() {
        ledger.create_accounts(index as u64 + 1, chunk)?;
    }
    anyhow::ensure!(ledger.accounts().len() as u64 == count + 1, "accounts missing");
    Ok(ledger.memory_bytes().saturating_sub(empty) as f64 / count.max(1) as f64)
}
