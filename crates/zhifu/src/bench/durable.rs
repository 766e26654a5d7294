//! `zhifu bench ledger --durable`: transfers made durable through the journal
//! (write-ahead log, group commit, fdatasync) and applied, with several
//! submitters so that batches share commits as a server's requests would.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use journal::{Batch, Command, DurableLedger, Options, Outcome};
use ledger::BATCH_EVENTS_MAX;

use super::workload::{self, Payments, Shape};

pub struct DurableArgs {
    pub accounts: u64,
    pub transfers: u64,
    pub batch: usize,
    pub shapes: Vec<Shape>,
    pub seed: u64,
    pub submitters: usize,
    pub data_dir: PathBuf,
}

struct DurableReport {
    shape: Shape,
    transfers: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    groups: u64,
    batches: u64,
}

pub fn run(args: &DurableArgs) -> anyhow::Result<()> {
    println!("zhifu bench ledger --durable: write-ahead log + group commit + apply");
    println!("machine: {}", super::machine_line());
    println!(
        "{} transfers per workload over {} accounts, batches of {}, {} submitters, data in {}\n",
        args.transfers,
        args.accounts,
        args.batch,
        args.submitters,
        args.data_dir.display()
    );
    let mut reports = Vec::new();
    for &shape in &args.shapes {
        reports.push(run_workload(args, shape)?);
    }
    println!(
        "{:<26} {:>10} {:>14} {:>10} {:>10} {:>10} {:>12}",
        "workload", "transfers", "durable/s", "batch p50", "batch p99", "p999", "batches/fsync"
    );
    for report in &reports {
        let h = &report.latency_us;
        println!(
            "{:<26} {:>10} {:>14.0} {:>8}us {:>8}us {:>8}us {:>12.1}",
            report.shape.name(),
            report.transfers,
            report.transfers as f64 / report.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            report.batches as f64 / report.groups.max(1) as f64,
        );
    }
    println!("(batch latency: from submit until durable and applied; one fdatasync per group)");
    Ok(())
}

fn run_workload(args: &DurableArgs, shape: Shape) -> anyhow::Result<DurableReport> {
    if args.batch == 0 || args.batch > BATCH_EVENTS_MAX {
        bail!("--batch must be between 1 and {BATCH_EVENTS_MAX}");
    }
    let directory = args.data_dir.join(format!(
        "bench-{}",
        shape.name().split(' ').next().unwrap_or("run")
    ));
    if directory.exists() {
        std::fs::remove_dir_all(&directory)
            .with_context(|| format!("clear {}", directory.display()))?;
    }
    // Snapshots are left out of this measurement (they are the recovery
    // benchmark's subject): the log alone is what acknowledges a transfer.
    let options = Options {
        snapshot_every_records: u64::MAX,
        ..Options::default()
    };
    let (store, _) = DurableLedger::open(&directory, options)?;
    let mut timestamp = 1u64;
    for chunk in workload::accounts(args.accounts).chunks(BATCH_EVENTS_MAX) {
        store.submit(Batch {
            timestamp,
            command: Command::CreateAccounts(chunk.to_vec()),
        })?;
        timestamp += 1;
    }
    for chunk in workload::opening_topups(args.accounts).chunks(BATCH_EVENTS_MAX) {
        store.submit(Batch {
            timestamp,
            command: Command::CreateTransfers(chunk.to_vec()),
        })?;
        timestamp += 1;
    }
    let before = store.stats();
    let latency_us =
        Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?);
    let per_submitter = args.transfers / args.submitters as u64;
    let bar = super::progress_bar(
        per_submitter * args.submitters as u64,
        shape.name().split(' ').next().unwrap_or("run"),
    );
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for submitter in 0..args.submitters {
            let (store, latency_us, bar) = (&store, &latency_us, &bar);
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let first_id = 1 + u128::from(submitter as u64) * (1 << 40);
                let mut payments = Payments::starting_at(
                    args.seed + submitter as u64,
                    shape,
                    args.accounts,
                    first_id,
                );
                let mut sent = 0u64;
                let mut batch = Vec::with_capacity(args.batch);
                while sent < per_submitter {
                    let count = (per_submitter - sent).min(args.batch as u64) as usize;
                    payments.fill(&mut batch, count);
                    let submitted = Instant::now();
                    let outcome = store.submit(Batch {
                        timestamp: 0,
                        command: Command::CreateTransfers(batch.clone()),
                    })?;
                    let waited = submitted.elapsed().as_micros() as u64;
                    match outcome {
                        Outcome::Transfers(results) if results.iter().all(|r| r.is_ok()) => {}
                        other => bail!("a benchmark batch failed: {other:?}"),
                    }
                    if let Ok(mut histogram) = latency_us.lock() {
                        histogram.saturating_record(waited);
                    }
                    sent += count as u64;
                    bar.inc(count as u64);
                }
                Ok(())
            }));
        }
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let after = store.stats();
    store
        .read(|ledger| ledger.check_conservation())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.shutdown();
    std::fs::remove_dir_all(&directory)
        .with_context(|| format!("remove {}", directory.display()))?;
    let latency_us = latency_us
        .into_inner()
        .map_err(|_| anyhow::anyhow!("latency lock poisoned"))?;
    Ok(DurableReport {
        shape,
        transfers: per_submitter * args.submitters as u64,
        elapsed,
        latency_us,
        groups: after.groups - before.groups,
        batches: after.batches - before.batches,
    })
}
